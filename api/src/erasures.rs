//! Erasing an owner: `DELETE /storage/owners/:owner_id` queues the erasure of every image
//! and every trace of an owner (`shared::erasure`), and `GET /storage/erasures/:id` follows
//! it to its report. Admins may erase anyone; the service (the main app acting for its
//! users) may erase users. The work is done by a worker (`stayler.maintenance`).

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use shared::auth::{Claims, Role};
use shared::db::erasures::{self, ErasureRow};
use shared::erasure::{self, ErasureError};
use shared::fields::FieldError;
use shared::model::{Owner, OwnerId, OwnerType};
use uuid::Uuid;

use crate::auth::BearerAuth;
use crate::docs::Checked;
use crate::error::ApiError;
use crate::{AppState, model};

pub struct ErasuresApi {
    pub state: AppState,
}

/// Where an erasure is: `pending` (queued), `running`, `completed` (see `report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ErasureStatus {
    Pending,
    Running,
    Completed,
}

/// An owner's erasure: its progress and, once completed, its report.
#[derive(Debug, Clone, Object)]
pub struct ErasureView {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub owner_type: model::OwnerType,
    pub status: ErasureStatus,
    /// Live images deleted so far (each becomes a scrubbed tombstone; its files are removed
    /// by its deletion job).
    pub images_deleted: i64,
    /// Thumbnails of those images, queued for removal with them.
    pub thumbnails_queued: i64,
    /// Access log rows made by the owner or about their images that lost the owner's id,
    /// the client address and the user agent.
    pub access_log_rows_anonymised: i64,
    /// Signed URL records requested by the owner or issued for their images, removed.
    pub signed_urls_removed: i64,
    /// Upload idempotency keys of the owner or of their images, removed.
    pub idempotency_keys_removed: i64,
    /// Per-image data keys destroyed (images stored encrypted).
    pub image_keys_destroyed: i64,
    /// Once completed: the counts above, `quota_removed`, `backup_copies` and
    /// `backups_holding_copies` (copies of the owner's images in backups not yet removed by
    /// retention, which every restore skips), and `backup_note`.
    pub report: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ErasureRow> for ErasureView {
    fn from(row: ErasureRow) -> Self {
        let status = match row.status.as_str() {
            "pending" => ErasureStatus::Pending,
            "running" => ErasureStatus::Running,
            _ => ErasureStatus::Completed,
        };
        Self {
            id: row.id,
            owner_id: row.owner_id.0,
            owner_type: row.owner_type.into(),
            status,
            images_deleted: row.images_deleted,
            thumbnails_queued: row.thumbnails_queued,
            access_log_rows_anonymised: row.access_log_rows_anonymised,
            signed_urls_removed: row.signed_urls_removed,
            idempotency_keys_removed: row.idempotency_keys_removed,
            image_keys_destroyed: row.image_keys_destroyed,
            report: row.report,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum EraseResponse {
    /// The owner's erasure is already pending or running: this is it (its job is queued
    /// again, which resumes it if its job was given up).
    #[oai(status = 200)]
    Existing(
        Json<ErasureView>,
        /// Where to follow the erasure.
        #[oai(header = "Location")]
        String,
    ),
    /// The erasure is queued; follow it at `Location`.
    #[oai(status = 202)]
    Accepted(
        Json<ErasureView>,
        /// Where to follow the erasure.
        #[oai(header = "Location")]
        String,
    ),
}

/// Whether `claims` may erase (or follow the erasure of) an owner of type `kind`.
fn may_erase(claims: &Claims, kind: OwnerType) -> bool {
    match claims.role {
        Role::Admin => true,
        Role::Service => kind == OwnerType::User,
        Role::User | Role::Vendor => false,
    }
}

fn location(id: Uuid) -> String {
    format!("/storage/erasures/{id}")
}

#[OpenApi]
impl ErasuresApi {
    /// Erases an owner: every image (originals and thumbnails removed, rows kept as scrubbed
    /// tombstones), their access log rows anonymised, their quota, signed URL records,
    /// idempotency keys and image keys removed (admins; the service for owners of type
    /// `user`). `owner_type` is `user` by default. Answers 202 with the queued erasure, or
    /// 200 with the one already pending or running for the owner; `Location` is where to
    /// follow it.
    #[oai(path = "/storage/owners/:owner_id", method = "delete", operation_id = "eraseOwner")]
    async fn erase_owner(
        &self,
        auth: BearerAuth,
        owner_id: Path<Uuid>,
        owner_type: Query<Option<Checked<model::OwnerType>>>,
    ) -> Result<EraseResponse, ApiError> {
        let claims = &auth.0;
        if matches!(claims.role, Role::User | Role::Vendor) {
            return Err(ApiError::forbidden("erasing an owner is for admins and the service"));
        }
        let kind = match owner_type.0.as_ref().map(|kind| kind.as_str().trim()) {
            None | Some("") => OwnerType::User,
            Some(kind) => kind.parse().map_err(|_| FieldError::new("owner_type", "must be user or vendor"))?,
        };
        if !may_erase(claims, kind) {
            return Err(ApiError::forbidden("the service may erase users only"));
        }
        let owner = Owner { id: OwnerId(owner_id.0), kind };
        let requested = erasure::request(&self.state.db, owner, claims).await.map_err(|error| match error {
            ErasureError::Db(error) => ApiError::from(error),
            other => ApiError::internal(&other),
        })?;
        let id = requested.erasure.id;
        let view = Json(ErasureView::from(requested.erasure));
        Ok(if requested.created {
            EraseResponse::Accepted(view, location(id))
        } else {
            EraseResponse::Existing(view, location(id))
        })
    }

    /// One erasure, its progress and, once completed, its report (admins; the service for
    /// erasures of owners of type `user`).
    #[oai(path = "/storage/erasures/:id", method = "get", operation_id = "getErasure")]
    async fn get_erasure(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<ErasureView>, ApiError> {
        let claims = &auth.0;
        if matches!(claims.role, Role::User | Role::Vendor) {
            return Err(ApiError::forbidden("erasures are for admins and the service"));
        }
        let erasure = erasures::get(&self.state.db, id.0)
            .await?
            .filter(|erasure| may_erase(claims, erasure.owner_type))
            .ok_or_else(|| ApiError::not_found("erasure"))?;
        Ok(Json(erasure.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admins_erase_anyone_the_service_users_and_no_one_else_anything() {
        let claims = |role| Claims { sub: Uuid::nil(), role, exp: 0 };
        for kind in [OwnerType::User, OwnerType::Vendor] {
            assert!(may_erase(&claims(Role::Admin), kind));
            assert!(!may_erase(&claims(Role::User), kind));
            assert!(!may_erase(&claims(Role::Vendor), kind));
        }
        assert!(may_erase(&claims(Role::Service), OwnerType::User));
        assert!(!may_erase(&claims(Role::Service), OwnerType::Vendor));
    }
}
