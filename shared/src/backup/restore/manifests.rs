//! Finding the manifests a restore reads, newest first, and reading them off the async
//! runtime.

use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::RestoreError;
use crate::backup::manifest;
use crate::model::{ArchivedImage, ImageId, RestoreSelection};
use crate::storage::BackupTree;

/// Manifest entries read ahead of the restore.
const MANIFEST_CHANNEL: usize = 256;

/// The manifests to read, newest first (an image comes from its newest intact copy): a
/// backup's own, a day's, or every one. Backup ids are UUID v7, so within a day the folder
/// names sort by request time.
pub(super) async fn locate(tree: &BackupTree, selection: &RestoreSelection) -> Result<Vec<PathBuf>, RestoreError> {
    let tree = tree.clone();
    let all = tokio::task::spawn_blocking(move || tree.manifests()).await??;
    let found: Vec<PathBuf> = match selection {
        RestoreSelection::BackupId(id) => {
            let name = id.to_string();
            all.into_iter().filter(|p| backup_folder(p).is_some_and(|(_, backup)| backup == name)).collect()
        }
        RestoreSelection::Date(date) => {
            let day = date.format("%Y-%m-%d").to_string();
            all.into_iter().filter(|p| backup_folder(p).is_some_and(|(d, _)| d == day)).rev().collect()
        }
        RestoreSelection::ImageIds(_) => all.into_iter().rev().collect(),
    };
    if found.is_empty() {
        let what = match selection {
            RestoreSelection::BackupId(id) => format!("no manifest of backup {id} under storage.backupPath"),
            RestoreSelection::Date(date) => format!("no backup of {date} under storage.backupPath"),
            RestoreSelection::ImageIds(_) => "no backup under storage.backupPath".to_owned(),
        };
        return Err(RestoreError::NotFound(what));
    }
    Ok(found)
}

/// The number of images a manifest's header announces.
pub(super) async fn file_count(tree: &BackupTree, path: &Path) -> Result<u64, RestoreError> {
    let (tree, path) = (tree.clone(), path.to_owned());
    Ok(tokio::task::spawn_blocking(move || open(&tree, &path)).await??.header.file_count)
}

/// Every image the `manifests` hold, each once: what keeps an image held by several
/// backups from being restored once per backup. The set costs a few tens of bytes an
/// image; the entries themselves are read one at a time.
pub(super) async fn images_in(tree: &BackupTree, manifests: &[PathBuf]) -> Result<HashSet<ImageId>, RestoreError> {
    let (tree, manifests) = (tree.clone(), manifests.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut ids = HashSet::new();
        for path in &manifests {
            for entry in open(&tree, path)? {
                ids.insert(entry?.image_id);
            }
        }
        Ok(ids)
    })
    .await?
}

/// A manifest's entries, read line by line on a blocking thread and handed over through a
/// small channel: a manifest of a million images is neither read on the async runtime nor
/// held in memory. The reader stops when the receiver is dropped.
pub(super) fn stream_entries(tree: BackupTree, path: PathBuf) -> mpsc::Receiver<Result<ArchivedImage, RestoreError>> {
    let (sender, receiver) = mpsc::channel(MANIFEST_CHANNEL);
    tokio::task::spawn_blocking(move || {
        let reader = match open(&tree, &path) {
            Ok(reader) => reader,
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
                return;
            }
        };
        for entry in reader {
            if sender.blocking_send(entry.map_err(RestoreError::from)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Opens a manifest and reads its header. Blocking.
fn open(tree: &BackupTree, path: &Path) -> Result<manifest::Reader<BufReader<impl Read + Send + use<>>>, RestoreError> {
    let file = tree.open_file(path)?;
    Ok(manifest::Reader::new(BufReader::new(file))?)
}

/// `(day, backup id)` of a manifest path `{day}/{backup_id}/manifest.jsonl`.
fn backup_folder(manifest: &Path) -> Option<(String, String)> {
    let backup = manifest.parent()?;
    let day = backup.parent()?;
    Some((day.to_string_lossy().into_owned(), backup.file_name()?.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {

    use chrono::NaiveDate;

    use super::*;
    use crate::storage::MANIFEST_FILE;

    #[test]
    fn manifest_paths_name_their_day_and_backup() {
        let path = Path::new("2026-05-06/0190/manifest.jsonl");
        assert_eq!(backup_folder(path), Some(("2026-05-06".to_owned(), "0190".to_owned())));
    }

    #[tokio::test]
    async fn a_day_and_a_list_of_images_read_the_newest_backup_first() {
        let dir = tempfile::tempdir().unwrap();
        let tree = BackupTree::open(dir.path()).unwrap();
        // Requested in this order, so their v7 ids sort the same way.
        let folders = ["2026-05-05/0190a", "2026-05-06/0190b", "2026-05-06/0190c", "2026-05-07/0190d"];
        for folder in folders {
            tree.write_file(&Path::new(folder).join(MANIFEST_FILE), |file| file.write_all(b"{}\n")).unwrap();
        }
        let folders_of = |manifests: Vec<PathBuf>| -> Vec<String> {
            manifests.iter().map(|p| p.parent().unwrap().to_string_lossy().into_owned()).collect()
        };
        let day = RestoreSelection::Date(NaiveDate::from_ymd_opt(2026, 5, 6).unwrap());
        assert_eq!(folders_of(locate(&tree, &day).await.unwrap()), ["2026-05-06/0190c", "2026-05-06/0190b"]);
        let images = RestoreSelection::ImageIds(vec![ImageId::new()]);
        let every: Vec<String> = folders.iter().rev().map(|f| f.to_string()).collect();
        assert_eq!(folders_of(locate(&tree, &images).await.unwrap()), every);
        let other_day = RestoreSelection::Date(NaiveDate::from_ymd_opt(2026, 5, 8).unwrap());
        assert!(matches!(locate(&tree, &other_day).await, Err(RestoreError::NotFound(_))));
    }
}
