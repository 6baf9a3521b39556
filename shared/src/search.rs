//! A search as the client sends it (`POST /storage/images/search`, or the query string of
//! `GET /storage/images`), checked into the [`ImageFilter`] the database layer runs; every
//! wrong value is refused naming its field.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::search::{ImageFilter, SortField, SortOrder};
use crate::fields::{FieldError, normalize_tags};
use crate::model::{ImageId, OwnerId};

/// Most items on one page.
pub const MAX_PAGE_SIZE: i64 = 100;
/// Items on a page when the client does not say.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// Longest text `query`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
