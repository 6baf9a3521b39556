//! `GET /storage/stats`: scoped to the caller, global for admins, and exact.

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use sqlx::PgPool;
use uuid::Uuid;

async fn stats(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/storage/stats{query}"))).bearer_auth(token).send().await.unwrap()
}

async fn upload(app: &TestApp, token: &str, image_type: &str, bytes: Vec<u8>) -> (String, i64) {
    let size = bytes.len() as i64;
    let response = app.upload(token, image_type, "look.png", bytes, &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (body["id"].as_str().unwrap().to_owned(), size)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn owners_see_their_own_figures_and_admins_everyones(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, user_token) = app.user();
    let vendor = Uuid::now_v7();
    let vendor_token = app.token(Role::Vendor, vendor);
    let admin = app.token(Role::Admin, Uuid::now_v7());

    let (first, first_size) = upload(&app, &user_token, "user", images::png(30, 20)).await;
    let (_, second_size) = upload(&app, &user_token, "user", images::png(50, 40)).await;
    let (_, cloth_size) = upload(&app, &vendor_token, "cloth", images::png(20, 20)).await;
    sqlx::query("UPDATE storage_files SET access_count = 5, last_accessed = now() WHERE id = $1::uuid")
        .bind(&first)
        .execute(&app.pool)
        .await
        .unwrap();

    let response = stats(&app, &user_token, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mine: Value = response.json().await.unwrap();
    assert_eq!(mine["scope"], "owner");
    assert_eq!(mine["owner_id"], user.to_string());
    assert_eq!(mine["total_files"], 2);
    assert_eq!(mine["total_bytes"], first_size + second_size);
    assert_eq!(
        mine["by_type"],
        serde_json::json!([{"image_type": "user", "files": 2, "bytes": first_size + second_size}])
    );
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(mine["by_day"][0]["day"], today);
    assert_eq!(mine["by_day"][0]["files"], 2);
    assert_eq!(mine["processing"]["thumbnails_pending"], 2);
    assert_eq!(mine["processing"]["checksums_corrupt"], 0);
    assert_eq!(mine["top_accessed"][0]["id"], first);
    assert_eq!(mine["top_accessed"][0]["access_count"], 5);
    assert_eq!(mine["top_accessed"].as_array().unwrap().len(), 1, "never-read images are not 'top'");

    let everyone: Value = stats(&app, &admin, "").await.json().await.unwrap();
    assert_eq!(everyone["scope"], "global");
    assert_eq!(everyone["total_files"], 3);
    assert_eq!(everyone["total_bytes"], first_size + second_size + cloth_size);
    assert_eq!(everyone["by_type"].as_array().unwrap().len(), 2);

    let vendors: Value = stats(&app, &admin, &format!("?owner_id={vendor}")).await.json().await.unwrap();
    assert_eq!(vendors["total_files"], 1);
    assert_eq!(vendors["owner_id"], vendor.to_string());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn other_owners_figures_and_bad_windows_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let service = app.token(Role::Service, Uuid::now_v7());

    assert_eq!(stats(&app, &token, &format!("?owner_id={}", Uuid::now_v7())).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(stats(&app, &service, "").await.status(), StatusCode::FORBIDDEN);
    assert_eq!(stats(&app, &token, "?days=0").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stats(&app, &token, "?days=367").await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stats(&app, &token, "?days=366").await.status(), StatusCode::OK);
    assert_eq!(app.client.get(app.url("/storage/stats")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
