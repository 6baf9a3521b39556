//! The pipeline on the s3 backend, against the test store (a Garage node `scripts/test`
//! starts): the API and the worker each get an empty folder of their own, so anything
//! that passed through a local disk instead of the store would be missing where the other
//! looks for it, and is counted when the test ends.

use std::time::Duration;

use api::test_support::{TestApp, images};
use e2e::{admin_post, files_under, finished, settled, upload_every_kind};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH, RANGE};
use serde_json::{Value, json};
use shared::auth::Role;
use shared::config::{Config, StorageBackend};
use shared::test_support::{GarageCluster, TcpProxy, TestBucket, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(90);

fn on_the_store(config: &mut Config, bucket: &TestBucket) {
    config.storage.backend = StorageBackend::S3;
    config.storage.s3 = bucket.config.clone();
}

async fn view(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_image(token, id).await.json().await.unwrap()
}

/// The path of a signed URL for a variant of `id` (URLs carry `server.baseUrl`, not the
/// test port).
async fn signed_path(app: &TestApp, token: &str, id: &str, variant: &str) -> String {
    let url = app.url(&format!("/storage/images/{id}/signed-url?access_type=view&variant={variant}"));
    let body: Value = app.client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    body["url"].as_str().unwrap().strip_prefix(&app.config.server.base_url).unwrap().to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn uploads_thumbnails_checksums_serving_deletion_backup_and_restore_run_on_the_store_with_no_shared_folder(
    pool: PgPool,
) {
    let bucket = TestBucket::new();
    let app = TestApp::spawn_with(pool, |config| on_the_store(config, &bucket)).await;
    let (worker, worker_config, _worker_dir) = e2e::worker_on_its_own_folders(&app).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (_, token) = app.user();

    let mut ids = upload_every_kind(&app).await;
    let large = e2e::incompressible_png(0x2545_f491);
    let response = app.upload(&token, "user", "large.png", large.clone(), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let large_id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    ids.push(large_id.clone());
    settled(&app, "every upload has thumbnails and a verified checksum").await;
    let sizes = app.config.storage.thumbnail_sizes.len();
    assert_eq!(app.storage.count_objects().await.unwrap(), ids.len() * (1 + sizes), "originals and thumbnails");

    // Served from the store: whole, ranged, and not at all when unchanged.
    let path = signed_path(&app, &token, &large_id, "original").await;
    let whole = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    let etag = whole.headers()[ETAG].clone();
    assert_eq!(whole.bytes().await.unwrap(), large, "the multipart upload reads back byte for byte");
    // Across the boundary of the upload's first and second parts.
    let start = shared::storage::UPLOAD_PART_BYTES - 50;
    let range = format!("bytes={start}-{}", start + 99);
    let ranged = app.client.get(app.url(&path)).header(RANGE, range).send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap(), large[start..start + 100]);
    let unchanged = app.client.get(app.url(&path)).header(IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let small = view(&app, &token, &large_id).await["thumbnails"]["variants"][0].clone();
    let thumbnail = signed_path(&app, &token, &large_id, small["size"].as_str().unwrap()).await;
    let served = app.client.get(app.url(&thumbnail)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.unwrap().len() as u64, small["file_size"].as_u64().unwrap());

    // Deleted: its objects leave the store.
    let deleted = ids.remove(0);
    let owner_token = app.token(Role::Admin, Uuid::now_v7());
    assert_eq!(app.delete_image(&owner_token, &deleted).await.status(), StatusCode::NO_CONTENT);
    eventually(TIMEOUT, "the deleted image's objects are gone", || async {
        app.storage.count_objects().await.unwrap() == ids.len() * (1 + sizes)
    })
    .await;

    // Backed up (to the worker's backup folder), then the bucket and the tables are lost,
    // and a restore brings every original back into the store.
    let backup = admin_post(&app, &admin, "/storage/backup", json!({})).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let backup = finished(&app, &admin, &format!("/storage/backups/{backup_id}")).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let before = e2e::live_checksums(&app.pool).await;
    e2e::lose_every_image(&app).await;
    let restore = admin_post(&app, &admin, "/storage/restore", json!({ "backup_id": backup_id })).await;
    let restore = finished(&app, &admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await;
    assert_eq!(restore["status"], "completed", "{restore}");
    assert_eq!(restore["restored"].as_u64(), Some(ids.len() as u64), "{restore}");
    settled(&app, "restored images are processed again").await;
    assert_eq!(e2e::live_checksums(&app.pool).await, before, "every original is back, its checksum verified again");
    assert_eq!(app.storage.count_objects().await.unwrap(), ids.len() * (1 + sizes));

    worker.stop().await;
    let (api_folder, worker_folder) = (app.config.storage.base_path.clone(), worker_config.storage.base_path.clone());
    app.stop().await;
    assert_eq!(files_under(&api_folder), Vec::<String>::new(), "nothing is left in the API's folder");
    assert_eq!(files_under(&worker_folder), Vec::<String>::new(), "nothing is left in the worker's folder");
}

/// The store going away is a fault like the broker going away: uploads answer 503 at once
/// and store nothing, serving answers 503, and both work again once it is back.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn while_the_store_is_unreachable_uploads_and_serving_answer_503_fast_and_recover(pool: PgPool) {
    let bucket = TestBucket::new();
    let proxy = TcpProxy::start_to(bucket.config.endpoint.trim_start_matches("http://").to_owned()).await;
    let mut through_proxy = bucket.config.clone();
    through_proxy.endpoint = format!("http://{}", proxy.addr());
    let app = TestApp::spawn_with(pool, |config| {
        config.storage.backend = StorageBackend::S3;
        config.storage.s3 = through_proxy;
    })
    .await;
    let (_, token) = app.user();
    let stored = app.upload_image(&token, "user", "before.jpg", &[]).await;
    // Never served yet, so not in the small-file cache, which would answer without the store.
    let path = signed_path(&app, &token, &stored, "original").await;

    proxy.stop().await;
    let started = std::time::Instant::now();
    let refused = app.upload(&token, "user", "during.jpg", images::jpeg(64, 48), &[]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(20), "a refused connection fails within the retries");
    let served = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.row_count().await, 1, "the refused upload left no row");
    assert_eq!(app.outbox_count().await, 1, "nor an event");
    assert_eq!(app.storage.count_staged().await.unwrap(), 0, "nor a staged file");

    proxy.resume().await;
    let response = app.upload(&token, "user", "after.jpg", images::jpeg(64, 48), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED, "uploads work again once the store is back");
    assert_eq!(app.client.get(app.url(&path)).send().await.unwrap().status(), StatusCode::OK);
    let objects = shared::storage::Storage::open_s3(tempfile::tempdir().unwrap().path(), &bucket.config)
        .await
        .unwrap()
        .count_objects()
        .await
        .unwrap();
    assert_eq!(objects, 2, "exactly the two accepted originals are stored");
    app.stop().await;
}

/// With `presignedRedirect`, a valid signed URL answers 307 to the store, which serves the
/// bytes with the type, download name and ranges the API would have; a revoked or expired
/// URL is still refused by the API, and HEAD is answered by the API.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_signed_url_redirects_to_a_short_lived_presigned_url_of_the_store(pool: PgPool) {
    let bucket = TestBucket::new();
    let app = TestApp::spawn_with(pool, |config| {
        on_the_store(config, &bucket);
        config.storage.s3.presigned_redirect = true;
        config.storage.s3.presigned_ttl_secs = 30;
    })
    .await;
    let (_, token) = app.user();
    let bytes = images::jpeg(64, 48);
    let response = app.upload(&token, "user", "look.jpg", bytes.clone(), &[]).await;
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let path = signed_path(&app, &token, &id, "original").await;
    let redirect = no_redirects.get(app.url(&path)).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.headers()["cache-control"], "no-store");
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&bucket.config.endpoint), "{location}");
    assert!(location.contains("X-Amz-Expires=30"), "no longer than presignedTtlSecs: {location}");
    let served = no_redirects.get(&location).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/jpeg");
    assert_eq!(served.bytes().await.unwrap(), bytes, "the store serves the original");
    let ranged = no_redirects.get(&location).header(RANGE, "bytes=2-9").send().await.unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.unwrap(), bytes[2..10]);
    let head = no_redirects.head(app.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD is answered by the API");

    let url = app.url(&format!("/storage/images/{id}/signed-url?access_type=download"));
    let body: Value = app.client.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let download = body["url"].as_str().unwrap().strip_prefix(&app.config.server.base_url).unwrap().to_owned();
    let redirect = no_redirects.get(app.url(&download)).send().await.unwrap();
    let served = reqwest::get(redirect.headers()["location"].to_str().unwrap()).await.unwrap();
    let disposition = served.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(disposition.contains("look.jpg"), "{disposition}");

    // Revoking still works for every URL not yet redirected.
    let revoke = app.url(&format!("/storage/images/{id}/revoke-urls"));
    let revoked = app.client.post(revoke).bearer_auth(&token).send().await.unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(no_redirects.get(app.url(&path)).send().await.unwrap().status(), StatusCode::GONE);
    app.stop().await;
}

/// A node of a three-node cluster (every object on each node) is killed while uploads and
/// serving go on through another: every upload acknowledged is kept, every read is served,
/// and the pipeline finishes every image once the node is back.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_store_node_lost_during_uploads_and_serving_loses_nothing_acknowledged_and_the_pipeline_finishes(
    pool: PgPool,
) {
    const UPLOADS: u32 = 30;
    let mut cluster = GarageCluster::start(3);
    let s3 = cluster.s3_config(0);
    let app = TestApp::spawn_with(pool, |config| {
        config.storage.backend = StorageBackend::S3;
        config.storage.s3 = s3.clone();
    })
    .await;
    let (worker, _, _worker_dir) = e2e::worker_on_its_own_folders(&app).await;
    let (_, token) = app.user();

    let (mut acknowledged, mut refused, mut served) = (Vec::new(), 0, 0);
    for n in 0..UPLOADS {
        if n == UPLOADS / 3 {
            cluster.stop_node(2);
        }
        let response = app.upload(&token, "user", &format!("{n}.jpg"), images::jpeg(64 + n, 48), &[]).await;
        match response.status() {
            StatusCode::CREATED => {
                acknowledged.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
            }
            // Allowed (the client retries), but nothing of it may remain: checked below.
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("upload {n}: {other}"),
        }
        // The newest image, never served before, so it comes from the store, not the cache.
        if let Some(id) = acknowledged.last() {
            let path = signed_path(&app, &token, id, "original").await;
            let response = app.client.get(app.url(&path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "serving with a node down");
            served += 1;
        }
    }
    assert!(refused < UPLOADS / 2, "{refused} of {UPLOADS} uploads refused with one node of three down");
    cluster.start_node(2);
    settled(&app, "every acknowledged image has its thumbnails and a verified checksum").await;

    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, checksum FROM storage_files WHERE deleted_at IS NULL")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), acknowledged.len(), "a row for every acknowledged upload and no other");
    let sizes = app.config.storage.thumbnail_sizes.len();
    assert_eq!(app.storage.count_objects().await.unwrap(), rows.len() * (1 + sizes), "no object of a refused upload");
    tracing::info!(acknowledged = acknowledged.len(), refused, served, "uploads through a lost node");
    worker.stop().await;
    app.stop().await;
}
