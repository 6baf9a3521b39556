//! The backup tree under `storage.backupPath`: archives and manifests, written atomically
//! and synced in bulk.
//!
//! A backup batch writes hundreds of archives. Syncing each one (file, rename, directory)
//! would cost three disk flushes per image; instead a batch stages all its archives, syncs
//! the file system once, verifies them, renames them into place and syncs once more. The
//! file-system-wide sync (`syncfs`) is what makes that two flushes per batch. Methods block:
//! callers run them on a blocking thread, next to the compression they wait for.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;
use uuid::Uuid;

use super::StorageKey;
use crate::model::BackupId;

/// Name of the manifest inside a backup's folder.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Folder under the root holding archives and manifests still being written.
const STAGING_DIR: &str = ".staging";
/// Staged files older than this were left by a crash and are removed at start-up.
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 3600);

/// Suffix of every archive: the original's stored name plus `.zst`.
pub const ARCHIVE_SUFFIX: &str = ".zst";

/// The folder of one backup, relative to `storage.backupPath`.
pub fn backup_dir(date: NaiveDate, id: BackupId) -> PathBuf {
    PathBuf::from(date.format("%Y-%m-%d").to_string()).join(id.to_string())
}

/// Where the archive of an original lives, relative to `storage.backupPath`: the storage
/// layout inside the backup's folder, with `.zst` appended.
pub fn archive_path(backup_dir: &Path, original: &StorageKey) -> PathBuf {
    let mut name = original.relative_path().into_os_string();
    name.push(ARCHIVE_SUFFIX);
    backup_dir.join(name)
}

/// The tree rooted at `storage.backupPath`.
#[derive(Debug, Clone)]
pub struct BackupTree {
    root: PathBuf,
}

/// An archive being written: removed on drop unless it was moved into place.
#[derive(Debug)]
pub struct StagedArchive {
    path: Option<PathBuf>,
}

impl StagedArchive {
    /// Reads the staged bytes back (to verify them before they are placed).
    pub fn reader(&self) -> io::Result<impl Read + Send + use<>> {
        File::open(self.path.as_deref().expect("not placed yet"))
    }
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl BackupTree {
    /// Opens (creating if needed) the tree at `root` and removes staged files a crash left.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join(STAGING_DIR))?;
        let tree = Self { root };
        tree.remove_stale_staged_files()?;
        Ok(tree)
    }

    /// Bytes free (to unprivileged users) and in all on the disk holding the backups, for
    /// the health check; `None` for a store without a disk of its own to fill.
    pub fn disk_space(&self) -> Option<io::Result<(u64, u64)>> {
        Some(disk_space(&self.root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new staged file and its handle for writing.
    pub fn stage(&self) -> io::Result<(StagedArchive, impl Write + Send + use<>)> {
        let path = self.root.join(STAGING_DIR).join(format!("{}.part", Uuid::new_v4()));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((StagedArchive { path: Some(path) }, file))
    }

    /// Flushes every file written so far in the tree's file system to disk (one `syncfs`).
    pub fn sync(&self) -> io::Result<()> {
        let root = File::open(&self.root)?;
        rustix::fs::syncfs(&root).map_err(io::Error::from)
    }

    /// Moves synced archives to their places (relative paths), replacing what is there, then
    /// makes the new names durable. Call [`BackupTree::sync`] before, so no name can point at
    /// bytes that are not on disk.
    pub fn place(&self, archives: Vec<(StagedArchive, PathBuf)>) -> io::Result<()> {
        let mut directories = BTreeSet::new();
        for (mut staged, relative) in archives {
            let destination = self.resolve(&relative)?;
            let directory = destination.parent().expect("archives live in a folder").to_owned();
            if directories.insert(directory.clone()) {
                fs::create_dir_all(&directory)?;
            }
            let source = staged.path.take().expect("placed once");
            if let Err(error) = fs::rename(&source, &destination) {
                staged.path = Some(source);
                return Err(error);
            }
        }
        self.sync()
    }

    /// Writes a small file (a manifest) atomically at `relative`.
    pub fn write_file(&self, relative: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let path = self.root.join(STAGING_DIR).join(format!("{}.part", Uuid::new_v4()));
        let mut file = File::options().write(true).create_new(true).open(&path)?;
        let staged = StagedArchive { path: Some(path) };
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        self.place(vec![(staged, relative.to_owned())])
    }

    /// Opens a file of the tree for reading.
    pub fn open_file(&self, relative: &Path) -> io::Result<impl Read + Send + use<>> {
        File::open(self.resolve(relative)?)
    }

    /// Size of a file of the tree, or `None` when it does not exist.
    pub fn file_len(&self, relative: &Path) -> io::Result<Option<u64>> {
        match fs::metadata(self.resolve(relative)?) {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a backup's folder and everything in it; false if it was already gone. The
    /// day's folder goes too once it is empty.
    pub fn remove_dir(&self, relative: &Path) -> io::Result<bool> {
        let path = self.resolve(relative)?;
        let removed = match fs::remove_dir_all(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if let Some(day) = path.parent().filter(|day| *day != self.root) {
            // Fails while another backup of the day remains, which is the point.
            let _ = fs::remove_dir(day);
        }
        self.sync()?;
        Ok(removed)
    }

    /// Relative paths of every manifest in the tree (`{date}/{backup_id}/manifest.jsonl`),
    /// oldest day first: how a restore finds backups when the database has lost their rows.
    pub fn manifests(&self) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for day in sorted_dirs(&self.root)? {
            for backup in sorted_dirs(&self.root.join(&day))? {
                let manifest = day.join(&backup).join(MANIFEST_FILE);
                if self.root.join(&manifest).is_file() {
                    found.push(manifest);
                }
            }
        }
        Ok(found)
    }

    /// Joins a relative path to the root, refusing anything that could leave the tree
    /// (absolute paths, `..`): manifests are files, and files can be tampered with.
    fn resolve(&self, relative: &Path) -> io::Result<PathBuf> {
        if relative.as_os_str().is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            let message = format!("not a backup path: {}", relative.display());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        Ok(self.root.join(relative))
    }

    fn remove_stale_staged_files(&self) -> io::Result<()> {
        let now = SystemTime::now();
        for entry in fs::read_dir(self.root.join(STAGING_DIR))? {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            if now.duration_since(modified).unwrap_or_default() > STALE_STAGING_AGE {
                tracing::warn!(path = %entry.path().display(), "removing a staged archive left by a crash");
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Bytes free (to unprivileged users) and total on the file system holding `path`.
pub fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok((stat.f_bavail.saturating_mul(stat.f_frsize), stat.f_blocks.saturating_mul(stat.f_frsize)))
}

/// Names of the sub-folders of `dir` (not starting with a dot), sorted; none if it is missing.
fn sorted_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() && !name.to_string_lossy().starts_with('.') {
            names.push(PathBuf::from(name));
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use crate::model::{ImageFormat, ImageId, ImageType, Owner, OwnerId, OwnerType};

    #[test]
    fn archives_keep_the_storage_layout_inside_the_backup_folder() {
        let id = BackupId(Uuid::nil());
        let dir = backup_dir(NaiveDate::from_ymd_opt(2026, 3, 4).unwrap(), id);
        let key = StorageKey::Original {
            image_type: ImageType::Cloth,
            owner: Owner { id: OwnerId(Uuid::nil()), kind: OwnerType::Vendor },
            image_id: ImageId(Uuid::nil()),
            format: ImageFormat::Png,
        };
        let nil = Uuid::nil();
        assert_eq!(
            archive_path(&dir, &key),
            PathBuf::from(format!("2026-03-04/{nil}/images/cloth/{nil}/images/{nil}.png.zst"))
        );
    }

    use std::io::Write;

    use super::*;

    #[test]
    fn placed_archives_replace_atomically_and_staged_leftovers_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let tree = BackupTree::open(dir.path()).unwrap();
        let relative = PathBuf::from("2026-01-01/b/images/user/o/images/x.jpg.zst");
        for content in [b"first".as_slice(), b"second"] {
            let (staged, mut file) = tree.stage().unwrap();
            file.write_all(content).unwrap();
            tree.sync().unwrap();
            tree.place(vec![(staged, relative.clone())]).unwrap();
        }
        assert_eq!(fs::read(dir.path().join(&relative)).unwrap(), b"second");
        let (abandoned, _) = tree.stage().unwrap();
        drop(abandoned);
        assert_eq!(fs::read_dir(dir.path().join(STAGING_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn paths_cannot_leave_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = BackupTree::open(dir.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert!(tree.open_file(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifests_are_found_by_day_and_removal_takes_the_empty_day() {
        let dir = tempfile::tempdir().unwrap();
        let tree = BackupTree::open(dir.path()).unwrap();
        for backup in ["2026-01-02/b2", "2026-01-01/b1", "2026-01-01/b0"] {
            let manifest = Path::new(backup).join(MANIFEST_FILE);
            tree.write_file(&manifest, |file| file.write_all(b"{}\n")).unwrap();
        }
        let found = tree.manifests().unwrap();
        let days: Vec<_> = found.iter().map(|p| p.parent().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(days, ["2026-01-01/b0", "2026-01-01/b1", "2026-01-02/b2"]);
        assert!(tree.remove_dir(Path::new("2026-01-02/b2")).unwrap());
        assert!(!dir.path().join("2026-01-02").exists(), "an emptied day goes too");
        assert!(tree.remove_dir(Path::new("2026-01-01/b1")).unwrap());
        assert!(dir.path().join("2026-01-01/b0").exists(), "a day with another backup stays");
        assert!(!tree.remove_dir(Path::new("2026-01-01/b1")).unwrap());
    }
}
