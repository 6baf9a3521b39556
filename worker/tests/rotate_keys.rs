//! `stayler-worker rotate-keys` against the real PostgreSQL: data keys wrapped by an old
//! master key are re-wrapped under the active one, unwrap to the same data keys, and still
//! do once the old key has left the ring; a missing master key is reported; two runs at
//! once re-wrap each key once.

use secrecy::SecretString;
use shared::config::EncryptionConfig;
use shared::crypto::{DataKey, KeyRing, WrappedKey, open_field, seal_field};
use shared::db::image_keys;
use shared::model::ImageId;
use sqlx::PgPool;
use worker::keys::{self, RotationReport};

const M0: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
const M1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const M2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn ring(active: &str, keys: &[(&str, &str)]) -> KeyRing {
    let config = EncryptionConfig {
        enabled: true,
        active_key_id: active.to_owned(),
        keys: keys.iter().map(|(id, key)| (id.to_string(), SecretString::from(key.to_string()))).collect(),
        ..Default::default()
    };
    KeyRing::from_config(&config).unwrap()
}

/// An image row with a new data key wrapped by `ring`, and a field sealed with that data
/// key, which only the same data key opens.
async fn encrypted_image(pool: &PgPool, ring: &KeyRing) -> (ImageId, String) {
    let id = shared::test_support::insert_bare_image(pool).await;
    let key = DataKey::generate();
    let wrapped = ring.wrap(&key, id);
    assert!(image_keys::insert(pool, id, &wrapped.key_id, &wrapped.bytes).await.unwrap());
    (id, seal_field(&key, id, "original_name", &format!("photo of {id}.jpg")))
}

/// Unwraps the stored key of each image with `ring` and opens its sealed field.
async fn assert_every_key_opens(pool: &PgPool, ring: &KeyRing, images: &[(ImageId, String)]) {
    for (id, sealed) in images {
        let row = image_keys::get(pool, *id).await.unwrap().expect("a key");
        assert_eq!(row.key_id, ring.active_key_id());
        let key = ring.unwrap(&WrappedKey { key_id: row.key_id, bytes: row.wrapped_key }, *id).unwrap();
        assert_eq!(open_field(&key, *id, "original_name", sealed).unwrap(), format!("photo of {id}.jpg"));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_key_moves_to_the_active_master_key_and_the_old_one_can_then_leave_the_ring(pool: PgPool) {
    let m1 = ring("m1", &[("m1", M1)]);
    let mut images = Vec::new();
    for _ in 0..7 {
        images.push(encrypted_image(&pool, &m1).await);
    }
    let both = ring("m2", &[("m1", M1), ("m2", M2)]);
    let mut batches = Vec::new();
    let report = keys::rotate(&pool, &both, 3, |so_far| batches.push(so_far.rotated)).await.unwrap();
    assert_eq!(report, RotationReport { rotated: 7, ..Default::default() });
    assert_eq!(batches, [3, 6, 7], "progress after each batch");
    assert_eq!(image_keys::count_by_key_id(&pool).await.unwrap(), [("m2".to_owned(), 7)]);
    assert_every_key_opens(&pool, &both, &images).await;

    // Nothing is left to do, so a second run (or a resumed one) changes nothing.
    assert_eq!(keys::rotate(&pool, &both, 3, |_| {}).await.unwrap(), RotationReport::default());
    assert_every_key_opens(&pool, &ring("m2", &[("m2", M2)]), &images).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_key_whose_master_key_is_missing_is_reported_and_the_others_still_rotate(pool: PgPool) {
    let lost = encrypted_image(&pool, &ring("m0", &[("m0", M0)])).await;
    let m1 = ring("m1", &[("m1", M1)]);
    let images = [encrypted_image(&pool, &m1).await, encrypted_image(&pool, &m1).await];
    let report = keys::rotate(&pool, &ring("m2", &[("m1", M1), ("m2", M2)]), 10, |_| {}).await.unwrap();
    assert_eq!((report.rotated, report.already_done, report.failed), (2, 0, 1));
    assert_eq!(report.missing_key_ids.into_iter().collect::<Vec<_>>(), ["m0"]);
    assert_every_key_opens(&pool, &ring("m2", &[("m2", M2)]), &images).await;
    assert_eq!(image_keys::get(&pool, lost.0).await.unwrap().unwrap().key_id, "m0", "left as it was");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_runs_at_once_rewrap_each_key_once(pool: PgPool) {
    let m1 = ring("m1", &[("m1", M1)]);
    let mut images = Vec::new();
    for _ in 0..40 {
        images.push(encrypted_image(&pool, &m1).await);
    }
    let both = ring("m2", &[("m1", M1), ("m2", M2)]);
    let (first, second) = tokio::join!(keys::rotate(&pool, &both, 4, |_| {}), keys::rotate(&pool, &both, 4, |_| {}));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.rotated + second.rotated, 40, "{first:?} {second:?}");
    assert_eq!(first.failed + second.failed, 0);
    assert_every_key_opens(&pool, &ring("m2", &[("m2", M2)]), &images).await;
}
