//! `stayler-worker migrate-storage --to s3`: a deployment that ran on the local tree copies
//! its objects into the test store's bucket, every one verified against its recorded
//! SHA-256 (one larger than an upload part, so it streams as a multipart upload); a second
//! run copies nothing, and a damaged or missing local file is reported, never copied.

use api::test_support::TestApp;
use e2e::{TestWorker, upload_every_kind};
use reqwest::StatusCode;
use serde_json::Value;
use shared::db::{storage_files, storage_thumbnails};
use shared::model::ImageId;
use shared::storage::{Storage, StorageKey};
use shared::test_support::TestBucket;
use sqlx::PgPool;
use uuid::Uuid;
use worker::migrate::{self, MigrationReport, ProblemKind};
use worker::operator;

/// Every object the images `ids` have, with the SHA-256 their rows record.
async fn recorded_objects(pool: &PgPool, ids: &[String]) -> Vec<(StorageKey, String)> {
    let mut objects = Vec::new();
    for id in ids {
        let id = ImageId(Uuid::parse_str(id).unwrap());
        let file = storage_files::get(pool, id).await.unwrap().expect("a live image");
        objects.push((file.key(), file.checksum.clone()));
        for thumbnail in storage_thumbnails::list(pool, id).await.unwrap() {
            objects.push((file.thumbnail_key(&thumbnail.size_name, thumbnail.format), thumbnail.checksum));
        }
    }
    objects
}

async fn migrate(config: &shared::config::Config) -> MigrationReport {
    let report = migrate::migrate_to_s3(config, |_| {}).await.expect("the migration runs");
    eprintln!("{report:?}");
    report
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_local_tree_moves_to_the_store_verified_once_and_a_damaged_file_is_reported_not_copied(pool: PgPool) {
    let bucket = TestBucket::new();
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let mut ids = upload_every_kind(&app).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "large.png", e2e::incompressible_png(0x9e37_79b9), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    e2e::settled(&app, "every upload has thumbnails and a verified checksum").await;
    worker.stop().await;
    let objects = recorded_objects(&app.pool, &ids).await;
    let sizes = app.config.storage.thumbnail_sizes.len();
    assert_eq!(objects.len(), ids.len() * (1 + sizes), "originals and thumbnails");
    let recorded_bytes: i64 = sqlx::query_scalar(
        "SELECT (SELECT sum(file_size) FROM storage_files)::bigint
              + (SELECT sum(file_size) FROM storage_thumbnails)::bigint",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();

    // Without a bucket configured, nothing starts.
    let mut config = (*app.config).clone();
    let refused = migrate::migrate_to_s3(&config, |_| {}).await.unwrap_err();
    assert!(format!("{refused:#}").contains("storage.s3.bucket"), "{refused:#}");

    config.storage.s3 = bucket.config.clone();
    let staging = tempfile::tempdir().unwrap();
    let store = Storage::open_s3(staging.path(), &bucket.config).await.unwrap();
    let mut progress = Vec::new();
    let first = migrate::migrate_to_s3(&config, |now| progress.push(*now)).await.unwrap();
    eprintln!("{first:?}");
    assert!(first.is_complete(), "{first:?}");
    assert_eq!((first.copied, first.already_there), (objects.len() as u64, 0));
    assert_eq!(first.copied_bytes, recorded_bytes as u64);
    let last = progress.last().unwrap();
    assert_eq!((last.objects_done, last.objects_total), (objects.len() as u64, objects.len() as u64));
    assert_eq!((last.bytes_done, last.bytes_total), (recorded_bytes as u64, recorded_bytes as u64));
    assert_eq!(store.count_objects().await.unwrap(), objects.len());
    for (key, checksum) in &objects {
        assert_eq!(&store.sha256(key).await.unwrap(), checksum, "{}", key.to_db_path());
    }

    // Run again: everything is there already, and nothing is read or written.
    let second = migrate(&config).await;
    assert!(second.is_complete(), "{second:?}");
    assert_eq!((second.copied, second.already_there), (0, objects.len() as u64));
    operator::migrate_storage(&config).await.expect("a complete migration exits cleanly");

    // A damaged local original whose object is not in the bucket (yet), and a thumbnail
    // gone from the local tree.
    let (damaged, damaged_checksum) = objects[0].clone();
    let local = app.storage.root().join(damaged.relative_path());
    let mut bytes = std::fs::read(&local).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&local, bytes).unwrap();
    assert!(store.delete(&damaged).await.unwrap());
    let (gone, _) = objects.iter().find(|(key, _)| matches!(key, StorageKey::Thumbnail { .. })).unwrap().clone();
    std::fs::remove_file(app.storage.root().join(gone.relative_path())).unwrap();
    assert!(store.delete(&gone).await.unwrap());

    let third = migrate(&config).await;
    assert!(!third.is_complete());
    assert_eq!((third.copied, third.mismatched, third.missing, third.failed), (0, 1, 1, 0), "{third:?}");
    assert_eq!(third.already_there, objects.len() as u64 - 2);
    let mismatch = third.problems.iter().find(|p| p.kind == ProblemKind::ChecksumMismatch).unwrap();
    assert_eq!((mismatch.image_id.to_string(), mismatch.path.as_str()), (ids[0].clone(), &*damaged.to_db_path()));
    assert!(mismatch.reason.contains(&damaged_checksum), "{}", mismatch.reason);
    let missing = third.problems.iter().find(|p| p.kind == ProblemKind::Missing).unwrap();
    assert_eq!(missing.path, gone.to_db_path());
    assert!(!store.exists(&damaged).await.unwrap(), "the damaged original is not copied");
    assert_eq!(store.count_objects().await.unwrap(), objects.len() - 2, "nothing else appeared");
    let error = operator::migrate_storage(&config).await.expect_err("an incomplete migration is an error");
    assert!(format!("{error:#}").contains("1 checksum mismatches"), "{error:#}");
    let left = store.remove_all_objects().await.unwrap();
    assert_eq!(left, objects.len() as u64 - 2, "no staged object is left in the bucket");
    app.stop().await;
}
