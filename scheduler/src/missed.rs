//! Counting missed slots for `stayler_scheduler_slots_missed_total`: a slot that came due
//! while this scheduler ran and that no scheduler fired, either because a later slot of its
//! job came due first (it is then coalesced into that one, see [`crate::firing`]) or because
//! it left the catch-up window (it then never fires). Either means the scheduler could not
//! fire for a while (the database unreachable, the process stalled): what an operator wants
//! to hear about. Slots that passed before the process started are not counted here; the
//! first tick fires the latest of them.
//!
//! A slot counts as fired once any scheduler has fired it: this one's tick fired it or
//! found it fired.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::jobs::ScheduledJob;

/// Most slots counted at once for one job (a machine suspended for weeks with a job every
/// minute), so that a tick never walks an unbounded calendar.
const MAX_COUNTED_AT_ONCE: u64 = 100_000;

/// What one job's slots looked like at the previous tick.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its latest slot at or before the previous tick.
    latest: DateTime<Utc>,
    /// Whether that slot was fired (by any scheduler).
    fired: bool,
    /// Whether it was already counted as missed (it left the window unfired), or is not
    /// this process's to count.
    counted: bool,
}

/// The slots seen by one scheduler process; see the module documentation.
#[derive(Debug, Default)]
pub struct MissedSlots {
    seen: HashMap<&'static str, Seen>,
}

impl MissedSlots {
    /// After a tick at `now`: `fired(job)` says whether that job's due slot is known fired
    /// (this tick fired it or found it fired). Returns how many slots of each job were
    /// missed since the previous tick.
    pub fn after_tick(
        &mut self,
        jobs: &[ScheduledJob],
        now: DateTime<Utc>,
        window: Duration,
        fired: impl Fn(&'static str) -> bool,
    ) -> Vec<(&'static str, u64)> {
        let oldest = TimeDelta::from_std(window).ok().and_then(|window| now.checked_sub_signed(window));
        let mut missed = Vec::new();
        for scheduled in jobs {
            let name = scheduled.job.name();
            let Some(latest) = scheduled.schedule.latest_at_or_before(now) else { continue };
            let in_window = oldest.is_none_or(|oldest| latest >= oldest);
            let fired_now = in_window && fired(name);
            let Some(previous) = self.seen.get(name).copied() else {
                // The first tick: what came before the process is not this one's to count.
                self.seen.insert(name, Seen { latest, fired: fired_now, counted: !in_window });
                continue;
            };
            let mut count = 0;
            let mut seen = if previous.latest == latest {
                Seen { fired: previous.fired || fired_now, ..previous }
            } else {
                // The previous latest slot and every one between it and the new one were
                // superseded; each that was never fired (nor counted) is missed.
                count += u64::from(!previous.fired && !previous.counted);
                count += slots_between(scheduled, previous.latest, latest);
                Seen { latest, fired: fired_now, counted: false }
            };
            if !in_window && !seen.fired && !seen.counted {
                count += 1;
                seen.counted = true;
            }
            self.seen.insert(name, seen);
            if count > 0 {
                missed.push((name, count));
            }
        }
        missed
    }
}

/// Slots of `scheduled` strictly after `after` and strictly before `before`.
fn slots_between(scheduled: &ScheduledJob, after: DateTime<Utc>, before: DateTime<Utc>) -> u64 {
    let mut count = 0;
    let mut at = after;
    while count < MAX_COUNTED_AT_ONCE {
        match scheduled.schedule.next_after(at) {
            Some(next) if next < before => {
                count += 1;
                at = next;
            }
            _ => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use shared::periodic::PeriodicJob;
    use shared::schedule::CronSchedule;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, 0).unwrap()
    }

    fn job(expression: &str) -> Vec<ScheduledJob> {
        vec![ScheduledJob { job: PeriodicJob::Sweep, schedule: CronSchedule::parse(expression).unwrap() }]
    }

    #[test]
    fn slots_fired_in_time_are_never_missed() {
        let jobs = job("*/5 * * * *");
        let mut missed = MissedSlots::default();
        for minute in [0, 1, 5, 9, 10, 15] {
            assert_eq!(missed.after_tick(&jobs, at(10, minute), HOUR, |_| true), [], "at 10:{minute:02}");
        }
    }

    #[test]
    fn slots_superseded_unfired_are_missed_once_each() {
        let jobs = job("*/5 * * * *");
        let mut missed = MissedSlots::default();
        assert_eq!(missed.after_tick(&jobs, at(10, 0), HOUR, |_| true), []);
        // The database is down from 10:04 to 10:21: the 10:05, 10:10 and 10:15 slots never
        // fire; the 10:20 one does once it is back.
        assert_eq!(missed.after_tick(&jobs, at(10, 6), HOUR, |_| false), []);
        assert_eq!(missed.after_tick(&jobs, at(10, 7), HOUR, |_| false), [], "still its latest slot");
        assert_eq!(missed.after_tick(&jobs, at(10, 21), HOUR, |_| true), [("sweep", 3)]);
        assert_eq!(missed.after_tick(&jobs, at(10, 26), HOUR, |_| true), []);
    }

    #[test]
    fn a_slot_that_leaves_the_window_unfired_is_missed_once() {
        let jobs = job("0 2 * * *");
        let mut missed = MissedSlots::default();
        assert_eq!(missed.after_tick(&jobs, at(1, 0), HOUR, |_| true), [], "yesterday's slot, before the start");
        assert_eq!(missed.after_tick(&jobs, at(2, 30), HOUR, |_| false), []);
        assert_eq!(missed.after_tick(&jobs, at(3, 1), HOUR, |_| false), [("sweep", 1)]);
        assert_eq!(missed.after_tick(&jobs, at(4, 0), HOUR, |_| false), [], "counted once");
        let next_day = at(2, 10) + TimeDelta::days(1);
        assert_eq!(missed.after_tick(&jobs, next_day, HOUR, |_| true), [], "the next one fired in time");
    }

    #[test]
    fn a_slot_out_of_the_window_at_start_up_is_not_this_process_s_to_count() {
        let jobs = job("0 2 * * *");
        let mut missed = MissedSlots::default();
        assert_eq!(missed.after_tick(&jobs, at(5, 0), HOUR, |_| false), []);
        assert_eq!(missed.after_tick(&jobs, at(6, 0), HOUR, |_| false), []);
    }
}
