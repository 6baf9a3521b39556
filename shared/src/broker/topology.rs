//! The exchanges and queues of one deployment, named from `rabbitmq.prefix`, and the headers
//! that carry a job's attempt count and failure reason.
//!
//! ```text
//! {p}.events (topic) ──event type──▶ {p}.thumbnails, {p}.checksums, …   (quorum job queues)
//! {p}.notifications (topic) ──image.processed, image.failed──▶ {p}.webhooks, and the main
//!                                                              app's own queues
//!
//! retry:  worker ──▶ {p}.retry (headers) ──x-stayler-retry-delay=10s──▶ {p}.retry.10s
//!         (TTL 10 s) ──expires, dead-lettered to "" with the routing key it was sent with
//!         (the job queue's name)──▶ back to the job queue as the next attempt
//!
//! dead:   worker ──▶ {p}.dead (direct) ──routing key {p}.thumbnails──▶ {p}.thumbnails.dead
//!         and the broker itself, for a message that crashed its consumers more than
//!         `x-delivery-limit` times (the job queues dead-letter to {p}.dead too)
//! ```
//!
//! A retried job is a new copy published through `{p}.retry`, whose routing key is the job
//! queue's name: the headers exchange picks the delay queue from the
//! `x-stayler-retry-delay` header and ignores that key, and when the delay queue's TTL
//! dead-letters the copy to the default exchange, the key routes it straight back to the job
//! queue. One delay queue per configured delay is shared by every job queue, so adding a
//! job queue adds no delay queue. Everything is durable and declared idempotently at
//! start-up; quorum queue arguments are fixed at creation, so changing
//! `rabbitmq.maxAttempts` later needs the job queues deleted (or a policy) first.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

use super::connection::{call, close_channel};
use super::{BrokerConnection, BrokerError, Outgoing};
use crate::config::RabbitConfig;
use crate::events::{
    BackupBatchRequested, BackupCheckRequested, BackupRequested, BackupRetentionRequested, BackupVerifyRequested,
    Event, HealthCheckRequested, ImageDeleted, ImageFailed, ImageProcessed, ImageUploaded, MetricsRollupRequested,
    RestoreRequested,
};
use crate::events::{FileAuditRequested, OwnerErasureRequested, PurgeRequested, SweepRequested};

/// Names of the headers this service sets on job messages.
pub mod headers {
    /// Attempt number of this copy of a job, 1-based; absent on the first.
    pub const ATTEMPT: &str = "x-stayler-attempt";
    /// Picks the delay queue of a retried copy, e.g. `10s`.
    pub const RETRY_DELAY: &str = "x-stayler-retry-delay";
    /// Why the previous attempt failed (on a retried copy) or why the job was given up (in a
    /// dead-letter queue).
    pub const ERROR: &str = "x-stayler-error";
    /// Attempts made before the job was given up.
    pub const ATTEMPTS: &str = "x-stayler-attempts";
    /// The job queue the job was given up on.
    pub const QUEUE: &str = "x-stayler-queue";
    /// When the job was given up, RFC 3339 UTC.
    pub const FAILED_AT: &str = "x-stayler-failed-at";
}

/// Headers the broker adds when it dead-letters or redelivers; a copy we publish starts
/// without them so they describe only its own journey.
const BROKER_HEADERS: [&str; 4] = ["x-death", "x-delivery-count", "x-first-death-", "x-last-death-"];

/// Longest failure text kept in a header, in bytes.
const MAX_ERROR_BYTES: usize = 2048;

/// The exchange a job queue's events arrive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// `{prefix}.events`: the service's own jobs.
    Events,
    /// `{prefix}.notifications`: the events published for the main app.
    Notifications,
}

macro_rules! event_source {
    () => {
        EventSource::Events
    };
    (notifications) => {
        EventSource::Notifications
    };
}

macro_rules! job_queues {
    ($($(#[$doc:meta])* $variant:ident => $name:literal bound to [$($event:ty),+ $(,)?] $(from $source:ident)?;)+) => {
        /// A kind of job, with its durable queue. Adding one is one line here; its handler
        /// goes in the worker.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum JobQueue {
            $($(#[$doc])* $variant,)+
        }

        impl JobQueue {
            pub const ALL: &'static [JobQueue] = &[$(JobQueue::$variant),+];

            /// The queue name without the deployment prefix.
            pub fn name(self) -> &'static str {
                match self {
                    $(JobQueue::$variant => $name,)+
                }
            }

            /// The event types routed to this queue.
            pub fn event_types(self) -> &'static [&'static str] {
                match self {
                    $(JobQueue::$variant => &[$(<$event as Event>::TYPE),+],)+
                }
            }

            /// The exchange those events arrive from.
            pub fn source(self) -> EventSource {
                match self {
                    $(JobQueue::$variant => event_source!($($source)?),)+
                }
            }
        }
    };
}

job_queues! {
    /// Makes the configured thumbnails of a new original.
    Thumbnails => "thumbnails" bound to [ImageUploaded];
    /// Verifies a stored original against the checksum recorded at upload.
    Checksums => "checksums" bound to [ImageUploaded];
    /// Removes the original and thumbnails of a deleted image from disk.
    Deletions => "deletions" bound to [ImageDeleted];
    /// Plans backups, archives their batches, checks their archives, and restores.
    Backups => "backups" bound to [BackupRequested, BackupBatchRequested, BackupCheckRequested, BackupVerifyRequested, RestoreRequested];
    /// Housekeeping: backup retention, the sweeper, the purge of old rows, the file audit,
    /// owner erasures.
    Maintenance => "maintenance" bound to [BackupRetentionRequested, SweepRequested, PurgeRequested, FileAuditRequested, OwnerErasureRequested];
    /// Health checks and metric roll-ups.
    Health => "health" bound to [HealthCheckRequested, MetricsRollupRequested];
    /// Posts the notifications to the main app's webhook endpoints (`webhooks.endpoints`).
    Webhooks => "webhooks" bound to [ImageProcessed, ImageFailed] from notifications;
}

/// Why and when a job was given up, as carried by its dead-lettered copy.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub queue: JobQueue,
    pub attempts: u32,
    pub error: &'a str,
}

/// The names and arguments of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    max_attempts: u32,
    /// Back-off before each retry, in seconds; the last one repeats.
    retry_delays_secs: Vec<u64>,
}

impl Topology {
    pub fn new(config: &RabbitConfig) -> Self {
        let retry_delays_secs =
            if config.retry_delays_secs.is_empty() { vec![1] } else { config.retry_delays_secs.clone() };
        Self { prefix: config.prefix.clone(), max_attempts: config.max_attempts.max(1), retry_delays_secs }
    }

    /// The topic exchange every event is published to (`{prefix}.events`).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The topic exchange of the events published for the main app (`{prefix}.notifications`,
    /// [`crate::events::NOTIFICATION_TYPES`]): it binds its own queues there by event type.
    pub fn notifications_exchange(&self) -> String {
        format!("{}.notifications", self.prefix)
    }

    /// The headers exchange in front of the delay queues (`{prefix}.retry`).
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// The direct exchange in front of the dead-letter queues (`{prefix}.dead`).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// A job queue (`{prefix}.thumbnails`).
    pub fn queue(&self, queue: JobQueue) -> String {
        format!("{}.{}", self.prefix, queue.name())
    }

    /// Where a job queue's given-up jobs wait for an operator (`{prefix}.thumbnails.dead`).
    pub fn dead_letter_queue(&self, queue: JobQueue) -> String {
        format!("{}.{}.dead", self.prefix, queue.name())
    }

    /// The delay queue holding retried copies for `delay_secs` (`{prefix}.retry.10s`).
    pub fn retry_queue(&self, delay_secs: u64) -> String {
        format!("{}.retry.{}", self.prefix, delay_label(delay_secs))
    }

    /// Attempts a job gets before it is dead-lettered (`rabbitmq.maxAttempts`).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Back-off after failed attempt `attempt` (1-based), in seconds.
    pub fn retry_delay_secs(&self, attempt: u32) -> u64 {
        let index = (attempt.max(1) as usize - 1).min(self.retry_delays_secs.len() - 1);
        self.retry_delays_secs[index]
    }

    /// A persistent copy of a failed job that comes back to `queue` as attempt `attempt + 1`
    /// once the back-off after `attempt` has passed.
    pub fn retry_message(
        &self,
        queue: JobQueue,
        properties: &BasicProperties,
        body: Vec<u8>,
        attempt: u32,
        error: &str,
    ) -> Outgoing {
        let delay = delay_label(self.retry_delay_secs(attempt));
        let mut table = copied_headers(properties);
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt.saturating_add(1))));
        table.insert(headers::RETRY_DELAY.into(), long_string(&delay));
        table.insert(headers::ERROR.into(), long_string(truncate(error)));
        Outgoing {
            exchange: self.retry_exchange(),
            routing_key: self.queue(queue),
            body,
            properties: persistent(properties).with_headers(table),
            mandatory: true,
        }
    }

    /// A persistent copy of a given-up job for its dead-letter queue, with the reason in its
    /// headers for the operator.
    pub fn dead_letter_message(&self, properties: &BasicProperties, body: Vec<u8>, dead: &DeadLetter<'_>) -> Outgoing {
        let mut table = copied_headers(properties);
        table.insert(headers::ERROR.into(), long_string(truncate(dead.error)));
        table.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(i64::from(dead.attempts)));
        table.insert(headers::QUEUE.into(), long_string(&self.queue(dead.queue)));
        table.insert(headers::FAILED_AT.into(), long_string(&Utc::now().to_rfc3339()));
        Outgoing {
            exchange: self.dead_letter_exchange(),
            routing_key: self.queue(dead.queue),
            body,
            properties: persistent(properties).with_headers(table),
            mandatory: true,
        }
    }

    /// Declares every exchange, queue and binding; a no-op when they exist with the same
    /// arguments. Runs at start-up of the API and the worker, on a connection of its own.
    pub async fn declare(&self, config: &RabbitConfig) -> Result<(), BrokerError> {
        let connection = BrokerConnection::open(config, "stayler topology").await?;
        let result = self.declare_on(&connection).await;
        connection.close().await;
        result
    }

    /// Declares the topology, retrying while the broker is unreachable (it may start after
    /// us, or be down for a while). False if `shutdown` came first; an error if the broker
    /// refused the declaration, which retrying cannot fix.
    pub async fn declare_when_ready(
        &self,
        config: &RabbitConfig,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, BrokerError> {
        loop {
            match self.declare(config).await {
                Ok(()) => return Ok(true),
                Err(error) if error.is_refusal() => {
                    tracing::error!(error = %error, "RabbitMQ refused the topology");
                    return Err(error);
                }
                Err(error) => {
                    let delay = super::reconnect_delay(config);
                    tracing::warn!(error = %error, broker.retry_in_ms = delay.as_millis() as u64, "RabbitMQ not ready");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(false),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn declare_on(&self, connection: &BrokerConnection) -> Result<(), BrokerError> {
        let timeout = connection.call_timeout();
        let channel = connection.open_channel().await?;
        let exchanges = [
            (self.events_exchange(), ExchangeKind::Topic),
            (self.notifications_exchange(), ExchangeKind::Topic),
            (self.retry_exchange(), ExchangeKind::Headers),
            (self.dead_letter_exchange(), ExchangeKind::Direct),
        ];
        for (name, kind) in exchanges {
            let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            let declared = channel.exchange_declare(name.as_str().into(), kind, options, FieldTable::default());
            call(timeout, "exchange.declare", declared).await.map_err(declaring(&name))?;
        }
        for &queue in JobQueue::ALL {
            let name = self.queue(queue);
            let mut arguments = quorum();
            arguments.insert("x-dead-letter-exchange".into(), long_string(&self.dead_letter_exchange()));
            arguments.insert("x-dead-letter-routing-key".into(), long_string(&name));
            // Quorum queues have no delivery limit before RabbitMQ 4: without one, a message
            // that kills every worker that takes it would be redelivered for ever.
            arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.max_attempts)));
            declare_queue(&channel, timeout, &name, arguments).await?;
            let source = match queue.source() {
                EventSource::Events => self.events_exchange(),
                EventSource::Notifications => self.notifications_exchange(),
            };
            for event_type in queue.event_types() {
                bind(&channel, timeout, &name, &source, event_type, FieldTable::default()).await?;
            }
            let dead = self.dead_letter_queue(queue);
            declare_queue(&channel, timeout, &dead, quorum()).await?;
            bind(&channel, timeout, &dead, &self.dead_letter_exchange(), &name, FieldTable::default()).await?;
        }
        for delay_secs in self.distinct_delays() {
            let name = self.retry_queue(delay_secs);
            let mut arguments = quorum();
            let ttl_ms = i64::try_from(delay_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
            // The default exchange: an expired copy keeps the routing key it was published
            // with, which is the name of the job queue it returns to.
            arguments.insert("x-dead-letter-exchange".into(), long_string(""));
            declare_queue(&channel, timeout, &name, arguments).await?;
            let mut matching = FieldTable::default();
            matching.insert("x-match".into(), long_string("all"));
            matching.insert(headers::RETRY_DELAY.into(), long_string(&delay_label(delay_secs)));
            bind(&channel, timeout, &name, &self.retry_exchange(), "", matching).await?;
        }
        close_channel(&channel, timeout).await;
        Ok(())
    }

    /// Deletes every queue (with its messages) and exchange of this topology; for tests and
    /// for retiring a deployment prefix. Deleting what is already gone is a no-op. A failed
    /// deletion does not stop the others: the first error is returned once all were tried.
    pub async fn delete(&self, config: &RabbitConfig) -> Result<(), BrokerError> {
        let connection = BrokerConnection::open(config, "stayler topology").await?;
        let timeout = connection.call_timeout();
        let mut first_error = None;
        let mut channel = None;
        let queues = self.queue_names().into_iter().map(|name| (true, name));
        let exchanges =
            [self.events_exchange(), self.notifications_exchange(), self.retry_exchange(), self.dead_letter_exchange()];
        for (is_queue, name) in queues.chain(exchanges.into_iter().map(|name| (false, name))) {
            // A failed call closes its channel: the next deletion gets a fresh one.
            if channel.as_ref().is_none_or(|channel: &Channel| !channel.status().connected()) {
                channel = match connection.open_channel().await {
                    Ok(channel) => Some(channel),
                    Err(error) => return Err(first_error.unwrap_or(error)),
                };
            }
            let open = channel.as_ref().expect("opened above");
            let deleted = if is_queue {
                call(timeout, "queue.delete", open.queue_delete(name.as_str().into(), QueueDeleteOptions::default()))
                    .await
                    .map(drop)
            } else {
                let deleted = open.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default());
                call(timeout, "exchange.delete", deleted).await
            };
            if let Err(error) = deleted {
                first_error.get_or_insert(error);
            }
        }
        if let Some(channel) = &channel {
            close_channel(channel, timeout).await;
        }
        connection.close().await;
        first_error.map_or(Ok(()), Err)
    }

    /// The configured retry delays without repeats, shortest first, in seconds: one delay
    /// queue each.
    pub fn distinct_delays(&self) -> impl Iterator<Item = u64> + use<> {
        self.retry_delays_secs.iter().copied().collect::<BTreeSet<_>>().into_iter()
    }

    /// Every queue this topology declares: each job queue followed by its dead-letter
    /// queue, then the delay queues.
    pub fn queue_names(&self) -> Vec<String> {
        let mut queues: Vec<String> =
            JobQueue::ALL.iter().flat_map(|&q| [self.queue(q), self.dead_letter_queue(q)]).collect();
        queues.extend(self.distinct_delays().map(|delay| self.retry_queue(delay)));
        queues
    }
}

/// The 1-based attempt number of a delivered job, from [`headers::ATTEMPT`].
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    let value = properties.headers().as_ref().and_then(|table| table.inner().get(headers::ATTEMPT));
    let attempt = match value {
        Some(AMQPValue::ShortShortUInt(n)) => Some(u32::from(*n)),
        Some(AMQPValue::ShortUInt(n)) => Some(u32::from(*n)),
        Some(AMQPValue::LongUInt(n)) => Some(*n),
        Some(AMQPValue::ShortShortInt(n)) => u32::try_from(*n).ok(),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).ok(),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).ok(),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok().and_then(|s| s.parse().ok()),
        Some(AMQPValue::ShortString(s)) => s.as_str().parse().ok(),
        _ => None,
    };
    attempt.unwrap_or(1).max(1)
}

fn delay_label(delay_secs: u64) -> String {
    format!("{delay_secs}s")
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_ERROR_BYTES {
        return text;
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn copied_headers(properties: &BasicProperties) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = properties.headers() {
        for (key, value) in original {
            if !BROKER_HEADERS.iter().any(|broker| key.as_str().starts_with(broker)) {
                table.insert(ShortString::from(key.as_str()), value.clone());
            }
        }
    }
    table
}

/// The original properties (message id, type, content type…), made persistent.
fn persistent(properties: &BasicProperties) -> BasicProperties {
    properties.clone().with_delivery_mode(2)
}

fn declaring(object: &str) -> impl FnOnce(BrokerError) -> BrokerError + '_ {
    move |error| BrokerError::Declare { object: object.to_owned(), error: Box::new(error) }
}

async fn declare_queue(
    channel: &Channel,
    timeout: Duration,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    call(timeout, "queue.declare", channel.queue_declare(name.into(), options, arguments))
        .await
        .map_err(declaring(name))?;
    Ok(())
}

async fn bind(
    channel: &Channel,
    timeout: Duration,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let bound =
        channel.queue_bind(queue.into(), exchange.into(), routing_key.into(), QueueBindOptions::default(), arguments);
    call(timeout, "queue.bind", bound).await.map_err(declaring(queue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(delays: Vec<u64>) -> Topology {
        let config = RabbitConfig { prefix: "t1".to_owned(), retry_delays_secs: delays, ..RabbitConfig::default() };
        Topology::new(&config)
    }

    #[test]
    fn names_follow_the_prefix() {
        let topology = topology(vec![1, 10]);
        assert_eq!(topology.events_exchange(), "t1.events");
        assert_eq!(topology.queue(JobQueue::Thumbnails), "t1.thumbnails");
        assert_eq!(topology.dead_letter_queue(JobQueue::Checksums), "t1.checksums.dead");
        assert_eq!(topology.retry_queue(10), "t1.retry.10s");
    }

    #[test]
    fn every_declared_queue_is_named_once() {
        let topology = topology(vec![1, 10, 10]);
        let names = topology.queue_names();
        assert_eq!(names.len(), 2 * JobQueue::ALL.len() + 2);
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len());
        assert!(names.contains(&"t1.health.dead".to_owned()) && names.contains(&"t1.retry.10s".to_owned()));
    }

    #[test]
    fn the_last_retry_delay_repeats() {
        let topology = topology(vec![1, 10, 60]);
        let delays: Vec<u64> = (1..=5).map(|attempt| topology.retry_delay_secs(attempt)).collect();
        assert_eq!(delays, [1, 10, 60, 60, 60]);
        assert_eq!(topology.distinct_delays().collect::<Vec<_>>(), [1, 10, 60]);
    }

    #[test]
    fn a_retried_copy_counts_the_next_attempt_and_keeps_its_identity() {
        let topology = topology(vec![5]);
        let original = BasicProperties::default().with_message_id("m1".into()).with_type("image.uploaded".into());
        let copy = topology.retry_message(JobQueue::Checksums, &original, b"{}".to_vec(), 1, "disk busy");
        assert_eq!(copy.exchange, "t1.retry");
        assert_eq!(copy.routing_key, "t1.checksums");
        assert_eq!(copy.properties.message_id().as_ref().map(ShortString::as_str), Some("m1"));
        assert_eq!(copy.properties.delivery_mode(), &Some(2));
        assert_eq!(attempt_of(&copy.properties), 2);
        let again = topology.retry_message(JobQueue::Checksums, &copy.properties, b"{}".to_vec(), 2, "still busy");
        assert_eq!(attempt_of(&again.properties), 3);
    }

    #[test]
    fn a_message_without_the_header_is_the_first_attempt() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate(&text);
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
