//! Health checks and metric roll-ups through their real entry points: jobs enqueued in the
//! outbox as the scheduler does, the API relay, RabbitMQ, the worker, PostgreSQL, and the
//! health and metrics endpoints.

use std::time::Duration;

use api::test_support::{TestApp, images};
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, check, run_health_check};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::broker::JobQueue;
use shared::db::{outbox, storage_files};
use shared::events::MetricsRollupRequested;
use shared::health::RUN_CHECKS;
use shared::model::{HealthStatus, ImageId};
use shared::test_support::{TestBroker, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn upload(app: &TestApp, token: &str, image_type: &str, bytes: Vec<u8>) -> String {
    let response = app.upload(token, image_type, "photo.jpg", bytes, &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn wait_verified(app: &TestApp, ids: &[String]) {
    eventually(TIMEOUT, "the images are processed", || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM storage_files
             WHERE id::text = ANY($1) AND checksum_status = 'verified' AND thumbnail_status = 'ready'",
        )
        .bind(ids)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        done == ids.len() as i64
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_health_run_records_every_check_and_the_endpoint_sums_them_up(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (status, body) = app.health(None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded", "no check has run yet: {body}");

    let worker = TestWorker::start(&app.config).await;
    let ids = vec![
        upload(&app, &token, "user", images::jpeg(320, 240)).await,
        upload(&app, &token, "user", images::png(200, 100)).await,
    ];
    wait_verified(&app, &ids).await;
    // The step that finished each image queued its `image.processed`: once the relay has
    // published those, the only event left for the outbox check to see is its own job's.
    eventually(TIMEOUT, "the relay has published every event", || async {
        let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        unpublished == 0
    })
    .await;
    let rows = run_health_check(&app).await;

    for check_type in RUN_CHECKS {
        let (status, details) = check(&rows, check_type);
        assert_eq!(status, "ok", "{check_type}: {details}");
        assert_eq!(details["problems"], serde_json::json!([]), "{check_type}");
    }
    let (_, database) = check(&rows, "database");
    assert_eq!(database["reachable"], true);
    let (_, broker) = check(&rows, "broker");
    let queues = broker["queues"].as_array().unwrap();
    assert_eq!(queues.len(), JobQueue::ALL.len(), "one entry per job queue, as before");
    let thumbnails = queues.iter().find(|q| q["job"] == "thumbnails").unwrap();
    assert!(thumbnails["consumers"].as_u64().unwrap() >= 1, "{thumbnails}");
    assert_eq!(thumbnails["dead_letters"], 0);
    assert_eq!(thumbnails["dead_letter_queue"]["messages"], 0, "{thumbnails}");
    assert_eq!(thumbnails["dead_letter_queue"]["consumers"], 0, "{thumbnails}");
    let retry_queues = broker["retry_queues"].as_array().unwrap();
    assert_eq!(retry_queues[0]["delay_secs"], 1, "{broker}");
    assert_eq!(retry_queues[0]["consumers"], 0, "the broker moves them, no worker: {broker}");
    // Depth and consumers of every queue the topology declares, each once.
    let mut reported: Vec<&str> = Vec::new();
    for entry in queues.iter().flat_map(|q| [q, &q["dead_letter_queue"]]).chain(retry_queues) {
        assert!(entry["messages"].is_u64() && entry["consumers"].is_u64(), "{entry}");
        reported.push(entry["queue"].as_str().unwrap());
    }
    let topology = shared::broker::Topology::new(&app.config.rabbitmq);
    assert_eq!(reported, topology.queue_names(), "{broker}");
    let (_, disk) = check(&rows, "disk");
    assert!(disk["storage"]["free_bytes"].as_u64().unwrap() > 0, "{disk}");
    assert!(disk["backups"]["total_bytes"].as_u64().unwrap() > 0, "{disk}");
    let (_, store) = check(&rows, "store");
    assert_eq!((store["backend"].as_str(), store["reachable"].as_bool()), (Some("local"), Some(true)), "{store}");
    let (_, outbox) = check(&rows, "outbox");
    assert!(
        outbox["unpublished"].as_i64().unwrap() <= 1,
        "at most the health job's own event, published but not yet marked: {outbox}"
    );
    let (_, integrity) = check(&rows, "integrity");
    assert_eq!(integrity["sampled"], 2, "{integrity}");
    assert_eq!(integrity["matched"], 2, "{integrity}");

    let (status, body) = app.health(None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["last_check_at"].is_string());
    assert!(body.get("details").is_none(), "details are for admins: {body}");
    let (_, body) = app.health(Some(&token)).await;
    assert!(body.get("details").is_none(), "a user's token shows no details: {body}");

    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let details = &body["details"];
    let live_disk = details["live"].as_array().unwrap().iter().find(|c| c["check_type"] == "disk").unwrap();
    assert!(live_disk["details"]["storage"]["free_bytes"].as_u64().unwrap() > 0, "{live_disk}");
    assert_eq!(details["problems"], serde_json::json!([]), "{body}");
    let recorded: Vec<&str> =
        details["checks"].as_array().unwrap().iter().map(|c| c["check_type"].as_str().unwrap()).collect();
    assert_eq!(
        recorded,
        ["backup", "broker", "disk", "integrity", "outbox", "store"],
        "the live database check replaces its record"
    );
    let live: Vec<&str> =
        details["live"].as_array().unwrap().iter().map(|c| c["check_type"].as_str().unwrap()).collect();
    assert_eq!(live, ["database", "disk", "broker"]);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn dead_letters_and_overdue_backups_make_the_service_degraded_and_say_why(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.health.backup_max_age_hours = 1).await;
    let worker = TestWorker::start(&app.config).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    // A PNG whose pixel data is garbage: its thumbnail job is given up.
    let mut broken = images::png(400, 300);
    let middle = broken.len() / 2;
    broken[middle - 200..middle + 200].fill(0x5A);
    upload(&app, &token, "user", broken).await;
    broker.wait_for_depth(&broker.topology.dead_letter_queue(JobQueue::Thumbnails), 1, TIMEOUT).await;
    // An image uploaded two hours ago and never backed up.
    let old = upload(&app, &token, "user", images::jpeg(64, 64)).await;
    sqlx::query("UPDATE storage_files SET created_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();

    let rows = run_health_check(&app).await;
    let (status, details) = check(&rows, "broker");
    assert_eq!(status, "degraded");
    assert!(details["problems"].to_string().contains("thumbnails.dead"), "{details}");
    let (status, details) = check(&rows, "backup");
    assert_eq!(status, "degraded");
    assert!(details["problems"].to_string().contains("no backup has completed yet"), "{details}");

    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "degraded still serves");
    assert_eq!(body["status"], "degraded");
    let problems = body["details"]["problems"].to_string();
    assert!(problems.contains("broker: ") && problems.contains("backup: "), "{problems}");

    let failures: Vec<(String, bool)> =
        sqlx::query_as("SELECT queue, final FROM job_failures ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert!(failures.contains(&("thumbnails".to_owned(), true)), "the given-up attempt is logged: {failures:?}");
    worker.stop().await;
    broker.delete().await;
}

/// Uploads four JPEGs (A, B, C, D), waits until a worker has verified them, and dates their
/// last checks an hour ago in upload order: two workers verify in any order, and the
/// integrity sample goes by that order. Returns their ids, A first.
async fn four_verified_in_upload_order(app: &TestApp) -> Vec<String> {
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let mut ids = Vec::new();
    for side in [64, 80, 96, 112] {
        ids.push(upload(app, &token, "user", images::jpeg(side, side)).await);
    }
    wait_verified(app, &ids).await;
    worker.stop().await;
    sqlx::query(
        "UPDATE storage_files f SET verified_at = now() - interval '1 hour' + o.n * interval '1 second'
         FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM storage_files) o WHERE f.id = o.id",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    ids
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_integrity_sample_finds_flipped_and_missing_files_and_walks_the_whole_tree(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = four_verified_in_upload_order(&app).await;
    let flipped = app.original_path(&ids[0]).await;
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    std::fs::remove_file(app.original_path(&ids[1]).await).unwrap();

    // Two per run: two runs go round the four files, the damaged ones first since they
    // were verified first.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let check = shared::health::integrity::sample(&app.pool, &app.storage, 2, Utc::now()).await;
        seen.push(check.details());
        if seen.len() == 1 {
            assert_eq!(check.status, HealthStatus::Degraded, "{}", check.details());
        }
    }
    assert_eq!(seen[0]["corrupt"], serde_json::json!([ids[0]]), "{}", seen[0]);
    assert_eq!(seen[0]["missing"], serde_json::json!([ids[1]]), "{}", seen[0]);
    assert_eq!(seen[1]["matched"], 2, "the healthy ones come next: {}", seen[1]);
    let statuses: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT checksum_status, processing_error FROM storage_files ORDER BY created_at, id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(statuses[0].0, "corrupt");
    assert!(statuses[0].1.as_deref().unwrap().contains("integrity check"), "{statuses:?}");
    assert_eq!(statuses[1].0, "corrupt");
    assert!(statuses[1].1.as_deref().unwrap().contains("missing"), "{statuses:?}");
    assert_eq!((statuses[2].0.as_str(), statuses[3].0.as_str()), ("verified", "verified"));
    // The damaged files left the rotation: a third run samples only healthy files.
    let third = shared::health::integrity::sample(&app.pool, &app.storage, 4, Utc::now()).await;
    assert_eq!(third.status, HealthStatus::Ok, "{}", third.details());
    assert_eq!(third.details()["sampled"], 2);
}

/// When each image was last verified, by id.
async fn verified_at(pool: &PgPool) -> Vec<(String, chrono::DateTime<Utc>)> {
    sqlx::query_as("SELECT id::text, verified_at FROM storage_files ORDER BY created_at, id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_integrity_sample_rotates_through_healthy_files_least_recently_verified_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = four_verified_in_upload_order(&app).await;
    let mut sizes = std::collections::HashMap::new();
    for id in &ids {
        let file = storage_files::get(&app.pool, ImageId(id.parse().unwrap())).await.unwrap().unwrap();
        sizes.insert(id.clone(), file.file_size);
    }
    let (a_b, c_d) = (vec![ids[0].clone(), ids[1].clone()], vec![ids[2].clone(), ids[3].clone()]);

    for expected in [&a_b, &c_d, &a_b] {
        let before = verified_at(&app.pool).await;
        let check = shared::health::integrity::sample(&app.pool, &app.storage, 2, Utc::now()).await;
        assert_eq!(check.status, HealthStatus::Ok, "{}", check.details());
        // Which files a run read: those whose last verification moved, and the bytes read.
        let mut checked: Vec<String> = verified_at(&app.pool)
            .await
            .into_iter()
            .zip(before)
            .filter(|((_, after), (_, before))| after > before)
            .map(|((id, _), _)| id)
            .collect();
        checked.sort();
        let mut expected = expected.clone();
        expected.sort();
        assert_eq!(checked, expected, "{}", check.details());
        let bytes: i64 = expected.iter().map(|id| sizes[id]).sum();
        assert_eq!(check.details()["bytes_read"], bytes, "{}", check.details());
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn metrics_roll_up_uploads_latency_failures_and_depths_and_chart_them(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let vendor = app.token(Role::Vendor, Uuid::now_v7());
    let ids = vec![
        upload(&app, &token, "user", images::jpeg(320, 240)).await,
        upload(&app, &token, "user", images::jpeg(160, 120)).await,
        upload(&app, &vendor, "cloth", images::png(100, 100)).await,
    ];
    wait_verified(&app, &ids).await;
    let bytes: i64 =
        sqlx::query_scalar("SELECT sum(file_size)::bigint FROM storage_files").fetch_one(&app.pool).await.unwrap();
    shared::db::metrics::record_job_failure(&app.pool, "checksums", "image.uploaded", None, 1, false, "disk busy")
        .await
        .unwrap();
    run_health_check(&app).await;

    // A roll-up slot well after now, as the scheduler's next one, through the worker.
    let slot = Utc::now() + TimeDelta::seconds(i64::try_from(app.config.metrics.period_secs).unwrap());
    let mut tx = app.pool.begin().await.unwrap();
    outbox::enqueue(&mut *tx, MetricsRollupRequested { requested_at: slot }).await.unwrap();
    tx.commit().await.unwrap();
    let sum = |name: &'static str, labels: Value| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<f64>>(
                "SELECT sum(metric_value) FROM storage_metrics WHERE metric_name = $1 AND labels = $2",
            )
            .bind(name)
            .bind(labels)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    eventually(TIMEOUT, "the roll-up is written", || async { sum("uploads", serde_json::json!({})).await.is_some() })
        .await;
    assert_eq!(sum("uploads", serde_json::json!({})).await, Some(3.0));
    assert_eq!(sum("uploads", serde_json::json!({"image_type": "user"})).await, Some(2.0));
    assert_eq!(sum("uploads", serde_json::json!({"image_type": "cloth"})).await, Some(1.0));
    assert_eq!(sum("upload_bytes", serde_json::json!({})).await, Some(bytes as f64));
    assert!(sum("thumbnail_latency_ms", serde_json::json!({"quantile": "p99"})).await.is_some());
    assert_eq!(sum("job_failures", serde_json::json!({"queue": "checksums", "final": false})).await, Some(1.0));
    assert!(sum("queue_depth", serde_json::json!({"queue": "thumbnails"})).await.is_some());

    // Recomputing the same periods overwrites, never adds.
    let points: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_metrics").fetch_one(&app.pool).await.unwrap();
    shared::metrics::rollup(&app.pool, &app.config.metrics, slot).await.unwrap();
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_metrics").fetch_one(&app.pool).await.unwrap();
    assert_eq!(again, points);
    assert_eq!(sum("uploads", serde_json::json!({})).await, Some(3.0));

    let admin = app.token(Role::Admin, Uuid::now_v7());
    let client = reqwest::Client::new();
    let chart = |token: String, query: &'static str| {
        let request = client.get(app.url(&format!("/storage/stats/metrics?{query}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let response = chart(admin.clone(), "name=uploads&hours=2").await;
    assert_eq!(response.status(), StatusCode::OK);
    let series: Value = response.json().await.unwrap();
    assert_eq!(series["period_secs"], 300);
    let total: f64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["labels"] == serde_json::json!({}))
        .map(|p| p["value"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 3.0, "{series}");
    assert_eq!(chart(admin.clone(), "name=nonsense").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(chart(admin, "name=uploads&hours=0").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(chart(token, "name=uploads").await.status(), StatusCode::FORBIDDEN);
    worker.stop().await;
}
