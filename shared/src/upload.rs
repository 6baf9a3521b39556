//! Ingesting an upload: stream into storage while hashing and counting, check what the
//! bytes are, charge the owner's quota, and commit file, row and `image.uploaded` event
//! together. On any failure nothing remains: no file, no row, no quota used.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{Claims, Role, UploadPermissionError};
use crate::config::Config;
use crate::crypto::WrappedKey;
use crate::db::storage_files::{self, NewFile, StorageFile};
use crate::db::{image_keys, outbox, provenance, storage_quotas, upload_idempotency};
use crate::events::ImageUploaded;
use crate::fields::{FieldError, MAX_METADATA_BYTES, normalize_tags, refuse_nul, sanitize_file_name};
use crate::imaging::{self, ImagingError};
use crate::model::ImageFormat;
use crate::model::{ImageId, ImageType, Owner, OwnerId, OwnerType};
use crate::sealing::Sealer;
use crate::storage::{Storage, StorageKey, StreamWriter, Streamed};

/// Most source images one AI result may name.
pub const MAX_SOURCES: usize = 16;
/// Longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the file exceeds the {limit_bytes}-byte limit")]
    TooLarge { limit_bytes: u64 },
    #[error("the file is empty")]
    EmptyFile,
    #[error("the request has no `file` part")]
    MissingFile,
    #[error("the file is not one of the accepted image types ({accepted})")]
    UnsupportedType { accepted: String },
    #[error("the image is corrupt: {0}")]
    CorruptImage(String),
    #[error("the image has {pixels} pixels; the limit is {limit}")]
    TooManyPixels { pixels: u64, limit: u64 },
    #[error(transparent)]
    Forbidden(#[from] UploadPermissionError),
    #[error("the owner's storage quota is used up")]
    QuotaExceeded,
    #[error("field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// A named source image is missing, deleted, or neither the owner's nor public; which
    /// of these is not said, so that existence does not leak.
    #[error("source image {0} not found")]
    UnknownSource(ImageId),
    #[error("this Idempotency-Key was already used for a different file")]
    IdempotencyKeyReused,
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl UploadError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField { field, reason: reason.into() }
    }
}

/// The form fields of an upload, as sent.
#[derive(Debug, Clone, Default)]
pub struct UploadFields {
    pub image_type: Option<String>,
    pub owner_id: Option<String>,
    pub owner_type: Option<String>,
    pub file_name: Option<String>,
    pub is_public: Option<String>,
    /// Comma-separated, or a JSON array of strings.
    pub tags: Option<String>,
    /// A JSON object.
    pub metadata: Option<String>,
    /// Comma-separated, or a JSON array of UUIDs.
    pub source_ids: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Validated upload fields.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRequest {
    pub image_type: ImageType,
    pub owner: Option<Owner>,
    pub original_name: String,
    pub is_public: bool,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    /// The images a `result` was made from, distinct, in the order given.
    pub sources: Vec<ImageId>,
    pub idempotency_key: Option<String>,
}

impl UploadFields {
    pub fn validate(self) -> Result<UploadRequest, UploadError> {
        let image_type = self
            .image_type
            .ok_or_else(|| UploadError::invalid("image_type", "is required (user, cloth or result)"))?
            .trim()
            .parse::<ImageType>()
            .map_err(|_| UploadError::invalid("image_type", "must be user, cloth or result"))?;
        let owner = match (self.owner_id, self.owner_type) {
            (None, None) => None,
            (Some(id), kind) => Some(Owner {
                id: OwnerId(id.trim().parse::<Uuid>().map_err(|_| UploadError::invalid("owner_id", "must be a UUID"))?),
                kind: match kind.as_deref().map(str::trim) {
                    None | Some("") if image_type == ImageType::Cloth => OwnerType::Vendor,
                    None | Some("") => OwnerType::User,
                    Some(kind) => {
                        kind.parse().map_err(|_| UploadError::invalid("owner_type", "must be user or vendor"))?
                    }
                },
            }),
            (None, Some(_)) => return Err(UploadError::invalid("owner_type", "needs owner_id")),
        };
        let is_public = match self.is_public.as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => return Err(UploadError::invalid("is_public", "must be true or false")),
        };
        let idempotency_key = match self.idempotency_key {
            Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.is_ascii() => {
                return Err(UploadError::invalid("Idempotency-Key", "must be 1 to 255 ASCII characters"));
            }
            key => key,
        };
        Ok(UploadRequest {
            image_type,
            owner,
            original_name: sanitize_file_name(self.file_name.as_deref().unwrap_or("")),
            is_public,
            tags: parse_tags(self.tags.as_deref())?,
            metadata: parse_metadata(self.metadata.as_deref())?,
            sources: parse_sources(image_type, self.source_ids.as_deref())?,
            idempotency_key,
        })
    }
}

/// Source image ids: only for `result` images, at most [`MAX_SOURCES`], duplicates dropped.
pub fn parse_sources(image_type: ImageType, raw: Option<&str>) -> Result<Vec<ImageId>, UploadError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(Vec::new()) };
    if image_type != ImageType::Result {
        return Err(UploadError::invalid("source_ids", "only result images have sources"));
    }
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).map_err(|_| UploadError::invalid("source_ids", "must be a JSON array of UUIDs"))?
    } else {
        raw.split(',').map(str::to_owned).collect()
    };
    let mut sources = Vec::new();
    for item in items {
        let id = ImageId(item.trim().parse().map_err(|_| UploadError::invalid("source_ids", "must be UUIDs"))?);
        if !sources.contains(&id) {
            sources.push(id);
        }
    }
    if sources.len() > MAX_SOURCES {
        return Err(UploadError::invalid("source_ids", format!("at most {MAX_SOURCES} sources")));
    }
    Ok(sources)
}

/// Tags: a JSON array of strings or a comma-separated list; trimmed, de-duplicated, bounded.
pub fn parse_tags(raw: Option<&str>) -> Result<Vec<String>, UploadError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(Vec::new()) };
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).map_err(|_| UploadError::invalid("tags", "must be a JSON array of strings"))?
    } else {
        raw.split(',').map(str::to_owned).collect()
    };
    Ok(normalize_tags(items)?)
}

/// Metadata: a JSON object of at most [`MAX_METADATA_BYTES`], with no NUL character.
pub fn parse_metadata(raw: Option<&str>) -> Result<Map<String, Value>, UploadError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(Map::new()) };
    if raw.len() > MAX_METADATA_BYTES {
        return Err(UploadError::invalid("metadata", format!("at most {MAX_METADATA_BYTES} bytes")));
    }
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => {
            refuse_nul(&map)?;
            Ok(map)
        }
        _ => Err(UploadError::invalid("metadata", "must be a JSON object")),
    }
}

impl From<FieldError> for UploadError {
    fn from(e: FieldError) -> Self {
        Self::InvalidField { field: e.field, reason: e.reason }
    }
}

/// The file part of an upload, arriving chunk by chunk into storage (a staged file, or a
/// staged object of the store) and hashed on the way (see [`StreamWriter`]).
#[derive(Debug)]
pub struct IncomingFile {
    writer: StreamWriter<Sha256>,
    len: u64,
    limit_bytes: u64,
}

impl IncomingFile {
    pub async fn start(storage: &Storage, limit_bytes: u64) -> Result<Self, UploadError> {
        Ok(Self { writer: storage.stream(Sha256::new()).await?, len: 0, limit_bytes })
    }

    /// Appends a chunk; stops at the limit without writing past it.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), UploadError> {
        if self.len + chunk.len() as u64 > self.limit_bytes {
            return Err(UploadError::TooLarge { limit_bytes: self.limit_bytes });
        }
        self.len += chunk.len() as u64;
        self.writer.write(chunk).await?;
        Ok(())
    }

    /// Removes what was received so far; for a refused or broken upload, before answering.
    pub async fn discard(self) {
        self.writer.discard().await;
    }

    /// Waits for the last bytes to be written.
    pub async fn finish(self) -> Result<ReceivedFile, UploadError> {
        let (streamed, hasher) = self.writer.finish().await?;
        Ok(ReceivedFile { checksum: hex::encode(hasher.finalize()), streamed })
    }
}

/// A completely received file, not yet named.
#[derive(Debug)]
pub struct ReceivedFile {
    streamed: Streamed,
    /// Lower-case hex SHA-256.
    pub checksum: String,
}

impl ReceivedFile {
    pub fn size(&self) -> u64 {
        self.streamed.len()
    }

    /// Removes the received bytes before answering (a refused form); dropping the file
    /// removes them too, but on the s3 backend a moment later.
    pub async fn discard(self) {
        self.streamed.discard().await;
    }
}

/// The result of a successful upload.
#[derive(Debug, Clone)]
pub struct StoredUpload {
    pub file: StorageFile,
    /// True when an `Idempotency-Key` matched an earlier upload, whose result this is.
    pub replayed: bool,
}

/// Stores uploads; cheap to clone.
#[derive(Debug, Clone)]
pub struct Uploader {
    pub db: PgPool,
    pub storage: Storage,
    pub config: Arc<Config>,
    /// Seals the configured fields of each new image; `None` when encryption is off.
    pub sealer: Option<Arc<Sealer>>,
}

impl Uploader {
    /// Checks and commits a received file. A refused upload leaves nothing behind: the
    /// received bytes are removed before the answer unless they were committed.
    pub async fn store(
        &self,
        claims: &Claims,
        request: UploadRequest,
        received: ReceivedFile,
    ) -> Result<StoredUpload, UploadError> {
        let ReceivedFile { streamed, checksum } = received;
        let mut unnamed = Some(streamed);
        let stored = self.check_and_commit(claims, request, &mut unnamed, &checksum).await;
        if let Some(unused) = unnamed {
            unused.discard().await;
        }
        stored
    }

    /// Takes the received bytes out of `unnamed` only to commit them.
    async fn check_and_commit(
        &self,
        claims: &Claims,
        request: UploadRequest,
        unnamed: &mut Option<Streamed>,
        checksum: &str,
    ) -> Result<StoredUpload, UploadError> {
        let owner = claims.upload_owner(request.image_type, request.owner)?;
        let streamed = unnamed.as_ref().expect("not committed yet");
        if streamed.is_empty() {
            return Err(UploadError::EmptyFile);
        }
        if let Some(key) = &request.idempotency_key
            && let Some(previous) = self.replay(claims.sub, key, checksum).await?
        {
            return Ok(previous);
        }
        let size = i64::try_from(streamed.len()).expect("bounded by maxFileSize");
        let info = self.probe(streamed).await?;

        let id = ImageId::new();
        let key = StorageKey::Original { image_type: request.image_type, owner, image_id: id, format: info.format };
        let file_path = key.to_db_path();
        let mut original_name = request.original_name;
        let mut metadata = request.metadata;
        // Sealed before anything reaches the database; the wrapped key is stored in the
        // row's transaction, and the key opens the stored row's answer without reading it back.
        let keys = self.sealer.as_deref().map(|sealer| {
            let (data_key, wrapped) = sealer.new_key(id);
            original_name = sealer.seal_name(&data_key, id, &original_name);
            sealer.seal_metadata(&data_key, id, &mut metadata);
            (data_key, wrapped)
        });
        let metadata = Value::Object(metadata);

        // The file goes into place before its row exists and outside the transaction, so the
        // owner's quota row stays locked only for the database work. A crash in between
        // leaves an orphan file for the file audit, never a row without its file.
        self.storage.commit_streamed(unnamed.take().expect("checked above"), &key).await?;
        let new_file = NewFile {
            id,
            owner,
            image_type: request.image_type,
            original_name: &original_name,
            file_path: &file_path,
            file_size: size,
            format: info.format,
            width: i32::try_from(info.width).expect("bounded by maxPixels"),
            height: i32::try_from(info.height).expect("bounded by maxPixels"),
            checksum,
            is_public: request.is_public,
            tags: &request.tags,
            metadata: &metadata,
        };
        let wrapped = keys.as_ref().map(|(_, wrapped)| wrapped);
        let mut recorded =
            self.record(claims, &new_file, wrapped, &request.sources, request.idempotency_key.as_deref()).await;
        if !matches!(recorded, Ok(StoredUpload { replayed: false, .. })) {
            // Refused, failed, or a concurrent retry won: this copy is not wanted.
            if let Err(cleanup) = self.storage.delete(&key).await {
                tracing::error!(image.id = %id, error = %cleanup, "could not remove the file of a failed upload");
            }
        }
        if let Ok(StoredUpload { replayed: false, file }) = &mut recorded {
            tracing::info!(image.id = %id, image.format = info.format.as_str(), size_bytes = size, "stored image {id}");
            if let (Some(sealer), Some((data_key, _))) = (self.sealer.as_deref(), keys) {
                sealer.opener_of(id, data_key).file(file);
            }
        }
        recorded
    }

    /// Checks the named sources, charges the quota and commits row, data key, provenance,
    /// idempotency key and `image.uploaded` event in one transaction.
    async fn record(
        &self,
        claims: &Claims,
        new_file: &NewFile<'_>,
        wrapped: Option<&WrappedKey>,
        sources: &[ImageId],
        idempotency_key: Option<&str>,
    ) -> Result<StoredUpload, UploadError> {
        let mut tx = self.db.begin().await?;
        if !sources.is_empty() {
            // Admins may name anything live; everyone else the owner's images or public ones.
            let reader = (claims.role != Role::Admin).then_some(new_file.owner.id);
            let usable = provenance::usable_sources(&mut tx, sources, reader).await?;
            if let Some(missing) = sources.iter().find(|s| !usable.contains(s)) {
                return Err(UploadError::UnknownSource(*missing));
            }
        }
        storage_quotas::ensure(&mut *tx, new_file.owner, &self.config.quota).await?;
        if !storage_quotas::reserve(&mut *tx, new_file.owner, new_file.file_size).await? {
            return Err(UploadError::QuotaExceeded);
        }
        let file = storage_files::insert(&mut *tx, new_file).await?;
        if let Some(wrapped) = wrapped {
            image_keys::insert(&mut *tx, new_file.id, &wrapped.key_id, &wrapped.bytes).await?;
        }
        if let Some(key) = idempotency_key
            && !upload_idempotency::insert(&mut *tx, claims.sub, key, new_file.id, new_file.checksum).await?
        {
            // A concurrent retry with the same key committed first: answer with its result.
            drop(tx);
            return self.replay(claims.sub, key, new_file.checksum).await?.ok_or(UploadError::IdempotencyKeyReused);
        }
        if !sources.is_empty() {
            provenance::insert(&mut *tx, new_file.id, sources).await?;
        }
        outbox::enqueue(&mut *tx, ImageUploaded { image_id: new_file.id }).await?;
        tx.commit().await?;
        Ok(StoredUpload { file, replayed: false })
    }

    async fn replay(&self, principal: Uuid, key: &str, checksum: &str) -> Result<Option<StoredUpload>, UploadError> {
        let Some(previous) = upload_idempotency::find(&self.db, principal, key).await? else { return Ok(None) };
        if previous.checksum != checksum {
            return Err(UploadError::IdempotencyKeyReused);
        }
        // The earlier image may have been deleted since: then the key is spent.
        let file = storage_files::get(&self.db, previous.image_id).await?.ok_or(UploadError::IdempotencyKeyReused)?;
        Ok(Some(StoredUpload { file, replayed: true }))
    }

    async fn probe(&self, received: &Streamed) -> Result<imaging::ImageInfo, UploadError> {
        let reader = received.reader()?;
        let max_pixels = self.config.storage.max_pixels;
        let info = tokio::task::spawn_blocking(move || imaging::probe(reader, max_pixels))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let accepted = self.config.allowed_formats();
        let unsupported = || UploadError::UnsupportedType { accepted: accepted_mimes(&accepted) };
        match info {
            Ok(info) if accepted.contains(&info.format) => Ok(info),
            Ok(_) | Err(ImagingError::UnknownFormat) => Err(unsupported()),
            Err(ImagingError::TooManyPixels { pixels, limit }) => Err(UploadError::TooManyPixels { pixels, limit }),
            Err(ImagingError::Io(e)) => Err(UploadError::Storage(e)),
            Err(e) => Err(UploadError::CorruptImage(e.to_string())),
        }
    }
}

/// Formats accepted by this deployment, for error messages and docs.
pub fn accepted_mimes(formats: &[ImageFormat]) -> String {
    formats.iter().map(|f| f.mime()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{MAX_TAG_CHARS, MAX_TAGS};

    #[test]
    fn tags_accept_lists_and_arrays_and_stay_bounded() {
        assert_eq!(parse_tags(Some(" red, dress ,red,")).unwrap(), vec!["red", "dress"]);
        assert_eq!(parse_tags(Some(r#"["a b", "c"]"#)).unwrap(), vec!["a b", "c"]);
        assert!(parse_tags(Some("[1, 2]")).is_err());
        assert!(parse_tags(Some(&"x".repeat(MAX_TAG_CHARS + 1))).is_err());
        let many = (0..=MAX_TAGS).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse_tags(Some(&many)).is_err());
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert_eq!(parse_metadata(Some(r#"{"color": "red"}"#)).unwrap()["color"], "red");
        assert!(parse_metadata(Some("[1]")).is_err());
        assert!(parse_metadata(Some("not json")).is_err());
        let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_METADATA_BYTES));
        assert!(parse_metadata(Some(&big)).is_err());
    }

    #[test]
    fn fields_are_validated() {
        let fields = |image_type: &str| UploadFields { image_type: Some(image_type.to_owned()), ..Default::default() };
        assert_eq!(fields("cloth").validate().unwrap().image_type, ImageType::Cloth);
        assert!(fields("avatar").validate().is_err());
        assert!(UploadFields::default().validate().is_err());
        let with_owner = UploadFields { owner_id: Some("nope".into()), ..fields("result") };
        assert!(matches!(with_owner.validate(), Err(UploadError::InvalidField { field: "owner_id", .. })));
        let public = UploadFields { is_public: Some("yes".into()), ..fields("user") };
        assert!(public.validate().is_err());
    }
}
