//! Moving a deployment from the local tree to the object store: copies every live original
//! and every thumbnail from `storage.basePath` into the bucket of `storage.s3`, each one
//! checked against the SHA-256 its row records before it is named in the bucket, so a
//! damaged or missing local file is reported and never copied. An object already in the
//! bucket is skipped: objects become visible there only once complete, so a run after an
//! interruption copies only what is left, and a second run after the service took new
//! uploads copies only those.

use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use shared::config::{Config, StorageBackend};
use shared::db::storage_migration::{self, OriginalRow, ThumbnailRow};
use shared::model::{ImageFormat, ImageId, Owner};
use shared::storage::{Storage, StorageKey, UPLOAD_PART_BYTES};
use sqlx::PgPool;
use tokio_util::io::ReaderStream;

/// Rows read per query.
const PAGE_ROWS: i64 = 500;
/// Objects copied at once, at most: each holds up to two upload parts of the process's
/// `storage.s3.uploadBufferBytes`, so fewer when that is small.
const MAX_AT_ONCE: u64 = 8;
/// Bytes read from a local file per chunk.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Problems the report lists by name; the others are only counted.
pub const LISTED_PROBLEMS: usize = 10;

/// How far a migration is: objects and their recorded bytes, done and in all. The totals
/// are counted at the start; uploads made meanwhile are copied too and push `done` past
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub objects_done: u64,
    pub objects_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Objects copied into the bucket, and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Objects the bucket held already (an earlier run), not read again.
    pub already_there: u64,
    /// Rows whose local file is missing.
    pub missing: u64,
    /// Local files whose SHA-256 differs from the recorded one (damaged): not copied.
    pub mismatched: u64,
    /// Objects that could not be read or stored (the store refused or was unreachable).
    pub failed: u64,
    /// The first [`LISTED_PROBLEMS`] problems, in the order they were found.
    pub problems: Vec<Problem>,
    pub elapsed: Duration,
}

impl MigrationReport {
    /// True when every object is in the bucket: nothing missing, damaged or failed.
    pub fn is_complete(&self) -> bool {
        self.missing + self.mismatched + self.failed == 0
    }

    /// Objects not in the bucket after this run.
    pub fn not_copied(&self) -> u64 {
        self.missing + self.mismatched + self.failed
    }

    fn record(&mut self, object: &Object, outcome: Outcome) {
        let (kind, reason) = match outcome {
            Outcome::Copied { bytes } => {
                self.copied += 1;
                self.copied_bytes += bytes;
                return;
            }
            Outcome::AlreadyThere => {
                self.already_there += 1;
                return;
            }
            Outcome::Missing => {
                self.missing += 1;
                (ProblemKind::Missing, "no local file".to_owned())
            }
            Outcome::Mismatched { actual } => {
                self.mismatched += 1;
                (ProblemKind::ChecksumMismatch, format!("SHA-256 {actual}, recorded {}", object.checksum))
            }
            Outcome::Failed(reason) => {
                self.failed += 1;
                (ProblemKind::Failed, reason)
            }
        };
        let path = object.key.to_db_path();
        tracing::warn!(image.id = %object.image_id, object.path = %path, problem = %kind, reason = %reason, "not copied: {path}");
        if self.problems.len() < LISTED_PROBLEMS {
            self.problems.push(Problem { kind, image_id: object.image_id, path, reason });
        }
    }
}

/// One object left out of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The image the object belongs to (an original or one of its thumbnails).
    pub image_id: ImageId,
    /// Relative to `storage.basePath`, as in the bucket under `storage.s3.prefix`.
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    Missing,
    ChecksumMismatch,
    Failed,
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing",
            Self::ChecksumMismatch => "checksum mismatch",
            Self::Failed => "failed",
        })
    }
}

/// Copies every live original and every thumbnail of the local tree (`storage.basePath`)
/// into the bucket of `storage.s3`, whatever `storage.backend` says, calling `on_progress`
/// after each object. Fails before copying anything when `storage.s3` is incomplete or the
/// bucket refuses a test write, and midway only when the database fails; what each object
/// came to is in the report.
pub async fn migrate_to_s3(config: &Config, mut on_progress: impl FnMut(&Progress)) -> anyhow::Result<MigrationReport> {
    let started = Instant::now();
    // The same checks as start-up on the s3 backend, naming the key at fault.
    let mut on_s3 = config.clone();
    on_s3.storage.backend = StorageBackend::S3;
    on_s3.validate().context("storage.s3 must be configured (bucket and credentials) to migrate to it")?;
    let s3 = &config.storage.s3;
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL (database.url)")?;
    let source = Storage::open(&config.storage.base_path).await.context("opening storage.basePath")?;
    // Streamed objects go straight to the bucket: the staging folder stays unused.
    let target = Storage::open_s3(&config.storage.base_path, s3).await.context("opening the bucket of storage.s3")?;
    target.probe().await.with_context(|| format!("writing a test object to bucket {} (storage.s3)", s3.bucket))?;

    let (objects_total, bytes_total) =
        storage_migration::totals(&db).await.context("counting the objects to migrate")?;
    let mut progress = Progress { objects_total, bytes_total, ..Progress::default() };
    on_progress(&progress);
    tracing::info!(
        migration.objects = objects_total,
        migration.size_bytes = bytes_total,
        s3.bucket = %s3.bucket,
        s3.prefix = %s3.prefix,
        "copying {objects_total} objects to the object store"
    );

    let at_once = (s3.upload_buffer_bytes / (2 * UPLOAD_PART_BYTES as u64)).clamp(1, MAX_AT_ONCE);
    let copies = originals(&db)
        .chain(thumbnails(&db))
        .map(|object| {
            let (source, target) = (&source, &target);
            async move {
                let object = object?;
                let outcome = copy(source, target, &object).await;
                Ok::<_, sqlx::Error>((object, outcome))
            }
        })
        .buffer_unordered(at_once as usize);
    let mut copies = pin!(copies);
    let mut report = MigrationReport::default();
    while let Some(done) = copies.next().await {
        let (object, outcome) = done.context("reading the rows to migrate")?;
        progress.objects_done += 1;
        progress.bytes_done += object.size_bytes;
        report.record(&object, outcome);
        on_progress(&progress);
    }
    report.elapsed = started.elapsed();
    db.close().await;
    tracing::info!(
        migration.copied = report.copied,
        migration.copied_bytes = report.copied_bytes,
        migration.already_there = report.already_there,
        migration.missing = report.missing,
        migration.mismatched = report.mismatched,
        migration.failed = report.failed,
        migration.elapsed_ms = report.elapsed.as_millis() as u64,
        "storage migration to s3 done: {} copied, {} already there, {} not copied",
        report.copied,
        report.already_there,
        report.not_copied()
    );
    Ok(report)
}

/// One object to copy: where it lives and what its row records of it.
#[derive(Debug)]
struct Object {
    image_id: ImageId,
    key: StorageKey,
    /// Lower-case hex SHA-256.
    checksum: String,
    size_bytes: u64,
}

/// What became of one object.
#[derive(Debug)]
enum Outcome {
    Copied { bytes: u64 },
    AlreadyThere,
    Missing,
    Mismatched { actual: String },
    Failed(String),
}

/// Streams one object from the local tree into the bucket, naming it there only if its
/// bytes hash to the recorded SHA-256.
async fn copy(source: &Storage, target: &Storage, object: &Object) -> Outcome {
    match target.exists(&object.key).await {
        Ok(true) => return Outcome::AlreadyThere,
        Ok(false) => {}
        Err(error) => return Outcome::Failed(format!("asking the bucket: {error}")),
    }
    let reader = match source.open_read(&object.key).await {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Outcome::Missing,
        Err(error) => return Outcome::Failed(format!("reading the local file: {error}")),
    };
    let mut writer = match target.stream(Sha256::new()).await {
        Ok(writer) => writer,
        Err(error) => return Outcome::Failed(format!("starting the upload: {error}")),
    };
    let mut chunks = ReaderStream::with_capacity(reader, READ_CHUNK_BYTES);
    while let Some(chunk) = chunks.next().await {
        let written = match chunk {
            Ok(chunk) => writer.write(chunk).await.map_err(|error| format!("uploading: {error}")),
            Err(error) => Err(format!("reading the local file: {error}")),
        };
        if let Err(reason) = written {
            writer.discard().await;
            return Outcome::Failed(reason);
        }
    }
    let (streamed, hasher) = match writer.finish().await {
        Ok(finished) => finished,
        Err(error) => return Outcome::Failed(format!("uploading: {error}")),
    };
    let actual = hex::encode(hasher.finalize());
    if actual != object.checksum {
        streamed.discard().await;
        return Outcome::Mismatched { actual };
    }
    let bytes = streamed.len();
    match target.commit_streamed(streamed, &object.key).await {
        Ok(()) => Outcome::Copied { bytes },
        Err(error) => Outcome::Failed(format!("naming the object in the bucket: {error}")),
    }
}

/// The object of a row, and what verifies it.
trait IntoObject {
    fn into_object(self) -> Object;
}

impl IntoObject for OriginalRow {
    fn into_object(self) -> Object {
        let key = StorageKey::Original {
            image_type: self.image_type,
            owner: Owner { id: self.owner_id, kind: self.owner_type },
            image_id: self.id,
            format: self.format,
        };
        Object { image_id: self.id, key, checksum: self.checksum, size_bytes: self.file_size.unsigned_abs() }
    }
}

/// Every live original, by id, a page at a time.
fn originals(db: &PgPool) -> impl Stream<Item = sqlx::Result<Object>> + '_ {
    stream::try_unfold(None, move |after: Option<ImageId>| async move {
        let rows = storage_migration::originals_after(db, after, PAGE_ROWS).await?;
        let Some(last) = rows.last().map(|row| row.id) else { return Ok::<_, sqlx::Error>(None) };
        let objects = rows.into_iter().map(|row| Ok::<_, sqlx::Error>(row.into_object()));
        Ok(Some((stream::iter(objects), Some(last))))
    })
    .try_flatten()
}

impl IntoObject for ThumbnailRow {
    fn into_object(self) -> Object {
        let key = StorageKey::Thumbnail {
            image_type: self.image_type,
            owner: Owner { id: self.owner_id, kind: self.owner_type },
            image_id: self.image_id,
            // As the service reads thumbnail rows (`storage_thumbnails::list`), so the
            // object lands where serving and deletion look for it.
            format: ImageFormat::from_mime(&self.mime_type).unwrap_or(ImageFormat::Jpeg),
            size: self.size_name,
        };
        Object { image_id: self.image_id, key, checksum: self.checksum, size_bytes: self.file_size.unsigned_abs() }
    }
}

/// Every thumbnail of a live image, in primary-key order, a page at a time. Those of
/// deleted images are left out: their deletion job removes them from wherever they are.
fn thumbnails(db: &PgPool) -> impl Stream<Item = sqlx::Result<Object>> + '_ {
    stream::try_unfold(None, move |after: Option<(ImageId, String)>| async move {
        let rows = storage_migration::thumbnails_after(db, after, PAGE_ROWS).await?;
        let Some(last) = rows.last().map(|row| (row.image_id, row.size_name.clone())) else {
            return Ok::<_, sqlx::Error>(None);
        };
        let objects = rows.into_iter().map(|row| Ok::<_, sqlx::Error>(row.into_object()));
        Ok(Some((stream::iter(objects), Some(last))))
    })
    .try_flatten()
}
