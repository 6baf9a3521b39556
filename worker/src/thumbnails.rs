//! `stayler.thumbnails`: makes the configured thumbnails of an uploaded image.
//!
//! Idempotent: thumbnails are written atomically under names derived from the image id and
//! size, and their rows are upserts, so a redelivered job converges on the same result; a
//! job for an image whose thumbnails are ready, or which was deleted, does nothing.

use std::time::Duration;

use sha2::{Digest, Sha256};
use shared::db::storage_files::{self, StorageFile};
use shared::db::storage_thumbnails::{self, ThumbnailRecord};
use shared::events::ImageUploaded;
use shared::imaging::{self, StageTimes, Thumbnail, ThumbnailSpec};
use shared::model::processing_error::THUMBNAILS_UNDECODABLE;
use shared::model::{ImageId, ThumbnailStatus};
use shared::observability::names;
use shared::processing;
use tokio::task::spawn_blocking;

use crate::Context;
use crate::consumer::{GivenUp, Handler, Job, JobError};

pub struct Thumbnails {
    context: Context,
}

impl Thumbnails {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    fn specs(&self) -> Vec<ThumbnailSpec> {
        let sizes = &self.context.config.storage.thumbnail_sizes;
        sizes
            .iter()
            .map(|(name, size)| ThumbnailSpec { name: name.clone(), width: size.width, height: size.height })
            .collect()
    }

    async fn write(&self, file: &StorageFile, thumbnail: &Thumbnail) -> Result<ThumbnailRecord, JobError> {
        let key = file.thumbnail_key(&thumbnail.name, thumbnail.format);
        self.context.storage.write(&key, &thumbnail.bytes).await.map_err(JobError::retry)?;
        Ok(ThumbnailRecord {
            size_name: thumbnail.name.clone(),
            file_path: key.to_db_path(),
            file_size: thumbnail.bytes.len() as i64,
            format: thumbnail.format,
            width: thumbnail.width as i32,
            height: thumbnail.height as i32,
            checksum: hex::encode(Sha256::digest(&thumbnail.bytes)),
        })
    }

    /// Marks the thumbnails of an undecodable image failed and tells the main app, in one
    /// transaction.
    async fn record_failure(&self, id: ImageId) -> sqlx::Result<()> {
        let mut tx = self.context.db.begin().await?;
        if storage_files::mark_thumbnails_failed(&mut *tx, id, THUMBNAILS_UNDECODABLE).await? {
            processing::notify_if_failed(&mut tx, id).await?;
        }
        tx.commit().await
    }

    /// Removes thumbnails written for an image that was deleted meanwhile.
    async fn remove_written(&self, file: &StorageFile, thumbnails: &[Thumbnail]) {
        for thumbnail in thumbnails {
            let key = file.thumbnail_key(&thumbnail.name, thumbnail.format);
            if let Err(error) = self.context.storage.delete(&key).await {
                tracing::warn!(image.id = %file.id, %error, "could not remove a thumbnail of a deleted image");
            }
        }
    }
}

/// Runs `work` on the blocking pool and fails the job (to be retried like any failure) if
/// it takes longer than `deadline`. A thread cannot be stopped, so the job keeps its slot
/// until the work has ended (bounded by the pixel, allocation and scan limits): slow images
/// never run more at once than `worker.concurrency`.
async fn within_deadline<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    let mut running = spawn_blocking(work);
    match tokio::time::timeout(deadline, &mut running).await {
        Ok(done) => Ok(done?),
        Err(_) => {
            let _ = running.await;
            Err(JobError::Retry(format!("the image took longer than {} ms to process", deadline.as_millis())))
        }
    }
}

/// The time of each stage in `stayler_thumbnail_stage_duration_seconds{stage}`.
fn record_stage_times(times: &StageTimes) {
    for (stage, took) in [("decode", times.decode), ("resize", times.resize), ("encode", times.encode)] {
        metrics::histogram!(names::THUMBNAIL_STAGE_DURATION, "stage" => stage).record(took.as_secs_f64());
    }
}

/// The image a job is about.
pub(crate) fn image_id(job: &Job) -> Result<ImageId, JobError> {
    Ok(job.payload::<ImageUploaded>()?.image_id)
}

#[async_trait::async_trait]
impl Handler for Thumbnails {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let id = image_id(job)?;
        let db = &self.context.db;
        let Some(file) = storage_files::get(db, id).await.map_err(JobError::retry)? else {
            return Ok(()); // deleted since upload: nothing left to do
        };
        if file.thumbnail_status == ThumbnailStatus::Ready {
            return Ok(()); // a duplicate delivery
        }
        let limit = self.context.config.storage.max_file_size;
        let bytes = self.context.storage.read(&file.key(), limit).await.map_err(JobError::retry)?;
        let specs = self.specs();
        let max_pixels = self.context.config.storage.max_pixels;
        let started = std::time::Instant::now();
        let deadline = Duration::from_secs(self.context.config.worker.image_deadline_secs);
        let (thumbnails, times) =
            within_deadline(deadline, move || imaging::make_thumbnails_timed(&bytes, &specs, max_pixels))
                .await?
                .map_err(JobError::reject)?; // undecodable: goes to the dead-letter queue
        record_stage_times(&times);

        let mut records = Vec::with_capacity(thumbnails.len());
        for thumbnail in &thumbnails {
            records.push(self.write(&file, thumbnail).await?);
        }
        let mut tx = db.begin().await.map_err(JobError::retry)?;
        // Marking first locks the row, so a deletion either happened before (and nothing is
        // recorded) or waits for this commit (and its job then removes these thumbnails).
        if !storage_files::mark_thumbnails_ready(&mut *tx, id).await.map_err(JobError::retry)? {
            drop(tx);
            self.remove_written(&file, &thumbnails).await;
            return Ok(()); // deleted while the thumbnails were made
        }
        for record in &records {
            storage_thumbnails::upsert(&mut *tx, id, record).await.map_err(JobError::retry)?;
        }
        processing::notify_if_processed(&mut tx, id).await.map_err(JobError::retry)?;
        tx.commit().await.map_err(JobError::retry)?;
        tracing::info!(image.id = %id, thumbnails = records.len(), duration_ms = started.elapsed().as_millis() as u64, "made thumbnails of {id}");
        Ok(())
    }

    /// Only an image that cannot be decoded is marked failed. A job that ran out of
    /// attempts on infrastructure errors (database, disk) leaves the image pending: the
    /// sweeper queues it again later, and its owner never sees an outage as a verdict.
    async fn on_dead_letter(&self, job: &Job, _reason: &str, given_up: GivenUp) {
        let Ok(id) = image_id(job) else { return };
        if given_up == GivenUp::OutOfAttempts {
            tracing::warn!(image.id = %id, "thumbnails of {id} left pending for the sweeper");
            return;
        }
        if let Err(error) = self.record_failure(id).await {
            tracing::error!(image.id = %id, error = %error, "could not record the thumbnail failure");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn work_past_its_deadline_fails_the_job_once_the_work_has_ended() {
        let ended = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ended);
        let late = within_deadline(Duration::from_millis(20), move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        })
        .await;
        assert!(matches!(late, Err(JobError::Retry(ref reason)) if reason.contains("longer than 20 ms")), "{late:?}");
        assert!(ended.load(Ordering::SeqCst), "the slot is kept until the thread is done");
        assert_eq!(within_deadline(Duration::from_secs(60), || 7).await.unwrap(), 7);
    }
}
