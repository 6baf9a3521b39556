//! The `storage_restores` table: restores requested through the API, and their reports.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::backup::restore::{RestoreMode, RestoreReport, Selection};
use crate::db::outbox;
use crate::events::RestoreRequested;

/// A restore as stored.
#[derive(Debug, Clone)]
pub struct Restore {
    pub id: Uuid,
    pub selection: Value,
    pub mode: String,
    pub status: String,
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

/// Records a pending restore and its `restore.requested` job in the caller's transaction.
pub async fn request(
    tx: &mut PgConnection,
    selection: &Selection,
    mode: RestoreMode,
    requested_by: Option<Uuid>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO storage_restores (id, selection, mode, requested_by) VALUES ($1, $2, $3, $4)",
        id,
        serde_json::to_value(selection).expect("a selection serialises"),
        mode.as_str(),
        requested_by,
    )
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(&mut *tx, RestoreRequested { restore_id: id }).await?;
    Ok(id)
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Restore>> {
    sqlx::query_as!(
        Restore,
        "SELECT id, selection, mode, status, requested_by, restored, skipped, failed, details, error, created_at,
                started_at, completed_at
         FROM storage_restores WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

/// Marks a restore running; false if it already finished (a duplicate job). A running one
/// is taken again: its worker died, and restoring is idempotent.
pub async fn start(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE storage_restores SET status = 'running', started_at = now()
         WHERE id = $1 AND status IN ('pending', 'running')",
        id,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the outcome: `completed` when nothing failed, `failed` otherwise.
pub async fn finish(db: impl PgExecutor<'_>, id: Uuid, report: &RestoreReport) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE storage_restores SET status = CASE WHEN $4 = 0 AND $6::text IS NULL THEN 'completed' ELSE 'failed' END,
                restored = $2, skipped = $3, failed = $4, details = $5, error = $6, completed_at = now()
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
