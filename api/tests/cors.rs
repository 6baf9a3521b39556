//! CORS: off by default; with `server.corsOrigins`, a listed origin's preflight and requests
//! are answered with the CORS headers, another origin is refused.

use api::test_support::TestApp;
use reqwest::StatusCode;
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_listed_origin_may_call_the_api_and_another_may_not(pool: PgPool) {
    let app =
        TestApp::spawn_with(pool, |config| config.server.cors_origins = vec!["https://app.example".to_owned()]).await;
    let (_, token) = app.user();
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/storage/images"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, idempotency-key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("idempotency-key"), "{allowed}");

    let listed = app.client.get(app.url("/storage/quota")).bearer_auth(&token).header("Origin", "https://app.example");
    let answered = listed.send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(answered.headers()["access-control-allow-origin"], "https://app.example");
    let exposed = answered.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("x-request-id") && exposed.contains("etag"), "{exposed}");

    let other = app.client.get(app.url("/storage/quota")).bearer_auth(&token).header("Origin", "https://evil.example");
    let refused = other.send().await.unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn without_listed_origins_no_cross_origin_request_is_answered_for(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let request = app.client.get(app.url("/storage/quota")).bearer_auth(&token).header("Origin", "https://app.example");
    let answered = request.send().await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK, "same-origin callers and servers are unaffected");
    assert!(
        !answered.headers().contains_key("access-control-allow-origin"),
        "a browser keeps the answer from the page"
    );
    app.stop().await;
}
