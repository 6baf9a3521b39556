//! The storage interface on the s3 backend, against the real test store (a Garage node
//! `scripts/test` starts): the same calls as on the local tree, objects named after the
//! seed's layout under the deployment's prefix, large objects in parts, and a store that
//! does not answer failing fast instead of hanging.

use std::io::Read;

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
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_reads_back_whole_and_blocking() {
    let bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let storage = bucket.storage(staging.path()).await;
    let key = original(ImageFormat::Png);
    // More than one 8 MiB part, and not a multiple of it.
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
    assert_ne!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    assert_eq!(storage.count_staged().await.unwrap(), 0, "a failed upload leaves no staged file");
    assert!(storage.exists(&key).await.is_err());
    assert!(storage.open_read(&key).await.is_err());
}
