//! RabbitMQ itself restarted while uploads and jobs flow. This stops the machine's shared
//! broker, so `scripts/test` runs tests whose name contains `broker_restart` on their own,
//! one at a time, after every other test.

use std::process::Command;
use std::time::Duration;

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use serde_json::Value;
use shared::test_support::eventually;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn rabbitmqctl(arguments: &[&str]) {
    let status = Command::new("rabbitmqctl").args(arguments).status().expect("running rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {arguments:?} failed: {status}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn broker_restart_while_uploads_and_jobs_flow_loses_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(worker::run((*app.config).clone(), shutdown.clone()));
    let (_, token) = app.user();

    let mut ids = Vec::new();
    let mut upload = async |name: String| {
        let response = app.upload(&token, "user", &name, images::jpeg(640, 480), &[]).await;
        assert_eq!(response.status(), StatusCode::CREATED, "uploads succeed whatever the broker does");
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    };
    for i in 0..5 {
        upload(format!("before-{i}.jpg")).await;
    }
    rabbitmqctl(&["stop_app"]);
    for i in 0..5 {
        upload(format!("during-{i}.jpg")).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    for i in 0..5 {
        upload(format!("after-{i}.jpg")).await;
    }

    for id in &ids {
        eventually(Duration::from_secs(120), &format!("image {id} is processed"), || async {
            let view: Value = app.get_image(&token, id).await.json().await.unwrap();
            view["thumbnails"]["status"] == "ready" && view["checksum"]["status"] == "verified"
        })
        .await;
    }
    let thumbnails: i64 =
        sqlx::query_scalar("SELECT count(*) FROM storage_thumbnails").fetch_one(&app.pool).await.unwrap();
    assert_eq!(thumbnails, 3 * ids.len() as i64);
    shutdown.cancel();
    worker.await.unwrap().expect("the worker exits cleanly, without having been restarted");
}
