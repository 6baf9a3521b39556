//! The sweeper: lost jobs (and jobs the broker dead-lettered by its delivery limit) are
//! re-queued, once even when the sweep is delivered twice, then given up and reported
//! until an admin reprocesses the image; stalled backups get their batches again.

use super::*;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_image_whose_jobs_were_lost_is_processed_after_a_sweep_delivered_twice(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "me.jpg", images::jpeg(64, 48), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    eventually(TIMEOUT, "the upload's event is published", || async {
        count(&app.pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    // The broker loses both jobs, and the image has waited longer than the sweeper allows.
    broker.purge(&broker.topology.queue(JobQueue::Thumbnails)).await;
    broker.purge(&broker.topology.queue(JobQueue::Checksums)).await;
    sqlx::query("UPDATE storage_files SET created_at = now() - interval '1 hour'").execute(&app.pool).await.unwrap();

    // Two copies of the sweep job, as a redelivery or two scheduler slots would make.
    for _ in 0..2 {
        outbox::enqueue(&app.pool, SweepRequested { requested_at: Utc::now() }).await.unwrap();
    }
    let worker = TestWorker::start(&app.config).await;
    eventually(TIMEOUT, "the image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    eventually(TIMEOUT, "both sweeps have run", || async {
        count(&app.pool, "SELECT count(*) FROM storage_health_checks WHERE check_type = 'sweep'").await == 2
    })
    .await;
    worker.stop().await;

    let uploaded = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    assert_eq!(uploaded, 2, "the upload's event and one re-queue, not two");
    assert_eq!(count(&app.pool, "SELECT requeue_count::bigint FROM storage_files").await, 1);
    let requeued = count(
        &app.pool,
        "SELECT sum((details->>'requeued_thumbnails')::bigint + (details->>'requeued_checksums')::bigint)::bigint
         FROM storage_health_checks WHERE check_type = 'sweep'",
    )
    .await;
    assert_eq!(requeued, 2, "one image, re-queued once for both of its steps");
    let (status, _) = latest_check(&app.pool, "sweep").await;
    assert_eq!(status, "ok");
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_image_requeued_the_maximum_times_is_given_up_and_reported(pool: PgPool) {
    shared::test_support::init_logging();
    let config = MaintenanceConfig { max_requeues: 2, ..MaintenanceConfig::default() };
    let t0 = Utc::now();
    let id = insert_image(&pool, t0).await;
    let fresh = insert_image(&pool, t0 + TimeDelta::minutes(100)).await;
    let minutes = |m: i64| t0 + TimeDelta::minutes(m);
    let requeued_events = || count(&pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'");

    // 900 s after the upload, then waits of 1800 s and 3600 s between re-queues.
    let report = sweep::run(&pool, &config, minutes(14)).await.unwrap();
    assert_eq!((report.requeued_thumbnails, report.requeued_checksums), (0, 0), "not due yet");
    let report = sweep::run(&pool, &config, minutes(16)).await.unwrap();
    assert_eq!((report.requeued_thumbnails, report.requeued_checksums, report.given_up), (1, 1, 0));
    assert_eq!(report.oldest_pending_secs, Some(16.0 * 60.0));
    let again = sweep::run(&pool, &config, minutes(16)).await.unwrap();
    assert_eq!(again.requeued_thumbnails, 0, "a duplicate sweep re-queues nothing");
    assert_eq!(sweep::run(&pool, &config, minutes(45)).await.unwrap().requeued_thumbnails, 0, "backing off");
    assert_eq!(sweep::run(&pool, &config, minutes(47)).await.unwrap().requeued_thumbnails, 1);
    assert_eq!(requeued_events().await, 2);
    assert_eq!(sweep::run(&pool, &config, minutes(106)).await.unwrap().given_up, 0, "waits out the last back-off");

    let report = sweep::run(&pool, &config, minutes(108)).await.unwrap();
    assert_eq!(report.given_up, 1);
    assert_eq!(report.given_up_sample, [ImageId(id)]);
    assert_eq!(report.status(), HealthStatus::Degraded);
    assert_eq!(report.requeued_thumbnails, 0, "the younger image is not due yet");
    let (status, details) = latest_check(&pool, "sweep").await;
    assert_eq!((status.as_str(), details["given_up"].as_u64()), ("degraded", Some(1)));
    assert_eq!(details["given_up_sample"][0], id.to_string());
    let (thumbnails, error): (String, Option<String>) =
        sqlx::query_as("SELECT thumbnail_status, processing_error FROM storage_files WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(thumbnails, "failed");
    assert!(error.unwrap().contains("sweeper"), "the image says why");
    assert_eq!(requeued_events().await, 2, "no event for a given-up image");

    // Given up once: later sweeps no longer re-queue it, but keep the check degraded while
    // it is half-processed, so that it does not drop out of health one run later.
    let report = sweep::run(&pool, &config, minutes(300)).await.unwrap();
    assert_eq!((report.given_up, report.given_up_unfinished, report.status()), (0, 1, HealthStatus::Degraded));
    assert_eq!(report.given_up_unfinished_sample, [ImageId(id)]);
    assert_eq!(report.requeued_thumbnails, 1, "only the younger image");
    let fresh_count: i64 = sqlx::query_scalar("SELECT requeue_count::bigint FROM storage_files WHERE id = $1")
        .bind(fresh)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(fresh_count, 1);
    let (status, details) = latest_check(&pool, "sweep").await;
    assert_eq!((status.as_str(), details["given_up_unfinished"].as_u64()), ("degraded", Some(1)));
    assert_eq!(details["given_up_unfinished_sample"][0], id.to_string());
    let summary = health::summarize(health_checks::latest(&pool).await.unwrap(), Utc::now(), &HealthConfig::default());
    assert_eq!(summary.status, HealthStatus::Degraded);
    assert!(
        summary.problems.iter().any(|p| p.starts_with("sweep: 1 images the sweeper gave up on")),
        "what the health endpoint says: {:?}",
        summary.problems
    );
    assert_eq!(requeued_events().await, 3, "still no event for the given-up image");

    // A late job finishes it: the next sweep is healthy again.
    assert!(storage_files::mark_thumbnails_ready(&pool, ImageId(id)).await.unwrap());
    assert!(storage_files::mark_verified(&pool, ImageId(id)).await.unwrap());
    let report = sweep::run(&pool, &config, minutes(301)).await.unwrap();
    assert_eq!((report.given_up_unfinished, report.status()), (0, HealthStatus::Ok));
    assert_eq!(latest_check(&pool, "sweep").await.0, "ok");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_stalled_backup_gets_its_unfinished_batches_published_again(pool: PgPool) {
    shared::test_support::init_logging();
    let config = MaintenanceConfig::default();
    for _ in 0..3 {
        insert_image(&pool, Utc::now()).await;
    }
    let mut tx = pool.begin().await.unwrap();
    let id = backup::request(&mut tx, BackupTrigger::Manual, None, 3, Utc::now()).await.unwrap();
    assert_eq!(backup::plan(&mut tx, id, 2).await.unwrap(), Some(2));
    tx.commit().await.unwrap();
    let batch_events = || count(&pool, "SELECT count(*) FROM outbox WHERE event_type = 'backup_batch.requested'");
    assert_eq!(batch_events().await, 2);

    let report = sweep::run(&pool, &config, Utc::now()).await.unwrap();
    assert!(report.stalled_backups.is_empty(), "just planned: not stalled");
    let later = Utc::now() + TimeDelta::hours(2);
    let report = sweep::run(&pool, &config, later).await.unwrap();
    assert_eq!((report.stalled_backups.as_slice(), report.requeued_backup_jobs), ([id].as_slice(), 2));
    assert_eq!(batch_events().await, 4);
    let report = sweep::run(&pool, &config, later).await.unwrap();
    assert!(report.stalled_backups.is_empty(), "once per stall period");
    assert_eq!(batch_events().await, 4);
    let (_, details) = latest_check(&pool, "sweep").await;
    assert_eq!(details["stalled_backups"], serde_json::json!([]));
}

/// Thumbnail and verification statuses, re-queue count, whether the sweeper gave up, and
/// the processing error of one image.
async fn processing_of(pool: &PgPool, id: &str) -> (String, String, i32, bool, Option<String>) {
    sqlx::query_as(
        "SELECT thumbnail_status, checksum_status, requeue_count, sweep_gave_up_at IS NOT NULL, processing_error
         FROM storage_files WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_reprocesses_an_image_the_sweeper_gave_up_on_and_health_is_ok_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let id = app.upload_image(&token, "user", "stuck.jpg", &[]).await;
    let deleted = app.upload_image(&token, "user", "deleted.jpg", &[]).await;
    eventually(TIMEOUT, "the uploads' events are published", || async {
        count(&app.pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    // No worker runs and the broker loses the jobs; a sweeper allowed no re-queue gives up.
    broker.purge(&broker.topology.queue(JobQueue::Thumbnails)).await;
    broker.purge(&broker.topology.queue(JobQueue::Checksums)).await;
    assert_eq!(app.delete_image(&token, &deleted).await.status(), StatusCode::NO_CONTENT);
    let impatient = MaintenanceConfig { max_requeues: 0, ..app.config.maintenance.clone() };
    let report = sweep::run(&app.pool, &impatient, Utc::now() + TimeDelta::hours(1)).await.unwrap();
    assert_eq!((report.given_up, report.given_up_unfinished), (1, 1));
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("degraded")));
    assert!(body["details"]["problems"].to_string().contains("sweep: 1 images the sweeper gave up on"), "{body}");

    let refused = app.reprocess_image(&token, &id).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "forbidden");
    for unknown in [Uuid::now_v7().to_string(), deleted.clone()] {
        let missing = app.reprocess_image(&admin, &unknown).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{unknown}");
        assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    }
    let events_before = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    let accepted = app.reprocess_image(&admin, &id).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let body: Value = accepted.json().await.unwrap();
    assert_eq!((body["id"].as_str(), body["thumbnail_status"].as_str()), (Some(id.as_str()), Some("pending")));
    assert_eq!(body["checksum_status"], "pending");
    let event: Uuid = body["event_id"].as_str().unwrap().parse().unwrap();
    let queued: String = sqlx::query_scalar("SELECT event_type FROM outbox WHERE event_id = $1")
        .bind(event)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, "image.uploaded");
    let events = count(&app.pool, "SELECT count(*) FROM outbox WHERE event_type = 'image.uploaded'").await;
    assert_eq!(events, events_before + 1);
    assert_eq!(processing_of(&app.pool, &id).await, ("pending".into(), "pending".into(), 0, false, None));

    let worker = TestWorker::start(&app.config).await;
    eventually(TIMEOUT, "the image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    let report = sweep::run(&app.pool, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!((report.given_up_unfinished, report.status()), (0, HealthStatus::Ok));
    let rows = run_health_check(&app).await;
    for (check_type, status, details) in &rows {
        assert_eq!(status, "ok", "{check_type}: {details}");
    }
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")), "{body}");
    worker.stop().await;
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_the_broker_dead_letters_by_its_delivery_limit_is_reported_and_swept_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let id = app.upload_image(&token, "user", "crashes.jpg", &[]).await;
    let (thumbnails, checksums) =
        (broker.topology.queue(JobQueue::Thumbnails), broker.topology.queue(JobQueue::Checksums));
    broker.wait_for_depth(&thumbnails, 1, TIMEOUT).await;
    broker.wait_for_depth(&checksums, 1, TIMEOUT).await;
    // Both jobs kill (or are rejected by) every consumer that takes them, more often than
    // the delivery limit allows: RabbitMQ moves them to the dead-letter queues itself.
    let dead_queues = [JobQueue::Thumbnails, JobQueue::Checksums].map(|q| broker.topology.dead_letter_queue(q));
    for (queue, dead_queue) in [&thumbnails, &checksums].into_iter().zip(&dead_queues) {
        let deliveries = broker.return_until_dead_lettered(queue, dead_queue, 1).await;
        assert_eq!(deliveries, app.config.rabbitmq.max_attempts + 1, "{queue}");
    }

    // Workers never saw a failure: nothing recorded it, and the image waits.
    let worker = TestWorker::start(&app.config).await;
    let rows = run_health_check(&app).await;
    assert_eq!(processing_of(&app.pool, &id).await, ("pending".into(), "pending".into(), 0, false, None));
    assert_eq!(count(&app.pool, "SELECT count(*) FROM job_failures").await, 0, "no failure hook ran");
    let (status, details) = check(&rows, "broker");
    assert_eq!(status, "degraded");
    for dead_queue in &dead_queues {
        assert!(
            details["problems"].to_string().contains(&format!("1 given-up jobs wait in {dead_queue}")),
            "{details}"
        );
    }
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("degraded")), "{body}");

    // What an operator finds in the dead-letter queues: the broker's reason, none of ours.
    for dead_queue in &dead_queues {
        let dead = broker.take_all(dead_queue).await;
        assert_eq!(dead.len(), 1, "{dead_queue}");
        assert_eq!(dead[0].header("x-first-death-reason").as_deref(), Some("delivery_limit"));
        for header in [headers::ERROR, headers::ATTEMPTS, headers::QUEUE, headers::FAILED_AT] {
            assert_eq!(dead[0].header(header), None, "{header}");
        }
    }

    // Once it has waited `pendingAfterSecs`, the sweeper re-queues it and the workers finish it.
    sqlx::query("UPDATE storage_files SET created_at = now() - interval '1 hour' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    outbox::enqueue(&app.pool, SweepRequested { requested_at: Utc::now() }).await.unwrap();
    eventually(TIMEOUT, "the swept image is processed", || async {
        let view: Value = app.get_image(&token, &id).await.json().await.unwrap();
        view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
    })
    .await;
    let (status, details) = latest_check(&app.pool, "sweep").await;
    assert_eq!(status, "ok");
    assert_eq!((details["requeued_thumbnails"].as_u64(), details["requeued_checksums"].as_u64()), (Some(1), Some(1)));
    let rows = run_health_check(&app).await;
    assert_eq!(check(&rows, "broker").0, "ok", "{}", check(&rows, "broker").1);
    let (status, body) = app.health(Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")), "{body}");
    worker.stop().await;
    broker.delete().await;
    app.stop().await;
}
