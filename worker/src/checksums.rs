//! `stayler.checksums`: re-reads a stored original and verifies it against the SHA-256
//! recorded at upload.
//!
//! A mismatch marks the image corrupt at once (visible in its metadata) and is retried, so
//! a transient read error can still clear it; a job for a verified or deleted image does
//! nothing. Only a mismatch marks an image corrupt: read or database errors are retried,
//! and once retries run out the image stays pending for the sweeper. Verifying the last
//! step of an image, or finding it corrupt, tells the main app in the same transaction
//! (`shared::processing`).

use shared::db::storage_files;
use shared::model::ChecksumStatus;
use shared::model::processing_error::CHECKSUM_MISMATCH;
use shared::processing;

use crate::Context;
use crate::consumer::{Handler, Job, JobError};
use crate::thumbnails::image_id;

pub struct Checksums {
    context: Context,
}

impl Checksums {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[async_trait::async_trait]
impl Handler for Checksums {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let id = image_id(job)?;
        let db = &self.context.db;
        let Some(file) = storage_files::get(db, id).await.map_err(JobError::retry)? else {
            return Ok(()); // deleted since upload
        };
        if file.checksum_status == ChecksumStatus::Verified {
            return Ok(()); // a duplicate delivery
        }
        let hashed = self.context.storage.sha256(&file.key()).await;
        let actual = hashed.map_err(|e| JobError::retry(format!("the original cannot be read: {e}")))?;
        let mut tx = db.begin().await.map_err(JobError::retry)?;
        if actual == file.checksum {
            if storage_files::mark_verified(&mut *tx, id).await.map_err(JobError::retry)? {
                processing::notify_if_processed(&mut tx, id).await.map_err(JobError::retry)?;
            }
            tx.commit().await.map_err(JobError::retry)?;
            tracing::info!(image.id = %id, "verified {id}");
            return Ok(());
        }
        let reason = format!("checksum mismatch: recorded {}, stored bytes hash to {actual}", file.checksum);
        if storage_files::mark_corrupt(&mut *tx, id, CHECKSUM_MISMATCH).await.map_err(JobError::retry)? {
            processing::notify_if_failed(&mut tx, id).await.map_err(JobError::retry)?;
        }
        tx.commit().await.map_err(JobError::retry)?;
        tracing::warn!(image.id = %id, "stored bytes of {id} do not match their checksum");
        Err(JobError::Retry(reason))
    }

    // No `on_dead_letter`: a mismatch is recorded when it is found, and a job that ran out
    // of attempts on infrastructure errors leaves the image pending for the sweeper.
}
