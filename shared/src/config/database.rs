//! The `database:` section: the PostgreSQL connection pool, and whether migrations run at
//! start-up.

use secrecy::SecretString;
use serde::Deserialize;

use super::ConfigError;

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

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: SecretString::from(""), max_connections: 20, migrate: true, acquire_timeout_secs: 2 }
    }
}

impl DatabaseConfig {
    /// Checks the pool settings; a missing `url` is reported with the secrets, first.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.acquire_timeout_secs == 0 {
            return bad("database.acquireTimeoutSecs", "must be at least 1");
        }
        Ok(())
    }
}
