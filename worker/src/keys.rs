//! `stayler-worker rotate-keys`: re-wraps every image's data key that is not under the
//! active master key (`encryption.activeKeyId`) with it, in batches. Only the 72-byte
//! wrapped keys change; nothing encrypted with a data key is touched.
//!
//! Each row's update checks that it is still under the key it was read under, so two runs
//! at once are harmless (the second finds the row done and counts it as such), and a run
//! that stops half-way is resumed by running it again: it starts over on whatever is still
//! not under the active key. A master key may leave `encryption.keys` only once a run ends
//! with every data key under the active key.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use shared::config::Config;
use shared::crypto::{CryptoError, KeyRing, WrappedKey};
use shared::db::image_keys::{self, ImageKey};
use sqlx::PgPool;

/// Data keys re-wrapped per batch when `--batch` is not given.
pub const DEFAULT_BATCH: u32 = 500;
/// Largest `--batch`: one batch is read into memory at once.
pub const MAX_BATCH: u32 = 10_000;

/// What a rotation did, so far or in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Data keys this run re-wrapped under the active key.
    pub rotated: u64,
    /// Keys another run re-wrapped (or a deletion shredded) between the read and the update.
    pub already_done: u64,
    /// Keys that could not be unwrapped: a master key missing from the ring, or a damaged row.
    pub failed: u64,
    /// Master keys named by rows but missing from the ring.
    pub missing_key_ids: BTreeSet<String>,
}

/// Re-wraps every data key not under `ring`'s active key, `batch` rows at a time, calling
/// `progress` after each batch. A row that fails to unwrap is logged, counted and skipped.
pub async fn rotate(
    db: &PgPool,
    ring: &KeyRing,
    batch: u32,
    mut progress: impl FnMut(&RotationReport),
) -> sqlx::Result<RotationReport> {
    let active = ring.active_key_id();
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let rows = image_keys::list_not_under(db, active, after, i64::from(batch.max(1))).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.image_id);
        for row in &rows {
            match rewrap(ring, row) {
                Ok(wrapped) => {
                    if image_keys::rewrap(db, row.image_id, &row.key_id, active, &wrapped.bytes).await? {
                        report.rotated += 1;
                    } else {
                        report.already_done += 1;
                    }
                }
                Err(error) => {
                    tracing::warn!(image.id = %row.image_id, key.id = %row.key_id, error = %error, "cannot re-wrap a data key");
                    if let CryptoError::UnknownKeyId(id) = error {
                        report.missing_key_ids.insert(id);
                    }
                    report.failed += 1;
                }
            }
        }
        progress(&report);
    }
    Ok(report)
}

/// The row's data key, wrapped again under the ring's active key.
fn rewrap(ring: &KeyRing, row: &ImageKey) -> Result<WrappedKey, CryptoError> {
    let wrapped = WrappedKey { key_id: row.key_id.clone(), bytes: row.wrapped_key.clone() };
    let key = ring.unwrap(&wrapped, row.image_id)?;
    Ok(ring.wrap(&key, row.image_id))
}

/// `stayler-worker rotate-keys`: runs [`rotate`] with the configured ring, printing progress
/// and the final count; fails if any key could not be re-wrapped.
pub async fn rotate_keys(config: &Config, batch: u32) -> anyhow::Result<()> {
    let ring = KeyRing::from_config(&config.encryption)
        .context("building the key ring (encryption.keys, encryption.activeKeyId)")?;
    let db = shared::db::connect(&config.database).await.context("connecting to PostgreSQL (database.url)")?;
    let active = ring.active_key_id().to_owned();
    for (key_id, count) in image_keys::count_by_key_id(&db).await? {
        println!("{count} data keys under master key {key_id}");
    }
    println!("re-wrapping every data key under master key {active}, {batch} at a time");
    let report = rotate(&db, &ring, batch, |so_far| {
        println!(
            "  {} re-wrapped, {} done by another run, {} failed",
            so_far.rotated, so_far.already_done, so_far.failed
        );
    })
    .await
    .context("rotating the data keys (run it again to resume)")?;
    let left: i64 = image_keys::count_by_key_id(&db)
        .await?
        .into_iter()
        .filter(|(key_id, _)| *key_id != active)
        .map(|(_, count)| count)
        .sum();
    db.close().await;
    println!(
        "done: {} data keys re-wrapped under {active}, {} by another run, {} failed; {left} not under {active}",
        report.rotated, report.already_done, report.failed
    );
    if report.failed > 0 || left > 0 {
        let missing: Vec<&str> = report.missing_key_ids.iter().map(String::as_str).collect();
        bail!(
            "{} data keys could not be re-wrapped (master keys missing from encryption.keys: {}): keep every \
             master key in the ring until a run ends with none left",
            report.failed.max(left as u64),
            if missing.is_empty() { "none".to_owned() } else { missing.join(", ") }
        );
    }
    println!("every data key is under {active}: the other master keys may now leave encryption.keys");
    Ok(())
}
