//! Rate limiting: a middleware that counts each request against the limit of its route
//! group (`rateLimit.uploads`, `reads`, `serving`) for its client, and answers 429 with
//! `Retry-After` once the client is over it. The `service` role (the main app writing
//! try-on results for every owner: one principal carrying a whole app's traffic) has a
//! group of its own, `rateLimit.service`, for its uploads and reads alike; per-owner quotas
//! still bound what it stores for each owner.
//!
//! The client is the principal (the bearer token's `sub`) when the request carries a valid
//! token, else its IP: serving (signed URLs, public images) is always counted per IP since
//! it has no principal, and counting unauthenticated API calls per IP also slows down token
//! guessing. IPv6 clients are counted per /64, the block one subscriber usually holds, so
//! a client cannot escape its limit by hopping through its own addresses.
//!
//! With `rateLimit.redisUrl` the counts are shared by all replicas ([`redis`]); without it,
//! or while Redis is unreachable, each process counts alone ([`local`]). Both run the GCRA
//! of [`gcra`].

pub mod gcra;
pub mod local;
pub mod redis;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use poem::http::header::HeaderName;
use poem::http::{HeaderMap, HeaderValue, Method};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use secrecy::ExposeSecret;
use shared::auth::{Claims, Role, TokenKeys};
use shared::config::{Config, RateLimitConfig, RouteLimit};
use shared::observability::names;
use uuid::Uuid;

use crate::auth::bearer_token;
use crate::error::ApiError;
use gcra::{Decision, Limit};
use local::LocalLimiter;
use redis::{RedisLimiter, RedisSettings};

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A route group, each with its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `POST /storage/images`.
    Uploads = 0,
    /// Every other `/storage/…` API call.
    Reads = 1,
    /// `/storage/signed/…` and the public path: per client IP.
    Serving = 2,
    /// Uploads and API calls of a `service` token.
    Service = 3,
}

impl Group {
    pub const COUNT: usize = 4;

    /// The name in the configuration and in Redis keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uploads => "uploads",
            Self::Reads => "reads",
            Self::Serving => "serving",
            Self::Service => "service",
        }
    }
}

/// Whom a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A verified token's `sub`.
    Principal(Uuid),
    /// An IPv4 address, or the /64 block of an IPv6 address.
    Address(IpAddr),
}

impl ClientKey {
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let block = u128::from(v6) & !((1u128 << 64) - 1);
                Self::Address(IpAddr::V6(Ipv6Addr::from(block)))
            }
            v4 => Self::Address(v4),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Principal(sub) => write!(f, "sub:{sub}"),
            Self::Address(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// Decides requests: which group, which client, over the limit or not.
pub struct RateLimiter {
    limits: [Option<Limit>; Group::COUNT],
    /// Whether each group is counted in Redis (when there is one).
    shared: [bool; Group::COUNT],
    local: Arc<LocalLimiter>,
    redis: Option<RedisLimiter>,
    keys: TokenKeys,
    /// `server.publicPath` with a trailing slash; `None` when it is empty or `/`.
    public_prefix: Option<String>,
    trust_forwarded_for: bool,
}

impl RateLimiter {
    /// The limiter `config` asks for; `None` when rate limiting is off or no group is limited.
    /// Call it on a Tokio runtime: the sweeper of the local limits and the Redis connection
    /// run there (without one, Redis is not used).
    pub fn from_config(config: &Config) -> Option<Self> {
        let settings = &config.rate_limit;
        if !settings.enabled {
            return None;
        }
        let limit = |route: &RouteLimit| route.enabled.then(|| Limit::new(route.per_second, route.burst));
        let limits =
            [limit(&settings.uploads), limit(&settings.reads), limit(&settings.serving), limit(&settings.service)];
        if limits.iter().all(Option::is_none) {
            return None;
        }
        for (group, limit) in [Group::Uploads, Group::Reads, Group::Serving, Group::Service].into_iter().zip(&limits) {
            if limit.is_some() {
                metrics::counter!(names::RATE_LIMIT_DENIALS, "group" => group.name()).increment(0);
            }
        }
        let shared = [settings.uploads.shared, settings.reads.shared, settings.serving.shared, settings.service.shared];
        let any_shared = limits.iter().zip(shared).any(|(limit, shared)| limit.is_some() && shared);
        let public = config.server.public_path.trim_end_matches('/');
        Some(Self {
            limits,
            shared,
            local: LocalLimiter::new(limits),
            redis: if any_shared { connect_redis(settings) } else { None },
            keys: TokenKeys::from_config(&config.auth),
            public_prefix: (!public.is_empty()).then(|| format!("{public}/")),
            trust_forwarded_for: settings.trust_forwarded_for,
        })
    }

    /// The group of a request, `None` for routes that are not limited.
    pub fn group_of(&self, method: &Method, path: &str) -> Option<Group> {
        if path == "/storage/images" && method == Method::POST {
            Some(Group::Uploads)
        } else if path.starts_with("/storage/signed/")
            || self.public_prefix.as_deref().is_some_and(|prefix| path.starts_with(prefix))
        {
            Some(Group::Serving)
        } else if path.starts_with("/storage/") || path == "/storage" {
            Some(Group::Reads)
        } else {
            None
        }
    }

    /// The group and client `request` is counted in, `None` for routes that are not
    /// limited: a `service` token's uploads and reads go to [`Group::Service`].
    pub fn classify(&self, request: &Request) -> Option<(Group, ClientKey)> {
        let group = self.group_of(request.method(), request.uri().path())?;
        if group == Group::Serving {
            return Some((group, self.address_of(request)));
        }
        Some(match self.claims_of(request) {
            Some(claims) if claims.role == Role::Service => (Group::Service, ClientKey::Principal(claims.sub)),
            Some(claims) => (group, ClientKey::Principal(claims.sub)),
            None => (group, self.address_of(request)),
        })
    }

    /// Whom `request` is counted against in `group`.
    pub fn client_of(&self, group: Group, request: &Request) -> ClientKey {
        match self.claims_of(request) {
            Some(claims) if group != Group::Serving => ClientKey::Principal(claims.sub),
            _ => self.address_of(request),
        }
    }

    /// The claims of a valid bearer token, verified here unless a handler did already.
    fn claims_of(&self, request: &Request) -> Option<Claims> {
        if let Some(claims) = request.extensions().get::<Claims>() {
            return Some(claims.clone());
        }
        bearer_token(request).and_then(|token| self.keys.verify(token).ok())
    }

    /// The client address of `request`, as a rate-limit key.
    fn address_of(&self, request: &Request) -> ClientKey {
        let peer = request.remote_addr().as_socket_addr().map(|addr| addr.ip());
        let ip = client_ip(request.headers(), peer, self.trust_forwarded_for);
        // No address at all (not a TCP peer): such clients share one bucket.
        ClientKey::from_ip(ip.unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }

    /// Counts one request of `client` in `group`: in Redis when configured, shared for the
    /// group and reachable, else in process. `None` when the group is not limited.
    pub async fn check(&self, group: Group, client: &ClientKey) -> Option<Decision> {
        let limit = self.limits[group as usize]?;
        if self.shared[group as usize]
            && let Some(redis) = &self.redis
            && let Some(decision) = redis.check(group, limit, client).await
        {
            return Some(decision);
        }
        self.local.check(group, client)
    }

    /// The limit of `group`, if it has one.
    pub fn limit(&self, group: Group) -> Option<Limit> {
        self.limits[group as usize]
    }
}

fn connect_redis(settings: &RateLimitConfig) -> Option<RedisLimiter> {
    let url = settings.redis_url.expose_secret();
    if url.is_empty() {
        return None;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("rate limits are per process: the Redis connection needs a Tokio runtime");
        return None;
    }
    let ca_certificates = match settings.redis_ca_certificates() {
        Ok(pem) => pem,
        Err(error) => {
            // Checked at start-up; the file went away since. Limiting per process beats not starting.
            tracing::error!(error = %error, "rate limits are per process");
            return None;
        }
    };
    let redis = RedisSettings {
        url,
        ca_certificates,
        key_prefix: &settings.redis_key_prefix,
        timeout: Duration::from_millis(settings.redis_timeout_ms),
        retry_after_failure: Duration::from_secs(settings.redis_retry_secs),
    };
    match RedisLimiter::new(&redis) {
        Ok(limiter) => Some(limiter),
        Err(error) => {
            // Validation accepted the URL, so this is rare; limiting per process beats not starting.
            tracing::error!(error = %error, "rateLimit.redisUrl is unusable; rate limits are per process");
            None
        }
    }
}

/// The client's IP: the `peer` address, or with `trust_forwarded_for` the last address of
/// the last `X-Forwarded-For` header, the one the proxy in front of the API appended
/// (earlier entries come from the client and prove nothing).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|entry| parse_forwarded_ip(entry.trim()))
    {
        return Some(ip);
    }
    peer
}

/// `203.0.113.7`, `2001:db8::1`, or either with a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry.parse().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|addr| addr.ip()))
}

/// Sets the `RateLimit-*` headers (IETF draft names) of a counted answer.
fn set_headers(headers: &mut HeaderMap, limit: Limit, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit.burst));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(decision.reset_after_secs()));
}

/// The middleware of [`RateLimiter`]; wrap the routes with it inside the error renderer.
pub struct RateLimit {
    limiter: Option<Arc<RateLimiter>>,
}

impl RateLimit {
    /// What `config.rateLimit` asks for (a pass-through when it is off).
    pub fn new(config: &Config) -> Self {
        Self { limiter: RateLimiter::from_config(config).map(Arc::new) }
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint { inner, limiter: self.limiter.clone() }
    }
}

pub struct RateLimitEndpoint<E> {
    inner: E,
    limiter: Option<Arc<RateLimiter>>,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let counted = match &self.limiter {
            Some(limiter) => match limiter.classify(&request) {
                Some((group, client)) => {
                    let decision = limiter.check(group, &client).await;
                    decision.zip(limiter.limit(group)).map(|(decision, limit)| (group, limit, decision))
                }
                None => None,
            },
            None => None,
        };
        let Some((group, limit, decision)) = counted else {
            return self.inner.call(request).await.map(IntoResponse::into_response);
        };
        if !decision.allowed {
            tracing::debug!(group = group.name(), retry_after_ms = decision.retry_after.as_millis(), "rate limited");
            metrics::counter!(names::RATE_LIMIT_DENIALS, "group" => group.name()).increment(1);
            let mut response = ApiError::rate_limited(decision.retry_after_secs()).into_response();
            set_headers(response.headers_mut(), limit, &decision);
            return Ok(response);
        }
        match self.inner.call(request).await {
            Ok(output) => {
                let mut response = output.into_response();
                set_headers(response.headers_mut(), limit, &decision);
                Ok(response)
            }
            // An answer of ours (`ApiError`) travels as an error to the renderer: keep it one.
            Err(error) if error.is_from_response() => {
                let mut response = error.into_response();
                set_headers(response.headers_mut(), limit, &decision);
                Err(poem::Error::from_response(response))
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use poem::http::header::AUTHORIZATION;

    use super::*;

    fn config() -> Config {
        Config::from_yaml(
            "storage:\n  signedURLKey: dev-k\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-s\n",
        )
        .unwrap()
    }

    fn limiter(public_path: &str) -> RateLimiter {
        let mut config = config();
        config.server.public_path = public_path.to_owned();
        RateLimiter::from_config(&config).expect("limits on by default")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[test]
    fn routes_fall_into_their_groups() {
        let limiter = limiter("/public/");
        let group = |method: Method, path: &str| limiter.group_of(&method, path);
        assert_eq!(group(Method::POST, "/storage/images"), Some(Group::Uploads));
        assert_eq!(group(Method::GET, "/storage/images"), Some(Group::Reads));
        assert_eq!(group(Method::GET, "/storage/images/abc/signed-url"), Some(Group::Reads));
        assert_eq!(group(Method::POST, "/storage/images/search"), Some(Group::Reads));
        assert_eq!(group(Method::DELETE, "/storage/images/abc"), Some(Group::Reads));
        assert_eq!(group(Method::GET, "/storage/signed/abc.def"), Some(Group::Serving));
        assert_eq!(group(Method::HEAD, "/storage/signed/abc.def"), Some(Group::Serving));
        assert_eq!(group(Method::GET, "/public/abc"), Some(Group::Serving));
        assert_eq!(group(Method::GET, "/publication"), None);
        assert_eq!(group(Method::GET, "/openapi.json"), None);
        assert!(self::limiter("").group_of(&Method::GET, "/x").is_none(), "an empty public path is no prefix");
    }

    #[test]
    fn a_valid_token_counts_against_its_subject_anything_else_against_the_ip() {
        let limiter = limiter("/public");
        let sub = Uuid::now_v7();
        let token = limiter.keys.mint(sub, shared::auth::Role::User, chrono::Duration::minutes(1));
        let with_token = Request::builder().header(AUTHORIZATION, format!("Bearer {token}")).finish();
        assert_eq!(limiter.client_of(Group::Reads, &with_token), ClientKey::Principal(sub));
        let no_peer = ClientKey::Address(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(limiter.client_of(Group::Serving, &with_token), no_peer, "serving is per IP");
        let forged = Request::builder().header(AUTHORIZATION, "Bearer not.a.token").finish();
        assert_eq!(limiter.client_of(Group::Reads, &forged), no_peer);
        let mut verified = Request::builder().finish();
        verified.extensions_mut().insert(Claims { sub, role: shared::auth::Role::User, exp: 0 });
        assert_eq!(limiter.client_of(Group::Uploads, &verified), ClientKey::Principal(sub), "claims already verified");
    }

    #[test]
    fn a_service_token_is_counted_in_the_service_group_for_uploads_and_reads() {
        let limiter = limiter("/public");
        let request = |role, method: Method, path: &str| {
            let sub = Uuid::now_v7();
            let token = limiter.keys.mint(sub, role, chrono::Duration::minutes(1));
            let request = Request::builder().method(method).uri(path.parse().unwrap());
            (sub, request.header(AUTHORIZATION, format!("Bearer {token}")).finish())
        };
        let (sub, upload) = request(Role::Service, Method::POST, "/storage/images");
        assert_eq!(limiter.classify(&upload), Some((Group::Service, ClientKey::Principal(sub))));
        let (sub, read) = request(Role::Service, Method::GET, "/storage/images/x");
        assert_eq!(limiter.classify(&read), Some((Group::Service, ClientKey::Principal(sub))));
        let (_, served) = request(Role::Service, Method::GET, "/storage/signed/x");
        assert_eq!(limiter.classify(&served).map(|(group, _)| group), Some(Group::Serving), "serving stays per IP");
        let (sub, user) = request(Role::User, Method::POST, "/storage/images");
        assert_eq!(limiter.classify(&user), Some((Group::Uploads, ClientKey::Principal(sub))));
        assert_eq!(limiter.limit(Group::Service), Some(Limit::new(1_000.0, 5_000)));
    }

    #[test]
    fn forwarded_for_is_ignored_unless_trusted_and_then_only_its_last_entry_counts() {
        let peer = Some(IpAddr::from([10, 0, 0, 2]));
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.9, 203.0.113.7:4711")]);
        assert_eq!(client_ip(&forwarded, peer, false), peer);
        assert_eq!(client_ip(&forwarded, peer, true), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(client_ip(&headers(&[("x-forwarded-for", "unknown")]), peer, true), peer, "unparsable: the peer");
        assert_eq!(client_ip(&HeaderMap::new(), peer, true), peer);
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(client_ip(&v6, peer, true), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_block_and_mapped_ipv4_as_ipv4() {
        let key = |ip: &str| ClientKey::from_ip(ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1").to_string(), "ip:2001:db8:1:2::");
    }

    #[test]
    fn limits_follow_the_configuration() {
        let mut config = config();
        config.rate_limit.serving.enabled = false;
        let limiter = RateLimiter::from_config(&config).unwrap();
        assert!(limiter.limit(Group::Serving).is_none());
        assert_eq!(limiter.limit(Group::Uploads), Some(Limit::new(5.0, 50)));
        assert_eq!(limiter.shared, [true, true, false, true], "serving stays in process by default");
        assert!(limiter.redis.is_none(), "no Redis without a URL");
        config.rate_limit.enabled = false;
        assert!(RateLimiter::from_config(&config).is_none());
    }
}
