//! Upload: what is accepted, what is refused, and that a refusal leaves nothing behind.

use api::test_support::{TestApp, error_code, images, json};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::auth::Role;
use shared::model::OwnerType;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_jpeg_upload_is_stored_in_the_seed_layout_with_its_checksum(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let bytes = images::jpeg(640, 480);
    let sha = hex::encode(Sha256::digest(&bytes));

    let response = app
        .upload(&token, "user", "holiday.jpg", bytes.clone(), &[("tags", "red,dress"), ("metadata", r#"{"a":1}"#)])
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body = json(response).await;
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/storage/images/{id}"));
    assert_eq!(body["checksum"]["value"], sha);
    assert_eq!(body["checksum"]["status"], "pending");
    assert_eq!(body["size"], bytes.len());
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!(body["mime_type"], "image/jpeg");
    assert_eq!(body["file_name"], "holiday.jpg");
    assert_eq!(body["tags"], serde_json::json!(["red", "dress"]));
    assert_eq!(body["metadata"]["a"], 1);
    assert_eq!(body["thumbnails"]["status"], "pending");

    let path = format!("images/user/{user}/images/{id}.jpg");
    assert_eq!(body["path"], path);
    assert_eq!(std::fs::read(app.storage.root().join(&path)).unwrap(), bytes);
    assert_eq!(app.stored_file_count().await, 1);
    let event: Value = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'image.uploaded'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(event["payload"]["image_id"], id);
    let quota = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((quota.used_files, quota.used_bytes), (1, bytes.len() as i64));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_file_exactly_at_the_limit_is_accepted_and_one_byte_more_is_refused(pool: PgPool) {
    let bytes = images::png(40, 40);
    let limit = bytes.len();
    let app = TestApp::spawn_with(pool, |c| c.storage.max_file_size = limit as u64).await;
    let (_, token) = app.user();

    let mut over = bytes.clone();
    over.push(0);
    let response = app.upload(&token, "user", "over.png", over, &[]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(response).await, "file_too_large");
    app.assert_nothing_stored().await;

    let response = app.upload(&token, "user", "exact.png", bytes, &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn disguised_files_are_refused_whatever_their_name_or_declared_type(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let cases: [(&str, Vec<u8>); 4] = [
        ("notes.jpg", b"just some text, not a photo".to_vec()),
        ("page.html", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>".to_vec()),
        ("pixel.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec()),
        ("sound.webp", b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec()),
    ];
    for (name, bytes) in cases {
        let response = app.upload(&token, "user", name, bytes, &[]).await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{name}");
        assert_eq!(error_code(response).await, "unsupported_media_type");
    }
    app.assert_nothing_stored().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_png_declared_as_jpeg_is_stored_as_the_png_it_is(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "photo.jpg", images::png(20, 10), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json(response).await;
    assert_eq!(body["mime_type"], "image/png");
    assert!(body["path"].as_str().unwrap().ends_with(".png"));
    assert_eq!(body["file_name"], "photo.jpg");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn truncated_images_are_refused_and_leave_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    for (name, mut bytes) in [("cut.jpg", images::jpeg(300, 200)), ("cut.png", images::png(300, 200))] {
        bytes.truncate(bytes.len() / 2);
        let response = app.upload(&token, "user", name, bytes, &[]).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        assert_eq!(error_code(response).await, "corrupt_image");
    }
    let header_only = images::jpeg(300, 200)[..20].to_vec();
    let response = app.upload(&token, "user", "stub.jpg", header_only, &[]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.assert_nothing_stored().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_small_png_declaring_900_megapixels_is_refused_before_decoding(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let bomb = images::png_claiming(30_000, 30_000);
    assert!(bomb.len() < 100);
    let response = app.upload(&token, "user", "bomb.png", bomb, &[]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(response).await, "image_too_large");
    app.assert_nothing_stored().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_empty_file_or_a_missing_file_part_is_a_bad_request(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "empty.jpg", Vec::new(), &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "empty_file");

    let form = reqwest::multipart::Form::new().text("image_type", "user");
    let response =
        app.client.post(app.url("/storage/images")).bearer_auth(&token).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_file");

    let response = app.upload(&token, "user", "a.png", images::png(2, 2), &[("metadata", "[1,2]")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_field");
    app.assert_nothing_stored().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn twenty_parallel_uploads_against_a_quota_of_ten_store_exactly_ten(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.quota.default_max_files = 10).await;
    let (user, token) = app.user();
    let bytes = images::png(16, 16);
    let names: Vec<String> = (0..20).map(|i| format!("{i}.png")).collect();
    let uploads = names.iter().map(|name| app.upload(&token, "user", name, bytes.clone(), &[]));
    let responses = futures::future::join_all(uploads).await;

    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => assert_eq!(error_code(response).await, "quota_exceeded"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 10);
    assert_eq!(app.row_count().await, 10);
    assert_eq!(app.stored_file_count().await, 10);
    let quota = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((quota.used_files, quota.used_bytes), (10, 10 * bytes.len() as i64));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_retried_upload_with_the_same_idempotency_key_returns_the_first_result(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let bytes = images::jpeg(64, 64);
    let key = [("Idempotency-Key", "upload-42")];

    let first = app.upload_with_headers(&token, "user", "a.jpg", bytes.clone(), &[], &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first).await;

    let retry = app.upload_with_headers(&token, "user", "a.jpg", bytes.clone(), &[], &key).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(json(retry).await["id"], first["id"]);

    let other = app.upload_with_headers(&token, "user", "b.png", images::png(8, 8), &[], &key).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(other).await, "idempotency_key_reused");

    assert_eq!(app.row_count().await, 1);
    assert_eq!(app.stored_file_count().await, 1);
    assert_eq!(app.outbox_count().await, 1);
    assert_eq!(app.quota(user, OwnerType::User).await.unwrap().used_files, 1);

    // Another caller's identical key is a different upload.
    let (_, stranger) = app.user();
    let theirs = app.upload_with_headers(&stranger, "user", "a.jpg", bytes, &[], &key).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert_ne!(json(theirs).await["id"], first["id"]);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_retries_with_one_idempotency_key_store_one_image(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let bytes = images::jpeg(64, 64);
    let key = [("Idempotency-Key", "same")];
    let attempts = (0..8).map(|_| app.upload_with_headers(&token, "user", "a.jpg", bytes.clone(), &[], &key));
    let mut ids = Vec::new();
    for response in futures::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(json(response).await["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.row_count().await, 1);
    assert_eq!(app.stored_file_count().await, 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn tokens_are_required_and_roles_decide_the_image_type(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let png = images::png(8, 8);

    let form = reqwest::multipart::Form::new().text("image_type", "user");
    let anonymous = app.client.post(app.url("/storage/images")).multipart(form).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(anonymous).await, "unauthorized");

    let forged = shared::auth::TokenKeys::new(&secrecy::SecretString::from("another-secret"));
    let forged = forged.mint(Uuid::now_v7(), Role::Admin, chrono::Duration::minutes(5));
    assert_eq!(app.upload(&forged, "user", "a.png", png.clone(), &[]).await.status(), StatusCode::UNAUTHORIZED);
    let expired = shared::auth::TokenKeys::new(&app.config.auth.jwt_secret).mint(
        Uuid::now_v7(),
        Role::User,
        chrono::Duration::minutes(-5),
    );
    assert_eq!(app.upload(&expired, "user", "a.png", png.clone(), &[]).await.status(), StatusCode::UNAUTHORIZED);

    let (_, user) = app.user();
    let response = app.upload(&user, "cloth", "a.png", png.clone(), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "forbidden");
    let vendor = app.token(Role::Vendor, Uuid::now_v7());
    assert_eq!(app.upload(&vendor, "user", "a.png", png.clone(), &[]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.upload(&vendor, "result", "a.png", png.clone(), &[]).await.status(), StatusCode::FORBIDDEN);
    app.assert_nothing_stored().await;

    assert_eq!(app.upload(&vendor, "cloth", "a.png", png.clone(), &[]).await.status(), StatusCode::CREATED);
    let service = app.token(Role::Service, Uuid::now_v7());
    let missing_owner = app.upload(&service, "result", "a.png", png.clone(), &[]).await;
    assert_eq!(missing_owner.status(), StatusCode::BAD_REQUEST);
    let owner = Uuid::now_v7().to_string();
    let fields = [("owner_id", owner.as_str()), ("owner_type", "vendor")];
    let response = app.upload(&service, "result", "a.png", png, &fields).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json(response).await;
    assert_eq!(body["owner_id"], owner);
    assert!(body["path"].as_str().unwrap().starts_with(&format!("images/result/vendor/{owner}/images/")));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn metadata_is_visible_to_its_owner_admins_and_everyone_when_public(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, owner) = app.user();
    let (_, stranger) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());

    let private = json(app.upload(&owner, "user", "p.png", images::png(8, 8), &[]).await).await;
    let private = private["id"].as_str().unwrap();
    let public = json(app.upload(&owner, "user", "q.png", images::png(8, 8), &[("is_public", "true")]).await).await;
    let public = public["id"].as_str().unwrap();

    assert_eq!(app.get_image(&owner, private).await.status(), StatusCode::OK);
    assert_eq!(app.get_image(&admin, private).await.status(), StatusCode::OK);
    let hidden = app.get_image(&stranger, private).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    let unknown = app.get_image(&stranger, &Uuid::now_v7().to_string()).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(hidden).await, json(unknown).await, "a hidden image looks exactly like a missing one");
    assert_eq!(app.get_image(&stranger, public).await.status(), StatusCode::OK);
    let bad_id = app.get_image(&owner, "not-a-uuid").await;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(bad_id).await, "bad_request");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_openapi_spec_is_served(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let spec: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(spec["paths"]["/storage/images"]["post"].is_object());
    assert!(spec["paths"]["/storage/images/{id}"]["get"].is_object());
}

/// With `auth.issuer`, `auth.audience` and `auth.maxLifetimeSecs` configured, only tokens
/// that carry both claims and expire soon enough are accepted.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn configured_issuer_audience_and_lifetime_are_enforced(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.auth.issuer = Some("stayler-app".to_owned());
        c.auth.audience = Some("stayler-storage".to_owned());
        c.auth.max_lifetime_secs = 3600;
    })
    .await;
    let png = images::png(8, 8);
    let (_, token) = app.user();
    assert_eq!(app.upload(&token, "user", "a.png", png.clone(), &[]).await.status(), StatusCode::CREATED);

    let keys = shared::auth::TokenKeys::new(&app.config.auth.jwt_secret);
    let no_claims = keys.mint(Uuid::now_v7(), Role::User, chrono::Duration::minutes(5));
    assert_eq!(app.upload(&no_claims, "user", "a.png", png.clone(), &[]).await.status(), StatusCode::UNAUTHORIZED);
    let configured = shared::auth::TokenKeys::from_config(&app.config.auth);
    let too_long = configured.mint(Uuid::now_v7(), Role::User, chrono::Duration::hours(2));
    assert_eq!(app.upload(&too_long, "user", "a.png", png, &[]).await.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_upload_answer_carries_the_url_of_the_original_also_on_a_replay(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let bytes = images::jpeg(64, 48);
    let fetch = |url: &Value| {
        let url = url["url"].as_str().expect("a url");
        let path = url.strip_prefix(&app.config.server.base_url).expect("under server.baseUrl").to_owned();
        app.client.get(app.url(&path)).send()
    };
    let key = [("Idempotency-Key", "with-url")];

    let response = app.upload_with_headers(&token, "user", "a.jpg", bytes.clone(), &[], &key).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json(response).await;
    let url = &body["original_url"];
    assert_eq!(
        (&url["signed"], &url["variant"], &url["access_type"]),
        (&Value::from(true), &"original".into(), &"view".into())
    );
    assert!(url["expires_at"].is_string());
    let served = fetch(url).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.unwrap(), bytes);
    // The metadata read later does not carry it.
    assert!(json(app.get_image(&token, body["id"].as_str().unwrap()).await).await.get("original_url").is_none());

    let replay = app.upload_with_headers(&token, "user", "a.jpg", bytes.clone(), &[], &key).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed = json(replay).await;
    assert_eq!(fetch(&replayed["original_url"]).await.unwrap().status(), StatusCode::OK);

    let public = json(app.upload(&token, "user", "b.png", images::png(8, 8), &[("is_public", "true")]).await).await;
    let url = &public["original_url"];
    assert_eq!((&url["signed"], &url["expires_at"]), (&Value::from(false), &Value::Null));
    assert_eq!(fetch(url).await.unwrap().bytes().await.unwrap(), images::png(8, 8));
}
