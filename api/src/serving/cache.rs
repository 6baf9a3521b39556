//! What serving needs to know about an image, kept in memory so that serving needs no
//! database round trip, and small files' bytes, so that serving a thumbnail needs no disk
//! read either.
//!
//! Both caches are bounded. Image entries live `serving.cacheTtlSecs` at most, and are
//! dropped as soon as PostgreSQL announces a change of the image (see `invalidation`).
//! File bytes are keyed by their SHA-256, so they can never be stale: changed bytes are a
//! changed checksum, which is a changed image entry pointing to another key.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::sync::Cache;
use poem::http::HeaderValue;
use sha2::{Digest, Sha256};
use shared::config::ServingConfig;
use shared::db::storage_files::{self, StorageFile};
use shared::db::storage_thumbnails::{self, ThumbnailRecord};
use shared::model::ImageId;
use shared::sealing::{self, Sealer};
use shared::signing::Variant;
use shared::storage::{Storage, StorageKey};
use sqlx::PgPool;

use super::http;

/// One servable file: where it is and the headers that describe it, made once.
#[derive(Debug)]
pub struct ServedFile {
    pub key: StorageKey,
    /// In bytes, as recorded.
    pub size: u64,
    /// The recorded SHA-256, which is also the file-cache key.
    pub checksum: [u8; 32],
    pub content_type: HeaderValue,
    /// `"<sha256 hex>"`: a strong validator.
    pub etag: HeaderValue,
    /// `Content-Disposition` of a download.
    pub attachment: HeaderValue,
}

/// A live image as serving sees it.
#[derive(Debug)]
pub struct ServedImage {
    pub is_public: bool,
    /// Signed URLs of another generation are refused (revoked).
    pub url_generation: u32,
    pub original: ServedFile,
    /// Made thumbnails, by size name.
    pub thumbnails: Vec<(String, ServedFile)>,
}

impl ServedImage {
    pub fn file(&self, variant: Variant<'_>) -> Option<&ServedFile> {
        match variant {
            Variant::Original => Some(&self.original),
            Variant::Thumbnail(size) => self.thumbnails.iter().find(|(name, _)| name == size).map(|(_, file)| file),
        }
    }

    fn new(file: StorageFile, thumbnails: Vec<ThumbnailRecord>) -> Result<Self, sqlx::Error> {
        let original =
            served_file(file.key(), file.file_size, file.format.mime(), &file.checksum, &file.original_name)?;
        let thumbnails = thumbnails
            .into_iter()
            .map(|t| {
                let name = http::thumbnail_file_name(&file.original_name, &t.size_name, t.format.extension());
                let key = file.thumbnail_key(&t.size_name, t.format);
                Ok((t.size_name, served_file(key, t.file_size, t.format.mime(), &t.checksum, &name)?))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Self { is_public: file.is_public, url_generation: file.signing_generation(), original, thumbnails })
    }
}

fn served_file(key: StorageKey, size: i64, mime: &str, checksum: &str, name: &str) -> Result<ServedFile, sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("{what} of {} is not valid", key.to_db_path()).into());
    let mut digest = [0u8; 32];
    hex::decode_to_slice(checksum, &mut digest).map_err(|_| corrupt("the checksum"))?;
    Ok(ServedFile {
        size: u64::try_from(size).map_err(|_| corrupt("the size"))?,
        checksum: digest,
        content_type: HeaderValue::from_str(mime).map_err(|_| corrupt("the MIME type"))?,
        etag: HeaderValue::from_str(&format!("\"{checksum}\"")).map_err(|_| corrupt("the checksum"))?,
        attachment: http::attachment(name),
        key,
    })
}

/// The two caches, and a counter of invalidations that keeps a load racing with a change
/// from putting stale facts back.
pub struct ServingCache {
    /// `None` remembers that an image does not exist (or was deleted), so that requests
    /// for it do not reach the database either; inserts are announced like changes.
    images: Cache<ImageId, Option<Arc<ServedImage>>>,
    files: Option<Cache<[u8; 32], Bytes>>,
    small_file_max_bytes: u64,
    invalidations: AtomicU64,
    /// Opens sealed file names: downloads are named after the client's name, not its
    /// sealed text.
    sealer: Option<Arc<Sealer>>,
}

impl ServingCache {
    pub fn new(config: &ServingConfig, sealer: Option<Arc<Sealer>>) -> Self {
        let images = Cache::builder()
            .max_capacity(config.cache_entries)
            .time_to_live(Duration::from_secs(config.cache_ttl_secs))
            .build();
        let files = (config.small_file_max_bytes > 0 && config.small_file_cache_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(config.small_file_cache_bytes)
                .weigher(|_, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .build()
        });
        Self {
            images,
            files,
            small_file_max_bytes: config.small_file_max_bytes,
            invalidations: AtomicU64::new(0),
            sealer,
        }
    }

    /// The live image `id`, from memory or else from the database.
    pub async fn image(&self, db: &PgPool, id: ImageId) -> sqlx::Result<Option<Arc<ServedImage>>> {
        if let Some(known) = self.images.get(&id) {
            return Ok(known);
        }
        let before = self.invalidations.load(Ordering::SeqCst);
        let loaded = match storage_files::get(db, id).await? {
            Some(mut file) => {
                sealing::open_files(self.sealer.as_deref(), db, [&mut file]).await?;
                let thumbnails = storage_thumbnails::list(db, id).await?;
                Some(Arc::new(ServedImage::new(file, thumbnails)?))
            }
            None => None,
        };
        self.images.insert(id, loaded.clone());
        // An invalidation since the load began may concern what was just read: drop it
        // again. `invalidate` counts before it removes, so either this sees the count or
        // its removal comes after the insert.
        if self.invalidations.load(Ordering::SeqCst) != before {
            self.images.invalidate(&id);
        }
        Ok(loaded)
    }

    /// Forgets one image (it changed).
    pub fn invalidate(&self, id: ImageId) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.images.invalidate(&id);
    }

    /// Forgets every image (changes may have been missed).
    pub fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.images.invalidate_all();
    }

    /// The bytes of a small file from memory, reading and keeping them on a miss; `None`
    /// when the file is too large to keep (then it is streamed from disk).
    pub async fn small_file(&self, storage: &Storage, file: &ServedFile) -> io::Result<Option<Bytes>> {
        let Some(files) = &self.files else { return Ok(None) };
        if file.size > self.small_file_max_bytes {
            return Ok(None);
        }
        if let Some(bytes) = files.get(&file.checksum) {
            return Ok(Some(bytes));
        }
        let bytes = Bytes::from(storage.read(&file.key, self.small_file_max_bytes).await?);
        // Only bytes that match their checksum are kept (and so shared by every image with
        // the same content); others are served as read, like a streamed file would be.
        if bytes.len() as u64 == file.size && Sha256::digest(&bytes)[..] == file.checksum {
            files.insert(file.checksum, bytes.clone());
        } else {
            tracing::error!(path = %file.key.to_db_path(), "a stored file does not match its recorded checksum");
        }
        Ok(Some(bytes))
    }
}
