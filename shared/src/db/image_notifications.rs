//! `storage_files.notified_status`: which processing outcome the main app was last told
//! about. Claiming an outcome and queuing its event in one transaction publishes each
//! outcome once.

use sqlx::{FromRow, PgConnection};

use crate::model::{ImageId, ImageType, OwnerId, OwnerType};

/// The facts of an image its notification carries.
#[derive(Debug, Clone, FromRow)]
pub struct NotifiedImage {
    pub id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub checksum: String,
    pub mime_type: String,
    pub file_size: i64,
    pub width: i32,
    pub height: i32,
    pub processing_error: Option<String>,
}

/// The columns of [`NotifiedImage`], as one `RETURNING` clause for the claims below.
macro_rules! returning_notified_image {
    () => {
        "RETURNING id, owner_id, owner_type, image_type, checksum, mime_type, file_size, width, height, processing_error"
    };
}

/// Marks a live image told `processed` if its thumbnails are ready and its original
/// verified, unless it was already; `None` otherwise. Run in the transaction that recorded
/// either step, after it: that step's update holds the row, so of two steps ending at once
/// the later one waits and then sees both done.
pub async fn claim_processed(conn: &mut PgConnection, id: ImageId) -> sqlx::Result<Option<NotifiedImage>> {
    sqlx::query_as(concat!(
        "UPDATE storage_files SET notified_status = 'processed'
         WHERE id = $1 AND deleted_at IS NULL AND thumbnail_status = 'ready' AND checksum_status = 'verified'
           AND notified_status IS DISTINCT FROM 'processed' ",
        returning_notified_image!()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Marks a live image told `failed` if its thumbnails failed or its original is corrupt,
/// unless it was already; `None` otherwise.
pub async fn claim_failed(conn: &mut PgConnection, id: ImageId) -> sqlx::Result<Option<NotifiedImage>> {
    sqlx::query_as(concat!(
        "UPDATE storage_files SET notified_status = 'failed'
         WHERE id = $1 AND deleted_at IS NULL AND (thumbnail_status = 'failed' OR checksum_status = 'corrupt')
           AND notified_status IS DISTINCT FROM 'failed' ",
        returning_notified_image!()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}
