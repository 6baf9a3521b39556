//! The `storage_backups` table: one row per backup run, its outcome and the state of its
//! checks. Its images are `storage_backup_entries`'.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{BackupId, BackupStatus, BackupTrigger};
use crate::storage::backup_dir;

/// Records a pending backup, its folder named after `now`'s UTC date. Its job is queued by
/// [`crate::backup::request`], the one caller.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: BackupId,
    trigger: BackupTrigger,
    requested_by: Option<Uuid>,
    compression_level: i32,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let date = now.date_naive();
    let path = backup_dir(date, id).to_string_lossy().into_owned();
    sqlx::query!(
        "INSERT INTO storage_backups (id, backup_date, backup_path, trigger, requested_by, compression_level, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id as BackupId,
        date,
        path,
        trigger as BackupTrigger,
        requested_by,
        compression_level,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A backup run as stored.
#[derive(Debug, Clone)]
pub struct Backup {
    pub id: BackupId,
    pub backup_date: NaiveDate,
    /// The backup's folder, relative to `storage.backupPath`.
    pub backup_path: String,
    pub status: BackupStatus,
    pub trigger: BackupTrigger,
    pub requested_by: Option<Uuid>,
    pub compression_level: i32,
    /// Images planned (while running) or archived (once finished).
    pub file_count: i64,
    /// Bytes of the originals, and of their archives.
    pub total_bytes: i64,
    pub compressed_bytes: i64,
    pub failed_count: i64,
    pub stored_raw_count: i64,
    pub batch_count: i32,
    pub batches_done: i32,
    /// Time spent archiving and verifying, summed over the batches, in milliseconds.
    pub work_ms: i64,
    pub error: Option<String>,
    pub manifest_path: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub verify_status: Option<String>,
    pub verify_report: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// One backup by id.
pub async fn get(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<Option<Backup>> {
    sqlx::query_as!(
        Backup,
        r#"SELECT id AS "id: BackupId", backup_date, backup_path, status AS "status: BackupStatus",
                  trigger AS "trigger: BackupTrigger", requested_by, compression_level, file_count, total_bytes,
                  compressed_bytes, failed_count, stored_raw_count, batch_count, batches_done, work_ms, error,
                  manifest_path, verified_at, verify_status, verify_report, started_at, completed_at, created_at,
                  removed_at
           FROM storage_backups WHERE id = $1"#,
        id as BackupId
    )
    .fetch_optional(db)
    .await
}

/// Backups, newest first, and how many there are in all.
pub async fn list(conn: &mut PgConnection, limit: i64, offset: i64) -> sqlx::Result<(Vec<Backup>, i64)> {
    let items = sqlx::query_as!(
        Backup,
        r#"SELECT id AS "id: BackupId", backup_date, backup_path, status AS "status: BackupStatus",
                  trigger AS "trigger: BackupTrigger", requested_by, compression_level, file_count, total_bytes,
                  compressed_bytes, failed_count, stored_raw_count, batch_count, batches_done, work_ms, error,
                  manifest_path, verified_at, verify_status, verify_report, started_at, completed_at, created_at,
                  removed_at
           FROM storage_backups ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"#,
        limit,
        offset
    )
    .fetch_all(&mut *conn)
    .await?;
    let total =
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM storage_backups"#).fetch_one(&mut *conn).await?;
    Ok((items, total))
}

/// Locks a running backup whose entries are all recorded, for the one caller that finishes
/// it (concurrent batch handlers wait on the lock, then find it finished). `None` otherwise.
pub async fn lock_finished(tx: &mut PgConnection, id: BackupId) -> sqlx::Result<Option<Backup>> {
    let backup = sqlx::query_as!(
        Backup,
        r#"SELECT id AS "id: BackupId", backup_date, backup_path, status AS "status: BackupStatus",
                  trigger AS "trigger: BackupTrigger", requested_by, compression_level, file_count, total_bytes,
                  compressed_bytes, failed_count, stored_raw_count, batch_count, batches_done, work_ms, error,
                  manifest_path, verified_at, verify_status, verify_report, started_at, completed_at, created_at,
                  removed_at
           FROM storage_backups WHERE id = $1 AND status = 'running' FOR UPDATE"#,
        id as BackupId
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(backup) = backup else { return Ok(None) };
    let pending = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM storage_backup_entries WHERE backup_id = $1 AND status = 'pending') AS "pending!""#,
        id as BackupId,
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok((!pending).then_some(backup))
}

/// Finishes a backup locked by [`lock_finished`]: counts and sizes from its entries, the
/// manifest's path, `completed` when every entry was archived and `failed` otherwise.
pub async fn finish(tx: &mut PgConnection, id: BackupId, manifest_path: &str) -> sqlx::Result<BackupStatus> {
    sqlx::query_scalar!(
        r#"UPDATE storage_backups b SET
               status = CASE WHEN s.failed = 0 THEN 'completed' ELSE 'failed' END,
               file_count = s.done, failed_count = s.failed, total_bytes = s.bytes, compressed_bytes = s.compressed,
               stored_raw_count = s.raw, batches_done = b.batch_count, manifest_path = $2, completed_at = now(),
               error = CASE WHEN s.failed = 0 THEN NULL ELSE s.failed || ' image(s) could not be backed up: ' || s.first_error END
           FROM (SELECT count(*) FILTER (WHERE status = 'done') AS done,
                        count(*) FILTER (WHERE status = 'failed') AS failed,
                        coalesce(sum(file_size) FILTER (WHERE status = 'done'), 0)::bigint AS bytes,
                        coalesce(sum(compressed_size) FILTER (WHERE status = 'done'), 0)::bigint AS compressed,
                        count(*) FILTER (WHERE status = 'done' AND method = 'raw') AS raw,
                        min(error) AS first_error
                 FROM storage_backup_entries WHERE backup_id = $1) s
           WHERE b.id = $1
           RETURNING b.status AS "status!: BackupStatus""#,
        id as BackupId,
        manifest_path,
    )
    .fetch_one(&mut *tx)
    .await
}

/// Marks a backup failed before it ran (its planning job was dead-lettered).
pub async fn fail_unplanned(db: impl PgExecutor<'_>, id: BackupId, reason: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_backups SET status = 'failed', error = $2, completed_at = now() WHERE id = $1 AND status = 'pending'",
        id as BackupId,
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the outcome of an integrity check of a backup's archives: `intact` or not, and
/// the check's report.
pub async fn record_verification(
    db: impl PgExecutor<'_>,
    id: BackupId,
    intact: bool,
    report: Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_backups SET verified_at = now(), verify_status = $2, verify_report = $3,
                verify_lease_until = NULL
         WHERE id = $1",
        id as BackupId,
        if intact { "ok" } else { "corrupt" },
        report,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Takes, or renews, `holder`'s lease on checking backup `id` for `lease` from now; false
/// while another check holds a live one (a second delivery of the same job, or two runs that
/// picked the same backup), and so false for a renewal once another run took the lease over.
pub async fn lease_verify(db: impl PgExecutor<'_>, id: BackupId, holder: Uuid, lease: Duration) -> sqlx::Result<bool> {
    let leased = sqlx::query!(
        "UPDATE storage_backups SET verify_lease_holder = $2, verify_lease_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND (verify_lease_holder = $2 OR coalesce(verify_lease_until, '-infinity') < now())",
        id as BackupId,
        holder,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(leased.rows_affected() == 1)
}

/// Gives up `holder`'s lease on checking backup `id` without a result (the check failed
/// and will be retried).
pub async fn release_verify(db: impl PgExecutor<'_>, id: BackupId, holder: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_backups SET verify_lease_until = NULL WHERE id = $1 AND verify_lease_holder = $2",
        id as BackupId,
        holder,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The finished backup checked longest ago (never-checked ones first, oldest first) among
/// those not checked since `checked_before`: the next one a rolling verification reads.
pub async fn next_to_verify(db: impl PgExecutor<'_>, checked_before: DateTime<Utc>) -> sqlx::Result<Option<BackupId>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id: BackupId" FROM storage_backups
           WHERE manifest_path IS NOT NULL AND removed_at IS NULL
             AND (verified_at IS NULL OR verified_at < $1)
             AND coalesce(verify_lease_until, '-infinity') < now()
           ORDER BY verified_at NULLS FIRST, created_at, id
           LIMIT 1"#,
        checked_before,
    )
    .fetch_optional(db)
    .await
}

/// What the backup health check needs: the last completed backup, the latest backup of
/// any status, and the oldest live original still waiting for its first backup.
#[derive(Debug, Clone, Default)]
pub struct BackupHealth {
    pub last_completed_at: Option<DateTime<Utc>>,
    pub latest_status: Option<String>,
    pub latest_error: Option<String>,
    pub oldest_not_backed_up: Option<DateTime<Utc>>,
    /// Backups whose last check, made after the last completed backup, found damaged
    /// archives: their images have no good copy again until the next backup completes.
    pub damaged_backups: i64,
}

pub async fn health(conn: &mut PgConnection) -> sqlx::Result<BackupHealth> {
    let last_completed_at =
        sqlx::query_scalar!("SELECT max(completed_at) FROM storage_backups WHERE status = 'completed'")
            .fetch_one(&mut *conn)
            .await?;
    let latest = sqlx::query!("SELECT status, error FROM storage_backups ORDER BY created_at DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let oldest_not_backed_up =
        sqlx::query_scalar!("SELECT min(created_at) FROM storage_files WHERE deleted_at IS NULL AND NOT is_backed_up")
            .fetch_one(&mut *conn)
            .await?;
    let damaged_backups = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM storage_backups
           WHERE verify_status = 'corrupt' AND removed_at IS NULL AND verified_at > coalesce($1::timestamptz, '-infinity')"#,
        last_completed_at,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(BackupHealth {
        damaged_backups,
        last_completed_at,
        latest_status: latest.as_ref().map(|row| row.status.clone()),
        latest_error: latest.and_then(|row| row.error),
        oldest_not_backed_up,
    })
}
