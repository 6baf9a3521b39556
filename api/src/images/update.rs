//! `PUT /storage/images/:id`: change an image's name, visibility, tags or metadata, with the
//! rules of an upload.

use poem_openapi::Object;
use poem_openapi::types::Example;
use shared::auth::Claims;
use shared::db::storage_files::{self, MetadataChanges, StorageFile};
use shared::db::{storage_signed_urls, storage_thumbnails};
use shared::fields::{check_file_name, check_metadata, normalize_tags};
use shared::model::ImageId;
use shared::sealing;

use super::{ImageView, require_write};
use crate::AppState;
use crate::docs::checked::{Text, strings};
use crate::error::{ApiError, ErrorCode};

/// New values for some of an image's fields; absent fields stay as they are.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct ImageUpdate {
    /// The file name shown for the image; path components and control characters are
    /// removed, as on upload (at most 255 characters).
    pub file_name: Option<Text>,
    /// Whether anyone may read the image.
    pub is_public: Option<bool>,
    /// Replaces every tag: at most 32, each at most 64 characters.
    pub tags: Option<Vec<Text>>,
    /// Replaces the metadata: a JSON object of at most 16 KiB.
    pub metadata: Option<serde_json::Value>,
}

impl Example for ImageUpdate {
    fn example() -> Self {
        Self {
            file_name: Some(Text("red-dress.jpg".to_owned())),
            is_public: Some(true),
            tags: Some(vec![Text("dress".to_owned()), Text("red".to_owned())]),
            metadata: Some(serde_json::json!({"collection": "summer"})),
        }
    }
}

impl ImageUpdate {
    /// The changes, checked with the rules of an upload.
    pub(crate) fn validate(self) -> Result<MetadataChanges, ApiError> {
        if self.file_name.is_none() && self.is_public.is_none() && self.tags.is_none() && self.metadata.is_none() {
            return Err(ApiError::bad_request(
                ErrorCode::EmptyUpdate,
                "give at least one of file_name, is_public, tags, metadata",
            ));
        }
        Ok(MetadataChanges {
            original_name: self.file_name.map(|name| check_file_name(&name.0)).transpose()?,
            is_public: self.is_public,
            tags: self.tags.map(|tags| normalize_tags(strings(tags))).transpose()?,
            metadata: self.metadata.map(check_metadata).transpose()?.map(serde_json::Value::Object),
        })
    }
}

pub async fn handle(
    state: &AppState,
    claims: &Claims,
    id: ImageId,
    update: ImageUpdate,
) -> Result<ImageView, ApiError> {
    let changes = update.validate()?;
    let mut file = apply(state, claims, id, &changes).await?;
    sealing::open_files(state.sealer.as_deref(), &state.db, [&mut file]).await?;
    let thumbnails = storage_thumbnails::list(&state.db, id).await?;
    Ok(ImageView::new(file, thumbnails))
}

/// Applies validated `changes` to image `id` on behalf of `claims`, in a transaction of its
/// own, and returns the row as changed (as stored: sealed fields stay sealed): the one way
/// an image's metadata or visibility changes, for `PUT /storage/images/{id}` and for each
/// image of a bulk change. A new name and sensitive metadata values are sealed with the
/// image's data key, which is made now for an image stored before encryption was enabled.
pub(crate) async fn apply(
    state: &AppState,
    claims: &Claims,
    id: ImageId,
    changes: &MetadataChanges,
) -> Result<StorageFile, ApiError> {
    let not_found = || ApiError::not_found("image");
    let file = storage_files::get(&state.db, id).await?.ok_or_else(not_found)?;
    require_write(claims, &file)?;
    // Deleted in between: the update finds no live row.
    let mut tx = state.db.begin().await?;
    let sealed;
    let changes = match state.sealer.as_deref().filter(|sealer| sealer.seals_any(changes)) {
        Some(sealer) => {
            let key = sealer.key_for_change(&mut tx, id).await?;
            let mut own = changes.clone();
            sealer.seal_changes(&key, id, &mut own);
            sealed = own;
            &sealed
        }
        None => changes,
    };
    let updated = storage_files::update_metadata(&mut *tx, id, changes).await?.ok_or_else(not_found)?;
    let revoked = updated.url_generation != file.url_generation;
    if revoked {
        // The URLs signed while it was public are refused from now on.
        storage_signed_urls::mark_revoked(&mut *tx, id, updated.url_generation).await?;
    }
    tx.commit().await?;
    if revoked {
        state.serving.cache().invalidate(id);
    }
    tracing::info!(image.id = %id, "updated the metadata of {id}");
    Ok(updated)
}
