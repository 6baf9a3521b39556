//! `X-Request-Id`: every request gets one (the client's, when it is a plain token of at most
//! 128 characters, else a new UUIDv7), returned in the response, set as the request's log
//! span field and as the current request id (`shared::telemetry`), so the events the
//! request queues carry it to the workers, whose log lines for those jobs carry it too.

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use shared::telemetry;
use tracing::Instrument as _;
use uuid::Uuid;

/// The header, in and out.
pub const HEADER: &str = "x-request-id";

/// The middleware, around the API's routes (file serving, the hottest path, has none; the
/// access log records each serve): every API answer, errors included, carries the id.
pub struct RequestId;

impl<E: Endpoint> Middleware<E> for RequestId {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestIdEndpoint { inner }
    }
}

pub struct RequestIdEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let given = request.headers().get(HEADER).and_then(|value| value.to_str().ok());
        let id = match given.filter(|id| telemetry::is_acceptable_request_id(id)) {
            Some(id) => id.to_owned(),
            None => Uuid::now_v7().to_string(),
        };
        let value = HeaderValue::from_str(&id).expect("checked or generated: a valid header value");
        let span = tracing::info_span!("request", request_id = %id);
        let answered = telemetry::with_request_id(id, self.inner.call(request)).instrument(span).await;
        let mut response = match answered {
            Ok(response) => response.into_response(),
            Err(error) => crate::error::render(error).await,
        };
        response.headers_mut().insert(HEADER, value);
        Ok(response)
    }
}
