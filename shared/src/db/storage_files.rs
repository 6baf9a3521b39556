//! The `storage_files` table: one row per stored original.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use crate::model::ImageFormat;
use crate::model::{ArchivedImage, ChecksumStatus, ImageId, ImageType, Owner, OwnerId, OwnerType, ThumbnailStatus};
use crate::storage::StorageKey;

/// A live (not deleted) stored original.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StorageFile {
    pub id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub original_name: String,
    pub file_path: String,
    pub file_size: i64,
    pub mime_type: String,
    pub format: ImageFormat,
    pub width: i32,
    pub height: i32,
    pub checksum: String,
    pub checksum_status: ChecksumStatus,
    pub verified_at: Option<DateTime<Utc>>,
    pub thumbnail_status: ThumbnailStatus,
    pub processing_error: Option<String>,
    pub is_public: bool,
    /// The generation of signed URLs that still serve the image (see
    /// the signed URL format in `crate::signing`); advanced to revoke the earlier ones.
    pub url_generation: i32,
    pub tags: Vec<String>,
    pub metadata: Value,
    pub access_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl StorageFile {
    pub fn owner(&self) -> Owner {
        Owner { id: self.owner_id, kind: self.owner_type }
    }

    /// Where the original lives, derived from ids (the stored `file_path` is informative).
    pub fn key(&self) -> StorageKey {
        StorageKey::Original {
            image_type: self.image_type,
            owner: self.owner(),
            image_id: self.id,
            format: self.format,
        }
    }

    /// The URL generation as signed URLs carry it (the database keeps it non-negative).
    pub fn signing_generation(&self) -> u32 {
        self.url_generation.unsigned_abs()
    }

    /// Where one of its thumbnails lives.
    pub fn thumbnail_key(&self, size: &str, format: ImageFormat) -> StorageKey {
        StorageKey::Thumbnail {
            image_type: self.image_type,
            owner: self.owner(),
            image_id: self.id,
            size: size.to_owned(),
            format,
        }
    }
}

/// The row an upload inserts.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub id: ImageId,
    pub owner: Owner,
    pub image_type: ImageType,
    pub original_name: &'a str,
    pub file_path: &'a str,
    pub file_size: i64,
    pub format: ImageFormat,
    pub width: i32,
    pub height: i32,
    pub checksum: &'a str,
    pub is_public: bool,
    pub tags: &'a [String],
    pub metadata: &'a Value,
}

/// Inserts the row of a new upload and returns it as stored.
pub async fn insert(db: impl PgExecutor<'_>, file: &NewFile<'_>) -> sqlx::Result<StorageFile> {
    sqlx::query_as!(
        StorageFile,
        r#"INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                      mime_type, format, width, height, checksum, is_public, tags, metadata)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           RETURNING id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                     image_type AS "image_type: ImageType", original_name, file_path, file_size, mime_type,
                     format AS "format: ImageFormat", width, height, checksum,
                     checksum_status AS "checksum_status: ChecksumStatus", verified_at,
                     thumbnail_status AS "thumbnail_status: ThumbnailStatus", processing_error, is_public, url_generation,
                     tags, metadata, access_count, created_at,
                     updated_at"#,
        file.id as _,
        file.owner.id as _,
        file.owner.kind as _,
        file.image_type as _,
        file.original_name,
        file.file_path,
        file.file_size,
        file.format.mime(),
        file.format as _,
        file.width,
        file.height,
        file.checksum,
        file.is_public,
        file.tags,
        file.metadata,
    )
    .fetch_one(db)
    .await
}

/// A live image by id; `None` if it never existed or was deleted.
pub async fn get(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<Option<StorageFile>> {
    sqlx::query_as!(
        StorageFile,
        r#"SELECT id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                  image_type AS "image_type: ImageType", original_name, file_path, file_size, mime_type,
                  format AS "format: ImageFormat", width, height, checksum,
                  checksum_status AS "checksum_status: ChecksumStatus", verified_at,
                  thumbnail_status AS "thumbnail_status: ThumbnailStatus", processing_error, is_public, url_generation,
                  tags, metadata, access_count, created_at, updated_at
           FROM storage_files WHERE id = $1 AND deleted_at IS NULL"#,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// The live images among `ids`, in one query, in no particular order; ids never stored or
/// deleted are left out. For the requests that name many images at once (URLs of a gallery).
pub async fn get_many(db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<Vec<StorageFile>> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query_as(
        "SELECT id, owner_id, owner_type, image_type, original_name, file_path, file_size, mime_type, format, width,
                height, checksum, checksum_status, verified_at, thumbnail_status, processing_error, is_public,
                url_generation, tags, metadata, access_count, created_at, updated_at
         FROM storage_files WHERE id = ANY($1) AND deleted_at IS NULL",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Records a passed verification; false if the file was deleted meanwhile.
pub async fn mark_verified(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_files SET checksum_status = 'verified', verified_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
        id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the stored bytes no longer match the upload checksum.
pub async fn mark_corrupt(db: impl PgExecutor<'_>, id: ImageId, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_files SET checksum_status = 'corrupt', verified_at = now(), processing_error = $2
         WHERE id = $1 AND deleted_at IS NULL",
        id as _,
        reason,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that every configured thumbnail exists.
pub async fn mark_thumbnails_ready(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_files SET thumbnail_status = 'ready' WHERE id = $1 AND deleted_at IS NULL",
        id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that thumbnails were given up for good, and why.
pub async fn mark_thumbnails_failed(db: impl PgExecutor<'_>, id: ImageId, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_files SET thumbnail_status = 'failed', processing_error = $2
         WHERE id = $1 AND deleted_at IS NULL AND thumbnail_status <> 'ready'",
        id as _,
        reason,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A live image, locked until the end of the transaction so that a concurrent update or
/// deletion waits for this one.
pub async fn get_for_update(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<Option<StorageFile>> {
    sqlx::query_as!(
        StorageFile,
        r#"SELECT id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                  image_type AS "image_type: ImageType", original_name, file_path, file_size, mime_type,
                  format AS "format: ImageFormat", width, height, checksum,
                  checksum_status AS "checksum_status: ChecksumStatus", verified_at,
                  thumbnail_status AS "thumbnail_status: ThumbnailStatus", processing_error, is_public, url_generation,
                  tags, metadata, access_count, created_at, updated_at
           FROM storage_files WHERE id = $1 AND deleted_at IS NULL FOR UPDATE"#,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// A deleted image's row, kept as a tombstone (backups and provenance refer to it); `None`
/// if the image is live or never existed. The deletion worker finds its files from it.
pub async fn get_deleted(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<Option<StorageFile>> {
    sqlx::query_as!(
        StorageFile,
        r#"SELECT id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                  image_type AS "image_type: ImageType", original_name, file_path, file_size, mime_type,
                  format AS "format: ImageFormat", width, height, checksum,
                  checksum_status AS "checksum_status: ChecksumStatus", verified_at,
                  thumbnail_status AS "thumbnail_status: ThumbnailStatus", processing_error, is_public, url_generation,
                  tags, metadata, access_count, created_at, updated_at
           FROM storage_files WHERE id = $1 AND deleted_at IS NOT NULL"#,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// Validated changes to an image's client-editable metadata; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataChanges {
    pub original_name: Option<String>,
    pub is_public: Option<bool>,
    pub tags: Option<Vec<String>>,
    /// A JSON object.
    pub metadata: Option<Value>,
}

/// Applies `changes` to a live image and stamps `updated_at`; `None` if it is gone. Making
/// a public image private advances its URL generation: URLs signed while anyone could read
/// it stop working at once instead of at their expiry.
pub async fn update_metadata(
    db: impl PgExecutor<'_>,
    id: ImageId,
    changes: &MetadataChanges,
) -> sqlx::Result<Option<StorageFile>> {
    sqlx::query_as!(
        StorageFile,
        r#"UPDATE storage_files SET original_name = coalesce($2, original_name), is_public = coalesce($3, is_public),
                                    tags = coalesce($4, tags), metadata = coalesce($5, metadata), updated_at = now(),
                                    url_generation = url_generation + (is_public AND NOT coalesce($3, true))::int
           WHERE id = $1 AND deleted_at IS NULL
           RETURNING id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                     image_type AS "image_type: ImageType", original_name, file_path, file_size, mime_type,
                     format AS "format: ImageFormat", width, height, checksum,
                     checksum_status AS "checksum_status: ChecksumStatus", verified_at,
                     thumbnail_status AS "thumbnail_status: ThumbnailStatus", processing_error, is_public, url_generation,
                     tags, metadata, access_count, created_at,
                     updated_at"#,
        id as _,
        changes.original_name.as_deref(),
        changes.is_public,
        changes.tags.as_deref(),
        changes.metadata.as_ref(),
    )
    .fetch_optional(db)
    .await
}

/// Advances a live image's URL generation, so that every URL signed for it so far is
/// refused; the new generation, or `None` if the image is gone.
pub async fn revoke_urls(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!(
        "UPDATE storage_files SET url_generation = url_generation + 1, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL RETURNING url_generation",
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// Marks a live image deleted: from now on no query for live images sees it. False if it
/// was already deleted or never existed. The row stays as a tombstone.
///
/// The tombstone keeps what backups, provenance and the deletion worker need (ids, owner,
/// path, size, format, checksum, dates) and nothing its owner wrote: the file name, tags
/// and metadata are scrubbed in the same statement.
pub async fn mark_deleted(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE storage_files
         SET deleted_at = now(), updated_at = now(), original_name = '', tags = '{}', metadata = '{}'
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Up to `limit` live images of `image_type` created before `cutoff`, oldest first, locked
/// for deletion; rows another transaction holds are skipped (a concurrent cleanup takes
/// them), so two cleanups never wait on each other nor delete one image twice.
pub async fn expired_for_update(
    db: impl PgExecutor<'_>,
    image_type: ImageType,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<StorageFile>> {
    sqlx::query_as(
        "SELECT id, owner_id, owner_type, image_type, original_name, file_path, file_size, mime_type, format,
                width, height, checksum, checksum_status, verified_at, thumbnail_status, processing_error,
                is_public, url_generation, tags, metadata, access_count, created_at, updated_at
         FROM storage_files
         WHERE image_type = $1 AND created_at < $2 AND deleted_at IS NULL
         ORDER BY created_at
         LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(image_type)
    .bind(cutoff)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Forgets the thumbnail rows of a deleted image once its files are gone (the original's
/// row stays as a tombstone; thumbnails are remade on restore).
pub async fn delete_thumbnail_rows(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM storage_thumbnails t USING storage_files f
         WHERE t.image_id = $1 AND f.id = t.image_id AND f.deleted_at IS NOT NULL",
        id as _,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Live rows in the table (for operators and tests).
pub async fn count_live(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM storage_files WHERE deleted_at IS NULL"#)
        .fetch_one(db)
        .await
}

/// Whether an image has a row, and whether it is a tombstone; for restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    Missing,
    Live,
    Deleted,
}

pub async fn row_state(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<RowState> {
    let deleted = sqlx::query_scalar!(
        r#"SELECT deleted_at IS NOT NULL AS "deleted!" FROM storage_files WHERE id = $1"#,
        id as _,
    )
    .fetch_optional(db)
    .await?;
    Ok(match deleted {
        None => RowState::Missing,
        Some(false) => RowState::Live,
        Some(true) => RowState::Deleted,
    })
}

/// Rebuilds the row of a restored image from its manifest entry: bytes just verified
/// against the checksum, backed up at `entry.archive_path`, thumbnails to be made again.
/// False if a row appeared meanwhile (another restore), in which case nothing changed.
pub async fn insert_restored(db: impl PgExecutor<'_>, entry: &ArchivedImage) -> sqlx::Result<bool> {
    let archive_path = entry.archive_path.to_string_lossy();
    let done = sqlx::query!(
        "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                    mime_type, format, width, height, checksum, checksum_status, verified_at,
                                    is_public, tags, metadata, is_backed_up, backup_path, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'verified', now(), $13, $14, $15, true, $16, $17)
         ON CONFLICT (id) DO NOTHING",
        entry.image_id as _,
        entry.owner_id as _,
        entry.owner_type as _,
        entry.image_type as _,
        entry.original_name,
        StorageKey::of_archived(entry).to_db_path(),
        entry.file_size,
        entry.format.mime(),
        entry.format as _,
        entry.width,
        entry.height,
        entry.checksum,
        entry.is_public,
        &entry.tags,
        entry.metadata,
        archive_path.as_ref(),
        entry.created_at,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// After a live image's original was put back: its bytes are verified, and its thumbnails
/// (likely lost with it) are made again by the normal pipeline, swept from scratch if lost.
pub async fn reset_after_restore(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_files SET checksum_status = 'verified', verified_at = now(), thumbnail_status = 'pending',
                processing_error = NULL, requeue_count = 0, last_requeued_at = NULL, sweep_gave_up_at = NULL
         WHERE id = $1 AND deleted_at IS NULL",
        id as _,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Where an image's processing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingState {
    pub thumbnail_status: ThumbnailStatus,
    pub checksum_status: ChecksumStatus,
}

/// Before a live image is processed again by hand: forgets what the sweeper recorded
/// (re-queues, giving up; the back-off starts again from now, as the caller queues the work
/// at once) and puts thumbnails not made back to `pending`; returns
/// the statuses it now has, `None` if it is deleted or never existed. A pending
/// verification stays pending; a corrupt original keeps its status and reason, since hashing
/// the same bytes again cannot clear it (a restore can). Unlike [`reset_after_restore`] it
/// claims nothing about the bytes, and leaves ready thumbnails alone.
pub async fn reset_for_reprocess(db: impl PgExecutor<'_>, id: ImageId) -> sqlx::Result<Option<ProcessingState>> {
    sqlx::query_as!(
        ProcessingState,
        r#"UPDATE storage_files SET requeue_count = 0, last_requeued_at = now(), sweep_gave_up_at = NULL,
                thumbnail_status = CASE WHEN thumbnail_status = 'ready' THEN 'ready' ELSE 'pending' END,
                processing_error = CASE WHEN checksum_status = 'corrupt' THEN processing_error END
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING thumbnail_status AS "thumbnail_status: ThumbnailStatus",
                   checksum_status AS "checksum_status: ChecksumStatus""#,
        id as _,
    )
    .fetch_optional(db)
    .await
}

/// A verified original due for its periodic re-check.
#[derive(Debug, Clone)]
pub struct IntegrityCandidate {
    pub id: ImageId,
    pub key: StorageKey,
    pub checksum: String,
    pub file_size: i64,
    pub verified_at: Option<DateTime<Utc>>,
}

/// The `limit` verified live originals checked longest ago (never re-checked first), so
/// that repeated samples walk through every stored file.
pub async fn integrity_sample(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<IntegrityCandidate>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id: ImageId", owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType",
                  image_type AS "image_type: ImageType", format AS "format: ImageFormat", checksum, file_size, verified_at
           FROM storage_files
           WHERE deleted_at IS NULL AND checksum_status = 'verified'
           ORDER BY verified_at NULLS FIRST LIMIT $1"#,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| IntegrityCandidate {
            id: row.id,
            key: StorageKey::Original {
                image_type: row.image_type,
                owner: Owner { id: row.owner_id, kind: row.owner_type },
                image_id: row.id,
                format: row.format,
            },
            checksum: row.checksum,
            file_size: row.file_size,
            verified_at: row.verified_at,
        })
        .collect())
}

/// Records that verified originals still match their checksums (a passed re-check).
pub async fn touch_verified(db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<()> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query!(
        "UPDATE storage_files SET verified_at = now()
         WHERE id = ANY($1) AND deleted_at IS NULL AND checksum_status = 'verified'",
        &ids,
    )
    .execute(db)
    .await?;
    Ok(())
}
