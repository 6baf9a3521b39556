//! Prometheus metrics of every process: the one recorder behind the `metrics` facade (a
//! process-wide recorder, rendered in the Prometheus text format), the name and meaning of
//! every metric family, and what each process adds at scrape time ([`Exporter`]): its
//! database pool, and in workers the cluster-wide figures of [`cluster`].
//!
//! Code that measures something calls the facade (`metrics::counter!(names::…)`) and needs
//! nothing from here; without a recorder (metrics off, tools, unit tests) those calls cost
//! next to nothing. The worker and the scheduler serve the text on a port of their own
//! ([`server`]), the API on its own port or on `prometheus.apiListen`; `stayler-* health`
//! asks a process's own endpoint through [`probe`].
//!
//! This is not the `storage_metrics` roll-up of `crate::metrics`: that one keeps history
//! in PostgreSQL for the statistics API; these are live figures for Prometheus to scrape.

pub mod cluster;
pub mod probe;
pub mod server;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub use cluster::ClusterSampler;

use crate::config::Config;

/// The name of every metric family, for the code that records them, the documentation
/// (docs/operations.md, Metrics) and the dashboard's test.
pub mod names {
    pub const BUILD_INFO: &str = "stayler_build_info";
    pub const DB_POOL_CONNECTIONS: &str = "stayler_db_pool_connections";
    pub const DB_POOL_MAX_CONNECTIONS: &str = "stayler_db_pool_max_connections";

    pub const HTTP_REQUESTS: &str = "stayler_http_requests_total";
    pub const HTTP_REQUEST_DURATION: &str = "stayler_http_request_duration_seconds";
    pub const HTTP_REQUEST_BYTES: &str = "stayler_http_request_bytes_total";
    pub const HTTP_RESPONSE_BYTES: &str = "stayler_http_response_bytes_total";
    pub const SIGNED_URL_VERIFICATIONS: &str = "stayler_signed_url_verifications_total";
    pub const RATE_LIMIT_DENIALS: &str = "stayler_rate_limit_denials_total";

    pub const JOBS: &str = "stayler_jobs_total";
    pub const JOB_DURATION: &str = "stayler_job_duration_seconds";
    pub const JOBS_IN_FLIGHT: &str = "stayler_jobs_in_flight";
    pub const THUMBNAIL_STAGE_DURATION: &str = "stayler_thumbnail_stage_duration_seconds";

    pub const QUEUE_MESSAGES: &str = "stayler_queue_messages";
    pub const QUEUE_CONSUMERS: &str = "stayler_queue_consumers";
    pub const QUEUE_DEAD_LETTERS: &str = "stayler_queue_dead_letters";
    pub const RETRY_QUEUE_MESSAGES: &str = "stayler_retry_queue_messages";
    pub const OUTBOX_UNPUBLISHED: &str = "stayler_outbox_unpublished_events";
    pub const OUTBOX_OLDEST_AGE: &str = "stayler_outbox_oldest_event_age_seconds";
    pub const BACKUP_ENABLED: &str = "stayler_backup_enabled";
    pub const BACKUP_LAST_COMPLETED_AGE: &str = "stayler_backup_last_completed_age_seconds";
    pub const BACKUP_OLDEST_WAITING_AGE: &str = "stayler_backup_oldest_waiting_age_seconds";
    pub const BACKUP_DAMAGED: &str = "stayler_backup_damaged_backups";
    pub const DISK_FREE_BYTES: &str = "stayler_disk_free_bytes";
    pub const DISK_TOTAL_BYTES: &str = "stayler_disk_total_bytes";
    pub const HEALTH_STATUS: &str = "stayler_health_status";
    pub const DEPENDENCY_LATENCY: &str = "stayler_dependency_latency_seconds";
    pub const CLUSTER_SAMPLE_FAILURES: &str = "stayler_cluster_sample_failures_total";

    pub const SCHEDULER_SLOTS_FIRED: &str = "stayler_scheduler_slots_fired_total";
    pub const SCHEDULER_SLOTS_MISSED: &str = "stayler_scheduler_slots_missed_total";
}

/// Which binary a process is, in `stayler_build_info{service}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Api,
    Worker,
    Scheduler,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Scheduler => "scheduler",
        }
    }
}

/// Buckets of request latencies, in seconds: a cached thumbnail is served in well under a
/// millisecond, an upload of a large photo may take seconds.
const HTTP_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets of whole jobs, in seconds: a checksum takes milliseconds, a backup batch minutes.
const JOB_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Buckets of one thumbnail stage, in seconds (up to `worker.imageDeadlineSecs`' default).
const STAGE_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];
/// How often histogram samples are folded into their buckets between scrapes, so that a
/// process nobody scrapes does not keep every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder, installed on first use. Every service of a process (tests run
/// several) shares it, as they share the facade.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::HTTP_REQUEST_DURATION.to_owned()), HTTP_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(names::JOB_DURATION.to_owned()), JOB_BUCKETS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Full(names::THUMBNAIL_STAGE_DURATION.to_owned()), STAGE_BUCKETS)
            })
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            // Only another recorder installed by hand could be there first; its figures win.
            tracing::warn!(error = %error, "a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(error = %error, "no metrics upkeep thread; histograms are folded at each scrape only");
        }
        handle
    })
}

/// The `# HELP` text and unit of every family.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_gauge!(BUILD_INFO, "Always 1: the service and version of the process");
    describe_gauge!(DB_POOL_CONNECTIONS, "Connections of this process's database pool, by state (idle, in_use)");
    describe_gauge!(DB_POOL_MAX_CONNECTIONS, "Size limit of this process's database pool (database.maxConnections)");
    describe_counter!(HTTP_REQUESTS, "API requests answered, by route template, method and status");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to the response head, by route template and method"
    );
    describe_counter!(HTTP_REQUEST_BYTES, Unit::Bytes, "Request bodies received, as announced by Content-Length");
    describe_counter!(HTTP_RESPONSE_BYTES, Unit::Bytes, "Response bodies sent, by route template");
    describe_counter!(SIGNED_URL_VERIFICATIONS, "Signed URLs checked when serving a file, by result");
    describe_counter!(RATE_LIMIT_DENIALS, "Requests answered 429 by the rate limiter, by group");
    describe_counter!(JOBS, "Jobs finished by this worker, by queue and outcome (succeeded, retried, dead_lettered)");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Time a job's handler ran, by queue, whatever its outcome");
    describe_gauge!(JOBS_IN_FLIGHT, "Jobs this worker is running now");
    describe_histogram!(
        THUMBNAIL_STAGE_DURATION,
        Unit::Seconds,
        "Time of one thumbnail stage (decode, resize, encode)"
    );
    describe_gauge!(QUEUE_MESSAGES, "Jobs ready in a job queue, by queue (sampled)");
    describe_gauge!(QUEUE_CONSUMERS, "Consumers of a job queue, by queue (sampled)");
    describe_gauge!(QUEUE_DEAD_LETTERS, "Given-up jobs in a queue's dead-letter queue, by queue (sampled)");
    describe_gauge!(RETRY_QUEUE_MESSAGES, "Job copies waiting out their back-off, by delay (sampled)");
    describe_gauge!(OUTBOX_UNPUBLISHED, "Committed events not yet published to RabbitMQ (sampled)");
    describe_gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest unpublished event, 0 when none (sampled)");
    describe_gauge!(BACKUP_ENABLED, "1 when scheduled backups are on (storage.backupPolicy.enabled)");
    describe_gauge!(BACKUP_LAST_COMPLETED_AGE, Unit::Seconds, "Age of the last completed backup, NaN before the first");
    describe_gauge!(BACKUP_OLDEST_WAITING_AGE, Unit::Seconds, "How long the oldest image not backed up has waited");
    describe_gauge!(BACKUP_DAMAGED, "Backups whose archives were found damaged since the last completed one");
    describe_gauge!(DISK_FREE_BYTES, Unit::Bytes, "Free space of a disk this worker writes to, by disk (sampled)");
    describe_gauge!(DISK_TOTAL_BYTES, Unit::Bytes, "Size of a disk this worker writes to, by disk (sampled)");
    describe_gauge!(HEALTH_STATUS, "Live health check result, by check: 0 ok, 1 degraded, 2 down (sampled)");
    describe_gauge!(DEPENDENCY_LATENCY, Unit::Seconds, "Time to connect to or query a dependency, by dependency");
    describe_counter!(CLUSTER_SAMPLE_FAILURES, "Samples of the cluster figures that did not finish in time");
    describe_counter!(SCHEDULER_SLOTS_FIRED, "Schedule slots this scheduler fired, by job");
    describe_counter!(SCHEDULER_SLOTS_MISSED, "Schedule slots that left the catch-up window unfired, by job");
}

/// What one process serves at `/metrics`: the shared recorder's text, with this process's
/// own figures brought up to date first. Cheap to clone.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    handle: &'static PrometheusHandle,
    pool: OnceLock<PgPool>,
    cluster: OnceLock<ClusterSampler>,
    /// SHA-256 of `prometheus.scrapeToken`, so that comparing takes no time that depends on
    /// how much of a guess was right.
    token_digest: Option<[u8; 32]>,
}

impl Exporter {
    /// Installs the recorder (once per process) and records `service`'s build info. `None`
    /// when `prometheus.enabled` is off: nothing is recorded, nothing is served.
    pub fn new(config: &Config, service: Service) -> Option<Self> {
        if !config.prometheus.enabled {
            return None;
        }
        let handle = handle();
        metrics::gauge!(names::BUILD_INFO, "service" => service.name(), "version" => env!("CARGO_PKG_VERSION"))
            .set(1.0);
        let token_digest = config.prometheus.token().map(|token| Sha256::digest(token.as_bytes()).into());
        let inner = Inner { handle, pool: OnceLock::new(), cluster: OnceLock::new(), token_digest };
        Some(Self { inner: Arc::new(inner) })
    }

    /// Reports `pool`'s size and idle connections at every scrape from now on (a process
    /// serves its port before its database answers); the first pool set stays.
    pub fn set_pool(&self, pool: PgPool) {
        let _ = self.inner.pool.set(pool);
    }

    /// Measures the cluster-wide figures (cached, see [`ClusterSampler`]) at scrapes; the
    /// first sampler set stays.
    pub fn set_cluster(&self, cluster: ClusterSampler) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Whether a request with this `Authorization` header may read the metrics.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.inner.token_digest else { return true };
        let Some(token) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else { return false };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest == *expected
    }

    /// The Prometheus text of every metric of the process.
    pub async fn render(&self) -> String {
        if let Some(pool) = self.inner.pool.get() {
            record_pool(pool);
        }
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.refresh().await;
        }
        self.inner.handle.render()
    }
}

/// The pool's connections by state and its limit.
fn record_pool(pool: &PgPool) {
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    metrics::gauge!(names::DB_POOL_MAX_CONNECTIONS).set(pool.options().get_max_connections() as f64);
}

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\n\
                    auth:\n  jwtSecret: dev-secret\n";
        Config::from_yaml(&format!("{yaml}{extra}")).unwrap()
    }

    #[test]
    fn only_the_scrape_token_opens_the_metrics_when_one_is_set() {
        let open = Exporter::new(&config(""), Service::Api).unwrap();
        assert!(open.authorized(None));
        let closed = Exporter::new(&config("prometheus:\n  scrapeToken: dev-scrape\n"), Service::Api).unwrap();
        assert!(closed.authorized(Some("Bearer dev-scrape")));
        for wrong in [None, Some("Bearer dev-scrap"), Some("dev-scrape"), Some("Basic dev-scrape"), Some("Bearer ")] {
            assert!(!closed.authorized(wrong), "{wrong:?}");
        }
        assert!(Exporter::new(&config("prometheus:\n  enabled: false\n"), Service::Api).is_none());
    }

    #[tokio::test]
    async fn the_text_names_every_family_recorded_with_its_help_and_the_build_info() {
        let exporter = Exporter::new(&config(""), Service::Worker).unwrap();
        metrics::histogram!(names::THUMBNAIL_STAGE_DURATION, "stage" => "resize").record(0.003);
        let text = exporter.render().await;
        assert!(text.contains("# TYPE stayler_build_info gauge"), "{text}");
        assert!(text.contains("stayler_build_info{service=\"worker\",version=\""), "{text}");
        assert!(text.contains("# HELP stayler_thumbnail_stage_duration_seconds"), "{text}");
        assert!(text.contains("# TYPE stayler_thumbnail_stage_duration_seconds histogram"), "a histogram: {text}");
        assert!(
            text.contains("stayler_thumbnail_stage_duration_seconds_bucket{stage=\"resize\",le=\"0.005\"}"),
            "{text}"
        );
    }
}
