//! What the file audit needs from the stored objects, on either backend: every stored file,
//! listed incrementally in batches; moving an orphan into quarantine and purging old
//! quarantine days; removing stale staged files.
//!
//! Quarantine is `quarantine/{YYYY-MM-DD}/{path relative to the root}`, beside `images/`
//! and outside the scan, so a quarantined file is never audited again and an operator can
//! move it back with its path intact, until its day is past the retention. On the s3
//! backend it is the same names under the deployment's prefix (`s3/listing.rs`).

use std::fs::{self, ReadDir};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use tokio::sync::mpsc;
use tokio::task::spawn_blocking;

use super::{Objects, STAGING_DIR, Storage};

/// Folder under the root holding quarantined orphan files.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Folder under the root holding every stored original and thumbnail.
const IMAGES_DIR: &str = "images";

/// A regular file (or object) found under `images/`.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Relative to the storage root (the bucket's prefix), as the database stores paths.
    pub relative: PathBuf,
    /// When it was last written: the file's mtime, the object's `last_modified`.
    pub modified: SystemTime,
}

impl ScannedFile {
    /// The relative path as stored in the database (`None` if it is not UTF-8, which no
    /// path this service makes is).
    pub fn db_path(&self) -> Option<&str> {
        self.relative.to_str()
    }
}

/// Regular files below `directory`, at any depth. Blocking.
fn count_files(directory: &Path) -> io::Result<u64> {
    let mut count = 0;
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            count += count_files(&entry.path())?;
        } else {
            count += 1;
        }
    }
    Ok(count)
}

/// A depth-first walk of `images/` that holds one open directory per level (the layout is
/// five levels deep), never the list of all directories or files: trees of millions of
/// files are walked in constant memory. Blocking: run it on a blocking thread.
pub struct FileWalk {
    root: PathBuf,
    stack: Vec<ReadDir>,
}

impl Iterator for FileWalk {
    type Item = io::Result<ScannedFile>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entries = self.stack.last_mut()?;
            let Some(entry) = entries.next() else {
                self.stack.pop();
                continue;
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => return Some(Err(error)),
            };
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(error) => return Some(Err(error)),
            };
            if file_type.is_dir() {
                match fs::read_dir(entry.path()) {
                    Ok(entries) => self.stack.push(entries),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Some(Err(error)),
                }
                continue;
            }
            if !file_type.is_file() {
                continue; // links and the like are never written by this service
            }
            let modified = match entry.metadata().and_then(|metadata| metadata.modified()) {
                Ok(modified) => modified,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Some(Err(error)),
            };
            let path = entry.path();
            let relative = path.strip_prefix(&self.root).map(Path::to_owned).unwrap_or(path);
            return Some(Ok(ScannedFile { relative, modified }));
        }
    }
}

impl Storage {
    /// Every stored file under `images/`, in batches of at most `batch_len`, read as the
    /// batches are taken: memory holds a few batches whatever the tree or bucket holds. The
    /// local tree is walked on a blocking thread that hands over batches through a channel
    /// of two (it stops once the stream is dropped); a bucket is listed page by page.
    pub fn scan_files(&self, batch_len: usize) -> BoxStream<'static, io::Result<Vec<ScannedFile>>> {
        let batch_len = batch_len.max(1);
        if let Objects::S3(objects) = &self.objects {
            return objects.scan(IMAGES_DIR, batch_len);
        }
        let (sender, receiver) = mpsc::channel::<Vec<ScannedFile>>(2);
        let walked = self.clone();
        let walker = spawn_blocking(move || -> io::Result<()> {
            let mut batch = Vec::with_capacity(batch_len);
            for file in walked.walk_files()? {
                batch.push(file?);
                if batch.len() == batch_len {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_len));
                    if sender.blocking_send(full).is_err() {
                        return Ok(()); // the stream was dropped: nobody wants the rest
                    }
                }
            }
            if !batch.is_empty() {
                let _ = sender.blocking_send(batch);
            }
            Ok(())
        });
        stream::unfold((receiver, Some(walker)), |(mut receiver, walker)| async move {
            if let Some(batch) = receiver.recv().await {
                return Some((Ok(batch), (receiver, walker)));
            }
            // The channel closes when the walker ends: its error comes after what it found.
            let error = match walker?.await {
                Ok(Ok(())) => return None,
                Ok(Err(error)) => error,
                Err(error) => io::Error::other(error),
            };
            Some((Err(error), (receiver, None)))
        })
        .boxed()
    }

    /// Walks every file under `images/` of the local tree (blocking).
    fn walk_files(&self) -> io::Result<FileWalk> {
        let stack = match fs::read_dir(self.root.join(IMAGES_DIR)) {
            Ok(entries) => vec![entries],
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(FileWalk { root: self.root.clone(), stack })
    }

    /// Moves a file found by [`Storage::scan_files`] to `quarantine/{day}/{relative}` and
    /// returns where it went, relative to the root; `None` if the file vanished meanwhile.
    /// A local file is renamed (same file system, atomic); an object is copied by the store
    /// then deleted.
    pub async fn quarantine(&self, file: &ScannedFile, day: NaiveDate) -> io::Result<Option<PathBuf>> {
        if !file.relative.starts_with(IMAGES_DIR) || file.relative.components().any(|c| c.as_os_str() == "..") {
            return Err(io::Error::other(format!("{} is not a stored file", file.relative.display())));
        }
        let destination = Path::new(QUARANTINE_DIR).join(day.format("%Y-%m-%d").to_string()).join(&file.relative);
        if let Objects::S3(objects) = &self.objects {
            let (Some(relative), Some(destination)) = (file.db_path(), destination.to_str()) else {
                return Err(io::Error::other(format!("{} is no object name", file.relative.display())));
            };
            return Ok(objects.quarantine(relative, destination).await?.map(PathBuf::from));
        }
        let (storage, relative) = (self.clone(), file.relative.clone());
        spawn_blocking(move || storage.quarantine_file(&relative, destination)).await.map_err(io::Error::other)?
    }

    /// Renames the local file `relative` to `destination` (both relative to the root), or to
    /// `destination.{uuid}` if a file is there already. Blocking.
    fn quarantine_file(&self, relative: &Path, mut destination: PathBuf) -> io::Result<Option<PathBuf>> {
        if self.root.join(&destination).exists() {
            // The same path orphaned twice in one day: keep both.
            let name = destination.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            destination.set_file_name(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        }
        let target = self.root.join(&destination);
        let directory = target.parent().expect("quarantine paths have a directory");
        fs::create_dir_all(directory)?;
        match fs::rename(self.root.join(relative), &target) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        }
        sync_dir_blocking(directory)?;
        if let Some(source_dir) = self.root.join(relative).parent() {
            sync_dir_blocking(source_dir)?;
        }
        Ok(Some(destination))
    }

    /// Deletes the quarantine days before `oldest_kept` with everything in them; returns
    /// how many files went. Folders (key prefixes) that are not a `YYYY-MM-DD` day, an
    /// operator's own, are left alone.
    pub async fn remove_quarantined_before(&self, oldest_kept: NaiveDate) -> io::Result<u64> {
        if let Objects::S3(objects) = &self.objects {
            return objects.remove_days_before(QUARANTINE_DIR, oldest_kept).await;
        }
        let root = self.root.join(QUARANTINE_DIR);
        spawn_blocking(move || remove_day_folders_before(&root, oldest_kept)).await.map_err(io::Error::other)?
    }

    /// Removes what was staged and not written to since `written_before` (writes in flight
    /// keep theirs fresh): the files of the local staging folder, which every backend has,
    /// and on s3 also the objects under `.staging/` that uploads stage in the bucket. Returns
    /// how many went.
    pub async fn remove_staged_before(&self, written_before: DateTime<Utc>) -> io::Result<u64> {
        let storage = self.clone();
        let cut = SystemTime::from(written_before);
        let mut removed =
            spawn_blocking(move || storage.remove_staged_files_before(cut)).await.map_err(io::Error::other)??;
        if let Objects::S3(objects) = &self.objects {
            removed += objects.remove_written_before(STAGING_DIR, written_before).await?;
        }
        Ok(removed)
    }

    /// Removes the local staging folder's files not written to for `age`; returns how many.
    /// Blocking.
    pub(super) fn remove_staged_older_than(&self, age: Duration) -> io::Result<u64> {
        let now = SystemTime::now();
        self.remove_staged_files_before(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// Blocking.
    fn remove_staged_files_before(&self, written_before: SystemTime) -> io::Result<u64> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join(STAGING_DIR))? {
            let entry = entry?;
            let modified = match entry.metadata().and_then(|metadata| metadata.modified()) {
                Ok(modified) => modified,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if modified >= written_before {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(removed)
    }
}

/// Deletes the `YYYY-MM-DD` folders of `quarantine` before `oldest_kept`; returns how many
/// files they held. Blocking.
fn remove_day_folders_before(quarantine: &Path, oldest_kept: NaiveDate) -> io::Result<u64> {
    let days = match fs::read_dir(quarantine) {
        Ok(days) => days,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut removed = 0;
    for day in days {
        let day = day?;
        let name = day.file_name();
        let Some(date) = name.to_str().and_then(|name| NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()) else {
            continue;
        };
        if date >= oldest_kept || !day.file_type()?.is_dir() {
            continue;
        }
        removed += count_files(&day.path())?;
        fs::remove_dir_all(day.path())?;
    }
    Ok(removed)
}

/// Makes renames in `directory` durable.
fn sync_dir_blocking(directory: &Path) -> io::Result<()> {
    fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quarantine_days_before_the_oldest_kept_go_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let quarantine = dir.path().join(QUARANTINE_DIR);
        for (day, files) in [("2026-01-30", 2), ("2026-01-31", 1), ("2026-02-01", 1), ("kept-by-hand", 1)] {
            let folder = quarantine.join(day).join("images/user/x/images");
            fs::create_dir_all(&folder).unwrap();
            for n in 0..files {
                fs::write(folder.join(format!("{n}.jpg")), b"orphan").unwrap();
            }
        }
        let oldest_kept = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        assert_eq!(storage.remove_quarantined_before(oldest_kept).await.unwrap(), 3);
        let mut left: Vec<String> =
            fs::read_dir(&quarantine).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["2026-02-01", "kept-by-hand"], "the oldest kept day and folders that are no day stay");
        assert_eq!(storage.remove_quarantined_before(oldest_kept).await.unwrap(), 0, "a second run finds nothing");
        fs::remove_dir_all(&quarantine).unwrap();
        assert_eq!(storage.remove_quarantined_before(oldest_kept).await.unwrap(), 0, "no quarantine at all");
    }

    #[tokio::test]
    async fn the_tree_is_scanned_in_batches_and_a_dropped_scan_stops_the_walk() {
        use futures::TryStreamExt;

        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let mut written = Vec::new();
        for (owner, n) in [("a", 3), ("b", 2)] {
            let folder = Path::new(IMAGES_DIR).join("user").join(owner).join("images");
            fs::create_dir_all(dir.path().join(&folder)).unwrap();
            for n in 0..n {
                let relative = folder.join(format!("{n}.jpg"));
                fs::write(dir.path().join(&relative), b"bytes").unwrap();
                written.push(relative);
            }
        }
        fs::write(dir.path().join(STAGING_DIR).join("x.part"), b"staged").unwrap();
        let batches: Vec<Vec<ScannedFile>> = storage.scan_files(2).try_collect().await.unwrap();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let mut found: Vec<PathBuf> = batches.into_iter().flatten().map(|file| file.relative).collect();
        found.sort();
        written.sort();
        assert_eq!(found, written, "every file under images/, and nothing staged");

        let mut scan = storage.scan_files(1);
        assert_eq!(scan.try_next().await.unwrap().unwrap().len(), 1);
        drop(scan);
        let empty = tempfile::tempdir().unwrap();
        let nothing: Vec<Vec<ScannedFile>> =
            Storage::open(empty.path()).await.unwrap().scan_files(2).try_collect().await.unwrap();
        assert!(nothing.is_empty(), "no images/ folder yet");
    }

    #[tokio::test]
    async fn a_file_gone_before_its_quarantine_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let file = ScannedFile { relative: "images/user/a/images/gone.jpg".into(), modified: SystemTime::now() };
        let day = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        assert_eq!(storage.quarantine(&file, day).await.unwrap(), None);
        let outside = ScannedFile { relative: "images/../secret".into(), modified: SystemTime::now() };
        assert!(storage.quarantine(&outside, day).await.is_err());
    }
}
