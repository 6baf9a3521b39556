//! The `storage:` section: where images and backups are kept, what an upload may be, the
//! thumbnail boxes, the retention and backup policies and the file-creation mask.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::s3::S3Section;
use super::{Config, ConfigError, S3Config, StorageBackend};
use crate::model::{ImageFormat, ImageType};

mod thumbnail_boxes;

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
    /// Thumbnail boxes by name; an image is fitted inside each, never upscaled. Written as
    /// a map (`small: {width: 150, height: 150}`) or, as the architecture document writes it,
    /// as a list of `{name, width, height}`.
    #[serde(deserialize_with = "thumbnail_boxes::named_boxes")]
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
    /// `true` (the default): no job ever deletes a live image. `false`: the scheduled
    /// cleanup deletes images older than `maxAge` days, or their type's `maxAgeByType`.
    pub keep_images_forever: bool,
    /// Age in days past which the cleanup deletes an image when `keepImagesForever` is
    /// `false`; 0 keeps images of every type without an entry in `maxAgeByType`.
    pub max_age: u32,
    /// Per image type, overrides `maxAge` (0 keeps that type forever).
    pub max_age_by_type: MaxAgeByType,
    /// The older name of `backupPolicy.retentionDays`, still read.
    #[serde(rename = "retentionDays")]
    pub older_backup_retention_days: Option<u32>,
    /// Cron expression (UTC) of the maintenance run; empty disables it.
    pub cleanup_schedule: String,
}

/// `retentionPolicy.maxAgeByType`: one optional age in days per image type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxAgeByType {
    pub user: Option<u32>,
    pub cloth: Option<u32>,
    pub result: Option<u32>,
}

impl RetentionPolicy {
    /// How many days images of `image_type` are kept; `None` keeps them forever.
    pub fn max_age_days(&self, image_type: ImageType) -> Option<u32> {
        if self.keep_images_forever {
            return None;
        }
        let by_type = &self.max_age_by_type;
        let days = match image_type {
            ImageType::User => by_type.user,
            ImageType::Cloth => by_type.cloth,
            ImageType::Result => by_type.result,
        };
        Some(days.unwrap_or(self.max_age)).filter(|days| *days > 0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackupPolicy {
    /// Off: the scheduler requests no backups.
    pub enabled: bool,
    /// `hourly`, `daily` or `weekly`: the schedule used when `schedule` is empty
    /// (`backupFrequency` in the architecture document).
    #[serde(alias = "backupFrequency")]
    pub frequency: String,
    /// Backups older than this many days are removed (never the last copy of a live image).
    /// Read from `retentionDays` here or, under its older name, in `retentionPolicy`.
    #[serde(skip)]
    pub retention_days: u32,
    /// `retentionDays` as written in this section; `retention_days` is what applies,
    /// settled when the configuration is loaded.
    #[serde(rename = "retentionDays")]
    pub written_retention_days: Option<u32>,
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
        let retention = &self.retention_policy;
        if !retention.keep_images_forever && ImageType::ALL.iter().all(|t| retention.max_age_days(*t).is_none()) {
            return bad(
                "storage.retentionPolicy.maxAge",
                "must be positive (here or in maxAgeByType) when keepImagesForever is false",
            );
        }
        if self.umask_bits().is_none() {
            return bad("storage.umask", "must be an octal mask such as 027");
        }
        Ok(())
    }
}

impl StorageConfig {
    /// Settles the keys that can be written in two places: the backup retention days.
    pub(super) fn resolve(&mut self) -> Result<(), ConfigError> {
        let written = self.backup_policy.written_retention_days.take();
        let older = self.retention_policy.older_backup_retention_days.take();
        self.backup_policy.retention_days = match (written, older) {
            (Some(days), Some(other)) if days != other => {
                return Err(ConfigError::BadValue {
                    key: "storage.backupPolicy.retentionDays",
                    reason: format!("is {days} but retentionPolicy.retentionDays (its older name) is {other}"),
                });
            }
            (Some(days), _) | (None, Some(days)) => days,
            (None, None) => DEFAULT_BACKUP_RETENTION_DAYS,
        };
        Ok(())
    }
}

/// How long backups are kept when no key says.
const DEFAULT_BACKUP_RETENTION_DAYS: u32 = 365;

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            keep_images_forever: true,
            max_age: 0,
            max_age_by_type: MaxAgeByType::default(),
            older_backup_retention_days: None,
            cleanup_schedule: "0 2 * * *".to_owned(),
        }
    }
}

impl Default for BackupPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: DEFAULT_BACKUP_RETENTION_DAYS,
            written_retention_days: None,
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
            assert_eq!(config.storage.backup_policy.retention_days, 365);
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
    fn images_expire_only_when_keep_forever_is_off_and_an_age_is_set() {
        let config = Config::from_yaml(VALID).unwrap();
        let policy = &config.storage.retention_policy;
        assert!(ImageType::ALL.iter().all(|t| policy.max_age_days(*t).is_none()), "forever by default");

        let with = |retention: &str| {
            Config::from_yaml(&VALID.replacen("storage:\n", &format!("storage:\n  retentionPolicy:\n{retention}"), 1))
        };
        let ignored = with("    keepImagesForever: true\n    maxAge: 30\n").unwrap();
        assert_eq!(
            ignored.storage.retention_policy.max_age_days(ImageType::User),
            None,
            "maxAge needs keep-forever off"
        );
        let err = with("    keepImagesForever: false\n").unwrap_err();
        assert!(err.to_string().contains("storage.retentionPolicy.maxAge"), "{err}");

        let per_type = with("    keepImagesForever: false\n    maxAge: 30\n    maxAgeByType: {result: 7, cloth: 0}\n")
            .unwrap()
            .storage
            .retention_policy;
        let ages = ImageType::ALL.map(|t| per_type.max_age_days(t));
        assert_eq!(ages, [Some(30), None, Some(7)], "user: maxAge, cloth: kept forever, result: its own");
        let only_results = with("    keepImagesForever: false\n    maxAgeByType: {result: 1}\n").unwrap();
        let ages = ImageType::ALL.map(|t| only_results.storage.retention_policy.max_age_days(t));
        assert_eq!(ages, [None, None, Some(1)]);
        let err = with("    keepImagesForever: false\n    maxAgeByType: {results: 1}\n").unwrap_err();
        assert!(err.to_string().contains("results"), "{err}");
    }

    #[test]
    fn thumbnail_sizes_are_a_map_or_a_list_of_named_boxes() {
        let with = |sizes: &str| Config::from_yaml(&VALID.replacen("storage:\n", &format!("storage:\n{sizes}"), 1));
        let list = "  thumbnailSizes:\n    - {name: tiny, width: 64, height: 48}\n    - {name: wide, width: 800, height: 200}\n";
        let expected = BTreeMap::from([
            ("tiny".to_owned(), ThumbnailSize { width: 64, height: 48 }),
            ("wide".to_owned(), ThumbnailSize { width: 800, height: 200 }),
        ]);
        assert_eq!(with(list).unwrap().storage.thumbnail_sizes, expected);
        let map = "  thumbnailSizes:\n    tiny: {width: 64, height: 48}\n    wide: {width: 800, height: 200}\n";
        assert_eq!(with(map).unwrap().storage.thumbnail_sizes, expected);

        let twice =
            "  thumbnailSizes:\n    - {name: tiny, width: 64, height: 48}\n    - {name: tiny, width: 9, height: 9}\n";
        let err = with(twice).unwrap_err();
        assert!(err.to_string().contains("`tiny` is written twice"), "{err}");
        let err = with("  thumbnailSizes:\n    - {name: tiny, width: 64, height: 48, fit: cover}\n").unwrap_err();
        assert!(err.to_string().contains("fit"), "{err}");
        let err = with("  thumbnailSizes:\n    - {name: \"../x\", width: 64, height: 48}\n").unwrap_err();
        assert!(err.to_string().contains("storage.thumbnailSizes"), "{err}");
    }

    #[test]
    fn backup_retention_days_are_read_under_either_name_but_not_two_different_values() {
        let with = |keys: &str| Config::from_yaml(&VALID.replacen("storage:\n", &format!("storage:\n{keys}"), 1));
        let days = |config: Config| config.storage.backup_policy.retention_days;
        assert_eq!(days(with("  backupPolicy: {retentionDays: 30}\n").unwrap()), 30);
        assert_eq!(days(with("  retentionPolicy: {retentionDays: 40}\n").unwrap()), 40);
        let both = "  backupPolicy: {retentionDays: 30}\n  retentionPolicy: {retentionDays: 30}\n";
        assert_eq!(days(with(both).unwrap()), 30);
        let err = with("  backupPolicy: {retentionDays: 30}\n  retentionPolicy: {retentionDays: 40}\n").unwrap_err();
        assert!(err.to_string().contains("storage.backupPolicy.retentionDays"), "{err}");
        let frequency = with("  backupPolicy: {backupFrequency: weekly}\n").unwrap();
        assert_eq!(frequency.storage.backup_policy.frequency, "weekly");
    }

    /// The architecture document's block, exactly as committed in `config/seed.yaml`, starts
    /// the service with the database, broker and token secret from the environment.
    #[test]
    fn the_architecture_documents_block_loads_as_written() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("seed.yaml", SEED_BLOCK)?;
            jail.set_env("STAYLER_DATABASE__URL", "postgres://db/stayler");
            jail.set_env("STAYLER_RABBITMQ__URL", "amqp://broker");
            jail.set_env("STAYLER_AUTH__JWT_SECRET", "dev-jwt");
            let config = Config::load_from(Some(Path::new("seed.yaml"))).unwrap();
            let storage = &config.storage;
            assert_eq!(storage.base_path, Path::new("/var/lib/stayler/storage"));
            assert_eq!(storage.max_file_size, 52_428_800);
            assert_eq!(storage.allowed_types.len(), 4);
            let boxes: Vec<(&str, u32, u32)> =
                storage.thumbnail_sizes.iter().map(|(name, b)| (name.as_str(), b.width, b.height)).collect();
            assert_eq!(boxes, [("large", 600, 600), ("medium", 300, 300), ("small", 150, 150)]);
            assert!(storage.retention_policy.keep_images_forever);
            assert_eq!(storage.retention_policy.max_age, 0);
            assert_eq!(storage.backup_policy.frequency, "daily");
            assert_eq!(storage.backup_policy.retention_days, 30);
            assert!(storage.backup_policy.enabled);
            assert_eq!(config.server.public_path, "/api/storage/public");
            assert_eq!(config.server.static_path.as_deref(), Some("/api/storage/static"));
            assert_eq!((config.server.host.as_str(), config.server.port), ("0.0.0.0", 8080));

            // Its signing key is a placeholder: production wants a real one.
            jail.set_env("STAYLER_MODE", "production");
            jail.set_env("STAYLER_AUTH__JWT_SECRET", "j".repeat(40));
            let err = Config::load_from(Some(Path::new("seed.yaml"))).unwrap_err();
            assert!(err.to_string().contains("storage.signedURLKey"), "{err}");
            Ok(())
        });
    }

    const SEED_BLOCK: &str = include_str!("../../../config/seed.yaml");
}
