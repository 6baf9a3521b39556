//! The `upload_idempotency` table: which image a caller's `Idempotency-Key` produced.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::model::ImageId;

/// The image a key produced before, with the checksum of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousUpload {
    pub image_id: ImageId,
    pub checksum: String,
}

pub async fn find(db: impl PgExecutor<'_>, principal: Uuid, key: &str) -> sqlx::Result<Option<PreviousUpload>> {
    sqlx::query_as!(
        PreviousUpload,
        r#"SELECT image_id AS "image_id: ImageId", checksum FROM upload_idempotency
           WHERE principal_id = $1 AND idempotency_key = $2"#,
        principal,
        key,
    )
    .fetch_optional(db)
    .await
}

/// Remembers the key; false if a concurrent request with the same key committed first.
pub async fn insert(
    db: impl PgExecutor<'_>,
    principal: Uuid,
    key: &str,
    image_id: ImageId,
    checksum: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO upload_idempotency (principal_id, idempotency_key, image_id, checksum) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        principal,
        key,
        image_id as _,
        checksum,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
