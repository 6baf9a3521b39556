//! Migrations that rewrite or move rows, run against rows written before them.

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

#[sqlx::test(migrations = false)]
async fn access_log_rows_written_before_partitioning_all_survive_each_in_its_month(pool: PgPool) {
    MIGRATOR.run_to(20, &pool).await.unwrap();
    // Forty rows over some sixteen months, every column set or left empty in turn.
    sqlx::query(
        "INSERT INTO storage_access_logs
             (image_id, actor_id, action, ip_address, user_agent, status, bytes_sent, created_at, request_count)
         SELECT gen_random_uuid(), CASE WHEN g % 2 = 0 THEN gen_random_uuid() END, 'serve_file',
                CASE WHEN g % 3 > 0 THEN '10.0.0.1'::inet + g END, 'agent ' || g, 200 + g % 3, g * 10,
                now() - make_interval(days => g * 12, secs => g), 1 + g % 5
         FROM generate_series(0, 39) AS g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows = "SELECT jsonb_agg(to_jsonb(l) ORDER BY id) FROM storage_access_logs l";
    let before: Value = sqlx::query_scalar(rows).fetch_one(&pool).await.unwrap();
    let last_id: i64 = sqlx::query_scalar("SELECT max(id) FROM storage_access_logs").fetch_one(&pool).await.unwrap();

    MIGRATOR.run(&pool).await.unwrap();

    let after: Value = sqlx::query_scalar(rows).fetch_one(&pool).await.unwrap();
    assert_eq!(after.as_array().map(Vec::len), Some(40));
    assert_eq!(after, before, "every row, with its id and every column");
    let misplaced: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM storage_access_logs
           WHERE tableoid::regclass::text <> to_char(created_at AT TIME ZONE 'UTC', '"storage_access_logs_y"YYYY"m"MM')"#,
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(misplaced, 0, "each row lies in its month's partition, none in the default one");
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO storage_access_logs (action, status, created_at)
         VALUES ('serve_file', 200, date_trunc('month', now()) + interval '1 month') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(next > last_id, "ids go on from the old table's");
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_access_logs_default").fetch_one(&pool).await.unwrap();
    assert_eq!(in_default, 0, "next month has its partition from the start");
}

#[sqlx::test(migrations = false)]
async fn tombstones_made_before_the_scrub_lose_their_names_tags_and_metadata(pool: PgPool) {
    MIGRATOR.run_to(21, &pool).await.unwrap();
    let insert = |deleted: bool| {
        let id = Uuid::now_v7();
        let query = sqlx::query(
            "INSERT INTO storage_files (id, owner_id, owner_type, image_type, original_name, file_path, file_size,
                                        mime_type, format, width, height, checksum, tags, metadata, deleted_at)
             VALUES ($1, $1, 'user', 'user', 'my body.jpg', 'images/user/' || $1 || '.jpg', 10, 'image/jpeg',
                     'jpeg', 1, 1, repeat('a', 64), '{summer}', '{\"note\": \"private\"}',
                     CASE WHEN $2 THEN now() END)",
        )
        .bind(id)
        .bind(deleted);
        let pool = pool.clone();
        async move {
            query.execute(&pool).await.unwrap();
            id
        }
    };
    let (live, deleted) = (insert(false).await, insert(true).await);

    MIGRATOR.run(&pool).await.unwrap();

    let row = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, Vec<String>, Value, String)>(
                "SELECT original_name, tags, metadata, checksum FROM storage_files WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (name, tags, metadata, checksum) = row(deleted).await;
    assert_eq!((name.as_str(), tags.len(), metadata, checksum.len()), ("", 0, json!({}), 64));
    let (name, tags, metadata, _) = row(live).await;
    assert_eq!((name.as_str(), tags, metadata), ("my body.jpg", vec!["summer".to_owned()], json!({"note": "private"})));
}
