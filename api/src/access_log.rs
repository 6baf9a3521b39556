//! Access logging: every metadata read, upload, change, URL issue, file serve and denial
//! becomes a row of `storage_access_logs` (image, actor, action, IP, user agent, status,
//! bytes, time), and successful reads move the image's `access_count` and
//! `last_accessed`.
//!
//! A middleware outside every route records the finished response, so handlers stay free
//! of logging and denials (answered before any handler runs) are logged like the rest.
//! Records go through a bounded queue to a writer that inserts them in batches off the
//! request path; a clean shutdown flushes the queue. Identical requests within the same
//! second share one row with their `request_count`, so a hot file costs the database a
//! row per client and second rather than one per request.

mod classify;
mod writer;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::combinators::BoxBody;
use poem::http::header::{CONTENT_LENGTH, LOCATION, USER_AGENT};
use poem::http::{Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};
use shared::auth::TokenKeys;
use shared::db::access_logs::{AccessRecord, SignedUrlUse};
use shared::signing;
use uuid::Uuid;

use crate::auth::bearer_token;
use crate::rate_limit;
use crate::serving::SIGNED_PREFIX;

pub use classify::{AccessAction, Classified, classify};
pub use writer::{AccessLog, AccessLogWriter, start};

/// Longest user agent kept, in bytes.
const MAX_USER_AGENT: usize = 512;

/// Logs the requests [`classify`] recognises. Put it outside the error renderer, so that
/// it sees the final status of every answer.
pub struct AccessLogLayer {
    pub log: AccessLog,
    pub keys: TokenKeys,
    pub public_path: String,
    /// Take the client address from `X-Forwarded-For`, as the rate limiter does.
    pub trust_forwarded_for: bool,
}

impl<E: Endpoint> Middleware<E> for AccessLogLayer {
    type Output = AccessLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AccessLogEndpoint {
            inner,
            log: self.log.clone(),
            keys: self.keys.clone(),
            public_path: self.public_path.clone(),
            trust_forwarded_for: self.trust_forwarded_for,
        }
    }
}

pub struct AccessLogEndpoint<E> {
    inner: E,
    log: AccessLog,
    keys: TokenKeys,
    public_path: String,
    trust_forwarded_for: bool,
}

impl<E: Endpoint> Endpoint for AccessLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let Some(classified) = classify(request.method(), request.uri().path(), &self.public_path) else {
            return self.inner.call(request).await.map(IntoResponse::into_response);
        };
        let claims = bearer_token(&request).and_then(|token| self.keys.verify(token).ok());
        let actor_id = claims.as_ref().map(|claims| claims.sub);
        let peer = request.remote_addr().as_socket_addr().map(|addr| addr.ip().to_canonical());
        let ip = rate_limit::client_ip(request.headers(), peer, self.trust_forwarded_for);
        let user_agent = request.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).map(truncate_user_agent);
        let is_head = request.method() == Method::HEAD;
        let signed_segment = match classified.action {
            AccessAction::ServeFile => request.uri().path().strip_prefix(SIGNED_PREFIX).map(str::to_owned),
            _ => None,
        };

        // Outside the error renderer every error is already a response; should one still
        // arrive, it is rendered here so that its status is logged.
        if let Some(claims) = claims {
            // Verified once here: the rate limiter takes the caller from the extensions.
            request.extensions_mut().insert(claims);
        }
        let mut response = match self.inner.call(request).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let status = response.status();
        let bytes_sent = if is_head || status == StatusCode::NOT_MODIFIED { 0 } else { body_length(&mut response) };
        let served = status.is_success() || status == StatusCode::NOT_MODIFIED;
        let signed_url = signed_segment.filter(|_| served).and_then(|segment| signed_url_use(&segment));
        let image_id = match classified.action {
            // The path of an upload names no image: the one it stored is in its Location.
            AccessAction::Upload if status.is_success() => stored_image(&response),
            _ => classified.image_id,
        };
        self.log.record(AccessRecord {
            image_id,
            actor_id,
            action: classified.action.as_str(),
            ip,
            user_agent,
            status: status.as_u16(),
            bytes_sent,
            at: Utc::now(),
            counts_as_access: classified.action.reads_image() && status.is_success(),
            signed_url,
        });
        Ok(response)
    }
}

/// The image a successful upload stored (or an idempotent replay returned), from its
/// `Location: /storage/images/{id}`.
fn stored_image(response: &Response) -> Option<Uuid> {
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    Uuid::try_parse(location.strip_prefix("/storage/images/")?).ok()
}

/// The `storage_signed_urls` row a served (hence verified) signed path belongs to.
fn signed_url_use(segment: &str) -> Option<SignedUrlUse> {
    let claimed = signing::claimed_grant(segment)?;
    let grant = claimed.grant;
    Some(SignedUrlUse {
        image_id: grant.image_id.0,
        variant: grant.variant.as_str().to_owned(),
        access_type: grant.access.as_str(),
        expires_at: DateTime::from_timestamp(grant.expires, 0)?,
        key_id: claimed.key_id.to_owned(),
        url_generation: i32::try_from(grant.generation).ok()?,
    })
}

fn truncate_user_agent(agent: &str) -> String {
    let mut end = agent.len().min(MAX_USER_AGENT);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    agent[..end].to_owned()
}

/// The body length the response announces, or its exact size when it is in memory.
fn body_length(response: &mut Response) -> u64 {
    let announced = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(length) = announced {
        return length;
    }
    let body: BoxBody<Bytes, std::io::Error> = response.take_body().into();
    let exact = http_body::Body::size_hint(&body).exact();
    response.set_body(Body::from(body));
    exact.unwrap_or(0)
}
