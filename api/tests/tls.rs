//! The API with every backend over verified TLS: a throwaway PostgreSQL with `ssl = on`
//! (`sslmode=verify-full`), the test broker behind a proxy that ends TLS (`amqps://`) and a
//! Redis that speaks only TLS (`rediss://`), all with certificates of the test's own CA given
//! as `caFile`s; and a shared rate limit that falls back to in-process counting when Redis's
//! certificate is not from the CA it trusts.

use std::net::IpAddr;
use std::time::Duration;

use api::rate_limit::gcra::Limit;
use api::rate_limit::redis::{RedisLimiter, RedisSettings};
use api::rate_limit::{ClientKey, Group};
use api::test_support::TestApp;
use reqwest::StatusCode;
use secrecy::SecretString;
use shared::broker::{BrokerConnection, JobQueue, Topology};
use shared::config::{DatabaseConfig, RabbitConfig, RouteLimit};
use shared::test_support::tls::{TestCertificates, TlsPostgres, TlsProxy, TlsRedis};
use shared::test_support::{DEFAULT_RABBITMQ_URL, eventually};
use uuid::Uuid;

/// The test broker's URL.
fn broker_url() -> String {
    std::env::var("STAYLER_TEST_RABBITMQ_URL").unwrap_or_else(|_| DEFAULT_RABBITMQ_URL.to_owned())
}

/// A connection to the TLS-only Redis that trusts `certificates`' CA.
async fn redis_over_tls(redis: &TlsRedis, certificates: &TestCertificates) -> ::redis::aio::MultiplexedConnection {
    let ca = std::fs::read(&certificates.ca_file).unwrap();
    let tls = ::redis::TlsCertificates { client_tls: None, root_cert: Some(ca) };
    let client = ::redis::Client::build_with_tls(redis.url(), tls).unwrap();
    client.get_multiplexed_async_connection().await.expect("Redis over TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stores_queues_and_limits_with_postgresql_rabbitmq_and_redis_over_verified_tls() {
    let certificates = TestCertificates::new();
    let ca_file = Some(certificates.ca_file.clone());
    let cluster = TlsPostgres::start(&certificates);
    let proxy = TlsProxy::for_test_broker(&certificates).await;
    let redis = TlsRedis::start(&certificates);

    let database = DatabaseConfig {
        url: SecretString::from(cluster.url("verify-full")),
        ca_file: ca_file.clone(),
        ..DatabaseConfig::default()
    };
    // The binaries' pool constructor: connects over TLS and migrates.
    let pool = shared::db::connect(&database).await.expect("PostgreSQL over TLS");
    let prefix = format!("test-tls-{}", Uuid::new_v4().simple());
    let app = TestApp::spawn_with(pool.clone(), |config| {
        config.database = database.clone();
        config.rabbitmq = proxy.amqps(&config.rabbitmq, ca_file.as_deref());
        let limits = &mut config.rate_limit;
        limits.enabled = true;
        limits.reads = RouteLimit { enabled: true, shared: true, per_second: 0.1, burst: 2 };
        limits.redis_url = SecretString::from(redis.url());
        limits.redis_ca_file = ca_file.clone();
        limits.redis_key_prefix = prefix.clone();
        limits.redis_timeout_ms = 2_000;
        config.validate().expect("a valid configuration");
    })
    .await;
    let (user, token) = app.user();

    app.upload_image(&token, "user", "look.jpg", &[]).await;
    let plain = RabbitConfig { url: SecretString::from(broker_url()), ca_file: None, ..app.config.rabbitmq.clone() };
    let thumbnails = Topology::new(&plain).queue(JobQueue::Thumbnails);
    let broker = BrokerConnection::open(&plain, "tls test").await.unwrap();
    eventually(Duration::from_secs(10), "the relay published the upload over amqps", || async {
        broker.queue_depth(&thumbnails).await.unwrap().messages == 1
    })
    .await;
    broker.close().await;

    for _ in 0..2 {
        assert_eq!(app.get_image(&token, &Uuid::now_v7().to_string()).await.status(), StatusCode::NOT_FOUND);
    }
    let limited = app.get_image(&token, &Uuid::now_v7().to_string()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let mut connection = redis_over_tls(&redis, &certificates).await;
    let counted: i64 =
        ::redis::cmd("EXISTS").arg(format!("{prefix}:reads:sub:{user}")).query_async(&mut connection).await.unwrap();
    assert_eq!(counted, 1, "the limit was counted in Redis over TLS");

    let (encrypted, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE ssl), count(*) FILTER (WHERE NOT ssl) \
         FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE backend_type = 'client backend'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(encrypted >= 2 && plain == 0, "every session is encrypted: {encrypted} encrypted, {plain} plain");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_whose_certificate_is_not_from_the_trusted_ca_is_not_used() {
    let certificates = TestCertificates::new();
    let redis = TlsRedis::start(&certificates);
    let other = TestCertificates::new();
    let limiter = |ca: &TestCertificates| {
        RedisLimiter::new(&RedisSettings {
            url: &redis.url(),
            ca_certificates: Some(std::fs::read(&ca.ca_file).unwrap()),
            key_prefix: "test-tls",
            timeout: Duration::from_secs(2),
            retry_after_failure: Duration::from_secs(60),
        })
        .unwrap()
    };
    let client = ClientKey::from_ip(IpAddr::from([192, 0, 2, 7]));
    let limit = Limit::new(1.0, 5);

    let trusted = limiter(&certificates).check(Group::Reads, limit, &client).await;
    assert!(trusted.is_some_and(|decision| decision.allowed), "decided in Redis over TLS");
    let refused = limiter(&other).check(Group::Reads, limit, &client).await;
    assert!(refused.is_none(), "a Redis of another CA is refused: the caller decides in process");
}
