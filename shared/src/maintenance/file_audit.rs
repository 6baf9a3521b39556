//! The file audit: files on disk that no row needs are quarantined, live originals missing
//! from disk are reported with whether a backup copy exists, so an operator can restore
//! them (`POST /storage/restore` with their ids), and images whose thumbnail files are
//! missing get their thumbnails made again (they derive from the original).
//!
//! A file is an orphan when no original or thumbnail row of a live image (or of one deleted
//! within the grace, whose deletion job may still be on its way) names it, and it was last
//! written more than `maintenance.orphanGraceSecs` ago: an upload renames its file into
//! place just before its row commits, and thumbnails are written before their rows, so a
//! young file may be about to be referenced. Orphans are moved, not deleted, to
//! `quarantine/{YYYY-MM-DD}/…`, and deleted with their day once it is older than
//! `maintenance.quarantineRetentionDays`; staged files older than the grace are removed.
//!
//! Memory stays bounded whatever the tree holds: a blocking thread walks it and hands over
//! batches of [`LOOKUP_BATCH`] paths through a channel of two, each looked up in one query;
//! live rows are checked in pages of the same size.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::spawn_blocking;

use super::{FILES_CHECK, MaintenanceError, REPORT_SAMPLE};
use crate::config::MaintenanceConfig;
use crate::db::{file_audit, health_checks, outbox};
use crate::events::ImageUploaded;
use crate::model::{HealthStatus, ImageId};
use crate::storage::{ScannedFile, Storage};

/// Paths looked up, or rows checked, per query.
pub const LOOKUP_BATCH: usize = 1000;

/// A live image whose original is not on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingOriginal {
    pub image_id: ImageId,
    /// A backup holds a copy: `POST /storage/restore` with the id brings it back.
    pub backed_up: bool,
    /// The newest copy, relative to `storage.backupPath`.
    pub backup_path: Option<String>,
}

/// What one audit found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditReport {
    /// Files found under `images/`.
    pub scanned_files: u64,
    /// Orphans moved to quarantine.
    pub orphans_quarantined: u64,
    /// The first of them, where they went (relative to `storage.basePath`).
    pub quarantined_sample: Vec<String>,
    /// Unreferenced files left alone because they are younger than the grace.
    pub recent_unreferenced: u64,
    /// Live originals missing from disk.
    pub missing_originals: u64,
    /// The first of them.
    pub missing_sample: Vec<MissingOriginal>,
    /// Staged files older than the grace, removed.
    pub stale_temp_removed: u64,
    /// Quarantined files past `maintenance.quarantineRetentionDays`, deleted.
    pub quarantine_purged: u64,
    /// Images marked ready whose thumbnail files were missing, queued for new thumbnails.
    pub thumbnails_requeued: u64,
}

impl AuditReport {
    /// Degraded when an original is missing: an operator must restore it.
    pub fn status(&self) -> HealthStatus {
        if self.missing_originals > 0 { HealthStatus::Degraded } else { HealthStatus::Ok }
    }
}

/// Audits the tree once as of `now` and records the report as a `files` health check.
pub async fn run(
    db: &PgPool,
    storage: &Storage,
    config: &MaintenanceConfig,
    now: DateTime<Utc>,
) -> Result<AuditReport, MaintenanceError> {
    if !storage.is_local() {
        // It walks the folder tree; listing a bucket instead is still to come (see
        // docs/roadmap.md). Refused rather than run against an empty folder, which would
        // report every original missing.
        return Err(MaintenanceError::Unsupported("the file audit does not run on the s3 backend yet"));
    }
    let grace = Duration::from_secs(config.orphan_grace_secs);
    let mut report = AuditReport::default();
    let staged = storage.clone();
    report.stale_temp_removed = spawn_blocking(move || staged.remove_staged_older_than(grace)).await??;
    quarantine_orphans(db, storage, grace, now, &mut report).await?;
    let oldest_kept = now.date_naive() - chrono::Days::new(u64::from(config.quarantine_retention_days));
    let quarantine = storage.clone();
    report.quarantine_purged = spawn_blocking(move || quarantine.remove_quarantined_before(oldest_kept)).await??;
    find_missing_originals(db, storage, &mut report).await?;
    remake_missing_thumbnails(db, storage, &mut report).await?;
    let details = json!({
        "scanned_files": report.scanned_files,
        "orphans_quarantined": report.orphans_quarantined,
        "quarantined_sample": report.quarantined_sample,
        "recent_unreferenced": report.recent_unreferenced,
        "missing_originals": report.missing_originals,
        "missing_sample": report.missing_sample,
        "stale_temp_removed": report.stale_temp_removed,
        "quarantine_purged": report.quarantine_purged,
        "thumbnails_requeued": report.thumbnails_requeued,
    });
    health_checks::record(db, FILES_CHECK, report.status(), &details).await?;
    tracing::info!(
        audit.scanned_files = report.scanned_files,
        audit.orphans_quarantined = report.orphans_quarantined,
        audit.missing_originals = report.missing_originals,
        audit.stale_temp_removed = report.stale_temp_removed,
        audit.quarantine_purged = report.quarantine_purged,
        audit.thumbnails_requeued = report.thumbnails_requeued,
        "file audit done"
    );
    Ok(report)
}

async fn quarantine_orphans(
    db: &PgPool,
    storage: &Storage,
    grace: Duration,
    now: DateTime<Utc>,
    report: &mut AuditReport,
) -> Result<(), MaintenanceError> {
    let (sender, mut batches) = mpsc::channel::<Vec<ScannedFile>>(2);
    let walked = storage.clone();
    let walker = spawn_blocking(move || -> std::io::Result<()> {
        let mut batch = Vec::with_capacity(LOOKUP_BATCH);
        for file in walked.walk_files()? {
            batch.push(file?);
            if batch.len() == LOOKUP_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(LOOKUP_BATCH));
                if sender.blocking_send(full).is_err() {
                    return Ok(()); // the auditor stopped; its error is reported
                }
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
        Ok(())
    });
    let deleted_after = now - TimeDelta::from_std(grace).unwrap_or_default();
    let written_before = SystemTime::now() - grace;
    let day = now.date_naive();
    let checked = async {
        while let Some(batch) = batches.recv().await {
            report.scanned_files += batch.len() as u64;
            let paths: Vec<String> = batch.iter().filter_map(|file| file.db_path().map(str::to_owned)).collect();
            let referenced = file_audit::referenced_paths(db, &paths, deleted_after).await?;
            let orphans: Vec<ScannedFile> =
                batch.into_iter().filter(|file| file.db_path().is_none_or(|path| !referenced.contains(path))).collect();
            let (old, young): (Vec<_>, Vec<_>) = orphans.into_iter().partition(|file| file.modified < written_before);
            report.recent_unreferenced += young.len() as u64;
            if old.is_empty() {
                continue;
            }
            let quarantining = storage.clone();
            let moved = spawn_blocking(move || {
                let mut moved = Vec::new();
                for file in &old {
                    if let Some(to) = quarantining.quarantine(file, day)? {
                        tracing::warn!(path = %file.relative.display(), quarantined_to = %to.display(), "quarantined an orphan file");
                        moved.push(to.to_string_lossy().into_owned());
                    }
                }
                std::io::Result::Ok(moved)
            })
            .await??;
            report.orphans_quarantined += moved.len() as u64;
            let room = REPORT_SAMPLE.saturating_sub(report.quarantined_sample.len());
            report.quarantined_sample.extend(moved.into_iter().take(room));
        }
        Ok::<_, MaintenanceError>(())
    }
    .await;
    // Dropping the receiver first stops a walker still sending after a failure.
    drop(batches);
    let walked = walker.await?;
    checked?;
    walked?;
    Ok(())
}

async fn find_missing_originals(
    db: &PgPool,
    storage: &Storage,
    report: &mut AuditReport,
) -> Result<(), MaintenanceError> {
    let mut after = None;
    loop {
        let page = file_audit::live_originals_page(db, after, LOOKUP_BATCH as i64).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let full = page.len() == LOOKUP_BATCH;
        let checking = storage.clone();
        let missing = spawn_blocking(move || {
            let mut missing = Vec::new();
            for original in page {
                if !checking.exists_blocking(&original.key())? {
                    missing.push(original);
                }
            }
            std::io::Result::Ok(missing)
        })
        .await??;
        for original in missing {
            tracing::warn!(image.id = %original.id, backed_up = original.is_backed_up, "the original of {} is missing", original.id);
            report.missing_originals += 1;
            if report.missing_sample.len() < REPORT_SAMPLE {
                report.missing_sample.push(MissingOriginal {
                    image_id: original.id,
                    backed_up: original.is_backed_up,
                    backup_path: original.backup_path,
                });
            }
        }
        if !full {
            break;
        }
    }
    Ok(())
}

/// Thumbnails are derived data: an image marked ready whose thumbnail file is gone gets
/// `thumbnail_status = pending` and its `image.uploaded` again, in one transaction per
/// page, and the thumbnail worker remakes them (the checksum worker skips a verified image).
async fn remake_missing_thumbnails(
    db: &PgPool,
    storage: &Storage,
    report: &mut AuditReport,
) -> Result<(), MaintenanceError> {
    let mut after = None;
    loop {
        let page = file_audit::ready_thumbnails_page(db, after.clone(), LOOKUP_BATCH as i64).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.image_id, last.size_name.clone()));
        let full = page.len() == LOOKUP_BATCH;
        let missing: HashSet<String> =
            storage.missing(page.iter().map(|t| t.file_path.clone()).collect()).await?.into_iter().collect();
        let mut incomplete: Vec<ImageId> =
            page.iter().filter(|t| missing.contains(&t.file_path)).map(|t| t.image_id).collect();
        incomplete.dedup();
        if !incomplete.is_empty() {
            let mut tx = db.begin().await?;
            let due = file_audit::thumbnails_due_again(&mut *tx, &incomplete).await?;
            for id in &due {
                outbox::enqueue(&mut *tx, ImageUploaded { image_id: *id }).await?;
                tracing::warn!(image.id = %id, "thumbnails of {id} are missing: queued to be made again");
            }
            tx.commit().await?;
            report.thumbnails_requeued += due.len() as u64;
        }
        if !full {
            break;
        }
    }
    Ok(())
}
