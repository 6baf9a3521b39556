//! The `rabbitmq:` section: the broker connection, the names of exchanges and queues, and
//! how deliveries are retried.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{Config, ConfigError};

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

impl RabbitConfig {
    /// Checks attempts, delays and the name prefix; a missing `url` is reported with the
    /// secrets, first.
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
        Ok(())
    }
}

impl Config {
    pub fn rabbit_call_timeout(&self) -> Duration {
        Duration::from_secs(self.rabbitmq.call_timeout_secs.max(1))
    }
}
