//! The backup tree in a bucket (`storage.backupBackend: s3`), against the real test store (a
//! Garage node `scripts/test` starts): archives staged locally and uploaded under the
//! layout of the local tree below the bucket's prefix, read back, measured, found through
//! their manifests and removed backup by backup, with nothing left in the staging folder.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use shared::config::{StorageBackend, StorageConfig};
use shared::storage::{BackupTree, MANIFEST_FILE};
use shared::test_support::TestBucket;
use uuid::Uuid;

/// Runs `work` on a blocking thread, as every caller of the tree does.
async fn blocking<T: Send + 'static>(tree: &BackupTree, work: impl FnOnce(BackupTree) -> T + Send + 'static) -> T {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || work(tree)).await.unwrap()
}

fn read_all(tree: &BackupTree, relative: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    tree.open_file(relative)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Files in `folder` (the staging folder once everything is placed: none).
fn files_in(folder: &Path) -> usize {
    std::fs::read_dir(folder).unwrap().count()
}

#[tokio::test]
async fn archives_and_manifests_go_to_the_bucket_under_the_backup_layout_and_come_back() {
    let bucket = TestBucket::new();
    let staging = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        backup_backend: StorageBackend::S3,
        backup_s3: bucket.config.clone(),
        backup_path: staging.path().to_owned(),
        ..StorageConfig::default()
    };
    let tree = BackupTree::from_config(&config).unwrap();
    assert!(tree.disk_space().is_none(), "a bucket has no disk of ours to fill");
    let (backup, owner, image) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let folder = PathBuf::from(format!("2026-03-04/{backup}"));
    let small = folder.join(format!("images/user/{owner}/images/{image}.jpg.zst"));
    let large = folder.join(format!("images/user/{owner}/images/{}.png.zst", Uuid::now_v7()));
    // More than one upload part, and not a multiple of one: a multipart upload.
    let large_bytes: Vec<u8> = (0..(6 * 1024 * 1024 + 77)).map(|i: u32| (i % 251) as u8).collect();

    let contents = [(small.clone(), b"small archive".to_vec()), (large.clone(), large_bytes.clone())];
    blocking(&tree, move |tree| {
        let mut staged = Vec::new();
        for (relative, bytes) in contents {
            let (archive, mut file) = tree.stage().unwrap();
            file.write_all(&bytes).unwrap();
            let staged_len = std::io::copy(&mut archive.reader().unwrap(), &mut std::io::sink()).unwrap();
            assert_eq!(staged_len, bytes.len() as u64, "the staged copy reads back");
            staged.push((archive, relative));
        }
        tree.sync().unwrap();
        tree.place(staged).unwrap();
    })
    .await;
    assert_eq!(files_in(&staging.path().join(".staging")), 0, "each staged archive goes once uploaded");
    let manifest = folder.join(MANIFEST_FILE);
    let written = manifest.clone();
    blocking(&tree, move |tree| tree.write_file(&written, |file| file.write_all(b"{\"header\":1}\n")).unwrap()).await;
    assert_eq!(files_in(&staging.path().join(".staging")), 0, "the staged manifest goes too");

    let (read_small, read_large, read_manifest) = {
        let (small, large, manifest) = (small.clone(), large.clone(), manifest.clone());
        blocking(&tree, move |tree| {
            (read_all(&tree, &small).unwrap(), read_all(&tree, &large).unwrap(), read_all(&tree, &manifest).unwrap())
        })
        .await
    };
    assert_eq!(read_small, b"small archive");
    assert!(read_large == large_bytes, "the multipart upload reads back byte for byte");
    assert_eq!(read_manifest, b"{\"header\":1}\n");
    let missing = folder.join("images/user/none.jpg.zst");
    let (lengths, unread) = {
        let (small, large, missing) = (small.clone(), large.clone(), missing.clone());
        blocking(&tree, move |tree| {
            let lengths = [&small, &large, &missing].map(|path| tree.file_len(path).unwrap());
            (lengths, read_all(&tree, &missing).unwrap_err().kind())
        })
        .await
    };
    assert_eq!(lengths, [Some(13), Some(large_bytes.len() as u64), None]);
    assert_eq!(unread, std::io::ErrorKind::NotFound, "a missing archive reads as a missing file does");
    for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(blocking(&tree, move |tree| tree.file_len(Path::new(bad))).await.is_err(), "{bad}");
    }

    // Named `{prefix}/{relative path}`: the same layout as the local tree, below the prefix.
    let whole_bucket = BackupTree::open_s3(
        staging.path(),
        &shared::config::S3Config { prefix: String::new(), ..bucket.config.clone() },
    )
    .unwrap();
    let full_name = Path::new(&bucket.config.prefix).join(&manifest);
    assert_eq!(blocking(&whole_bucket, move |tree| tree.file_len(&full_name).unwrap()).await, Some(13));

    // A backup of an earlier day is found first; a prefix with no manifest (a backup whose
    // last batch has not finished) is not a backup.
    let earlier = PathBuf::from(format!("2026-03-03/{}", Uuid::now_v7()));
    let unfinished = PathBuf::from(format!("2026-03-05/{}", Uuid::now_v7()));
    {
        let (earlier, unfinished) = (earlier.join(MANIFEST_FILE), unfinished.join("images/user/o/images/i.jpg.zst"));
        blocking(&tree, move |tree| {
            tree.write_file(&earlier, |file| file.write_all(b"{}\n")).unwrap();
            tree.write_file(&unfinished, |file| file.write_all(b"archive")).unwrap();
        })
        .await;
    }
    let found = blocking(&tree, |tree| tree.manifests().unwrap()).await;
    assert_eq!(found, [earlier.join(MANIFEST_FILE), manifest.clone()]);

    let (removed, again, left) = {
        let folder = folder.clone();
        blocking(&tree, move |tree| {
            let removed = tree.remove_dir(&folder).unwrap();
            let again = tree.remove_dir(&folder).unwrap();
            (removed, again, tree.manifests().unwrap())
        })
        .await
    };
    assert!(removed);
    assert!(!again, "already gone");
    assert_eq!(left, [earlier.join(MANIFEST_FILE)], "the other backups stay");
    let gone = blocking(&tree, move |tree| [&small, &large, &manifest].map(|path| tree.file_len(path).unwrap())).await;
    assert_eq!(gone, [None, None, None], "every object of the removed backup is deleted");
}

#[tokio::test]
async fn a_store_that_does_not_answer_fails_the_backup_calls_and_leaves_no_staged_archive() {
    // A port nothing listens on: connections are refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = shared::config::S3Config { endpoint: format!("http://{closed}"), ..shared::test_support::s3_config() };
    let staging = tempfile::tempdir().unwrap();
    let tree = BackupTree::open_s3(staging.path(), &config).unwrap();
    let (placed, listed, measured) = blocking(&tree, |tree| {
        let (archive, mut file) = tree.stage().unwrap();
        file.write_all(b"archive").unwrap();
        let placed = tree.place(vec![(archive, PathBuf::from("2026-03-04/b/images/user/o/images/i.jpg.zst"))]);
        (placed, tree.manifests(), tree.file_len(Path::new("2026-03-04/b/manifest.jsonl")))
    })
    .await;
    let error = placed.unwrap_err();
    assert!(shared::storage::is_unavailable(&error), "{error}");
    assert!(listed.is_err() && measured.is_err(), "nothing reads as missing while the store is unreachable");
    assert_eq!(files_in(&staging.path().join(".staging")), 0, "a failed upload leaves no staged archive");
}
