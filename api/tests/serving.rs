//! Signed URLs and file serving: issuing, every way a URL can be refused, the HTTP
//! semantics of serving (Range, If-None-Match, HEAD, downloads), public serving, revoking
//! URLs, and the serving cache following changes made in the database.

use std::time::Duration;

use api::test_support::{TestApp, error_code, images, json};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, RANGE,
};
use secrecy::SecretString;
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::auth::Role;
use shared::db::storage_signed_urls;
use shared::db::storage_thumbnails::{self, ThumbnailRecord};
use shared::model::ImageFormat;
use shared::model::ImageId;
use shared::signing::{AccessType, Grant, SigningKeys, Variant};
use shared::storage::StorageKey;
use shared::test_support::eventually;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// An uploaded image and what a test needs of it.
struct Uploaded {
    id: Uuid,
    owner: Uuid,
    token: String,
    bytes: Vec<u8>,
}

async fn upload(app: &TestApp, extra: &[(&str, &str)]) -> Uploaded {
    let (owner, token) = app.user();
    let bytes = images::jpeg(320, 240);
    let response = app.upload(&token, "user", "dress.jpg", bytes.clone(), extra).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = json(response).await["id"].as_str().unwrap().parse().unwrap();
    Uploaded { id, owner, token, bytes }
}

/// `GET /storage/images/{id}/{endpoint}?{query}`.
async fn issue(app: &TestApp, token: &str, id: Uuid, endpoint: &str, query: &str) -> reqwest::Response {
    let url = app.url(&format!("/storage/images/{id}/{endpoint}?{query}"));
    app.client.get(url).bearer_auth(token).send().await.unwrap()
}

/// The path of a signed URL the API issued (URLs carry `server.baseUrl`, not the test port).
async fn signed_path(app: &TestApp, token: &str, id: Uuid, query: &str) -> String {
    let response = issue(app, token, id, "signed-url", query).await;
    assert_eq!(response.status(), StatusCode::OK);
    path_of(app, &json(response).await)
}

fn path_of(app: &TestApp, body: &Value) -> String {
    let url = body["url"].as_str().expect("a url");
    url.strip_prefix(&app.config.server.base_url).expect("the URL starts with server.baseUrl").to_owned()
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

fn keys(app: &TestApp) -> SigningKeys {
    SigningKeys::new(&app.config.signed_urls.key_id, &app.config.storage.signed_url_key, [])
}

fn grant(id: Uuid, access: AccessType, expires: i64) -> Grant<'static> {
    Grant { image_id: ImageId(id), variant: Variant::Original, access, expires, generation: 0 }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn header(response: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> &str {
    response.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// Writes a thumbnail file and its row, as the worker would.
async fn add_thumbnail(app: &TestApp, image: &Uploaded, size: &str, bytes: &[u8]) {
    let key = StorageKey::Thumbnail {
        image_type: shared::model::ImageType::User,
        owner: shared::model::Owner { id: shared::model::OwnerId(image.owner), kind: shared::model::OwnerType::User },
        image_id: ImageId(image.id),
        size: size.to_owned(),
        format: ImageFormat::Jpeg,
    };
    app.storage.write(&key, bytes).await.unwrap();
    let record = ThumbnailRecord {
        size_name: size.to_owned(),
        file_path: key.to_db_path(),
        file_size: bytes.len() as i64,
        format: ImageFormat::Jpeg,
        width: 40,
        height: 30,
        checksum: sha256(bytes),
    };
    storage_thumbnails::upsert(&app.pool, ImageId(image.id), &record).await.unwrap();
}

/// Sends `GET {path}` byte for byte (no client-side normalisation of `..` or `%2F`) and
/// returns the status and the body.
async fn raw_get(app: &TestApp, path: &str) -> (u16, String) {
    let address = app.base_url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_signed_url_serves_the_original_with_its_headers_and_is_recorded_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;

    let response = issue(&app, &image.token, image.id, "signed-url", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!((body["variant"].as_str(), body["access_type"].as_str()), (Some("original"), Some("view")));
    assert_eq!(body["signed"], true);
    let expires_at: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = expires_at.timestamp() - now();
    assert!((3590..=3600 + 300).contains(&lifetime), "lifetime {lifetime}");
    assert_eq!(expires_at.timestamp() % 300, 0, "rounded to the expiry window");
    let path = path_of(&app, &body);
    assert!(path.starts_with(&format!("/storage/signed/{}.original.v.", image.id)), "{path}");

    let response = get(&app, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, CONTENT_TYPE), "image/jpeg");
    assert_eq!(header(&response, CONTENT_LENGTH), image.bytes.len().to_string());
    assert_eq!(header(&response, ETAG), format!("\"{}\"", sha256(&image.bytes)));
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "content-security-policy"), "default-src 'none'; sandbox");
    assert_eq!(header(&response, ACCEPT_RANGES), "bytes");
    assert!(response.headers().get(CONTENT_DISPOSITION).is_none());
    let max_age: i64 = header(&response, CACHE_CONTROL).strip_prefix("private, max-age=").unwrap().parse().unwrap();
    assert!(max_age > 0 && max_age <= expires_at.timestamp() - now() + 1, "max-age {max_age}");
    assert_eq!(response.bytes().await.unwrap(), image.bytes);
    // Served twice: once from disk, once from the file cache.
    assert_eq!(get(&app, &path).await.bytes().await.unwrap(), image.bytes);

    // Asked again within the window: the same URL, still one row.
    assert_eq!(signed_path(&app, &image.token, image.id, "").await, path);
    let issued = storage_signed_urls::list_for_image(&app.pool, ImageId(image.id)).await.unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!((issued[0].variant.as_str(), issued[0].access_type.as_str()), ("original", "view"));
    assert_eq!((issued[0].key_id.as_str(), issued[0].requested_by), ("k1", image.owner));
    assert_eq!(issued[0].expires_at, expires_at);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_tampered_field_of_a_signed_path_is_forbidden(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let other = upload(&app, &[]).await;
    add_thumbnail(&app, &image, "small", &images::jpeg(40, 30)).await;
    let path = signed_path(&app, &image.token, image.id, "").await;
    assert_eq!(get(&app, &path).await.status(), StatusCode::OK);
    let segment = path.strip_prefix("/storage/signed/").unwrap();
    let fields: Vec<&str> = segment.split('.').collect();
    let later = (fields[3].parse::<i64>().unwrap() + 3600).to_string();
    let other_id = other.id.to_string();
    let signature = fields[5];
    let flipped = format!("{}{}", if signature.starts_with('A') { "B" } else { "A" }, &signature[1..]);
    for (index, value, code) in [
        (0, other_id.as_str(), "invalid_signature"),
        (1, "small", "invalid_signature"),
        (2, "d", "invalid_signature"),
        (3, later.as_str(), "invalid_signature"),
        (3, "1000", "invalid_signature"),
        (4, "k9", "unknown_key"),
        (5, flipped.as_str(), "invalid_signature"),
    ] {
        let mut tampered = fields.clone();
        tampered[index] = value;
        let response = get(&app, &format!("/storage/signed/{}", tampered.join("."))).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "field {index} = {value}");
        assert_eq!(header(&response, CACHE_CONTROL), "no-store");
        assert_eq!(error_code(response).await, code, "field {index} = {value}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_expired_url_is_gone_and_an_unknown_key_is_forbidden(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let expired = keys(&app).sign(&grant(image.id, AccessType::View, now() - 1));
    let response = get(&app, &format!("/storage/signed/{expired}")).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(error_code(response).await, "url_expired");

    let stranger = SigningKeys::new("k7", &app.config.storage.signed_url_key, []);
    let unknown = stranger.sign(&grant(image.id, AccessType::View, now() + 600));
    let response = get(&app, &format!("/storage/signed/{unknown}")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "unknown_key");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_url_used_for_the_other_access_type_is_forbidden(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let view = signed_path(&app, &image.token, image.id, "access_type=view").await;
    let response = get(&app, &format!("{view}?access_type=download")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "wrong_access_type");
    assert_eq!(get(&app, &format!("{view}?access_type=view")).await.status(), StatusCode::OK);

    let download = signed_path(&app, &image.token, image.id, "access_type=download").await;
    assert_ne!(download, view);
    let response = get(&app, &format!("{download}?access_type=view")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "wrong_access_type");
    let response = get(&app, &format!("{download}?access_type=both")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_access_type");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_url_signed_with_the_previous_key_stays_valid_after_rotation(pool: PgPool) {
    let old_secret = SecretString::from("dev-the-previous-key");
    let app = TestApp::spawn_with(pool, |config| {
        config.signed_urls.key_id = "k2".to_owned();
        config.storage.signed_url_key = SecretString::from("dev-the-current-key");
        config.signed_urls.previous_keys.insert("k1".to_owned(), SecretString::from("dev-the-previous-key"));
    })
    .await;
    let image = upload(&app, &[]).await;
    let before_rotation = SigningKeys::new("k1", &old_secret, []);
    let old = before_rotation.sign(&grant(image.id, AccessType::View, now() + 600));
    let response = get(&app, &format!("/storage/signed/{old}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), image.bytes);

    let new = signed_path(&app, &image.token, image.id, "").await;
    assert_eq!(new.split('.').nth(4), Some("k2"), "new URLs are signed with the active key");
    assert_eq!(get(&app, &new).await.status(), StatusCode::OK);
    // The previous key's id with the current secret is a forgery.
    let forged = SigningKeys::new("k1", &app.config.storage.signed_url_key, []);
    let forged = forged.sign(&grant(image.id, AccessType::View, now() + 600));
    assert_eq!(get(&app, &format!("/storage/signed/{forged}")).await.status(), StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn traversal_attempts_never_reach_a_file(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[("is_public", "true")]).await;
    let secret = b"not an image, never to be served";
    std::fs::write(app.storage.root().join("secret.txt"), secret).unwrap();
    std::fs::write(app.storage.root().parent().unwrap().join("secret.txt"), secret).unwrap();
    let path = signed_path(&app, &image.token, image.id, "").await;
    let segment = path.strip_prefix("/storage/signed/").unwrap();
    let rest = segment.split_once('.').unwrap().1;
    let id = image.id;
    let attempts = [
        "/storage/signed/../secret.txt".to_owned(),
        "/storage/signed/../../secret.txt".to_owned(),
        "/storage/signed/..%2F..%2Fsecret.txt".to_owned(),
        "/storage/signed/%2e%2e%2f%2e%2e%2fsecret.txt".to_owned(),
        "/storage/signed//etc/passwd".to_owned(),
        "/storage/signed/%2Fetc%2Fpasswd".to_owned(),
        format!("/storage/signed/{segment}/../../secret.txt"),
        format!("/storage/signed/{segment}%2F..%2F..%2Fsecret.txt"),
        format!("/storage/signed/..%2F{segment}"),
        format!("/storage/signed/{id}.....%2Fsecret.txt.{rest}"),
        format!("/storage/signed/{}", segment.replacen(".original.", "...%2F..%2Fsecret.", 1)),
        format!("/storage/signed/{}", segment.replacen(".original.", "./etc/passwd.", 1)),
        format!("/public/{id}/..%2F..%2Fsecret.txt"),
        format!("/public/{id}/../../secret.txt"),
        "/public/..%2F..%2Fsecret.txt/original".to_owned(),
        "/public/%2Fetc%2Fpasswd/original".to_owned(),
        format!("/public/{id}/%2Fetc%2Fpasswd"),
    ];
    for attempt in attempts {
        let (status, answer) = raw_get(&app, &attempt).await;
        assert!(matches!(status, 400 | 403 | 404), "{attempt}: {status}");
        assert!(!answer.contains("never to be served") && !answer.contains("root:"), "{attempt}: {answer}");
        assert!(answer.contains("\"error\""), "{attempt}: a JSON error, got {answer}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ranges_and_conditional_requests_follow_http_semantics(pool: PgPool) {
    // Once with small files kept in memory (the default), once streamed from disk.
    for file_cache in [true, false] {
        let app = TestApp::spawn_with(pool.clone(), |config| {
            if !file_cache {
                config.serving.small_file_max_bytes = 0;
            }
        })
        .await;
        let image = upload(&app, &[]).await;
        let len = image.bytes.len();
        let etag = format!("\"{}\"", sha256(&image.bytes));
        let url = app.url(&signed_path(&app, &image.token, image.id, "").await);
        let ranged = |range: &str| app.client.get(&url).header(RANGE, range.to_owned()).send();

        let response = ranged("bytes=0-99").await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "file cache {file_cache}");
        assert_eq!(header(&response, CONTENT_RANGE), format!("bytes 0-99/{len}"));
        assert_eq!(header(&response, CONTENT_LENGTH), "100");
        assert_eq!(response.bytes().await.unwrap(), image.bytes[..100]);

        let response = ranged("bytes=-10").await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&response, CONTENT_RANGE), format!("bytes {}-{}/{len}", len - 10, len - 1));
        assert_eq!(response.bytes().await.unwrap(), image.bytes[len - 10..]);

        let response = ranged(&format!("bytes={}-", len - 5)).await.unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(response.bytes().await.unwrap(), image.bytes[len - 5..]);

        let response = ranged(&format!("bytes={len}-")).await.unwrap();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&response, CONTENT_RANGE), format!("bytes */{len}"));
        assert_eq!(error_code(response).await, "range_not_satisfiable");

        // Several ranges, or an If-Range for other bytes: the whole file.
        let response = ranged("bytes=0-1,5-6").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.bytes().await.unwrap(), image.bytes);
        let response = app.client.get(&url).header(RANGE, "bytes=0-9").header(IF_RANGE, "\"other\"").send();
        let response = response.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = app.client.get(&url).header(RANGE, "bytes=0-9").header(IF_RANGE, &etag).send();
        assert_eq!(response.await.unwrap().status(), StatusCode::PARTIAL_CONTENT);

        let response = app.client.get(&url).header(IF_NONE_MATCH, &etag).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&response, ETAG), etag);
        assert!(header(&response, CACHE_CONTROL).starts_with("private, max-age="));
        assert!(response.bytes().await.unwrap().is_empty());
        let response = app.client.get(&url).header(IF_NONE_MATCH, "\"x\", W/\"y\"").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let response = app.client.head(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, CONTENT_LENGTH), len.to_string());
        assert_eq!(header(&response, CONTENT_TYPE), "image/jpeg");
        assert_eq!(header(&response, ETAG), etag);
        assert!(response.bytes().await.unwrap().is_empty());
        app.stop().await;
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_download_carries_the_utf8_file_name_and_an_ascii_fallback(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    sqlx::query("UPDATE storage_files SET original_name = 'Платье \"лето\".jpg' WHERE id = $1")
        .bind(image.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let path = signed_path(&app, &image.token, image.id, "access_type=download").await;
    assert!(path.contains(".original.d."), "{path}");
    let expected = "attachment; filename=\"______ ______.jpg\"; \
                    filename*=UTF-8''%D0%9F%D0%BB%D0%B0%D1%82%D1%8C%D0%B5%20%22%D0%BB%D0%B5%D1%82%D0%BE%22.jpg";
    // The rename reaches the cache through its notification.
    eventually(Duration::from_secs(30), "the download carries the new name", || async {
        header(&get(&app, &path).await, CONTENT_DISPOSITION) == expected
    })
    .await;
    let response = get(&app, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), image.bytes);

    // A name stored before uploads dropped format characters: served without them, so a
    // right-to-left override cannot dress `gpj.exe` up as an image in a save dialog.
    sqlx::query("UPDATE storage_files SET original_name = E'me\\u202Egpj.exe' WHERE id = $1")
        .bind(image.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let expected = "attachment; filename=\"megpj.exe\"; filename*=UTF-8''megpj.exe";
    eventually(Duration::from_secs(30), "the download drops the override", || async {
        header(&get(&app, &path).await, CONTENT_DISPOSITION) == expected
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn thumbnails_are_served_with_their_own_checksum_once_made(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let original = signed_path(&app, &image.token, image.id, "").await;
    assert_eq!(get(&app, &original).await.status(), StatusCode::OK);

    let response = issue(&app, &image.token, image.id, "signed-url", "variant=small").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, "variant_not_ready");

    let small = images::jpeg(40, 30);
    add_thumbnail(&app, &image, "small", &small).await;
    let path = signed_path(&app, &image.token, image.id, "variant=small&access_type=download").await;
    // The image was cached without thumbnails; the new row's notification refreshes it.
    eventually(Duration::from_secs(5), "the thumbnail is served", || async {
        get(&app, &path).await.status() == StatusCode::OK
    })
    .await;
    let response = get(&app, &path).await;
    assert_eq!(header(&response, ETAG), format!("\"{}\"", sha256(&small)));
    assert_eq!(
        header(&response, CONTENT_DISPOSITION),
        "attachment; filename=\"dress_small.jpg\"; filename*=UTF-8''dress_small.jpg"
    );
    assert_eq!(response.bytes().await.unwrap(), small);

    sqlx::query("UPDATE storage_files SET thumbnail_status = 'ready' WHERE id = $1")
        .bind(image.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let response = issue(&app, &image.token, image.id, "signed-url", "variant=large").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "variant_not_found");
    // A URL for a variant that does not exist (signed by us, but never issued) finds nothing.
    let grant = Grant { variant: Variant::Thumbnail("large"), ..grant(image.id, AccessType::View, now() + 600) };
    let response = get(&app, &format!("/storage/signed/{}", keys(&app).sign(&grant))).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_public_path_serves_public_images_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let public = upload(&app, &[("is_public", "true")]).await;
    let private = upload(&app, &[]).await;

    let (_, stranger) = app.user();
    let response = issue(&app, &stranger, public.id, "access", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!((body["signed"].as_bool(), body["expires_at"].is_null()), (Some(false), true));
    let path = path_of(&app, &body);
    assert_eq!(path, format!("/public/{}/original", public.id));
    let response = get(&app, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, CACHE_CONTROL), "public, max-age=3600");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "content-security-policy"), "default-src 'none'; sandbox");
    assert_eq!(header(&response, ETAG), format!("\"{}\"", sha256(&public.bytes)));
    assert_eq!(response.bytes().await.unwrap(), public.bytes);
    assert_eq!(app.client.head(app.url(&path)).send().await.unwrap().status(), StatusCode::OK);

    // A private image: no public URL, and /access hands its owner a signed one.
    let response = get(&app, &format!("/public/{}/original", private.id)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "not_found");
    let body = json(issue(&app, &private.token, private.id, "access", "").await).await;
    assert_eq!(body["signed"], true);
    assert_eq!(get(&app, &path_of(&app, &body)).await.status(), StatusCode::OK);

    for missing in [
        format!("/public/{}/original", Uuid::now_v7()),
        format!("/public/{}/small", public.id),
        format!("/public/{}/original", public.id.to_string().to_uppercase()),
        "/public/not-an-id/original".to_owned(),
    ] {
        assert_eq!(get(&app, &missing).await.status(), StatusCode::NOT_FOUND, "{missing}");
    }

    // Made private: gone from the public path at once (through the cache's notification).
    sqlx::query("UPDATE storage_files SET is_public = false WHERE id = $1")
        .bind(public.id)
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the public path forgets the image", || async {
        get(&app, &path).await.status() == StatusCode::NOT_FOUND
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deleted_image_is_not_served_even_from_a_cached_url(pool: PgPool) {
    // Entries would live an hour: only the notification can make the deletion visible.
    let app = TestApp::spawn_with(pool, |config| config.serving.cache_ttl_secs = 3600).await;
    let image = upload(&app, &[("is_public", "true")]).await;
    let signed = signed_path(&app, &image.token, image.id, "").await;
    let public = format!("/public/{}/original", image.id);
    assert_eq!(get(&app, &signed).await.status(), StatusCode::OK);
    assert_eq!(get(&app, &public).await.status(), StatusCode::OK);

    sqlx::query("UPDATE storage_files SET deleted_at = now() WHERE id = $1")
        .bind(image.id)
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(2), "both URLs answer 404", || async {
        get(&app, &signed).await.status() == StatusCode::NOT_FOUND
            && get(&app, &public).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    let response = get(&app, &signed).await;
    assert_eq!(error_code(response).await, "not_found");
    let response = issue(&app, &image.token, image.id, "signed-url", "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_cache_is_cleared_when_the_change_listener_reconnects(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.serving.cache_ttl_secs = 3600).await;
    let image = upload(&app, &[]).await;
    let signed = signed_path(&app, &image.token, image.id, "").await;
    assert_eq!(get(&app, &signed).await.status(), StatusCode::OK);

    // Cut the listener's connection, and change the image while nobody may be listening.
    eventually(Duration::from_secs(5), "the listener is connected", || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%storage_files_changed%'",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .is_some()
    })
    .await;
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%storage_files_changed%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(cut, 1);
    sqlx::query("UPDATE storage_files SET deleted_at = now() WHERE id = $1")
        .bind(image.id)
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the deleted image answers 404", || async {
        get(&app, &signed).await.status() == StatusCode::NOT_FOUND
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn bad_requests_for_urls_are_refused_with_their_reason(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let max = app.config.signed_urls.max_ttl_secs;
    for (query, status, code) in [
        (format!("ttl={}", max + 1), StatusCode::BAD_REQUEST, "ttl_too_long"),
        ("ttl=0".to_owned(), StatusCode::BAD_REQUEST, "invalid_ttl"),
        ("variant=huge".to_owned(), StatusCode::BAD_REQUEST, "invalid_variant"),
        ("variant=..".to_owned(), StatusCode::BAD_REQUEST, "invalid_variant"),
        ("access_type=print".to_owned(), StatusCode::BAD_REQUEST, "invalid_access_type"),
    ] {
        let response = issue(&app, &image.token, image.id, "signed-url", &query).await;
        assert_eq!(response.status(), status, "{query}");
        assert_eq!(error_code(response).await, code, "{query}");
    }
    let response = issue(&app, &image.token, image.id, "signed-url", &format!("ttl={max}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = issue(&app, &image.token, image.id, "signed-url", "ttl=-5").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app.client.get(app.url(&format!("/storage/images/{}/signed-url", image.id))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn another_owners_private_image_gets_no_url(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let image = upload(&app, &[]).await;
    let (_, stranger) = app.user();
    for endpoint in ["signed-url", "access"] {
        let response = issue(&app, &stranger, image.id, endpoint, "").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{endpoint}");
        assert_eq!(error_code(response).await, "not_found");
        let response = issue(&app, &stranger, Uuid::now_v7(), endpoint, "").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{endpoint} of a missing image");
    }
    let admin = app.token(Role::Admin, Uuid::now_v7());
    assert_eq!(issue(&app, &admin, image.id, "signed-url", "").await.status(), StatusCode::OK);
    assert!(storage_signed_urls::list_for_image(&app.pool, ImageId(image.id)).await.unwrap().len() == 1);
}

/// `POST /storage/images/{id}/revoke-urls`.
async fn revoke(app: &TestApp, token: &str, id: Uuid) -> reqwest::Response {
    app.client.post(app.url(&format!("/storage/images/{id}/revoke-urls"))).bearer_auth(token).send().await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn revoked_urls_are_refused_on_every_replica_and_new_ones_work(pool: PgPool) {
    // Entries would live an hour: only the notification can tell the second replica.
    let a = TestApp::spawn_with(pool.clone(), |config| config.serving.cache_ttl_secs = 3600).await;
    let files = a.config.storage.base_path.clone();
    let b = TestApp::spawn_with(pool, move |config| {
        config.serving.cache_ttl_secs = 3600;
        config.storage.base_path = files;
    })
    .await;
    let image = upload(&a, &[]).await;
    let view = signed_path(&a, &image.token, image.id, "").await;
    let download = signed_path(&a, &image.token, image.id, "access_type=download").await;
    for (app, path) in [(&a, &view), (&a, &download), (&b, &view), (&b, &download)] {
        assert_eq!(get(app, path).await.status(), StatusCode::OK, "{path}");
    }

    // Only who may change the image may revoke its URLs; others learn nothing of it.
    let (_, stranger) = a.user();
    assert_eq!(revoke(&a, &stranger, image.id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(revoke(&a, &image.token, Uuid::now_v7()).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&a, &view).await.status(), StatusCode::OK);

    let response = revoke(&a, &image.token, image.id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    assert_eq!((body["url_generation"].as_i64(), body["revoked_urls"].as_u64()), (Some(1), Some(2)), "{body}");
    // At once on the replica that revoked, as soon as the notification arrives on the other.
    let response = get(&a, &view).await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(error_code(response).await, "url_revoked");
    eventually(Duration::from_secs(5), "the other replica refuses both URLs", || async {
        get(&b, &view).await.status() == StatusCode::GONE && get(&b, &download).await.status() == StatusCode::GONE
    })
    .await;
    assert_eq!(get(&a, &download).await.status(), StatusCode::GONE);

    // A URL asked for now carries the new generation and works everywhere.
    let fresh = signed_path(&a, &image.token, image.id, "").await;
    assert_ne!(fresh, view, "the same window, but another generation");
    assert_eq!(fresh.split('.').nth(4), Some("1"), "{fresh}");
    assert_eq!(get(&a, &fresh).await.status(), StatusCode::OK);
    assert_eq!(get(&b, &fresh).await.status(), StatusCode::OK);
    let issued = storage_signed_urls::list_for_image(&a.pool, ImageId(image.id)).await.unwrap();
    let states: Vec<(i32, bool)> = issued.iter().map(|url| (url.url_generation, url.revoked_at.is_some())).collect();
    assert_eq!(states, [(0, true), (0, true), (1, false)]);

    // Admins may revoke any image's URLs.
    let admin = a.token(Role::Admin, Uuid::now_v7());
    let body = json(revoke(&a, &admin, image.id).await).await;
    assert_eq!((body["url_generation"].as_i64(), body["revoked_urls"].as_u64()), (Some(2), Some(1)), "{body}");
    assert_eq!(get(&a, &fresh).await.status(), StatusCode::GONE);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn making_an_image_private_revokes_the_urls_signed_while_it_was_public(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.serving.cache_ttl_secs = 3600).await;
    let image = upload(&app, &[("is_public", "true")]).await;
    // Anyone could read it, so anyone could have had a URL signed.
    let (_, reader) = app.user();
    let theirs = signed_path(&app, &reader, image.id, "").await;
    let owners = signed_path(&app, &image.token, image.id, "").await;
    let update = |body: Value| {
        app.client.put(app.url(&format!("/storage/images/{}", image.id))).bearer_auth(&image.token).json(&body).send()
    };

    // Other changes, and making it public again, leave the URLs alone.
    assert_eq!(update(serde_json::json!({"tags": ["summer"]})).await.unwrap().status(), StatusCode::OK);
    assert_eq!(update(serde_json::json!({"is_public": true})).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(&app, &theirs).await.status(), StatusCode::OK);

    assert_eq!(update(serde_json::json!({"is_public": false})).await.unwrap().status(), StatusCode::OK);
    for path in [&theirs, &owners] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::GONE, "{path}");
        assert_eq!(error_code(response).await, "url_revoked");
    }
    // The reader may no longer see it; its owner gets working URLs.
    assert_eq!(issue(&app, &reader, image.id, "signed-url", "").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &signed_path(&app, &image.token, image.id, "").await).await.status(), StatusCode::OK);
    assert_eq!(update(serde_json::json!({"is_public": false})).await.unwrap().status(), StatusCode::OK);
    let generation: i32 = sqlx::query_scalar("SELECT url_generation FROM storage_files WHERE id = $1")
        .bind(image.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(generation, 1, "only the change from public to private revokes");
}
