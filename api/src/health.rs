//! `GET /storage/health`: one answer for load balancers and dashboards, `ok`, `degraded` or
//! `down` (200, 200, 503). Everyone gets the status; an admin token adds why, the latest
//! result of every check type, and checks made live for this request.
//!
//! The answer is the worst of the latest recorded checks (written by `health_check.requested` jobs
//! and maintenance) and of live checks of the database and the storage disk, so a dead
//! database is `down` at once, not at the next scheduled run.

use chrono::{DateTime, Utc};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};
use shared::auth::Role;
use shared::db::health_checks::{self, CheckRow};
use shared::health::{self, CheckResult};
use shared::model::HealthStatus;

use crate::auth::BearerAuth;
use crate::{AppState, model};

pub struct HealthApi {
    pub state: AppState,
}

/// A bearer token if one is given and valid; anyone may ask for the health summary.
#[derive(SecurityScheme)]
pub enum MaybeAuth {
    Bearer(BearerAuth),
    #[oai(fallback)]
    Anonymous,
}

#[derive(Debug, Clone, Object)]
pub struct HealthView {
    pub status: model::HealthStatus,
    /// When the scheduled health checks last ran.
    pub last_check_at: Option<DateTime<Utc>>,
    /// For admins only.
    #[oai(skip_serializing_if_is_none)]
    pub details: Option<HealthDetails>,
}

#[derive(Debug, Clone, Object)]
pub struct HealthDetails {
    /// Every problem behind the status, prefixed with its check type.
    pub problems: Vec<String>,
    /// The latest result of every check type.
    pub checks: Vec<CheckView>,
    /// Checks made for this request: database, disks and broker.
    pub live: Vec<CheckView>,
}

#[derive(Debug, Clone, Object)]
pub struct CheckView {
    pub check_type: String,
    pub status: model::HealthStatus,
    /// The check's figures and, under `problems`, what made it less than `ok`.
    pub details: serde_json::Value,
    pub checked_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// `ok` or `degraded`.
    #[oai(status = 200)]
    Serving(Json<HealthView>),
    /// `down`.
    #[oai(status = 503)]
    Down(Json<HealthView>),
}

impl From<CheckRow> for CheckView {
    fn from(row: CheckRow) -> Self {
        Self { check_type: row.check_type, status: row.status.into(), details: row.details, checked_at: row.checked_at }
    }
}

fn live_view(check: &CheckResult, at: DateTime<Utc>) -> CheckView {
    CheckView {
        check_type: check.check_type.to_owned(),
        status: check.status.into(),
        details: check.details(),
        checked_at: at,
    }
}

#[OpenApi]
impl HealthApi {
    /// Health of the service: `ok` or `degraded` with 200, `down` with 503. Admins also get
    /// the reasons, the latest result of every check and live checks.
    #[oai(path = "/storage/health", method = "get", operation_id = "getHealth")]
    async fn health(&self, auth: MaybeAuth) -> HealthResponse {
        let admin = matches!(&auth, MaybeAuth::Bearer(bearer) if bearer.0.role == Role::Admin);
        let config = &self.state.config;
        let now = Utc::now();
        let database = health::probes::database(&self.state.db, &config.health).await;
        let disk = health::probes::disk(&self.state.storage, None, &config.health);
        // The broker's live state is for the admin's eyes: the recorded checks already rate it,
        // and the public answer must not depend on a connection per request.
        let live_status = database.status.max(disk.status);
        let recorded = if database.status == HealthStatus::Down {
            // No answer from the database now: its recorded checks would not come either.
            Err(None)
        } else {
            health_checks::latest(&self.state.db).await.map_err(Some)
        };
        let mut live = vec![database, disk];
        if admin {
            live.push(health::probes::broker(&config.rabbitmq, &config.health).await);
        }
        let (mut status, last_check_at, mut problems, checks) = match recorded {
            Ok(mut rows) => {
                // The database just answered; what a run recorded of it earlier is moot. (The
                // recorded disk check stays: it also covers the backup disk, which the API
                // does not see.)
                rows.retain(|row| row.check_type != "database");
                let summary = health::summarize(rows, now, &config.health);
                (summary.status, summary.last_run, summary.problems, summary.checks)
            }
            Err(error) => {
                let problems =
                    error.map(|e| format!("cannot read the recorded health checks: {e}")).into_iter().collect();
                (HealthStatus::Down, None, problems, Vec::new())
            }
        };
        status = status.max(live_status);
        for check in &live {
            problems.extend(check.problems().iter().map(|p| format!("live {}: {p}", check.check_type)));
        }
        if status != HealthStatus::Ok {
            tracing::debug!(health.status = status.as_str(), health.problems = ?problems, "health asked");
        }
        let details = admin.then(|| HealthDetails {
            problems,
            checks: checks.into_iter().map(CheckView::from).collect(),
            live: live.iter().map(|check| live_view(check, now)).collect(),
        });
        let view = HealthView { status: status.into(), last_check_at, details };
        match status {
            HealthStatus::Down => HealthResponse::Down(Json(view)),
            HealthStatus::Ok | HealthStatus::Degraded => HealthResponse::Serving(Json(view)),
        }
    }
}
