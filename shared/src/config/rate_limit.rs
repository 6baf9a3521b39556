//! The `rateLimit:` section: requests per principal or client IP for each route group, in
//! process or shared among API replicas through Redis.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;
use super::tls::{has_scheme, read_ca_file};

/// The `rateLimit:` section: requests per principal (the token's `sub`) or, without a valid
/// token, per client IP, for each route group.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off: no request is counted.
    pub enabled: bool,
    /// `redis://…` (or `rediss://…` for TLS, certificate and host name verified) to share
    /// the limits among API replicas; empty: each process counts alone.
    pub redis_url: SecretString,
    /// PEM file of the CA certificates trusted for Redis's certificate instead of the
    /// system's roots; needs a `rediss://` URL.
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Deadline of one Redis call (connecting included), in milliseconds; past it the
    /// request is decided in process.
    pub redis_timeout_ms: u64,
    /// Seconds requests are decided in process after a Redis failure before Redis is tried again.
    pub redis_retry_secs: u64,
    /// Take the client IP from the last `X-Forwarded-For` entry instead of the peer address.
    /// Only behind a proxy that sets that header: otherwise any client picks its own IP.
    pub trust_forwarded_for: bool,
    /// `POST /storage/images`.
    #[serde(deserialize_with = "RouteLimit::uploads")]
    pub uploads: RouteLimit,
    /// Every other `/storage/…` API call.
    #[serde(deserialize_with = "RouteLimit::reads")]
    pub reads: RouteLimit,
    /// `/storage/signed/…` and `server.publicPath`, always per client IP.
    #[serde(deserialize_with = "RouteLimit::serving")]
    pub serving: RouteLimit,
    /// Uploads and API calls of a `service` token, per service principal, instead of
    /// `uploads` and `reads`.
    #[serde(deserialize_with = "RouteLimit::service")]
    pub service: RouteLimit,
}

/// The limit of one route group: `perSecond` sustained, up to `burst` at once. Keys left
/// out keep the group's default, so `STAYLER_RATE_LIMIT__SERVING__ENABLED=false` alone works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteLimit {
    pub enabled: bool,
    /// Counted in Redis when `redisUrl` is set; false keeps the group in process (each
    /// replica counts alone) and saves a Redis round trip per request.
    pub shared: bool,
    /// Sustained requests per second (fractions allowed, e.g. 0.5), at most 1,000,000.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

/// A `RouteLimit` as written, any key left out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RouteLimitKeys {
    enabled: Option<bool>,
    shared: Option<bool>,
    per_second: Option<f64>,
    burst: Option<u32>,
}

impl RouteLimit {
    /// Per principal: an upload is heavy, a person or a vendor's catalogue job sends a few a second.
    pub const UPLOADS: Self = Self { enabled: true, shared: true, per_second: 5.0, burst: 50 };
    /// Per principal: a gallery screen asks for dozens of metadata and signed URLs at once.
    pub const READS: Self = Self { enabled: true, shared: true, per_second: 50.0, burst: 200 };
    /// Per IP, which may hide many users behind one NAT: only stops floods. In process even
    /// with Redis: the hottest path cannot afford a round trip per request, and a flood is
    /// stopped just as well by each replica counting alone.
    pub const SERVING: Self = Self { enabled: true, shared: false, per_second: 1_000.0, burst: 2_000 };
    /// Per service principal: the main app stores every user's try-on results through one
    /// token, so its group is sized for a whole app's ingestion, above what one API process
    /// sustains (about 400 uploads/s in the upload benchmark); it only stops a runaway loop.
    pub const SERVICE: Self = Self { enabled: true, shared: true, per_second: 1_000.0, burst: 5_000 };

    fn with_defaults<'de, D: serde::Deserializer<'de>>(defaults: Self, input: D) -> Result<Self, D::Error> {
        let keys = RouteLimitKeys::deserialize(input)?;
        Ok(Self {
            enabled: keys.enabled.unwrap_or(defaults.enabled),
            shared: keys.shared.unwrap_or(defaults.shared),
            per_second: keys.per_second.unwrap_or(defaults.per_second),
            burst: keys.burst.unwrap_or(defaults.burst),
        })
    }

    fn uploads<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        Self::with_defaults(Self::UPLOADS, input)
    }

    fn reads<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        Self::with_defaults(Self::READS, input)
    }

    fn serving<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        Self::with_defaults(Self::SERVING, input)
    }

    fn service<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        Self::with_defaults(Self::SERVICE, input)
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: SecretString::from(""),
            redis_ca_file: None,
            redis_key_prefix: "stayler:ratelimit".to_owned(),
            redis_timeout_ms: 100,
            redis_retry_secs: 5,
            trust_forwarded_for: false,
            uploads: RouteLimit::UPLOADS,
            reads: RouteLimit::READS,
            serving: RouteLimit::SERVING,
            service: RouteLimit::SERVICE,
        }
    }
}

impl RateLimitConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        let url = self.redis_url.expose_secret();
        if !url.is_empty() && !has_scheme(url, "redis") && !has_scheme(url, "rediss") {
            return bad("rateLimit.redisUrl", "must be empty or start with redis:// or rediss://");
        }
        if let Some(path) = &self.redis_ca_file {
            if !has_scheme(url, "rediss") {
                return bad("rateLimit.redisCaFile", "is only used with a rediss:// rateLimit.redisUrl");
            }
            read_ca_file("rateLimit.redisCaFile", path)?;
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.chars().any(char::is_whitespace) {
            return bad("rateLimit.redisKeyPrefix", "must be a non-empty name without spaces");
        }
        if self.redis_timeout_ms == 0 {
            return bad("rateLimit.redisTimeoutMs", "must be positive");
        }
        for (key, limit) in [
            ("rateLimit.uploads", &self.uploads),
            ("rateLimit.reads", &self.reads),
            ("rateLimit.serving", &self.serving),
            ("rateLimit.service", &self.service),
        ] {
            if !limit.enabled {
                continue;
            }
            if !(limit.per_second > 0.0 && limit.per_second <= 1_000_000.0) {
                return bad(key, "perSecond must be more than 0 and at most 1000000");
            }
            if limit.burst == 0 {
                return bad(key, "burst must be at least 1");
            }
        }
        Ok(())
    }

    /// The PEM text of `redisCaFile`, if one is set.
    pub fn redis_ca_certificates(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.redis_ca_file.as_deref().map(|path| read_ca_file("rateLimit.redisCaFile", path)).transpose()
    }
}

// `figment::Jail` closures must return figment's own (large) error type.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    #[test]
    fn rate_limits_nest_in_the_environment_and_bad_ones_stop_start_up() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", &format!("{VALID}rateLimit:\n  reads: {{ perSecond: 2.5 }}\n"))?;
            jail.set_env("STAYLER_RATE_LIMIT__SERVING__ENABLED", "false");
            jail.set_env("STAYLER_RATE_LIMIT__REDIS_URL", "redis://127.0.0.1:6379");
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            let limits = &config.rate_limit;
            assert_eq!(limits.reads, RouteLimit { per_second: 2.5, ..RouteLimit::READS });
            assert_eq!(limits.serving, RouteLimit { enabled: false, ..RouteLimit::SERVING });
            assert_eq!(limits.uploads, RouteLimit::UPLOADS);
            assert_eq!(limits.redis_url.expose_secret(), "redis://127.0.0.1:6379");
            assert!(!limits.trust_forwarded_for, "X-Forwarded-For is not trusted by default");

            jail.set_env("STAYLER_RATE_LIMIT__READS__BURST", "0");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("rateLimit.reads"), "{err}");
            jail.set_env("STAYLER_RATE_LIMIT__READS__BURST", "4");
            jail.set_env("STAYLER_RATE_LIMIT__REDIS_URL", "127.0.0.1:6379");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("rateLimit.redisUrl"), "{err}");
            Ok(())
        });
    }
}
