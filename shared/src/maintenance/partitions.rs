//! The monthly partitions of the access log (migration 0021), kept by the purge: the
//! current month and `accessLog.partitionsAhead` more exist, and a month whose every row is
//! older than `accessLog.retentionDays` is dropped whole. A row is thus kept between
//! `retentionDays` and `retentionDays` plus a month.
//!
//! Each partition is made or dropped in its own short transaction under an advisory lock,
//! after checking again that it is still to do, so two workers purging at once do each
//! thing once. Lock waits end after `accessLog.partitionLockTimeoutMs`: the purge then
//! fails and is retried rather than hold up the access log writer behind a long reader.

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::MaintenanceError;
use crate::config::AccessLogConfig;
use crate::db::partitions;

/// Prefix of a monthly partition's name: `storage_access_logs_y2026m01`.
const PREFIX: &str = "storage_access_logs_y";

/// A calendar month in UTC, the span of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    /// 1 to 12.
    month: u32,
}

impl Month {
    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self { year: at.year(), month: at.month() }
    }

    /// The month `months` after this one.
    pub fn plus(self, months: u32) -> Self {
        let index = i64::from(self.year) * 12 + i64::from(self.month - 1) + i64::from(months);
        Self { year: index.div_euclid(12) as i32, month: index.rem_euclid(12) as u32 + 1 }
    }

    /// Its first instant: the partition's lower bound (included).
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().expect("the first of a month exists")
    }

    /// The first instant of the next month: the partition's upper bound (excluded).
    pub fn end(self) -> DateTime<Utc> {
        self.plus(1).start()
    }

    /// The name of its partition.
    pub fn partition_name(self) -> String {
        format!("{PREFIX}{:04}m{:02}", self.year, self.month)
    }

    /// The month of a partition named by [`Month::partition_name`]; none for any other name
    /// (the default partition).
    pub fn from_partition_name(name: &str) -> Option<Self> {
        let (year, month) = name.strip_prefix(PREFIX)?.split_once('m')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || month.len() != 2 || !all_digits(year) || !all_digits(month) {
            return None;
        }
        let month = Self { year: year.parse().ok()?, month: month.parse().ok()? };
        (1..=12).contains(&month.month).then_some(month)
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Partitions made, by name.
    pub created: Vec<String>,
    /// Partitions dropped with their rows, by name.
    pub dropped: Vec<String>,
    /// Rows moved from the default partition into a partition made for their month.
    pub moved_rows: u64,
    /// Rows left in the default partition; any means the job has not run for months or a
    /// row came with a time outside the months kept.
    pub default_rows: i64,
}

/// Makes the partitions due and drops those past the retention, as of `now`.
pub async fn run(
    db: &PgPool,
    config: &AccessLogConfig,
    now: DateTime<Utc>,
) -> Result<PartitionReport, MaintenanceError> {
    let mut report = PartitionReport::default();
    let current = Month::of(now);
    for month in (0..=config.partitions_ahead).map(|ahead| current.plus(ahead)) {
        if let Some(moved) = create_if_missing(db, month, config.partition_lock_timeout_ms).await? {
            report.created.push(month.partition_name());
            report.moved_rows += moved;
        }
    }
    let cutoff = now - TimeDelta::days(i64::from(config.retention_days));
    for name in partitions::list(db).await? {
        let Some(month) = Month::from_partition_name(&name) else { continue };
        if month.end() <= cutoff && drop_if_present(db, &name, config.partition_lock_timeout_ms).await? {
            report.dropped.push(name);
        }
    }
    report.default_rows = partitions::default_rows(db).await?;
    if report.default_rows > 0 {
        tracing::warn!(
            partitions.default_rows = report.default_rows,
            "{} access log rows wait in {}, outside any monthly partition",
            report.default_rows,
            partitions::DEFAULT_PARTITION
        );
    }
    tracing::info!(
        partitions.created = ?report.created,
        partitions.dropped = ?report.dropped,
        partitions.moved_rows = report.moved_rows,
        "access log partitions kept"
    );
    Ok(report)
}

/// Makes the partition of `month` unless it exists; the rows moved into it, or none if it
/// existed.
async fn create_if_missing(db: &PgPool, month: Month, lock_timeout_ms: u64) -> sqlx::Result<Option<u64>> {
    let name = month.partition_name();
    if partitions::exists(db, &name).await? {
        return Ok(None); // the usual case, without a lock
    }
    let mut tx = db.begin().await?;
    partitions::lock(&mut tx, lock_timeout_ms).await?;
    if partitions::exists(&mut *tx, &name).await? {
        return Ok(None); // another run made it meanwhile
    }
    let moved = partitions::create(&mut tx, &name, month.start(), month.end()).await?;
    tx.commit().await?;
    Ok(Some(moved))
}

/// Drops partition `name` unless it is gone already; whether this call dropped it.
async fn drop_if_present(db: &PgPool, name: &str, lock_timeout_ms: u64) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    partitions::lock(&mut tx, lock_timeout_ms).await?;
    if !partitions::exists(&mut *tx, name).await? {
        return Ok(false); // another run dropped it meanwhile
    }
    partitions::drop_partition(&mut tx, name).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn months_follow_the_calendar_across_years() {
        let december = Month::of(at(2026, 12, 31));
        assert_eq!(december.plus(1), Month::of(at(2027, 1, 1)));
        assert_eq!(december.plus(14), Month::of(at(2028, 2, 1)));
        assert_eq!(december.start(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(december.end(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn partition_names_round_trip_and_other_names_are_not_months() {
        let month = Month::of(at(2026, 3, 5));
        assert_eq!(month.partition_name(), "storage_access_logs_y2026m03");
        assert_eq!(Month::from_partition_name(&month.partition_name()), Some(month));
        for name in [
            "storage_access_logs_default",
            "storage_access_logs_y2026m13",
            "storage_access_logs_y2026m3",
            "storage_access_logs_y26m03",
            "storage_access_logs_y2026m0a",
            "storage_access_logs_y+026m03",
        ] {
            assert_eq!(Month::from_partition_name(name), None, "{name}");
        }
    }
}
