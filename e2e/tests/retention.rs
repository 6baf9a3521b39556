//! Backup retention: expired backups go, the last copy of a live image never does (it is
//! carried into a new backup first), and live images are never touched. A moved clock for
//! the library, the admin endpoint and the maintenance worker for the whole path.

use std::path::Path;
use std::time::Duration;

use api::test_support::TestApp;
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, upload_every_kind};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::backup::{self, retention};
use shared::db::storage_backups;
use shared::model::{BackupId, BackupStatus, BackupTrigger};
use shared::storage::BackupTree;
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a whole backup in the test's process and returns its id.
async fn back_up(app: &TestApp, tree: &BackupTree) -> BackupId {
    let mut tx = app.pool.begin().await.unwrap();
    let id = backup::request(&mut tx, BackupTrigger::Manual, None, 3, Utc::now()).await.unwrap();
    let batches = backup::plan(&mut tx, id, 100).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    run(app, tree, id, batches).await;
    id
}

async fn run(app: &TestApp, tree: &BackupTree, id: BackupId, batches: i32) {
    for batch in 0..batches {
        backup::run_batch(&app.pool, &app.storage, tree, id, batch).await.unwrap();
    }
    backup::finish_if_done(&app.pool, tree, id).await.unwrap();
    let done = storage_backups::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!(done.status, BackupStatus::Completed);
}

/// Retention never touches an image: every live row still has its original.
async fn assert_live_originals_on_disk(app: &TestApp, expected: usize) {
    let paths: Vec<String> = sqlx::query_scalar("SELECT file_path FROM storage_files WHERE deleted_at IS NULL")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(paths.len(), expected);
    assert!(paths.iter().all(|p| app.storage.root().join(p).exists()), "a live image's original is missing");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn expired_backups_go_but_never_before_their_last_copies_of_live_images_are_carried(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let storage = &app.config.storage;
    let first_images = upload_every_kind(&app).await;
    let first = back_up(&app, &tree).await;
    let deleted = &first_images[1];
    let admin = app.token(Role::Admin, Uuid::now_v7());
    assert_eq!(app.delete_image(&admin, deleted).await.status(), StatusCode::NO_CONTENT);
    let second_images = upload_every_kind(&app).await;
    let second = back_up(&app, &tree).await;
    let live = first_images.len() - 1 + second_images.len();

    // Within the retention time nothing happens.
    let report = retention::apply(&app.pool, &tree, &storage.backup_policy, Utc::now()).await.unwrap();
    assert_eq!((report.expired, report.carry_over), (0, None));

    // A year and a bit later both backups have expired, but they hold the only copies of the
    // live images: those are carried into a new backup first, and nothing is removed.
    let later = Utc::now() + TimeDelta::days(400);
    let report = retention::apply(&app.pool, &tree, &storage.backup_policy, later).await.unwrap();
    assert_eq!(report.expired, 2);
    assert!(report.removed.is_empty());
    assert_eq!(report.kept.len(), 2);
    assert_eq!(report.carried_images, live, "every live image, and not the deleted one");
    let carry = report.carry_over.unwrap();

    // Asked again before the carry-over ran: nothing new is requested.
    let again = retention::apply(&app.pool, &tree, &storage.backup_policy, later).await.unwrap();
    assert_eq!((again.carry_over, again.waiting_images, again.removed.len()), (None, live, 0));

    let mut tx = app.pool.begin().await.unwrap();
    let batches = backup::plan(&mut tx, carry, 100).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    run(&app, &tree, carry, batches).await;
    let carried = storage_backups::get(&app.pool, carry).await.unwrap().unwrap();
    assert_eq!((carried.trigger, carried.file_count), (BackupTrigger::Retention, live as i64));

    // Now the expired backups hold no last copy: they go, folders and all.
    let report = retention::apply(&app.pool, &tree, &storage.backup_policy, later).await.unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, [first, second]);
    for id in [first, second] {
        let backup = storage_backups::get(&app.pool, id).await.unwrap().unwrap();
        assert!(backup.removed_at.is_some());
        assert!(!tree.root().join(&backup.backup_path).exists());
    }
    assert!(tree.root().join(&carried.backup_path).exists());
    let pointing_at_carry: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM storage_files WHERE deleted_at IS NULL AND backup_path LIKE $1 || '%'",
    )
    .bind(&carried.backup_path)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(pointing_at_carry as usize, live, "live images point at their remaining copy");
    assert_live_originals_on_disk(&app, live).await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_admin_cleanup_runs_retention_through_the_maintenance_worker(pool: PgPool) {
    // Retention of zero days: every finished backup has expired by the time it is asked.
    let app = TestApp::spawn_with(pool, |config| config.storage.backup_policy.retention_days = 0).await;
    let worker = TestWorker::start(&app.config).await;
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (_, user) = app.user();
    let images = upload_every_kind(&app).await;
    let first = back_up(&app, &tree).await;
    let cleanup = |token: String| {
        let request = app.client.delete(app.url("/storage/backups/cleanup")).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(cleanup(user).await.status(), StatusCode::FORBIDDEN);

    let response = cleanup(admin.clone()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["retention_days"].as_u64(), body["expired_backups"].as_u64()), (Some(0), Some(1)));
    e2e::carried_over_backup(&app).await;
    let first_path = storage_backups::get(&app.pool, first).await.unwrap().unwrap().backup_path;
    assert!(tree.root().join(&first_path).exists(), "kept until the carry-over exists");

    assert_eq!(cleanup(admin).await.status(), StatusCode::ACCEPTED);
    eventually(TIMEOUT, "the expired backup is removed", || async {
        storage_backups::get(&app.pool, first).await.unwrap().unwrap().removed_at.is_some()
    })
    .await;
    assert!(!Path::new(&tree.root().join(&first_path)).exists());
    assert_live_originals_on_disk(&app, images.len()).await;
    worker.stop().await;
    app.stop().await;
}
