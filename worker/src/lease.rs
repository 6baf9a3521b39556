//! Leases for long jobs. A restore or a backup check can run longer than RabbitMQ's
//! consumer timeout; the broker then delivers the job again while the first run goes on.
//! The run that starts a job takes a lease on it in the database (see
//! `storage_restores::claim`, `storage_backups::lease_verify`) and renews it while it works,
//! so a second delivery finds the lease live and leaves the job to its holder. A holder that
//! died stops renewing: once its lease ran out the job can be taken over (a redelivery, or
//! the sweeper publishing a stalled restore again).

use std::future::Future;
use std::time::Duration;

/// The lease was taken over by another run (this one missed renewals for longer than the
/// lease, and the job was started again): this run stops and leaves the job to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job's lease was taken over by another run")]
pub struct LeaseLost;

/// How often a lease of `lease` is renewed: three chances before it runs out.
pub fn renewal_period(lease: Duration) -> Duration {
    lease / 3
}

/// Runs `work` to its end while calling `renew` every `period`. `renew` answers whether the
/// lease is still the caller's; when it is not, `work` is dropped (cancelled) and the
/// answer is [`LeaseLost`]. A renewal that fails (the database unreachable) is logged and
/// tried again at the next period: the run keeps its lease as long as one succeeds in time.
pub async fn while_held<T, R, F>(mut renew: R, period: Duration, work: impl Future<Output = T>) -> Result<T, LeaseLost>
where
    R: FnMut() -> F,
    F: Future<Output = sqlx::Result<bool>>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            _ = ticks.tick() => match renew().await {
                Ok(true) => {}
                Ok(false) => return Err(LeaseLost),
                Err(error) => tracing::warn!(error = %error, "could not renew a job lease; trying again"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::Notify;

    use super::*;

    const OFTEN: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn the_lease_is_renewed_while_the_work_runs() {
        let renewals = Arc::new(AtomicU32::new(0));
        let third = Arc::new(Notify::new());
        let (counted, told) = (Arc::clone(&renewals), Arc::clone(&third));
        let renew = move || {
            if counted.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                told.notify_one();
            }
            async { Ok(true) }
        };
        // The work ends once it has seen three renewals.
        let work = async { third.notified().await };
        assert_eq!(while_held(renew, OFTEN, work).await, Ok(()));
        assert!(renewals.load(Ordering::SeqCst) >= 3);
    }

    #[tokio::test]
    async fn a_failed_renewal_is_retried_and_a_lost_lease_stops_the_work() {
        let renewals = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&renewals);
        let renew = move || {
            let answer = match counted.fetch_add(1, Ordering::SeqCst) {
                0 => Err(sqlx::Error::PoolTimedOut),
                1 => Ok(true),
                _ => Ok(false),
            };
            async move { answer }
        };
        let never_ends = std::future::pending::<()>();
        assert_eq!(while_held(renew, OFTEN, never_ends).await, Err(LeaseLost));
        assert_eq!(renewals.load(Ordering::SeqCst), 3, "lost at the third renewal");
    }
}
