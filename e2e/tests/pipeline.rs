//! The whole pipeline through its real entry points: API (with its outbox relay) →
//! RabbitMQ → workers → thumbnails and verified checksums, including faults.

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use api::test_support::{TestApp, images};
use e2e::TestWorker;
use reqwest::StatusCode;
use serde_json::Value;
use shared::broker::{JobQueue, Publisher};
use shared::db::outbox;
use shared::events::ImageUploaded;
use shared::model::processing_error::{CHECKSUM_MISMATCH, THUMBNAILS_UNDECODABLE};
use shared::test_support::{TcpProxy, TestBroker, eventually};
use sqlx::PgPool;

const PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benches/images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn encode(image: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

async fn image_view(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_image(token, id).await.json().await.unwrap()
}

/// Waits until an image has its thumbnails and a verified checksum, and returns its view.
/// On time-out it fails with the last view and the outbox, which tell a stalled relay from a
/// failing job.
async fn processed(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PROCESSING_TIMEOUT;
    loop {
        let view = image_view(app, token, id).await;
        if view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified" {
            return view;
        }
        if tokio::time::Instant::now() >= deadline {
            let outbox: Vec<(String, i32, Option<String>, bool)> = sqlx::query_as(
                "SELECT event_type, attempts, last_error, published_at IS NOT NULL FROM outbox ORDER BY id",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            panic!(
                "image {id} not processed after {PROCESSING_TIMEOUT:?}: {view}\noutbox (type, attempts, error, published): {outbox:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks each thumbnail: inside its box, aspect ratio kept, never upscaled, on disk with the
/// recorded size.
fn assert_thumbnails(app: &TestApp, view: &Value, oriented: (u32, u32)) {
    let variants = view["thumbnails"]["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), app.config.storage.thumbnail_sizes.len(), "{view}");
    for variant in variants {
        let name = variant["size"].as_str().unwrap();
        let bound = app.config.storage.thumbnail_sizes[name];
        let (width, height) = (variant["width"].as_u64().unwrap() as u32, variant["height"].as_u64().unwrap() as u32);
        assert!(width <= bound.width && height <= bound.height, "{name}: {width}x{height} outside its box");
        assert!(width <= oriented.0 && height <= oriented.1, "{name} was upscaled");
        assert!(
            width == bound.width.min(oriented.0) || height == bound.height.min(oriented.1),
            "{name} does not fill its box"
        );
        let expected = oriented.0 as f64 / oriented.1 as f64;
        let actual = width as f64 / height as f64;
        assert!(
            (actual - expected).abs() / expected < 0.02 + 1.0 / height.min(width) as f64,
            "{name}: aspect {actual} vs {expected}"
        );
        let bytes = std::fs::read(app.storage.root().join(variant["path"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, variant["file_size"].as_u64().unwrap());
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (width, height));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_format_gets_its_thumbnails_and_a_verified_checksum(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let animated = {
        let mut out = Vec::new();
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        for shade in [0u8, 120, 240] {
            let frame = image::RgbaImage::from_pixel(320, 200, image::Rgba([shade, 50, 50, 255]));
            encoder.encode_frame(image::Frame::new(frame)).unwrap();
        }
        drop(encoder);
        out
    };
    let lossless_webp =
        encode(image::DynamicImage::ImageRgb8(image::RgbImage::new(500, 260)), image::ImageFormat::WebP);
    let cases = [
        ("photo.jpg", fixture("photo-2mp.jpg"), (1600, 1200), "image/jpeg"),
        ("alpha.png", images::png(700, 350), (700, 350), "image/webp"),
        ("anim.gif", animated, (320, 200), "image/jpeg"),
        ("lossy.webp", fixture("photo.webp"), (1600, 1200), "image/jpeg"),
        ("lossless.webp", lossless_webp, (500, 260), "image/jpeg"),
        (
            "tiny.png",
            encode(image::DynamicImage::ImageRgb8(image::RgbImage::new(90, 60)), image::ImageFormat::Png),
            (90, 60),
            "image/jpeg",
        ),
    ];
    let mut uploaded = Vec::new();
    for (name, bytes, size, thumbnail_mime) in cases {
        let response = app.upload(&token, "user", name, bytes, &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{name}");
        let body: Value = response.json().await.unwrap();
        uploaded.push((name, body["id"].as_str().unwrap().to_owned(), size, thumbnail_mime));
    }
    for (name, id, size, thumbnail_mime) in uploaded {
        let view = processed(&app, &token, &id).await;
        assert_thumbnails(&app, &view, size);
        for variant in view["thumbnails"]["variants"].as_array().unwrap() {
            assert_eq!(variant["mime_type"], thumbnail_mime, "{name}");
        }
        assert!(view["processing_error"].is_null(), "{name}: {view}");
    }
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_duplicated_event_changes_nothing_the_second_time(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "a.jpg", images::jpeg(800, 600), &[]).await;
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let before = processed(&app, &token, &id).await;
    let thumbnail = app.storage.root().join(before["thumbnails"]["variants"][0]["path"].as_str().unwrap());
    let written = std::fs::metadata(&thumbnail).unwrap().modified().unwrap();

    // Deliver the very same event (same id) again, then a sentinel upload behind it.
    let (event_id, payload): (uuid::Uuid, Value) =
        sqlx::query_as("SELECT event_id, payload FROM outbox").fetch_one(&app.pool).await.unwrap();
    let publisher = Publisher::new(&app.config.rabbitmq, "test duplicate");
    publisher.publish_event(event_id, "image.uploaded", serde_json::to_vec(&payload).unwrap()).await.unwrap();
    let sentinel = app.upload(&token, "user", "b.jpg", images::jpeg(64, 64), &[]).await;
    let sentinel = sentinel.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    processed(&app, &token, &sentinel).await;

    let after = image_view(&app, &token, &id).await;
    assert_eq!(after, before);
    assert_eq!(std::fs::metadata(&thumbnail).unwrap().modified().unwrap(), written, "the thumbnail was rewritten");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails WHERE image_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
    publisher.close().await;
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_undecodable_image_is_dead_lettered_and_its_metadata_says_why(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let worker = TestWorker::start(&app.config).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    // A PNG whose header and end chunk are intact but whose pixel data is garbage.
    let mut bytes = images::png(400, 300);
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle - 200..middle + 200] {
        *byte = 0x5A;
    }
    let response = app.upload(&token, "user", "broken.png", bytes, &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let dead = broker.topology.dead_letter_queue(JobQueue::Thumbnails);
    broker.wait_for_depth(&dead, 1, PROCESSING_TIMEOUT).await;
    let messages = broker.take_all(&dead).await;
    assert!(messages[0].header(shared::broker::headers::ERROR).is_some());
    eventually(PROCESSING_TIMEOUT, "the failure is recorded", || async {
        image_view(&app, &token, &id).await["thumbnails"]["status"] == "failed"
    })
    .await;
    let view = image_view(&app, &token, &id).await;
    assert_eq!(view["processing_error"], THUMBNAILS_UNDECODABLE, "a stable code and sentence, no decoder text");
    worker.stop().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn uploads_succeed_while_the_broker_is_unreachable_and_are_processed_once_it_is_back(pool: PgPool) {
    let rabbit = shared::test_support::rabbit_config();
    let proxy = TcpProxy::start(&rabbit).await;
    let proxied = proxy.proxied(&rabbit);
    proxy.stop().await;
    let app = TestApp::spawn_with_broker_down(pool, |c| c.rabbitmq = proxied.clone()).await;
    let mut direct = (*app.config).clone();
    direct.rabbitmq = rabbit.clone();
    let worker = TestWorker::start(&direct).await;
    let (_, token) = app.user();

    let mut ids = Vec::new();
    for i in 0..3 {
        let response = app.upload(&token, "user", &format!("{i}.jpg"), images::jpeg(300, 200), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 3);

    proxy.resume().await;
    for id in &ids {
        let view = processed(&app, &token, id).await;
        assert_thumbnails(&app, &view, (300, 200));
    }
    worker.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn broker_connections_cut_while_uploads_and_jobs_flow_heal_without_restarts(pool: PgPool) {
    let rabbit = shared::test_support::rabbit_config();
    let proxy = TcpProxy::start(&rabbit).await;
    let proxied = proxy.proxied(&rabbit);
    let app = TestApp::spawn_with(pool, |c| c.rabbitmq = proxied.clone()).await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();

    let mut ids = Vec::new();
    for round in 0..4 {
        for i in 0..3 {
            let response = app.upload(&token, "user", &format!("{round}-{i}.jpg"), images::jpeg(640, 480), &[]).await;
            assert_eq!(response.status(), StatusCode::CREATED);
            ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
        }
        match round {
            0 => proxy.cut_connections(),
            1 => {
                proxy.stop().await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                proxy.resume().await;
            }
            2 => {
                proxy.black_hole();
                tokio::time::sleep(Duration::from_secs(3)).await;
                proxy.resume().await;
            }
            _ => {}
        }
    }
    for id in &ids {
        processed(&app, &token, id).await;
    }
    worker.stop().await;
}

/// The API, the test's broker topology and one user's JPEG stored, with no worker yet:
/// (app, broker, the user's token, the image id, the original's path on disk).
async fn one_upload_before_any_worker(pool: PgPool) -> (TestApp, TestBroker, String, String, std::path::PathBuf) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "a.jpg", images::jpeg(320, 240), &[]).await;
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let path = app.storage.root().join(body["path"].as_str().unwrap());
    (app, broker, token, id, path)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_stored_file_that_no_longer_matches_its_checksum_is_marked_corrupt(pool: PgPool) {
    let (app, broker, token, id, path) = one_upload_before_any_worker(pool).await;
    // Bit rot between upload and verification.
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let worker = TestWorker::start(&app.config).await;
    eventually(PROCESSING_TIMEOUT, "the image is marked corrupt", || async {
        image_view(&app, &token, &id).await["checksum"]["status"] == "corrupt"
    })
    .await;
    let dead = broker.topology.dead_letter_queue(JobQueue::Checksums);
    broker.wait_for_depth(&dead, 1, PROCESSING_TIMEOUT).await;
    let message = broker.take_all(&dead).await.remove(0);
    assert_eq!(message.header(shared::broker::headers::ATTEMPTS).as_deref(), Some("3"));
    let view = image_view(&app, &token, &id).await;
    assert_eq!(view["checksum"]["status"], "corrupt");
    assert_eq!(view["processing_error"], CHECKSUM_MISMATCH, "a stable code and sentence, no hashes");
    worker.stop().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_worker_killed_mid_job_leaves_the_job_to_another_and_nothing_duplicated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let photo = fixture("photo-12mp.jpg");
    let mut ids = Vec::new();
    for i in 0..4 {
        let response = app.upload(&token, "user", &format!("{i}.jpg"), photo.clone(), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let mut victim = e2e::spawn_worker_process(&app.config);
    // Kill it as soon as it has finished something, so that it dies in the middle of the rest.
    eventually(PROCESSING_TIMEOUT, "the first worker made progress", || async {
        let ready: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM storage_files WHERE thumbnail_status = 'ready' OR checksum_status = 'verified'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        ready > 0
    })
    .await;
    victim.kill().expect("SIGKILL");
    victim.wait().unwrap();

    let mut survivor = e2e::spawn_worker_process(&app.config);
    for id in &ids {
        let view = processed(&app, &token, id).await;
        assert_thumbnails(&app, &view, (4032, 3024));
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails").fetch_one(&app.pool).await.unwrap();
    assert_eq!(rows, 3 * ids.len() as i64);
    let original = app.storage.root().join(image_view(&app, &token, &ids[0]).await["path"].as_str().unwrap());
    let thumbnail_dir = original.parent().and_then(Path::parent).unwrap().join("thumbnails");
    let thumbnail_files = std::fs::read_dir(thumbnail_dir).unwrap().count();
    assert_eq!(thumbnail_files, 3 * ids.len());

    // SIGTERM: the survivor finishes and exits cleanly.
    let pid = survivor.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || survivor.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the worker exits cleanly on SIGTERM: {status}");
}

/// An original that cannot be read (a disk or store problem, here the file taken away)
/// fails both jobs until their attempts run out: the image stays pending, with nothing said
/// to its owner, and is finished once the file is back and the work is queued again.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jobs_that_run_out_of_attempts_on_infrastructure_errors_leave_the_image_pending(pool: PgPool) {
    let (app, broker, token, id, path) = one_upload_before_any_worker(pool).await;
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();

    let worker = TestWorker::start(&app.config).await;
    for queue in [JobQueue::Thumbnails, JobQueue::Checksums] {
        broker.wait_for_depth(&broker.topology.dead_letter_queue(queue), 1, PROCESSING_TIMEOUT).await;
    }
    // Stopping waits for the jobs in flight, their dead-letter handling included.
    worker.stop().await;
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_failures WHERE final").fetch_one(&app.pool).await.unwrap();
    assert_eq!(failures, 2, "the causes are kept for operators");
    let view = image_view(&app, &token, &id).await;
    assert_eq!(
        (view["thumbnails"]["status"].as_str(), view["checksum"]["status"].as_str()),
        (Some("pending"), Some("pending"))
    );
    assert!(view["processing_error"].is_null(), "{view}");

    std::fs::rename(&aside, &path).unwrap();
    let worker = TestWorker::start(&app.config).await;
    let image_id = shared::model::ImageId(id.parse().unwrap());
    outbox::enqueue(&app.pool, ImageUploaded { image_id }).await.unwrap();
    processed(&app, &token, &id).await;
    worker.stop().await;
    broker.delete().await;
}

/// A GIF whose logical screen is one pixel and whose one frame is `side` × `side` pixels of
/// one colour: a few hundred kilobytes that pass the upload's pixel check (the screen) and
/// decode to `side² × 4` bytes unless the frame itself is bounded.
fn gif_bomb(side: u16) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, 1, 1, &[0, 0, 0, 255, 255, 255]).unwrap();
        let pixels = vec![1u8; usize::from(side) * usize::from(side)];
        encoder
            .write_frame(&gif::Frame { width: side, height: side, buffer: pixels.into(), ..Default::default() })
            .unwrap();
    }
    out
}

/// The largest resident size a process has reached, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A burst of GIFs whose frames hold 64 million pixels each behind a one-pixel screen
/// (256 MB apiece once decoded), among real photos: the worker refuses each within its
/// allocation limit and stays under the documented bound, and the photos are processed,
/// their thumbnails written readable by the service's user and group only.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_burst_of_decompression_bombs_leaves_the_worker_within_its_memory_bound(pool: PgPool) {
    const BOUND_BYTES: u64 = 192 * 1024 * 1024;
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let bomb = gif_bomb(8000);
    let mut bombs = Vec::new();
    let mut photos = Vec::new();
    for i in 0..4 {
        let response = app.upload(&token, "user", &format!("bomb-{i}.gif"), bomb.clone(), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED, "the screen is within the pixel limit");
        bombs.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
        if i % 2 == 0 {
            let response = app.upload(&token, "user", &format!("{i}.jpg"), fixture("photo-12mp.jpg"), &[]).await;
            photos.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
        }
    }
    let mut worker = e2e::spawn_worker_process(&app.config);
    for id in &bombs {
        eventually(PROCESSING_TIMEOUT, &format!("bomb {id} is refused"), || async {
            image_view(&app, &token, id).await["thumbnails"]["status"] == "failed"
        })
        .await;
    }
    for id in &photos {
        processed(&app, &token, id).await;
    }
    let peak = peak_memory(worker.id());
    // What the worker process wrote follows `storage.umask` (027 by default).
    use std::os::unix::fs::PermissionsExt;
    let view = image_view(&app, &token, &photos[0]).await;
    let thumbnail = app.storage.root().join(view["thumbnails"]["variants"][0]["path"].as_str().unwrap());
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&thumbnail), 0o640, "thumbnail files are not world-readable");
    assert_eq!(mode(thumbnail.parent().unwrap()), 0o750, "nor their folders");
    // SIGTERM, not SIGKILL: the worker closes its database connections before it exits, so
    // the test's database can be dropped.
    std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || worker.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the worker exits cleanly: {status}");
    assert!(peak < BOUND_BYTES, "the worker peaked at {} MiB", peak >> 20);
}
