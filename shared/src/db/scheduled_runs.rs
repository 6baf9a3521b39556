//! The `scheduled_runs` table: one row per (job, slot) the scheduler fired. Its primary key
//! is what lets a slot fire once however many scheduler replicas run.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Claims a slot for `job` in the caller's transaction: true if this call inserted it,
/// false if the slot was already fired. A concurrent claim of the same slot waits for this
/// transaction and gets false once it commits (true if it rolls back), so the job's event
/// must be written in the same transaction, and only when this returns true.
///
/// The event id is known only once the job has written its event, so the row starts with
/// the nil id and [`record_event`] completes it before the commit; no other transaction ever
/// sees the nil id.
pub async fn claim(db: impl PgExecutor<'_>, job: &str, slot: DateTime<Utc>, fired_by: &str) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO scheduled_runs (job, slot, event_id, fired_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (job, slot) DO NOTHING",
        job,
        slot,
        Uuid::nil(),
        fired_by,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Records the event (or the job's own id, such as a backup id) a claimed slot produced.
pub async fn record_event(db: impl PgExecutor<'_>, job: &str, slot: DateTime<Utc>, event_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("UPDATE scheduled_runs SET event_id = $3 WHERE job = $1 AND slot = $2", job, slot, event_id)
        .execute(db)
        .await?;
    Ok(())
}
