//! TLS to the backends against real servers: a throwaway PostgreSQL cluster with `ssl = on`
//! and a certificate of the test's own CA, and the test broker behind a proxy that ends TLS
//! (`amqps://`). The pool constructor and the broker connection of the binaries verify the
//! server against `caFile`, and refuse a server their roots do not vouch for.

use std::time::Duration;

use secrecy::SecretString;
use shared::broker::{BrokerConnection, JobQueue, Publisher};
use shared::config::{Config, DatabaseConfig};
use shared::events::{Envelope, ImageUploaded};
use shared::model::ImageId;
use shared::test_support::tls::{TestCertificates, TlsPostgres, TlsProxy};
use shared::test_support::{TestBroker, rabbit_config};

fn database(url: String, ca_file: Option<&std::path::Path>) -> DatabaseConfig {
    DatabaseConfig {
        url: SecretString::from(url),
        max_connections: 2,
        migrate: true,
        acquire_timeout_secs: 5,
        ca_file: ca_file.map(ToOwned::to_owned),
    }
}

async fn encrypted(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls_migrates_and_answers_and_an_unknown_ca_is_refused() {
    let certificates = TestCertificates::new();
    let cluster = TlsPostgres::start(&certificates);

    let verified = database(cluster.url("verify-full"), Some(&certificates.ca_file));
    let pool = shared::db::connect(&verified).await.expect("connecting with verify-full and the CA file");
    assert!(encrypted(&pool).await, "the session is encrypted");
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_files").fetch_one(&pool).await.unwrap();
    assert_eq!(files, 0, "migrations ran over TLS");
    pool.close().await;

    let without_ca = shared::db::connect(&database(cluster.url("verify-full"), None)).await.unwrap_err();
    assert!(without_ca.to_string().contains("invalid peer certificate"), "{without_ca}");
    let other_ca = TestCertificates::new();
    let wrong_ca = shared::db::connect(&database(cluster.url("verify-ca"), Some(&other_ca.ca_file))).await.unwrap_err();
    assert!(wrong_ca.to_string().contains("invalid peer certificate"), "{wrong_ca}");
    assert!(shared::db::is_unavailable(&wrong_ca), "a refused server is a database that cannot be reached");

    let unverified = shared::db::connect(&database(cluster.url("require"), None)).await.unwrap();
    assert!(encrypted(&unverified).await, "require encrypts without verifying");
    unverified.close().await;
    let plain = shared::db::connect(&database(cluster.url("disable"), None)).await.unwrap();
    assert!(!encrypted(&plain).await, "disable stays plain");
    plain.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_publishes_and_consumes_with_the_ca_file_and_refuses_a_broker_of_another_ca() {
    let certificates = TestCertificates::new();
    let proxy = TlsProxy::for_test_broker(&certificates).await;
    let config = proxy.amqps(&rabbit_config(), Some(&certificates.ca_file));
    let broker = TestBroker::start(&config).await;
    let publisher = Publisher::new(&config, "tls test publisher");

    let envelope = Envelope::new(ImageUploaded { image_id: ImageId::new() });
    let body = serde_json::to_vec(&envelope).unwrap();
    publisher.publish_event(envelope.id, "image.uploaded", body.clone()).await.expect("published over TLS");
    let queue = broker.topology.queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&queue, 1, Duration::from_secs(10)).await;
    let taken = broker.take_all(&queue).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].body, body, "consumed over TLS");
    publisher.close().await;

    let other_ca = TestCertificates::new();
    for (ca_file, what) in [(Some(other_ca.ca_file.as_path()), "another CA"), (None, "the system's roots alone")] {
        let error = BrokerConnection::open(&proxy.amqps(&config, ca_file), "tls test").await.unwrap_err();
        assert!(error.to_string().contains("invalid peer certificate"), "with {what}: {error}");
    }
    broker.delete().await;
}

#[test]
fn start_up_refuses_a_ca_file_that_cannot_be_read_or_holds_no_certificate_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    let base = "storage:\n  signedURLKey: dev-key\nauth:\n  jwtSecret: dev-secret\n";
    let database = "database:\n  url: postgres://db/stayler?sslmode=verify-full\n";
    let rabbitmq = "rabbitmq:\n  url: amqps://mq/%2f\n";
    let redis = "rateLimit:\n  redisUrl: rediss://redis:6380\n";
    for file in [&empty, &missing] {
        let path = file.display();
        for (key, yaml) in [
            ("database.caFile", format!("{base}{database}  caFile: {path}\n{rabbitmq}")),
            ("rabbitmq.caFile", format!("{base}{database}{rabbitmq}  caFile: {path}\n")),
            ("rateLimit.redisCaFile", format!("{base}{database}{rabbitmq}{redis}  redisCaFile: {path}\n")),
        ] {
            let error = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(error.contains(key) && error.contains(&path.to_string()), "{key}: {error}");
        }
    }

    let certificates = TestCertificates::new();
    let ca = certificates.ca_file.display();
    let valid = format!("{base}{database}  caFile: {ca}\n{rabbitmq}  caFile: {ca}\n{redis}  redisCaFile: {ca}\n");
    let summary = Config::from_yaml(&valid).unwrap().summary();
    assert!(summary.contains("TLS, certificate and host name verified, CA file"), "{summary}");
    for (key, yaml) in [
        (
            "database.caFile",
            format!("{base}database:\n  url: postgres://db/x?sslmode=require\n  caFile: {ca}\n{rabbitmq}"),
        ),
        ("rabbitmq.caFile", format!("{base}{database}rabbitmq:\n  url: amqp://mq/%2f\n  caFile: {ca}\n")),
        (
            "rateLimit.redisCaFile",
            format!("{base}{database}{rabbitmq}rateLimit:\n  redisUrl: redis://r\n  redisCaFile: {ca}\n"),
        ),
    ] {
        let error = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(error.contains(key), "a CA file its URL does not use is refused: {error}");
    }
}
