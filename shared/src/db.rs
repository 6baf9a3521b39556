//! Database access: the pool, the embedded migrations, and one module per table.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

pub mod access_logs;
pub mod audit_log;
pub mod backup_retention;
pub mod erasures;
pub mod file_audit;
pub mod health_checks;
pub mod image_keys;
pub mod image_notifications;
pub mod metrics;
pub mod outbox;
pub mod partitions;
pub mod provenance;
pub mod purge;
pub mod scheduled_runs;
pub mod search;
pub mod stats;
pub mod storage_backup_entries;
pub mod storage_backups;
pub mod storage_files;
pub mod storage_migration;
pub mod storage_quotas;
pub mod storage_restores;
pub mod storage_signed_urls;
pub mod storage_thumbnails;
pub mod sweep;
pub mod upload_idempotency;
pub mod webhook_deliveries;

/// The SQL migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The pool settings of `database:`: its size, and how long a caller waits for a
/// connection before giving up with [`sqlx::Error::PoolTimedOut`].
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
}

/// True when `error` means the database cannot be reached or is going away (no connection
/// within the acquire timeout, a dropped connection, a server shutting down), as opposed to
/// a statement it refused: the same request may succeed once it is back.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // Class 08: connection exceptions; 57P01-57P03: shutting down, crashed, starting up.
        sqlx::Error::Database(error) => {
            error.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

/// Connects (over TLS as `sslmode` in `database.url` asks, trusting `database.caFile`), and
/// migrates when `database.migrate` is on.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options = config.connect_options().map_err(|error| sqlx::Error::Configuration(error.into()))?;
    let pool = pool_options(config).connect_with(options).await?;
    if config.migrate {
        MIGRATOR.run(&pool).await?;
    }
    Ok(pool)
}
