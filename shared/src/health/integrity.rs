//! The rolling integrity sample: each health check re-reads the originals verified longest
//! ago and compares them with the SHA-256 recorded at upload, so that, run after run, every
//! stored file is read back, not only those a user happens to open.

use std::io;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::CheckResult;
use crate::db::storage_files::{self, IntegrityCandidate};
use crate::model::{HealthStatus, ImageId};
use crate::storage::Storage;

/// Re-hashes `sample_size` originals. A match moves the file to the back of the line; a
/// mismatch or a missing file marks the image corrupt (visible in its metadata, repaired by
/// a restore: in mode `overwrite` for a damaged file, which `missing_only` skips as present)
/// and makes the check `degraded`.
pub async fn sample(db: &PgPool, storage: &Storage, sample_size: u32, now: DateTime<Utc>) -> CheckResult {
    let mut check = CheckResult::new("integrity");
    let candidates = match storage_files::integrity_sample(db, i64::from(sample_size)).await {
        Ok(candidates) => candidates,
        Err(error) => {
            check.problem(HealthStatus::Degraded, format!("cannot pick the sample: {error}"));
            return check;
        }
    };
    // How long a full pass over the stored files takes, roughly: the longest any sampled
    // file went unchecked.
    let oldest_check = candidates.first().and_then(|c| c.verified_at);
    let (mut matched, mut corrupt, mut missing, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0i64);
    for candidate in &candidates {
        match rehash(storage, candidate).await {
            Ok(actual) if actual == candidate.checksum => {
                matched.push(candidate.id);
                bytes += candidate.file_size;
            }
            Ok(actual) => {
                let reason =
                    format!("integrity check: recorded checksum {}, stored bytes hash to {actual}", candidate.checksum);
                mark(db, &mut check, candidate.id, &reason).await;
                corrupt.push(candidate.id.to_string());
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                mark(db, &mut check, candidate.id, "integrity check: the original file is missing").await;
                missing.push(candidate.id.to_string());
            }
            Err(error) => {
                check.problem(HealthStatus::Degraded, format!("cannot read image {}: {error}", candidate.id));
            }
        }
    }
    if let Err(error) = storage_files::touch_verified(db, &matched).await {
        check.problem(HealthStatus::Degraded, format!("cannot record the passed checks: {error}"));
    }
    if !corrupt.is_empty() {
        check.problem(HealthStatus::Degraded, format!("{} originals no longer match their checksum", corrupt.len()));
    }
    if !missing.is_empty() {
        check.problem(HealthStatus::Degraded, format!("{} originals are missing", missing.len()));
    }
    check
        .detail("sampled", candidates.len())
        .detail("matched", matched.len())
        .detail("bytes_read", bytes)
        .detail("corrupt", json!(corrupt))
        .detail("missing", json!(missing))
        .detail("oldest_check_age_hours", oldest_check.map(|at| ((now - at).num_seconds() as f64 / 3600.0).round()));
    check
}

async fn rehash(storage: &Storage, candidate: &IntegrityCandidate) -> io::Result<String> {
    storage.sha256(&candidate.key).await
}

async fn mark(db: &PgPool, check: &mut CheckResult, id: ImageId, reason: &str) {
    tracing::warn!(image.id = %id, reason, "integrity check failed");
    if let Err(error) = storage_files::mark_corrupt(db, id, reason).await {
        check.problem(HealthStatus::Degraded, format!("cannot mark image {id} corrupt: {error}"));
    }
}
