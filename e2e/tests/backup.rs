//! Backups through their real entry points: the admin API requests one, the outbox relay
//! and RabbitMQ carry its jobs, two workers share its batches; and the library steps run
//! directly to replay what crashes and duplicate deliveries do.

use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use api::test_support::TestApp;
use chrono::Utc;
use e2e::{TestWorker, upload_every_kind};
use reqwest::StatusCode;
use serde_json::Value;
use shared::auth::Role;
use shared::backup::{self, archive, manifest};
use shared::db::storage_backups;
use shared::model::{BackupStatus, BackupTrigger};
use shared::storage::BackupTree;
use shared::test_support::eventually;
use sqlx::PgPool;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn request_backup(app: &TestApp, token: &str) -> reqwest::Response {
    app.client.post(app.url("/storage/backup")).bearer_auth(token).send().await.unwrap()
}

async fn get_backup(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/storage/backups/{id}"))).bearer_auth(token).send().await.unwrap()
}

async fn finished_backup(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(TIMEOUT, &format!("backup {id} finishes"), || async {
        let status = get_backup(app, token, id).await.json::<Value>().await.unwrap()["status"].clone();
        status == "completed" || status == "failed"
    })
    .await;
    get_backup(app, token, id).await.json().await.unwrap()
}

fn read_manifest(tree: &BackupTree, path: &str) -> (manifest::Header, Vec<shared::model::ArchivedImage>) {
    let reader = manifest::Reader::new(tree.open_file(Path::new(path)).unwrap()).unwrap();
    let header = reader.header.clone();
    (header, reader.collect::<Result<_, _>>().unwrap())
}

/// Every entry's archive decompresses to exactly the stored original.
fn assert_archives_match_originals(app: &TestApp, tree: &BackupTree, entries: &[shared::model::ArchivedImage]) {
    for entry in entries {
        let original = std::fs::read(app.storage.root().join(&entry.file_path)).unwrap();
        let mut restored = Vec::new();
        let archive = BufReader::new(tree.open_file(&entry.archive_path).unwrap());
        let (sha256, size) = archive::extract(archive, &mut restored).unwrap();
        assert_eq!(restored, original, "archive of {}", entry.file_path);
        assert_eq!((sha256.as_str(), size as i64), (entry.checksum.as_str(), entry.file_size));
        if entry.format == shared::model::ImageFormat::Jpeg {
            assert_eq!(entry.method, shared::model::ArchiveMethod::Raw, "JPEG is stored, not recompressed");
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_requested_backup_fans_out_to_two_workers_and_archives_every_image_verifiably(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.storage.backup_policy.batch_size = 2).await;
    let workers = [TestWorker::start(&app.config).await, TestWorker::start(&app.config).await];
    let ids = upload_every_kind(&app).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let (_, user) = app.user();

    assert_eq!(request_backup(&app, &user).await.status(), StatusCode::FORBIDDEN);
    let response = request_backup(&app, &admin).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "pending");
    assert_eq!(accepted["trigger"], "manual");
    let backup_id = accepted["id"].as_str().unwrap().to_owned();

    let backup = finished_backup(&app, &admin, &backup_id).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    assert_eq!(backup["file_count"], 5);
    assert_eq!(backup["failed_count"], 0);
    assert_eq!(backup["progress"]["batches"], 3, "five images in batches of two");
    assert_eq!(backup["progress"]["batches_done"], 3);
    // The three JPEGs are stored raw; the synthetic PNGs are flat colours, which compress.
    assert_eq!(backup["stored_raw_count"], 3);
    assert!(backup["compression_ratio"].as_f64().unwrap() < 1.0);
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let (header, entries) = read_manifest(&tree, backup["manifest_path"].as_str().unwrap());
    assert_eq!(header.file_count, 5);
    let mut listed: Vec<String> = entries.iter().map(|e| e.image_id.to_string()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert_archives_match_originals(&app, &tree, &entries);
    let dress = entries.iter().find(|e| e.original_name == "dress.png").unwrap();
    assert_eq!(dress.tags, ["summer", "red"]);
    let not_backed_up: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_files WHERE NOT is_backed_up OR backup_path IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(not_backed_up, 0);

    // Nothing new: the next backup completes with nothing in it, and says so.
    let again: Value = request_backup(&app, &admin).await.json().await.unwrap();
    let again = finished_backup(&app, &admin, again["id"].as_str().unwrap()).await;
    assert_eq!((again["status"].as_str(), again["file_count"].as_i64()), (Some("completed"), Some(0)));
    let (_, entries) = read_manifest(&tree, again["manifest_path"].as_str().unwrap());
    assert!(entries.is_empty());

    assert_eq!(get_backup(&app, &admin, &Uuid::now_v7().to_string()).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get_backup(&app, &user, &backup_id).await.status(), StatusCode::FORBIDDEN);
    for worker in workers {
        worker.stop().await;
    }

    // With no worker left, a third backup stays running: the list shows its entries
    // counted, and the finished ones with the counts their rows keep.
    let (_, token) = app.user();
    app.upload_image(&token, "user", "late.jpg", &[]).await;
    let running = planned_backup(&app, 10).await;
    let list: Value =
        app.client.get(app.url("/storage/backups")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 3);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], running.0.to_string(), "newest first");
    assert_eq!(items[2]["id"], backup_id.as_str());
    let progress: Vec<(i64, i64)> = items
        .iter()
        .map(|b| (b["progress"]["images_pending"].as_i64().unwrap(), b["progress"]["images_done"].as_i64().unwrap()))
        .collect();
    assert_eq!(progress, [(1, 0), (0, 0), (0, 5)], "{list}");
    let one: Value = get_backup(&app, &admin, &running.0.to_string()).await.json().await.unwrap();
    assert_eq!((one["status"].as_str(), one["progress"]["images_pending"].as_i64()), (Some("running"), Some(1)));
    app.stop().await;
}

/// Plans a manual backup in one transaction, as the worker does.
async fn planned_backup(app: &TestApp, batch_size: i64) -> shared::model::BackupId {
    let mut tx = app.pool.begin().await.unwrap();
    let level = app.config.storage.backup_policy.compression_level;
    let id = backup::request(&mut tx, BackupTrigger::Manual, None, level, Utc::now()).await.unwrap();
    assert!(backup::plan(&mut tx, id, batch_size).await.unwrap().is_some());
    tx.commit().await.unwrap();
    id
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_replayed_after_a_crash_or_delivered_twice_converges_on_the_same_backup(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    upload_every_kind(&app).await;
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let id = planned_backup(&app, 10).await;
    let mut tx = app.pool.begin().await.unwrap();
    assert_eq!(backup::plan(&mut tx, id, 10).await.unwrap(), None, "a duplicate plan does nothing");
    tx.commit().await.unwrap();

    let first = backup::run_batch(&app.pool, &app.storage, &tree, id, 0).await.unwrap();
    assert_eq!(first.archived, 5);
    let again = backup::run_batch(&app.pool, &app.storage, &tree, id, 0).await.unwrap();
    assert_eq!(again, backup::BatchReport::default(), "a duplicate batch finds nothing to do");
    let done = storage_backups::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!((done.status, done.file_count), (BackupStatus::Completed, 5));
    let (_, entries) = read_manifest(&tree, done.manifest_path.as_deref().unwrap());

    // A worker killed after placing its archives but before recording them: the database
    // still says pending. The redelivered batch writes them again and records them once.
    let id = planned_backup(&app, 10).await; // nothing new to take…
    assert_eq!(storage_backups::get(&app.pool, id).await.unwrap().unwrap().file_count, 0);
    sqlx::query("UPDATE storage_files SET is_backed_up = false, backup_path = NULL").execute(&app.pool).await.unwrap();
    let id = planned_backup(&app, 10).await; // …until the images look not backed up again
    let (staged_leftover, _) = tree.stage().unwrap();
    std::mem::forget(staged_leftover); // a crash leaves a staged file behind; it is never counted
    backup::run_batch(&app.pool, &app.storage, &tree, id, 0).await.unwrap();
    sqlx::query("UPDATE storage_backup_entries SET status = 'pending' WHERE backup_id = $1")
        .bind(id.0)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE storage_backups SET status = 'running' WHERE id = $1")
        .bind(id.0)
        .execute(&app.pool)
        .await
        .unwrap();
    let replayed = backup::run_batch(&app.pool, &app.storage, &tree, id, 0).await.unwrap();
    assert_eq!(replayed.archived, 5);
    let done = storage_backups::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!((done.status, done.file_count, done.failed_count), (BackupStatus::Completed, 5, 0));
    let (_, replayed_entries) = read_manifest(&tree, done.manifest_path.as_deref().unwrap());
    assert_eq!(replayed_entries.len(), entries.len());
    assert_archives_match_originals(&app, &tree, &replayed_entries);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_original_that_no_longer_matches_its_checksum_is_reported_and_not_backed_up(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ids = upload_every_kind(&app).await;
    let original = app.original_path(&ids[0]).await;
    let mut bytes = std::fs::read(&original).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&original, bytes).unwrap();

    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let id = planned_backup(&app, 10).await;
    let report = backup::run_batch(&app.pool, &app.storage, &tree, id, 0).await.unwrap();
    assert_eq!((report.archived, report.failed), (4, 1));
    let done = storage_backups::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!((done.status, done.file_count, done.failed_count), (BackupStatus::Failed, 4, 1));
    assert!(done.error.as_deref().unwrap().contains("does not match its recorded checksum"), "{:?}", done.error);
    let backed_up: bool = sqlx::query_scalar("SELECT is_backed_up FROM storage_files WHERE id = $1::uuid")
        .bind(&ids[0])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!backed_up, "a corrupt original is never taken for backed up");
    let (_, entries) = read_manifest(&tree, done.manifest_path.as_deref().unwrap());
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|e| e.image_id.to_string() != ids[0]));
    app.stop().await;
}

/// The finished backup's row, read directly.
async fn backup_row(app: &TestApp, id: shared::model::BackupId) -> storage_backups::Backup {
    storage_backups::get(&app.pool, id).await.unwrap().expect("the backup exists")
}

/// What the health check says of the backups right now.
async fn backup_health(app: &TestApp) -> shared::health::CheckResult {
    let config = &app.config;
    shared::health::probes::backup(&app.pool, &config.storage.backup_policy, &config.health, Utc::now()).await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_rolling_check_finds_damaged_archives_reports_them_and_the_next_backup_copies_them_again(pool: PgPool) {
    use shared::events::BackupVerifyRequested;
    use shared::model::BackupId;
    use shared::model::HealthStatus;

    let app = TestApp::spawn_with(pool, |config| config.maintenance.backup_verify_per_run = 1).await;
    let worker = TestWorker::start(&app.config).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    upload_every_kind(&app).await;
    let first: Value = request_backup(&app, &admin).await.json().await.unwrap();
    let first = finished_backup(&app, &admin, first["id"].as_str().unwrap()).await;
    let (_, token) = app.user();
    app.upload_image(&token, "user", "late.jpg", &[]).await;
    let second: Value = request_backup(&app, &admin).await.json().await.unwrap();
    let second = finished_backup(&app, &admin, second["id"].as_str().unwrap()).await;
    let first_id = BackupId(first["id"].as_str().unwrap().parse().unwrap());
    let second_id = BackupId(second["id"].as_str().unwrap().parse().unwrap());
    assert_eq!((first["file_count"].as_i64(), second["file_count"].as_i64()), (Some(5), Some(1)));

    // One archive of the first backup disappears, another rots by one bit.
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let (_, entries) = read_manifest(&tree, first["manifest_path"].as_str().unwrap());
    let root = app.config.storage.backup_path.clone();
    let (lost, rotten) = (&entries[0], &entries[1]);
    std::fs::remove_file(root.join(&lost.archive_path)).unwrap();
    let mut bytes = std::fs::read(root.join(&rotten.archive_path)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(root.join(&rotten.archive_path), bytes).unwrap();
    assert_eq!(backup_health(&app).await.status, HealthStatus::Ok);

    // The scheduled run checks one backup (backupVerifyPerRun = 1): the one never checked
    // and oldest, the first.
    let requested_at = Utc::now();
    shared::db::outbox::enqueue(&app.pool, BackupVerifyRequested { requested_at }).await.unwrap();
    eventually(TIMEOUT, "the rolling check reads the first backup", || async {
        backup_row(&app, first_id).await.verified_at.is_some()
    })
    .await;
    let checked = backup_row(&app, first_id).await;
    assert_eq!(checked.verify_status.as_deref(), Some("corrupt"));
    let report = checked.verify_report.clone().unwrap();
    assert_eq!((report["checked"].as_u64(), report["intact"].as_u64()), (Some(5), Some(3)), "{report}");
    assert_eq!((report["missing"].as_u64(), report["corrupt"].as_u64()), (Some(1), Some(1)), "{report}");
    let mut kinds: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["image_id"].as_str().unwrap().to_owned(), p["kind"].as_str().unwrap().to_owned()))
        .collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        kinds,
        [(rotten.image_id.to_string(), "corrupt".to_owned()), (lost.image_id.to_string(), "missing".to_owned())]
    );
    let shown: Value = get_backup(&app, &admin, &first_id.to_string()).await.json().await.unwrap();
    assert_eq!(shown["verify_report"]["missing"], 1, "the API shows the report: {shown}");
    assert!(backup_row(&app, second_id).await.verified_at.is_none(), "one backup per run");

    // Both images lost their only good copy: not backed up any more, and health says so.
    let marked: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM storage_files WHERE NOT is_backed_up AND backup_path IS NULL ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut damaged = vec![lost.image_id.0, rotten.image_id.0];
    damaged.sort();
    assert_eq!(marked, damaged);
    let health = backup_health(&app).await;
    assert_eq!(health.status, HealthStatus::Degraded, "{:?}", health.problems());
    assert!(health.problems().iter().any(|p| p.contains("damaged archives")), "{:?}", health.problems());

    // The same run delivered again goes on with the next backup, not the first again.
    let first_checked_at = backup_row(&app, first_id).await.verified_at;
    shared::db::outbox::enqueue(&app.pool, BackupVerifyRequested { requested_at }).await.unwrap();
    eventually(TIMEOUT, "the duplicate run reads the second backup", || async {
        backup_row(&app, second_id).await.verified_at.is_some()
    })
    .await;
    assert_eq!(backup_row(&app, second_id).await.verify_status.as_deref(), Some("ok"));
    assert_eq!(backup_row(&app, first_id).await.verified_at, first_checked_at);

    // The next backup copies exactly the two images again, and health is ok once it completed.
    let third: Value = request_backup(&app, &admin).await.json().await.unwrap();
    let third = finished_backup(&app, &admin, third["id"].as_str().unwrap()).await;
    assert_eq!((third["status"].as_str(), third["file_count"].as_i64()), (Some("completed"), Some(2)), "{third}");
    let (_, entries) = read_manifest(&tree, third["manifest_path"].as_str().unwrap());
    let mut copied: Vec<Uuid> = entries.iter().map(|e| e.image_id.0).collect();
    copied.sort();
    assert_eq!(copied, damaged);
    assert_archives_match_originals(&app, &tree, &entries);
    let health = backup_health(&app).await;
    assert_eq!(health.status, HealthStatus::Ok, "{:?}", health.problems());

    // A backup whose manifest is lost is damaged as a whole, through the admin's check.
    let (_, user) = app.user();
    let verify = |token: String, id: BackupId| {
        let url = app.url(&format!("/storage/backups/{id}/verify"));
        let request = app.client.post(url).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(verify(user, second_id).await, StatusCode::FORBIDDEN);
    std::fs::remove_file(root.join(second["manifest_path"].as_str().unwrap())).unwrap();
    let before = backup_row(&app, second_id).await.verified_at;
    assert_eq!(verify(admin.clone(), second_id).await, StatusCode::ACCEPTED);
    eventually(TIMEOUT, "the admin's check reads the second backup again", || async {
        backup_row(&app, second_id).await.verified_at != before
    })
    .await;
    let checked = backup_row(&app, second_id).await;
    assert_eq!(checked.verify_status.as_deref(), Some("corrupt"));
    let report = checked.verify_report.unwrap();
    assert!(report["manifest_error"].as_str().is_some(), "{report}");
    let late_backed_up: bool =
        sqlx::query_scalar("SELECT is_backed_up FROM storage_files WHERE original_name = 'late.jpg'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!late_backed_up, "its only copy was in the backup without a manifest");
    worker.stop().await;
    app.stop().await;
}

/// Twelve 12 MP photos in batches of one, so that a backup takes long enough to be killed in
/// the middle of.
async fn upload_photos(app: &TestApp, count: usize) -> Vec<String> {
    let photo = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benches/images/photo-12mp.jpg"))
        .expect("the 12 MP fixture");
    let (_, token) = app.user();
    let mut ids = Vec::new();
    for i in 0..count {
        let response = app.upload(&token, "user", &format!("{i}.jpg"), photo.clone(), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_worker_killed_mid_backup_leaves_nothing_counted_that_is_not_verified_and_another_finishes_it(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.storage.backup_policy.batch_size = 1).await;
    let ids = upload_photos(&app, 12).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());

    let mut victim = e2e::spawn_worker_process(&app.config);
    let accepted: Value = request_backup(&app, &admin).await.json().await.unwrap();
    let id = shared::model::BackupId(accepted["id"].as_str().unwrap().parse().unwrap());
    // SIGKILL as soon as the first batch is recorded, in the middle of the others.
    let done_count = || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM storage_backup_entries WHERE backup_id = $1 AND status = 'done'")
                .bind(id.0)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        done
    };
    let started = std::time::Instant::now();
    while done_count().await == 0 {
        assert!(started.elapsed() < TIMEOUT, "the first batch is archived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    victim.kill().expect("SIGKILL");
    victim.wait().unwrap();
    let done_at_kill = done_count().await;
    assert!(done_at_kill < 12, "killed before the end ({done_at_kill} of 12 done)");

    // Whatever the killed worker left: every archive counted as done is whole and verified,
    // and no backed-up flag points at an archive that is not.
    let tree = BackupTree::open(&app.config.storage.backup_path).unwrap();
    let counted: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT f.id, f.backup_path FROM storage_files f WHERE f.is_backed_up ORDER BY f.id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(counted.len() as i64 >= done_at_kill);
    for (image, archive_path) in &counted {
        let original = std::fs::read(app.original_path(&image.to_string()).await).unwrap();
        let mut restored = Vec::new();
        archive::extract(BufReader::new(tree.open_file(Path::new(archive_path)).unwrap()), &mut restored).unwrap();
        assert!(restored == original, "the archive of {image} counted as done is whole");
    }
    assert_eq!(storage_backups::get(&app.pool, id).await.unwrap().unwrap().status, BackupStatus::Running);

    // Another worker takes the redelivered batches and finishes the backup, every image once.
    let mut survivor = e2e::spawn_worker_process(&app.config);
    let backup = finished_backup(&app, &admin, &id.to_string()).await;
    assert_eq!((backup["status"].as_str(), backup["file_count"].as_i64()), (Some("completed"), Some(12)), "{backup}");
    let (_, entries) = read_manifest(&tree, backup["manifest_path"].as_str().unwrap());
    let mut listed: Vec<String> = entries.iter().map(|e| e.image_id.to_string()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected, "each image listed once");
    assert_archives_match_originals(&app, &tree, &entries);
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    app.stop().await;
}

/// A request's id travels with its events into the worker, and on into the events the
/// worker's job queues: the batches a requested backup is planned into carry it too.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_request_id_of_a_backup_request_reaches_the_batches_the_worker_plans(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.storage.backup_policy.batch_size = 2).await;
    let worker = TestWorker::start(&app.config).await;
    upload_every_kind(&app).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let request =
        app.client.post(app.url("/storage/backup")).bearer_auth(&admin).header("X-Request-Id", "trace-backup-7");
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let backup = e2e::finished(&app, &admin, &format!("/storage/backups/{id}")).await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let ids: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, payload->>'request_id' FROM outbox
         WHERE event_type IN ('backup.requested', 'backup_batch.requested') ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(ids.len() >= 3, "the request and at least two batches: {ids:?}");
    assert!(ids.iter().all(|(_, id)| id.as_deref() == Some("trace-backup-7")), "{ids:?}");
    worker.stop().await;
    app.stop().await;
}
