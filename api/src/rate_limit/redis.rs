//! Limits shared by every API replica through Redis: one GCRA step per request in a Lua
//! script ([`SCRIPT`], sent by `EVALSHA`, so each check is one round trip), one key with
//! a TTL per (group, client), Redis's own clock so replicas with skewed clocks agree.
//!
//! Redis is an optimisation of fairness, not a dependency of the API: when a call fails or
//! takes longer than `rateLimit.redisTimeoutMs`, the request is decided by the in-process
//! limiter instead, Redis is left alone for `rateLimit.redisRetrySecs`, then one request
//! probes it while the others stay local. Warnings are logged on the change of state and at
//! most once a minute in between, so an outage cannot flood the logs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script, TlsCertificates};

use super::gcra::{Decision, Limit};
use super::{ClientKey, Group};

/// [`super::gcra::check`] in Lua. KEYS[1]: the client's key; ARGV: interval (µs), burst.
/// Returns {allowed, remaining, retry after (µs), reset after (µs)}. Numbers are written
/// with `%d`: Lua's default formatting would round 16-digit microsecond times.
pub const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
return {1, math.min(math.floor((now - allow_at) / interval), burst), 0, new_tat - now}
";

/// How often a continuing outage is logged again.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the Redis backend needs from the configuration.
pub struct RedisSettings<'a> {
    /// `redis://…`, or `rediss://…` for TLS.
    pub url: &'a str,
    /// PEM CA certificates trusted for a `rediss://` server instead of the system's roots.
    pub ca_certificates: Option<Vec<u8>>,
    pub key_prefix: &'a str,
    /// Deadline of each call, connecting included.
    pub timeout: Duration,
    /// How long requests stay on in-process limits after a failure.
    pub retry_after_failure: Duration,
}

pub struct RedisLimiter {
    connection: ConnectionManager,
    script: Script,
    key_prefix: String,
    timeout: Duration,
    retry_after_failure_ms: u64,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not called; 0 while it works.
    paused_until_ms: AtomicU64,
    /// Whether requests are being decided locally because Redis failed.
    degraded: AtomicBool,
    last_warning_ms: AtomicU64,
}

impl RedisLimiter {
    /// A limiter that connects on first use (and reconnects by itself); must be called on a
    /// Tokio runtime. Fails only on a malformed URL, or CA certificates without `rediss://`.
    pub fn new(settings: &RedisSettings<'_>) -> Result<Self, RedisError> {
        let client = match &settings.ca_certificates {
            Some(pem) => {
                let certificates = TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                Client::build_with_tls(settings.url, certificates)?
            }
            None => Client::open(settings.url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // No retry loop inside a request: the caller falls back at once and probes later.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            script: Script::new(SCRIPT),
            key_prefix: settings.key_prefix.to_owned(),
            timeout: settings.timeout,
            retry_after_failure_ms: settings.retry_after_failure.as_millis().max(1) as u64,
            started: Instant::now(),
            paused_until_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            last_warning_ms: AtomicU64::new(0),
        })
    }

    /// Counts one request of `client` in `group` in Redis; `None` when Redis cannot answer
    /// now and the caller must decide locally.
    pub async fn check(&self, group: Group, limit: Limit, client: &ClientKey) -> Option<Decision> {
        let now_ms = self.elapsed_ms();
        let paused_until = self.paused_until_ms.load(Ordering::Acquire);
        let probing = paused_until != 0;
        if probing {
            // One request probes; the others stay local until it has its answer.
            let next_pause = now_ms + self.retry_after_failure_ms;
            if now_ms < paused_until
                || self
                    .paused_until_ms
                    .compare_exchange(paused_until, next_pause, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                return None;
            }
        }
        let key = format!("{}:{}:{client}", self.key_prefix, group.name());
        let mut result = self.call(&key, limit).await;
        if probing && matches!(&result, Err(CallError::Redis(error)) if error.is_io_error()) {
            // The first call after an outage meets the dead connection and starts the
            // reconnection; the second waits for it.
            result = self.call(&key, limit).await;
        }
        match result {
            Ok(decision) => {
                if probing {
                    self.paused_until_ms.store(0, Ordering::Release);
                }
                if self.degraded.swap(false, Ordering::AcqRel) {
                    tracing::info!("Redis is reachable again; rate limits are shared across replicas");
                }
                Some(decision)
            }
            Err(error) => {
                self.paused_until_ms.store(self.elapsed_ms() + self.retry_after_failure_ms, Ordering::Release);
                self.warn(&error);
                None
            }
        }
    }

    async fn call(&self, key: &str, limit: Limit) -> Result<Decision, CallError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(limit.interval_us).arg(limit.burst);
        let invocation = invocation.invoke_async(&mut connection);
        let (allowed, remaining, retry_after_us, reset_after_us): (u8, u32, u64, u64) =
            tokio::time::timeout(self.timeout, invocation).await.map_err(|_| CallError::Timeout)??;
        Ok(Decision {
            allowed: allowed == 1,
            remaining,
            retry_after: Duration::from_micros(retry_after_us),
            reset_after: Duration::from_micros(reset_after_us),
        })
    }

    fn warn(&self, error: &CallError) {
        let now_ms = self.elapsed_ms();
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.last_warning_ms.store(now_ms, Ordering::Relaxed);
            tracing::warn!(error = %error, "Redis is unreachable; rate limits are per process until it is back");
            return;
        }
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= WARNING_INTERVAL.as_millis() as u64
            && self.last_warning_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(error = %error, "Redis is still unreachable; rate limits are per process");
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer in time")]
    Timeout,
    #[error(transparent)]
    Redis(#[from] RedisError),
}
