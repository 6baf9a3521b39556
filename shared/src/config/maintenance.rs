//! The `maintenance:` section: thresholds and retention times of the sweeper, the purge of
//! old bookkeeping rows and the file audit. Their schedules are in `scheduler:`.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The `maintenance:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// An image still waiting for thumbnails or verification this many seconds after its
    /// upload is re-queued by the sweeper; each further re-queue waits twice as long.
    pub pending_after_secs: u64,
    /// Re-queues of one image before the sweeper gives up on it and reports it.
    pub max_requeues: u32,
    /// Images the sweeper re-queues in one run at most, so that a long legitimate backlog is
    /// not doubled all at once.
    pub max_requeues_per_run: u32,
    /// A running backup with no batch finished for this many seconds gets its unfinished
    /// batches published again (at most once per this period); a restore pending this long,
    /// or running with a lease nobody renews, gets its job published again (as rarely).
    pub backup_stall_secs: u64,
    /// Signed URL records are deleted this many days after they expired.
    pub signed_url_grace_days: u32,
    /// Published outbox rows are deleted after this many days.
    pub outbox_retention_days: u32,
    /// Health check results are deleted after this many days.
    pub health_check_retention_days: u32,
    /// Metric roll-up points (`storage_metrics`) are deleted this many days after their
    /// period started; the default keeps a year and a month, for year-on-year charts.
    pub metric_retention_days: u32,
    /// Job failure records are deleted after this many days.
    pub job_failure_retention_days: u32,
    /// Upload idempotency keys are deleted after this many days: a retried upload past it
    /// is stored again instead of answered with the first result.
    pub idempotency_retention_days: u32,
    /// Files the file audit quarantined are deleted after this many days (by the day
    /// folder they were moved to), so an operator has that long to move one back.
    pub quarantine_retention_days: u32,
    /// A file no row refers to is quarantined by the file audit only once it is this many
    /// seconds old (by modification time), so that a write in flight is never touched; a
    /// staged file this old is removed.
    pub orphan_grace_secs: u64,
    /// Finished backups re-checked per `scheduler.backupVerify` run, those checked longest
    /// ago first: with daily runs, each of N backups is re-read every N / this many days.
    pub backup_verify_per_run: u32,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            pending_after_secs: 900,
            max_requeues: 5,
            max_requeues_per_run: 10_000,
            backup_stall_secs: 3600,
            signed_url_grace_days: 7,
            outbox_retention_days: 7,
            health_check_retention_days: 30,
            metric_retention_days: 400,
            job_failure_retention_days: 30,
            idempotency_retention_days: 2,
            quarantine_retention_days: 30,
            orphan_grace_secs: 3600,
            backup_verify_per_run: 7,
        }
    }
}

/// Shortest orphan grace: an upload's file is renamed into place just before its row
/// commits, so a much shorter grace could quarantine a file whose row is a moment away.
const MIN_ORPHAN_GRACE_SECS: u64 = 300;
/// Re-queues of one image at most.
const MAX_REQUEUES: u32 = 20;
/// Longest wait or age a key may give, in seconds (30 days), and longest retention in days
/// (100 years): beyond them the times computed from them would leave the calendar.
const MAX_WAIT_SECS: u64 = 30 * 86_400;
const MAX_DAYS: u32 = 36_500;
/// Most backups one verification run re-reads: one job does them in turn.
const MAX_BACKUP_VERIFY_PER_RUN: u32 = 1000;

impl Config {
    /// Checks the `maintenance:` section, naming the key at fault.
    pub(super) fn validate_maintenance(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        let maintenance = &self.maintenance;
        if !(60..=MAX_WAIT_SECS).contains(&maintenance.pending_after_secs) {
            return bad("maintenance.pendingAfterSecs", format!("must be between 60 and {MAX_WAIT_SECS}"));
        }
        if maintenance.max_requeues > MAX_REQUEUES {
            return bad("maintenance.maxRequeues", format!("must be at most {MAX_REQUEUES}"));
        }
        if maintenance.max_requeues_per_run == 0 {
            return bad("maintenance.maxRequeuesPerRun", "must be at least 1".to_owned());
        }
        if !(60..=MAX_WAIT_SECS).contains(&maintenance.backup_stall_secs) {
            return bad("maintenance.backupStallSecs", format!("must be between 60 and {MAX_WAIT_SECS}"));
        }
        for (key, days) in [
            ("maintenance.signedUrlGraceDays", maintenance.signed_url_grace_days),
            ("maintenance.outboxRetentionDays", maintenance.outbox_retention_days),
            ("maintenance.healthCheckRetentionDays", maintenance.health_check_retention_days),
            ("maintenance.metricRetentionDays", maintenance.metric_retention_days),
            ("maintenance.jobFailureRetentionDays", maintenance.job_failure_retention_days),
            ("maintenance.idempotencyRetentionDays", maintenance.idempotency_retention_days),
            ("maintenance.quarantineRetentionDays", maintenance.quarantine_retention_days),
            ("accessLog.retentionDays", self.access_log.retention_days),
        ] {
            if !(1..=MAX_DAYS).contains(&days) {
                return bad(key, format!("must be between 1 and {MAX_DAYS} days"));
            }
        }
        if !(MIN_ORPHAN_GRACE_SECS..=MAX_WAIT_SECS).contains(&maintenance.orphan_grace_secs) {
            let reason = format!("must be between {MIN_ORPHAN_GRACE_SECS} and {MAX_WAIT_SECS}");
            return bad("maintenance.orphanGraceSecs", reason);
        }
        if !(1..=MAX_BACKUP_VERIFY_PER_RUN).contains(&maintenance.backup_verify_per_run) {
            let reason = format!("must be between 1 and {MAX_BACKUP_VERIFY_PER_RUN}");
            return bad("maintenance.backupVerifyPerRun", reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    #[test]
    fn maintenance_has_its_defaults() {
        let config = Config::from_yaml(VALID).unwrap();
        let maintenance = &config.maintenance;
        assert_eq!((maintenance.pending_after_secs, maintenance.max_requeues), (900, 5));
        assert_eq!((maintenance.orphan_grace_secs, maintenance.outbox_retention_days), (3600, 7));
        assert_eq!(maintenance.metric_retention_days, 400);
        let at_the_limits = format!("{VALID}maintenance:\n  metricRetentionDays: 1\n");
        assert_eq!(Config::from_yaml(&at_the_limits).unwrap().maintenance.metric_retention_days, 1);
        let at_the_limits = format!("{VALID}maintenance:\n  metricRetentionDays: {MAX_DAYS}\n");
        assert_eq!(Config::from_yaml(&at_the_limits).unwrap().maintenance.metric_retention_days, MAX_DAYS);
    }

    #[test]
    fn bad_maintenance_values_stop_start_up_naming_their_key() {
        let cases = [
            ("maintenance:\n  pendingAfterSecs: 5\n", "maintenance.pendingAfterSecs"),
            ("maintenance:\n  maxRequeues: 50\n", "maintenance.maxRequeues"),
            ("maintenance:\n  maxRequeuesPerRun: 0\n", "maintenance.maxRequeuesPerRun"),
            ("maintenance:\n  backupStallSecs: 1\n", "maintenance.backupStallSecs"),
            ("maintenance:\n  outboxRetentionDays: 0\n", "maintenance.outboxRetentionDays"),
            ("maintenance:\n  metricRetentionDays: 0\n", "maintenance.metricRetentionDays"),
            ("maintenance:\n  metricRetentionDays: 36501\n", "maintenance.metricRetentionDays"),
            ("maintenance:\n  jobFailureRetentionDays: 4000000000\n", "maintenance.jobFailureRetentionDays"),
            ("maintenance:\n  orphanGraceSecs: 10\n", "maintenance.orphanGraceSecs"),
            ("maintenance:\n  backupVerifyPerRun: 0\n", "maintenance.backupVerifyPerRun"),
            ("maintenance:\n  orphanGrace: 10\n", "orphanGrace"),
        ];
        for (yaml, key) in cases {
            let err = Config::from_yaml(&format!("{VALID}{yaml}")).unwrap_err();
            assert!(err.to_string().contains(key), "{yaml}: {err}");
        }
    }
}
