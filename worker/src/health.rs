//! `stayler.health`: health check runs and metric roll-ups, both from the scheduler.
//!
//! A health run measures and records one row per check type; a run that waited in the queue
//! longer than `health.staleAfterSecs` is skipped, since newer ones are behind it and its
//! figures would describe a moment long gone. A roll-up rewrites recent periods, so a
//! duplicate delivery writes the same points again.

use chrono::Utc;
use shared::events::{Event, HealthCheckRequested, MetricsRollupRequested};

use crate::Context;
use crate::consumer::{Handler, Job, JobError};

pub struct Health {
    context: Context,
}

impl Health {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    async fn check(&self, request: HealthCheckRequested) -> Result<(), JobError> {
        let context = &self.context;
        let waited = (Utc::now() - request.requested_at).num_seconds();
        if waited > context.config.health.stale_after_secs as i64 {
            tracing::info!(health.waited_secs = waited, "skipping a health check that waited too long in the queue");
            return Ok(());
        }
        let results =
            shared::health::run_checks(&context.db, &context.storage, &context.backups, &context.config).await;
        shared::health::record(&context.db, &results).await.map_err(JobError::retry)?;
        let status = results.iter().map(|r| r.status).max().unwrap_or(shared::model::HealthStatus::Ok);
        let problems: Vec<&str> = results.iter().flat_map(|r| r.problems()).map(String::as_str).collect();
        if problems.is_empty() {
            tracing::info!(health.status = status.as_str(), "health checked");
        } else {
            tracing::warn!(health.status = status.as_str(), health.problems = ?problems, "health checked");
        }
        Ok(())
    }

    async fn rollup(&self, request: MetricsRollupRequested) -> Result<(), JobError> {
        let context = &self.context;
        let points = shared::metrics::rollup(&context.db, &context.config.metrics, request.requested_at)
            .await
            .map_err(JobError::retry)?;
        tracing::info!(metrics.points = points, "metrics rolled up");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for Health {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.event_type.as_str() {
            HealthCheckRequested::TYPE => self.check(job.payload::<HealthCheckRequested>()?).await,
            MetricsRollupRequested::TYPE => self.rollup(job.payload::<MetricsRollupRequested>()?).await,
            other => Err(JobError::Reject(format!("`{other}` is not a health job"))),
        }
    }
}
