//! Bulk requests: deleting, changing and publishing many images at once, each exactly as its
//! single-image endpoint would; the access URLs of many images in one call; and the bound
//! on the ids one request may name.

use api::test_support::{TestApp, error_code, images, json};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::auth::Role;
use shared::db::storage_thumbnails::{self, ThumbnailRecord};
use shared::model::{ImageFormat, ImageId, OwnerType};
use sqlx::PgPool;
use uuid::Uuid;

async fn bulk(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url("/storage/images/bulk")).bearer_auth(token).json(body).send().await.unwrap()
}

async fn batch_urls(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url("/storage/images/signed-urls")).bearer_auth(token).json(body).send().await.unwrap()
}

/// The JSON body of an answer that must be 200.
async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `(id, status, error code)` of each outcome of a bulk answer.
fn outcomes(body: &Value) -> Vec<(String, String, Option<String>)> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let code = r["error"]["code"].as_str().map(str::to_owned);
            (r["id"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned(), code)
        })
        .collect()
}

fn outcome(id: &str, status: &str, code: Option<&str>) -> (String, String, Option<String>) {
    (id.to_owned(), status.to_owned(), code.map(str::to_owned))
}

async fn deletion_events(app: &TestApp) -> Vec<String> {
    let events: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    events.iter().map(|event| event["payload"]["image_id"].as_str().unwrap().to_owned()).collect()
}

/// Writes a thumbnail file and its row, as the worker would, and marks the image ready.
async fn add_thumbnail(app: &TestApp, id: &str, size: &str) -> Vec<u8> {
    let file = shared::db::storage_files::get(&app.pool, ImageId(id.parse().unwrap())).await.unwrap().unwrap();
    let bytes = images::jpeg(20, 15);
    let key = file.thumbnail_key(size, ImageFormat::Jpeg);
    app.storage.write(&key, &bytes).await.unwrap();
    let record = ThumbnailRecord {
        size_name: size.to_owned(),
        file_path: key.to_db_path(),
        file_size: bytes.len() as i64,
        format: ImageFormat::Jpeg,
        width: 20,
        height: 15,
        checksum: hex::encode(Sha256::digest(&bytes)),
    };
    storage_thumbnails::upsert(&app.pool, file.id, &record).await.unwrap();
    sqlx::query("UPDATE storage_files SET thumbnail_status = 'ready' WHERE id = $1")
        .bind(file.id.0)
        .execute(&app.pool)
        .await
        .unwrap();
    bytes
}

/// The path of a URL the API issued (URLs carry `server.baseUrl`, not the test port).
fn path_of(app: &TestApp, url: &Value) -> String {
    let url = url["url"].as_str().expect("a url");
    url.strip_prefix(&app.config.server.base_url).expect("the URL starts with server.baseUrl").to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bulk_delete_treats_each_id_like_the_single_delete(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, token) = app.user();
    let (_, other) = app.user();
    let mine: Vec<String> = [
        app.upload_image(&token, "user", "a.jpg", &[]).await,
        app.upload_image(&token, "user", "b.jpg", &[("is_public", "true")]).await,
        app.upload_image(&token, "user", "c.jpg", &[]).await,
    ]
    .into();
    let kept = app.upload_image(&token, "user", "kept.jpg", &[]).await;
    let theirs_private = app.upload_image(&other, "user", "p.jpg", &[]).await;
    let theirs_public = app.upload_image(&other, "user", "q.jpg", &[("is_public", "true")]).await;
    let already = mine[2].clone();
    assert_eq!(app.delete_image(&token, &already).await.status(), StatusCode::NO_CONTENT);
    let before = app.quota(user, OwnerType::User).await.unwrap();
    let unknown = Uuid::now_v7().to_string();

    let ids = [&mine[0], &theirs_private, &theirs_public, &unknown, &already, &mine[1], &mine[0]];
    let body = ok_json(bulk(&app, &token, &json!({"action": "delete", "ids": ids})).await).await;
    assert_eq!(
        outcomes(&body),
        [
            outcome(&mine[0], "deleted", None),
            outcome(&theirs_private, "not_found", Some("not_found")),
            outcome(&theirs_public, "forbidden", Some("forbidden")),
            outcome(&unknown, "not_found", Some("not_found")),
            outcome(&already, "not_found", Some("not_found")),
            outcome(&mine[1], "deleted", None),
        ],
        "one outcome per distinct id, in request order"
    );
    assert_eq!((body["succeeded"].as_u64(), body["failed"].as_u64()), (Some(2), Some(4)));
    // The messages are those of the single endpoint: existence does not leak.
    assert_eq!(body["results"][1]["error"], body["results"][3]["error"]);

    for id in [&mine[0], &mine[1]] {
        assert_eq!(app.get_image(&token, id).await.status(), StatusCode::NOT_FOUND);
    }
    for id in [&theirs_private, &theirs_public] {
        assert_eq!(app.get_image(&other, id).await.status(), StatusCode::OK, "left alone");
    }
    assert_eq!(app.get_image(&token, &kept).await.status(), StatusCode::OK);
    let sizes: i64 = sqlx::query_scalar("SELECT sum(file_size)::bigint FROM storage_files WHERE id = ANY($1::uuid[])")
        .bind([&mine[0], &mine[1]])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let after = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((after.used_files, after.used_bytes), (before.used_files - 2, before.used_bytes - sizes), "once each");
    let mut events = deletion_events(&app).await;
    events.sort();
    let mut expected = vec![already.clone(), mine[0].clone(), mine[1].clone()];
    expected.sort();
    assert_eq!(events, expected, "one image.deleted per deleted image");

    // Again: nothing left to delete, nothing released twice.
    let again = ok_json(bulk(&app, &token, &json!({"action": "delete", "ids": [&mine[0], &mine[1]]})).await).await;
    assert_eq!(again["succeeded"], 0);
    assert_eq!(app.quota(user, OwnerType::User).await.unwrap(), after);
    assert_eq!(deletion_events(&app).await.len(), 3);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_bulk_update_changes_each_image_and_refuses_only_the_invalid_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let (_, other) = app.user();
    let a = app.upload_image(&token, "user", "a.jpg", &[("tags", "old")]).await;
    let b = app.upload_image(&token, "user", "b.jpg", &[("tags", "old")]).await;
    let c = app.upload_image(&token, "user", "c.jpg", &[("tags", "old")]).await;
    let theirs = app.upload_image(&other, "user", "t.jpg", &[("is_public", "true")]).await;

    // One change per image; the middle one breaks the metadata rule.
    let items = json!([
        {"id": a, "tags": [" red ", "red", "dress"]},
        {"id": b, "metadata": {"big": "x".repeat(16 * 1024)}},
        {"id": c, "metadata": {"brand": "Zara"}},
        {"id": theirs, "tags": ["mine now"]},
        {"id": a, "tags": ["ignored: a second change of a"]},
    ]);
    let body = ok_json(bulk(&app, &token, &json!({"action": "update", "items": items})).await).await;
    assert_eq!(
        outcomes(&body),
        [
            outcome(&a, "updated", None),
            outcome(&b, "invalid", Some("invalid_field")),
            outcome(&c, "updated", None),
            outcome(&theirs, "forbidden", Some("forbidden")),
        ]
    );
    assert!(body["results"][1]["error"]["message"].as_str().unwrap().contains("metadata"));
    assert_eq!((body["succeeded"].as_u64(), body["failed"].as_u64()), (Some(2), Some(2)));
    assert_eq!(json(app.get_image(&token, &a).await).await["tags"], json!(["red", "dress"]), "as a PUT normalises");
    let unchanged = json(app.get_image(&token, &b).await).await;
    assert_eq!((&unchanged["tags"], &unchanged["metadata"]), (&json!(["old"]), &json!({})));
    assert_eq!(json(app.get_image(&token, &c).await).await["metadata"], json!({"brand": "Zara"}));
    assert_eq!(json(app.get_image(&other, &theirs).await).await["tags"], json!([]));

    // One change for all ids.
    let body = json!({"action": "update", "ids": [a, b], "tags": ["summer"], "metadata": {"k": 1}});
    assert_eq!(ok_json(bulk(&app, &token, &body).await).await["succeeded"], 2);
    for id in [&a, &b] {
        let view = json(app.get_image(&token, id).await).await;
        assert_eq!((&view["tags"], &view["metadata"]), (&json!(["summer"]), &json!({"k": 1})));
    }

    // Requests that cannot be right are refused whole, and change nothing.
    let before = json(app.get_image(&token, &a).await).await;
    for (body, code) in [
        (json!({"action": "rename", "ids": [a]}), "invalid_field"),
        (json!({"action": "update", "ids": [a]}), "empty_update"),
        (json!({"action": "update", "ids": [a], "metadata": [1]}), "invalid_field"),
        (json!({"action": "update", "ids": [a], "is_public": true}), "invalid_field"),
        (json!({"action": "update", "ids": [a], "items": [{"id": a, "tags": []}]}), "invalid_field"),
        (json!({"action": "update", "items": [{"id": a, "tags": []}], "tags": ["x"]}), "invalid_field"),
        (json!({"action": "delete", "ids": [a], "tags": ["x"]}), "invalid_field"),
        (json!({"action": "delete", "items": [{"id": a}]}), "invalid_field"),
        (json!({"action": "visibility", "ids": [a]}), "invalid_field"),
        (json!({"action": "delete"}), "invalid_field"),
        (json!({"action": "delete", "ids": []}), "invalid_field"),
        (json!({"action": "delete", "ids": ["not-a-uuid"]}), "bad_request"),
        (json!({"action": "delete", "ids": [a], "owner_id": a}), "bad_request"),
    ] {
        let response = bulk(&app, &token, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    assert_eq!(json(app.get_image(&token, &a).await).await, before);
    let anonymous = app.client.post(app.url("/storage/images/bulk")).json(&json!({"action": "delete", "ids": [a]}));
    assert_eq!(anonymous.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn bulk_visibility_publishes_and_hides_images_and_revokes_their_urls(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let (_, stranger) = app.user();
    let a = app.upload_image(&token, "user", "a.jpg", &[]).await;
    let b = app.upload_image(&token, "user", "b.jpg", &[]).await;

    let publish = json!({"action": "visibility", "ids": [a, b], "is_public": true});
    let body = ok_json(bulk(&app, &token, &publish).await).await;
    assert_eq!(outcomes(&body), [outcome(&a, "updated", None), outcome(&b, "updated", None)]);
    for id in [&a, &b] {
        assert_eq!(json(app.get_image(&stranger, id).await).await["is_public"], true);
    }
    let public = ok_json(batch_urls(&app, &stranger, &json!({"ids": [a]})).await).await;
    let public = &public["results"][0]["urls"]["original"];
    assert_eq!(public["signed"], false);
    assert_eq!(app.client.get(app.url(&path_of(&app, public))).send().await.unwrap().status(), StatusCode::OK);
    let response = bulk(&app, &stranger, &json!({"action": "visibility", "ids": [a], "is_public": false})).await;
    assert_eq!(outcomes(&ok_json(response).await), [outcome(&a, "forbidden", Some("forbidden"))]);

    // Private again, as a PUT would: the URLs signed meanwhile are refused.
    let signed = app.client.get(app.url(&format!("/storage/images/{a}/signed-url"))).bearer_auth(&token);
    let signed = path_of(&app, &ok_json(signed.send().await.unwrap()).await);
    assert_eq!(app.client.get(app.url(&signed)).send().await.unwrap().status(), StatusCode::OK);
    let hide = json!({"action": "visibility", "ids": [a, b], "is_public": false});
    assert_eq!(ok_json(bulk(&app, &token, &hide).await).await["succeeded"], 2);
    for id in [&a, &b] {
        assert_eq!(app.get_image(&stranger, id).await.status(), StatusCode::NOT_FOUND);
    }
    let response = app.client.get(app.url(&signed)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(error_code(response).await, "url_revoked");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_request_may_name_exactly_bulk_max_ids_ids(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.limits.bulk_max_ids = 3).await;
    let (_, token) = app.user();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.upload_image(&token, "user", &format!("{i}.jpg"), &[]).await);
    }
    let (three, four) = (&ids[..3], &ids[..]);

    for (what, call) in [("bulk", "/storage/images/bulk"), ("urls", "/storage/images/signed-urls")] {
        let body = |ids: &[String]| match what {
            "bulk" => json!({"action": "update", "ids": ids, "tags": ["x"]}),
            _ => json!({"ids": ids}),
        };
        let send = |body: Value| app.client.post(app.url(call)).bearer_auth(&token).json(&body).send();
        let response = send(body(four)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let error = json(response).await;
        assert_eq!(error["error"]["code"], "too_many_ids", "{what}");
        assert!(error["error"]["message"].as_str().unwrap().contains("at most 3"), "{what}: {error}");
        // Counted as sent: duplicates do not slip an extra id in.
        let repeated = [three, &three[..1]].concat();
        assert_eq!(send(body(&repeated)).await.unwrap().status(), StatusCode::BAD_REQUEST, "{what}");
        let answer = ok_json(send(body(three)).await.unwrap()).await;
        assert_eq!(answer["results"].as_array().unwrap().len(), 3, "{what}");
    }
    assert_eq!(json(app.get_image(&token, &ids[3]).await).await["tags"], json!([]), "the refused request did nothing");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn fifty_access_urls_come_in_one_call_with_per_image_errors(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let (_, other) = app.user();
    let mut ids = Vec::new();
    for i in 0..48 {
        let public = if i % 4 == 0 { "true" } else { "false" };
        ids.push(app.upload_image(&token, "user", &format!("{i}.jpg"), &[("is_public", public)]).await);
    }
    // Thumbnails made for all but the last two: one still pending, one that failed.
    let mut small = Vec::new();
    for id in &ids[..46] {
        small.push(add_thumbnail(&app, id, "small").await);
    }
    sqlx::query("UPDATE storage_files SET thumbnail_status = 'failed' WHERE id = $1::uuid")
        .bind(&ids[47])
        .execute(&app.pool)
        .await
        .unwrap();
    let hidden = app.upload_image(&other, "user", "theirs.jpg", &[]).await;
    let unknown = Uuid::now_v7().to_string();
    let mut asked = ids.clone();
    asked.extend([hidden.clone(), unknown.clone()]);
    asked.push(ids[0].clone());
    let recorded_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_signed_urls").fetch_one(&app.pool).await.unwrap();

    let request = json!({"ids": asked, "variants": ["small", "original", "small"], "expires_in": 600});
    let body = ok_json(batch_urls(&app, &token, &request).await).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 50, "one per distinct id");
    let answered: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(answered, asked[..50].iter().map(String::as_str).collect::<Vec<_>>(), "in request order");
    for (i, result) in results[..46].iter().enumerate() {
        let urls = result["urls"].as_object().unwrap();
        assert_eq!(urls.keys().collect::<Vec<_>>(), ["original", "small"], "{result}");
        assert!(result.get("errors").is_none() && result.get("error").is_none(), "{result}");
        let public = i % 4 == 0;
        assert_eq!(urls["small"]["signed"], !public);
        assert_eq!(urls["small"]["expires_at"].is_null(), public);
    }
    assert_eq!(results[46]["errors"]["small"]["code"], "variant_not_ready");
    assert_eq!(results[47]["errors"]["small"]["code"], "variant_not_found");
    assert!(results[46]["urls"]["original"].is_object());
    for result in &results[48..] {
        assert_eq!(result["error"]["code"], "not_found", "{result}");
        assert_eq!(result["urls"], json!({}));
    }
    // The URLs work: a private image's signed thumbnail and original, and a public one.
    let fetch = |url: &Value| app.client.get(app.url(&path_of(&app, url))).send();
    let response = fetch(&results[1]["urls"]["small"]).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), small[1]);
    let original = fetch(&results[1]["urls"]["original"]).await.unwrap();
    assert_eq!(original.status(), StatusCode::OK);
    assert_eq!(original.bytes().await.unwrap(), std::fs::read(app.original_path(&ids[1]).await).unwrap());
    assert_eq!(fetch(&results[0]["urls"]["small"]).await.unwrap().status(), StatusCode::OK);
    // The same URL as the single endpoint, and each signed one recorded once.
    let single = app.client.get(app.url(&format!("/storage/images/{}/access?variant=small", ids[1])));
    let single = ok_json(single.bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(single["signed"], true);
    let expires_at = results[1]["urls"]["small"]["expires_at"].as_str().unwrap();
    assert!(expires_at <= single["expires_at"].as_str().unwrap(), "600 s is sooner than the default hour");
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_signed_urls").fetch_one(&app.pool).await.unwrap();
    // 34 private images with both variants, two with their original only, and the single one.
    assert_eq!(recorded - recorded_before, 34 * 2 + 2 + 1, "each signed URL recorded once");

    // Bad requests are refused whole.
    let sizes = app.config.storage.thumbnail_sizes.len();
    let all: Vec<String> =
        std::iter::once("original".to_owned()).chain(app.config.storage.thumbnail_sizes.keys().cloned()).collect();
    let at_limit = ok_json(batch_urls(&app, &token, &json!({"ids": [ids[1]], "variants": all})).await).await;
    let at_limit = &at_limit["results"][0];
    let answered = at_limit["urls"].as_object().unwrap().len() + at_limit["errors"].as_object().unwrap().len();
    assert_eq!(answered, sizes + 1, "every variant at once: {at_limit}");
    let over = [all.clone(), vec!["original".to_owned()]].concat();
    for (body, code) in [
        (json!({"ids": [ids[1]], "variants": over}), "invalid_field"),
        (json!({"ids": [ids[1]], "variants": []}), "invalid_field"),
        (json!({"ids": [ids[1]], "variants": ["huge"]}), "invalid_variant"),
        (json!({"ids": [ids[1]], "expires_in": 0}), "invalid_ttl"),
        (json!({"ids": [ids[1]], "expires_in": app.config.signed_urls.max_ttl_secs + 1}), "ttl_too_long"),
        (json!({"ids": []}), "invalid_field"),
        (json!({"ids": [ids[1]], "access_type": "download"}), "bad_request"),
    ] {
        let response = batch_urls(&app, &token, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn batch_urls_follow_the_permissions_of_the_single_endpoint(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner_id, owner) = app.user();
    let (_, other_user) = app.user();
    let vendor = app.token(Role::Vendor, Uuid::now_v7());
    let service = app.token(Role::Service, Uuid::now_v7());
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let for_owner = [("owner_id", owner_id.to_string()), ("owner_type", "user".to_owned())];
    let for_owner: Vec<(&str, &str)> = for_owner.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let images = [
        app.upload_image(&owner, "user", "private.jpg", &[]).await,
        app.upload_image(&owner, "user", "public.jpg", &[("is_public", "true")]).await,
        app.upload_image(&vendor, "cloth", "cloth.jpg", &[]).await,
        app.upload_image(&service, "result", "result.jpg", &for_owner).await,
    ];
    for (who, token) in
        [("owner", &owner), ("other", &other_user), ("vendor", &vendor), ("service", &service), ("admin", &admin)]
    {
        let body = ok_json(batch_urls(&app, token, &json!({"ids": images})).await).await;
        for (image, result) in images.iter().zip(body["results"].as_array().unwrap()) {
            let single = app.client.get(app.url(&format!("/storage/images/{image}/access"))).bearer_auth(token);
            let single = single.send().await.unwrap();
            match single.status() {
                StatusCode::OK => {
                    let single = json(single).await;
                    let batched = &result["urls"]["original"];
                    assert_eq!(batched["signed"], single["signed"], "{who} {image}");
                    if single["signed"] == true {
                        // Both signed for the image's original; the expiry window may have turned.
                        let grant = format!("/storage/signed/{image}.original.v.");
                        assert!(batched["url"].as_str().unwrap().contains(&grant), "{who} {image}");
                    } else {
                        assert_eq!(batched["url"], single["url"], "{who} {image}");
                    }
                }
                status => {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{who} {image}");
                    assert_eq!(result["error"]["code"], "not_found", "{who} {image}");
                    assert_eq!(result["urls"], json!({}), "{who} {image}");
                }
            }
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_default_limit_of_ids_is_deleted_in_one_request(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.quota.default_max_files = 1000).await;
    let (user, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let count = app.config.limits.bulk_max_ids as usize;
    assert_eq!(count, 500);
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(app.upload_image(&token, "user", &format!("{i}.jpg"), &[]).await);
    }
    let body = ok_json(bulk(&app, &admin, &json!({"action": "delete", "ids": ids})).await).await;
    assert_eq!(body["succeeded"].as_u64(), Some(count as u64));
    assert_eq!(app.quota(user, OwnerType::User).await.unwrap().used_files, 0);
    assert_eq!(deletion_events(&app).await.len(), count);
}
