//! The consumer runtime: takes jobs off one queue, runs them through a [`Handler`], and acks,
//! retries with back-off or dead-letters each one according to its outcome.
//!
//! Deliveries are acked manually, only after the handler returned. A failed attempt is
//! retried by publishing a copy with the next attempt number through the retry exchange
//! (confirmed) and only then acking the original; after `rabbitmq.maxAttempts` attempts, on
//! [`JobError::Reject`] or on a malformed message, a copy goes to the queue's dead-letter
//! queue with the reason in its headers. Should that publish fail, the original is returned
//! to the queue instead, so a job is never dropped. Every broker call has a deadline, and a
//! lost connection is rebuilt from scratch.

use std::any::Any;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use shared::broker::{
    BrokerConnection, BrokerError, DeadLetter, JobQueue, Publisher, Topology, attempt_of, call, reconnect_delay,
};
use shared::config::{Config, RabbitConfig, WorkerConfig};
use shared::db::metrics;
use shared::events::{Envelope, Event};
use shared::observability::names;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One delivered job, as its handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The event id (AMQP `message_id`), for de-duplication.
    pub message_id: Option<String>,
    /// The envelope's `type`, e.g. `image.uploaded`.
    pub event_type: String,
    /// The whole envelope, JSON.
    pub body: Vec<u8>,
    /// 1 on first delivery, then one more per retry.
    pub attempt: u32,
}

impl Job {
    /// The envelope's payload as `T`; a body that is not one can never succeed: rejected.
    pub fn payload<T: Event>(&self) -> Result<T, JobError> {
        let envelope: Envelope<T> = serde_json::from_slice(&self.body).map_err(JobError::reject)?;
        Ok(envelope.payload)
    }
}

/// How a job failed, as its handler decides.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Might work later (database or disk busy): retried with back-off until
    /// `rabbitmq.maxAttempts`, then dead-lettered.
    #[error("{0}")]
    Retry(String),
    /// Will never work (undecodable image, unknown payload): dead-lettered at once.
    #[error("{0}")]
    Reject(String),
}

impl JobError {
    /// A failure worth retrying; the error is kept as text with its causes.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Self::Retry(format!("{error:#}"))
    }

    /// A failure retrying cannot fix.
    pub fn reject(error: impl std::fmt::Display) -> Self {
        Self::Reject(format!("{error:#}"))
    }
}

/// A panicked or cancelled blocking task (`spawn_blocking(…).await?`) is retried.
impl From<tokio::task::JoinError> for JobError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::retry(error)
    }
}

/// Why a job was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GivenUp {
    /// Its handler rejected it: retrying cannot fix it (an undecodable image).
    Rejected,
    /// It kept failing in ways that may pass (database, disk, a panic) until its attempts
    /// ran out.
    OutOfAttempts,
}

/// The work of one queue. Must be idempotent: a job can be delivered more than once.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, job: &Job) -> Result<(), JobError>;

    /// Called once when a job is given up for good (sent to the dead-letter queue), so the
    /// handler can record why (e.g. on the image row) where that is final.
    async fn on_dead_letter(&self, job: &Job, reason: &str, given_up: GivenUp) {
        let _ = (job, reason, given_up);
    }
}

/// Jobs run at once by one process: `worker.concurrency`, or one per CPU core when 0.
pub fn concurrency(config: &WorkerConfig) -> usize {
    match config.concurrency {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    }
}

/// Consumes one job queue until shut down.
pub struct Consumer {
    queue: JobQueue,
    handler: Arc<dyn Handler>,
    rabbit: RabbitConfig,
    topology: Topology,
    publisher: Publisher,
    permits: Arc<Semaphore>,
    shutdown_grace: Duration,
    /// Where failed attempts are recorded (`job_failures`), if anywhere.
    failure_log: Option<PgPool>,
}

/// Only the envelope fields the runtime needs; the handler parses the rest.
#[derive(Deserialize)]
struct EnvelopeType {
    #[serde(rename = "type")]
    event_type: String,
    /// The request that caused the job: in the job's log lines and in the events it queues.
    #[serde(default)]
    request_id: Option<String>,
}

impl Consumer {
    /// A consumer of `queue` with a publisher (for retries and dead letters) and a job limit
    /// of its own; see [`Consumer::with_publisher`] and [`Consumer::with_permits`] to share
    /// them between queues.
    pub fn new(config: &Config, queue: JobQueue, handler: Arc<dyn Handler>) -> Self {
        let publisher = Publisher::new(&config.rabbitmq, &format!("stayler-worker {} publisher", queue.name()));
        Self {
            queue,
            handler,
            rabbit: config.rabbitmq.clone(),
            topology: Topology::new(&config.rabbitmq),
            publisher,
            permits: Arc::new(Semaphore::new(concurrency(&config.worker))),
            shutdown_grace: Duration::from_secs(config.worker.shutdown_grace_secs),
            failure_log: None,
        }
    }

    /// Records every failed attempt in `job_failures`, for the metrics roll-up and for
    /// operators who want the reasons without opening the broker.
    pub fn with_failure_log(mut self, db: PgPool) -> Self {
        self.failure_log = Some(db);
        self
    }

    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = publisher;
        self
    }

    /// Shares the limit of jobs run at once with the other queues of the process.
    pub fn with_permits(mut self, permits: Arc<Semaphore>) -> Self {
        self.permits = permits;
        self
    }

    /// Consumes until `shutdown` is cancelled, reconnecting after every broker failure. On
    /// shutdown, stops taking jobs, gives the running ones `worker.shutdownGraceSecs` to
    /// finish, then closes the channel so unacknowledged jobs return to the queue. Fails only
    /// when the broker refuses this consumer for good (bad URL, access refused).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let consumer = Arc::new(self);
        let span = tracing::info_span!("consumer", job.queue = consumer.queue.name());
        consumer.run_sessions(shutdown).instrument(span).await
    }

    async fn run_sessions(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), BrokerError> {
        // Outlives sessions: jobs of a lost connection finish (their acks fail and the
        // broker redelivers them) while the next session already runs.
        let mut in_flight = JoinSet::new();
        let result = loop {
            match self.session(&mut in_flight, &shutdown).await {
                Ok(()) => break Ok(()),
                Err(error) if error.is_refusal() => break Err(error),
                Err(error) => {
                    let delay = reconnect_delay(&self.rabbit);
                    tracing::warn!(error = %error, broker.reconnect_in_ms = delay.as_millis() as u64, "consumer lost the broker");
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        drain(&mut in_flight, self.shutdown_grace).await;
        result
    }

    /// One connection's worth of consuming. `Ok` on shutdown (after draining), `Err` when the
    /// connection failed.
    async fn session(
        self: &Arc<Self>,
        in_flight: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let connection = BrokerConnection::open(&self.rabbit, &format!("stayler-worker {}", self.queue.name())).await?;
        let timeout = connection.call_timeout();
        let channel = connection.open_channel().await?;
        call(timeout, "basic.qos", channel.basic_qos(self.rabbit.prefetch, BasicQosOptions::default())).await?;
        let tag = format!("{}-{}", self.queue.name(), uuid::Uuid::new_v4().simple());
        let consumed = channel.basic_consume(
            self.topology.queue(self.queue).into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let mut deliveries = call(timeout, "basic.consume", consumed).await?;
        tracing::info!(broker.prefetch = self.rabbit.prefetch, "consuming");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let permit = tokio::select! {
                            // The delivery is dropped unacknowledged: closing the channel
                            // returns it to the queue.
                            () = shutdown.cancelled() => break,
                            permit = self.permits.clone().acquire_owned() => permit.expect("the job semaphore is never closed"),
                        };
                        let consumer = Arc::clone(self);
                        in_flight.spawn(async move {
                            consumer.process(delivery, timeout).await;
                            drop(permit);
                        });
                    }
                    Some(Err(error)) => return Err(BrokerError::Amqp { operation: "basic.consume", error }),
                    None => return Err(BrokerError::ConsumerCancelled { queue: self.topology.queue(self.queue) }),
                },
            }
        }
        self.stop(&connection, &channel, &tag, in_flight).await;
        connection.close().await;
        Ok(())
    }

    /// Shutdown of a live session: no new deliveries, running jobs finish (their acks need
    /// the channel), then the channel closes and the broker requeues what was not acked.
    async fn stop(&self, connection: &BrokerConnection, channel: &Channel, tag: &str, in_flight: &mut JoinSet<()>) {
        let timeout = connection.call_timeout();
        if let Err(error) =
            call(timeout, "basic.cancel", channel.basic_cancel(tag.into(), BasicCancelOptions::default())).await
        {
            tracing::warn!(error = %error, "could not cancel the consumer; closing its channel");
        }
        drain(in_flight, self.shutdown_grace).await;
        if channel.status().connected() {
            let _ = call(timeout, "channel.close", channel.close(200, "OK".into())).await;
        }
        tracing::info!("consumer stopped");
    }

    async fn process(&self, mut delivery: Delivery, timeout: Duration) {
        // The body moves into the job; the delivery keeps its properties and acker.
        let body = std::mem::take(&mut delivery.data);
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|id| id.to_string());
        let attempt = attempt_of(properties);
        let span = tracing::info_span!(
            "job",
            job.message_id = message_id.as_deref().unwrap_or(""),
            job.attempt = attempt,
            "event.type" = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let queue = self.queue.name();
        ::metrics::gauge!(names::JOBS_IN_FLIGHT).increment(1.0);
        let started = std::time::Instant::now();
        async {
            let parsed = serde_json::from_slice::<EnvelopeType>(&body);
            // The AMQP `type` until the envelope is read, so even a malformed job has one.
            let event_type = properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default();
            let mut job = Job { message_id, event_type, body, attempt };
            let outcome = match parsed {
                Err(error) => Err(JobError::Reject(format!("malformed message: {error}"))),
                Ok(envelope) => {
                    // A job queued before its type was renamed is handled under the new name.
                    job.event_type = shared::events::current_type(&envelope.event_type).to_owned();
                    tracing::Span::current().record("event.type", job.event_type.as_str());
                    if self.queue.event_types().contains(&job.event_type.as_str()) {
                        match envelope.request_id {
                            Some(id) => {
                                tracing::Span::current().record("request_id", id.as_str());
                                shared::telemetry::with_request_id(id, self.handle(&job)).await
                            }
                            None => self.handle(&job).await,
                        }
                    } else {
                        let queue = self.topology.queue(self.queue);
                        Err(JobError::Reject(format!("event type `{}` is not handled on {queue}", job.event_type)))
                    }
                }
            };
            ::metrics::histogram!(names::JOB_DURATION, "queue" => queue).record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => {
                    tracing::debug!("job done");
                    count(queue, Outcome::Succeeded);
                    ack(&delivery, timeout).await;
                }
                Err(JobError::Retry(error)) if attempt < self.topology.max_attempts() => {
                    self.log_failure(&job, false, &error).await;
                    self.retry(&delivery, &job, &error, timeout).await;
                }
                Err(JobError::Retry(error)) => {
                    self.log_failure(&job, true, &error).await;
                    self.dead_letter(&delivery, &job, &error, GivenUp::OutOfAttempts, timeout).await;
                }
                Err(JobError::Reject(error)) => {
                    self.log_failure(&job, true, &error).await;
                    self.dead_letter(&delivery, &job, &error, GivenUp::Rejected, timeout).await;
                }
            }
        }
        .instrument(span)
        .await;
        ::metrics::gauge!(names::JOBS_IN_FLIGHT).decrement(1.0);
    }

    /// Runs the handler; a panic is a failure worth retrying, not a lost delivery.
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match AssertUnwindSafe(self.handler.handle(job)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => Err(JobError::Retry(format!("handler panicked: {}", panic_message(&*panic)))),
        }
    }

    /// Best effort: a failure that cannot be recorded (the database is what failed) is
    /// still retried or dead-lettered as usual.
    async fn log_failure(&self, job: &Job, last: bool, error: &str) {
        let Some(db) = &self.failure_log else { return };
        let queue = self.queue.name();
        let message_id = job.message_id.as_deref();
        let recorded =
            metrics::record_job_failure(db, queue, &job.event_type, message_id, job.attempt, last, error).await;
        if let Err(log_error) = recorded {
            tracing::warn!(error = %log_error, "could not record the failed attempt in job_failures");
        }
    }

    async fn retry(&self, delivery: &Delivery, job: &Job, error: &str, timeout: Duration) {
        let copy = self.topology.retry_message(self.queue, &delivery.properties, job.body.clone(), job.attempt, error);
        match self.publisher.publish(&copy).await {
            Ok(()) => {
                count(self.queue.name(), Outcome::Retried);
                let retry_in_secs = self.topology.retry_delay_secs(job.attempt);
                tracing::warn!(error, job.retry_in_secs = retry_in_secs, "job failed; retrying");
                ack(delivery, timeout).await;
            }
            Err(publish_error) => {
                tracing::error!(error, publish_error = %publish_error, "job failed and its retry could not be published; requeueing");
                self.requeue(delivery, timeout).await;
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, job: &Job, error: &str, given_up: GivenUp, timeout: Duration) {
        let dead = DeadLetter { queue: self.queue, attempts: job.attempt, error };
        let copy = self.topology.dead_letter_message(&delivery.properties, job.body.clone(), &dead);
        match self.publisher.publish(&copy).await {
            Ok(()) => {
                count(self.queue.name(), Outcome::DeadLettered);
                tracing::error!(error, job.attempts = job.attempt, "job given up; sent to the dead-letter queue");
                ack(delivery, timeout).await;
                let recorded = AssertUnwindSafe(self.handler.on_dead_letter(job, error, given_up)).catch_unwind().await;
                if let Err(panic) = recorded {
                    tracing::error!(panic = panic_message(&*panic), "on_dead_letter panicked");
                }
            }
            Err(publish_error) => {
                tracing::error!(error, publish_error = %publish_error, "job given up but could not be dead-lettered; requeueing");
                self.requeue(delivery, timeout).await;
            }
        }
    }

    /// Returns a job whose retry or dead letter could not be published. Waits first: the
    /// broker is in trouble, and an immediate redelivery would only spin. Each return counts
    /// towards the queue's `x-delivery-limit`, after which the broker dead-letters it.
    async fn requeue(&self, delivery: &Delivery, timeout: Duration) {
        count(self.queue.name(), Outcome::Requeued);
        tokio::time::sleep(reconnect_delay(&self.rabbit)).await;
        let nacked = delivery.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() });
        if let Err(error) = call(timeout, "basic.nack", nacked).await {
            tracing::warn!(error = %error, "requeue failed; the broker redelivers the job once the channel is gone");
        }
    }
}

/// How a job's delivery ended, in `stayler_jobs_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its handler succeeded: acked.
    Succeeded,
    /// It failed and a copy waits out its back-off for the next attempt.
    Retried,
    /// Given up: a copy is in the queue's dead-letter queue.
    DeadLettered,
    /// Its retry or dead letter could not be published: returned to the queue as it was.
    Requeued,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Self::Succeeded, Self::Retried, Self::DeadLettered, Self::Requeued];

    pub fn name(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
            Self::Requeued => "requeued",
        }
    }
}

/// Counts one delivery of `queue` that ended as `outcome`.
pub fn count(queue: &'static str, outcome: Outcome) {
    ::metrics::counter!(names::JOBS, "queue" => queue, "outcome" => outcome.name()).increment(1);
}

/// Acknowledges a finished job. A failed ack means the channel is gone and the broker will
/// redeliver the job, which handlers absorb by being idempotent.
async fn ack(delivery: &Delivery, timeout: Duration) {
    match call(timeout, "basic.ack", delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("job done but its channel is gone; it will be redelivered"),
        Err(error) => tracing::warn!(error = %error, "job done but the ack failed; it will be redelivered"),
    }
}

/// Waits up to `grace` for running jobs, then abandons the rest: unacknowledged, they go
/// back to the queue when their channel closes.
async fn drain(in_flight: &mut JoinSet<()>, grace: Duration) {
    if in_flight.is_empty() {
        return;
    }
    tracing::info!(jobs.in_flight = in_flight.len(), shutdown.grace_secs = grace.as_secs(), "waiting for running jobs");
    let finished = tokio::time::timeout(grace, async {
        while let Some(joined) = in_flight.join_next().await {
            log_panic(joined);
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(jobs.abandoned = in_flight.len(), "grace period over; unfinished jobs return to the queue");
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!(error = %error, "job task panicked");
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}
