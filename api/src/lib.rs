//! The Stayler Storage HTTP API: routes, shared state, and start-up of the server with
//! its outbox relay.

pub mod auth;
pub mod error;
pub mod images;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Route, Server};
use poem_openapi::OpenApiService;
use shared::auth::TokenKeys;
use shared::broker::{Publisher, Topology};
use shared::config::Config;
use shared::storage::Storage;
use shared::upload::Uploader;
use sqlx::PgPool;
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
}

impl AppState {
    pub fn new(db: PgPool, storage: Storage, config: Arc<Config>) -> Self {
        let uploader = Uploader { db: db.clone(), storage: storage.clone(), config: config.clone() };
        Self { db, storage, config, uploader }
    }
}

/// The OpenAPI description of every endpoint.
pub fn openapi(state: AppState) -> OpenApiService<images::ImagesApi, ()> {
    OpenApiService::new(images::ImagesApi { state }, "Stayler Storage", env!("CARGO_PKG_VERSION"))
}

/// All routes, with JSON errors, request tracing and the token keys.
pub fn routes(state: AppState) -> impl Endpoint {
    let keys = TokenKeys::new(&state.config.auth.jwt_secret);
    let service = openapi(state);
    let spec = service.spec_endpoint();
    Route::new().nest("/", service).at("/openapi.json", spec).data(keys).with(Tracing).catch_all_error(error::render)
}

/// A running API server and its outbox relay.
pub struct RunningApi {
    /// The address it listens on (port 0 in the config picks a free one).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
}

impl RunningApi {
    /// Stops accepting, lets in-flight requests finish, stops the relay, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await.context("joining the server task")?.context("serving")?;
        self.relay.await.context("joining the outbox relay")?;
        Ok(())
    }
}

/// Connects to PostgreSQL (migrating if configured), opens storage and starts serving.
pub async fn start(config: Config) -> anyhow::Result<RunningApi> {
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL (database.url)")?;
    let storage = Storage::open(&config.storage.base_path).await.context("opening storage.basePath")?;
    start_with(AppState::new(db, storage, Arc::new(config))).await
}

/// Starts serving `state` on `server.host:server.port`.
pub async fn start_with(state: AppState) -> anyhow::Result<RunningApi> {
    let address = format!("{}:{}", state.config.server.host, state.config.server.port);
    let acceptor =
        TcpListener::bind(address.clone()).into_acceptor().await.with_context(|| format!("listening on {address}"))?;
    let addr =
        acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).context("reading the bound address")?;
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(relay(state.db.clone(), state.config.clone(), shutdown.clone()));
    let app = routes(state);
    let signal = shutdown.clone();
    let server = tokio::spawn(async move {
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, signal.cancelled_owned(), Some(SHUTDOWN_GRACE))
            .await
    });
    tracing::info!(%addr, "API listening on http://{addr}");
    Ok(RunningApi { addr, shutdown, server, relay })
}

/// Publishes committed events until shut down. The API serves uploads whether or not
/// RabbitMQ is up: events wait in the outbox and this task delivers them once it is back.
async fn relay(db: PgPool, config: Arc<Config>, shutdown: CancellationToken) {
    let topology = Topology::new(&config.rabbitmq);
    match topology.declare_when_ready(&config.rabbitmq, &shutdown).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            // The broker refused the topology (e.g. queues declared with other arguments):
            // an operator must act; uploads still succeed and their events stay queued.
            tracing::error!(error = %error, "cannot declare the RabbitMQ topology; events stay in the outbox");
            return;
        }
    }
    let publisher = Publisher::new(&config.rabbitmq, "stayler-api relay");
    shared::outbox::run(db, publisher.clone(), shutdown).await;
    publisher.close().await;
}
