//! The audit trail of administrative actions: who (the token's `sub` and role, or an
//! operator command) did what ([`AuditAction`]) to which resource ([`Target`]), when, and
//! under which request id. [`record`] writes an entry in the caller's executor, which is
//! the action's own transaction wherever the action has one: a rolled-back action leaves no
//! entry, and a committed one always has its entry. [`AuditQuery`] checks a listing's
//! filters and cursor, and [`list`] reads one page, newest first.
//!
//! Entries are kept: they are few (one per administrative action) and are the record a
//! compliance review asks for, so no job purges them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::auth::Claims;
use crate::db::audit_log::{self, AuditFilter, AuditRow, NewAuditRow};
use crate::fields::FieldError;
use crate::model::{BackupId, ImageId, OwnerId};
use crate::telemetry;

/// Entries on a page when the client does not say.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most entries on one page.
pub const MAX_LIMIT: i64 = 200;
/// Longest `actor`, `target_type` or `target_id` filter, in characters (an actor is at most
/// that long, see the table's check).
pub const MAX_FILTER_CHARS: usize = 200;

/// An administrative action that leaves an entry. The table's check lists the same names:
/// a new action extends both (and the API's enum) in one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// `PUT /storage/quota/{owner_id}`.
    QuotaSet,
    /// `POST /storage/images/{id}/reprocess`.
    ImageReprocessed,
    /// `POST /storage/maintenance/{job}`.
    MaintenanceRun,
    /// `POST /storage/backup`.
    BackupRequested,
    /// `POST /storage/backups/{id}/verify`.
    BackupVerifyRequested,
    /// `DELETE /storage/backups/cleanup`.
    BackupsCleanup,
    /// `POST /storage/restore`.
    RestoreRequested,
    /// `POST /storage/images/{id}/revoke-urls`, by whoever may revoke.
    UrlsRevoked,
    /// `POST /storage/queues/{queue}/dead-letters/redrive`.
    DeadLettersRedriven,
    /// `DELETE /storage/owners/{owner_id}`, by an admin or the service.
    OwnerErased,
}

impl AuditAction {
    pub const ALL: [Self; 10] = [
        Self::QuotaSet,
        Self::ImageReprocessed,
        Self::MaintenanceRun,
        Self::BackupRequested,
        Self::BackupVerifyRequested,
        Self::BackupsCleanup,
        Self::RestoreRequested,
        Self::UrlsRevoked,
        Self::DeadLettersRedriven,
        Self::OwnerErased,
    ];

    /// The name stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QuotaSet => "quota_set",
            Self::ImageReprocessed => "image_reprocessed",
            Self::MaintenanceRun => "maintenance_run",
            Self::BackupRequested => "backup_requested",
            Self::BackupVerifyRequested => "backup_verify_requested",
            Self::BackupsCleanup => "backups_cleanup",
            Self::RestoreRequested => "restore_requested",
            Self::UrlsRevoked => "urls_revoked",
            Self::DeadLettersRedriven => "dead_letters_redriven",
            Self::OwnerErased => "owner_erased",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = FieldError;

    fn from_str(text: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| FieldError::new("action", format!("`{text}` is not an audited action")))
    }
}

/// Who acted: the caller of a request, or a command an operator ran on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    id: String,
    role: String,
}

impl Actor {
    /// The caller of a request: its token's `sub` and role.
    pub fn of(claims: &Claims) -> Self {
        Self { id: claims.sub.to_string(), role: claims.role.to_string() }
    }

    /// An operator command (`operator:redrive`), which runs with no token.
    pub fn operator(command: &str) -> Self {
        Self { id: format!("operator:{command}"), role: "operator".to_owned() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn role(&self) -> &str {
        &self.role
    }
}

/// What an action was done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An owner's quota.
    Owner(OwnerId),
    Image(ImageId),
    Backup(BackupId),
    Restore(Uuid),
    /// A periodic job, by name (`sweep`).
    Job(&'a str),
    /// A job queue, by name without the deployment prefix (`thumbnails`).
    Queue(&'a str),
}

impl Target<'_> {
    /// Every `target_type`, as stored.
    pub const TYPES: [&'static str; 6] = ["owner", "image", "backup", "restore", "job", "queue"];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Owner(_) => "owner",
            Self::Image(_) => "image",
            Self::Backup(_) => "backup",
            Self::Restore(_) => "restore",
            Self::Job(_) => "job",
            Self::Queue(_) => "queue",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Self::Owner(owner) => owner.0.to_string(),
            Self::Image(image) => image.0.to_string(),
            Self::Backup(backup) => backup.0.to_string(),
            Self::Restore(restore) => restore.to_string(),
            Self::Job(name) | Self::Queue(name) => (*name).to_owned(),
        }
    }
}

/// Writes the entry of `action` in `db`, with the current request id (`shared::telemetry`)
/// when there is one. Pass the action's own transaction, so that the entry commits, or
/// rolls back, with the action. Returns the entry's id.
pub async fn record(
    db: impl PgExecutor<'_>,
    actor: &Actor,
    action: AuditAction,
    target: Target<'_>,
    details: Value,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    let request_id = telemetry::current_request_id();
    let target_id = target.id();
    let row = NewAuditRow {
        id,
        actor: &actor.id,
        actor_role: &actor.role,
        action: action.as_str(),
        target_type: target.kind(),
        target_id: &target_id,
        request_id: request_id.as_deref(),
        details: &details,
    };
    audit_log::insert(db, &row).await?;
    Ok(id)
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_role: String,
    pub action: AuditAction,
    pub target_type: String,
    pub target_id: String,
    pub request_id: Option<String>,
    pub details: Value,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = sqlx::Error;

    fn try_from(row: AuditRow) -> sqlx::Result<Self> {
        let action = row.action.parse().map_err(|error: FieldError| sqlx::Error::Decode(error.into()))?;
        Ok(Self {
            id: row.id,
            at: row.at,
            actor: row.actor,
            actor_role: row.actor_role,
            action,
            target_type: row.target_type,
            target_id: row.target_id,
            request_id: row.request_id,
            details: row.details,
        })
    }
}

/// Where the next page starts: the `(at, id)` of the last entry shown, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// Microseconds are the database's precision: the time comes back exactly.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once('.')?;
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Self { at, id: id.parse().ok()? })
    }
}

/// A listing as the client sent it, every value still text (blank means absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A checked listing: its filter and page length.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditListing {
    pub filter: AuditFilter,
    pub limit: i64,
}

impl AuditQuery {
    /// Checks each value, naming the parameter that is wrong.
    pub fn parse(self) -> Result<AuditListing, FieldError> {
        fn given(raw: Option<String>) -> Option<String> {
            raw.map(|text| text.trim().to_owned()).filter(|text| !text.is_empty())
        }
        fn bounded(field: &'static str, raw: Option<String>) -> Result<Option<String>, FieldError> {
            match given(raw) {
                Some(text) if text.chars().count() > MAX_FILTER_CHARS || text.chars().any(char::is_control) => {
                    Err(FieldError::new(field, format!("at most {MAX_FILTER_CHARS} printable characters")))
                }
                text => Ok(text),
            }
        }
        fn time(field: &'static str, raw: Option<String>) -> Result<Option<DateTime<Utc>>, FieldError> {
            given(raw)
                .map(|text| text.parse().map_err(|_| FieldError::new(field, "must be an RFC 3339 date-time")))
                .transpose()
        }
        let action = given(self.action).map(|text| text.parse::<AuditAction>()).transpose()?;
        let target_type = given(self.target_type);
        if let Some(kind) = &target_type
            && !Target::TYPES.contains(&kind.as_str())
        {
            return Err(FieldError::new("target_type", format!("must be one of {}", Target::TYPES.join(", "))));
        }
        let (since, until) = (time("since", self.since)?, time("until", self.until)?);
        if let (Some(since), Some(until)) = (since, until)
            && until <= since
        {
            return Err(FieldError::new("until", "must be after since"));
        }
        let limit = match given(self.limit) {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| FieldError::new("limit", format!("must be an integer between 1 and {MAX_LIMIT}")))?,
        };
        let before = match given(self.cursor) {
            None => None,
            Some(text) => {
                let cursor = Cursor::decode(&text)
                    .ok_or_else(|| FieldError::new("cursor", "is not a `next_cursor` of this listing"))?;
                Some((cursor.at, cursor.id))
            }
        };
        let filter = AuditFilter {
            action: action.map(|action| action.as_str().to_owned()),
            actor: bounded("actor", self.actor)?,
            target_type,
            target_id: bounded("target_id", self.target_id)?,
            since,
            until,
            before,
        };
        Ok(AuditListing { filter, limit })
    }
}

/// One page of entries, and where the next one starts (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<Cursor>,
}

/// One page of `listing`, newest first.
pub async fn list(db: impl PgExecutor<'_>, listing: &AuditListing) -> sqlx::Result<AuditPage> {
    // One more than the page: whether there is a next page, without counting.
    let mut rows = audit_log::list(db, &listing.filter, listing.limit + 1).await?;
    let more = rows.len() as i64 > listing.limit;
    rows.truncate(listing.limit as usize);
    let entries = rows.into_iter().map(AuditEntry::try_from).collect::<sqlx::Result<Vec<_>>>()?;
    let next_cursor = entries.last().filter(|_| more).map(|last| Cursor { at: last.at, id: last.id });
    Ok(AuditPage { entries, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn every_action_has_one_name() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        assert!("owner_deleted".parse::<AuditAction>().is_err());
    }

    #[test]
    fn actors_are_callers_or_operator_commands() {
        let claims = Claims { sub: Uuid::nil(), role: Role::Admin, exp: 0 };
        let admin = Actor::of(&claims);
        assert_eq!((admin.id(), admin.role()), ("00000000-0000-0000-0000-000000000000", "admin"));
        let operator = Actor::operator("redrive");
        assert_eq!((operator.id(), operator.role()), ("operator:redrive", "operator"));
    }

    #[test]
    fn a_cursor_comes_back_exactly() {
        let cursor = Cursor { at: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(), id: Uuid::now_v7() };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "not-a-cursor", "MTIz", &URL_SAFE_NO_PAD.encode("1.not-a-uuid")] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_values_name_their_field_and_limits_are_inclusive() {
        let field = |query: AuditQuery| query.parse().unwrap_err().field;
        let limit = |text: &str| AuditQuery { limit: Some(text.into()), ..AuditQuery::default() };
        assert_eq!(AuditQuery::default().parse().unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(limit(&MAX_LIMIT.to_string()).parse().unwrap().limit, MAX_LIMIT);
        assert_eq!(limit("1").parse().unwrap().limit, 1);
        for bad in ["0", "201", "-1", "many", "1.5"] {
            assert_eq!(field(limit(bad)), "limit", "{bad}");
        }
        assert_eq!(field(AuditQuery { action: Some("quota".into()), ..AuditQuery::default() }), "action");
        assert_eq!(field(AuditQuery { target_type: Some("user".into()), ..AuditQuery::default() }), "target_type");
        assert_eq!(field(AuditQuery { since: Some("yesterday".into()), ..AuditQuery::default() }), "since");
        assert_eq!(field(AuditQuery { cursor: Some("x".into()), ..AuditQuery::default() }), "cursor");
        let at_limit = AuditQuery { actor: Some("a".repeat(MAX_FILTER_CHARS)), ..AuditQuery::default() };
        assert!(at_limit.parse().is_ok());
        let over = AuditQuery { target_id: Some("a".repeat(MAX_FILTER_CHARS + 1)), ..AuditQuery::default() };
        assert_eq!(field(over), "target_id");
        let backwards = AuditQuery {
            since: Some("2026-01-02T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            ..AuditQuery::default()
        };
        assert_eq!(field(backwards), "until");
    }
}
