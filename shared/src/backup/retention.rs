//! Backup retention: backups older than `backupPolicy.retentionDays` are removed, but
//! never the last copy of an image that still exists. An expired backup holding the newest
//! copy of a live image is kept, and the image is carried into a new backup (trigger
//! `retention`); a later run removes the old backup once that copy exists. Images themselves
//! are never touched here (their own expiry, when configured, is `crate::expiry`).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::BackupError;
use crate::config::BackupPolicy;
use crate::db::backup_retention;
use crate::model::{BackupId, BackupTrigger, ImageId};
use crate::storage::BackupTree;

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Backups past the retention time.
    pub expired: usize,
    /// Removed now (folder deleted, row kept as history with `removed_at`).
    pub removed: Vec<BackupId>,
    /// Kept because they hold the last copy of live images.
    pub kept: Vec<BackupId>,
    /// The carry-over backup requested by this run, if any.
    pub carry_over: Option<BackupId>,
    /// Images given to it.
    pub carried_images: usize,
    /// Last copies already waiting in an earlier carry-over.
    pub waiting_images: usize,
}

/// Applies retention as of `now` (a parameter, so that tests can move the clock).
pub async fn apply(
    db: &PgPool,
    tree: &BackupTree,
    backups: &BackupPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionReport, BackupError> {
    let cutoff = now - Duration::days(i64::from(backups.retention_days));
    let expired = backup_retention::expired(db, cutoff).await?;
    let mut report = RetentionReport { expired: expired.len(), ..RetentionReport::default() };
    if expired.is_empty() {
        return Ok(report);
    }
    let ids: Vec<BackupId> = expired.iter().map(|backup| backup.id).collect();
    let last_copies = backup_retention::last_copies(db, &ids).await?;
    let mut to_carry: Vec<ImageId> = last_copies.iter().filter(|c| !c.being_carried).map(|c| c.image_id).collect();
    to_carry.dedup();
    let mut waiting: Vec<ImageId> = last_copies.iter().filter(|c| c.being_carried).map(|c| c.image_id).collect();
    waiting.dedup();
    report.waiting_images = waiting.len();
    if !to_carry.is_empty() {
        let mut tx = db.begin().await?;
        let level = backups.compression_level;
        let batch = i64::from(backups.batch_size);
        let id = super::request(&mut tx, BackupTrigger::Retention, None, level, now).await?;
        backup_retention::add_carry_over_entries(&mut *tx, id, &to_carry, batch).await?;
        tx.commit().await?;
        tracing::info!(backup.id = %id, images = to_carry.len(), "carrying last copies into backup {id}");
        report.carry_over = Some(id);
        report.carried_images = to_carry.len();
    }
    for backup in expired {
        if last_copies.iter().any(|copy| copy.backup_id == backup.id) {
            report.kept.push(backup.id);
            continue;
        }
        // The folder first: a crash before the row is marked leaves a row the next run
        // marks, never a folder no row leads to.
        let path = std::path::PathBuf::from(&backup.backup_path);
        let removing = tree.clone();
        tokio::task::spawn_blocking(move || removing.remove_dir(&path)).await??;
        let mut conn = db.acquire().await?;
        backup_retention::mark_removed(&mut conn, backup.id, now).await?;
        tracing::info!(backup.id = %backup.id, created_at = %backup.created_at, "removed expired backup {}", backup.id);
        report.removed.push(backup.id);
    }
    Ok(report)
}
