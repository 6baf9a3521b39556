//! The outbox relay: publishes committed events to RabbitMQ and marks them sent.
//!
//! A batch is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that stays open
//! while its events are published and confirmed, so several relays share the work without
//! publishing a row twice. Rows the broker confirmed are marked published; the others get
//! their failure recorded and stay for the next pass. A crash between the confirm and the
//! commit publishes a row again, which consumers absorb since the `message_id` is the event
//! id. The relay wakes on the `outbox` notification the insert trigger sends, and polls as
//! well, so a lost notification or a restarted database never stalls it.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerError, Outgoing, Publisher};
use crate::db::outbox::{self, OutboxRow};

/// Rows claimed and published per transaction.
pub const BATCH_SIZE: i64 = 100;
/// Longest wait between two passes when no notification arrives.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a notification is held before the pass it triggers, so that the events of
/// uploads committing meanwhile go out in the same batch. A pass costs a transaction and a
/// broker round trip whatever its size; without the pause every notification (one per
/// upload) started a pass of its own (measurements: docs/benchmarks.md#outbox-relay-linger).
const NOTIFICATION_LINGER: Duration = Duration::from_millis(20);
/// Back-off after a failed pass, doubled per consecutive failure up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pass in flight at shutdown may still take. Rows it leaves unmarked are
/// published again by the next relay; consumers absorb the duplicate.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The channel the insert trigger notifies.
const CHANNEL: &str = "outbox";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Some rows of the batch were not confirmed; they stay unpublished with the failure
    /// recorded, and the rows confirmed before it are marked published.
    #[error("publishing {failed} outbox event(s): {error}")]
    Broker { failed: usize, error: BrokerError },
}

/// Publishes pending rows batch by batch until none is left (or another relay holds the
/// rest), and returns how many this call published.
pub async fn publish_pending_once(pool: &PgPool, publisher: &Publisher) -> Result<usize, RelayError> {
    let mut total = 0;
    loop {
        let published = publish_batch(pool, publisher, BATCH_SIZE).await?;
        total += published;
        if published < BATCH_SIZE as usize {
            return Ok(total);
        }
    }
}

/// One claimed batch: publish, wait for the confirms, mark, commit. Returns the rows
/// published.
async fn publish_batch(pool: &PgPool, publisher: &Publisher, limit: i64) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows = outbox::claim_batch(&mut tx, limit).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let messages: Vec<Outgoing> = rows.iter().map(|row| message(publisher, row)).collect();
    let results = publisher.publish_batch(&messages).await;
    let mut published = Vec::with_capacity(rows.len());
    let mut failed = Vec::new();
    let mut first_error = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => published.push(row.id),
            Err(error) => {
                failed.push(row.id);
                first_error.get_or_insert(error);
            }
        }
    }
    if !published.is_empty() {
        outbox::mark_published(&mut *tx, &published).await?;
    }
    if let Some(error) = &first_error {
        // Committed with the claim, so the attempt count sticks; the failed rows are
        // released by the commit and retried by the next pass of any relay.
        outbox::record_failure(&mut *tx, &failed, &error.to_string()).await?;
    }
    tx.commit().await?;
    tracing::debug!(outbox.published = published.len(), outbox.failed = failed.len(), "outbox batch relayed");
    match first_error {
        Some(error) => Err(RelayError::Broker { failed: failed.len(), error }),
        None => Ok(published.len()),
    }
}

fn message(publisher: &Publisher, row: &OutboxRow) -> Outgoing {
    let body = serde_json::to_vec(&row.payload).expect("a JSON value serialises");
    Outgoing::event(publisher.topology(), row.event_id, &row.event_type, body)
}

/// Relays until `shutdown` is cancelled. Database and broker failures are logged and
/// retried with back-off; they never end the loop, and no row is skipped.
pub async fn run(pool: PgPool, publisher: Publisher, shutdown: CancellationToken) {
    run_polling_every(pool, publisher, shutdown, POLL_INTERVAL).await;
}

/// [`run`] with another longest wait between passes; a test that sets it far beyond its
/// own timeout proves that notifications alone wake the relay.
pub async fn run_polling_every(
    pool: PgPool,
    publisher: Publisher,
    shutdown: CancellationToken,
    poll_interval: Duration,
) {
    let mut listener: Option<PgListener> = None;
    let mut backoff = FIRST_BACKOFF;
    while !shutdown.is_cancelled() {
        if listener.is_none() {
            listener = tokio::select! {
                () = shutdown.cancelled() => break,
                listener = listen(&pool) => listener,
            };
        }
        let pass = publish_pending_once(&pool, &publisher);
        tokio::pin!(pass);
        // A pass in flight at shutdown may finish (its confirmed rows get marked), but one
        // stuck on an unreachable database must not hold the process past its grace.
        let outcome = tokio::select! {
            outcome = &mut pass => outcome,
            () = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await {
                Ok(outcome) => outcome,
                Err(_) => break,
            },
        };
        let failed = match outcome {
            Ok(published) => {
                if published > 0 {
                    tracing::debug!(outbox.published = published, "outbox drained");
                }
                false
            }
            Err(error) => {
                tracing::warn!(error = %error, outbox.retry_in_ms = backoff.as_millis() as u64, "outbox relay pass failed");
                true
            }
        };
        if failed {
            // Notifications are not a reason to hammer a broker or database that is down.
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = FIRST_BACKOFF;
        let woken = match listener.as_mut() {
            Some(listener) => tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(poll_interval) => Ok(()),
                notification = listener.recv() => notification.map(drop),
            },
            None => tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(poll_interval) => Ok(()),
            },
        };
        if let Err(error) = woken {
            tracing::warn!(error = %error, "outbox listener lost; polling until it is back");
            listener = None;
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(NOTIFICATION_LINGER) => {}
        }
        let drained = match listener.as_mut() {
            Some(listener) => drain(listener).await,
            None => Ok(()),
        };
        if let Err(error) = drained {
            tracing::warn!(error = %error, "outbox listener lost; polling until it is back");
            listener = None;
        }
    }
    tracing::info!("outbox relay stopped");
}

/// Consumes the notifications received so far: the pass about to run covers their rows.
async fn drain(listener: &mut PgListener) -> sqlx::Result<()> {
    // A zero timeout still polls `recv` once, which takes what has already arrived.
    while let Ok(received) = tokio::time::timeout(Duration::ZERO, listener.recv()).await {
        received?;
    }
    Ok(())
}

/// A listener on the `outbox` channel, or none while the database is unreachable (the
/// relay then polls).
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listening = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(Duration::from_secs(10), listening).await {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "cannot listen for outbox notifications; polling");
            None
        }
        Err(_) => {
            tracing::warn!("listening for outbox notifications timed out; polling");
            None
        }
    }
}
