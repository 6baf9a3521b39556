//! The one narrow interface to file storage, and the one place paths are made.
//!
//! Every path comes from a [`StorageKey`] built from ids and enums, never from client
//! input. Every write is atomic: a staged temp file in the same file system, fsync, rename,
//! fsync of the directory. The first backend is a local folder tree; nothing outside this
//! module knows that.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::model::{ArchivedImage, ImageFormat, ImageId, ImageType, Owner, OwnerType, is_safe_segment};

mod audit;
mod backup_tree;
mod direct;
pub use audit::{FileWalk, QUARANTINE_DIR, ScannedFile};
pub use backup_tree::{ARCHIVE_SUFFIX, BackupTree, MANIFEST_FILE, StagedArchive, archive_path, backup_dir, disk_space};
use direct::DirectWriter;

/// Folder under the root holding uploads and thumbnails still being written.
const STAGING_DIR: &str = ".staging";
/// Bytes of a stream gathered (by reference, not copied) before they are written to a
/// staged file on a blocking thread: each batch is one hop to that thread, and network
/// chunks can be small.
const WRITER_BATCH_BYTES: usize = 256 * 1024;
/// Staged files older than this were left by a crash and are removed at start-up.
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 3600);

/// Where one stored object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKey {
    /// The uploaded bytes, as received.
    Original { image_type: ImageType, owner: Owner, image_id: ImageId, format: ImageFormat },
    /// One thumbnail of an original, named after its configured size.
    Thumbnail { image_type: ImageType, owner: Owner, image_id: ImageId, size: String, format: ImageFormat },
}

impl StorageKey {
    /// The original an archived image restores to, derived from ids as every stored path is.
    pub fn of_archived(entry: &ArchivedImage) -> Self {
        Self::Original {
            image_type: entry.image_type,
            owner: entry.owner(),
            image_id: entry.image_id,
            format: entry.format,
        }
    }

    /// Path relative to the storage root, as the seed's layout has it:
    /// `images/{user|cloth|result}/{owner}/{images|thumbnails}/…`, with vendors' results
    /// under `images/result/vendor/{vendor_id}/`.
    pub fn relative_path(&self) -> PathBuf {
        match self {
            Self::Original { image_type, owner, image_id, format } => {
                owner_dir(*image_type, owner).join("images").join(format!("{image_id}.{}", format.extension()))
            }
            Self::Thumbnail { image_type, owner, image_id, size, format } => {
                debug_assert!(is_safe_segment(size), "thumbnail sizes are validated with the config");
                owner_dir(*image_type, owner)
                    .join("thumbnails")
                    .join(format!("{image_id}_{size}.{}", format.extension()))
            }
        }
    }

    /// The relative path as stored in the database.
    pub fn to_db_path(&self) -> String {
        self.relative_path().to_string_lossy().into_owned()
    }
}

fn owner_dir(image_type: ImageType, owner: &Owner) -> PathBuf {
    let base = Path::new("images").join(image_type.as_str());
    match (image_type, owner.kind) {
        (ImageType::Result, OwnerType::Vendor) => base.join("vendor").join(owner.id.to_string()),
        _ => base.join(owner.id.to_string()),
    }
}

/// File storage rooted at `storage.basePath`.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Opens (creating if needed) the tree at `root`, and removes staged files left by a
    /// crash long ago.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(STAGING_DIR)).await?;
        let storage = Self { root };
        storage.remove_stale_staged_files().await?;
        Ok(storage)
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        Ok(StagedFile { file: Some(file.into_std().await), path: Some(path), len: 0 })
    }

    /// Makes a staged file durable under `key`: fsync, rename, fsync of the directory, all
    /// in one trip to a blocking thread. Replaces an existing object atomically.
    pub async fn commit(&self, mut staged: StagedFile, key: &StorageKey) -> io::Result<()> {
        let file = staged.file.take().expect("a staged file is committed once");
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

    /// Writes `bytes` under `key` atomically.
    pub async fn write(&self, key: &StorageKey, bytes: &[u8]) -> io::Result<()> {
        let mut staged = self.stage().await?;
        staged.write(bytes).await?;
        self.commit(staged, key).await
    }

    /// Opens an object for (ranged) reading.
    pub async fn open_read(&self, key: &StorageKey) -> io::Result<File> {
        File::open(self.root.join(key.relative_path())).await
    }

    /// Opens an object for reading on a blocking thread (backups stream it into an archive
    /// there).
    pub fn open_read_blocking(&self, key: &StorageKey) -> io::Result<std::fs::File> {
        std::fs::File::open(self.root.join(key.relative_path()))
    }

    /// Reads a whole object, refusing one larger than `limit` bytes (only for files that
    /// must be decoded, which the upload limit already bounds).
    pub async fn read(&self, key: &StorageKey, limit: u64) -> io::Result<Vec<u8>> {
        let file = self.open_read(key).await?;
        let len = file.metadata().await?.len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len} bytes exceed the {limit}-byte limit"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(limit).read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Removes an object; false if it was already gone.
    pub async fn delete(&self, key: &StorageKey) -> io::Result<bool> {
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

/// A temp file in the storage's own file system, removed on drop unless committed.
#[derive(Debug)]
pub struct StagedFile {
    file: Option<std::fs::File>,
    path: Option<PathBuf>,
    len: u64,
}

impl StagedFile {
    /// Appends `bytes` (for small, whole objects such as thumbnails; streams go through
    /// [`StagedFile::into_writer`]).
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::from_std(self.file.take().expect("not committed"));
        let written = async {
            file.write_all(bytes).await?;
            file.flush().await
        }
        .await;
        self.file = Some(file.into_std().await);
        written?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The file for writing on a blocking thread (a restore decompresses straight into it).
    /// Bytes written this way are not counted by [`StagedFile::len`].
    pub fn file_mut(&mut self) -> &mut std::fs::File {
        self.file.as_mut().expect("not committed")
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns a blocking handle for reading the staged bytes back (header probing runs on a
    /// blocking thread).
    pub async fn reader(&mut self) -> io::Result<std::fs::File> {
        std::fs::File::open(self.path.as_ref().expect("not committed"))
    }

    /// Turns the file into the destination of a stream whose chunks are written, and also
    /// written to `tee` (a hasher, say), on a blocking thread: the thread hops once per
    /// batch of chunks rather than once per write, and the file is written past the page
    /// cache where the file system allows it (see the `direct` module).
    pub fn into_writer<T: Write + Send + 'static>(self, tee: T) -> StagedWriter<T> {
        let file = self.file.as_ref().expect("not committed");
        let direct = DirectWriter::new(file, WRITER_BATCH_BYTES);
        StagedWriter {
            idle: Some(Sink { staged: self, tee, direct }),
            writing: None,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }
}

/// The sending end of [`StagedFile::into_writer`].
///
/// Chunks are gathered, by reference, into batches of [`WRITER_BATCH_BYTES`]; one batch is
/// written on a blocking thread while the next one fills, so receiving and writing overlap
/// and at most about three batches of one upload are in memory (two of them in the network
/// chunks, one in the aligned buffer of direct I/O). No thread is held while the client is
/// slow to send. The writing thread owns the staged file: if the writer is dropped midway,
/// the file is dropped, and so removed, with the thread's unclaimed result.
#[derive(Debug)]
pub struct StagedWriter<T> {
    /// File and tee while no batch is being written.
    idle: Option<Sink<T>>,
    /// The batch being written, which holds file and tee meanwhile.
    writing: Option<JoinHandle<io::Result<Sink<T>>>>,
    /// Chunks not handed over yet, and their size.
    pending: Vec<Bytes>,
    pending_bytes: usize,
}

/// What the writing thread works on.
#[derive(Debug)]
struct Sink<T> {
    staged: StagedFile,
    tee: T,
    direct: DirectWriter,
}

impl<T: Write + Send + 'static> StagedWriter<T> {
    /// Queues a chunk; waits when a full batch is ready and the previous one is still being
    /// written.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending_bytes += chunk.len();
        self.pending.push(chunk);
        if self.pending_bytes >= WRITER_BATCH_BYTES {
            self.hand_over(false).await?;
        }
        Ok(())
    }

    /// Writes what is left and returns the staged file (not yet synced: that is
    /// [`Storage::commit`]'s job) and the tee.
    pub async fn finish(mut self) -> io::Result<(StagedFile, T)> {
        self.hand_over(true).await?;
        let Sink { staged, tee, .. } = self.wait().await?;
        Ok((staged, tee))
    }

    /// Removes the staged file, once the batch being written (if any) is done, so that a
    /// refused upload has left nothing behind by the time it is answered. (Merely dropping
    /// the writer removes it too, but possibly a little later.)
    pub async fn discard(mut self) {
        self.pending.clear();
        drop(self.wait().await);
    }

    /// Hands the pending chunks to a blocking thread; `last` also writes the bytes the
    /// direct-I/O buffer still holds.
    async fn hand_over(&mut self, last: bool) -> io::Result<()> {
        if self.pending.is_empty() && !last {
            return Ok(());
        }
        let mut sink = self.wait().await?;
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let Sink { staged, tee, direct } = &mut sink;
            let file = staged.file.as_mut().expect("not committed");
            for chunk in batch {
                tee.write_all(&chunk)?;
                direct.write(file, &chunk)?;
                staged.len += chunk.len() as u64;
            }
            if last {
                direct.finish(file)?;
            }
            Ok(sink)
        }));
        Ok(())
    }

    /// Takes file and tee back, once the batch being written (if any) is done.
    async fn wait(&mut self) -> io::Result<Sink<T>> {
        match self.writing.take() {
            Some(writing) => writing.await.map_err(io::Error::other)?,
            None => self.idle.take().ok_or_else(|| io::Error::other("the staged file's writer failed before")),
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a leftover is removed by the start-up sweep of the staging area.
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "could not remove a staged file");
            }
        }
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
    use uuid::Uuid;

    use super::*;

    #[test]
    fn hashes_match_the_known_vector() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
    use crate::model::OwnerId;

    fn owner(kind: OwnerType) -> Owner {
        Owner { id: OwnerId(Uuid::nil()), kind }
    }

    #[test]
    fn keys_follow_the_seed_layout() {
        let image_id = ImageId(Uuid::from_u128(1));
        let nil = Uuid::nil();
        let original = StorageKey::Original {
            image_type: ImageType::User,
            owner: owner(OwnerType::User),
            image_id,
            format: ImageFormat::Jpeg,
        };
        assert_eq!(original.to_db_path(), format!("images/user/{nil}/images/{image_id}.jpg"));
        let thumbnail = StorageKey::Thumbnail {
            image_type: ImageType::Cloth,
            owner: owner(OwnerType::Vendor),
            image_id,
            size: "small".into(),
            format: ImageFormat::Png,
        };
        assert_eq!(thumbnail.to_db_path(), format!("images/cloth/{nil}/thumbnails/{image_id}_small.png"));
        let vendor_result = StorageKey::Original {
            image_type: ImageType::Result,
            owner: owner(OwnerType::Vendor),
            image_id,
            format: ImageFormat::Webp,
        };
        assert_eq!(vendor_result.to_db_path(), format!("images/result/vendor/{nil}/images/{image_id}.webp"));
        let user_result = StorageKey::Original {
            image_type: ImageType::Result,
            owner: owner(OwnerType::User),
            image_id,
            format: ImageFormat::Gif,
        };
        assert_eq!(user_result.to_db_path(), format!("images/result/{nil}/images/{image_id}.gif"));
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
        staged.write(b"abc").await.unwrap();
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
