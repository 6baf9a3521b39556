//! The file audit: stored files that no row needs are quarantined, live originals missing
//! from storage are reported with whether a backup copy exists, so an operator can restore
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
//! The same audit runs on both storage backends: the local tree is walked, a bucket listed
//! under its prefix (an object's `last_modified` is its time of writing, quarantine is the
//! same names under the prefix, and staged objects under `.staging/` go too).
//!
//! Memory stays bounded whatever the store holds: files come in batches of [`LOOKUP_BATCH`]
//! paths ([`Storage::scan_files`] reads the next only once one is taken), each looked up in
//! one query; live rows are checked in pages of the same size.

use std::collections::HashSet;
use std::time::SystemTime;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::{FILES_CHECK, MaintenanceError, REPORT_SAMPLE};
use crate::config::MaintenanceConfig;
use crate::db::{file_audit, health_checks, outbox};
use crate::events::ImageUploaded;
use crate::model::{HealthStatus, ImageId};
use crate::storage::{ScannedFile, Storage};

/// Paths looked up, or rows checked, per query.
pub const LOOKUP_BATCH: usize = 1000;

/// A live image whose original is not stored.
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
    /// The first of them, where they went (relative to `storage.basePath`, or on s3 to the
    /// bucket's prefix).
    pub quarantined_sample: Vec<String>,
    /// Unreferenced files left alone because they are younger than the grace.
    pub recent_unreferenced: u64,
    /// Live originals missing from storage.
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

/// Audits the stored files once as of `now` (files written before `now` less the grace
/// are old enough) and records the report as a `files` health check.
pub async fn run(
    db: &PgPool,
    storage: &Storage,
    config: &MaintenanceConfig,
    now: DateTime<Utc>,
) -> Result<AuditReport, MaintenanceError> {
    let grace = i64::try_from(config.orphan_grace_secs).ok().and_then(TimeDelta::try_seconds).unwrap_or(TimeDelta::MAX);
    let written_before = now.checked_sub_signed(grace).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut report = AuditReport {
        stale_temp_removed: storage.remove_staged_before(written_before).await?,
        ..AuditReport::default()
    };
    quarantine_orphans(db, storage, written_before, now, &mut report).await?;
    let oldest_kept = now.date_naive() - chrono::Days::new(u64::from(config.quarantine_retention_days));
    report.quarantine_purged = storage.remove_quarantined_before(oldest_kept).await?;
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

/// Quarantines the files no row needs that were last written before `written_before`; an
/// image deleted since then may still have its deletion job on its way, so its files count
/// as needed.
async fn quarantine_orphans(
    db: &PgPool,
    storage: &Storage,
    written_before: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut AuditReport,
) -> Result<(), MaintenanceError> {
    let mut batches = storage.scan_files(LOOKUP_BATCH);
    let old_before = SystemTime::from(written_before);
    let day = now.date_naive();
    while let Some(batch) = batches.try_next().await? {
        report.scanned_files += batch.len() as u64;
        let paths: Vec<String> = batch.iter().filter_map(|file| file.db_path().map(str::to_owned)).collect();
        let referenced = file_audit::referenced_paths(db, &paths, written_before).await?;
        let orphans: Vec<ScannedFile> =
            batch.into_iter().filter(|file| file.db_path().is_none_or(|path| !referenced.contains(path))).collect();
        let (old, young): (Vec<_>, Vec<_>) = orphans.into_iter().partition(|file| file.modified < old_before);
        report.recent_unreferenced += young.len() as u64;
        for file in &old {
            let Some(to) = storage.quarantine(file, day).await? else { continue };
            tracing::warn!(path = %file.relative.display(), quarantined_to = %to.display(), "quarantined an orphan file");
            report.orphans_quarantined += 1;
            if report.quarantined_sample.len() < REPORT_SAMPLE {
                report.quarantined_sample.push(to.to_string_lossy().into_owned());
            }
        }
    }
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
        let missing: HashSet<String> = storage
            .missing(page.iter().map(|original| original.key().to_db_path()).collect())
            .await?
            .into_iter()
            .collect();
        for original in page.into_iter().filter(|original| missing.contains(&original.key().to_db_path())) {
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
