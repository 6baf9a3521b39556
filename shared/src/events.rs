//! Events and jobs: what travels through the outbox and RabbitMQ.
//!
//! Every message is a JSON envelope with `id`, `type`, `version`, `occurred_at` and a
//! payload. The envelope id is also the AMQP `message_id`, so consumers can de-duplicate.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{BackupId, ImageId, ImageType, OwnerId, OwnerType};

/// A payload with its name and schema version.
pub trait Event: Serialize + DeserializeOwned + Send + Sync {
    /// Routing key and `type` field: `{subject}.{past participle}`, the subject being what
    /// changed or what is asked for (`image.uploaded`, `restore.requested`,
    /// `file_audit.requested`), in snake case.
    const TYPE: &'static str;
    const VERSION: u16;
}

/// Event types as they were named before the naming rule, and their names now. Events
/// queued by an older release (in the outbox, a job queue, a retry or a dead-letter queue)
/// still carry the old name; consumers read it through [`current_type`]. Migration 0018
/// renames the outbox's unpublished rows.
pub const RENAMED_TYPES: [(&str, &str); 9] = [
    ("backup.batch", BackupBatchRequested::TYPE),
    ("backup.verify_requested", BackupCheckRequested::TYPE),
    ("backup.verify_due", BackupVerifyRequested::TYPE),
    ("maintenance.backup_retention", BackupRetentionRequested::TYPE),
    ("health.check", HealthCheckRequested::TYPE),
    ("metrics.rollup", MetricsRollupRequested::TYPE),
    ("maintenance.sweep", SweepRequested::TYPE),
    ("maintenance.purge", PurgeRequested::TYPE),
    ("maintenance.file_audit", FileAuditRequested::TYPE),
];

/// The current name of event type `event_type` (itself unless it was renamed).
pub fn current_type(event_type: &str) -> &str {
    RENAMED_TYPES.iter().find(|(old, _)| *old == event_type).map_or(event_type, |(_, new)| new)
}

/// The JSON body of every message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u16,
    pub occurred_at: DateTime<Utc>,
    /// The request (or the job of a request) that caused the event, to follow it through
    /// the logs; absent for events of the scheduler and of jobs without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub payload: T,
}

impl<T: Event> Envelope<T> {
    /// A new envelope, carrying the current request id (`crate::telemetry`).
    pub fn new(payload: T) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: T::TYPE.to_owned(),
            version: T::VERSION,
            occurred_at: Utc::now(),
            request_id: crate::telemetry::current_request_id(),
            payload,
        }
    }
}

/// An original was stored and committed; thumbnails and verification are due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUploaded {
    pub image_id: ImageId,
}

impl Event for ImageUploaded {
    const TYPE: &'static str = "image.uploaded";
    const VERSION: u16 = 1;
}

/// An image was deleted (its row is a tombstone from now on); its original and thumbnails
/// are due for removal from disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDeleted {
    pub image_id: ImageId,
}

impl Event for ImageDeleted {
    const TYPE: &'static str = "image.deleted";
    const VERSION: u16 = 1;
}

/// The events published for the main app on the notifications exchange rather than as jobs:
/// no queue of ours is bound to them, and one nobody has bound a queue to is dropped by the
/// broker instead of held in the outbox. Their schema is a published contract
/// (docs/events.md): a change that breaks a reader raises the version.
pub const NOTIFICATION_TYPES: [&str; 2] = [ImageProcessed::TYPE, ImageFailed::TYPE];

/// Whether `event_type` goes to the notifications exchange.
pub fn is_notification(event_type: &str) -> bool {
    NOTIFICATION_TYPES.contains(&event_type)
}

/// An image is ready to show: every configured thumbnail is made and the original is
/// verified against its upload checksum. Published once per image, when the later of the
/// two steps commits; again only if it failed meanwhile and was reprocessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProcessed {
    pub image_id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    /// SHA-256 of the original, lowercase hex.
    pub checksum: String,
    pub mime_type: String,
    pub file_size: i64,
    pub width: i32,
    pub height: i32,
    /// The thumbnails, smallest first.
    pub variants: Vec<ProcessedVariant>,
}

impl Event for ImageProcessed {
    const TYPE: &'static str = "image.processed";
    const VERSION: u16 = 1;
}

/// One thumbnail of a processed image: the `variant` a signed URL is asked for by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessedVariant {
    pub name: String,
    pub mime_type: String,
    pub file_size: i64,
    pub width: i32,
    pub height: i32,
}

/// An image's processing failed with a verdict that retrying cannot change: its original
/// cannot be decoded, its stored bytes no longer match their checksum, or the sweeper gave
/// up waiting. Infrastructure errors are retried and never published as failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFailed {
    pub image_id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    /// The image's `processing_error`: a stable code, a colon and a short sentence.
    pub reason: String,
}

impl Event for ImageFailed {
    const TYPE: &'static str = "image.failed";
    const VERSION: u16 = 1;
}

/// A backup was requested (its `storage_backups` row is pending): plan it into batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequested {
    pub backup_id: BackupId,
}

impl Event for BackupRequested {
    const TYPE: &'static str = "backup.requested";
    const VERSION: u16 = 1;
}

/// One batch of a planned backup is due: archive, verify and record its images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupBatchRequested {
    pub backup_id: BackupId,
    pub batch: i32,
}

impl Event for BackupBatchRequested {
    const TYPE: &'static str = "backup_batch.requested";
    const VERSION: u16 = 1;
}

/// A restore was requested through the API (its `storage_restores` row is pending).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequested {
    pub restore_id: Uuid,
}

impl Event for RestoreRequested {
    const TYPE: &'static str = "restore.requested";
    const VERSION: u16 = 1;
}

/// An integrity check of a backup's archives against its manifest is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCheckRequested {
    pub backup_id: BackupId,
}

impl Event for BackupCheckRequested {
    const TYPE: &'static str = "backup_check.requested";
    const VERSION: u16 = 1;
}

/// The rolling re-check of finished backups is due (`scheduler.backupVerify`): the backups
/// checked longest ago (never-checked first) are verified, `maintenance.backupVerifyPerRun`
/// of them, so that every backup is re-read from disk in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVerifyRequested {
    /// The scheduled slot. A backup checked after it is skipped, so a duplicate delivery
    /// reads nothing twice.
    pub requested_at: DateTime<Utc>,
}

impl Event for BackupVerifyRequested {
    const TYPE: &'static str = "backup_verify.requested";
    const VERSION: u16 = 1;
}

/// Backup retention is due: remove expired backups, carrying last copies forward first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRetentionRequested {
    /// The scheduled slot, or when an admin asked.
    pub requested_at: DateTime<Utc>,
}

impl Event for BackupRetentionRequested {
    const TYPE: &'static str = "backup_retention.requested";
    const VERSION: u16 = 1;
}

/// A health check run is due: measure, record in `storage_health_checks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckRequested {
    /// The scheduled slot; a run that waited in the queue past the staleness limit is skipped
    /// (a newer one is behind it).
    pub requested_at: DateTime<Utc>,
}

impl Event for HealthCheckRequested {
    const TYPE: &'static str = "health_check.requested";
    const VERSION: u16 = 1;
}

/// A roll-up of recent periods into `storage_metrics` is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsRollupRequested {
    /// The scheduled slot: periods ending at or before it are rolled up.
    pub requested_at: DateTime<Utc>,
}

impl Event for MetricsRollupRequested {
    const TYPE: &'static str = "metrics_rollup.requested";
    const VERSION: u16 = 1;
}

/// The sweeper is due: re-queue images left waiting for thumbnails or verification, and the
/// unfinished batches of stalled backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRequested {
    /// The scheduled slot, or when an admin asked.
    pub requested_at: DateTime<Utc>,
}

impl Event for SweepRequested {
    const TYPE: &'static str = "sweep.requested";
    const VERSION: u16 = 1;
}

/// The purge is due: expired signed URLs and old bookkeeping rows are deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequested {
    /// The scheduled slot, or when an admin asked.
    pub requested_at: DateTime<Utc>,
}

impl Event for PurgeRequested {
    const TYPE: &'static str = "purge.requested";
    const VERSION: u16 = 1;
}

/// The file audit is due: orphan files are quarantined, missing originals reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAuditRequested {
    /// The scheduled slot, or when an admin asked.
    pub requested_at: DateTime<Utc>,
}

impl Event for FileAuditRequested {
    const TYPE: &'static str = "file_audit.requested";
    const VERSION: u16 = 1;
}

/// An owner's erasure was requested (its `storage_erasures` row is pending): delete every
/// image of the owner, anonymise their access log rows, remove their other rows, report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerErasureRequested {
    pub erasure_id: Uuid,
}

impl Event for OwnerErasureRequested {
    const TYPE: &'static str = "owner_erasure.requested";
    const VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let envelope = Envelope::new(ImageUploaded { image_id: ImageId(Uuid::nil()) });
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["type"], "image.uploaded");
        assert_eq!(json["version"], 1);
        assert_eq!(json["payload"]["image_id"], Uuid::nil().to_string());
        assert!(json["occurred_at"].is_string());
        let back: Envelope<ImageUploaded> = serde_json::from_value(json).unwrap();
        assert_eq!(back.id, envelope.id);
    }

    #[test]
    fn renamed_types_read_as_their_new_names_and_others_as_themselves() {
        assert_eq!(current_type("maintenance.sweep"), SweepRequested::TYPE);
        assert_eq!(current_type("backup.verify_due"), "backup_verify.requested");
        assert_eq!(current_type("backup.verify_requested"), "backup_check.requested");
        assert_eq!(current_type(ImageUploaded::TYPE), ImageUploaded::TYPE);
        assert_eq!(current_type("anything.else"), "anything.else");
        for (old, new) in RENAMED_TYPES {
            assert!(RENAMED_TYPES.iter().all(|(o, _)| *o != new), "{old} → {new} is final");
        }
    }
}
