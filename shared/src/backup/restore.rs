//! Restoring originals and their rows from backups, on a machine that lost some files or
//! everything.
//!
//! Backups are found on disk through their manifests, not through `storage_backups`, since
//! a disaster may have taken the database too. Every restored byte goes through zstd's frame
//! checksum and is compared with the SHA-256 in the manifest while it is written to a staged
//! file; only a match is renamed into place, so a damaged archive is reported and never
//! restored. A missing row is rebuilt from the manifest (owner, type, names, tags, metadata,
//! provenance, quota usage), and an `image.uploaded` event has the normal pipeline make the
//! thumbnails again. Running a restore twice is harmless: "missing only" skips what is back.

use std::collections::HashSet;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::manifest::{self, Entry, ManifestError};
use super::{BackupId, archive};
use crate::config::QuotaConfig;
use crate::db::storage_files::{self, RowState};
use crate::db::{outbox, provenance, storage_quotas};
use crate::events::ImageUploaded;
use crate::images::{ImageId, Owner};
use crate::storage::{BackupTree, Storage};

/// Reasons kept in a report; beyond them only the counts grow.
const MAX_DETAILS: usize = 500;
/// Manifest entries read ahead of the restore.
const MANIFEST_CHANNEL: usize = 256;

/// What to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Every image of one backup.
    BackupId(BackupId),
    /// Every image of every backup of one UTC day.
    Date(NaiveDate),
    /// These images, each from the newest backup that holds it.
    ImageIds(Vec<ImageId>),
}

/// Whether present originals are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Only originals missing from storage come back (the default).
    #[default]
    MissingOnly,
    /// Every selected original is replaced by its verified backup copy.
    Overwrite,
}

impl RestoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingOnly => "missing_only",
            Self::Overwrite => "overwrite",
        }
    }
}

/// An image not restored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReport {
    pub image_id: ImageId,
    /// `skipped` or `failed`.
    pub outcome: String,
    pub reason: String,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub restored: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Skipped and failed images with their reasons (the first [`MAX_DETAILS`]).
    pub details: Vec<ItemReport>,
    /// Why the restore as a whole stopped early, if it did.
    pub error: Option<String>,
}

impl RestoreReport {
    fn note(&mut self, image_id: ImageId, outcome: &str, reason: String) {
        if self.details.len() < MAX_DETAILS {
            self.details.push(ItemReport { image_id, outcome: outcome.to_owned(), reason });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error("a restore task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a restore works with.
pub struct Restorer<'a> {
    pub db: &'a PgPool,
    pub storage: &'a Storage,
    pub backups: &'a BackupTree,
    pub quota: &'a QuotaConfig,
}

/// How one image ended.
enum Outcome {
    Restored,
    Skipped(String),
    Failed(String),
}

impl Restorer<'_> {
    /// Restores `selection`, calling `progress(done, total)` after each image. Per-image
    /// problems are counted in the report; an error means the restore could not go on (no
    /// such backup, an unreadable manifest, the database gone).
    pub async fn restore(
        &self,
        selection: &Selection,
        mode: RestoreMode,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RestoreReport, RestoreError> {
        let manifests = self.locate(selection).await?;
        let mut wanted: Option<HashSet<ImageId>> = match selection {
            Selection::ImageIds(ids) => Some(ids.iter().copied().collect()),
            _ => None,
        };
        let mut total = match &wanted {
            Some(ids) => ids.len() as u64,
            None => 0,
        };
        if wanted.is_none() {
            for path in &manifests {
                let (tree, path) = (self.backups.clone(), path.clone());
                total += tokio::task::spawn_blocking(move || open_manifest(&tree, &path)).await??.header.file_count;
            }
        }
        let mut report = RestoreReport::default();
        let mut done = 0;
        for path in &manifests {
            if wanted.as_ref().is_some_and(HashSet::is_empty) {
                break;
            }
            let mut entries = stream_entries(self.backups.clone(), path.clone());
            while let Some(entry) = entries.recv().await {
                let entry = entry?;
                if let Some(ids) = wanted.as_mut()
                    && !ids.remove(&entry.image_id)
                {
                    continue; // not asked for, or already taken from a newer backup
                }
                let outcome = self.restore_one(&entry, mode).await?;
                match outcome {
                    Outcome::Restored => report.restored += 1,
                    Outcome::Skipped(reason) => {
                        report.skipped += 1;
                        report.note(entry.image_id, "skipped", reason);
                    }
                    Outcome::Failed(reason) => {
                        tracing::warn!(image.id = %entry.image_id, reason, "image not restored");
                        report.failed += 1;
                        report.note(entry.image_id, "failed", reason);
                    }
                }
                done += 1;
                progress(done, total);
            }
        }
        for id in wanted.unwrap_or_default() {
            report.failed += 1;
            report.note(id, "failed", "no backup holds this image".to_owned());
            done += 1;
            progress(done, total);
        }
        Ok(report)
    }

    /// The manifests to read, in the order to read them: a backup's own, a day's in order,
    /// or every one newest first (an image comes from its newest copy).
    async fn locate(&self, selection: &Selection) -> Result<Vec<PathBuf>, RestoreError> {
        let tree = self.backups.clone();
        let all = tokio::task::spawn_blocking(move || tree.manifests()).await??;
        let found: Vec<PathBuf> = match selection {
            Selection::BackupId(id) => {
                let name = id.to_string();
                all.into_iter().filter(|p| backup_folder(p).is_some_and(|(_, backup)| backup == name)).collect()
            }
            Selection::Date(date) => {
                let day = date.format("%Y-%m-%d").to_string();
                all.into_iter().filter(|p| backup_folder(p).is_some_and(|(d, _)| d == day)).collect()
            }
            Selection::ImageIds(_) => all.into_iter().rev().collect(),
        };
        if found.is_empty() {
            let what = match selection {
                Selection::BackupId(id) => format!("no manifest of backup {id} under storage.backupPath"),
                Selection::Date(date) => format!("no backup of {date} under storage.backupPath"),
                Selection::ImageIds(_) => "no backup under storage.backupPath".to_owned(),
            };
            return Err(RestoreError::NotFound(what));
        }
        Ok(found)
    }

    async fn restore_one(&self, entry: &Entry, mode: RestoreMode) -> Result<Outcome, RestoreError> {
        let key = entry.key();
        let state = storage_files::row_state(self.db, entry.image_id).await?;
        if state == RowState::Deleted {
            return Ok(Outcome::Skipped("deleted after it was backed up".to_owned()));
        }
        let present = self.storage.open_read(&key).await.is_ok();
        if state == RowState::Live && present && mode == RestoreMode::MissingOnly {
            return Ok(Outcome::Skipped("present in storage".to_owned()));
        }
        let mut staged = self.storage.stage().await?;
        let archive = match self.backups.open_file(&entry.archive_path) {
            Ok(file) => file,
            Err(error) => return Ok(Outcome::Failed(format!("archive unreadable: {error}"))),
        };
        let (extracted, staged) = tokio::task::spawn_blocking(move || {
            let extracted = archive::extract(BufReader::new(archive), staged.file_mut());
            (extracted, staged)
        })
        .await?;
        match extracted {
            Ok((sha256, size)) if sha256 == entry.checksum && size == entry.file_size as u64 => {}
            Ok((sha256, size)) => {
                return Ok(Outcome::Failed(format!(
                    "archive corrupt: {size} bytes hashing to {sha256}, the manifest records {} bytes hashing to {}",
                    entry.file_size, entry.checksum
                )));
            }
            Err(error) => return Ok(Outcome::Failed(format!("archive corrupt: {error}"))),
        }
        // The file first: a crash before the row commits leaves a file the next restore
        // overwrites, never a row without its file.
        self.storage.commit(staged, &key).await?;
        let mut tx = self.db.begin().await?;
        match state {
            RowState::Missing => {
                if storage_files::insert_restored(&mut *tx, entry).await? {
                    let owner = Owner { id: entry.owner_id, kind: entry.owner_type };
                    storage_quotas::ensure(&mut *tx, owner, self.quota).await?;
                    storage_quotas::charge_restored(&mut *tx, owner, entry.file_size).await?;
                    provenance::insert_existing(&mut *tx, entry.image_id, &entry.source_ids).await?;
                }
            }
            RowState::Live | RowState::Deleted => storage_files::reset_after_restore(&mut *tx, entry.image_id).await?,
        }
        outbox::enqueue(&mut *tx, ImageUploaded { image_id: entry.image_id }).await?;
        tx.commit().await?;
        tracing::info!(image.id = %entry.image_id, "restored {}", entry.image_id);
        Ok(Outcome::Restored)
    }
}

/// Opens a manifest and reads its header. Blocking.
fn open_manifest(tree: &BackupTree, path: &Path) -> Result<manifest::Reader<BufReader<std::fs::File>>, RestoreError> {
    let file = tree.open_file(path)?;
    Ok(manifest::Reader::new(BufReader::new(file))?)
}

/// A manifest's entries, read line by line on a blocking thread and handed over through a
/// small channel: a manifest of a million images is neither read on the async runtime nor
/// held in memory. The reader stops when the receiver is dropped.
fn stream_entries(tree: BackupTree, path: PathBuf) -> mpsc::Receiver<Result<Entry, RestoreError>> {
    let (sender, receiver) = mpsc::channel(MANIFEST_CHANNEL);
    tokio::task::spawn_blocking(move || {
        let reader = match open_manifest(&tree, &path) {
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

/// `(day, backup id)` of a manifest path `{day}/{backup_id}/manifest.jsonl`.
fn backup_folder(manifest: &Path) -> Option<(String, String)> {
    let backup = manifest.parent()?;
    let day = backup.parent()?;
    Some((day.to_string_lossy().into_owned(), backup.file_name()?.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_have_the_documented_json_shape() {
        let id = BackupId(uuid::Uuid::nil());
        assert_eq!(serde_json::to_value(Selection::BackupId(id)).unwrap(), serde_json::json!({ "backup_id": id }));
        let date = NaiveDate::from_ymd_opt(2026, 5, 6).unwrap();
        assert_eq!(serde_json::to_value(Selection::Date(date)).unwrap(), serde_json::json!({ "date": "2026-05-06" }));
        assert_eq!(serde_json::to_value(RestoreMode::default()).unwrap(), "missing_only");
    }

    #[test]
    fn manifest_paths_name_their_day_and_backup() {
        let path = Path::new("2026-05-06/0190/manifest.jsonl");
        assert_eq!(backup_folder(path), Some(("2026-05-06".to_owned(), "0190".to_owned())));
    }
}
