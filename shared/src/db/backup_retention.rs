//! Queries of backup retention: which backups expired, which of their images have no other
//! copy, and the carry-over backup that gives them one.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{BackupId, ImageId};

/// A finished backup older than the cut-off whose files are still on disk.
#[derive(Debug, Clone)]
pub struct Expired {
    pub id: BackupId,
    pub backup_path: String,
    pub created_at: DateTime<Utc>,
}

pub async fn expired(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>) -> sqlx::Result<Vec<Expired>> {
    sqlx::query_as!(
        Expired,
        r#"SELECT id AS "id: BackupId", backup_path, created_at FROM storage_backups
           WHERE status IN ('completed', 'failed') AND removed_at IS NULL AND created_at < $1
           ORDER BY created_at"#,
        cutoff,
    )
    .fetch_all(db)
    .await
}

/// An image whose only backup copies are in expiring backups.
#[derive(Debug, Clone)]
pub struct LastCopy {
    pub backup_id: BackupId,
    pub image_id: ImageId,
    /// Already waiting in a running or pending backup (a carry-over under way).
    pub being_carried: bool,
}

/// The archived live images of the `expiring` backups that have no archived copy in a newer
/// backup still on disk: where an image's newest copy expires, it must be carried forward.
/// (Older copies never count, so the newest copy of a live image is never removed.)
pub async fn last_copies(db: impl PgExecutor<'_>, expiring: &[BackupId]) -> sqlx::Result<Vec<LastCopy>> {
    let ids: Vec<Uuid> = expiring.iter().map(|id| id.0).collect();
    sqlx::query_as!(
        LastCopy,
        r#"SELECT e.backup_id AS "backup_id: BackupId", e.image_id AS "image_id: ImageId",
                  EXISTS (SELECT 1 FROM storage_backup_entries p JOIN storage_backups pb ON pb.id = p.backup_id
                          WHERE p.image_id = e.image_id AND p.status = 'pending'
                            AND pb.status IN ('pending', 'running')) AS "being_carried!"
           FROM storage_backup_entries e
           JOIN storage_backups b ON b.id = e.backup_id
           JOIN storage_files f ON f.id = e.image_id AND f.deleted_at IS NULL
           WHERE e.backup_id = ANY($1) AND e.status = 'done'
             AND NOT EXISTS (
                 SELECT 1 FROM storage_backup_entries o JOIN storage_backups ob ON ob.id = o.backup_id
                 WHERE o.image_id = e.image_id AND o.status = 'done' AND ob.removed_at IS NULL
                   AND (ob.created_at, ob.id) > (b.created_at, b.id))
           ORDER BY e.image_id, e.backup_id"#,
        &ids,
    )
    .fetch_all(db)
    .await
}

/// Names the images of pending backup `id` up front, in batches of `batch_files`: a
/// retention carry-over backs up exactly these (the worker's planning keeps them).
pub async fn add_carry_over_entries(
    db: impl PgExecutor<'_>,
    id: BackupId,
    images: &[ImageId],
    batch_files: i64,
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = images.iter().map(|id| id.0).collect();
    sqlx::query!(
        "INSERT INTO storage_backup_entries (backup_id, image_id, batch)
         SELECT $1, image_id, ((ordinality - 1) / $3)::int FROM unnest($2::uuid[]) WITH ORDINALITY AS t(image_id, ordinality)",
        id as BackupId,
        &ids,
        batch_files.max(1),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that a backup's folder is gone: the row stays as history, its entries (no longer
/// copies of anything) go.
pub async fn mark_removed(conn: &mut PgConnection, id: BackupId, now: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!("UPDATE storage_backups SET removed_at = $2 WHERE id = $1", id as BackupId, now)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM storage_backup_entries WHERE backup_id = $1", id as BackupId).execute(&mut *conn).await?;
    Ok(())
}
