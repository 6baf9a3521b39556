//! The `storage_image_sources` table: which images an AI result was made from.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{ImageId, OwnerId};

/// Of `sources`, those that are live and that `reader` may use: its own images and public
/// ones (`None` reads everything, for admins). The rows are locked `FOR SHARE` until the
/// transaction ends, so a concurrent deletion waits for the result to be committed.
pub async fn usable_sources(
    conn: &mut PgConnection,
    sources: &[ImageId],
    reader: Option<OwnerId>,
) -> sqlx::Result<Vec<ImageId>> {
    let ids: Vec<Uuid> = sources.iter().map(|s| s.0).collect();
    sqlx::query_scalar!(
        r#"SELECT id AS "id: ImageId" FROM storage_files
           WHERE id = ANY($1) AND deleted_at IS NULL AND ($2::uuid IS NULL OR owner_id = $2 OR is_public)
           ORDER BY id FOR SHARE"#,
        &ids,
        reader.map(|r| r.0),
    )
    .fetch_all(conn)
    .await
}

/// Records that `result` was made from `sources`.
pub async fn insert(db: impl PgExecutor<'_>, result: ImageId, sources: &[ImageId]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = sources.iter().map(|s| s.0).collect();
    sqlx::query!(
        "INSERT INTO storage_image_sources (result_id, source_id) SELECT $1, unnest($2::uuid[])",
        result as _,
        &ids,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The images `result` was made from, in id order.
pub async fn sources_of(db: impl PgExecutor<'_>, result: ImageId) -> sqlx::Result<Vec<ImageId>> {
    sqlx::query_scalar!(
        r#"SELECT source_id AS "id: ImageId" FROM storage_image_sources WHERE result_id = $1 ORDER BY source_id"#,
        result as _,
    )
    .fetch_all(db)
    .await
}

/// How often one of a vendor's clothing images was used in try-on results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryOnCount {
    pub image_id: Uuid,
    pub original_name: String,
    /// Results made from it, deleted results included.
    pub results: i64,
}

/// The owner's images (everyone's with `None`) used as sources, most used first, at most
/// `limit`.
pub async fn try_on_counts(
    db: impl PgExecutor<'_>,
    owner: Option<OwnerId>,
    limit: i64,
) -> sqlx::Result<Vec<TryOnCount>> {
    sqlx::query_as!(
        TryOnCount,
        r#"SELECT f.id AS image_id, f.original_name, count(*) AS "results!"
           FROM storage_files f JOIN storage_image_sources s ON s.source_id = f.id
           WHERE ($1::uuid IS NULL OR f.owner_id = $1) AND f.deleted_at IS NULL
           GROUP BY f.id ORDER BY count(*) DESC, f.id LIMIT $2"#,
        owner.map(|o| o.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Records the sources of a restored result that exist (live or tombstone); sources not
/// restored (yet) are left out rather than failing the restore.
pub async fn insert_existing(db: impl PgExecutor<'_>, result: ImageId, sources: &[ImageId]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = sources.iter().map(|s| s.0).collect();
    sqlx::query!(
        "INSERT INTO storage_image_sources (result_id, source_id)
         SELECT $1, f.id FROM storage_files f WHERE f.id = ANY($2) AND f.id <> $1
         ON CONFLICT DO NOTHING",
        result as _,
        &ids,
    )
    .execute(db)
    .await?;
    Ok(())
}
