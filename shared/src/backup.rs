//! Backups of originals: requesting, planning and checking one (each a row change and its
//! job, committed together), archiving batches ([`run_batch`]), the archive format
//! ([`archive`]), the manifest that lets a restore rebuild files and rows on an empty
//! machine ([`manifest`]), restores ([`restore`]) and retention ([`retention`]). Where
//! archives live in `storage.backupPath` is [`crate::storage::backup_dir`]'s to say:
//!
//! ```text
//! {backupPath}/{YYYY-MM-DD}/{backup_id}/manifest.jsonl
//! {backupPath}/{YYYY-MM-DD}/{backup_id}/images/{type}/{owner}/images/{image_id}.{ext}.zst
//! ```
//!
//! A folder per backup inside the day keeps two backups of one day (a scheduled one and a
//! manual one, or a retention carry-over) from sharing files, so removing one never touches
//! the other's archives. Thumbnails are not backed up: they are regenerated after a restore.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::db::{outbox, storage_backup_entries, storage_backups};
use crate::events::{BackupBatchRequested, BackupCheckRequested, BackupRequested};
use crate::model::{BackupId, BackupTrigger};

pub mod archive;
mod batch;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod verify;

pub use batch::{BackupError, BatchReport, finish_if_done, run_batch};

/// Requests a backup: a pending row (its folder named after `now`'s UTC date) and its
/// `backup.requested` job, in the caller's transaction so that they commit together.
pub async fn request(
    tx: &mut PgConnection,
    trigger: BackupTrigger,
    requested_by: Option<Uuid>,
    compression_level: i32,
    now: DateTime<Utc>,
) -> sqlx::Result<BackupId> {
    let id = BackupId::new();
    storage_backups::insert(&mut *tx, id, trigger, requested_by, compression_level, now).await?;
    outbox::enqueue(&mut *tx, BackupRequested { backup_id: id }).await?;
    Ok(id)
}

/// Plans a pending backup into batches of `batch_files` (see [`storage_backup_entries::plan`]) and
/// queues one `backup_batch.requested` job per batch, in the caller's transaction. `None` when it was
/// planned already (a duplicate delivery).
pub async fn plan(tx: &mut PgConnection, id: BackupId, batch_files: i64) -> sqlx::Result<Option<i32>> {
    let Some(batches) = storage_backup_entries::plan(&mut *tx, id, batch_files).await? else { return Ok(None) };
    for batch in 0..batches {
        outbox::enqueue(&mut *tx, BackupBatchRequested { backup_id: id, batch }).await?;
    }
    Ok(Some(batches))
}

/// Requests an integrity check of a finished backup: its `backup_check.requested` job.
pub async fn request_verification(db: impl PgExecutor<'_>, id: BackupId) -> sqlx::Result<()> {
    outbox::enqueue(db, BackupCheckRequested { backup_id: id }).await?;
    Ok(())
}
