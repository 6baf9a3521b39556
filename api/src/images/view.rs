//! How an image's metadata is shown to clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::types::Example;
use shared::db::storage_files::StorageFile;
use shared::db::storage_thumbnails::ThumbnailRecord;
use shared::model::ImageId;
use uuid::Uuid;

use crate::model;
use crate::signed_urls::AccessUrl;

/// An image's metadata.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ImageView {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub owner_type: model::OwnerType,
    pub image_type: model::ImageType,
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
    /// In listings and searches with `include_urls`: by variant, the URL `GET
    /// /storage/images/{id}/access` gives for each variant asked for that the image has (a
    /// thumbnail not made yet is left out; `thumbnails.status` says why).
    #[oai(skip_serializing_if_is_none)]
    pub urls: Option<BTreeMap<String, AccessUrl>>,
    /// In the answer of an upload: the URL of the original, as `GET
    /// /storage/images/{id}/access` gives it: signed (`view`, `signedUrls.defaultTtlSecs`)
    /// for a private image, the public URL for a public one.
    #[oai(skip_serializing_if_is_none)]
    pub original_url: Option<AccessUrl>,
}

/// The SHA-256 recorded at upload and its later verification.
#[derive(Debug, Clone, Object)]
pub struct ChecksumView {
    pub algorithm: String,
    /// Lower-case hex.
    pub value: String,
    pub status: model::ChecksumStatus,
    pub verified_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
pub struct ThumbnailsView {
    pub status: model::ThumbnailStatus,
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

impl Example for ImageView {
    fn example() -> Self {
        let id = Uuid::from_u128(0x0197_6f3a_4c21_7d2e_9a41_0c5e_8b1f_2d3a);
        let owner_id = Uuid::from_u128(0x0197_6f39_1111_7aaa_8bbb_0ccc_dddd_eeee);
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        Self {
            id,
            owner_id,
            owner_type: model::OwnerType::User,
            image_type: model::ImageType::User,
            file_name: "me.jpg".to_owned(),
            path: format!("images/user/{owner_id}/images/{id}.jpg"),
            mime_type: "image/jpeg".to_owned(),
            size: 245_760,
            width: 1200,
            height: 1600,
            checksum: ChecksumView {
                algorithm: "sha256".to_owned(),
                value: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
                status: model::ChecksumStatus::Verified,
                verified_at: Some(at),
            },
            thumbnails: ThumbnailsView {
                status: model::ThumbnailStatus::Ready,
                variants: vec![ThumbnailView {
                    size: "small".to_owned(),
                    path: format!("images/user/{owner_id}/thumbnails/{id}_small.jpg"),
                    mime_type: "image/jpeg".to_owned(),
                    width: 150,
                    height: 200,
                    file_size: 6_144,
                    checksum: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752".to_owned(),
                }],
            },
            processing_error: None,
            is_public: false,
            tags: vec!["summer".to_owned()],
            metadata: serde_json::json!({"pose": "front"}),
            source_ids: None,
            created_at: at,
            updated_at: at,
            urls: None,
            original_url: None,
        }
    }
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
            owner_type: file.owner_type.into(),
            image_type: file.image_type.into(),
            file_name: file.original_name,
            path: file.file_path,
            mime_type: file.mime_type,
            size: file.file_size,
            width: file.width,
            height: file.height,
            checksum: ChecksumView {
                algorithm: "sha256".to_owned(),
                value: file.checksum,
                status: file.checksum_status.into(),
                verified_at: file.verified_at,
            },
            thumbnails: ThumbnailsView {
                status: file.thumbnail_status.into(),
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
            urls: None,
            original_url: None,
        }
    }

    /// Adds the access URLs of the variants a listing asked for.
    pub fn with_urls(mut self, urls: BTreeMap<String, AccessUrl>) -> Self {
        self.urls = Some(urls);
        self
    }

    /// Adds the access URL of the original (the answer of an upload).
    pub fn with_original_url(mut self, url: AccessUrl) -> Self {
        self.original_url = Some(url);
        self
    }
}
