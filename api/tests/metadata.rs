//! Changing and deleting images, who may do it, and the quotas that follow.

use api::test_support::{TestApp, error_code, images, json};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::model::OwnerType;
use sqlx::PgPool;
use uuid::Uuid;

/// Live usage as the rows say it, to compare with the quota row.
async fn live_usage(app: &TestApp, owner: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), coalesce(sum(file_size), 0)::bigint FROM storage_files
         WHERE owner_id = $1 AND deleted_at IS NULL",
    )
    .bind(owner)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_owner_changes_name_visibility_tags_and_metadata(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "old.jpg", &[("tags", "a"), ("metadata", r#"{"x":1}"#)]).await;
    let before = json(app.get_image(&token, &id).await).await;

    let update = json!({
        "file_name": "../holiday/new name.jpg",
        "is_public": true,
        "tags": [" red ", "dress", "red", ""],
        "metadata": {"brand": "Zara", "size": 38},
    });
    let response = app.update_image(&token, &id, &update).await;
    assert_eq!(response.status(), StatusCode::OK);
    let after = json(response).await;
    assert_eq!(after["file_name"], "new name.jpg");
    assert_eq!(after["is_public"], true);
    assert_eq!(after["tags"], json!(["red", "dress"]));
    assert_eq!(after["metadata"], json!({"brand": "Zara", "size": 38}));
    assert!(after["updated_at"].as_str().unwrap() > before["updated_at"].as_str().unwrap());
    assert_eq!(
        (&after["created_at"], &after["checksum"], &after["path"]),
        (&before["created_at"], &before["checksum"], &before["path"])
    );
    assert_eq!(json(app.get_image(&token, &id).await).await, after);

    // Absent fields stay; an empty tag list clears the tags.
    let response = app.update_image(&token, &id, &json!({"tags": []})).await;
    let cleared = json(response).await;
    assert_eq!(cleared["tags"], json!([]));
    assert_eq!((&cleared["file_name"], &cleared["metadata"]), (&after["file_name"], &after["metadata"]));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn bad_updates_are_refused_with_clear_codes_and_change_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "keep.jpg", &[("tags", "a")]).await;
    let before = json(app.get_image(&token, &id).await).await;
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({}), "empty_update"),
        (json!({"file_name": "  "}), "invalid_field"),
        (json!({"file_name": "a/.."}), "invalid_field"),
        (json!({"tags": too_many}), "invalid_field"),
        (json!({"tags": ["x".repeat(65)]}), "invalid_field"),
        (json!({"tags": ["bell\u{7}"]}), "invalid_field"),
        (json!({"metadata": [1, 2]}), "invalid_field"),
        (json!({"metadata": "text"}), "invalid_field"),
        (json!({"metadata": {"big": "x".repeat(16 * 1024)}}), "invalid_field"),
        (json!({"is_public": "yes"}), "bad_request"),
        (json!({"tags": "a,b"}), "bad_request"),
        (json!({"owner_id": Uuid::now_v7()}), "bad_request"),
    ];
    for (body, code) in cases {
        let response = app.update_image(&token, &id, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = json(response).await;
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    let url = app.url(&format!("/storage/images/{id}"));
    let response = app.client.put(&url).bearer_auth(&token).header("content-type", "application/json").body("{").send();
    assert_eq!(response.await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(app.get_image(&token, &id).await).await, before);
    // An unknown image is a 404 whatever the body, and no token is a 401.
    let missing = app.update_image(&token, &Uuid::now_v7().to_string(), &json!({"is_public": true})).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let anonymous = app.client.put(app.url(&format!("/storage/images/{id}"))).json(&json!({"is_public": true}));
    assert_eq!(anonymous.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

/// The images of the permission matrix, and the callers.
struct Matrix {
    owner: String,
    other_user: String,
    vendor: String,
    service: String,
    admin: String,
    private_photo: String,
    public_photo: String,
    private_cloth: String,
    private_result: String,
}

async fn matrix(app: &TestApp) -> Matrix {
    let (owner_id, owner) = app.user();
    let (_, other_user) = app.user();
    let vendor_id = Uuid::now_v7();
    let vendor = app.token(Role::Vendor, vendor_id);
    let service = app.token(Role::Service, Uuid::now_v7());
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let owner_fields = [("owner_id", owner_id.to_string()), ("owner_type", "user".to_owned())];
    let owner_fields: Vec<(&str, &str)> = owner_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Matrix {
        private_photo: app.upload_image(&owner, "user", "private.jpg", &[]).await,
        public_photo: app.upload_image(&owner, "user", "public.jpg", &[("is_public", "true")]).await,
        private_cloth: app.upload_image(&vendor, "cloth", "cloth.jpg", &[]).await,
        private_result: app.upload_image(&service, "result", "result.jpg", &owner_fields).await,
        owner,
        other_user,
        vendor,
        service,
        admin,
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_and_changes_follow_the_permission_matrix(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let m = matrix(&app).await;
    let (ok, forbidden, missing) = (StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND);
    // (caller, image, GET, PUT)
    let cases = [
        ("owner", &m.owner, &m.private_photo, ok, ok),
        ("other user", &m.other_user, &m.private_photo, missing, missing),
        ("vendor", &m.vendor, &m.private_photo, missing, missing),
        ("service", &m.service, &m.private_photo, missing, missing),
        ("admin", &m.admin, &m.private_photo, ok, ok),
        ("owner", &m.owner, &m.public_photo, ok, ok),
        ("other user", &m.other_user, &m.public_photo, ok, forbidden),
        ("vendor", &m.vendor, &m.public_photo, ok, forbidden),
        ("service", &m.service, &m.public_photo, ok, forbidden),
        ("admin", &m.admin, &m.public_photo, ok, ok),
        ("vendor", &m.vendor, &m.private_cloth, ok, ok),
        ("user", &m.owner, &m.private_cloth, missing, missing),
        ("service", &m.service, &m.private_cloth, missing, missing),
        ("admin", &m.admin, &m.private_cloth, ok, ok),
        ("owner", &m.owner, &m.private_result, ok, ok),
        ("other user", &m.other_user, &m.private_result, missing, missing),
        ("vendor", &m.vendor, &m.private_result, missing, missing),
        ("service", &m.service, &m.private_result, ok, ok),
        ("admin", &m.admin, &m.private_result, ok, ok),
    ];
    for (who, token, id, read, write) in cases {
        let response = app.get_image(token, id).await;
        assert_eq!(response.status(), read, "GET by {who}");
        let response = app.update_image(token, id, &json!({"tags": [who]})).await;
        assert_eq!(response.status(), write, "PUT by {who}");
        if write == forbidden {
            assert_eq!(error_code(response).await, "forbidden");
        }
        if write != ok {
            // A refused delete answers like a refused change and leaves the image alone.
            assert_eq!(app.delete_image(token, id).await.status(), write, "DELETE by {who}");
            assert_eq!(app.get_image(&m.admin, id).await.status(), ok);
        }
    }

    // Successful deletes, each on an image of its own.
    let fresh = matrix(&app).await;
    for (who, token, id) in [
        ("owner", &fresh.owner, &fresh.private_photo),
        ("admin", &fresh.admin, &fresh.public_photo),
        ("vendor", &fresh.vendor, &fresh.private_cloth),
        ("service", &fresh.service, &fresh.private_result),
    ] {
        assert_eq!(app.delete_image(token, id).await.status(), StatusCode::NO_CONTENT, "DELETE by {who}");
        assert_eq!(app.get_image(&fresh.admin, id).await.status(), missing);
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deleted_image_is_gone_at_once_its_quota_released_and_its_event_queued(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let kept = app.upload_image(&token, "user", "kept.jpg", &[("tags", "red")]).await;
    let gone = app.upload_image(&token, "user", "gone.jpg", &[("tags", "red"), ("is_public", "true")]).await;
    let before = app.quota(user, OwnerType::User).await.unwrap();
    let gone_size: i64 = sqlx::query_scalar("SELECT file_size FROM storage_files WHERE id = $1::uuid")
        .bind(&gone)
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let response = app.delete_image(&token, &gone).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    assert_eq!(app.get_image(&token, &gone).await.status(), StatusCode::NOT_FOUND);
    let (_, stranger) = app.user();
    assert_eq!(app.get_image(&stranger, &gone).await.status(), StatusCode::NOT_FOUND, "public no more");
    let listed = json(app.list_images(&token, &[]).await).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], kept.as_str());
    let found = json(app.search_images(&token, &json!({"query": "gone"})).await).await;
    assert_eq!(found["total"], 0);
    let tagged = json(app.list_images(&token, &[("tag", "red")]).await).await;
    assert_eq!(tagged["total"], 1);

    let after = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((after.used_files, after.used_bytes), (before.used_files - 1, before.used_bytes - gone_size));
    assert_eq!((after.used_files, after.used_bytes), live_usage(&app, user).await);

    let events: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["image_id"], gone.as_str());
    assert_eq!(events[0]["type"], "image.deleted");

    // The row stays as a tombstone keeping ids, checksum and dates but nothing its owner
    // wrote; a second delete or a change finds nothing.
    type Tombstone = (Option<chrono::DateTime<chrono::Utc>>, String, Vec<String>, Value, String, String);
    let (deleted_at, name, tags, metadata, checksum, path): Tombstone = sqlx::query_as(
        "SELECT deleted_at, original_name, tags, metadata, checksum, file_path FROM storage_files WHERE id = $1::uuid",
    )
    .bind(&gone)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(deleted_at.is_some());
    assert_eq!((name.as_str(), tags.len(), metadata), ("", 0, json!({})), "file name, tags and metadata scrubbed");
    assert_eq!((checksum.len(), path.is_empty()), (64, false), "what backups and the deletion worker need stays");
    let searchable: String = sqlx::query_scalar("SELECT search_text FROM storage_files WHERE id = $1::uuid")
        .bind(&gone)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!searchable.contains("gone") && !searchable.contains("red"), "{searchable}");
    assert_eq!(app.delete_image(&token, &gone).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.update_image(&token, &gone, &json!({"is_public": false})).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.quota(user, OwnerType::User).await.unwrap(), after, "released once");
    let more: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(more, 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_quota_is_read_by_its_owner_and_changed_by_admins_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let defaults = &app.config.quota;

    let fresh = json(app.get_quota(&token, &[]).await).await;
    assert_eq!(fresh["owner_id"], user.to_string());
    assert_eq!(
        (fresh["used_files"].as_i64(), fresh["max_files"].as_i64()),
        (Some(0), Some(defaults.default_max_files))
    );
    assert!(fresh["updated_at"].is_null());

    let bytes = images::jpeg(40, 30);
    let size = bytes.len() as i64;
    assert_eq!(app.upload(&token, "user", "a.jpg", bytes, &[]).await.status(), StatusCode::CREATED);
    let used = json(app.get_quota(&token, &[]).await).await;
    assert_eq!((used["used_files"].as_i64(), used["used_bytes"].as_i64()), (Some(1), Some(size)));
    assert_eq!(used["owner_type"], "user");

    // Only admins (and the service) name another owner.
    let (_, other) = app.user();
    let user_text = user.to_string();
    let response = app.get_quota(&other, &[("owner_id", user_text.as_str())]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.get_quota(&token, &[("owner_id", user_text.as_str())]).await.status(), StatusCode::OK);
    let response = app.get_quota(&admin, &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_field");
    assert_eq!(app.get_quota(&admin, &[("owner_id", "nope")]).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get_quota(&admin, &[("owner_id", user_text.as_str()), ("owner_type", "robot")]).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(json(app.get_quota(&admin, &[("owner_id", user_text.as_str())]).await).await["used_bytes"], size);
    let service = app.token(Role::Service, Uuid::now_v7());
    assert_eq!(json(app.get_quota(&service, &[("owner_id", user_text.as_str())]).await).await["used_files"], 1);
    assert_eq!(app.get_quota(&service, &[]).await.status(), StatusCode::BAD_REQUEST);
    let vendor = Uuid::now_v7();
    let vendor_quota = json(app.get_quota(&app.token(Role::Vendor, vendor), &[]).await).await;
    assert_eq!(vendor_quota["owner_type"], "vendor");

    // Changing limits.
    let response = app.set_quota(&token, user, &json!({"max_files": 1000})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for (body, code) in [
        (json!({}), "empty_update"),
        (json!({"max_files": -1}), "invalid_field"),
        (json!({"max_bytes": -5}), "invalid_field"),
        (json!({"max_files": 1, "owner_type": "vendor"}), "invalid_field"),
        (json!({"max_files": 1, "owner_type": "robot"}), "invalid_field"),
        (json!({"max_files": "many"}), "bad_request"),
    ] {
        let response = app.set_quota(&admin, user, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let response = app.set_quota(&admin, user, &json!({"max_files": 1})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let changed = json(response).await;
    assert_eq!(
        (changed["max_files"].as_i64(), changed["max_bytes"].as_i64()),
        (Some(1), Some(defaults.default_max_bytes))
    );
    assert_eq!(changed["used_files"], 1);
    let response = app.upload(&token, "user", "b.jpg", images::jpeg(40, 30), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "quota_exceeded");

    // An owner who never uploaded gets a row with the given kind and limits.
    let response = app.set_quota(&admin, vendor, &json!({"max_bytes": 1024, "owner_type": "vendor"})).await;
    let created = json(response).await;
    assert_eq!((created["owner_type"].as_str(), created["max_bytes"].as_i64()), (Some("vendor"), Some(1024)));
    assert_eq!(created["max_files"], defaults.default_max_files);
    let response = app.upload(&app.token(Role::Vendor, vendor), "cloth", "c.jpg", images::jpeg(400, 300), &[]).await;
    assert_eq!(error_code(response).await, "quota_exceeded");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn usage_stays_exact_under_concurrent_uploads_and_deletes(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let mut first = Vec::new();
    for i in 0..8 {
        first.push(app.upload_image(&token, "user", &format!("{i}.jpg"), &[]).await);
    }
    assert_eq!(app.set_quota(&admin, user, &json!({"max_files": 10})).await.status(), StatusCode::OK);

    // Every image deleted twice at once, while twelve uploads of different sizes race for
    // the room the deletions free.
    let deletes = first.iter().chain(first.iter()).map(|id| async {
        let status = app.delete_image(&token, id).await.status();
        assert!(status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND, "{status}");
        status == StatusCode::NO_CONTENT
    });
    let uploads = (0..12u32).map(|i| {
        let token = token.clone();
        let app = &app;
        async move {
            let response = app.upload(&token, "user", "new.jpg", images::jpeg(20 + i, 20), &[]).await;
            let status = response.status();
            assert!(status == StatusCode::CREATED || status == StatusCode::FORBIDDEN, "{status}");
            status == StatusCode::CREATED
        }
    });
    let (deleted, uploaded) = tokio::join!(join_all(deletes), join_all(uploads));
    assert_eq!(deleted.iter().filter(|d| **d).count(), first.len(), "each image deleted exactly once");
    let stored = uploaded.iter().filter(|u| **u).count() as i64;
    assert!(stored >= 2, "at least the two free places were used");

    let quota = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((quota.used_files, quota.used_bytes), live_usage(&app, user).await);
    assert_eq!(quota.used_files, stored);
    assert!(quota.used_files <= 10);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, first.len() as i64);
}
