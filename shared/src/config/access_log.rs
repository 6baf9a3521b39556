//! The `accessLog:` section: how access records are batched into `storage_access_logs`, and
//! how long rows are kept (`retentionDays`, checked with the other retention times in
//! `maintenance.rs`).

use serde::Deserialize;

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
    /// Rows older than this many days are deleted by the scheduled purge
    /// (`scheduler.purge`); at a row per served file the log would otherwise grow for ever.
    pub retention_days: u32,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { batch_size: 5000, flush_interval_ms: 500, queue_capacity: 100_000, retention_days: 90 }
    }
}
