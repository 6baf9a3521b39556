//! The operations page in headless Chromium (`e2e/browser/operations-page.mjs`, driven by
//! playwright-core) against the API, a worker and RabbitMQ: an admin signs in, sees the
//! dead letter of an image with its reason, re-drives it, and the queue drains and the
//! image gets its thumbnails. Needs node, `npm ci` in `e2e/browser` and Chromium
//! (`scripts/local-setup.bash` installs them); without them the test fails saying so.
//! `STAYLER_SCREENSHOT=docs/operations-page.png` saves a screenshot of the page. The
//! operator command `stayler-worker redrive` is run here too, against the same broker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use api::test_support::TestApp;
use e2e::{TestWorker, run_health_check, worker_binary, worker_environment};
use serde_json::Value;
use shared::auth::Role;
use shared::broker::{DeadLetter, JobQueue, Publisher};
use shared::test_support::TestBroker;
use sqlx::PgPool;
use uuid::Uuid;

const REASON: &str = "thumbnails: the thumbnail disk is full";
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

fn browser_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The browser to drive: `STAYLER_CHROMIUM`, or Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("STAYLER_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Fails with what to install when the browser test's tools are missing.
fn assert_browser_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "node is missing: run scripts/local-setup.bash (or apt-get install nodejs npm)"
    );
    assert!(
        browser_folder().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in e2e/browser (scripts/local-setup.bash does)"
    );
    assert!(
        chromium().is_file(),
        "Chromium is missing at {}: run scripts/local-setup.bash (or apt-get install chromium), or set STAYLER_CHROMIUM",
        chromium().display()
    );
}

/// Runs the browser script; its JSON report on success, a panic with its output otherwise.
async fn drive_page(base_url: String, token: String, queue: &'static str, image_id: String) -> Value {
    let run = tokio::task::spawn_blocking(move || {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Command::new("node")
            .arg(browser_folder().join("operations-page.mjs"))
            .args([&base_url, &token, queue, &image_id])
            .env("STAYLER_CHROMIUM", chromium())
            // A relative STAYLER_SCREENSHOT is taken from the top of the repository.
            .current_dir(workspace)
            .output()
            .expect("starting node")
    });
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser test took over {BROWSER_TIMEOUT:?}"))
        .expect("joining the browser test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed ({}):\n{stdout}\n{stderr}", output.status);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("the browser test's report {stdout:?}: {e}"))
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_redrives_a_dead_letter_from_the_operations_page_and_the_image_is_processed(pool: PgPool) {
    assert_browser_tools();
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (thumbnails, dead) =
        (broker.topology.queue(JobQueue::Thumbnails), broker.topology.dead_letter_queue(JobQueue::Thumbnails));
    let owner = app.token(Role::User, Uuid::new_v4());
    let vendor = app.token(Role::Vendor, Uuid::new_v4());
    app.upload_image(&owner, "user", "portrait.jpg", &[]).await;
    app.upload_image(&vendor, "cloth", "jacket.jpg", &[]).await;
    let image_id = app.upload_image(&owner, "user", "lost.jpg", &[]).await;

    // No worker yet: take the image's thumbnails job and give it up, as a worker would have
    // after its last attempt.
    broker.wait_for_depth(&thumbnails, 3, Duration::from_secs(30)).await;
    let jobs = broker.take_all(&thumbnails).await;
    let job = jobs
        .iter()
        .find(|job| String::from_utf8_lossy(&job.body).contains(&image_id))
        .expect("the image's thumbnails job");
    let publisher = Publisher::new(&app.config.rabbitmq, "test give-up");
    for other in jobs.iter().filter(|other| other.message_id() != job.message_id()) {
        let again = shared::broker::Outgoing {
            exchange: String::new(),
            routing_key: thumbnails.clone(),
            body: other.body.clone(),
            properties: other.properties.clone(),
            mandatory: true,
        };
        publisher.publish(&again).await.unwrap();
    }
    let given_up = DeadLetter { queue: JobQueue::Thumbnails, attempts: 3, error: REASON };
    publisher
        .publish(&broker.topology.dead_letter_message(&job.properties, job.body.clone(), &given_up))
        .await
        .unwrap();
    publisher.close().await;

    let worker = TestWorker::start(&app.config).await;
    run_health_check(&app).await;
    let admin = app.token(Role::Admin, Uuid::new_v4());
    let report = drive_page(app.base_url.clone(), admin.clone(), "thumbnails", image_id.clone()).await;
    assert_eq!(report["reason"], REASON);
    assert_eq!(report["thumbnails"], "ready");
    assert!(report["status"].as_str().unwrap().starts_with("re-drove 1 job(s) of thumbnails"), "{report}");

    assert_eq!(broker.depth(&dead).await, 0);
    let view: Value = app.get_image(&admin, &image_id).await.json().await.unwrap();
    assert_eq!(view["thumbnails"]["status"], "ready", "{view}");
    worker.stop().await;
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_redrive_command_moves_no_more_than_its_limit_back_to_the_job_queue(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let (deletions, dead) =
        (broker.topology.queue(JobQueue::Deletions), broker.topology.dead_letter_queue(JobQueue::Deletions));
    let publisher = Publisher::new(&app.config.rabbitmq, "test give-up");
    for _ in 0..3 {
        let envelope =
            shared::events::Envelope::new(shared::events::ImageDeleted { image_id: shared::model::ImageId::new() });
        let job = shared::broker::Outgoing::event(
            &broker.topology,
            envelope.id,
            "image.deleted",
            serde_json::to_vec(&envelope).unwrap(),
        );
        let given_up = DeadLetter { queue: JobQueue::Deletions, attempts: 3, error: "disk gone" };
        publisher.publish(&broker.topology.dead_letter_message(&job.properties, job.body, &given_up)).await.unwrap();
    }
    publisher.close().await;

    let config = app.config.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(worker_binary())
            .args(["redrive", "--queue", "deletions", "--limit", "2"])
            .env_clear()
            .envs(worker_environment(&config))
            .output()
            .expect("running stayler-worker redrive")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("moved 2 job(s)") && stdout.contains("1 left"), "{stdout}");
    assert_eq!((broker.depth(&deletions).await, broker.depth(&dead).await), (2, 1));
    let (actor, details): (String, serde_json::Value) =
        sqlx::query_as("SELECT actor, details FROM storage_audit_log WHERE action = 'dead_letters_redriven'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((actor.as_str(), &details["moved"], &details["remaining"]), ("operator:redrive", &2.into(), &1.into()));
    broker.delete().await;
    app.stop().await;
}
