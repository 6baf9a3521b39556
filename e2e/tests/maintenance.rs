//! Maintenance against the real PostgreSQL, RabbitMQ and a storage folder, one module per
//! job (the sweeper, the purge, the file audit), and the admin endpoint that runs them now.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use api::test_support::{TestApp, images};
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, check, run_health_check, upload_every_kind};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::backup;
use shared::broker::{JobQueue, headers};
use shared::config::{AccessLogConfig, HealthConfig, MaintenanceConfig};
use shared::db::{health_checks, outbox, storage_files};
use shared::events::SweepRequested;
use shared::health;
use shared::maintenance::{file_audit, purge, sweep};
use shared::model::{BackupTrigger, HealthStatus, ImageId};
use shared::storage::{QUARANTINE_DIR, Storage};
use shared::test_support::{TestBroker, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);
const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

/// Inserts a live image row (no file) uploaded at `created_at`; returns its id.
async fn insert_image(pool: &PgPool, created_at: chrono::DateTime<Utc>) -> Uuid {
    let id = Uuid::now_v7();
    let owner = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                    mime_type, format, width, height, checksum, created_at)
         VALUES ($1, $2, 'user', 'user', 'me.jpg', 'images/user/' || $2 || '/images/' || $1 || '.jpg', 10,
                 'image/jpeg', 'jpeg', 1, 1, repeat('a', 64), $3)",
    )
    .bind(id)
    .bind(owner)
    .bind(created_at)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn latest_check(pool: &PgPool, check_type: &str) -> (String, Value) {
    sqlx::query_as(
        "SELECT status, details FROM storage_health_checks WHERE check_type = $1 ORDER BY checked_at DESC, id DESC
         LIMIT 1",
    )
    .bind(check_type)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files
}

fn write_aged(path: &Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"bytes").unwrap();
    set_age(path, age);
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

mod file_auditor;
mod purger;
mod sweeper;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_runs_the_maintenance_jobs_now_through_the_workers(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let id = app.upload_image(&token, "user", "kept.jpg", &[]).await;
    let other = app.upload_image(&token, "user", "other.jpg", &[]).await;
    // An orphan older than the grace, an original lost from disk, and a lost thumbnail.
    let orphan = app.storage.root().join("images/user/00000000-0000-0000-0000-000000000000/images/lost.jpg");
    write_aged(&orphan, TWO_HOURS);
    for image in [&id, &other] {
        eventually(TIMEOUT, "the uploads are processed", || async {
            let view: Value = app.get_image(&token, image).await.json().await.unwrap();
            view["checksum"]["status"] == "verified" && view["thumbnails"]["status"] == "ready"
        })
        .await;
    }
    std::fs::remove_file(app.original_path(&id).await).unwrap();
    let thumbnail: String = sqlx::query_scalar(
        "SELECT file_path FROM storage_thumbnails WHERE image_id = $1::uuid AND size_name = 'small'",
    )
    .bind(&other)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let thumbnail = app.storage.root().join(thumbnail);
    std::fs::remove_file(&thumbnail).unwrap();

    let admin = app.token(shared::auth::Role::Admin, Uuid::now_v7());
    let run = |token: String, job: &'static str| {
        let request = app.client.post(app.url(&format!("/storage/maintenance/{job}"))).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(run(token.clone(), "sweep").await.status(), StatusCode::FORBIDDEN);
    let unknown = run(admin.clone(), "defrag").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"]["code"], "unknown_job");
    assert_eq!(run(admin.clone(), "backup").await.status(), StatusCode::NOT_FOUND, "backups have their own endpoint");
    // The hyphenated spellings the API had before job names were unified still work.
    for (job, name) in [
        ("sweep", "sweep"),
        ("purge", "purge"),
        ("file_audit", "file_audit"),
        ("health-check", "health_check"),
        ("metrics_rollup", "metrics_rollup"),
    ] {
        let response = run(admin.clone(), job).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{job}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["job"], name);
        assert!(body["event_id"].is_string());
    }
    eventually(TIMEOUT, "the jobs ran", || async {
        let types: Vec<String> = sqlx::query_scalar("SELECT DISTINCT check_type FROM storage_health_checks")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        ["sweep", "files", "integrity"].iter().all(|t| types.iter().any(|have| have == t))
    })
    .await;
    let (status, details): (String, Value) = sqlx::query_as(
        "SELECT status, details FROM storage_health_checks WHERE check_type = 'files' ORDER BY checked_at DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "degraded", "{details}");
    assert_eq!(details["missing_originals"], 1, "{details}");
    assert_eq!(details["orphans_quarantined"], 1, "{details}");
    assert_eq!(details["thumbnails_requeued"], 1, "{details}");
    assert!(!orphan.exists(), "the orphan went to quarantine");
    eventually(TIMEOUT, "the lost thumbnail is made again", || async {
        let view: Value = app.get_image(&token, &other).await.json().await.unwrap();
        thumbnail.exists() && view["thumbnails"]["status"] == "ready"
    })
    .await;
    worker.stop().await;
}
