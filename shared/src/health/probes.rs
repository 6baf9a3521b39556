//! The checks a `health.check` job runs. Each one reports on its own and never fails the
//! run: an error reading a figure is itself a finding.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::{CheckResult, HealthStatus};
use crate::broker::{BrokerConnection, JobQueue, Topology};
use crate::config::{BackupPolicy, HealthConfig, RabbitConfig};
use crate::db::{outbox as outbox_table, storage_backups};
use crate::storage::disk_space;

/// Longest wait for the database's answer before it counts as unreachable.
pub const DATABASE_ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// Database reachability and the time of one round trip. A database that does not answer
/// within [`DATABASE_ANSWER_LIMIT`] is `down`: a load balancer asking for health must get
/// its answer before its own deadline, not after the pool's.
pub async fn database(db: &PgPool, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("database");
    let started = Instant::now();
    let limit = DATABASE_ANSWER_LIMIT.max(Duration::from_millis(config.database_max_latency_ms));
    let answered = match tokio::time::timeout(limit, sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(db)).await {
        Ok(answered) => answered.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    };
    match answered {
        Ok(_) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            check.detail("reachable", true).detail("latency_ms", round(latency_ms));
            if latency_ms > config.database_max_latency_ms as f64 {
                let limit = config.database_max_latency_ms;
                check.problem(
                    HealthStatus::Degraded,
                    format!("a round trip took {latency_ms:.0} ms (limit {limit} ms)"),
                );
            }
        }
        Err(error) => {
            check.detail("reachable", false).problem(HealthStatus::Down, format!("PostgreSQL unreachable: {error}"));
        }
    }
    check
}

/// RabbitMQ reachability, and the depth and consumers of every job queue and of its
/// dead-letter queue. A broker outage is `degraded`, not `down`: uploads go on and their
/// events wait in the outbox.
pub async fn broker(rabbit: &RabbitConfig, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("broker");
    let started = Instant::now();
    let connection = match BrokerConnection::open(rabbit, "stayler health check").await {
        Ok(connection) => connection,
        Err(error) => {
            check.detail("reachable", false).problem(HealthStatus::Degraded, format!("RabbitMQ unreachable: {error}"));
            return check;
        }
    };
    check.detail("reachable", true).detail("latency_ms", round(started.elapsed().as_secs_f64() * 1000.0));
    let topology = Topology::new(rabbit);
    let mut queues = Vec::new();
    for &queue in JobQueue::ALL {
        let name = topology.queue(queue);
        let dead_name = topology.dead_letter_queue(queue);
        let (depth, dead) = (connection.queue_depth(&name).await, connection.queue_depth(&dead_name).await);
        let (depth, dead) = match (depth, dead) {
            (Ok(depth), Ok(dead)) => (depth, dead),
            (Err(error), _) | (_, Err(error)) => {
                check.problem(HealthStatus::Degraded, format!("cannot read the depth of {name}: {error}"));
                continue;
            }
        };
        queues.push(json!({
            "queue": name,
            "job": queue.name(),
            "messages": depth.messages,
            "consumers": depth.consumers,
            "dead_letters": dead.messages,
        }));
        if depth.consumers == 0 {
            check.problem(HealthStatus::Degraded, format!("no worker consumes {name}"));
        }
        if depth.messages > config.queue_max_depth {
            let limit = config.queue_max_depth;
            check.problem(HealthStatus::Degraded, format!("{name} holds {} jobs (limit {limit})", depth.messages));
        }
        if dead.messages > 0 {
            check.problem(HealthStatus::Degraded, format!("{} given-up jobs wait in {dead_name}", dead.messages));
        }
    }
    check.detail("queues", queues);
    connection.close().await;
    check
}

/// Free space on the storage disk and, where this process sees it, the backup disk (the API
/// does not mount the backup tree). Too little on the storage disk is `down`: uploads fail
/// there first.
pub fn disk(storage_root: &Path, backup_root: Option<&Path>, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("disk");
    let disks = [("storage", Some(storage_root), true), ("backups", backup_root, false)];
    for (name, path, can_stop_uploads) in disks.into_iter().filter_map(|(n, p, s)| Some((n, p?, s))) {
        match disk_space(path) {
            Ok((free, total)) => {
                let free_percent = if total == 0 { 0.0 } else { free as f64 * 100.0 / total as f64 };
                check.detail(
                    name,
                    json!({ "free_bytes": free, "total_bytes": total, "free_percent": round(free_percent) }),
                );
                if can_stop_uploads && free_percent < config.disk_down_free_percent {
                    check.problem(HealthStatus::Down, format!("the {name} disk is full ({free_percent:.1} % free)"));
                } else if free_percent < config.disk_min_free_percent {
                    let limit = config.disk_min_free_percent;
                    check.problem(
                        HealthStatus::Degraded,
                        format!("{free_percent:.1} % free on the {name} disk (limit {limit} %)"),
                    );
                }
            }
            Err(error) => {
                check
                    .problem(HealthStatus::Degraded, format!("cannot read the free space of the {name} disk: {error}"));
            }
        }
    }
    check
}

/// Events committed but not yet published, and the age of the oldest.
pub async fn outbox(db: &PgPool, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("outbox");
    match outbox_table::backlog(db).await {
        Ok((count, oldest_secs)) => {
            check.detail("unpublished", count).detail("oldest_secs", oldest_secs.map(round));
            if let Some(oldest) = oldest_secs.filter(|&secs| secs > config.outbox_max_age_secs as f64) {
                let limit = config.outbox_max_age_secs;
                check.problem(
                    HealthStatus::Degraded,
                    format!("{count} events wait for the broker, the oldest for {oldest:.0} s (limit {limit} s)"),
                );
            }
        }
        Err(error) => {
            check.problem(HealthStatus::Degraded, format!("cannot read the outbox: {error}"));
        }
    }
    check
}

/// Age of the last completed backup, the outcome of the latest one, and how long the
/// oldest image not backed up has waited.
pub async fn backup(db: &PgPool, policy: &BackupPolicy, config: &HealthConfig, now: DateTime<Utc>) -> CheckResult {
    let mut check = CheckResult::new("backup");
    check.detail("enabled", policy.enabled);
    let health = match db.acquire().await {
        Ok(mut conn) => storage_backups::health(&mut conn).await,
        Err(error) => Err(error),
    };
    let health = match health {
        Ok(health) => health,
        Err(error) => {
            check.problem(HealthStatus::Degraded, format!("cannot read the backups: {error}"));
            return check;
        }
    };
    let hours = |at: DateTime<Utc>| (now - at).num_seconds() as f64 / 3600.0;
    let limit = config.backup_max_age_hours as f64;
    let last_age = health.last_completed_at.map(hours);
    let waiting_age = health.oldest_not_backed_up.map(hours);
    check
        .detail("last_completed_at", health.last_completed_at.map(|at| at.to_rfc3339()))
        .detail("last_completed_age_hours", last_age.map(round))
        .detail("latest_status", health.latest_status.clone())
        .detail("oldest_not_backed_up_age_hours", waiting_age.map(round))
        .detail("damaged_backups", health.damaged_backups);
    if health.damaged_backups > 0 {
        let count = health.damaged_backups;
        check.problem(
            HealthStatus::Degraded,
            format!("{count} backup(s) have damaged archives; their images are copied again by the next backup"),
        );
    }
    if !policy.enabled {
        return check;
    }
    match last_age {
        Some(age) if age > limit => {
            check
                .problem(HealthStatus::Degraded, format!("the last backup completed {age:.1} h ago (limit {limit} h)"));
        }
        None if waiting_age.is_some_and(|age| age > limit) => {
            check.problem(HealthStatus::Degraded, "no backup has completed yet");
        }
        _ => {}
    }
    if let Some(age) = waiting_age.filter(|&age| age > limit) {
        check.problem(HealthStatus::Degraded, format!("an image has waited {age:.1} h for its first backup"));
    }
    if health.latest_status.as_deref() == Some("failed") {
        let error = health.latest_error.unwrap_or_default();
        check.problem(HealthStatus::Degraded, format!("the latest backup failed: {error}"));
    }
    check
}

/// Two decimals are plenty for milliseconds, hours and percentages.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
