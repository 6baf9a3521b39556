//! The bounds on what one client may send or hold open (`limits:`): request bodies, the
//! parts of an upload form, and connections. Each is tested at its limit, and the bodies
//! with a gigabyte that must never reach the API's memory.

use std::time::Duration;

use api::test_support::{TestApp, images};
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::auth::Role;
use shared::test_support::eventually;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// What a hostile body sends.
const GIB: u64 = 1024 * 1024 * 1024;
/// How much the process may grow while one is refused.
const MAX_GROWTH_BYTES: u64 = 32 * 1024 * 1024;
/// Generous bound for a connection the server must close by itself (a timeout of 1 s in
/// these tests): long enough for a busy machine, far below "never".
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// A field of /proc/self/status, in bytes (the API runs in this process).
fn memory(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `prefix` then filler bytes, `total` in all, streamed in 1 MiB chunks that share one buffer.
fn huge_body(prefix: &'static [u8], total: u64) -> reqwest::Body {
    let chunk = Bytes::from(vec![b'a'; 1024 * 1024]);
    let chunks = total / chunk.len() as u64;
    let stream = futures::stream::iter(
        std::iter::once(Ok::<_, std::io::Error>(Bytes::from_static(prefix)))
            .chain((0..chunks).map(move |_| Ok(chunk.clone()))),
    );
    reqwest::Body::wrap_stream(stream)
}

/// Sends a request with a gigabyte body and asserts it is refused with a 4xx (or the
/// connection closed under it) while the process grows by less than [`MAX_GROWTH_BYTES`].
async fn assert_refused_within_memory(request: reqwest::RequestBuilder, prefix: &'static [u8]) -> Option<Value> {
    let before = memory("VmRSS:");
    let answer = request.body(huge_body(prefix, GIB)).send().await;
    let peak = memory("VmHWM:");
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_BYTES,
        "grew by {} MiB while refusing a 1 GiB body",
        peak.saturating_sub(before) >> 20
    );
    // Refused before its end, the client may see the connection close instead of the answer.
    let response = answer.ok()?;
    assert!(response.status().is_client_error(), "{}", response.status());
    response.json().await.ok()
}

/// Opens a connection, sends `head` (request line and headers, blank line included) and
/// `body`, and returns the status and body of the answer.
async fn raw_request(app: &TestApp, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(app.base_url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_response(&mut stream).await
}

/// Reads one response with a `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed before an answer: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while received.len() < head_end + length {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed within the answer's body");
        received.extend_from_slice(&buffer[..read]);
    }
    (status, serde_json::from_slice(&received[head_end..head_end + length]).unwrap_or(Value::Null))
}

/// True once the server closed `stream` (it reads end of file or a reset).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

fn multipart_head(app: &TestApp, token: &str, content_length: u64) -> String {
    let host = app.base_url.trim_start_matches("http://");
    format!(
        "POST /storage/images HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

/// An upload whose gigabyte body starts with `prefix` and never completes a part's headers
/// is refused as malformed, within the memory bound, and stores nothing.
async fn assert_malformed_upload_refused(pool: PgPool, prefix: &'static [u8]) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let request = app
        .client
        .post(app.url("/storage/images"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=XYZ");
    if let Some(body) = assert_refused_within_memory(request, prefix).await {
        assert_eq!(body["error"]["code"], "malformed_body", "{body}");
    }
    app.assert_nothing_stored().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_upload_body_whose_boundary_never_comes_is_refused_without_being_held(pool: PgPool) {
    assert_malformed_upload_refused(pool, b"").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn upload_part_headers_that_never_end_are_refused_without_being_held(pool: PgPool) {
    assert_malformed_upload_refused(
        pool,
        b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nX-Padding: ",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_upload_declaring_more_than_its_bound_is_refused_before_its_body_is_read(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let bound = app.config.storage.max_file_size + app.config.limits.upload_form_bytes;
    let (status, body) = raw_request(&app, &multipart_head(&app, &token, bound + 1), b"").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
    // At the bound, the server waits for the body instead of refusing it.
    let mut stream = TcpStream::connect(app.base_url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(multipart_head(&app, &token, bound).as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let answered = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
    assert!(answered.is_err(), "a body at the bound is read, not refused");
    app.assert_nothing_stored().await;
}

/// A form of `parts` parts: the file, its image type and `parts - 2` tag fields of
/// `tag_bytes` bytes each.
fn form(parts: usize, tag_bytes: usize) -> reqwest::multipart::Form {
    let file = reqwest::multipart::Part::bytes(images::png(8, 8)).file_name("a.png").mime_str("image/png").unwrap();
    let mut form = reqwest::multipart::Form::new().text("image_type", "user").part("file", file);
    for _ in 2..parts {
        form = form.text("tags", "a".repeat(tag_bytes));
    }
    form
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_form_may_have_as_many_parts_as_configured_and_no_more(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let parts = app.config.limits.multipart_parts as usize;
    let send = |form| app.client.post(app.url("/storage/images")).bearer_auth(&token).multipart(form).send();

    let refused = send(form(parts + 1, 3)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_body");
    assert!(body["error"]["message"].as_str().unwrap().contains(&format!("more than {parts} parts")), "{body}");
    app.assert_nothing_stored().await;

    assert_eq!(send(form(parts, 3)).await.unwrap().status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_chunked_upload_over_its_whole_bound_is_cut_off(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.storage.max_file_size = 256 * 1024;
        c.limits.upload_form_bytes = 64 * 1024;
    })
    .await;
    let (_, token) = app.user();
    // Every text field is under its own 64 KiB, the form is over 320 KiB in all.
    let response =
        app.client.post(app.url("/storage/images")).bearer_auth(&token).multipart(form(12, 60 * 1024)).send().await;
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    }
    app.assert_nothing_stored().await;
    // A file at `maxFileSize` with its form fits: `a_file_exactly_at_the_limit_is_accepted…`.
    let fits = app.client.post(app.url("/storage/images")).bearer_auth(&token).multipart(form(4, 3)).send();
    assert_eq!(fits.await.unwrap().status(), StatusCode::CREATED);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_json_body_is_read_up_to_its_limit_and_no_further(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let limit = app.config.limits.json_body_bytes as usize;
    let search = |body: Vec<u8>| {
        app.client
            .post(app.url("/storage/images/search"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // A valid search padded with spaces to exactly the limit, then one byte more.
    let padded = |size: usize| {
        let mut body = br#"{"tags": ["red"]}"#.to_vec();
        body.resize(size, b' ');
        body
    };
    assert_eq!(search(padded(limit)).await.unwrap().status(), StatusCode::OK);
    let over = search(padded(limit + 1)).await.unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(over.json::<Value>().await.unwrap()["error"]["code"], "body_too_large");

    let host = app.base_url.trim_start_matches("http://");
    let head = format!(
        "POST /storage/images/search HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {GIB}\r\n\r\n"
    );
    let (status, body) = raw_request(&app, &head, b"{").await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("body_too_large")), "declared too long");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_chunked_gigabyte_of_json_is_refused_without_being_held(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, token) = app.user();
    let request = app
        .client
        .post(app.url("/storage/images/search"))
        .bearer_auth(&token)
        .header("content-type", "application/json");
    if let Some(body) = assert_refused_within_memory(request, br#"{"tags": [""#).await {
        assert_eq!(body["error"]["code"], "body_too_large", "{body}");
    }
    let metadata = app.client.put(app.url(&format!("/storage/images/{}", Uuid::now_v7()))).bearer_auth(&token);
    assert_refused_within_memory(metadata.header("content-type", "application/json"), br#"{"metadata": {"a": ""#).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn admin_routes_refuse_other_roles_before_reading_the_body(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let host = app.base_url.trim_start_matches("http://");
    for role in [Role::User, Role::Vendor, Role::Service] {
        let token = app.token(role, Uuid::now_v7());
        for (method, path) in
            [("PUT", format!("/storage/quota/{}", Uuid::now_v7())), ("POST", "/storage/restore".into())]
        {
            // A body as long as allowed is declared, and only its first byte sent: the
            // answer cannot wait for the rest.
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                app.config.limits.json_body_bytes
            );
            let (status, body) = raw_request(&app, &head, b"{").await;
            assert_eq!(status, 403, "{method} {path} by {role:?}: {body}");
        }
    }
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let quota = app.client.put(app.url(&format!("/storage/quota/{}", Uuid::now_v7()))).bearer_auth(&admin);
    let response = quota.json(&json!({ "max_files": 3, "owner_type": "user" })).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "admins still may");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_others_are_served(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.limits.header_read_timeout_secs = 1).await;
    let (_, token) = app.user();
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /storage/quota HTT").await.unwrap();
        stalled.push(stream);
    }
    let served = app.client.get(app.url("/storage/quota")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK, "served while 100 connections stall");
    for stream in &mut stalled {
        let closed = tokio::time::timeout(CLOSE_WAIT, closed_by_server(stream)).await;
        assert!(closed.is_ok(), "a half-sent request is closed by the server");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idle_keep_alive_connection_and_a_stalled_upload_are_closed(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.limits.idle_timeout_secs = 1).await;
    let (_, token) = app.user();
    let host = app.base_url.trim_start_matches("http://").to_owned();

    let mut idle = TcpStream::connect(&host).await.unwrap();
    let request = format!("GET /storage/quota HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");
    idle.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    assert!(tokio::time::timeout(CLOSE_WAIT, closed_by_server(&mut idle)).await.is_ok(), "idle keep-alive closed");

    let mut stalled = TcpStream::connect(&host).await.unwrap();
    stalled.write_all(multipart_head(&app, &token, 10_000).as_bytes()).await.unwrap();
    stalled
        .write_all(b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n")
        .await
        .unwrap();
    assert!(tokio::time::timeout(CLOSE_WAIT, closed_by_server(&mut stalled)).await.is_ok(), "stalled upload closed");
    eventually(CLOSE_WAIT, "the stalled upload's staged file is removed", || async {
        app.stored_file_count().await == 0
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn connections_over_the_cap_wait_until_one_closes(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.limits.max_connections = 2).await;
    let (_, token) = app.user();
    let host = app.base_url.trim_start_matches("http://").to_owned();
    let request = format!("GET /storage/quota HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n");

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&host).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        held.push(stream);
    }
    let mut third = TcpStream::connect(&host).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.peek(&mut byte)).await;
    assert!(early.is_err(), "a third connection is not served while two are open");
    drop(held.pop());
    assert_eq!(read_response(&mut third).await.0, 200, "served once one closed");
}
