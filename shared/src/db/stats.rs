//! Usage statistics over live images, for one owner or for everyone.
//!
//! Each figure is one aggregate query; the owner filter is added only when scoped, so the
//! planner sees a plain `owner_id = $1` and uses the per-owner indexes.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Whose images the figures cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Owner(Uuid),
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TypeCount {
    pub image_type: String,
    pub files: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DayCount {
    pub day: NaiveDate,
    pub files: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct Processing {
    pub thumbnails_pending: i64,
    pub thumbnails_failed: i64,
    pub checksums_pending: i64,
    pub checksums_corrupt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TopImage {
    pub id: Uuid,
    pub original_name: String,
    pub image_type: String,
    pub access_count: i64,
    pub last_accessed: Option<DateTime<Utc>>,
}

/// Starts `SELECT … FROM storage_files WHERE deleted_at IS NULL`, scoped.
fn live_files(select: &str, scope: Scope) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(select);
    query.push(" FROM storage_files WHERE deleted_at IS NULL");
    if let Scope::Owner(owner) = scope {
        query.push(" AND owner_id = ").push_bind(owner);
    }
    query
}

/// Files and bytes per image type.
pub async fn by_type(db: &PgPool, scope: Scope) -> sqlx::Result<Vec<TypeCount>> {
    let mut query =
        live_files("SELECT image_type, count(*) AS files, coalesce(sum(file_size), 0)::int8 AS bytes", scope);
    query.push(" GROUP BY image_type ORDER BY image_type");
    query.build_query_as().fetch_all(db).await
}

/// Files and bytes per UTC day of upload, from `since` on, oldest first.
pub async fn by_day(db: &PgPool, scope: Scope, since: DateTime<Utc>) -> sqlx::Result<Vec<DayCount>> {
    let mut query = live_files(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS files, \
         coalesce(sum(file_size), 0)::int8 AS bytes",
        scope,
    );
    query.push(" AND created_at >= ").push_bind(since);
    query.push(" GROUP BY 1 ORDER BY 1");
    query.build_query_as().fetch_all(db).await
}

/// Images still waiting for, or failed in, processing.
pub async fn processing(db: &PgPool, scope: Scope) -> sqlx::Result<Processing> {
    let mut query = live_files(
        "SELECT count(*) FILTER (WHERE thumbnail_status = 'pending') AS thumbnails_pending, \
         count(*) FILTER (WHERE thumbnail_status = 'failed') AS thumbnails_failed, \
         count(*) FILTER (WHERE checksum_status = 'pending') AS checksums_pending, \
         count(*) FILTER (WHERE checksum_status = 'corrupt') AS checksums_corrupt",
        scope,
    );
    query.build_query_as().fetch_one(db).await
}

/// The most accessed images, most first.
pub async fn top_accessed(db: &PgPool, scope: Scope, limit: i64) -> sqlx::Result<Vec<TopImage>> {
    let mut query = live_files("SELECT id, original_name, image_type, access_count, last_accessed", scope);
    query.push(" AND access_count > 0 ORDER BY access_count DESC, id LIMIT ").push_bind(limit);
    query.build_query_as().fetch_all(db).await
}

#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct SignedUrlTotals {
    /// Distinct URLs issued (a URL issued again within its expiry window counts once).
    pub issued: i64,
    /// Of those, not expired yet.
    pub active: i64,
    /// Serves through them.
    pub uses: i64,
    pub flagged: i64,
}

/// A signed URL flagged as possible abuse.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct FlaggedUrl {
    pub id: Uuid,
    pub image_id: Uuid,
    pub variant: String,
    pub access_type: String,
    pub use_count: i64,
    pub distinct_ips: i32,
    pub expires_at: DateTime<Utc>,
    pub flagged_at: DateTime<Utc>,
    pub flag_reason: Option<String>,
}

/// Starts `SELECT … FROM storage_signed_urls u`, scoped to the owner's images.
fn signed_urls(select: &str, scope: Scope) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::new(select);
    query.push(" FROM storage_signed_urls u");
    match scope {
        Scope::Owner(owner) => {
            query.push(" JOIN storage_files f ON f.id = u.image_id WHERE f.owner_id = ").push_bind(owner);
        }
        Scope::Global => {
            query.push(" WHERE true");
        }
    }
    query
}

/// How signed URLs of the scope's images were issued and used.
pub async fn signed_url_totals(db: &PgPool, scope: Scope) -> sqlx::Result<SignedUrlTotals> {
    let mut query = signed_urls(
        "SELECT count(*) AS issued, count(*) FILTER (WHERE u.expires_at > now()) AS active, \
         coalesce(sum(u.use_count), 0)::int8 AS uses, count(*) FILTER (WHERE u.flagged_at IS NOT NULL) AS flagged",
        scope,
    );
    query.build_query_as().fetch_one(db).await
}

/// The most recently flagged URLs, latest first.
pub async fn flagged_urls(db: &PgPool, scope: Scope, limit: i64) -> sqlx::Result<Vec<FlaggedUrl>> {
    let mut query = signed_urls(
        "SELECT u.id, u.image_id, u.variant, u.access_type, u.use_count, u.distinct_ips, u.expires_at, \
         u.flagged_at, u.flag_reason",
        scope,
    );
    query.push(" AND u.flagged_at IS NOT NULL ORDER BY u.flagged_at DESC, u.id LIMIT ").push_bind(limit);
    query.build_query_as().fetch_all(db).await
}
