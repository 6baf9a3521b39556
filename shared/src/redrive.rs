//! Dead letters for operators: the depths of the job queues and their dead-letter queues,
//! a look at the jobs given up on, and their re-drive back to their job queue with a full
//! set of attempts (after the cause was fixed: a disk back, a bug deployed away).
//!
//! A look takes messages with `basic.get` and hands them back with `basic.nack` (requeue):
//! the dead-letter queues have no `x-delivery-limit` and no dead-letter exchange, so a look
//! can neither drop nor move a message, however often it is repeated (RabbitMQ 4.0 to 4.2
//! need a `delivery-limit: -1` policy on them for that: docs/operations.md). A re-drive publishes
//! each copy with a publisher confirm before it acks the dead one: a failure between the two
//! leaves a duplicate (handlers are idempotent), never a lost job.

use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use uuid::Uuid;

use crate::broker::{BrokerConnection, BrokerError, JobQueue, QueueDepth, Topology, call, headers};
use crate::config::RabbitConfig;

/// Most dead letters one look returns, and most jobs one re-drive moves.
pub const MAX_BATCH: u32 = 1000;

/// Headers a re-driven copy starts without: the failure and attempt bookkeeping of this
/// service, and what the broker adds when it dead-letters or redelivers.
const CLEARED_HEADERS: [&str; 10] = [
    headers::ATTEMPT,
    headers::RETRY_DELAY,
    headers::ERROR,
    headers::ATTEMPTS,
    headers::QUEUE,
    headers::FAILED_AT,
    "x-death",
    "x-delivery-count",
    "x-first-death-",
    "x-last-death-",
];

/// A job queue and its dead-letter queue, as the broker counts them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: JobQueue,
    /// The job queue's full name (`stayler.thumbnails`).
    pub name: String,
    pub jobs: QueueDepth,
    /// The dead-letter queue's full name (`stayler.thumbnails.dead`).
    pub dead_name: String,
    pub dead: QueueDepth,
}

/// One job waiting in a dead-letter queue, as its headers and body describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// The event id (`message_id`), the same on every copy of the job.
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// `payload.image_id` of the event, for jobs about one image.
    pub image_id: Option<Uuid>,
    /// Why the job was given up (`x-stayler-error`); `None` for a job the broker itself
    /// dead-lettered after too many deliveries.
    pub reason: Option<String>,
    /// Attempts made before it was given up (`x-stayler-attempts`).
    pub attempts: Option<u32>,
    /// When it was given up (`x-stayler-failed-at`).
    pub failed_at: Option<DateTime<Utc>>,
}

/// The oldest jobs of a dead-letter queue, and how many wait there in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    /// Jobs in the dead-letter queue, listed or not.
    pub waiting: u32,
    /// The oldest first.
    pub oldest: Vec<DeadLetterSummary>,
}

/// What a re-drive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Redriven {
    /// Jobs moved back to their job queue.
    pub moved: u32,
    /// Dead letters left behind.
    pub remaining: u32,
}

/// Why a re-drive stopped early; `moved` jobs went back before it did.
#[derive(Debug, thiserror::Error)]
#[error("re-drive stopped after {moved} job(s): {error}")]
pub struct RedriveError {
    pub moved: u32,
    #[source]
    pub error: BrokerError,
}

/// The depth and consumers of every job queue and its dead-letter queue.
pub async fn queue_stats(config: &RabbitConfig) -> Result<Vec<QueueStats>, BrokerError> {
    let topology = Topology::new(config);
    let connection = BrokerConnection::open(config, "stayler operations").await?;
    let mut stats = Vec::with_capacity(JobQueue::ALL.len());
    let mut failed = None;
    for &queue in JobQueue::ALL {
        let (name, dead_name) = (topology.queue(queue), topology.dead_letter_queue(queue));
        let depths = async {
            Ok::<_, BrokerError>((connection.queue_depth(&name).await?, connection.queue_depth(&dead_name).await?))
        };
        match depths.await {
            Ok((jobs, dead)) => stats.push(QueueStats { queue, name, jobs, dead_name, dead }),
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    connection.close().await;
    failed.map_or(Ok(stats), Err)
}

/// Up to `limit` (at most [`MAX_BATCH`]) jobs of `queue`'s dead-letter queue, oldest first,
/// left where they are.
pub async fn dead_letters(config: &RabbitConfig, queue: JobQueue, limit: u32) -> Result<DeadLetters, BrokerError> {
    let dead_name = Topology::new(config).dead_letter_queue(queue);
    let connection = BrokerConnection::open(config, "stayler operations").await?;
    let result = look(&connection, &dead_name, limit.min(MAX_BATCH)).await;
    connection.close().await;
    result
}

async fn look(connection: &BrokerConnection, dead_name: &str, limit: u32) -> Result<DeadLetters, BrokerError> {
    let waiting = connection.queue_depth(dead_name).await?.messages;
    let timeout = connection.call_timeout();
    let channel = connection.open_channel().await?;
    let mut found = Vec::new();
    let mut last_tag = None;
    while found.len() < limit as usize {
        let got = call(timeout, "basic.get", channel.basic_get(dead_name.into(), BasicGetOptions::default())).await?;
        let Some(message) = got else { break };
        last_tag = Some(message.delivery.delivery_tag);
        found.push(summarize(&message.delivery.properties, &message.delivery.data));
    }
    if let Some(tag) = last_tag {
        let options = BasicNackOptions { multiple: true, requeue: true };
        call(timeout, "basic.nack", channel.basic_nack(tag, options)).await?;
    }
    close(&channel, timeout).await;
    Ok(DeadLetters { waiting: waiting.max(found.len() as u32), oldest: found })
}

/// Moves up to `limit` (at most [`MAX_BATCH`]) jobs, oldest first, from `queue`'s
/// dead-letter queue back to `queue`: same message id, properties and body, without the
/// failure headers, so the job starts again at attempt 1 with all of
/// `rabbitmq.maxAttempts`.
pub async fn redrive(config: &RabbitConfig, queue: JobQueue, limit: u32) -> Result<Redriven, RedriveError> {
    let topology = Topology::new(config);
    let connection =
        BrokerConnection::open(config, "stayler re-drive").await.map_err(|error| RedriveError { moved: 0, error })?;
    let mut moved = 0;
    let result = move_jobs(&connection, &topology, queue, limit.min(MAX_BATCH), &mut moved).await;
    connection.close().await;
    result.map_err(|error| RedriveError { moved, error })
}

async fn move_jobs(
    connection: &BrokerConnection,
    topology: &Topology,
    queue: JobQueue,
    limit: u32,
    moved: &mut u32,
) -> Result<Redriven, BrokerError> {
    let timeout = connection.call_timeout();
    let (dead_name, job_queue) = (topology.dead_letter_queue(queue), topology.queue(queue));
    let channel = connection.open_channel().await?;
    call(timeout, "confirm.select", channel.confirm_select(ConfirmSelectOptions::default())).await?;
    while *moved < limit {
        let got = call(timeout, "basic.get", channel.basic_get(dead_name.as_str().into(), BasicGetOptions::default()))
            .await?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        // The default exchange routes by queue name: straight to the job queue, whatever
        // bindings the event type has, so a job of one queue never reaches another's.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let properties = fresh_properties(&delivery.properties);
        let published =
            channel.basic_publish("".into(), job_queue.as_str().into(), options, &delivery.data, properties);
        let confirm = call(timeout, "basic.publish", published).await?;
        let confirmed = match call(timeout, "publisher confirm", confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(BrokerError::Unroutable { reply_text: returned.reply_text.to_string() })
            }
            Confirmation::Nack(None) => Err(BrokerError::Nacked),
            Confirmation::NotRequested => Err(BrokerError::Unconfirmed),
        };
        if let Err(error) = confirmed {
            let options = BasicNackOptions { multiple: false, requeue: true };
            let _ = call(timeout, "basic.nack", channel.basic_nack(delivery.delivery_tag, options)).await;
            return Err(error);
        }
        call(timeout, "basic.ack", channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default())).await?;
        *moved += 1;
        tracing::info!(
            queue = queue.name(),
            message.id = delivery.properties.message_id().as_ref().map(ShortString::as_str).unwrap_or(""),
            "re-drove a dead letter"
        );
    }
    close(&channel, timeout).await;
    let remaining = connection.queue_depth(&dead_name).await?.messages;
    Ok(Redriven { moved: *moved, remaining })
}

/// The properties of a dead letter, persistent, with [`CLEARED_HEADERS`] left out.
fn fresh_properties(properties: &BasicProperties) -> BasicProperties {
    let mut table = FieldTable::default();
    if let Some(original) = properties.headers() {
        for (key, value) in original {
            if !CLEARED_HEADERS.iter().any(|cleared| key.as_str().starts_with(cleared)) {
                table.insert(ShortString::from(key.as_str()), value.clone());
            }
        }
    }
    properties.clone().with_delivery_mode(2).with_headers(table)
}

fn summarize(properties: &BasicProperties, body: &[u8]) -> DeadLetterSummary {
    let header = |name: &str| properties.headers().as_ref().and_then(|table| table.inner().get(name).cloned());
    let text = |name: &str| match header(name) {
        Some(AMQPValue::LongString(text)) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(text)) => Some(text.as_str().to_owned()),
        _ => None,
    };
    let attempts = match header(headers::ATTEMPTS) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::LongUInt(n)) => Some(n),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(n).ok(),
        Some(AMQPValue::ShortUInt(n)) => Some(u32::from(n)),
        _ => None,
    };
    let payload: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let image_id = payload
        .as_ref()
        .and_then(|event| event.pointer("/payload/image_id"))
        .and_then(serde_json::Value::as_str)
        .and_then(|id| id.parse().ok());
    let body_type = payload.as_ref().and_then(|event| event.get("type")).and_then(|t| t.as_str().map(str::to_owned));
    DeadLetterSummary {
        message_id: properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
        event_type: properties.kind().as_ref().map(|kind| kind.as_str().to_owned()).or(body_type),
        image_id,
        reason: text(headers::ERROR),
        attempts,
        failed_at: text(headers::FAILED_AT)
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc)),
    }
}

async fn close(channel: &Channel, timeout: std::time::Duration) {
    if channel.status().connected() {
        let _ = call(timeout, "channel.close", channel.close(200, "OK".into())).await;
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::LongString;

    use super::*;
    use crate::broker::{DeadLetter, attempt_of};

    fn dead_copy(attempts: u32) -> lapin::BasicProperties {
        let config = RabbitConfig { prefix: "t1".to_owned(), ..RabbitConfig::default() };
        let topology = Topology::new(&config);
        let original = BasicProperties::default().with_message_id("m1".into()).with_type("image.uploaded".into());
        let retried = topology.retry_message(JobQueue::Thumbnails, &original, b"{}".to_vec(), attempts - 1, "busy");
        let dead = DeadLetter { queue: JobQueue::Thumbnails, attempts, error: "disk gone" };
        let mut copy = topology.dead_letter_message(&retried.properties, b"{}".to_vec(), &dead).properties;
        let mut table = copy.headers().clone().unwrap_or_default();
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        table.insert("x-tenant".into(), AMQPValue::LongString(LongString::from("kept")));
        copy = copy.with_headers(table);
        copy
    }

    #[test]
    fn a_redriven_copy_starts_again_at_the_first_attempt_with_its_identity() {
        let fresh = fresh_properties(&dead_copy(5));
        assert_eq!(attempt_of(&fresh), 1);
        assert_eq!(fresh.message_id().as_ref().map(ShortString::as_str), Some("m1"));
        assert_eq!(fresh.kind().as_ref().map(ShortString::as_str), Some("image.uploaded"));
        assert_eq!(fresh.delivery_mode(), &Some(2));
        let table = fresh.headers().clone().unwrap_or_default();
        let names: Vec<&str> = table.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, ["x-tenant"]);
    }

    #[test]
    fn a_dead_letter_is_summarized_from_its_headers_and_body() {
        let image = Uuid::now_v7();
        let body = serde_json::json!({ "type": "image.uploaded", "payload": { "image_id": image } });
        let summary = summarize(&dead_copy(4), body.to_string().as_bytes());
        assert_eq!(summary.message_id.as_deref(), Some("m1"));
        assert_eq!(summary.event_type.as_deref(), Some("image.uploaded"));
        assert_eq!(summary.image_id, Some(image));
        assert_eq!(summary.reason.as_deref(), Some("disk gone"));
        assert_eq!(summary.attempts, Some(4));
        assert!(summary.failed_at.is_some());
    }

    #[test]
    fn a_dead_letter_without_our_headers_is_summarized_with_what_there_is() {
        let summary = summarize(&BasicProperties::default(), b"not json");
        assert_eq!(
            summary,
            DeadLetterSummary {
                message_id: None,
                event_type: None,
                image_id: None,
                reason: None,
                attempts: None,
                failed_at: None,
            }
        );
    }
}
