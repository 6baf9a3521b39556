//! Backups of an s3 deployment to a bucket of their own (`storage.backupBackend: s3`),
//! against the test store: the API and the worker each get an empty folder of their own, so
//! an archive that stayed on the worker's disk would be missing where a restore looks for
//! it, and is counted when the test ends.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::test_support::TestApp;
use e2e::{files_under, finished, settled, upload_every_kind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::backup::manifest;
use shared::config::StorageBackend;
use shared::db::storage_backups;
use shared::model::{ArchivedImage, BackupId};
use shared::storage::{BackupTree, MANIFEST_FILE};
use shared::test_support::{TestBucket, eventually};
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Sends an admin's request and returns the `202` answer's body.
async fn accepted(token: &str, request: reqwest::RequestBuilder) -> Value {
    let response = request.bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// Runs `work` on a blocking thread, as every caller of the tree does.
async fn blocking<T: Send + 'static>(tree: &BackupTree, work: impl FnOnce(BackupTree) -> T + Send + 'static) -> T {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || work(tree)).await.unwrap()
}

/// The entries of the manifest at `path`, read from the tree.
async fn manifest_entries(tree: &BackupTree, path: PathBuf) -> Vec<ArchivedImage> {
    blocking(tree, move |tree| {
        let reader = manifest::Reader::new(BufReader::new(tree.open_file(&path).unwrap())).unwrap();
        reader.collect::<Result<_, _>>().unwrap()
    })
    .await
}

/// Sizes of the archives of `entries` in the tree (`None` for a missing one).
async fn archive_sizes(tree: &BackupTree, entries: &[ArchivedImage]) -> Vec<Option<u64>> {
    let paths: Vec<PathBuf> = entries.iter().map(|entry| entry.archive_path.clone()).collect();
    blocking(tree, move |tree| paths.iter().map(|path| tree.file_len(path).unwrap()).collect()).await
}

async fn backup_row(app: &TestApp, id: &str) -> storage_backups::Backup {
    let id = BackupId(id.parse().unwrap());
    storage_backups::get(&app.pool, id).await.unwrap().unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn backups_of_an_s3_deployment_go_to_their_own_bucket_and_are_checked_restored_and_expired_there(pool: PgPool) {
    let (images, backups) = (TestBucket::new(), TestBucket::new());
    let app = TestApp::spawn_with(pool, |config| {
        config.storage.backend = StorageBackend::S3;
        config.storage.s3 = images.config.clone();
        config.storage.backup_backend = StorageBackend::S3;
        config.storage.backup_s3 = backups.config.clone();
        // Every finished backup has expired by the time the cleanup is asked.
        config.storage.backup_policy.retention_days = 0;
    })
    .await;
    let (worker, _, worker_dir) = e2e::worker_on_its_own_folders(&app).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (_, token) = app.user();
    let inspection = tempfile::tempdir().unwrap();
    let tree = BackupTree::open_s3(inspection.path(), &backups.config).unwrap();

    let mut ids = upload_every_kind(&app).await;
    let response = app.upload(&token, "user", "large.png", e2e::incompressible_png(0x2545_f491), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    settled(&app, "every upload has thumbnails and a verified checksum").await;

    // Backed up through the API: the archives and the manifest are objects of the backup
    // bucket, named as in the local tree, and the images' bucket holds no backup.
    let started = std::time::Instant::now();
    let backup = accepted(&admin, app.client.post(app.url("/storage/backup")).json(&json!({}))).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let backup = finished(&app, &admin, &format!("/storage/backups/{backup_id}")).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let backup_took = started.elapsed();
    let first = backup_row(&app, &backup_id).await;
    let manifest_path = PathBuf::from(first.manifest_path.clone().unwrap());
    assert_eq!(manifest_path, Path::new(&first.backup_path).join(MANIFEST_FILE));
    assert!(first.backup_path.ends_with(&format!("/{backup_id}")), "{{day}}/{{backup_id}}: {}", first.backup_path);
    let found = blocking(&tree, |tree| tree.manifests().unwrap()).await;
    assert_eq!(found, std::slice::from_ref(&manifest_path), "the backup is found through its manifest");
    let entries = manifest_entries(&tree, manifest_path.clone()).await;
    assert_eq!(entries.len(), ids.len(), "one archive per image");
    let sizes = archive_sizes(&tree, &entries).await;
    let expected: Vec<Option<u64>> = entries.iter().map(|entry| Some(entry.compressed_size as u64)).collect();
    assert_eq!(sizes, expected, "every archive is an object of the backup bucket");
    assert!(
        entries.iter().any(|entry| entry.compressed_size as usize > shared::storage::UPLOAD_PART_BYTES),
        "one archive went up in parts"
    );
    for entry in &entries {
        let expected = format!("{}/{}.zst", first.backup_path, entry.file_path);
        assert_eq!(entry.archive_path, Path::new(&expected), "the storage layout inside the backup's prefix");
    }
    let images_tree = BackupTree::open_s3(inspection.path(), &images.config).unwrap();
    assert!(blocking(&images_tree, |tree| tree.manifests().unwrap()).await.is_empty());
    assert!(tree.disk_space().is_none(), "the health check sees no backup disk");

    // Checked by a worker, reading every archive back from the bucket.
    let verify = app.client.post(app.url(&format!("/storage/backups/{backup_id}/verify")));
    accepted(&admin, verify).await;
    eventually(TIMEOUT, "the backup is checked", || async { backup_row(&app, &backup_id).await.verified_at.is_some() })
        .await;
    let checked = backup_row(&app, &backup_id).await;
    assert_eq!(checked.verify_status.as_deref(), Some("ok"), "{:?}", checked.verify_report);
    assert_eq!(checked.verify_report.as_ref().unwrap()["intact"], ids.len(), "{:?}", checked.verify_report);

    // Every image object and the tables are lost; a restore from the backup bucket brings
    // every original back.
    let before = e2e::live_checksums(&app.pool).await;
    e2e::lose_every_image(&app).await;
    let started = std::time::Instant::now();
    let restore = app.client.post(app.url("/storage/restore")).json(&json!({ "backup_id": backup_id }));
    let restore = accepted(&admin, restore).await;
    let restore = finished(&app, &admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await;
    assert_eq!(restore["status"], "completed", "{restore}");
    assert_eq!(restore["restored"].as_u64(), Some(ids.len() as u64), "{restore}");
    let restore_took = started.elapsed();
    settled(&app, "restored images are processed again").await;
    assert_eq!(e2e::live_checksums(&app.pool).await, before, "every original is back, its checksum verified again");
    let thumbnails = app.config.storage.thumbnail_sizes.len();
    assert_eq!(app.storage.count_objects().await.unwrap(), ids.len() * (1 + thumbnails));

    // Retention: the expired backup holds the only copies, which are carried into a new
    // backup (in the bucket too) first; the next cleanup deletes its objects.
    let cleanup = || app.client.delete(app.url("/storage/backups/cleanup"));
    let answer = accepted(&admin, cleanup()).await;
    assert_eq!(answer["expired_backups"].as_u64(), Some(1), "{answer}");
    let carry = backup_row(&app, &e2e::carried_over_backup(&app).await.to_string()).await;
    let carry_manifest = PathBuf::from(carry.manifest_path.clone().unwrap());
    assert_eq!(manifest_entries(&tree, carry_manifest.clone()).await.len(), ids.len());
    assert_eq!(archive_sizes(&tree, &entries).await, expected, "kept until the carry-over exists");
    accepted(&admin, cleanup()).await;
    eventually(TIMEOUT, "the expired backup is removed", || async {
        backup_row(&app, &backup_id).await.removed_at.is_some()
    })
    .await;
    assert_eq!(archive_sizes(&tree, &entries).await, vec![None; entries.len()], "its archives are deleted");
    let left = blocking(&tree, |tree| tree.manifests().unwrap()).await;
    assert!(!left.contains(&manifest_path), "{left:?}");
    assert!(left.contains(&carry_manifest), "the carry-over stays: {left:?}");
    // The second cleanup carries the carry-over's copies again: let that backup finish.
    eventually(TIMEOUT, "no backup is running", || async {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM storage_backups WHERE status IN ('pending', 'running')")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        running == 0
    })
    .await;
    tracing::info!(
        images = ids.len(),
        backup_ms = backup_took.as_millis() as u64,
        restore_ms = restore_took.as_millis() as u64,
        compressed_bytes = first.compressed_bytes,
        "backup to and restore from the backup bucket"
    );

    worker.stop().await;
    let (api_folder, worker_folder) = (app.config.storage.base_path.clone(), worker_dir.path().to_owned());
    app.stop().await;
    assert_eq!(files_under(&api_folder), Vec::<String>::new(), "nothing is left in the API's folder");
    assert_eq!(files_under(&worker_folder), Vec::<String>::new(), "nothing is left in the worker's folders");
}
