//! `X-Request-Id`: every API answer carries one (the client's plain token, else a new one),
//! errors included, and the events a request queues carry it in their envelope.

use api::test_support::{TestApp, images};
use reqwest::StatusCode;
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_api_answer_carries_a_request_id_and_the_events_of_the_request_carry_it_too(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let headers = [("X-Request-Id", "trace-upload-1")];
    let response = app.upload_with_headers(&token, "user", "me.jpg", images::jpeg(32, 24), &[], &headers).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "trace-upload-1");
    let carried: Option<String> =
        sqlx::query_scalar("SELECT payload->>'request_id' FROM outbox WHERE event_type = 'image.uploaded'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(carried.as_deref(), Some("trace-upload-1"), "the event carries the request's id");

    // Generated when the client sends none, errors included.
    let refused = app.client.get(app.url("/storage/images/not-an-id")).bearer_auth(&token).send().await.unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let generated = refused.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    // Replaced when it is not a plain token (it would go into logs and headers as it is).
    let odd = app.client.get(app.url("/storage/quota")).bearer_auth(&token).header("X-Request-Id", "a b c");
    let answered = odd.send().await.unwrap();
    let replaced = answered.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
    app.stop().await;
}
