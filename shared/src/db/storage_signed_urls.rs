//! The `storage_signed_urls` table: one row per distinct signed URL issued.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::model::ImageId;

/// An issued URL's grant, as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignedUrl<'a> {
    pub image_id: ImageId,
    /// `original` or a thumbnail size.
    pub variant: &'a str,
    /// `view` or `download`.
    pub access_type: &'a str,
    pub expires_at: DateTime<Utc>,
    /// The key that signed it.
    pub key_id: &'a str,
    pub url_generation: i32,
    pub requested_by: Uuid,
}

/// Records an issued URL. Expiries are rounded to a window, so the same URL is often issued
/// again: it keeps the row of its first issue (and first requester). True if this issue
/// made a new row.
pub async fn record(db: impl PgExecutor<'_>, url: &NewSignedUrl<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO storage_signed_urls (id, image_id, variant, access_type, key_id, expires_at, requested_by,
                                          url_generation)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (image_id, variant, access_type, expires_at, key_id, url_generation) DO NOTHING",
        Uuid::now_v7(),
        url.image_id as ImageId,
        url.variant,
        url.access_type,
        url.key_id,
        url.expires_at,
        url.requested_by,
        url.url_generation,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stamps `revoked_at` on the unexpired URLs of an image signed before `generation` (which
/// serving refuses from now on), so operators see which URLs a revocation ended; how many.
pub async fn mark_revoked(db: impl PgExecutor<'_>, image_id: ImageId, generation: i32) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "UPDATE storage_signed_urls SET revoked_at = now()
         WHERE image_id = $1 AND url_generation < $2 AND revoked_at IS NULL AND expires_at > now()",
        image_id as _,
        generation,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// An issued URL as recorded (for operators and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedUrl {
    pub image_id: ImageId,
    pub variant: String,
    pub access_type: String,
    pub key_id: String,
    pub expires_at: DateTime<Utc>,
    pub requested_by: Uuid,
    pub url_generation: i32,
    /// When a revocation ended it before its expiry.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The URLs issued for an image, oldest first.
pub async fn list_for_image(db: impl PgExecutor<'_>, image_id: ImageId) -> sqlx::Result<Vec<IssuedUrl>> {
    sqlx::query_as!(
        IssuedUrl,
        r#"SELECT image_id AS "image_id: ImageId", variant, access_type, key_id, expires_at, requested_by,
                  url_generation, revoked_at
           FROM storage_signed_urls WHERE image_id = $1 ORDER BY created_at, id"#,
        image_id as _,
    )
    .fetch_all(db)
    .await
}
