//! Backups of originals: ids and states, where archives live in `storage.backupPath`, the
//! archive format ([`archive`]) and the manifest that lets a restore rebuild files and rows
//! on an empty machine ([`manifest`]).
//!
//! ```text
//! {backupPath}/{YYYY-MM-DD}/{backup_id}/manifest.jsonl
//! {backupPath}/{YYYY-MM-DD}/{backup_id}/images/{type}/{owner}/images/{image_id}.{ext}.zst
//! ```
//!
//! A folder per backup inside the day keeps two backups of one day (a scheduled one and a
//! manual one, or a retention carry-over) from sharing files, so removing one never touches
//! the other's archives. Thumbnails are not backed up: they are regenerated after a restore.

use std::path::PathBuf;

use chrono::NaiveDate;

use crate::model::BackupId;
use crate::storage::StorageKey;

pub mod archive;
mod batch;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod verify;

pub use batch::{BackupError, BatchReport, finish_if_done, run_batch};

/// Suffix of every archive: the original's stored name plus `.zst`.
pub const ARCHIVE_SUFFIX: &str = ".zst";

/// The folder of one backup, relative to `storage.backupPath`.
pub fn backup_dir(date: NaiveDate, id: BackupId) -> PathBuf {
    PathBuf::from(date.format("%Y-%m-%d").to_string()).join(id.to_string())
}

/// Where the archive of an original lives, relative to `storage.backupPath`: the storage
/// layout inside the backup's folder, with `.zst` appended.
pub fn archive_path(backup_dir: &std::path::Path, original: &StorageKey) -> PathBuf {
    let mut name = original.relative_path().into_os_string();
    name.push(ARCHIVE_SUFFIX);
    backup_dir.join(name)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::imaging::ImageFormat;
    use crate::model::{ImageId, ImageType, Owner, OwnerId, OwnerType};

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
}
