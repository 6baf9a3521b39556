//! Image retention: with `retentionPolicy.keepImagesForever: false`, the scheduled cleanup
//! deletes images older than their type's maximum age (`maxAge`, or `maxAgeByType`). Each
//! expired image is deleted exactly as its owner would delete it (`deletion::tombstone`):
//! a scrubbed tombstone, its quota released and its `image.deleted` job queued, so its files
//! go the same way. Its copies in backups age out with backup retention.
//!
//! Batches of [`BATCH`] rows, each in its own transaction with the rows locked `SKIP
//! LOCKED`: a crash loses at most the batch in progress (the next run takes it again), and
//! two cleanups running at once share the work instead of deleting an image twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::RetentionPolicy;
use crate::db::storage_files;
use crate::deletion;
use crate::model::ImageType;

/// Images deleted per transaction.
pub const BATCH: i64 = 500;

/// What one run deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpiryReport {
    /// Images deleted, by type; a type kept forever has no entry.
    pub deleted: BTreeMap<&'static str, u64>,
}

impl ExpiryReport {
    pub fn total(&self) -> u64 {
        self.deleted.values().sum()
    }
}

/// Deletes the images `policy` says are too old as of `now` (a parameter, so that tests can
/// move the clock); does nothing while images are kept forever.
pub async fn run(db: &PgPool, policy: &RetentionPolicy, now: DateTime<Utc>) -> sqlx::Result<ExpiryReport> {
    let mut report = ExpiryReport::default();
    for image_type in ImageType::ALL {
        let Some(days) = policy.max_age_days(image_type) else { continue };
        let cutoff = now - Duration::days(i64::from(days));
        let mut deleted = 0;
        loop {
            let mut tx = db.begin().await?;
            let expired = storage_files::expired_for_update(&mut *tx, image_type, cutoff, BATCH).await?;
            for file in &expired {
                deletion::tombstone(&mut tx, file).await?;
            }
            tx.commit().await?;
            deleted += expired.len() as u64;
            if expired.len() < BATCH as usize {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(
                image.r#type = image_type.as_str(),
                images.deleted = deleted,
                max_age_days = days,
                "expired images deleted"
            );
        }
        report.deleted.insert(image_type.as_str(), deleted);
    }
    Ok(report)
}
