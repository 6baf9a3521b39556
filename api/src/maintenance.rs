//! `POST /storage/maintenance/{job}` (admins): runs a scheduled job now, as its next slot
//! would — after restoring files, to re-check health at once, or to re-queue stuck images
//! without waiting for the sweeper's schedule. The job goes through the outbox to the
//! workers like every scheduled one; this answers as soon as it is queued.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::ParseFromParameter;
use poem_openapi::{ApiResponse, Object, OpenApi};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::Role;
use shared::periodic::PeriodicJob;
use uuid::Uuid;

use crate::AppState;
use crate::auth::BearerAuth;
use crate::docs::Checked;
use crate::error::{ApiError, ErrorCode};
use crate::model::MaintenanceJob;

pub struct MaintenanceApi {
    pub state: AppState,
}

#[derive(Debug, Clone, Object)]
pub struct JobRequested {
    /// The job's name, underscored (`file_audit`) whichever spelling the path used.
    pub job: MaintenanceJob,
    /// The queued event's id (its `message_id` in RabbitMQ).
    pub event_id: Uuid,
    pub requested_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum JobAccepted {
    /// Queued for a worker; its report shows in `GET /storage/health` (admin details).
    #[oai(status = 202)]
    Accepted(Json<JobRequested>),
}

#[OpenApi]
impl MaintenanceApi {
    /// Runs a periodic job now (admins only): `sweep`, `purge`, `file_audit`,
    /// `health_check`, `metrics_rollup`, `backup_retention` or `backup_verify` (hyphens are
    /// read as underscores: `file-audit`).
    #[oai(path = "/storage/maintenance/:job", method = "post", operation_id = "runMaintenanceJob")]
    async fn run_job(&self, auth: BearerAuth, job: Path<Checked<MaintenanceJob>>) -> Result<JobAccepted, ApiError> {
        if auth.0.role != Role::Admin {
            return Err(ApiError::forbidden("maintenance is for admins"));
        }
        let Some(periodic) = PeriodicJob::on_demand(job.0.as_str()) else {
            let names: Vec<&str> = PeriodicJob::ON_DEMAND.iter().map(|job| job.name()).collect();
            let message = format!("no maintenance job `{}`: one of {}", job.0.as_str(), names.join(", "));
            return Err(ApiError::not_found_code(ErrorCode::UnknownJob, message));
        };
        let requested_at = Utc::now();
        let mut tx = self.state.db.begin().await?;
        let event_id = periodic.request(&mut tx, requested_at).await?;
        let (actor, target) = (Actor::of(&auth.0), Target::Job(periodic.name()));
        let details = serde_json::json!({"event_id": event_id});
        audit::record(&mut *tx, &actor, AuditAction::MaintenanceRun, target, details).await?;
        tx.commit().await?;
        tracing::info!(job = periodic.name(), event.id = %event_id, "{} requested", periodic.name());
        let job = MaintenanceJob::parse_from_parameter(periodic.name())
            .map_err(|_| ApiError::internal(&format!("the on-demand job {} has no API name", periodic.name())))?;
        Ok(JobAccepted::Accepted(Json(JobRequested { job, event_id, requested_at })))
    }
}
