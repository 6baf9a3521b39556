//! The sweeper: images left waiting for thumbnails or verification are re-queued, so a job
//! RabbitMQ lost or dead-lettered (by delivery limit, which skips the worker's failure hook)
//! never leaves an image half-processed unnoticed; stalled backups get their unfinished
//! batches published again, and stalled restores (job lost, or worker dead with its lease
//! run out) their job.
//!
//! Re-publishing `image.uploaded` is safe: the thumbnail and checksum handlers skip work
//! already done. To keep a long but healthy backlog from being doubled, each image waits
//! twice as long before every further re-queue, a run re-queues at most
//! `maintenance.maxRequeuesPerRun` images, and after `maintenance.maxRequeues` the sweeper
//! gives up on the image and reports it. Every run counts the given-up images still not
//! fully processed, so the `sweep` check stays degraded until each is finished (a late job)
//! or an operator retries it with [`reprocess`].

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{MaintenanceError, REPORT_SAMPLE, SWEEP_CHECK};
use crate::audit::{self, Actor, AuditAction, Target};
use crate::config::MaintenanceConfig;
use crate::db::{health_checks, outbox, storage_files, sweep};
use crate::events::{BackupBatchRequested, BackupRequested, ImageUploaded, RestoreRequested};
use crate::model::{BackupId, BackupStatus, ChecksumStatus, HealthStatus, ImageId, ThumbnailStatus};
use crate::processing;

/// Images looked at per page (one transaction of re-queues each).
const PAGE: i64 = 500;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// Images re-queued while waiting for thumbnails.
    pub requeued_thumbnails: u64,
    /// Images re-queued while waiting for verification.
    pub requeued_checksums: u64,
    /// Images given up on in this run.
    pub given_up: u64,
    /// The first of them.
    pub given_up_sample: Vec<ImageId>,
    /// Live images given up on in this or any earlier run that still miss thumbnails or
    /// verification: each is half-processed until a late job or an operator finishes it.
    pub given_up_unfinished: u64,
    /// The oldest of them.
    pub given_up_unfinished_sample: Vec<ImageId>,
    /// The longest wait of an image still swept, in seconds since its upload.
    pub oldest_pending_secs: Option<f64>,
    /// The run stopped at `maintenance.maxRequeuesPerRun`; the rest waits for the next one.
    pub requeue_limit_reached: bool,
    /// Stalled backups whose work was published again.
    pub stalled_backups: Vec<BackupId>,
    /// Batch (and planning) events published again for them.
    pub requeued_backup_jobs: u64,
    /// Restores whose job was published again.
    pub stalled_restores: Vec<Uuid>,
}

impl SweepReport {
    /// Degraded while an image the sweeper gave up on is still half-processed, not only in
    /// the run that gave up: the health endpoint reads the latest run, and an image nobody
    /// has fixed must not drop out of it.
    pub fn status(&self) -> HealthStatus {
        if self.given_up > 0 || self.given_up_unfinished > 0 { HealthStatus::Degraded } else { HealthStatus::Ok }
    }

    /// What makes the run less than `ok`, in words, for the health endpoint.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.given_up > 0 {
            problems.push(format!("{} images were given up in this run", self.given_up));
        }
        if self.given_up_unfinished > 0 {
            problems.push(format!(
                "{} images the sweeper gave up on still miss thumbnails or verification \
                 (POST /storage/images/{{id}}/reprocess retries one)",
                self.given_up_unfinished
            ));
        }
        problems
    }
}

/// Sweeps once as of `now` and records the report as a `sweep` health check.
pub async fn run(db: &PgPool, config: &MaintenanceConfig, now: DateTime<Utc>) -> Result<SweepReport, MaintenanceError> {
    let mut report = SweepReport::default();
    sweep_images(db, config, now, &mut report).await?;
    let stall = TimeDelta::seconds(i64::try_from(config.backup_stall_secs).unwrap_or(i64::MAX / 1000));
    sweep_stalled(db, now - stall, now, &mut report).await?;
    report.oldest_pending_secs = sweep::oldest_pending_secs(db, now).await?;
    let unfinished = sweep::given_up_unfinished(db, REPORT_SAMPLE as i64).await?;
    report.given_up_unfinished = u64::try_from(unfinished.count).unwrap_or(0);
    report.given_up_unfinished_sample = unfinished.sample;
    let details = json!({
        "requeued_thumbnails": report.requeued_thumbnails,
        "requeued_checksums": report.requeued_checksums,
        "given_up": report.given_up,
        "given_up_sample": report.given_up_sample,
        "given_up_unfinished": report.given_up_unfinished,
        "given_up_unfinished_sample": report.given_up_unfinished_sample,
        "oldest_pending_secs": report.oldest_pending_secs,
        "requeue_limit_reached": report.requeue_limit_reached,
        "stalled_backups": report.stalled_backups,
        "requeued_backup_jobs": report.requeued_backup_jobs,
        "stalled_restores": report.stalled_restores,
        "problems": report.problems(),
    });
    health_checks::record(db, SWEEP_CHECK, report.status(), &details).await?;
    tracing::info!(
        sweep.requeued_thumbnails = report.requeued_thumbnails,
        sweep.requeued_checksums = report.requeued_checksums,
        sweep.given_up = report.given_up,
        sweep.given_up_unfinished = report.given_up_unfinished,
        sweep.oldest_pending_secs = report.oldest_pending_secs,
        sweep.stalled_backups = report.stalled_backups.len(),
        sweep.stalled_restores = report.stalled_restores.len(),
        "sweep done"
    );
    Ok(report)
}

async fn sweep_images(
    db: &PgPool,
    config: &MaintenanceConfig,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> Result<(), MaintenanceError> {
    let pending_after = config.pending_after_secs as f64;
    let max_requeues = i32::try_from(config.max_requeues).unwrap_or(i32::MAX);
    let mut budget = config.max_requeues_per_run as usize;
    let mut after = None;
    loop {
        let page = sweep::due_page(db, now, pending_after, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id));
        let (exhausted, mut due): (Vec<_>, Vec<_>) = page.iter().partition(|image| image.requeue_count >= max_requeues);
        if !exhausted.is_empty() {
            let ids: Vec<ImageId> = exhausted.iter().map(|image| image.id).collect();
            let mut tx = db.begin().await?;
            let given_up = sweep::give_up(&mut *tx, &ids, now, pending_after, max_requeues).await?;
            for &id in &given_up {
                processing::notify_if_failed(&mut tx, id).await?;
            }
            tx.commit().await?;
            for id in &given_up {
                tracing::warn!(image.id = %id, "the sweeper gave up on {id} after {max_requeues} re-queues");
            }
            report.given_up += given_up.len() as u64;
            let room = REPORT_SAMPLE.saturating_sub(report.given_up_sample.len());
            report.given_up_sample.extend(given_up.into_iter().take(room));
        }
        due.truncate(budget);
        if !due.is_empty() {
            let ids: Vec<ImageId> = due.iter().map(|image| image.id).collect();
            let mut tx = db.begin().await?;
            let requeued = sweep::mark_requeued(&mut tx, &ids, now, pending_after, max_requeues).await?;
            for image in &requeued {
                outbox::enqueue(&mut *tx, ImageUploaded { image_id: image.id }).await?;
            }
            tx.commit().await?;
            budget -= requeued.len().min(budget);
            report.requeued_thumbnails += requeued.iter().filter(|image| image.thumbnails).count() as u64;
            report.requeued_checksums += requeued.iter().filter(|image| image.checksum).count() as u64;
        }
        if budget == 0 {
            report.requeue_limit_reached = true;
            break;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(())
}

/// Publishes again the work of backups and restores that stalled, in one transaction with
/// their claims (which keep this to once per stall period):
/// - a backup with no progress since `stalled_before` (now less
///   `maintenance.backupStallSecs`) gets planning if it is pending, its unfinished batches
///   if it is running (or batch 0 when none is left, which finishes it); planning and
///   batches skip what is done, so a duplicate is harmless;
/// - a restore pending since before `stalled_before` (its job was lost), or running with a
///   lease nobody renewed (its worker died; see `worker::lease`), gets its job; a restore
///   skips what is back already.
async fn sweep_stalled(
    db: &PgPool,
    stalled_before: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> Result<(), MaintenanceError> {
    let mut tx = db.begin().await?;
    let stalled = sweep::claim_stalled_backups(&mut tx, stalled_before, now).await?;
    for backup in &stalled {
        match backup.status {
            BackupStatus::Pending => {
                outbox::enqueue(&mut *tx, BackupRequested { backup_id: backup.id }).await?;
                report.requeued_backup_jobs += 1;
            }
            _ => {
                let mut batches = sweep::unfinished_batches(&mut *tx, backup.id).await?;
                if batches.is_empty() {
                    batches.push(0);
                }
                for batch in batches {
                    outbox::enqueue(&mut *tx, BackupBatchRequested { backup_id: backup.id, batch }).await?;
                    report.requeued_backup_jobs += 1;
                }
            }
        }
        tracing::warn!(backup.id = %backup.id, status = ?backup.status, "backup {} stalled: its work is published again", backup.id);
        report.stalled_backups.push(backup.id);
    }
    let stalled = sweep::claim_stalled_restores(&mut tx, stalled_before, now).await?;
    for &restore_id in &stalled {
        outbox::enqueue(&mut *tx, RestoreRequested { restore_id }).await?;
        tracing::warn!(restore.id = %restore_id, "restore {restore_id} stalled: its job is published again");
    }
    tx.commit().await?;
    report.stalled_restores = stalled;
    Ok(())
}

/// Why an image cannot be processed again.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error("no live image {0}")]
    NotFound(ImageId),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An image queued for processing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reprocessed {
    pub image_id: ImageId,
    /// The queued `image.uploaded` event (its `message_id` in RabbitMQ).
    pub event_id: Uuid,
    /// The statuses after the reset: what the workers still have to do.
    pub thumbnail_status: ThumbnailStatus,
    pub checksum_status: ChecksumStatus,
}

/// The operator's remedy for an image the sweeper gave up on (any live image works): its
/// sweep state is cleared, thumbnails not made go back to `pending`, and `image.uploaded`
/// is queued in the same transaction, so there is never a reset without its job. The
/// handlers skip the steps already done, and the sweeper watches the image again from
/// scratch should this job be lost too. `actor`'s audit entry is written in that
/// transaction as well.
pub async fn reprocess(db: &PgPool, id: ImageId, actor: &Actor) -> Result<Reprocessed, ReprocessError> {
    let mut tx = db.begin().await?;
    let state = storage_files::reset_for_reprocess(&mut *tx, id).await?.ok_or(ReprocessError::NotFound(id))?;
    let event_id = outbox::enqueue(&mut *tx, ImageUploaded { image_id: id }).await?;
    let details = json!({"event_id": event_id});
    audit::record(&mut *tx, actor, AuditAction::ImageReprocessed, Target::Image(id), details).await?;
    tx.commit().await?;
    tracing::info!(
        image.id = %id,
        event.id = %event_id,
        thumbnail_status = %state.thumbnail_status,
        checksum_status = %state.checksum_status,
        "{id} queued for processing again"
    );
    Ok(Reprocessed {
        image_id: id,
        event_id,
        thumbnail_status: state.thumbnail_status,
        checksum_status: state.checksum_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_stays_degraded_while_a_given_up_image_is_unfinished() {
        let clean = SweepReport { requeued_thumbnails: 3, ..SweepReport::default() };
        assert_eq!((clean.status(), clean.problems().len()), (HealthStatus::Ok, 0), "re-queues are routine");
        let giving_up = SweepReport { given_up: 1, given_up_unfinished: 1, ..SweepReport::default() };
        assert_eq!(giving_up.status(), HealthStatus::Degraded);
        assert_eq!(giving_up.problems().len(), 2);
        let later = SweepReport { given_up_unfinished: 2, ..SweepReport::default() };
        assert_eq!(later.status(), HealthStatus::Degraded, "a later run still reports it");
        assert!(later.problems()[0].starts_with("2 images the sweeper gave up on"), "{:?}", later.problems());
    }
}
