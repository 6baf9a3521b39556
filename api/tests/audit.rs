//! The audit trail: every administrative action leaves exactly one entry with its actor,
//! target and request id, a refused one none; `GET /storage/audit` is for admins, filters,
//! and pages through the entries without repeating or skipping one.

use std::collections::BTreeSet;

use api::test_support::{TestApp, error_code, json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::audit::{self, Actor, AuditAction, Target};
use shared::auth::{Claims, Role};
use shared::model::{ImageId, OwnerId};
use sqlx::PgPool;
use uuid::Uuid;

/// One entry as stored.
#[derive(Debug, sqlx::FromRow)]
struct Entry {
    actor: String,
    actor_role: String,
    action: String,
    target_type: String,
    target_id: String,
    details: Value,
}

async fn entries_of_request(app: &TestApp, request_id: &str) -> Vec<Entry> {
    sqlx::query_as(
        "SELECT actor, actor_role, action, target_type, target_id, details FROM storage_audit_log
         WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn entry_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM storage_audit_log").fetch_one(&app.pool).await.unwrap()
}

/// Sends `method path` with `token`, the request id `request_id` and an optional JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    request_id: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token).header("X-Request-Id", request_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn list(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/storage/audit{query}"))).bearer_auth(token).send().await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn each_admin_action_leaves_one_entry_with_its_actor_target_and_request_id(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, user) = app.user();
    let image = app.upload_image(&user, "user", "me.png", &[]).await;
    let admin_id = Uuid::now_v7();
    let admin = app.token(Role::Admin, admin_id);
    let admin_actor = admin_id.to_string();

    let backup = json(send(&app, Method::POST, "/storage/backup", &admin, "audit-backup", None).await).await;
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    // Only a finished backup can be verified; no worker runs here.
    let finished = "UPDATE storage_backups SET status = 'completed', manifest_path = 'm', completed_at = now()
                    WHERE id = $1::uuid";
    sqlx::query(finished).bind(&backup_id).execute(&app.pool).await.unwrap();
    let restore_body = json!({"image_ids": [image], "mode": "overwrite"});
    let restore = send(&app, Method::POST, "/storage/restore", &admin, "audit-restore", Some(restore_body)).await;
    assert_eq!(restore.status(), StatusCode::ACCEPTED);
    let restore_id = json(restore).await["id"].as_str().unwrap().to_owned();

    let quota = json!({"max_files": 7, "max_bytes": 7000});
    let requests = [
        ("audit-quota", Method::PUT, format!("/storage/quota/{owner}"), Some(quota)),
        ("audit-reprocess", Method::POST, format!("/storage/images/{image}/reprocess"), None),
        ("audit-maintenance", Method::POST, "/storage/maintenance/file-audit".to_owned(), None),
        ("audit-verify", Method::POST, format!("/storage/backups/{backup_id}/verify"), None),
        ("audit-cleanup", Method::DELETE, "/storage/backups/cleanup".to_owned(), None),
        ("audit-revoke", Method::POST, format!("/storage/images/{image}/revoke-urls"), None),
        ("audit-redrive", Method::POST, "/storage/queues/thumbnails/dead-letters/redrive?limit=5".to_owned(), None),
    ];
    for (request_id, method, path, body) in requests {
        let response = send(&app, method.clone(), &path, &admin, request_id, body).await;
        assert!(response.status().is_success(), "{method} {path}: {}", response.status());
    }
    let expected = [
        ("audit-backup", "backup_requested", "backup", backup_id.clone()),
        ("audit-restore", "restore_requested", "restore", restore_id),
        ("audit-quota", "quota_set", "owner", owner.to_string()),
        ("audit-reprocess", "image_reprocessed", "image", image.clone()),
        ("audit-maintenance", "maintenance_run", "job", "file_audit".to_owned()),
        ("audit-verify", "backup_verify_requested", "backup", backup_id),
        ("audit-cleanup", "backups_cleanup", "job", "backup_retention".to_owned()),
        ("audit-revoke", "urls_revoked", "image", image.clone()),
        ("audit-redrive", "dead_letters_redriven", "queue", "thumbnails".to_owned()),
    ];
    for (request_id, action, target_type, target_id) in expected {
        let entries = entries_of_request(&app, request_id).await;
        assert_eq!(entries.len(), 1, "{request_id}: {entries:?}");
        let entry = &entries[0];
        assert_eq!((entry.actor.as_str(), entry.actor_role.as_str()), (admin_actor.as_str(), "admin"), "{request_id}");
        assert_eq!(entry.action, action, "{request_id}");
        assert_eq!((entry.target_type.as_str(), entry.target_id.as_str()), (target_type, target_id.as_str()));
    }
    assert_eq!(entry_count(&app).await, 9, "one entry per action, no more");
    let quota_set = &entries_of_request(&app, "audit-quota").await[0];
    assert_eq!(
        (quota_set.details["max_files"].as_i64(), quota_set.details["max_bytes"].as_i64()),
        (Some(7), Some(7000))
    );
    assert_eq!(
        entries_of_request(&app, "audit-restore").await[0].details,
        json!({"mode": "overwrite", "image_count": 1})
    );
    let redriven = &entries_of_request(&app, "audit-redrive").await[0];
    assert_eq!((redriven.details["moved"].as_u64(), redriven.details["complete"].as_bool()), (Some(0), Some(true)));

    // The owner revoking their own image's URLs is recorded too, as a user.
    let revoke = format!("/storage/images/{image}/revoke-urls");
    assert_eq!(send(&app, Method::POST, &revoke, &user, "audit-own-revoke", None).await.status(), StatusCode::OK);
    let own = entries_of_request(&app, "audit-own-revoke").await;
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].actor.as_str(), own[0].actor_role.as_str()), (owner.to_string().as_str(), "user"));

    // And the listing shows the same, with the request id.
    let listed = json(list(&app, &admin, "?action=quota_set").await).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["request_id"], "audit-quota");
    assert_eq!(items[0]["actor"], admin_actor);
    assert_eq!(items[0]["target_id"], owner.to_string());
    assert!(listed["next_cursor"].is_null());
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_refused_action_leaves_no_entry(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (owner, user) = app.user();
    let image = app.upload_image(&user, "user", "me.png", &[]).await;
    let (_, stranger) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let nobody = Uuid::now_v7();
    let refused = [
        // 403: not an admin.
        (Method::PUT, format!("/storage/quota/{owner}"), &user, Some(json!({"max_files": 1})), StatusCode::FORBIDDEN),
        (Method::POST, format!("/storage/images/{image}/reprocess"), &user, None, StatusCode::FORBIDDEN),
        (Method::POST, "/storage/maintenance/sweep".to_owned(), &user, None, StatusCode::FORBIDDEN),
        (Method::POST, "/storage/backup".to_owned(), &user, None, StatusCode::FORBIDDEN),
        (Method::POST, format!("/storage/backups/{nobody}/verify"), &user, None, StatusCode::FORBIDDEN),
        (Method::DELETE, "/storage/backups/cleanup".to_owned(), &user, None, StatusCode::FORBIDDEN),
        (
            Method::POST,
            "/storage/restore".to_owned(),
            &user,
            Some(json!({"image_ids": [image]})),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/storage/queues/thumbnails/dead-letters/redrive".to_owned(),
            &user,
            None,
            StatusCode::FORBIDDEN,
        ),
        // 404: nothing to act on.
        (Method::POST, format!("/storage/images/{image}/revoke-urls"), &stranger, None, StatusCode::NOT_FOUND),
        (Method::POST, format!("/storage/images/{nobody}/reprocess"), &admin, None, StatusCode::NOT_FOUND),
        (Method::POST, format!("/storage/images/{nobody}/revoke-urls"), &admin, None, StatusCode::NOT_FOUND),
        (Method::POST, "/storage/maintenance/defrag".to_owned(), &admin, None, StatusCode::NOT_FOUND),
        (Method::POST, format!("/storage/backups/{nobody}/verify"), &admin, None, StatusCode::NOT_FOUND),
        (Method::POST, "/storage/queues/nope/dead-letters/redrive".to_owned(), &admin, None, StatusCode::NOT_FOUND),
        // 400: a bad request.
        (
            Method::PUT,
            format!("/storage/quota/{owner}"),
            &admin,
            Some(json!({"max_files": -1})),
            StatusCode::BAD_REQUEST,
        ),
        (Method::POST, "/storage/restore".to_owned(), &admin, Some(json!({})), StatusCode::BAD_REQUEST),
        (
            Method::POST,
            "/storage/queues/thumbnails/dead-letters/redrive?limit=0".to_owned(),
            &admin,
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, token, body, status) in refused {
        let response = send(&app, method.clone(), &path, token, "refused", body).await;
        assert_eq!(response.status(), status, "{method} {path}");
    }
    assert_eq!(entry_count(&app).await, 0);

    // 409: a backup not finished cannot be verified; only its request is recorded.
    let backup = json(send(&app, Method::POST, "/storage/backup", &admin, "requested", None).await).await;
    let verify = format!("/storage/backups/{}/verify", backup["id"].as_str().unwrap());
    assert_eq!(send(&app, Method::POST, &verify, &admin, "refused", None).await.status(), StatusCode::CONFLICT);
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM storage_audit_log").fetch_all(&app.pool).await.unwrap();
    assert_eq!(actions, ["backup_requested"]);
    app.stop().await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn only_admins_read_the_audit_trail(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let anonymous = app.client.get(app.url("/storage/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    for role in [Role::User, Role::Vendor, Role::Service] {
        let refused = list(&app, &app.token(role, Uuid::now_v7()), "?limit=oops").await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{role:?}: refused before reading the query");
        assert_eq!(error_code(refused).await, "forbidden");
    }
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let empty = json(list(&app, &admin, "").await).await;
    assert_eq!((&empty["items"], &empty["next_cursor"]), (&json!([]), &Value::Null));
    app.stop().await;
}

/// Every page of `query` (without `cursor`), following `next_cursor`; the ids in order.
async fn page_through(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("?limit={limit}{query}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = json(list(app, token, &url).await).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit, "a page holds at most its limit");
        ids.extend(items.iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only the last page is short");
                cursor = Some(next.to_owned());
            }
            None => return ids,
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_listing_filters_and_pages_without_repeating_or_skipping(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let first = Actor::of(&Claims { sub: Uuid::now_v7(), role: Role::Admin, exp: 0 });
    let second = Actor::operator("redrive");
    let owner = OwnerId(Uuid::now_v7());
    // Every action the table accepts, then many entries sharing one time (one transaction),
    // then more, each at its own time.
    for action in AuditAction::ALL {
        audit::record(&app.pool, &first, action, Target::Job("sweep"), json!({})).await.unwrap();
    }
    let mut tx = app.pool.begin().await.unwrap();
    for _ in 0..60 {
        audit::record(&mut *tx, &second, AuditAction::DeadLettersRedriven, Target::Queue("thumbnails"), json!({}))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let middle = chrono::Utc::now();
    for n in 0..50 {
        let target = if n % 10 == 0 { Target::Owner(owner) } else { Target::Image(ImageId::new()) };
        audit::record(&app.pool, &first, AuditAction::QuotaSet, target, json!({"n": n})).await.unwrap();
    }
    let total = AuditAction::ALL.len() + 60 + 50;

    let ids = page_through(&app, &admin, "", 50).await;
    assert_eq!(ids.len(), total);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), total, "no entry twice");
    let stored: Vec<String> = sqlx::query_scalar("SELECT id::text FROM storage_audit_log ORDER BY at DESC, id DESC")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(ids, stored, "newest first, ties by id");
    let same_time = page_through(&app, &admin, "&actor=operator:redrive", 25).await;
    assert_eq!(same_time.len(), 60, "pages within one instant");

    let count = |query: &'static str| page_through(&app, &admin, query, 200);
    assert_eq!(count("&action=quota_set").await.len(), 51);
    assert_eq!(count("&action=dead_letters_redriven&target_type=queue&target_id=thumbnails").await.len(), 60);
    assert_eq!(count("&target_type=owner").await.len(), 5);
    let of_owner = format!("&target_type=owner&target_id={}", owner.0);
    assert_eq!(page_through(&app, &admin, &of_owner, 200).await.len(), 5);
    let actor = format!("&actor={}", first.id());
    assert_eq!(page_through(&app, &admin, &actor, 200).await.len(), AuditAction::ALL.len() + 50);
    let since = format!("&since={}", middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B"));
    assert_eq!(page_through(&app, &admin, &since, 200).await.len(), 50);
    let until = format!("&until={}", middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).replace('+', "%2B"));
    assert_eq!(page_through(&app, &admin, &until, 200).await.len(), AuditAction::ALL.len() + 60);

    // The limit's bounds, and values that are no filter.
    for _ in total..=200 {
        audit::record(&app.pool, &second, AuditAction::BackupsCleanup, Target::Job("sweep"), json!({})).await.unwrap();
    }
    let page = json(list(&app, &admin, "?limit=200").await).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 200, "exactly the limit");
    assert!(page["next_cursor"].is_string(), "one entry more than the page");
    let long = "a".repeat(shared::audit::MAX_FILTER_CHARS);
    assert_eq!(list(&app, &admin, &format!("?actor={long}")).await.status(), StatusCode::OK, "exactly the limit");
    for query in [
        "?limit=201".to_owned(),
        "?limit=0".to_owned(),
        "?action=quota".to_owned(),
        "?target_type=user".to_owned(),
        "?since=yesterday".to_owned(),
        "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z".to_owned(),
        "?cursor=not-a-cursor".to_owned(),
        format!("?actor={long}a"),
    ] {
        let refused = list(&app, &admin, &query).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(refused).await, "invalid_field", "{query}");
    }
    app.stop().await;
}
