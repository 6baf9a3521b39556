//! The `storage_backups` table: one row per backup run, its plan and its outcome.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::backup::{self, BackupId, BackupTrigger};
use crate::db::outbox;
use crate::events::BackupRequested;

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
