//! Maintenance jobs of the `stayler.maintenance` queue besides backup retention: the
//! sweeper, the purge of expired signed URLs and old bookkeeping rows (with the access log's
//! monthly partitions), and the file audit.
//! Each run is idempotent. The sweeper and the file audit record what they found as a
//! `storage_health_checks` row, where operators and the health endpoint see it; the purge
//! only logs its counts.

use std::io;

pub mod file_audit;
pub mod partitions;
pub mod purge;
pub mod sweep;

/// Health check type of sweeper runs.
pub const SWEEP_CHECK: &str = "sweep";
/// Health check type of file audits.
pub const FILES_CHECK: &str = "files";
/// Images listed by id in a report at most; the counts are always complete.
pub const REPORT_SAMPLE: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("storage tree: {0}")]
    Io(#[from] io::Error),
}
