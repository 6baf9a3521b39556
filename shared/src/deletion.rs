//! Deleting an image: the row becomes a tombstone that every query leaves out at once (its
//! file name, tags and metadata scrubbed), its bytes go back to the owner's quota, and its
//! `image.deleted` job (the removal of its files, `worker/src/deletions.rs`) is queued, and
//! its data key (if it was stored encrypted) is destroyed, all in one transaction.

use sqlx::{PgConnection, PgPool};

use crate::auth::{Claims, ImageAccess};
use crate::db::storage_files::{self, StorageFile};
use crate::db::{image_keys, outbox, storage_quotas};
use crate::events::ImageDeleted;
use crate::model::ImageId;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No live image with this id, or one the caller may not even see.
    #[error("image {0} not found")]
    NotFound(ImageId),
    /// The caller may see the image but not delete it.
    #[error("only the image's owner may change or delete it")]
    Forbidden,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Deletes image `id` on behalf of `claims` and returns its row as it was.
pub async fn delete(db: &PgPool, claims: &Claims, id: ImageId) -> Result<StorageFile, DeleteError> {
    let mut tx = db.begin().await?;
    // The lock makes a concurrent second delete wait, then find no live row: not found, and
    // the quota is released once.
    let file = storage_files::get_for_update(&mut *tx, id).await?.ok_or(DeleteError::NotFound(id))?;
    match claims.image_access(file.owner_id, file.image_type, file.is_public) {
        ImageAccess::Write => {}
        ImageAccess::Read => return Err(DeleteError::Forbidden),
        ImageAccess::Hidden => return Err(DeleteError::NotFound(id)),
    }
    tombstone(&mut tx, &file).await?;
    tx.commit().await?;
    tracing::info!(image.id = %id, size_bytes = file.file_size, "deleted {id}");
    Ok(file)
}

/// The deletion itself, in the caller's transaction on a row it has locked: the row becomes
/// a scrubbed tombstone, its bytes go back to the owner's quota, its `image.deleted` job
/// is queued and its data key is destroyed (crypto-shredding: sealed fields and encrypted
/// copies, backups included, can no longer be read). Shared by a caller's delete and the
/// jobs that delete on the service's behalf (image retention, erasure), so that every
/// deletion releases, scrubs, shreds and queues alike. Returns whether a data key was
/// destroyed.
pub(crate) async fn tombstone(tx: &mut PgConnection, file: &StorageFile) -> Result<bool, sqlx::Error> {
    let id = file.id;
    if !storage_files::mark_deleted(&mut *tx, id).await? {
        return Ok(false);
    }
    let shredded = image_keys::delete(&mut *tx, id).await?;
    if !storage_quotas::release(&mut *tx, file.owner(), file.file_size).await? {
        tracing::warn!(image.id = %id, "the owner of {id} has no quota row; nothing to release");
    }
    outbox::enqueue(&mut *tx, ImageDeleted { image_id: id }).await?;
    Ok(shredded)
}
