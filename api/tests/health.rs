//! The API when the database does not answer: `GET /storage/health` is `down` with 503,
//! promptly, saying why to an admin; requests that need the database answer 503 with
//! `Retry-After` within the acquire timeout, store nothing, and succeed again as soon as it
//! is back. (The recorded checks and the `ok` / `degraded` answers are tested with the
//! workers that write them, in the worker's tests.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use shared::auth::{Role, TokenKeys};
use shared::storage::Storage;
use shared::test_support::{TcpProxy, TopologyCleanup};
use sqlx::PgPool;
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

/// The database cut off (every connection dropped, new ones refused) while the API runs.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_the_database_cut_off_requests_fail_fast_with_503_and_recover_at_once(pool: PgPool) {
    let direct = shared::test_support::database_url(&pool).await;
    let (server, database) =
        direct.trim_start_matches("postgres://").split_once('@').unwrap().1.split_once('/').unwrap();
    let proxy = TcpProxy::start_to(server.to_owned()).await;
    let proxied = format!("postgres://postgres@{}/{database}", proxy.addr());
    let options = shared::config::DatabaseConfig { acquire_timeout_secs: 1, ..Default::default() };
    let proxied_pool = shared::db::pool_options(&options).connect(&proxied).await.unwrap();
    let app = TestApp::spawn_with(proxied_pool, |c| c.database.acquire_timeout_secs = 1).await;
    let (user, token) = app.user();
    let upload = || app.upload(&token, "user", "a.png", images::png(8, 8), &[]);
    assert_eq!(upload().await.status(), StatusCode::CREATED);

    proxy.stop().await;
    for _ in 0..3 {
        let started = Instant::now();
        let response = upload().await;
        // Far above the 1 s acquire timeout, far below the 10 s the pool used to wait.
        assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "5");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
        let read = app.client.get(app.url(&format!("/storage/images/{}", Uuid::now_v7()))).bearer_auth(&token);
        assert_eq!(read.send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_files").fetch_one(&pool).await.unwrap();
    assert_eq!((rows, app.storage.count_objects().await.unwrap()), (1, 1), "only the first upload is stored");
    assert_eq!(app.storage.count_staged().await.unwrap(), 0, "nothing half-written");
    let used: i64 = sqlx::query_scalar("SELECT used_files FROM storage_quotas WHERE owner_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(used, 1);

    proxy.resume().await;
    assert_eq!(upload().await.status(), StatusCode::CREATED, "the first request after the outage succeeds");
    app.stop().await;
}

/// A tmpfs of its own for one test, unmounted when dropped (mounting needs root, as CI has).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "this test mounts a small tmpfs, which needs root");
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The storage disk full: uploads answer 507 and store nothing, health is `down` at once
/// (not at the next scheduled check), and uploads succeed again as soon as there is room.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_the_storage_disk_full_uploads_answer_507_and_health_is_down_at_once(pool: PgPool) {
    let disk = SmallDisk::mount("2m");
    let app = TestApp::spawn_with(pool, |c| c.storage.base_path = disk.path().join("storage")).await;
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/benches/images/photo-2mp.jpg")).unwrap();
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2 * 1024 * 1024 - photo.len() / 2]).unwrap();
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());

    let response = app.upload(&token, "user", "photo.jpg", photo.clone(), &[]).await;
    assert_eq!(response.status().as_u16(), 507);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_eq!((app.row_count().await, app.storage.count_staged().await.unwrap()), (0, 0), "nothing half-stored");
    let (status, health) = app.health(Some(&admin)).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("down")), "{health}");
    assert!(health.to_string().contains("ran out of space"), "{health}");

    std::fs::remove_file(&filler).unwrap();
    let response = app.upload(&token, "user", "photo.jpg", photo, &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED, "room again, uploads again");
    app.stop().await;
}
