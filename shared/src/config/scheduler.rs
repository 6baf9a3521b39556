//! The `scheduler:` section and every cron schedule of the configuration: which schedule
//! each job has, the backup schedule derived from `storage.backupPolicy.frequency`, and
//! their validation at start-up.

use serde::Deserialize;

use super::{BackupPolicy, Config, ConfigError};
use crate::schedule::CronSchedule;

/// The `scheduler:` section. Every schedule is a five-field cron expression in UTC; an empty
/// one disables its job. A schedule is checked at start-up but takes effect only once its
/// job is in the scheduler's job table, which lists only jobs a worker handles.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// A slot missed while no scheduler ran still fires at start-up if it is at most this
    /// many seconds old. Older missed slots of one job are coalesced into its latest one.
    pub catch_up_window_secs: u64,
    /// Health checks (database, broker, disk, outbox backlog, last backup, sample files).
    pub health_check: String,
    /// The sweeper: re-queues images left waiting for thumbnails or verification.
    pub sweep: String,
    /// The purge: expired signed URLs and old bookkeeping rows (published outbox rows,
    /// health check results, job failures).
    pub signed_url_cleanup: String,
    /// Roll-up of `storage_metrics`.
    pub metrics_rollup: String,
    /// The file audit: orphan files quarantined, originals missing from disk reported.
    pub file_audit: String,
    /// The rolling re-check of finished backups' archives against their manifests.
    pub backup_verify: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            catch_up_window_secs: 86_400,
            health_check: "* * * * *".to_owned(),
            sweep: "*/5 * * * *".to_owned(),
            signed_url_cleanup: "0 * * * *".to_owned(),
            metrics_rollup: "*/5 * * * *".to_owned(),
            file_audit: "30 3 * * *".to_owned(),
            backup_verify: "0 4 * * *".to_owned(),
        }
    }
}

/// Shortest catch-up window: a slot must stay due for longer than the scheduler takes to
/// wake up and reach the database, or it could be skipped without any downtime.
const MIN_CATCH_UP_WINDOW_SECS: u64 = 60;

impl BackupPolicy {
    /// The cron expression of scheduled backups: `schedule`, or else the one `frequency`
    /// names (`hourly` on the hour, `daily` and `weekly` at 01:00, weekly on Sundays). None
    /// for any other frequency, which stops start-up.
    pub fn effective_schedule(&self) -> Option<&str> {
        let schedule = self.schedule.trim();
        if !schedule.is_empty() {
            return Some(schedule);
        }
        match self.frequency.as_str() {
            "hourly" => Some("0 * * * *"),
            "daily" => Some("0 1 * * *"),
            "weekly" => Some("0 1 * * 0"),
            _ => None,
        }
    }
}

impl Config {
    /// Every job schedule by configuration key, as written; an empty one is a disabled job.
    /// The backup schedule is the effective one (empty only if its frequency is unknown).
    fn schedules(&self) -> [(&'static str, &str); 8] {
        let scheduler = &self.scheduler;
        [
            ("storage.backupPolicy.schedule", self.storage.backup_policy.effective_schedule().unwrap_or("")),
            ("storage.retentionPolicy.cleanupSchedule", &self.storage.retention_policy.cleanup_schedule),
            ("scheduler.healthCheck", &scheduler.health_check),
            ("scheduler.sweep", &scheduler.sweep),
            ("scheduler.signedUrlCleanup", &scheduler.signed_url_cleanup),
            ("scheduler.metricsRollup", &scheduler.metrics_rollup),
            ("scheduler.fileAudit", &scheduler.file_audit),
            ("scheduler.backupVerify", &scheduler.backup_verify),
        ]
    }

    /// Checks the catch-up window, the backup frequency and every cron expression, naming
    /// the key at fault.
    pub(super) fn validate_schedules(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        if self.scheduler.catch_up_window_secs < MIN_CATCH_UP_WINDOW_SECS {
            return bad("scheduler.catchUpWindowSecs", format!("must be at least {MIN_CATCH_UP_WINDOW_SECS}"));
        }
        if self.storage.backup_policy.effective_schedule().is_none() {
            let frequency = &self.storage.backup_policy.frequency;
            let reason = format!("`{frequency}` is not hourly, daily or weekly (or set backupPolicy.schedule)");
            return bad("storage.backupPolicy.frequency", reason);
        }
        for (key, expression) in self.schedules() {
            if expression.trim().is_empty() {
                continue;
            }
            if let Err(error) = CronSchedule::parse(expression) {
                return bad(key, error.to_string());
            }
        }
        Ok(())
    }
}

// `figment::Jail` closures must return figment's own (large) error type.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::*;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    /// A valid configuration plus `extra`, whose `storage:` keys (if any) join the section.
    fn with(extra: &str) -> Result<Config, ConfigError> {
        let yaml = match extra.strip_prefix("storage:\n") {
            Some(storage) => VALID.replacen("storage:\n", &format!("storage:\n{storage}"), 1),
            None => format!("{VALID}{extra}"),
        };
        Config::from_yaml(&yaml)
    }

    #[test]
    fn schedules_have_their_defaults() {
        let config = with("").unwrap();
        assert_eq!(config.scheduler.catch_up_window_secs, 86_400);
        let schedules = config.schedules();
        assert_eq!(schedules[0], ("storage.backupPolicy.schedule", "0 1 * * *"));
        assert_eq!(schedules[1], ("storage.retentionPolicy.cleanupSchedule", "0 2 * * *"));
        assert_eq!(schedules[2], ("scheduler.healthCheck", "* * * * *"));
        assert_eq!(schedules[3], ("scheduler.sweep", "*/5 * * * *"));
        assert_eq!(schedules[4], ("scheduler.signedUrlCleanup", "0 * * * *"));
        assert_eq!(schedules[5], ("scheduler.metricsRollup", "*/5 * * * *"));
        assert_eq!(schedules[6], ("scheduler.fileAudit", "30 3 * * *"));
    }

    #[test]
    fn the_backup_frequency_names_a_schedule_unless_one_is_set() {
        let policy = |frequency: &str, schedule: &str| BackupPolicy {
            frequency: frequency.to_owned(),
            schedule: schedule.to_owned(),
            ..BackupPolicy::default()
        };
        assert_eq!(policy("hourly", "").effective_schedule(), Some("0 * * * *"));
        assert_eq!(policy("daily", "").effective_schedule(), Some("0 1 * * *"));
        assert_eq!(policy("weekly", "").effective_schedule(), Some("0 1 * * 0"));
        assert_eq!(policy("monthly", "").effective_schedule(), None);
        assert_eq!(policy("monthly", " 30 3 * * * ").effective_schedule(), Some("30 3 * * *"));

        let err = with("storage:\n  backupPolicy:\n    frequency: fortnightly\n").unwrap_err();
        assert!(err.to_string().contains("storage.backupPolicy.frequency"), "{err}");
        let config = with("storage:\n  backupPolicy:\n    frequency: hourly\n").unwrap();
        assert_eq!(config.schedules()[0].1, "0 * * * *");
    }

    #[test]
    fn a_bad_cron_expression_stops_start_up_naming_its_key() {
        let cases = [
            ("scheduler:\n  healthCheck: \"* * * *\"\n", "scheduler.healthCheck"),
            ("scheduler:\n  sweep: \"*/5 * * * * *\"\n", "scheduler.sweep"),
            ("scheduler:\n  signedUrlCleanup: hourly\n", "scheduler.signedUrlCleanup"),
            ("scheduler:\n  metricsRollup: \"0 0 30 2 *\"\n", "scheduler.metricsRollup"),
            ("scheduler:\n  fileAudit: daily\n", "scheduler.fileAudit"),
            ("storage:\n  backupPolicy:\n    schedule: \"0 24 * * *\"\n", "storage.backupPolicy.schedule"),
            (
                "storage:\n  retentionPolicy:\n    cleanupSchedule: \"2 * *\"\n",
                "storage.retentionPolicy.cleanupSchedule",
            ),
            ("scheduler:\n  catchUpWindowSecs: 59\n", "scheduler.catchUpWindowSecs"),
        ];
        for (yaml, key) in cases {
            let err = with(yaml).unwrap_err();
            assert!(err.to_string().contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn the_development_configuration_has_valid_schedules() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.yaml");
        let config = Config::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(config.schedules(), Config::from_yaml(VALID).unwrap().schedules(), "the defaults, spelled out");
    }

    #[test]
    fn an_empty_schedule_disables_its_job() {
        let config = with("scheduler:\n  healthCheck: \"\"\n  sweep: \"\"\n").unwrap();
        assert_eq!(config.scheduler.health_check, "");
        assert_eq!(config.scheduler.sweep, "");
    }

    #[test]
    fn schedules_are_overridden_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", VALID)?;
            jail.set_env("STAYLER_SCHEDULER__CATCH_UP_WINDOW_SECS", "3600");
            jail.set_env("STAYLER_SCHEDULER__SWEEP", "");
            jail.set_env("STAYLER_SCHEDULER__HEALTH_CHECK", "0 3 * * *");
            jail.set_env("STAYLER_STORAGE__BACKUP_POLICY__SCHEDULE", "30 4 * * 1");
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.scheduler.catch_up_window_secs, 3600);
            assert_eq!(config.scheduler.sweep, "");
            assert_eq!(config.scheduler.health_check, "0 3 * * *");
            assert_eq!(config.storage.backup_policy.effective_schedule(), Some("30 4 * * 1"));
            jail.set_env("STAYLER_SCHEDULER__HEALTH_CHECK", "0 3 * *");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("scheduler.healthCheck"), "{err}");
            Ok(())
        });
    }
}
