//! Database access: the pool, the embedded migrations, and one module per table.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseConfig;

pub mod access_logs;
pub mod backup_retention;
pub mod file_audit;
pub mod health_checks;
pub mod metrics;
pub mod outbox;
pub mod provenance;
pub mod purge;
pub mod scheduled_runs;
pub mod search;
pub mod stats;
pub mod storage_backups;
pub mod storage_files;
pub mod storage_quotas;
pub mod storage_restores;
pub mod storage_signed_urls;
pub mod storage_thumbnails;
pub mod sweep;
pub mod upload_idempotency;

/// The SQL migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects, and migrates when `database.migrate` is on.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(config.url.expose_secret())
        .await?;
    if config.migrate {
        MIGRATOR.run(&pool).await?;
    }
    Ok(pool)
}
