//! `GET /storage/images` and `POST /storage/images/search`: pages of the images the caller
//! may list, filtered and sorted, with the access URLs of the variants `include_urls` names
//! (made without a query per item: the thumbnails of a page come in one query, the data keys
//! that open its sealed fields in another, and the signed URLs issued are recorded in one
//! statement).

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::types::Example;
use shared::auth::Claims;
use shared::db::search;
use shared::fields::FieldError;
use shared::sealing;
use shared::search::SearchParams;
use uuid::Uuid;

use super::ImageView;
use crate::docs::checked::{Checked, PageNumber, PageSize, Text, strings};
use crate::error::ApiError;
use crate::signed_urls::{UrlIssuer, parse_variants};
use crate::{AppState, model};

/// A search. Users and vendors search their own images, the service the results of the
/// owner it names, admins everyone's or one owner's.
#[derive(Debug, Clone, Default, Object)]
#[oai(deny_unknown_fields, example)]
pub struct ImageSearchRequest {
    /// Text matched case-insensitively anywhere in the file name, the tags and the metadata
    /// values (at most 200 characters).
    pub query: Option<Text>,
    pub image_type: Option<Checked<model::ImageType>>,
    /// Whose images: admins may name anyone, the service must name the owner it acts for.
    pub owner_id: Option<Uuid>,
    pub is_public: Option<bool>,
    /// The image must carry all of these tags.
    pub tags: Option<Vec<Text>>,
    /// Uploaded at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Uploaded at or before.
    pub created_to: Option<DateTime<Utc>>,
    /// Only AI results made from this image (see `source_ids` of uploads).
    pub derived_from: Option<Uuid>,
    /// `created_at` by default.
    pub sort: Option<Checked<model::SortField>>,
    /// `desc` by default, but `asc` for `file_name`.
    pub order: Option<Checked<model::SortOrder>>,
    /// 1-based.
    pub page: Option<Checked<i64, PageNumber>>,
    pub page_size: Option<Checked<i64, PageSize>>,
    /// Variants (`original`, thumbnail sizes) whose access URLs each item carries in `urls`.
    pub include_urls: Option<Vec<Text>>,
}

impl Example for ImageSearchRequest {
    fn example() -> Self {
        Self {
            query: Some(Text("summer dress".to_owned())),
            image_type: Some(Checked::new("cloth")),
            tags: Some(vec![Text("red".to_owned())]),
            sort: Some(Checked::new("created_at")),
            order: Some(Checked::new("desc")),
            page: Some(Checked::new("1")),
            page_size: Some(Checked::new("20")),
            ..Self::default()
        }
    }
}

impl TryFrom<ImageSearchRequest> for SearchParams {
    type Error = FieldError;

    fn try_from(r: ImageSearchRequest) -> Result<Self, FieldError> {
        Ok(Self {
            query: r.query.map(|query| query.0),
            image_type: r.image_type.map(|kind| kind.exact("image_type")).transpose()?,
            owner_id: r.owner_id,
            is_public: r.is_public,
            tags: r.tags.map(strings).unwrap_or_default(),
            created_from: r.created_from,
            created_to: r.created_to,
            derived_from: r.derived_from,
            sort: r.sort.map(|sort| sort.exact("sort")).transpose()?,
            order: r.order.map(|order| order.exact("order")).transpose()?,
            page: r.page.map(|page| page.parse("page", "an integer")).transpose()?,
            page_size: r.page_size.map(|size| size.parse("page_size", "an integer")).transpose()?,
        })
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

/// The variant names of `include_urls` as the query string has them: comma-separated; an
/// empty value is no value.
pub fn url_variants(text: Option<String>) -> Option<Vec<String>> {
    let text = text.filter(|text| !text.trim().is_empty())?;
    Some(text.split(',').map(|name| name.trim().to_owned()).collect())
}

/// A search with its `include_urls`.
pub async fn search_request(
    state: &AppState,
    claims: &Claims,
    mut request: ImageSearchRequest,
) -> Result<ImagePage, ApiError> {
    let include_urls = request.include_urls.take().map(strings);
    handle(state, claims, request.try_into()?, include_urls).await
}

pub async fn handle(
    state: &AppState,
    claims: &Claims,
    params: SearchParams,
    include_urls: Option<Vec<String>>,
) -> Result<ImagePage, ApiError> {
    let filter = params.validate()?;
    let variants = match &include_urls {
        Some(names) => parse_variants(&state.config, "include_urls", names.iter().map(String::as_str))?,
        None => Vec::new(),
    };
    let scope = claims.list_scope(filter.owner_id)?;
    let mut found = search::search(&state.db, scope, &filter).await?;
    sealing::open_files(state.sealer.as_deref(), &state.db, found.items.iter_mut().map(|(file, _)| file)).await?;
    let mut issuer = UrlIssuer::new(state, claims);
    let ttl = state.config.signed_urls.default_ttl_secs;
    let items = found
        .items
        .into_iter()
        .map(|(file, thumbnails)| {
            let urls = include_urls.is_some().then(|| issuer.access_many(&file, &thumbnails, &variants, ttl).urls);
            let view = ImageView::new(file, thumbnails);
            match urls {
                Some(urls) => view.with_urls(urls),
                None => view,
            }
        })
        .collect();
    issuer.record().await?;
    Ok(ImagePage { total: found.total, page: filter.page, page_size: filter.page_size, items })
}
