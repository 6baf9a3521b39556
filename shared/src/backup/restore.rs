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
//!
//! Several backups may hold the same image (a day's scheduled backup and a retention
//! carry-over, or backups of several days): manifests are read newest first and each image
//! is restored once, from its newest copy that passes the check. A damaged copy falls back
//! to an older one; only an image with no intact copy left is reported failed.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufReader};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::archive;
use super::manifest::ManifestError;
use crate::config::QuotaConfig;
use crate::db::storage_files::{self, RowState};
use crate::db::{outbox, provenance, storage_quotas, storage_restores};
use crate::events::{ImageUploaded, RestoreRequested};
use crate::model::{ArchivedImage, ImageId, Owner, RestoreMode, RestoreReport, RestoreSelection};
use crate::storage::{BackupTree, Storage, StorageKey};

mod manifests;

/// Requests a restore: a pending row and its `restore.requested` job, in the caller's
/// transaction so that they commit together.
pub async fn request(
    tx: &mut PgConnection,
    selection: &RestoreSelection,
    mode: RestoreMode,
    requested_by: Option<Uuid>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    storage_restores::insert(&mut *tx, id, selection, mode, requested_by).await?;
    outbox::enqueue(&mut *tx, RestoreRequested { restore_id: id }).await?;
    Ok(id)
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

/// The images a restore still has to settle (restore or skip).
enum Wanted {
    /// Every entry of a single manifest, which names each image once.
    Every,
    /// These; each leaves the set once settled, so an older copy of it is passed over.
    Only(HashSet<ImageId>),
}

impl Wanted {
    fn takes(&self, id: ImageId) -> bool {
        match self {
            Self::Every => true,
            Self::Only(ids) => ids.contains(&id),
        }
    }

    fn settle(&mut self, id: ImageId) {
        if let Self::Only(ids) = self {
            ids.remove(&id);
        }
    }

    fn is_settled(&self) -> bool {
        matches!(self, Self::Only(ids) if ids.is_empty())
    }

    /// What is left once every manifest was read: images no copy settled.
    fn unfound(self) -> impl Iterator<Item = ImageId> {
        match self {
            Self::Every => HashSet::new(),
            Self::Only(ids) => ids,
        }
        .into_iter()
    }
}

impl Restorer<'_> {
    /// Restores `selection`, calling `progress(done, total)` each time an image is settled.
    /// Per-image problems are counted in the report; an error means the restore could not go
    /// on (no such backup, an unreadable manifest, the database gone).
    pub async fn restore(
        &self,
        selection: &RestoreSelection,
        mode: RestoreMode,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RestoreReport, RestoreError> {
        let manifests = manifests::locate(self.backups, selection).await?;
        let (mut wanted, total) = match (selection, manifests.as_slice()) {
            (RestoreSelection::ImageIds(ids), _) => {
                let ids: HashSet<ImageId> = ids.iter().copied().collect();
                let total = ids.len() as u64;
                (Wanted::Only(ids), total)
            }
            // One backup holds each image once: no need to remember which are settled.
            (_, [only]) => (Wanted::Every, manifests::file_count(self.backups, only).await?),
            (_, several) => {
                let ids = manifests::images_in(self.backups, several).await?;
                let total = ids.len() as u64;
                (Wanted::Only(ids), total)
            }
        };
        let mut report = RestoreReport::default();
        // Images whose copies read so far were all damaged, with the newest copy's reason and
        // how many copies failed: an older backup may still hold an intact one.
        let mut damaged: BTreeMap<ImageId, (String, u32)> = BTreeMap::new();
        let mut done = 0;
        for path in &manifests {
            if wanted.is_settled() {
                break;
            }
            let mut entries = manifests::stream_entries(self.backups.clone(), path.clone());
            while let Some(entry) = entries.recv().await {
                let entry = entry?;
                if !wanted.takes(entry.image_id) {
                    continue; // not asked for, or settled from a newer copy already
                }
                match self.restore_one(&entry, mode).await? {
                    Outcome::Restored => report.restored += 1,
                    Outcome::Skipped(reason) => {
                        report.skipped += 1;
                        report.note(entry.image_id, "skipped", reason);
                    }
                    Outcome::Failed(reason) => {
                        let archive = entry.archive_path.display();
                        tracing::warn!(image.id = %entry.image_id, %archive, reason, "a backup copy is damaged");
                        damaged.entry(entry.image_id).or_insert_with(|| (reason, 0)).1 += 1;
                        continue; // not settled: an older copy may be intact
                    }
                }
                damaged.remove(&entry.image_id);
                wanted.settle(entry.image_id);
                done += 1;
                progress(done, total);
            }
        }
        for (id, (reason, copies)) in &damaged {
            report.failed += 1;
            let reason = match copies {
                1 => reason.clone(),
                _ => format!("{reason} (the newest of {copies} copies, none of them intact)"),
            };
            report.note(*id, "failed", reason);
            done += 1;
            progress(done, total);
        }
        for id in wanted.unfound().filter(|id| !damaged.contains_key(id)) {
            report.failed += 1;
            report.note(id, "failed", "no backup holds this image".to_owned());
            done += 1;
            progress(done, total);
        }
        Ok(report)
    }

    async fn restore_one(&self, entry: &ArchivedImage, mode: RestoreMode) -> Result<Outcome, RestoreError> {
        let key = StorageKey::of_archived(entry);
        let state = storage_files::row_state(self.db, entry.image_id).await?;
        if state == RowState::Deleted {
            return Ok(Outcome::Skipped("deleted after it was backed up".to_owned()));
        }
        let present = self.storage.exists(&key).await.unwrap_or(false);
        if state == RowState::Live && present && mode == RestoreMode::MissingOnly {
            return Ok(Outcome::Skipped("present in storage".to_owned()));
        }
        let mut staged = self.storage.stage().await?;
        let archive = match self.backups.open_file(&entry.archive_path) {
            Ok(file) => file,
            Err(error) => return Ok(Outcome::Failed(format!("archive unreadable: {error}"))),
        };
        let (extracted, staged) = tokio::task::spawn_blocking(move || {
            let extracted = archive::extract(BufReader::new(archive), &mut staged);
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
