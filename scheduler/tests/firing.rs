//! Firing slots against a real PostgreSQL with a controlled clock: each slot fires once
//! even with two schedulers racing, missed slots fire once within the catch-up window and
//! are coalesced, and a disabled job never fires.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use scheduler::{ScheduledJob, fire_due, jobs};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const DAY: Duration = Duration::from_secs(86_400);

fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, h, m, 0).unwrap()
}

/// A test configuration with every job but the backup disabled (an empty schedule).
fn backups_only() -> shared::config::Config {
    let mut config = shared::test_support::config();
    config.storage.retention_policy.cleanup_schedule = String::new();
    let scheduler = &mut config.scheduler;
    for schedule in [
        &mut scheduler.health_check,
        &mut scheduler.metrics_rollup,
        &mut scheduler.sweep,
        &mut scheduler.signed_url_cleanup,
        &mut scheduler.file_audit,
        &mut scheduler.backup_verify,
    ] {
        schedule.clear();
    }
    config
}

/// The job table of a configuration whose backups run on `schedule`, and nothing else.
fn backup_on(schedule: &str) -> Vec<ScheduledJob> {
    let mut config = backups_only();
    config.storage.backup_policy.schedule = schedule.to_owned();
    jobs(&config).unwrap()
}

/// Rows of `scheduled_runs`, `storage_backups` and `backup.requested` outbox events.
async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    let count = |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap() };
    (
        count("SELECT count(*) FROM scheduled_runs").await,
        count("SELECT count(*) FROM storage_backups").await,
        count("SELECT count(*) FROM outbox WHERE event_type = 'backup.requested'").await,
    )
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_schedulers_racing_fire_each_slot_exactly_once(pool: PgPool) {
    shared::test_support::init_logging();
    // A second scheduler: its own pool, so the two transactions really race in PostgreSQL.
    let other = PgPoolOptions::new().max_connections(2).connect_with((*pool.connect_options()).clone()).await.unwrap();
    let jobs = backup_on("* * * * *");
    let slots = 40;
    let mut wins = (0, 0);
    for minute in 0..slots {
        let now = at(4, 10, 0) + TimeDelta::minutes(minute) + TimeDelta::seconds(17);
        let (first, second) =
            tokio::join!(fire_due(&pool, &jobs, now, DAY, "replica-a"), fire_due(&other, &jobs, now, DAY, "replica-b"));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.len() + second.len(), 1, "slot {minute}: {first:?} {second:?}");
        let fired = first.first().or(second.first()).unwrap();
        assert_eq!(fired.slot, now - TimeDelta::seconds(17), "the slot is the whole minute");
        wins.0 += first.len();
        wins.1 += second.len();
        // Ticking again at the same time fires nothing more.
        assert!(fire_due(&other, &jobs, now, DAY, "replica-b").await.unwrap().is_empty());
    }
    eprintln!("slots fired by replica a: {}, by replica b: {}", wins.0, wins.1);
    assert_eq!(counts(&pool).await, (slots, slots, slots), "one run, one backup, one event per slot");

    // Each run names its backup, whose event is in the outbox, requested by the scheduler.
    let linked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduled_runs r
         JOIN storage_backups b ON b.id = r.event_id AND b.trigger = 'scheduled' AND b.created_at = r.slot
         JOIN outbox o ON o.event_type = 'backup.requested' AND o.payload->'payload'->>'backup_id' = b.id::text
         WHERE r.job = 'backup' AND r.fired_by IN ('replica-a', 'replica-b')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(linked, slots);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_slot_missed_while_down_fires_once_on_start_within_the_window(pool: PgPool) {
    shared::test_support::init_logging();
    let jobs = backup_on("0 2 * * *");
    // Started two hours after the 02:00 slot, with a one-day window: it fires, once.
    let fired = fire_due(&pool, &jobs, at(4, 4, 0), DAY, "replica-a").await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].job, fired[0].slot), ("backup", at(4, 2, 0)));
    assert!(fire_due(&pool, &jobs, at(4, 4, 1), DAY, "replica-b").await.unwrap().is_empty());
    let backup_date: chrono::NaiveDate =
        sqlx::query_scalar("SELECT backup_date FROM storage_backups").fetch_one(&pool).await.unwrap();
    assert_eq!(backup_date, at(4, 2, 0).date_naive(), "the backup is filed under its slot's day");

    // The next day's slot, two hours old but with a one-hour window: too old, never fired.
    let hour = Duration::from_secs(3600);
    assert!(fire_due(&pool, &jobs, at(5, 4, 0), hour, "replica-a").await.unwrap().is_empty());
    assert_eq!(counts(&pool).await, (1, 1, 1));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_scheduler_down_for_three_days_fires_one_backup_not_three(pool: PgPool) {
    shared::test_support::init_logging();
    let jobs = backup_on("0 2 * * *");
    assert_eq!(fire_due(&pool, &jobs, at(1, 2, 0), DAY, "replica-a").await.unwrap().len(), 1);
    // Down from the 1st until the 4th at noon, with a week's window: the slots of the 2nd,
    // 3rd and 4th are coalesced into the 4th's.
    let fired = fire_due(&pool, &jobs, at(4, 12, 0), 7 * DAY, "replica-a").await.unwrap();
    assert_eq!(fired.iter().map(|f| f.slot).collect::<Vec<_>>(), [at(4, 2, 0)]);
    assert_eq!(counts(&pool).await, (2, 2, 2));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_disabled_job_never_fires(pool: PgPool) {
    shared::test_support::init_logging();
    let mut config = backups_only();
    config.storage.backup_policy.enabled = false;
    config.storage.backup_policy.schedule = "* * * * *".to_owned();
    let jobs = jobs(&config).unwrap();
    assert!(jobs.is_empty());
    for minute in 0..10 {
        let now = at(4, 10, 0) + TimeDelta::minutes(minute);
        assert!(fire_due(&pool, &jobs, now, DAY, "replica-a").await.unwrap().is_empty());
    }
    assert_eq!(counts(&pool).await, (0, 0, 0));
}
