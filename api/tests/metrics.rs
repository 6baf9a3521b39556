//! `GET /metrics`: Prometheus text that parses, requests labelled by route template (never by
//! path), file serving and signed-URL checks counted, rate-limit denials by group, the scrape
//! token, the separate port of `prometheus.apiListen`; and `stayler-api health`, run as the
//! binary against a running API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api::AppState;
use api::test_support::{TestApp, images, json, test_config};

use crate::cli::{dev_config, stayler_api};
use reqwest::StatusCode;
use secrecy::SecretString;
use shared::storage::Storage;
use shared::test_support::TopologyCleanup;
use sqlx::PgPool;

/// One sample of the text format: family-level name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly (what this exporter writes: no timestamps),
/// panicking on any line that is neither a comment, a blank nor a well-formed sample.
fn parse(text: &str) -> Vec<Sample> {
    let is_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
    };
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap(), words.next().unwrap_or(""));
            assert!(matches!(kind, "HELP" | "TYPE"), "a comment is HELP or TYPE: {line}");
            assert!(is_name(name), "a family name: {line}");
            if kind == "TYPE" {
                let kind = words.next().unwrap_or("");
                assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("closed labels: {line}"));
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("key=\"value\": {line}"));
                    assert!(is_name(key), "a label name: {line}");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => value.push(chars.next().expect("an escaped character").1),
                            Some((at, '"')) => break at,
                            Some((_, c)) => value.push(c),
                            None => panic!("an unterminated label value: {line}"),
                        }
                    };
                    labels.insert(key.to_owned(), value);
                    rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "a metric name: {line}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn metrics(app: &TestApp) -> Vec<Sample> {
    let response = scrape(app, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse(&response.text().await.unwrap())
}

fn labels_of<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a BTreeMap<String, String>> {
    samples.iter().filter(|sample| sample.name == name).map(|sample| &sample.labels).collect()
}

fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| labels.iter().all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value)))
        .map(|sample| sample.value)
        .sum()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn metrics_parse_and_label_requests_by_route_template_never_by_path(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "look.jpg", &[]).await;
    assert_eq!(app.get_image(&token, &id).await.status(), StatusCode::OK);
    let issued = app.client.get(app.url(&format!("/storage/images/{id}/signed-url"))).bearer_auth(&token);
    let url = json(issued.send().await.unwrap()).await["url"].as_str().unwrap().to_owned();
    let signed = url.strip_prefix(&app.config.server.base_url).unwrap().to_owned();
    assert_eq!(app.client.get(app.url(&signed)).send().await.unwrap().status(), StatusCode::OK);
    // Another first character of the signature: still well-formed, no longer matching.
    let (unsigned, signature) = signed.rsplit_once('.').unwrap();
    let other = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{unsigned}.{other}{}", &signature[1..]);
    assert_eq!(app.client.get(app.url(&tampered)).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let missing = app.url("/storage/nowhere/at/all");
    assert_eq!(app.client.get(missing).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let samples = metrics(&app).await;
    let routes: BTreeSet<&str> =
        labels_of(&samples, "stayler_http_requests_total").into_iter().map(|labels| labels["route"].as_str()).collect();
    for template in
        ["/storage/images", "/storage/images/:id", "/storage/images/:id/signed-url", "/storage/signed/:path"]
    {
        assert!(routes.contains(template), "{template} in {routes:?}");
    }
    assert!(routes.contains("unmatched"), "a path no route matched has one label: {routes:?}");
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(!value.contains(&id), "no label names an image: {} {:?}", sample.name, sample.labels);
        }
    }
    let served = [("route", "/storage/signed/:path"), ("method", "GET"), ("status", "200")];
    assert!(total(&samples, "stayler_http_requests_total", &served) >= 1.0);
    let uploaded = [("route", "/storage/images"), ("method", "POST"), ("status", "201")];
    assert!(total(&samples, "stayler_http_requests_total", &uploaded) >= 1.0);
    assert!(total(&samples, "stayler_http_request_bytes_total", &[("route", "/storage/images")]) > 0.0);
    let sent = total(&samples, "stayler_http_response_bytes_total", &[("route", "/storage/signed/:path")]);
    assert!(sent >= images::jpeg(32, 24).len() as f64, "the served file's bytes are counted: {sent}");
    let latency = [("route", "/storage/images/:id"), ("method", "GET"), ("le", "+Inf")];
    assert!(total(&samples, "stayler_http_request_duration_seconds_bucket", &latency) >= 1.0);
    assert!(total(&samples, "stayler_signed_url_verifications_total", &[("result", "valid")]) >= 1.0);
    assert!(total(&samples, "stayler_signed_url_verifications_total", &[("result", "bad_signature")]) >= 1.0);
    assert!(total(&samples, "stayler_db_pool_max_connections", &[]) >= 1.0);
    assert_eq!(total(&samples, "stayler_build_info", &[("service", "api")]), 1.0);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn rate_limit_denials_are_counted_by_group(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.rate_limit.enabled = true;
        config.rate_limit.reads.per_second = 0.001;
        config.rate_limit.reads.burst = 1;
    })
    .await;
    let (_, token) = app.user();
    let statuses = [app.list_images(&token, &[]).await.status(), app.list_images(&token, &[]).await.status()];
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    let samples = metrics(&app).await;
    assert!(total(&samples, "stayler_rate_limit_denials_total", &[("group", "reads")]) >= 1.0);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_scrape_token_keeps_the_metrics_from_everyone_else(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.prometheus.scrape_token = SecretString::from("dev-scrape-token");
    })
    .await;
    assert_eq!(scrape(&app, None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&app, Some("dev-scrape-toke")).await.status(), StatusCode::UNAUTHORIZED);
    let (_, user) = app.user();
    assert_eq!(scrape(&app, Some(&user)).await.status(), StatusCode::UNAUTHORIZED, "an API token is no scrape token");
    let allowed = scrape(&app, Some("dev-scrape-token")).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert!(allowed.text().await.unwrap().contains("stayler_build_info"));
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn metrics_move_to_a_port_of_their_own_or_are_off(pool: PgPool) {
    shared::test_support::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), &pool).await;
    config.prometheus.api_listen = "127.0.0.1:0".to_owned();
    let _topology = TopologyCleanup::new(&config.rabbitmq);
    let config = Arc::new(config);
    let storage = Storage::from_config(&config.storage).await.unwrap();
    let running = api::start_with(AppState::new(pool.clone(), storage, config)).await.unwrap();
    running.relay_started().await;
    let client = reqwest::Client::new();
    let own_port = client.get(format!("http://{}/metrics", running.addr)).send().await.unwrap();
    assert_eq!(own_port.status(), StatusCode::NOT_FOUND, "not on the API's port");
    let metrics_addr = running.metrics_addr.expect("a port of their own");
    let scraped = client.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(!parse(&scraped.text().await.unwrap()).is_empty());
    let alive = client.get(format!("http://{metrics_addr}/healthz")).send().await.unwrap();
    assert_eq!((alive.status(), alive.text().await.unwrap().as_str()), (StatusCode::OK, "ok\n"));
    running.stop().await.unwrap();

    let off = TestApp::spawn_with(pool, |config| config.prometheus.enabled = false).await;
    assert_eq!(scrape(&off, None).await.status(), StatusCode::NOT_FOUND);
    off.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_health_command_asks_the_running_api_and_fails_once_it_is_gone(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let port = app.base_url.rsplit(':').next().unwrap().to_owned();
    let config = dev_config();
    let ask = {
        let (config, port) = (config.clone(), port.clone());
        move || stayler_api(&["health", "--config", &config], &[("STAYLER_SERVER__PORT", &port)])
    };
    let healthy = tokio::task::spawn_blocking(ask).await.unwrap();
    let out = String::from_utf8_lossy(&healthy.stdout);
    assert!(healthy.status.success(), "{out}{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(out.starts_with("healthy: HTTP/1.1 200"), "{out}");
    app.stop().await;

    let gone = tokio::task::spawn_blocking(move || {
        stayler_api(&["health", "--config", &config], &[("STAYLER_SERVER__PORT", &port)])
    })
    .await
    .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("the API is not healthy") && err.contains("nothing answers"), "{err}");
}
