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

/// Records many issued URLs in one statement (the URLs of a page or a batch), each as
/// [`record`] would; how many rows were new.
pub async fn record_many(db: impl PgExecutor<'_>, urls: &[NewSignedUrl<'_>]) -> sqlx::Result<u64> {
    if urls.is_empty() {
        return Ok(0);
    }
    let variants: Vec<&str> = urls.iter().map(|url| url.variant).collect();
    let access_types: Vec<&str> = urls.iter().map(|url| url.access_type).collect();
    let key_ids: Vec<&str> = urls.iter().map(|url| url.key_id).collect();
    let ids: Vec<Uuid> = urls.iter().map(|_| Uuid::now_v7()).collect();
    let image_ids: Vec<Uuid> = urls.iter().map(|url| url.image_id.0).collect();
    let expiries: Vec<DateTime<Utc>> = urls.iter().map(|url| url.expires_at).collect();
    let requesters: Vec<Uuid> = urls.iter().map(|url| url.requested_by).collect();
    let generations: Vec<i32> = urls.iter().map(|url| url.url_generation).collect();
    let done = sqlx::query(
        "INSERT INTO storage_signed_urls (id, image_id, variant, access_type, key_id, expires_at, requested_by,
                                          url_generation)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                              $7::uuid[], $8::int[])
         ON CONFLICT (image_id, variant, access_type, expires_at, key_id, url_generation) DO NOTHING",
    )
    .bind(ids)
    .bind(image_ids)
    .bind(variants)
    .bind(access_types)
    .bind(key_ids)
    .bind(expiries)
    .bind(requesters)
    .bind(generations)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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
