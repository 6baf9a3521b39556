//! Running a backup: planning it into batches, archiving a batch, and finishing it with its
//! manifest. Shared by the worker (one job per step) and the operator command (all steps in
//! the foreground).
//!
//! A batch is crash-safe without any bookkeeping of its own: archives are staged, synced,
//! verified and only then renamed into place, and the database learns about them after
//! that. A worker killed midway leaves staged files (removed at the next start) and perhaps
//! archives no row points to yet; the redelivered batch writes them again, atomically.

use std::io::{self, BufWriter};
use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use sqlx::PgPool;

use super::archive::{self, Archived};
use super::manifest::{self, Header};
use crate::db::storage_backup_entries::{EntryOutcome, PendingEntry};
use crate::db::{storage_backup_entries, storage_backups};
use crate::model::{ArchivedImage, BackupId, BackupStatus};
use crate::storage::{BackupTree, MANIFEST_FILE, Storage, archive_path};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("backup tree: {0}")]
    Io(#[from] io::Error),
    #[error("a backup task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub archived: usize,
    pub failed: usize,
    pub gone: usize,
    pub bytes: u64,
    pub compressed_bytes: u64,
}

/// Archives the pending entries of batch `batch` and records them; then finishes the backup
/// if this was its last batch. A backup that is not running (finished, or unknown) is left
/// alone, so a duplicate job does nothing.
pub async fn run_batch(
    db: &PgPool,
    storage: &Storage,
    tree: &BackupTree,
    id: BackupId,
    batch: i32,
) -> Result<BatchReport, BackupError> {
    let Some(backup) = storage_backups::get(db, id).await? else { return Ok(BatchReport::default()) };
    if backup.status != BackupStatus::Running {
        return Ok(BatchReport::default());
    }
    let entries = storage_backup_entries::pending_entries(db, id, batch).await?;
    let mut report = BatchReport::default();
    if !entries.is_empty() {
        let (storage, tree) = (storage.clone(), tree.clone());
        let level = backup.compression_level;
        let dir = backup.backup_path.clone();
        let started = Instant::now();
        let outcomes =
            tokio::task::spawn_blocking(move || archive_entries(&storage, &tree, Path::new(&dir), &entries, level))
                .await??;
        let work_ms = started.elapsed().as_millis() as i64;
        for (outcome, archived) in &outcomes {
            match outcome {
                EntryOutcome::Archived { .. } => {
                    report.archived += 1;
                    if let Some(archived) = archived {
                        report.bytes += archived.size;
                        report.compressed_bytes += archived.compressed_size;
                    }
                }
                EntryOutcome::Failed { image_id, reason } => {
                    tracing::warn!(backup.id = %id, image.id = %image_id, reason, "an image could not be backed up");
                    report.failed += 1;
                }
                EntryOutcome::Gone { .. } => report.gone += 1,
            }
        }
        let outcomes: Vec<EntryOutcome> = outcomes.into_iter().map(|(outcome, _)| outcome).collect();
        let mut tx = db.begin().await?;
        storage_backup_entries::record_batch(&mut tx, id, &outcomes, work_ms).await?;
        tx.commit().await?;
    }
    finish_if_done(db, tree, id).await?;
    Ok(report)
}

/// Writes the manifest and closes the backup once no entry is pending; `None` while some
/// are, or when another caller finished it. Safe to call any number of times.
pub async fn finish_if_done(db: &PgPool, tree: &BackupTree, id: BackupId) -> Result<Option<BackupStatus>, BackupError> {
    let mut tx = db.begin().await?;
    let Some(backup) = storage_backups::lock_finished(&mut tx, id).await? else { return Ok(None) };
    let progress = storage_backup_entries::progress(&mut *tx, id).await?;
    let relative = Path::new(&backup.backup_path).join(MANIFEST_FILE);
    let header =
        Header::new(id, backup.created_at, Utc::now(), backup.compression_level, progress.done.try_into().unwrap_or(0));
    // Rows stream from the database to a blocking writer through a small channel, so a
    // manifest of a million images never sits in memory.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<ArchivedImage>(256);
    let writer_tree = tree.clone();
    let writer_path = relative.clone();
    let writer = tokio::task::spawn_blocking(move || {
        writer_tree.write_file(&writer_path, |file| {
            let mut out = BufWriter::new(file);
            manifest::write_header(&mut out, &header)?;
            while let Some(entry) = receiver.blocking_recv() {
                manifest::write_entry(&mut out, &entry)?;
            }
            io::Write::flush(&mut out)
        })
    });
    let streamed = stream_entries(&mut tx, id, sender).await;
    writer.await??;
    streamed?;
    let status = storage_backups::finish(&mut tx, id, &relative.to_string_lossy()).await?;
    tx.commit().await?;
    tracing::info!(backup.id = %id, backup.files = progress.done, backup.failed = progress.failed, ?status, "backup {id} finished");
    Ok(Some(status))
}

async fn stream_entries(
    tx: &mut sqlx::PgConnection,
    id: BackupId,
    sender: tokio::sync::mpsc::Sender<ArchivedImage>,
) -> Result<(), BackupError> {
    use futures::StreamExt;
    let mut rows = storage_backup_entries::manifest_entries(tx, id);
    while let Some(entry) = rows.next().await {
        if sender.send(entry?).await.is_err() {
            break; // the writer failed; its error is reported
        }
    }
    Ok(())
}

/// Stages, syncs, verifies and places the archives of `entries` (blocking). Per-image
/// problems become outcomes; a failure of the backup tree itself is an error, and the batch
/// is retried.
fn archive_entries(
    storage: &Storage,
    tree: &BackupTree,
    backup_dir: &Path,
    entries: &[PendingEntry],
    level: i32,
) -> io::Result<Vec<(EntryOutcome, Option<Archived>)>> {
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut staged = Vec::new();
    for entry in entries {
        let image_id = entry.image_id;
        let Some(file) = &entry.file else {
            outcomes.push((EntryOutcome::Gone { image_id }, None));
            continue;
        };
        let key = file.key(image_id);
        let source = match storage.open_read_blocking(&key) {
            Ok(source) => source,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let reason = "the original is missing from storage".to_owned();
                outcomes.push((EntryOutcome::Failed { image_id, reason }, None));
                continue;
            }
            Err(e) => return Err(e),
        };
        let (archive_file, out) = tree.stage()?;
        let archived = archive::write(source, BufWriter::new(out), Some(file.format), level)?;
        if archived.sha256 != file.checksum || archived.size != file.file_size as u64 {
            let reason = format!(
                "the original does not match its recorded checksum (read {} bytes hashing to {}); not backed up",
                archived.size, archived.sha256
            );
            outcomes.push((EntryOutcome::Failed { image_id, reason }, None));
            continue;
        }
        staged.push((entry, archive_file, archived));
    }
    tree.sync()?;
    let mut verified = Vec::with_capacity(staged.len());
    for (entry, archive_file, archived) in staged {
        let image_id = entry.image_id;
        let checked = archive_file.reader().and_then(|file| archive::digest(io::BufReader::new(file)));
        match checked {
            Ok((sha256, size)) if sha256 == archived.sha256 && size == archived.size => {
                let file = entry.file.as_ref().expect("only live entries are staged");
                let relative = archive_path(backup_dir, &file.key(image_id));
                let outcome = EntryOutcome::Archived {
                    image_id,
                    archive_path: relative.to_string_lossy().into_owned(),
                    compressed_size: archived.compressed_size as i64,
                    method: archived.method,
                };
                verified.push((archive_file, relative));
                outcomes.push((outcome, Some(archived)));
            }
            Ok((sha256, _)) => {
                let reason = format!("the written archive failed verification (content hashes to {sha256})");
                outcomes.push((EntryOutcome::Failed { image_id, reason }, None));
            }
            Err(error) => {
                let reason = format!("the written archive failed verification: {error}");
                outcomes.push((EntryOutcome::Failed { image_id, reason }, None));
            }
        }
    }
    tree.place(verified)?;
    Ok(outcomes)
}
