//! The file audit: orphan files are quarantined, missing originals reported, and nothing
//! live is ever moved.

use super::*;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_file_audit_quarantines_old_orphans_reports_missing_originals_and_never_moves_live_files(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let ids = upload_every_kind(&app).await;
    eventually(TIMEOUT, "every thumbnail is made", || async {
        count(&app.pool, "SELECT count(*) FROM storage_files WHERE thumbnail_status <> 'ready'").await == 0
    })
    .await;
    worker.stop().await;
    let storage: &Storage = &app.storage;
    let root = storage.root().to_owned();
    // Every live file is old enough to be quarantined: only its row protects it.
    for file in files_under(&root.join("images")) {
        set_age(&file, TWO_HOURS);
    }
    let stranger = Uuid::now_v7();
    let old_orphan = format!("images/user/{stranger}/images/{}.jpg", Uuid::now_v7());
    let young_orphan = format!("images/user/{stranger}/thumbnails/{}_small.jpg", Uuid::now_v7());
    write_aged(&root.join(&old_orphan), TWO_HOURS);
    write_aged(&root.join(&young_orphan), Duration::ZERO);
    write_aged(&root.join(".staging/left-by-a-crash.part"), TWO_HOURS);
    write_aged(&root.join(".staging/in-flight.part"), Duration::ZERO);
    // Two originals lost from disk, one of them with a backup copy.
    let (backed_up, lost) = (&ids[0], &ids[1]);
    for id in [backed_up, lost] {
        std::fs::remove_file(app.original_path(id).await).unwrap();
    }
    sqlx::query("UPDATE storage_files SET is_backed_up = true, backup_path = 'day/backup/x.zst' WHERE id = $1::uuid")
        .bind(backed_up)
        .execute(&app.pool)
        .await
        .unwrap();
    let live_files: Vec<String> = sqlx::query_scalar(
        "SELECT file_path FROM storage_files WHERE deleted_at IS NULL AND NOT id = ANY($1::uuid[])
         UNION ALL SELECT file_path FROM storage_thumbnails",
    )
    .bind(vec![backed_up.parse::<Uuid>().unwrap(), lost.parse::<Uuid>().unwrap()])
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(live_files.len(), ids.len() - 2 + 3 * ids.len());

    let report = file_audit::run(&app.pool, storage, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!(report.scanned_files as usize, live_files.len() + 2);
    assert_eq!((report.orphans_quarantined, report.recent_unreferenced), (1, 1));
    let quarantined = Path::new(QUARANTINE_DIR).join(Utc::now().format("%Y-%m-%d").to_string()).join(&old_orphan);
    assert_eq!(report.quarantined_sample, [quarantined.to_string_lossy()]);
    assert!(root.join(&quarantined).exists() && !root.join(&old_orphan).exists());
    assert!(root.join(&young_orphan).exists(), "a young file may be about to get its row");
    assert_eq!(report.stale_temp_removed, 1);
    assert!(!root.join(".staging/left-by-a-crash.part").exists() && root.join(".staging/in-flight.part").exists());
    for path in &live_files {
        assert!(root.join(path).exists(), "{path} was moved");
    }
    assert_eq!(report.missing_originals, 2);
    let mut missing: Vec<(String, bool, Option<String>)> =
        report.missing_sample.iter().map(|m| (m.image_id.0.to_string(), m.backed_up, m.backup_path.clone())).collect();
    missing.sort();
    let mut expected =
        vec![(backed_up.clone(), true, Some("day/backup/x.zst".to_owned())), (lost.clone(), false, None)];
    expected.sort();
    assert_eq!(missing, expected);
    let (status, details) = latest_check(&app.pool, "files").await;
    assert_eq!(status, "degraded");
    assert_eq!(details["missing_originals"], 2);
    assert_eq!(details["orphans_quarantined"], 1);
    assert_eq!(details["stale_temp_removed"], 1);
    assert!(details["missing_sample"].as_array().unwrap().iter().any(|m| m["backed_up"] == true));

    // Quarantine is outside the scan: a second audit moves nothing more.
    let again = file_audit::run(&app.pool, storage, &app.config.maintenance, Utc::now()).await.unwrap();
    assert_eq!((again.orphans_quarantined, again.stale_temp_removed, again.missing_originals), (0, 0, 2));
    app.stop().await;
}
