//! `DELETE /storage/images/:id`: the image disappears from every query at once; its files
//! follow through the `image.deleted` job.

use shared::auth::Claims;
use shared::db::{outbox, storage_files, storage_quotas};
use shared::events::ImageDeleted;
use shared::model::ImageId;

use super::require_write;
use crate::AppState;
use crate::error::ApiError;

/// Marks the image deleted, gives its bytes back to the owner's quota and queues the removal
/// of its files, all in one transaction. The row stays as a tombstone.
pub async fn handle(state: &AppState, claims: &Claims, id: ImageId) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    // The lock makes a concurrent second delete wait, then find no live row: 404, and the
    // quota is released once.
    let file = storage_files::get_for_update(&mut *tx, id).await?.ok_or_else(|| ApiError::not_found("image"))?;
    require_write(claims, &file)?;
    storage_files::mark_deleted(&mut *tx, id).await?;
    if !storage_quotas::release(&mut *tx, file.owner(), file.file_size).await? {
        tracing::warn!(image.id = %id, "the owner of {id} has no quota row; nothing to release");
    }
    outbox::enqueue(&mut *tx, ImageDeleted { image_id: id }).await?;
    tx.commit().await?;
    tracing::info!(image.id = %id, size_bytes = file.file_size, "deleted {id}");
    Ok(())
}
