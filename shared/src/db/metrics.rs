//! `storage_metrics` (one point per metric, period and labels) and the queries the roll-up
//! computes its points from.
//!
//! Uploads are found by id, not by a timestamp column: image ids are UUIDv7, whose leading
//! 48 bits are the upload's start in Unix milliseconds and which PostgreSQL compares byte by
//! byte, so a period is a range scan of the primary key and the upload path carries no
//! extra index.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One value of a metric over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub labels: Value,
    pub value: f64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

/// Writes points, replacing earlier values of the same (metric, period, labels).
pub async fn upsert(conn: &mut PgConnection, points: &[Point]) -> sqlx::Result<()> {
    for point in points {
        sqlx::query!(
            "INSERT INTO storage_metrics (metric_name, metric_value, labels, period_start, period_end)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (metric_name, period_start, labels)
             DO UPDATE SET metric_value = EXCLUDED.metric_value, period_end = EXCLUDED.period_end, recorded_at = now()",
            point.name,
            point.value,
            point.labels,
            point.period_start,
            point.period_end,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The points of `name` whose period starts in `[from, to)`, oldest first.
pub async fn series(
    db: impl PgExecutor<'_>,
    name: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<Point>> {
    let rows = sqlx::query!(
        "SELECT metric_name, metric_value, labels, period_start, period_end FROM storage_metrics
         WHERE metric_name = $1 AND period_start >= $2 AND period_start < $3
         ORDER BY period_start, labels::text",
        name,
        from,
        to,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Point {
            name: row.metric_name,
            labels: row.labels,
            value: row.metric_value,
            period_start: row.period_start,
            period_end: row.period_end,
        })
        .collect())
}

/// The smallest UUIDv7 of the millisecond `at`: every v7 id made at or after `at` sorts at
/// or above it, every id made before sorts below.
pub fn v7_floor(at: DateTime<Utc>) -> Uuid {
    let millis = at.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70; // version 7
    bytes[8] = 0x80; // RFC 4122 variant
    Uuid::from_bytes(bytes)
}

/// Uploads by image type in `[from, to)`: (type, count, bytes).
pub async fn uploads(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT image_type, count(*) AS "count!", coalesce(sum(file_size), 0)::bigint AS "bytes!"
           FROM storage_files WHERE id >= $1 AND id < $2 GROUP BY image_type ORDER BY image_type"#,
        v7_floor(from),
        v7_floor(to),
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.image_type, row.count, row.bytes)).collect())
}

/// Percentiles 50, 95 and 99 of the time from upload to the last thumbnail, in milliseconds,
/// over the images uploaded in `[from, to)` that have thumbnails; none if there are none.
pub async fn thumbnail_latency_ms(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Option<[f64; 3]>> {
    let row = sqlx::query!(
        r#"SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY latency_ms) AS percentiles
           FROM (SELECT EXTRACT(EPOCH FROM max(t.created_at) - f.created_at)::float8 * 1000 AS latency_ms
                 FROM storage_files f JOIN storage_thumbnails t ON t.image_id = f.id
                 WHERE f.id >= $1 AND f.id < $2 GROUP BY f.id, f.created_at) AS latencies"#,
        v7_floor(from),
        v7_floor(to),
    )
    .fetch_one(db)
    .await?;
    Ok(row.percentiles.and_then(|p| <[f64; 3]>::try_from(p).ok()))
}

/// Failed job attempts in `[from, to)` by queue and whether they were final.
pub async fn job_failures(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, bool, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT queue, final, count(*) AS "count!" FROM job_failures
           WHERE failed_at >= $1 AND failed_at < $2 GROUP BY queue, final ORDER BY queue, final"#,
        from,
        to,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.queue, row.r#final, row.count)).collect())
}

/// The deepest each job queue and its dead-letter queue were in the health checks of
/// `[from, to)`: (job, messages, dead letters).
pub async fn queue_depths(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT q->>'job' AS "job!",
                  max((q->>'messages')::bigint) AS "messages!",
                  max((q->>'dead_letters')::bigint) AS "dead_letters!"
           FROM storage_health_checks h, jsonb_array_elements(h.details->'queues') AS q
           WHERE h.check_type = 'broker' AND h.checked_at >= $1 AND h.checked_at < $2 AND q ? 'job'
           GROUP BY 1 ORDER BY 1"#,
        from,
        to,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|row| (row.job, row.messages, row.dead_letters)).collect())
}

/// Records one failed job attempt (`final` when it was given up).
pub async fn record_job_failure(
    db: impl PgExecutor<'_>,
    queue: &str,
    event_type: &str,
    message_id: Option<&str>,
    attempt: u32,
    last: bool,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO job_failures (queue, event_type, message_id, attempt, final, error) VALUES ($1, $2, $3, $4, $5, $6)",
        queue,
        event_type,
        message_id,
        i32::try_from(attempt).unwrap_or(i32::MAX),
        last,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_v7_floor_brackets_the_ids_of_its_millisecond() {
        let at = Utc.timestamp_millis_opt(1_790_000_000_123).unwrap();
        let floor = v7_floor(at);
        assert_eq!(floor.get_version_num(), 7);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_790_000_000, 123_000_000);
        for _ in 0..100 {
            let id = Uuid::new_v7(ts);
            assert!(floor <= id && id < v7_floor(at + chrono::TimeDelta::milliseconds(1)), "{id}");
        }
        assert!(Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_790_000_000, 122_000_000)) < floor);
    }
}
