//! What integration tests of every crate share (feature `test-support`): a configuration
//! with a random queue prefix, the URL of a test's own database, a handle on the real broker
//! to inspect queues, a TCP proxy that can cut or silence broker connections, and waiting on
//! a condition without sleeps; TLS servers with certificates of their own ([`tls`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerConnection, Topology, call};

mod garage_cluster;
pub mod tls;
use crate::config::{Config, RabbitConfig};
pub use garage_cluster::GarageCluster;

/// Broker used by tests unless `STAYLER_TEST_RABBITMQ_URL` names another.
pub const DEFAULT_RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The URL of the test broker: `STAYLER_TEST_RABBITMQ_URL`, or [`DEFAULT_RABBITMQ_URL`].
fn test_broker_url() -> SecretString {
    SecretString::from(std::env::var("STAYLER_TEST_RABBITMQ_URL").unwrap_or_else(|_| DEFAULT_RABBITMQ_URL.to_owned()))
}

/// Broker settings for one test: its own random prefix, short retry delays and timeouts.
pub fn rabbit_config() -> RabbitConfig {
    RabbitConfig {
        url: test_broker_url(),
        ca_file: None,
        prefix: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        prefetch: 8,
        max_attempts: 3,
        retry_delays_secs: vec![1],
        call_timeout_secs: 2,
        reconnect_delay_secs: 1,
    }
}

/// A whole valid dev configuration around [`rabbit_config`]: database from `DATABASE_URL`,
/// dev secrets, defaults elsewhere. Tests adjust the fields they care about.
pub fn config() -> Config {
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/stayler_dev".to_owned());
    let value = serde_json::json!({
        "mode": "dev",
        "storage": { "signedURLKey": "dev-test-signing-key" },
        "database": { "url": database_url, "migrate": false },
        "rabbitmq": { "url": "amqp://unused" },
        "auth": { "jwtSecret": "dev-test-jwt-secret" },
    });
    let mut config: Config = serde_json::from_value(value).expect("the test configuration deserialises");
    config.rabbitmq = rabbit_config();
    // Tests run many workers and schedulers at once: each metrics port on a free port of
    // its own rather than all contending for the defaults.
    config.prometheus.worker_listen = "127.0.0.1:0".to_owned();
    config.prometheus.scheduler_listen = "127.0.0.1:0".to_owned();
    config
}

/// The URL of the pool's database (each `sqlx::test` gets its own), for code under test that
/// connects by itself from a configuration, such as workers and the scheduler.
pub async fn database_url(pool: &sqlx::PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.expect("database name");
    let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = server.split('?').next().unwrap_or(&server);
    let base = base.rsplit_once('/').map_or(base, |(base, _)| base);
    format!("{base}/{name}")
}

/// Sends `tracing` output through the test harness, so each test shows its own logs when it
/// fails (filter from `RUST_LOG`, default `info`). Safe to call from every test.
/// Inserts the row of a live user's photo with no object behind it, for tests of tables
/// that refer to images.
pub async fn insert_bare_image(pool: &sqlx::PgPool) -> crate::model::ImageId {
    let id = crate::model::ImageId::new();
    sqlx::query(
        "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                    mime_type, format, width, height, checksum)
         VALUES ($1, $2, 'user', 'user', 'me.jpg', $3, 10, 'image/jpeg', 'jpeg', 1, 1, repeat('a', 64))",
    )
    .bind(id.0)
    .bind(uuid::Uuid::new_v4())
    .bind(format!("images/user/x/images/{}.jpg", id.0))
    .execute(pool)
    .await
    .expect("inserting an image row");
    id
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message taken off a queue by a test.
#[derive(Debug, Clone)]
pub struct TakenMessage {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl TakenMessage {
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// A header as text (string headers) or decimal (integer headers).
    pub fn header(&self, name: &str) -> Option<String> {
        use lapin::types::AMQPValue;
        let value = self.properties.headers().as_ref()?.inner().get(name)?;
        Some(match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            AMQPValue::LongLongInt(n) => n.to_string(),
            AMQPValue::LongInt(n) => n.to_string(),
            AMQPValue::LongUInt(n) => n.to_string(),
            AMQPValue::ShortInt(n) => n.to_string(),
            AMQPValue::ShortUInt(n) => n.to_string(),
            AMQPValue::ShortShortInt(n) => n.to_string(),
            AMQPValue::ShortShortUInt(n) => n.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// A test's view of the real broker: declares its random-prefix topology, inspects and
/// empties queues, and deletes everything at the end, even when the test fails.
pub struct TestBroker {
    pub config: RabbitConfig,
    pub topology: Topology,
    connection: BrokerConnection,
    channel: Channel,
    deleted: bool,
}

impl TestBroker {
    /// Declares the topology of `config` and opens an inspection connection.
    pub async fn start(config: &RabbitConfig) -> Self {
        init_logging();
        let topology = Topology::new(config);
        topology.declare(config).await.expect("declaring the test topology");
        let connection = BrokerConnection::open(config, "stayler test").await.expect("connecting to RabbitMQ");
        let channel = connection.open_channel().await.expect("opening a channel");
        Self { config: config.clone(), topology, connection, channel, deleted: false }
    }

    /// Ready (not yet delivered) messages in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.connection.queue_depth(queue).await.expect("reading a queue depth").messages
    }

    /// Consumers attached to `queue`.
    pub async fn consumers(&self, queue: &str) -> u32 {
        self.connection.queue_depth(queue).await.expect("reading a queue depth").consumers
    }

    /// Takes (and acknowledges) every ready message of `queue`.
    pub async fn take_all(&self, queue: &str) -> Vec<TakenMessage> {
        let timeout = self.connection.call_timeout();
        let mut taken = Vec::new();
        loop {
            let got = call(timeout, "basic.get", self.channel.basic_get(queue.into(), BasicGetOptions::default()))
                .await
                .expect("basic.get");
            let Some(message) = got else { return taken };
            call(timeout, "basic.ack", message.delivery.acker.ack(BasicAckOptions::default())).await.expect("ack");
            taken.push(TakenMessage {
                properties: message.delivery.properties.clone(),
                body: message.delivery.data.clone(),
            });
        }
    }

    /// Waits until `queue` holds exactly `count` ready messages.
    pub async fn wait_for_depth(&self, queue: &str, count: u32, timeout: Duration) {
        eventually(timeout, &format!("{queue} holds {count} message(s)"), || async {
            self.depth(queue).await == count
        })
        .await;
    }

    /// Plays consumers that fail holding every message of `queue`: each takes one on a
    /// channel of its own, then either dies (the channel closes without an ack) or rejects it
    /// back, in turn, until the broker itself has moved `dead_count` messages to
    /// `dead_queue` by the queue's delivery limit (quorum `x-delivery-limit`) and `queue` is
    /// empty; returns the deliveries taken. Neither way runs any failure handling of ours.
    pub async fn return_until_dead_lettered(&self, queue: &str, dead_queue: &str, dead_count: u32) -> u32 {
        let timeout = self.connection.call_timeout();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut deliveries = 0;
        loop {
            let channel = self.connection.open_channel().await.expect("opening a channel");
            let got = call(timeout, "basic.get", channel.basic_get(queue.into(), BasicGetOptions::default()))
                .await
                .expect("basic.get");
            let took = got.is_some();
            if let Some(message) = got {
                deliveries += 1;
                if deliveries % 2 == 1 {
                    let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                    call(timeout, "basic.nack", message.delivery.acker.nack(requeue)).await.expect("nack");
                }
            }
            call(timeout, "channel.close", channel.close(200, "consumer gone".into())).await.expect("channel.close");
            if !took {
                // Empty for now: either dead-lettered, or on its way back to the queue.
                if self.depth(dead_queue).await == dead_count && self.depth(queue).await == 0 {
                    return deliveries;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {deliveries} deliveries waiting until {dead_queue} holds {dead_count} message(s)"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Declares a queue of this connection bound to `exchange` by `routing_key`, as a
    /// subscriber of that exchange would, and returns its name. The queue is exclusive: the
    /// broker deletes it when this broker view's connection closes, even if the test fails.
    pub async fn subscribe(&self, exchange: &str, routing_key: &str) -> String {
        let timeout = self.connection.call_timeout();
        let options = QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() };
        let declared = self.channel.queue_declare("".into(), options, FieldTable::default());
        let queue = call(timeout, "queue.declare", declared).await.expect("queue.declare").name().to_string();
        let bound = self.channel.queue_bind(
            queue.as_str().into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        call(timeout, "queue.bind", bound).await.expect("queue.bind");
        queue
    }

    /// Deletes one queue with its messages and bindings, to play a topology that lost it.
    pub async fn delete_queue(&self, queue: &str) {
        let deleted = self.channel.queue_delete(queue.into(), QueueDeleteOptions::default());
        call(self.connection.call_timeout(), "queue.delete", deleted).await.expect("queue.delete");
    }

    pub async fn purge(&self, queue: &str) {
        let purged = self.channel.queue_purge(queue.into(), QueuePurgeOptions::default());
        call(self.connection.call_timeout(), "queue.purge", purged).await.expect("queue.purge");
    }

    /// Deletes the test's queues and exchanges.
    pub async fn delete(mut self) {
        self.topology.delete(&cleanup_config(&self.config)).await.expect("deleting the test topology");
        self.deleted = true;
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if !self.deleted {
            delete_topology_now(&self.config);
        }
    }
}

/// Deletes the topology of a test's prefix when dropped, so a test that fails half-way
/// leaves no queues behind.
#[derive(Debug)]
pub struct TopologyCleanup {
    config: RabbitConfig,
}

impl TopologyCleanup {
    pub fn new(config: &RabbitConfig) -> Self {
        Self { config: config.clone() }
    }
}

impl Drop for TopologyCleanup {
    fn drop(&mut self) {
        delete_topology_now(&self.config);
    }
}

/// How long one call of a cleanup may take. Tests keep 2 s so that outages show quickly,
/// but on a loaded machine deleting a quorum queue can take longer, and a cleanup that gives
/// up leaves the rest of the topology in the broker.
const CLEANUP_CALL_TIMEOUT_SECS: u64 = 60;

/// `config` (its prefix and retry delays name the queues) reaching the test broker
/// directly, not through any proxy the test used, with a cleanup's call timeout.
fn cleanup_config(config: &RabbitConfig) -> RabbitConfig {
    RabbitConfig {
        url: test_broker_url(),
        ca_file: None,
        call_timeout_secs: CLEANUP_CALL_TIMEOUT_SECS,
        ..config.clone()
    }
}

/// Deletes every exchange and queue of `config`'s topology on the test broker; from a
/// thread with a runtime of its own, since `drop` cannot await.
fn delete_topology_now(config: &RabbitConfig) {
    let config = cleanup_config(config);
    let prefix = config.prefix.clone();
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(Topology::new(&config).delete(&config))
    });
    if let Ok(Err(error)) = cleanup.join() {
        eprintln!("could not delete the test topology {prefix}: {error}");
    }
}

/// A TCP proxy in front of the broker (or the database) that a test can stop, restart, cut
/// or silence, to play network failures against real connections.
#[derive(Clone)]
pub struct TcpProxy {
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    addr: SocketAddr,
    target: String,
    state: Mutex<ProxyState>,
}

struct ProxyState {
    /// Cancelled to cut every connection made so far.
    links: CancellationToken,
    /// Cancelled to stop forwarding bytes on the connections made so far.
    forwarding: CancellationToken,
    /// New connections are held open but get no bytes through.
    silent: bool,
    /// The tasks forwarding the connections made so far (finished ones pruned on accept).
    link_tasks: Vec<JoinHandle<()>>,
    listener: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (random port) and forwards to the broker of `config`.
    pub async fn start(config: &RabbitConfig) -> Self {
        let uri: AMQPUri = config.url.expose_secret().parse().expect("a valid rabbitmq.url");
        Self::start_to(format!("{}:{}", uri.authority.host, uri.authority.port)).await
    }

    /// Listens on 127.0.0.1 (random port) and forwards to `target` (`host:port`), for
    /// services other than the broker.
    pub async fn start_to(target: String) -> Self {
        let socket = bind("127.0.0.1:0".parse().expect("an address"));
        let addr = socket.local_addr().expect("the proxy's address");
        let state = ProxyState {
            links: CancellationToken::new(),
            forwarding: CancellationToken::new(),
            silent: false,
            link_tasks: Vec::new(),
            listener: None,
        };
        let proxy = Self { shared: Arc::new(ProxyShared { addr, target, state: Mutex::new(state) }) };
        proxy.listen(socket);
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `config` with its URL pointing at this proxy (same credentials and vhost).
    pub fn proxied(&self, config: &RabbitConfig) -> RabbitConfig {
        let uri: AMQPUri = config.url.expose_secret().parse().expect("a valid rabbitmq.url");
        let user = &uri.authority.userinfo;
        let vhost = if uri.vhost == "/" { "%2f".to_owned() } else { uri.vhost.clone() };
        let url = format!("amqp://{}:{}@{}/{vhost}", user.username, user.password, self.shared.addr);
        RabbitConfig { url: SecretString::from(url), ..config.clone() }
    }

    /// Cuts every live connection and refuses new ones until [`TcpProxy::resume`].
    pub async fn stop(&self) {
        let (listener, links) = {
            let mut state = self.lock();
            state.links.cancel();
            state.links = CancellationToken::new();
            (state.listener.take(), std::mem::take(&mut state.link_tasks))
        };
        if let Some((stop, task)) = listener {
            stop.cancel();
            let _ = task.await;
        }
        // Once stopped, no byte passes: a link cancelled but still running could forward
        // what a client writes next, which then reaches the broker after the "outage".
        for link in links {
            let _ = link.await;
        }
    }

    /// Accepts and forwards again (after [`TcpProxy::stop`] or [`TcpProxy::black_hole`]);
    /// connections silenced by a black hole are cut.
    pub async fn resume(&self) {
        {
            let mut state = self.lock();
            if state.silent {
                state.silent = false;
                state.links.cancel();
                state.links = CancellationToken::new();
            }
            if state.listener.is_some() {
                return;
            }
        }
        self.listen(bind(self.shared.addr));
    }

    /// Cuts every live connection but keeps accepting new ones.
    pub fn cut_connections(&self) {
        let mut state = self.lock();
        state.links.cancel();
        state.links = CancellationToken::new();
    }

    /// Keeps every connection, live and new, open but lets no byte through: the broker
    /// seems alive to the socket but never answers.
    pub fn black_hole(&self) {
        let mut state = self.lock();
        state.silent = true;
        state.forwarding.cancel();
        state.forwarding = CancellationToken::new();
    }

    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listen(&self, socket: TcpSocket) {
        let listener = socket.listen(64).expect("the proxy listens");
        let stop = CancellationToken::new();
        let proxy = self.clone();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (links, forwarding, silent) = {
                    let state = proxy.lock();
                    (state.links.clone(), state.forwarding.clone(), state.silent)
                };
                let link = tokio::spawn(forward(client, proxy.shared.target.clone(), links, forwarding, silent));
                let mut state = proxy.lock();
                state.link_tasks.retain(|task| !task.is_finished());
                state.link_tasks.push(link);
            }
        });
        self.lock().listener = Some((stop, task));
    }
}

fn bind(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("a socket");
    // The port of a stopped proxy is bound again on resume, while old connections may
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("binding the proxy");
    socket
}

async fn forward(
    mut client: TcpStream,
    target: String,
    links: CancellationToken,
    forwarding: CancellationToken,
    silent: bool,
) {
    if silent {
        links.cancelled().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(&target).await else { return };
    tokio::select! {
        () = links.cancelled() => return,
        () = forwarding.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
    }
    // Silenced: both sockets stay open, unread, until the connection is cut.
    links.cancelled().await;
    drop((client, server));
}

/// Credentials of the test store `scripts/test` starts (a single Garage node), unless the
/// `STAYLER_TEST_S3_*` variables name another.
const DEFAULT_S3_ENDPOINT: &str = "http://127.0.0.1:39900";
const DEFAULT_S3_BUCKET: &str = "stayler-test";
const DEFAULT_S3_REGION: &str = "garage";
const DEFAULT_S3_ACCESS_KEY_ID: &str = "GK5354a7e4c0ffee0000000001";
const DEFAULT_S3_SECRET: &str = "5354a7e4c0ffee00000000000000000000000000000000000000000000000001";

/// The s3 settings of one test: the test store's bucket under a prefix of the test's own.
pub fn s3_config() -> crate::config::S3Config {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    crate::config::S3Config {
        endpoint: var("STAYLER_TEST_S3_ENDPOINT", DEFAULT_S3_ENDPOINT),
        bucket: var("STAYLER_TEST_S3_BUCKET", DEFAULT_S3_BUCKET),
        region: var("STAYLER_TEST_S3_REGION", DEFAULT_S3_REGION),
        access_key_id: var("STAYLER_TEST_S3_ACCESS_KEY_ID", DEFAULT_S3_ACCESS_KEY_ID),
        secret_access_key: SecretString::from(var("STAYLER_TEST_S3_SECRET_ACCESS_KEY", DEFAULT_S3_SECRET)),
        prefix: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        request_timeout_secs: 10,
        connect_timeout_secs: 2,
        ..crate::config::S3Config::default()
    }
}

/// A test's objects in the test bucket: removed when dropped, even when the test fails.
pub struct TestBucket {
    pub config: crate::config::S3Config,
}

impl TestBucket {
    pub fn new() -> Self {
        Self { config: s3_config() }
    }

    /// Storage on the s3 backend, staging under `staging`.
    pub async fn storage(&self, staging: &std::path::Path) -> crate::storage::Storage {
        crate::storage::Storage::open_s3(staging, &self.config).await.expect("opening the test bucket")
    }
}

impl Default for TestBucket {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let config = self.config.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let staging = tempfile::tempdir()?;
                crate::storage::Storage::open_s3(staging.path(), &config).await?.remove_all_objects().await
            })
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("could not remove the test objects under {}: {error}", self.config.prefix);
        }
    }
}
