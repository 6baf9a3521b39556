//! The domain's enums as clients see them: in answers, and as named enums in the OpenAPI
//! document. Each mirrors its type in `shared` (which knows nothing of HTTP) with the same
//! spelling on the wire, and converts from it.

use poem_openapi::Enum;

/// Who produced an image: a user's own photo, a vendor's clothing photo, or an AI try-on
/// result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::ImageType", rename_all = "lowercase")]
pub enum ImageType {
    User,
    Cloth,
    Result,
}

/// Whether an owner id names a user or a vendor of the main application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::OwnerType", rename_all = "lowercase")]
pub enum OwnerType {
    User,
    Vendor,
}

/// Where an image's thumbnails are: `pending` (being made), `ready`, or `failed` (there
/// will be none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::ThumbnailStatus", rename_all = "lowercase")]
pub enum ThumbnailStatus {
    Pending,
    Ready,
    Failed,
}

/// Where the verification of an original against its upload checksum is: `pending`,
/// `verified`, or `corrupt` (the bytes no longer match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::ChecksumStatus", rename_all = "lowercase")]
pub enum ChecksumStatus {
    Pending,
    Verified,
    Corrupt,
}

/// Where a backup run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::BackupStatus", rename_all = "lowercase")]
pub enum BackupStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// Why a backup ran: the daily schedule, an admin's request, or retention carrying images
/// forward before an old backup is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::BackupTrigger", rename_all = "lowercase")]
pub enum BackupTrigger {
    Scheduled,
    Manual,
    Retention,
}

/// Where a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::RestoreStatus", rename_all = "lowercase")]
pub enum RestoreStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// Whether a restore replaces originals that are present: `missing_only` brings back only
/// missing ones, `overwrite` replaces every selected one by its verified backup copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::RestoreMode", rename_all = "snake_case")]
pub enum RestoreMode {
    MissingOnly,
    Overwrite,
}

/// How well the service, or one of its checks, is doing: `ok`, `degraded` (serving, but an
/// operator should look) or `down` (not serving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::model::HealthStatus", rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Down,
}

/// What a URL lets its holder do: `view` (served inline) or `download` (served as an
/// attachment with the image's file name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::signing::AccessType", rename_all = "lowercase")]
pub enum AccessType {
    View,
    Download,
}

/// What a listing is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SortField {
    CreatedAt,
    FileSize,
    FileName,
    AccessCount,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Whose figures statistics are: one owner's, or everyone's (admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatsScope {
    Owner,
    Global,
}

/// A metric rolled up by the scheduler (`shared::metrics::METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum MetricName {
    Uploads,
    UploadBytes,
    ThumbnailLatencyMs,
    JobFailures,
    QueueDepth,
    DeadLetters,
}

impl MetricName {
    pub const ALL: [Self; 6] = [
        Self::Uploads,
        Self::UploadBytes,
        Self::ThumbnailLatencyMs,
        Self::JobFailures,
        Self::QueueDepth,
        Self::DeadLetters,
    ];
}

/// A periodic job an admin may run now (`shared::periodic::PeriodicJob::ON_DEMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum MaintenanceJob {
    BackupRetention,
    BackupVerify,
    HealthCheck,
    MetricsRollup,
    Sweep,
    Purge,
    FileAudit,
}

impl MaintenanceJob {
    pub const ALL: [Self; 7] = [
        Self::BackupRetention,
        Self::BackupVerify,
        Self::HealthCheck,
        Self::MetricsRollup,
        Self::Sweep,
        Self::Purge,
        Self::FileAudit,
    ];
}

/// The outcome of the last integrity check of a backup's archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum VerifyStatus {
    /// Every archive was present and intact.
    Ok,
    /// Some archive was missing or damaged: see `verify_report`.
    Corrupt,
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use shared::periodic::PeriodicJob;

    use super::*;

    fn spelling(value: &impl ToJSON) -> String {
        value.to_json().and_then(|v| v.as_str().map(str::to_owned)).expect("a string")
    }

    fn serde_spelling(value: &impl serde::Serialize) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn documented_names_are_those_of_shared() {
        let metrics: Vec<_> = MetricName::ALL.iter().map(spelling).collect();
        assert_eq!(metrics, shared::metrics::METRICS);
        let jobs: Vec<_> = MaintenanceJob::ALL.iter().map(spelling).collect();
        let on_demand: Vec<_> = PeriodicJob::ON_DEMAND.iter().map(|job| job.name()).collect();
        assert_eq!(jobs, on_demand);
        for mode in [shared::model::RestoreMode::MissingOnly, shared::model::RestoreMode::Overwrite] {
            assert_eq!(spelling(&RestoreMode::from(mode)), mode.as_str());
        }
        for status in [shared::model::HealthStatus::Ok, shared::model::HealthStatus::Degraded] {
            assert_eq!(spelling(&HealthStatus::from(status)), status.as_str());
        }
        for access in [shared::signing::AccessType::View, shared::signing::AccessType::Download] {
            assert_eq!(spelling(&AccessType::from(access)), access.as_str());
        }
        for kind in [shared::model::ImageType::User, shared::model::ImageType::Cloth, shared::model::ImageType::Result]
        {
            assert_eq!(spelling(&ImageType::from(kind)), serde_spelling(&kind));
        }
        let status = shared::model::ThumbnailStatus::Failed;
        assert_eq!(spelling(&ThumbnailStatus::from(status)), serde_spelling(&status));
        let status = shared::model::ChecksumStatus::Verified;
        assert_eq!(spelling(&ChecksumStatus::from(status)), serde_spelling(&status));
        let trigger = shared::model::BackupTrigger::Retention;
        assert_eq!(spelling(&BackupTrigger::from(trigger)), serde_spelling(&trigger));
    }
}
