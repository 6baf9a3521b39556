//! `/storage/images/:id/signed-url` and `/storage/images/:id/access`: URLs through which an
//! image's bytes can be fetched without a bearer token (served by `crate::serving`),
//! `/storage/images/signed-urls`, the same for many images at once, and
//! `/storage/images/:id/revoke-urls`, which ends every signed URL of an image at once.

mod batch;
mod issue;

pub use batch::{ImageUrls, UrlBatch, UrlBatchRequest};
pub(crate) use issue::{UrlIssuer, parse_variants};

use chrono::{DateTime, Utc};
use poem_openapi::ApiResponse;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::{Claims, ImageAccess};
use shared::db::storage_files::StorageFile;
use shared::db::{storage_files, storage_signed_urls, storage_thumbnails};
use shared::model::{ImageId, ORIGINAL};
use shared::signing::{AccessType, Variant};
use uuid::Uuid;

use crate::auth::BearerAuth;
use crate::docs::Checked;
use crate::error::{ApiError, ErrorCode};
use crate::{AppState, model};

#[derive(Tags)]
enum ApiTags {
    /// Signed and public URLs of image files.
    Access,
}

pub struct SignedUrlApi {
    pub state: AppState,
}

/// A URL of one variant of an image.
#[derive(Debug, Clone, Object)]
pub struct AccessUrl {
    /// Absolute URL; no token needed to fetch it.
    pub url: String,
    /// When a signed URL stops working; `null` for a public URL, which works as long as the
    /// image is public.
    pub expires_at: Option<DateTime<Utc>>,
    /// `original` or a thumbnail size.
    pub variant: String,
    pub access_type: model::AccessType,
    /// Whether the URL is signed (else it is the image's public URL).
    pub signed: bool,
}

/// What a revocation did.
#[derive(Debug, Clone, Object)]
pub struct Revocation {
    /// The image's new URL generation: URLs signed from now on carry it, earlier ones are
    /// refused (410 `url_revoked`).
    pub url_generation: i32,
    /// Issued URLs that had not expired yet and now no longer work.
    pub revoked_urls: u64,
}

#[derive(ApiResponse)]
enum RevokeResponse {
    /// Every signed URL issued so far is refused from now on.
    #[oai(status = 200)]
    Revoked(Json<Revocation>),
}

#[OpenApi(tag = "ApiTags::Access")]
impl SignedUrlApi {
    /// A signed, time-limited URL of an image's original or of one of its thumbnails.
    ///
    /// `access_type` is `view` (default; served inline) or `download` (served as an
    /// attachment with the image's file name); `variant` is `original` (default) or a
    /// thumbnail size (`small`, `medium`, `large`); `ttl` is the lifetime in seconds
    /// (default `signedUrls.defaultTtlSecs`, at most `signedUrls.maxTtlSecs`: more is a 400,
    /// not a silent clamp). The expiry is rounded up to `signedUrls.expiryWindowSecs`, so
    /// repeated requests within a window get the same URL. 404 when the caller may not read
    /// the image; 409 `variant_not_ready` while its thumbnails are still being made.
    #[oai(path = "/storage/images/:id/signed-url", method = "get", operation_id = "getSignedUrl")]
    async fn signed_url(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        access_type: Query<Option<Checked<model::AccessType>>>,
        variant: Query<Option<String>>,
        ttl: Query<Option<u64>>,
    ) -> Result<Json<AccessUrl>, ApiError> {
        let access = parse_access(access_type.0.as_ref().map(Checked::as_str))?;
        let variant = variant.0.unwrap_or_else(|| ORIGINAL.to_owned());
        let variant = issue::parse_variant(&self.state.config, &variant)?;
        let ttl = issue::check_ttl(&self.state.config, ttl.0)?;
        let file = self.readable(&auth.0, ImageId(id.0)).await?;
        self.check_variant_exists(&file, variant).await?;
        let mut issuer = UrlIssuer::new(&self.state, &auth.0);
        let url = issuer.signed(&file, variant, access, ttl);
        issuer.record().await?;
        Ok(Json(url))
    }

    /// The URL to fetch an image with: its public URL when the image is public (no expiry),
    /// else a signed `view` URL with the default lifetime.
    ///
    /// `variant` is `original` (default) or a thumbnail size. Errors as for `signed-url`.
    #[oai(path = "/storage/images/:id/access", method = "get", operation_id = "getAccessUrl")]
    async fn access(
        &self,
        auth: BearerAuth,
        id: Path<Uuid>,
        variant: Query<Option<String>>,
    ) -> Result<Json<AccessUrl>, ApiError> {
        let variant = variant.0.unwrap_or_else(|| ORIGINAL.to_owned());
        let variant = issue::parse_variant(&self.state.config, &variant)?;
        let file = self.readable(&auth.0, ImageId(id.0)).await?;
        self.check_variant_exists(&file, variant).await?;
        let mut issuer = UrlIssuer::new(&self.state, &auth.0);
        let url = issuer.access(&file, variant, self.state.config.signed_urls.default_ttl_secs);
        issuer.record().await?;
        Ok(Json(url))
    }

    /// The access URLs of many images at once: for each id and variant, the URL `GET
    /// /storage/images/{id}/access?variant=` would give.
    ///
    /// For a gallery: at most `limits.bulkMaxIds` ids (more is 400 `too_many_ids`), each
    /// answered once, in the order given; `variants` (default `original`) at most once
    /// each; `expires_in` the signed URLs' lifetime in seconds (bounds as `ttl` of
    /// `signed-url`). An image the caller may not read gets the error `not_found`, a variant
    /// not made yet its error; the others get their URLs. One query reads every image.
    #[oai(path = "/storage/images/signed-urls", method = "post", operation_id = "getAccessUrls")]
    async fn signed_urls_batch(
        &self,
        auth: BearerAuth,
        body: Json<UrlBatchRequest>,
    ) -> Result<Json<UrlBatch>, ApiError> {
        Ok(Json(batch::handle(&self.state, &auth.0, body.0).await?))
    }

    /// Revoke every signed URL of an image before it expires.
    ///
    /// For the image's owner (and admins): every URL signed for it so far answers 410
    /// `url_revoked` from now on, on every replica; new URLs work as before. Making a public
    /// image private does the same. The image's public URL is not affected: it works exactly
    /// as long as the image is public. 404 when the caller may not read the image, 403 when
    /// it may read but not change it.
    #[oai(path = "/storage/images/:id/revoke-urls", method = "post", operation_id = "revokeUrls")]
    async fn revoke_urls(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<RevokeResponse, ApiError> {
        let id = ImageId(id.0);
        let file = self.readable(&auth.0, id).await?;
        crate::images::require_write(&auth.0, &file)?;
        let mut tx = self.state.db.begin().await?;
        let generation = storage_files::revoke_urls(&mut *tx, id).await?.ok_or_else(|| ApiError::not_found("image"))?;
        let revoked_urls = storage_signed_urls::mark_revoked(&mut *tx, id, generation).await?;
        // Recorded whoever revokes (owner, service or admin): ending an image's URLs is an
        // access decision an audit of who could see an image needs.
        let details = serde_json::json!({"url_generation": generation, "revoked_urls": revoked_urls});
        audit::record(&mut *tx, &Actor::of(&auth.0), AuditAction::UrlsRevoked, Target::Image(id), details).await?;
        tx.commit().await?;
        // Other replicas hear of it from PostgreSQL; this one needs no round trip.
        self.state.serving.cache().invalidate(id);
        tracing::info!(image.id = %id, url_generation = generation, revoked_urls, "revoked the signed URLs of {id}");
        Ok(RevokeResponse::Revoked(Json(Revocation { url_generation: generation, revoked_urls })))
    }
}

impl SignedUrlApi {
    /// The live image if the caller may read it; 404 otherwise, so existence does not leak.
    async fn readable(&self, claims: &Claims, id: ImageId) -> Result<StorageFile, ApiError> {
        let not_found = || ApiError::not_found("image");
        let file = storage_files::get(&self.state.db, id).await?.ok_or_else(not_found)?;
        if claims.image_access(file.owner_id, file.image_type, file.is_public) == ImageAccess::Hidden {
            return Err(not_found());
        }
        Ok(file)
    }

    /// Whether the image has the variant (see [`issue::check_variant`]); the thumbnails
    /// are only read for a thumbnail.
    async fn check_variant_exists(&self, file: &StorageFile, variant: Variant<'_>) -> Result<(), ApiError> {
        let Variant::Thumbnail(_) = variant else { return Ok(()) };
        let thumbnails = storage_thumbnails::list(&self.state.db, file.id).await?;
        issue::check_variant(file, &thumbnails, variant)
    }
}

fn parse_access(text: Option<&str>) -> Result<AccessType, ApiError> {
    match text {
        None => Ok(AccessType::View),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::bad_request(ErrorCode::InvalidAccessType, "access_type must be view or download")),
    }
}
