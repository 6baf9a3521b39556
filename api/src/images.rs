//! `/storage/images`: upload, read, change, delete, list and search image metadata, and the
//! owners' quotas.

mod bulk;
mod list;
mod quota;
mod update;
mod upload;
mod view;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use shared::audit::Actor;
use shared::auth::{Claims, ImageAccess, Role};
use shared::db::storage_files::StorageFile;
use shared::db::{provenance, storage_files, storage_thumbnails};
use shared::deletion;
use shared::maintenance::sweep::{self, Reprocessed};
use shared::model::{ImageId, ImageType};
use shared::sealing;
use shared::search::ListQuery;
use uuid::Uuid;

pub(crate) use bulk::distinct_ids;
pub use bulk::{BulkOutcome, BulkRequest, BulkResult};
pub use list::{ImagePage, ImageSearchRequest};
pub use quota::{QuotaUpdate, QuotaView};
pub use update::ImageUpdate;
pub use upload::{UploadBody, UploadResponse};
pub use view::ImageView;

use crate::auth::{AdminAuth, BearerAuth};
use crate::docs::checked::{Checked, PageNumber, PageSize, text};
use crate::error::ApiError;
use crate::{AppState, model};

#[derive(Tags)]
pub(crate) enum ApiTags {
    /// Stored images and their metadata.
    Images,
    /// Per-owner limits on stored files and bytes.
    Quotas,
}

#[derive(ApiResponse)]
pub enum DeleteResponse {
    /// Deleted; its files are removed from disk shortly after.
    #[oai(status = 204)]
    Deleted,
}

#[derive(ApiResponse)]
pub enum ReprocessResponse {
    /// Queued; the workers make what is missing (follow it with `GET /storage/images/{id}`).
    #[oai(status = 202)]
    Accepted(Json<ReprocessView>),
}

/// An image queued for processing again.
#[derive(Debug, Clone, Object)]
pub struct ReprocessView {
    pub id: Uuid,
    /// The queued `image.uploaded` event (its `message_id` in RabbitMQ).
    pub event_id: Uuid,
    /// `pending`, or `ready` when the thumbnails were made already.
    pub thumbnail_status: model::ThumbnailStatus,
    /// `verified`, `pending`, or `corrupt`, which stays: a restore repairs it.
    pub checksum_status: model::ChecksumStatus,
}

impl From<Reprocessed> for ReprocessView {
    fn from(done: Reprocessed) -> Self {
        Self {
            id: done.image_id.0,
            event_id: done.event_id,
            thumbnail_status: done.thumbnail_status.into(),
            checksum_status: done.checksum_status.into(),
        }
    }
}

/// Refuses a change to an image the caller may not write: 404 when they may not even see
/// it (existence does not leak), 403 when they may only read it (a public image of another
/// owner).
pub(crate) fn require_write(claims: &Claims, file: &StorageFile) -> Result<(), ApiError> {
    match claims.image_access(file.owner_id, file.image_type, file.is_public) {
        ImageAccess::Write => Ok(()),
        ImageAccess::Read => Err(ApiError::forbidden("only the image's owner may change or delete it")),
        ImageAccess::Hidden => Err(ApiError::not_found("image")),
    }
}

pub struct ImagesApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::Images")]
impl ImagesApi {
    /// Upload an image.
    ///
    /// Multipart form: `file` (the image; its type is sniffed from the bytes), `image_type`
    /// (`user`, `cloth` or `result`), optional `is_public`, `tags` (comma-separated or a JSON
    /// array), `metadata` (a JSON object), and for the `service` role `owner_id` and
    /// `owner_type` of the result's owner. Users upload `user` images, vendors `cloth`
    /// images, the service `result` images. With an `Idempotency-Key` header a retried
    /// upload returns the first result (header `Idempotent-Replayed: true`) instead of
    /// storing a duplicate.
    #[oai(path = "/storage/images", method = "post", operation_id = "uploadImage")]
    async fn upload(
        &self,
        request: &poem::Request,
        auth: BearerAuth,
        #[oai(name = "Idempotency-Key")] idempotency_key: poem_openapi::param::Header<Option<String>>,
        body: UploadBody,
    ) -> Result<UploadResponse, ApiError> {
        // poem-openapi reads a header that is not visible ASCII as absent: refused instead,
        // so that a key the client sent is never silently ignored.
        if idempotency_key.0.is_none() && request.headers().contains_key("idempotency-key") {
            let message = "field `Idempotency-Key`: must be 1 to 255 ASCII characters";
            return Err(ApiError::bad_request(crate::error::ErrorCode::InvalidField, message));
        }
        upload::handle(&self.state, &auth.0, idempotency_key.0, body).await
    }

    /// Metadata of one image: dimensions, checksum and its verification, thumbnails.
    ///
    /// Visible to its owner, to admins, to the service for `result` images, and to anyone
    /// when public; otherwise 404, so that existence does not leak.
    #[oai(path = "/storage/images/:id", method = "get", operation_id = "getImage")]
    async fn get_image(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<ImageView>, ApiError> {
        let not_found = || ApiError::not_found("image");
        let mut file = storage_files::get(&self.state.db, ImageId(id.0)).await?.ok_or_else(not_found)?;
        if auth.0.image_access(file.owner_id, file.image_type, file.is_public) == ImageAccess::Hidden {
            return Err(not_found());
        }
        sealing::open_files(self.state.sealer.as_deref(), &self.state.db, [&mut file]).await?;
        let thumbnails = storage_thumbnails::list(&self.state.db, file.id).await?;
        let sources = match file.image_type {
            ImageType::Result => Some(provenance::sources_of(&self.state.db, file.id).await?),
            ImageType::User | ImageType::Cloth => None,
        };
        let view = ImageView::new(file, thumbnails);
        Ok(Json(match sources {
            Some(sources) => view.with_sources(sources),
            None => view,
        }))
    }

    /// Change an image's file name, visibility, tags or metadata.
    ///
    /// JSON body with any of `file_name`, `is_public`, `tags` (replaces all), `metadata`
    /// (replaces all), validated like an upload; `updated_at` follows. Allowed to the owner,
    /// admins and, for `result` images, the service. Someone else's public image answers 403,
    /// someone else's private image 404.
    #[oai(path = "/storage/images/:id", method = "put", operation_id = "updateImage")]
    async fn update_image(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ImageUpdate>,
    ) -> Result<Json<ImageView>, ApiError> {
        Ok(Json(update::handle(&self.state, &auth.0, ImageId(id.0), body.0).await?))
    }

    /// Delete an image.
    ///
    /// It disappears from every read, listing and URL at once and its bytes go back to the
    /// owner's quota; a worker then removes the original and its thumbnails from disk.
    /// Same permissions as a change; deleting again answers 404.
    #[oai(path = "/storage/images/:id", method = "delete", operation_id = "deleteImage")]
    async fn delete_image(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<DeleteResponse, ApiError> {
        deletion::delete(&self.state.db, &auth.0, ImageId(id.0)).await?;
        Ok(DeleteResponse::Deleted)
    }

    /// Delete, change or publish many images at once.
    ///
    /// `action`: `delete`, `update` (`tags` and/or `metadata` for all the `ids`, or a change
    /// per image in `items`) or `visibility` (`is_public`). At most `limits.bulkMaxIds` ids
    /// (more is 400 `too_many_ids`). Each image is handled exactly as its single-image
    /// endpoint would, with the same permissions, in a transaction of its own: one image's
    /// failure never undoes or stops the others. 200 with one outcome per distinct id, in
    /// the order given: `deleted`, `updated`, `not_found` (also another owner's private
    /// image), `forbidden`, `invalid` or `failed`, with the error the single endpoint
    /// would answer.
    #[oai(path = "/storage/images/bulk", method = "post", operation_id = "bulkImages")]
    async fn bulk_images(&self, auth: BearerAuth, body: Json<BulkRequest>) -> Result<Json<BulkResult>, ApiError> {
        Ok(Json(bulk::handle(&self.state, &auth.0, body.0).await?))
    }

    /// Process an image again (admins only).
    ///
    /// The remedy for an image the sweeper gave up on (`GET /storage/health` lists them):
    /// its re-queue count and back-off are cleared, thumbnails not made go back to
    /// `pending`, and the thumbnail and verification jobs are queued again; steps already
    /// done are skipped. A corrupt original stays corrupt (restore it instead). 404 for an
    /// unknown or deleted image.
    #[oai(path = "/storage/images/:id/reprocess", method = "post", operation_id = "reprocessImage")]
    async fn reprocess_image(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<ReprocessResponse, ApiError> {
        if auth.0.role != Role::Admin {
            return Err(ApiError::forbidden("reprocessing images is for admins"));
        }
        let done = sweep::reprocess(&self.state.db, ImageId(id.0), &Actor::of(&auth.0)).await?;
        Ok(ReprocessResponse::Accepted(Json(done.into())))
    }

    /// List images, one page at a time.
    ///
    /// Users and vendors list their own images, the service the `result` images of the
    /// `owner_id` it names, admins everyone's or one owner's. Filters: `image_type`,
    /// `owner_id`, `is_public`, `tag` (repeatable: all must match), `created_from` /
    /// `created_to` (RFC 3339, inclusive), `derived_from` (an image id: the AI results made
    /// from it). `sort`: `created_at` (default), `file_size`,
    /// `file_name`, `access_count`; `order`: `asc` | `desc` (default `desc`, `asc` for names);
    /// `page` from 1, `page_size` 1 to 100 (default 20). `include_urls` (comma-separated
    /// variants, e.g. `small,medium`) adds to each item the access URLs of those variants.
    #[oai(path = "/storage/images", method = "get", operation_id = "listImages")]
    #[allow(clippy::too_many_arguments)]
    async fn list_images(
        &self,
        auth: BearerAuth,
        image_type: Query<Option<Checked<model::ImageType>>>,
        owner_id: Query<Option<Checked<Uuid>>>,
        is_public: Query<Option<Checked<bool>>>,
        tag: Query<Option<Vec<String>>>,
        created_from: Query<Option<Checked<DateTime<Utc>>>>,
        created_to: Query<Option<Checked<DateTime<Utc>>>>,
        derived_from: Query<Option<Checked<Uuid>>>,
        sort: Query<Option<Checked<model::SortField>>>,
        order: Query<Option<Checked<model::SortOrder>>>,
        page: Query<Option<Checked<i64, PageNumber>>>,
        page_size: Query<Option<Checked<i64, PageSize>>>,
        include_urls: Query<Option<String>>,
    ) -> Result<Json<ImagePage>, ApiError> {
        let query = ListQuery {
            image_type: text(image_type.0),
            owner_id: text(owner_id.0),
            is_public: text(is_public.0),
            tags: tag.0.unwrap_or_default(),
            created_from: text(created_from.0),
            created_to: text(created_to.0),
            derived_from: text(derived_from.0),
            sort: text(sort.0),
            order: text(order.0),
            page: text(page.0),
            page_size: text(page_size.0),
        };
        let include_urls = list::url_variants(include_urls.0);
        Ok(Json(list::handle(&self.state, &auth.0, query.parse()?, include_urls).await?))
    }

    /// Search images.
    ///
    /// The filters, sort and pages of the listing, plus `query`: text matched
    /// case-insensitively anywhere in the file name, the tags and the metadata values, and
    /// `tags`: all must match; `include_urls` (an array of variants) as for the listing.
    /// Same scope as the listing.
    #[oai(path = "/storage/images/search", method = "post", operation_id = "searchImages")]
    async fn search_images(
        &self,
        auth: BearerAuth,
        body: Json<ImageSearchRequest>,
    ) -> Result<Json<ImagePage>, ApiError> {
        Ok(Json(list::search_request(&self.state, &auth.0, body.0).await?))
    }

    /// Quota and usage of the caller, or of the owner an admin names.
    ///
    /// Users and vendors read their own; admins (and the service, which uploads for owners)
    /// pass `owner_id` and, for an owner who never uploaded, `owner_type` (`user` default or
    /// `vendor`). An owner who never uploaded has the configured defaults and no usage.
    #[oai(path = "/storage/quota", method = "get", tag = "ApiTags::Quotas", operation_id = "getQuota")]
    async fn get_quota(
        &self,
        auth: BearerAuth,
        owner_id: Query<Option<Checked<Uuid>>>,
        owner_type: Query<Option<Checked<model::OwnerType>>>,
    ) -> Result<Json<QuotaView>, ApiError> {
        Ok(Json(quota::get(&self.state, &auth.0, text(owner_id.0), text(owner_type.0)).await?))
    }

    /// Change an owner's limits (admins only).
    ///
    /// JSON body with `max_files` and/or `max_bytes`; `owner_type` names the kind of an owner
    /// who has no quota yet. Limits below the current usage are allowed: nothing is removed,
    /// further uploads are refused until usage is under them.
    #[oai(path = "/storage/quota/:owner_id", method = "put", tag = "ApiTags::Quotas", operation_id = "setQuota")]
    async fn set_quota(
        &self,
        auth: AdminAuth,
        owner_id: Path<Uuid>,
        body: Json<QuotaUpdate>,
    ) -> Result<Json<QuotaView>, ApiError> {
        Ok(Json(quota::set(&self.state, &auth.0, owner_id.0, body.0).await?))
    }
}
