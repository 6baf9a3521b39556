//! The one typed configuration tree, read once at start-up from YAML plus environment
//! overrides and passed down by reference.
//!
//! Keys follow the seed's YAML (`storage:` and `server:` in camelCase). Any key can be
//! overridden from the environment as `STAYLER_<SECTION>__<KEY_IN_SNAKE_CASE>`, for example
//! `STAYLER_STORAGE__MAX_FILE_SIZE=1048576` or `STAYLER_DATABASE__URL=postgres://…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::imaging::ImageFormat;

mod health;
mod limits;
mod maintenance;
mod scheduler;
pub use health::{HealthConfig, MetricsConfig};
pub use limits::LimitsConfig;
pub use maintenance::MaintenanceConfig;
pub use scheduler::SchedulerConfig;

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
}

/// The `storage:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Root of the image tree (`images/{type}/{owner}/…`).
    pub base_path: PathBuf,
    /// Root of the backup tree (`{YYYY-MM-DD}/…`).
    pub backup_path: PathBuf,
    /// HMAC-SHA256 key for signed URLs.
    #[serde(rename = "signedURLKey", alias = "signedUrlKey")]
    pub signed_url_key: SecretString,
    /// Largest accepted upload, in bytes.
    pub max_file_size: u64,
    /// MIME types accepted at upload, checked against the format sniffed from the bytes.
    pub allowed_types: Vec<String>,
    /// Thumbnail boxes by name; an image is fitted inside each, never upscaled.
    pub thumbnail_sizes: BTreeMap<String, ThumbnailSize>,
    /// Largest accepted image, in pixels (width × height); refuses decompression bombs.
    pub max_pixels: u64,
    pub retention_policy: RetentionPolicy,
    pub backup_policy: BackupPolicy,
    /// File-creation mask of the API and worker processes, in octal: what the service
    /// writes (originals, thumbnails, backups) is readable by its user and group only. With
    /// `027`, files are 0640 and folders 0750. Written as text or as digits (YAML and the
    /// environment may read `027` as a number); the digits are octal either way.
    #[serde(deserialize_with = "octal_digits")]
    pub umask: String,
}

/// The digits of an octal setting, given as text or as a number.
fn octal_digits<'de, D: serde::Deserializer<'de>>(input: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(u64),
    }
    Ok(match Written::deserialize(input)? {
        Written::Text(text) => text,
        Written::Number(number) => number.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Images are never deleted by a job while they are live. Only `true` is accepted: no
    /// job deletes images, so `false` would promise an expiry that never happens.
    pub keep_images_forever: bool,
    /// Backups older than this many days are removed (never the last copy of a live image).
    pub retention_days: u32,
    /// Cron expression (UTC) of the maintenance run; empty disables it.
    pub cleanup_schedule: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackupPolicy {
    /// Off: the scheduler requests no backups.
    pub enabled: bool,
    /// `hourly`, `daily` or `weekly`: the schedule used when `schedule` is empty.
    pub frequency: String,
    /// Cron expression (UTC) of scheduled backups; empty: the one `frequency` names.
    pub schedule: String,
    /// zstd level used for backup archives whose bytes compress (see docs/benchmarks.md on
    /// what compression buys on photos).
    pub compression_level: i32,
    /// Images per batch job: a large backup is shared by the workers in batches this big.
    pub batch_size: u32,
}

/// The `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Public origin used to build URLs handed to clients.
    pub base_url: String,
    /// URL prefix under which public images are served without signature.
    pub public_path: String,
    /// URL prefix of static assets.
    pub static_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    /// Applies pending migrations at start-up.
    pub migrate: bool,
    /// How long a request waits for a database connection before it is answered 503
    /// `service_unavailable` (the database unreachable, or every connection busy).
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RabbitConfig {
    pub url: SecretString,
    /// Prefix of every exchange and queue name, so several deployments (or tests) can share
    /// one broker.
    pub prefix: String,
    /// Unacknowledged messages a worker holds per queue.
    pub prefetch: u16,
    /// Delivery attempts before a message goes to its dead-letter queue.
    pub max_attempts: u32,
    /// Waits before each retry, in seconds; the last one repeats.
    pub retry_delays_secs: Vec<u64>,
    /// Every broker call is given up after this many seconds, so a dead connection never
    /// hangs a process.
    pub call_timeout_secs: u64,
    /// Seconds between reconnection attempts.
    pub reconnect_delay_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret shared with the main application.
    pub jwt_secret: SecretString,
    /// When set, every token must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, every token must carry this `aud`.
    pub audience: Option<String>,
    /// Tokens expiring more than this many seconds ahead are refused; 0 accepts any.
    pub max_lifetime_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Files an owner may store until an admin changes their quota.
    pub default_max_files: i64,
    /// Bytes an owner may store until an admin changes their quota.
    pub default_max_bytes: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Jobs handled at once by one worker process; 0 means one per CPU core.
    pub concurrency: usize,
    /// Seconds a worker waits for in-flight jobs on SIGTERM before returning them.
    pub shutdown_grace_secs: u64,
    /// Seconds an image's decode, resize and encode may take; past it the job fails and is
    /// retried like any other failure.
    pub image_deadline_secs: u64,
    /// Seconds a long job (a restore, a backup check) holds its lease without renewing it;
    /// a running job renews it every third of that. A second delivery of a job whose lease
    /// is live is left to its holder; a holder that died is replaced once the lease ran out.
    pub job_lease_secs: u64,
}

/// The `accessLog:` section: how access records are batched into `storage_access_logs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Records written per transaction. A write costs the database about the same whatever
    /// its size (identical requests fold into one row), so under serving load large batches
    /// are what keep the log cheap: at ~80,000 serves/s, 1000 records per batch cost
    /// PostgreSQL 8 % of the machine, 5000 cost 3 %.
    pub batch_size: usize,
    /// Longest wait before queued records are written, in milliseconds.
    pub flush_interval_ms: u64,
    /// Records queued in memory at most; beyond it (the database unreachable for long)
    /// new records are dropped and counted rather than stalling requests.
    pub queue_capacity: usize,
    /// Rows older than this many days are deleted by the scheduled purge
    /// (`scheduler.purge`); at a row per served file the log would otherwise grow for ever.
    pub retention_days: u32,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { batch_size: 5000, flush_interval_ms: 500, queue_capacity: 100_000, retention_days: 90 }
    }
}

/// The `rateLimit:` section: requests per principal (the token's `sub`) or, without a valid
/// token, per client IP, for each route group.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off: no request is counted.
    pub enabled: bool,
    /// `redis://…` to share the limits among API replicas; empty: each process counts alone.
    pub redis_url: SecretString,
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
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        let url = self.redis_url.expose_secret();
        if !url.is_empty() && !url.starts_with("redis://") {
            return bad("rateLimit.redisUrl", "must be empty or start with redis://");
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
}

/// The `signedUrls:` section: the keys and lifetimes of signed URLs. The active key's
/// secret is `storage.signedURLKey`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SignedUrlsConfig {
    /// Id of the active key (`storage.signedURLKey`), written into every URL it signs. To
    /// rotate: move the current id and secret to `previousKeys`, then set a new id and key.
    pub key_id: String,
    /// Retired keys by id: they no longer sign, but URLs they signed stay valid until they
    /// expire. Drop one once `maxTtlSecs + expiryWindowSecs` have passed since its retirement.
    pub previous_keys: BTreeMap<String, SecretString>,
    /// Lifetime of a URL when the request gives no `ttl`, in seconds.
    pub default_ttl_secs: u64,
    /// Longest lifetime a request may ask for, in seconds; more is refused (400), not clamped.
    pub max_ttl_secs: u64,
    /// Expiries are rounded up to a multiple of this many seconds, so that repeated requests
    /// get the same URL and caches keep working; 1 turns rounding off.
    pub expiry_window_secs: u64,
    /// A URL served more often than this is flagged as possible abuse (in stats).
    pub abuse_max_uses: i64,
    /// A URL served to more distinct client addresses than this is flagged as well.
    pub abuse_max_addresses: i32,
}

impl Default for SignedUrlsConfig {
    fn default() -> Self {
        Self {
            key_id: "k1".to_owned(),
            previous_keys: BTreeMap::new(),
            default_ttl_secs: 3600,
            max_ttl_secs: 7 * 24 * 3600,
            expiry_window_secs: 300,
            abuse_max_uses: 1000,
            abuse_max_addresses: 20,
        }
    }
}

/// The `serving:` section: the in-process caches of signed and public file serving.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServingConfig {
    /// Images whose serving facts (path, type, size, checksum, thumbnails) are kept in memory.
    pub cache_entries: u64,
    /// Seconds an entry lives at most. Changes reach every replica at once through
    /// PostgreSQL notifications; this bounds staleness only if those are lost.
    pub cache_ttl_secs: u64,
    /// Files up to this many bytes are kept in memory once read (thumbnails); 0 turns the
    /// file cache off.
    pub small_file_max_bytes: u64,
    /// Total bytes of the small-file cache.
    pub small_file_cache_bytes: u64,
    /// `Cache-Control: public, max-age` of images served under `server.publicPath`, in seconds.
    pub public_max_age_secs: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            cache_entries: 100_000,
            cache_ttl_secs: 60,
            small_file_max_bytes: 64 * 1024,
            small_file_cache_bytes: 64 * 1024 * 1024,
            public_max_age_secs: 3600,
        }
    }
}

const DEV_SECRET_PREFIX: &str = "dev-";

impl Default for StorageConfig {
    fn default() -> Self {
        let size = |width, height| ThumbnailSize { width, height };
        Self {
            base_path: PathBuf::from("./data/storage"),
            backup_path: PathBuf::from("./data/backups"),
            signed_url_key: SecretString::from(""),
            max_file_size: 52_428_800,
            allowed_types: ImageFormat::ALL.iter().map(|f| f.mime().to_owned()).collect(),
            thumbnail_sizes: BTreeMap::from([
                ("small".to_owned(), size(150, 150)),
                ("medium".to_owned(), size(300, 300)),
                ("large".to_owned(), size(600, 600)),
            ]),
            max_pixels: 50_000_000,
            retention_policy: RetentionPolicy::default(),
            backup_policy: BackupPolicy::default(),
            umask: "027".to_owned(),
        }
    }
}

impl StorageConfig {
    /// `umask` as mode bits; validated at start-up.
    pub fn umask_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.umask, 8).ok().filter(|bits| *bits <= 0o777 && !self.umask.is_empty())
    }
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { keep_images_forever: true, retention_days: 365, cleanup_schedule: "0 2 * * *".to_owned() }
    }
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            frequency: "daily".to_owned(),
            schedule: String::new(),
            compression_level: 6,
            batch_size: 500,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            base_url: "http://localhost:8080".to_owned(),
            public_path: "/public".to_owned(),
            static_path: "/static".to_owned(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: SecretString::from(""), max_connections: 20, migrate: true, acquire_timeout_secs: 2 }
    }
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from(""),
            prefix: "stayler".to_owned(),
            prefetch: 8,
            max_attempts: 5,
            retry_delays_secs: vec![1, 10, 60],
            call_timeout_secs: 10,
            reconnect_delay_secs: 1,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { jwt_secret: SecretString::from(""), issuer: None, audience: None, max_lifetime_secs: 24 * 3600 }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self { default_max_files: 100, default_max_bytes: 5 * 1024 * 1024 * 1024 }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { concurrency: 0, shutdown_grace_secs: 30, image_deadline_secs: 120, job_lease_secs: 120 }
    }
}

impl Config {
    /// Reads the YAML file named by `STAYLER_CONFIG` (if any), then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        Self::load_from(file.as_deref())
    }

    /// Reads `file` (if given), then the `STAYLER_*` environment overrides, and validates.
    pub fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Yaml::file_exact(file));
        }
        figment = figment.merge(environment());
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a configuration from YAML text alone, without the environment (tests and
    /// tools that build a configuration for themselves).
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Yaml::string(yaml)).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
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
        if self.storage.max_file_size == 0 {
            return bad("storage.maxFileSize", "must be positive");
        }
        if self.storage.max_pixels == 0 {
            return bad("storage.maxPixels", "must be positive");
        }
        for mime in &self.storage.allowed_types {
            if ImageFormat::from_mime(mime).is_none() {
                return bad("storage.allowedTypes", &format!("{mime} is not a supported image type"));
            }
        }
        for (name, size) in &self.storage.thumbnail_sizes {
            if !crate::model::is_safe_segment(name) {
                return bad("storage.thumbnailSizes", &format!("`{name}` is not a plain name"));
            }
            if size.width == 0 || size.height == 0 {
                return bad("storage.thumbnailSizes", &format!("`{name}` has a zero side"));
            }
        }
        let level = self.storage.backup_policy.compression_level;
        if !zstd::compression_level_range().contains(&level) {
            return bad("storage.backupPolicy.compressionLevel", &format!("{level} is not a zstd level"));
        }
        if self.storage.backup_policy.batch_size == 0 {
            return bad("storage.backupPolicy.batchSize", "must be at least 1");
        }
        if !self.storage.retention_policy.keep_images_forever {
            return bad(
                "storage.retentionPolicy.keepImagesForever",
                "must be true: images are kept until their owner deletes them, and no job expires them",
            );
        }
        if self.storage.umask_bits().is_none() {
            return bad("storage.umask", "must be an octal mask such as 027");
        }
        if self.worker.image_deadline_secs == 0 {
            return bad("worker.imageDeadlineSecs", "must be at least 1");
        }
        if !(3..=3600).contains(&self.worker.job_lease_secs) {
            return bad("worker.jobLeaseSecs", "must be between 3 and 3600");
        }
        if self.database.acquire_timeout_secs == 0 {
            return bad("database.acquireTimeoutSecs", "must be at least 1");
        }
        if self.rabbitmq.max_attempts == 0 {
            return bad("rabbitmq.maxAttempts", "must be at least 1");
        }
        if self.rabbitmq.retry_delays_secs.is_empty() {
            return bad("rabbitmq.retryDelaysSecs", "needs at least one delay");
        }
        if !crate::model::is_safe_segment(&self.rabbitmq.prefix) {
            return bad("rabbitmq.prefix", "must be a plain name");
        }
        self.rate_limit.validate()?;
        self.limits.validate()?;
        self.health.validate()?;
        self.metrics.validate()?;
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

    /// Accepted formats, in the order of `storage.allowedTypes`.
    pub fn allowed_formats(&self) -> Vec<ImageFormat> {
        self.storage.allowed_types.iter().filter_map(|m| ImageFormat::from_mime(m)).collect()
    }

    /// `worker.jobLeaseSecs` as a duration.
    pub fn job_lease(&self) -> Duration {
        Duration::from_secs(self.worker.job_lease_secs)
    }

    pub fn rabbit_call_timeout(&self) -> Duration {
        Duration::from_secs(self.rabbitmq.call_timeout_secs.max(1))
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
    fn environment_keys_become_camel_case_paths() {
        assert_eq!(camel_case_path("storage.max_file_size"), "storage.maxFileSize");
        assert_eq!(camel_case_path("STORAGE.SIGNED_URL_KEY"), "storage.signedURLKey");
        assert_eq!(camel_case_path("database.url"), "database.url");
    }

    #[test]
    fn seed_defaults_apply_when_keys_are_absent() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", valid_yaml())?;
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.storage.max_file_size, 52_428_800);
            assert_eq!(config.storage.thumbnail_sizes["medium"], ThumbnailSize { width: 300, height: 300 });
            assert_eq!(config.storage.retention_policy.retention_days, 365);
            assert_eq!(config.storage.allowed_types.len(), 4);
            Ok(())
        });
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
    fn the_umask_is_octal_however_it_is_written() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", &valid_yaml().replacen("storage:\n", "storage:\n  umask: 007\n", 1))?;
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o7));
            jail.set_env("STAYLER_STORAGE__UMASK", "027");
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o27));
            jail.set_env("STAYLER_STORAGE__UMASK", "\"0077\"");
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o77));
            jail.set_env("STAYLER_STORAGE__UMASK", "089");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.umask"), "{err}");
            Ok(())
        });
        assert_eq!(StorageConfig::default().umask_bits(), Some(0o27), "files 0640, folders 0750");
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
    fn images_cannot_be_given_an_expiry_no_job_would_carry_out() {
        let mut config = Config::from_yaml(valid_yaml()).unwrap();
        assert!(config.storage.retention_policy.keep_images_forever);
        config.storage.retention_policy.keep_images_forever = false;
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("storage.retentionPolicy.keepImagesForever"), "{err}");
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

    #[test]
    fn rate_limits_nest_in_the_environment_and_bad_ones_stop_start_up() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", &format!("{}rateLimit:\n  reads: {{ perSecond: 2.5 }}\n", valid_yaml()))?;
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
