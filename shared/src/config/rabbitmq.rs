//! The `rabbitmq:` section: the broker connection and its TLS, the names of exchanges and
//! queues, and how deliveries are retried.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::tls::{has_scheme, read_ca_file};
use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// `amqp://…`, or `amqps://…` for TLS (certificate and host name verified).
    pub url: SecretString,
    /// PEM file of CA certificates trusted for the broker's certificate besides the system's
    /// roots; needs an `amqps://` URL.
    pub ca_file: Option<PathBuf>,
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

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from(""),
            ca_file: None,
            prefix: "stayler".to_owned(),
            prefetch: 8,
            max_attempts: 5,
            retry_delays_secs: vec![1, 10, 60],
            call_timeout_secs: 10,
            reconnect_delay_secs: 1,
        }
    }
}

impl RabbitConfig {
    /// Checks attempts, delays, the name prefix and the CA file; a missing `url` is reported
    /// with the secrets, first.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.max_attempts == 0 {
            return bad("rabbitmq.maxAttempts", "must be at least 1");
        }
        if self.retry_delays_secs.is_empty() {
            return bad("rabbitmq.retryDelaysSecs", "needs at least one delay");
        }
        if !crate::model::is_safe_segment(&self.prefix) {
            return bad("rabbitmq.prefix", "must be a plain name");
        }
        if let Some(path) = &self.ca_file {
            if !self.uses_tls() {
                return bad("rabbitmq.caFile", "is only used with an amqps:// rabbitmq.url");
            }
            read_ca_file("rabbitmq.caFile", path)?;
        }
        Ok(())
    }

    /// Whether `url` asks for TLS (`amqps://`).
    pub fn uses_tls(&self) -> bool {
        has_scheme(self.url.expose_secret(), "amqps")
    }

    /// The PEM text of `caFile`, if one is set.
    pub fn ca_certificates(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.ca_file.as_deref().map(|path| read_ca_file("rabbitmq.caFile", path)).transpose()
    }
}

impl Config {
    pub fn rabbit_call_timeout(&self) -> Duration {
        Duration::from_secs(self.rabbitmq.call_timeout_secs.max(1))
    }
}
