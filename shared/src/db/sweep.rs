//! The sweeper's queries: images left waiting for thumbnails or verification, with their
//! per-image back-off, and backups whose batches stopped progressing.
//!
//! An image is due when it has waited `pending_after` since its upload, or, once re-queued,
//! `pending_after × 2^requeue_count` since its last re-queue (the factor stops growing at
//! 2^10). Every update re-checks that
//! condition under the row lock, so two sweeps running at once re-queue an image once.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{BackupId, BackupStatus, ImageId};

/// A live image still waiting for some of its work.
#[derive(Debug, Clone)]
pub struct PendingImage {
    pub id: ImageId,
    pub created_at: DateTime<Utc>,
    pub requeue_count: i32,
}

/// The next page of due images, oldest upload first, after the keyset `after`. Uses the
/// partial index of pending images.
pub async fn due_page(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    pending_after_secs: f64,
    after: Option<(DateTime<Utc>, ImageId)>,
    limit: i64,
) -> sqlx::Result<Vec<PendingImage>> {
    let (after_created, after_id) = match after {
        Some((created, id)) => (Some(created), Some(id.0)),
        None => (None, None),
    };
    sqlx::query_as!(
        PendingImage,
        r#"SELECT id AS "id: ImageId", created_at, requeue_count
           FROM storage_files
           WHERE deleted_at IS NULL AND (thumbnail_status = 'pending' OR checksum_status = 'pending')
             AND sweep_gave_up_at IS NULL
             AND created_at < $1::timestamptz - make_interval(secs => $2::float8)
             AND (last_requeued_at IS NULL
                  OR last_requeued_at < $1::timestamptz - make_interval(secs => $2::float8 * power(2, least(requeue_count, 10))))
             AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
           ORDER BY created_at, id
           LIMIT $5"#,
        now,
        pending_after_secs,
        after_created,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// An image whose work was re-queued, and which of it was still pending.
#[derive(Debug, Clone, Copy)]
pub struct Requeued {
    pub id: ImageId,
    pub thumbnails: bool,
    pub checksum: bool,
}

/// Counts a re-queue on those of `ids` that are still due and below `max_requeues`; returns
/// them. The caller enqueues their events in the same transaction.
pub async fn mark_requeued(
    tx: &mut PgConnection,
    ids: &[ImageId],
    now: DateTime<Utc>,
    pending_after_secs: f64,
    max_requeues: i32,
) -> sqlx::Result<Vec<Requeued>> {
    let ids: Vec<_> = ids.iter().map(|id| id.0).collect();
    sqlx::query_as!(
        Requeued,
        r#"UPDATE storage_files SET requeue_count = requeue_count + 1, last_requeued_at = $2
           WHERE id = ANY($1) AND deleted_at IS NULL AND sweep_gave_up_at IS NULL
             AND (thumbnail_status = 'pending' OR checksum_status = 'pending')
             AND requeue_count < $4
             AND (last_requeued_at IS NULL
                  OR last_requeued_at < $2::timestamptz - make_interval(secs => $3::float8 * power(2, least(requeue_count, 10))))
           RETURNING id AS "id: ImageId", thumbnail_status = 'pending' AS "thumbnails!",
                     checksum_status = 'pending' AS "checksum!""#,
        &ids,
        now,
        pending_after_secs,
        max_requeues,
    )
    .fetch_all(&mut *tx)
    .await
}

/// Gives up on those of `ids` that are still due after `max_requeues` re-queues: records why
/// in `processing_error`, marks pending thumbnails failed (a late job still makes them), and
/// stops sweeping them. Returns them.
pub async fn give_up(
    db: impl PgExecutor<'_>,
    ids: &[ImageId],
    now: DateTime<Utc>,
    pending_after_secs: f64,
    max_requeues: i32,
) -> sqlx::Result<Vec<ImageId>> {
    let ids: Vec<_> = ids.iter().map(|id| id.0).collect();
    sqlx::query_scalar!(
        r#"UPDATE storage_files SET sweep_gave_up_at = $2,
               thumbnail_status = CASE WHEN thumbnail_status = 'pending' THEN 'failed' ELSE thumbnail_status END,
               processing_error = coalesce(processing_error || '; ', '') || 'sweeper: still waiting for '
                   || CASE WHEN thumbnail_status = 'pending' AND checksum_status = 'pending'
                           THEN 'thumbnails and verification'
                           WHEN thumbnail_status = 'pending' THEN 'thumbnails' ELSE 'verification' END
                   || ' after ' || requeue_count || ' re-queues; given up'
           WHERE id = ANY($1) AND deleted_at IS NULL AND sweep_gave_up_at IS NULL
             AND (thumbnail_status = 'pending' OR checksum_status = 'pending')
             AND requeue_count >= $4
             AND (last_requeued_at IS NULL
                  OR last_requeued_at < $2::timestamptz - make_interval(secs => $3::float8 * power(2, least(requeue_count, 10))))
           RETURNING id AS "id: ImageId""#,
        &ids,
        now,
        pending_after_secs,
        max_requeues,
    )
    .fetch_all(db)
    .await
}

/// Seconds the oldest image still being swept has waited since its upload.
pub async fn oldest_pending_secs(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar!(
        r#"SELECT EXTRACT(EPOCH FROM $1 - min(created_at))::float8
           FROM storage_files
           WHERE deleted_at IS NULL AND (thumbnail_status = 'pending' OR checksum_status = 'pending')
             AND sweep_gave_up_at IS NULL"#,
        now,
    )
    .fetch_one(db)
    .await
}

/// Live images the sweeper gave up on that still miss their thumbnails or verification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GivenUpUnfinished {
    pub count: i64,
    /// The first `sample` of them, oldest upload first.
    pub sample: Vec<ImageId>,
}

/// Counts the images the sweeper gave up on (in any run) that are still not fully
/// processed, and names the oldest `sample` of them. Given-up images are few; their partial
/// index (`storage_files_given_up_idx`) keeps this from reading the whole table.
pub async fn given_up_unfinished(db: impl PgExecutor<'_>, sample: i64) -> sqlx::Result<GivenUpUnfinished> {
    let rows = sqlx::query!(
        r#"SELECT count(*) OVER () AS "count!", id AS "id: ImageId"
           FROM storage_files
           WHERE sweep_gave_up_at IS NOT NULL AND deleted_at IS NULL
             AND (thumbnail_status IN ('pending', 'failed') OR checksum_status = 'pending')
           ORDER BY created_at, id
           LIMIT $1"#,
        sample,
    )
    .fetch_all(db)
    .await?;
    let count = rows.first().map_or(0, |row| row.count);
    Ok(GivenUpUnfinished { count, sample: rows.into_iter().map(|row| row.id).collect() })
}

/// A backup that is pending or running with nothing finished for a while.
#[derive(Debug, Clone, Copy)]
pub struct StalledBackup {
    pub id: BackupId,
    pub status: BackupStatus,
}

/// Pending or running backups with no progress (planning, a finished entry, or a previous
/// re-queue) since `stalled_before`, claimed for a re-queue by stamping `last_requeued_at`
/// with `now`, so a concurrent sweep skips them. Unfinished backups are few.
pub async fn claim_stalled_backups(
    tx: &mut PgConnection,
    stalled_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<StalledBackup>> {
    sqlx::query_as!(
        StalledBackup,
        r#"UPDATE storage_backups b SET last_requeued_at = $2
           WHERE b.status IN ('pending', 'running') AND b.removed_at IS NULL
             AND greatest(b.created_at, b.started_at, b.last_requeued_at,
                          (SELECT max(e.done_at) FROM storage_backup_entries e WHERE e.backup_id = b.id))
                 < $1
           RETURNING b.id AS "id: BackupId", b.status AS "status: BackupStatus""#,
        stalled_before,
        now,
    )
    .fetch_all(&mut *tx)
    .await
}

/// Restores whose job was lost (pending since before `stalled_before`) or whose worker died
/// (running with a lease that ran out), claimed for a re-queue by stamping
/// `last_requeued_at` with `now`, at most once per stall period. Unfinished restores are few.
pub async fn claim_stalled_restores(
    tx: &mut PgConnection,
    stalled_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "UPDATE storage_restores SET last_requeued_at = $2
         WHERE ((status = 'pending' AND created_at < $1)
                OR (status = 'running' AND coalesce(lease_until, '-infinity') < $2))
           AND coalesce(last_requeued_at, '-infinity') < $1
         RETURNING id",
        stalled_before,
        now,
    )
    .fetch_all(&mut *tx)
    .await
}

/// The batches of a running backup that still have entries to archive.
pub async fn unfinished_batches(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar!(
        "SELECT DISTINCT batch FROM storage_backup_entries WHERE backup_id = $1 AND status = 'pending' ORDER BY batch",
        id as BackupId,
    )
    .fetch_all(db)
    .await
}
