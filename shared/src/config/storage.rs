//! The `storage:` section: where images and backups are kept, what an upload may be, the
//! thumbnail boxes, the retention and backup policies and the file-creation mask.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::s3::S3Section;
use super::{Config, ConfigError, S3Config, StorageBackend};
use crate::model::ImageFormat;

/// The `storage:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where objects live: `local` (the tree under `basePath`) or `s3` (`storage.s3`).
    pub backend: StorageBackend,
    /// The bucket of the `s3` backend.
    pub s3: S3Config,
    /// Root of the image tree (`images/{type}/{owner}/…`) on the local backend; on the s3
    /// backend, only where each process stages its writes.
    pub base_path: PathBuf,
    /// Root of the backup tree (`{YYYY-MM-DD}/…`) with `backupBackend: local`; with `s3`,
    /// only where a worker stages archives and manifests before it uploads them.
    pub backup_path: PathBuf,
    /// Where backups live: `local` (the tree under `backupPath`) or `s3` (`backupS3`),
    /// whatever `backend` is.
    pub backup_backend: StorageBackend,
    /// The bucket of backups with `backupBackend: s3`: another bucket of the images' store,
    /// or another store altogether.
    #[serde(rename = "backupS3")]
    pub backup_s3: S3Config,
    /// HMAC-SHA256 key for signed URLs.
    #[serde(rename = "signedURLKey", alias = "signedUrlKey")]
    pub signed_url_key: SecretString,
    /// Largest accepted upload, in bytes.
    pub max_file_size: u64,
    /// MIME types accepted at upload, checked against the format sniffed from the bytes.
    pub allowed_types: Vec<String>,
    /// Thumbnail boxes by name; an image is fitted inside each, never upscaled.
    pub thumbnail_sizes: BTreeMap<String, ThumbnailSize>,
    /// Largest accepted image, in pixels (width × height); refuses decompression bombs.
    pub max_pixels: u64,
    pub retention_policy: RetentionPolicy,
    pub backup_policy: BackupPolicy,
    /// File-creation mask of the API and worker processes, in octal: what the service
    /// writes (originals, thumbnails, backups) is readable by its user and group only. With
    /// `027`, files are 0640 and folders 0750. Written as text or as digits (YAML and the
    /// environment may read `027` as a number); the digits are octal either way.
    #[serde(deserialize_with = "octal_digits")]
    pub umask: String,
}

/// The digits of an octal setting, given as text or as a number.
fn octal_digits<'de, D: serde::Deserializer<'de>>(input: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(u64),
    }
    Ok(match Written::deserialize(input)? {
        Written::Text(text) => text,
        Written::Number(number) => number.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Images are never deleted by a job while they are live. Only `true` is accepted: no
    /// job deletes images, so `false` would promise an expiry that never happens.
    pub keep_images_forever: bool,
    /// Backups older than this many days are removed (never the last copy of a live image).
    pub retention_days: u32,
    /// Cron expression (UTC) of the maintenance run; empty disables it.
    pub cleanup_schedule: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackupPolicy {
    /// Off: the scheduler requests no backups.
    pub enabled: bool,
    /// `hourly`, `daily` or `weekly`: the schedule used when `schedule` is empty.
    pub frequency: String,
    /// Cron expression (UTC) of scheduled backups; empty: the one `frequency` names.
    pub schedule: String,
    /// zstd level used for backup archives whose bytes compress (see docs/benchmarks.md on
    /// what compression buys on photos).
    pub compression_level: i32,
    /// Images per batch job: a large backup is shared by the workers in batches this big.
    pub batch_size: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let size = |width, height| ThumbnailSize { width, height };
        Self {
            backend: StorageBackend::Local,
            s3: S3Config::default(),
            base_path: PathBuf::from("./data/storage"),
            backup_path: PathBuf::from("./data/backups"),
            backup_backend: StorageBackend::Local,
            backup_s3: S3Config::default(),
            signed_url_key: SecretString::from(""),
            max_file_size: 52_428_800,
            allowed_types: ImageFormat::ALL.iter().map(|f| f.mime().to_owned()).collect(),
            thumbnail_sizes: BTreeMap::from([
                ("small".to_owned(), size(150, 150)),
                ("medium".to_owned(), size(300, 300)),
                ("large".to_owned(), size(600, 600)),
            ]),
            max_pixels: 50_000_000,
            retention_policy: RetentionPolicy::default(),
            backup_policy: BackupPolicy::default(),
            umask: "027".to_owned(),
        }
    }
}

impl StorageConfig {
    /// The secret of `backupS3`, read from its file when one is named (an unreadable file is
    /// named as `storage.backupS3.secretAccessKeyFile`).
    pub fn backup_s3_secret(&self) -> Result<SecretString, ConfigError> {
        self.backup_s3.secret_in(S3Section::Backups)
    }

    /// `umask` as mode bits; validated at start-up.
    pub fn umask_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.umask, 8).ok().filter(|bits| *bits <= 0o777 && !self.umask.is_empty())
    }

    /// Checks sizes, types, thumbnail names, the backup and retention policies and the
    /// umask, naming the key at fault. The signing key is checked with the other secrets.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| Err(ConfigError::BadValue { key, reason: reason.to_owned() });
        if self.backend == StorageBackend::S3 {
            self.s3.validate()?;
        }
        if self.backup_backend == StorageBackend::S3 {
            self.backup_s3.validate_in(S3Section::Backups)?;
        }
        if self.max_file_size == 0 {
            return bad("storage.maxFileSize", "must be positive");
        }
        if self.max_pixels == 0 {
            return bad("storage.maxPixels", "must be positive");
        }
        for mime in &self.allowed_types {
            if ImageFormat::from_mime(mime).is_none() {
                return bad("storage.allowedTypes", &format!("{mime} is not a supported image type"));
            }
        }
        for (name, size) in &self.thumbnail_sizes {
            if !crate::model::is_safe_segment(name) {
                return bad("storage.thumbnailSizes", &format!("`{name}` is not a plain name"));
            }
            if size.width == 0 || size.height == 0 {
                return bad("storage.thumbnailSizes", &format!("`{name}` has a zero side"));
            }
        }
        let level = self.backup_policy.compression_level;
        if !zstd::compression_level_range().contains(&level) {
            return bad("storage.backupPolicy.compressionLevel", &format!("{level} is not a zstd level"));
        }
        if self.backup_policy.batch_size == 0 {
            return bad("storage.backupPolicy.batchSize", "must be at least 1");
        }
        if !self.retention_policy.keep_images_forever {
            return bad(
                "storage.retentionPolicy.keepImagesForever",
                "must be true: images are kept until their owner deletes them, and no job expires them",
            );
        }
        if self.umask_bits().is_none() {
            return bad("storage.umask", "must be an octal mask such as 027");
        }
        Ok(())
    }
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { keep_images_forever: true, retention_days: 365, cleanup_schedule: "0 2 * * *".to_owned() }
    }
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            frequency: "daily".to_owned(),
            schedule: String::new(),
            compression_level: 6,
            batch_size: 500,
        }
    }
}

impl Config {
    /// Accepted formats, in the order of `storage.allowedTypes`.
    pub fn allowed_formats(&self) -> Vec<ImageFormat> {
        self.storage.allowed_types.iter().filter_map(|m| ImageFormat::from_mime(m)).collect()
    }
}

// `figment::Jail` closures must return figment's own (large) error type.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use secrecy::ExposeSecret;

    use super::*;

    const VALID: &str = "storage:\n  signedURLKey: dev-key\ndatabase:\n  url: postgres://x\nrabbitmq:\n  url: amqp://x\nauth:\n  jwtSecret: dev-secret\n";

    #[test]
    fn seed_defaults_apply_when_keys_are_absent() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", VALID)?;
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.storage.max_file_size, 52_428_800);
            assert_eq!(config.storage.thumbnail_sizes["medium"], ThumbnailSize { width: 300, height: 300 });
            assert_eq!(config.storage.retention_policy.retention_days, 365);
            assert_eq!(config.storage.allowed_types.len(), 4);
            Ok(())
        });
    }

    #[test]
    fn the_umask_is_octal_however_it_is_written() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", &VALID.replacen("storage:\n", "storage:\n  umask: 007\n", 1))?;
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o7));
            jail.set_env("STAYLER_STORAGE__UMASK", "027");
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o27));
            jail.set_env("STAYLER_STORAGE__UMASK", "\"0077\"");
            assert_eq!(Config::load_from(Some(Path::new("c.yaml"))).unwrap().storage.umask_bits(), Some(0o77));
            jail.set_env("STAYLER_STORAGE__UMASK", "089");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.umask"), "{err}");
            Ok(())
        });
        assert_eq!(StorageConfig::default().umask_bits(), Some(0o27), "files 0640, folders 0750");
    }

    #[test]
    fn backups_go_to_the_local_tree_unless_a_bucket_is_configured_and_checked_by_its_own_keys() {
        let config = Config::from_yaml(VALID).unwrap();
        assert_eq!(config.storage.backup_backend, StorageBackend::Local);
        let with_bucket = |backup_s3: &str| {
            let storage = format!("storage:\n  backupBackend: s3\n  backupS3:\n{backup_s3}");
            Config::from_yaml(&VALID.replacen("storage:\n", &storage, 1))
        };
        let err = with_bucket("    bucket: backups\n").unwrap_err();
        assert!(err.to_string().contains("storage.backupS3.accessKeyId"), "{err}");
        let complete = "    bucket: backups\n    accessKeyId: GK1\n    secretAccessKey: s3cr3t\n    prefix: prod\n";
        let config = with_bucket(complete).unwrap();
        assert_eq!(config.storage.backup_backend, StorageBackend::S3);
        assert_eq!(
            (config.storage.backup_s3.bucket.as_str(), config.storage.backup_s3.prefix.as_str()),
            ("backups", "prod")
        );
        assert_eq!(config.storage.backend, StorageBackend::Local, "images stay where they are");
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", VALID)?;
            jail.set_env("STAYLER_STORAGE__BACKUP_BACKEND", "s3");
            jail.set_env("STAYLER_STORAGE__BACKUP_S3__BUCKET", "backups");
            let err = Config::load_from(Some(Path::new("c.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.backupS3.accessKeyId"), "{err}");
            jail.set_env("STAYLER_STORAGE__BACKUP_S3__ACCESS_KEY_ID", "GK1");
            jail.set_env("STAYLER_STORAGE__BACKUP_S3__SECRET_ACCESS_KEY", "from-env");
            let config = Config::load_from(Some(Path::new("c.yaml"))).unwrap();
            assert_eq!(config.storage.backup_s3_secret().unwrap().expose_secret(), "from-env");
            Ok(())
        });
    }

    #[test]
    fn images_cannot_be_given_an_expiry_no_job_would_carry_out() {
        let mut config = Config::from_yaml(VALID).unwrap();
        assert!(config.storage.retention_policy.keep_images_forever);
        config.storage.retention_policy.keep_images_forever = false;
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("storage.retentionPolicy.keepImagesForever"), "{err}");
    }
}
