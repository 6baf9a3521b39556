//! `storage.backend` and `storage.s3`: whether objects live in the local folder tree
//! (`storage.basePath`, the default) or in a bucket of an S3-compatible object store
//! (Garage, MinIO, Ceph RGW, AWS S3), shared by API and worker machines that share no disk.
//! The same bucket settings describe `storage.backupS3`, where backups go with
//! `storage.backupBackend: s3`; [`S3Section`] names the keys of either in errors.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;

/// Where stored objects live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The folder tree under `storage.basePath`.
    #[default]
    Local,
    /// A bucket of an S3-compatible store (`storage.s3`); `storage.basePath` then holds only
    /// each process's own staged writes.
    S3,
}

/// Which key of `storage:` an [`S3Config`] is, to name its keys in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum S3Section {
    /// `storage.s3`, the images' bucket (`storage.backend: s3`).
    Images,
    /// `storage.backupS3`, the backups' bucket (`storage.backupBackend: s3`).
    Backups,
}

/// The key `$field` of `$section` (`storage.s3.bucket`, `storage.backupS3.bucket`), as the
/// `&'static str` a [`ConfigError::BadValue`] holds.
macro_rules! key {
    ($section:expr, $field:literal) => {
        match $section {
            S3Section::Images => concat!("storage.s3.", $field),
            S3Section::Backups => concat!("storage.backupS3.", $field),
        }
    };
}

impl S3Section {
    /// The setting that makes the section required, for error messages.
    fn required_by(self) -> &'static str {
        match self {
            Self::Images => "storage.backend: s3",
            Self::Backups => "storage.backupBackend: s3",
        }
    }
}

/// The bucket of the `s3` backend and how to reach it.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct S3Config {
    /// Base URL of the S3 API (`http://garage.internal:3900`); empty for AWS itself, whose
    /// endpoint follows from the region.
    pub endpoint: String,
    /// Region the requests are signed for (Garage: its `s3_region`).
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    /// Secret of the access key; better given through the environment
    /// (`STAYLER_STORAGE__S3__SECRET_ACCESS_KEY`) or [`Self::secret_access_key_file`].
    pub secret_access_key: SecretString,
    /// A file holding the secret (a mounted secret), read at start-up; wins over
    /// `secretAccessKey`.
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style requests (`{endpoint}/{bucket}/{key}`), which Garage and MinIO expect;
    /// `false` for virtual-hosted style (`{bucket}.{endpoint}/{key}`).
    pub path_style: bool,
    /// Prepended to every object name (`{prefix}/images/user/…`), to share a bucket.
    pub prefix: String,
    /// Seconds one request may take before it fails (and a dependent upload answers 503).
    pub request_timeout_secs: u64,
    /// Seconds to wait for a connection to the store.
    pub connect_timeout_secs: u64,
    /// Bytes of upload parts one process holds in memory at once, across all uploads
    /// streaming into the store; an upload that finds it spent waits for parts to be sent,
    /// and answers 503 after 10 seconds.
    pub upload_buffer_bytes: u64,
    /// Answer a valid signed URL (a GET) with a redirect to a presigned URL of the store,
    /// so the bytes go from the store to the client without passing through the API.
    pub presigned_redirect: bool,
    /// The store's base URL as clients reach it, for presigned URLs (the signature covers
    /// the host); empty for [`Self::endpoint`].
    pub public_endpoint: String,
    /// Lifetime of a presigned URL, in seconds (never longer than the signed URL's own):
    /// short, since revoking the signed URL cannot recall it.
    pub presigned_ttl_secs: u64,
}

/// The smallest `storage.s3.uploadBufferBytes`: one upload's part being filled and the one
/// being sent, of 5 MiB each (the storage module's part size; a test there keeps the two
/// in step).
pub const MIN_UPLOAD_BUFFER_BYTES: u64 = 10 * 1024 * 1024;

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            bucket: String::new(),
            access_key_id: String::new(),
            secret_access_key: SecretString::from(""),
            secret_access_key_file: None,
            path_style: true,
            prefix: String::new(),
            request_timeout_secs: 30,
            connect_timeout_secs: 5,
            upload_buffer_bytes: 256 * 1024 * 1024,
            presigned_redirect: false,
            public_endpoint: String::new(),
            presigned_ttl_secs: 60,
        }
    }
}

/// Never prints the secret.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("upload_buffer_bytes", &self.upload_buffer_bytes)
            .field("presigned_redirect", &self.presigned_redirect)
            .field("public_endpoint", &self.public_endpoint)
            .field("presigned_ttl_secs", &self.presigned_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// The secret: from its file when one is named, else as configured.
    pub fn secret(&self) -> Result<SecretString, ConfigError> {
        self.secret_in(S3Section::Images)
    }

    /// [`Self::secret`], an unreadable file named as a key of `section`.
    pub(super) fn secret_in(&self, section: S3Section) -> Result<SecretString, ConfigError> {
        let Some(path) = &self.secret_access_key_file else { return Ok(self.secret_access_key.clone()) };
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::BadValue {
            key: key!(section, "secretAccessKeyFile"),
            reason: format!("cannot read {}: {error}", path.display()),
        })?;
        Ok(SecretString::from(text.trim().to_owned()))
    }

    /// Checked only when the backend is `s3`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(S3Section::Images)
    }

    /// Checked only when `section` is in use (its backend is `s3`); errors name its keys.
    pub(super) fn validate_in(&self, section: S3Section) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        let required = section.required_by();
        if self.bucket.trim().is_empty() {
            return bad(key!(section, "bucket"), &format!("is required with {required}"));
        }
        if self.access_key_id.trim().is_empty() {
            return bad(key!(section, "accessKeyId"), &format!("is required with {required}"));
        }
        if self.secret_access_key_file.is_none() && self.secret_access_key.expose_secret().is_empty() {
            let reason = format!("is required (or secretAccessKeyFile) with {required}");
            return bad(key!(section, "secretAccessKey"), &reason);
        }
        let web_or_empty = |url: &str| url.is_empty() || url.starts_with("http://") || url.starts_with("https://");
        if !web_or_empty(&self.endpoint) {
            return bad(key!(section, "endpoint"), "must be an http:// or https:// URL");
        }
        if !web_or_empty(&self.public_endpoint) {
            return bad(key!(section, "publicEndpoint"), "must be an http:// or https:// URL");
        }
        if !(1..=3600).contains(&self.presigned_ttl_secs) {
            return bad(key!(section, "presignedTtlSecs"), "must be between 1 and 3600");
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.contains("//") {
            return bad(key!(section, "prefix"), "must not start or end with `/` nor hold an empty segment");
        }
        if self.request_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            return bad(key!(section, "requestTimeoutSecs"), "timeouts must be at least 1 second");
        }
        if !(MIN_UPLOAD_BUFFER_BYTES..=u64::from(u32::MAX)).contains(&self.upload_buffer_bytes) {
            let reason = format!("must be between {MIN_UPLOAD_BUFFER_BYTES} (two upload parts) and 4 GiB");
            return bad(key!(section, "uploadBufferBytes"), &reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> S3Config {
        S3Config {
            endpoint: "http://127.0.0.1:3900".to_owned(),
            bucket: "images".to_owned(),
            access_key_id: "GK1".to_owned(),
            secret_access_key: SecretString::from("s3cr3t"),
            ..S3Config::default()
        }
    }

    #[test]
    fn an_s3_backend_needs_a_bucket_and_credentials() {
        assert!(valid().validate().is_ok());
        let missing = |config: S3Config, key: &str| {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        };
        missing(S3Config { bucket: String::new(), ..valid() }, "storage.s3.bucket");
        missing(S3Config { access_key_id: " ".to_owned(), ..valid() }, "storage.s3.accessKeyId");
        missing(S3Config { secret_access_key: SecretString::from(""), ..valid() }, "storage.s3.secretAccessKey");
        missing(S3Config { endpoint: "garage:3900".to_owned(), ..valid() }, "storage.s3.endpoint");
        missing(S3Config { prefix: "/a".to_owned(), ..valid() }, "storage.s3.prefix");
        missing(S3Config { public_endpoint: "cdn.example".to_owned(), ..valid() }, "publicEndpoint");
        missing(S3Config { presigned_ttl_secs: 0, ..valid() }, "presignedTtlSecs");
        missing(S3Config { upload_buffer_bytes: MIN_UPLOAD_BUFFER_BYTES - 1, ..valid() }, "uploadBufferBytes");
        assert!(S3Config { upload_buffer_bytes: MIN_UPLOAD_BUFFER_BYTES, ..valid() }.validate().is_ok());
    }

    #[test]
    fn the_secret_comes_from_its_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        let config = S3Config { secret_access_key_file: Some(file), ..valid() };
        assert_eq!(config.secret().unwrap().expose_secret(), "from-file");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let gone = S3Config { secret_access_key_file: Some(dir.path().join("none")), ..valid() };
        assert!(gone.secret().unwrap_err().to_string().contains("secretAccessKeyFile"));
    }

    #[test]
    fn errors_name_the_section_the_bucket_is_configured_in() {
        let error = S3Config { bucket: String::new(), ..valid() }.validate_in(S3Section::Backups).unwrap_err();
        assert!(error.to_string().contains("`storage.backupS3.bucket`"), "{error}");
        assert!(error.to_string().contains("storage.backupBackend: s3"), "{error}");
        let error = S3Config { prefix: "a/".to_owned(), ..valid() }.validate_in(S3Section::Backups).unwrap_err();
        assert!(error.to_string().contains("`storage.backupS3.prefix`"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let gone = S3Config { secret_access_key_file: Some(dir.path().join("none")), ..valid() };
        let error = gone.secret_in(S3Section::Backups).unwrap_err();
        assert!(error.to_string().contains("`storage.backupS3.secretAccessKeyFile`"), "{error}");
    }
}
