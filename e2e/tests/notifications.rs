//! The events the main app reads on the notifications exchange: `image.processed` once per
//! image when its thumbnails and verification are done, `image.failed` on a verdict, each
//! published once whatever the duplicate deliveries.

use std::time::Duration;

use api::test_support::{TestApp, images};
use e2e::TestWorker;
use serde_json::Value;
use shared::broker::Publisher;
use shared::events::{ImageFailed, ImageProcessed};
use shared::model::processing_error::THUMBNAILS_UNDECODABLE;
use shared::test_support::{TakenMessage, TestBroker, eventually};
use sqlx::PgPool;

const TIMEOUT: Duration = Duration::from_secs(60);

fn envelope(message: &TakenMessage) -> Value {
    serde_json::from_slice(&message.body).expect("a JSON envelope")
}

async fn upload(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> String {
    let response = app.upload(token, "user", name, bytes, &[]).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_main_app_is_told_once_that_an_image_is_processed_with_its_variants(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let inbox = broker.subscribe(&broker.topology.notifications_exchange(), "image.*").await;
    let worker = TestWorker::start(&app.config).await;
    let (owner, token) = app.user();
    let first = upload(&app, &token, "a.jpg", images::jpeg(800, 600)).await;
    let second = upload(&app, &token, "b.png", images::png(300, 400)).await;
    broker.wait_for_depth(&inbox, 2, TIMEOUT).await;

    // The first image's job delivered again (same event id), then a sentinel behind it: once
    // the sentinel's notification is in, the duplicate has been handled.
    let (event_id, payload): (uuid::Uuid, Value) = sqlx::query_as(
        "SELECT event_id, payload FROM outbox
         WHERE event_type = 'image.uploaded' AND payload -> 'payload' ->> 'image_id' = $1",
    )
    .bind(&first)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let publisher = Publisher::new(&app.config.rabbitmq, "test duplicate");
    publisher.publish_event(event_id, "image.uploaded", serde_json::to_vec(&payload).unwrap()).await.unwrap();
    let sentinel = upload(&app, &token, "c.jpg", images::jpeg(64, 64)).await;
    broker.wait_for_depth(&inbox, 3, TIMEOUT).await;
    let messages = broker.take_all(&inbox).await;

    let told: Vec<String> =
        messages.iter().map(|m| envelope(m)["payload"]["image_id"].as_str().unwrap().to_owned()).collect();
    let mut expected = vec![first.clone(), second.clone(), sentinel];
    let mut sorted = told.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "each image once: {told:?}");
    for message in &messages {
        let envelope = envelope(message);
        assert_eq!(envelope["type"], "image.processed");
        assert_eq!(envelope["version"], 1);
        assert_eq!(message.message_id(), envelope["id"].as_str(), "the message id de-duplicates");
        let event: ImageProcessed = serde_json::from_value(envelope["payload"].clone()).unwrap();
        let view = app.get_image(&token, &event.image_id.0.to_string()).await.json::<Value>().await.unwrap();
        assert_eq!(
            (view["thumbnails"]["status"].as_str(), view["checksum"]["status"].as_str()),
            (Some("ready"), Some("verified"))
        );
        assert_eq!(event.owner_id.0, owner);
        assert_eq!(view["checksum"]["value"].as_str(), Some(event.checksum.as_str()), "{view}");
        assert_eq!(event.variants.len(), app.config.storage.thumbnail_sizes.len());
        let pixels: Vec<i32> = event.variants.iter().map(|v| v.width * v.height).collect();
        assert!(pixels.windows(2).all(|pair| pair[0] <= pair[1]), "smallest first: {pixels:?}");
        for variant in &event.variants {
            let bound = app.config.storage.thumbnail_sizes[&variant.name];
            assert!(variant.width as u32 <= bound.width && variant.height as u32 <= bound.height);
            assert!(variant.file_size > 0 && variant.mime_type.starts_with("image/"));
        }
    }
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unpublished, 0);
    publisher.close().await;
    worker.stop().await;
    broker.delete().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_undecodable_image_tells_the_main_app_it_failed_and_never_that_it_is_processed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let inbox = broker.subscribe(&broker.topology.notifications_exchange(), "image.#").await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    // Header and end chunk intact, pixel data garbage: its checksum verifies, its thumbnails fail.
    let mut bytes = images::png(400, 300);
    let middle = bytes.len() / 2;
    bytes[middle - 200..middle + 200].fill(0x5A);
    let broken = upload(&app, &token, "broken.png", bytes).await;
    broker.wait_for_depth(&inbox, 1, TIMEOUT).await;
    eventually(TIMEOUT, "the broken image's checksum is verified", || async {
        app.get_image(&token, &broken).await.json::<Value>().await.unwrap()["checksum"]["status"] == "verified"
    })
    .await;
    // Anything the verification queued would be published before the sentinel's event.
    let sentinel = upload(&app, &token, "fine.jpg", images::jpeg(64, 64)).await;
    broker.wait_for_depth(&inbox, 2, TIMEOUT).await;

    let messages = broker.take_all(&inbox).await;
    let failed = envelope(&messages[0]);
    assert_eq!(failed["type"], "image.failed");
    let event: ImageFailed = serde_json::from_value(failed["payload"].clone()).unwrap();
    assert_eq!(event.image_id.0.to_string(), broken);
    assert_eq!(event.reason, THUMBNAILS_UNDECODABLE);
    let processed = envelope(&messages[1]);
    assert_eq!(
        (processed["type"].as_str(), processed["payload"]["image_id"].as_str()),
        (Some("image.processed"), Some(sentinel.as_str()))
    );
    worker.stop().await;
    broker.delete().await;
}
