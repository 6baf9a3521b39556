//! What the file audit needs from the tree: every stored file, walked incrementally; moving
//! an orphan into quarantine and purging old quarantine days; removing stale staged files;
//! whether an original exists.
//!
//! Quarantine is `quarantine/{YYYY-MM-DD}/{path relative to the root}`, beside `images/`
//! and outside the walk, so a quarantined file is never audited again and an operator can
//! move it back with its path intact, until its day is past the retention.

use std::fs::{self, ReadDir};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;

use super::{STAGING_DIR, Storage, StorageKey};

/// Folder under the root holding quarantined orphan files.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Folder under the root holding every stored original and thumbnail.
const IMAGES_DIR: &str = "images";

/// A regular file found under `images/`.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Relative to the storage root, as the database stores paths.
    pub relative: PathBuf,
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
    /// Walks every file under `images/` (blocking).
    pub fn walk_files(&self) -> io::Result<FileWalk> {
        let stack = match fs::read_dir(self.root.join(IMAGES_DIR)) {
            Ok(entries) => vec![entries],
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(FileWalk { root: self.root.clone(), stack })
    }

    /// Moves a file found by [`Storage::walk_files`] to `quarantine/{day}/{relative}`
    /// (rename: same file system, atomic) and returns where it went, relative to the root;
    /// `None` if the file vanished meanwhile. Blocking.
    pub fn quarantine(&self, file: &ScannedFile, day: NaiveDate) -> io::Result<Option<PathBuf>> {
        if !file.relative.starts_with(IMAGES_DIR) || file.relative.components().any(|c| c.as_os_str() == "..") {
            return Err(io::Error::other(format!("{} is not a stored file", file.relative.display())));
        }
        let mut relative = Path::new(QUARANTINE_DIR).join(day.format("%Y-%m-%d").to_string()).join(&file.relative);
        if self.root.join(&relative).exists() {
            // The same path orphaned twice in one day: keep both.
            let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            relative.set_file_name(format!("{name}.{}", uuid::Uuid::new_v4().simple()));
        }
        let destination = self.root.join(&relative);
        let directory = destination.parent().expect("quarantine paths have a directory");
        fs::create_dir_all(directory)?;
        match fs::rename(self.root.join(&file.relative), &destination) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        }
        sync_dir_blocking(directory)?;
        if let Some(source_dir) = self.root.join(&file.relative).parent() {
            sync_dir_blocking(source_dir)?;
        }
        Ok(Some(relative))
    }

    /// Deletes the quarantine days before `oldest_kept` with everything in them; returns
    /// how many files went. Folders that are not a `YYYY-MM-DD` day (an operator's own) are
    /// left alone. Blocking.
    pub fn remove_quarantined_before(&self, oldest_kept: NaiveDate) -> io::Result<u64> {
        let days = match fs::read_dir(self.root.join(QUARANTINE_DIR)) {
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

    /// Removes staged files not written to for `age` (writes in flight keep theirs fresh);
    /// returns how many. Blocking.
    pub fn remove_staged_older_than(&self, age: Duration) -> io::Result<u64> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join(STAGING_DIR))? {
            let entry = entry?;
            let modified = match entry.metadata().and_then(|metadata| metadata.modified()) {
                Ok(modified) => modified,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if now.duration_since(modified).unwrap_or_default() <= age {
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

    /// Whether the object of `key` exists. Blocking.
    pub fn exists_blocking(&self, key: &StorageKey) -> io::Result<bool> {
        match fs::symlink_metadata(self.root.join(key.relative_path())) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }
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
        assert_eq!(storage.remove_quarantined_before(oldest_kept).unwrap(), 3);
        let mut left: Vec<String> =
            fs::read_dir(&quarantine).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["2026-02-01", "kept-by-hand"], "the oldest kept day and folders that are no day stay");
        assert_eq!(storage.remove_quarantined_before(oldest_kept).unwrap(), 0, "a second run finds nothing");
        fs::remove_dir_all(&quarantine).unwrap();
        assert_eq!(storage.remove_quarantined_before(oldest_kept).unwrap(), 0, "no quarantine at all");
    }
}
