//! The bound on request bodies of the JSON API (`limits.jsonBodyBytes`).
//!
//! A `Content-Length` over the bound is refused before a byte of the body is read; a body
//! sent without one (chunked) is cut off where it crosses the bound. Either way the answer
//! is 413 `body_too_large`, and at most the bound plus one network chunk is ever held. The
//! upload route is left to its own, larger bounds (see `images/upload.rs`). Handlers read
//! the body after checking the token, so a role that may not call a route is refused
//! before its body is read at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use poem::http::{Method, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response, Result};

use crate::error::ApiError;

/// Path of the upload route, whose multipart body has bounds of its own.
const UPLOAD_PATH: &str = "/storage/images";

/// Bounds JSON request bodies to `limit` bytes.
pub struct JsonBodyLimit {
    pub limit: u64,
}

impl<E: Endpoint> Middleware<E> for JsonBodyLimit {
    type Output = JsonBodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        JsonBodyLimitEndpoint { inner, limit: self.limit }
    }
}

pub struct JsonBodyLimitEndpoint<E> {
    inner: E,
    limit: u64,
}

impl<E: Endpoint> Endpoint for JsonBodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> Result<Response> {
        if request.method() == Method::POST && request.uri().path() == UPLOAD_PATH {
            return self.inner.call(request).await.map(IntoResponse::into_response);
        }
        if declared_length(&request).is_some_and(|length| length > self.limit) {
            return Err(ApiError::body_too_large(self.limit).into());
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = request.take_body();
        request.set_body(Body::from_bytes_stream(limited(body, self.limit, exceeded.clone())));
        let answer = self.inner.call(request).await;
        // The handler saw a read error; the client is told which bound it crossed.
        if exceeded.load(Ordering::Relaxed) {
            return Err(ApiError::body_too_large(self.limit).into());
        }
        answer.map(IntoResponse::into_response)
    }
}

/// The `Content-Length` the client declared, if any.
fn declared_length(request: &Request) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `body` as a stream that fails, and sets `exceeded`, once more than `limit` bytes came.
fn limited(
    body: Body,
    limit: u64,
    exceeded: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let mut received = 0u64;
    body.into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        received += chunk.len() as u64;
        if received > limit {
            exceeded.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other(format!("request body over {limit} bytes")));
        }
        Ok(chunk)
    })
}
