//! Integrity over time: re-reads every archive of a backup and checks it against the
//! manifest (zstd's frame checksum, then the original's SHA-256 and size), so that a disk
//! that rots is noticed while other copies still exist. An image whose archive is damaged
//! is marked not backed up, so the next backup copies it again from the live original.

use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::archive;
use super::manifest::{self, ManifestError};
use crate::db::{storage_backup_entries, storage_backups};
use crate::model::ImageId;
use crate::storage::BackupTree;

/// Problems listed in a report; beyond them only the counts grow.
const MAX_PROBLEMS: usize = 500;

/// One archive that failed its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub image_id: ImageId,
    pub archive_path: String,
    /// `missing` or `corrupt`.
    pub kind: String,
    pub reason: String,
}

/// The outcome of checking one backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub intact: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub problems: Vec<Problem>,
    /// Why the manifest could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_error: Option<String>,
    /// Every missing or corrupt archive (image and archive path), not only the first
    /// problems: each image's copy has to be taken again.
    #[serde(skip)]
    pub damaged: Vec<(ImageId, String)>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.missing == 0 && self.corrupt == 0 && self.manifest_error.is_none()
    }

    /// The report on a backup whose manifest is gone or unreadable: without it no archive
    /// can be trusted, so every archive the database lists for the backup counts as damaged.
    pub fn manifest_unreadable(error: &ManifestError, archives: Vec<(ImageId, String)>) -> Self {
        Self {
            checked: archives.len() as u64,
            corrupt: archives.len() as u64,
            manifest_error: Some(error.to_string()),
            damaged: archives,
            ..Self::default()
        }
    }
}

/// Whether a failed check means the manifest itself is lost or damaged (as opposed to a
/// disk error worth retrying).
pub fn manifest_is_lost(error: &ManifestError) -> bool {
    match error {
        ManifestError::Io(error) => error.kind() == std::io::ErrorKind::NotFound,
        ManifestError::Parse { .. } | ManifestError::Unsupported { .. } | ManifestError::Empty => true,
    }
}

/// Checks every archive listed in the manifest at `manifest_path` (relative to the tree),
/// calling `progress(checked, total)` after each. Blocking: run it on a blocking thread.
pub fn verify(
    tree: &BackupTree,
    manifest_path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, ManifestError> {
    let reader = manifest::Reader::new(BufReader::new(tree.open_file(manifest_path)?))?;
    let total = reader.header.file_count;
    let mut report = VerifyReport::default();
    for entry in reader {
        let entry = entry?;
        report.checked += 1;
        let problem = match tree.open_file(&entry.archive_path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(("missing", "no such file".to_owned())),
            Err(error) => Some(("missing", error.to_string())),
            Ok(file) => match archive::digest(BufReader::new(file)) {
                Ok((sha256, size)) if sha256 == entry.checksum && size == entry.file_size as u64 => None,
                Ok((sha256, size)) => Some(("corrupt", format!("{size} bytes hashing to {sha256}"))),
                Err(error) => Some(("corrupt", error.to_string())),
            },
        };
        match problem {
            None => report.intact += 1,
            Some((kind, reason)) => {
                if kind == "missing" {
                    report.missing += 1;
                } else {
                    report.corrupt += 1;
                }
                tracing::warn!(image.id = %entry.image_id, kind, reason, "backup archive failed its check");
                let archive_path = entry.archive_path.to_string_lossy().into_owned();
                if report.problems.len() < MAX_PROBLEMS {
                    report.problems.push(Problem {
                        image_id: entry.image_id,
                        archive_path: archive_path.clone(),
                        kind: kind.to_owned(),
                        reason,
                    });
                }
                report.damaged.push((entry.image_id, archive_path));
            }
        }
        progress(report.checked, total);
    }
    Ok(report)
}

/// Records a check of backup `id` in one transaction: its outcome on the backup row, and for
/// every damaged archive that its image must be backed up again (see
/// [`storage_backup_entries::record_damage`]). Returns how many images were marked.
pub async fn record(db: &sqlx::PgPool, id: crate::model::BackupId, report: &VerifyReport) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let details = serde_json::to_value(report).expect("a report serialises");
    storage_backups::record_verification(&mut *tx, id, report.is_intact(), details).await?;
    let marked = storage_backup_entries::record_damage(&mut tx, id, &report.damaged).await?;
    tx.commit().await?;
    if marked > 0 {
        tracing::warn!(backup.id = %id, images = marked, "damaged archives: their images are taken again by the next backup");
    }
    Ok(marked)
}
