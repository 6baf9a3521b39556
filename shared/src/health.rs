//! Health of the deployment: the checks a `health_check.requested` job runs, and how the latest
//! results add up to one answer (on the scale of `crate::model::HealthStatus`).

mod check;
pub mod integrity;
pub mod probes;
mod summary;

use chrono::Utc;
use sqlx::PgPool;

pub use check::CheckResult;
pub use summary::{RUN_CHECKS, Summary, summarize};

use crate::config::Config;
use crate::db::health_checks;
use crate::model::HealthStatus;
use crate::storage::{BackupTree, Storage};

/// Runs every check of a `health_check.requested` job: the quick ones side by side, then the
/// integrity sample, which reads files.
pub async fn run_checks(db: &PgPool, storage: &Storage, backups: &BackupTree, config: &Config) -> Vec<CheckResult> {
    let health = &config.health;
    let (database, broker, store, outbox, backup) = tokio::join!(
        probes::database(db, health),
        probes::broker(&config.rabbitmq, health),
        probes::store(storage, health),
        probes::outbox(db, health),
        probes::backup(db, &config.storage.backup_policy, health, Utc::now()),
    );
    let disk = probes::disk(storage, Some(backups), health);
    let integrity = integrity::sample(db, storage, health.integrity_sample_size, Utc::now()).await;
    vec![database, broker, store, disk, outbox, backup, integrity]
}

/// Records at once that the storage disk ran out of space under a write, so that the health
/// answer says `down` now rather than at the next scheduled check (which measures the disk
/// again and clears it once there is room).
pub async fn record_storage_full(db: &PgPool, storage: &Storage, config: &Config) -> sqlx::Result<()> {
    let mut check = probes::disk(storage, None, &config.health);
    check.problem(HealthStatus::Down, "the storage disk ran out of space during a write");
    record(db, &[check]).await
}

/// Stores the results of one run together, so that a reader never sees half a run.
pub async fn record(db: &PgPool, results: &[CheckResult]) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    for result in results {
        health_checks::record(&mut *tx, result.check_type, result.status, &result.details()).await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_wins() {
        let statuses = [HealthStatus::Ok, HealthStatus::Down, HealthStatus::Degraded];
        assert_eq!(statuses.iter().max(), Some(&HealthStatus::Down));
        assert_eq!(HealthStatus::parse("ok"), HealthStatus::Ok);
        assert_eq!(HealthStatus::parse("what"), HealthStatus::Degraded);
        assert_eq!(serde_json::to_value(HealthStatus::Degraded).unwrap(), "degraded");
    }
}
