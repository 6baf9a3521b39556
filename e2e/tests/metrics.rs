//! Prometheus metrics of the API, a worker and a scheduler running together: after an upload
//! has been processed, every metric the Grafana dashboard (`deploy/grafana/`) and the alert
//! rules (`deploy/prometheus/alerts.yml`) name is exported, and every exported family is
//! documented, so none of them can drift from the code; and `stayler-worker health` asks
//! the running worker's metrics port.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use api::test_support::TestApp;
use e2e::{TestWorker, settled, worker_binary, worker_environment};
use reqwest::StatusCode;
use shared::test_support::eventually;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A loopback address with a port nothing listens on now.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The `stayler_*` names in `text`, histogram series (`_bucket`, `_sum`, `_count`) by their
/// family's name when `families` has it.
fn names_in(text: &str, families: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("stayler_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| families.contains(*base)))
            .map_or(name.clone(), str::to_owned);
        names.insert(family);
    }
    names
}

/// The families a `/metrics` text declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.text().await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported_and_documented(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        // On, with the default limits: the denials' series exist from the start.
        config.rate_limit.enabled = true;
        config.prometheus.worker_listen = free_address();
        config.prometheus.scheduler_listen = free_address();
        // One job is enough to see the scheduler's series; a backup would only slow the test.
        config.storage.backup_policy.enabled = false;
        config.storage.retention_policy.cleanup_schedule.clear();
        (config.scheduler.sweep, config.scheduler.signed_url_cleanup, config.scheduler.file_audit) = Default::default();
        config.scheduler.metrics_rollup.clear();
    })
    .await;
    let config = (*app.config).clone();
    let worker = TestWorker::start(&config).await;
    let stop_scheduler = CancellationToken::new();
    let scheduler = tokio::spawn(scheduler::run(config.clone(), stop_scheduler.clone()));

    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "look.jpg", &[]).await;
    settled(&app, "the upload is processed").await;
    let issued = app.client.get(app.url(&format!("/storage/images/{id}/signed-url"))).bearer_auth(&token);
    let url =
        issued.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let signed = url.strip_prefix(&app.config.server.base_url).unwrap().to_owned();
    assert_eq!(app.client.get(app.url(&signed)).send().await.unwrap().status(), StatusCode::OK);

    let client = reqwest::Client::new();
    let scheduler_health = format!("http://{}/healthz", config.prometheus.scheduler_listen);
    eventually(Duration::from_secs(30), "the scheduler is ready", || async {
        client.get(&scheduler_health).send().await.is_ok_and(|answer| answer.status() == StatusCode::OK)
    })
    .await;
    let texts = [
        scrape(&client, &app.url("/metrics")).await,
        scrape(&client, &format!("http://{}/metrics", config.prometheus.worker_listen)).await,
        scrape(&client, &format!("http://{}/metrics", config.prometheus.scheduler_listen)).await,
    ];
    let exported: BTreeSet<String> = texts.iter().flat_map(|text| families(text)).collect();

    let dashboard = std::fs::read_to_string(repository().join("deploy/grafana/stayler-storage.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut expressions = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push_str(target["expr"].as_str().unwrap());
            expressions.push('\n');
        }
    }
    let alerts = std::fs::read_to_string(repository().join("deploy/prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> =
        names_in(&expressions, &exported).union(&names_in(&alerts, &exported)).cloned().collect();
    assert!(used.len() > 25, "the dashboard and the alerts were read: {used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "named by the dashboard or the alerts but not exported: {missing:?}");

    let operations = std::fs::read_to_string(repository().join("docs/operations.md")).unwrap();
    let documented = names_in(&operations, &exported);
    let stayler: BTreeSet<String> = exported.iter().filter(|name| name.starts_with("stayler_")).cloned().collect();
    let undocumented: Vec<&String> = stayler.difference(&documented).collect();
    assert!(undocumented.is_empty(), "exported but not in docs/operations.md: {undocumented:?}");

    // The worker's own figures are on its port: the thumbnails it made, its stages timed.
    let worker_text = &texts[1];
    assert!(worker_text.contains("stayler_jobs_total{queue=\"thumbnails\",outcome=\"succeeded\"} "), "{worker_text}");
    assert!(worker_text.contains("stayler_thumbnail_stage_duration_seconds_bucket{stage=\"decode\""));
    assert!(worker_text.contains("stayler_queue_consumers{queue=\"thumbnails\"} "));

    stop_scheduler.cancel();
    scheduler.await.unwrap().unwrap();
    worker.stop().await;
    app.stop().await;
}

fn stayler_worker_health(config: &shared::config::Config, listen: &str) -> Output {
    Command::new(worker_binary())
        .arg("health")
        .env_clear()
        .envs(worker_environment(config))
        .env("STAYLER_PROMETHEUS__WORKER_LISTEN", listen)
        .output()
        .expect("running stayler-worker health")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_worker_health_command_asks_its_metrics_port_and_says_why_it_fails(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut config = (*app.config).clone();
    config.prometheus.worker_listen = free_address().replace("127.0.0.1", "0.0.0.0");
    let worker = TestWorker::start(&config).await;
    let listen = config.prometheus.worker_listen.clone();
    let ask = |listen: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || stayler_worker_health(&config, &listen))
    };

    let healthy = ask(listen.clone()).await.unwrap();
    let out = String::from_utf8_lossy(&healthy.stdout);
    assert!(healthy.status.success(), "{out}{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(out.starts_with("healthy: HTTP/1.1 200"), "{out}");

    worker.stop().await;
    let gone = ask(listen).await.unwrap();
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("the worker is not healthy") && err.contains("nothing answers"), "{err}");

    let off = ask(String::new()).await.unwrap();
    assert_eq!(off.status.code(), Some(1));
    let err = String::from_utf8_lossy(&off.stderr);
    assert!(err.contains("the worker's metrics port is off"), "{err}");
    app.stop().await;
}
