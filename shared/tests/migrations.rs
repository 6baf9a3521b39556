//! Migrations that rewrite rows, run against rows written before them.

use serde_json::{Value, json};
use shared::db::MIGRATOR;
use shared::events::{Event, HealthCheckRequested, SweepRequested};
use sqlx::PgPool;
use uuid::Uuid;

async fn insert_event(pool: &PgPool, event_type: &str, published: bool) -> Uuid {
    let id = Uuid::now_v7();
    let payload = json!({"id": id, "type": event_type, "version": 1, "occurred_at": "2026-01-01T00:00:00Z",
                         "payload": {"requested_at": "2026-01-01T00:00:00Z"}});
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, payload, published_at)
         VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)",
    )
    .bind(id)
    .bind(event_type)
    .bind(&payload)
    .bind(published)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn event(pool: &PgPool, id: Uuid) -> (String, Value) {
    sqlx::query_as("SELECT event_type, payload FROM outbox WHERE event_id = $1").bind(id).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn events_waiting_under_their_old_names_are_renamed_and_the_retention_job_keeps_its_slots(pool: PgPool) {
    MIGRATOR.run_to(17, &pool).await.unwrap();
    let waiting = insert_event(&pool, "maintenance.sweep", false).await;
    let sent = insert_event(&pool, "health.check", true).await;
    let current = insert_event(&pool, "image.uploaded", false).await;
    sqlx::query("INSERT INTO scheduled_runs (job, slot, event_id, fired_by) VALUES ('maintenance', now(), $1, 'test')")
        .bind(Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();

    MIGRATOR.run(&pool).await.unwrap();

    let (event_type, payload) = event(&pool, waiting).await;
    assert_eq!((event_type.as_str(), &payload["type"]), (SweepRequested::TYPE, &json!(SweepRequested::TYPE)));
    assert_eq!(payload["payload"]["requested_at"], "2026-01-01T00:00:00Z", "the rest of the envelope is kept");
    let (event_type, _) = event(&pool, sent).await;
    assert_eq!(event_type, "health.check", "a published row is history and stays as it was");
    assert_ne!(event_type, HealthCheckRequested::TYPE);
    assert_eq!(event(&pool, current).await.0, "image.uploaded");
    let jobs: Vec<String> = sqlx::query_scalar("SELECT job FROM scheduled_runs").fetch_all(&pool).await.unwrap();
    assert_eq!(jobs, ["backup_retention"]);
}
