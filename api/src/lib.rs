//! The Stayler Storage HTTP API: routes, shared state, and start-up of the server with
//! its outbox relay.

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod body_limit;
pub mod docs;
pub mod erasures;
pub mod error;
pub mod health;
pub mod images;
pub mod maintenance;
pub mod metrics;
pub mod model;
pub mod operations;
pub mod rate_limit;
pub mod request_id;
pub mod restores;
pub mod serving;
pub mod signed_urls;
pub mod stats;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use poem::http::Method;
use poem::middleware::{Cors, Tracing};
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;
use shared::auth::TokenKeys;
use shared::broker::{Publisher, Topology};
use shared::config::{Config, Mode};
use shared::observability::server::MetricsServer;
use shared::sealing::Sealer;
use shared::storage::Storage;
use shared::upload::Uploader;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub storage: Storage,
    pub config: Arc<Config>,
    pub uploader: Uploader,
    pub serving: serving::Serving,
    /// Seals and opens the configured fields; `None` when encryption is off.
    pub sealer: Option<Arc<Sealer>>,
}

impl AppState {
    pub fn new(db: PgPool, storage: Storage, config: Arc<Config>) -> Self {
        // The configuration's validation already refused every key the ring would refuse.
        let sealer = Sealer::from_config(&config.encryption)
            .expect("encryption keys are checked when the configuration is loaded")
            .map(Arc::new);
        let uploader =
            Uploader { db: db.clone(), storage: storage.clone(), config: config.clone(), sealer: sealer.clone() };
        let serving = serving::Serving::new(db.clone(), storage.clone(), &config, sealer.clone());
        Self { db, storage, config, uploader, serving, sealer }
    }
}

/// Every group of endpoints, by feature.
pub type Apis = (
    images::ImagesApi,
    signed_urls::SignedUrlApi,
    stats::StatsApi,
    backups::BackupsApi,
    restores::RestoresApi,
    health::HealthApi,
    maintenance::MaintenanceApi,
    operations::OperationsApi,
    audit::AuditApi,
    erasures::ErasuresApi,
);

/// The handlers' OpenAPI service; the document served (`docs::Docs`) completes its own.
pub fn openapi(state: AppState) -> OpenApiService<Apis, ()> {
    let apis = (
        images::ImagesApi { state: state.clone() },
        signed_urls::SignedUrlApi { state: state.clone() },
        stats::StatsApi { state: state.clone() },
        backups::BackupsApi { state: state.clone() },
        restores::RestoresApi { state: state.clone() },
        health::HealthApi { state: state.clone() },
        maintenance::MaintenanceApi { state: state.clone() },
        operations::OperationsApi { state: state.clone() },
        audit::AuditApi { state: state.clone() },
        erasures::ErasuresApi { state },
    );
    OpenApiService::new(apis, "Stayler Storage", env!("CARGO_PKG_VERSION"))
}

/// All routes, with JSON errors, request tracing, rate limits, the token keys and, unless
/// `prometheus.apiListen` moves it, `/metrics`.
pub fn routes(state: AppState) -> impl Endpoint {
    // First: the recorder must be installed before serving registers its handles.
    let exporter = metrics::exporter(&state).filter(|_| state.config.prometheus.api_address().is_none());
    let keys = TokenKeys::from_config(&state.config.auth);
    let limits = rate_limit::RateLimit::new(&state.config);
    let files = state.serving.clone();
    let public_path = state.config.server.public_path.clone();
    let cors_origins = state.config.server.cors_origins.clone();
    let body_limit = body_limit::JsonBodyLimit { limit: state.config.limits.json_body_bytes };
    let service = openapi(state.clone());
    let http_metrics = metrics::HttpMetrics::from_spec(&service.spec());
    let docs = docs::Docs::new(&service, &state.config);
    let mut router =
        Route::new().nest("/", service).at("/openapi.json", docs.document_endpoint()).at("/docs", docs.ui_endpoint());
    router = operations::page::mount(router);
    if let Some(exporter) = exporter {
        router = router.at("/metrics", metrics::MetricsEndpoint { exporter });
    }
    let api = router
        .with(docs.allow_header())
        .data(keys)
        .with(body_limit)
        .with(Tracing)
        .with(request_id::RequestId)
        .with(http_metrics);
    let cross_origin = cors(&cors_origins);
    // File serving, the hottest path, goes first: no router, tracing span, request id or
    // token keys (the access log records each serve).
    files
        .in_front_of(&public_path, api)
        .with(limits)
        .with_if(cross_origin.is_some(), cross_origin.unwrap_or_default())
        .catch_all_error(error::render)
}

/// CORS for the browser front ends of `server.corsOrigins`, or `None` when there are none
/// (poem's `Cors` with no origin would allow every one). Preflights are answered for the
/// methods and headers the API takes; the headers a client reads are exposed.
fn cors(origins: &[String]) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let cors = Cors::new()
        .allow_origins(origins.iter().map(String::as_str))
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
            "range",
            "if-none-match",
            "if-range",
        ])
        .expose_headers(["x-request-id", "etag", "location", "retry-after", "content-range", "content-disposition"])
        .max_age(CORS_MAX_AGE_SECS);
    Some(cors)
}

/// How long a browser may keep a preflight's answer.
const CORS_MAX_AGE_SECS: i32 = 3600;

/// A running API server and its outbox relay.
pub struct RunningApi {
    /// The address it listens on (port 0 in the config picks a free one).
    pub addr: SocketAddr,
    /// Where `/metrics` is served with `prometheus.apiListen`; `None` when it is on `addr`.
    pub metrics_addr: Option<SocketAddr>,
    metrics_port: Option<MetricsServer>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
    access_log: access_log::AccessLogWriter,
    invalidation: JoinHandle<()>,
    relay_started: watch::Receiver<bool>,
}

impl RunningApi {
    /// Resolves once the outbox relay has declared the broker topology and relays events;
    /// not while the broker is unreachable. Returns as well if the relay stopped before.
    /// Tests wait on it so that no declaration is still in flight when they delete the
    /// topology.
    pub async fn relay_started(&self) {
        let _ = self.relay_started.clone().wait_for(|started| *started).await;
    }

    /// Stops accepting, lets in-flight requests finish, stops the relay, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let served = self.server.await.context("joining the server task");
        // Requests are over (or the server died): write the access logs they left queued.
        self.access_log.stop().await;
        served?.context("serving")?;
        self.relay.await.context("joining the outbox relay")?;
        self.invalidation.await.context("joining the serving cache listener")?;
        if let Some(port) = self.metrics_port {
            port.stopped().await;
        }
        Ok(())
    }
}

/// Connects to PostgreSQL (migrating if configured), opens storage and starts serving.
pub async fn start(config: Config) -> anyhow::Result<RunningApi> {
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL (database.url)")?;
    let storage = Storage::from_config(&config.storage).await.context("opening the storage (storage.backend)")?;
    start_with(AppState::new(db, storage, Arc::new(config))).await
}

/// Starts serving `state` on `server.host:server.port`.
pub async fn start_with(state: AppState) -> anyhow::Result<RunningApi> {
    let address = format!("{}:{}", state.config.server.host, state.config.server.port);
    let listener = tokio::net::TcpListener::bind(&address).await.with_context(|| format!("listening on {address}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let shutdown = CancellationToken::new();
    let metrics_port = match (metrics::exporter(&state), state.config.prometheus.api_address()) {
        (Some(exporter), Some(at)) => {
            // Ready as long as the process runs: `stayler-api health` asks the API's own port.
            let ready = watch::channel(true).1;
            let port = MetricsServer::start(at, exporter, ready, shutdown.clone())
                .await
                .with_context(|| format!("listening on {at} (prometheus.apiListen)"))?;
            tracing::info!(metrics.addr = %port.addr, "metrics on http://{}/metrics", port.addr);
            Some(port)
        }
        _ => None,
    };
    let metrics_addr = metrics_port.as_ref().map(|port| port.addr);
    let prometheus = &state.config.prometheus;
    if state.config.mode == Mode::Production
        && prometheus.enabled
        && metrics_addr.is_none()
        && prometheus.token().is_none()
    {
        tracing::warn!(
            "/metrics is open to anyone who reaches the API: set prometheus.scrapeToken or prometheus.apiListen"
        );
    }
    if let Some(path) = &state.config.server.static_path {
        tracing::warn!(
            "server.staticPath ({path}) is read but serves nothing: the service has no static assets to serve"
        );
    }
    let (relay_started_tx, relay_started) = watch::channel(false);
    let relay = tokio::spawn(relay(state.db.clone(), state.config.clone(), shutdown.clone(), relay_started_tx));
    let cache = state.serving.cache().clone();
    let invalidation = tokio::spawn(serving::invalidation::run(state.db.clone(), cache, shutdown.clone()));
    let (log, access_log) = access_log::start(state.db.clone(), &state.config);
    let logged = access_log::AccessLogLayer {
        log,
        keys: TokenKeys::from_config(&state.config.auth),
        public_path: state.config.server.public_path.clone(),
        trust_forwarded_for: state.config.rate_limit.trust_forwarded_for,
    };
    let connections = serving::server::ConnectionLimits::new(&state.config.limits);
    let app = routes(state).with(logged);
    let server = tokio::spawn(serving::server::run(listener, app, connections, shutdown.clone(), SHUTDOWN_GRACE));
    tracing::info!(%addr, "API listening on http://{addr}");
    Ok(RunningApi {
        addr,
        metrics_addr,
        metrics_port,
        shutdown,
        server,
        relay,
        access_log,
        invalidation,
        relay_started,
    })
}

/// How often a topology the broker refused is declared again.
const REFUSED_TOPOLOGY_RETRY: Duration = Duration::from_secs(30);

/// Publishes committed events until shut down. The API serves uploads whether or not
/// RabbitMQ is up: events wait in the outbox and this task delivers them once it is back.
/// `started` turns true once the topology is declared.
async fn relay(db: PgPool, config: Arc<Config>, shutdown: CancellationToken, started: watch::Sender<bool>) {
    let topology = Topology::new(&config.rabbitmq);
    loop {
        match topology.declare_when_ready(&config.rabbitmq, &shutdown).await {
            Ok(true) => break,
            Ok(false) => return,
            Err(error) => {
                // The broker refused the topology (e.g. queues declared with other arguments):
                // an operator must act. Uploads still succeed, their events wait in the outbox,
                // and the relay starts by itself once the declaration goes through.
                tracing::error!(
                    error = %error,
                    broker.retry_in_secs = REFUSED_TOPOLOGY_RETRY.as_secs(),
                    "RabbitMQ refused the topology; events wait in the outbox"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(REFUSED_TOPOLOGY_RETRY) => {}
                }
            }
        }
    }
    started.send_replace(true);
    let publisher = Publisher::new(&config.rabbitmq, "stayler-api relay");
    shared::relay::run(db, publisher.clone(), shutdown).await;
    publisher.close().await;
}
