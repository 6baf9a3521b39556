//! `POST /storage/maintenance/{job}` (admins): runs a scheduled job now, as its next slot
//! would — after restoring files, to re-check health at once, or to re-queue stuck images
//! without waiting for the sweeper's schedule. The job goes through the outbox to the
//! workers like every scheduled one; this answers as soon as it is queued.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use shared::auth::Role;
use shared::db::outbox;
use shared::events::{
    FileAuditRequested, HealthCheckRequested, MetricsRollupRequested, PurgeRequested, SweepRequested,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::AppState;
use crate::auth::BearerAuth;
use crate::error::ApiError;

/// The jobs an admin may run now, by the name in the path.
const JOBS: [&str; 5] = ["sweep", "purge", "file-audit", "health-check", "metrics-rollup"];

pub struct MaintenanceApi {
    pub state: AppState,
}

#[derive(Debug, Clone, Object)]
pub struct JobRequested {
    pub job: String,
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

async fn enqueue(db: &PgPool, job: &str, at: DateTime<Utc>) -> Result<Option<Uuid>, sqlx::Error> {
    let id = match job {
        "sweep" => outbox::enqueue(db, SweepRequested { requested_at: at }).await?,
        "purge" => outbox::enqueue(db, PurgeRequested { requested_at: at }).await?,
        "file-audit" => outbox::enqueue(db, FileAuditRequested { requested_at: at }).await?,
        "health-check" => outbox::enqueue(db, HealthCheckRequested { requested_at: at }).await?,
        "metrics-rollup" => outbox::enqueue(db, MetricsRollupRequested { requested_at: at }).await?,
        _ => return Ok(None),
    };
    Ok(Some(id))
}

#[OpenApi]
impl MaintenanceApi {
    /// Runs a maintenance job now (admins only): `sweep`, `purge`, `file-audit`,
    /// `health-check` or `metrics-rollup`.
    #[oai(path = "/storage/maintenance/:job", method = "post")]
    async fn run_job(&self, auth: BearerAuth, job: Path<String>) -> Result<JobAccepted, ApiError> {
        if auth.0.role != Role::Admin {
            return Err(ApiError::forbidden("maintenance is for admins"));
        }
        let requested_at = Utc::now();
        let Some(event_id) = enqueue(&self.state.db, &job.0, requested_at).await? else {
            let message = format!("no maintenance job `{}`: one of {}", job.0, JOBS.join(", "));
            return Err(ApiError::not_found_code("unknown_job", message));
        };
        tracing::info!(maintenance.job = job.0.as_str(), event.id = %event_id, "maintenance job requested");
        Ok(JobAccepted::Accepted(Json(JobRequested { job: job.0, event_id, requested_at })))
    }
}
