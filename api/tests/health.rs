//! `GET /storage/health` when the database does not answer: `down` with 503, promptly,
//! saying why to an admin. (The recorded checks and the `ok` / `degraded` answers are tested
//! with the workers that write them, in the worker's tests.)

use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use shared::auth::{Role, TokenKeys};
use shared::storage::Storage;
use shared::test_support::TopologyCleanup;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[tokio::test]
async fn without_a_database_the_service_is_down_and_says_so() {
    shared::test_support::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let mut config = shared::test_support::config();
    // Nothing listens on port 1: every connection attempt is refused.
    config.database.url = SecretString::from("postgres://postgres@127.0.0.1:1/none".to_owned());
    config.storage.base_path = dir.path().join("storage");
    config.storage.backup_path = dir.path().join("backups");
    config.server.host = "127.0.0.1".to_owned();
    config.server.port = 0;
    let _topology = TopologyCleanup::new(&config.rabbitmq);
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let storage = Storage::open(&config.storage.base_path).await.unwrap();
    let keys = TokenKeys::new(&config.auth.jwt_secret);
    let api = api::start_with(AppState::new(pool, storage, Arc::new(config))).await.unwrap();
    // Well under the pool's 30 s: the probe gives up on its own deadline.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("http://{}/storage/health", api.addr);

    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "down");
    assert!(body.get("details").is_none());

    let admin = keys.mint(Uuid::now_v7(), Role::Admin, chrono::Duration::minutes(5));
    let body: Value = client.get(&url).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
    let problems = body["details"]["problems"].to_string();
    assert!(problems.contains("live database"), "{body}");
    let live = &body["details"]["live"][0];
    assert_eq!((live["check_type"].as_str(), live["status"].as_str()), (Some("database"), Some("down")), "{body}");
    // Its relay is stuck waiting for a connection (the pool waits 30 s): it must still stop
    // within its shutdown grace, not the pool's.
    let stopped = tokio::time::timeout(Duration::from_secs(15), api.stop()).await;
    stopped.expect("the API stops without waiting for the database").unwrap();
}
