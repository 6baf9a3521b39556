//! The file audit on the s3 backend, against the real test store and PostgreSQL: the bucket
//! is listed under the deployment's prefix instead of a folder walked, with the same report
//! and the same rules as on the local tree (e2e/tests/maintenance/file_auditor.rs).
//!
//! An object's `last_modified` cannot be set: the old objects are written first, and the
//! audit runs as of a `now` one grace after a moment between them and the young ones.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use secrecy::ExposeSecret;
use serde_json::Value;
use shared::config::{MaintenanceConfig, S3Config};
use shared::maintenance::file_audit;
use shared::model::{ImageFormat, ImageId, ImageType, Owner, OwnerId, OwnerType};
use shared::storage::{QUARANTINE_DIR, ScannedFile, Storage, StorageKey};
use shared::test_support::TestBucket;
use sqlx::PgPool;
use uuid::Uuid;

const SIZES: [&str; 3] = ["small", "medium", "large"];

/// The test's bucket as an operator sees it: objects by name under the test's prefix.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    /// Opened after a [`Storage`] on the same bucket, which installs the TLS provider.
    fn new(config: &S3Config) -> Self {
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(config.secret_access_key.expose_secret())
            .with_allow_http(true)
            .build()
            .expect("a client of the test bucket");
        Self { store: Arc::new(store), prefix: config.prefix.clone() }
    }

    fn path(&self, relative: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{relative}", self.prefix))
    }

    async fn put(&self, relative: &str) {
        self.store.put(&self.path(relative), PutPayload::from_static(b"bytes")).await.unwrap();
    }

    async fn exists(&self, relative: &str) -> bool {
        match self.store.head(&self.path(relative)).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(error) => panic!("{error}"),
        }
    }
}

fn owner() -> Owner {
    Owner { id: OwnerId(Uuid::now_v7()), kind: OwnerType::User }
}

fn original(owner: Owner, image_id: ImageId) -> StorageKey {
    StorageKey::Original { image_type: ImageType::User, owner, image_id, format: ImageFormat::Jpeg }
}

fn thumbnail(owner: Owner, image_id: ImageId, size: &str) -> StorageKey {
    StorageKey::Thumbnail {
        image_type: ImageType::User,
        owner,
        image_id,
        size: size.to_owned(),
        format: ImageFormat::Jpeg,
    }
}

/// Inserts a live image whose thumbnails are ready, with its three thumbnail rows (no
/// object is written).
async fn insert_image(pool: &PgPool, owner: Owner, image_id: ImageId) {
    sqlx::query(
        "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                    mime_type, format, width, height, checksum, thumbnail_status)
         VALUES ($1, $2, 'user', 'user', 'me.jpg', $3, 10, 'image/jpeg', 'jpeg', 1, 1, repeat('a', 64), 'ready')",
    )
    .bind(image_id.0)
    .bind(owner.id.0)
    .bind(original(owner, image_id).to_db_path())
    .execute(pool)
    .await
    .unwrap();
    for size in SIZES {
        sqlx::query(
            "INSERT INTO storage_thumbnails (image_id, size_name, file_path, file_size, mime_type, width, height,
                                             checksum)
             VALUES ($1, $2, $3, 10, 'image/jpeg', 1, 1, repeat('a', 64))",
        )
        .bind(image_id.0)
        .bind(size)
        .bind(thumbnail(owner, image_id, size).to_db_path())
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A file in the local staging folder, last written `age` ago.
fn stage_locally(storage: &Storage, name: &str, age: Duration) -> std::path::PathBuf {
    let path = storage.root().join(".staging").join(name);
    std::fs::write(&path, b"bytes").unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(SystemTime::now() - age).unwrap();
    path
}

async fn audit(pool: &PgPool, storage: &Storage, now: DateTime<Utc>) -> file_audit::AuditReport {
    let config = MaintenanceConfig { orphan_grace_secs: 3600, quarantine_retention_days: 30, ..Default::default() };
    file_audit::run(pool, storage, &config, now).await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_file_audit_lists_the_bucket_quarantines_old_orphans_and_never_moves_live_objects(pool: PgPool) {
    let test_bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let storage = test_bucket.storage(staging.path()).await;
    let bucket = Bucket::new(&test_bucket.config);

    // Old: two live images (one missing a thumbnail), an orphan, objects staged by a crash.
    let (kept, incomplete) = ((owner(), ImageId::new()), (owner(), ImageId::new()));
    let mut live_files = Vec::new();
    for (owner, id) in [kept, incomplete] {
        insert_image(&pool, owner, id).await;
        let sizes = if id == incomplete.1 { &SIZES[1..] } else { &SIZES[..] };
        let keys = sizes.iter().map(|size| thumbnail(owner, id, size)).chain([original(owner, id)]);
        for key in keys {
            storage.write(&key, b"bytes").await.unwrap();
            live_files.push(key.to_db_path());
        }
    }
    let stranger = owner();
    let old_orphan = original(stranger, ImageId::new()).to_db_path();
    bucket.put(&old_orphan).await;
    bucket.put(".staging/left-by-a-crash.part").await;
    let crashed_locally = stage_locally(&storage, "left-by-a-crash.part", Duration::from_secs(2 * 3600));
    // The original of a live image that a backup holds, lost from the bucket.
    let (lost_owner, lost) = (owner(), ImageId::new());
    insert_image(&pool, lost_owner, lost).await;
    sqlx::query("UPDATE storage_files SET is_backed_up = true, backup_path = 'day/backup/x.zst' WHERE id = $1")
        .bind(lost.0)
        .execute(&pool)
        .await
        .unwrap();
    for size in SIZES {
        storage.write(&thumbnail(lost_owner, lost, size), b"bytes").await.unwrap();
        live_files.push(thumbnail(lost_owner, lost, size).to_db_path());
    }

    // Old and young are told apart at `written_before`, well away from both.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let written_before = Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = written_before + TimeDelta::seconds(3600);
    let day = now.format("%Y-%m-%d").to_string();

    // Young: an orphan that may be about to get its row, and staged objects in flight.
    let young_orphan = thumbnail(stranger, ImageId::new(), "small").to_db_path();
    bucket.put(&young_orphan).await;
    bucket.put(".staging/in-flight.part").await;
    let in_flight_locally = stage_locally(&storage, "in-flight.part", Duration::ZERO);
    // Quarantine days: one past the retention, today's, and a prefix that is no day.
    let expired = ["2020-01-01/images/user/x/images/a.jpg", "2020-01-01/images/user/x/thumbnails/a_small.jpg"];
    let kept_quarantine = [format!("{day}/images/user/x/images/b.jpg"), "kept-by-hand/c.jpg".to_owned()];
    for name in expired.iter().copied().chain(kept_quarantine.iter().map(String::as_str)) {
        bucket.put(&format!("{QUARANTINE_DIR}/{name}")).await;
    }

    let report = audit(&pool, &storage, now).await;
    assert_eq!(report.scanned_files as usize, live_files.len() + 2, "{report:?}");
    assert_eq!((report.orphans_quarantined, report.recent_unreferenced), (1, 1), "{report:?}");
    let quarantined = format!("{QUARANTINE_DIR}/{day}/{old_orphan}");
    assert_eq!(report.quarantined_sample, std::slice::from_ref(&quarantined));
    assert!(bucket.exists(&quarantined).await && !bucket.exists(&old_orphan).await);
    assert!(bucket.exists(&young_orphan).await, "a young object may be about to get its row");
    for path in &live_files {
        assert!(bucket.exists(path).await, "{path} was moved");
    }
    assert_eq!(report.stale_temp_removed, 2, "the bucket's staged object and the local staged file");
    assert!(!bucket.exists(".staging/left-by-a-crash.part").await && bucket.exists(".staging/in-flight.part").await);
    assert!(!crashed_locally.exists() && in_flight_locally.exists());
    assert_eq!(report.quarantine_purged, 2);
    for name in expired {
        assert!(!bucket.exists(&format!("{QUARANTINE_DIR}/{name}")).await, "{name} outlived the retention");
    }
    for name in &kept_quarantine {
        assert!(bucket.exists(&format!("{QUARANTINE_DIR}/{name}")).await, "{name} went");
    }
    assert_eq!(report.missing_originals, 1);
    let missing = &report.missing_sample[0];
    assert_eq!(
        (missing.image_id, missing.backed_up, missing.backup_path.as_deref()),
        (lost, true, Some("day/backup/x.zst"))
    );
    assert_eq!(report.thumbnails_requeued, 1);
    let (status, queued): (String, i64) = sqlx::query_as(
        "SELECT thumbnail_status, (SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'
                                   AND strpos(payload::text, $1::text) > 0)
         FROM storage_files WHERE id = $1",
    )
    .bind(incomplete.1.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), queued), ("pending", 1), "the missing thumbnail is made again");
    let (status, details): (String, Value) = sqlx::query_as(
        "SELECT status, details FROM storage_health_checks WHERE check_type = 'files' ORDER BY checked_at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "degraded");
    assert_eq!((details["orphans_quarantined"].as_u64(), details["quarantine_purged"].as_u64()), (Some(1), Some(2)));

    // Quarantine is outside the listing: a second audit moves nothing more.
    let again = audit(&pool, &storage, now).await;
    assert_eq!(again.scanned_files as usize, live_files.len() + 1);
    assert_eq!(
        (again.orphans_quarantined, again.stale_temp_removed, again.quarantine_purged, again.missing_originals),
        (0, 0, 0, 1)
    );
}

#[tokio::test]
async fn an_object_orphaned_twice_in_a_day_keeps_both_copies_and_a_vanished_one_is_skipped() {
    let test_bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let storage = test_bucket.storage(staging.path()).await;
    let bucket = Bucket::new(&test_bucket.config);
    let orphan = original(owner(), ImageId::new()).to_db_path();
    let file = ScannedFile { relative: orphan.clone().into(), modified: SystemTime::now() };
    let day = Utc::now().date_naive();

    bucket.put(&orphan).await;
    let first = storage.quarantine(&file, day).await.unwrap().expect("moved");
    assert_eq!(first.to_str().unwrap(), format!("{QUARANTINE_DIR}/{day}/{orphan}"));
    bucket.put(&orphan).await;
    let second = storage.quarantine(&file, day).await.unwrap().expect("moved");
    let second = second.to_str().unwrap();
    assert!(second.starts_with(&format!("{}.", first.to_str().unwrap())), "{second}");
    assert!(bucket.exists(first.to_str().unwrap()).await && bucket.exists(second).await);
    assert!(!bucket.exists(&orphan).await);
    assert_eq!(storage.quarantine(&file, day).await.unwrap(), None, "the object is gone");
    let outside = ScannedFile { relative: "quarantine/x.jpg".into(), modified: SystemTime::now() };
    assert!(storage.quarantine(&outside, day).await.is_err(), "only stored objects are quarantined");
}
