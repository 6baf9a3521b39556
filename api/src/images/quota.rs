//! `GET /storage/quota` and `PUT /storage/quota/:owner_id`: an owner's limits and usage, and
//! the admin's adjustment of those limits.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::types::Example;
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::{Claims, Role};
use shared::db::storage_quotas::{self, OwnerQuota, QuotaLimits};
use shared::fields::FieldError;
use shared::model::{Owner, OwnerId, OwnerType};
use uuid::Uuid;

use crate::docs::Checked;
use crate::error::{ApiError, ErrorCode};
use crate::{AppState, model};

/// An owner's quota: what they may store and what they use.
#[derive(Debug, Clone, Object)]
pub struct QuotaView {
    pub owner_id: Uuid,
    pub owner_type: model::OwnerType,
    /// Files the owner may store.
    pub max_files: i64,
    /// Bytes the owner may store.
    pub max_bytes: i64,
    /// Live files charged to the owner.
    pub used_files: i64,
    /// Bytes of those files.
    pub used_bytes: i64,
    /// Last change of limits or usage; absent while the owner has never uploaded.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<OwnerQuota> for QuotaView {
    fn from(q: OwnerQuota) -> Self {
        Self {
            owner_id: q.owner_id.0,
            owner_type: q.owner_type.into(),
            max_files: q.max_files,
            max_bytes: q.max_bytes,
            used_files: q.used_files,
            used_bytes: q.used_bytes,
            updated_at: Some(q.updated_at),
        }
    }
}

/// New limits; an absent one stays as it is.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct QuotaUpdate {
    /// Files the owner may store (0 or more).
    pub max_files: Option<i64>,
    /// Bytes the owner may store (0 or more).
    pub max_bytes: Option<i64>,
    /// The kind of owner (`user` by default), used when they have no quota yet.
    pub owner_type: Option<Checked<model::OwnerType>>,
}

impl Example for QuotaUpdate {
    fn example() -> Self {
        Self {
            max_files: Some(5000),
            max_bytes: Some(10 * 1024 * 1024 * 1024),
            owner_type: Some(Checked::new("vendor")),
        }
    }
}

fn owner_type(raw: Option<&str>) -> Result<Option<OwnerType>, FieldError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(kind) => kind.parse().map(Some).map_err(|_| FieldError::new("owner_type", "must be user or vendor")),
    }
}

/// The quota of the caller, or of the owner an admin (or the service, which uploads for
/// owners) names. An owner who never uploaded has the configured defaults and no usage.
pub async fn get(
    state: &AppState,
    claims: &Claims,
    owner_id: Option<String>,
    kind: Option<String>,
) -> Result<QuotaView, ApiError> {
    let kind = owner_type(kind.as_deref())?;
    let owner_id = match owner_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(id.parse::<Uuid>().map_err(|_| FieldError::new("owner_id", "must be a UUID"))?),
    };
    let owner = match (claims.role, owner_id) {
        (Role::User | Role::Vendor, Some(id)) if id != claims.sub => {
            return Err(ApiError::forbidden("only admins may read another owner's quota"));
        }
        (Role::User, _) => Owner { id: OwnerId(claims.sub), kind: OwnerType::User },
        (Role::Vendor, _) => Owner { id: OwnerId(claims.sub), kind: OwnerType::Vendor },
        (Role::Admin | Role::Service, Some(id)) => Owner { id: OwnerId(id), kind: kind.unwrap_or(OwnerType::User) },
        (Role::Admin | Role::Service, None) => {
            return Err(FieldError::new("owner_id", format!("is required for the {} role", claims.role)).into());
        }
    };
    let quota = storage_quotas::find(&state.db, owner.id).await?;
    Ok(quota.map(QuotaView::from).unwrap_or_else(|| {
        let defaults = &state.config.quota;
        QuotaView {
            owner_id: owner.id.0,
            owner_type: owner.kind.into(),
            max_files: defaults.default_max_files,
            max_bytes: defaults.default_max_bytes,
            used_files: 0,
            used_bytes: 0,
            updated_at: None,
        }
    }))
}

/// Sets an owner's limits (admins only), with its audit entry in the same transaction.
pub async fn set(
    state: &AppState,
    claims: &Claims,
    owner_id: Uuid,
    update: QuotaUpdate,
) -> Result<QuotaView, ApiError> {
    if claims.role != Role::Admin {
        return Err(ApiError::forbidden("only admins may change quotas"));
    }
    let kind = update.owner_type.map(|kind| kind.exact("owner_type")).transpose()?;
    let kind = owner_type(kind.as_deref())?;
    let limits = QuotaLimits { max_files: update.max_files, max_bytes: update.max_bytes };
    if limits == QuotaLimits::default() {
        return Err(ApiError::bad_request(ErrorCode::EmptyUpdate, "give max_files, max_bytes or both"));
    }
    for (field, value) in [("max_files", limits.max_files), ("max_bytes", limits.max_bytes)] {
        if value.is_some_and(|v| v < 0) {
            return Err(FieldError::new(field, "must be 0 or more").into());
        }
    }
    let owner_id = OwnerId(owner_id);
    if let (Some(kind), Some(existing)) = (kind, storage_quotas::find(&state.db, owner_id).await?)
        && existing.owner_type != kind
    {
        return Err(
            FieldError::new("owner_type", format!("the owner's quota is that of a {}", existing.owner_type)).into()
        );
    }
    let owner = Owner { id: owner_id, kind: kind.unwrap_or(OwnerType::User) };
    let mut tx = state.db.begin().await?;
    let quota = storage_quotas::set_limits(&mut *tx, owner, limits, &state.config.quota).await?;
    let details = serde_json::json!({
        "owner_type": quota.owner_type.as_str(),
        "max_files": quota.max_files,
        "max_bytes": quota.max_bytes,
    });
    audit::record(&mut *tx, &Actor::of(claims), AuditAction::QuotaSet, Target::Owner(owner_id), details).await?;
    tx.commit().await?;
    tracing::info!(owner.id = %owner_id, quota.max_files = quota.max_files, quota.max_bytes = quota.max_bytes, "quota changed");
    Ok(quota.into())
}
