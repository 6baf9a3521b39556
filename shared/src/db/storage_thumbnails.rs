//! The `storage_thumbnails` table: one row per made thumbnail.

use sqlx::PgExecutor;

use crate::model::ImageFormat;
use crate::model::ImageId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub size_name: String,
    pub file_path: String,
    pub file_size: i64,
    pub format: ImageFormat,
    pub width: i32,
    pub height: i32,
    pub checksum: String,
}

/// Records a thumbnail; a redelivered job overwrites its own earlier record.
pub async fn upsert(db: impl PgExecutor<'_>, image_id: ImageId, thumbnail: &ThumbnailRecord) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO storage_thumbnails (image_id, size_name, file_path, file_size, mime_type, width, height, checksum)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (image_id, size_name) DO UPDATE SET
             file_path = EXCLUDED.file_path, file_size = EXCLUDED.file_size, mime_type = EXCLUDED.mime_type,
             width = EXCLUDED.width, height = EXCLUDED.height, checksum = EXCLUDED.checksum",
        image_id as _,
        thumbnail.size_name,
        thumbnail.file_path,
        thumbnail.file_size,
        thumbnail.format.mime(),
        thumbnail.width,
        thumbnail.height,
        thumbnail.checksum,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The thumbnails of an image, smallest first.
pub async fn list(db: impl PgExecutor<'_>, image_id: ImageId) -> sqlx::Result<Vec<ThumbnailRecord>> {
    let rows = sqlx::query!(
        "SELECT size_name, file_path, file_size, mime_type, width, height, checksum
         FROM storage_thumbnails WHERE image_id = $1 ORDER BY width * height, size_name",
        image_id as _,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ThumbnailRecord {
            format: ImageFormat::from_mime(&row.mime_type).unwrap_or(ImageFormat::Jpeg),
            size_name: row.size_name,
            file_path: row.file_path,
            file_size: row.file_size,
            width: row.width,
            height: row.height,
            checksum: row.checksum,
        })
        .collect())
}
