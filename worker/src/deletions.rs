//! `stayler.deletions`: removes the original and the thumbnails of a deleted image from disk.
//!
//! Idempotent: removing a file that is already gone succeeds, and the thumbnail rows are
//! forgotten only once their files are gone, so a redelivered or duplicated job finds
//! nothing left to do. The image's row stays as a tombstone.

use shared::db::storage_files::{self, StorageFile};
use shared::db::storage_thumbnails;
use shared::events::ImageDeleted;
use shared::model::ImageFormat;
use shared::model::ImageId;
use shared::storage::StorageKey;

use crate::Context;
use crate::consumer::{Handler, Job, JobError};

pub struct Deletions {
    context: Context,
}

impl Deletions {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// Every file the image may have on disk: the original, each recorded thumbnail, and
    /// each configured size in each thumbnail format (a thumbnail job that raced the
    /// deletion may have written one without a row).
    async fn keys(&self, file: &StorageFile) -> Result<Vec<StorageKey>, JobError> {
        let recorded = storage_thumbnails::list(&self.context.db, file.id).await.map_err(JobError::retry)?;
        let mut keys = vec![file.key()];
        let configured = self.context.config.storage.thumbnail_sizes.keys();
        let possible = configured.flat_map(|size| THUMBNAIL_FORMATS.map(|format| (size.clone(), format)));
        for (size, format) in recorded.into_iter().map(|t| (t.size_name, t.format)).chain(possible) {
            let key = file.thumbnail_key(&size, format);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

/// Formats thumbnails are encoded in: JPEG for opaque images, WebP with transparency.
const THUMBNAIL_FORMATS: [ImageFormat; 2] = [ImageFormat::Jpeg, ImageFormat::Webp];

fn image_id(job: &Job) -> Result<ImageId, JobError> {
    Ok(job.payload::<ImageDeleted>()?.image_id)
}

#[async_trait::async_trait]
impl Handler for Deletions {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let id = image_id(job)?;
        let db = &self.context.db;
        let Some(file) = storage_files::get_deleted(db, id).await.map_err(JobError::retry)? else {
            // Live (restored since) or unknown: nothing may be removed.
            tracing::warn!(image.id = %id, "deletion job for {id}, which is not deleted; skipped");
            return Ok(());
        };
        let mut removed = 0;
        for key in self.keys(&file).await? {
            if self.context.storage.delete(&key).await.map_err(JobError::retry)? {
                removed += 1;
            }
        }
        storage_files::delete_thumbnail_rows(db, id).await.map_err(JobError::retry)?;
        tracing::info!(image.id = %id, files_removed = removed, "removed the files of {id}");
        Ok(())
    }
}
