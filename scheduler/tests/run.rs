//! The scheduler through its library entry point, against the real PostgreSQL and RabbitMQ:
//! two replicas started at once fire the due slot once, their relays publish the job, and
//! both stop promptly when cancelled; the binary stops on SIGTERM.

use std::time::Duration;

use secrecy::SecretString;
use shared::test_support::{TopologyCleanup, database_url, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Waits until a scheduled backup has been fired and its event published by a relay.
async fn backup_published(pool: &PgPool) {
    eventually(Duration::from_secs(30), "the scheduled backup is fired and published", || async {
        let published: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE event_type = 'backup.requested' AND published_at IS NOT NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        published >= 1
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_replicas_fire_the_due_slot_once_relay_it_and_stop_on_shutdown(pool: PgPool) {
    shared::test_support::init_logging();
    let mut config = shared::test_support::config();
    config.database.url = SecretString::from(database_url(&pool).await);
    // Every minute: the latest slot is under a minute old, so it is due at start-up.
    config.storage.backup_policy.schedule = "* * * * *".to_owned();
    config.storage.retention_policy.cleanup_schedule = String::new();
    config.scheduler.health_check.clear();
    config.scheduler.metrics_rollup.clear();
    (config.scheduler.sweep, config.scheduler.signed_url_cleanup, config.scheduler.file_audit) = Default::default();
    config.scheduler.backup_verify.clear();
    let _topology = TopologyCleanup::new(&config.rabbitmq);

    let shutdown = CancellationToken::new();
    let replicas = [
        tokio::spawn(scheduler::run(config.clone(), shutdown.clone())),
        tokio::spawn(scheduler::run(config.clone(), shutdown.clone())),
    ];

    backup_published(&pool).await;
    // Both replicas have ticked by now; a minute boundary crossed meanwhile adds a slot, never
    // a second backup for one slot.
    let (runs, backups, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM scheduled_runs), (SELECT count(*) FROM storage_backups),
                (SELECT count(*) FROM outbox WHERE event_type = 'backup.requested')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((1..=2).contains(&runs), "{runs} runs");
    assert_eq!((backups, events), (runs, runs));
    let fired_by: String =
        sqlx::query_scalar("SELECT fired_by FROM scheduled_runs LIMIT 1").fetch_one(&pool).await.unwrap();
    assert!(fired_by.ends_with(&format!(":{}", std::process::id())), "{fired_by}");

    shutdown.cancel();
    for replica in replicas {
        let stopped = tokio::time::timeout(Duration::from_secs(5), replica).await;
        stopped.expect("the scheduler stops within 5 s").expect("no panic").expect("a clean exit");
    }
}

/// The `stayler-scheduler` binary itself: configured from the environment alone, it fires
/// and relays the due backup, and exits 0 promptly on SIGTERM (what an orchestrator sends).
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_binary_fires_its_jobs_and_exits_cleanly_on_sigterm(pool: PgPool) {
    use secrecy::ExposeSecret;
    let config = shared::test_support::config();
    let _topology = TopologyCleanup::new(&config.rabbitmq);
    let mut scheduler = std::process::Command::new(env!("CARGO_BIN_EXE_stayler-scheduler"))
        .env_clear()
        .envs([
            ("STAYLER_DATABASE__URL", database_url(&pool).await.as_str()),
            ("STAYLER_DATABASE__MIGRATE", "false"),
            ("STAYLER_RABBITMQ__URL", config.rabbitmq.url.expose_secret()),
            ("STAYLER_RABBITMQ__PREFIX", config.rabbitmq.prefix.as_str()),
            // The test's delays, so that its cleanup knows every delay queue it declares.
            ("STAYLER_RABBITMQ__RETRY_DELAYS_SECS", &format!("{:?}", config.rabbitmq.retry_delays_secs)),
            ("STAYLER_STORAGE__SIGNED_URL_KEY", "dev-test"),
            ("STAYLER_AUTH__JWT_SECRET", "dev-test"),
            ("STAYLER_STORAGE__BACKUP_POLICY__SCHEDULE", "* * * * *"),
            ("RUST_LOG", "info"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting stayler-scheduler");

    backup_published(&pool).await;

    let pid = scheduler.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = scheduler.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            scheduler.kill().unwrap();
            panic!("the scheduler did not stop within 10 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the scheduler exits cleanly on SIGTERM: {status}");
}
