//! Access logging: reads and denials become `storage_access_logs` rows, successful reads
//! move the image's counters, and a clean shutdown writes whatever was still queued.

use std::time::Duration;

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct LogRow {
    image_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    action: String,
    ip: Option<String>,
    user_agent: Option<String>,
    status: i16,
    bytes_sent: i64,
}

async fn log_rows(pool: &PgPool) -> Vec<LogRow> {
    sqlx::query_as(
        "SELECT image_id, actor_id, action, host(ip_address) AS ip, user_agent, status, bytes_sent
         FROM storage_access_logs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn upload(app: &TestApp, token: &str) -> Uuid {
    let response = app.upload(token, "user", "look.jpg", images::jpeg(64, 48), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_and_denials_are_logged_with_actor_ip_agent_status_and_bytes(pool: PgPool) {
    // A flush interval far beyond the test: only the shutdown flush can write the rows.
    let app = TestApp::spawn_with(pool.clone(), |c| c.access_log.flush_interval_ms = 3_600_000).await;
    let (owner, token) = app.user();
    let (stranger, stranger_token) = app.user();
    let id = upload(&app, &token).await;

    let read = app
        .client
        .get(app.url(&format!("/storage/images/{id}")))
        .bearer_auth(&token)
        .header("user-agent", "stylist-app/2.1");
    let read = read.send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let read_bytes = read.bytes().await.unwrap().len() as i64;
    assert_eq!(app.get_image(&stranger_token, &id.to_string()).await.status(), StatusCode::NOT_FOUND);
    let anonymous = app.client.get(app.url(&format!("/storage/images/{id}"))).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Not an access: the OpenAPI document.
    assert_eq!(app.client.get(app.url("/openapi.json")).send().await.unwrap().status(), StatusCode::OK);
    assert!(log_rows(&pool).await.is_empty(), "written before the flush interval");

    app.stop().await;

    let rows = log_rows(&pool).await;
    let local = Some("127.0.0.1".to_owned());
    let row = |actor, action: &str, status, bytes_sent, user_agent: Option<&str>, image_id| LogRow {
        image_id,
        actor_id: actor,
        action: action.to_owned(),
        ip: local.clone(),
        user_agent: user_agent.map(str::to_owned),
        status,
        bytes_sent,
    };
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!((rows[0].action.as_str(), rows[0].status, rows[0].actor_id), ("upload", 201, Some(owner)));
    assert_eq!(rows[0].image_id, Some(id), "an upload's row names the image it stored");
    assert_eq!(rows[1], row(Some(owner), "read_metadata", 200, read_bytes, Some("stylist-app/2.1"), Some(id)));
    assert_eq!(rows[2], row(Some(stranger), "read_metadata", 404, rows[2].bytes_sent, None, Some(id)));
    assert_eq!(rows[3], row(None, "read_metadata", 401, rows[3].bytes_sent, None, Some(id)));
    assert!(rows[2].bytes_sent > 0 && rows[3].bytes_sent > 0, "error bodies are counted");

    // Only the successful read counts as an access.
    let (count, last): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT access_count, last_accessed FROM storage_files WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(count, 1);
    assert!(last.is_some());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn records_are_written_in_batches_while_running(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.access_log.flush_interval_ms = 50;
        c.access_log.batch_size = 3;
    })
    .await;
    let (_, token) = app.user();
    let id = upload(&app, &token).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    for _ in 0..7 {
        assert_eq!(app.get_image(&admin, &id.to_string()).await.status(), StatusCode::OK);
    }

    // Identical reads within a second share a row that counts them.
    let logged = || async {
        sqlx::query_scalar::<_, Option<i64>>("SELECT sum(request_count) FROM storage_access_logs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    eventually(Duration::from_secs(10), "8 requests are logged", || async { logged().await == Some(8) }).await;
    let count: i64 = sqlx::query_scalar("SELECT access_count FROM storage_files WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 7);
    app.stop().await;
    assert_eq!(logged().await, Some(8), "nothing written twice at shutdown");
}

/// The path of a signed URL for `id` (URLs carry `server.baseUrl`, not the test port).
async fn signed_path(app: &TestApp, token: &str, id: Uuid, access_type: &str) -> String {
    let url = app.url(&format!("/storage/images/{id}/signed-url?access_type={access_type}"));
    let response = app.client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["url"].as_str().unwrap().strip_prefix(&app.config.server.base_url).unwrap().to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn signed_url_usage_is_counted_and_overuse_is_flagged(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.access_log.flush_interval_ms = 50;
        c.signed_urls.abuse_max_uses = 3;
        c.signed_urls.abuse_max_addresses = 1;
    })
    .await;
    let (_, token) = app.user();
    let id = upload(&app, &token).await;
    let shared_url = signed_path(&app, &token, id, "view").await;
    let hammered_url = signed_path(&app, &token, id, "download").await;
    // Loopback is a whole /8: a second client address without a second machine.
    let elsewhere = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();

    for client in [&app.client, &elsewhere] {
        assert_eq!(client.get(app.url(&shared_url)).send().await.unwrap().status(), StatusCode::OK);
    }
    for _ in 0..4 {
        assert_eq!(app.client.get(app.url(&hammered_url)).send().await.unwrap().status(), StatusCode::OK);
    }
    // A denied use is logged but not counted.
    let tampered = format!("{}x", &hammered_url[..hammered_url.len() - 1]);
    assert_eq!(app.client.get(app.url(&tampered)).send().await.unwrap().status(), StatusCode::FORBIDDEN);

    eventually(Duration::from_secs(10), "both URLs are flagged", || async {
        let flagged: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_signed_urls WHERE flagged_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        flagged == 2
    })
    .await;
    let usage: Vec<(String, i64, i32, String)> = sqlx::query_as(
        "SELECT access_type, use_count, distinct_ips, flag_reason FROM storage_signed_urls ORDER BY access_type",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(usage[0], ("download".to_owned(), 4, 1, "used 4 times (limit 3)".to_owned()));
    assert_eq!(usage[1], ("view".to_owned(), 2, 2, "used from 2 addresses (limit 1)".to_owned()));

    let response = app.client.get(app.url("/storage/stats")).bearer_auth(&token).send().await.unwrap();
    let stats: Value = response.json().await.unwrap();
    let urls = &stats["signed_urls"];
    assert_eq!((urls["issued"].as_i64(), urls["active"].as_i64()), (Some(2), Some(2)));
    assert_eq!((urls["uses"].as_i64(), urls["flagged"].as_i64()), (Some(6), Some(2)));
    assert_eq!(urls["recently_flagged"].as_array().unwrap().len(), 2);
    let (_, stranger) = app.user();
    let response = app.client.get(app.url("/storage/stats")).bearer_auth(&stranger).send().await.unwrap();
    let theirs: Value = response.json().await.unwrap();
    assert_eq!(theirs["signed_urls"]["issued"], 0, "scoped to the caller's images");
    app.stop().await;
}
