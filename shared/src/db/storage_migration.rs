//! What `stayler-worker migrate-storage` reads: every live original and every thumbnail of a
//! live image with what its object's key and verification need, a page at a time in key
//! order, and their totals for the progress bar.

use sqlx::PgPool;

use crate::model::{ImageFormat, ImageId, ImageType, OwnerId, OwnerType};

/// Live originals and the thumbnails of live images: how many, and their recorded bytes.
pub async fn totals(db: &PgPool) -> sqlx::Result<(u64, u64)> {
    let (objects, bytes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storage_files WHERE deleted_at IS NULL)
              + (SELECT count(*) FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id
                 WHERE f.deleted_at IS NULL),
                (SELECT coalesce(sum(file_size), 0) FROM storage_files WHERE deleted_at IS NULL)::bigint
              + (SELECT coalesce(sum(t.file_size), 0) FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id
                 WHERE f.deleted_at IS NULL)::bigint",
    )
    .fetch_one(db)
    .await?;
    Ok((objects.unsigned_abs(), bytes.unsigned_abs()))
}

/// A live original.
#[derive(Debug, sqlx::FromRow)]
pub struct OriginalRow {
    pub id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub format: ImageFormat,
    pub file_size: i64,
    pub checksum: String,
}

/// Up to `limit` live originals after `after`, by id.
pub async fn originals_after(db: &PgPool, after: Option<ImageId>, limit: i64) -> sqlx::Result<Vec<OriginalRow>> {
    sqlx::query_as(
        "SELECT id, owner_id, owner_type, image_type, format, file_size, checksum
         FROM storage_files
         WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id LIMIT $2",
    )
    .bind(after.map(|id| id.0))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A thumbnail of a live image, with its image's owner and type.
#[derive(Debug, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub image_id: ImageId,
    pub size_name: String,
    pub mime_type: String,
    pub file_size: i64,
    pub checksum: String,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
}

/// Up to `limit` thumbnails of live images after `(image_id, size_name)`, in primary-key
/// order. Those of deleted images are left out: their deletion job removes them from
/// wherever they are.
pub async fn thumbnails_after(
    db: &PgPool,
    after: Option<(ImageId, String)>,
    limit: i64,
) -> sqlx::Result<Vec<ThumbnailRow>> {
    let (after_id, after_size) = after.map_or((None, String::new()), |(id, size)| (Some(id.0), size));
    sqlx::query_as(
        "SELECT t.image_id, t.size_name, t.mime_type, t.file_size, t.checksum,
                f.owner_id, f.owner_type, f.image_type
         FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id
         WHERE f.deleted_at IS NULL AND ($1::uuid IS NULL OR (t.image_id, t.size_name) > ($1, $2))
         ORDER BY t.image_id, t.size_name LIMIT $3",
    )
    .bind(after_id)
    .bind(after_size)
    .bind(limit)
    .fetch_all(db)
    .await
}
