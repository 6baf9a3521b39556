//! `/storage/images/:id/signed-url` and `/storage/images/:id/access`: URLs through which an
//! image's bytes can be fetched without a bearer token (served by `crate::serving`), and
//! `/storage/images/:id/revoke-urls`, which ends every signed URL of an image at once.

use chrono::{DateTime, Utc};
use poem_openapi::ApiResponse;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use shared::auth::{Claims, ImageAccess};
use shared::db::storage_files::StorageFile;
use shared::db::storage_signed_urls::NewSignedUrl;
use shared::db::{storage_files, storage_signed_urls, storage_thumbnails};
use shared::model::{ImageId, ORIGINAL, ThumbnailStatus};
use shared::signing::{self, AccessType, Grant, Variant};
use uuid::Uuid;

use crate::auth::BearerAuth;
use crate::docs::Checked;
use crate::error::{ApiError, ErrorCode};
use crate::serving::SIGNED_PREFIX;
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
        let variant = self.parse_variant(&variant)?;
        let ttl = self.ttl(ttl.0)?;
        let file = self.readable(&auth.0, ImageId(id.0)).await?;
        self.check_variant_exists(&file, variant).await?;
        self.sign(&auth.0, &file, variant, access, ttl).await.map(Json)
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
        let variant = self.parse_variant(&variant)?;
        let file = self.readable(&auth.0, ImageId(id.0)).await?;
        self.check_variant_exists(&file, variant).await?;
        if file.is_public {
            let config = &self.state.config.server;
            let url = format!("{}{}/{}/{variant}", config.base_url.trim_end_matches('/'), config.public_path, file.id);
            return Ok(Json(AccessUrl {
                url,
                expires_at: None,
                variant: variant.to_string(),
                access_type: AccessType::View.into(),
                signed: false,
            }));
        }
        let ttl = self.state.config.signed_urls.default_ttl_secs;
        self.sign(&auth.0, &file, variant, AccessType::View, ttl).await.map(Json)
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
        tx.commit().await?;
        // Other replicas hear of it from PostgreSQL; this one needs no round trip.
        self.state.serving.cache().invalidate(id);
        tracing::info!(image.id = %id, url_generation = generation, revoked_urls, "revoked the signed URLs of {id}");
        Ok(RevokeResponse::Revoked(Json(Revocation { url_generation: generation, revoked_urls })))
    }
}

impl SignedUrlApi {
    /// `original` or a configured thumbnail size.
    fn parse_variant<'a>(&self, name: &'a str) -> Result<Variant<'a>, ApiError> {
        let sizes = &self.state.config.storage.thumbnail_sizes;
        match Variant::parse(name) {
            Some(Variant::Thumbnail(size)) if !sizes.contains_key(size) => Err(unknown_variant(self)),
            Some(variant) => Ok(variant),
            None => Err(unknown_variant(self)),
        }
    }

    fn ttl(&self, requested: Option<u64>) -> Result<u64, ApiError> {
        let config = &self.state.config.signed_urls;
        match requested {
            None => Ok(config.default_ttl_secs),
            Some(0) => Err(ApiError::bad_request(ErrorCode::InvalidTtl, "ttl must be at least 1 second")),
            Some(ttl) if ttl > config.max_ttl_secs => Err(ApiError::bad_request(
                ErrorCode::TtlTooLong,
                format!("ttl may be at most {} seconds", config.max_ttl_secs),
            )),
            Some(ttl) => Ok(ttl),
        }
    }

    /// The live image if the caller may read it; 404 otherwise, so existence does not leak.
    async fn readable(&self, claims: &Claims, id: ImageId) -> Result<StorageFile, ApiError> {
        let not_found = || ApiError::not_found("image");
        let file = storage_files::get(&self.state.db, id).await?.ok_or_else(not_found)?;
        if claims.image_access(file.owner_id, file.image_type, file.is_public) == ImageAccess::Hidden {
            return Err(not_found());
        }
        Ok(file)
    }

    /// A thumbnail not made yet is a 409 while the image is still being processed, a 404
    /// when it never will be (processing failed, or the size was configured later).
    async fn check_variant_exists(&self, file: &StorageFile, variant: Variant<'_>) -> Result<(), ApiError> {
        let Variant::Thumbnail(size) = variant else { return Ok(()) };
        let thumbnails = storage_thumbnails::list(&self.state.db, file.id).await?;
        if thumbnails.iter().any(|t| t.size_name == size) {
            return Ok(());
        }
        if file.thumbnail_status == ThumbnailStatus::Pending {
            return Err(ApiError::conflict(
                ErrorCode::VariantNotReady,
                format!("the {size} thumbnail is still being made; retry shortly"),
            ));
        }
        Err(ApiError::not_found_code(ErrorCode::VariantNotFound, format!("this image has no {size} thumbnail")))
    }

    async fn sign(
        &self,
        claims: &Claims,
        file: &StorageFile,
        variant: Variant<'_>,
        access: AccessType,
        ttl: u64,
    ) -> Result<AccessUrl, ApiError> {
        let config = &self.state.config;
        let now = Utc::now().timestamp();
        let expires = signing::rounded_expiry(now, ttl, config.signed_urls.expiry_window_secs);
        let grant = Grant { image_id: file.id, variant, access, expires, generation: file.signing_generation() };
        let keys = self.state.serving.keys();
        let segment = keys.sign(&grant);
        let issued = NewSignedUrl {
            image_id: file.id,
            variant: variant.as_str(),
            access_type: access.as_str(),
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
            key_id: keys.active_key_id(),
            url_generation: file.url_generation,
            requested_by: claims.sub,
        };
        storage_signed_urls::record(&self.state.db, &issued).await?;
        Ok(AccessUrl {
            url: format!("{}{SIGNED_PREFIX}{segment}", config.server.base_url.trim_end_matches('/')),
            expires_at: DateTime::from_timestamp(expires, 0),
            variant: variant.to_string(),
            access_type: access.into(),
            signed: true,
        })
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

fn unknown_variant(api: &SignedUrlApi) -> ApiError {
    let sizes: Vec<&str> = api.state.config.storage.thumbnail_sizes.keys().map(String::as_str).collect();
    ApiError::bad_request(
        ErrorCode::InvalidVariant,
        format!("variant must be original or one of: {}", sizes.join(", ")),
    )
}
