//! The one place where failures become HTTP answers: every error leaves the API as
//! `{"error": {"code": "…", "message": "…"}}` with its status. Causes of 5xx answers are
//! logged here, once, and never sent to the client.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, ToJSON};
use poem_openapi::{ApiResponse, Object};
use shared::auth::{ListPermissionError, UploadPermissionError};
use shared::deletion::DeleteError;
use shared::fields::FieldError;
use shared::maintenance::sweep::ReprocessError;
use shared::sealing::SealingError;
use shared::upload::UploadError;

mod code;
pub use code::ErrorCode;

/// The body of every error answer.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl Example for ErrorBody {
    fn example() -> Self {
        let message = "the file exceeds the 52428800-byte limit".to_owned();
        Self { error: ErrorDetail { code: ErrorCode::FileTooLarge, message } }
    }
}

#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// Stable, machine-readable: clients branch on it.
    pub code: ErrorCode,
    /// Human-readable explanation; its wording may change.
    pub message: String,
}

/// An error answer, one variant per status the API uses.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, invalid or expired bearer token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The caller's role may not do this, or a quota is used up.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource visible to the caller.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The resource is not in the state the request needs yet (e.g. a thumbnail not made).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The upload exceeds `storage.maxFileSize`, or a body its limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The bytes are not an accepted image type.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The image is corrupt, truncated or too large in pixels.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Over the rate limit of the caller (or of its IP); retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// Something failed on our side; the cause is in the logs.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The database or the object store cannot be reached right now; retry after
    /// `Retry-After` seconds.
    #[oai(status = 503)]
    ServiceUnavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// The storage disk is full; retry once an operator has made room.
    #[oai(status = 507)]
    InsufficientStorage(Json<ErrorBody>),
}

/// What a client is told to wait before retrying a request the database or the object
/// store could not serve.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

fn body(code: ErrorCode, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: ErrorDetail { code, message: message.into() } })
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::BadRequest(body(code, message))
    }

    pub fn unauthorized() -> Self {
        Self::Unauthorized(body(ErrorCode::Unauthorized, "a valid bearer token is required"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body(ErrorCode::Forbidden, message))
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(body(ErrorCode::NotFound, format!("{what} not found")))
    }

    pub fn not_found_code(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::NotFound(body(code, message))
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Conflict(body(code, message))
    }

    /// 413 `body_too_large`: the request body is over `limit_bytes`.
    pub fn body_too_large(limit_bytes: u64) -> Self {
        Self::PayloadTooLarge(body(
            ErrorCode::BodyTooLarge,
            format!("the request body is over the {limit_bytes}-byte limit"),
        ))
    }

    /// 429 `rate_limited`, retry after `retry_after_secs` (whole seconds, rounded up).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let message = format!("too many requests; retry in {retry_after_secs} s");
        Self::TooManyRequests(body(ErrorCode::RateLimited, message), retry_after_secs)
    }

    /// A database failure: 503 `service_unavailable` with `Retry-After` while the database
    /// cannot be reached (so clients and load balancers back off instead of failing the
    /// request for good), 500 for anything else. The cause is logged, never sent.
    pub fn database(cause: &sqlx::Error) -> Self {
        if !shared::db::is_unavailable(cause) {
            return Self::internal(cause);
        }
        tracing::warn!(error = %cause, "database unavailable");
        let message = "the database is unavailable; retry shortly";
        Self::ServiceUnavailable(body(ErrorCode::ServiceUnavailable, message), RETRY_AFTER_SECS)
    }

    /// A storage failure: 503 `service_unavailable` with `Retry-After` while the object
    /// store is unavailable (unreachable, timing out, or too slow to take upload parts), 500
    /// for anything else. The cause is logged, never sent.
    pub fn storage(cause: &std::io::Error) -> Self {
        if !shared::storage::is_unavailable(cause) {
            return Self::internal(cause);
        }
        tracing::warn!(error = %cause, "object store unavailable");
        let message = "the object store is unavailable; retry shortly";
        Self::ServiceUnavailable(body(ErrorCode::ServiceUnavailable, message), RETRY_AFTER_SECS)
    }

    /// Logs the cause (once, here) and answers 500 without revealing it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::Internal(body(ErrorCode::Internal, "internal error"))
    }

    /// The code and message this answer carries: the outcome of one item of a batch
    /// request, whose other items go on (`POST /storage/images/bulk`).
    pub fn detail(&self) -> ErrorDetail {
        let (Self::BadRequest(body)
        | Self::Unauthorized(body)
        | Self::Forbidden(body)
        | Self::NotFound(body)
        | Self::Conflict(body)
        | Self::PayloadTooLarge(body)
        | Self::UnsupportedMediaType(body)
        | Self::Unprocessable(body)
        | Self::TooManyRequests(body, _)
        | Self::Internal(body)
        | Self::ServiceUnavailable(body, _)
        | Self::InsufficientStorage(body)) = self;
        body.0.error.clone()
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let message = e.to_string();
        match e {
            UploadError::TooLarge { .. } => Self::PayloadTooLarge(body(ErrorCode::FileTooLarge, message)),
            UploadError::EmptyFile => Self::BadRequest(body(ErrorCode::EmptyFile, message)),
            UploadError::MissingFile => Self::BadRequest(body(ErrorCode::MissingFile, message)),
            UploadError::InvalidField { .. } => Self::BadRequest(body(ErrorCode::InvalidField, message)),
            UploadError::UnsupportedType { .. } => {
                Self::UnsupportedMediaType(body(ErrorCode::UnsupportedMediaType, message))
            }
            UploadError::CorruptImage(_) => Self::Unprocessable(body(ErrorCode::CorruptImage, message)),
            UploadError::TooManyPixels { .. } => Self::Unprocessable(body(ErrorCode::ImageTooLarge, message)),
            UploadError::UnknownSource(_) => Self::Unprocessable(body(ErrorCode::UnknownSource, message)),
            UploadError::IdempotencyKeyReused => Self::Unprocessable(body(ErrorCode::IdempotencyKeyReused, message)),
            UploadError::Forbidden(UploadPermissionError::OwnerRequired) => {
                Self::BadRequest(body(ErrorCode::InvalidField, message))
            }
            UploadError::Forbidden(_) => Self::Forbidden(body(ErrorCode::Forbidden, message)),
            UploadError::QuotaExceeded => Self::Forbidden(body(ErrorCode::QuotaExceeded, message)),
            UploadError::Storage(e) if shared::storage::is_out_of_space(&e) => {
                tracing::error!(error = %e, "the storage disk is full");
                Self::InsufficientStorage(body(ErrorCode::InsufficientStorage, "the storage disk is full; retry later"))
            }
            UploadError::Storage(e) => Self::storage(&e),
            UploadError::Db(e) => Self::database(&e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::database(&e)
    }
}

/// A field of a metadata update, search or quota change that breaks its rules.
impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest(body(ErrorCode::InvalidField, e.to_string()))
    }
}

impl From<ListPermissionError> for ApiError {
    fn from(e: ListPermissionError) -> Self {
        match e {
            ListPermissionError::OtherOwner => Self::forbidden(e.to_string()),
            ListPermissionError::OwnerRequired => Self::BadRequest(body(ErrorCode::InvalidField, e.to_string())),
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NotFound(_) => Self::not_found("image"),
            DeleteError::Forbidden => Self::forbidden(e.to_string()),
            DeleteError::Db(e) => Self::database(&e),
        }
    }
}

/// A change to sealed fields whose data key does not unwrap (its master key left the ring).
impl From<SealingError> for ApiError {
    fn from(e: SealingError) -> Self {
        match e {
            SealingError::Crypto(e) => Self::internal(&e),
            SealingError::Db(e) => Self::database(&e),
        }
    }
}

impl From<ReprocessError> for ApiError {
    fn from(e: ReprocessError) -> Self {
        match e {
            ReprocessError::NotFound(_) => Self::not_found("image"),
            ReprocessError::Db(e) => Self::database(&e),
        }
    }
}

/// An error answer built outside the OpenAPI handlers (file serving), in the same shape.
pub fn json_response(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (status, poem::web::Json(body(code, message).0.to_json())).into_response()
}

/// Renders any error that escaped a handler (unknown route, bad path parameter, missing
/// token, unreadable body…) in the same JSON shape as the API's own errors.
pub async fn render(error: poem::Error) -> Response {
    if error.is_from_response() {
        // Already one of ours (an `ApiError`), or a deliberate response.
        return error.into_response();
    }
    let status = error.status();
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let message = if status.is_server_error() {
        tracing::error!(error = %error, "request failed");
        "internal error".to_owned()
    } else if status == StatusCode::UNAUTHORIZED {
        "a valid bearer token is required".to_owned()
    } else {
        error.to_string()
    };
    (status, poem::web::Json(body(code, message).0.to_json())).into_response()
}
