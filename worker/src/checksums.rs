//! `stayler.checksums`: re-reads a stored original and verifies it against the SHA-256
//! recorded at upload.
//!
//! A mismatch marks the image corrupt at once (visible in its metadata) and is retried, so
//! a transient read error can still clear it; a job for a verified or deleted image does
//! nothing.

use std::io::Read;

use sha2::{Digest, Sha256};
use shared::db::storage_files;
use tokio::task::spawn_blocking;

use crate::Context;
use crate::consumer::{Handler, Job, JobError};
use crate::thumbnails::image_id;

/// Read size while hashing.
const READ_BYTES: usize = 256 * 1024;

pub struct Checksums {
    context: Context,
}

impl Checksums {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[async_trait::async_trait]
impl Handler for Checksums {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        let id = image_id(job)?;
        let db = &self.context.db;
        let Some(file) = storage_files::get(db, id).await.map_err(JobError::retry)? else {
            return Ok(()); // deleted since upload
        };
        if file.checksum_status == "verified" {
            return Ok(()); // a duplicate delivery
        }
        let opened = self.context.storage.open_read(&file.key()).await;
        let reader = opened.map_err(|e| JobError::retry(format!("the original cannot be read: {e}")))?.into_std().await;
        let actual = spawn_blocking(move || sha256_hex(reader)).await?.map_err(JobError::retry)?;
        if actual == file.checksum {
            storage_files::mark_verified(db, id).await.map_err(JobError::retry)?;
            tracing::info!(image.id = %id, "verified {id}");
            return Ok(());
        }
        let reason = format!("checksum mismatch: recorded {}, stored bytes hash to {actual}", file.checksum);
        storage_files::mark_corrupt(db, id, &reason).await.map_err(JobError::retry)?;
        tracing::warn!(image.id = %id, "stored bytes of {id} do not match their checksum");
        Err(JobError::Retry(reason))
    }

    async fn on_dead_letter(&self, job: &Job, reason: &str) {
        let Ok(id) = image_id(job) else { return };
        let reason = format!("verification: {reason}");
        if let Err(error) = storage_files::mark_corrupt(&self.context.db, id, &reason).await {
            tracing::error!(image.id = %id, error = %error, "could not record the verification failure");
        }
    }
}

fn sha256_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_BYTES];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buffer[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_known_vector() {
        assert_eq!(
            sha256_hex(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
