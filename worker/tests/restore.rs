//! Restores: the disaster-recovery drill through the API and the workers (every file and
//! row lost, then restored from a backup), and the operator commands facing a damaged
//! archive.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use api::test_support::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::backup::restore::{RestoreMode, Restorer, Selection};
use shared::backup::verify;
use shared::db::storage_backups;
use shared::images::ImageId;
use shared::storage::BackupTree;
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;
use worker::operator::{self, RestoreTarget};
use worker::test_support::{TestWorker, upload_every_kind};

const TIMEOUT: Duration = Duration::from_secs(90);

/// What a restore must bring back of a row: everything but processing state and counters.
const ROW: &str = "SELECT id::text, to_jsonb(f) - 'checksum_status' - 'verified_at' - 'thumbnail_status'
                          - 'is_backed_up' - 'backup_path' - 'access_count' - 'last_accessed' - 'updated_at'
                          - 'search_text'
                   FROM storage_files f ORDER BY id";

async fn rows(pool: &PgPool) -> BTreeMap<String, Value> {
    sqlx::query_as::<_, (String, Value)>(ROW).fetch_all(pool).await.unwrap().into_iter().collect()
}

async fn originals(app: &TestApp) -> BTreeMap<String, Vec<u8>> {
    let paths: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, file_path FROM storage_files").fetch_all(&app.pool).await.unwrap();
    paths.into_iter().map(|(id, path)| (id, std::fs::read(app.storage.root().join(path)).unwrap())).collect()
}

async fn settled(app: &TestApp, what: &str) {
    eventually(TIMEOUT, what, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM storage_files WHERE thumbnail_status <> 'ready' OR checksum_status <> 'verified'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        waiting == 0
    })
    .await;
}

async fn admin_post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "POST {path}");
    response.json().await.unwrap()
}

async fn finished(app: &TestApp, token: &str, path: &str) -> Value {
    let get = || async { app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap().json::<Value>().await };
    eventually(TIMEOUT, &format!("{path} finishes"), || async {
        matches!(get().await.unwrap()["status"].as_str(), Some("completed" | "failed"))
    })
    .await;
    get().await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn after_losing_every_file_and_row_a_restore_brings_back_identical_originals_rows_and_thumbnails(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config);
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let mut ids = upload_every_kind(&app).await;
    ids.extend(upload_every_kind(&app).await);
    settled(&app, "every upload is processed").await;
    let before_rows = rows(&app.pool).await;
    let before_files = originals(&app).await;
    let before_sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_image_sources").fetch_one(&app.pool).await.unwrap();
    let before_usage: Vec<(Uuid, i64, i64)> =
        sqlx::query_as("SELECT owner_id, used_files, used_bytes FROM storage_quotas ORDER BY owner_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(before_files.len(), ids.len());
    let backup = admin_post(&app, &admin, "/storage/backup", json!({})).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let backup = finished(&app, &admin, &format!("/storage/backups/{backup_id}")).await;
    assert_eq!(backup["status"], "completed");

    // The disaster: the whole storage folder and every table's rows are gone.
    std::fs::remove_dir_all(app.storage.root().join("images")).unwrap();
    sqlx::query(
        "TRUNCATE storage_files, storage_thumbnails, storage_image_sources, storage_quotas, storage_backups,
                  storage_backup_entries, storage_signed_urls, storage_access_logs, upload_idempotency, outbox CASCADE",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.stored_file_count().await, 0);

    let restore = admin_post(&app, &admin, "/storage/restore", json!({ "backup_id": backup_id })).await;
    assert_eq!(restore["mode"], "missing_only");
    let restore = finished(&app, &admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await;
    assert_eq!(restore["status"], "completed", "{restore}");
    assert_eq!((restore["restored"].as_u64(), restore["failed"].as_u64()), (Some(ids.len() as u64), Some(0)));
    settled(&app, "thumbnails are made again and checksums verified").await;

    assert_eq!(rows(&app.pool).await, before_rows, "every row is back as it was");
    assert_eq!(originals(&app).await, before_files, "every original is byte-identical");
    let thumbnails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails").fetch_one(&app.pool).await.unwrap();
    assert_eq!(thumbnails as usize, ids.len() * app.config.storage.thumbnail_sizes.len());
    assert_eq!(app.storage.count_objects().await.unwrap(), ids.len() * (1 + app.config.storage.thumbnail_sizes.len()));
    let sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_image_sources").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sources, before_sources, "provenance is rebuilt");
    let usage: Vec<(Uuid, i64, i64)> =
        sqlx::query_as("SELECT owner_id, used_files, used_bytes FROM storage_quotas ORDER BY owner_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(usage, before_usage, "quota usage follows the restored images");
    worker.stop().await;
    app.stop().await;
}

fn archive_of(tree: &BackupTree, id: &str) -> PathBuf {
    let manifest = tree.manifests().unwrap().pop().unwrap();
    let reader = shared::backup::manifest::Reader::new(tree.open_file(&manifest).unwrap()).unwrap();
    let entry = reader.map(Result::unwrap).find(|e| e.image_id.to_string() == id).unwrap();
    tree.root().join(entry.archive_path)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_flipped_byte_in_an_archive_is_detected_reported_and_never_restored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = upload_every_kind(&app).await;
    operator::backup(&app.config).await.expect("the operator backup succeeds");
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let backup_id: Uuid = sqlx::query_scalar("SELECT id FROM storage_backups").fetch_one(&app.pool).await.unwrap();
    operator::verify(&app.config, backup_id).await.expect("an intact backup passes its check");

    let (damaged, intact) = (&ids[0], &ids[1]);
    let archive = archive_of(&tree, damaged);
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();

    assert!(operator::verify(&app.config, backup_id).await.is_err(), "the check fails");
    let checked = storage_backups::get(&app.pool, shared::backup::BackupId(backup_id)).await.unwrap().unwrap();
    assert_eq!(checked.verify_status.as_deref(), Some("corrupt"));
    let report = checked.verify_report.unwrap();
    assert_eq!((report["corrupt"].as_u64(), report["intact"].as_u64()), (Some(1), Some(ids.len() as u64 - 1)));
    assert_eq!(report["problems"][0]["image_id"], damaged.as_str());

    // Both originals lost; the restore brings back the intact one only.
    let (damaged_path, intact_path) = (app.original_path(damaged).await, app.original_path(intact).await);
    let intact_bytes = std::fs::read(&intact_path).unwrap();
    std::fs::remove_file(&damaged_path).unwrap();
    std::fs::remove_file(&intact_path).unwrap();
    let target = RestoreTarget::Images(vec![damaged.parse().unwrap(), intact.parse().unwrap()]);
    assert!(operator::restore(&app.config, target, RestoreMode::MissingOnly).await.is_err(), "a failure is an error");
    assert!(!damaged_path.exists(), "damaged bytes are never restored");
    assert_eq!(std::fs::read(&intact_path).unwrap(), intact_bytes);
    assert_eq!(app.storage.count_staged().await.unwrap(), 0, "nothing half-written is left");

    // Again, through the library, to read the reasons: the intact one is present now.
    let restorer = Restorer { db: &app.pool, storage: &app.storage, backups: &tree, quota: &app.config.quota };
    let selection = Selection::ImageIds(vec![ImageId(damaged.parse().unwrap()), ImageId(intact.parse().unwrap())]);
    let report = restorer.restore(&selection, RestoreMode::MissingOnly, |_, _| {}).await.unwrap();
    assert_eq!((report.restored, report.skipped, report.failed), (0, 1, 1));
    let failure = report.details.iter().find(|d| d.outcome == "failed").unwrap();
    assert_eq!(failure.image_id.to_string(), *damaged);
    assert!(failure.reason.starts_with("archive corrupt"), "{}", failure.reason);
    let unknown = Selection::ImageIds(vec![ImageId::new()]);
    let report = restorer.restore(&unknown, RestoreMode::MissingOnly, |_, _| {}).await.unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(report.details[0].reason, "no backup holds this image");
    let report = verify::verify(&tree, &tree.manifests().unwrap()[0], |_, _| {}).unwrap();
    assert_eq!(report.corrupt, 1);
    app.stop().await;
}
