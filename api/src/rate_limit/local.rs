//! In-process limits: one keyed `governor` limiter per route group. Used when no Redis is
//! configured, and as the fallback while Redis is unreachable.
//!
//! Memory stays bounded by sweeping: a key whose bucket has refilled is indistinguishable
//! from a key never seen, so [`LocalLimiter::sweep`] drops it (`retain_recent`). A sweep
//! runs every [`SWEEP_INTERVAL`] from a task that ends with the limiter.

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::gcra::{Decision, Limit};
use super::{ClientKey, Group};

/// How often idle keys are dropped.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type KeyedLimiter = RateLimiter<ClientKey, DashMapStateStore<ClientKey>, DefaultClock, StateInformationMiddleware>;

/// One keyed limiter per group (`None`: that group is not limited).
pub struct LocalLimiter {
    groups: [Option<GroupLimiter>; Group::COUNT],
}

struct GroupLimiter {
    limit: Limit,
    limiter: KeyedLimiter,
}

impl LocalLimiter {
    /// Limiters for the groups that have a limit; starts the sweeping task when called on a
    /// Tokio runtime (without one, call [`Self::sweep`] yourself).
    pub fn new(limits: [Option<Limit>; Group::COUNT]) -> Arc<Self> {
        let groups = limits.map(|limit| {
            limit.map(|limit| {
                let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
                let quota =
                    Quota::with_period(limit.interval()).expect("an interval of at least 1 µs").allow_burst(burst);
                GroupLimiter { limit, limiter: RateLimiter::dashmap(quota).with_middleware() }
            })
        });
        let this = Arc::new(Self { groups });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep_until_dropped(Arc::downgrade(&this)));
        }
        this
    }

    /// Counts one request of `client` in `group`; `None` when the group is not limited.
    pub fn check(&self, group: Group, client: &ClientKey) -> Option<Decision> {
        let GroupLimiter { limit, limiter } = self.groups[group as usize].as_ref()?;
        let decision = match limiter.check_key(client) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    remaining,
                    retry_after: Duration::ZERO,
                    // The snapshot hides the exact TAT; this is it to within one interval.
                    reset_after: limit.interval() * (limit.burst - remaining.min(limit.burst)),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(limiter.clock().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after,
                    reset_after: retry_after + limit.interval() * (limit.burst - 1),
                }
            }
        };
        Some(decision)
    }

    /// Drops the keys whose buckets have refilled and gives their memory back.
    pub fn sweep(&self) {
        for group in self.groups.iter().flatten() {
            group.limiter.retain_recent();
            group.limiter.shrink_to_fit();
        }
    }

    /// Keys currently held, over all groups.
    pub fn key_count(&self) -> usize {
        self.groups.iter().flatten().map(|group| group.limiter.len()).sum()
    }
}

async fn sweep_until_dropped(limiter: Weak<LocalLimiter>) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(limiter) = limiter.upgrade() else { return };
        limiter.sweep();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn limiter(per_second: f64, burst: u32) -> Arc<LocalLimiter> {
        LocalLimiter::new([Some(Limit::new(per_second, burst)), None, None, None])
    }

    fn ip(last: u8) -> ClientKey {
        ClientKey::from_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn the_burst_passes_then_the_key_is_refused_with_a_retry_time() {
        let limiter = limiter(1.0, 3);
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.check(Group::Uploads, &ip(1)).unwrap()).collect();
        assert_eq!(decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(), [2, 1, 0, 0]);
        let refused = decisions[3];
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_millis(900) && refused.retry_after <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(refused.reset_after > Duration::from_millis(2900));
    }

    #[test]
    fn keys_are_limited_independently_and_unlimited_groups_are_not_counted() {
        let limiter = limiter(1.0, 1);
        assert!(limiter.check(Group::Uploads, &ip(1)).unwrap().allowed);
        assert!(!limiter.check(Group::Uploads, &ip(1)).unwrap().allowed);
        assert!(limiter.check(Group::Uploads, &ip(2)).unwrap().allowed);
        assert_eq!(limiter.check(Group::Serving, &ip(1)), None);
    }

    #[test]
    fn sweeping_drops_refilled_keys_only() {
        let limiter = limiter(1_000.0, 1);
        for last in 0..100 {
            limiter.check(Group::Uploads, &ip(last));
        }
        assert_eq!(limiter.key_count(), 100);
        std::thread::sleep(Duration::from_millis(5));
        let slow = LocalLimiter::new([Some(Limit::new(0.001, 1)), None, None, None]);
        slow.check(Group::Uploads, &ip(1));
        limiter.sweep();
        slow.sweep();
        assert_eq!(limiter.key_count(), 0, "refilled keys are forgotten");
        assert_eq!(slow.key_count(), 1, "a key still limited is kept");
    }
}
