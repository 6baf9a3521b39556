//! `storage_erasures` (an owner's erasure: request, progress, report) and the queries an
//! erasure runs over the owner's rows in other tables: their live images, locked a batch at
//! a time; their access log rows, anonymised a batch at a time; their signed URL records,
//! idempotency keys, image keys and quota row, removed; the backup copies of their images,
//! counted. Every batch takes at most `limit` rows, so that each transaction stays short
//! however much the owner has stored.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{ImageId, Owner, OwnerId, OwnerType};

/// An erasure as stored.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct ErasureRow {
    pub id: Uuid,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub requested_by: Uuid,
    pub request_id: Option<String>,
    /// `pending`, `running` or `completed`.
    pub status: String,
    pub images_deleted: i64,
    pub thumbnails_queued: i64,
    pub access_log_rows_anonymised: i64,
    pub signed_urls_removed: i64,
    pub idempotency_keys_removed: i64,
    pub image_keys_destroyed: i64,
    pub report: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, owner_id, owner_type, requested_by, request_id, status, images_deleted, thumbnails_queued,
                       access_log_rows_anonymised, signed_urls_removed, idempotency_keys_removed,
                       image_keys_destroyed, report, created_at, started_at, finished_at";

/// Records a pending erasure of `owner` unless one is pending or running already; `false`
/// then (the caller reads that one with [`active`]). A concurrent insert for the same owner
/// makes this one wait for it and then insert nothing.
pub async fn insert_unless_active(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Owner,
    requested_by: Uuid,
    request_id: Option<&str>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO storage_erasures (id, owner_id, owner_type, requested_by, request_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (owner_id, owner_type) WHERE status IN ('pending', 'running') DO NOTHING",
    )
    .bind(id)
    .bind(owner.id)
    .bind(owner.kind)
    .bind(requested_by)
    .bind(request_id)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The pending or running erasure of `owner`, if any.
pub async fn active(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<Option<ErasureRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM storage_erasures
         WHERE owner_id = $1 AND owner_type = $2 AND status IN ('pending', 'running')"
    )))
    .bind(owner.id)
    .bind(owner.kind)
    .fetch_optional(db)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<ErasureRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM storage_erasures WHERE id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Marks an unfinished erasure running (its start time is the first run's) and returns its
/// owner; `None` when it completed or does not exist.
pub async fn start(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Owner>> {
    let row: Option<(OwnerId, OwnerType)> = sqlx::query_as(
        "UPDATE storage_erasures SET status = 'running', started_at = coalesce(started_at, now())
         WHERE id = $1 AND status <> 'completed'
         RETURNING owner_id, owner_type",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, kind)| Owner { id, kind }))
}

/// Locks the running erasure `id` until the end of the transaction (two runs finishing at
/// once write the report in turn); false when it is not running.
pub async fn lock_running(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM storage_erasures WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(status.as_deref() == Some("running"))
}

/// What one batch did, added to the erasure's counts in the batch's transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub images_deleted: i64,
    pub thumbnails_queued: i64,
    pub access_log_rows_anonymised: i64,
    pub signed_urls_removed: i64,
    pub idempotency_keys_removed: i64,
    pub image_keys_destroyed: i64,
}

pub async fn add_progress(db: impl PgExecutor<'_>, id: Uuid, progress: Progress) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE storage_erasures
         SET images_deleted = images_deleted + $2, thumbnails_queued = thumbnails_queued + $3,
             access_log_rows_anonymised = access_log_rows_anonymised + $4,
             signed_urls_removed = signed_urls_removed + $5, idempotency_keys_removed = idempotency_keys_removed + $6,
             image_keys_destroyed = image_keys_destroyed + $7
         WHERE id = $1",
    )
    .bind(id)
    .bind(progress.images_deleted)
    .bind(progress.thumbnails_queued)
    .bind(progress.access_log_rows_anonymised)
    .bind(progress.signed_urls_removed)
    .bind(progress.idempotency_keys_removed)
    .bind(progress.image_keys_destroyed)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the erasure completed with its report; returns the row as it now is.
pub async fn complete(db: impl PgExecutor<'_>, id: Uuid, report: &Value) -> sqlx::Result<ErasureRow> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE storage_erasures SET status = 'completed', report = $2, finished_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(report)
    .fetch_one(db)
    .await
}

/// Up to `limit` live images of `owner`, oldest first, locked for deletion; rows another
/// transaction holds are skipped (a concurrent run of the same erasure takes them).
pub async fn lock_live_images(db: impl PgExecutor<'_>, owner: Owner, limit: i64) -> sqlx::Result<Vec<ImageId>> {
    sqlx::query_scalar(
        "SELECT id FROM storage_files
         WHERE owner_id = $1 AND owner_type = $2 AND deleted_at IS NULL
         ORDER BY created_at, id
         LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many live images `owner` has.
pub async fn live_image_count(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM storage_files WHERE owner_id = $1 AND owner_type = $2 AND deleted_at IS NULL",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .fetch_one(db)
    .await
}

/// How many thumbnails the images `ids` have recorded: the files their deletion jobs remove.
pub async fn thumbnail_count(db: impl PgExecutor<'_>, ids: &[ImageId]) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails WHERE image_id = ANY($1)")
        .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
        .fetch_one(db)
        .await
}

/// Destroys up to `limit` data keys of `owner`'s images, tombstones included (their
/// `storage_image_keys` rows): whatever was encrypted with them, wherever a copy lives, can
/// no longer be read.
pub async fn destroy_image_keys(db: impl PgExecutor<'_>, owner: Owner, limit: i64) -> sqlx::Result<i64> {
    let done = sqlx::query(
        "DELETE FROM storage_image_keys WHERE image_id IN (
             SELECT k.image_id FROM storage_image_keys k JOIN storage_files f ON f.id = k.image_id
             WHERE f.owner_id = $1 AND f.owner_type = $2
             LIMIT $3)",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected() as i64)
}

/// Whether an access log row still names `owner` (`$1`, `$2`): made with their token, or
/// about one of their images (tombstones included) and still holding a client address or
/// user agent. An anonymised row no longer matches, so each batch finds only what is left.
const OWNER_LOG_ROW: &str = "(actor_id = $1
      OR (image_id IN (SELECT id FROM storage_files WHERE owner_id = $1 AND owner_type = $2)
          AND (ip_address IS NOT NULL OR user_agent IS NOT NULL)))";

/// Anonymises up to `limit` access log rows that still name `owner`: the owner's id as the
/// actor, the client address and the user agent become NULL; the image id, action, status,
/// sizes and time stay (they are about the service's work, and the image is a tombstone).
/// Rows are picked by `(tableoid, ctid)`, which is unique across the month partitions (the
/// log has no key), and updated by TID. Returns how many were anonymised.
pub async fn anonymise_access_logs(db: impl PgExecutor<'_>, owner: Owner, limit: i64) -> sqlx::Result<i64> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE storage_access_logs
         SET actor_id = CASE WHEN actor_id = $1 THEN NULL ELSE actor_id END, ip_address = NULL, user_agent = NULL
         WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM storage_access_logs WHERE {OWNER_LOG_ROW} LIMIT $3)
           AND {OWNER_LOG_ROW}"
    )))
    .bind(owner.id)
    .bind(owner.kind)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected() as i64)
}

/// How many access log rows still name `owner` (see [`anonymise_access_logs`]).
pub async fn access_logs_naming(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM storage_access_logs WHERE {OWNER_LOG_ROW}")))
        .bind(owner.id)
        .bind(owner.kind)
        .fetch_one(db)
        .await
}

/// Deletes up to `limit` signed URL records requested by `owner` or issued for one of their
/// images (with their client addresses, by cascade).
pub async fn delete_signed_urls(db: impl PgExecutor<'_>, owner: Owner, limit: i64) -> sqlx::Result<i64> {
    let done = sqlx::query(
        "DELETE FROM storage_signed_urls WHERE id IN (
             SELECT id FROM storage_signed_urls
             WHERE requested_by = $1
                OR image_id IN (SELECT id FROM storage_files WHERE owner_id = $1 AND owner_type = $2)
             LIMIT $3)",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected() as i64)
}

/// Deletes up to `limit` upload idempotency keys of `owner`: their own uploads' keys, and the
/// keys another caller (the service) used to upload one of their images.
pub async fn delete_idempotency_keys(db: impl PgExecutor<'_>, owner: Owner, limit: i64) -> sqlx::Result<i64> {
    let done = sqlx::query(
        "DELETE FROM upload_idempotency WHERE (principal_id, idempotency_key) IN (
             SELECT principal_id, idempotency_key FROM upload_idempotency
             WHERE principal_id = $1
                OR image_id IN (SELECT id FROM storage_files WHERE owner_id = $1 AND owner_type = $2)
             LIMIT $3)",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected() as i64)
}

/// Deletes the quota row of `owner`; false if they had none.
pub async fn delete_quota(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM storage_quotas WHERE owner_id = $1 AND owner_type = $2")
        .bind(owner.id)
        .bind(owner.kind)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The copies of `owner`'s images in backups not removed by retention: how many copies, and
/// in how many backups.
pub async fn backup_copies(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT e.backup_id)
         FROM storage_files f
         JOIN storage_backup_entries e ON e.image_id = f.id AND e.status = 'done'
         JOIN storage_backups b ON b.id = e.backup_id AND b.removed_at IS NULL
         WHERE f.owner_id = $1 AND f.owner_type = $2",
    )
    .bind(owner.id)
    .bind(owner.kind)
    .fetch_one(db)
    .await
}
