//! Erasing an owner (`DELETE /storage/owners/{owner_id}`): a user who leaves the app takes
//! their photos with them, for real.
//!
//! [`request`] records a pending erasure, its `owner_erasure.requested` job and its audit
//! entry in one transaction; a second request while one is pending or running answers that
//! one (a partial unique index makes this hold under concurrency) and queues its job again,
//! which revives an erasure whose job was given up. [`run`] is the job (`stayler.maintenance`):
//!
//! 1. every live image of the owner is deleted exactly as its owner would delete it
//!    ([`deletion::tombstone`]: a scrubbed tombstone, its bytes released, its
//!    `image.deleted` job queued so that the deletions worker removes the original and the
//!    thumbnails, its data key destroyed and counted), [`Batches::images`] per
//!    transaction, rows locked `SKIP LOCKED`;
//! 2. the access log rows made by the owner or about their images lose the owner's id, the
//!    client address and the user agent, [`Batches::rows`] per transaction;
//! 3. the data keys left of their images (those deleted before), the signed URL records they requested or that were
//!    issued for their images, and their upload idempotency keys are removed;
//! 4. the quota row is removed, the backup copies of their images are counted, and the
//!    erasure completes with its report, in one transaction that first checks that no live
//!    image of the owner is left (one uploaded meanwhile sends the run round again).
//!
//! Each batch moves the erasure's progress counts in its own transaction, so a run stopped
//! at any point leaves committed batches and honest counts, and the redelivered job goes on
//! from there: what is done no longer matches the queries. A duplicate delivery of a
//! completed erasure changes nothing. Tombstones stay: a restore skips a deleted image,
//! while an image with no row at all would be rebuilt from a backup's manifest.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{self, Actor, AuditAction, Target};
use crate::auth::Claims;
use crate::db::erasures::{self, ErasureRow, Progress};
use crate::db::{outbox, storage_files};
use crate::deletion;
use crate::events::OwnerErasureRequested;
use crate::model::Owner;
use crate::telemetry;

/// Rows per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batches {
    /// Images deleted per transaction (each queues one `image.deleted` job).
    pub images: i64,
    /// Access log rows anonymised, or other rows removed, per transaction.
    pub rows: i64,
}

impl Batches {
    /// What the worker uses: a batch of images is 200 tombstones, 200 quota releases and 200
    /// outbox rows, well under a second; a batch of log rows is a cheap update by TID.
    pub const DEFAULT: Self = Self { images: 200, rows: 1000 };
}

/// How many times a run deletes the owner's images again because new ones were uploaded
/// while it ran, before it gives up (the job is then retried later).
const MAX_ROUNDS: u32 = 3;

/// What the erasure left behind, written into its row when it completes.
const BACKUP_NOTE: &str = "backup copies of the erased images stay until backup retention removes them; \
                           every restore skips them, since the images are deleted";

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The owner kept uploading while the erasure ran; the job is retried.
    #[error("the owner still had live images after {MAX_ROUNDS} rounds of deletion")]
    StillUploading,
    /// Concurrent requests and completions kept replacing the active erasure.
    #[error("the owner's erasure changed under every attempt to request it")]
    Contended,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The answer to a request: the erasure, and whether this request created it.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub erasure: ErasureRow,
    pub created: bool,
}

/// What a completed erasure did, as stored in its `report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// Live images deleted (tombstoned), each with its `image.deleted` job.
    pub images_deleted: i64,
    /// Recorded thumbnails of those images, removed by their deletion jobs.
    pub thumbnails_queued: i64,
    /// Access log rows that lost the owner's id, the client address and the user agent.
    pub access_log_rows_anonymised: i64,
    pub signed_urls_removed: i64,
    pub idempotency_keys_removed: i64,
    /// Per-image data keys destroyed (images stored encrypted).
    pub image_keys_destroyed: i64,
    /// Whether the owner had a quota row (now removed).
    pub quota_removed: bool,
    /// Copies of the owner's images in backups not yet removed by retention.
    pub backup_copies: i64,
    /// The backups holding those copies.
    pub backups_holding_copies: i64,
    pub backup_note: &'static str,
}

/// Requests the erasure of `owner` on behalf of `claims` (already allowed by the caller):
/// the pending row, its job and its audit entry in one transaction, or, while one is pending
/// or running, that one with its job queued again.
pub async fn request(db: &PgPool, owner: Owner, claims: &Claims) -> Result<Requested, ErasureError> {
    let request_id = telemetry::current_request_id();
    // A second attempt is needed only when the active erasure completed between the insert
    // and the read; a third, when it happens again.
    for _ in 0..3 {
        let mut tx = db.begin().await?;
        let id = Uuid::now_v7();
        if erasures::insert_unless_active(&mut *tx, id, owner, claims.sub, request_id.as_deref()).await? {
            let event_id = outbox::enqueue(&mut *tx, OwnerErasureRequested { erasure_id: id }).await?;
            let details = serde_json::json!({
                "owner_type": owner.kind.as_str(),
                "erasure_id": id,
                "event_id": event_id,
            });
            let actor = Actor::of(claims);
            audit::record(&mut *tx, &actor, AuditAction::OwnerErased, Target::Owner(owner.id), details).await?;
            let erasure = erasures::get(&mut *tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
            tx.commit().await?;
            tracing::info!(erasure.id = %id, owner.id = %owner.id, owner.r#type = owner.kind.as_str(), "erasure requested");
            return Ok(Requested { erasure, created: true });
        }
        if let Some(erasure) = erasures::active(&mut *tx, owner).await? {
            outbox::enqueue(&mut *tx, OwnerErasureRequested { erasure_id: erasure.id }).await?;
            tx.commit().await?;
            return Ok(Requested { erasure, created: false });
        }
    }
    Err(ErasureError::Contended)
}

/// Marks erasure `id` running and returns its owner; `None` when it completed (a duplicate
/// delivery) or does not exist.
pub async fn begin(db: &PgPool, id: Uuid) -> sqlx::Result<Option<Owner>> {
    erasures::start(db, id).await
}

/// Runs erasure `id` to the end (see the module's steps) and returns it completed; `None`
/// when there was nothing to do: it had completed, or does not exist.
pub async fn run(db: &PgPool, id: Uuid, batches: Batches) -> Result<Option<ErasureRow>, ErasureError> {
    let Some(owner) = begin(db, id).await? else { return Ok(None) };
    for _ in 0..MAX_ROUNDS {
        while delete_images(db, id, owner, batches.images).await? == batches.images {}
        remove_rows(db, id, owner, batches.rows).await?;
        let mut tx = db.begin().await?;
        if !erasures::lock_running(&mut tx, id).await? {
            // Another run of the same erasure finished it meanwhile.
            return Ok(erasures::get(&mut *tx, id).await?);
        }
        if erasures::live_image_count(&mut *tx, owner).await? > 0 {
            continue; // uploaded while the run went on: round again (the rollback is the drop)
        }
        let quota_removed = erasures::delete_quota(&mut *tx, owner).await?;
        let (backup_copies, backups_holding_copies) = erasures::backup_copies(&mut *tx, owner).await?;
        let counts = erasures::get(&mut *tx, id).await?.ok_or(sqlx::Error::RowNotFound)?;
        let report = ErasureReport {
            images_deleted: counts.images_deleted,
            thumbnails_queued: counts.thumbnails_queued,
            access_log_rows_anonymised: counts.access_log_rows_anonymised,
            signed_urls_removed: counts.signed_urls_removed,
            idempotency_keys_removed: counts.idempotency_keys_removed,
            image_keys_destroyed: counts.image_keys_destroyed,
            quota_removed,
            backup_copies,
            backups_holding_copies,
            backup_note: BACKUP_NOTE,
        };
        let report = serde_json::to_value(&report).expect("a report serialises");
        let erasure = erasures::complete(&mut *tx, id, &report).await?;
        tx.commit().await?;
        tracing::info!(
            erasure.id = %id,
            owner.id = %owner.id,
            images.deleted = erasure.images_deleted,
            access_logs.anonymised = erasure.access_log_rows_anonymised,
            backup_copies,
            "erasure completed"
        );
        return Ok(Some(erasure));
    }
    Err(ErasureError::StillUploading)
}

/// Deletes one batch of up to `limit` live images of `owner`, each as its owner's own
/// delete does, and adds it to erasure `id`'s progress in the same transaction; returns how
/// many were deleted (fewer than `limit`: none are left, or a concurrent run holds them).
pub async fn delete_images(db: &PgPool, id: Uuid, owner: Owner, limit: i64) -> sqlx::Result<i64> {
    let mut tx = db.begin().await?;
    let ids = erasures::lock_live_images(&mut *tx, owner, limit).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let thumbnails_queued = erasures::thumbnail_count(&mut *tx, &ids).await?;
    let files = storage_files::get_many(&mut *tx, &ids).await?;
    let mut image_keys_destroyed = 0;
    for file in &files {
        // Each deletion destroys the image's data key; those of images deleted earlier are
        // left to the image keys step.
        if deletion::tombstone(&mut tx, file).await? {
            image_keys_destroyed += 1;
        }
    }
    let progress =
        Progress { images_deleted: files.len() as i64, thumbnails_queued, image_keys_destroyed, ..Progress::default() };
    erasures::add_progress(&mut *tx, id, progress).await?;
    tx.commit().await?;
    tracing::debug!(erasure.id = %id, images.deleted = files.len(), "a batch of the owner's images deleted");
    Ok(ids.len() as i64)
}

/// What [`remove_rows`] removes or anonymises, in order.
#[derive(Debug, Clone, Copy)]
enum RowStep {
    AccessLogs,
    ImageKeys,
    SignedUrls,
    IdempotencyKeys,
}

impl RowStep {
    const ALL: [Self; 4] = [Self::AccessLogs, Self::ImageKeys, Self::SignedUrls, Self::IdempotencyKeys];

    /// One batch of up to `limit` rows; returns how many it took.
    async fn batch(self, conn: &mut PgConnection, owner: Owner, limit: i64) -> sqlx::Result<i64> {
        match self {
            Self::AccessLogs => erasures::anonymise_access_logs(conn, owner, limit).await,
            Self::ImageKeys => erasures::destroy_image_keys(conn, owner, limit).await,
            Self::SignedUrls => erasures::delete_signed_urls(conn, owner, limit).await,
            Self::IdempotencyKeys => erasures::delete_idempotency_keys(conn, owner, limit).await,
        }
    }

    fn progress(self, done: i64) -> Progress {
        let none = Progress::default();
        match self {
            Self::AccessLogs => Progress { access_log_rows_anonymised: done, ..none },
            Self::ImageKeys => Progress { image_keys_destroyed: done, ..none },
            Self::SignedUrls => Progress { signed_urls_removed: done, ..none },
            Self::IdempotencyKeys => Progress { idempotency_keys_removed: done, ..none },
        }
    }
}

/// Steps 2 and 3: anonymises the owner's access log rows and removes their image keys,
/// signed URL records and idempotency keys, `limit` rows per transaction with its progress.
async fn remove_rows(db: &PgPool, id: Uuid, owner: Owner, limit: i64) -> sqlx::Result<()> {
    for step in RowStep::ALL {
        loop {
            let mut tx = db.begin().await?;
            let done = step.batch(&mut tx, owner, limit).await?;
            if done > 0 {
                erasures::add_progress(&mut *tx, id, step.progress(done)).await?;
            }
            tx.commit().await?;
            if done < limit {
                break;
            }
        }
    }
    Ok(())
}
