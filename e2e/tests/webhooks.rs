//! Webhooks: the notifications posted, signed, to the main app's HTTP endpoints, once per
//! endpoint, with a failing endpoint retried with back-off until it takes the event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::test_support::{TestApp, images};
use e2e::TestWorker;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, Server, handler};
use secrecy::SecretString;
use serde_json::Value;
use shared::config::WebhookEndpoint;
use shared::test_support::eventually;
use shared::webhooks::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(60);

/// One request an endpoint received.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Requests still to be answered 500.
    failures_left: usize,
}

/// A webhook endpoint on a free port that records what it receives and answers 500 to its
/// first `failures` requests.
struct Receiver {
    url: String,
    inbox: Arc<Mutex<Inbox>>,
    stop: CancellationToken,
}

#[handler]
fn receive(request: &poem::Request, body: Vec<u8>, inbox: Data<&Arc<Mutex<Inbox>>>) -> StatusCode {
    let header = |name: &str| request.header(name).unwrap_or_default().to_owned();
    let mut inbox = inbox.lock().unwrap();
    inbox.received.push(Received {
        event: header(EVENT_HEADER),
        delivery: header(DELIVERY_HEADER),
        signature: header(SIGNATURE_HEADER),
        body,
    });
    if inbox.failures_left > 0 {
        inbox.failures_left -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let inbox = Arc::new(Mutex::new(Inbox { received: Vec::new(), failures_left: failures }));
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let address = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let stop = CancellationToken::new();
        let app = Route::new().at("/hook", poem::post(receive)).data(Arc::clone(&inbox));
        let stopped = stop.clone();
        tokio::spawn(Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            async move { stopped.cancelled().await },
            None,
        ));
        Self { url: format!("http://{address}/hook"), inbox, stop }
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().received.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn endpoint(name: &str, receiver: &Receiver, secret: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        name: name.to_owned(),
        url: receiver.url.clone(),
        secret: SecretString::from(secret.to_owned()),
        events: vec!["image.processed".to_owned(), "image.failed".to_owned()],
    }
}

/// Checks `t=…,v1=…` against the body and the endpoint's secret.
fn assert_signed(received: &Received, secret: &str) {
    let timestamp: i64 =
        received.signature.strip_prefix("t=").and_then(|rest| rest.split(',').next()).unwrap().parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 600, "a fresh timestamp");
    assert_eq!(received.signature, signature(secret.as_bytes(), timestamp, &received.body));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_processed_image_is_posted_signed_to_each_endpoint_once_and_a_failing_one_is_retried(pool: PgPool) {
    let steady = Receiver::start(0).await;
    let flaky = Receiver::start(2).await;
    let app = TestApp::spawn_with(pool, |config| {
        config.webhooks.endpoints =
            vec![endpoint("steady", &steady, "steady-secret"), endpoint("flaky", &flaky, "flaky-secret")];
    })
    .await;
    let worker = TestWorker::start(&app.config).await;
    let (_, token) = app.user();
    let response = app.upload(&token, "user", "a.jpg", images::jpeg(640, 480), &[]).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // The flaky endpoint answers 500 twice: the job is retried (1 s apart in tests) until it
    // takes the event on the third request.
    eventually(TIMEOUT, "the flaky endpoint took the event", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_deliveries WHERE endpoint = 'flaky'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let steady_got = steady.received();
    let flaky_got = flaky.received();
    assert_eq!(steady_got.len(), 1, "the steady endpoint is not posted to again on the retries");
    assert_eq!(flaky_got.len(), 3);
    for received in &flaky_got {
        assert_eq!(received.delivery, flaky_got[0].delivery, "one delivery id for every attempt");
    }
    assert_eq!(steady_got[0].delivery, flaky_got[0].delivery);
    assert_signed(&steady_got[0], "steady-secret");
    assert_signed(&flaky_got[2], "flaky-secret");
    let envelope: Value = serde_json::from_slice(&steady_got[0].body).unwrap();
    assert_eq!((steady_got[0].event.as_str(), envelope["type"].as_str()), ("image.processed", Some("image.processed")));
    assert_eq!(envelope["payload"]["image_id"], id);
    assert_eq!(envelope["id"], steady_got[0].delivery);
    worker.stop().await;
}
