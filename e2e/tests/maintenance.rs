//! The sweeper, the purge and the file audit against the real PostgreSQL, RabbitMQ and a
//! storage folder: lost jobs (and jobs the broker dead-lettered by its delivery limit) are
//! re-queued (once, even when the sweep is delivered twice) and finally given up and
//! reported until an admin reprocesses the image, old rows go in batches while recent ones
//! stay, orphan files are quarantined, missing originals reported, and nothing live is ever
//! moved.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use api::test_support::{TestApp, images};
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, check, run_health_check, upload_every_kind};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::broker::{JobQueue, headers};
use shared::config::{AccessLogConfig, HealthConfig, MaintenanceConfig};
use shared::db::{health_checks, outbox, storage_backups, storage_files};
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

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_image_whose_jobs_were_lost_is_processed_after_a_sweep_delivered_twice(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "me.jpg", images::jpeg(64, 48), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    eventually(TIMEOUT, "the upload's event is published", || async {
        count(&app.pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    // The broker loses both jobs, and the image has waited longer than the sweeper allows.
    broker.purge(&broker.topology.queue(JobQueue::Thumbnails)).await;
    broker.purge(&broker.topology.queue(JobQueue::Checksums)).await;
    sqlx::query("UPDATE storage_files SET created_at = now() - interval '1 hour'").execute(&app.pool).await.unwrap();

    // Two copies of the sweep job, as a redelivery or two scheduler slots would make.
    for _ in 0..2 {
        outbox::enqueue(&app.pool, SweepRequested { requested_at: Utc::now() }).await.unwrap();
    }
    let worker = TestWorker::start(&app.config).await;
    eventually(TIMEOUT, "the image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    eventually(TIMEOUT, "both sweeps have run", || async {
        count(&app.pool, "SELECT count(*) FROM storage_health_checks WHERE check_type = 'sweep'").await == 2
    })
    .await;
    worker.stop().await;

    let uploaded = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    assert_eq!(uploaded, 2, "the upload's event and one re-queue, not two");
    assert_eq!(count(&app.pool, "SELECT requeue_count::bigint FROM storage_files").await, 1);
    let requeued = count(
        &app.pool,
        "SELECT sum((details->>'requeued_thumbnails')::bigint + (details->>'requeued_checksums')::bigint)::bigint
         FROM storage_health_checks WHERE check_type = 'sweep'",
    )
    .await;
    assert_eq!(requeued, 2, "one image, re-queued once for both of its steps");
    let (status, _) = latest_check(&app.pool, "sweep").await;
    assert_eq!(status, "ok");
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_image_requeued_the_maximum_times_is_given_up_and_reported(pool: PgPool) {
    shared::test_support::init_logging();
    let config = MaintenanceConfig { max_requeues: 2, ..MaintenanceConfig::default() };
    let t0 = Utc::now();
    let id = insert_image(&pool, t0).await;
    let fresh = insert_image(&pool, t0 + TimeDelta::minutes(100)).await;
    let minutes = |m: i64| t0 + TimeDelta::minutes(m);
    let requeued_events = || count(&pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'");

    // 900 s after the upload, then waits of 1800 s and 3600 s between re-queues.
    let report = sweep::run(&pool, &config, minutes(14)).await.unwrap();
    assert_eq!((report.requeued_thumbnails, report.requeued_checksums), (0, 0), "not due yet");
    let report = sweep::run(&pool, &config, minutes(16)).await.unwrap();
    assert_eq!((report.requeued_thumbnails, report.requeued_checksums, report.given_up), (1, 1, 0));
    assert_eq!(report.oldest_pending_secs, Some(16.0 * 60.0));
    let again = sweep::run(&pool, &config, minutes(16)).await.unwrap();
    assert_eq!(again.requeued_thumbnails, 0, "a duplicate sweep re-queues nothing");
    assert_eq!(sweep::run(&pool, &config, minutes(45)).await.unwrap().requeued_thumbnails, 0, "backing off");
    assert_eq!(sweep::run(&pool, &config, minutes(47)).await.unwrap().requeued_thumbnails, 1);
    assert_eq!(requeued_events().await, 2);
    assert_eq!(sweep::run(&pool, &config, minutes(106)).await.unwrap().given_up, 0, "waits out the last back-off");

    let report = sweep::run(&pool, &config, minutes(108)).await.unwrap();
    assert_eq!(report.given_up, 1);
    assert_eq!(report.given_up_sample, [ImageId(id)]);
    assert_eq!(report.status(), HealthStatus::Degraded);
    assert_eq!(report.requeued_thumbnails, 0, "the younger image is not due yet");
    let (status, details) = latest_check(&pool, "sweep").await;
    assert_eq!((status.as_str(), details["given_up"].as_u64()), ("degraded", Some(1)));
    assert_eq!(details["given_up_sample"][0], id.to_string());
    let (thumbnails, error): (String, Option<String>) =
        sqlx::query_as("SELECT thumbnail_status, processing_error FROM storage_files WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(thumbnails, "failed");
    assert!(error.unwrap().contains("sweeper"), "the image says why");
    assert_eq!(requeued_events().await, 2, "no event for a given-up image");

    // Given up once: later sweeps no longer re-queue it, but keep the check degraded while
    // it is half-processed, so that it does not drop out of health one run later.
    let report = sweep::run(&pool, &config, minutes(300)).await.unwrap();
    assert_eq!((report.given_up, report.given_up_unfinished, report.status()), (0, 1, HealthStatus::Degraded));
    assert_eq!(report.given_up_unfinished_sample, [ImageId(id)]);
    assert_eq!(report.requeued_thumbnails, 1, "only the younger image");
    let fresh_count: i64 = sqlx::query_scalar("SELECT requeue_count::bigint FROM storage_files WHERE id = $1")
        .bind(fresh)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(fresh_count, 1);
    let (status, details) = latest_check(&pool, "sweep").await;
    assert_eq!((status.as_str(), details["given_up_unfinished"].as_u64()), ("degraded", Some(1)));
    assert_eq!(details["given_up_unfinished_sample"][0], id.to_string());
    let summary = health::summarize(health_checks::latest(&pool).await.unwrap(), Utc::now(), &HealthConfig::default());
    assert_eq!(summary.status, HealthStatus::Degraded);
    assert!(
        summary.problems.iter().any(|p| p.starts_with("sweep: 1 images the sweeper gave up on")),
        "what the health endpoint says: {:?}",
        summary.problems
    );
    assert_eq!(requeued_events().await, 3, "still no event for the given-up image");

    // A late job finishes it: the next sweep is healthy again.
    assert!(storage_files::mark_thumbnails_ready(&pool, ImageId(id)).await.unwrap());
    assert!(storage_files::mark_verified(&pool, ImageId(id)).await.unwrap());
    let report = sweep::run(&pool, &config, minutes(301)).await.unwrap();
    assert_eq!((report.given_up_unfinished, report.status()), (0, HealthStatus::Ok));
    assert_eq!(latest_check(&pool, "sweep").await.0, "ok");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_stalled_backup_gets_its_unfinished_batches_published_again(pool: PgPool) {
    shared::test_support::init_logging();
    let config = MaintenanceConfig::default();
    for _ in 0..3 {
        insert_image(&pool, Utc::now()).await;
    }
    let mut tx = pool.begin().await.unwrap();
    let id = storage_backups::request(&mut tx, BackupTrigger::Manual, None, 3, Utc::now()).await.unwrap();
    assert_eq!(storage_backups::plan(&mut tx, id, 2).await.unwrap(), Some(2));
    tx.commit().await.unwrap();
    let batch_events = || count(&pool, "SELECT count(*) FROM outbox WHERE event_type = 'backup.batch'");
    assert_eq!(batch_events().await, 2);

    let report = sweep::run(&pool, &config, Utc::now()).await.unwrap();
    assert!(report.stalled_backups.is_empty(), "just planned: not stalled");
    let later = Utc::now() + TimeDelta::hours(2);
    let report = sweep::run(&pool, &config, later).await.unwrap();
    assert_eq!((report.stalled_backups.as_slice(), report.requeued_backup_jobs), ([id].as_slice(), 2));
    assert_eq!(batch_events().await, 4);
    let report = sweep::run(&pool, &config, later).await.unwrap();
    assert!(report.stalled_backups.is_empty(), "once per stall period");
    assert_eq!(batch_events().await, 4);
    let (_, details) = latest_check(&pool, "sweep").await;
    assert_eq!(details["stalled_backups"], serde_json::json!([]));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn old_rows_are_purged_in_batches_and_recent_ones_stay(pool: PgPool) {
    shared::test_support::init_logging();
    let image = insert_image(&pool, Utc::now()).await;
    // Signed URLs expired 8 days ago, a day ago, and valid for another hour.
    for expires_in_secs in [-8.0 * 86_400.0, -86_400.0, 3600.0] {
        sqlx::query(
            "INSERT INTO storage_signed_urls (id, image_id, variant, access_type, key_id, expires_at, requested_by)
             VALUES (gen_random_uuid(), $1, 'original', 'view', 'k1', now() + make_interval(secs => $2),
                     gen_random_uuid())",
        )
        .bind(image)
        .bind(expires_in_secs)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, payload, created_at, published_at) VALUES
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '9 days', now() - interval '8 days'),
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '1 day', now() - interval '1 day'),
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '9 days', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // More old results than one batch deletes, so the purge must loop.
    let old_checks = purge::BATCH + 50;
    sqlx::query(
        "INSERT INTO storage_health_checks (check_type, status, checked_at)
         SELECT 'database', 'ok', now() - interval '31 days' FROM generate_series(1, $1)
         UNION ALL SELECT 'database', 'ok', now()",
    )
    .bind(old_checks)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_failures (queue, event_type, attempt, final, error, failed_at) VALUES
             ('thumbnails', 'image.uploaded', 1, false, 'old', now() - interval '31 days'),
             ('thumbnails', 'image.uploaded', 1, true, 'recent', now() - interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Idempotency keys three days and an hour old (the retention is two days).
    sqlx::query(
        "INSERT INTO upload_idempotency (principal_id, idempotency_key, image_id, checksum, created_at) VALUES
             (gen_random_uuid(), 'old', $1, 'x', now() - interval '3 days'),
             (gen_random_uuid(), 'recent', $1, 'x', now() - interval '1 hour')",
    )
    .bind(image)
    .execute(&pool)
    .await
    .unwrap();

    // Access log rows 91 days and a day old (the retention is 90 days).
    sqlx::query(
        "INSERT INTO storage_access_logs (image_id, action, status, created_at) VALUES
             ($1, 'serve_file', 200, now() - interval '91 days'),
             ($1, 'serve_file', 200, now() - interval '1 day')",
    )
    .bind(image)
    .execute(&pool)
    .await
    .unwrap();

    let access_log = AccessLogConfig::default();
    let report = purge::run(&pool, &MaintenanceConfig::default(), &access_log, Utc::now()).await.unwrap();
    let expected = purge::PurgeReport {
        signed_urls: 1,
        outbox: 1,
        health_checks: old_checks as u64,
        job_failures: 1,
        idempotency_keys: 1,
        access_logs: 1,
    };
    assert_eq!(report, expected);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_signed_urls").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 2, "the recent and the unpublished rows stay");
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_health_checks").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM job_failures").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM upload_idempotency WHERE idempotency_key = 'recent'").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM upload_idempotency").await, 1);
    let kept = "SELECT count(*) FROM storage_access_logs WHERE created_at > now() - interval '2 days'";
    assert_eq!(count(&pool, kept).await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_access_logs").await, 1);
    let again = purge::run(&pool, &MaintenanceConfig::default(), &access_log, Utc::now()).await.unwrap();
    assert_eq!(again, purge::PurgeReport::default(), "a second purge finds nothing");
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

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_file_audit_quarantines_old_orphans_reports_missing_originals_and_never_moves_live_files(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let ids = upload_every_kind(&app).await;
    eventually(TIMEOUT, "every thumbnail is made", || async {
        count(&app.pool, "SELECT count(*) FROM storage_files WHERE thumbnail_status <> 'ready'").await == 0
    })
    .await;
    worker.stop().await;
    let storage: &Storage = &app.storage;
    let root = storage.root().to_owned();
    // Every live file is old enough to be quarantined: only its row protects it.
    for file in files_under(&root.join("images")) {
        set_age(&file, TWO_HOURS);
    }
    let stranger = Uuid::now_v7();
    let old_orphan = format!("images/user/{stranger}/images/{}.jpg", Uuid::now_v7());
    let young_orphan = format!("images/user/{stranger}/thumbnails/{}_small.jpg", Uuid::now_v7());
    write_aged(&root.join(&old_orphan), TWO_HOURS);
    write_aged(&root.join(&young_orphan), Duration::ZERO);
    write_aged(&root.join(".staging/left-by-a-crash.part"), TWO_HOURS);
    write_aged(&root.join(".staging/in-flight.part"), Duration::ZERO);
    // Two originals lost from disk, one of them with a backup copy.
    let (backed_up, lost) = (&ids[0], &ids[1]);
    for id in [backed_up, lost] {
        std::fs::remove_file(app.original_path(id).await).unwrap();
    }
    sqlx::query("UPDATE storage_files SET is_backed_up = true, backup_path = 'day/backup/x.zst' WHERE id = $1::uuid")
        .bind(backed_up)
        .execute(&app.pool)
        .await
        .unwrap();
    let live_files: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM storage_files WHERE deleted_at IS NULL AND NOT id = ANY($1::uuid[])
         UNION ALL SELECT file_path FROM storage_thumbnails",
    )
    .bind(vec![backed_up.parse::<Uuid>().unwrap(), lost.parse::<Uuid>().unwrap()])
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(live_files.len(), ids.len() - 2 + 3 * ids.len());

    let report = file_audit::run(&app.pool, storage, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!(report.scanned_files as usize, live_files.len() + 2);
    assert_eq!((report.orphans_quarantined, report.recent_unreferenced), (1, 1));
    let quarantined = Path::new(QUARANTINE_DIR).join(Utc::now().format("%Y-%m-%d").to_string()).join(&old_orphan);
    assert_eq!(report.quarantined_sample, [quarantined.to_string_lossy()]);
    assert!(root.join(&quarantined).exists() && !root.join(&old_orphan).exists());
    assert!(root.join(&young_orphan).exists(), "a young file may be about to get its row");
    assert_eq!(report.stale_temp_removed, 1);
    assert!(!root.join(".staging/left-by-a-crash.part").exists() && root.join(".staging/in-flight.part").exists());
    for path in &live_files {
        assert!(root.join(path).exists(), "{path} was moved");
    }
    assert_eq!(report.missing_originals, 2);
    let mut missing: Vec<(String, bool, Option<String>)> =
        report.missing_sample.iter().map(|m| (m.image_id.0.to_string(), m.backed_up, m.backup_path.clone())).collect();
    missing.sort();
    let mut expected =
        vec![(backed_up.clone(), true, Some("day/backup/x.zst".to_owned())), (lost.clone(), false, None)];
    expected.sort();
    assert_eq!(missing, expected);
    let (status, details) = latest_check(&app.pool, "files").await;
    assert_eq!(status, "degraded");
    assert_eq!(details["missing_originals"], 2);
    assert_eq!(details["orphans_quarantined"], 1);
    assert_eq!(details["stale_temp_removed"], 1);
    assert!(details["missing_sample"].as_array().unwrap().iter().any(|m| m["backed_up"] == true));

    // Quarantine is outside the scan: a second audit moves nothing more.
    let again = file_audit::run(&app.pool, storage, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!((again.orphans_quarantined, again.stale_temp_removed, again.missing_originals), (0, 0, 2));
    app.stop().await;
}

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
    for job in ["sweep", "purge", "file-audit", "health-check", "metrics-rollup"] {
        let response = run(admin.clone(), job).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{job}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["job"], job);
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

/// Thumbnail and verification statuses, re-queue count, whether the sweeper gave up, and
/// the processing error of one image.
async fn processing_of(pool: &PgPool, id: &str) -> (String, String, i32, bool, Option<String>) {
    sqlx::query_as(
        "SELECT thumbnail_status, checksum_status, requeue_count, sweep_gave_up_at IS NOT NULL, processing_error
         FROM storage_files WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_reprocesses_an_image_the_sweeper_gave_up_on_and_health_is_ok_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let id = app.upload_image(&token, "user", "stuck.jpg", &[]).await;
    let deleted = app.upload_image(&token, "user", "deleted.jpg", &[]).await;
    eventually(TIMEOUT, "the uploads' events are published", || async {
        count(&app.pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    // No worker runs and the broker loses the jobs; a sweeper allowed no re-queue gives up.
    broker.purge(&broker.topology.queue(JobQueue::Thumbnails)).await;
    broker.purge(&broker.topology.queue(JobQueue::Checksums)).await;
    assert_eq!(app.delete_image(&token, &deleted).await.status(), StatusCode::NO_CONTENT);
    let impatient = MaintenanceConfig { max_requeues: 0, ..app.config.maintenance.clone() };
    let report = sweep::run(&app.pool, &impatient, Utc::now() + TimeDelta::hours(1)).await.unwrap();
    assert_eq!((report.given_up, report.given_up_unfinished), (1, 1));
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("degraded")));
    assert!(body["details"]["problems"].to_string().contains("sweep: 1 images the sweeper gave up on"), "{body}");

    let refused = app.reprocess_image(&token, &id).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    for unknown in [Uuid::now_v7().to_string(), deleted.clone()] {
        let missing = app.reprocess_image(&admin, &unknown).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{unknown}");
        assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    }
    let events_before = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    let accepted = app.reprocess_image(&admin, &id).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let body: Value = accepted.json().await.unwrap();
    assert_eq!((body["id"].as_str(), body["thumbnail_status"].as_str()), (Some(id.as_str()), Some("pending")));
    assert_eq!(body["checksum_status"], "pending");
    let event: Uuid = body["event_id"].as_str().unwrap().parse().unwrap();
    let queued: String = sqlx::query_scalar("SELECT event_type FROM outbox WHERE event_id = $1")
        .bind(event)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, "image.uploaded");
    let events = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    assert_eq!(events, events_before + 1);
    assert_eq!(processing_of(&app.pool, &id).await, ("pending".into(), "pending".into(), 0, false, None));

    let worker = TestWorker::start(&app.config).await;
    eventually(TIMEOUT, "the image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    let report = sweep::run(&app.pool, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!((report.given_up_unfinished, report.status()), (0, HealthStatus::Ok));
    let rows = run_health_check(&app).await;
    for (check_type, status, details) in &rows {
        assert_eq!(status, "ok", "{check_type}: {details}");
    }
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")), "{body}");
    worker.stop().await;
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_the_broker_dead_letters_by_its_delivery_limit_is_reported_and_swept_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let id = app.upload_image(&token, "user", "crashes.jpg", &[]).await;
    let (thumbnails, checksums) =
        (broker.topology.queue(JobQueue::Thumbnails), broker.topology.queue(JobQueue::Checksums));
    broker.wait_for_depth(&thumbnails, 1, TIMEOUT).await;
    broker.wait_for_depth(&checksums, 1, TIMEOUT).await;
    // Both jobs kill (or are rejected by) every consumer that takes them, more often than
    // the delivery limit allows: RabbitMQ moves them to the dead-letter queues itself.
    let dead_queues = [JobQueue::Thumbnails, JobQueue::Checksums].map(|q| broker.topology.dead_letter_queue(q));
    for (queue, dead_queue) in [&thumbnails, &checksums].into_iter().zip(&dead_queues) {
        let deliveries = broker.return_until_dead_lettered(queue, dead_queue, 1).await;
        assert_eq!(deliveries, app.config.rabbitmq.max_attempts + 1, "{queue}");
    }

    // Workers never saw a failure: nothing recorded it, and the image waits.
    let worker = TestWorker::start(&app.config).await;
    let rows = run_health_check(&app).await;
    assert_eq!(processing_of(&app.pool, &id).await, ("pending".into(), "pending".into(), 0, false, None));
    assert_eq!(count(&app.pool, "SELECT count(*) FROM job_failures").await, 0, "no failure hook ran");
    let (status, details) = check(&rows, "broker");
    assert_eq!(status, "degraded");
    for dead_queue in &dead_queues {
        assert!(
            details["problems"].to_string().contains(&format!("1 given-up jobs wait in {dead_queue}")),
            "{details}"
        );
    }
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("degraded")), "{body}");

    // What an operator finds in the dead-letter queues: the broker's reason, none of ours.
    for dead_queue in &dead_queues {
        let dead = broker.take_all(dead_queue).await;
        assert_eq!(dead.len(), 1, "{dead_queue}");
        assert_eq!(dead[0].header("x-first-death-reason").as_deref(), Some("delivery_limit"));
        for header in [headers::ERROR, headers::ATTEMPTS, headers::QUEUE, headers::FAILED_AT] {
            assert_eq!(dead[0].header(header), None, "{header}");
        }
    }

    // Once it has waited `pendingAfterSecs`, the sweeper re-queues it and the workers finish it.
    sqlx::query("UPDATE storage_files SET created_at = now() - interval '1 hour' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    outbox::enqueue(&app.pool, SweepRequested { requested_at: Utc::now() }).await.unwrap();
    eventually(TIMEOUT, "the swept image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    let (status, details) = latest_check(&app.pool, "sweep").await;
    assert_eq!(status, "ok");
    assert_eq!((details["requeued_thumbnails"].as_u64(), details["requeued_checksums"].as_u64()), (Some(1), Some(1)));
    let rows = run_health_check(&app).await;
    assert_eq!(check(&rows, "broker").0, "ok", "{}", check(&rows, "broker").1);
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")), "{body}");
    worker.stop().await;
    broker.delete().await;
    app.stop().await;
}
