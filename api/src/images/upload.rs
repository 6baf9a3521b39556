//! `POST /storage/images`: a streaming multipart upload.
//!
//! The body is never held in memory: the `file` part goes chunk by chunk into storage (a
//! staged file, or on the s3 backend a staged object sent in parts; hashed and counted on
//! the way, cut off at `storage.maxFileSize`), and the small text parts are read with a
//! bound. The body is parsed with `multer` straight from the connection's byte chunks, so
//! the file's bytes reach storage's writer without being copied into intermediate buffers.
//!
//! The body as a whole is bounded before it is read (`storage.maxFileSize` plus
//! `limits.uploadFormBytes`: a larger `Content-Length` is refused at once, a chunked body is
//! cut off there), and so are the preamble and each part's headers
//! (`limits.multipartHeaderBytes`) and the number of parts (`limits.multipartParts`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use multer::{Constraints, Field, Multipart, SizeLimit};
use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Multipart as MultipartSchema, impl_apirequest_for_payload};
use shared::auth::Claims;
use shared::db::storage_files::StorageFile;
use shared::db::storage_thumbnails;
use shared::sealing;
use shared::signing::Variant;
use shared::upload::{IncomingFile, ReceivedFile, UploadError, UploadFields};
use uuid::Uuid;

use super::ImageView;
use crate::error::{ApiError, ErrorCode};
use crate::signed_urls::{AccessUrl, UrlIssuer};
use crate::{AppState, model};

/// Largest text part of the form (metadata is the largest), in bytes.
const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

/// The upload form, as documented; parsing streams through [`UploadBody`] instead.
#[derive(Debug, MultipartSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The image. Its type is sniffed from the bytes, whatever its name or Content-Type.
    file: Upload,
    image_type: model::ImageType,
    is_public: Option<bool>,
    /// Comma-separated, or a JSON array of strings.
    tags: Option<String>,
    /// A JSON object.
    metadata: Option<String>,
    /// For the `service` role: whose result this is.
    owner_id: Option<Uuid>,
    /// With `owner_id`; `user` by default.
    owner_type: Option<model::OwnerType>,
    /// For `result` images: the ids of the images it was made from (the user's photo, the
    /// clothing), comma-separated or a JSON array; each must exist and be the result
    /// owner's own or public.
    source_ids: Option<String>,
}

/// A `multipart/form-data` body, not read yet: the handler reads it as a stream, within
/// the bounds of the configuration.
pub struct UploadBody {
    body: poem::Body,
    boundary: String,
    /// The `Content-Length` the client declared, if any.
    declared_length: Option<u64>,
}

impl Payload for UploadBody {
    const CONTENT_TYPE: &'static str = "multipart/form-data";

    fn check_content_type(content_type: &str) -> bool {
        content_type.parse::<mime::Mime>().is_ok_and(|m| m.essence_str() == Self::CONTENT_TYPE)
    }

    fn schema_ref() -> MetaSchemaRef {
        <UploadForm as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <UploadForm as Payload>::register(registry);
    }
}

impl ParsePayload for UploadBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
        // The content type itself was checked by `check_content_type`.
        let boundary =
            multer::parse_boundary(content_type.unwrap_or_default()).map_err(|e| poem::Error::from(malformed(e)))?;
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok());
        Ok(Self { body: body.take()?, boundary, declared_length })
    }
}

impl_apirequest_for_payload!(UploadBody);

#[derive(ApiResponse)]
pub enum UploadResponse {
    /// Stored; thumbnails and verification follow shortly. `original_url` fetches the
    /// original at once.
    #[oai(status = 201)]
    Created(
        Json<ImageView>,
        /// Where the image's metadata lives.
        #[oai(header = "Location")]
        String,
        /// `true` when an `Idempotency-Key` matched an earlier upload, whose result this is.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

pub async fn handle(
    state: &AppState,
    claims: &Claims,
    idempotency_key: Option<String>,
    body: UploadBody,
) -> Result<UploadResponse, ApiError> {
    let stored = receive_and_store(state, claims, idempotency_key, body).await;
    if let Err(ApiError::InsufficientStorage(_)) = &stored {
        // Health says `down` now, not at the next scheduled check.
        if let Err(error) = shared::health::record_storage_full(&state.db, &state.storage, &state.config).await {
            tracing::warn!(error = %error, "could not record the full storage disk in the health checks");
        }
    }
    stored
}

async fn receive_and_store(
    state: &AppState,
    claims: &Claims,
    idempotency_key: Option<String>,
    body: UploadBody,
) -> Result<UploadResponse, ApiError> {
    let limits = &state.config.limits;
    let body_limit = state.config.storage.max_file_size.saturating_add(limits.upload_form_bytes);
    if body.declared_length.is_some_and(|length| length > body_limit) {
        return Err(ApiError::body_too_large(body_limit));
    }
    let headers = HeaderBudget::new(limits.multipart_header_bytes);
    let stream = headers.guard(body.body.into_bytes_stream());
    let constraints = Constraints::new().size_limit(SizeLimit::new().whole_stream(body_limit));
    let mut multipart = Multipart::with_constraints(stream, body.boundary, constraints);
    let mut fields = UploadFields { idempotency_key, ..Default::default() };
    let mut received = None;
    let parsed = read_form(state, &mut multipart, &headers, body_limit, &mut fields, &mut received).await;
    let request = parsed.and_then(|()| check_form(&fields)).and_then(|()| fields.validate().map_err(ApiError::from));
    let (request, received) = match (request, received) {
        (Ok(request), Some(received)) => (request, received),
        (Ok(_), None) => return Err(UploadError::MissingFile.into()),
        (Err(refused), received) => {
            // Removed before the answer, so a refused form leaves nothing behind.
            if let Some(received) = received {
                received.discard().await;
            }
            return Err(refused);
        }
    };
    let mut stored = state.uploader.store(claims, request, received).await?;
    // A new upload comes back opened (the uploader holds its key); a replay is read from
    // its row, sealed. The image is committed either way: a database that cannot give the
    // key now must not turn it into an error a client would answer with a second upload.
    let thumbnails = if stored.replayed {
        if let Err(error) = sealing::open_files(state.sealer.as_deref(), &state.db, [&mut stored.file]).await {
            tracing::warn!(image.id = %stored.file.id, %error, "the upload's sealed fields are answered unreadable");
            sealing::hide_sealed(state.sealer.as_deref(), &mut stored.file);
        }
        // A replayed upload may already have its thumbnails.
        storage_thumbnails::list(&state.db, stored.file.id).await?
    } else {
        Vec::new()
    };
    let original_url = original_url(state, claims, &stored.file).await;
    let location = format!("/storage/images/{}", stored.file.id);
    Ok(UploadResponse::Created(
        Json(ImageView::new(stored.file, thumbnails).with_original_url(original_url)),
        location,
        stored.replayed.then_some(true),
    ))
}

/// The access URL of the stored original, as `GET /storage/images/{id}/access` gives it.
/// The image is committed by now: a failure to record the signed URL (bookkeeping that
/// serving does not need) is logged rather than answered, since a client told that its
/// upload failed would send it again.
async fn original_url(state: &AppState, claims: &Claims, file: &StorageFile) -> AccessUrl {
    let mut issuer = UrlIssuer::new(state, claims);
    let url = issuer.access(file, Variant::Original, state.config.signed_urls.default_ttl_secs);
    // Its cause is logged where the error was made (`ApiError::database`).
    let _logged = issuer.record().await;
    url
}

/// What the API checks beyond `shared::upload`: `is_public` is the boolean the document
/// says (not `1`, `0` or empty).
fn check_form(fields: &UploadFields) -> Result<(), ApiError> {
    if fields.is_public.as_deref().is_some_and(|flag| !matches!(flag.trim(), "true" | "false")) {
        return Err(ApiError::bad_request(ErrorCode::InvalidField, "field `is_public`: must be true or false"));
    }
    Ok(())
}

/// Reads the form's parts into `fields` and `received` (the file, once its part is in).
async fn read_form(
    state: &AppState,
    multipart: &mut Multipart<'static>,
    headers: &HeaderBudget,
    body_limit: u64,
    fields: &mut UploadFields,
    received: &mut Option<ReceivedFile>,
) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    let mut parts = 0;
    loop {
        headers.start();
        let next = multipart.next_field().await;
        headers.stop();
        let Some(mut field) = next.map_err(|error| unreadable(error, headers, body_limit))? else { break };
        parts += 1;
        if parts > limits.multipart_parts {
            return Err(ApiError::bad_request(
                ErrorCode::MalformedBody,
                format!("the form has more than {} parts", limits.multipart_parts),
            ));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let slot = match name.as_str() {
            "file" if received.is_some() => {
                return Err(ApiError::bad_request(ErrorCode::InvalidField, "only one `file` part"));
            }
            "file" => {
                fields.file_name = field.file_name().map(str::to_owned);
                let mut incoming = IncomingFile::start(&state.storage, state.config.storage.max_file_size).await?;
                let streamed = async {
                    while let Some(chunk) = field.chunk().await.map_err(|e| unreadable(e, headers, body_limit))? {
                        incoming.push(chunk).await?;
                    }
                    Ok::<_, ApiError>(())
                }
                .await;
                if let Err(refused) = streamed {
                    incoming.discard().await;
                    return Err(refused);
                }
                *received = Some(incoming.finish().await?);
                continue;
            }
            "image_type" => &mut fields.image_type,
            "owner_id" => &mut fields.owner_id,
            "owner_type" => &mut fields.owner_type,
            "is_public" => &mut fields.is_public,
            "tags" => &mut fields.tags,
            "metadata" => &mut fields.metadata,
            "source_ids" => &mut fields.source_ids,
            other => {
                return Err(ApiError::bad_request(ErrorCode::InvalidField, format!("unknown form field `{other}`")));
            }
        };
        *slot = Some(read_text(field, &name, |e| unreadable(e, headers, body_limit)).await?);
    }
    Ok(())
}

/// Reads a text part, refusing it as soon as it exceeds [`MAX_TEXT_FIELD_BYTES`]; read
/// errors become what `unreadable` makes of them.
async fn read_text(
    mut field: Field<'static>,
    name: &str,
    unreadable: impl Fn(multer::Error) -> ApiError,
) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(&unreadable)? {
        if text.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidField,
                format!("field `{name}` is longer than {MAX_TEXT_FIELD_BYTES} bytes"),
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map_err(|_| ApiError::bad_request(ErrorCode::InvalidField, format!("field `{name}` is not UTF-8 text")))
}

/// The answer to a body multer could not read: over the whole body's bound, over the
/// budget for part headers, or malformed.
fn unreadable(error: multer::Error, headers: &HeaderBudget, body_limit: u64) -> ApiError {
    if headers.exceeded() {
        let limit = headers.0.limit;
        return ApiError::bad_request(
            ErrorCode::MalformedBody,
            format!("no complete multipart part headers within {limit} bytes"),
        );
    }
    match error {
        multer::Error::StreamSizeExceeded { .. } => ApiError::body_too_large(body_limit),
        other => malformed(other),
    }
}

fn malformed(error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(ErrorCode::MalformedBody, format!("the multipart body cannot be read: {error}"))
}

/// Counts the bytes multer pulls from the body while it looks for the next part (the
/// preamble, a boundary, the part's headers), and fails the body once they pass the
/// budget: multer buffers until it finds what it looks for, so a body whose boundary or
/// header end never comes would otherwise be held whole. Between [`HeaderBudget::start`]
/// and [`HeaderBudget::stop`] at most the budget plus one network chunk is buffered.
#[derive(Clone)]
struct HeaderBudget(Arc<BudgetState>);

struct BudgetState {
    limit: u64,
    reading_headers: AtomicBool,
    pulled: AtomicU64,
    exceeded: AtomicBool,
}

impl HeaderBudget {
    fn new(limit: u64) -> Self {
        let state = BudgetState {
            limit,
            reading_headers: AtomicBool::new(false),
            pulled: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        };
        Self(Arc::new(state))
    }

    /// The search for the next part begins, with a full budget.
    fn start(&self) {
        self.0.pulled.store(0, Ordering::Relaxed);
        self.0.reading_headers.store(true, Ordering::Relaxed);
    }

    /// The next part (or the end of the body) was found.
    fn stop(&self) {
        self.0.reading_headers.store(false, Ordering::Relaxed);
    }

    fn exceeded(&self) -> bool {
        self.0.exceeded.load(Ordering::Relaxed)
    }

    /// `body` failing once the search for a part has pulled the budget and wants more.
    fn guard(
        &self,
        body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let budget = self.clone();
        body.map(move |chunk| {
            let chunk = chunk?;
            let state = &budget.0;
            if state.reading_headers.load(Ordering::Relaxed) {
                if state.pulled.load(Ordering::Relaxed) >= state.limit {
                    state.exceeded.store(true, Ordering::Relaxed);
                    return Err(std::io::Error::other("multipart part headers over their budget"));
                }
                state.pulled.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(chunk)
        })
    }
}
