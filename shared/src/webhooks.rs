//! Webhooks: the notifications (`image.processed`, `image.failed`) posted to the main app's
//! HTTP endpoints (`webhooks.endpoints`), signed with each endpoint's secret.
//!
//! The `stayler.webhooks` job posts one event to every endpoint that receives its type and
//! has not taken it yet, recording each success; a failure of any endpoint fails the job,
//! which the queue's retries repeat with back-off, for the failed endpoints only. Delivery
//! is at least once (a crash between an endpoint's answer and its record posts again), so
//! receivers de-duplicate on `X-Stayler-Delivery`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest_s3 as http;
use secrecy::ExposeSecret;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{WebhookEndpoint, WebhooksConfig};
use crate::db::webhook_deliveries;

/// Header with the signature: `t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{body}"}`.
pub const SIGNATURE_HEADER: &str = "x-stayler-signature";
/// Header with the event id, the same for every attempt: receivers de-duplicate on it.
pub const DELIVERY_HEADER: &str = "x-stayler-delivery";
/// Header with the event type.
pub const EVENT_HEADER: &str = "x-stayler-event";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Some endpoints did not take the event; the others are recorded.
    #[error("webhook delivery failed: {}", .0.iter().map(|(name, why)| format!("{name}: {why}")).collect::<Vec<_>>().join("; "))]
    Failed(Vec<(String, String)>),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The configured endpoints and one HTTP client for them all.
#[derive(Clone)]
pub struct Webhooks {
    client: http::Client,
    endpoints: Vec<WebhookEndpoint>,
}

impl Webhooks {
    pub fn new(config: &WebhooksConfig) -> Self {
        // The client's TLS uses the process's crypto provider, ring (see `storage::s3`).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = http::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs))
            // A redirect would send the signed event somewhere nobody configured.
            .redirect(http::redirect::Policy::none())
            .build()
            .expect("an HTTP client with rustls");
        Self { client, endpoints: config.endpoints.clone() }
    }

    /// Posts event `event_id` of type `event_type` (`body`, its JSON envelope) to every
    /// endpoint that receives the type and has not taken it yet. Returns how many took it
    /// now; an error names those that did not.
    pub async fn deliver(
        &self,
        db: &PgPool,
        event_id: Uuid,
        event_type: &str,
        body: &[u8],
    ) -> Result<usize, WebhookError> {
        let wanted: Vec<&WebhookEndpoint> = self.endpoints.iter().filter(|e| e.receives(event_type)).collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let done = webhook_deliveries::delivered_to(db, event_id).await?;
        let mut failures = Vec::new();
        let mut delivered = 0;
        for endpoint in wanted.into_iter().filter(|endpoint| !done.contains(&endpoint.name)) {
            match self.post(endpoint, event_id, event_type, body).await {
                Ok(()) => {
                    webhook_deliveries::record(db, event_id, &endpoint.name).await?;
                    delivered += 1;
                    tracing::info!(webhook.endpoint = %endpoint.name, event.id = %event_id, "{event_type} delivered");
                }
                Err(why) => {
                    tracing::warn!(webhook.endpoint = %endpoint.name, event.id = %event_id, "{event_type} not delivered: {why}");
                    failures.push((endpoint.name.clone(), why));
                }
            }
        }
        if failures.is_empty() { Ok(delivered) } else { Err(WebhookError::Failed(failures)) }
    }

    /// One POST; only a 2xx answer counts as taken.
    async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        event_id: Uuid,
        event_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature(endpoint.secret.expose_secret().as_bytes(), timestamp, body);
        let response = self
            .client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header(EVENT_HEADER, event_type)
            .header(DELIVERY_HEADER, event_id.to_string())
            .header(SIGNATURE_HEADER, signed)
            .body(body.to_vec())
            .send()
            .await
            // The error's text can hold the URL, which may carry a token: the status or kind only.
            .map_err(|error| {
                if error.is_timeout() { "timed out".to_owned() } else { "could not connect or send".to_owned() }
            })?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(format!("answered {}", status.as_u16())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let signed = signature(b"secret", 1_700_000_000, b"{\"id\":1}");
        // HMAC-SHA256 of `1700000000.{"id":1}` under "secret", computed with Python's hmac.
        let expected = "3dd1b9aef568d75f6790a84bd2e5dfa1f44409eef3cbdbd3f10b837376100c11";
        assert_eq!(signed, format!("t=1700000000,v1={expected}"));
        assert_ne!(signed, signature(b"secret", 1_700_000_001, b"{\"id\":1}"));
        assert_ne!(signed, signature(b"secret", 1_700_000_000, b"{\"id\":2}"));
        assert_ne!(signed, signature(b"other", 1_700_000_000, b"{\"id\":1}"));
    }
}
