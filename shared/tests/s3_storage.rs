//! The storage interface on the s3 backend, against the real test store (a Garage node
//! `scripts/test` starts): the same calls as on the local tree, objects named after the
//! seed's layout under the deployment's prefix, large objects in parts, and a store that
//! does not answer failing fast instead of hanging.

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};
use shared::model::{ImageFormat, ImageId, ImageType, Owner, OwnerId, OwnerType};
use shared::storage::{Storage, StorageKey};
use shared::test_support::{TestBucket, s3_config};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

fn original(format: ImageFormat) -> StorageKey {
    StorageKey::Original {
        image_type: ImageType::User,
        owner: Owner { id: OwnerId(Uuid::now_v7()), kind: OwnerType::User },
        image_id: ImageId::new(),
        format,
    }
}

async fn read_all(storage: &Storage, key: &StorageKey) -> Vec<u8> {
    let mut bytes = Vec::new();
    storage.open_read(key).await.unwrap().read_to_end(&mut bytes).await.unwrap();
    bytes
}

async fn stored(storage: &Storage, key: &StorageKey, bytes: &[u8]) {
    let mut staged = storage.stage().await.unwrap();
    staged.append(bytes).await.unwrap();
    storage.commit(staged, key).await.unwrap();
}

#[tokio::test]
async fn objects_are_written_read_ranged_hashed_and_deleted_in_the_bucket() {
    let bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let storage = bucket.storage(staging.path()).await;
    let key = original(ImageFormat::Jpeg);
    assert!(!storage.exists(&key).await.unwrap());
    assert_eq!(storage.open_read(&key).await.unwrap_err().kind(), std::io::ErrorKind::NotFound);

    stored(&storage, &key, b"0123456789").await;
    assert_eq!(storage.count_staged().await.unwrap(), 0, "the staged copy is gone once uploaded");
    assert!(storage.exists(&key).await.unwrap());
    assert_eq!(read_all(&storage, &key).await, b"0123456789");
    let mut range = Vec::new();
    let mut reader = storage.open_range(&key, 2..5).await.unwrap();
    assert_eq!(reader.len(), 3);
    reader.read_to_end(&mut range).await.unwrap();
    assert_eq!(range, b"234");
    assert_eq!(storage.read(&key, 100).await.unwrap(), b"0123456789");
    assert!(storage.read(&key, 5).await.is_err(), "over the limit");
    assert_eq!(storage.sha256(&key).await.unwrap(), hex::encode(Sha256::digest(b"0123456789")));

    // Objects are named as the database names them, so the audit's lookups find them.
    let other = original(ImageFormat::Png);
    let missing = storage.missing(vec![key.to_db_path(), other.to_db_path()]).await.unwrap();
    assert_eq!(missing, [other.to_db_path()]);
    assert_eq!(storage.count_objects().await.unwrap(), 1);

    stored(&storage, &key, b"replaced").await;
    assert_eq!(read_all(&storage, &key).await, b"replaced", "a commit replaces the object");
    assert!(storage.delete(&key).await.unwrap());
    assert!(!storage.delete(&key).await.unwrap(), "already gone");
    assert!(!storage.exists(&key).await.unwrap());
    assert!(storage.disk_space().is_none(), "a bucket has no disk of ours to fill");
    let health = shared::health::probes::store(&storage, &shared::config::HealthConfig::default()).await;
    assert_eq!(health.status, shared::model::HealthStatus::Ok, "{:?}", health.problems());
    assert_eq!(storage.count_objects().await.unwrap(), 0, "the probe leaves nothing behind");
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_reads_back_whole_and_blocking() {
    let bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let storage = bucket.storage(staging.path()).await;
    let key = original(ImageFormat::Png);
    // More than one part, and not a multiple of one.
    let bytes: Vec<u8> = (0..(17 * 1024 * 1024 + 123)).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = storage.stage().await.unwrap().into_writer(Sha256::new());
    for chunk in bytes.chunks(300_000) {
        writer.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let (staged, _) = writer.finish().await.unwrap();
    storage.commit(staged, &key).await.unwrap();

    assert_eq!(storage.sha256(&key).await.unwrap(), hex::encode(Sha256::digest(&bytes)));
    let mut tail = Vec::new();
    let end = bytes.len() as u64;
    storage.open_range(&key, end - 10..end).await.unwrap().read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, &bytes[bytes.len() - 10..]);
    let blocking = storage.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        blocking.open_read_blocking(&key).unwrap().read_to_end(&mut all).unwrap();
        all
    })
    .await
    .unwrap();
    assert!(read == bytes, "the blocking reader yields the object");
}

#[tokio::test]
async fn a_store_that_does_not_answer_fails_the_call_instead_of_hanging() {
    // A port nothing listens on: connections are refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = shared::config::S3Config { endpoint: format!("http://{closed}"), ..s3_config() };
    let staging = tempfile::tempdir().unwrap();
    let storage = Storage::open_s3(staging.path(), &config).await.unwrap();
    let key = original(ImageFormat::Jpeg);
    let mut staged = storage.stage().await.unwrap();
    staged.append(b"bytes").await.unwrap();
    let error = storage.commit(staged, &key).await.unwrap_err();
    assert!(shared::storage::is_unavailable(&error), "{error}");
    assert_eq!(storage.count_staged().await.unwrap(), 0, "a failed upload leaves no staged file");
    assert!(storage.exists(&key).await.is_err());
    assert!(storage.open_read(&key).await.is_err());
    let health = shared::health::probes::store(&storage, &shared::config::HealthConfig::default()).await;
    assert_eq!(health.status, shared::model::HealthStatus::Down, "no upload can succeed");
}

/// Two uploads streamed at once through the smallest buffer allowed (two parts): both go up
/// in parts, nothing is visible under a key before it is placed, the probe's reader serves
/// any offset, and the placed objects read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_uploads_share_the_bounded_buffer_and_are_visible_only_once_placed() {
    let mut bucket = TestBucket::new();
    bucket.config.upload_buffer_bytes = shared::config::MIN_UPLOAD_BUFFER_BYTES;
    let staging = tempfile::tempdir().unwrap();
    let storage = bucket.storage(staging.path()).await;
    let upload = |seed: u32| {
        let storage = storage.clone();
        async move {
            let bytes: Vec<u8> = (0..(12 * 1024 * 1024 + 123)).map(|i: u32| ((i ^ seed) % 251) as u8).collect();
            let mut writer = storage.stream(Sha256::new()).await.unwrap();
            for chunk in bytes.chunks(64 * 1024) {
                writer.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            let (streamed, hasher) = writer.finish().await.unwrap();
            assert_eq!(hex::encode(hasher.finalize()), hex::encode(Sha256::digest(&bytes)));
            (bytes, streamed)
        }
    };
    let ((first, first_streamed), (second, second_streamed)) = tokio::join!(upload(1), upload(2));
    assert_eq!(first_streamed.len(), first.len() as u64);
    assert_eq!(storage.count_objects().await.unwrap(), 0, "nothing is under images/ before it is placed");

    let mut reader = first_streamed.reader().unwrap();
    let probe = tokio::task::spawn_blocking(move || {
        let mut read_at = |offset: u64| {
            reader.seek(SeekFrom::Start(offset)).unwrap();
            let mut buffer = [0u8; 16];
            reader.read_exact(&mut buffer).unwrap();
            buffer
        };
        // The kept head, a ranged read in the middle (across a part boundary) and the tail.
        [read_at(10), read_at(5 * 1024 * 1024 - 8), read_at(12 * 1024 * 1024 + 100)]
    })
    .await
    .unwrap();
    let expected = |offset: usize| -> [u8; 16] { first[offset..offset + 16].try_into().unwrap() };
    assert_eq!(probe, [expected(10), expected(5 * 1024 * 1024 - 8), expected(12 * 1024 * 1024 + 100)]);

    let (first_key, second_key) = (original(ImageFormat::Png), original(ImageFormat::Png));
    storage.commit_streamed(first_streamed, &first_key).await.unwrap();
    second_streamed.discard().await;
    assert_eq!(storage.count_objects().await.unwrap(), 1, "the discarded upload was never placed");
    assert!(storage.sha256(&first_key).await.unwrap() == hex::encode(Sha256::digest(&first)));
    assert!(!storage.exists(&second_key).await.unwrap());
    drop(second);
}
