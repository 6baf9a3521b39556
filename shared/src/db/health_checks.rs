//! The `storage_health_checks` table: one row per check type per run, written by the health
//! job and by maintenance jobs that find something an operator should see (re-queued images,
//! orphan or missing files); the health endpoint reads the latest row of each type.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use crate::model::HealthStatus;

/// The latest result of one check type.
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub check_type: String,
    pub status: HealthStatus,
    pub details: Value,
    pub checked_at: DateTime<Utc>,
}

/// Records one check result.
pub async fn record(
    db: impl PgExecutor<'_>,
    check_type: &str,
    status: HealthStatus,
    details: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO storage_health_checks (check_type, status, details) VALUES ($1, $2, $3)",
        check_type,
        status.as_str(),
        details,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The latest row of every check type, by type name. A loose index scan (one index probe
/// per type) rather than `DISTINCT ON` over the whole history, since load balancers may
/// poll the health endpoint every few seconds.
pub async fn latest(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<CheckRow>> {
    let rows = sqlx::query!(
        r#"WITH RECURSIVE types (check_type) AS (
               (SELECT check_type FROM storage_health_checks ORDER BY check_type LIMIT 1)
               UNION ALL
               SELECT (SELECT h.check_type FROM storage_health_checks h
                       WHERE h.check_type > types.check_type ORDER BY h.check_type LIMIT 1)
               FROM types WHERE types.check_type IS NOT NULL
           )
           SELECT latest.check_type AS "check_type!", latest.status AS "status!", latest.details AS "details!",
                  latest.checked_at AS "checked_at!"
           FROM types
           CROSS JOIN LATERAL (
               SELECT check_type, status, details, checked_at FROM storage_health_checks h
               WHERE h.check_type = types.check_type ORDER BY h.checked_at DESC LIMIT 1
           ) AS latest
           WHERE types.check_type IS NOT NULL
           ORDER BY latest.check_type"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CheckRow {
            check_type: row.check_type,
            status: HealthStatus::parse(&row.status),
            details: row.details,
            checked_at: row.checked_at,
        })
        .collect())
}

/// Deletes results older than `cutoff` (a check a minute adds up); returns how many.
pub async fn purge_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>) -> sqlx::Result<u64> {
    let deleted = sqlx::query!("DELETE FROM storage_health_checks WHERE checked_at < $1", cutoff).execute(db).await?;
    Ok(deleted.rows_affected())
}
