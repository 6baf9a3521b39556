//! The `storage_backup_entries` table: the images of a backup run, assigned to batches when
//! the backup is planned, each with its archive once written (or why it has none), and the
//! progress of a run counted from them.

use futures::StreamExt;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::db::storage_backups::Backup;
use crate::model::{
    ArchiveMethod, ArchivedImage, BackupId, BackupStatus, ImageFormat, ImageId, ImageType, Owner, OwnerId, OwnerType,
};
use crate::storage::StorageKey;

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

/// Plans a pending backup: assigns its images to batches of `batch_files` and marks it
/// running, in the caller's transaction ([`crate::backup::plan`] queues the batches). A backup with
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
    Archived { image_id: ImageId, archive_path: String, compressed_size: i64, method: ArchiveMethod },
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

/// The manifest lines of a backup's archived entries, streamed in image id order.
pub fn manifest_entries(
    conn: &mut PgConnection,
    id: BackupId,
) -> impl futures::Stream<Item = sqlx::Result<ArchivedImage>> + '_ {
    sqlx::query!(
        r#"SELECT e.archive_path AS "archive_path!", e.image_id AS "image_id: ImageId",
                  f.owner_id AS "owner_id: OwnerId", f.owner_type AS "owner_type: OwnerType",
                  f.image_type AS "image_type: ImageType", f.original_name, f.file_path,
                  f.format AS "format: ImageFormat", f.mime_type, f.width, f.height, f.is_public, f.tags, f.metadata,
                  f.checksum, f.file_size, e.compressed_size AS "compressed_size!", e.method AS "method!: ArchiveMethod", f.created_at,
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
        Ok(ArchivedImage {
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
            method: row.method,
            source_ids: row.source_ids.into_iter().map(ImageId).collect(),
            created_at: row.created_at,
        })
    })
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
