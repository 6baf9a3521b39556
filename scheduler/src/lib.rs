//! The scheduler: decides when jobs are due and emits them through the transactional
//! outbox; workers do the work. It also runs an outbox relay, so its jobs (and any other
//! pending event) reach RabbitMQ even when no API process runs.
//!
//! Each (job, slot) fires once however many replicas run, because firing inserts the
//! slot's `scheduled_runs` row and the job's event in one transaction and the row's primary
//! key lets only one insert through (see [`firing`]). All schedules are in UTC.
//!
//! Its metrics port (`prometheus.schedulerListen`) serves `/metrics`, with the slots fired
//! and missed ([`missed`]), and `/healthz` for `stayler-scheduler health`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use shared::broker::{Publisher, Topology};
use shared::config::Config;
use shared::observability::server::MetricsServer;
use shared::observability::{Exporter, Service, names};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::missed::MissedSlots;

pub mod firing;
pub mod jobs;
pub mod missed;

pub use firing::{FireError, Fired, due_slot, fire_due, next_wake};
pub use jobs::{ScheduledJob, jobs};

/// Longest sleep between two ticks, so that a wall clock that jumped or a machine that was
/// suspended is noticed soon.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Pause after a tick that failed (database unreachable) before the next try.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Runs the scheduler until `shutdown` is cancelled: connects to PostgreSQL (migrating when
/// configured), relays the outbox to RabbitMQ once the broker topology is declared, and
/// fires due slots. A broker that is down delays the jobs' delivery, never their firing.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let jobs = jobs::jobs(&config).context("reading the job schedules")?;
    let window = Duration::from_secs(config.scheduler.catch_up_window_secs);
    let (ready, is_ready) = watch::channel(false);
    let exporter = Exporter::new(&config, Service::Scheduler);
    // The port closes however this returns, and before it returns when it ends normally.
    let stop_metrics = shutdown.child_token();
    let _metrics_closed_on_return = stop_metrics.clone().drop_guard();
    let metrics_port = match (&exporter, config.prometheus.scheduler_address()) {
        (Some(exporter), Some(addr)) => start_metrics_port(addr, exporter.clone(), is_ready, &stop_metrics).await,
        _ => None,
    };
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL")?;
    if let Some(exporter) = &exporter {
        exporter.set_pool(db.clone());
    }
    for scheduled in &jobs {
        let job = scheduled.job.name();
        metrics::counter!(names::SCHEDULER_SLOTS_FIRED, "job" => job).increment(0);
        metrics::counter!(names::SCHEDULER_SLOTS_MISSED, "job" => job).increment(0);
    }
    ready.send_replace(true);
    let fired_by = fired_by();
    for scheduled in &jobs {
        tracing::info!(job = scheduled.job.name(), schedule = %scheduled.schedule, "scheduled (UTC)");
    }
    tracing::info!(scheduler.jobs = jobs.len(), scheduler.fired_by = %fired_by, "scheduler started");

    // Both tasks stop on a child of `shutdown`, so that a relay that cannot start ends the
    // loop too without cancelling the caller's token.
    let stop = shutdown.child_token();
    let mut relay = tokio::spawn(relay(config, db.clone(), stop.clone()));
    let scheduling = schedule(&db, &jobs, window, &fired_by, &stop);
    tokio::pin!(scheduling);
    let relayed = tokio::select! {
        () = &mut scheduling => (&mut relay).await,
        relayed = &mut relay => {
            stop.cancel();
            (&mut scheduling).await;
            relayed
        }
    };
    stop_metrics.cancel();
    if let Some(server) = metrics_port {
        server.stopped().await;
    }
    db.close().await;
    tracing::info!("scheduler stopped");
    relayed.context("the outbox relay panicked")?
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown`; `/healthz` answers 200 once
/// `ready`. A port that cannot be bound is logged and the scheduler goes on without it.
async fn start_metrics_port(
    addr: SocketAddr,
    exporter: Exporter,
    ready: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> Option<MetricsServer> {
    match MetricsServer::start(addr, exporter, ready, shutdown.clone()).await {
        Ok(server) => {
            tracing::info!(metrics.addr = %server.addr, "metrics on http://{}/metrics", server.addr);
            Some(server)
        }
        Err(error) => {
            tracing::warn!(error = %error, metrics.addr = %addr, "no metrics port: prometheus.schedulerListen cannot be bound");
            None
        }
    }
}

/// Declares the broker topology (waiting for the broker), then relays the outbox until
/// `stop`. An error only when the broker refuses the topology, which no retry fixes.
async fn relay(config: Config, db: PgPool, stop: CancellationToken) -> anyhow::Result<()> {
    let topology = Topology::new(&config.rabbitmq);
    // Declared before anything is published: an event sent before its queues exist is lost.
    if !topology.declare_when_ready(&config.rabbitmq, &stop).await.context("declaring the RabbitMQ topology")? {
        return Ok(());
    }
    let publisher = Publisher::new(&config.rabbitmq, "stayler-scheduler relay");
    shared::relay::run(db, publisher.clone(), stop).await;
    publisher.close().await;
    Ok(())
}

/// Ticks until `stop`: fires what is due, then sleeps until the next slot of any job.
async fn schedule(db: &PgPool, jobs: &[ScheduledJob], window: Duration, fired_by: &str, stop: &CancellationToken) {
    let mut missed = MissedSlots::default();
    while !stop.is_cancelled() {
        let now = Utc::now();
        let fired = fire_due(db, jobs, now, window, fired_by).await;
        // The jobs before the one that failed were fired (or found fired); on success, all.
        let settled = match &fired {
            Ok(_) => jobs.len(),
            Err(error) => jobs.iter().position(|scheduled| scheduled.job.name() == error.job).unwrap_or(0),
        };
        let is_settled = |job: &str| jobs[..settled].iter().any(|scheduled| scheduled.job.name() == job);
        for (job, count) in missed.after_tick(jobs, now, window, is_settled) {
            tracing::warn!(job, scheduler.missed_slots = count, "{count} slot(s) of {job} passed unfired");
            metrics::counter!(names::SCHEDULER_SLOTS_MISSED, "job" => job).increment(count);
        }
        let pause = match fired {
            Ok(_) => next_wake(jobs, Utc::now(), MAX_SLEEP),
            Err(error) => {
                // Firing is idempotent: the next try fires what this one did not.
                tracing::warn!(error = %error, scheduler.retry_in_ms = RETRY_DELAY.as_millis() as u64, "firing failed");
                RETRY_DELAY
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Who fires, for `scheduled_runs.fired_by`: the host name and the process id.
pub fn fired_by() -> String {
    let host = whoami::hostname().unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}
