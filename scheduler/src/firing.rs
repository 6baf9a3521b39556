//! Firing slots: which slot of a job is due at a given time, the transaction that fires it
//! once however many schedulers run, and how long to sleep until the next one.
//!
//! One rule serves normal operation and catch-up alike: at every tick, each job's latest
//! slot at or before now is due if it is at most the catch-up window old. Slots missed
//! before it are coalesced into it: a scheduler that was down for three days fires one
//! daily backup when it starts, not three, since one backup takes every image the missed
//! ones would have taken.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use shared::db::scheduled_runs;
use shared::observability::names;
use shared::schedule::CronSchedule;
use sqlx::PgPool;
use uuid::Uuid;

use shared::periodic::PeriodicJob;

use crate::jobs::ScheduledJob;

/// A slot this scheduler fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub job: &'static str,
    pub slot: DateTime<Utc>,
    /// What the run recorded in `scheduled_runs.event_id` (for a backup, its id).
    pub event_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
#[error("firing {job} for the slot {slot}: {source}")]
pub struct FireError {
    pub job: &'static str,
    pub slot: DateTime<Utc>,
    #[source]
    pub source: sqlx::Error,
}

/// The slot of `schedule` due at `now`: its latest slot at or before `now`, unless that is
/// more than `window` old.
pub fn due_slot(schedule: &CronSchedule, now: DateTime<Utc>, window: Duration) -> Option<DateTime<Utc>> {
    let slot = schedule.latest_at_or_before(now)?;
    // A window too large for the calendar has no lower bound.
    let oldest = TimeDelta::from_std(window).ok().and_then(|window| now.checked_sub_signed(window));
    match oldest {
        Some(oldest) if slot < oldest => None,
        _ => Some(slot),
    }
}

/// How long to sleep after a tick at `now`: until the earliest next slot of any job, and
/// never more than `cap`, so that a wall clock that jumped (or a machine that was
/// suspended) is noticed within `cap`.
pub fn next_wake(jobs: &[ScheduledJob], now: DateTime<Utc>, cap: Duration) -> Duration {
    let Some(next) = jobs.iter().filter_map(|job| job.schedule.next_after(now)).min() else { return cap };
    (next - now).to_std().unwrap_or(Duration::ZERO).min(cap)
}

/// Fires the due slot of every job (see [`due_slot`]) that no scheduler fired yet, each in
/// its own transaction, and returns what this call fired. Safe to call from any number of
/// schedulers at once and as often as wanted: a slot fires once. Stops at the first
/// database error; the caller retries, and what was fired before it stays fired.
pub async fn fire_due(
    pool: &PgPool,
    jobs: &[ScheduledJob],
    now: DateTime<Utc>,
    window: Duration,
    fired_by: &str,
) -> Result<Vec<Fired>, FireError> {
    let mut fired = Vec::new();
    for scheduled in jobs {
        let Some(slot) = due_slot(&scheduled.schedule, now, window) else { continue };
        let job = scheduled.job.name();
        let outcome = fire_slot(pool, &scheduled.job, slot, fired_by).await;
        match outcome.map_err(|source| FireError { job, slot, source })? {
            Some(event_id) => {
                tracing::info!(job, slot = %slot, event.id = %event_id, fired_by, "fired {job} for {slot}");
                metrics::counter!(names::SCHEDULER_SLOTS_FIRED, "job" => job).increment(1);
                fired.push(Fired { job, slot, event_id });
            }
            None => tracing::debug!(job, slot = %slot, "{job} for {slot} was already fired"),
        }
    }
    Ok(fired)
}

/// One slot in one transaction: the claim of `(job, slot)` and the job's rows and event
/// commit together or not at all. The id recorded, or None if the slot was already fired.
async fn fire_slot(
    pool: &PgPool,
    job: &PeriodicJob,
    slot: DateTime<Utc>,
    fired_by: &str,
) -> sqlx::Result<Option<Uuid>> {
    let mut tx = pool.begin().await?;
    if !scheduled_runs::claim(&mut *tx, job.name(), slot, fired_by).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let event_id = job.request(&mut tx, slot).await?;
    scheduled_runs::record_event(&mut *tx, job.name(), slot, event_id).await?;
    tx.commit().await?;
    Ok(Some(event_id))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const CAP: Duration = Duration::from_secs(30);

    fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, h, m, 0).unwrap()
    }

    fn job(expression: &str) -> ScheduledJob {
        ScheduledJob {
            job: PeriodicJob::Backup { compression_level: 3 },
            schedule: CronSchedule::parse(expression).unwrap(),
        }
    }

    #[test]
    fn the_latest_slot_is_due_within_the_window() {
        let daily = CronSchedule::parse("0 2 * * *").unwrap();
        assert_eq!(due_slot(&daily, at(4, 2, 0), DAY), Some(at(4, 2, 0)), "on time");
        assert_eq!(due_slot(&daily, at(4, 4, 0), DAY), Some(at(4, 2, 0)), "two hours late");
        assert_eq!(due_slot(&daily, at(5, 1, 59), DAY), Some(at(4, 2, 0)), "still due until the window closes");
    }

    #[test]
    fn a_slot_older_than_the_window_is_not_due() {
        let daily = CronSchedule::parse("0 2 * * *").unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(due_slot(&daily, at(4, 3, 0), hour), Some(at(4, 2, 0)), "exactly at the edge");
        assert_eq!(due_slot(&daily, at(4, 3, 1), hour), None);
        assert_eq!(due_slot(&daily, at(4, 4, 0), hour), None);
        assert_eq!(due_slot(&daily, at(4, 4, 0), Duration::MAX), Some(at(4, 2, 0)), "an unbounded window");
    }

    #[test]
    fn missed_slots_are_coalesced_into_the_latest() {
        let daily = CronSchedule::parse("0 2 * * *").unwrap();
        // Down from the 1st to the 4th at noon: only the 4th's slot is due.
        assert_eq!(due_slot(&daily, at(4, 12, 0), Duration::from_secs(7 * 86_400)), Some(at(4, 2, 0)));
    }

    #[test]
    fn the_scheduler_wakes_at_the_earliest_next_slot_or_the_cap() {
        let jobs = [job("0 2 * * *"), job("*/5 * * * *")];
        assert_eq!(next_wake(&jobs, at(4, 10, 3), CAP), CAP, "two minutes away: capped");
        let just_before = at(4, 10, 5) - TimeDelta::seconds(10);
        assert_eq!(next_wake(&jobs, just_before, CAP), Duration::from_secs(10));
        let fraction = at(4, 10, 4) + TimeDelta::milliseconds(59_750);
        assert_eq!(next_wake(&jobs, fraction, CAP), Duration::from_millis(250));
        assert_eq!(next_wake(&jobs, at(4, 10, 5), CAP), CAP, "the slot now is not the next one");
        assert_eq!(next_wake(&[], at(4, 10, 5), CAP), CAP, "no job: the cap");
        let daily = [job("0 2 * * *")];
        assert_eq!(next_wake(&daily, at(4, 1, 59) + TimeDelta::seconds(45), CAP), Duration::from_secs(15));
    }
}
