//! The job table: every job the scheduler fires, and where its schedule comes from in the
//! configuration. What firing one writes, and its one name, are
//! [`PeriodicJob`]'s (`shared::periodic`).
//!
//! Only jobs whose work a worker actually does are listed: an event with no consumer would
//! pile up unseen. Adding one is a variant of [`PeriodicJob`], its line in [`jobs`], and its
//! schedule key in the configuration.

use shared::config::{Config, ConfigError};
use shared::periodic::PeriodicJob;
use shared::schedule::CronSchedule;

/// A job and its schedule.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    pub job: PeriodicJob,
    pub schedule: CronSchedule,
}

/// The enabled jobs of `config` with their schedules. A job is disabled by its own switch
/// or by an empty schedule. The configuration was validated at start-up; an expression that
/// does not parse here (a configuration built in code) is refused with its key all the same.
pub fn jobs(config: &Config) -> Result<Vec<ScheduledJob>, ConfigError> {
    let backup = &config.storage.backup_policy;
    let scheduler = &config.scheduler;
    let table = [
        (
            backup.enabled,
            PeriodicJob::Backup { compression_level: backup.compression_level },
            backup.effective_schedule(),
        ),
        (true, PeriodicJob::BackupRetention, Some(config.storage.retention_policy.cleanup_schedule.as_str())),
        (true, PeriodicJob::HealthCheck, Some(scheduler.health_check.as_str())),
        (true, PeriodicJob::MetricsRollup, Some(scheduler.metrics_rollup.as_str())),
        (true, PeriodicJob::Sweep, Some(scheduler.sweep.as_str())),
        (true, PeriodicJob::Purge, Some(scheduler.signed_url_cleanup.as_str())),
        (true, PeriodicJob::FileAudit, Some(scheduler.file_audit.as_str())),
        (backup.enabled, PeriodicJob::BackupVerify, Some(scheduler.backup_verify.as_str())),
    ];
    let mut jobs = Vec::new();
    for (enabled, job, expression) in table {
        let key = job.schedule_key();
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
    use shared::periodic::PeriodicJob as Job;

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
        assert_eq!(names, ["backup_retention", "health_check", "metrics_rollup", "sweep", "purge", "file_audit"]);
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
    fn backup_retention_runs_at_the_cleanup_schedule_unless_it_is_empty() {
        let mut config = shared::test_support::config();
        let jobs = jobs(&config).unwrap();
        let retention = jobs.iter().find(|j| j.job == Job::BackupRetention).unwrap();
        assert_eq!(retention.schedule.as_str(), "0 2 * * *");
        config.storage.retention_policy.cleanup_schedule = String::new();
        assert!(super::jobs(&config).unwrap().iter().all(|j| j.job != Job::BackupRetention));
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
        assert_eq!(names, ["backup", "backup_retention", "health_check", "metrics_rollup", "backup_verify"]);
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
