//! `stayler.maintenance`: housekeeping jobs from the scheduler or an admin: image and backup
//! retention (`retentionPolicy.cleanupSchedule`), the sweeper (`scheduler.sweep`), the purge
//! of expired signed URLs and old bookkeeping rows (`scheduler.signedUrlCleanup`) and the
//! file audit (`scheduler.fileAudit`); the last three live in `shared::maintenance`. Also
//! owners' erasures, requested through the API (`shared::erasure`).
//!
//! Idempotent: a second retention run finds the expired backups removed, or their last
//! copies already waiting in the carry-over backup the first one requested; a second sweep
//! finds the images it would re-queue already waiting out their back-off; a second purge or
//! audit finds nothing left to do.

use chrono::Utc;
use shared::backup::retention;
use shared::erasure::{self, Batches};
use shared::events::{
    BackupRetentionRequested, Event, FileAuditRequested, OwnerErasureRequested, PurgeRequested, SweepRequested,
};
use shared::expiry;
use shared::maintenance::{file_audit, purge, sweep};

use crate::Context;
use crate::consumer::{Handler, Job, JobError};

pub struct Maintenance {
    context: Context,
}

impl Maintenance {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// The scheduled cleanup: expired images first (when they expire at all), so that backup
    /// retention does not carry their last copies forward, then expired backups.
    async fn cleanup(&self) -> Result<(), JobError> {
        let context = &self.context;
        let storage = &context.config.storage;
        let expired = expiry::run(&context.db, &storage.retention_policy, Utc::now()).await.map_err(JobError::retry)?;
        if expired.total() > 0 {
            tracing::info!(images.deleted = expired.total(), "image retention applied");
        }
        let report = retention::apply(&context.db, &context.backups, &storage.backup_policy, Utc::now())
            .await
            .map_err(JobError::retry)?;
        tracing::info!(
            backups.expired = report.expired,
            backups.removed = report.removed.len(),
            backups.kept = report.kept.len(),
            images.carried = report.carried_images,
            images.waiting = report.waiting_images,
            "backup retention applied"
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for Maintenance {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let context = &self.context;
        let (db, config) = (&context.db, &context.config.maintenance);
        match job.event_type.as_str() {
            BackupRetentionRequested::TYPE => {
                job.payload::<BackupRetentionRequested>()?;
                self.cleanup().await
            }
            SweepRequested::TYPE => {
                job.payload::<SweepRequested>()?;
                sweep::run(db, config, Utc::now()).await.map(drop).map_err(JobError::retry)
            }
            PurgeRequested::TYPE => {
                job.payload::<PurgeRequested>()?;
                purge::run(db, config, &context.config.access_log, Utc::now()).await.map(drop).map_err(JobError::retry)
            }
            FileAuditRequested::TYPE => {
                job.payload::<FileAuditRequested>()?;
                file_audit::run(db, &context.storage, config, Utc::now()).await.map(drop).map_err(JobError::retry)
            }
            OwnerErasureRequested::TYPE => {
                // Resumable: a redelivery goes on from the last committed batch; a completed
                // erasure is left as it is.
                let erasure_id = job.payload::<OwnerErasureRequested>()?.erasure_id;
                erasure::run(db, erasure_id, Batches::DEFAULT).await.map(drop).map_err(JobError::retry)
            }
            other => Err(JobError::Reject(format!("`{other}` is not a maintenance job"))),
        }
    }
}
