//! File serving: `GET`/`HEAD /storage/signed/{signed path}` (see `shared::signing`) and,
//! for public images, `GET`/`HEAD {server.publicPath}/{image id}/{variant}`.
//!
//! This is the hottest request of the service, so in the steady state it touches no
//! database and usually no disk: the signature is checked in memory, the image's serving
//! facts come from [`cache::ServingCache`] (kept current across replicas by
//! [`invalidation`]), and small files' bytes from its file cache. Larger files are streamed.
//! Paths on disk come from the database row through `StorageKey`, never from the URL, and
//! the URL's fields are parsed strictly, so nothing in it can reach another file.
//!
//! Answers: 200/206/304 with the file; 403 for a malformed or tampered URL, an unknown
//! key or the other access type; 410 once expired or revoked (the image's URL generation
//! moved past the URL's); 404 when the image is deleted or the
//! variant does not exist; 416 for a range past the end. These routes run without the
//! request-tracing middleware: a span and a log line per request would cost more than the
//! rest of the serve.

mod cache;
mod http;
pub mod invalidation;
mod metrics;
pub mod server;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt as _;
use poem::http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, LOCATION, RANGE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use poem::http::{HeaderValue, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use shared::config::Config;
use shared::model::ImageId;
use shared::sealing::Sealer;
use shared::signing::{AccessType, SignatureError, SigningKeys, Variant};
use shared::storage::Storage;
use sqlx::PgPool;

use uuid::Uuid;

use self::metrics::{Kind, ServingMetrics, Verification};
pub use cache::{ServedFile, ServedImage, ServingCache};

use crate::error::{self, ErrorCode};

/// Path prefix of signed URLs.
pub const SIGNED_PREFIX: &str = "/storage/signed/";
/// Read size when streaming a file that is not kept in memory.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Keys, caches and settings of serving; cheap to clone.
#[derive(Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

struct Inner {
    keys: SigningKeys,
    cache: Arc<ServingCache>,
    db: PgPool,
    storage: Storage,
    public_max_age: HeaderValue,
}

impl Serving {
    /// `sealer` opens sealed file names for the downloads' `Content-Disposition`.
    pub fn new(db: PgPool, storage: Storage, config: &Config, sealer: Option<Arc<Sealer>>) -> Self {
        let previous = config.signed_urls.previous_keys.iter().map(|(id, secret)| (id.as_str(), secret));
        let keys = SigningKeys::new(&config.signed_urls.key_id, &config.storage.signed_url_key, previous);
        let public_max_age = HeaderValue::from_str(&format!("public, max-age={}", config.serving.public_max_age_secs))
            .expect("digits are a valid header value");
        let cache = Arc::new(ServingCache::new(&config.serving, sealer));
        Self { inner: Arc::new(Inner { keys, cache, db, storage, public_max_age }) }
    }

    /// The keys that sign new URLs and verify served ones.
    pub fn keys(&self) -> &SigningKeys {
        &self.inner.keys
    }

    /// The in-memory facts about images; a handler that changes an image may drop its entry
    /// at once (other replicas hear of it through PostgreSQL).
    pub fn cache(&self) -> &Arc<ServingCache> {
        &self.inner.cache
    }

    /// An endpoint that answers `/storage/signed/{signed path}` and
    /// `{public_path}/{id}/{variant}` itself and hands every other request to `api`. Its own
    /// prefix match is cheaper than the router's (no parameter strings, no path pattern).
    pub fn in_front_of<E: Endpoint>(&self, public_path: &str, api: E) -> Files<E> {
        let public_prefix = format!("{}/", public_path.trim_end_matches('/'));
        let metrics = ServingMetrics::new(&public_prefix);
        Files { serving: self.clone(), public_prefix, api, metrics }
    }

    async fn serve_signed(&self, request: &Request, token: &str) -> Result<Response, Denial> {
        let head = is_head(request)?;
        let requested = requested_access(request)?;
        let now = unix_now();
        let verified = self.inner.keys.verify(token, now, requested).map_err(Denial::Signature)?;
        let grant = verified.grant;
        let image = self.image(grant.image_id).await?;
        if grant.generation != image.url_generation {
            return Err(Denial::Revoked);
        }
        let file = image.file(grant.variant).ok_or(Denial::NotFound)?;
        if !head && let Some(redirect) = self.presigned_redirect(file, grant.access, grant.expires - now).await {
            return redirect;
        }
        // Caches may keep the file no longer than the URL lives.
        let cache_control = HeaderValue::try_from(format!("private, max-age={}", grant.expires - now))
            .expect("digits are a valid header value");
        self.send(request, head, file, grant.access, cache_control).await
    }

    /// With `storage.s3.presignedRedirect`, a 307 to a presigned URL of the store that lives
    /// no longer than the signed URL (nor `presignedTtlSecs`): the store then answers `Range`
    /// and `If-None-Match` itself, and the bytes do not pass through the API. The signature,
    /// revocation and access type were checked before.
    async fn presigned_redirect(
        &self,
        file: &ServedFile,
        access: AccessType,
        lifetime_secs: i64,
    ) -> Option<Result<Response, Denial>> {
        let ttl = std::time::Duration::from_secs(lifetime_secs.max(1) as u64);
        let content_type = file.content_type.to_str().unwrap_or("application/octet-stream");
        let disposition = (access == AccessType::Download).then(|| file.attachment.to_str().unwrap_or("attachment"));
        let url = self.inner.storage.presigned_url(&file.key, ttl, content_type, disposition).await?;
        Some(url.map_err(Denial::storage).and_then(|url| {
            let location = HeaderValue::try_from(url).map_err(|error| Denial::Internal(error.to_string()))?;
            Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(LOCATION, location)
                .header(CACHE_CONTROL, HeaderValue::from_static("no-store"))
                .body(Body::empty()))
        }))
    }

    /// `rest` is the path after the public prefix: `{id}/{variant}`.
    async fn serve_public(&self, request: &Request, rest: &str) -> Result<Response, Denial> {
        let head = is_head(request)?;
        let (id, variant) = rest.split_once('/').ok_or(Denial::NotFound)?;
        let id = parse_image_id(id).ok_or(Denial::NotFound)?;
        let variant = Variant::parse(variant).ok_or(Denial::NotFound)?;
        let access = requested_access(request)?.unwrap_or(AccessType::View);
        let image = self.image(id).await?;
        if !image.is_public {
            return Err(Denial::NotFound);
        }
        let file = image.file(variant).ok_or(Denial::NotFound)?;
        self.send(request, head, file, access, self.inner.public_max_age.clone()).await
    }

    async fn image(&self, id: ImageId) -> Result<Arc<ServedImage>, Denial> {
        match self.inner.cache.image(&self.inner.db, id).await {
            Ok(Some(image)) => Ok(image),
            Ok(None) => Err(Denial::NotFound),
            Err(e) => Err(Denial::Internal(e.to_string())),
        }
    }

    /// Answers with `file`, honouring `If-None-Match`, `Range` and `If-Range`.
    async fn send(
        &self,
        request: &Request,
        head: bool,
        file: &ServedFile,
        access: AccessType,
        cache_control: HeaderValue,
    ) -> Result<Response, Denial> {
        let headers = request.headers();
        let etag = file.etag.to_str().unwrap_or_default();
        let mut response = Response::builder()
            .header(ETAG, file.etag.clone())
            .header(CACHE_CONTROL, cache_control)
            .header(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
            // An image opened as a page can run nothing and load nothing, whatever its bytes.
            .header(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
        if access == AccessType::Download {
            response = response.header(CONTENT_DISPOSITION, file.attachment.clone());
        }
        if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| http::none_match(v, etag)) {
            return Ok(response.status(StatusCode::NOT_MODIFIED).body(Body::empty()));
        }
        let range = match headers.get(RANGE).and_then(|v| v.to_str().ok()) {
            Some(range)
                if headers.get(IF_RANGE).is_none_or(|v| v.to_str().is_ok_and(|v| http::if_range_allows(v, etag))) =>
            {
                http::range(range, file.size)
            }
            _ => http::RangeRequest::Full,
        };
        let (status, span) = match range {
            http::RangeRequest::Full => (StatusCode::OK, 0..file.size),
            http::RangeRequest::Partial(span) => {
                let content_range = format!("bytes {}-{}/{}", span.start, span.end - 1, file.size);
                response = response.header(CONTENT_RANGE, content_range);
                (StatusCode::PARTIAL_CONTENT, span)
            }
            http::RangeRequest::Unsatisfiable => return Err(Denial::RangeNotSatisfiable { size: file.size }),
        };
        let response = response
            .status(status)
            .header(CONTENT_TYPE, file.content_type.clone())
            .header(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if head {
            return Ok(response.header(CONTENT_LENGTH, span.end - span.start).body(Body::empty()));
        }
        let storage = &self.inner.storage;
        let small = self.inner.cache.small_file(storage, file).await.map_err(Denial::storage)?;
        if let Some(bytes) = small {
            // As read; differs from the recorded size only for a damaged file (logged).
            let end = span.end.min(bytes.len() as u64) as usize;
            let body = bytes.slice((span.start as usize).min(end)..end);
            return Ok(response.header(CONTENT_LENGTH, body.len()).body(Body::from(body)));
        }
        let body = stream(storage, file, span.clone()).await.map_err(Denial::storage)?;
        Ok(response.header(CONTENT_LENGTH, span.end - span.start).body(body))
    }

    /// Where every serve ends, served or denied: the one place for a per-serve record (the
    /// access log reads the finished response; usage counting would go here).
    fn finish(outcome: Result<Response, Denial>) -> Response {
        match outcome {
            Ok(response) => response,
            Err(denial) => denial.into_response(),
        }
    }
}

/// A file streamed from disk in large reads, never held whole.
async fn stream(storage: &Storage, file: &ServedFile, span: std::ops::Range<u64>) -> std::io::Result<Body> {
    let reader = storage.open_range(&file.key, span).await?;
    let chunks = tokio_util::io::ReaderStream::with_capacity(reader, STREAM_CHUNK_BYTES);
    Ok(Body::from_bytes_stream(chunks.map_ok(Bytes::from)))
}

/// Serving in front of the rest of the API (see [`Serving::in_front_of`]).
pub struct Files<E> {
    serving: Serving,
    /// `server.publicPath` with one trailing slash.
    public_prefix: String,
    api: E,
    metrics: ServingMetrics,
}

impl<E: Endpoint> Endpoint for Files<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let path = request.uri().path();
        // One path segment each: anything with more slashes is no file (404 below).
        if let Some(token) = path.strip_prefix(SIGNED_PREFIX).filter(|t| !t.is_empty() && !t.contains('/')) {
            let started = Instant::now();
            let outcome = self.serving.serve_signed(&request, token).await;
            if let Some(result) = Verification::of(&outcome) {
                self.metrics.verified(result);
            }
            let response = Serving::finish(outcome);
            self.metrics.served(Kind::Signed, request.method(), &response, started);
            return Ok(response);
        }
        if let Some(rest) = path.strip_prefix(self.public_prefix.as_str()).filter(|r| r.matches('/').count() == 1) {
            let started = Instant::now();
            let response = Serving::finish(self.serving.serve_public(&request, rest).await);
            self.metrics.served(Kind::Public, request.method(), &response, started);
            return Ok(response);
        }
        self.api.call(request).await.map(IntoResponse::into_response)
    }
}

/// Why a file is not served.
#[derive(Debug)]
enum Denial {
    Signature(SignatureError),
    /// Signed before the image's URLs were revoked (or it was made private).
    Revoked,
    NotFound,
    BadAccessType,
    RangeNotSatisfiable {
        size: u64,
    },
    MethodNotAllowed,
    /// The object store is unavailable: worth retrying shortly.
    StoreUnavailable(String),
    Internal(String),
}

impl Denial {
    fn storage(error: std::io::Error) -> Self {
        if shared::storage::is_unavailable(&error) {
            Self::StoreUnavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }

    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Signature(SignatureError::Expired) => (StatusCode::GONE, ErrorCode::UrlExpired, self.message()),
            Self::Signature(SignatureError::WrongAccessType { .. }) => {
                (StatusCode::FORBIDDEN, ErrorCode::WrongAccessType, self.message())
            }
            Self::Signature(SignatureError::UnknownKey) => {
                (StatusCode::FORBIDDEN, ErrorCode::UnknownKey, self.message())
            }
            Self::Signature(SignatureError::Malformed | SignatureError::BadSignature) => {
                (StatusCode::FORBIDDEN, ErrorCode::InvalidSignature, self.message())
            }
            Self::Revoked => (StatusCode::GONE, ErrorCode::UrlRevoked, self.message()),
            Self::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound, "image not found".to_owned()),
            Self::BadAccessType => (StatusCode::BAD_REQUEST, ErrorCode::InvalidAccessType, self.message()),
            Self::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::RangeNotSatisfiable, self.message())
            }
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, self.message()),
            Self::StoreUnavailable(cause) => {
                tracing::warn!(error = %cause, "object store unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServiceUnavailable, self.message())
            }
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "serving a file failed");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error".to_owned())
            }
        };
        let mut response = error::json_response(status, code, message);
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Self::RangeNotSatisfiable { size } = self {
            headers.insert(CONTENT_RANGE, HeaderValue::try_from(format!("bytes */{size}")).expect("digits"));
        }
        if let Self::MethodNotAllowed = self {
            headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        if let Self::StoreUnavailable(_) = self {
            headers.insert(RETRY_AFTER, HeaderValue::from(error::RETRY_AFTER_SECS));
        }
        response
    }

    fn message(&self) -> String {
        match self {
            Self::Signature(e) => e.to_string(),
            Self::Revoked => "the signed URL was revoked; ask for a new one".to_owned(),
            Self::NotFound => "image not found".to_owned(),
            Self::BadAccessType => "access_type must be view or download".to_owned(),
            Self::RangeNotSatisfiable { size } => format!("the range starts past the end of the {size}-byte file"),
            Self::MethodNotAllowed => "only GET and HEAD are allowed".to_owned(),
            Self::StoreUnavailable(_) => "the object store is unavailable; retry shortly".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }
}

fn is_head(request: &Request) -> Result<bool, Denial> {
    match *request.method() {
        Method::GET => Ok(false),
        Method::HEAD => Ok(true),
        _ => Err(Denial::MethodNotAllowed),
    }
}

/// The `access_type` query parameter: the use the client intends, which must be the one the
/// URL was issued for. Without it, the URL's own access type applies.
fn requested_access(request: &Request) -> Result<Option<AccessType>, Denial> {
    let Some(query) = request.uri().query() else { return Ok(None) };
    let mut requested = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("access_type=") {
            requested = Some(value.parse::<AccessType>().map_err(|_| Denial::BadAccessType)?);
        }
    }
    Ok(requested)
}

/// Only the canonical lower-case hyphenated spelling, as in the URLs this service hands out.
fn parse_image_id(text: &str) -> Option<ImageId> {
    let id = Uuid::try_parse(text).ok()?;
    let mut canonical = [0u8; 36];
    (id.hyphenated().encode_lower(&mut canonical) == text).then_some(ImageId(id))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
