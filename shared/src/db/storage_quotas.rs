//! The `storage_quotas` table: per-owner limits and usage, kept exact by row locks.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::config::QuotaConfig;
use crate::model::{Owner, OwnerId, OwnerType};

/// One owner's limits and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub max_files: i64,
    pub max_bytes: i64,
    pub used_files: i64,
    pub used_bytes: i64,
}

/// Creates the owner's quota row with the configured defaults if it does not exist yet.
pub async fn ensure(db: impl PgExecutor<'_>, owner: Owner, defaults: &QuotaConfig) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO storage_quotas (owner_id, owner_type, max_files, max_bytes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (owner_id) DO NOTHING",
        owner.id as _,
        owner.kind as _,
        defaults.default_max_files,
        defaults.default_max_bytes,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Charges one file of `bytes` to the owner if it fits; false (nothing charged) otherwise.
/// The row lock taken by the UPDATE serialises concurrent uploads of one owner, so the
/// limit holds exactly; run it in the transaction that inserts the file row.
pub async fn reserve(db: impl PgExecutor<'_>, owner: Owner, bytes: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_quotas SET used_files = used_files + 1, used_bytes = used_bytes + $2, updated_at = now()
         WHERE owner_id = $1 AND used_files + 1 <= max_files AND used_bytes + $2 <= max_bytes",
        owner.id as _,
        bytes,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Charges one file of `bytes` whatever the limits: a restored image was within them when
/// it was uploaded, and must come back even if an admin lowered them since.
pub async fn charge_restored(db: impl PgExecutor<'_>, owner: Owner, bytes: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_quotas SET used_files = used_files + 1, used_bytes = used_bytes + $2, updated_at = now()
         WHERE owner_id = $1",
        owner.id as _,
        bytes,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The owner's quota, if they ever uploaded.
pub async fn get(db: impl PgExecutor<'_>, owner: Owner) -> sqlx::Result<Option<Quota>> {
    sqlx::query_as!(
        Quota,
        "SELECT max_files, max_bytes, used_files, used_bytes FROM storage_quotas WHERE owner_id = $1",
        owner.id as _,
    )
    .fetch_optional(db)
    .await
}

/// Gives back one file of `bytes` to the owner, in the transaction that deletes it. The row
/// lock orders it with concurrent uploads, so usage stays exact. False if the owner has no
/// quota row (nothing was ever charged).
pub async fn release(db: impl PgExecutor<'_>, owner: Owner, bytes: i64) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_quotas SET used_files = used_files - 1, used_bytes = used_bytes - $2, updated_at = now()
         WHERE owner_id = $1",
        owner.id as _,
        bytes,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One owner's quota row, with the kind of owner it was created for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerQuota {
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub max_files: i64,
    pub max_bytes: i64,
    pub used_files: i64,
    pub used_bytes: i64,
    pub updated_at: DateTime<Utc>,
}

/// The quota row of an owner id, whatever its kind; `None` before their first upload.
pub async fn find(db: impl PgExecutor<'_>, owner_id: OwnerId) -> sqlx::Result<Option<OwnerQuota>> {
    sqlx::query_as!(
        OwnerQuota,
        r#"SELECT owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType", max_files, max_bytes,
                  used_files, used_bytes, updated_at
           FROM storage_quotas WHERE owner_id = $1"#,
        owner_id as _,
    )
    .fetch_optional(db)
    .await
}

/// New limits for an owner; `None` keeps the current one (or the default for a new row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub max_files: Option<i64>,
    pub max_bytes: Option<i64>,
}

/// Sets an owner's limits (the quota adjustment of an admin), creating the row with the
/// configured defaults first if they never uploaded. Limits below the current usage are
/// allowed: nothing is removed, further uploads are refused until usage drops below them.
/// The kind of an existing row is kept.
pub async fn set_limits(
    db: impl PgExecutor<'_>,
    owner: Owner,
    limits: QuotaLimits,
    defaults: &QuotaConfig,
) -> sqlx::Result<OwnerQuota> {
    sqlx::query_as!(
        OwnerQuota,
        r#"INSERT INTO storage_quotas (owner_id, owner_type, max_files, max_bytes)
           VALUES ($1, $2, coalesce($3::bigint, $5::bigint), coalesce($4::bigint, $6::bigint))
           ON CONFLICT (owner_id) DO UPDATE SET
               max_files = coalesce($3::bigint, storage_quotas.max_files),
               max_bytes = coalesce($4::bigint, storage_quotas.max_bytes),
               updated_at = now()
           RETURNING owner_id AS "owner_id: OwnerId", owner_type AS "owner_type: OwnerType", max_files, max_bytes,
                     used_files, used_bytes, updated_at"#,
        owner.id as _,
        owner.kind as _,
        limits.max_files,
        limits.max_bytes,
        defaults.default_max_files,
        defaults.default_max_bytes,
    )
    .fetch_one(db)
    .await
}
