//! The backup tree: archives and manifests, written atomically and synced in bulk, in the
//! folder `storage.backupPath` or in a bucket (`storage.backupBackend: s3`,
//! `storage.backupS3`) under the same names.
//!
//! A backup batch writes hundreds of archives. Syncing each one (file, rename, directory)
//! would cost three disk flushes per image; instead a batch stages all its archives, syncs
//! the file system once, verifies them, renames them into place and syncs once more. The
//! file-system-wide sync (`syncfs`) is what makes that two flushes per batch. In a bucket,
//! archives are staged the same way under `storage.backupPath`, and placing one uploads it
//! (an upload is durable once it completes, so there is nothing to sync). Methods block:
//! callers run them on a blocking thread of the runtime, next to the compression they wait
//! for.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use super::StorageKey;
use super::s3::S3Objects;
use crate::config::{S3Config, StorageBackend, StorageConfig};
use crate::model::BackupId;

/// Name of the manifest inside a backup's folder.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Folder under the root holding archives and manifests still being written.
const STAGING_DIR: &str = ".staging";
/// Staged files older than this were left by a crash and are removed at start-up.
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 3600);
/// Archives of one batch uploading at once to a bucket (each holding at most three 5 MiB
/// parts in memory).
const CONCURRENT_UPLOADS: usize = 4;

/// Suffix of every archive: the original's stored name plus `.zst`.
pub const ARCHIVE_SUFFIX: &str = ".zst";

/// The folder of one backup, relative to the tree's root.
pub fn backup_dir(date: NaiveDate, id: BackupId) -> PathBuf {
    PathBuf::from(date.format("%Y-%m-%d").to_string()).join(id.to_string())
}

/// Where the archive of an original lives, relative to the tree's root: the storage layout
/// inside the backup's folder, with `.zst` appended.
pub fn archive_path(backup_dir: &Path, original: &StorageKey) -> PathBuf {
    let mut name = original.relative_path().into_os_string();
    name.push(ARCHIVE_SUFFIX);
    backup_dir.join(name)
}

/// The backup tree: its files under `storage.backupPath`, or its objects in a bucket.
#[derive(Debug, Clone)]
pub struct BackupTree {
    /// `storage.backupPath`: the tree itself, or with a bucket only where archives are
    /// staged before they are uploaded.
    root: PathBuf,
    archives: Archives,
}

/// Where placed archives and manifests live.
#[derive(Debug, Clone)]
enum Archives {
    /// Under `root`, as files.
    Local,
    /// In a bucket, named `{prefix}/{relative path}`.
    S3(S3Objects),
}

/// An archive being written: removed on drop unless it was moved into place.
#[derive(Debug)]
pub struct StagedArchive {
    path: Option<PathBuf>,
}

impl StagedArchive {
    /// Reads the staged bytes back (to verify them before they are placed).
    pub fn reader(&self) -> io::Result<impl Read + Send + use<>> {
        File::open(self.staged_path())
    }

    fn staged_path(&self) -> &Path {
        self.path.as_deref().expect("not placed yet")
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
        Self::open_with(root.into(), Archives::Local)
    }

    /// Opens the tree in the bucket `s3` names, staging archives under `staging`. No request
    /// is sent yet: a store that is down fails the first backup, not the start.
    pub fn open_s3(staging: impl Into<PathBuf>, s3: &S3Config) -> io::Result<Self> {
        let objects = S3Objects::new(s3).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Self::open_with(staging.into(), Archives::S3(objects))
    }

    /// Opens the tree `storage.backupBackend` selects: the folder `storage.backupPath`, or
    /// the bucket `storage.backupS3` staging under that folder.
    pub fn from_config(config: &StorageConfig) -> io::Result<Self> {
        match config.backup_backend {
            StorageBackend::Local => Self::open(&config.backup_path),
            StorageBackend::S3 => {
                // Read here first so that an unreadable secret file is named as a key of
                // `storage.backupS3`: the client reads it again, naming `storage.s3`'s key.
                config.backup_s3_secret().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
                Self::open_s3(&config.backup_path, &config.backup_s3)
            }
        }
    }

    fn open_with(root: PathBuf, archives: Archives) -> io::Result<Self> {
        fs::create_dir_all(root.join(STAGING_DIR))?;
        let tree = Self { root, archives };
        tree.remove_stale_staged_files()?;
        Ok(tree)
    }

    /// Bytes free (to unprivileged users) and in all on the disk holding the backups, for
    /// the health check; `None` for a store without a disk of its own to fill (a bucket).
    pub fn disk_space(&self) -> Option<io::Result<(u64, u64)>> {
        match self.archives {
            Archives::Local => Some(disk_space(&self.root)),
            Archives::S3(_) => None,
        }
    }

    /// The folder of the local tree, for tests that damage archives on purpose. Panics for a
    /// tree in a bucket, whose archives have no path.
    pub fn root(&self) -> &Path {
        match self.archives {
            Archives::Local => &self.root,
            Archives::S3(_) => panic!("a backup tree in a bucket has no folder of archives"),
        }
    }

    /// A new staged file and its handle for writing.
    pub fn stage(&self) -> io::Result<(StagedArchive, impl Write + Send + use<>)> {
        let path = self.root.join(STAGING_DIR).join(format!("{}.part", Uuid::new_v4()));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((StagedArchive { path: Some(path) }, file))
    }

    /// Flushes every file written so far in the tree's file system to disk (one `syncfs`).
    /// Nothing to do in a bucket, where an archive is durable once its upload completes.
    pub fn sync(&self) -> io::Result<()> {
        if let Archives::S3(_) = self.archives {
            return Ok(());
        }
        let root = File::open(&self.root)?;
        rustix::fs::syncfs(&root).map_err(io::Error::from)
    }

    /// Moves synced archives to their places (relative paths), replacing what is there, then
    /// makes the new names durable. Call [`BackupTree::sync`] before, so no name can point at
    /// bytes that are not on disk. In a bucket, uploads each archive (a few at once) and
    /// removes its staged file once the upload completes.
    pub fn place(&self, archives: Vec<(StagedArchive, PathBuf)>) -> io::Result<()> {
        if let Archives::S3(objects) = &self.archives {
            let uploads = archives.into_iter().map(|(staged, relative)| async move {
                let name = object_name(&relative)?;
                let source = tokio::fs::File::open(staged.staged_path()).await?;
                objects.upload_file_as(source, &name).await?;
                drop(staged); // uploaded: the staged file goes
                io::Result::Ok(())
            });
            // On an error the uploads not finished are dropped, and their staged files with them.
            return block_on(futures::stream::iter(uploads).buffer_unordered(CONCURRENT_UPLOADS).try_collect());
        }
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

    /// Writes a small file (a manifest) atomically at `relative`: staged, then placed.
    pub fn write_file(&self, relative: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let path = self.root.join(STAGING_DIR).join(format!("{}.part", Uuid::new_v4()));
        let mut file = File::options().write(true).create_new(true).open(&path)?;
        let staged = StagedArchive { path: Some(path) };
        write(&mut file)?;
        if let Archives::Local = self.archives {
            file.sync_all()?;
        }
        drop(file);
        self.place(vec![(staged, relative.to_owned())])
    }

    /// Opens a file of the tree for reading. In a bucket the object is requested at once
    /// and its answer awaited by the first read: a missing object fails that read with
    /// `NotFound`, not this call.
    pub fn open_file(&self, relative: &Path) -> io::Result<impl Read + Send + use<>> {
        let reader: Box<dyn Read + Send> = match &self.archives {
            Archives::Local => Box::new(File::open(self.resolve(relative)?)?),
            Archives::S3(objects) => Box::new(objects.open_object_blocking(&object_name(relative)?)),
        };
        Ok(reader)
    }

    /// Size of a file of the tree, or `None` when it does not exist.
    pub fn file_len(&self, relative: &Path) -> io::Result<Option<u64>> {
        if let Archives::S3(objects) = &self.archives {
            return block_on(objects.object_len(&object_name(relative)?));
        }
        match fs::metadata(self.resolve(relative)?) {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a backup's folder and everything in it; false if it was already gone. The
    /// day's folder goes too once it is empty. In a bucket, deletes every object under the
    /// folder's prefix (a day is only a prefix, gone with its last object).
    pub fn remove_dir(&self, relative: &Path) -> io::Result<bool> {
        if let Archives::S3(objects) = &self.archives {
            return Ok(block_on(objects.remove_folder(&object_name(relative)?))? > 0);
        }
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
        if let Archives::S3(objects) = &self.archives {
            let found = block_on(objects.backup_manifests(MANIFEST_FILE))?;
            return Ok(found.into_iter().map(PathBuf::from).collect());
        }
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
        Ok(self.root.join(checked(relative)?))
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

/// `relative` if it stays inside the tree: plain names only, no root, no `.` or `..`.
fn checked(relative: &Path) -> io::Result<&Path> {
    if relative.as_os_str().is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        let message = format!("not a backup path: {}", relative.display());
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    Ok(relative)
}

/// The object name (below the bucket's prefix) of a relative path: its names joined by `/`.
fn object_name(relative: &Path) -> io::Result<String> {
    let names: Option<Vec<&str>> = checked(relative)?.iter().map(|name| name.to_str()).collect();
    let names = names.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("not a backup path: {}", relative.display()))
    })?;
    Ok(names.join("/"))
}

/// Runs a request to the store from the blocking thread the caller is on.
fn block_on<F: Future>(request: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(request)
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
            assert!(object_name(Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(object_name(Path::new("2026-01-01/b/images/x.jpg.zst")).unwrap(), "2026-01-01/b/images/x.jpg.zst");
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
