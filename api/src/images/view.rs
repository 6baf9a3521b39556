//! How an image's metadata is shown to clients.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::db::storage_files::StorageFile;
use shared::db::storage_thumbnails::ThumbnailRecord;
use shared::model::ImageId;
use uuid::Uuid;

/// An image's metadata.
#[derive(Debug, Clone, Object)]
pub struct ImageView {
    pub id: Uuid,
    pub owner_id: Uuid,
    /// `user` or `vendor`.
    pub owner_type: String,
    /// `user`, `cloth` or `result`.
    pub image_type: String,
    /// The client's file name, sanitised.
    pub file_name: String,
    /// Path of the original, relative to the storage root.
    pub path: String,
    /// Sniffed from the bytes.
    pub mime_type: String,
    /// Size of the original, in bytes.
    pub size: i64,
    /// In pixels, as stored (before EXIF orientation).
    pub width: i32,
    pub height: i32,
    pub checksum: ChecksumView,
    pub thumbnails: ThumbnailsView,
    /// Why processing failed, when it did.
    pub processing_error: Option<String>,
    pub is_public: bool,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// For `result` images read one by one: the images the result was made from.
    #[oai(skip_serializing_if_is_none)]
    pub source_ids: Option<Vec<Uuid>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The SHA-256 recorded at upload and its later verification.
#[derive(Debug, Clone, Object)]
pub struct ChecksumView {
    pub algorithm: String,
    /// Lower-case hex.
    pub value: String,
    /// `pending`, `verified` or `corrupt`.
    pub status: String,
    pub verified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
pub struct ThumbnailsView {
    /// `pending`, `ready` or `failed`.
    pub status: String,
    pub variants: Vec<ThumbnailView>,
}

/// One made thumbnail.
#[derive(Debug, Clone, Object)]
pub struct ThumbnailView {
    /// Configured size name: `small`, `medium`, `large`.
    pub size: String,
    pub path: String,
    pub mime_type: String,
    pub width: i32,
    pub height: i32,
    /// In bytes.
    pub file_size: i64,
    /// Lower-case hex SHA-256.
    pub checksum: String,
}

impl ImageView {
    /// Adds the result's sources.
    pub fn with_sources(mut self, sources: Vec<ImageId>) -> Self {
        self.source_ids = Some(sources.into_iter().map(|s| s.0).collect());
        self
    }

    pub fn new(file: StorageFile, thumbnails: Vec<ThumbnailRecord>) -> Self {
        Self {
            id: file.id.0,
            owner_id: file.owner_id.0,
            owner_type: file.owner_type.to_string(),
            image_type: file.image_type.to_string(),
            file_name: file.original_name,
            path: file.file_path,
            mime_type: file.mime_type,
            size: file.file_size,
            width: file.width,
            height: file.height,
            checksum: ChecksumView {
                algorithm: "sha256".to_owned(),
                value: file.checksum,
                status: file.checksum_status.to_string(),
                verified_at: file.verified_at,
            },
            thumbnails: ThumbnailsView {
                status: file.thumbnail_status.to_string(),
                variants: thumbnails
                    .into_iter()
                    .map(|t| ThumbnailView {
                        size: t.size_name,
                        path: t.file_path,
                        mime_type: t.format.mime().to_owned(),
                        width: t.width,
                        height: t.height,
                        file_size: t.file_size,
                        checksum: t.checksum,
                    })
                    .collect(),
            },
            processing_error: file.processing_error,
            is_public: file.is_public,
            tags: file.tags,
            metadata: file.metadata,
            source_ids: None,
            created_at: file.created_at,
            updated_at: file.updated_at,
        }
    }
}
