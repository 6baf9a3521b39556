//! Cron schedules: standard five-field expressions (minute, hour, day of month, month, day
//! of week, as in crontab), always read in UTC, and the slot arithmetic built on them.
//!
//! A *slot* is one time an expression matches, to the minute. The configuration checks every
//! expression with [`CronSchedule::parse`] at start-up; the scheduler asks for the latest
//! slot at or before now and for the next one after it.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "`{expression}` is not a five-field cron expression (minute hour day-of-month month day-of-week): {reason}"
    )]
    Invalid { expression: String, reason: String },
    #[error("`{expression}` never matches a date")]
    Never { expression: String },
}

/// A parsed cron expression, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
}

impl CronSchedule {
    /// Parses five fields; a seconds or a year field is refused, so an expression means what
    /// it means to crontab. An expression that no date satisfies (`0 0 30 2 *`) is refused
    /// too: it would silently never fire.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        let invalid = |reason: String| ScheduleError::Invalid { expression: expression.to_owned(), reason };
        // Counted here for a plain message: croner's own for a wrong count speaks of
        // seconds and year fields, which these expressions never have.
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && fields != 5 {
            return Err(invalid(format!("it has {fields} fields")));
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|error| invalid(error.to_string()))?;
        let schedule = Self { expression: expression.to_owned(), cron };
        if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::Never { expression: expression.to_owned() });
        }
        Ok(schedule)
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// The latest slot at or before `now`; None only if there is none in the calendar croner
    /// searches (years 1 to 5000).
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now.trunc_subsecs(0), true).ok()
    }

    /// The first slot strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&now.trunc_subsecs(0), false).ok()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, h, m, s).unwrap()
    }

    #[test]
    fn the_latest_slot_is_at_or_before_now() {
        let daily = CronSchedule::parse("0 2 * * *").unwrap();
        assert_eq!(daily.latest_at_or_before(at(2, 0, 0)), Some(at(2, 0, 0)), "a slot is its own latest");
        assert_eq!(daily.latest_at_or_before(at(4, 30, 0)), Some(at(2, 0, 0)));
        let yesterday = Utc.with_ymd_and_hms(2026, 3, 3, 2, 0, 0).unwrap();
        assert_eq!(daily.latest_at_or_before(at(1, 59, 59)), Some(yesterday));
        let every_five = CronSchedule::parse("*/5 * * * *").unwrap();
        let fraction = at(10, 7, 0) + chrono::Duration::milliseconds(999);
        assert_eq!(every_five.latest_at_or_before(fraction), Some(at(10, 5, 0)));
        let just_after = at(10, 5, 0) + chrono::Duration::milliseconds(1);
        assert_eq!(every_five.latest_at_or_before(just_after), Some(at(10, 5, 0)), "slots are whole minutes");
    }

    #[test]
    fn the_next_slot_is_strictly_after_now() {
        let hourly = CronSchedule::parse("0 * * * *").unwrap();
        assert_eq!(hourly.next_after(at(2, 0, 0)), Some(at(3, 0, 0)));
        assert_eq!(hourly.next_after(at(2, 59, 59)), Some(at(3, 0, 0)));
        let weekly = CronSchedule::parse("0 1 * * 0").unwrap();
        // 2026-03-04 is a Wednesday; the next Sunday is the 8th.
        assert_eq!(weekly.next_after(at(12, 0, 0)), Some(Utc.with_ymd_and_hms(2026, 3, 8, 1, 0, 0).unwrap()));
    }

    #[test]
    fn day_of_month_and_day_of_week_match_either_as_in_crontab() {
        // The 13th, or any Friday.
        let schedule = CronSchedule::parse("0 0 13 * 5").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(schedule.next_after(from), Some(Utc.with_ymd_and_hms(2026, 3, 6, 0, 0, 0).unwrap()));
    }

    #[test]
    fn invalid_expressions_are_refused_with_the_reason() {
        for bad in
            ["", "* * * *", "0 0 2 * * *", "0 0 2 * * * 2026", "61 * * * *", "0 25 * * *", "daily", "*/0 * * * *"]
        {
            let error = CronSchedule::parse(bad).unwrap_err();
            assert!(matches!(error, ScheduleError::Invalid { .. }), "{bad:?}: {error}");
        }
        let error = CronSchedule::parse("0 0 30 2 *").unwrap_err();
        assert!(matches!(error, ScheduleError::Never { .. }), "{error}");
        assert_eq!(CronSchedule::parse("  0 2 * * *  ").unwrap().as_str(), "0 2 * * *");
        assert_eq!(CronSchedule::parse("@daily").unwrap().latest_at_or_before(at(5, 0, 0)), Some(at(0, 0, 0)));
    }
}
