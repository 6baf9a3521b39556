//! The architecture document's configuration block (`config/seed.yaml`) as the API runs it:
//! its `storage` and `server` sections, with this test's folders, database and broker, serve
//! public images under its `publicPath` and make its list-shaped thumbnail boxes.

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use serde_json::Value;
use shared::config::Config;
use sqlx::PgPool;

const SEED_BLOCK: &str = include_str!("../../config/seed.yaml");

/// The block with what it leaves to the environment.
fn seed_config() -> Config {
    let connections =
        "database:\n  url: postgres://db/x\nrabbitmq:\n  url: amqp://broker\nauth:\n  jwtSecret: dev-jwt\n";
    Config::from_yaml(&format!("{SEED_BLOCK}\n{connections}")).expect("the block loads as written")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_api_started_with_the_seed_block_serves_public_images_under_its_public_path(pool: PgPool) {
    let seed = seed_config();
    let app = TestApp::spawn_with(pool, |config| {
        let (storage, server) = (&mut config.storage, &mut config.server);
        storage.thumbnail_sizes = seed.storage.thumbnail_sizes.clone();
        storage.max_file_size = seed.storage.max_file_size;
        storage.allowed_types = seed.storage.allowed_types.clone();
        storage.retention_policy = seed.storage.retention_policy.clone();
        storage.backup_policy = seed.storage.backup_policy.clone();
        server.public_path = seed.server.public_path.clone();
        server.static_path = seed.server.static_path.clone();
    })
    .await;
    let (_, token) = app.user();
    let bytes = images::jpeg(320, 240);
    let response = app.upload(&token, "user", "look.jpg", bytes.clone(), &[("is_public", "true")]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let access = app.client.get(app.url(&format!("/storage/images/{id}/access"))).bearer_auth(&token).send().await;
    let body: Value = access.unwrap().json().await.unwrap();
    let url = body["url"].as_str().unwrap();
    let path = url.strip_prefix(&app.config.server.base_url).unwrap();
    assert_eq!(path, format!("/api/storage/public/{id}/original"));
    let served = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.unwrap(), bytes);
    let old_path = app.client.get(app.url(&format!("/public/{id}/original"))).send().await.unwrap();
    assert_eq!(old_path.status(), StatusCode::NOT_FOUND, "only the configured public path serves");

    // The document describes the variants of the list-shaped boxes at that path.
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let public = &document["paths"]["/api/storage/public/{id}/{variant}"];
    let variants = public["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "variant");
    let variants: Vec<&str> =
        variants.unwrap()["schema"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for name in ["original", "small", "medium", "large"] {
        assert!(variants.contains(&name), "{name} in {variants:?}");
    }
    app.stop().await;
}
