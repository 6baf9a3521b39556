//! Restores for operators (admins only): `POST /storage/restore` queues one, and
//! `GET /storage/restores/:id` reports restored, skipped and failed images with reasons.
//! The work is done by a worker (`stayler.backups`); `stayler-worker restore` does the same
//! in the foreground when the API or the broker is down.

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::Role;
use shared::backup::restore;
use shared::db::storage_restores::{self, Restore};
use shared::model::{BackupId, ImageId, RestoreMode, RestoreSelection};
use uuid::Uuid;

use crate::auth::{AdminAuth, BearerAuth};
use crate::docs::Checked;
use crate::error::{ApiError, ErrorCode};
use crate::{AppState, model};

/// Most image ids one request may name.
const MAX_IMAGE_IDS: usize = 1000;

pub struct RestoresApi {
    pub state: AppState,
}

/// What to restore: exactly one of `backup_id`, `date` or `image_ids`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct RestoreRequest {
    /// Every image of this backup.
    pub backup_id: Option<Uuid>,
    /// Every image of the backups of this UTC day, each once, from its newest intact copy.
    pub date: Option<NaiveDate>,
    /// These images, each from the newest backup holding an intact copy (at most 1000).
    pub image_ids: Option<Vec<Uuid>>,
    /// `missing_only` (default: only originals missing from storage come back; a present
    /// one is skipped even if damaged) or `overwrite` (every selected original is replaced
    /// by its verified backup copy: what repairs a damaged one).
    pub mode: Option<Checked<model::RestoreMode>>,
}

impl Example for RestoreRequest {
    fn example() -> Self {
        let image = Uuid::from_u128(0x0197_6f3a_4c21_7d2e_9a41_0c5e_8b1f_2d3a);
        RestoreRequest {
            backup_id: None,
            date: None,
            image_ids: Some(vec![image]),
            mode: Some(Checked::new("overwrite")),
        }
    }
}

/// A restore and, once finished, its outcome.
#[derive(Debug, Clone, Object)]
pub struct RestoreView {
    pub id: Uuid,
    /// `failed` when some images failed, or the restore could not run: see `error`.
    pub status: model::RestoreStatus,
    pub selection: serde_json::Value,
    pub mode: model::RestoreMode,
    pub restored: i64,
    pub skipped: i64,
    pub failed: i64,
    /// Skipped and failed images with reasons (the first 500).
    pub details: serde_json::Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// The restore is queued; follow it at `GET /storage/restores/{id}`.
    #[oai(status = 202)]
    Accepted(Json<RestoreView>),
}

fn view(restore: Restore) -> RestoreView {
    RestoreView {
        id: restore.id,
        status: restore.status.into(),
        selection: restore.selection,
        mode: restore.mode.into(),
        restored: restore.restored,
        skipped: restore.skipped,
        failed: restore.failed,
        details: restore.details,
        error: restore.error,
        created_at: restore.created_at,
        started_at: restore.started_at,
        completed_at: restore.completed_at,
    }
}

/// The selection and mode of a request, or why it is malformed.
fn parse(request: RestoreRequest) -> Result<(RestoreSelection, RestoreMode), ApiError> {
    let invalid = |message: &str| ApiError::bad_request(ErrorCode::InvalidField, message);
    let selection = match (request.backup_id, request.date, request.image_ids) {
        (Some(id), None, None) => RestoreSelection::BackupId(BackupId(id)),
        (None, Some(date), None) => RestoreSelection::Date(date),
        (None, None, Some(ids)) if ids.is_empty() || ids.len() > MAX_IMAGE_IDS => {
            return Err(invalid(&format!("image_ids must name 1 to {MAX_IMAGE_IDS} images")));
        }
        (None, None, Some(ids)) => RestoreSelection::ImageIds(ids.into_iter().map(ImageId).collect()),
        _ => return Err(invalid("give exactly one of backup_id, date or image_ids")),
    };
    let mode = match request.mode.as_ref().map(Checked::as_str) {
        None | Some("missing_only") => RestoreMode::MissingOnly,
        Some("overwrite") => RestoreMode::Overwrite,
        Some(other) => return Err(invalid(&format!("mode `{other}` is not missing_only or overwrite"))),
    };
    Ok((selection, mode))
}

/// The audit entry's summary of a request: its mode and selection, with a count in place of
/// a list of up to a thousand image ids.
fn audit_details(selection: &RestoreSelection, mode: RestoreMode) -> serde_json::Value {
    match selection {
        RestoreSelection::BackupId(id) => serde_json::json!({"mode": mode.as_str(), "backup_id": id.0}),
        RestoreSelection::Date(date) => serde_json::json!({"mode": mode.as_str(), "date": date}),
        RestoreSelection::ImageIds(ids) => serde_json::json!({"mode": mode.as_str(), "image_count": ids.len()}),
    }
}

#[OpenApi]
impl RestoresApi {
    /// Restores originals (and rebuilds their rows) from backups (admins only). Every byte
    /// is verified against its recorded SHA-256 before it replaces anything; thumbnails are
    /// made again by the workers.
    #[oai(path = "/storage/restore", method = "post", operation_id = "requestRestore")]
    async fn request_restore(&self, auth: AdminAuth, body: Json<RestoreRequest>) -> Result<Accepted, ApiError> {
        let (selection, mode) = parse(body.0)?;
        let mut tx = self.state.db.begin().await?;
        let id = restore::request(&mut tx, &selection, mode, Some(auth.0.sub)).await?;
        let (actor, details) = (Actor::of(&auth.0), audit_details(&selection, mode));
        audit::record(&mut *tx, &actor, AuditAction::RestoreRequested, Target::Restore(id), details).await?;
        // Read before the commit: the restore as requested, not as a fast worker left it.
        let restore = storage_restores::get(&mut *tx, id).await?.ok_or_else(|| ApiError::not_found("restore"))?;
        tx.commit().await?;
        tracing::info!(restore.id = %id, "restore {id} requested");
        Ok(Accepted::Accepted(Json(view(restore))))
    }

    /// One restore and its report (admins only).
    #[oai(path = "/storage/restores/:id", method = "get", operation_id = "getRestore")]
    async fn get_restore(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<RestoreView>, ApiError> {
        if auth.0.role != Role::Admin {
            return Err(ApiError::forbidden("restores are for admins"));
        }
        let restore =
            storage_restores::get(&self.state.db, id.0).await?.ok_or_else(|| ApiError::not_found("restore"))?;
        Ok(Json(view(restore)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RestoreRequest {
        RestoreRequest { backup_id: None, date: None, image_ids: None, mode: None }
    }

    #[test]
    fn exactly_one_selection_is_accepted() {
        assert!(parse(request()).is_err());
        let both =
            RestoreRequest { backup_id: Some(Uuid::nil()), date: NaiveDate::from_ymd_opt(2026, 1, 1), ..request() };
        assert!(parse(both).is_err());
        let (selection, mode) = parse(RestoreRequest { backup_id: Some(Uuid::nil()), ..request() }).unwrap();
        assert_eq!((selection, mode), (RestoreSelection::BackupId(BackupId(Uuid::nil())), RestoreMode::MissingOnly));
        assert!(parse(RestoreRequest { image_ids: Some(vec![]), ..request() }).is_err());
        let overwrite =
            RestoreRequest { image_ids: Some(vec![Uuid::nil()]), mode: Some(Checked::new("overwrite")), ..request() };
        assert_eq!(parse(overwrite).unwrap().1, RestoreMode::Overwrite);
        let bad_mode =
            RestoreRequest { image_ids: Some(vec![Uuid::nil()]), mode: Some(Checked::new("all")), ..request() };
        assert!(parse(bad_mode).is_err());
    }
}
