//! `stayler.backups`: plans a requested backup into batch jobs, archives one batch per job
//! (see `shared::backup`), checks a backup's archives, and runs restores requested through
//! the API. Several workers share a large backup's batches.
//!
//! Idempotent: planning happens once per backup (a duplicate finds it running), a batch
//! archives only its entries still pending, archives are written atomically, a check only
//! reads, and a restore skips what is back already (or rewrites the same verified bytes), so
//! a redelivered or duplicated job converges on the same result. Checks and restores, which
//! can outlive RabbitMQ's consumer timeout, also hold a lease (see [`crate::lease`]), so a
//! second delivery while one runs does not start it twice.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use shared::backup::restore::{RestoreError, Restorer};
use shared::backup::{self, verify};
use shared::db::storage_restores::{self, Claim};
use shared::db::{storage_backup_entries, storage_backups};
use shared::events::{
    BackupBatchRequested, BackupCheckRequested, BackupRequested, BackupVerifyRequested, Event, RestoreRequested,
};
use shared::model::{BackupId, RestoreReport, RestoreSelection};
use uuid::Uuid;

use crate::Context;
use crate::consumer::{GivenUp, Handler, Job, JobError};
use crate::lease;

pub struct Backups {
    context: Context,
}

impl Backups {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    async fn plan(&self, id: BackupId) -> Result<(), JobError> {
        let db = &self.context.db;
        let batch_size = i64::from(self.context.config.storage.backup_policy.batch_size);
        let mut tx = db.begin().await.map_err(JobError::retry)?;
        let planned = backup::plan(&mut tx, id, batch_size).await.map_err(JobError::retry)?;
        tx.commit().await.map_err(JobError::retry)?;
        match planned {
            None => tracing::info!(backup.id = %id, "backup {id} was planned before; duplicate job skipped"),
            Some(batches) => {
                tracing::info!(backup.id = %id, backup.batches = batches, "backup {id} planned");
                // With nothing to archive there is no batch job to finish it.
                if batches == 0 {
                    backup::finish_if_done(db, &self.context.backups, id).await.map_err(JobError::retry)?;
                }
            }
        }
        Ok(())
    }

    async fn archive(&self, id: BackupId, batch: i32) -> Result<(), JobError> {
        let context = &self.context;
        let report = backup::run_batch(&context.db, &context.storage, &context.backups, id, batch)
            .await
            .map_err(JobError::retry)?;
        tracing::info!(
            backup.id = %id,
            backup.batch = batch,
            backup.archived = report.archived,
            backup.failed = report.failed,
            size_bytes = report.bytes,
            compressed_bytes = report.compressed_bytes,
            "backup batch done"
        );
        Ok(())
    }
}

impl Backups {
    /// Checks backup `id` under a lease: a second delivery while a check runs is left to it.
    async fn verify(&self, id: BackupId) -> Result<(), JobError> {
        let db = &self.context.db;
        let Some(backup) = storage_backups::get(db, id).await.map_err(JobError::retry)? else {
            return Err(JobError::Reject(format!("backup {id} does not exist")));
        };
        let Some(manifest) = backup.manifest_path else {
            return Err(JobError::Reject(format!("backup {id} has not finished: nothing to check yet")));
        };
        let (holder, lease) = (Uuid::now_v7(), self.context.config.job_lease());
        if !storage_backups::lease_verify(db, id, holder, lease).await.map_err(JobError::retry)? {
            tracing::info!(backup.id = %id, "backup {id} is being checked by another run; this delivery is left to it");
            return Ok(());
        }
        let renew = || storage_backups::lease_verify(db, id, holder, lease);
        let checked = lease::while_held(renew, lease::renewal_period(lease), self.check(id, PathBuf::from(manifest)));
        let outcome = match checked.await {
            Ok(outcome) => outcome,
            Err(lost) => {
                tracing::warn!(backup.id = %id, "{lost}; backup {id} is left to it");
                return Ok(());
            }
        };
        if outcome.is_err() {
            // The retry may start at once rather than when the lease runs out.
            storage_backups::release_verify(db, id, holder).await.map_err(JobError::retry)?;
        }
        outcome
    }

    /// Reads every archive of backup `id` against `manifest` and records the outcome.
    async fn check(&self, id: BackupId, manifest: PathBuf) -> Result<(), JobError> {
        let db = &self.context.db;
        let tree = self.context.backups.clone();
        let checked = tokio::task::spawn_blocking(move || verify::verify(&tree, &manifest, |_, _| {}));
        let report = match checked.await? {
            Ok(report) => report,
            // Retrying cannot bring a lost manifest back: the check reports the backup damaged.
            Err(error) if verify::manifest_is_lost(&error) => {
                let archives = storage_backup_entries::archives(db, id).await.map_err(JobError::retry)?;
                verify::VerifyReport::manifest_unreadable(&error, archives)
            }
            Err(error) => return Err(JobError::retry(error)),
        };
        verify::record(db, id, &report).await.map_err(JobError::retry)?;
        tracing::info!(
            backup.id = %id,
            backup.checked = report.checked,
            backup.missing = report.missing,
            backup.corrupt = report.corrupt,
            "backup {id} checked"
        );
        Ok(())
    }

    /// The rolling re-check: verifies, one after another, up to
    /// `maintenance.backupVerifyPerRun` finished backups not checked since the run was
    /// requested, those checked longest ago first. A redelivered run finds the backups it
    /// already checked newer than its request and goes on with the rest.
    async fn verify_next_due(&self, requested_at: DateTime<Utc>) -> Result<(), JobError> {
        let db = &self.context.db;
        for _ in 0..self.context.config.maintenance.backup_verify_per_run {
            let Some(id) = storage_backups::next_to_verify(db, requested_at).await.map_err(JobError::retry)? else {
                break;
            };
            self.verify(id).await?;
        }
        Ok(())
    }

    /// Runs restore `id` under a lease: a second delivery while it runs is left to it, and
    /// a restore whose worker died is taken over once its lease ran out.
    async fn restore(&self, id: Uuid) -> Result<(), JobError> {
        let db = &self.context.db;
        let Some(request) = storage_restores::get(db, id).await.map_err(JobError::retry)? else {
            return Err(JobError::Reject(format!("restore {id} does not exist")));
        };
        let (holder, lease) = (Uuid::now_v7(), self.context.config.job_lease());
        match storage_restores::claim(db, id, holder, lease).await.map_err(JobError::retry)? {
            Claim::Taken => {}
            Claim::Finished => return Ok(()), // a duplicate job
            Claim::Running => {
                tracing::info!(restore.id = %id, "restore {id} is running elsewhere; this delivery is left to it");
                return Ok(());
            }
        }
        let selection: RestoreSelection = serde_json::from_value(request.selection).map_err(JobError::reject)?;
        let mode = request.mode;
        let context = &self.context;
        let restorer =
            Restorer { db, storage: &context.storage, backups: &context.backups, quota: &context.config.quota };
        let renew = || storage_restores::renew(db, id, holder, lease);
        let restored =
            lease::while_held(renew, lease::renewal_period(lease), restorer.restore(&selection, mode, |_, _| {}));
        let report = match restored.await {
            Ok(Ok(report)) => report,
            // Retrying cannot bring a backup or a manifest back: report it.
            Ok(Err(error @ (RestoreError::NotFound(_) | RestoreError::Manifest(_)))) => {
                RestoreReport { error: Some(error.to_string()), ..RestoreReport::default() }
            }
            Ok(Err(error)) => {
                // The retry may start at once rather than when the lease runs out.
                storage_restores::release(db, id, holder).await.map_err(JobError::retry)?;
                return Err(JobError::retry(error));
            }
            Err(lost) => {
                tracing::warn!(restore.id = %id, "{lost}; restore {id} is left to it");
                return Ok(());
            }
        };
        storage_restores::finish(db, id, &report).await.map_err(JobError::retry)?;
        tracing::info!(
            restore.id = %id,
            restore.restored = report.restored,
            restore.skipped = report.skipped,
            restore.failed = report.failed,
            "restore {id} finished"
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for Backups {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.event_type.as_str() {
            BackupRequested::TYPE => self.plan(job.payload::<BackupRequested>()?.backup_id).await,
            BackupBatchRequested::TYPE => {
                let BackupBatchRequested { backup_id, batch } = job.payload()?;
                self.archive(backup_id, batch).await
            }
            BackupCheckRequested::TYPE => self.verify(job.payload::<BackupCheckRequested>()?.backup_id).await,
            BackupVerifyRequested::TYPE => {
                self.verify_next_due(job.payload::<BackupVerifyRequested>()?.requested_at).await
            }
            RestoreRequested::TYPE => self.restore(job.payload::<RestoreRequested>()?.restore_id).await,
            other => Err(JobError::Reject(format!("`{other}` is not a backup job"))),
        }
    }

    /// A given-up job must not leave its backup running for ever: its batch's images are
    /// recorded as failed (or the unplanned backup as failed), and the backup finishes.
    async fn on_dead_letter(&self, job: &Job, reason: &str, _given_up: GivenUp) {
        let db = &self.context.db;
        let result: Result<(), backup::BackupError> = match job.event_type.as_str() {
            BackupRequested::TYPE => match job.payload::<BackupRequested>() {
                Ok(request) => storage_backups::fail_unplanned(db, request.backup_id, reason).await.map_err(Into::into),
                Err(_) => return,
            },
            BackupBatchRequested::TYPE => match job.payload::<BackupBatchRequested>() {
                Ok(BackupBatchRequested { backup_id, batch }) => {
                    let failed = storage_backup_entries::fail_batch(db, backup_id, batch, reason).await;
                    match failed {
                        Ok(_) => backup::finish_if_done(db, &self.context.backups, backup_id).await.map(drop),
                        Err(error) => Err(error.into()),
                    }
                }
                Err(_) => return,
            },
            RestoreRequested::TYPE => match job.payload::<RestoreRequested>() {
                Ok(request) => {
                    let report = RestoreReport { error: Some(reason.to_owned()), ..RestoreReport::default() };
                    storage_restores::finish(db, request.restore_id, &report).await.map_err(Into::into)
                }
                Err(_) => return,
            },
            _ => return,
        };
        if let Err(error) = result {
            tracing::error!(error = %error, "could not record a given-up backup job");
        }
    }
}
