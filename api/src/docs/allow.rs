//! The `Allow` header of a 405 answer (RFC 9110 requires it): the methods the document
//! gives the request's path. The router knows only that the method is not one of them.

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use serde_json::Value;

/// One documented path: its segments (`None` for a parameter) and its methods.
struct Pattern {
    segments: Vec<Option<String>>,
    allow: HeaderValue,
}

/// Adds `Allow` to the 405 answers of the routes of a document.
#[derive(Clone)]
pub struct AllowHeader {
    patterns: Arc<Vec<Pattern>>,
}

impl AllowHeader {
    pub(super) fn new(document: &Value) -> Self {
        let mut patterns = Vec::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            let mut methods: Vec<String> = super::HTTP_METHODS
                .iter()
                .filter(|method| item[**method].is_object())
                .map(|method| method.to_uppercase())
                .collect();
            // A GET route answers HEAD too.
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".to_owned());
            }
            let Ok(allow) = HeaderValue::try_from(methods.join(", ")) else { continue };
            let segments = path
                .trim_start_matches('/')
                .split('/')
                .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                .collect();
            patterns.push(Pattern { segments, allow });
        }
        Self { patterns: Arc::new(patterns) }
    }

    fn allow(&self, path: &str) -> Option<&HeaderValue> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // As the router does, a literal segment wins over a parameter.
        self.patterns
            .iter()
            .filter(|pattern| {
                pattern.segments.len() == segments.len()
                    && pattern
                        .segments
                        .iter()
                        .zip(&segments)
                        .all(|(want, got)| want.as_deref().is_none_or(|w| w == *got))
            })
            .max_by_key(|pattern| pattern.segments.iter().filter(|segment| segment.is_some()).count())
            .map(|pattern| &pattern.allow)
    }
}

impl<E: Endpoint> Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowHeaderEndpoint { inner, allow: self.clone() }
    }
}

pub struct AllowHeaderEndpoint<E> {
    inner: E,
    allow: AllowHeader,
}

impl<E: Endpoint> Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let path = request.uri().path().to_owned();
        match self.inner.call(request).await {
            Err(error) if error.status() == StatusCode::METHOD_NOT_ALLOWED => {
                let mut response = crate::error::render(error).await;
                if let Some(allow) = self.allow.allow(&path) {
                    response.headers_mut().insert(header::ALLOW, allow.clone());
                }
                Ok(response)
            }
            answer => answer.map(IntoResponse::into_response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_methods_of_the_matching_documented_path_are_allowed() {
        let document = serde_json::json!({"paths": {
            "/storage/images": {"get": {}, "post": {}},
            "/storage/images/{id}": {"get": {}, "put": {}, "delete": {}},
            "/storage/images/search": {"post": {}},
        }});
        let allow = AllowHeader::new(&document);
        assert_eq!(allow.allow("/storage/images").unwrap(), "GET, POST, HEAD");
        assert_eq!(allow.allow("/storage/images/search").unwrap(), "POST");
        assert_eq!(allow.allow("/storage/images/0197").unwrap(), "GET, PUT, DELETE, HEAD");
        assert!(allow.allow("/storage/images/0197/x").is_none());
    }
}
