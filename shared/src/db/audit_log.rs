//! `storage_audit_log`: one row per administrative action. Rows are written in the
//! caller's executor (the action's own transaction) and read newest first in pages keyed
//! by `(at, id)`, which the table's indexes serve whole or filtered.
//!
//! The SQL of the listing is built with `QueryBuilder`: every value is a bind parameter,
//! and only the conditions given are written, so that each filter meets its index.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// A row to write; `at` is the database's `now()` (the transaction's start).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditRow<'a> {
    pub id: Uuid,
    pub actor: &'a str,
    pub actor_role: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub request_id: Option<&'a str>,
    pub details: &'a Value,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_role: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub request_id: Option<String>,
    pub details: Value,
}

/// Which rows a page holds: each filter given must match; `before` is the `(at, id)` of
/// the last row of the previous page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// Writes `row`; returns its time.
pub async fn insert(db: impl PgExecutor<'_>, row: &NewAuditRow<'_>) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar(
        "INSERT INTO storage_audit_log (id, actor, actor_role, action, target_type, target_id, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING at",
    )
    .bind(row.id)
    .bind(row.actor)
    .bind(row.actor_role)
    .bind(row.action)
    .bind(row.target_type)
    .bind(row.target_id)
    .bind(row.request_id)
    .bind(row.details)
    .fetch_one(db)
    .await
}

/// Up to `limit` rows matching `filter`, newest first (ties broken by id, also newest first).
pub async fn list(db: impl PgExecutor<'_>, filter: &AuditFilter, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT id, at, actor, actor_role, action, target_type, target_id, request_id, details
         FROM storage_audit_log WHERE true",
    );
    if let Some(action) = &filter.action {
        query.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(actor) = &filter.actor {
        query.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(target_type) = &filter.target_type {
        query.push(" AND target_type = ").push_bind(target_type.clone());
    }
    if let Some(target_id) = &filter.target_id {
        query.push(" AND target_id = ").push_bind(target_id.clone());
    }
    if let Some(since) = filter.since {
        query.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND at < ").push_bind(until);
    }
    if let Some((at, id)) = filter.before {
        query.push(" AND (at, id) < (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    query.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(limit);
    query.build_query_as().fetch_all(db).await
}
