//! Erasing an owner through the API and the workers: every image of the owner becomes a
//! scrubbed tombstone whose files are removed, their access log rows are anonymised, their
//! quota, signed URL records and idempotency keys go, the report counts it all, and a
//! restore of a backup taken before skips the erased images. Also: one erasure per owner
//! under concurrent requests, a new one after completion, who may erase, and a run stopped
//! half-way that the worker finishes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use api::test_support::{TestApp, error_code, images};
use e2e::{PIPELINE_TIMEOUT, TestWorker, admin_post, finished, settled};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::db::erasures;
use shared::erasure::{self, Batches};
use shared::model::{Owner, OwnerId, OwnerType};
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;

async fn upload(app: &TestApp, token: &str, image_type: &str, extra: &[(&str, &str)]) -> String {
    let response = app.upload(token, image_type, "photo.jpg", images::jpeg(64, 48), extra).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// `DELETE /storage/owners/{owner}` with `token`: the status, the `Location` and the body.
async fn erase(app: &TestApp, token: &str, owner: Uuid, owner_type: Option<&str>) -> (StatusCode, String, Value) {
    let mut request = app.client.delete(app.url(&format!("/storage/owners/{owner}"))).bearer_auth(token);
    if let Some(kind) = owner_type {
        request = request.query(&[("owner_type", kind)]);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, location, response.json().await.unwrap())
}

async fn get_erasure(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/storage/erasures/{id}"))).bearer_auth(token).send().await.unwrap()
}

/// Every file of `owner`'s images on disk: originals and recorded thumbnails.
async fn files_of(app: &TestApp, owner: Uuid) -> Vec<PathBuf> {
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM storage_files WHERE owner_id = $1
         UNION ALL
         SELECT t.file_path FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id WHERE f.owner_id = $1",
    )
    .bind(owner)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    paths.into_iter().map(|path| app.storage.root().join(path)).collect()
}

async fn count(pool: &PgPool, sql: &'static str, owner: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(owner).fetch_one(pool).await.unwrap()
}

/// Signed URL records requested by `owner` or issued for their images (their uploads
/// record one each, and so do the URLs asked for).
const SIGNED_URLS: &str = "SELECT count(*) FROM storage_signed_urls
                           WHERE requested_by = $1 OR image_id IN (SELECT id FROM storage_files WHERE owner_id = $1)";

/// Access log rows that still hold a client address or user agent, about `owner`'s images
/// or made by `owner`.
async fn identifying_log_rows(pool: &PgPool, owner: Uuid) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM storage_access_logs
         WHERE actor_id = $1
            OR (image_id IN (SELECT id FROM storage_files WHERE owner_id = $1)
                AND (ip_address IS NOT NULL OR user_agent IS NOT NULL))",
        owner,
    )
    .await
}

/// Reads each image's metadata as `token`, and serves it through a signed URL: access log
/// rows made by the caller and about the image.
async fn use_images(app: &TestApp, token: &str, ids: &[String]) {
    for id in ids {
        let read = app.client.get(app.url(&format!("/storage/images/{id}"))).bearer_auth(token);
        let read = read.header("user-agent", "stylist-app/2.1").send().await.unwrap();
        assert_eq!(read.status(), StatusCode::OK);
        let issued = app.client.get(app.url(&format!("/storage/images/{id}/signed-url"))).bearer_auth(token);
        let body: Value = issued.send().await.unwrap().json().await.unwrap();
        let path = body["url"].as_str().unwrap().strip_prefix(&app.config.server.base_url).unwrap().to_owned();
        let served = app.client.get(app.url(&path)).header("user-agent", "Mobile Safari").send().await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_erased_owner_leaves_scrubbed_tombstones_anonymous_logs_and_nothing_a_restore_brings_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let service = app.token(Role::Service, Uuid::now_v7());
    let (owner, token) = app.user();
    let (other, other_token) = app.user();

    // The owner: two photos (one tagged, one uploaded with an idempotency key), and a try-on
    // result the service stored for them. Another user alongside.
    let mut mine = vec![upload(&app, &token, "user", &[("tags", "beach"), ("metadata", r#"{"room":"hall"}"#)]).await];
    let keyed = app
        .upload_with_headers(&token, "user", "me.png", images::png(40, 30), &[], &[("idempotency-key", "first-photo")])
        .await;
    assert_eq!(keyed.status(), StatusCode::CREATED);
    mine.push(keyed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    let owner_text = owner.to_string();
    mine.push(upload(&app, &service, "result", &[("owner_id", owner_text.as_str()), ("source_ids", &mine[0])]).await);
    let theirs = vec![upload(&app, &other_token, "user", &[]).await, upload(&app, &other_token, "user", &[]).await];
    settled(&app, "every upload is processed").await;
    use_images(&app, &token, &mine).await;
    use_images(&app, &other_token, &theirs).await;
    // Rows made by the owner (uploads, reads, URL issues) and about their images (serves).
    eventually(PIPELINE_TIMEOUT, "the access log is written", || async {
        let served: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM storage_access_logs WHERE action = 'serve_file' AND image_id = ANY($1::uuid[])",
        )
        .bind(mine.iter().chain(&theirs).map(|id| id.parse::<Uuid>().unwrap()).collect::<Vec<_>>())
        .fetch_one(&app.pool)
        .await
        .unwrap();
        served == 5
    })
    .await;
    let naming = identifying_log_rows(&app.pool, owner).await;
    let others_before = identifying_log_rows(&app.pool, other).await;
    assert!(naming >= 3 * 3 + 3, "uploads, reads, URL issues and serves: {naming}");
    let signed_urls = count(&app.pool, SIGNED_URLS, owner).await;
    assert!(signed_urls >= 3, "{signed_urls}");
    let backup = admin_post(&app, &admin, "/storage/backup", json!({})).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let backup = finished(&app, &admin, &format!("/storage/backups/{backup_id}")).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let files = files_of(&app, owner).await;
    let thumbnails = files.len() as i64 - 3;
    assert_eq!(thumbnails, 3 * app.config.storage.thumbnail_sizes.len() as i64);
    let other_files = files_of(&app, other).await;

    // Data keys, as encrypted uploads have them: each deletion of the erasure destroys one.
    for image in &mine {
        sqlx::query("INSERT INTO storage_image_keys (image_id, key_id, wrapped_key) VALUES ($1, 'm1', '\\x00')")
            .bind(image.parse::<Uuid>().unwrap())
            .execute(&app.pool)
            .await
            .unwrap();
    }

    let (status, location, erasure) = erase(&app, &service, owner, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{erasure}");
    let id = erasure["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/storage/erasures/{id}"));
    assert_eq!((erasure["owner_id"].as_str(), erasure["owner_type"].as_str()), (Some(&*owner_text), Some("user")));
    let erasure = finished(&app, &admin, &location).await;
    assert_eq!(erasure["status"], "completed", "{erasure}");

    let report = &erasure["report"];
    assert_eq!(report["images_deleted"], 3, "{report}");
    assert_eq!(report["thumbnails_queued"], thumbnails, "{report}");
    assert_eq!(report["access_log_rows_anonymised"], naming, "{report}");
    assert_eq!(report["signed_urls_removed"], signed_urls, "{report}");
    assert_eq!(report["idempotency_keys_removed"], 1, "{report}");
    assert_eq!(report["image_keys_destroyed"], 3, "{report}");
    assert_eq!(report["quota_removed"], true, "{report}");
    assert_eq!((report["backup_copies"].as_i64(), report["backups_holding_copies"].as_i64()), (Some(3), Some(1)));
    assert!(report["backup_note"].as_str().unwrap().contains("restore"), "{report}");
    assert_eq!(erasure["images_deleted"], 3);

    // Every image a scrubbed tombstone, its files gone; the quota and the owner's rows gone.
    let scrubbed = count(
        &app.pool,
        "SELECT count(*) FROM storage_files WHERE owner_id = $1 AND deleted_at IS NOT NULL
             AND original_name = '' AND tags = '{}' AND metadata = '{}'",
        owner,
    )
    .await;
    assert_eq!(scrubbed, 3);
    eventually(PIPELINE_TIMEOUT, "the erased images' files are removed", || async {
        files.iter().all(|path| !path.exists())
    })
    .await;
    assert!(app.quota(owner, OwnerType::User).await.is_none(), "the quota row is gone");
    assert_eq!(identifying_log_rows(&app.pool, owner).await, 0);
    assert_eq!(identifying_log_rows(&app.pool, other).await, others_before, "the other user's rows are untouched");
    let left = |sql| count(&app.pool, sql, owner);
    assert_eq!(left(SIGNED_URLS).await, 0);
    assert_eq!(left("SELECT count(*) FROM upload_idempotency WHERE principal_id = $1").await, 0);
    let audited = left(
        "SELECT count(*) FROM storage_audit_log
         WHERE action = 'owner_erased' AND target_type = 'owner' AND target_id = $1::text AND actor_role = 'service'",
    )
    .await;
    assert_eq!(audited, 1);
    assert!(other_files.iter().all(|path| path.exists()), "the other user's files are untouched");

    // A restore of the backup replaces the live images and skips the erased ones.
    let restore =
        admin_post(&app, &admin, "/storage/restore", json!({"backup_id": backup_id, "mode": "overwrite"})).await;
    let restore = finished(&app, &admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await;
    assert_eq!((restore["restored"].as_i64(), restore["skipped"].as_i64()), (Some(2), Some(3)), "{restore}");
    let skipped: BTreeSet<String> =
        restore["details"].as_array().unwrap().iter().map(|d| d["image_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(skipped, mine.iter().cloned().collect());
    settled(&app, "the restored images are processed again").await;
    assert!(files.iter().all(|path| !path.exists()), "no erased file came back");
    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM storage_files WHERE owner_id = $1 AND deleted_at IS NULL", owner).await,
        0
    );
    for id in &theirs {
        assert_eq!(app.get_image(&other_token, id).await.status(), StatusCode::OK);
    }

    // After completion a new request starts a new erasure, which finds nothing new.
    let (status, location, again) = erase(&app, &admin, owner, Some("user")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(again["id"].as_str().unwrap(), id);
    let again = finished(&app, &admin, &location).await;
    assert_eq!((again["status"].as_str(), again["report"]["images_deleted"].as_i64()), (Some("completed"), Some(0)));
    assert_eq!(again["report"]["quota_removed"], false);
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_requests_make_one_erasure_and_only_admins_and_the_service_for_users_may_erase(pool: PgPool) {
    // No worker: the erasures stay pending.
    let app = TestApp::spawn(pool).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let service = app.token(Role::Service, Uuid::now_v7());
    let (owner, token) = app.user();
    upload(&app, &token, "user", &[]).await;

    let (first, second) = tokio::join!(erase(&app, &admin, owner, None), erase(&app, &service, owner, Some("user")));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::ACCEPTED]);
    assert_eq!(first.2["id"], second.2["id"], "one erasure");
    assert_eq!((first.1.as_str(), first.2["status"].as_str()), (second.1.as_str(), Some("pending")));
    let erasures = count(&app.pool, "SELECT count(*) FROM storage_erasures WHERE owner_id = $1", owner).await;
    assert_eq!(erasures, 1);
    let audited = count(&app.pool, "SELECT count(*) FROM storage_audit_log WHERE target_id = $1::text", owner).await;
    assert_eq!(audited, 1, "the request that created it is audited");
    let id = first.2["id"].as_str().unwrap();

    // Who may erase: refused before anything is read or written.
    let vendor = Uuid::now_v7();
    let refusals = [
        (token.clone(), owner, None, StatusCode::FORBIDDEN),
        (app.token(Role::Vendor, vendor), vendor, Some("vendor"), StatusCode::FORBIDDEN),
        (service.clone(), vendor, Some("vendor"), StatusCode::FORBIDDEN),
        (admin.clone(), vendor, Some("shop"), StatusCode::BAD_REQUEST),
    ];
    for (caller, who, kind, expected) in refusals {
        let (status, _, body) = erase(&app, &caller, who, kind).await;
        assert_eq!(status, expected, "{kind:?}: {body}");
    }
    let (status, _, vendor_erasure) = erase(&app, &admin, vendor, Some("vendor")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(vendor_erasure["owner_type"], "vendor");
    assert_eq!(count(&app.pool, "SELECT count(*) FROM storage_erasures WHERE owner_id = $1", vendor).await, 1);

    // Who may follow one.
    assert_eq!(get_erasure(&app, &service, id).await.status(), StatusCode::OK);
    let response = get_erasure(&app, &token, id).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "forbidden");
    let vendor_id = vendor_erasure["id"].as_str().unwrap();
    assert_eq!(get_erasure(&app, &service, vendor_id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get_erasure(&app, &admin, vendor_id).await.status(), StatusCode::OK);
    assert_eq!(get_erasure(&app, &admin, &Uuid::now_v7().to_string()).await.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_run_stopped_after_one_batch_is_finished_by_the_worker_and_a_duplicate_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (owner_id, token) = app.user();
    for _ in 0..5 {
        upload(&app, &token, "user", &[]).await;
    }
    let (status, location, erasure) = erase(&app, &admin, owner_id, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id: Uuid = erasure["id"].as_str().unwrap().parse().unwrap();

    // A run that committed one batch of two images, then died.
    let owner = erasure::begin(&app.pool, id).await.unwrap().expect("pending");
    assert_eq!(owner, Owner { id: OwnerId(owner_id), kind: OwnerType::User });
    assert_eq!(erasure::delete_images(&app.pool, id, owner, 2).await.unwrap(), 2);
    let progress = get_erasure(&app, &admin, &id.to_string()).await.json::<Value>().await.unwrap();
    assert_eq!((progress["status"].as_str(), progress["images_deleted"].as_i64()), (Some("running"), Some(2)));
    assert!(progress["report"].is_null());

    // The job, still queued, is delivered to a worker, which goes on from there.
    let worker = TestWorker::start(&app.config).await;
    let done = finished(&app, &admin, &location).await;
    assert_eq!((done["status"].as_str(), done["images_deleted"].as_i64()), (Some("completed"), Some(5)), "{done}");
    assert_eq!(done["report"]["images_deleted"], 5);
    worker.stop().await;

    // A duplicate delivery of the completed erasure changes nothing.
    assert!(erasure::run(&app.pool, id, Batches::DEFAULT).await.unwrap().is_none());
    let after = get_erasure(&app, &admin, &id.to_string()).await.json::<Value>().await.unwrap();
    assert_eq!(after, done);

    // Batches of exactly the limit: the run goes on until a batch comes back short.
    let (second, second_token) = app.user();
    for _ in 0..4 {
        upload(&app, &second_token, "user", &[]).await;
    }
    let (_, _, erasure) = erase(&app, &admin, second, None).await;
    let id: Uuid = erasure["id"].as_str().unwrap().parse().unwrap();
    let second_owner = Owner { id: OwnerId(second), kind: OwnerType::User };
    eventually(PIPELINE_TIMEOUT, "the uploads are in the access log", || async {
        erasures::access_logs_naming(&app.pool, second_owner).await.unwrap() == 4
    })
    .await;
    let done = erasure::run(&app.pool, id, Batches { images: 2, rows: 1 }).await.unwrap().expect("ran");
    assert_eq!((done.status.as_str(), done.images_deleted), ("completed", 4));
    assert_eq!(done.access_log_rows_anonymised, 4);
    assert_eq!(erasures::access_logs_naming(&app.pool, second_owner).await.unwrap(), 0);
}
