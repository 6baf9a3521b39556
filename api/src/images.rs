//! `/storage/images`: upload and read image metadata.

mod upload;
mod view;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{OpenApi, Tags};
use shared::db::{storage_files, storage_thumbnails};
use shared::images::ImageId;
use uuid::Uuid;

pub use upload::{UploadBody, UploadResponse};
pub use view::ImageView;

use crate::AppState;
use crate::auth::BearerAuth;
use crate::error::ApiError;

#[derive(Tags)]
enum ApiTags {
    /// Stored images and their metadata.
    Images,
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
    #[oai(path = "/storage/images", method = "post")]
    async fn upload(
        &self,
        auth: BearerAuth,
        #[oai(name = "Idempotency-Key")] idempotency_key: poem_openapi::param::Header<Option<String>>,
        body: UploadBody,
    ) -> Result<UploadResponse, ApiError> {
        upload::handle(&self.state, &auth.0, idempotency_key.0, body).await
    }

    /// Metadata of one image: dimensions, checksum and its verification, thumbnails.
    ///
    /// Visible to its owner, to admins, and to anyone when public; otherwise 404, so that
    /// existence does not leak.
    #[oai(path = "/storage/images/:id", method = "get")]
    async fn get_image(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<ImageView>, ApiError> {
        let not_found = || ApiError::not_found("image");
        let file = storage_files::get(&self.state.db, ImageId(id.0)).await?.ok_or_else(not_found)?;
        if !auth.0.can_read(file.owner_id, file.is_public) {
            return Err(not_found());
        }
        let thumbnails = storage_thumbnails::list(&self.state.db, file.id).await?;
        Ok(Json(ImageView::new(file, thumbnails)))
    }
}
