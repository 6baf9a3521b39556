//! The file audit's queries: which files found on disk some row still needs, and the live
//! originals, page by page, to check that their files exist.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::images::{ImageId, ImageType, Owner, OwnerId, OwnerType};
use crate::imaging::ImageFormat;
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
