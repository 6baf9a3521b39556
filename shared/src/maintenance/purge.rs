//! The purge: expired signed URLs and old bookkeeping rows. Signed URL records are kept
//! `maintenance.signedUrlGraceDays` past their expiry (usage statistics and abuse flags
//! read them); published outbox rows, health check results, metric roll-up points, job
//! failures, upload idempotency keys and access log rows are kept for their own number of
//! days, and the
//! record of webhook deliveries as long as published outbox rows. Unpublished outbox rows
//! are never purged. The access log goes by whole months: the purge keeps its monthly
//! partitions (see [`super::partitions`]) and deletes rows only from its default partition.
//!
//! Rows go in batches of [`BATCH`], one short statement each, so a table with millions of
//! old rows never holds one long lock; a second run finds nothing left to delete.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{MaintenanceError, partitions};
use crate::config::{AccessLogConfig, MaintenanceConfig};
use crate::db::purge;

/// Rows deleted per statement.
pub const BATCH: i64 = 10_000;

/// Rows deleted by one purge, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub signed_urls: u64,
    pub outbox: u64,
    pub health_checks: u64,
    pub metrics: u64,
    pub job_failures: u64,
    pub idempotency_keys: u64,
    /// Rows of the access log's default partition; whole months are counted below.
    pub access_logs: u64,
    pub webhook_deliveries: u64,
    /// Monthly partitions of the access log dropped with their rows.
    pub access_log_partitions: u64,
}

/// Purges once as of `now`.
pub async fn run(
    db: &PgPool,
    config: &MaintenanceConfig,
    access_log: &AccessLogConfig,
    now: DateTime<Utc>,
) -> Result<PurgeReport, MaintenanceError> {
    let days = |days: u32| now - TimeDelta::days(i64::from(days));
    let report = PurgeReport {
        signed_urls: in_batches(|| purge::signed_urls_expired_before(db, days(config.signed_url_grace_days), BATCH))
            .await?,
        outbox: in_batches(|| purge::outbox_published_before(db, days(config.outbox_retention_days), BATCH)).await?,
        health_checks: in_batches(|| purge::health_checks_before(db, days(config.health_check_retention_days), BATCH))
            .await?,
        metrics: in_batches(|| purge::metrics_before(db, days(config.metric_retention_days), BATCH)).await?,
        job_failures: in_batches(|| purge::job_failures_before(db, days(config.job_failure_retention_days), BATCH))
            .await?,
        idempotency_keys: in_batches(|| {
            purge::idempotency_keys_before(db, days(config.idempotency_retention_days), BATCH)
        })
        .await?,
        access_logs: in_batches(|| purge::access_logs_before(db, days(access_log.retention_days), BATCH)).await?,
        webhook_deliveries: in_batches(|| {
            purge::webhook_deliveries_before(db, days(config.outbox_retention_days), BATCH)
        })
        .await?,
        // Last: a lock it waits for in vain fails the run (to be retried) after the rest.
        access_log_partitions: partitions::run(db, access_log, now).await?.dropped.len() as u64,
    };
    tracing::info!(
        purge.signed_urls = report.signed_urls,
        purge.outbox = report.outbox,
        purge.health_checks = report.health_checks,
        purge.metrics = report.metrics,
        purge.job_failures = report.job_failures,
        purge.idempotency_keys = report.idempotency_keys,
        purge.access_logs = report.access_logs,
        purge.webhook_deliveries = report.webhook_deliveries,
        purge.access_log_partitions = report.access_log_partitions,
        "purge done"
    );
    Ok(report)
}

/// Repeats `delete` until a batch comes back short; returns the rows deleted in all.
async fn in_batches<F, Fut>(mut delete: F) -> Result<u64, MaintenanceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}
