//! The generic cell rate algorithm (GCRA) as a pure function of (now, state, limit), so its
//! arithmetic is unit-tested here. The in-process limiter (`governor`) implements the same
//! algorithm; the Redis script ([`super::redis::SCRIPT`]) is a line-by-line translation of
//! [`check`], so both backends answer alike.
//!
//! The whole state of a key is one instant, the theoretical arrival time (TAT): when the
//! key's bucket would be empty again if no more requests came. A request adds one emission
//! interval to it, and is refused when that would push it more than `burst` intervals past
//! now. Times are whole microseconds: small enough for rates up to 1,000,000 per second,
//! and exact in the 53-bit numbers of the Redis script for centuries of Unix time.

use std::time::Duration;

/// A rate: a sustained `1 / interval` requests per second, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Time one request costs, in microseconds (at least 1).
    pub interval_us: u64,
    /// Requests allowed at once from a full bucket (at least 1).
    pub burst: u32,
}

impl Limit {
    /// `per_second` sustained (more than 0, at most 1,000,000) with `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval_us = (1_000_000.0 / per_second).round().clamp(1.0, u64::MAX as f64) as u64;
        Self { interval_us, burst: burst.max(1) }
    }

    /// The emission interval as a [`Duration`].
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// How long an idle key takes to go from empty to a full bucket, in microseconds.
    fn capacity_us(&self) -> u64 {
        self.interval_us.saturating_mul(u64::from(self.burst))
    }
}

/// The answer for one request, and what the `RateLimit-*` headers tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Further requests that would be allowed right now.
    pub remaining: u32,
    /// When a refused request may be retried (zero when allowed).
    pub retry_after: Duration,
    /// When the bucket is full again if no more requests come.
    pub reset_after: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds, rounded up: retrying earlier is refused again.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after)
    }

    /// `RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Decides a request arriving at `now_us` for a key whose stored TAT is `tat_us` (`None`
/// for a key never seen or expired). Returns the decision and the TAT to store, `None`
/// when the state must stay as it is (a refused request costs nothing).
pub fn check(limit: Limit, now_us: u64, tat_us: Option<u64>) -> (Decision, Option<u64>) {
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(limit.interval_us);
    let allow_at = new_tat.saturating_sub(limit.capacity_us());
    if now_us < allow_at {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::from_micros(allow_at - now_us),
            reset_after: Duration::from_micros(tat - now_us),
        };
        return (decision, None);
    }
    let remaining = ((now_us - allow_at) / limit.interval_us).min(u64::from(limit.burst)) as u32;
    let decision = Decision {
        allowed: true,
        remaining,
        retry_after: Duration::ZERO,
        reset_after: Duration::from_micros(new_tat - now_us),
    };
    (decision, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 per second (one per 100 ms), 3 at once.
    const LIMIT: Limit = Limit { interval_us: 100_000, burst: 3 };
    const T0: u64 = 1_700_000_000_000_000;

    /// Runs requests at the given instants, carrying the state like a store would.
    fn run(limit: Limit, instants: &[u64]) -> Vec<Decision> {
        let mut tat = None;
        instants
            .iter()
            .map(|&now| {
                let (decision, next) = check(limit, now, tat);
                tat = next.or(tat);
                decision
            })
            .collect()
    }

    #[test]
    fn a_fresh_key_allows_a_whole_burst_then_refuses() {
        let decisions = run(LIMIT, &[T0, T0, T0, T0]);
        let allowed: Vec<bool> = decisions.iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, true, true, false]);
        let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0, 0]);
    }

    #[test]
    fn a_refusal_says_exactly_when_one_request_fits_again() {
        let refused = run(LIMIT, &[T0, T0, T0, T0 + 30_000])[3];
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(70));
        assert_eq!(refused.retry_after_secs(), 1, "rounded up, never 0");
        assert_eq!(refused.reset_after, Duration::from_millis(270));

        let retried = run(LIMIT, &[T0, T0, T0, T0 + 100_000]);
        assert!(retried[3].allowed, "one interval later one request fits");
        assert_eq!(retried[3].remaining, 0);
    }

    #[test]
    fn refused_requests_do_not_push_the_recovery_further() {
        let mut instants = vec![T0; 3];
        instants.extend(std::iter::repeat_n(T0 + 50_000, 100));
        instants.push(T0 + 100_000);
        let decisions = run(LIMIT, &instants);
        assert!(decisions[3..103].iter().all(|d| !d.allowed));
        assert!(decisions[103].allowed);
    }

    #[test]
    fn an_idle_key_refills_to_the_burst_and_no_further() {
        let decisions = run(LIMIT, &[T0, T0, T0, T0 + 10_000_000, T0 + 10_000_000, T0 + 10_000_000, T0 + 10_000_000]);
        let allowed: Vec<bool> = decisions[3..].iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, true, true, false]);
        assert_eq!(decisions[3].remaining, 2);
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        // 1,000 requests spaced 50 ms apart against 10/s: after the burst, every other one passes.
        let instants: Vec<u64> = (0..1_000).map(|i| T0 + i * 50_000).collect();
        let allowed = run(LIMIT, &instants).iter().filter(|d| d.allowed).count();
        assert!((500..=503).contains(&allowed), "{allowed}");
    }

    #[test]
    fn reset_is_when_the_bucket_is_full_again() {
        let first = run(LIMIT, &[T0])[0];
        assert_eq!(first.reset_after, Duration::from_millis(100));
        assert_eq!(first.reset_after_secs(), 1);
        let third = run(LIMIT, &[T0, T0, T0])[2];
        assert_eq!(third.reset_after, Duration::from_millis(300));
    }

    #[test]
    fn a_stale_state_from_the_past_counts_as_fresh() {
        let (decision, tat) = check(LIMIT, T0, Some(T0 - 5_000_000));
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 2);
        assert_eq!(tat, Some(T0 + 100_000));
    }

    #[test]
    fn a_burst_of_one_allows_one_request_per_interval() {
        let limit = Limit::new(2.0, 1);
        assert_eq!(limit.interval_us, 500_000);
        let allowed: Vec<bool> =
            run(limit, &[T0, T0 + 1, T0 + 499_999, T0 + 500_000]).iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, false, false, true]);
    }

    #[test]
    fn rates_convert_to_whole_microsecond_intervals() {
        assert_eq!(Limit::new(1_000_000.0, 1).interval_us, 1);
        assert_eq!(Limit::new(3.0, 1).interval_us, 333_333);
        assert_eq!(Limit::new(0.5, 1).interval_us, 2_000_000);
        assert_eq!(Limit::new(10.0, 0).burst, 1);
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_micros(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
