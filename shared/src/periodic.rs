//! The periodic jobs: backups, backup retention and re-checks, health checks, metric
//! roll-ups, the sweeper, the purge and the file audit. The scheduler fires each on its cron
//! schedule, and an admin may run one at once (`POST /storage/maintenance/{job}`); either
//! way, requesting it is queuing its event here, in the caller's transaction.
//!
//! A job has one name from its configuration key to its queue: the name is its
//! `scheduled_runs.job`, its log field, its API path segment and the subject of its event
//! type, `{name}.requested` (see `docs/operations.md` for the naming rule of events).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::backup;
use crate::db::outbox;
use crate::events::{
    BackupRequested, BackupRetentionRequested, BackupVerifyRequested, Event, FileAuditRequested, HealthCheckRequested,
    MetricsRollupRequested, PurgeRequested, SweepRequested,
};
use crate::model::BackupTrigger;

/// A job fired on a schedule, with what requesting it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodicJob {
    /// A backup of every original not yet backed up: a pending `storage_backups` row and its
    /// `backup.requested` event.
    Backup {
        /// zstd level of the archives (`storage.backupPolicy.compressionLevel`).
        compression_level: i32,
    },
    /// Removes expired backups, carrying last copies forward first.
    BackupRetention,
    /// The rolling re-check of finished backups.
    BackupVerify,
    /// Measures the service and records the results in `storage_health_checks`.
    HealthCheck,
    /// Rolls recent periods up into `storage_metrics`.
    MetricsRollup,
    /// Re-queues work left waiting: thumbnails, verifications, stalled backups and restores.
    Sweep,
    /// Deletes expired signed URLs and old bookkeeping rows.
    Purge,
    /// Quarantines orphan files and reports missing originals.
    FileAudit,
}

impl PeriodicJob {
    /// The jobs an admin may run at once by name. A backup is not among them: it takes
    /// options and has its own endpoint (`POST /storage/backups`).
    pub const ON_DEMAND: [PeriodicJob; 7] = [
        Self::BackupRetention,
        Self::BackupVerify,
        Self::HealthCheck,
        Self::MetricsRollup,
        Self::Sweep,
        Self::Purge,
        Self::FileAudit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Backup { .. } => "backup",
            Self::BackupRetention => "backup_retention",
            Self::BackupVerify => "backup_verify",
            Self::HealthCheck => "health_check",
            Self::MetricsRollup => "metrics_rollup",
            Self::Sweep => "sweep",
            Self::Purge => "purge",
            Self::FileAudit => "file_audit",
        }
    }

    /// The on-demand job called `name`. Hyphens are read as underscores (`file-audit`), the
    /// spelling the API had before job names were unified.
    pub fn on_demand(name: &str) -> Option<Self> {
        let name = name.replace('-', "_");
        Self::ON_DEMAND.into_iter().find(|job| job.name() == name)
    }

    /// The configuration key of the job's schedule.
    pub fn schedule_key(self) -> &'static str {
        match self {
            Self::Backup { .. } => "storage.backupPolicy.schedule",
            Self::BackupRetention => "storage.retentionPolicy.cleanupSchedule",
            Self::BackupVerify => "scheduler.backupVerify",
            Self::HealthCheck => "scheduler.healthCheck",
            Self::MetricsRollup => "scheduler.metricsRollup",
            Self::Sweep => "scheduler.sweep",
            Self::Purge => "scheduler.signedUrlCleanup",
            Self::FileAudit => "scheduler.fileAudit",
        }
    }

    /// The type of the event that requests the job.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Backup { .. } => BackupRequested::TYPE,
            Self::BackupRetention => BackupRetentionRequested::TYPE,
            Self::BackupVerify => BackupVerifyRequested::TYPE,
            Self::HealthCheck => HealthCheckRequested::TYPE,
            Self::MetricsRollup => MetricsRollupRequested::TYPE,
            Self::Sweep => SweepRequested::TYPE,
            Self::Purge => PurgeRequested::TYPE,
            Self::FileAudit => FileAuditRequested::TYPE,
        }
    }

    /// Requests the job for slot `at` (the scheduled time, or now when an admin asks) in the
    /// caller's transaction, and returns the id a run is traced by: the event's, or for a
    /// backup the backup's. A backup's day is `at`'s, not the wall clock's, so that a slot
    /// fired late (catch-up, or just after midnight) still files under the day it was due.
    pub async fn request(self, tx: &mut PgConnection, at: DateTime<Utc>) -> sqlx::Result<Uuid> {
        match self {
            Self::Backup { compression_level } => {
                let id = backup::request(tx, BackupTrigger::Scheduled, None, compression_level, at).await?;
                Ok(id.0)
            }
            Self::BackupRetention => outbox::enqueue(tx, BackupRetentionRequested { requested_at: at }).await,
            Self::BackupVerify => outbox::enqueue(tx, BackupVerifyRequested { requested_at: at }).await,
            Self::HealthCheck => outbox::enqueue(tx, HealthCheckRequested { requested_at: at }).await,
            Self::MetricsRollup => outbox::enqueue(tx, MetricsRollupRequested { requested_at: at }).await,
            Self::Sweep => outbox::enqueue(tx, SweepRequested { requested_at: at }).await,
            Self::Purge => outbox::enqueue(tx, PurgeRequested { requested_at: at }).await,
            Self::FileAudit => outbox::enqueue(tx, FileAuditRequested { requested_at: at }).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::JobQueue;

    #[test]
    fn a_job_has_one_name_from_its_event_to_its_queue() {
        let backup = PeriodicJob::Backup { compression_level: 3 };
        for job in PeriodicJob::ON_DEMAND.into_iter().chain([backup]) {
            assert_eq!(job.event_type(), format!("{}.requested", job.name()), "{job:?}");
            let queues: Vec<_> = JobQueue::ALL.iter().filter(|q| q.event_types().contains(&job.event_type())).collect();
            assert_eq!(queues.len(), 1, "{job:?} is consumed by exactly one queue: {queues:?}");
        }
    }

    #[test]
    fn on_demand_jobs_are_found_by_name_with_either_separator() {
        assert_eq!(PeriodicJob::on_demand("file_audit"), Some(PeriodicJob::FileAudit));
        assert_eq!(PeriodicJob::on_demand("file-audit"), Some(PeriodicJob::FileAudit));
        assert_eq!(PeriodicJob::on_demand("backup-retention"), Some(PeriodicJob::BackupRetention));
        assert_eq!(PeriodicJob::on_demand("backup"), None, "backups have their own endpoint");
        assert_eq!(PeriodicJob::on_demand("maintenance"), None);
    }
}
