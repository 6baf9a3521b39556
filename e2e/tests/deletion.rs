//! Deletion through its real entry points: API (delete + outbox relay) → RabbitMQ → the
//! deletions worker removes the original and thumbnails from disk, once, whatever the
//! duplicates and whatever order the jobs of an image arrive in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::test_support::{TestApp, images};
use e2e::TestWorker;
use reqwest::StatusCode;
use serde_json::Value;
use shared::broker::{JobQueue, Publisher};
use shared::events::{Envelope, ImageDeleted};
use shared::model::{ImageId, OwnerType};
use shared::test_support::{TestBroker, eventually};
use sqlx::PgPool;
use uuid::Uuid;
use worker::Context;
use worker::consumer::{Handler, Job};
use worker::deletions::Deletions;

const PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);

async fn upload(app: &TestApp, token: &str, name: &str) -> String {
    let response = app.upload(token, "user", name, images::jpeg(800, 600), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Waits for an image's thumbnails and returns the paths of all its files.
async fn processed_files(app: &TestApp, token: &str, id: &str) -> Vec<PathBuf> {
    let view = || async { app.get_image(token, id).await.json::<Value>().await.unwrap() };
    eventually(PROCESSING_TIMEOUT, &format!("{id} has thumbnails"), || async {
        view().await["thumbnails"]["status"] == "ready"
    })
    .await;
    let view = view().await;
    let mut paths = vec![app.storage.root().join(view["path"].as_str().unwrap())];
    for variant in view["thumbnails"]["variants"].as_array().unwrap() {
        paths.push(app.storage.root().join(variant["path"].as_str().unwrap()));
    }
    assert_eq!(paths.len(), 1 + app.config.storage.thumbnail_sizes.len());
    assert!(paths.iter().all(|p| p.exists()));
    paths
}

async fn gone(paths: &[PathBuf], what: &str) {
    eventually(PROCESSING_TIMEOUT, what, || async { paths.iter().all(|p| !p.exists()) }).await;
}

async fn thumbnail_rows(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails WHERE image_id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The deletion job of an image, as the worker receives it.
fn deletion_job(id: &str) -> Job {
    let envelope = Envelope::new(ImageDeleted { image_id: ImageId(id.parse().unwrap()) });
    Job {
        message_id: Some(envelope.id.to_string()),
        event_type: "image.deleted".to_owned(),
        body: serde_json::to_vec(&envelope).unwrap(),
        attempt: 1,
    }
}

fn handler(app: &TestApp) -> Deletions {
    let backups = shared::storage::BackupTree::open(&app.config.storage.backup_path).unwrap();
    Deletions::new(Context {
        db: app.pool.clone(),
        storage: app.storage.clone(),
        backups,
        config: Arc::clone(&app.config),
    })
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deleted_image_loses_its_files_and_a_duplicated_job_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let worker = TestWorker::start(&app.config).await;
    let (user, token) = app.user();
    let doomed = upload(&app, &token, "doomed.jpg").await;
    let kept = upload(&app, &token, "kept.jpg").await;
    let doomed_files = processed_files(&app, &token, &doomed).await;
    let kept_files = processed_files(&app, &token, &kept).await;
    let kept_size = std::fs::metadata(&kept_files[0]).unwrap().len() as i64;

    assert_eq!(app.delete_image(&token, &doomed).await.status(), StatusCode::NO_CONTENT);
    gone(&doomed_files, "the deleted image's files are removed").await;
    let quota = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((quota.used_files, quota.used_bytes), (1, kept_size));
    eventually(PROCESSING_TIMEOUT, "its thumbnail rows are forgotten", || async {
        thumbnail_rows(&app, &doomed).await == 0
    })
    .await;
    let tombstone: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_files WHERE id = $1::uuid AND deleted_at IS NOT NULL")
            .bind(&doomed)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(tombstone, 1, "the row stays as a tombstone");
    assert!(kept_files.iter().all(|p| p.exists()), "another image of the owner was touched");

    // The very same event (same id) again, then a sentinel deletion behind it.
    let (event_id, payload): (Uuid, Value) =
        sqlx::query_as("SELECT event_id, payload FROM outbox WHERE event_type = 'image.deleted'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let publisher = Publisher::new(&app.config.rabbitmq, "test duplicate");
    publisher.publish_event(event_id, "image.deleted", serde_json::to_vec(&payload).unwrap()).await.unwrap();
    assert_eq!(app.delete_image(&token, &kept).await.status(), StatusCode::NO_CONTENT);
    gone(&kept_files, "the sentinel's files are removed").await;
    let queue = broker.topology.queue(JobQueue::Deletions);
    broker.wait_for_depth(&queue, 0, PROCESSING_TIMEOUT).await;
    assert_eq!(broker.depth(&broker.topology.dead_letter_queue(JobQueue::Deletions)).await, 0);
    let quota = app.quota(user, OwnerType::User).await.unwrap();
    assert_eq!((quota.used_files, quota.used_bytes), (0, 0));
    assert_eq!(app.storage.count_objects().await.unwrap(), 0);

    // Handled again directly, with every file already gone: still a success.
    let handler = handler(&app);
    for _ in 0..2 {
        handler.handle(&deletion_job(&doomed)).await.expect("a repeated deletion succeeds");
    }
    publisher.close().await;
    worker.stop().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deletion_job_for_a_live_image_removes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let id = upload(&app, &token, "alive.jpg").await;
    let files = processed_files(&app, &token, &id).await;
    worker.stop().await;

    // A forged or stale event (the image was never deleted, or was restored since).
    handler(&app).handle(&deletion_job(&id)).await.unwrap();
    assert!(files.iter().all(|p| p.exists()));
    assert_eq!(thumbnail_rows(&app, &id).await, 3);
    assert_eq!(app.get_image(&token, &id).await.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_image_deleted_before_its_thumbnails_leaves_nothing_on_disk(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let id = upload(&app, &token, "quick.jpg").await;
    assert_eq!(app.delete_image(&token, &id).await.status(), StatusCode::NO_CONTENT);
    // Both events wait in their queues; the worker starts only now.
    let thumbnails = broker.topology.queue(JobQueue::Thumbnails);
    let deletions = broker.topology.queue(JobQueue::Deletions);
    broker.wait_for_depth(&deletions, 1, PROCESSING_TIMEOUT).await;
    broker.wait_for_depth(&thumbnails, 1, PROCESSING_TIMEOUT).await;

    let worker = TestWorker::start(&app.config).await;
    for queue in [&thumbnails, &deletions, &broker.topology.queue(JobQueue::Checksums)] {
        broker.wait_for_depth(queue, 0, PROCESSING_TIMEOUT).await;
    }
    eventually(PROCESSING_TIMEOUT, "nothing is left on disk", || async {
        app.storage.count_objects().await.unwrap() == 0
    })
    .await;
    assert_eq!(thumbnail_rows(&app, &id).await, 0);
    worker.stop().await;
    broker.delete().await;
}
