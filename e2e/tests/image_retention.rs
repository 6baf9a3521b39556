//! Image retention (`retentionPolicy.keepImagesForever: false`): the scheduled cleanup
//! deletes images older than their type's maximum age exactly as their owners would (a
//! scrubbed tombstone, quota released, files removed by the deletion worker), and nothing
//! else; with the default policy it deletes nothing.

use std::time::Duration;

use api::test_support::TestApp;
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, admin_post, settled, upload_every_kind};
use serde_json::Value;
use shared::auth::Role;
use shared::config::{MaxAgeByType, RetentionPolicy};
use shared::expiry;
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Users' photos and vendors' clothing after 30 days, clothing never, results after a day.
fn thirty_days_clothing_forever_results_a_day() -> RetentionPolicy {
    RetentionPolicy {
        keep_images_forever: false,
        max_age: 30,
        max_age_by_type: MaxAgeByType { cloth: Some(0), result: Some(1), ..MaxAgeByType::default() },
        ..RetentionPolicy::default()
    }
}

async fn backdate(app: &TestApp, id: &str, days: i64) {
    sqlx::query("UPDATE storage_files SET created_at = now() - make_interval(days => $2) WHERE id = $1::uuid")
        .bind(id)
        .bind(days as i32)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn live_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT id::text FROM storage_files WHERE deleted_at IS NULL ORDER BY created_at, id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn used(app: &TestApp) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT used_files, used_bytes FROM storage_quotas ORDER BY owner_id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Paths of an image's original and thumbnails, relative to the storage root.
async fn paths(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT file_path FROM storage_files WHERE id = $1::uuid
         UNION ALL SELECT file_path FROM storage_thumbnails WHERE image_id = $1::uuid",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_cleanup_deletes_each_type_past_its_age_as_its_owner_would(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.storage.retention_policy = thirty_days_clothing_forever_results_a_day();
    })
    .await;
    let worker = TestWorker::start(&app.config).await;
    // A user's JPEG and PNG, a vendor's dress, two results.
    let ids = upload_every_kind(&app).await;
    settled(&app, "every upload is processed").await;
    let (old_photo, recent_photo, old_dress, result, other_result) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);
    backdate(&app, old_photo, 31).await;
    backdate(&app, recent_photo, 29).await;
    backdate(&app, old_dress, 400).await;
    backdate(&app, result, 2).await;
    backdate(&app, other_result, 2).await;
    let expired_files: Vec<String> =
        [paths(&app, old_photo).await, paths(&app, result).await, paths(&app, other_result).await].concat();
    assert!(expired_files.len() > 3, "thumbnails too");
    let quota_before = used(&app).await;

    let admin = app.token(Role::Admin, Uuid::now_v7());
    admin_post(&app, &admin, "/storage/maintenance/backup_retention", Value::Null).await;
    eventually(TIMEOUT, "the expired images are deleted and their files removed", || async {
        live_ids(&app).await.len() == 2 && expired_files.iter().all(|p| !app.storage.root().join(p).exists())
    })
    .await;
    let mut kept = vec![recent_photo.clone(), old_dress.clone()];
    kept.sort();
    let mut live = live_ids(&app).await;
    live.sort();
    assert_eq!(live, kept, "the recent photo and the clothing kept forever");
    for id in [recent_photo, old_dress] {
        assert!(paths(&app, id).await.iter().all(|p| app.storage.root().join(p).exists()), "{id} untouched");
    }

    // Deleted as an owner's delete: scrubbed tombstones, quota given back.
    let tombstones: Vec<(String, Vec<String>, Value)> =
        sqlx::query_as("SELECT original_name, tags, metadata FROM storage_files WHERE deleted_at IS NOT NULL")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(tombstones.len(), 3);
    assert!(
        tombstones
            .iter()
            .all(|(name, tags, metadata)| name.is_empty() && tags.is_empty() && *metadata == serde_json::json!({}))
    );
    let quota_after = used(&app).await;
    let files = |quota: &[(i64, i64)]| quota.iter().map(|(files, _)| files).sum::<i64>();
    assert_eq!(files(&quota_before) - files(&quota_after), 3);
    let deletions: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(deletions, 3, "one deletion job per expired image");

    // A second run finds nothing more to delete.
    admin_post(&app, &admin, "/storage/maintenance/backup_retention", Value::Null).await;
    let report = expiry::run(&app.pool, &app.config.storage.retention_policy, Utc::now()).await.unwrap();
    assert_eq!(report.total(), 0);
    assert_eq!(live_ids(&app).await.len(), 2);
    worker.stop().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn images_are_kept_forever_by_default_and_concurrent_runs_delete_each_image_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = upload_every_kind(&app).await;
    let much_later = Utc::now() + TimeDelta::days(100 * 365);
    let report = expiry::run(&app.pool, &app.config.storage.retention_policy, much_later).await.unwrap();
    assert_eq!(report.total(), 0, "the default policy keeps every image");
    assert_eq!(live_ids(&app).await.len(), ids.len());

    // Two cleanups at once a year later: every image but the clothing goes, each once.
    let policy = thirty_days_clothing_forever_results_a_day();
    let a_year_later = Utc::now() + TimeDelta::days(365);
    let (first, second) =
        tokio::join!(expiry::run(&app.pool, &policy, a_year_later), expiry::run(&app.pool, &policy, a_year_later));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.total() + second.total(), 4);
    assert_eq!(live_ids(&app).await, [ids[2].clone()]);
    let deletions: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'image.deleted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(deletions, 4, "each image deleted once");
    app.stop().await;
}
