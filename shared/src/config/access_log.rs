//! The `accessLog:` section: how access records are batched into `storage_access_logs`, how
//! long rows are kept (`retentionDays`, checked with the other retention times in
//! `maintenance.rs`), and how its monthly partitions are kept ahead.

use serde::Deserialize;

use super::ConfigError;

/// The `accessLog:` section: how access records are batched into `storage_access_logs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Records written per transaction. A write costs the database about the same whatever
    /// its size (identical requests fold into one row), so under serving load large batches
    /// are what keep the log cheap: at ~80,000 serves/s, 1000 records per batch cost
    /// PostgreSQL 8 % of the machine, 5000 cost 3 %.
    pub batch_size: usize,
    /// Longest wait before queued records are written, in milliseconds.
    pub flush_interval_ms: u64,
    /// Records queued in memory at most; beyond it (the database unreachable for long)
    /// new records are dropped and counted rather than stalling requests.
    pub queue_capacity: usize,
    /// Months whose every row is older than this many days are dropped by the scheduled
    /// purge (`scheduler.signedUrlCleanup`); at a row per served file the log would
    /// otherwise grow for ever.
    pub retention_days: u32,
    /// Monthly partitions the purge keeps ready beyond the current month, so that rows
    /// never wait in the default partition even if the purge stops for this many months.
    pub partitions_ahead: u32,
    /// Longest wait for a table lock when the purge creates or drops a partition, in
    /// milliseconds. Dropping one waits for readers of the log to finish, and inserts queue
    /// behind it: past this the purge gives up and is retried, rather than stall the writer.
    pub partition_lock_timeout_ms: u64,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            flush_interval_ms: 500,
            queue_capacity: 100_000,
            retention_days: 90,
            partitions_ahead: 2,
            partition_lock_timeout_ms: 5000,
        }
    }
}

/// Most months made ahead: two years of empty tables is plenty of warning.
pub const MAX_PARTITIONS_AHEAD: u32 = 24;
/// Bounds of `partitionLockTimeoutMs`: a shorter wait fails on any ordinary read; a longer
/// one would hold up the access log writer for a noticeable time.
pub const MIN_PARTITION_LOCK_TIMEOUT_MS: u64 = 100;
pub const MAX_PARTITION_LOCK_TIMEOUT_MS: u64 = 60_000;

impl AccessLogConfig {
    /// Checks the partition keys, naming the key at fault (`retentionDays` is checked with
    /// the other retention times).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: String| Err(ConfigError::BadValue { key, reason });
        if !(1..=MAX_PARTITIONS_AHEAD).contains(&self.partitions_ahead) {
            return bad("accessLog.partitionsAhead", format!("must be between 1 and {MAX_PARTITIONS_AHEAD}"));
        }
        let timeouts = MIN_PARTITION_LOCK_TIMEOUT_MS..=MAX_PARTITION_LOCK_TIMEOUT_MS;
        if !timeouts.contains(&self.partition_lock_timeout_ms) {
            let reason = format!("must be between {MIN_PARTITION_LOCK_TIMEOUT_MS} and {MAX_PARTITION_LOCK_TIMEOUT_MS}");
            return bad("accessLog.partitionLockTimeoutMs", reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    fn access_log(yaml: &str) -> Result<super::AccessLogConfig, String> {
        Config::from_yaml(&format!("{VALID}accessLog:\n{yaml}")).map(|c| c.access_log).map_err(|e| e.to_string())
    }

    #[test]
    fn partition_keys_have_their_defaults() {
        let config = access_log("  batchSize: 5000\n").unwrap();
        assert_eq!((config.partitions_ahead, config.partition_lock_timeout_ms), (2, 5000));
    }

    #[test]
    fn partition_keys_are_accepted_at_their_limits_and_refused_past_them() {
        for yaml in ["  partitionsAhead: 1\n", "  partitionsAhead: 24\n"] {
            access_log(yaml).unwrap();
        }
        for yaml in ["  partitionLockTimeoutMs: 100\n", "  partitionLockTimeoutMs: 60000\n"] {
            access_log(yaml).unwrap();
        }
        for (yaml, key) in [
            ("  partitionsAhead: 0\n", "accessLog.partitionsAhead"),
            ("  partitionsAhead: 25\n", "accessLog.partitionsAhead"),
            ("  partitionLockTimeoutMs: 99\n", "accessLog.partitionLockTimeoutMs"),
            ("  partitionLockTimeoutMs: 60001\n", "accessLog.partitionLockTimeoutMs"),
        ] {
            let err = access_log(yaml).unwrap_err();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }
}
