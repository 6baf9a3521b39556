//! `POST /storage/images/bulk`: delete, change or publish many images in one request.
//!
//! Each image goes exactly the way of its single-image endpoint (`shared::deletion::delete`,
//! [`super::update::apply`]), with the same permissions and answers, and in a transaction
//! of its own. One transaction for the batch would hold the locks of up to
//! `limits.bulkMaxIds` rows (and their owners' quota rows) until the last image is done,
//! and one image that fails would undo all the others; image by image, a failure is that
//! image's outcome and the others are kept.

use std::collections::HashSet;

use poem_openapi::types::Example;
use poem_openapi::{Enum, Object};
use shared::auth::Claims;
use shared::config::Config;
use shared::db::storage_files::MetadataChanges;
use shared::deletion;
use shared::model::ImageId;
use uuid::Uuid;

use super::update::{self, ImageUpdate};
use crate::AppState;
use crate::docs::checked::{Checked, Text};
use crate::error::{ApiError, ErrorCode, ErrorDetail};

/// What a bulk request does to each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum BulkAction {
    /// As `DELETE /storage/images/{id}`.
    Delete,
    /// `tags` and/or `metadata`, as `PUT /storage/images/{id}`.
    Update,
    /// `is_public`, as `PUT /storage/images/{id}`.
    Visibility,
}

/// Many images, one action.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields, example)]
pub struct BulkRequest {
    pub action: Checked<BulkAction>,
    /// The images, at most `limits.bulkMaxIds` (500 by default); an id given twice is
    /// handled and answered once.
    pub ids: Option<Vec<Uuid>>,
    /// For `update`, instead of `ids`, `tags` and `metadata`: a change of its own for each
    /// image (at most `limits.bulkMaxIds`).
    pub items: Option<Vec<BulkItem>>,
    /// For `update`: replaces every tag of each image (≤ 32 of ≤ 64 characters).
    pub tags: Option<Vec<Text>>,
    /// For `update`: replaces the metadata of each image (a JSON object ≤ 16 KiB).
    pub metadata: Option<serde_json::Value>,
    /// For `visibility`: whether anyone may read the images.
    pub is_public: Option<bool>,
}

/// One image's change, in an `update` by `items`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct BulkItem {
    pub id: Uuid,
    pub tags: Option<Vec<Text>>,
    pub metadata: Option<serde_json::Value>,
}

impl Example for BulkRequest {
    fn example() -> Self {
        Self {
            action: Checked::new("update"),
            ids: Some(vec![Uuid::from_u128(0x0197_6f3a_4c21_7d2e_9a41_0c5e_8b1f_2d3a)]),
            items: None,
            tags: Some(vec![Text("summer".to_owned())]),
            metadata: None,
            is_public: None,
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum BulkStatus {
    Deleted,
    Updated,
    /// No such image, already deleted, or another owner's private image.
    NotFound,
    /// Another owner's public image: readable, not changeable.
    Forbidden,
    /// Its change breaks a rule (`items` only).
    Invalid,
    /// Failed on our side; the others went on.
    Failed,
}

/// The outcome of one image.
#[derive(Debug, Clone, Object)]
pub struct BulkOutcome {
    pub id: Uuid,
    pub status: BulkStatus,
    /// What the single-image endpoint would have answered, for an image not done.
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<ErrorDetail>,
}

/// One outcome per image, in the order of the request.
#[derive(Debug, Clone, Object)]
pub struct BulkResult {
    pub results: Vec<BulkOutcome>,
    /// Images deleted or updated.
    pub succeeded: u32,
    /// All the others.
    pub failed: u32,
}

/// The ids of a bulk request: at most `limits.bulkMaxIds` of them (counted as sent, before
/// duplicates are dropped), at least one, each once, in the order first given.
pub(crate) fn distinct_ids(config: &Config, ids: Vec<Uuid>) -> Result<Vec<Uuid>, ApiError> {
    let limit = config.limits.bulk_max_ids as usize;
    if ids.len() > limit {
        let message = format!("at most {limit} ids per request (limits.bulkMaxIds); split the batch");
        return Err(ApiError::bad_request(ErrorCode::TooManyIds, message));
    }
    if ids.is_empty() {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, "field `ids`: name at least one image"));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    Ok(ids.into_iter().filter(|id| seen.insert(*id)).collect())
}

/// What to do to one image, checked before any image is touched.
enum Work {
    Delete,
    Change(MetadataChanges),
    /// A change that breaks a rule: the image's outcome, without an attempt.
    Refused(ApiError),
}

pub async fn handle(state: &AppState, claims: &Claims, request: BulkRequest) -> Result<BulkResult, ApiError> {
    let work = plan(&state.config, request)?;
    let mut results = Vec::with_capacity(work.len());
    // Once the database is unreachable, the images not tried yet get its error without
    // each waiting `database.acquireTimeoutSecs` for it.
    let mut unavailable: Option<ErrorDetail> = None;
    for (id, work) in work {
        if let Some(detail) = &unavailable {
            results.push(BulkOutcome { id, status: BulkStatus::Failed, error: Some(detail.clone()) });
            continue;
        }
        let outcome = match work {
            Work::Refused(refused) => Err(refused),
            Work::Delete => {
                deletion::delete(&state.db, claims, ImageId(id)).await.map(|_| BulkStatus::Deleted).map_err(Into::into)
            }
            Work::Change(changes) => {
                update::apply(state, claims, ImageId(id), &changes).await.map(|_| BulkStatus::Updated)
            }
        };
        results.push(match outcome {
            Ok(status) => BulkOutcome { id, status, error: None },
            Err(error) => {
                if let ApiError::ServiceUnavailable(..) = error {
                    unavailable = Some(error.detail());
                }
                BulkOutcome { id, status: status_of(&error), error: Some(error.detail()) }
            }
        });
    }
    let succeeded = results.iter().filter(|r| r.error.is_none()).count() as u32;
    let failed = results.len() as u32 - succeeded;
    tracing::info!(bulk.images = results.len(), succeeded, failed, "bulk change done");
    Ok(BulkResult { results, succeeded, failed })
}

/// The work for each image, in order: the whole request is refused (400) for a wrong
/// action, a missing or misplaced field, or a change for all images that breaks a rule.
fn plan(config: &Config, request: BulkRequest) -> Result<Vec<(Uuid, Work)>, ApiError> {
    let action = request.action.exact("action")?;
    let action = match action.as_str() {
        "delete" => BulkAction::Delete,
        "update" => BulkAction::Update,
        _ => BulkAction::Visibility,
    };
    let misplaced = |field: &str, reason: &str| {
        Err(ApiError::bad_request(ErrorCode::InvalidField, format!("field `{field}`: {reason}")))
    };
    let common_change = request.tags.is_some() || request.metadata.is_some();
    if action != BulkAction::Update && common_change {
        return misplaced(if request.tags.is_some() { "tags" } else { "metadata" }, "only for the action update");
    }
    if action != BulkAction::Visibility && request.is_public.is_some() {
        return misplaced("is_public", "only for the action visibility");
    }
    if action != BulkAction::Update && request.items.is_some() {
        return misplaced("items", "only for the action update (the others take ids)");
    }
    let (ids, items) = match (request.ids, request.items) {
        (Some(_), Some(_)) => return misplaced("items", "give either ids or items"),
        (None, None) => return misplaced("ids", "name at least one image"),
        (Some(ids), None) => (ids, None),
        (None, Some(_)) if common_change => {
            return misplaced("items", "each item carries its own tags and metadata");
        }
        (None, Some(items)) => (items.iter().map(|item| item.id).collect(), Some(items)),
    };
    let ids = distinct_ids(config, ids)?;
    let work = match (action, items) {
        (BulkAction::Delete, _) => ids.into_iter().map(|id| (id, Work::Delete)).collect(),
        (BulkAction::Visibility, _) => {
            let Some(is_public) = request.is_public else {
                return misplaced("is_public", "required for the action visibility");
            };
            let changes = MetadataChanges { is_public: Some(is_public), ..MetadataChanges::default() };
            ids.into_iter().map(|id| (id, Work::Change(changes.clone()))).collect()
        }
        (BulkAction::Update, None) => {
            let update =
                ImageUpdate { file_name: None, is_public: None, tags: request.tags, metadata: request.metadata };
            let changes = update.validate()?;
            ids.into_iter().map(|id| (id, Work::Change(changes.clone()))).collect()
        }
        (BulkAction::Update, Some(items)) => {
            // The first change given for an id is the one made.
            let mut first = HashSet::with_capacity(items.len());
            items
                .into_iter()
                .filter(|item| first.insert(item.id))
                .map(|item| {
                    let update =
                        ImageUpdate { file_name: None, is_public: None, tags: item.tags, metadata: item.metadata };
                    let work = update.validate().map_or_else(Work::Refused, Work::Change);
                    (item.id, work)
                })
                .collect()
        }
    };
    Ok(work)
}

/// The outcome an error of the single-image path stands for.
fn status_of(error: &ApiError) -> BulkStatus {
    match error {
        ApiError::NotFound(_) => BulkStatus::NotFound,
        ApiError::Forbidden(_) => BulkStatus::Forbidden,
        ApiError::BadRequest(_) => BulkStatus::Invalid,
        _ => BulkStatus::Failed,
    }
}
