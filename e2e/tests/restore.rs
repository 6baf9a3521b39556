//! Restores: the disaster-recovery drill through the API and the workers (the storage
//! folder and every row lost, then restored from a backup), restores by day (each image
//! once, from its newest intact copy), the two modes facing a damaged original, damaged
//! archives through the API and through the operator commands, who may restore, and the
//! leases that keep a restore or a backup check from running twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::test_support::TestApp;
use chrono::{TimeDelta, Utc};
use e2e::{TestWorker, admin_post, finished, settled, upload_every_kind, upload_gif_and_webp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::backup::restore::Restorer;
use shared::backup::{retention, verify};
use shared::db::storage_backups;
use shared::db::storage_restores::{self, Claim};
use shared::health::integrity;
use shared::maintenance::sweep;
use shared::model::{BackupId, HealthStatus, ImageId, RestoreMode, RestoreSelection, RestoreStatus};
use shared::storage::BackupTree;
use sqlx::PgPool;
use uuid::Uuid;
use worker::operator::{self, RestoreTarget};

/// What a restore must bring back of a row: everything but processing state and counters.
const ROW: &str = "SELECT id::text, to_jsonb(f) - 'checksum_status' - 'verified_at' - 'thumbnail_status'
                          - 'is_backed_up' - 'backup_path' - 'access_count' - 'last_accessed' - 'updated_at'
                          - 'search_text'
                   FROM storage_files f ORDER BY id";

async fn rows(pool: &PgPool) -> BTreeMap<String, Value> {
    sqlx::query_as::<_, (String, Value)>(ROW).fetch_all(pool).await.unwrap().into_iter().collect()
}

async fn originals(app: &TestApp) -> BTreeMap<String, Vec<u8>> {
    let paths: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, file_path FROM storage_files").fetch_all(&app.pool).await.unwrap();
    paths.into_iter().map(|(id, path)| (id, std::fs::read(app.storage.root().join(path)).unwrap())).collect()
}

/// Waits until the restored images are processed again, then asserts that no staged file is
/// left. Counting earlier would race the worker, which stages the restored image's
/// thumbnails while it makes them; once every image is ready, whatever is still staged was
/// left half-written by the restore or the pipeline.
async fn nothing_half_written_once_settled(app: &TestApp) {
    settled(app, "the restored image is processed again").await;
    assert_eq!(app.storage.count_staged().await.unwrap(), 0, "nothing half-written is left");
}

/// Requests a backup through the API and waits until the workers completed it.
async fn back_up(app: &TestApp, admin: &str) -> Value {
    let backup = admin_post(app, admin, "/storage/backup", json!({})).await;
    let backup = finished(app, admin, &format!("/storage/backups/{}", backup["id"].as_str().unwrap())).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    backup
}

/// Requests a restore through the API and waits until a worker finished it.
async fn restore(app: &TestApp, admin: &str, body: Value) -> Value {
    let restore = admin_post(app, admin, "/storage/restore", body).await;
    finished(app, admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await
}

/// `(restored, skipped, failed)` of a finished restore.
/// The start of most restore tests: the API, a worker, an admin's token, and one image of
/// every kind uploaded and fully processed (their ids in upload order).
async fn processed_uploads(pool: PgPool) -> (TestApp, TestWorker, String, Vec<String>) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let ids = upload_every_kind(&app).await;
    settled(&app, "every upload is processed").await;
    (app, worker, admin, ids)
}

fn counts(restore: &Value) -> (u64, u64, u64) {
    let count = |name: &str| restore[name].as_u64().unwrap();
    (count("restored"), count("skipped"), count("failed"))
}

/// The reported reasons by image id and outcome.
fn details(restore: &Value) -> BTreeMap<(String, String), String> {
    let field = |item: &Value, name: &str| item[name].as_str().unwrap().to_owned();
    let items = restore["details"].as_array().unwrap();
    items.iter().map(|item| ((field(item, "image_id"), field(item, "outcome")), field(item, "reason"))).collect()
}

/// Flips one bit in the middle of a file: damage that only a checksum notices.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn after_losing_every_file_and_row_a_restore_brings_back_identical_originals_rows_and_thumbnails(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let mut ids = upload_every_kind(&app).await;
    ids.extend(upload_every_kind(&app).await);
    ids.extend(upload_gif_and_webp(&app).await);
    settled(&app, "every upload is processed").await;
    let before_rows = rows(&app.pool).await;
    let before_files = originals(&app).await;
    let before_sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_image_sources").fetch_one(&app.pool).await.unwrap();
    let before_usage: Vec<(Uuid, i64, i64)> =
        sqlx::query_as("SELECT owner_id, used_files, used_bytes FROM storage_quotas ORDER BY owner_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(before_files.len(), ids.len());
    let backup = admin_post(&app, &admin, "/storage/backup", json!({})).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    let backup = finished(&app, &admin, &format!("/storage/backups/{backup_id}")).await;
    assert_eq!(backup["status"], "completed");

    // The disaster: the whole storage folder and every table's rows are gone. The running
    // services get an empty folder back where the lost one was mounted (they never make the
    // root itself, which a missing mount would otherwise hide; staging comes back by itself).
    std::fs::remove_dir_all(app.storage.root()).unwrap();
    std::fs::create_dir(app.storage.root()).unwrap();
    sqlx::query(
        "TRUNCATE storage_files, storage_thumbnails, storage_image_sources, storage_quotas, storage_backups,
                  storage_backup_entries, storage_signed_urls, storage_access_logs, upload_idempotency, outbox CASCADE",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.stored_file_count().await, 0);

    let restore = admin_post(&app, &admin, "/storage/restore", json!({ "backup_id": backup_id })).await;
    assert_eq!(restore["mode"], "missing_only");
    let restore = finished(&app, &admin, &format!("/storage/restores/{}", restore["id"].as_str().unwrap())).await;
    assert_eq!(restore["status"], "completed", "{restore}");
    assert_eq!((restore["restored"].as_u64(), restore["failed"].as_u64()), (Some(ids.len() as u64), Some(0)));
    settled(&app, "thumbnails are made again and checksums verified").await;

    assert_eq!(rows(&app.pool).await, before_rows, "every row is back as it was");
    assert_eq!(originals(&app).await, before_files, "every original is byte-identical");
    let thumbnails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails").fetch_one(&app.pool).await.unwrap();
    assert_eq!(thumbnails as usize, ids.len() * app.config.storage.thumbnail_sizes.len());
    assert_eq!(app.storage.count_objects().await.unwrap(), ids.len() * (1 + app.config.storage.thumbnail_sizes.len()));
    let sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_image_sources").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sources, before_sources, "provenance is rebuilt");
    let usage: Vec<(Uuid, i64, i64)> =
        sqlx::query_as("SELECT owner_id, used_files, used_bytes FROM storage_quotas ORDER BY owner_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(usage, before_usage, "quota usage follows the restored images");
    worker.stop().await;
    app.stop().await;
}

/// The archive of image `id` in the backup whose manifest is at `manifest`.
fn archive_of(tree: &BackupTree, manifest: &Path, id: &str) -> PathBuf {
    let reader = shared::backup::manifest::Reader::new(tree.open_file(manifest).unwrap()).unwrap();
    let entry = reader.map(Result::unwrap).find(|e| e.image_id.to_string() == id).unwrap();
    tree.root().join(entry.archive_path)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_flipped_byte_in_an_archive_is_detected_reported_and_never_restored(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = upload_every_kind(&app).await;
    operator::backup(&app.config).await.expect("the operator backup succeeds");
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let backup_id: Uuid = sqlx::query_scalar("SELECT id FROM storage_backups").fetch_one(&app.pool).await.unwrap();
    operator::verify(&app.config, backup_id).await.expect("an intact backup passes its check");

    let (damaged, intact) = (&ids[0], &ids[1]);
    flip_a_byte(&archive_of(&tree, &tree.manifests().unwrap()[0], damaged));

    assert!(operator::verify(&app.config, backup_id).await.is_err(), "the check fails");
    let checked = storage_backups::get(&app.pool, shared::model::BackupId(backup_id)).await.unwrap().unwrap();
    assert_eq!(checked.verify_status.as_deref(), Some("corrupt"));
    let report = checked.verify_report.unwrap();
    assert_eq!((report["corrupt"].as_u64(), report["intact"].as_u64()), (Some(1), Some(ids.len() as u64 - 1)));
    assert_eq!(report["problems"][0]["image_id"], damaged.as_str());

    // Both originals lost; the restore brings back the intact one only.
    let (damaged_path, intact_path) = (app.original_path(damaged).await, app.original_path(intact).await);
    let intact_bytes = std::fs::read(&intact_path).unwrap();
    std::fs::remove_file(&damaged_path).unwrap();
    std::fs::remove_file(&intact_path).unwrap();
    let target = RestoreTarget::Images(vec![damaged.parse().unwrap(), intact.parse().unwrap()]);
    assert!(operator::restore(&app.config, target, RestoreMode::MissingOnly).await.is_err(), "a failure is an error");
    assert!(!damaged_path.exists(), "damaged bytes are never restored");
    assert_eq!(std::fs::read(&intact_path).unwrap(), intact_bytes);
    // No worker runs in this test, so nothing but the restore can have staged a file.
    assert_eq!(app.storage.count_staged().await.unwrap(), 0, "nothing half-written is left");

    // Each operator command left its audit entry, failed ones too.
    let trail: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, target_type FROM storage_audit_log ORDER BY at, id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let entry = |actor: &str, action: &str, target: &str| (actor.to_owned(), action.to_owned(), target.to_owned());
    assert_eq!(
        trail,
        [
            entry("operator:backup", "backup_requested", "backup"),
            entry("operator:verify", "backup_verify_requested", "backup"),
            entry("operator:verify", "backup_verify_requested", "backup"),
            entry("operator:restore", "restore_requested", "job"),
        ]
    );

    // Again, through the library, to read the reasons: the intact one is present now.
    let restorer = Restorer { db: &app.pool, storage: &app.storage, backups: &tree, quota: &app.config.quota };
    let selection =
        RestoreSelection::ImageIds(vec![ImageId(damaged.parse().unwrap()), ImageId(intact.parse().unwrap())]);
    let report = restorer.restore(&selection, RestoreMode::MissingOnly, |_, _| {}).await.unwrap();
    assert_eq!((report.restored, report.skipped, report.failed), (0, 1, 1));
    let failure = report.details.iter().find(|d| d.outcome == "failed").unwrap();
    assert_eq!(failure.image_id.to_string(), *damaged);
    assert!(failure.reason.starts_with("archive corrupt"), "{}", failure.reason);
    let unknown = RestoreSelection::ImageIds(vec![ImageId::new()]);
    let report = restorer.restore(&unknown, RestoreMode::MissingOnly, |_, _| {}).await.unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(report.details[0].reason, "no backup holds this image");
    let report = verify::verify(&tree, &tree.manifests().unwrap()[0], |_, _| {}).unwrap();
    assert_eq!(report.corrupt, 1);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_restore_by_date_through_the_api_brings_back_the_originals_lost_since_that_day(pool: PgPool) {
    let (app, worker, admin, ids) = processed_uploads(pool).await;
    let before = originals(&app).await;
    let backup = back_up(&app, &admin).await;
    let (lost, kept) = ids.split_at(2);
    for id in lost {
        std::fs::remove_file(app.original_path(id).await).unwrap();
    }

    let day = backup["backup_date"].as_str().unwrap();
    let restored = restore(&app, &admin, json!({ "date": day })).await;
    assert_eq!(restored["status"], "completed", "{restored}");
    assert_eq!(restored["selection"], json!({ "date": day }));
    assert_eq!(counts(&restored), (lost.len() as u64, kept.len() as u64, 0));
    let reported = details(&restored);
    let skipped: BTreeSet<&String> = reported.keys().map(|(id, _)| id).collect();
    assert_eq!(skipped, kept.iter().collect(), "the present originals are skipped");
    assert!(reported.values().all(|reason| reason == "present in storage"), "{reported:?}");
    assert_eq!(originals(&app).await, before, "the lost originals are back, byte-identical");

    // A day without a backup: nothing to read, said as such.
    let nothing = restore(&app, &admin, json!({ "date": "2001-02-03" })).await;
    assert_eq!(nothing["status"], "failed");
    assert_eq!(counts(&nothing), (0, 0, 0));
    assert_eq!(nothing["error"], "no backup of 2001-02-03 under storage.backupPath");
    settled(&app, "the restored images are processed again").await;
    worker.stop().await;
    app.stop().await;
}

/// A day can hold several backups of one image: here a backup and the retention carry-over
/// of its images. Each image is restored once, from its newest copy that passes the check;
/// a damaged newest copy falls back to the older one, and only an image with no intact copy
/// fails.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_day_with_two_backups_of_each_image_restores_each_once_from_its_newest_intact_copy(pool: PgPool) {
    let (app, worker, admin, ids) = processed_uploads(pool).await;
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let before = originals(&app).await;
    let first = back_up(&app, &admin).await;

    // Retention of zero days run just after the backup was requested: it has expired while
    // holding the only copies, so they are carried into a new backup of the same day.
    let first_id = BackupId(first["id"].as_str().unwrap().parse().unwrap());
    let requested_at = storage_backups::get(&app.pool, first_id).await.unwrap().unwrap().created_at;
    let policy = shared::config::BackupPolicy { retention_days: 0, ..app.config.storage.backup_policy.clone() };
    let just_after = requested_at + TimeDelta::microseconds(1);
    let report = retention::apply(&app.pool, &tree, &policy, just_after).await.unwrap();
    assert_eq!(report.carried_images, ids.len());
    let carry = report.carry_over.unwrap();
    let carry = finished(&app, &admin, &format!("/storage/backups/{carry}")).await;
    assert_eq!((carry["status"].as_str(), carry["trigger"].as_str()), (Some("completed"), Some("retention")));
    assert_eq!(carry["backup_date"], first["backup_date"], "both backups are of one day");

    // Three originals lost: one whose newest copy is damaged, one whose older copy is, one
    // with both copies intact.
    let manifest = |backup: &Value| PathBuf::from(backup["manifest_path"].as_str().unwrap());
    let (newest_damaged, oldest_damaged, intact) = (&ids[0], &ids[1], &ids[2]);
    flip_a_byte(&archive_of(&tree, &manifest(&carry), newest_damaged));
    flip_a_byte(&archive_of(&tree, &manifest(&first), oldest_damaged));
    for id in [newest_damaged, oldest_damaged, intact] {
        std::fs::remove_file(app.original_path(id).await).unwrap();
    }

    let day = first["backup_date"].as_str().unwrap();
    let restored = restore(&app, &admin, json!({ "date": day })).await;
    assert_eq!(restored["status"], "completed", "{restored}");
    assert_eq!(counts(&restored), (3, ids.len() as u64 - 3, 0), "each image once: {restored}");
    assert_eq!(originals(&app).await, before, "every original is back, byte-identical");
    settled(&app, "the restored images are processed again").await;

    // No intact copy left: the image fails, with the newest copy's reason.
    std::fs::remove_file(app.original_path(newest_damaged).await).unwrap();
    flip_a_byte(&archive_of(&tree, &manifest(&first), newest_damaged));
    let restored = restore(&app, &admin, json!({ "date": day })).await;
    assert_eq!(restored["status"], "failed");
    assert_eq!(counts(&restored), (0, ids.len() as u64 - 1, 1));
    let reason = &details(&restored)[&(newest_damaged.clone(), "failed".to_owned())];
    assert!(reason.starts_with("archive corrupt") && reason.ends_with("(the newest of 2 copies, none of them intact)"));
    assert!(!app.original_path(newest_damaged).await.exists(), "damaged bytes are never restored");
    settled(&app, "the restored images are processed again").await;
    worker.stop().await;
    app.stop().await;
}

/// An original damaged on disk, as the rolling integrity sample finds it: `missing_only`
/// leaves it alone, since it is present; `overwrite` puts the verified backup copy back, and
/// the image is verified, thumbnailed and in the sample's rotation again.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_damaged_original_is_skipped_by_missing_only_and_repaired_by_overwrite(pool: PgPool) {
    let (app, worker, admin, ids) = processed_uploads(pool).await;
    back_up(&app, &admin).await;
    let damaged = &ids[0];
    let path = app.original_path(damaged).await;
    let intact = std::fs::read(&path).unwrap();
    flip_a_byte(&path);
    let flipped = std::fs::read(&path).unwrap();
    let sample = integrity::sample(&app.pool, &app.storage, 100, Utc::now()).await;
    assert_eq!(sample.details()["corrupt"], json!([damaged]));
    let state = || async {
        sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT checksum_status, thumbnail_status, processing_error FROM storage_files WHERE id = $1::uuid",
        )
        .bind(damaged)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(state().await.0, "corrupt");

    let skipped = restore(&app, &admin, json!({ "image_ids": [damaged] })).await;
    assert_eq!(skipped["status"], "completed", "{skipped}");
    assert_eq!(counts(&skipped), (0, 1, 0));
    assert_eq!(details(&skipped)[&(damaged.clone(), "skipped".to_owned())], "present in storage");
    assert_eq!(std::fs::read(&path).unwrap(), flipped, "missing_only never replaces a present file");
    assert_eq!(state().await.0, "corrupt");

    let repaired = restore(&app, &admin, json!({ "image_ids": [damaged], "mode": "overwrite" })).await;
    assert_eq!(repaired["status"], "completed", "{repaired}");
    assert_eq!(repaired["mode"], "overwrite");
    assert_eq!(counts(&repaired), (1, 0, 0));
    assert_eq!(std::fs::read(&path).unwrap(), intact, "byte-identical again");
    settled(&app, "the repaired image is verified and thumbnailed again").await;
    assert_eq!(state().await, ("verified".to_owned(), "ready".to_owned(), None));
    let sample = integrity::sample(&app.pool, &app.storage, 100, Utc::now()).await;
    assert_eq!(sample.status, HealthStatus::Ok, "{:?}", sample.problems());
    assert_eq!(sample.details()["matched"], ids.len(), "back in the sample's rotation");
    worker.stop().await;
    app.stop().await;
}

/// A damaged archive met by a restore the API requested: the image fails with the reason
/// in the report, its damaged bytes are never written, nothing is left half-written, and
/// the other lost image comes back.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_flipped_byte_in_an_archive_fails_its_image_in_a_restore_requested_through_the_api(pool: PgPool) {
    let (app, worker, admin, ids) = processed_uploads(pool).await;
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let backup = back_up(&app, &admin).await;
    let (damaged, intact) = (&ids[0], &ids[1]);
    flip_a_byte(&archive_of(&tree, Path::new(backup["manifest_path"].as_str().unwrap()), damaged));
    let (damaged_path, intact_path) = (app.original_path(damaged).await, app.original_path(intact).await);
    let intact_bytes = std::fs::read(&intact_path).unwrap();
    std::fs::remove_file(&damaged_path).unwrap();
    std::fs::remove_file(&intact_path).unwrap();

    let restored = restore(&app, &admin, json!({ "backup_id": backup["id"] })).await;
    assert_eq!(restored["status"], "failed", "{restored}");
    assert_eq!(counts(&restored), (1, ids.len() as u64 - 2, 1));
    let reason = &details(&restored)[&(damaged.clone(), "failed".to_owned())];
    assert!(reason.starts_with("archive corrupt"), "{reason}");
    assert!(!damaged_path.exists(), "damaged bytes are never restored");
    assert_eq!(std::fs::read(&intact_path).unwrap(), intact_bytes);
    nothing_half_written_once_settled(&app).await;
    worker.stop().await;
    app.stop().await;
}

/// The status a request gets with `token`, or with none.
async fn status_of(request: reqwest::RequestBuilder, token: Option<&str>) -> StatusCode {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap().status()
}

/// Restores read and write every image: admins only. Other roles get 403 from both
/// endpoints and queue nothing, no token is a 401, and an unknown restore is a 404.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn only_admins_may_request_or_read_restores(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let body = json!({ "date": "2001-02-03" });
    let queued = admin_post(&app, &admin, "/storage/restore", body.clone()).await;
    let path = format!("/storage/restores/{}", queued["id"].as_str().unwrap());
    let others = [Role::User, Role::Vendor, Role::Service].map(|role| (role, Some(app.token(role, Uuid::now_v7()))));
    for (role, token) in others.iter().map(|(role, token)| (Some(role), token.as_deref())).chain([(None, None)]) {
        let expected = if token.is_some() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        let post = app.client.post(app.url("/storage/restore")).json(&body);
        assert_eq!(status_of(post, token).await, expected, "POST by {role:?}");
        assert_eq!(status_of(app.client.get(app.url(&path)), token).await, expected, "GET by {role:?}");
    }
    let requested: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_restores").fetch_one(&app.pool).await.unwrap();
    assert_eq!(requested, 1, "only the admin's restore is queued");
    assert_eq!(status_of(app.client.get(app.url(&path)), Some(&admin)).await, StatusCode::OK);
    let unknown = app.url(&format!("/storage/restores/{}", Uuid::now_v7()));
    assert_eq!(status_of(app.client.get(unknown), Some(&admin)).await, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// RabbitMQ delivers a job again when its first run outlives the consumer timeout (or the
/// channel drops), while that run goes on. Here "another worker" holds the lease of a
/// running restore when this worker gets its job: it leaves the restore alone. When that
/// other worker dies, its lease runs out and the sweeper hands the restore to this one.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_second_delivery_of_a_running_restore_is_left_to_it_and_a_dead_runs_restore_is_taken_over(pool: PgPool) {
    let (app, worker, admin, ids) = processed_uploads(pool).await;
    let backup = back_up(&app, &admin).await;
    worker.stop().await;
    let before = originals(&app).await;
    let lost = app.original_path(&ids[0]).await;
    std::fs::remove_file(&lost).unwrap();

    let running = admin_post(&app, &admin, "/storage/restore", json!({ "image_ids": [ids[0]] })).await;
    let id: Uuid = running["id"].as_str().unwrap().parse().unwrap();
    let other_worker = Uuid::now_v7();
    let hour = Duration::from_secs(3600);
    assert_eq!(storage_restores::claim(&app.pool, id, other_worker, hour).await.unwrap(), Claim::Taken);
    assert_eq!(storage_restores::claim(&app.pool, id, Uuid::now_v7(), hour).await.unwrap(), Claim::Running);

    // One job at a time: once a restore requested after it has finished, this worker has
    // handled the running restore's delivery too.
    let mut config = (*app.config).clone();
    config.worker.concurrency = 1;
    let worker = TestWorker::start(&config).await;
    let later = restore(&app, &admin, json!({ "image_ids": [ids[1]] })).await;
    assert_eq!((later["status"].as_str(), counts(&later)), (Some("completed"), (0, 1, 0)), "{later}");
    let left = storage_restores::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!((left.status, left.restored), (RestoreStatus::Running, 0), "left to the lease's holder");
    assert!(!lost.exists(), "nothing restored by the second delivery");

    // The other worker dies: it stops renewing, the lease runs out, the sweeper publishes
    // the restore again, and this worker takes it over.
    sqlx::query("UPDATE storage_restores SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = sweep::run(&app.pool, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!(report.stalled_restores, [id]);
    let done = finished(&app, &admin, &format!("/storage/restores/{id}")).await;
    assert_eq!((done["status"].as_str(), counts(&done)), (Some("completed"), (1, 0, 0)), "{done}");
    assert_eq!(originals(&app).await, before);
    let report = sweep::run(&app.pool, &app.config.maintenance, Utc::now()).await.unwrap();
    assert!(report.stalled_restores.is_empty(), "a finished restore is not swept");

    // Backup checks take a lease the same way: a second check of the same backup is refused
    // while the first holds it, and the rolling re-check passes over it.
    let backup_id = BackupId(backup["id"].as_str().unwrap().parse().unwrap());
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let lease = |holder| storage_backups::lease_verify(&app.pool, backup_id, holder, hour);
    assert!(lease(first).await.unwrap());
    assert!(!lease(second).await.unwrap());
    assert_eq!(storage_backups::next_to_verify(&app.pool, Utc::now()).await.unwrap(), None);
    assert!(lease(first).await.unwrap(), "renewed by its holder");
    storage_backups::release_verify(&app.pool, backup_id, first).await.unwrap();
    assert!(lease(second).await.unwrap());
    assert!(!lease(first).await.unwrap(), "taken over");
    nothing_half_written_once_settled(&app).await;
    worker.stop().await;
    app.stop().await;
}
