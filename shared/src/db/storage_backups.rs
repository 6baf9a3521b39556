//! The `storage_backups` table: one row per backup run, its plan and its outcome.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::backup::archive::Method;
use crate::backup::{self, manifest};
use crate::db::outbox;
use crate::events::{BackupBatch, BackupRequested};
use crate::imaging::ImageFormat;
use crate::model::{BackupId, BackupStatus, BackupTrigger, ImageId, ImageType, Owner, OwnerId, OwnerType};
use crate::storage::StorageKey;

/// Records a pending backup and its `backup.requested` event in the caller's transaction,
/// so the request and its job commit together. Its folder is named after `now`'s UTC date.
pub async fn request(
    tx: &mut PgConnection,
    trigger: BackupTrigger,
    requested_by: Option<Uuid>,
    compression_level: i32,
    now: DateTime<Utc>,
) -> sqlx::Result<BackupId> {
    let id = BackupId::new();
    let date = now.date_naive();
    let path = backup::backup_dir(date, id).to_string_lossy().into_owned();
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
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(&mut *tx, BackupRequested { backup_id: id }).await?;
    Ok(id)
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

/// Entry counts of one backup by state, for progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub pending: i64,
    pub done: i64,
    pub failed: i64,
}

pub async fn progress(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<Progress> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE status = 'done') AS "done!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed!"
           FROM storage_backup_entries WHERE backup_id = $1"#,
        id as BackupId,
    )
    .fetch_one(db)
    .await?;
    Ok(Progress { pending: row.pending, done: row.done, failed: row.failed })
}
impl Progress {
    /// The progress of a finished backup, from the counts its row keeps: no need to count
    /// its entries (a million for a first backup) again.
    pub fn of_finished(backup: &Backup) -> Self {
        Self { pending: 0, done: backup.file_count, failed: backup.failed_count }
    }
}

/// The progress of several backups in one query, by backup; a backup with no entries yet
/// (pending) is absent.
pub async fn progress_of(db: impl PgExecutor<'_>, ids: &[BackupId]) -> sqlx::Result<Vec<(BackupId, Progress)>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query!(
        r#"SELECT backup_id AS "backup_id: BackupId",
                  count(*) FILTER (WHERE status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE status = 'done') AS "done!",
                  count(*) FILTER (WHERE status = 'failed') AS "failed!"
           FROM storage_backup_entries WHERE backup_id = ANY($1) GROUP BY backup_id"#,
        &ids,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.backup_id, Progress { pending: row.pending, done: row.done, failed: row.failed }))
        .collect())
}

/// Plans a pending backup: assigns its images to batches of `batch_files`, marks it running
/// and enqueues one `backup.batch` per batch, all in the caller's transaction. A backup with
/// entries already (a retention carry-over names its images up front) keeps them; any other
/// takes every live original not yet backed up and not waiting in another running backup.
/// Returns the number of batches, or `None` when the backup is not pending any more (a
/// duplicate delivery): planning happens once.
pub async fn plan(tx: &mut PgConnection, id: BackupId, batch_files: i64) -> sqlx::Result<Option<i32>> {
    let status = sqlx::query_scalar!(
        r#"SELECT status AS "status: BackupStatus" FROM storage_backups WHERE id = $1 FOR UPDATE"#,
        id as BackupId,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if status != Some(BackupStatus::Pending) {
        return Ok(None);
    }
    sqlx::query!(
        "INSERT INTO storage_backup_entries (backup_id, image_id, batch)
         SELECT $1, f.id, ((row_number() OVER (ORDER BY f.created_at, f.id) - 1) / $2)::int
         FROM storage_files f
         WHERE f.deleted_at IS NULL AND NOT f.is_backed_up
           AND NOT EXISTS (SELECT 1 FROM storage_backup_entries WHERE backup_id = $1)
           AND NOT EXISTS (
               SELECT 1 FROM storage_backup_entries e JOIN storage_backups b ON b.id = e.backup_id
               WHERE e.image_id = f.id AND e.status = 'pending' AND b.status = 'running')",
        id as BackupId,
        batch_files.max(1),
    )
    .execute(&mut *tx)
    .await?;
    let planned = sqlx::query!(
        r#"UPDATE storage_backups b SET status = 'running', started_at = now(),
               batch_count = p.batches, file_count = p.files, total_bytes = p.bytes
           FROM (SELECT coalesce(max(e.batch) + 1, 0)::int AS batches, count(*) AS files,
                        coalesce(sum(f.file_size), 0)::bigint AS bytes
                 FROM storage_backup_entries e LEFT JOIN storage_files f ON f.id = e.image_id
                 WHERE e.backup_id = $1) p
           WHERE b.id = $1
           RETURNING p.batches AS "batches!""#,
        id as BackupId,
    )
    .fetch_one(&mut *tx)
    .await?;
    for batch in 0..planned.batches {
        outbox::enqueue(&mut *tx, BackupBatch { backup_id: id, batch }).await?;
    }
    Ok(Some(planned.batches))
}

/// An image of a batch still to archive, with what its archive needs.
#[derive(Debug, Clone)]
pub struct PendingEntry {
    pub image_id: ImageId,
    /// `None` when the image's row is gone or deleted: nothing to archive any more.
    pub file: Option<EntryFile>,
}

#[derive(Debug, Clone)]
pub struct EntryFile {
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub format: ImageFormat,
    pub checksum: String,
    pub file_size: i64,
}

impl EntryFile {
    pub fn key(&self, image_id: ImageId) -> StorageKey {
        StorageKey::Original {
            image_type: self.image_type,
            owner: Owner { id: self.owner_id, kind: self.owner_type },
            image_id,
            format: self.format,
        }
    }
}

/// The entries of one batch not archived yet.
pub async fn pending_entries(db: impl PgExecutor<'_>, id: BackupId, batch: i32) -> sqlx::Result<Vec<PendingEntry>> {
    let rows = sqlx::query!(
        r#"SELECT e.image_id AS "image_id: ImageId", f.owner_id AS "owner_id?: OwnerId",
                  f.owner_type AS "owner_type?: OwnerType", f.image_type AS "image_type?: ImageType",
                  f.format AS "format?: ImageFormat", f.checksum AS "checksum?", f.file_size AS "file_size?",
                  (f.id IS NOT NULL AND f.deleted_at IS NULL) AS "live!"
           FROM storage_backup_entries e LEFT JOIN storage_files f ON f.id = e.image_id
           WHERE e.backup_id = $1 AND e.batch = $2 AND e.status = 'pending'
           ORDER BY e.image_id"#,
        id as BackupId,
        batch,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let file =
                match (row.live, row.owner_id, row.owner_type, row.image_type, row.format, row.checksum, row.file_size)
                {
                    (
                        true,
                        Some(owner_id),
                        Some(owner_type),
                        Some(image_type),
                        Some(format),
                        Some(checksum),
                        Some(file_size),
                    ) => Some(EntryFile { owner_id, owner_type, image_type, format, checksum, file_size }),
                    _ => None,
                };
            PendingEntry { image_id: row.image_id, file }
        })
        .collect())
}

/// How archiving one entry ended.
#[derive(Debug, Clone)]
pub enum EntryOutcome {
    /// Written, synced and verified at `archive_path` (relative to `storage.backupPath`).
    Archived { image_id: ImageId, archive_path: String, compressed_size: i64, method: Method },
    /// Not archived, for this reason (the original is missing or does not match its checksum…).
    Failed { image_id: ImageId, reason: String },
    /// The image was deleted before its turn: dropped from the backup.
    Gone { image_id: ImageId },
}

/// Records a batch's outcomes: archived entries are done and their images marked backed up
/// (with the path of this newest copy); failed ones keep their reason; gone ones leave the
/// backup. Adds the batch's work time. Entries already recorded (a redelivered batch) are
/// left as they are.
pub async fn record_batch(
    tx: &mut PgConnection,
    id: BackupId,
    outcomes: &[EntryOutcome],
    work_ms: i64,
) -> sqlx::Result<()> {
    let (mut done_ids, mut paths, mut sizes, mut methods) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut failed_ids, mut reasons, mut gone_ids) = (Vec::new(), Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome {
            EntryOutcome::Archived { image_id, archive_path, compressed_size, method } => {
                done_ids.push(image_id.0);
                paths.push(archive_path.clone());
                sizes.push(*compressed_size);
                methods.push(method.as_str().to_owned());
            }
            EntryOutcome::Failed { image_id, reason } => {
                failed_ids.push(image_id.0);
                reasons.push(reason.clone());
            }
            EntryOutcome::Gone { image_id } => gone_ids.push(image_id.0),
        }
    }
    sqlx::query!(
        "UPDATE storage_backup_entries e SET status = 'done', archive_path = d.path, compressed_size = d.size,
                method = d.method, file_size = f.file_size, done_at = now()
         FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::text[]) AS d(image_id, path, size, method),
              storage_files f
         WHERE e.backup_id = $1 AND e.image_id = d.image_id AND e.status = 'pending' AND f.id = d.image_id",
        id as BackupId,
        &done_ids,
        &paths,
        &sizes,
        &methods,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE storage_files f SET is_backed_up = true, backup_path = d.path
         FROM unnest($1::uuid[], $2::text[]) AS d(image_id, path)
         WHERE f.id = d.image_id AND f.deleted_at IS NULL",
        &done_ids,
        &paths,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE storage_backup_entries e SET status = 'failed', error = d.reason, done_at = now()
         FROM unnest($2::uuid[], $3::text[]) AS d(image_id, reason)
         WHERE e.backup_id = $1 AND e.image_id = d.image_id AND e.status = 'pending'",
        id as BackupId,
        &failed_ids,
        &reasons,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM storage_backup_entries WHERE backup_id = $1 AND image_id = ANY($2) AND status = 'pending'",
        id as BackupId,
        &gone_ids,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE storage_backups SET work_ms = work_ms + $2,
             batches_done = batch_count - (SELECT count(DISTINCT batch) FROM storage_backup_entries
                                           WHERE backup_id = $1 AND status = 'pending')
         WHERE id = $1",
        id as BackupId,
        work_ms,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
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

/// The manifest lines of a backup's archived entries, streamed in image id order.
pub fn manifest_entries(
    conn: &mut PgConnection,
    id: BackupId,
) -> impl futures::Stream<Item = sqlx::Result<manifest::Entry>> + '_ {
    sqlx::query!(
        r#"SELECT e.archive_path AS "archive_path!", e.image_id AS "image_id: ImageId",
                  f.owner_id AS "owner_id: OwnerId", f.owner_type AS "owner_type: OwnerType",
                  f.image_type AS "image_type: ImageType", f.original_name, f.file_path,
                  f.format AS "format: ImageFormat", f.mime_type, f.width, f.height, f.is_public, f.tags, f.metadata,
                  f.checksum, f.file_size, e.compressed_size AS "compressed_size!", e.method AS "method!", f.created_at,
                  ARRAY(SELECT s.source_id FROM storage_image_sources s WHERE s.result_id = f.id ORDER BY s.source_id)
                      AS "source_ids!: Vec<Uuid>"
           FROM storage_backup_entries e JOIN storage_files f ON f.id = e.image_id
           WHERE e.backup_id = $1 AND e.status = 'done'
           ORDER BY e.image_id"#,
        id as BackupId,
    )
    .fetch(conn)
    .map(|row| {
        let row = row?;
        Ok(manifest::Entry {
            archive_path: row.archive_path.into(),
            image_id: row.image_id,
            owner_id: row.owner_id,
            owner_type: row.owner_type,
            image_type: row.image_type,
            original_name: row.original_name,
            file_path: row.file_path,
            format: row.format,
            mime_type: row.mime_type,
            width: row.width,
            height: row.height,
            is_public: row.is_public,
            tags: row.tags,
            metadata: row.metadata,
            checksum: row.checksum,
            file_size: row.file_size,
            compressed_size: row.compressed_size,
            method: if row.method == "raw" { Method::Raw } else { Method::Zstd },
            source_ids: row.source_ids.into_iter().map(ImageId).collect(),
            created_at: row.created_at,
        })
    })
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

/// Gives up the pending entries of a batch (its job was dead-lettered), so the backup can
/// still finish, as failed.
pub async fn fail_batch(db: impl PgExecutor<'_>, id: BackupId, batch: i32, reason: &str) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE storage_backup_entries SET status = 'failed', error = $3, done_at = now()
         WHERE backup_id = $1 AND batch = $2 AND status = 'pending'",
        id as BackupId,
        batch,
        reason,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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

/// Records the outcome of an integrity check of a backup's archives.
pub async fn record_verification(
    db: impl PgExecutor<'_>,
    id: BackupId,
    report: &crate::backup::verify::VerifyReport,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_backups SET verified_at = now(), verify_status = $2, verify_report = $3,
                verify_lease_until = NULL
         WHERE id = $1",
        id as BackupId,
        if report.is_intact() { "ok" } else { "corrupt" },
        serde_json::to_value(report).expect("a report serialises"),
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

/// The archives the database lists as written for backup `id`, with their images.
pub async fn archives(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<Vec<(ImageId, String)>> {
    let rows = sqlx::query!(
        r#"SELECT image_id AS "image_id: ImageId", archive_path AS "archive_path!" FROM storage_backup_entries
           WHERE backup_id = $1 AND status = 'done' AND archive_path IS NOT NULL"#,
        id as BackupId,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.image_id, row.archive_path)).collect())
}

/// Records that a check found these archives of backup `id` missing or corrupt: their
/// entries no longer count as copies (retention then keeps older ones), and each live image
/// whose current copy was one of them is marked not backed up, so the next backup takes it
/// again. Returns how many images were marked.
pub async fn record_damage(tx: &mut PgConnection, id: BackupId, damaged: &[(ImageId, String)]) -> sqlx::Result<u64> {
    if damaged.is_empty() {
        return Ok(0);
    }
    let (ids, paths): (Vec<Uuid>, Vec<String>) = damaged.iter().map(|(image, path)| (image.0, path.clone())).unzip();
    sqlx::query!(
        "UPDATE storage_backup_entries SET status = 'failed', error = 'archive missing or corrupt at its last check'
         WHERE backup_id = $1 AND image_id = ANY($2) AND status = 'done'",
        id as BackupId,
        &ids,
    )
    .execute(&mut *tx)
    .await?;
    let marked = sqlx::query!(
        "UPDATE storage_files f SET is_backed_up = false, backup_path = NULL
         FROM unnest($1::uuid[], $2::text[]) AS d(image_id, path)
         WHERE f.id = d.image_id AND f.backup_path = d.path AND f.deleted_at IS NULL",
        &ids,
        &paths,
    )
    .execute(&mut *tx)
    .await?;
    Ok(marked.rows_affected())
}

/// Requests an integrity check of a finished backup: its `backup.verify_requested` job.
pub async fn request_verification(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<()> {
    outbox::enqueue(db, crate::events::BackupVerifyRequested { backup_id: id }).await?;
    Ok(())
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
