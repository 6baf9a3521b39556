//! The `storage_quotas` table: per-owner limits and usage, kept exact by row locks.

use sqlx::PgExecutor;

use crate::config::QuotaConfig;
use crate::images::Owner;

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
