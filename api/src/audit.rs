//! `GET /storage/audit` (admins): the audit trail of administrative actions, newest first,
//! filtered and in pages that follow a cursor, so that entries recorded meanwhile neither
//! repeat nor hide older ones. The entries are written by the actions themselves, through
//! `shared::audit::record`.

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use shared::audit::{self, AuditEntry, AuditQuery, DEFAULT_LIMIT, MAX_LIMIT};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::docs::checked::{Bounds, Checked, text};
use crate::error::ApiError;

pub struct AuditApi {
    pub state: AppState,
}

/// An administrative action recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(remote = "shared::audit::AuditAction", rename_all = "snake_case")]
pub enum AuditAction {
    QuotaSet,
    ImageReprocessed,
    MaintenanceRun,
    BackupRequested,
    BackupVerifyRequested,
    BackupsCleanup,
    RestoreRequested,
    UrlsRevoked,
    DeadLettersRedriven,
    OwnerErased,
}

/// What an audited action was done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum AuditTargetType {
    Owner,
    Image,
    Backup,
    Restore,
    Job,
    Queue,
}

/// Entries on one page: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] by default.
pub struct AuditLimit;

impl Bounds for AuditLimit {
    const MINIMUM: Option<f64> = Some(1.0);
    const MAXIMUM: Option<f64> = Some(MAX_LIMIT as f64);
    const DEFAULT: Option<i64> = Some(DEFAULT_LIMIT);
}

/// One recorded action.
#[derive(Debug, Clone, Object)]
pub struct AuditEntryView {
    pub id: Uuid,
    /// When the action's transaction began.
    pub at: DateTime<Utc>,
    /// The caller's token `sub`, or `operator:<command>` for a command run on a server.
    pub actor: String,
    /// `admin`, `service`, `user`, `vendor` or `operator`.
    pub actor_role: String,
    pub action: AuditAction,
    /// `owner`, `image`, `backup`, `restore`, `job` or `queue`.
    pub target_type: String,
    /// The owner, image, backup or restore id, or the job or queue name.
    pub target_id: String,
    /// The `X-Request-Id` of the request that acted (the same id is on its events and logs).
    pub request_id: Option<String>,
    /// A few figures of the action: new quota values, counts, the queued event's id.
    pub details: serde_json::Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            at: entry.at,
            actor: entry.actor,
            actor_role: entry.actor_role,
            action: entry.action.into(),
            target_type: entry.target_type,
            target_id: entry.target_id,
            request_id: entry.request_id,
            details: entry.details,
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Clone, Object)]
pub struct AuditLogPage {
    pub items: Vec<AuditEntryView>,
    /// Pass as `cursor` (with the same filters) for the next, older page; absent on the last.
    pub next_cursor: Option<String>,
}

#[OpenApi]
impl AuditApi {
    /// The audit trail of administrative actions, newest first (admins only).
    ///
    /// Filters, all optional and combined: `action`, `actor` (a token's `sub`, or
    /// `operator:<command>`), `target_type` with or without `target_id`, `since` (inclusive)
    /// and `until` (exclusive), RFC 3339. `limit` is 1 to 200 (default 50); `cursor` is the
    /// `next_cursor` of the previous page.
    #[oai(path = "/storage/audit", method = "get", operation_id = "listAuditLog")]
    #[allow(clippy::too_many_arguments)]
    async fn list_audit_log(
        &self,
        _auth: AdminAuth,
        action: Query<Option<Checked<AuditAction>>>,
        actor: Query<Option<String>>,
        target_type: Query<Option<Checked<AuditTargetType>>>,
        target_id: Query<Option<String>>,
        since: Query<Option<Checked<DateTime<Utc>>>>,
        until: Query<Option<Checked<DateTime<Utc>>>>,
        limit: Query<Option<Checked<i64, AuditLimit>>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditLogPage>, ApiError> {
        let query = AuditQuery {
            action: text(action.0),
            actor: actor.0,
            target_type: text(target_type.0),
            target_id: target_id.0,
            since: text(since.0),
            until: text(until.0),
            limit: text(limit.0),
            cursor: cursor.0,
        };
        let page = audit::list(&self.state.db, &query.parse()?).await?;
        Ok(Json(AuditLogPage {
            items: page.entries.into_iter().map(AuditEntryView::from).collect(),
            next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use shared::audit::Target;

    use super::*;

    fn spelling<T: ToJSON>(value: &T) -> String {
        value.to_json().and_then(|json| json.as_str().map(str::to_owned)).unwrap()
    }

    #[test]
    fn documented_names_are_those_of_shared() {
        for action in shared::audit::AuditAction::ALL {
            assert_eq!(spelling(&AuditAction::from(action)), action.as_str());
        }
        let targets = [
            AuditTargetType::Owner,
            AuditTargetType::Image,
            AuditTargetType::Backup,
            AuditTargetType::Restore,
            AuditTargetType::Job,
            AuditTargetType::Queue,
        ];
        let spelled: Vec<String> = targets.iter().map(spelling).collect();
        assert_eq!(spelled, Target::TYPES);
    }
}
