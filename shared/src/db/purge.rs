//! The purge's deletions: expired signed URLs and old bookkeeping rows. Each call deletes at
//! most `limit` rows in its own statement, so that a table with millions of old rows is
//! emptied by many short transactions instead of one long lock; callers loop until a call
//! deletes fewer than `limit`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// Signed URL records (and, by cascade, their client addresses) that expired before `cutoff`.
pub async fn signed_urls_expired_before(
    db: impl PgExecutor<'_>,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM storage_signed_urls WHERE id IN
             (SELECT id FROM storage_signed_urls WHERE expires_at < $1 LIMIT $2)",
        cutoff,
        limit,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Outbox rows published before `cutoff`; unpublished rows are never touched.
pub async fn outbox_published_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM outbox WHERE id IN
             (SELECT id FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 LIMIT $2)",
        cutoff,
        limit,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Health check results recorded before `cutoff`.
pub async fn health_checks_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM storage_health_checks WHERE id IN
             (SELECT id FROM storage_health_checks WHERE checked_at < $1 LIMIT $2)",
        cutoff,
        limit,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Metric roll-up points whose period started before `cutoff`.
pub async fn metrics_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM storage_metrics WHERE id IN
             (SELECT id FROM storage_metrics WHERE period_start < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Job failure records older than `cutoff`.
pub async fn job_failures_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM job_failures WHERE id IN (SELECT id FROM job_failures WHERE failed_at < $1 LIMIT $2)",
        cutoff,
        limit,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Idempotency keys recorded before `cutoff`; the upload each one answers for stays.
pub async fn idempotency_keys_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query!(
        "DELETE FROM upload_idempotency WHERE (principal_id, idempotency_key) IN
             (SELECT principal_id, idempotency_key FROM upload_idempotency WHERE created_at < $1 LIMIT $2)",
        cutoff,
        limit,
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Access log rows written before `cutoff` that wait in the default partition, outside any
/// monthly one (migration 0021; whole months are dropped, see
/// `maintenance::partitions`). The log has no key (see migration 0012): rows go by their
/// physical address, found through the BRIN index on `created_at`.
pub async fn access_logs_before(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM storage_access_logs_default WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM storage_access_logs_default WHERE created_at < $1 LIMIT $2))",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}

/// Records of webhook deliveries made before `cutoff` (a job is never redelivered that late).
pub async fn webhook_deliveries_before(
    db: impl PgExecutor<'_>,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE (event_id, endpoint) IN
             (SELECT event_id, endpoint FROM webhook_deliveries WHERE delivered_at < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected())
}
