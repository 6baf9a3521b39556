//! The job table: every job the scheduler emits, where its schedule comes from in the
//! configuration, and what firing one of its slots writes.
//!
//! Only jobs whose work a worker actually does are listed: an event with no consumer would
//! pile up unseen. Adding one is a variant of [`Job`], its arms in [`Job::name`] and
//! [`Job::fire`], its line in [`jobs`], and its schedule key in the configuration.

use chrono::{DateTime, Utc};
use shared::config::{Config, ConfigError};
use shared::db::{outbox, storage_backups};
use shared::events::{
    BackupRetentionRequested, BackupVerifyDue, FileAuditRequested, HealthCheckRequested, MetricsRollupRequested,
    PurgeRequested, SweepRequested,
};
use shared::model::BackupTrigger;
use shared::schedule::CronSchedule;
use sqlx::PgConnection;
use uuid::Uuid;

/// A kind of job, with what it needs from the configuration to be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// A backup of every original not yet backed up: a pending `storage_backups` row and its
    /// `backup.requested` event (`storage.backupPolicy`).
    Backup {
        /// zstd level of the archives.
        compression_level: i32,
    },
    /// Backup retention (`storage.retentionPolicy.cleanupSchedule`): its
    /// `maintenance.backup_retention` event.
    Maintenance,
    /// A health check run (`scheduler.healthCheck`): its `health.check` event.
    HealthCheck,
    /// A roll-up of `storage_metrics` (`scheduler.metricsRollup`): its `metrics.rollup` event.
    MetricsRollup,
    /// The sweeper (`scheduler.sweep`): its `maintenance.sweep` event.
    Sweep,
    /// Expired signed URLs and old bookkeeping rows (`scheduler.signedUrlCleanup`): its
    /// `maintenance.purge` event.
    Purge,
    /// Orphan and missing files (`scheduler.fileAudit`): its `maintenance.file_audit` event.
    FileAudit,
    /// The rolling re-check of finished backups (`scheduler.backupVerify`): its
    /// `backup.verify_due` event.
    BackupVerify,
}

impl Job {
    /// The job's name in `scheduled_runs.job` and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Backup { .. } => "backup",
            Job::Maintenance => "maintenance",
            Job::HealthCheck => "health_check",
            Job::MetricsRollup => "metrics_rollup",
            Job::Sweep => "sweep",
            Job::Purge => "purge",
            Job::FileAudit => "file_audit",
            Job::BackupVerify => "backup_verify",
        }
    }

    /// Writes the job's rows and outbox event for `slot` in the caller's transaction, and
    /// returns the id recorded as the run's `event_id`.
    pub(crate) async fn fire(&self, tx: &mut PgConnection, slot: DateTime<Utc>) -> sqlx::Result<Uuid> {
        match *self {
            Job::Backup { compression_level } => {
                // The slot, not the wall clock, names the backup's day: a slot fired late
                // (catch-up, or just after midnight) still files under the day it was due.
                let id = storage_backups::request(tx, BackupTrigger::Scheduled, None, compression_level, slot).await?;
                Ok(id.0)
            }
            Job::Maintenance => outbox::enqueue(tx, BackupRetentionRequested { requested_at: slot }).await,
            Job::HealthCheck => outbox::enqueue(tx, HealthCheckRequested { requested_at: slot }).await,
            Job::MetricsRollup => outbox::enqueue(tx, MetricsRollupRequested { requested_at: slot }).await,
            Job::Sweep => outbox::enqueue(tx, SweepRequested { requested_at: slot }).await,
            Job::Purge => outbox::enqueue(tx, PurgeRequested { requested_at: slot }).await,
            Job::FileAudit => outbox::enqueue(tx, FileAuditRequested { requested_at: slot }).await,
            Job::BackupVerify => outbox::enqueue(tx, BackupVerifyDue { requested_at: slot }).await,
        }
    }
}

/// A job and its schedule.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    pub job: Job,
    pub schedule: CronSchedule,
}

/// The enabled jobs of `config` with their schedules. A job is disabled by its own switch
/// or by an empty schedule. The configuration was validated at start-up; an expression that
/// does not parse here (a configuration built in code) is refused with its key all the same.
pub fn jobs(config: &Config) -> Result<Vec<ScheduledJob>, ConfigError> {
    let backup = &config.storage.backup_policy;
    let table = [
        (
            "storage.backupPolicy.schedule",
            backup.enabled,
            Job::Backup { compression_level: backup.compression_level },
            backup.effective_schedule(),
        ),
        (
            "storage.retentionPolicy.cleanupSchedule",
            true,
            Job::Maintenance,
            Some(config.storage.retention_policy.cleanup_schedule.as_str()),
        ),
        ("scheduler.healthCheck", true, Job::HealthCheck, Some(config.scheduler.health_check.as_str())),
        ("scheduler.metricsRollup", true, Job::MetricsRollup, Some(config.scheduler.metrics_rollup.as_str())),
        ("scheduler.sweep", true, Job::Sweep, Some(config.scheduler.sweep.as_str())),
        ("scheduler.signedUrlCleanup", true, Job::Purge, Some(config.scheduler.signed_url_cleanup.as_str())),
        ("scheduler.fileAudit", true, Job::FileAudit, Some(config.scheduler.file_audit.as_str())),
        ("scheduler.backupVerify", backup.enabled, Job::BackupVerify, Some(config.scheduler.backup_verify.as_str())),
    ];
    let mut jobs = Vec::new();
    for (key, enabled, job, expression) in table {
        let Some(expression) = expression else {
            let reason = "no schedule (an unknown backupPolicy.frequency?)".to_owned();
            return Err(ConfigError::BadValue { key, reason });
        };
        if !enabled || expression.trim().is_empty() {
            continue;
        }
        let schedule = CronSchedule::parse(expression)
            .map_err(|error| ConfigError::BadValue { key, reason: error.to_string() })?;
        jobs.push(ScheduledJob { job, schedule });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_follows_its_policy() {
        let mut config = shared::test_support::config();
        config.storage.backup_policy.frequency = "hourly".to_owned();
        config.storage.backup_policy.compression_level = 9;
        let jobs = jobs(&config).unwrap();
        assert_eq!(jobs[0].job, Job::Backup { compression_level: 9 });
        assert_eq!(jobs[0].job.name(), "backup");
        assert_eq!(jobs[0].schedule.as_str(), "0 * * * *");

        config.storage.backup_policy.schedule = "15 3 * * *".to_owned();
        assert_eq!(super::jobs(&config).unwrap()[0].schedule.as_str(), "15 3 * * *");

        config.storage.backup_policy.enabled = false;
        let names: Vec<_> = super::jobs(&config).unwrap().iter().map(|j| j.job.name()).collect();
        assert!(!names.contains(&"backup"), "a disabled backup is not scheduled: {names:?}");
        assert_eq!(names, ["maintenance", "health_check", "metrics_rollup", "sweep", "purge", "file_audit"]);
        assert!(!names.contains(&"backup_verify"), "no backups, nothing to re-check: {names:?}");
    }

    #[test]
    fn health_checks_and_rollups_follow_their_keys() {
        let mut config = shared::test_support::config();
        let schedule_of = |config: &Config, job: Job| {
            super::jobs(config).unwrap().into_iter().find(|j| j.job == job).map(|j| j.schedule.as_str().to_owned())
        };
        assert_eq!(schedule_of(&config, Job::HealthCheck).as_deref(), Some("* * * * *"));
        assert_eq!(schedule_of(&config, Job::MetricsRollup).as_deref(), Some("*/5 * * * *"));
        config.scheduler.health_check = String::new();
        config.scheduler.metrics_rollup = "*/15 * * * *".to_owned();
        assert_eq!(schedule_of(&config, Job::HealthCheck), None, "an empty schedule disables the job");
        assert_eq!(schedule_of(&config, Job::MetricsRollup).as_deref(), Some("*/15 * * * *"));
        assert_eq!(Job::HealthCheck.name(), "health_check");
    }

    #[test]
    fn maintenance_runs_at_the_cleanup_schedule_unless_it_is_empty() {
        let mut config = shared::test_support::config();
        let jobs = jobs(&config).unwrap();
        let maintenance = jobs.iter().find(|j| j.job == Job::Maintenance).unwrap();
        assert_eq!(maintenance.schedule.as_str(), "0 2 * * *");
        config.storage.retention_policy.cleanup_schedule = String::new();
        assert!(super::jobs(&config).unwrap().iter().all(|j| j.job != Job::Maintenance));
    }

    #[test]
    fn the_sweep_purge_and_file_audit_follow_their_schedules_unless_empty() {
        let mut config = shared::test_support::config();
        let schedule_of = |config: &Config, job: Job| {
            super::jobs(config).unwrap().into_iter().find(|j| j.job == job).map(|j| j.schedule.as_str().to_owned())
        };
        assert_eq!(schedule_of(&config, Job::Sweep).as_deref(), Some("*/5 * * * *"));
        assert_eq!(schedule_of(&config, Job::Purge).as_deref(), Some("0 * * * *"));
        assert_eq!(schedule_of(&config, Job::FileAudit).as_deref(), Some("30 3 * * *"));
        assert_eq!((Job::Sweep.name(), Job::Purge.name(), Job::FileAudit.name()), ("sweep", "purge", "file_audit"));
        config.scheduler.sweep = String::new();
        config.scheduler.signed_url_cleanup = " ".to_owned();
        config.scheduler.file_audit = String::new();
        let names: Vec<_> = super::jobs(&config).unwrap().iter().map(|j| j.job.name()).collect();
        assert_eq!(names, ["backup", "maintenance", "health_check", "metrics_rollup", "backup_verify"]);
        config.scheduler.file_audit = "30 3 * *".to_owned();
        let error = super::jobs(&config).unwrap_err();
        assert!(error.to_string().contains("scheduler.fileAudit"), "{error}");
    }

    #[test]
    fn backups_are_re_checked_on_their_own_schedule_unless_empty() {
        let mut config = shared::test_support::config();
        let jobs = jobs(&config).unwrap();
        let verify = jobs.iter().find(|j| j.job == Job::BackupVerify).unwrap();
        assert_eq!((verify.job.name(), verify.schedule.as_str()), ("backup_verify", "0 4 * * *"));
        config.scheduler.backup_verify = String::new();
        assert!(super::jobs(&config).unwrap().iter().all(|j| j.job != Job::BackupVerify));
    }

    #[test]
    fn a_bad_backup_schedule_is_refused_with_its_key() {
        let mut config = shared::test_support::config();
        config.storage.backup_policy.schedule = "0 2 * *".to_owned();
        let error = jobs(&config).unwrap_err();
        assert!(error.to_string().contains("storage.backupPolicy.schedule"), "{error}");
        config.storage.backup_policy.schedule = String::new();
        config.storage.backup_policy.frequency = "monthly".to_owned();
        assert!(jobs(&config).is_err());
    }
}
