//! The `health:` and `metrics:` sections. `health:` says what the health checks measure and
//! where "ok" ends: every threshold turns a check `degraded`; `down` is reserved for what
//! stops service (the database unreachable, no free space left for uploads, a store that
//! takes no writes).

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Originals re-hashed per health check, least recently verified first, so that over
    /// time every stored file is read back and compared with its checksum.
    pub integrity_sample_size: u32,
    /// The last completed backup may be this old.
    pub backup_max_age_hours: u64,
    /// Free space below this share of a disk (storage or backup path).
    pub disk_min_free_percent: f64,
    /// Free space below this share of the storage disk stops uploads: `down`.
    pub disk_down_free_percent: f64,
    /// The oldest unpublished outbox event may be this old.
    pub outbox_max_age_secs: u64,
    /// Ready messages a job queue may hold (a backlog beyond it means workers fall behind).
    pub queue_max_depth: u32,
    /// A database round trip slower than this.
    pub database_max_latency_ms: u64,
    /// The store's probe (a small object written, read back and removed) slower than this.
    pub store_max_latency_ms: u64,
    /// The latest health check may be this old before the summary says it is stale (no
    /// scheduler or no worker is running the checks).
    pub stale_after_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            integrity_sample_size: 50,
            backup_max_age_hours: 36,
            disk_min_free_percent: 10.0,
            disk_down_free_percent: 1.0,
            outbox_max_age_secs: 300,
            queue_max_depth: 10_000,
            database_max_latency_ms: 1_000,
            store_max_latency_ms: 1_000,
            stale_after_secs: 300,
        }
    }
}

impl HealthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        let percent = 0.0..=100.0;
        if !percent.contains(&self.disk_min_free_percent) {
            return bad("health.diskMinFreePercent", "must be between 0 and 100");
        }
        if !percent.contains(&self.disk_down_free_percent) || self.disk_down_free_percent > self.disk_min_free_percent {
            return bad("health.diskDownFreePercent", "must be between 0 and health.diskMinFreePercent");
        }
        if self.backup_max_age_hours == 0 {
            return bad("health.backupMaxAgeHours", "must be positive");
        }
        if self.stale_after_secs < 60 {
            return bad("health.staleAfterSecs", "must be at least 60 (checks run at most once a minute)");
        }
        Ok(())
    }
}

/// The `metrics:` section: the periods `storage_metrics` is rolled up into.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Length of one period, in seconds; periods are aligned to the epoch (UTC).
    pub period_secs: u64,
    /// Periods recomputed by every roll-up, the latest first: late data (a thumbnail made
    /// after its period ended, a roll-up that did not run) is caught up within this window.
    pub recompute_periods: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { period_secs: 300, recompute_periods: 12 }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.period_secs < 60 || 86_400 % self.period_secs != 0 {
            return bad("metrics.periodSecs", "must be at least 60 and divide a day evenly");
        }
        if self.recompute_periods == 0 || self.recompute_periods > 1_000 {
            return bad("metrics.recomputePeriods", "must be between 1 and 1000");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    fn error_of(extra: &str) -> String {
        Config::from_yaml(&format!("{VALID}{extra}")).unwrap_err().to_string()
    }

    #[test]
    fn thresholds_out_of_range_are_refused_with_their_key() {
        assert!(Config::from_yaml(VALID).is_ok());
        assert!(error_of("health:\n  diskMinFreePercent: 120\n").contains("health.diskMinFreePercent"));
        assert!(error_of("health:\n  diskDownFreePercent: 20\n").contains("health.diskDownFreePercent"));
        assert!(error_of("health:\n  staleAfterSecs: 10\n").contains("health.staleAfterSecs"));
        assert!(error_of("metrics:\n  periodSecs: 7\n").contains("metrics.periodSecs"));
        assert!(
            error_of("metrics:\n  periodSecs: 420\n").contains("metrics.periodSecs"),
            "7 minutes do not divide a day"
        );
        assert!(error_of("metrics:\n  recomputePeriods: 0\n").contains("metrics.recomputePeriods"));
        assert!(error_of("health:\n  sampleSize: 3\n").contains("sampleSize"), "unknown keys are refused");
    }
}
