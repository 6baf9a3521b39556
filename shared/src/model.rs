//! The domain's nouns: what an image is to this service (its id, its kind, who owns it),
//! the ids of backups and restores, and the statuses stored for each. This module imports
//! nothing else of the crate, so every other module, the database layer first, can use it
//! without forming a cycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Id of a stored image (UUID v7, so ids sort by upload time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ImageId(pub Uuid);

impl ImageId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ImageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Id of a user or vendor of the main application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct OwnerId(pub Uuid);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who produced the image: a user's own photo, a vendor's clothing photo, or an AI try-on
/// result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ImageType {
    User,
    Cloth,
    Result,
}

/// Whether an owner id names a user or a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum OwnerType {
    User,
    Vendor,
}

/// The owner of an image, with its kind: paths and quotas depend on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub id: OwnerId,
    pub kind: OwnerType,
}

/// Id of one backup run (UUID v7, so ids sort by request time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct BackupId(pub Uuid);

impl BackupId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for BackupId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a backup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum BackupTrigger {
    /// The scheduler's daily (`backupPolicy.frequency`) job.
    Scheduled,
    /// `POST /storage/backup` or the operator command.
    Manual,
    /// Images carried into a new backup before an expiring one that holds their last copy is
    /// removed.
    Retention,
}

/// Where a backup run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum BackupStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// How well a part of the service is doing, from best to worst; the overall status is the
/// worst of its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working as configured.
    Ok,
    /// Serving, but something needs an operator (a stale backup, dead letters, a backlog).
    Degraded,
    /// Not serving (the database is unreachable, the storage disk is full).
    Down,
}

impl HealthStatus {
    /// The value stored in `storage_health_checks.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }

    /// Parses a stored status; anything unknown counts as degraded rather than hiding.
    pub fn parse(value: &str) -> Self {
        match value {
            "ok" => Self::Ok,
            "down" => Self::Down,
            _ => Self::Degraded,
        }
    }
}

/// Where an image's thumbnails are (`storage_files.thumbnail_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ThumbnailStatus {
    /// Not made yet: a job is queued, running or being retried.
    Pending,
    /// Every configured size is made.
    Ready,
    /// The original cannot be decoded (or the sweeper gave up): there will be none.
    Failed,
}

/// Where an image's checksum verification is (`storage_files.checksum_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ChecksumStatus {
    /// Not read back yet.
    Pending,
    /// The stored bytes hash to the SHA-256 recorded at upload.
    Verified,
    /// They do not.
    Corrupt,
}

/// Where a restore requested through the API is (`storage_restores.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum RestoreStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// Whose images a listing or search covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    /// Every owner's (admins).
    Everyone,
    /// One owner's images of every type.
    Owner(OwnerId),
    /// One owner's `result` images: what the service may see when acting for that owner.
    ResultsOf(OwnerId),
}

/// Name of an image's full-size variant; thumbnail variants are named after their
/// configured size.
pub const ORIGINAL: &str = "original";

/// True for a non-empty name of ASCII letters, digits, `-` and `_`: safe as one path
/// segment or queue-name part.
pub fn is_safe_segment(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s { $($text => Ok(Self::$variant),)+ _ => Err(UnknownName(s.to_owned())) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(ImageType { User => "user", Cloth => "cloth", Result => "result" });
text_enum!(OwnerType { User => "user", Vendor => "vendor" });
text_enum!(ThumbnailStatus { Pending => "pending", Ready => "ready", Failed => "failed" });
text_enum!(ChecksumStatus { Pending => "pending", Verified => "verified", Corrupt => "corrupt" });
text_enum!(RestoreStatus { Pending => "pending", Running => "running", Completed => "completed", Failed => "failed" });

/// A name that is not one of an enum's values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [ImageType::User, ImageType::Cloth, ImageType::Result] {
            assert_eq!(t.as_str().parse::<ImageType>().unwrap(), t);
        }
        assert!("admin".parse::<ImageType>().is_err());
        assert_eq!("vendor".parse::<OwnerType>().unwrap(), OwnerType::Vendor);
    }

    #[test]
    fn image_ids_sort_by_creation() {
        let a = ImageId::new();
        let b = ImageId::new();
        assert!(a < b);
    }
}

/// What an owner reads in an image's `processing_error`: a stable code, a colon and a short
/// sentence. Causes (error texts, hashes) stay in the logs and `job_failures`; only a
/// failure that retrying cannot fix is recorded at all; infrastructure errors leave the
/// image pending for the sweeper.
pub mod processing_error {
    /// The original cannot be decoded, so it has no thumbnails.
    pub const THUMBNAILS_UNDECODABLE: &str = "thumbnails_failed: the image could not be decoded to make its thumbnails";
    /// The stored original no longer hashes to the SHA-256 recorded at upload.
    pub const CHECKSUM_MISMATCH: &str =
        "checksum_mismatch: the stored bytes no longer match the checksum recorded at upload";
}
