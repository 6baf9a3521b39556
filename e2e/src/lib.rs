//! End-to-end tests drive the API and the workers together, so they live in a crate of
//! their own above both (no crate depends on a crate beside it). These are their helpers: a
//! worker running in the test's process through its library entry point, uploads of every
//! kind and format of image a job must handle, a health check run as the scheduler runs
//! it, the worker binary started for tests that kill it, and the waits and checks the
//! backup, restore and object-store tests share. The tests are in `tests/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::test_support::{TestApp, images};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::config::Config;
use shared::db::outbox;
use shared::events::HealthCheckRequested;
use shared::health::RUN_CHECKS;
use shared::test_support::eventually;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A worker running in this process until stopped.
pub struct TestWorker {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    /// Starts a worker and waits until it has declared the broker topology (or exited), so
    /// that no declaration is in flight when the test deletes the topology.
    pub async fn start(config: &Config) -> Self {
        shared::test_support::init_logging();
        let shutdown = CancellationToken::new();
        let (started_tx, mut started) = tokio::sync::watch::channel(false);
        let run = worker::run_reporting_start(config.clone(), shutdown.clone(), started_tx);
        let task = tokio::spawn(async move {
            let result = run.await;
            // A worker that ends before it is stopped leaves a test waiting for jobs that
            // never run: say why at once, not only when the test stops it.
            if let Err(error) = &result {
                tracing::error!(error = format!("{error:#}"), "the test worker exited with an error");
            }
            result
        });
        let _ = started.wait_for(|started| *started).await;
        Self { shutdown, task }
    }

    /// Stops it and asserts that it exited cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("worker task").expect("worker exits cleanly");
    }
}

/// Uploads one image of every type, owner kind and format a job must handle (a user's JPEG
/// and PNG, a vendor's tagged public PNG, results for a user and for a vendor, one made from the
/// user's photo and the vendor's dress); returns their ids in upload order.
pub async fn upload_every_kind(app: &TestApp) -> Vec<String> {
    let (user, user_token) = app.user();
    let vendor = Uuid::now_v7();
    let vendor_token = app.token(Role::Vendor, vendor);
    let service = app.token(Role::Service, Uuid::now_v7());
    let mut ids = Vec::new();
    let mut upload = async |token: &str, image_type: &str, name: &str, bytes: Vec<u8>, extra: &[(&str, &str)]| {
        let response = app.upload(token, image_type, name, bytes, extra).await;
        assert_eq!(response.status(), StatusCode::CREATED, "uploading {name}");
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        ids.push(id.clone());
        id
    };
    let photo = upload(&user_token, "user", "me.jpg", images::jpeg(64, 48), &[]).await;
    upload(&user_token, "user", "me.png", images::png(40, 30), &[]).await;
    let catalogue = [("tags", "summer,red"), ("is_public", "true")];
    let dress = upload(&vendor_token, "cloth", "dress.png", images::png(50, 70), &catalogue).await;
    let (user, vendor) = (user.to_string(), vendor.to_string());
    let sources = format!("{photo},{dress}");
    let extra = [("owner_id", user.as_str()), ("source_ids", &sources), ("metadata", r#"{"model":"v2"}"#)];
    upload(&service, "result", "try-on.jpg", images::jpeg(30, 30), &extra).await;
    let extra = [("owner_id", vendor.as_str()), ("owner_type", "vendor"), ("is_public", "true")];
    upload(&service, "result", "lookbook.jpg", images::jpeg(20, 30), &extra).await;
    ids
}

/// Uploads a user's GIF and WebP, the accepted formats [`upload_every_kind`] leaves out (it
/// keeps to JPEG and PNG, whose counts other tests rely on); returns their ids.
pub async fn upload_gif_and_webp(app: &TestApp) -> Vec<String> {
    let (_, token) = app.user();
    let mut ids = Vec::new();
    for (name, bytes) in [("still.gif", images::gif(36, 24)), ("lossless.webp", images::webp(28, 40))] {
        let response = app.upload(&token, "user", name, bytes, &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED, "uploading {name}");
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Environment that configures a worker process exactly like `config` (one job at a time,
/// one-second retries).
pub fn worker_environment(config: &Config) -> Vec<(String, String)> {
    use secrecy::ExposeSecret;
    let rabbit = &config.rabbitmq;
    let storage = &config.storage;
    [
        ("STAYLER_DATABASE__URL", config.database.url.expose_secret().to_owned()),
        ("STAYLER_DATABASE__MIGRATE", "false".to_owned()),
        ("STAYLER_RABBITMQ__URL", rabbit.url.expose_secret().to_owned()),
        ("STAYLER_RABBITMQ__PREFIX", rabbit.prefix.clone()),
        ("STAYLER_RABBITMQ__MAX_ATTEMPTS", rabbit.max_attempts.to_string()),
        ("STAYLER_RABBITMQ__RETRY_DELAYS_SECS", "[1]".to_owned()),
        ("STAYLER_STORAGE__BASE_PATH", storage.base_path.display().to_string()),
        ("STAYLER_STORAGE__BACKUP_PATH", storage.backup_path.display().to_string()),
        ("STAYLER_STORAGE__BACKUP_POLICY__BATCH_SIZE", storage.backup_policy.batch_size.to_string()),
        ("STAYLER_STORAGE__SIGNED_URL_KEY", "dev-test".to_owned()),
        ("STAYLER_AUTH__JWT_SECRET", "dev-test".to_owned()),
        ("STAYLER_WORKER__CONCURRENCY", "1".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The `stayler-worker` binary of this build, beside the test binary's `deps/` folder.
/// Cargo builds a package's binaries for its own tests only, so `scripts/test` builds the
/// workspace's binaries before running the tests.
pub fn worker_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary.parent().and_then(Path::parent).expect("target/<profile>/deps/<test binary>");
    let binary = profile_dir.join(format!("stayler-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "{} is missing: build it first (cargo build --workspace --bins)", binary.display());
    binary
}

/// Starts the worker binary ([`worker_binary`]) configured like `config`, for tests that
/// kill it or send it signals.
pub fn spawn_worker_process(config: &Config) -> WorkerProcess {
    let child = std::process::Command::new(worker_binary())
        .env_clear()
        .envs(worker_environment(config))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting stayler-worker");
    WorkerProcess(child)
}

/// A worker process that is killed when dropped, so that a test failing half-way leaves no
/// worker running (it would hold the test database's connections and keep consuming).
#[derive(Debug)]
pub struct WorkerProcess(std::process::Child);

impl std::ops::Deref for WorkerProcess {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Enqueues a health check as the scheduler does, waits until a running worker has recorded
/// it, and returns the latest row of every check type: (type, status, details).
pub async fn run_health_check(app: &TestApp) -> Vec<(String, String, Value)> {
    let before: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&app.pool).await.unwrap();
    outbox::enqueue(&app.pool, HealthCheckRequested { requested_at: Utc::now() }).await.unwrap();
    eventually(Duration::from_secs(60), "the health check is recorded", || async {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT check_type) FROM storage_health_checks
             WHERE checked_at > $1 AND check_type = ANY($2)",
        )
        .bind(before)
        .bind(RUN_CHECKS.as_slice())
        .fetch_one(&app.pool)
        .await
        .unwrap();
        recorded == RUN_CHECKS.len() as i64
    })
    .await;
    sqlx::query_as(
        "SELECT DISTINCT ON (check_type) check_type, status, details FROM storage_health_checks
         ORDER BY check_type, checked_at DESC, id DESC",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The status and details of one check type among `rows`; panics if it is missing.
pub fn check<'a>(rows: &'a [(String, String, Value)], check_type: &str) -> (&'a str, &'a Value) {
    let (_, status, details) = rows.iter().find(|(t, _, _)| t == check_type).unwrap_or_else(|| panic!("{check_type}"));
    (status, details)
}

/// How long a test waits for the pipeline, a backup or a restore.
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until every live image has its thumbnails and a verified checksum.
pub async fn settled(app: &TestApp, what: &str) {
    eventually(PIPELINE_TIMEOUT, what, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM storage_files
             WHERE deleted_at IS NULL AND (thumbnail_status <> 'ready' OR checksum_status <> 'verified')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        waiting == 0
    })
    .await;
}

/// An admin's POST of `body` to `path`, answered 202; returns the answer's body.
pub async fn admin_post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "POST {path}");
    response.json().await.unwrap()
}

/// Waits until the backup or restore at `path` is `completed` or `failed`; returns it.
pub async fn finished(app: &TestApp, token: &str, path: &str) -> Value {
    let get = || async { app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap().json::<Value>().await };
    eventually(PIPELINE_TIMEOUT, &format!("{path} finishes"), || async {
        matches!(get().await.unwrap()["status"].as_str(), Some("completed" | "failed"))
    })
    .await;
    get().await.unwrap()
}

/// Waits until retention has carried the last copies of an expired backup into a new
/// backup and that one completed; returns its id.
pub async fn carried_over_backup(app: &TestApp) -> Uuid {
    let carried = || async {
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, status FROM storage_backups WHERE trigger = 'retention'")
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    };
    eventually(PIPELINE_TIMEOUT, "the last copies are carried into a new backup", || async {
        carried().await.is_some_and(|(_, status)| status == "completed")
    })
    .await;
    carried().await.expect("completed above").0
}

/// A PNG of noise made from `seed`, which does not compress: larger than one upload part,
/// so it goes to a bucket as a multipart upload.
pub fn incompressible_png(seed: u32) -> Vec<u8> {
    let (width, height) = (1400, 1400);
    let mut state = seed.max(1);
    let pixels = (0..width * height * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let image = image::RgbImage::from_raw(width, height, pixels).expect("the size matches");
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encoding a PNG");
    assert!(bytes.len() > shared::storage::UPLOAD_PART_BYTES, "{} bytes fit one part", bytes.len());
    bytes
}

/// Regular files below `folder`, at any depth (empty staging folders may exist): what a
/// process on the s3 backend must not leave on its local disk.
pub fn files_under(folder: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            } else {
                files.push(entry.path().display().to_string());
            }
        }
    }
    files
}

/// `(id, checksum)` of every live image, by id: what a restore must bring back.
pub async fn live_checksums(pool: &sqlx::PgPool) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT id, checksum FROM storage_files WHERE deleted_at IS NULL ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The disaster on an s3 deployment: every object of the images' bucket and every image
/// row are gone (backups and their rows stay).
pub async fn lose_every_image(app: &TestApp) {
    app.storage.remove_all_objects().await.unwrap();
    sqlx::query(
        "TRUNCATE storage_files, storage_thumbnails, storage_image_sources, storage_quotas, storage_signed_urls,
                  storage_access_logs, upload_idempotency, outbox CASCADE",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

/// A worker configured like `app` but on empty folders of its own, as on another machine:
/// the worker, its configuration, and the folder (removed when dropped).
pub async fn worker_on_its_own_folders(app: &TestApp) -> (TestWorker, Config, tempfile::TempDir) {
    let folder = tempfile::tempdir().expect("a temp folder");
    let mut config = (*app.config).clone();
    config.storage.base_path = folder.path().join("storage");
    config.storage.backup_path = folder.path().join("backups");
    std::fs::create_dir_all(&config.storage.base_path).expect("the worker's storage folder");
    (TestWorker::start(&config).await, config, folder)
}
