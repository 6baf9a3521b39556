//! The cluster-wide figures a worker exports: queue depths and consumers, dead letters, the
//! outbox backlog, the backups' ages, free disk space, and the live status of those checks.
//!
//! They are measured by the health checks' own probes (`crate::health::probes`), never by
//! queries of their own, and only when scraped: at most once per
//! `prometheus.sampleIntervalSecs`, each scrape waiting at most `prometheus.sampleTimeoutMs`
//! (past it the previous figures stay, and `stayler_cluster_sample_failures_total` counts
//! it). Every worker exports the same values; dashboards and alerts take their `max`.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Mutex;

use super::names;
use crate::config::{BackupPolicy, Config, HealthConfig, RabbitConfig};
use crate::health::{CheckResult, probes};
use crate::model::HealthStatus;
use crate::storage::{BackupTree, Storage};

/// Measures the cluster-wide figures for a worker's scrapes; see the module documentation.
pub struct ClusterSampler {
    db: PgPool,
    storage: Storage,
    backups: BackupTree,
    rabbit: RabbitConfig,
    health: HealthConfig,
    policy: BackupPolicy,
    interval: Duration,
    timeout: Duration,
    /// When the figures were last measured; held during a measurement, so that scrapes that
    /// arrive meanwhile wait for it instead of measuring again.
    last: Mutex<Option<Instant>>,
}

impl ClusterSampler {
    pub fn new(db: PgPool, storage: Storage, backups: BackupTree, config: &Config) -> Self {
        metrics::counter!(names::CLUSTER_SAMPLE_FAILURES).increment(0);
        Self {
            db,
            storage,
            backups,
            rabbit: config.rabbitmq.clone(),
            health: config.health.clone(),
            policy: config.storage.backup_policy.clone(),
            interval: Duration::from_secs(config.prometheus.sample_interval_secs),
            timeout: Duration::from_millis(config.prometheus.sample_timeout_ms),
            last: Mutex::new(None),
        }
    }

    /// Measures again if the figures are older than the interval, within the timeout.
    pub async fn refresh(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.interval) {
            return;
        }
        // A failed sample waits for the interval too: a broker that hangs must not hold every
        // scrape for the whole timeout.
        *last = Some(Instant::now());
        if tokio::time::timeout(self.timeout, self.sample()).await.is_err() {
            metrics::counter!(names::CLUSTER_SAMPLE_FAILURES).increment(1);
            tracing::warn!(
                timeout_ms = self.timeout.as_millis() as u64,
                "the cluster figures were not measured in time; /metrics keeps the previous ones"
            );
        }
    }

    async fn sample(&self) {
        let (database, broker, outbox, backup) = tokio::join!(
            probes::database(&self.db, &self.health),
            probes::broker(&self.rabbit, &self.health),
            probes::outbox(&self.db, &self.health),
            probes::backup(&self.db, &self.policy, &self.health, Utc::now()),
        );
        let disk = probes::disk(&self.storage, Some(&self.backups), &self.health);
        record_latency("database", &database);
        record_latency("broker", &broker);
        record_broker(&broker.details());
        record_outbox(&outbox.details());
        record_backup(&backup.details());
        record_disks(&disk.details());
        for check in [&database, &broker, &outbox, &backup, &disk] {
            metrics::gauge!(names::HEALTH_STATUS, "check" => check.check_type).set(status_value(check.status));
        }
    }
}

/// 0 ok, 1 degraded, 2 down: alerts compare with these.
fn status_value(status: HealthStatus) -> f64 {
    match status {
        HealthStatus::Ok => 0.0,
        HealthStatus::Degraded => 1.0,
        HealthStatus::Down => 2.0,
    }
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn record_latency(dependency: &'static str, check: &CheckResult) {
    if let Some(ms) = number(&check.details()["latency_ms"]) {
        metrics::gauge!(names::DEPENDENCY_LATENCY, "dependency" => dependency).set(ms / 1000.0);
    }
}

/// From the broker check's `queues` and `retry_queues` (nothing when it is unreachable: the
/// figures of the last sample stay, and `stayler_health_status{check="broker"}` says so).
fn record_broker(details: &Value) {
    for queue in details["queues"].as_array().into_iter().flatten() {
        let Some(name) = queue["job"].as_str() else { continue };
        let gauge = |family: &'static str, field: &str| {
            if let Some(value) = number(&queue[field]) {
                metrics::gauge!(family, "queue" => name.to_owned()).set(value);
            }
        };
        gauge(names::QUEUE_MESSAGES, "messages");
        gauge(names::QUEUE_CONSUMERS, "consumers");
        gauge(names::QUEUE_DEAD_LETTERS, "dead_letters");
    }
    for queue in details["retry_queues"].as_array().into_iter().flatten() {
        if let (Some(delay), Some(messages)) = (queue["delay_secs"].as_u64(), number(&queue["messages"])) {
            metrics::gauge!(names::RETRY_QUEUE_MESSAGES, "delay_secs" => delay.to_string()).set(messages);
        }
    }
}

fn record_outbox(details: &Value) {
    if let Some(count) = number(&details["unpublished"]) {
        metrics::gauge!(names::OUTBOX_UNPUBLISHED).set(count);
        metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(number(&details["oldest_secs"]).unwrap_or(0.0));
    }
}

fn record_backup(details: &Value) {
    const HOUR_SECS: f64 = 3_600.0;
    let enabled = details["enabled"].as_bool().unwrap_or(false);
    metrics::gauge!(names::BACKUP_ENABLED).set(if enabled { 1.0 } else { 0.0 });
    if details.get("damaged_backups").is_none() {
        return; // the backups could not be read: the previous figures stay
    }
    let hours = |field: &str| number(&details[field]).map(|hours| hours * HOUR_SECS);
    // NaN, not 0, before the first backup: no comparison with it holds, so no alert fires on
    // a new deployment, and none is silenced on an old one.
    metrics::gauge!(names::BACKUP_LAST_COMPLETED_AGE).set(hours("last_completed_age_hours").unwrap_or(f64::NAN));
    metrics::gauge!(names::BACKUP_OLDEST_WAITING_AGE).set(hours("oldest_not_backed_up_age_hours").unwrap_or(0.0));
    metrics::gauge!(names::BACKUP_DAMAGED).set(number(&details["damaged_backups"]).unwrap_or(0.0));
}

fn record_disks(details: &Value) {
    for disk in ["storage", "backups"] {
        let space = &details[disk];
        if let (Some(free), Some(total)) = (number(&space["free_bytes"]), number(&space["total_bytes"])) {
            metrics::gauge!(names::DISK_FREE_BYTES, "disk" => disk).set(free);
            metrics::gauge!(names::DISK_TOTAL_BYTES, "disk" => disk).set(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_ordered_numbers_for_alerts() {
        let values: Vec<f64> =
            [HealthStatus::Ok, HealthStatus::Degraded, HealthStatus::Down].into_iter().map(status_value).collect();
        assert_eq!(values, [0.0, 1.0, 2.0]);
    }
}
