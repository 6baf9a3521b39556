//! `storage_image_keys`: each image's data key, wrapped by a master key (see
//! [`crate::crypto`] for what the bytes are). Deleting a row is crypto-shredding: the data
//! key is gone for good, and with it everything it encrypted.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::model::ImageId;

/// One image's wrapped data key as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ImageKey {
    pub image_id: ImageId,
    /// Id of the master key that wrapped it (`encryption.keys`).
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// Stores the wrapped data key of a new image; false if the image already has one, which is
/// then left as it is (bytes may already be encrypted with it: fetch it with [`get`]).
pub async fn insert(
    db: impl PgExecutor<'_>,
    image_id: ImageId,
    key_id: &str,
    wrapped_key: &[u8],
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO storage_image_keys (image_id, key_id, wrapped_key) VALUES ($1, $2, $3)
         ON CONFLICT (image_id) DO NOTHING",
    )
    .bind(image_id)
    .bind(key_id)
    .bind(wrapped_key)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The wrapped data key of one image; `None` if it has none (never encrypted, or shredded).
pub async fn get(db: impl PgExecutor<'_>, image_id: ImageId) -> sqlx::Result<Option<ImageKey>> {
    sqlx::query_as("SELECT image_id, key_id, wrapped_key, created_at FROM storage_image_keys WHERE image_id = $1")
        .bind(image_id)
        .fetch_optional(db)
        .await
}

/// The wrapped data keys of the images `ids` that have one, in one query (a page of a
/// list); in no particular order.
pub async fn get_many(db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<Vec<ImageKey>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query_as("SELECT image_id, key_id, wrapped_key, created_at FROM storage_image_keys WHERE image_id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Destroys an image's data key (crypto-shredding); true if it had one. Run it in the
/// transaction that deletes the image, so the two cannot part.
pub async fn delete(db: impl PgExecutor<'_>, image_id: ImageId) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM storage_image_keys WHERE image_id = $1").bind(image_id).execute(db).await?;
    Ok(done.rows_affected() == 1)
}

/// Up to `limit` keys not wrapped by `key_id`, in image id order after `after` (keyset
/// pagination for rotation: pass the last id of the previous batch).
pub async fn list_not_under(
    db: impl PgExecutor<'_>,
    key_id: &str,
    after: Option<ImageId>,
    limit: i64,
) -> sqlx::Result<Vec<ImageKey>> {
    sqlx::query_as(
        "SELECT image_id, key_id, wrapped_key, created_at FROM storage_image_keys
         WHERE key_id <> $1 AND ($2::uuid IS NULL OR image_id > $2)
         ORDER BY image_id
         LIMIT $3",
    )
    .bind(key_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Replaces an image's wrapped key by one under `new_key_id`, only if it is still wrapped
/// by `old_key_id`: false when another rotation got there first or the key was shredded,
/// so two rotations at once never overwrite each other.
pub async fn rewrap(
    db: impl PgExecutor<'_>,
    image_id: ImageId,
    old_key_id: &str,
    new_key_id: &str,
    wrapped_key: &[u8],
) -> sqlx::Result<bool> {
    let done =
        sqlx::query("UPDATE storage_image_keys SET key_id = $3, wrapped_key = $4 WHERE image_id = $1 AND key_id = $2")
            .bind(image_id)
            .bind(old_key_id)
            .bind(new_key_id)
            .bind(wrapped_key)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// How many keys each master key wraps, by key id.
pub async fn count_by_key_id(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT key_id, count(*) FROM storage_image_keys GROUP BY key_id ORDER BY key_id")
        .fetch_all(db)
        .await
}
