//! Backups for operators (admins only): `POST /storage/backup` requests one,
//! `GET /storage/backups` and `GET /storage/backups/:id` show status and progress. The work
//! itself is done by the workers (`stayler.backups`).

use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::{Claims, Role};
use shared::backup;
use shared::db::backup_retention;
use shared::db::storage_backup_entries::{self, Progress};
use shared::db::storage_backups::{self, Backup};
use shared::model::{BackupId, BackupStatus};
use shared::periodic::PeriodicJob;
use uuid::Uuid;

use crate::auth::BearerAuth;
use crate::docs::checked::{self, Checked, PageNumber, PageSize};
use crate::error::{ApiError, ErrorCode};
use crate::{AppState, model};

const MAX_PAGE_SIZE: u32 = checked::MAX_PAGE_SIZE as u32;
/// As documented for every listing (`checked::PageNumber`).
const MAX_PAGE: u32 = i32::MAX as u32;
const DEFAULT_PAGE_SIZE: u32 = shared::search::DEFAULT_PAGE_SIZE as u32;

pub struct BackupsApi {
    pub state: AppState,
}

/// One backup run.
#[derive(Debug, Clone, Object)]
pub struct BackupView {
    pub id: Uuid,
    /// `pending` (waiting for a worker to plan it), `running`, `completed`, or `failed`
    /// (some images could not be backed up: see `error`; the others were).
    pub status: model::BackupStatus,
    pub trigger: model::BackupTrigger,
    /// UTC day of the backup's folder, `{backupPath}/{date}/{id}/`.
    pub backup_date: NaiveDate,
    /// The backup's folder, relative to `storage.backupPath`.
    pub path: String,
    pub compression_level: i32,
    pub progress: ProgressView,
    /// Images archived (once finished; planned while running).
    pub file_count: i64,
    pub failed_count: i64,
    /// Bytes of the originals archived, and of their archives.
    pub total_bytes: i64,
    pub compressed_bytes: i64,
    /// `compressed_bytes / total_bytes`: what compression bought (1.0 = nothing).
    pub compression_ratio: Option<f64>,
    /// Images whose bytes did not compress, stored in raw zstd blocks at copy speed.
    pub stored_raw_count: i64,
    /// Time spent archiving and verifying, summed over batches, in milliseconds.
    pub work_ms: i64,
    /// Wall-clock time from start to finish, in milliseconds.
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// Relative to `storage.backupPath`; set once finished.
    pub manifest_path: Option<String>,
    /// The last integrity check of the archives: when and whether all were intact.
    pub verified_at: Option<DateTime<Utc>>,
    pub verify_status: Option<model::VerifyStatus>,
    /// What that check counted (`checked`, `intact`, `missing`, `corrupt`) and the first
    /// damaged archives (`problems`: image, archive path, `missing` or `corrupt`, reason).
    pub verify_report: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Set once retention removed the backup's files.
    pub removed_at: Option<DateTime<Utc>>,
}

/// Where a backup is, in images and batches.
#[derive(Debug, Clone, Object)]
pub struct ProgressView {
    pub batches: i32,
    pub batches_done: i32,
    pub images_pending: i64,
    pub images_done: i64,
    pub images_failed: i64,
}

#[derive(Debug, Clone, Object)]
pub struct BackupPage {
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
    pub items: Vec<BackupView>,
}

/// A retention run queued by an admin.
#[derive(Debug, Clone, Object)]
pub struct CleanupView {
    /// `storage.retentionPolicy.retentionDays`.
    pub retention_days: u32,
    /// Finished backups older than that, still on disk: removed by the run, except those
    /// holding the last copy of a live image, which is first carried into a new backup
    /// (they go in a later run).
    pub expired_backups: usize,
}

#[derive(ApiResponse)]
pub enum CleanupAccepted {
    /// Retention is queued for a worker.
    #[oai(status = 202)]
    Accepted(Json<CleanupView>),
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// The backup is queued; follow it at `GET /storage/backups/{id}`.
    #[oai(status = 202)]
    Accepted(Json<BackupView>),
}

fn is_finished(backup: &Backup) -> bool {
    matches!(backup.status, BackupStatus::Completed | BackupStatus::Failed)
}

fn view(backup: Backup, progress: Progress) -> BackupView {
    let duration_ms = match (backup.started_at, backup.completed_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
        _ => None,
    };
    let finished = is_finished(&backup);
    BackupView {
        id: backup.id.0,
        status: backup.status.into(),
        trigger: backup.trigger.into(),
        backup_date: backup.backup_date,
        path: backup.backup_path,
        compression_level: backup.compression_level,
        progress: ProgressView {
            batches: backup.batch_count,
            batches_done: backup.batches_done,
            images_pending: progress.pending,
            images_done: progress.done,
            images_failed: progress.failed,
        },
        file_count: backup.file_count,
        failed_count: if finished { backup.failed_count } else { progress.failed },
        total_bytes: backup.total_bytes,
        compressed_bytes: backup.compressed_bytes,
        compression_ratio: (finished && backup.total_bytes > 0)
            .then(|| backup.compressed_bytes as f64 / backup.total_bytes as f64),
        stored_raw_count: backup.stored_raw_count,
        work_ms: backup.work_ms,
        duration_ms,
        error: backup.error,
        manifest_path: backup.manifest_path,
        verified_at: backup.verified_at,
        verify_status: backup.verify_status.as_deref().map(verify_status),
        verify_report: backup.verify_report,
        created_at: backup.created_at,
        started_at: backup.started_at,
        completed_at: backup.completed_at,
        removed_at: backup.removed_at,
    }
}

/// A recorded check's outcome: anything but `ok` is no proof of intact archives.
fn verify_status(stored: &str) -> model::VerifyStatus {
    if stored == "ok" { model::VerifyStatus::Ok } else { model::VerifyStatus::Corrupt }
}

fn require_admin(claims: &Claims) -> Result<(), ApiError> {
    if claims.role == Role::Admin { Ok(()) } else { Err(ApiError::forbidden("backups are for admins")) }
}

#[OpenApi]
impl BackupsApi {
    /// Requests a backup of every image not backed up yet (admins only). Answers at once
    /// with the queued backup; workers plan it into batches and archive them.
    #[oai(path = "/storage/backup", method = "post", operation_id = "requestBackup")]
    async fn request_backup(&self, auth: BearerAuth) -> Result<Accepted, ApiError> {
        require_admin(&auth.0)?;
        let level = self.state.config.storage.backup_policy.compression_level;
        let mut tx = self.state.db.begin().await?;
        let id =
            backup::request(&mut tx, shared::model::BackupTrigger::Manual, Some(auth.0.sub), level, Utc::now()).await?;
        let details = serde_json::json!({"compression_level": level});
        audit::record(&mut *tx, &Actor::of(&auth.0), AuditAction::BackupRequested, Target::Backup(id), details).await?;
        // Read before the commit: the answer is the backup as requested (`pending`), not
        // whatever a fast worker has made of it since.
        let backup = storage_backups::get(&mut *tx, id).await?.ok_or_else(|| ApiError::not_found("backup"))?;
        tx.commit().await?;
        tracing::info!(backup.id = %id, "backup {id} requested");
        Ok(Accepted::Accepted(Json(view(backup, Progress::default()))))
    }

    /// Backups, newest first (admins only).
    #[oai(path = "/storage/backups", method = "get", operation_id = "listBackups")]
    async fn list_backups(
        &self,
        auth: BearerAuth,
        page: Query<Option<Checked<u32, PageNumber>>>,
        page_size: Query<Option<Checked<u32, PageSize>>>,
    ) -> Result<Json<BackupPage>, ApiError> {
        require_admin(&auth.0)?;
        let page = page.0.map(|page| page.parse("page", "an integer")).transpose()?.unwrap_or(1);
        let page_size = match page_size.0 {
            Some(size) => size.parse("page_size", "an integer")?,
            None => DEFAULT_PAGE_SIZE,
        };
        if page == 0 || page > MAX_PAGE || page_size == 0 || page_size > MAX_PAGE_SIZE {
            let message = format!("page is 1 to {MAX_PAGE}; page_size is 1 to {MAX_PAGE_SIZE}");
            return Err(ApiError::bad_request(ErrorCode::InvalidField, message));
        }
        let mut conn = self.state.db.acquire().await?;
        let offset = i64::from(page - 1) * i64::from(page_size);
        let (backups, total) = storage_backups::list(&mut conn, i64::from(page_size), offset).await?;
        // Finished backups keep their counts; only the running ones are counted, together.
        let running: Vec<BackupId> = backups.iter().filter(|b| !is_finished(b)).map(|b| b.id).collect();
        let counted = storage_backup_entries::progress_of(&mut *conn, &running).await?;
        let items = backups
            .into_iter()
            .map(|backup| {
                let progress = if is_finished(&backup) {
                    Progress::of_finished(&backup)
                } else {
                    counted.iter().find(|(id, _)| *id == backup.id).map(|(_, p)| *p).unwrap_or_default()
                };
                view(backup, progress)
            })
            .collect();
        Ok(Json(BackupPage { total, page, page_size, items }))
    }

    /// Queues an integrity check of a finished backup's archives against its manifest
    /// (admins only); the outcome shows in `verified_at` and `verify_status`.
    #[oai(path = "/storage/backups/:id/verify", method = "post", operation_id = "verifyBackup")]
    async fn verify_backup(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Accepted, ApiError> {
        require_admin(&auth.0)?;
        let id = BackupId(id.0);
        let backup = storage_backups::get(&self.state.db, id).await?.ok_or_else(|| ApiError::not_found("backup"))?;
        if backup.manifest_path.is_none() || backup.removed_at.is_some() {
            return Err(ApiError::conflict(
                ErrorCode::BackupNotCheckable,
                "the backup has not finished, or was removed",
            ));
        }
        let mut tx = self.state.db.begin().await?;
        backup::request_verification(&mut *tx, id).await?;
        let (actor, details) = (Actor::of(&auth.0), serde_json::json!({}));
        audit::record(&mut *tx, &actor, AuditAction::BackupVerifyRequested, Target::Backup(id), details).await?;
        tx.commit().await?;
        let progress = Progress::of_finished(&backup);
        Ok(Accepted::Accepted(Json(view(backup, progress))))
    }

    /// Applies backup retention now (admins only), as the scheduled maintenance does: backups
    /// older than `retentionDays` are removed, never the last copy of a live image.
    #[oai(path = "/storage/backups/cleanup", method = "delete", operation_id = "cleanupBackups")]
    async fn cleanup_backups(&self, auth: BearerAuth) -> Result<CleanupAccepted, ApiError> {
        require_admin(&auth.0)?;
        let now = Utc::now();
        let days = self.state.config.storage.backup_policy.retention_days;
        let expired = backup_retention::expired(&self.state.db, now - chrono::Duration::days(i64::from(days))).await?;
        let mut tx = self.state.db.begin().await?;
        let event_id = PeriodicJob::BackupRetention.request(&mut tx, now).await?;
        let target = Target::Job(PeriodicJob::BackupRetention.name());
        let details =
            serde_json::json!({"event_id": event_id, "retention_days": days, "expired_backups": expired.len()});
        audit::record(&mut *tx, &Actor::of(&auth.0), AuditAction::BackupsCleanup, target, details).await?;
        tx.commit().await?;
        tracing::info!(backups.expired = expired.len(), "backup retention requested");
        Ok(CleanupAccepted::Accepted(Json(CleanupView { retention_days: days, expired_backups: expired.len() })))
    }

    /// One backup with its progress (admins only).
    #[oai(path = "/storage/backups/:id", method = "get", operation_id = "getBackup")]
    async fn get_backup(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<BackupView>, ApiError> {
        require_admin(&auth.0)?;
        let id = BackupId(id.0);
        let backup = storage_backups::get(&self.state.db, id).await?.ok_or_else(|| ApiError::not_found("backup"))?;
        let progress = if is_finished(&backup) {
            Progress::of_finished(&backup)
        } else {
            storage_backup_entries::progress(&self.state.db, id).await?
        };
        Ok(Json(view(backup, progress)))
    }
}
