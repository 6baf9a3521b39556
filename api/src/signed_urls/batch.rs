//! `POST /storage/images/signed-urls`: the access URLs of many images at once, the gallery's
//! case (fifty thumbnails in one call). Each URL is the one `GET
//! /storage/images/{id}/access?variant=` would give; the whole batch costs three database
//! statements (the rows, their thumbnails, the issued URLs), whatever its size.

use std::collections::{BTreeMap, HashMap};

use poem_openapi::Object;
use poem_openapi::types::Example;
use shared::auth::{Claims, ImageAccess};
use shared::db::{search, storage_files};
use shared::model::ImageId;
use uuid::Uuid;

use super::AccessUrl;
use super::issue::{self, UrlIssuer};
use crate::AppState;
use crate::docs::checked::Text;
use crate::error::{ApiError, ErrorDetail};
use crate::images::distinct_ids;

/// Images and the variants whose URLs are wanted.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct UrlBatchRequest {
    /// The images, at most `limits.bulkMaxIds` (500 by default); an id given twice is
    /// answered once.
    pub ids: Vec<Uuid>,
    /// `original` (the default) and/or thumbnail sizes, each at most once.
    pub variants: Option<Vec<Text>>,
    /// Lifetime of the signed URLs (private images), in seconds: default
    /// `signedUrls.defaultTtlSecs`, at most `signedUrls.maxTtlSecs`. A public image gets its
    /// public URL, which does not expire.
    pub expires_in: Option<u64>,
}

impl Example for UrlBatchRequest {
    fn example() -> Self {
        Self {
            ids: vec![Uuid::from_u128(0x0197_6f3a_4c21_7d2e_9a41_0c5e_8b1f_2d3a)],
            variants: Some(vec![Text("small".to_owned()), Text("medium".to_owned())]),
            expires_in: Some(3600),
        }
    }
}

/// One URL per image and variant, in the order of the request.
#[derive(Debug, Clone, Object)]
pub struct UrlBatch {
    pub results: Vec<ImageUrls>,
}

/// The URLs of one image.
#[derive(Debug, Clone, Object)]
pub struct ImageUrls {
    pub id: Uuid,
    /// By variant: those the image has.
    pub urls: BTreeMap<String, AccessUrl>,
    /// By variant: why a variant has no URL (`variant_not_ready` while its thumbnail is
    /// being made, `variant_not_found` when it never will be).
    #[oai(skip_serializing_if_is_empty)]
    pub errors: BTreeMap<String, ErrorDetail>,
    /// Why the image has no URL at all: `not_found` (no such image, deleted, or not
    /// readable by the caller).
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<ErrorDetail>,
}

pub async fn handle(state: &AppState, claims: &Claims, request: UrlBatchRequest) -> Result<UrlBatch, ApiError> {
    let ids = distinct_ids(&state.config, request.ids)?;
    let names = request.variants.unwrap_or_else(|| vec![Text(shared::model::ORIGINAL.to_owned())]);
    let variants = issue::parse_variants(&state.config, "variants", names.iter().map(|name| name.0.as_str()))?;
    let ttl = issue::check_ttl(&state.config, request.expires_in)?;

    let image_ids: Vec<ImageId> = ids.iter().copied().map(ImageId).collect();
    let mut files: HashMap<Uuid, _> =
        storage_files::get_many(&state.db, &image_ids).await?.into_iter().map(|file| (file.id.0, file)).collect();
    // Existence must not leak: what the caller may not read is dropped before anything
    // else is looked at, and answered like an unknown id.
    files.retain(|_, file| claims.image_access(file.owner_id, file.image_type, file.is_public) != ImageAccess::Hidden);
    let readable: Vec<ImageId> = files.values().map(|file| file.id).collect();
    let mut thumbnails = search::thumbnails_of(&state.db, &readable).await?;

    let mut issuer = UrlIssuer::new(state, claims);
    let results = ids
        .into_iter()
        .map(|id| match files.get(&id) {
            Some(file) => {
                let own = thumbnails.remove(&file.id).unwrap_or_default();
                let found = issuer.access_many(file, &own, &variants, ttl);
                ImageUrls { id, urls: found.urls, errors: found.errors, error: None }
            }
            None => ImageUrls {
                id,
                urls: BTreeMap::new(),
                errors: BTreeMap::new(),
                error: Some(ApiError::not_found("image").detail()),
            },
        })
        .collect();
    issuer.record().await?;
    Ok(UrlBatch { results })
}
