//! `GET /storage/images` and `POST /storage/images/search`: pages of the images the caller
//! may list, filtered and sorted.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::auth::Claims;
use shared::db::search;
use shared::search::SearchParams;
use uuid::Uuid;

use super::ImageView;
use crate::AppState;
use crate::error::ApiError;

/// A search. Users and vendors search their own images, the service the results of the
/// owner it names, admins everyone's or one owner's.
#[derive(Debug, Clone, Default, Object)]
#[oai(deny_unknown_fields)]
pub struct ImageSearchRequest {
    /// Text matched case-insensitively anywhere in the file name, the tags and the metadata
    /// values (at most 200 characters).
    pub query: Option<String>,
    /// `user`, `cloth` or `result`.
    pub image_type: Option<String>,
    /// Whose images: admins may name anyone, the service must name the owner it acts for.
    pub owner_id: Option<Uuid>,
    pub is_public: Option<bool>,
    /// The image must carry all of these tags.
    pub tags: Option<Vec<String>>,
    /// Uploaded at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Uploaded at or before.
    pub created_to: Option<DateTime<Utc>>,
    /// Only AI results made from this image (see `source_ids` of uploads).
    pub derived_from: Option<Uuid>,
    /// `created_at` (default), `file_size`, `file_name` or `access_count`.
    pub sort: Option<String>,
    /// `asc` or `desc`; default `desc`, but `asc` for `file_name`.
    pub order: Option<String>,
    /// 1-based, default 1.
    pub page: Option<i64>,
    /// 1 to 100, default 20.
    pub page_size: Option<i64>,
}

impl From<ImageSearchRequest> for SearchParams {
    fn from(r: ImageSearchRequest) -> Self {
        Self {
            query: r.query,
            image_type: r.image_type,
            owner_id: r.owner_id,
            is_public: r.is_public,
            tags: r.tags.unwrap_or_default(),
            created_from: r.created_from,
            created_to: r.created_to,
            derived_from: r.derived_from,
            sort: r.sort,
            order: r.order,
            page: r.page,
            page_size: r.page_size,
        }
    }
}

/// One page of images.
#[derive(Debug, Clone, Object)]
pub struct ImagePage {
    /// Matching images on all pages.
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
    pub items: Vec<ImageView>,
}

pub async fn handle(state: &AppState, claims: &Claims, params: SearchParams) -> Result<ImagePage, ApiError> {
    let filter = params.validate()?;
    let scope = claims.list_scope(filter.owner_id)?;
    let found = search::search(&state.db, scope, &filter).await?;
    Ok(ImagePage {
        total: found.total,
        page: filter.page,
        page_size: filter.page_size,
        items: found.items.into_iter().map(|(file, thumbnails)| ImageView::new(file, thumbnails)).collect(),
    })
}
