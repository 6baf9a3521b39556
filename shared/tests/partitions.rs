//! The access log's monthly partitions (migration 0021) and their upkeep by the purge:
//! rows land in their month, the months ahead are made, whole months past the retention are
//! dropped, a lock held by a reader makes the job give up after its timeout, and two runs at
//! once do each thing once.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use shared::config::AccessLogConfig;
use shared::db::access_logs::{self, AbuseLimits, AccessRecord};
use shared::db::partitions::{self, DEFAULT_PARTITION};
use shared::maintenance::MaintenanceError;
use shared::maintenance::partitions::{Month, run};
use sqlx::PgPool;
use uuid::Uuid;

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

fn config(retention_days: u32, partitions_ahead: u32) -> AccessLogConfig {
    AccessLogConfig { retention_days, partitions_ahead, ..AccessLogConfig::default() }
}

fn record(image: Uuid, at: DateTime<Utc>) -> AccessRecord {
    AccessRecord {
        image_id: Some(image),
        actor_id: None,
        action: "serve_file",
        ip: None,
        user_agent: Some("test".to_owned()),
        status: 200,
        bytes_sent: 10,
        at,
        counts_as_access: false,
        signed_url: None,
    }
}

async fn write(pool: &PgPool, records: &[AccessRecord]) {
    let mut tx = pool.begin().await.unwrap();
    access_logs::write_batch(&mut tx, records, AbuseLimits { max_uses: 1000, max_addresses: 20 }).await.unwrap();
    tx.commit().await.unwrap();
}

/// The partition holding each row of `image`, oldest row first.
async fn homes(pool: &PgPool, image: Uuid) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT created_at, tableoid::regclass::text FROM storage_access_logs WHERE image_id = $1
         ORDER BY created_at",
    )
    .bind(image)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn names(months: &[(i32, u32)]) -> Vec<String> {
    months.iter().map(|&(y, m)| Month::of(at(y, m, 1, 0, 0, 0)).partition_name()).collect()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_fresh_database_has_this_month_and_the_next_and_the_writer_fills_them(pool: PgPool) {
    let now = Utc::now();
    let (this, next) = (Month::of(now), Month::of(now).plus(1));
    let listed = partitions::list(&pool).await.unwrap();
    assert_eq!(listed, [DEFAULT_PARTITION.to_owned(), this.partition_name(), next.partition_name()]);

    let image = Uuid::now_v7();
    let last_of_this = next.start() - chrono::TimeDelta::seconds(1);
    write(&pool, &[record(image, this.start()), record(image, last_of_this), record(image, next.start())]).await;

    let expected = [
        (this.start(), this.partition_name()),
        (last_of_this, this.partition_name()),
        (next.start(), next.partition_name()),
    ];
    assert_eq!(homes(&pool, image).await, expected, "each row lies in its month, the bounds included");
    // Readers go through the parent and see both months, newest first through the index.
    let read: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT created_at FROM storage_access_logs WHERE image_id = $1 ORDER BY created_at DESC")
            .bind(image)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(read, [next.start(), last_of_this, this.start()]);
    assert_eq!(partitions::default_rows(&pool).await.unwrap(), 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_job_makes_the_months_ahead_and_moves_their_rows_out_of_the_default_partition(pool: PgPool) {
    let image = Uuid::now_v7();
    // Rows of months without a partition yet wait in the default partition.
    let early = at(2020, 2, 10, 8, 0, 0);
    let far = at(2035, 6, 1, 0, 0, 0);
    write(&pool, &[record(image, early), record(image, far)]).await;
    assert_eq!(partitions::default_rows(&pool).await.unwrap(), 2);
    let id_before: i64 = sqlx::query_scalar("SELECT id FROM storage_access_logs WHERE created_at = $1")
        .bind(early)
        .fetch_one(&pool)
        .await
        .unwrap();

    let report = run(&pool, &config(90, 3), at(2019, 11, 15, 12, 0, 0)).await.unwrap();

    assert_eq!(report.created, names(&[(2019, 11), (2019, 12), (2020, 1), (2020, 2)]));
    assert_eq!(report.moved_rows, 1);
    assert_eq!(report.default_rows, 1, "a row beyond the months kept stays, and is reported");
    assert!(report.dropped.is_empty());
    assert_eq!(homes(&pool, image).await, [(early, names(&[(2020, 2)])[0].clone()), (far, DEFAULT_PARTITION.into())]);
    let id_after: i64 = sqlx::query_scalar("SELECT id FROM storage_access_logs WHERE created_at = $1")
        .bind(early)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(id_after, id_before, "a moved row keeps its id");

    let again = run(&pool, &config(90, 3), at(2019, 11, 15, 12, 0, 0)).await.unwrap();
    assert!(again.created.is_empty() && again.dropped.is_empty() && again.moved_rows == 0, "{again:?}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn months_wholly_past_the_retention_are_dropped_and_the_rest_kept_to_the_second(pool: PgPool) {
    run(&pool, &config(90, 4), at(2019, 11, 15, 12, 0, 0)).await.unwrap(); // 2019-11 to 2020-03
    let image = Uuid::now_v7();
    let rows = [
        at(2019, 11, 20, 0, 0, 0),
        at(2019, 12, 31, 23, 59, 59), // the last second wholly past the retention
        at(2020, 1, 1, 0, 0, 0),      // exactly as old as the retention: kept
        at(2020, 2, 14, 9, 0, 0),
        at(2020, 3, 1, 0, 0, 0),
    ];
    write(&pool, &rows.map(|at| record(image, at))).await;

    // 60 days before 2020-03-01 (a leap year) is 2020-01-01: December ends at the cutoff.
    let now = at(2020, 3, 1, 0, 0, 0);
    let report = run(&pool, &config(60, 2), now).await.unwrap();

    assert_eq!(report.dropped, names(&[(2019, 11), (2019, 12)]));
    assert_eq!(report.created, names(&[(2020, 4), (2020, 5)]));
    let kept: Vec<DateTime<Utc>> = homes(&pool, image).await.into_iter().map(|(at, _)| at).collect();
    assert_eq!(kept, rows[2..], "rows of kept months are untouched");
    let listed = partitions::list(&pool).await.unwrap();
    for name in names(&[(2020, 1), (2020, 2), (2020, 3), (2020, 4), (2020, 5)]) {
        assert!(listed.contains(&name), "{name} in {listed:?}");
    }
    assert!(!listed.iter().any(|name| name.starts_with("storage_access_logs_y2019")), "{listed:?}");
    // Dropped tables are gone, not detached and left behind.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'storage_access_logs_y2019%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_runs_at_once_make_and_drop_each_month_once(pool: PgPool) {
    run(&pool, &config(90, 5), at(2019, 9, 1, 0, 0, 0)).await.unwrap(); // 2019-09 to 2020-02
    let now = at(2020, 2, 10, 0, 0, 0);
    let config = config(31, 6);
    let (first, second) = tokio::join!(run(&pool, &config, now), run(&pool, &config, now));
    let (first, second) = (first.unwrap(), second.unwrap());

    let mut created = [first.created, second.created].concat();
    created.sort();
    assert_eq!(created, names(&[(2020, 3), (2020, 4), (2020, 5), (2020, 6), (2020, 7), (2020, 8)]));
    let mut dropped = [first.dropped, second.dropped].concat();
    dropped.sort();
    assert_eq!(dropped, names(&[(2019, 9), (2019, 10), (2019, 11), (2019, 12)]));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_reader_holding_the_log_makes_the_job_give_up_after_its_lock_timeout(pool: PgPool) {
    run(&pool, &config(90, 2), at(2019, 11, 15, 12, 0, 0)).await.unwrap();
    let config = AccessLogConfig { partition_lock_timeout_ms: 100, ..config(30, 2) };
    let now = at(2020, 3, 1, 0, 0, 0);
    // A long report over the whole log: its lock on every partition lasts until it commits.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM storage_access_logs").execute(&mut *reader).await.unwrap();

    let started = Instant::now();
    let error = run(&pool, &config, now).await.unwrap_err();
    let waited = started.elapsed();
    let MaintenanceError::Db(sqlx::Error::Database(error)) = error else { panic!("{error:?}") };
    assert_eq!(error.code().as_deref(), Some("55P03"), "lock_not_available: {error}");
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
    assert!(partitions::list(&pool).await.unwrap().contains(&names(&[(2019, 11)])[0]), "nothing dropped");
    // Meanwhile the log is still written.
    write(&pool, &[record(Uuid::now_v7(), Utc::now())]).await;

    reader.commit().await.unwrap();
    let report = run(&pool, &config, now).await.unwrap();
    assert_eq!(report.dropped, names(&[(2019, 11), (2019, 12)]));
}
