//! The operations page and the admin endpoints behind it: `GET /storage/queues` (depth and
//! consumers of every job queue and its dead-letter queue), `GET
//! /storage/queues/{queue}/dead-letters` (the jobs given up on, left in place) and `POST
//! /storage/queues/{queue}/dead-letters/redrive` (moves them back with all their attempts).
//! Each asks RabbitMQ on a connection of its own and answers 503 at once when it is down.
//! The page itself (`GET /storage/ops`) is in [`page`].

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::Claims;
use shared::broker::{BrokerError, JobQueue, QueueDepth, Topology};
use shared::redrive::{self, DeadLetterSummary, MAX_BATCH};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::docs::Checked;
use crate::docs::checked::Bounds;
use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};

pub mod page;

/// Dead letters one look lists unless `limit` says otherwise.
const DEFAULT_LOOK: u32 = 50;
/// Jobs one re-drive moves unless `limit` says otherwise.
const DEFAULT_REDRIVE: u32 = 100;
/// `Retry-After` of a 503 while the broker is down, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

pub struct OperationsApi {
    pub state: AppState,
}

/// A job queue, named without the deployment prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum QueueName {
    Thumbnails,
    Checksums,
    Deletions,
    Backups,
    Maintenance,
    Health,
    Webhooks,
}

impl QueueName {
    pub const ALL: [Self; 7] = [
        Self::Thumbnails,
        Self::Checksums,
        Self::Deletions,
        Self::Backups,
        Self::Maintenance,
        Self::Health,
        Self::Webhooks,
    ];

    fn of(queue: JobQueue) -> Option<Self> {
        Self::ALL.into_iter().find(|name| name.job_queue() == Some(queue))
    }

    fn job_queue(self) -> Option<JobQueue> {
        let spelled = poem_openapi::types::ToJSON::to_json(&self)?;
        JobQueue::ALL.iter().copied().find(|queue| spelled.as_str() == Some(queue.name()))
    }
}

/// The job queues and their dead-letter queues, as RabbitMQ counts them now.
#[derive(Debug, Clone, Object)]
pub struct QueuesView {
    pub queues: Vec<QueueView>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object)]
pub struct QueueView {
    pub queue: QueueName,
    /// The job queue's full name (`stayler.thumbnails`).
    pub name: String,
    /// Jobs ready for a worker (those a worker holds are not counted).
    pub ready: u32,
    /// Workers consuming the job queue.
    pub consumers: u32,
    /// The dead-letter queue's full name (`stayler.thumbnails.dead`).
    pub dead_letter_queue: String,
    /// Jobs given up on, waiting for an operator.
    pub dead_letters: u32,
}

/// Jobs given up on, oldest first, left in their dead-letter queue.
#[derive(Debug, Clone, Object)]
pub struct DeadLettersView {
    pub queue: QueueName,
    pub dead_letter_queue: String,
    /// All the jobs in the dead-letter queue, listed or not.
    pub total: u32,
    pub dead_letters: Vec<DeadLetterView>,
}

#[derive(Debug, Clone, Object)]
pub struct DeadLetterView {
    /// The event id, the same on every copy of the job.
    pub message_id: Option<String>,
    /// The event type (`image.uploaded`).
    pub event_type: Option<String>,
    /// The image the job is about, for image jobs.
    pub image_id: Option<Uuid>,
    /// Why the job was given up; absent when RabbitMQ itself dead-lettered it after too many
    /// deliveries.
    pub reason: Option<String>,
    /// Attempts made before it was given up.
    pub attempts: Option<u32>,
    pub failed_at: Option<DateTime<Utc>>,
}

impl From<DeadLetterSummary> for DeadLetterView {
    fn from(dead: DeadLetterSummary) -> Self {
        Self {
            message_id: dead.message_id,
            event_type: dead.event_type,
            image_id: dead.image_id,
            reason: dead.reason,
            attempts: dead.attempts,
            failed_at: dead.failed_at,
        }
    }
}

/// What a re-drive did.
#[derive(Debug, Clone, Object)]
pub struct RedriveView {
    pub queue: QueueName,
    /// Jobs moved back to the job queue, each with all its attempts again.
    pub moved: u32,
    /// Jobs still in the dead-letter queue.
    pub remaining: u32,
}

/// Dead letters listed by one look: 1 to [`MAX_BATCH`], 50 by default.
pub struct LookLimit;

impl Bounds for LookLimit {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_BATCH as f64);
    const DEFAULT: Option<i64> = Some(DEFAULT_LOOK as i64);
}

/// Jobs moved by one re-drive: 1 to [`MAX_BATCH`], 100 by default.
pub struct RedriveLimit;

impl Bounds for RedriveLimit {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_BATCH as f64);
    const DEFAULT: Option<i64> = Some(DEFAULT_REDRIVE as i64);
}

#[OpenApi]
impl OperationsApi {
    /// Every job queue with its dead-letter queue: jobs ready, consumers, jobs given up on
    /// (admins only; 503 while RabbitMQ is unreachable).
    #[oai(path = "/storage/queues", method = "get", operation_id = "listQueues")]
    async fn queues(&self, _auth: AdminAuth) -> Result<Json<QueuesView>, ApiError> {
        let stats = redrive::queue_stats(&self.state.config.rabbitmq).await.map_err(broker_down)?;
        let queues = stats
            .into_iter()
            .filter_map(|stats| {
                let queue = QueueName::of(stats.queue)?;
                let QueueDepth { messages: ready, consumers } = stats.jobs;
                let dead_letters = stats.dead.messages;
                Some(QueueView {
                    queue,
                    name: stats.name,
                    ready,
                    consumers,
                    dead_letter_queue: stats.dead_name,
                    dead_letters,
                })
            })
            .collect();
        Ok(Json(QueuesView { queues, checked_at: Utc::now() }))
    }

    /// The oldest jobs given up on in a job queue (`limit`: default 50, at most 1000), with
    /// why and when (admins only). Looking leaves them in place.
    #[oai(path = "/storage/queues/:queue/dead-letters", method = "get", operation_id = "listDeadLetters")]
    async fn dead_letters(
        &self,
        _auth: AdminAuth,
        queue: Path<Checked<QueueName>>,
        limit: Query<Option<Checked<u32, LookLimit>>>,
    ) -> Result<Json<DeadLettersView>, ApiError> {
        let (name, queue) = job_queue(&queue.0)?;
        let limit = bounded(limit.0, DEFAULT_LOOK)?;
        let rabbit = &self.state.config.rabbitmq;
        let found = redrive::dead_letters(rabbit, queue, limit).await.map_err(broker_down)?;
        Ok(Json(DeadLettersView {
            queue: name,
            dead_letter_queue: Topology::new(rabbit).dead_letter_queue(queue),
            total: found.waiting,
            dead_letters: found.oldest.into_iter().map(DeadLetterView::from).collect(),
        }))
    }

    /// Moves the oldest jobs given up on in a job queue (`limit`: default 100, at most
    /// 1000) back to it, each with all its attempts again (admins only). Every copy is
    /// confirmed by RabbitMQ before its dead letter is removed: a failure half-way may leave
    /// a duplicate, which the workers shrug off, never a lost job.
    #[oai(path = "/storage/queues/:queue/dead-letters/redrive", method = "post", operation_id = "redriveDeadLetters")]
    async fn redrive(
        &self,
        auth: AdminAuth,
        queue: Path<Checked<QueueName>>,
        limit: Query<Option<Checked<u32, RedriveLimit>>>,
    ) -> Result<Json<RedriveView>, ApiError> {
        let (name, queue) = job_queue(&queue.0)?;
        let limit = bounded(limit.0, DEFAULT_REDRIVE)?;
        let done = match redrive::redrive(&self.state.config.rabbitmq, queue, limit).await {
            Ok(done) => done,
            Err(error) => {
                if error.moved > 0 {
                    tracing::warn!(queue = queue.name(), moved = error.moved, "re-drive stopped half-way");
                    let details = serde_json::json!({"limit": limit, "moved": error.moved, "complete": false});
                    self.record_redrive(&auth.0, queue, details).await;
                }
                return Err(broker_down(error.error));
            }
        };
        let details =
            serde_json::json!({"limit": limit, "moved": done.moved, "remaining": done.remaining, "complete": true});
        self.record_redrive(&auth.0, queue, details).await;
        tracing::info!(queue = queue.name(), moved = done.moved, remaining = done.remaining, admin = %auth.0.sub, "re-drove dead letters");
        Ok(Json(RedriveView { queue: name, moved: done.moved, remaining: done.remaining }))
    }
}

impl OperationsApi {
    /// Records a re-drive in the audit trail. RabbitMQ shares no transaction with the
    /// database, so the entry is written once the jobs have moved; when the database cannot
    /// take it, the move stands (answering an error would invite a second re-drive) and the
    /// entry is logged as an error instead.
    async fn record_redrive(&self, claims: &Claims, queue: JobQueue, details: serde_json::Value) {
        let (actor, target) = (Actor::of(claims), Target::Queue(queue.name()));
        let recorded = audit::record(&self.state.db, &actor, AuditAction::DeadLettersRedriven, target, details.clone());
        if let Err(error) = recorded.await {
            tracing::error!(
                error = %error,
                queue = queue.name(),
                actor = actor.id(),
                details = %details,
                "the audit entry of a re-drive was not recorded"
            );
        }
    }
}

fn job_queue(text: &Checked<QueueName>) -> Result<(QueueName, JobQueue), ApiError> {
    let found = JobQueue::ALL.iter().copied().find(|queue| queue.name() == text.as_str().trim());
    match found.and_then(|queue| Some((QueueName::of(queue)?, queue))) {
        Some(pair) => Ok(pair),
        None => {
            let names: Vec<&str> = JobQueue::ALL.iter().map(|queue| queue.name()).collect();
            let message = format!("no job queue `{}`: one of {}", text.as_str(), names.join(", "));
            Err(ApiError::not_found_code(ErrorCode::NotFound, message))
        }
    }
}

fn bounded<B>(limit: Option<Checked<u32, B>>, default: u32) -> Result<u32, ApiError> {
    let Some(limit) = limit else { return Ok(default) };
    let limit: u32 = limit.parse("limit", "an integer")?;
    if limit == 0 || limit > MAX_BATCH {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, format!("limit must be between 1 and {MAX_BATCH}")));
    }
    Ok(limit)
}

/// 503 `service_unavailable` with `Retry-After`: the broker is unreachable, slow or
/// refused the call.
fn broker_down(error: BrokerError) -> ApiError {
    tracing::warn!(error = %error, "RabbitMQ unavailable for an operations request");
    let error = ErrorDetail {
        code: ErrorCode::ServiceUnavailable,
        message: "RabbitMQ is unavailable; retry shortly".to_owned(),
    };
    ApiError::ServiceUnavailable(Json(ErrorBody { error }), RETRY_AFTER_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_queue_has_its_name_in_the_api() {
        for &queue in JobQueue::ALL {
            let name = QueueName::of(queue).unwrap_or_else(|| panic!("{} has no QueueName", queue.name()));
            assert_eq!(name.job_queue(), Some(queue));
        }
        assert_eq!(QueueName::ALL.len(), JobQueue::ALL.len());
    }
}
