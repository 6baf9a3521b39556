//! `stayler-scheduler health`, run as the binary: healthy while a scheduler serves its
//! metrics port, failing with the reason once it is gone or when the port is off; and the
//! port's `/metrics` carries the slots the scheduler fired.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use secrecy::SecretString;
use shared::test_support::{TopologyCleanup, database_url, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn dev_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.yaml").display().to_string()
}

/// `stayler-scheduler health` with the development configuration and `schedulerListen`.
async fn health(listen: &str) -> Output {
    let listen = listen.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_stayler-scheduler"))
            .args(["health", "--config", &dev_config()])
            .env_clear()
            .env("STAYLER_PROMETHEUS__SCHEDULER_LISTEN", listen)
            .output()
            .expect("running stayler-scheduler health")
    })
    .await
    .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_health_command_asks_the_scheduler_s_metrics_port_and_says_why_it_fails(pool: PgPool) {
    shared::test_support::init_logging();
    let mut config = shared::test_support::config();
    config.database.url = SecretString::from(database_url(&pool).await);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.prometheus.scheduler_listen = free.to_string();
    config.scheduler.health_check = "* * * * *".to_owned();
    let _topology = TopologyCleanup::new(&config.rabbitmq);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(scheduler::run(config.clone(), shutdown.clone()));

    let client = reqwest::Client::new();
    let metrics = format!("http://{free}/metrics");
    eventually(Duration::from_secs(30), "the scheduler has fired its health check", || async {
        let Ok(answer) = client.get(&metrics).send().await else { return false };
        let text = answer.text().await.unwrap_or_default();
        let value = |series: &str| {
            let line = text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
            line.and_then(|value| value.parse::<f64>().ok())
        };
        value("stayler_scheduler_slots_fired_total{job=\"health_check\"}").is_some_and(|fired| fired >= 1.0)
            && value("stayler_scheduler_slots_missed_total{job=\"health_check\"}").is_some()
    })
    .await;
    let healthy = health(&free.to_string()).await;
    let out = String::from_utf8_lossy(&healthy.stdout);
    assert!(healthy.status.success(), "{out}{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(out.starts_with("healthy: HTTP/1.1 200"), "{out}");

    shutdown.cancel();
    running.await.unwrap().unwrap();
    let gone = health(&free.to_string()).await;
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("the scheduler is not healthy") && err.contains("nothing answers"), "{err}");

    let off = health("").await;
    assert_eq!(off.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&off.stderr).contains("the scheduler's metrics port is off"));
}
