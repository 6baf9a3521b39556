//! Listing and searching live images: filters, a whitelisted sort with the id as
//! tie-breaker, offset pages, and the thumbnails of a page in one query.
//!
//! The SQL is built with `QueryBuilder`: every value is a bind parameter and every column
//! name comes from [`SortField`], never from the client. Each filter and sort is backed by an
//! index of `migrations/0002_image_search.sql`; `scripts/seed-search` measures them on a
//! million rows.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::auth::ListScope;
use crate::db::storage_files::StorageFile;
use crate::db::storage_thumbnails::ThumbnailRecord;
use crate::images::{ImageId, ImageType, OwnerId};
use crate::imaging::ImageFormat;
use crate::upload::{FieldError, normalize_tags};

/// Most items on one page.
pub const MAX_PAGE_SIZE: i64 = 100;
/// Items on a page when the client does not say.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// Longest text `query`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// What a listing can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    CreatedAt,
    FileSize,
    FileName,
    AccessCount,
}

impl SortField {
    /// The SQL expression sorted on; it matches an index expression of the migration.
    fn expression(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::FileSize => "file_size",
            Self::FileName => "lower(original_name)",
            Self::AccessCount => "access_count",
        }
    }

    /// Names sort A to Z by default, everything else newest, largest, most used first.
    fn default_order(self) -> SortOrder {
        if self == Self::FileName { SortOrder::Asc } else { SortOrder::Desc }
    }
}

impl FromStr for SortField {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        match s {
            "created_at" => Ok(Self::CreatedAt),
            "file_size" => Ok(Self::FileSize),
            "file_name" => Ok(Self::FileName),
            "access_count" => Ok(Self::AccessCount),
            _ => Err(FieldError::new("sort", "must be created_at, file_size, file_name or access_count")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    fn keyword(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }
}

impl FromStr for SortOrder {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        match s {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err(FieldError::new("order", "must be asc or desc")),
        }
    }
}

/// A search as the client sent it (JSON body, or a query string read by [`ListQuery`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchParams {
    /// Words matched, case-insensitively, anywhere in the file name, tags and metadata values.
    pub query: Option<String>,
    pub image_type: Option<String>,
    /// Whose images; only admins may name another owner (see [`crate::auth::Claims::list_scope`]).
    pub owner_id: Option<Uuid>,
    pub is_public: Option<bool>,
    /// The image must carry all of them.
    pub tags: Vec<String>,
    /// Inclusive bounds on `created_at`.
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// Only results made from this image.
    pub derived_from: Option<Uuid>,
    pub sort: Option<String>,
    pub order: Option<String>,
    /// 1-based.
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// The query string of `GET /storage/images`, every value still text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub image_type: Option<String>,
    pub owner_id: Option<String>,
    pub is_public: Option<String>,
    pub tags: Vec<String>,
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub derived_from: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub page_size: Option<String>,
}

impl ListQuery {
    /// Parses each value, naming the parameter that is wrong.
    pub fn parse(self) -> Result<SearchParams, FieldError> {
        fn parsed<T: FromStr>(field: &'static str, raw: Option<String>, what: &str) -> Result<Option<T>, FieldError> {
            match raw.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(text) => text.parse().map(Some).map_err(|_| FieldError::new(field, format!("must be {what}"))),
            }
        }
        Ok(SearchParams {
            query: None,
            image_type: self.image_type,
            owner_id: parsed("owner_id", self.owner_id, "a UUID")?,
            is_public: parsed("is_public", self.is_public, "true or false")?,
            tags: self.tags,
            created_from: parsed("created_from", self.created_from, "an RFC 3339 date-time")?,
            created_to: parsed("created_to", self.created_to, "an RFC 3339 date-time")?,
            derived_from: parsed("derived_from", self.derived_from, "a UUID")?,
            sort: self.sort,
            order: self.order,
            page: parsed("page", self.page, "an integer")?,
            page_size: parsed("page_size", self.page_size, "an integer")?,
        })
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFilter {
    /// The owner the client asked for; the caller's role turns it into a [`ListScope`].
    pub owner_id: Option<OwnerId>,
    /// Trimmed, non-empty.
    pub text: Option<String>,
    pub image_type: Option<ImageType>,
    pub is_public: Option<bool>,
    pub tags: Vec<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub derived_from: Option<ImageId>,
    pub sort: SortField,
    pub order: SortOrder,
    pub page: i64,
    pub page_size: i64,
}

impl ImageFilter {
    /// True when nothing but the scope narrows the search.
    fn is_unfiltered(&self) -> bool {
        self.text.is_none()
            && self.image_type.is_none()
            && self.is_public.is_none()
            && self.tags.is_empty()
            && self.created_from.is_none()
            && self.created_to.is_none()
            && self.derived_from.is_none()
    }
}

impl SearchParams {
    pub fn validate(self) -> Result<ImageFilter, FieldError> {
        let text = self.query.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
        if text.as_ref().is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS || q.chars().any(char::is_control)) {
            return Err(FieldError::new("query", format!("at most {MAX_QUERY_CHARS} printable characters")));
        }
        let image_type = match self.image_type.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => {
                Some(name.parse().map_err(|_| FieldError::new("image_type", "must be user, cloth or result"))?)
            }
        };
        if let (Some(from), Some(to)) = (self.created_from, self.created_to)
            && from > to
        {
            return Err(FieldError::new("created_to", "must not be before created_from"));
        }
        let sort = match self.sort.as_deref().map(str::trim) {
            None | Some("") => SortField::CreatedAt,
            Some(name) => name.parse()?,
        };
        let order = match self.order.as_deref().map(str::trim) {
            None | Some("") => sort.default_order(),
            Some(name) => name.parse()?,
        };
        let page = self.page.unwrap_or(1);
        if !(1..=i64::from(i32::MAX)).contains(&page) {
            return Err(FieldError::new("page", "must be 1 or more"));
        }
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(FieldError::new("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        Ok(ImageFilter {
            owner_id: self.owner_id.map(OwnerId),
            text,
            image_type,
            is_public: self.is_public,
            tags: normalize_tags(self.tags)?,
            created_from: self.created_from,
            created_to: self.created_to,
            derived_from: self.derived_from.map(ImageId),
            sort,
            order,
            page,
            page_size,
        })
    }
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Matching images on all pages.
    pub total: i64,
    /// This page's images with their thumbnails, in order.
    pub items: Vec<(StorageFile, Vec<ThumbnailRecord>)>,
}

/// Runs a search over the live images of `scope`.
pub async fn search(db: &PgPool, scope: ListScope, filter: &ImageFilter) -> sqlx::Result<SearchPage> {
    let offset = (filter.page - 1) * filter.page_size;
    let mut page = QueryBuilder::<Postgres>::new(
        "SELECT id, owner_id, owner_type, image_type, original_name, file_path, file_size, mime_type, format, width, \
         height, checksum, checksum_status, verified_at, thumbnail_status, processing_error, is_public, \
         url_generation, tags, metadata, access_count, created_at, updated_at",
    );
    push_conditions(&mut page, scope, filter);
    let (expression, order) = (filter.sort.expression(), filter.order.keyword());
    page.push(format_args!(" ORDER BY {expression} {order}, id {order} LIMIT "));
    page.push_bind(filter.page_size).push(" OFFSET ").push_bind(offset);
    let files: Vec<StorageFile> = page.build_query_as().fetch_all(db).await?;

    // A page that is not full tells the total by itself, which spares the count of most
    // listings (an owner rarely has more than a page or two of matches).
    let page_len = files.len() as i64;
    let total = if page_len < filter.page_size && (page_len > 0 || offset == 0) {
        offset + page_len
    } else if scope == ListScope::Everyone && filter.is_unfiltered() {
        // Counting a million index entries takes a third of a second; the quotas hold the
        // same number exactly (every upload and deletion changes both in one transaction)
        // in one row per owner.
        sqlx::query_scalar!(r#"SELECT coalesce(sum(used_files), 0)::bigint AS "count!" FROM storage_quotas"#)
            .fetch_one(db)
            .await?
    } else {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*)");
        push_conditions(&mut count, scope, filter);
        count.build_query_scalar::<i64>().fetch_one(db).await?
    };

    let ids: Vec<ImageId> = files.iter().map(|f| f.id).collect();
    let mut thumbnails = thumbnails_of(db, &ids).await?;
    let items = files
        .into_iter()
        .map(|file| {
            let own = thumbnails.remove(&file.id).unwrap_or_default();
            (file, own)
        })
        .collect();
    Ok(SearchPage { total, items })
}

/// `FROM … WHERE …` of a search; shared by its page and its count.
fn push_conditions(query: &mut QueryBuilder<Postgres>, scope: ListScope, filter: &ImageFilter) {
    query.push(" FROM storage_files WHERE deleted_at IS NULL");
    match scope {
        ListScope::Everyone => {}
        ListScope::Owner(owner) => {
            query.push(" AND owner_id = ").push_bind(owner.0);
        }
        ListScope::ResultsOf(owner) => {
            query.push(" AND owner_id = ").push_bind(owner.0);
            query.push(" AND image_type = ").push_bind(ImageType::Result.as_str());
        }
    }
    if let Some(image_type) = filter.image_type {
        query.push(" AND image_type = ").push_bind(image_type.as_str());
    }
    if let Some(is_public) = filter.is_public {
        query.push(" AND is_public = ").push_bind(is_public);
    }
    if !filter.tags.is_empty() {
        query.push(" AND tags @> ").push_bind(filter.tags.clone());
    }
    if let Some(text) = &filter.text {
        // A generated column with a trigram index, lower-cased by PostgreSQL like the pattern.
        query.push(" AND search_text LIKE lower(");
        query.push_bind(like_pattern(text)).push(")");
    }
    if let Some(from) = filter.created_from {
        query.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.created_to {
        query.push(" AND created_at <= ").push_bind(to);
    }
    if let Some(source) = filter.derived_from {
        query.push(" AND id IN (SELECT result_id FROM storage_image_sources WHERE source_id = ");
        query.push_bind(source.0).push(")");
    }
}

/// `%text%` with LIKE's own wildcards and escape character taken literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The thumbnails of several images in one query, smallest first for each.
async fn thumbnails_of(db: &PgPool, ids: &[ImageId]) -> sqlx::Result<HashMap<ImageId, Vec<ThumbnailRecord>>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query!(
        r#"SELECT image_id AS "image_id: ImageId", size_name, file_path, file_size, mime_type, width, height, checksum
           FROM storage_thumbnails WHERE image_id = ANY($1) ORDER BY image_id, width * height, size_name"#,
        &ids,
    )
    .fetch_all(db)
    .await?;
    let mut by_image: HashMap<ImageId, Vec<ThumbnailRecord>> = HashMap::new();
    for row in rows {
        by_image.entry(row.image_id).or_default().push(ThumbnailRecord {
            format: ImageFormat::from_mime(&row.mime_type).unwrap_or(ImageFormat::Jpeg),
            size_name: row.size_name,
            file_path: row.file_path,
            file_size: row.file_size,
            width: row.width,
            height: row.height,
            checksum: row.checksum,
        });
    }
    Ok(by_image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(scope: ListScope, filter: &ImageFilter) -> String {
        let mut query = QueryBuilder::<Postgres>::new("SELECT id");
        push_conditions(&mut query, scope, filter);
        query.into_string()
    }

    #[test]
    fn defaults_are_newest_first_twenty_per_page() {
        let filter = SearchParams::default().validate().unwrap();
        assert_eq!(
            (filter.sort, filter.order, filter.page, filter.page_size),
            (SortField::CreatedAt, SortOrder::Desc, 1, 20)
        );
        let by_name = SearchParams { sort: Some("file_name".into()), ..Default::default() }.validate().unwrap();
        assert_eq!(by_name.order, SortOrder::Asc);
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |params: SearchParams| params.validate().unwrap_err().field;
        assert_eq!(field(SearchParams { sort: Some("id; DROP TABLE x".into()), ..Default::default() }), "sort");
        assert_eq!(field(SearchParams { order: Some("up".into()), ..Default::default() }), "order");
        assert_eq!(field(SearchParams { page: Some(0), ..Default::default() }), "page");
        assert_eq!(field(SearchParams { page_size: Some(101), ..Default::default() }), "page_size");
        assert_eq!(field(SearchParams { page_size: Some(0), ..Default::default() }), "page_size");
        assert_eq!(field(SearchParams { image_type: Some("avatar".into()), ..Default::default() }), "image_type");
        assert_eq!(field(SearchParams { query: Some("x".repeat(MAX_QUERY_CHARS + 1)), ..Default::default() }), "query");
        let (from, to) = (Utc::now(), Utc::now() - chrono::Duration::hours(1));
        assert_eq!(
            field(SearchParams { created_from: Some(from), created_to: Some(to), ..Default::default() }),
            "created_to"
        );
        let query = |f: fn(&mut ListQuery)| {
            let mut raw = ListQuery::default();
            f(&mut raw);
            raw.parse().unwrap_err().field
        };
        assert_eq!(query(|q| q.page = Some("two".into())), "page");
        assert_eq!(query(|q| q.owner_id = Some("me".into())), "owner_id");
        assert_eq!(query(|q| q.is_public = Some("yes".into())), "is_public");
        assert_eq!(query(|q| q.created_from = Some("yesterday".into())), "created_from");
    }

    #[test]
    fn every_value_is_bound_and_the_scope_always_applies() {
        let filter = SearchParams {
            query: Some("50%_off".into()),
            image_type: Some("cloth".into()),
            is_public: Some(true),
            tags: vec!["red".into()],
            created_from: Some(Utc::now()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let owner = OwnerId(Uuid::nil());
        let text = sql(ListScope::ResultsOf(owner), &filter);
        assert_eq!(
            text,
            "SELECT id FROM storage_files WHERE deleted_at IS NULL AND owner_id = $1 AND image_type = $2 \
             AND image_type = $3 AND is_public = $4 AND tags @> $5 \
             AND search_text LIKE lower($6) AND created_at >= $7"
        );
        assert!(!text.contains("red") && !text.contains("50"));
        assert_eq!(
            sql(ListScope::Everyone, &SearchParams::default().validate().unwrap()),
            "SELECT id FROM storage_files WHERE deleted_at IS NULL"
        );
    }

    #[test]
    fn like_wildcards_in_the_query_are_literal() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
