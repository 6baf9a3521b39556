//! The checks a `health_check.requested` job runs. Each one reports on its own and never fails the
//! run: an error reading a figure is itself a finding. Measuring and rating are apart: the
//! `rate_*` functions turn figures into problems against the `health:` thresholds without
//! any I/O, so every threshold is unit-tested.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::CheckResult;
use crate::broker::{BrokerConnection, JobQueue, QueueDepth, Topology};
use crate::config::{BackupPolicy, HealthConfig, RabbitConfig};
use crate::db::outbox as outbox_table;
use crate::db::storage_backups::{self, BackupHealth};
use crate::model::HealthStatus;
use crate::storage::{BackupTree, Storage};

/// Longest wait for the database's answer before it counts as unreachable.
pub const DATABASE_ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// Database reachability and the time of one round trip. A database that does not answer
/// within [`DATABASE_ANSWER_LIMIT`] is `down`: a load balancer asking for health must get
/// its answer before its own deadline, not after the pool's.
pub async fn database(db: &PgPool, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("database");
    let limit = DATABASE_ANSWER_LIMIT.max(Duration::from_millis(config.database_max_latency_ms));
    match timed(limit, sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(db)).await {
        Ok(latency_ms) => rate_database(&mut check, latency_ms, config),
        Err(error) => {
            check.detail("reachable", false).problem(HealthStatus::Down, format!("PostgreSQL unreachable: {error}"));
        }
    }
    check
}

/// Rates a database round trip that answered, in milliseconds: slower than
/// `health.databaseMaxLatencyMs` is `degraded`.
fn rate_database(check: &mut CheckResult, latency_ms: f64, config: &HealthConfig) {
    rate_latency(check, "a round trip", latency_ms, config.database_max_latency_ms);
}

/// Runs `probe` within `limit`: how long it took in milliseconds, or its error (a time-out
/// included) as text.
async fn timed<T, E: std::fmt::Display>(
    limit: Duration,
    probe: impl std::future::Future<Output = Result<T, E>>,
) -> Result<f64, String> {
    let started = Instant::now();
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(_)) => Ok(started.elapsed().as_secs_f64() * 1000.0),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

/// Records a dependency that answered and how fast; slower than `limit_ms` is `degraded`,
/// with `what` named.
fn rate_latency(check: &mut CheckResult, what: &str, latency_ms: f64, limit_ms: u64) {
    check.detail("reachable", true).detail("latency_ms", round(latency_ms));
    if latency_ms > limit_ms as f64 {
        check.problem(HealthStatus::Degraded, format!("{what} took {latency_ms:.0} ms (limit {limit_ms} ms)"));
    }
}

/// Longest wait for the store's answer to the probe before it counts as unreachable.
pub const STORE_ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// The store holding the objects (the bucket, or the local tree): a small object written,
/// read back and removed, and how long that took. A store that does not take the write is
/// `down`, since no upload can succeed; slower than `health.storeMaxLatencyMs`, `degraded`.
pub async fn store(storage: &Storage, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("store");
    check.detail("backend", storage.backend_name());
    match timed(STORE_ANSWER_LIMIT, storage.probe()).await {
        Ok(latency_ms) => rate_store(&mut check, latency_ms, config),
        Err(error) => {
            check.detail("reachable", false).problem(HealthStatus::Down, format!("the store takes no writes: {error}"));
        }
    }
    check
}

/// Rates a probe that succeeded, in milliseconds for write, read and delete together.
fn rate_store(check: &mut CheckResult, latency_ms: f64, config: &HealthConfig) {
    rate_latency(check, "writing, reading and removing a small object", latency_ms, config.store_max_latency_ms);
}

/// RabbitMQ reachability, and the depth and consumers of every queue the topology declares:
/// each job queue with its dead-letter queue (under `queues`, one entry per job queue, as
/// the metrics roll-up reads them) and the shared retry delay queues (under
/// `retry_queues`). A broker outage is `degraded`, not `down`: uploads go on and their
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
        let (name, dead_name) = (topology.queue(queue), topology.dead_letter_queue(queue));
        let (depth, dead) = (connection.queue_depth(&name).await, connection.queue_depth(&dead_name).await);
        let (depth, dead) = match (depth, dead) {
            (Ok(depth), Ok(dead)) => (depth, dead),
            (Err(error), _) => {
                check.problem(HealthStatus::Degraded, format!("cannot read the depth of {name}: {error}"));
                continue;
            }
            (_, Err(error)) => {
                check.problem(HealthStatus::Degraded, format!("cannot read the depth of {dead_name}: {error}"));
                continue;
            }
        };
        rate_job_queue(&mut check, &name, depth, &dead_name, dead, config);
        queues.push(json!({
            "queue": name,
            "job": queue.name(),
            "messages": depth.messages,
            "consumers": depth.consumers,
            "dead_letters": dead.messages,
            "dead_letter_queue": { "queue": dead_name, "messages": dead.messages, "consumers": dead.consumers },
        }));
    }
    // Copies waiting out their back-off: figures only, since no worker consumes them (the
    // broker returns them to their queue) and a burst of retries is no fault in itself.
    let mut retry_queues = Vec::new();
    for delay_secs in topology.distinct_delays() {
        let name = topology.retry_queue(delay_secs);
        match connection.queue_depth(&name).await {
            Ok(depth) => retry_queues.push(json!({
                "queue": name,
                "delay_secs": delay_secs,
                "messages": depth.messages,
                "consumers": depth.consumers,
            })),
            Err(error) => {
                check.problem(HealthStatus::Degraded, format!("cannot read the depth of {name}: {error}"));
            }
        }
    }
    check.detail("queues", queues).detail("retry_queues", retry_queues);
    connection.close().await;
    check
}

/// Rates a job queue and its dead-letter queue: no consumer, more ready jobs than
/// `health.queueMaxDepth`, or any dead letter is `degraded`.
fn rate_job_queue(
    check: &mut CheckResult,
    name: &str,
    depth: QueueDepth,
    dead_name: &str,
    dead: QueueDepth,
    config: &HealthConfig,
) {
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

/// Free space on the storage disk and, where this process sees it, the backup disk (the API
/// does not mount the backup tree). Too little on the storage disk is `down`: uploads fail
/// there first.
pub fn disk(storage: &Storage, backups: Option<&BackupTree>, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("disk");
    let disks = [("storage", storage.disk_space(), true), ("backups", backups.and_then(BackupTree::disk_space), false)];
    for (name, space, can_stop_uploads) in disks.into_iter().filter_map(|(n, d, s)| Some((n, d?, s))) {
        match space {
            Ok((free, total)) => rate_disk(&mut check, name, free, total, can_stop_uploads, config),
            Err(error) => {
                check
                    .problem(HealthStatus::Degraded, format!("cannot read the free space of the {name} disk: {error}"));
            }
        }
    }
    check
}

/// Rates the free space of one disk: below `health.diskMinFreePercent` is `degraded`;
/// below `health.diskDownFreePercent` on a disk whose filling stops uploads, `down`.
fn rate_disk(
    check: &mut CheckResult,
    name: &str,
    free: u64,
    total: u64,
    can_stop_uploads: bool,
    config: &HealthConfig,
) {
    let free_percent = if total == 0 { 0.0 } else { free as f64 * 100.0 / total as f64 };
    check.detail(name, json!({ "free_bytes": free, "total_bytes": total, "free_percent": round(free_percent) }));
    if can_stop_uploads && free_percent < config.disk_down_free_percent {
        check.problem(HealthStatus::Down, format!("the {name} disk is full ({free_percent:.1} % free)"));
    } else if free_percent < config.disk_min_free_percent {
        let limit = config.disk_min_free_percent;
        check.problem(HealthStatus::Degraded, format!("{free_percent:.1} % free on the {name} disk (limit {limit} %)"));
    }
}

/// Events committed but not yet published, and the age of the oldest.
pub async fn outbox(db: &PgPool, config: &HealthConfig) -> CheckResult {
    let mut check = CheckResult::new("outbox");
    match outbox_table::backlog(db).await {
        Ok((count, oldest_secs)) => rate_outbox(&mut check, count, oldest_secs, config),
        Err(error) => {
            check.problem(HealthStatus::Degraded, format!("cannot read the outbox: {error}"));
        }
    }
    check
}

/// Rates the outbox backlog: an unpublished event older than `health.outboxMaxAgeSecs` is
/// `degraded` (however many wait: a burst that drains in time is fine).
fn rate_outbox(check: &mut CheckResult, count: i64, oldest_secs: Option<f64>, config: &HealthConfig) {
    check.detail("unpublished", count).detail("oldest_secs", oldest_secs.map(round));
    if let Some(oldest) = oldest_secs.filter(|&secs| secs > config.outbox_max_age_secs as f64) {
        let limit = config.outbox_max_age_secs;
        check.problem(
            HealthStatus::Degraded,
            format!("{count} events wait for the broker, the oldest for {oldest:.0} s (limit {limit} s)"),
        );
    }
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
    match health {
        Ok(health) => rate_backup(&mut check, health, policy, config, now),
        Err(error) => {
            check.problem(HealthStatus::Degraded, format!("cannot read the backups: {error}"));
        }
    }
    check
}

/// Rates the backups as of `now`: archives found damaged since the last completed backup
/// are `degraded`; so, with backups enabled, are a last completed backup older than
/// `health.backupMaxAgeHours`, none at all while an image has waited that long, an image
/// waiting that long for its first backup, or a failed latest backup.
fn rate_backup(
    check: &mut CheckResult,
    health: BackupHealth,
    policy: &BackupPolicy,
    config: &HealthConfig,
    now: DateTime<Utc>,
) {
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
        return;
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
}

/// Two decimals are plenty for milliseconds, hours and percentages.
fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn config() -> HealthConfig {
        HealthConfig::default()
    }

    fn rated(rate: impl FnOnce(&mut CheckResult)) -> CheckResult {
        let mut check = CheckResult::new("test");
        rate(&mut check);
        check
    }

    #[test]
    fn a_disk_is_degraded_below_the_minimum_and_the_storage_disk_down_below_the_floor() {
        // Of 100,000 bytes, so that 1,000 free is 1 %; 10 % and 1 % are the defaults.
        let disk = |free: u64, stops_uploads: bool| {
            rated(|check| rate_disk(check, "storage", free, 100_000, stops_uploads, &config()))
        };
        assert_eq!(disk(50_000, true).status, HealthStatus::Ok);
        assert_eq!(disk(10_000, true).status, HealthStatus::Ok, "exactly the minimum");
        let low = disk(9_500, true);
        assert_eq!(low.status, HealthStatus::Degraded);
        assert_eq!(low.problems(), ["9.5 % free on the storage disk (limit 10 %)"]);
        assert_eq!(disk(1_000, true).status, HealthStatus::Degraded, "exactly the floor");
        let full = disk(500, true);
        assert_eq!(full.status, HealthStatus::Down);
        assert_eq!(full.problems(), ["the storage disk is full (0.5 % free)"]);
        assert_eq!(full.details()["storage"]["free_percent"], 0.5);
        assert_eq!(disk(500, false).status, HealthStatus::Degraded, "a full backup disk does not stop uploads");
    }

    #[test]
    fn a_store_slower_than_its_limit_is_degraded() {
        let store = |latency_ms: f64| rated(|check| rate_store(check, latency_ms, &config()));
        assert_eq!(store(20.0).status, HealthStatus::Ok);
        assert_eq!(store(1_000.0).status, HealthStatus::Ok, "exactly the limit");
        let slow = store(1_500.0);
        assert_eq!(slow.status, HealthStatus::Degraded);
        assert_eq!(slow.problems(), ["writing, reading and removing a small object took 1500 ms (limit 1000 ms)"]);
    }

    #[tokio::test]
    async fn a_store_that_takes_no_writes_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().join("storage")).await.unwrap();
        assert_eq!(store(&storage, &config()).await.status, HealthStatus::Ok);
        std::fs::remove_dir_all(dir.path().join("storage")).unwrap();
        let gone = store(&storage, &config()).await;
        assert_eq!(gone.status, HealthStatus::Down, "{:?}", gone.problems());
    }

    #[test]
    fn a_disk_reporting_no_size_counts_as_full() {
        let check = rated(|check| rate_disk(check, "storage", 0, 0, true, &config()));
        assert_eq!(check.status, HealthStatus::Down);
    }

    #[test]
    fn disk_thresholds_follow_the_configuration() {
        let strict = HealthConfig { disk_min_free_percent: 50.0, disk_down_free_percent: 20.0, ..config() };
        let disk = |free: u64| rated(|check| rate_disk(check, "storage", free, 100, true, &strict)).status;
        assert_eq!((disk(60), disk(40), disk(10)), (HealthStatus::Ok, HealthStatus::Degraded, HealthStatus::Down));
    }

    #[test]
    fn the_outbox_is_degraded_once_its_oldest_event_is_older_than_allowed() {
        let outbox = |count: i64, oldest: Option<f64>| rated(|check| rate_outbox(check, count, oldest, &config()));
        assert_eq!(outbox(0, None).status, HealthStatus::Ok);
        assert_eq!(outbox(50_000, Some(12.0)).status, HealthStatus::Ok, "a burst that is young is fine");
        assert_eq!(outbox(3, Some(300.0)).status, HealthStatus::Ok, "exactly the limit");
        let stuck = outbox(3, Some(301.2));
        assert_eq!(stuck.status, HealthStatus::Degraded);
        assert_eq!(stuck.problems(), ["3 events wait for the broker, the oldest for 301 s (limit 300 s)"]);
        assert_eq!(stuck.details()["unpublished"], 3);
    }

    #[test]
    fn a_job_queue_is_degraded_without_consumers_when_too_deep_or_with_dead_letters() {
        let queue = |messages: u32, consumers: u32, dead: u32| {
            rated(|check| {
                let depth = QueueDepth { messages, consumers };
                let dead = QueueDepth { messages: dead, consumers: 0 };
                rate_job_queue(check, "p.thumbnails", depth, "p.thumbnails.dead", dead, &config());
            })
        };
        assert_eq!(queue(10_000, 2, 0).status, HealthStatus::Ok, "exactly the limit");
        assert_eq!(queue(10_001, 2, 0).problems(), ["p.thumbnails holds 10001 jobs (limit 10000)"]);
        assert_eq!(queue(0, 0, 0).problems(), ["no worker consumes p.thumbnails"]);
        assert_eq!(queue(0, 1, 1).problems(), ["1 given-up jobs wait in p.thumbnails.dead"]);
        let everything = queue(20_000, 0, 4);
        assert_eq!(everything.status, HealthStatus::Degraded, "never down: uploads go on");
        assert_eq!(everything.problems().len(), 3);
    }

    #[test]
    fn a_slow_database_is_degraded() {
        let database = |ms: f64| rated(|check| rate_database(check, ms, &config()));
        assert_eq!(database(3.2).status, HealthStatus::Ok);
        assert_eq!(database(1_000.0).status, HealthStatus::Ok, "exactly the limit");
        let slow = database(1_500.0);
        assert_eq!(slow.status, HealthStatus::Degraded);
        assert_eq!(slow.problems(), ["a round trip took 1500 ms (limit 1000 ms)"]);
        assert_eq!(slow.details()["latency_ms"], 1_500.0);
    }

    #[test]
    fn backups_are_degraded_when_too_old_missing_or_failed_and_only_when_enabled() {
        let now = Utc::now();
        let hours_ago = |h: i64| Some(now - TimeDelta::hours(h));
        let health = |last: Option<DateTime<Utc>>, waiting: Option<DateTime<Utc>>, status: Option<&str>| BackupHealth {
            last_completed_at: last,
            latest_status: status.map(str::to_owned),
            latest_error: status.filter(|s| *s == "failed").map(|_| "disk full".to_owned()),
            oldest_not_backed_up: waiting,
            damaged_backups: 0,
        };
        let enabled = BackupPolicy::default();
        let backup = |health: BackupHealth, policy: &BackupPolicy| {
            rated(|check| rate_backup(check, health, policy, &config(), now))
        };
        assert_eq!(backup(health(hours_ago(2), hours_ago(1), Some("completed")), &enabled).status, HealthStatus::Ok);
        assert_eq!(backup(health(None, hours_ago(35), None), &enabled).status, HealthStatus::Ok, "young enough");
        assert_eq!(
            backup(health(hours_ago(40), None, Some("completed")), &enabled).problems(),
            ["the last backup completed 40.0 h ago (limit 36 h)"]
        );
        assert_eq!(
            backup(health(None, hours_ago(37), None), &enabled).problems(),
            ["no backup has completed yet", "an image has waited 37.0 h for its first backup"]
        );
        assert_eq!(
            backup(health(hours_ago(1), None, Some("failed")), &enabled).problems(),
            ["the latest backup failed: disk full"]
        );
        let disabled = BackupPolicy { enabled: false, ..BackupPolicy::default() };
        let ignored = backup(health(None, hours_ago(100), Some("failed")), &disabled);
        assert_eq!(ignored.status, HealthStatus::Ok, "no backups asked for, none missed");
        assert_eq!(ignored.details()["oldest_not_backed_up_age_hours"], 100.0, "the figures stay");
        let damaged = BackupHealth { damaged_backups: 2, ..health(hours_ago(1), None, Some("completed")) };
        let expected = ["2 backup(s) have damaged archives; their images are copied again by the next backup"];
        assert_eq!(backup(damaged.clone(), &enabled).problems(), expected);
        assert_eq!(backup(damaged, &disabled).problems(), expected, "damage counts even without scheduled backups");
    }
}
