//! The one narrow interface to file storage: the [`Storage`] facade here, the names of
//! objects ([`StorageKey`], `key.rs`), staged writes (`staged.rs`), the backup tree
//! (`backup_tree.rs`) and the file audit's walk (`audit.rs`).
//!
//! Every object name comes from a [`StorageKey`] built from ids and enums, never from
//! client input. Every write is atomic: a staged temp file in the same file system, fsync,
//! rename, fsync of the directory. Callers write through a [`StagedFile`] and read through
//! an [`ObjectReader`] (or an opaque blocking reader), ask whether objects exist, hash them
//! and measure free space through the facade: none of them is handed a file or the root
//! path, so that a backend without local files (an object store) fits behind the same
//! methods. The first backend is a local folder tree; nothing outside this module knows
//! that, except tests, which damage stored files on purpose through [`Storage::root`].

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::fs::{self, File};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use crate::config::{S3Config, StorageBackend, StorageConfig};
use s3::S3Objects;

mod audit;
mod backup_tree;
mod direct;
mod key;
mod s3;
mod staged;
mod stream;
pub use audit::{FileWalk, QUARANTINE_DIR, ScannedFile};
pub use backup_tree::{ARCHIVE_SUFFIX, BackupTree, MANIFEST_FILE, StagedArchive, archive_path, backup_dir, disk_space};
pub use key::StorageKey;
pub use s3::{UPLOAD_BUFFER_WAIT, UPLOAD_PART_BYTES, is_unavailable};
pub use staged::{StagedFile, StagedWriter};
pub use stream::{ReadSeek, StreamWriter, Streamed};

/// Folder under the root holding uploads and thumbnails still being written.
const STAGING_DIR: &str = ".staging";
/// Staged files older than this were left by a crash and are removed at start-up.
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 3600);

/// The stored objects, and the folder (`storage.basePath`) where this process stages its
/// writes; on the local backend the objects live under that folder too.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    objects: Objects,
}

/// Where the objects live.
#[derive(Debug, Clone)]
enum Objects {
    /// Under `root`, as files.
    Local,
    /// In a bucket.
    S3(S3Objects),
}

impl Storage {
    /// Opens (creating if needed) the local tree at `root`, and removes staged files left by
    /// a crash long ago.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_with(root.into(), Objects::Local).await
    }

    /// Opens the objects in the bucket `s3` names, staging writes under `root`. No request
    /// is sent yet: a store that is down fails the first read or write, not the start.
    pub async fn open_s3(root: impl Into<PathBuf>, s3: &S3Config) -> io::Result<Self> {
        let objects = S3Objects::new(s3).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Self::open_with(root.into(), Objects::S3(objects)).await
    }

    /// Opens the backend `storage.backend` selects.
    pub async fn from_config(config: &StorageConfig) -> io::Result<Self> {
        match config.backend {
            StorageBackend::Local => Self::open(&config.base_path).await,
            StorageBackend::S3 => Self::open_s3(&config.base_path, &config.s3).await,
        }
    }

    async fn open_with(root: PathBuf, objects: Objects) -> io::Result<Self> {
        fs::create_dir_all(root.join(STAGING_DIR)).await?;
        let storage = Self { root, objects };
        storage.remove_stale_staged_files().await?;
        Ok(storage)
    }

    /// Starts a write whose destination is decided later (an upload's format and owner are
    /// known only once its bytes and form fields are in).
    pub async fn stage(&self) -> io::Result<StagedFile> {
        let staging = self.root.join(STAGING_DIR);
        let path = staging.join(format!("{}.part", Uuid::new_v4()));
        let mut options = File::options();
        options.write(true).create_new(true);
        let create = || options.open(&path);
        let file = match create().await {
            // The storage folder was emptied under the running services (its disk replaced
            // before a restore): the staging folder comes back. Not the root itself
            // (`create_dir`, not `create_dir_all`): a missing root is a mount or
            // configuration problem that writing in its place would hide.
            Err(error) if error.kind() == io::ErrorKind::NotFound => match fs::create_dir(&staging).await {
                Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
                _ => create().await?,
            },
            created => created?,
        };
        Ok(StagedFile::new(file.into_std().await, path))
    }

    /// Makes a staged file durable under `key`: fsync, rename, fsync of the directory, all
    /// in one trip to a blocking thread. Replaces an existing object atomically.
    pub async fn commit(&self, mut staged: StagedFile, key: &StorageKey) -> io::Result<()> {
        let file = staged.file.take().expect("a staged file is committed once");
        if let Objects::S3(objects) = &self.objects {
            // The handle was opened for writing; the upload reads the file afresh. The
            // staged file goes when `staged` drops, uploaded or not.
            drop(file);
            let source = File::open(staged.path.as_ref().expect("a staged file has a path")).await?;
            return objects.put_file(source, key).await;
        }
        let source = staged.path.clone().expect("a staged file has a path");
        let root = self.root.clone();
        let destination = self.root.join(key.relative_path());
        // The outer error means nothing moved (the staged file is removed on drop); the
        // inner one that the object is in place but its directory entry may not be durable.
        let placed = tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            let directory = destination.parent().expect("keys have a directory");
            create_dir_all_durably(&root, directory)?;
            std::fs::rename(&source, &destination)?;
            Ok::<_, io::Error>(sync_dir(directory))
        })
        .await
        .map_err(io::Error::other)??;
        staged.path = None;
        placed
    }

    /// Writes `bytes` under `key` atomically (small objects: thumbnails).
    pub async fn write(&self, key: &StorageKey, bytes: &[u8]) -> io::Result<()> {
        if let Objects::S3(objects) = &self.objects {
            return objects.put_bytes(key, bytes).await;
        }
        let mut staged = self.stage().await?;
        staged.append(bytes).await?;
        self.commit(staged, key).await
    }

    /// Opens an object for reading, as a stream of its bytes.
    pub async fn open_read(&self, key: &StorageKey) -> io::Result<ObjectReader> {
        if let Objects::S3(objects) = &self.objects {
            return objects.open_read(key).await;
        }
        let file = File::open(self.path_of(key)).await?;
        let len = file.metadata().await?.len();
        Ok(ObjectReader { inner: Box::pin(file), len })
    }

    /// Opens `range` of an object (clamped to its end) for reading: the bytes a `Range`
    /// request asks for, without reading the ones before.
    pub async fn open_range(&self, key: &StorageKey, range: Range<u64>) -> io::Result<ObjectReader> {
        if let Objects::S3(objects) = &self.objects {
            return objects.open_range(key, range).await;
        }
        let mut file = File::open(self.path_of(key)).await?;
        let end = range.end.min(file.metadata().await?.len());
        let start = range.start.min(end);
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        Ok(ObjectReader { inner: Box::pin(file.take(end - start)), len: end - start })
    }

    /// Opens an object for reading on a blocking thread (backups stream it into an archive
    /// there).
    pub fn open_read_blocking(&self, key: &StorageKey) -> io::Result<Box<dyn io::Read + Send>> {
        match &self.objects {
            Objects::Local => Ok(Box::new(std::fs::File::open(self.path_of(key))?)),
            Objects::S3(objects) => Ok(Box::new(objects.open_read_blocking(key)?)),
        }
    }

    /// Whether an object is stored under `key`.
    pub async fn exists(&self, key: &StorageKey) -> io::Result<bool> {
        if let Objects::S3(objects) = &self.objects {
            return objects.exists(key).await;
        }
        fs::try_exists(self.path_of(key)).await
    }

    /// Which of `stored_paths` (relative paths as the database keeps them) name no object;
    /// for audits, which check thousands at a time.
    pub async fn missing(&self, stored_paths: Vec<String>) -> io::Result<Vec<String>> {
        if let Objects::S3(objects) = &self.objects {
            return objects.missing(stored_paths).await;
        }
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            for path in stored_paths {
                match std::fs::symlink_metadata(root.join(&path)) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => missing.push(path),
                    Err(error) => return Err(error),
                }
            }
            Ok(missing)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Lower-case hex SHA-256 of an object, read in fixed-size chunks on a blocking thread.
    pub async fn sha256(&self, key: &StorageKey) -> io::Result<String> {
        let (storage, key) = (self.clone(), key.clone());
        tokio::task::spawn_blocking(move || sha256_hex(storage.open_read_blocking(&key)?))
            .await
            .map_err(io::Error::other)?
    }

    /// Reads a whole object, refusing one larger than `limit` bytes (only for files that
    /// must be decoded, which the upload limit already bounds).
    pub async fn read(&self, key: &StorageKey, limit: u64) -> io::Result<Vec<u8>> {
        let reader = self.open_read(key).await?;
        if reader.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes exceed the {limit}-byte limit", reader.len()),
            ));
        }
        let mut bytes = Vec::with_capacity(reader.len() as usize);
        reader.take(limit).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Bytes free (to unprivileged users) and in all on the disk holding the objects, for
    /// the health check; `None` for a store without a disk of its own to fill.
    pub fn disk_space(&self) -> Option<io::Result<(u64, u64)>> {
        matches!(self.objects, Objects::Local).then(|| disk_space(&self.root))
    }

    /// Writes, reads back and removes a small object, as an upload and a serve would: the
    /// health check's test that the store takes writes (on the local tree, a staged file).
    pub async fn probe(&self) -> io::Result<()> {
        if let Objects::S3(objects) = &self.objects {
            return objects.probe().await;
        }
        let mut staged = self.stage().await?;
        staged.append(b"stayler health probe").await?;
        let mut read = Vec::new();
        io::Read::read_to_end(&mut staged.reader()?, &mut read)?;
        if read != b"stayler health probe" {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the probe file read back differently"));
        }
        Ok(())
    }

    /// A short-lived URL of the store that serves `key` to anyone holding it (answering with
    /// `content_type` and, for a download, `disposition`), living at most `ttl`; `None` on
    /// the local tree or unless `storage.s3.presignedRedirect` is on.
    pub async fn presigned_url(
        &self,
        key: &StorageKey,
        ttl: Duration,
        content_type: &str,
        disposition: Option<&str>,
    ) -> Option<io::Result<String>> {
        match &self.objects {
            Objects::S3(objects) => objects.presigned_get(key, ttl, content_type, disposition).await,
            Objects::Local => None,
        }
    }

    /// Which backend holds the objects, as reports name it.
    pub fn backend_name(&self) -> &'static str {
        match self.objects {
            Objects::Local => "local",
            Objects::S3(_) => "s3",
        }
    }

    /// The root of the local tree: for tests, which damage stored files on purpose. The
    /// services read and write through the methods above only.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.relative_path())
    }

    /// Removes an object; false if it was already gone.
    pub async fn delete(&self, key: &StorageKey) -> io::Result<bool> {
        if let Objects::S3(objects) = &self.objects {
            return objects.delete(key).await;
        }
        let path = self.root.join(key.relative_path());
        match fs::remove_file(&path).await {
            Ok(()) => {
                let directory = path.parent().expect("keys have a directory").to_owned();
                tokio::task::spawn_blocking(move || sync_dir(&directory)).await.map_err(io::Error::other)??;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Number of stored objects (staged files excluded); for operators and tests.
    pub async fn count_objects(&self) -> io::Result<usize> {
        if let Objects::S3(objects) = &self.objects {
            return objects.count_objects().await;
        }
        let mut count = 0;
        let mut pending = vec![self.root.join("images")];
        while let Some(dir) = pending.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            while let Some(entry) = entries.next_entry().await? {
                if entry.file_type().await?.is_dir() {
                    pending.push(entry.path());
                } else {
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Removes every object of an s3 backend's prefix: for tests, which each own one, to
    /// clean up after themselves. Refused on the local backend (remove the folder instead).
    pub async fn remove_all_objects(&self) -> io::Result<u64> {
        match &self.objects {
            Objects::S3(objects) => objects.remove_all().await,
            Objects::Local => Err(io::Error::new(io::ErrorKind::Unsupported, "remove the folder instead")),
        }
    }

    /// Number of files in the staging area; zero once every write has finished or failed.
    pub async fn count_staged(&self) -> io::Result<usize> {
        let mut entries = match fs::read_dir(self.root.join(STAGING_DIR)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut count = 0;
        while entries.next_entry().await?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// Staged files are written continuously while an upload streams, so one untouched for
    /// a day was left by a crash. Files other processes stage and commit meanwhile come and
    /// go under the sweep, which is no error.
    async fn remove_stale_staged_files(&self) -> io::Result<()> {
        let storage = self.clone();
        let removed = tokio::task::spawn_blocking(move || storage.remove_staged_older_than(STALE_STAGING_AGE))
            .await
            .map_err(io::Error::other)??;
        if removed > 0 {
            tracing::warn!(storage.removed = removed, "removed staged files left by a crash");
        }
        Ok(())
    }
}

/// A stored object opened for reading: an async stream of its bytes, and how many there
/// are. Whatever the backend, callers see no file.
pub struct ObjectReader {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    len: u64,
}

impl ObjectReader {
    /// Bytes the reader yields in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.inner.as_mut().poll_read(context, buffer)
    }
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader").field("len", &self.len).finish_non_exhaustive()
    }
}

/// Creates `directory` and its missing parents below `root`, fsyncing each parent so the
/// new entries survive a power loss. Blocking.
fn create_dir_all_durably(root: &Path, directory: &Path) -> io::Result<()> {
    if directory.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = directory;
    while !current.exists() && current != root {
        missing.push(current.to_owned());
        current = current.parent().unwrap_or(root);
    }
    std::fs::create_dir_all(directory)?;
    for created in missing.iter().rev() {
        sync_dir(created.parent().unwrap_or(root))?;
    }
    Ok(())
}

/// Sets the process's file-creation mask (`storage.umask`), so that every file and folder
/// the process creates from now on has at most the permissions it leaves: with `027`,
/// files 0640 and folders 0750, readable by the service's user and group only. Set once at
/// start-up, before any file is written; it applies to the whole process.
pub fn apply_umask(mask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
}

/// True when `error` means the file system has no room left (`ENOSPC`, or `EDQUOT` for a
/// quota): the write may succeed once space is freed, and it is no fault of the request.
pub fn is_out_of_space(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Blocking.
fn sync_dir(directory: &Path) -> io::Result<()> {
    std::fs::File::open(directory)?.sync_all()
}

/// Read size while hashing a stored file.
const HASH_READ_BYTES: usize = 256 * 1024;

/// Lower-case hex SHA-256 of everything `reader` yields, read in fixed-size chunks (memory
/// stays constant whatever the file size). Blocking: call it on a blocking thread.
pub fn sha256_hex(mut reader: impl std::io::Read) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_READ_BYTES];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buffer[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::staged::WRITER_BATCH_BYTES;
    use super::*;
    use crate::model::{ImageFormat, ImageId, ImageType, Owner, OwnerId, OwnerType, is_safe_segment};

    fn owner(kind: OwnerType) -> Owner {
        Owner { id: OwnerId(Uuid::nil()), kind }
    }

    #[test]
    fn hashes_match_the_known_vector() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
    #[test]
    fn only_plain_names_are_safe_segments() {
        assert!(is_safe_segment("small"));
        assert!(is_safe_segment("x-large_2"));
        for bad in ["", "..", "a/b", "a\\b", "é", "a b", "a.b"] {
            assert!(!is_safe_segment(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_dropped_staged_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let mut staged = storage.stage().await.unwrap();
        staged.append(b"abc").await.unwrap();
        assert_eq!(storage.count_staged().await.unwrap(), 1);
        drop(staged);
        assert_eq!(storage.count_staged().await.unwrap(), 0);
        assert_eq!(storage.count_objects().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_streamed_write_reaches_file_and_tee_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        // More than one batch, in chunks of uneven sizes.
        let bytes: Vec<u8> = (0..WRITER_BATCH_BYTES * 3 + 17).map(|i| (i % 251) as u8).collect();
        let mut writer = storage.stage().await.unwrap().into_writer(Vec::new());
        for chunk in bytes.chunks(40_000) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let (staged, tee) = writer.finish().await.unwrap();
        assert_eq!(staged.len(), bytes.len() as u64);
        assert_eq!(tee, bytes);
        let key = StorageKey::Original {
            image_type: ImageType::User,
            owner: owner(OwnerType::User),
            image_id: ImageId::new(),
            format: ImageFormat::Png,
        };
        storage.commit(staged, &key).await.unwrap();
        assert_eq!(storage.read(&key, u64::MAX).await.unwrap(), bytes);

        let mut discarded = storage.stage().await.unwrap().into_writer(io::sink());
        discarded.write(Bytes::from(vec![1u8; WRITER_BATCH_BYTES])).await.unwrap();
        discarded.discard().await;
        assert_eq!(storage.count_staged().await.unwrap(), 0);

        let mut abandoned = storage.stage().await.unwrap().into_writer(io::sink());
        abandoned.write(Bytes::from(vec![1u8; WRITER_BATCH_BYTES])).await.unwrap();
        drop(abandoned);
        // The batch being written holds the file until its thread is done.
        for _ in 0..100 {
            if storage.count_staged().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(storage.count_staged().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn committed_writes_are_readable_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let key = StorageKey::Original {
            image_type: ImageType::User,
            owner: owner(OwnerType::User),
            image_id: ImageId::new(),
            format: ImageFormat::Png,
        };
        storage.write(&key, b"first").await.unwrap();
        storage.write(&key, b"second").await.unwrap();
        assert_eq!(storage.read(&key, 100).await.unwrap(), b"second");
        assert!(storage.read(&key, 3).await.is_err());
        assert_eq!(storage.count_objects().await.unwrap(), 1);
        assert_eq!(storage.count_staged().await.unwrap(), 0);
        assert!(storage.delete(&key).await.unwrap());
        assert!(!storage.delete(&key).await.unwrap());
    }

    #[tokio::test]
    async fn an_emptied_storage_folder_takes_writes_again_but_a_missing_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        let storage = Storage::open(&root).await.unwrap();
        let key = StorageKey::Original {
            image_type: ImageType::User,
            owner: owner(OwnerType::User),
            image_id: ImageId::new(),
            format: ImageFormat::Png,
        };
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(storage.count_staged().await.unwrap(), 0);
        assert!(storage.write(&key, b"bytes").await.is_err(), "a missing root is not made again");
        assert!(!root.exists());
        std::fs::create_dir(&root).unwrap();
        storage.write(&key, b"bytes").await.unwrap();
        assert_eq!(storage.read(&key, 100).await.unwrap(), b"bytes");
        assert_eq!(storage.count_staged().await.unwrap(), 0);
    }

    /// A worker or API process opening the tree while another uploads: staged files come
    /// and go under the start-up sweep of stale ones, which must not fail on them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_while_others_stage_and_commit_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let uploads = {
            let (storage, stop) = (storage.clone(), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut written = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = StorageKey::Original {
                        image_type: ImageType::User,
                        owner: owner(OwnerType::User),
                        image_id: ImageId::new(),
                        format: ImageFormat::Png,
                    };
                    storage.write(&key, b"bytes").await.unwrap();
                    written += 1;
                }
                written
            })
        };
        for _ in 0..300 {
            Storage::open(dir.path()).await.expect("opening beside uploads");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(uploads.await.unwrap() > 0);
    }
}
