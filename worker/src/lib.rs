//! The job worker: one consumer per job queue, each running that queue's handler, sharing
//! one database pool, one storage tree, one publisher and one limit of jobs run at once.
//! Its metrics port (`prometheus.workerListen`) serves `/metrics`, with the cluster-wide
//! figures, and `/healthz` for `stayler-worker health`.

use std::sync::Arc;

use anyhow::Context as _;
use shared::broker::{JobQueue, Publisher, Topology};
use shared::config::Config;
use shared::observability::server::MetricsServer;
use shared::observability::{ClusterSampler, Exporter, Service, names};
use shared::storage::{BackupTree, Storage};
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, Handler, Outcome};

pub mod backups;
pub mod checksums;
pub mod consumer;
pub mod deletions;
pub mod health;
pub mod keys;
pub mod lease;
pub mod maintenance;
pub mod migrate;
pub mod operator;
pub mod thumbnails;
pub mod webhooks;

/// What every handler works with. Cheap to clone: the pool and the configuration are shared,
/// the storage handle is a path.
#[derive(Clone)]
pub struct Context {
    pub db: PgPool,
    pub storage: Storage,
    /// The backup tree: under `storage.backupPath`, or in the bucket `storage.backupS3`.
    pub backups: BackupTree,
    pub config: Arc<Config>,
}

/// Runs the worker until `shutdown` is cancelled: connects to PostgreSQL, opens the storage
/// tree, declares the broker topology (waiting for the broker if it is not up yet), then
/// consumes every job queue.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_reporting_start(config, shutdown, watch::channel(false).0).await
}

/// [`run`], turning `started` true once the topology is declared and the consumers are
/// being started. Tests wait on it so that no declaration is still in flight when they
/// delete the topology.
pub async fn run_reporting_start(
    config: Config,
    shutdown: CancellationToken,
    started: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL")?;
    let storage = Storage::from_config(&config.storage).await.context("opening the storage (storage.backend)")?;
    let backups =
        BackupTree::from_config(&config.storage).context("opening the backup tree (storage.backupBackend)")?;
    let (ready, is_ready) = watch::channel(false);
    let sampler = ClusterSampler::new(db.clone(), storage.clone(), backups.clone(), &config);
    // The port closes however this returns, and before it returns when it ends normally.
    let stop_metrics = shutdown.child_token();
    let _metrics_closed_on_return = stop_metrics.clone().drop_guard();
    let metrics_port = start_metrics_port(&config, &db, sampler, is_ready, &stop_metrics).await;
    let topology = Topology::new(&config.rabbitmq);
    if !topology.declare_when_ready(&config.rabbitmq, &shutdown).await.context("declaring the RabbitMQ topology")? {
        return Ok(());
    }
    started.send_replace(true);
    ready.send_replace(true);
    let context = Context { db: db.clone(), storage, backups, config: Arc::clone(&config) };
    let publisher = Publisher::new(&config.rabbitmq, "stayler-worker publisher");
    let permits = Arc::new(Semaphore::new(consumer::concurrency(&config.worker)));
    let mut consumers = JoinSet::new();
    for &queue in JobQueue::ALL {
        let consumer = Consumer::new(&config, queue, handler(queue, &context))
            .with_publisher(publisher.clone())
            .with_permits(Arc::clone(&permits))
            .with_failure_log(db.clone());
        let shutdown = shutdown.clone();
        consumers
            .spawn(async move { consumer.run(shutdown).await.with_context(|| format!("consuming {}", queue.name())) });
    }
    tracing::info!(
        worker.queues = JobQueue::ALL.len(),
        worker.concurrency = permits.available_permits(),
        "worker started"
    );
    let mut result = Ok(());
    while let Some(joined) = consumers.join_next().await {
        if let Err(error) = joined.context("a consumer panicked").and_then(|outcome| outcome) {
            // One queue refused for good: stop the others too, so the process exits and
            // its supervisor sees it.
            shutdown.cancel();
            result = result.and(Err(error));
        }
    }
    publisher.close().await;
    stop_metrics.cancel();
    if let Some(server) = metrics_port {
        server.stopped().await;
    }
    db.close().await;
    tracing::info!("worker stopped");
    result
}

/// Serves `/metrics` and `/healthz` on `prometheus.workerListen` until `shutdown`, if
/// metrics are on; `/healthz` answers 200 once `ready`. A port that cannot be bound (taken by
/// another worker on the same machine) is logged and the worker goes on without it: metrics
/// never stop the jobs.
async fn start_metrics_port(
    config: &Config,
    db: &PgPool,
    sampler: ClusterSampler,
    ready: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> Option<MetricsServer> {
    let exporter = Exporter::new(config, Service::Worker)?;
    exporter.set_pool(db.clone());
    exporter.set_cluster(sampler);
    // Every queue's counters from the start, so that rates and alerts see a zero, not nothing.
    for &queue in JobQueue::ALL {
        for outcome in Outcome::ALL {
            metrics::counter!(names::JOBS, "queue" => queue.name(), "outcome" => outcome.name()).increment(0);
        }
    }
    let addr = config.prometheus.worker_address()?;
    match MetricsServer::start(addr, exporter, ready, shutdown.clone()).await {
        Ok(server) => {
            tracing::info!(metrics.addr = %server.addr, "metrics on http://{}/metrics", server.addr);
            Some(server)
        }
        Err(error) => {
            tracing::warn!(
                error = %error,
                metrics.addr = %addr,
                "no metrics port: prometheus.workerListen cannot be bound (give each worker of a machine its own)"
            );
            None
        }
    }
}

/// The handler of each queue; a new [`JobQueue`] fails to compile until it gets one here.
fn handler(queue: JobQueue, context: &Context) -> Arc<dyn Handler> {
    match queue {
        JobQueue::Thumbnails => Arc::new(thumbnails::Thumbnails::new(context.clone())),
        JobQueue::Checksums => Arc::new(checksums::Checksums::new(context.clone())),
        JobQueue::Deletions => Arc::new(deletions::Deletions::new(context.clone())),
        JobQueue::Backups => Arc::new(backups::Backups::new(context.clone())),
        JobQueue::Maintenance => Arc::new(maintenance::Maintenance::new(context.clone())),
        JobQueue::Health => Arc::new(health::Health::new(context.clone())),
        JobQueue::Webhooks => Arc::new(webhooks::Webhooks::new(context.clone())),
    }
}
