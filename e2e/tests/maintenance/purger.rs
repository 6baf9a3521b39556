//! The purge: old rows go in batches while recent ones stay.

use super::*;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn old_rows_are_purged_in_batches_and_recent_ones_stay(pool: PgPool) {
    shared::test_support::init_logging();
    let image = insert_image(&pool, Utc::now()).await;
    // Signed URLs expired 8 days ago, a day ago, and valid for another hour.
    for expires_in_secs in [-8.0 * 86_400.0, -86_400.0, 3600.0] {
        sqlx::query(
            "INSERT INTO storage_signed_urls (id, image_id, variant, access_type, key_id, expires_at, requested_by)
             VALUES (gen_random_uuid(), $1, 'original', 'view', 'k1', now() + make_interval(secs => $2),
                     gen_random_uuid())",
        )
        .bind(image)
        .bind(expires_in_secs)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, payload, created_at, published_at) VALUES
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '9 days', now() - interval '8 days'),
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '1 day', now() - interval '1 day'),
             (gen_random_uuid(), 'image.uploaded', '{}', now() - interval '9 days', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // More old results than one batch deletes, so the purge must loop.
    let old_checks = purge::BATCH + 50;
    sqlx::query(
        "INSERT INTO storage_health_checks (check_type, status, checked_at)
         SELECT 'database', 'ok', now() - interval '31 days' FROM generate_series(1, $1)
         UNION ALL SELECT 'database', 'ok', now()",
    )
    .bind(old_checks)
    .execute(&pool)
    .await
    .unwrap();
    // Metric points of a period 401 days ago and of today (the retention is 400 days).
    sqlx::query(
        "INSERT INTO storage_metrics (metric_name, metric_value, period_start, period_end) VALUES
             ('uploads', 1, now() - interval '401 days', now() - interval '401 days' + interval '5 minutes'),
             ('uploads', 2, now() - interval '5 minutes', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_failures (queue, event_type, attempt, final, error, failed_at) VALUES
             ('thumbnails', 'image.uploaded', 1, false, 'old', now() - interval '31 days'),
             ('thumbnails', 'image.uploaded', 1, true, 'recent', now() - interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Idempotency keys three days and an hour old (the retention is two days).
    sqlx::query(
        "INSERT INTO upload_idempotency (principal_id, idempotency_key, image_id, checksum, created_at) VALUES
             (gen_random_uuid(), 'old', $1, 'x', now() - interval '3 days'),
             (gen_random_uuid(), 'recent', $1, 'x', now() - interval '1 hour')",
    )
    .bind(image)
    .execute(&pool)
    .await
    .unwrap();

    // Access log rows 91 days and a day old (the retention is 90 days). The old one has no
    // monthly partition (a fresh database has the current and the next month), so it waits
    // in the default partition, where it is deleted as a row.
    sqlx::query(
        "INSERT INTO storage_access_logs (image_id, action, status, created_at) VALUES
             ($1, 'serve_file', 200, now() - interval '91 days'),
             ($1, 'serve_file', 200, now() - interval '1 day')",
    )
    .bind(image)
    .execute(&pool)
    .await
    .unwrap();

    // Webhook deliveries as old as the old outbox row, and recent.
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint, delivered_at) VALUES
             (gen_random_uuid(), 'main-app', now() - interval '8 days'),
             (gen_random_uuid(), 'main-app', now() - interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let access_log = AccessLogConfig::default();
    let report = purge::run(&pool, &MaintenanceConfig::default(), &access_log, Utc::now()).await.unwrap();
    let expected = purge::PurgeReport {
        signed_urls: 1,
        outbox: 1,
        health_checks: old_checks as u64,
        metrics: 1,
        job_failures: 1,
        idempotency_keys: 1,
        access_logs: 1,
        webhook_deliveries: 1,
        access_log_partitions: 0,
    };
    assert_eq!(report, expected);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_signed_urls").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 2, "the recent and the unpublished rows stay");
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_health_checks").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM job_failures").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_metrics WHERE metric_value = 2").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_metrics").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM upload_idempotency WHERE idempotency_key = 'recent'").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM upload_idempotency").await, 1);
    let kept = "SELECT count(*) FROM storage_access_logs WHERE created_at > now() - interval '2 days'";
    assert_eq!(count(&pool, kept).await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM storage_access_logs").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM webhook_deliveries WHERE delivered_at > now() - interval '2 days'").await,
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_deliveries").await, 1);
    let again = purge::run(&pool, &MaintenanceConfig::default(), &access_log, Utc::now()).await.unwrap();
    assert_eq!(again, purge::PurgeReport::default(), "a second purge finds nothing");
}
