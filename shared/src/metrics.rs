//! The metrics roll-up: recent periods summed into `storage_metrics` points that the stats
//! endpoint charts. Every run recomputes the last `metrics.recomputePeriods` periods and
//! overwrites their points, so a late thumbnail, a duplicate job or a missed run all end in
//! the same numbers.
//!
//! Metrics (labels in brackets): `uploads` and `upload_bytes` (total, and per
//! `image_type`), `thumbnail_latency_ms` (`quantile` p50/p95/p99, over the images uploaded
//! in the period), `job_failures` (total, and per `queue` and `final`), `queue_depth` and
//! `dead_letters` (per `queue`, the deepest a health check saw in the period).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::MetricsConfig;
use crate::db::metrics::{self, Point};

/// The metric names, for validating what a client asks to chart.
pub const METRICS: [&str; 6] =
    ["uploads", "upload_bytes", "thumbnail_latency_ms", "job_failures", "queue_depth", "dead_letters"];

/// The `count` periods of `period_secs` that ended last at or before `until`, oldest first.
pub fn periods(until: DateTime<Utc>, period_secs: u64, count: u32) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let period = period_secs as i64;
    let end = until.timestamp().div_euclid(period) * period;
    (1..=i64::from(count))
        .rev()
        .filter_map(|n| {
            let start = DateTime::from_timestamp(end - n * period, 0)?;
            Some((start, start + TimeDelta::seconds(period)))
        })
        .collect()
}

/// Recomputes the periods ending at or before `until`; returns the points written.
pub async fn rollup(db: &PgPool, config: &MetricsConfig, until: DateTime<Utc>) -> sqlx::Result<usize> {
    let mut points = Vec::new();
    for (start, end) in periods(until, config.period_secs, config.recompute_periods) {
        let point = |name: &str, labels: Value, value: f64| Point {
            name: name.to_owned(),
            labels,
            value,
            period_start: start,
            period_end: end,
        };
        let uploads = metrics::uploads(db, start, end).await?;
        let (count, bytes) = uploads.iter().fold((0, 0), |(c, b), (_, count, bytes)| (c + count, b + bytes));
        points.push(point("uploads", json!({}), count as f64));
        points.push(point("upload_bytes", json!({}), bytes as f64));
        for (image_type, count, bytes) in uploads {
            points.push(point("uploads", json!({ "image_type": image_type }), count as f64));
            points.push(point("upload_bytes", json!({ "image_type": image_type }), bytes as f64));
        }
        if let Some(percentiles) = metrics::thumbnail_latency_ms(db, start, end).await? {
            for (quantile, value) in ["p50", "p95", "p99"].into_iter().zip(percentiles) {
                points.push(point("thumbnail_latency_ms", json!({ "quantile": quantile }), value.round()));
            }
        }
        let failures = metrics::job_failures(db, start, end).await?;
        points.push(point("job_failures", json!({}), failures.iter().map(|(_, _, n)| *n).sum::<i64>() as f64));
        for (queue, last, count) in failures {
            points.push(point("job_failures", json!({ "queue": queue, "final": last }), count as f64));
        }
        for (queue, messages, dead) in metrics::queue_depths(db, start, end).await? {
            points.push(point("queue_depth", json!({ "queue": queue }), messages as f64));
            points.push(point("dead_letters", json!({ "queue": queue }), dead as f64));
        }
    }
    let mut tx = db.begin().await?;
    metrics::upsert(&mut tx, &points).await?;
    tx.commit().await?;
    Ok(points.len())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn periods_are_whole_aligned_and_end_before_the_slot() {
        let until = Utc.with_ymd_and_hms(2026, 11, 28, 10, 7, 30).unwrap();
        let periods = periods(until, 300, 3);
        let at = |h, m| Utc.with_ymd_and_hms(2026, 11, 28, h, m, 0).unwrap();
        assert_eq!(periods, [(at(9, 50), at(9, 55)), (at(9, 55), at(10, 0)), (at(10, 0), at(10, 5))]);
    }
}
