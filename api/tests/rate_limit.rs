//! Rate limiting: 429 with `Retry-After` over the limit and recovery after it, isolation
//! per principal and per client IP, limits shared by two API instances through Redis, and
//! an API that keeps serving (on in-process limits) while Redis is down.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use api::test_support::TestApp;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use shared::config::{Config, RouteLimit};
use shared::test_support::{TcpProxy, eventually, rabbit_config};
use sqlx::PgPool;
use uuid::Uuid;

/// Redis used by tests unless `STAYLER_TEST_REDIS_URL` names another.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

fn redis_url() -> String {
    std::env::var("STAYLER_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned())
}

/// A limit counted in Redis when there is one (serving included, unlike its default).
fn limit(per_second: f64, burst: u32) -> RouteLimit {
    RouteLimit { enabled: true, shared: true, per_second, burst }
}

/// Turns rate limiting on (the test configuration has it off) with `reads` and `serving`
/// limits, uploads unlimited, per process.
fn limits(config: &mut Config, reads: RouteLimit, serving: RouteLimit) {
    let rate_limit = &mut config.rate_limit;
    rate_limit.enabled = true;
    rate_limit.uploads.enabled = false;
    rate_limit.reads = reads;
    rate_limit.serving = serving;
}

/// Shares the limits through Redis at `url`, under a key prefix of this test's own.
fn shared_through(config: &mut Config, url: &str, prefix: &str) {
    config.rate_limit.redis_url = url.to_owned().into();
    config.rate_limit.redis_key_prefix = prefix.to_owned();
    config.rate_limit.redis_timeout_ms = 200;
    config.rate_limit.redis_retry_secs = 1;
}

fn unique_prefix() -> String {
    format!("test-ratelimit-{}", Uuid::new_v4().simple())
}

/// A metadata read of an image that does not exist: 404 when allowed, 429 when limited.
async fn read(app: &TestApp, token: &str) -> Response {
    app.get_image(token, &Uuid::now_v7().to_string()).await
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn assert_rate_limited(response: Response) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&response, "retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after >= 1, "Retry-After is whole seconds, rounded up");
    assert_eq!(header(&response, "ratelimit-remaining").as_deref(), Some("0"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("retry"));
    retry_after
}

/// A client whose requests leave from `ip` (any address of 127.0.0.0/8 reaches the API).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from(ip)).build().unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn over_the_limit_a_caller_gets_429_with_retry_after_then_is_served_again_after_waiting(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| limits(c, limit(2.0, 3), limit(1000.0, 1000))).await;
    let (_, token) = app.user();

    for remaining in ["2", "1", "0"] {
        let response = read(&app, &token).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&response, "ratelimit-remaining").as_deref(), Some(remaining));
    }
    let retry_after = assert_rate_limited(read(&app, &token).await).await;
    assert_eq!(retry_after, 1, "one request costs 500 ms, rounded up to a second");
    assert_rate_limited(read(&app, &token).await).await;

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(read(&app, &token).await.status(), StatusCode::NOT_FOUND, "served again after Retry-After");
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn one_principal_over_its_limit_does_not_limit_another(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| limits(c, limit(0.1, 2), limit(1000.0, 1000))).await;
    let (_, alice) = app.user();
    let (_, bob) = app.user();

    for _ in 0..2 {
        assert_eq!(read(&app, &alice).await.status(), StatusCode::NOT_FOUND);
    }
    assert_rate_limited(read(&app, &alice).await).await;
    for _ in 0..2 {
        assert_eq!(read(&app, &bob).await.status(), StatusCode::NOT_FOUND, "same IP, another principal");
    }
    assert_rate_limited(read(&app, &bob).await).await;
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn serving_and_unauthenticated_calls_are_limited_per_client_ip(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| limits(c, limit(0.1, 2), limit(0.1, 3))).await;
    let (first, second) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let (_, token) = app.user();
    let signed = app.url("/storage/signed/not-a-valid-url");
    let public = app.url(&format!("{}/{}", app.config.server.public_path, Uuid::now_v7()));

    // Signed URLs and public images share the serving limit of the IP; a token changes nothing.
    for url in [&signed, &public, &signed] {
        let response = first.get(url).bearer_auth(&token).send().await.unwrap();
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_rate_limited(first.get(&public).send().await.unwrap()).await;
    assert_rate_limited(first.get(&signed).bearer_auth(&token).send().await.unwrap()).await;
    let other_ip = second.get(&signed).send().await.unwrap();
    assert_ne!(other_ip.status(), StatusCode::TOO_MANY_REQUESTS, "another IP has its own limit");

    // Without a valid token, API calls are counted against the IP too.
    let image = app.url(&format!("/storage/images/{}", Uuid::now_v7()));
    for _ in 0..2 {
        let response = first.get(&image).bearer_auth("forged").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_rate_limited(first.get(&image).send().await.unwrap()).await;
    assert_eq!(second.get(&image).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let with_token = first.get(&image).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with_token.status(), StatusCode::NOT_FOUND, "the principal is not the IP");
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn x_forwarded_for_names_the_client_only_when_trusted(pool: PgPool) {
    let serving = limit(0.1, 1);
    let untrusted = TestApp::spawn_with(pool.clone(), |c| limits(c, limit(1000.0, 1000), serving)).await;
    let trusted = TestApp::spawn_with(pool, |c| {
        limits(c, limit(1000.0, 1000), serving);
        c.rate_limit.trust_forwarded_for = true;
    })
    .await;
    let get = |app: &TestApp, forwarded_for: &str| {
        app.client.get(app.url("/storage/signed/x")).header("x-forwarded-for", forwarded_for.to_owned()).send()
    };

    assert_ne!(get(&untrusted, "198.51.100.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let spoofed = get(&untrusted, "198.51.100.2").await.unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS, "a client cannot pick its own IP");

    assert_ne!(get(&trusted, "198.51.100.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_ne!(get(&trusted, "203.0.113.9, 198.51.100.2").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let same_client = get(&trusted, "203.0.113.10, 198.51.100.2").await.unwrap();
    assert_eq!(same_client.status(), StatusCode::TOO_MANY_REQUESTS, "the proxy's entry (the last) counts");
    untrusted.stop().await;
    trusted.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_redis_two_api_instances_share_one_limit(pool: PgPool) {
    let prefix = unique_prefix();
    let configure = |c: &mut Config| {
        limits(c, limit(0.1, 4), limit(0.1, 2));
        shared_through(c, &redis_url(), &prefix);
    };
    let first = TestApp::spawn_with(pool.clone(), configure).await;
    let second = TestApp::spawn_with(pool, configure).await;
    let (_, token) = first.user();

    for app in [&first, &second, &first, &second] {
        assert_eq!(read(app, &token).await.status(), StatusCode::NOT_FOUND);
    }
    assert_rate_limited(read(&second, &token).await).await;
    assert_rate_limited(read(&first, &token).await).await;
    let (_, other) = second.user();
    assert_eq!(read(&first, &other).await.status(), StatusCode::NOT_FOUND, "another principal is not limited");

    // Serving per IP is shared too.
    let serve = |app: &TestApp| app.client.get(app.url("/storage/signed/x")).send();
    assert_ne!(serve(&first).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_ne!(serve(&second).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_rate_limited(serve(&first).await.unwrap()).await;

    let mut redis = redis_connection(&redis_url()).await;
    let ttl: i64 =
        ::redis::cmd("PTTL").arg(format!("{prefix}:serving:ip:127.0.0.1")).query_async(&mut redis).await.unwrap();
    assert!(ttl > 0 && ttl <= 20_000, "keys expire once the bucket is full again: {ttl} ms");
    first.stop().await;
    second.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_redis_unreachable_the_api_still_serves_and_limits_in_process(pool: PgPool) {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = TestApp::spawn_with(pool, |c| {
        limits(c, limit(0.1, 3), limit(1000.0, 1000));
        shared_through(c, &format!("redis://127.0.0.1:{closed_port}"), &unique_prefix());
    })
    .await;
    let (_, token) = app.user();

    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(read(&app, &token).await.status(), StatusCode::NOT_FOUND);
    }
    assert_rate_limited(read(&app, &token).await).await;
    assert!(started.elapsed() < Duration::from_secs(2), "no request waits long for Redis: {:?}", started.elapsed());
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn limits_are_shared_again_once_redis_is_back(pool: PgPool) {
    let proxy = redis_proxy().await;
    let prefix = unique_prefix();
    let app = TestApp::spawn_with(pool, |c| {
        // Each read costs a second of the bucket, so its key lives that long in Redis.
        limits(c, limit(1.0, 1000), limit(1000.0, 1000));
        shared_through(c, &format!("redis://{}", proxy.addr()), &prefix);
    })
    .await;
    let mut redis = redis_connection(&redis_url()).await;
    let key = |user: Uuid| format!("{prefix}:reads:sub:{user}");

    let (alice, token) = app.user();
    assert_eq!(read(&app, &token).await.status(), StatusCode::NOT_FOUND);
    assert!(exists(&mut redis, &key(alice)).await, "counted in Redis");

    // Redis silent (answers nothing), then gone: requests are served without waiting long.
    proxy.black_hole();
    let (bob, bob_token) = app.user();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(read(&app, &bob_token).await.status(), StatusCode::NOT_FOUND);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    proxy.stop().await;
    for _ in 0..20 {
        assert_eq!(read(&app, &bob_token).await.status(), StatusCode::NOT_FOUND);
    }
    assert!(!exists(&mut redis, &key(bob)).await, "counted in process meanwhile");

    proxy.resume().await;
    let (carol, carol_token) = app.user();
    eventually(Duration::from_secs(10), "counting in Redis again", || {
        let (app, token, key, mut redis) = (&app, &carol_token, key(carol), redis.clone());
        async move {
            assert_eq!(read(app, token).await.status(), StatusCode::NOT_FOUND);
            exists(&mut redis, &key).await
        }
    })
    .await;
    app.stop().await;
    proxy.stop().await;
}

async fn redis_connection(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.expect("Redis for tests")
}

async fn exists(redis: &mut ::redis::aio::MultiplexedConnection, key: &str) -> bool {
    ::redis::cmd("EXISTS").arg(key).query_async::<i64>(redis).await.unwrap() == 1
}

/// A TCP proxy in front of the test Redis, to play outages. (The proxy takes its target
/// from a broker URL; only the host and port of this one matter.)
async fn redis_proxy() -> TcpProxy {
    let url = redis_url();
    let host_port = url.trim_start_matches("redis://").split('/').next().unwrap();
    let target: SocketAddr = host_port.parse().expect("STAYLER_TEST_REDIS_URL as redis://ip:port");
    let mut config = rabbit_config();
    config.url = format!("amqp://guest:guest@{target}/%2f").into();
    TcpProxy::start(&config).await
}

/// The cost of one check, in process and through Redis: a measurement, not a test. Run it
/// optimised: `cargo test --release -p api --features test-support --test integration --
/// --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it in release"]
async fn measure_the_cost_of_a_check() {
    use api::rate_limit::{ClientKey, Group, RateLimiter};

    let mut config = shared::test_support::config();
    limits(&mut config, limit(1_000_000.0, 1_000_000), limit(1_000_000.0, 1_000_000));
    let local = RateLimiter::from_config(&config).unwrap();
    let one_ip = ClientKey::from_ip(IpAddr::from([192, 0, 2, 1]));
    let many_ips: Vec<ClientKey> =
        (0..100_000u32).map(|i| ClientKey::from_ip(IpAddr::from((10 << 24 | i).to_be_bytes()))).collect();

    let runs = 2_000_000;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(local.check(Group::Serving, &one_ip).await);
    }
    println!("in process, one client: {:.0} ns per check", started.elapsed().as_nanos() as f64 / runs as f64);
    let started = Instant::now();
    for key in many_ips.iter().cycle().take(runs) {
        std::hint::black_box(local.check(Group::Serving, key).await);
    }
    println!("in process, 100,000 clients: {:.0} ns per check", started.elapsed().as_nanos() as f64 / runs as f64);

    shared_through(&mut config, &redis_url(), &unique_prefix());
    let redis = std::sync::Arc::new(RateLimiter::from_config(&config).unwrap());
    redis.check(Group::Serving, &one_ip).await;
    let runs = 20_000;
    let started = Instant::now();
    for key in many_ips.iter().take(runs) {
        assert!(redis.check(Group::Serving, key).await.unwrap().allowed);
    }
    println!("Redis, one at a time: {:.1} µs per check", started.elapsed().as_micros() as f64 / runs as f64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let (redis, keys) = (redis.clone(), many_ips[task * 1_000..(task + 1) * 1_000].to_vec());
            tokio::spawn(async move {
                for key in keys.iter().cycle().take(2_000) {
                    assert!(redis.check(Group::Serving, key).await.unwrap().allowed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let checks = 64.0 * 2_000.0;
    println!("Redis, 64 at a time: {:.0} checks per second", checks / started.elapsed().as_secs_f64());
}

/// The main app's result uploads through one `service` token, for many owners, with the
/// default limits: none is throttled, while a user's burst still is.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_hundred_result_uploads_of_one_service_token_are_not_throttled_by_default(pool: PgPool) {
    use futures::StreamExt;
    let app = TestApp::spawn_with(pool, |c| c.rate_limit = shared::config::RateLimitConfig::default()).await;
    let service = app.token(shared::auth::Role::Service, Uuid::now_v7());
    let bytes = api::test_support::images::jpeg(16, 16);
    let app_ref = &app;
    let statuses: Vec<StatusCode> = futures::stream::iter(0..200)
        .map(|i| {
            let (app, service, bytes) = (app_ref, &service, bytes.clone());
            async move {
                let owner = Uuid::now_v7().to_string();
                let extra = [("owner_id", owner.as_str())];
                app.upload(service, "result", &format!("try-on-{i}.jpg"), bytes, &extra).await.status()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == StatusCode::CREATED), "{statuses:?}");

    // Counted in their own groups: the service's, and the user's upload limit.
    let owner = Uuid::now_v7().to_string();
    let response = app.upload(&service, "result", "one-more.jpg", bytes.clone(), &[("owner_id", &owner)]).await;
    assert_eq!(header(&response, "ratelimit-limit"), Some(RouteLimit::SERVICE.burst.to_string()));
    let (_, user) = app.user();
    let response = app.upload(&user, "user", "mine.jpg", bytes, &[]).await;
    assert_eq!(header(&response, "ratelimit-limit"), Some(RouteLimit::UPLOADS.burst.to_string()));
    app.stop().await;
}
