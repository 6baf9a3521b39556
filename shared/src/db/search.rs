//! Listing and searching live images: a validated filter (see `crate::search` for the
//! request it comes from), a whitelisted sort with the id as tie-breaker, offset pages, and
//! the thumbnails of a page in one query.
//!
//! The SQL is built with `QueryBuilder`: every value is a bind parameter and every column
//! name comes from [`SortField`], never from the client. Each filter and sort is backed by an
//! index of `migrations/0002_image_search.sql`; `scripts/seed-search` measures them on a
//! million rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::db::storage_files::StorageFile;
use crate::db::storage_thumbnails::ThumbnailRecord;
use crate::model::ImageFormat;
use crate::model::{ImageId, ImageType, ListScope, OwnerId};

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
    pub fn default_order(self) -> SortOrder {
        if self == Self::FileName { SortOrder::Asc } else { SortOrder::Desc }
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
pub async fn thumbnails_of(db: &PgPool, ids: &[ImageId]) -> sqlx::Result<HashMap<ImageId, Vec<ThumbnailRecord>>> {
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

    /// Newest first, the first page of 20, nothing else narrowing.
    fn unfiltered() -> ImageFilter {
        ImageFilter {
            owner_id: None,
            text: None,
            image_type: None,
            is_public: None,
            tags: Vec::new(),
            created_from: None,
            created_to: None,
            derived_from: None,
            sort: SortField::CreatedAt,
            order: SortOrder::Desc,
            page: 1,
            page_size: 20,
        }
    }

    #[test]
    fn every_value_is_bound_and_the_scope_always_applies() {
        let filter = ImageFilter {
            text: Some("50%_off".into()),
            image_type: Some(ImageType::Cloth),
            is_public: Some(true),
            tags: vec!["red".into()],
            created_from: Some(Utc::now()),
            ..unfiltered()
        };
        let owner = OwnerId(Uuid::nil());
        let text = sql(ListScope::ResultsOf(owner), &filter);
        assert_eq!(
            text,
            "SELECT id FROM storage_files WHERE deleted_at IS NULL AND owner_id = $1 AND image_type = $2 \
             AND image_type = $3 AND is_public = $4 AND tags @> $5 \
             AND search_text LIKE lower($6) AND created_at >= $7"
        );
        assert!(!text.contains("red") && !text.contains("50"));
        assert_eq!(sql(ListScope::Everyone, &unfiltered()), "SELECT id FROM storage_files WHERE deleted_at IS NULL");
    }

    #[test]
    fn like_wildcards_in_the_query_are_literal() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
