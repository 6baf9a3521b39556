//! Making access URLs: the rules of `GET /storage/images/{id}/signed-url` and `/access`,
//! shared by those handlers, the URL batch, the `include_urls` of listings and the upload's
//! answer. Signing needs no database; the signed URLs a request issues are recorded
//! together, in one statement, by [`UrlIssuer::record`], so that a page of fifty thumbnails
//! costs one insert rather than fifty.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shared::auth::Claims;
use shared::config::Config;
use shared::db::storage_files::StorageFile;
use shared::db::storage_signed_urls::{self, NewSignedUrl};
use shared::db::storage_thumbnails::ThumbnailRecord;
use shared::model::{ImageId, ThumbnailStatus};
use shared::signing::{self, AccessType, Grant, Variant};
use uuid::Uuid;

use super::AccessUrl;
use crate::AppState;
use crate::error::{ApiError, ErrorCode, ErrorDetail};
use crate::serving::SIGNED_PREFIX;

/// `original` or a configured thumbnail size; anything else is 400 `invalid_variant`.
pub(crate) fn parse_variant<'a>(config: &Config, name: &'a str) -> Result<Variant<'a>, ApiError> {
    match Variant::parse(name) {
        Some(Variant::Thumbnail(size)) if !config.storage.thumbnail_sizes.contains_key(size) => {
            Err(unknown_variant(config))
        }
        Some(variant) => Ok(variant),
        None => Err(unknown_variant(config)),
    }
}

/// The variants a client lists (`variants` of the URL batch, `include_urls` of listings),
/// each once, in the order first given. A list longer than there are variants (the
/// original and each configured size) is refused before any name is read.
pub(crate) fn parse_variants<'a>(
    config: &Config,
    field: &'static str,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<Variant<'a>>, ApiError> {
    let most = config.storage.thumbnail_sizes.len() + 1;
    if names.len() > most {
        let message = format!("field `{field}`: at most {most} variants (the original and each thumbnail size)");
        return Err(ApiError::bad_request(ErrorCode::InvalidField, message));
    }
    if names.len() == 0 {
        let message = format!("field `{field}`: name at least one variant");
        return Err(ApiError::bad_request(ErrorCode::InvalidField, message));
    }
    let mut variants: Vec<Variant<'a>> = Vec::with_capacity(names.len());
    for name in names {
        let variant = parse_variant(config, name)?;
        if !variants.contains(&variant) {
            variants.push(variant);
        }
    }
    Ok(variants)
}

/// The lifetime of a signed URL: the default when none is asked for; 0 and more than
/// `signedUrls.maxTtlSecs` are refused, not clamped.
pub(crate) fn check_ttl(config: &Config, requested: Option<u64>) -> Result<u64, ApiError> {
    let config = &config.signed_urls;
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

/// Whether `file` has `variant`, given its thumbnails: a thumbnail not made yet is a 409
/// while the image is still being processed, a 404 when it never will be (processing
/// failed, or the size was configured later).
pub(crate) fn check_variant(
    file: &StorageFile,
    thumbnails: &[ThumbnailRecord],
    variant: Variant<'_>,
) -> Result<(), ApiError> {
    let Variant::Thumbnail(size) = variant else { return Ok(()) };
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

/// The URLs of some variants of one image, and why the others have none.
#[derive(Debug, Default)]
pub(crate) struct VariantUrls {
    pub urls: BTreeMap<String, AccessUrl>,
    pub errors: BTreeMap<String, ErrorDetail>,
}

/// A signed URL made but not recorded yet.
struct Issued {
    image_id: ImageId,
    variant: String,
    access: AccessType,
    expires_at: DateTime<Utc>,
    url_generation: i32,
}

/// Makes the URLs of one request and records the signed ones at the end, together.
pub(crate) struct UrlIssuer<'s> {
    state: &'s AppState,
    requested_by: Uuid,
    /// One clock reading per request: every URL of a batch gets the same expiry window.
    now: i64,
    issued: Vec<Issued>,
}

impl<'s> UrlIssuer<'s> {
    pub fn new(state: &'s AppState, claims: &Claims) -> Self {
        Self { state, requested_by: claims.sub, now: Utc::now().timestamp(), issued: Vec::new() }
    }

    /// A signed URL of `variant` of `file`, living at least `ttl` seconds (the expiry is
    /// rounded up to `signedUrls.expiryWindowSecs`, so repeated requests get the same URL).
    pub fn signed(&mut self, file: &StorageFile, variant: Variant<'_>, access: AccessType, ttl: u64) -> AccessUrl {
        let config = &self.state.config;
        let expires = signing::rounded_expiry(self.now, ttl, config.signed_urls.expiry_window_secs);
        let grant = Grant { image_id: file.id, variant, access, expires, generation: file.signing_generation() };
        let segment = self.state.serving.keys().sign(&grant);
        self.issued.push(Issued {
            image_id: file.id,
            variant: variant.as_str().to_owned(),
            access,
            expires_at: DateTime::from_timestamp(expires, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
            url_generation: file.url_generation,
        });
        AccessUrl {
            url: format!("{}{SIGNED_PREFIX}{segment}", config.server.base_url.trim_end_matches('/')),
            expires_at: DateTime::from_timestamp(expires, 0),
            variant: variant.to_string(),
            access_type: access.into(),
            signed: true,
        }
    }

    /// The URL to fetch `variant` of `file` with: its public URL when the image is public
    /// (no expiry), else a signed `view` URL living `ttl` seconds.
    pub fn access(&mut self, file: &StorageFile, variant: Variant<'_>, ttl: u64) -> AccessUrl {
        if !file.is_public {
            return self.signed(file, variant, AccessType::View, ttl);
        }
        let config = &self.state.config.server;
        AccessUrl {
            url: format!("{}{}/{}/{variant}", config.base_url.trim_end_matches('/'), config.public_path, file.id),
            expires_at: None,
            variant: variant.to_string(),
            access_type: AccessType::View.into(),
            signed: false,
        }
    }

    /// The access URLs of `variants` of `file` that exist, and for each other variant the
    /// error `GET /storage/images/{id}/access` would answer.
    pub fn access_many(
        &mut self,
        file: &StorageFile,
        thumbnails: &[ThumbnailRecord],
        variants: &[Variant<'_>],
        ttl: u64,
    ) -> VariantUrls {
        let mut found = VariantUrls::default();
        for &variant in variants {
            match check_variant(file, thumbnails, variant) {
                Ok(()) => {
                    found.urls.insert(variant.to_string(), self.access(file, variant, ttl));
                }
                Err(missing) => {
                    found.errors.insert(variant.to_string(), missing.detail());
                }
            }
        }
        found
    }

    /// Records every signed URL made, in one statement (none when there is none).
    pub async fn record(self) -> Result<(), ApiError> {
        if self.issued.is_empty() {
            return Ok(());
        }
        let key_id = self.state.serving.keys().active_key_id();
        let rows: Vec<NewSignedUrl<'_>> = self
            .issued
            .iter()
            .map(|issued| NewSignedUrl {
                image_id: issued.image_id,
                variant: &issued.variant,
                access_type: issued.access.as_str(),
                expires_at: issued.expires_at,
                key_id,
                url_generation: issued.url_generation,
                requested_by: self.requested_by,
            })
            .collect();
        storage_signed_urls::record_many(&self.state.db, &rows).await?;
        Ok(())
    }
}

fn unknown_variant(config: &Config) -> ApiError {
    let sizes: Vec<&str> = config.storage.thumbnail_sizes.keys().map(String::as_str).collect();
    ApiError::bad_request(
        ErrorCode::InvalidVariant,
        format!("variant must be original or one of: {}", sizes.join(", ")),
    )
}
