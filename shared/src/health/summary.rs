//! How the latest check results add up to one answer for `GET /storage/health`.

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::HealthConfig;
use crate::db::health_checks::CheckRow;
use crate::model::HealthStatus;

/// The check types a `health_check.requested` run writes; the newest of them dates the last run.
pub const RUN_CHECKS: [&str; 7] = ["database", "broker", "store", "disk", "outbox", "backup", "integrity"];

/// Results older than this no longer count: every check type is written at least daily
/// (file audits), so an older row belongs to a job no longer run.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(48);

/// The overall status and why.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The worst status of the results that count, `degraded` if the checks are stale.
    pub status: HealthStatus,
    /// When the health checks last ran.
    pub last_run: Option<DateTime<Utc>>,
    /// Every problem of the results that count, prefixed with its check type.
    pub problems: Vec<String>,
    /// The results that count, by check type.
    pub checks: Vec<CheckRow>,
}

/// Sums up the latest result of every check type as of `now`.
pub fn summarize(latest: Vec<CheckRow>, now: DateTime<Utc>, config: &HealthConfig) -> Summary {
    let checks: Vec<CheckRow> = latest.into_iter().filter(|row| now - row.checked_at <= FORGET_AFTER).collect();
    let last_run =
        checks.iter().filter(|row| RUN_CHECKS.contains(&row.check_type.as_str())).map(|r| r.checked_at).max();
    let mut status = checks.iter().map(|row| row.status).max().unwrap_or(HealthStatus::Ok);
    let mut problems = Vec::new();
    match last_run {
        None => problems.push("no health check has run yet: are the scheduler and a worker running?".to_owned()),
        Some(at) if (now - at).num_seconds() > config.stale_after_secs as i64 => {
            let age = (now - at).num_seconds();
            problems.push(format!("the latest health check ran {age} s ago: are the scheduler and a worker running?"));
        }
        Some(_) => {}
    }
    if !problems.is_empty() {
        status = status.max(HealthStatus::Degraded);
    }
    for row in &checks {
        let listed = row.details.get("problems").and_then(|p| p.as_array()).into_iter().flatten();
        problems.extend(listed.filter_map(|p| p.as_str()).map(|p| format!("{}: {p}", row.check_type)));
        if row.status != HealthStatus::Ok && row.details.get("problems").is_none() {
            problems.push(format!("{}: {}", row.check_type, row.status.as_str()));
        }
    }
    Summary { status, last_run, problems, checks }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(check_type: &str, status: HealthStatus, age_secs: i64, now: DateTime<Utc>) -> CheckRow {
        let problems = if status == HealthStatus::Ok { json!([]) } else { json!([format!("{check_type} trouble")]) };
        CheckRow {
            check_type: check_type.to_owned(),
            status,
            details: json!({ "problems": problems }),
            checked_at: now - TimeDelta::seconds(age_secs),
        }
    }

    #[test]
    fn fresh_healthy_checks_are_ok() {
        let now = Utc::now();
        let rows = RUN_CHECKS.iter().map(|t| row(t, HealthStatus::Ok, 30, now)).collect();
        let summary = summarize(rows, now, &HealthConfig::default());
        assert_eq!(summary.status, HealthStatus::Ok);
        assert!(summary.problems.is_empty(), "{:?}", summary.problems);
        assert_eq!(summary.last_run, Some(now - TimeDelta::seconds(30)));
    }

    #[test]
    fn the_worst_check_wins_and_says_why() {
        let now = Utc::now();
        let rows = vec![
            row("database", HealthStatus::Ok, 10, now),
            row("backup", HealthStatus::Degraded, 10, now),
            row("disk", HealthStatus::Down, 10, now),
        ];
        let summary = summarize(rows, now, &HealthConfig::default());
        assert_eq!(summary.status, HealthStatus::Down);
        assert_eq!(summary.problems, ["backup: backup trouble", "disk: disk trouble"]);
    }

    #[test]
    fn missing_or_stale_checks_are_degraded() {
        let now = Utc::now();
        let none = summarize(Vec::new(), now, &HealthConfig::default());
        assert_eq!(none.status, HealthStatus::Degraded);
        assert!(none.problems[0].contains("no health check has run yet"));

        let stale = summarize(vec![row("database", HealthStatus::Ok, 600, now)], now, &HealthConfig::default());
        assert_eq!(stale.status, HealthStatus::Degraded);
        assert!(stale.problems[0].contains("ran 600 s ago"), "{:?}", stale.problems);
    }

    #[test]
    fn the_latest_run_is_stale_only_past_the_configured_age() {
        let now = Utc::now();
        let config = HealthConfig { stale_after_secs: 120, ..HealthConfig::default() };
        let at = |age: i64| summarize(vec![row("database", HealthStatus::Ok, age, now)], now, &config);
        assert_eq!(at(120).status, HealthStatus::Ok, "exactly the limit");
        assert_eq!(at(121).status, HealthStatus::Degraded);
    }

    #[test]
    fn a_maintenance_report_counts_but_does_not_date_the_last_run() {
        let now = Utc::now();
        let mut rows: Vec<CheckRow> = RUN_CHECKS.iter().map(|t| row(t, HealthStatus::Ok, 600, now)).collect();
        rows.push(row("sweep", HealthStatus::Degraded, 10, now));
        let summary = summarize(rows, now, &HealthConfig::default());
        assert_eq!(summary.last_run, Some(now - TimeDelta::seconds(600)), "a fresh sweep is no health check");
        assert_eq!(summary.status, HealthStatus::Degraded);
        assert!(summary.problems.contains(&"sweep: sweep trouble".to_owned()), "{:?}", summary.problems);
    }

    #[test]
    fn results_of_jobs_no_longer_run_are_forgotten() {
        let now = Utc::now();
        let rows =
            vec![row("database", HealthStatus::Ok, 10, now), row("files", HealthStatus::Degraded, 3 * 86_400, now)];
        let summary = summarize(rows, now, &HealthConfig::default());
        assert_eq!(summary.status, HealthStatus::Ok);
        assert_eq!(summary.checks.len(), 1);
    }
}
