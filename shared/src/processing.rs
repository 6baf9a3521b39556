//! The outcome of an image's processing, told to the main app: `image.processed` once its
//! thumbnails are made and its original verified, `image.failed` on a verdict that retrying
//! cannot change. Each is queued in the transaction that recorded the step deciding it, and
//! claimed on the image's row there, so every outcome is published once however often its
//! job is delivered (docs/events.md).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::image_notifications::{self, NotifiedImage};
use crate::db::{outbox, storage_thumbnails};
use crate::events::{ImageFailed, ImageProcessed, ProcessedVariant};
use crate::model::ImageId;

/// Queues `image.processed` if the image is now processed and the main app has not been
/// told. Call in the transaction that made its thumbnails ready or verified its original,
/// after recording that (and the thumbnails' rows).
pub async fn notify_if_processed(conn: &mut PgConnection, id: ImageId) -> sqlx::Result<Option<Uuid>> {
    let Some(image) = image_notifications::claim_processed(&mut *conn, id).await? else {
        return Ok(None);
    };
    let variants = storage_thumbnails::list(&mut *conn, id)
        .await?
        .into_iter()
        .map(|thumbnail| ProcessedVariant {
            name: thumbnail.size_name,
            mime_type: thumbnail.format.mime().to_owned(),
            file_size: thumbnail.file_size,
            width: thumbnail.width,
            height: thumbnail.height,
        })
        .collect();
    let NotifiedImage { owner_id, owner_type, image_type, checksum, mime_type, file_size, width, height, .. } = image;
    let event = ImageProcessed {
        image_id: id,
        owner_id,
        owner_type,
        image_type,
        checksum,
        mime_type,
        file_size,
        width,
        height,
        variants,
    };
    let event_id = outbox::enqueue(&mut *conn, event).await?;
    tracing::info!(image.id = %id, event.id = %event_id, "{id} is processed; the main app is told");
    Ok(Some(event_id))
}

/// Queues `image.failed` if the image's thumbnails failed or its original is corrupt and
/// the main app has not been told. Call in the transaction that recorded the failure.
pub async fn notify_if_failed(conn: &mut PgConnection, id: ImageId) -> sqlx::Result<Option<Uuid>> {
    let Some(image) = image_notifications::claim_failed(&mut *conn, id).await? else {
        return Ok(None);
    };
    let event = ImageFailed {
        image_id: id,
        owner_id: image.owner_id,
        owner_type: image.owner_type,
        image_type: image.image_type,
        reason: image.processing_error.unwrap_or_default(),
    };
    let event_id = outbox::enqueue(&mut *conn, event).await?;
    tracing::info!(image.id = %id, event.id = %event_id, "{id} failed; the main app is told");
    Ok(Some(event_id))
}
