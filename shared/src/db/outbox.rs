//! The `outbox` table: events written in their row's transaction, published later.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use crate::events::{Envelope, Event};

/// One unpublished event, claimed by a relay.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    /// The whole envelope, as it goes on the wire.
    pub payload: Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Adds an event to the outbox; it is published only if the surrounding transaction commits.
pub async fn enqueue<T: Event>(db: impl PgExecutor<'_>, payload: T) -> sqlx::Result<Uuid> {
    let envelope = Envelope::new(payload);
    let body = serde_json::to_value(&envelope).expect("events serialise");
    sqlx::query!("INSERT INTO outbox (event_id, event_type, payload) VALUES ($1, $2, $3)", envelope.id, T::TYPE, body,)
        .execute(db)
        .await?;
    Ok(envelope.id)
}

/// Locks up to `limit` unpublished rows, oldest first, skipping rows another relay holds.
pub async fn claim_batch(tx: &mut Transaction<'_, Postgres>, limit: i64) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as!(
        OutboxRow,
        "SELECT id, event_id, event_type, payload, attempts, created_at FROM outbox
         WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    .fetch_all(&mut **tx)
    .await
}

/// Marks rows as confirmed by the broker.
pub async fn mark_published(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", ids).execute(db).await?;
    Ok(())
}

/// Records a failed publication attempt; the row stays unpublished and is retried.
pub async fn record_failure(db: impl PgExecutor<'_>, ids: &[i64], error: &str) -> sqlx::Result<()> {
    sqlx::query!("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)", ids, error)
        .execute(db)
        .await?;
    Ok(())
}

/// Unpublished rows and the age of the oldest, in seconds (for health checks and tests).
pub async fn backlog(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, Option<f64>)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", EXTRACT(EPOCH FROM now() - min(created_at))::float8 AS oldest_secs
           FROM outbox WHERE published_at IS NULL"#
    )
    .fetch_one(db)
    .await?;
    Ok((row.count, row.oldest_secs))
}
