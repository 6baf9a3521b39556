//! The one typed configuration tree, read once at start-up from YAML plus environment
//! overrides and passed down by reference.
//!
//! Keys follow the seed's YAML (`storage:` and `server:` in camelCase). Any key can be
//! overridden from the environment as `STAYLER_<SECTION>__<KEY_IN_SNAKE_CASE>`, for example
//! `STAYLER_STORAGE__MAX_FILE_SIZE=1048576` or `STAYLER_DATABASE__URL=postgres://…`.
//!
//! Each section's types, defaults and own checks live in the submodule named after it; this
//! file keeps the tree itself, its loading and the checks that span sections.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

mod access_log;
mod auth;
mod database;
mod encryption;
mod health;
mod limits;
mod maintenance;
mod prometheus;
mod quota;
mod rabbitmq;
mod rate_limit;
mod s3;
mod scheduler;
mod server;
mod serving;
mod signed_urls;
mod storage;
mod tls;
mod webhooks;
mod worker;
pub use access_log::AccessLogConfig;
pub use auth::AuthConfig;
pub use database::DatabaseConfig;
pub use encryption::{EncryptionConfig, MASTER_KEY_BYTES, decode_master_key};
pub use health::{HealthConfig, MetricsConfig};
pub use limits::LimitsConfig;
pub use maintenance::MaintenanceConfig;
pub use prometheus::PrometheusConfig;
pub use quota::QuotaConfig;
pub use rabbitmq::RabbitConfig;
pub use rate_limit::{RateLimitConfig, RouteLimit};
pub use s3::{MIN_UPLOAD_BUFFER_BYTES, S3Config, StorageBackend};
pub use scheduler::SchedulerConfig;
pub use server::ServerConfig;
pub use serving::ServingConfig;
pub use signed_urls::SignedUrlsConfig;
pub use storage::{BackupPolicy, MaxAgeByType, RetentionPolicy, StorageConfig, ThumbnailSize};
pub use webhooks::{WebhookEndpoint, WebhooksConfig};
pub use worker::WorkerConfig;

/// Environment variable naming the YAML file to read.
pub const CONFIG_FILE_ENV: &str = "STAYLER_CONFIG";
/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "STAYLER_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("configuration key `{key}`: {reason}")]
    BadValue { key: &'static str, reason: String },
}

/// Whether placeholder secrets are tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local development and tests: the committed dev secrets are accepted.
    #[default]
    Dev,
    /// Anything else: start-up fails on a missing, short or placeholder secret.
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub rabbitmq: RabbitConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub quota: QuotaConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub prometheus: PrometheusConfig,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub signed_urls: SignedUrlsConfig,
    #[serde(default)]
    pub serving: ServingConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
}

const DEV_SECRET_PREFIX: &str = "dev-";

/// A connection URL with its user and password left out.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, host)| host)),
        None => url.rsplit_once('@').map_or(url, |(_, host)| host).to_owned(),
    }
}

/// How a connection whose scheme selects TLS is protected, for [`Config::summary`].
fn tls_note(tls: bool, ca_file: Option<&Path>) -> String {
    match (tls, ca_file) {
        (false, _) => "TLS off".to_owned(),
        (true, None) => "TLS, certificate and host name verified".to_owned(),
        (true, Some(path)) => format!("TLS, certificate and host name verified, CA file {}", path.display()),
    }
}

impl Config {
    /// Reads `file` (if given: the binaries' `--config`, or `STAYLER_CONFIG`), then the
    /// `STAYLER_*` environment overrides, and validates.
    pub fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Yaml::file_exact(file));
        }
        figment = figment.merge(environment());
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.storage.resolve()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a configuration from YAML text alone, without the environment (tests and
    /// tools that build a configuration for themselves).
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        let mut config: Config = Figment::from(Yaml::string(yaml)).extract().map_err(Box::new)?;
        config.storage.resolve()?;
        config.validate()?;
        Ok(config)
    }

    /// What the configuration selects, without secrets or credentials: what
    /// `stayler-api check-config` prints once the configuration is valid.
    pub fn summary(&self) -> String {
        let place = |backend: StorageBackend, folder: &Path, s3: &S3Config| match backend {
            StorageBackend::Local => format!("the folder {}", folder.display()),
            StorageBackend::S3 if s3.endpoint.is_empty() => format!("the bucket {} of AWS S3", s3.bucket),
            StorageBackend::S3 => format!("the bucket {} at {}", s3.bucket, s3.endpoint),
        };
        let storage = &self.storage;
        let mut lines = vec![
            format!("the configuration is valid ({:?} mode)", self.mode).to_lowercase(),
            format!("  API:       listens on {}:{}", self.server.host, self.server.port),
            format!(
                "  database:  {} ({})",
                without_credentials(self.database.url.expose_secret()),
                self.database.tls_summary()
            ),
            format!(
                "  rabbitmq:  {} (prefix {}, {})",
                without_credentials(self.rabbitmq.url.expose_secret()),
                self.rabbitmq.prefix,
                tls_note(self.rabbitmq.uses_tls(), self.rabbitmq.ca_file.as_deref())
            ),
            format!("  images:    {}", place(storage.backend, &storage.base_path, &storage.s3)),
            format!("  backups:   {}", place(storage.backup_backend, &storage.backup_path, &storage.backup_s3)),
        ];
        let redis = self.rate_limit.redis_url.expose_secret();
        if self.rate_limit.enabled && !redis.is_empty() {
            let tls = tls_note(tls::has_scheme(redis, "rediss"), self.rate_limit.redis_ca_file.as_deref());
            lines.push(format!("  redis:     {} (rate limits, {tls})", without_credentials(redis)));
        }
        lines.join("\n")
    }

    /// Checks what serde cannot: secrets, limits and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        self.check_secret("storage.signedURLKey", &self.storage.signed_url_key)?;
        self.check_secret("auth.jwtSecret", &self.auth.jwt_secret)?;
        if self.database.url.expose_secret().is_empty() {
            return bad("database.url", "is missing");
        }
        if self.rabbitmq.url.expose_secret().is_empty() {
            return bad("rabbitmq.url", "is missing");
        }
        self.storage.validate()?;
        self.server.validate()?;
        self.worker.validate()?;
        self.database.validate()?;
        self.rabbitmq.validate()?;
        self.rate_limit.validate()?;
        self.limits.validate()?;
        self.health.validate()?;
        self.metrics.validate()?;
        self.access_log.validate()?;
        self.webhooks.validate(self.mode)?;
        self.encryption.validate(self.mode)?;
        self.validate_prometheus()?;
        self.validate_serving()?;
        self.validate_schedules()?;
        self.validate_maintenance()?;
        Ok(())
    }

    /// The `signedUrls:` and `serving:` sections, and the names that end up in URLs.
    fn validate_serving(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        let urls = &self.signed_urls;
        if !crate::model::is_safe_segment(&urls.key_id) {
            return bad("signedUrls.keyId", "must be a plain name (letters, digits, - and _)".to_owned());
        }
        for (id, secret) in &urls.previous_keys {
            if !crate::model::is_safe_segment(id) || *id == urls.key_id {
                return bad("signedUrls.previousKeys", format!("`{id}` must be a plain name other than keyId"));
            }
            self.check_secret("signedUrls.previousKeys", secret)?;
        }
        if urls.max_ttl_secs == 0 || urls.max_ttl_secs > 10 * 365 * 24 * 3600 {
            return bad("signedUrls.maxTtlSecs", "must be between 1 and ten years".to_owned());
        }
        if urls.default_ttl_secs == 0 || urls.default_ttl_secs > urls.max_ttl_secs {
            return bad("signedUrls.defaultTtlSecs", "must be between 1 and maxTtlSecs".to_owned());
        }
        if urls.expiry_window_secs == 0 || urls.expiry_window_secs > urls.max_ttl_secs {
            return bad("signedUrls.expiryWindowSecs", "must be between 1 and maxTtlSecs".to_owned());
        }
        if self.storage.thumbnail_sizes.contains_key(crate::model::ORIGINAL) {
            return bad("storage.thumbnailSizes", "`original` names the full-size image".to_owned());
        }
        let public = &self.server.public_path;
        let plain_path =
            public.strip_prefix('/').is_some_and(|rest| rest.split('/').all(crate::model::is_safe_segment));
        if !plain_path {
            return bad("server.publicPath", "must be /name or /name/name… with plain names".to_owned());
        }
        if self.serving.cache_entries == 0 || self.serving.cache_ttl_secs == 0 {
            return bad("serving.cacheEntries", "cacheEntries and cacheTtlSecs must be positive".to_owned());
        }
        Ok(())
    }

    fn check_secret(&self, key: &'static str, secret: &SecretString) -> Result<(), ConfigError> {
        let value = secret.expose_secret();
        let reason = if value.is_empty() {
            "is missing"
        } else if self.mode == Mode::Dev {
            return Ok(());
        } else if value.starts_with(DEV_SECRET_PREFIX) {
            "is a development placeholder; set a real secret outside dev mode"
        } else if value.len() < 32 {
            "must be at least 32 bytes outside dev mode"
        } else {
            return Ok(());
        };
        Err(ConfigError::BadValue { key, reason: reason.to_owned() })
    }
}

/// `STAYLER_STORAGE__MAX_FILE_SIZE` → `storage.maxFileSize`.
fn environment() -> Env {
    // `lowercase(false)` last: every `map` resets it.
    Env::prefixed(ENV_PREFIX)
        .ignore(&["CONFIG", "LOG_FORMAT"])
        .split("__")
        .map(|key| camel_case_path(key.as_str()).into())
        .lowercase(false)
}

fn camel_case_path(key: &str) -> String {
    key.split('.')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut upper = false;
            for c in segment.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.extend(c.to_uppercase());
                    upper = false;
                } else {
                    out.extend(c.to_lowercase());
                }
            }
            if out == "signedUrlKey" { "signedURLKey".to_owned() } else { out }
        })
        .collect::<Vec<_>>()
        .join(".")
}

// `figment::Jail` closures must return figment's own (large) error type.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn valid_yaml() -> &'static str {
        "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n"
    }

    #[test]
    fn the_summary_names_what_is_selected_and_no_credential() {
        let yaml = "storage:\n  signedURLKey: dev-key\n  backend: s3\n  s3:\n    endpoint: http://garage:3900\n    \
                    bucket: images\n    accessKeyId: GK1\n    secretAccessKey: s3cr3t\n\
                    database:\n  url: postgres://stayler:pw@db:5432/stayler\n\
                    rabbitmq:\n  url: amqp://guest:guest@mq:5672/%2f\nauth:\n  jwtSecret: dev-secret\n";
        let summary = Config::from_yaml(yaml).unwrap().summary();
        assert!(summary.contains("the bucket images at http://garage:3900"), "{summary}");
        assert!(summary.contains("postgres://db:5432/stayler") && summary.contains("amqp://mq:5672/%2f"), "{summary}");
        for secret in ["pw", "guest", "s3cr3t", "dev-key", "dev-secret"] {
            assert!(!summary.contains(&format!("{secret}@")) && !summary.contains(secret), "{secret} in {summary}");
        }
        assert_eq!(without_credentials("redis://:pass@host:6379"), "redis://host:6379");
        assert_eq!(without_credentials("host:5432"), "host:5432");
    }

    #[test]
    fn environment_keys_become_camel_case_paths() {
        assert_eq!(camel_case_path("storage.max_file_size"), "storage.maxFileSize");
        assert_eq!(camel_case_path("STORAGE.SIGNED_URL_KEY"), "storage.signedURLKey");
        assert_eq!(camel_case_path("database.url"), "database.url");
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", valid_yaml())?;
            jail.set_env("STAYLER_STORAGE__MAX_FILE_SIZE", "1234");
            jail.set_env("STAYLER_STORAGE__SIGNED_URL_KEY", "dev-other");
            jail.set_env("STAYLER_RABBITMQ__PREFIX", "t1");
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.storage.max_file_size, 1234);
            assert_eq!(config.storage.signed_url_key.expose_secret(), "dev-other");
            assert_eq!(config.rabbitmq.prefix, "t1");
            Ok(())
        });
    }

    #[test]
    fn production_refuses_placeholder_and_missing_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", valid_yaml())?;
            jail.set_env("STAYLER_MODE", "production");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.signedURLKey"), "{err}");
            jail.set_env("STAYLER_STORAGE__SIGNED_URL_KEY", "k".repeat(40));
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("auth.jwtSecret"), "{err}");
            jail.set_env("STAYLER_AUTH__JWT_SECRET", "s".repeat(40));
            Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            Ok(())
        });
    }

    #[test]
    fn signed_url_keys_rotate_through_the_environment_and_placeholders_are_refused_outside_dev() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", valid_yaml())?;
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!((config.signed_urls.key_id.as_str(), config.signed_urls.max_ttl_secs), ("k1", 604_800));
            assert_eq!((config.signed_urls.default_ttl_secs, config.signed_urls.expiry_window_secs), (3600, 300));
            jail.set_env("STAYLER_SIGNED_URLS__KEY_ID", "k2");
            jail.set_env("STAYLER_SIGNED_URLS__PREVIOUS_KEYS", "{k1=dev-old-key}");
            jail.set_env("STAYLER_SERVING__CACHE_TTL_SECS", "5");
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.signed_urls.key_id, "k2");
            assert_eq!(config.signed_urls.previous_keys["k1"].expose_secret(), "dev-old-key");
            assert_eq!(config.serving.cache_ttl_secs, 5);
            jail.set_env("STAYLER_MODE", "production");
            jail.set_env("STAYLER_STORAGE__SIGNED_URL_KEY", "k".repeat(40));
            jail.set_env("STAYLER_AUTH__JWT_SECRET", "s".repeat(40));
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("signedUrls.previousKeys"), "{err}");
            jail.set_env("STAYLER_SIGNED_URLS__PREVIOUS_KEYS", format!("{{k1={}}}", "o".repeat(40)));
            Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            Ok(())
        });
    }

    #[test]
    fn signed_url_lifetimes_and_names_are_checked() {
        let with = |extra: &str| Config::from_yaml(&format!("{}{extra}", valid_yaml()));
        let err = with("signedUrls:\n  defaultTtlSecs: 10\n  maxTtlSecs: 5\n").unwrap_err();
        assert!(err.to_string().contains("signedUrls.defaultTtlSecs"), "{err}");
        let err = with("signedUrls:\n  keyId: a.b\n").unwrap_err();
        assert!(err.to_string().contains("signedUrls.keyId"), "{err}");
        let err = with("signedUrls:\n  previousKeys: { k1: dev-x }\n").unwrap_err();
        assert!(err.to_string().contains("signedUrls.previousKeys"), "{err}");
        let err = with("signedUrls:\n  expiryWindowSecs: 0\n").unwrap_err();
        assert!(err.to_string().contains("signedUrls.expiryWindowSecs"), "{err}");
        let err = with("server:\n  publicPath: /../x\n").unwrap_err();
        assert!(err.to_string().contains("server.publicPath"), "{err}");
        with("server:\n  publicPath: /media/public\n").unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_types_stop_start_up() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", &format!("{}server:\n  prot: 1\n", valid_yaml()))?;
            assert!(Config::load_from(Some(Path::new("c.yaml"))).is_err());
            jail.set_env("STAYLER_STORAGE__ALLOWED_TYPES", "[text/html]");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.allowedTypes") || err.to_string().contains("prot"), "{err}");
            Ok(())
        });
    }
}
