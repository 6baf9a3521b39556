//! The `storage_restores` table: restores requested through the API, and their reports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::model::{RestoreMode, RestoreReport, RestoreSelection, RestoreStatus};

/// A restore as stored.
#[derive(Debug, Clone)]
pub struct Restore {
    pub id: Uuid,
    pub selection: Value,
    pub mode: RestoreMode,
    pub status: RestoreStatus,
    pub requested_by: Option<Uuid>,
    pub restored: i64,
    pub skipped: i64,
    pub failed: i64,
    pub details: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Records a pending restore. Its job is queued by [`crate::backup::restore::request`], the
/// one caller.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    selection: &RestoreSelection,
    mode: RestoreMode,
    requested_by: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO storage_restores (id, selection, mode, requested_by) VALUES ($1, $2, $3, $4)",
        id,
        serde_json::to_value(selection).expect("a selection serialises"),
        mode as RestoreMode,
        requested_by,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Restore>> {
    sqlx::query_as!(
        Restore,
        r#"SELECT id, selection, mode AS "mode: RestoreMode", status AS "status: RestoreStatus", requested_by, restored, skipped, failed,
                  details, error, created_at, started_at, completed_at
           FROM storage_restores WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// What a worker found when it asked for a restore's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The lease is the caller's: run the restore.
    Taken,
    /// Another run holds a live lease (a second delivery of the same job): leave it.
    Running,
    /// It finished (or does not exist): nothing to do.
    Finished,
}

/// Marks a restore running under a lease held by `holder` for `lease`. A running restore
/// is taken over once its lease ran out: its worker died, and restoring is idempotent.
pub async fn claim(db: &PgPool, id: Uuid, holder: Uuid, lease: Duration) -> sqlx::Result<Claim> {
    let taken = sqlx::query!(
        "UPDATE storage_restores
         SET status = 'running', started_at = coalesce(started_at, now()), lease_holder = $2,
             lease_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND (status = 'pending'
                            OR (status = 'running' AND coalesce(lease_until, '-infinity') < now()))",
        id,
        holder,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(Claim::Taken);
    }
    let status =
        sqlx::query_scalar!(r#"SELECT status AS "status: RestoreStatus" FROM storage_restores WHERE id = $1"#, id)
            .fetch_optional(db)
            .await?;
    Ok(if status == Some(RestoreStatus::Running) { Claim::Running } else { Claim::Finished })
}

/// Extends `holder`'s lease on a running restore by `lease` from now; false once the lease
/// is no longer the holder's (another run took the restore over, or it finished).
pub async fn renew(db: &PgPool, id: Uuid, holder: Uuid, lease: Duration) -> sqlx::Result<bool> {
    let renewed = sqlx::query!(
        "UPDATE storage_restores SET lease_until = now() + make_interval(secs => $3)
         WHERE id = $1 AND lease_holder = $2 AND status = 'running'",
        id,
        holder,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Gives up `holder`'s lease without finishing (the run failed and will be retried), so the
/// retry can take the restore at once instead of waiting for the lease to run out.
pub async fn release(db: &PgPool, id: Uuid, holder: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_restores SET lease_until = NULL WHERE id = $1 AND lease_holder = $2 AND status = 'running'",
        id,
        holder,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the outcome: `completed` when nothing failed, `failed` otherwise.
pub async fn finish(db: impl PgExecutor<'_>, id: Uuid, report: &RestoreReport) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_restores SET status = CASE WHEN $4 = 0 AND $6::text IS NULL THEN 'completed' ELSE 'failed' END,
                restored = $2, skipped = $3, failed = $4, details = $5, error = $6, completed_at = now(),
                lease_until = NULL
         WHERE id = $1",
        id,
        report.restored as i64,
        report.skipped as i64,
        report.failed as i64,
        serde_json::to_value(&report.details).expect("details serialise"),
        report.error.as_deref(),
    )
    .execute(db)
    .await?;
    Ok(())
}
