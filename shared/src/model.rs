//! The domain's nouns: what an image is to this service (its id, its kind, who owns it),
//! the ids of backups and restores, and the statuses stored for each. This module imports
//! nothing else of the crate, so every other module, the database layer first, can use it
//! without forming a cycle.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};

use serde::{Deserialize, Serialize};
use serde_json::Value;
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

impl ImageType {
    pub const ALL: [ImageType; 3] = [Self::User, Self::Cloth, Self::Result];
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

/// An image format the service stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 4] = [Self::Jpeg, Self::Png, Self::Gif, Self::Webp];

    /// Bytes needed to recognise any supported format.
    pub const SNIFF_LEN: usize = 12;

    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    /// File extension on disk (no dot).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }

    /// Name stored in the database (`storage_files.format`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }

    pub fn from_mime(mime: &str) -> Option<Self> {
        let mime = mime.trim().to_ascii_lowercase();
        match mime.as_str() {
            "image/jpg" | "image/pjpeg" => Some(Self::Jpeg),
            _ => Self::ALL.into_iter().find(|f| f.mime() == mime),
        }
    }

    /// Recognises a format from the first bytes of a file ([`Self::SNIFF_LEN`] suffice).
    pub fn sniff(head: &[u8]) -> Option<Self> {
        match head {
            [0xFF, 0xD8, 0xFF, ..] => Some(Self::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Self::Png),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Self::Gif),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(Self::Webp),
            _ => None,
        }
    }
}

/// How the bytes of one backup archive were framed (`storage_backup_entries.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ArchiveMethod {
    /// Compressed at the backup's level.
    Zstd,
    /// Raw blocks: the data did not compress.
    Raw,
}

impl ArchiveMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Raw => "raw",
        }
    }
}

/// One archived original and its row: a line of a backup's manifest, and what a restore
/// rebuilds the file and its row from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedImage {
    /// The archive, relative to `storage.backupPath`.
    pub archive_path: PathBuf,
    pub image_id: ImageId,
    pub owner_id: OwnerId,
    pub owner_type: OwnerType,
    pub image_type: ImageType,
    pub original_name: String,
    /// The original, relative to `storage.basePath`.
    pub file_path: String,
    pub format: ImageFormat,
    pub mime_type: String,
    pub width: i32,
    pub height: i32,
    pub is_public: bool,
    pub tags: Vec<String>,
    pub metadata: Value,
    /// Lower-case hex SHA-256 of the original.
    pub checksum: String,
    pub file_size: i64,
    pub compressed_size: i64,
    pub method: ArchiveMethod,
    /// The images a try-on result was made from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ids: Vec<ImageId>,
    pub created_at: DateTime<Utc>,
}

impl ArchivedImage {
    pub fn owner(&self) -> Owner {
        Owner { id: self.owner_id, kind: self.owner_type }
    }
}

/// What a restore brings back (`storage_restores.selection`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreSelection {
    /// Every image of one backup.
    BackupId(BackupId),
    /// Every image of the backups of one UTC day, each once, from its newest intact copy.
    Date(NaiveDate),
    /// These images, each from the newest backup that holds an intact copy.
    ImageIds(Vec<ImageId>),
}

/// Whether a restore replaces present originals (`storage_restores.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RestoreMode {
    /// Only originals missing from storage come back (the default). A present one is
    /// skipped without being read, damaged or not.
    #[default]
    MissingOnly,
    /// Every selected original is replaced by its verified backup copy.
    Overwrite,
}

impl RestoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingOnly => "missing_only",
            Self::Overwrite => "overwrite",
        }
    }
}

/// An image not restored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReport {
    pub image_id: ImageId,
    /// `skipped` or `failed`.
    pub outcome: String,
    pub reason: String,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub restored: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Skipped and failed images with their reasons (the first [`Self::MAX_DETAILS`]).
    pub details: Vec<ItemReport>,
    /// Why the restore as a whole stopped early, if it did.
    pub error: Option<String>,
}

impl RestoreReport {
    /// Reasons kept in a report; beyond them only the counts grow.
    pub const MAX_DETAILS: usize = 500;

    /// Counts nothing: the caller counts. Keeps the reason while there is room.
    pub fn note(&mut self, image_id: ImageId, outcome: &str, reason: String) {
        if self.details.len() < Self::MAX_DETAILS {
            self.details.push(ItemReport { image_id, outcome: outcome.to_owned(), reason });
        }
    }
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
    fn selections_have_the_documented_json_shape() {
        let id = BackupId(Uuid::nil());
        assert_eq!(
            serde_json::to_value(RestoreSelection::BackupId(id)).unwrap(),
            serde_json::json!({ "backup_id": id })
        );
        let date = NaiveDate::from_ymd_opt(2026, 5, 6).unwrap();
        assert_eq!(
            serde_json::to_value(RestoreSelection::Date(date)).unwrap(),
            serde_json::json!({ "date": "2026-05-06" })
        );
        assert_eq!(serde_json::to_value(RestoreMode::default()).unwrap(), "missing_only");
    }

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
