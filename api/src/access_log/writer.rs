//! The batch writer: records arrive through a bounded queue and leave in one transaction
//! per batch, off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::config::Config;
use shared::db::access_logs::{self, AbuseLimits, AccessRecord};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Back-off after a failed write, doubled per consecutive failure up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the final flush at shutdown may keep retrying a failing database.
const SHUTDOWN_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Where requests drop their records; cheap to clone. Recording never waits: when the
/// queue is full (the database has been unreachable for a long while) the record is
/// dropped and counted, so that serving never stalls on the log.
#[derive(Clone)]
pub struct AccessLog {
    sender: mpsc::Sender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn record(&self, record: AccessRecord) {
        if self.sender.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "access log queue full or closed; records dropped");
            }
        }
    }

    /// Records dropped because the queue was full, since start-up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer task; [`AccessLogWriter::stop`] flushes everything queued before it returns.
pub struct AccessLogWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AccessLogWriter {
    /// Writes what is still queued and waits for it. Call after the server has stopped, so
    /// that no request records anything afterwards.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "access log writer panicked");
        }
    }
}

/// Starts the writer and returns the handle requests record through.
pub fn start(db: PgPool, config: &Config) -> (AccessLog, AccessLogWriter) {
    let limits = AbuseLimits {
        max_uses: config.signed_urls.abuse_max_uses,
        max_addresses: config.signed_urls.abuse_max_addresses,
    };
    let config = &config.access_log;
    let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
    let stop = CancellationToken::new();
    let batch = Batcher {
        db,
        max_batch: config.batch_size.max(1),
        flush_interval: Duration::from_millis(config.flush_interval_ms),
        pending: Vec::new(),
        max_pending: config.queue_capacity.max(1),
        limits,
    };
    let task = tokio::spawn(batch.run(receiver, stop.clone()));
    (AccessLog { sender, dropped: Arc::default() }, AccessLogWriter { stop, task })
}

struct Batcher {
    db: PgPool,
    max_batch: usize,
    flush_interval: Duration,
    /// Received and not yet written (kept across failed writes).
    pending: Vec<AccessRecord>,
    /// At most this many are kept while the database refuses them; older ones go first.
    max_pending: usize,
    limits: AbuseLimits,
}

impl Batcher {
    async fn run(mut self, mut receiver: mpsc::Receiver<AccessRecord>, stop: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        let mut next_flush = Instant::now() + self.flush_interval;
        // Set while the database is failing: no write is tried before it.
        let mut retry_at: Option<Instant> = None;
        loop {
            let room = self.max_batch.saturating_sub(self.pending.len()).max(1);
            tokio::select! {
                received = receiver.recv_many(&mut self.pending, room) => {
                    if received == 0 {
                        break;
                    }
                    let backing_off = retry_at.is_some_and(|at| Instant::now() < at);
                    if self.pending.len() < self.max_batch || backing_off {
                        continue;
                    }
                }
                () = tokio::time::sleep_until(next_flush) => {}
                () = stop.cancelled() => break,
            }
            if self.pending.is_empty() {
                next_flush = Instant::now() + self.flush_interval;
                continue;
            }
            match self.flush().await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    retry_at = None;
                    next_flush = Instant::now() + self.flush_interval;
                }
                Err(error) => {
                    tracing::warn!(%error, pending = self.pending.len(), "writing access logs failed; retrying");
                    self.shed_oldest();
                    next_flush = Instant::now() + backoff;
                    retry_at = Some(next_flush);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        receiver.close();
        while let Ok(record) = receiver.try_recv() {
            self.pending.push(record);
        }
        self.final_flush().await;
    }

    /// Writes everything pending, one batch per transaction.
    async fn flush(&mut self) -> sqlx::Result<()> {
        while !self.pending.is_empty() {
            let end = self.pending.len().min(self.max_batch);
            let mut tx = self.db.begin().await?;
            access_logs::write_batch(&mut tx, &self.pending[..end], self.limits).await?;
            tx.commit().await?;
            self.pending.drain(..end);
        }
        Ok(())
    }

    async fn final_flush(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_DEADLINE;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.flush().await {
                Ok(()) => return,
                Err(error) if Instant::now() + backoff < deadline => {
                    tracing::warn!(%error, pending = self.pending.len(), "final access log flush failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    tracing::error!(%error, lost = self.pending.len(), "access logs lost at shutdown");
                    return;
                }
            }
        }
    }

    fn shed_oldest(&mut self) {
        let excess = self.pending.len().saturating_sub(self.max_pending);
        if excess > 0 {
            tracing::error!(lost = excess, "database unreachable for long; oldest access logs dropped");
            self.pending.drain(..excess);
        }
    }
}
