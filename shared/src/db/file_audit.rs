//! The file audit's queries: which files found on disk some row still needs, and the live
//! originals, page by page, to check that their files exist.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::model::ImageFormat;
use crate::model::{ImageId, ImageType, Owner, OwnerId, OwnerType};
use crate::storage::StorageKey;

/// Those of `paths` (relative to `storage.basePath`) that an original or thumbnail row
/// refers to, where the image is live or was deleted after `deleted_after` (its deletion
/// job may not have run yet). Both `file_path` columns are unique, so indexed.
pub async fn referenced_paths(
    db: impl PgExecutor<'_>,
    paths: &[String],
    deleted_after: DateTime<Utc>,
) -> sqlx::Result<HashSet<String>> {
    let rows = sqlx::query_scalar!(
        r#"SELECT p AS "path!" FROM unnest($1::text[]) AS p
           WHERE EXISTS (SELECT 1 FROM storage_files f
                         WHERE f.file_path = p AND (f.deleted_at IS NULL OR f.deleted_at > $2))
              OR EXISTS (SELECT 1 FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id
                         WHERE t.file_path = p AND (f.deleted_at IS NULL OR f.deleted_at > $2))"#,
        paths,
        deleted_after,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// A live original as the audit checks it.
#[derive(Debug, Clone)]
pub struct LiveOriginal {
    pub id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub format: ImageFormat,
    pub is_backed_up: bool,
    /// The newest backup copy, relative to `storage.backupPath`.
    pub backup_path: Option<String>,
}

impl LiveOriginal {
    pub fn key(&self) -> StorageKey {
        StorageKey::Original {
            image_type: self.image_type,
            owner: Owner { id: self.owner_id, kind: self.owner_type },
            image_id: self.id,
            format: self.format,
        }
    }
}

/// The next `limit` live originals by id after `after`.
pub async fn live_originals_page(
    db: impl PgExecutor<'_>,
    after: Option<ImageId>,
    limit: i64,
) -> sqlx::Result<Vec<LiveOriginal>> {
    sqlx::query_as!(
        LiveOriginal,
        r#"SELECT id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                  image_type AS "image_type: ImageType", format AS "format: ImageFormat", is_backed_up, backup_path
           FROM storage_files
           WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1)
           ORDER BY id LIMIT $2"#,
        after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// A thumbnail row of a live image whose thumbnails are `ready`.
#[derive(Debug, Clone)]
pub struct ReadyThumbnail {
    pub image_id: ImageId,
    pub size_name: String,
    /// Relative to `storage.basePath`.
    pub file_path: String,
}

/// The next `limit` thumbnails of live images marked ready, after `after` (their primary
/// key order).
pub async fn ready_thumbnails_page(
    db: impl PgExecutor<'_>,
    after: Option<(ImageId, String)>,
    limit: i64,
) -> sqlx::Result<Vec<ReadyThumbnail>> {
    let (after_id, after_size) = after.map_or((None, String::new()), |(id, size)| (Some(id.0), size));
    sqlx::query_as!(
        ReadyThumbnail,
        r#"SELECT t.image_id AS "image_id: ImageId", t.size_name, t.file_path
           FROM storage_thumbnails t JOIN storage_files f ON f.id = t.image_id
           WHERE f.deleted_at IS NULL AND f.thumbnail_status = 'ready'
             AND ($1::uuid IS NULL OR (t.image_id, t.size_name) > ($1, $2))
           ORDER BY t.image_id, t.size_name LIMIT $3"#,
        after_id,
        after_size,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Marks the thumbnails of `ids` as due again (live images whose thumbnails were ready);
/// returns the images changed, whose `image.uploaded` the caller queues in the same
/// transaction.
pub async fn thumbnails_due_again(db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<Vec<ImageId>> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query_scalar!(
        r#"UPDATE storage_files SET thumbnail_status = 'pending', updated_at = now()
           WHERE id = ANY($1) AND deleted_at IS NULL AND thumbnail_status = 'ready'
           RETURNING id AS "id: ImageId""#,
        &ids,
    )
    .fetch_all(db)
    .await
}
