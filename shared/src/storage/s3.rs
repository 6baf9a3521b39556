//! The `s3` backend: objects in a bucket of an S3-compatible store, named
//! `{prefix}/{StorageKey path}` so that an operator browsing the bucket sees the seed's
//! layout. Requests are signed and retried by `object_store`; this module only maps the
//! facade's calls onto it and its errors onto `io::Error` (a missing object is `NotFound`,
//! anything else is the store being unavailable, see [`is_unavailable`]).

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio_util::io::StreamReader;

use super::{ObjectReader, STAGING_DIR, StorageKey};
use crate::config::{ConfigError, S3Config};

mod backups;
mod listing;
mod stream;
pub(super) use stream::{S3StreamWriter, StagedObject, UploadBuffer};
pub use stream::{UPLOAD_BUFFER_WAIT, UPLOAD_PART_BYTES};

/// Parts of one upload of a staged file in flight at once: with the one being filled, such
/// an upload holds at most three parts in memory, whatever the object's size.
const PARTS_IN_FLIGHT: usize = 2;
/// HEAD requests in flight at once when an audit asks which of many objects exist.
const CONCURRENT_LOOKUPS: usize = 16;

/// A bucket and the prefix of this deployment's objects in it.
#[derive(Debug, Clone)]
pub(super) struct S3Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Shared by every upload streaming into the store from this process.
    upload_buffer: UploadBuffer,
    /// Signs presigned URLs (`storage.s3.presignedRedirect`), for the public endpoint.
    signer: Option<Arc<AmazonS3>>,
    presigned_ttl: Duration,
}

impl S3Objects {
    /// A client of the bucket; nothing is sent until the first request.
    pub(super) fn new(config: &S3Config) -> Result<Self, ConfigError> {
        // The HTTP client's TLS uses the process's crypto provider: ring (see Cargo.toml).
        // Installing it again, or after another part of the process did, changes nothing.
        // rustls marks ring's provider deprecated for lacking post-quantum key exchange;
        // aws-lc, which has it, is a C library that costs minutes on every clean build.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let secret = config.secret()?;
        let options = ClientOptions::new()
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_timeout(Duration::from_secs(config.request_timeout_secs))
            .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs));
        // A store that is down must fail an upload fast (a 503), not after minutes of
        // retries: a few quick ones ride out a node restart.
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(config.request_timeout_secs),
            ..RetryConfig::default()
        };
        let builder = |endpoint: &str| {
            let builder = AmazonS3Builder::new()
                .with_region(&config.region)
                .with_bucket_name(&config.bucket)
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(secret.expose_secret())
                .with_virtual_hosted_style_request(!config.path_style)
                .with_client_options(options.clone())
                .with_retry(retry.clone())
                // Every request body (each part of a multipart upload) carries its SHA-256,
                // which the store checks before it accepts the bytes.
                .with_checksum_algorithm(Checksum::SHA256);
            let builder = if endpoint.is_empty() { builder } else { builder.with_endpoint(endpoint) };
            builder.build().map_err(|error| ConfigError::BadValue { key: "storage.s3", reason: error.to_string() })
        };
        let store = builder(&config.endpoint)?;
        // Presigned URLs name the host clients reach, which may not be the one this process
        // sends its requests to; a second client signs them and sends nothing.
        let signer = match config.presigned_redirect {
            true if !config.public_endpoint.is_empty() => Some(Arc::new(builder(&config.public_endpoint)?)),
            true => Some(Arc::new(builder(&config.endpoint)?)),
            false => None,
        };
        let upload_buffer =
            Arc::new(Semaphore::new(usize::try_from(config.upload_buffer_bytes).expect("validated to fit in 32 bits")));
        let presigned_ttl = Duration::from_secs(config.presigned_ttl_secs);
        Ok(Self { store: Arc::new(store), prefix: config.prefix.clone(), upload_buffer, signer, presigned_ttl })
    }

    fn path(&self, relative: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }

    fn key_path(&self, key: &StorageKey) -> ObjectPath {
        self.path(&key.to_db_path())
    }

    /// Starts streaming an upload into a staged object, to be placed under its key once
    /// that is known ([`StagedObject::place`]).
    pub(super) fn stream(&self) -> S3StreamWriter {
        let staged = self.path(&format!("{STAGING_DIR}/{}.part", uuid::Uuid::new_v4()));
        S3StreamWriter::new(self.clone(), staged)
    }

    /// Copies a staged upload into place under `key`, inside the store.
    pub(super) async fn place(&self, staged: StagedObject, key: &StorageKey) -> io::Result<()> {
        staged.place(&self.key_path(key)).await
    }

    /// Writes, reads back and deletes a small object under `.health/`: what an upload and a
    /// serve need of the store, for the health check.
    pub(super) async fn probe(&self) -> io::Result<()> {
        let path = self.path(&format!(".health/{}", uuid::Uuid::new_v4()));
        let written = bytes::Bytes::from_static(b"stayler health probe");
        self.store.put(&path, written.clone().into()).await.map_err(to_io)?;
        let read = self.store.get(&path).await.map_err(to_io)?.bytes().await.map_err(to_io);
        let deleted = self.store.delete(&path).await.map_err(to_io);
        if read? != written {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the probe object read back differently"));
        }
        deleted
    }

    /// A presigned GET of `key`, living at most `ttl` (and `storage.s3.presignedTtlSecs`),
    /// whose answer carries `content_type` and, for a download, `disposition`; `None` unless
    /// `storage.s3.presignedRedirect` is on.
    pub(super) async fn presigned_get(
        &self,
        key: &StorageKey,
        ttl: Duration,
        content_type: &str,
        disposition: Option<&str>,
    ) -> Option<io::Result<String>> {
        let signer = self.signer.as_ref()?;
        let mut query = vec![("response-content-type", content_type.to_owned())];
        if let Some(disposition) = disposition {
            query.push(("response-content-disposition", disposition.to_owned()));
        }
        let options = SignedUrlOptions::default().with_query(query);
        let ttl = ttl.min(self.presigned_ttl).max(Duration::from_secs(1));
        let signed = signer.signed_url_opts(Method::GET, &self.key_path(key), ttl, &options).await;
        Some(signed.map(String::from).map_err(to_io))
    }

    /// Writes a small object (a thumbnail) in one request, from memory.
    pub(super) async fn put_bytes(&self, key: &StorageKey, bytes: &[u8]) -> io::Result<()> {
        let payload = object_store::PutPayload::from(bytes::Bytes::copy_from_slice(bytes));
        self.store.put(&self.key_path(key), payload).await.map_err(to_io)?;
        Ok(())
    }

    /// Uploads a staged file under `key` (see [`S3Objects::upload_file_as`]).
    pub(super) async fn put_file(&self, source: tokio::fs::File, key: &StorageKey) -> io::Result<()> {
        self.upload_file_as(source, &key.to_db_path()).await
    }

    pub(super) async fn open_read(&self, key: &StorageKey) -> io::Result<ObjectReader> {
        self.get(key, None).await
    }

    pub(super) async fn open_range(&self, key: &StorageKey, range: Range<u64>) -> io::Result<ObjectReader> {
        if range.is_empty() {
            return Ok(ObjectReader { inner: Box::pin(tokio::io::empty()), len: 0 });
        }
        self.get(key, Some(GetRange::Bounded(range))).await
    }

    async fn get(&self, key: &StorageKey, range: Option<GetRange>) -> io::Result<ObjectReader> {
        let options = GetOptions { range, ..GetOptions::default() };
        let result = self.store.get_opts(&self.key_path(key), options).await.map_err(to_io)?;
        let len = result.range.end - result.range.start;
        let stream = result.into_stream().map_err(to_io);
        Ok(ObjectReader { inner: Box::pin(StreamReader::new(stream)), len })
    }

    /// A blocking reader of an object, for a blocking thread (which keeps the runtime's
    /// context, so the request runs on the runtime and the bytes are handed over).
    pub(super) fn open_read_blocking(&self, key: &StorageKey) -> io::Result<impl io::Read + Send + use<>> {
        let handle = tokio::runtime::Handle::current();
        let reader = handle.block_on(self.open_read(key))?;
        Ok(tokio_util::io::SyncIoBridge::new_with_handle(reader, handle))
    }

    pub(super) async fn exists(&self, key: &StorageKey) -> io::Result<bool> {
        self.exists_at(self.key_path(key)).await
    }

    async fn exists_at(&self, path: ObjectPath) -> io::Result<bool> {
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(to_io(error)),
        }
    }

    pub(super) async fn missing(&self, stored_paths: Vec<String>) -> io::Result<Vec<String>> {
        let checks = futures::stream::iter(stored_paths)
            .map(|relative| async move {
                let exists = self.exists_at(self.path(&relative)).await?;
                io::Result::Ok((!exists).then_some(relative))
            })
            .buffered(CONCURRENT_LOOKUPS);
        Ok(checks.try_collect::<Vec<_>>().await?.into_iter().flatten().collect())
    }

    /// Deletes an object; false if it was already gone (S3 deletes answer the same either
    /// way, so a HEAD asks first).
    pub(super) async fn delete(&self, key: &StorageKey) -> io::Result<bool> {
        let path = self.key_path(key);
        if !self.exists_at(path.clone()).await? {
            return Ok(false);
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(error) => Err(to_io(error)),
        }
    }

    /// Objects under `images/`: what the deployment stores.
    pub(super) async fn count_objects(&self) -> io::Result<usize> {
        let prefix = self.path("images");
        self.store.list(Some(&prefix)).try_fold(0, |count, _| async move { Ok(count + 1) }).await.map_err(to_io)
    }

    /// Removes every object of this deployment's prefix (tests, which each own a prefix).
    pub(super) async fn remove_all(&self) -> io::Result<u64> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let locations = self.store.list(prefix.as_ref()).map_ok(|meta| meta.location).boxed();
        let deleted = self.store.delete_stream(locations).try_fold(0, |n, _| async move { Ok(n + 1) }).await;
        deleted.map_err(to_io)
    }
}

/// A missing object reads as `NotFound`, as a missing file does; refused credentials as
/// `PermissionDenied` (a configuration mistake); anything else as the store being
/// unavailable (unreachable, timing out, answering 5xx after the retries).
fn to_io(error: object_store::Error) -> io::Error {
    match error {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, error),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            io::Error::new(io::ErrorKind::PermissionDenied, error)
        }
        other => unavailable(other),
    }
}

/// An error of the buffered writer, which wraps the store's errors in `io::Error`: those
/// read as [`to_io`] reads them, the rest (reading the staged file) as they are.
fn from_writer(error: io::Error) -> io::Error {
    let kind = error.kind();
    match error.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
        Some(Ok(store)) => to_io(*store),
        Some(Err(other)) => io::Error::new(kind, other),
        None => io::Error::from(kind),
    }
}

/// The store did not do what was asked, through no fault of the request.
#[derive(Debug, thiserror::Error)]
#[error("the object store is unavailable: {0}")]
struct Unavailable(Box<dyn std::error::Error + Send + Sync>);

fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(Unavailable(cause.into()))
}

/// True when `error` is the object store being unavailable: the request may succeed once it
/// is back (an API answers 503, a worker retries the job).
pub fn is_unavailable(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<Unavailable>())
}
