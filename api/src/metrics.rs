//! The API's Prometheus metrics: `GET /metrics` (on the API's port, or on
//! `prometheus.apiListen` instead), and the middleware that counts every routed request by
//! its route template (`/storage/images/:id`, never the path itself, whose ids would make a
//! series each), method and status, with its latency and its bytes in and out.
//!
//! File serving, in front of the router, counts its own requests in the same families
//! (`crate::serving`); rate-limit denials are counted by the limiter. The metric families
//! are named in `shared::observability`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use poem::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use poem::http::{HeaderMap, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, PathPattern, Request, Response};
use shared::observability::{self, Exporter, Service, names};

use crate::AppState;
use crate::error::{self, ErrorCode};

/// The route label of a request no route matched (404s, 405s).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The API's exporter with its database pool, `None` when metrics are off.
pub fn exporter(state: &AppState) -> Option<Exporter> {
    let exporter = Exporter::new(&state.config, Service::Api)?;
    exporter.set_pool(state.db.clone());
    Some(exporter)
}

/// `GET /metrics`: the Prometheus text, to a bearer of `prometheus.scrapeToken` when one is set.
pub struct MetricsEndpoint {
    pub exporter: Exporter,
}

impl Endpoint for MetricsEndpoint {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Ok(error::json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "only GET and HEAD are allowed",
            ));
        }
        let authorization = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
        if !self.exporter.authorized(authorization) {
            let mut response = error::json_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "a valid scrape token is required",
            );
            response.headers_mut().insert(WWW_AUTHENTICATE, "Bearer".parse().expect("a header value"));
            return Ok(response);
        }
        let text = self.exporter.render().await;
        Ok(Response::builder().header(CONTENT_TYPE, observability::CONTENT_TYPE).body(text))
    }
}

/// Counts each request that reaches the router; put it outside every route middleware, so
/// that it sees the route template the router leaves on the answer.
pub struct HttpMetrics {
    /// The documented template of each router pattern: the router names path parameters
    /// `:param0`, `:param1`…, the OpenAPI document by their names (`{id}`).
    templates: Arc<HashMap<String, String>>,
}

impl HttpMetrics {
    /// Route labels from the paths of the OpenAPI document `spec` (JSON).
    pub fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let paths = spec.get("paths").and_then(serde_json::Value::as_object);
        let templates = paths.into_iter().flat_map(|paths| paths.keys()).map(|path| templates_of(path)).collect();
        Self { templates: Arc::new(templates) }
    }
}

/// `/storage/images/{id}/signed-url` → (`/storage/images/:param0/signed-url`,
/// `/storage/images/:id/signed-url`): the router's pattern and the label.
fn templates_of(path: &str) -> (String, String) {
    let (mut pattern, mut label, mut count) = (String::new(), String::new(), 0);
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        match segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')) {
            Some(name) => {
                pattern.push_str(&format!("/:param{count}"));
                label.push_str(&format!("/:{name}"));
                count += 1;
            }
            None => {
                pattern.push_str(&format!("/{segment}"));
                label.push_str(&format!("/{segment}"));
            }
        }
    }
    (pattern, label)
}

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        HttpMetricsEndpoint { inner, templates: self.templates.clone() }
    }
}

pub struct HttpMetricsEndpoint<E> {
    inner: E,
    templates: Arc<HashMap<String, String>>,
}

impl<E> HttpMetricsEndpoint<E> {
    /// The matched route's template, e.g. `/storage/images/:id`.
    fn route_label(&self, pattern: Option<&PathPattern>) -> String {
        match pattern {
            Some(pattern) => self.templates.get(&*pattern.0).cloned().unwrap_or_else(|| pattern.0.to_string()),
            None => UNMATCHED_ROUTE.to_owned(),
        }
    }
}

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = method_label(request.method());
        let bytes_in = announced_length(request.headers());
        let head = request.method() == Method::HEAD;
        match self.inner.call(request).await {
            Ok(output) => {
                let mut response = output.into_response();
                let route = self.route_label(response.data::<PathPattern>());
                let bytes_out = if head { 0 } else { body_length(&mut response) };
                record(route, method, response.status(), started, bytes_in, bytes_out);
                Ok(response)
            }
            Err(error) => {
                // Rendered into its answer further out; its status is already the answer's.
                let route = self.route_label(error.data::<PathPattern>());
                record(route, method, error.status(), started, bytes_in, 0);
                Err(error)
            }
        }
    }
}

fn record(route: String, method: &'static str, status: StatusCode, started: Instant, bytes_in: u64, bytes_out: u64) {
    let status = status_label(status);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    if bytes_in > 0 {
        metrics::counter!(names::HTTP_REQUEST_BYTES, "route" => route.clone()).increment(bytes_in);
    }
    metrics::counter!(names::HTTP_RESPONSE_BYTES, "route" => route).increment(bytes_out);
}

/// The methods the API answers by name, every other one as `other` (a client may send any
/// token as a method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status code as text, without allocating for the codes the API sends.
pub fn status_label(status: StatusCode) -> &'static str {
    const KNOWN: [(u16, &str); 21] = [
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (206, "206"),
        (304, "304"),
        (307, "307"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (410, "410"),
        (413, "413"),
        (415, "415"),
        (416, "416"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
    ];
    let code = status.as_u16();
    KNOWN.iter().find(|(known, _)| *known == code).map_or_else(|| status_class(code), |(_, text)| text)
}

/// `2xx` … `5xx` for a code outside [`status_label`]'s list.
fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The request body's length as its `Content-Length` announces it (0 without one).
pub fn announced_length(headers: &HeaderMap) -> u64 {
    headers.get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse().ok()).unwrap_or(0)
}

/// The response body's length: as announced, or its exact size when it is in memory (0 for
/// a stream of unknown length).
fn body_length(response: &mut Response) -> u64 {
    if response.headers().contains_key(CONTENT_LENGTH) {
        return announced_length(response.headers());
    }
    let body: BoxBody<Bytes, std::io::Error> = response.take_body().into();
    let exact = http_body::Body::size_hint(&body).exact();
    response.set_body(Body::from(body));
    exact.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_whatever_the_client_sends() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(status_label(StatusCode::NOT_FOUND), "404");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
        assert_eq!(status_label(StatusCode::BAD_GATEWAY), "5xx");
    }

    #[test]
    fn route_labels_name_the_parameters_as_the_api_document_does() {
        let spec = r#"{"paths": {"/storage/images/{id}/signed-url": {}, "/storage/quota/{owner_id}": {}, "/storage/images": {}}}"#;
        let endpoint = HttpMetrics::from_spec(spec).transform(poem::endpoint::make_sync(|_| ()));
        let label = |pattern: &str| endpoint.route_label(Some(&PathPattern(pattern.into())));
        assert_eq!(label("/storage/images/:param0/signed-url"), "/storage/images/:id/signed-url");
        assert_eq!(label("/storage/quota/:param0"), "/storage/quota/:owner_id");
        assert_eq!(label("/storage/images"), "/storage/images");
        assert_eq!(label("/openapi.json"), "/openapi.json", "a route of its own keeps its pattern");
        assert_eq!(endpoint.route_label(None), UNMATCHED_ROUTE);
    }

    #[test]
    fn bodies_in_memory_are_measured_and_streams_of_unknown_length_count_zero() {
        let mut json = Response::builder().body("{\"a\":1}");
        assert_eq!(body_length(&mut json), 7);
        let mut announced = Response::builder().header(CONTENT_LENGTH, "1234").body(Body::empty());
        assert_eq!(body_length(&mut announced), 1234);
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        let mut streamed = Response::builder().body(Body::from_bytes_stream(chunks));
        assert_eq!(body_length(&mut streamed), 0);
    }
}
