//! The `database:` section: the PostgreSQL connection pool, its TLS, and whether
//! migrations run at start-up.

use std::path::PathBuf;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::ConfigError;
use super::tls::read_ca_file;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…`; its `sslmode` parameter chooses TLS (`require`, `verify-ca`,
    /// `verify-full`; default `prefer`: TLS when the server offers it, unverified).
    pub url: SecretString,
    pub max_connections: u32,
    /// Applies pending migrations at start-up.
    pub migrate: bool,
    /// How long a request waits for a database connection before it is answered 503
    /// `service_unavailable` (the database unreachable, or every connection busy).
    pub acquire_timeout_secs: u64,
    /// PEM file of CA certificates trusted for the server's certificate besides the system's
    /// roots (a managed service's own CA); needs `sslmode=verify-ca` or `verify-full`.
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: SecretString::from(""), max_connections: 20, migrate: true, acquire_timeout_secs: 2, ca_file: None }
    }
}

impl DatabaseConfig {
    /// Checks the pool settings, the URL and the CA file; a missing `url` is reported with
    /// the secrets, first.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.acquire_timeout_secs == 0 {
            return bad("database.acquireTimeoutSecs", "must be at least 1");
        }
        let options = self.url_options()?;
        if self.ca_file.is_some() && !verifies_certificates(options.get_ssl_mode()) {
            return bad("database.caFile", "is only used with sslmode=verify-ca or verify-full in database.url");
        }
        if let Some(path) = &self.ca_file {
            read_ca_file("database.caFile", path)?;
        }
        Ok(())
    }

    /// What the binaries connect with: `url`, and the CA of `caFile` when there is one.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let options = self.url_options()?;
        Ok(match &self.ca_file {
            Some(path) => options.ssl_root_cert_from_pem(read_ca_file("database.caFile", path)?),
            None => options,
        })
    }

    /// How the connection is protected, for `stayler-api check-config`.
    pub fn tls_summary(&self) -> String {
        let mode = match self.url_options().map(|options| options.get_ssl_mode()) {
            Ok(PgSslMode::Disable) => "TLS off",
            Ok(PgSslMode::Allow | PgSslMode::Prefer) => "TLS when the server offers it, not verified",
            Ok(PgSslMode::Require) => "TLS, certificate not verified",
            Ok(PgSslMode::VerifyCa) => "TLS, certificate verified",
            Ok(PgSslMode::VerifyFull) => "TLS, certificate and host name verified",
            Err(_) => "unknown",
        };
        match &self.ca_file {
            Some(path) => format!("{mode}, CA file {}", path.display()),
            None => mode.to_owned(),
        }
    }

    /// `url` parsed; the error names the key but not the URL, which may hold a password.
    fn url_options(&self) -> Result<PgConnectOptions, ConfigError> {
        PgConnectOptions::from_str(self.url.expose_secret()).map_err(|error| ConfigError::BadValue {
            key: "database.url",
            reason: format!("is not a usable PostgreSQL URL: {error}"),
        })
    }
}

fn verifies_certificates(mode: PgSslMode) -> bool {
    matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull)
}
