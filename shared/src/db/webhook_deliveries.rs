//! The `webhook_deliveries` table: which endpoints took which notification.

use sqlx::PgExecutor;
use uuid::Uuid;

/// The endpoints that already took event `event_id`.
pub async fn delivered_to(db: impl PgExecutor<'_>, event_id: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT endpoint FROM webhook_deliveries WHERE event_id = $1").bind(event_id).fetch_all(db).await
}

/// Records that `endpoint` took event `event_id` (again: no change).
pub async fn record(db: impl PgExecutor<'_>, event_id: Uuid, endpoint: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO webhook_deliveries (event_id, endpoint) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(event_id)
        .bind(endpoint)
        .execute(db)
        .await?;
    Ok(())
}
