//! The operations endpoints against the real RabbitMQ: queue depths, dead letters and their
//! re-drive are for admins only, bounded, and answer 503 at once without a broker; the
//! operations page is served with a policy of its own.

use std::time::{Duration, Instant};

use api::test_support::{TestApp, error_code, json};
use reqwest::StatusCode;
use shared::auth::Role;
use shared::broker::{DeadLetter, JobQueue, Outgoing, Publisher};
use shared::events::{Envelope, ImageUploaded};
use shared::model::ImageId;
use shared::test_support::TestBroker;
use sqlx::PgPool;
use uuid::Uuid;

/// Puts `count` given-up `image.uploaded` jobs in the thumbnails dead-letter queue.
async fn give_up(app: &TestApp, count: usize) -> Vec<ImageId> {
    let publisher = Publisher::new(&app.config.rabbitmq, "test give-up");
    let mut images = Vec::new();
    for _ in 0..count {
        let image_id = ImageId::new();
        let envelope = Envelope::new(ImageUploaded { image_id });
        let body = serde_json::to_vec(&envelope).unwrap();
        let job = Outgoing::event(publisher.topology(), envelope.id, "image.uploaded", body.clone());
        let dead = DeadLetter { queue: JobQueue::Thumbnails, attempts: 3, error: "thumbnail disk full" };
        let message = publisher.topology().dead_letter_message(&job.properties, body, &dead);
        publisher.publish(&message).await.unwrap();
        images.push(image_id);
    }
    publisher.close().await;
    images
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn only_admins_see_the_queues_and_may_redrive_their_dead_letters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let requests = [
        ("GET", "/storage/queues"),
        ("GET", "/storage/queues/thumbnails/dead-letters"),
        ("POST", "/storage/queues/thumbnails/dead-letters/redrive"),
    ];
    for (method, path) in requests {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let anonymous = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        for role in [Role::User, Role::Vendor, Role::Service] {
            let token = app.token(role, Uuid::new_v4());
            let refused = app.client.request(method.clone(), app.url(path)).bearer_auth(&token).send().await.unwrap();
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{method} {path} as {role:?}");
        }
    }
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_sees_the_dead_letters_and_redrives_no_more_than_the_limit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let broker = TestBroker::start(&app.config.rabbitmq).await;
    let images = give_up(&app, 3).await;
    let admin = app.token(Role::Admin, Uuid::new_v4());

    let queues = json(app.client.get(app.url("/storage/queues")).bearer_auth(&admin).send().await.unwrap()).await;
    let thumbnails = queues["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "thumbnails").unwrap();
    assert_eq!(thumbnails["dead_letters"], 3);
    assert_eq!(thumbnails["ready"], 0);
    assert_eq!(thumbnails["dead_letter_queue"], broker.topology.dead_letter_queue(JobQueue::Thumbnails));

    let listed = app.url("/storage/queues/thumbnails/dead-letters?limit=2");
    let dead = json(app.client.get(listed).bearer_auth(&admin).send().await.unwrap()).await;
    assert_eq!(dead["total"], 3);
    let letters = dead["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["image_id"], images[0].0.to_string());
    assert_eq!(letters[0]["reason"], "thumbnail disk full");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["event_type"], "image.uploaded");

    for limit in ["0", "1001", "many"] {
        let url = app.url(&format!("/storage/queues/thumbnails/dead-letters/redrive?limit={limit}"));
        let refused = app.client.post(url).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "limit={limit}");
        assert_eq!(error_code(refused).await, "invalid_field");
    }
    let unknown =
        app.client.get(app.url("/storage/queues/nope/dead-letters")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let redrive = app.url("/storage/queues/thumbnails/dead-letters/redrive?limit=2");
    let done = json(app.client.post(redrive).bearer_auth(&admin).send().await.unwrap()).await;
    assert_eq!((done["moved"].as_u64(), done["remaining"].as_u64()), (Some(2), Some(1)));
    let thumbnails_queue = broker.topology.queue(JobQueue::Thumbnails);
    assert_eq!(broker.depth(&thumbnails_queue).await, 2);
    assert_eq!(broker.depth(&broker.topology.dead_letter_queue(JobQueue::Thumbnails)).await, 1);
    assert_eq!(broker.depth(&broker.topology.queue(JobQueue::Checksums)).await, 0);
    broker.delete().await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn without_a_broker_the_queue_endpoints_answer_503_at_once(pool: PgPool) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap().port();
    drop(listener);
    let app = TestApp::spawn_with_broker_down(pool, |config| {
        config.rabbitmq.url = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f").into();
    })
    .await;
    let admin = app.token(Role::Admin, Uuid::new_v4());
    let requests = [
        app.client.get(app.url("/storage/queues")),
        app.client.get(app.url("/storage/queues/thumbnails/dead-letters")),
        app.client.post(app.url("/storage/queues/thumbnails/dead-letters/redrive")),
    ];
    for request in requests {
        let started = Instant::now();
        let response = request.bearer_auth(&admin).send().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(error_code(response).await, "service_unavailable");
    }
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_operations_page_is_served_with_a_strict_policy_of_its_own(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let page = app.client.get(app.url("/storage/ops")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="ops/page.js""#) && !html.contains("<script>"), "the script is an asset of its own");

    for (asset, kind) in [("/storage/ops/page.js", "text/javascript"), ("/storage/ops/page.css", "text/css")] {
        let served = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(served.status(), StatusCode::OK, "{asset}");
        assert!(served.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
        assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    }
    app.stop().await;
}
