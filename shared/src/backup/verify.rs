//! Integrity over time: re-reads every archive of a backup and checks it against the
//! manifest (zstd's frame checksum, then the original's SHA-256 and size), so that a disk
//! that rots is noticed while other copies still exist.

use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::archive;
use super::manifest::{self, ManifestError};
use crate::images::ImageId;
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
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.missing == 0 && self.corrupt == 0
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
                if report.problems.len() < MAX_PROBLEMS {
                    report.problems.push(Problem {
                        image_id: entry.image_id,
                        archive_path: entry.archive_path.to_string_lossy().into_owned(),
                        kind: kind.to_owned(),
                        reason,
                    });
                }
            }
        }
        progress(report.checked, total);
    }
    Ok(report)
}
