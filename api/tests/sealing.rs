//! Sealed fields at rest: with encryption enabled, the file name and the sensitive metadata
//! values are stored sealed (never in plain text, search text included), every read shows
//! them opened, an image whose data key is gone shows placeholders instead of failing, and
//! deleting an image destroys its key.

use api::test_support::{TestApp, images, json};
use reqwest::StatusCode;
use reqwest::header::CONTENT_DISPOSITION;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::sealing::UNREADABLE_NAME;
use sqlx::PgPool;
use uuid::Uuid;

/// A test master key (base64 of 32 bytes).
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NAME: &str = "Körper front.jpg";

async fn sealing_app(pool: PgPool) -> TestApp {
    TestApp::spawn_with(pool, |config| {
        config.encryption.enabled = true;
        config.encryption.active_key_id = "m1".to_owned();
        config.encryption.keys = [("m1".to_owned(), SecretString::from(MASTER_KEY))].into();
        config.encryption.sensitive_metadata_keys = vec!["body_measurements".to_owned()];
        config.encryption.encrypt_original_name = true;
    })
    .await
}

/// The stored row's name, metadata and search text.
async fn stored(app: &TestApp, id: &str) -> (String, Value, Option<String>) {
    sqlx::query_as("SELECT original_name, metadata, search_text FROM storage_files WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn key_rows(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM storage_image_keys WHERE image_id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The download name of the original, through a signed download URL.
async fn download_name(app: &TestApp, token: &str, id: &str) -> String {
    let url = app.url(&format!("/storage/images/{id}/signed-url?access_type=download"));
    let response = app.client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let signed = json(response).await["url"].as_str().unwrap().to_owned();
    let path = signed.strip_prefix(&app.config.server.base_url).expect("the URL starts with server.baseUrl");
    let served = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    served.headers().get(CONTENT_DISPOSITION).unwrap().to_str().unwrap().to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn sealed_fields_are_stored_sealed_and_read_opened(pool: PgPool) {
    let app = sealing_app(pool).await;
    let (_, token) = app.user();
    let measurements = json!({"chest_cm": 96, "waist_cm": 78, "note": "Tailored"});
    let metadata = json!({"body_measurements": measurements, "color": "red"}).to_string();
    let form = [("metadata", metadata.as_str()), ("tags", "summer")];
    let retry = [("Idempotency-Key", "sealed-upload-1")];
    let upload = || app.upload_with_headers(&token, "user", NAME, images::jpeg(32, 24), &form, &retry);
    let response = upload().await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let uploaded = json(response).await;
    let id = uploaded["id"].as_str().unwrap().to_owned();
    assert_eq!((&uploaded["file_name"], &uploaded["metadata"]["body_measurements"]), (&json!(NAME), &measurements));
    // A retry answers the stored row, opened like any read.
    let replayed = json(upload().await).await;
    assert_eq!((&replayed["id"], &replayed["file_name"]), (&json!(id), &json!(NAME)));
    assert_eq!(replayed["metadata"]["body_measurements"], measurements);

    // At rest: sealed text for the name and the sensitive value, nothing plain anywhere.
    let (name, stored_metadata, search_text) = stored(&app, &id).await;
    assert!(name.starts_with("enc:v1:"), "{name}");
    assert!(stored_metadata["body_measurements"].as_str().unwrap().starts_with("enc:v1:"));
    assert_eq!(stored_metadata["color"], "red");
    let search_text = search_text.unwrap();
    assert_eq!(search_text, "summer red");
    let row: String = sqlx::query_scalar("SELECT row_to_json(f)::text FROM storage_files f WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for plain in ["Körper", "chest_cm", "waist_cm", "Tailored", "tailored"] {
        assert!(!row.contains(plain), "{plain} in {row}");
    }
    assert_eq!(key_rows(&app, &id).await, 1);

    // Every read shows the plain values.
    let expected = json!({"body_measurements": measurements, "color": "red"});
    let got = json(app.get_image(&token, &id).await).await;
    assert_eq!((&got["file_name"], &got["metadata"]), (&json!(NAME), &expected));
    let listed = json(app.list_images(&token, &[]).await).await;
    assert_eq!((&listed["items"][0]["file_name"], &listed["items"][0]["metadata"]), (&json!(NAME), &expected));
    for search in [json!({"query": "red"}), json!({"tags": ["summer"]})] {
        let found = json(app.search_images(&token, &search).await).await;
        assert_eq!(found["total"], 1, "{search}");
        assert_eq!((&found["items"][0]["file_name"], &found["items"][0]["metadata"]), (&json!(NAME), &expected));
    }
    // Sealed values are not searchable.
    let found = json(app.search_images(&token, &json!({"query": "tailored"})).await).await;
    assert_eq!(found["total"], 0);
    assert!(download_name(&app, &token, &id).await.contains("filename*=UTF-8''K%C3%B6rper%20front.jpg"));
    sqlx::query("UPDATE storage_files SET access_count = 3 WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let stats = json(app.client.get(app.url("/storage/stats")).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(stats["top_accessed"][0]["file_name"], NAME);

    // An update seals the new values with the same key; a value that only looks sealed in
    // a field that is not sealed is stored as given.
    let update = json!({
        "file_name": "renamed.jpg",
        "metadata": {"body_measurements": "enc:v1:from-the-client", "color": "enc:v1:blue"},
    });
    let response = app.update_image(&token, &id, &update).await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated = json(response).await;
    assert_eq!((&updated["file_name"], &updated["metadata"]), (&json!("renamed.jpg"), &update["metadata"]));
    let (name, stored_metadata, _) = stored(&app, &id).await;
    assert!(name.starts_with("enc:v1:") && !name.contains("renamed"), "{name}");
    let sealed = stored_metadata["body_measurements"].as_str().unwrap();
    assert!(sealed.starts_with("enc:v1:") && sealed != "enc:v1:from-the-client", "{sealed}");
    assert_eq!(stored_metadata["color"], "enc:v1:blue");
    assert_eq!(json(app.get_image(&token, &id).await).await["metadata"], update["metadata"]);
    assert_eq!(key_rows(&app, &id).await, 1);

    // Shredded: reads show placeholders and do not fail.
    sqlx::query("DELETE FROM storage_image_keys WHERE image_id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app.get_image(&token, &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let shredded = json(response).await;
    assert_eq!(shredded["file_name"], UNREADABLE_NAME);
    assert_eq!(shredded["metadata"], json!({"body_measurements": null, "color": "enc:v1:blue"}));
    let listed = json(app.list_images(&token, &[]).await).await;
    assert_eq!(listed["items"][0]["file_name"], UNREADABLE_NAME);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_destroys_the_key_and_older_images_get_one_on_their_first_sealed_change(pool: PgPool) {
    let app = sealing_app(pool).await;
    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "a.jpg", &[]).await;
    assert_eq!(key_rows(&app, &id).await, 1);
    assert_eq!(app.delete_image(&token, &id).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(key_rows(&app, &id).await, 0);

    // An image stored before encryption was enabled: plain, no key, shown as stored.
    let old = app.upload_image(&token, "user", "old.jpg", &[("metadata", r#"{"color":"red"}"#)]).await;
    let old_id = old.parse::<Uuid>().unwrap();
    sqlx::query("DELETE FROM storage_image_keys WHERE image_id = $1").bind(old_id).execute(&app.pool).await.unwrap();
    sqlx::query("UPDATE storage_files SET original_name = 'old.jpg', metadata = $2 WHERE id = $1")
        .bind(old_id)
        .bind(json!({"body_measurements": {"chest_cm": 90}}))
        .execute(&app.pool)
        .await
        .unwrap();
    let got = json(app.get_image(&token, &old).await).await;
    assert_eq!(
        (&got["file_name"], &got["metadata"]),
        (&json!("old.jpg"), &json!({"body_measurements": {"chest_cm": 90}}))
    );
    // A change of tags only needs no key.
    app.update_image(&token, &old, &json!({"tags": ["x"]})).await.error_for_status().unwrap();
    assert_eq!(key_rows(&app, &old).await, 0);
    // Concurrent sealed changes create one key between them, and each value opens with it.
    let bodies: Vec<Value> = (0..4).map(|i| json!({"file_name": format!("n{i}.jpg")})).collect();
    let renames = bodies.iter().map(|body| app.update_image(&token, &old, body));
    for response in futures::future::join_all(renames).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(key_rows(&app, &old).await, 1);
    let got = json(app.get_image(&token, &old).await).await;
    assert!(got["file_name"].as_str().unwrap().starts_with('n'), "{got}");
    assert!(stored(&app, &old).await.0.starts_with("enc:v1:"));
    app.stop().await;
}
