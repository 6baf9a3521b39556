//! `stayler.webhooks`: posts each notification to the main app's webhook endpoints
//! (`shared::webhooks`). An endpoint that fails fails the job, so the queue's retries try
//! it again with back-off; endpoints that took the event are not posted to again.

use shared::events::Envelope;
use shared::webhooks::Webhooks as Endpoints;

use crate::Context;
use crate::consumer::{Handler, Job, JobError};

pub struct Webhooks {
    context: Context,
    endpoints: Endpoints,
}

impl Webhooks {
    pub fn new(context: Context) -> Self {
        let endpoints = Endpoints::new(&context.config.webhooks);
        Self { context, endpoints }
    }
}

#[async_trait::async_trait]
impl Handler for Webhooks {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let envelope: Envelope<serde_json::Value> = serde_json::from_slice(&job.body).map_err(JobError::reject)?;
        // Both a failed endpoint and a database error are worth another attempt.
        self.endpoints
            .deliver(&self.context.db, envelope.id, &job.event_type, &job.body)
            .await
            .map_err(JobError::retry)?;
        Ok(())
    }
}
