//! The `worker:` section: how many jobs a worker process runs at once, how long an image or
//! a job may take, and how a worker shuts down.

use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Jobs handled at once by one worker process; 0 means one per CPU core.
    pub concurrency: usize,
    /// Seconds a worker waits for in-flight jobs on SIGTERM before returning them.
    pub shutdown_grace_secs: u64,
    /// Seconds an image's decode, resize and encode may take; past it the job fails and is
    /// retried like any other failure.
    pub image_deadline_secs: u64,
    /// Seconds a long job (a restore, a backup check) holds its lease without renewing it;
    /// a running job renews it every third of that. A second delivery of a job whose lease
    /// is live is left to its holder; a holder that died is replaced once the lease ran out.
    pub job_lease_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { concurrency: 0, shutdown_grace_secs: 30, image_deadline_secs: 120, job_lease_secs: 120 }
    }
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.image_deadline_secs == 0 {
            return bad("worker.imageDeadlineSecs", "must be at least 1");
        }
        if !(3..=3600).contains(&self.job_lease_secs) {
            return bad("worker.jobLeaseSecs", "must be between 3 and 3600");
        }
        Ok(())
    }
}

impl Config {
    /// `worker.jobLeaseSecs` as a duration.
    pub fn job_lease(&self) -> Duration {
        Duration::from_secs(self.worker.job_lease_secs)
    }
}
