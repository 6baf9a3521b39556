//! The OpenAPI document against the routes the server answers: every operation of the code
//! is documented and answered by its route; nothing else answers, but the paths
//! `api::docs::UNDOCUMENTED` names with a reason; the document carries operation ids,
//! enums, examples and each operation's own error statuses; Swagger UI shows it at `/docs`.

use std::collections::BTreeSet;

use api::test_support::{TestApp, error_code, images, json};
use poem_openapi::OpenApi;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shared::auth::Role;
use sqlx::PgPool;
use uuid::Uuid;

/// Not the default `/public`, so that the document is seen to follow the configuration.
const PUBLIC_PATH: &str = "/media/open";

const METHODS: [&str; 6] = ["get", "head", "post", "put", "patch", "delete"];

async fn spawn(pool: PgPool) -> TestApp {
    TestApp::spawn_with(pool, |config| config.server.public_path = PUBLIC_PATH.to_owned()).await
}

async fn document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

/// Every (path, method) of the document, the path as written there (`/storage/images/{id}`).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                all.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    all
}

/// The path with a plausible value for each parameter.
fn concrete(path: &str) -> String {
    path.replace("{id}", &Uuid::now_v7().to_string())
        .replace("{owner_id}", &Uuid::now_v7().to_string())
        .replace("{job}", "sweep")
        .replace("{variant}", "original")
        .replace("{signed_path}", "not-a-signature")
}

async fn send(app: &TestApp, method: &str, path: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    app.client.request(method, app.url(path)).send().await.unwrap()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_operation_of_the_code_and_the_file_routes_are_in_the_document(pool: PgPool) {
    let app = spawn(pool).await;
    let document = document(&app).await;
    let documented: BTreeSet<(String, String)> =
        operations(&document).into_iter().map(|(path, method, _)| (path, method)).collect();
    let mut from_code = 0;
    for api in <api::Apis as OpenApi>::meta() {
        for path in api.paths {
            for operation in path.operations {
                let method = operation.method.as_str().to_lowercase();
                assert!(documented.contains(&(path.path.clone(), method.clone())), "{method} {} is missing", path.path);
                from_code += 1;
            }
        }
    }
    // The handlers, plus GET and HEAD of the two file routes answered in front of the router.
    assert_eq!(documented.len(), from_code + 4, "{documented:?}");
    for path in ["/storage/signed/{signed_path}", &format!("{PUBLIC_PATH}/{{id}}/{{variant}}")] {
        for method in ["get", "head"] {
            assert!(documented.contains(&(path.to_owned(), method.to_owned())), "{method} {path}");
        }
    }
    for (path, _) in api::docs::UNDOCUMENTED {
        assert!(document["paths"][path].is_null(), "{path} is documented after all");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_documented_operation_is_answered_by_its_route(pool: PgPool) {
    let app = spawn(pool).await;
    let document = document(&app).await;
    for (path, method, operation) in operations(&document) {
        let response = send(&app, &method, &concrete(&path)).await;
        let status = response.status();
        let id = operation["operationId"].as_str().unwrap().to_owned();
        let what = format!("{method} {path} ({id}) answered {status}");
        let public = operation["security"].as_array().is_some_and(Vec::is_empty);
        if id == "getHealth" {
            // A token is optional: it adds an admin's details.
            assert!([StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE].contains(&status), "{what}");
        } else if !public {
            // The router's 404 or 405 would not check a token.
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            assert!(operation["responses"]["401"].is_object(), "{id} does not document its 401");
            if method != "head" {
                assert_eq!(error_code(response).await, "unauthorized", "{what}");
            }
        } else {
            // File serving's own answers, which the router's would not carry.
            assert!([StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&status), "{what}");
            assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
            assert!(operation["responses"][status.as_str()].is_object(), "{what}, undocumented");
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn nothing_outside_the_document_answers(pool: PgPool) {
    let app = spawn(pool).await;
    let document = document(&app).await;
    let paths = document["paths"].as_object().unwrap();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    // Methods a documented path does not take (HEAD comes with GET, as HTTP has it).
    for (path, item) in paths {
        for method in METHODS {
            let takes = item[method].is_object() || (method == "head" && item["get"].is_object());
            if takes {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                app.client.request(method.clone(), app.url(&concrete(path))).bearer_auth(&admin).send().await;
            let response = response.unwrap();
            let status = response.status();
            assert!(
                [StatusCode::METHOD_NOT_ALLOWED, StatusCode::NOT_FOUND].contains(&status),
                "{method} {path} answered {status}"
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
                let allow = allow.unwrap_or_else(|| panic!("{method} {path}: a 405 without Allow"));
                for documented in METHODS.iter().filter(|m| item[**m].is_object()) {
                    assert!(allow.contains(&documented.to_uppercase()), "{method} {path}: Allow {allow}");
                }
            }
            if method != Method::HEAD {
                let code = error_code(response).await;
                assert!(["method_not_allowed", "not_found"].contains(&code.as_str()), "{method} {path}: {code}");
            }
        }
    }
    // Paths next to documented ones, and the usual guesses.
    let id = Uuid::now_v7();
    for path in [
        "/".to_owned(),
        "/storage".to_owned(),
        "/storage/".to_owned(),
        "/storage/images/".to_owned(),
        format!("/storage/images/{id}/"),
        format!("/storage/images/{id}/thumbnails"),
        "/storage/images/search/more".to_owned(),
        "/storage/signed/".to_owned(),
        "/storage/signed/a/b".to_owned(),
        format!("/public/{id}/original"),
        format!("{PUBLIC_PATH}/{id}"),
        format!("{PUBLIC_PATH}/{id}/original/more"),
        "/docs/".to_owned(),
        "/docs/oauth-receiver.html".to_owned(),
        "/openapi.yaml".to_owned(),
        "/swagger".to_owned(),
        "/health".to_owned(),
        "/storage/maintenance".to_owned(),
        "/storage/backups/cleanup/now".to_owned(),
    ] {
        let response = app.client.get(app.url(&path)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
        assert_eq!(error_code(response).await, "not_found", "GET {path}");
    }
    for (path, _) in api::docs::UNDOCUMENTED.into_iter().filter(|(path, _)| *path != "/metrics") {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_document_names_operations_enums_examples_and_each_operations_own_errors(pool: PgPool) {
    let app = spawn(pool).await;
    let document = document(&app).await;
    let mut ids = BTreeSet::new();
    for (path, method, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
        assert!(ids.insert(id.to_owned()), "operation id {id} is used twice");
        assert!(operation["summary"].is_string(), "{id} has no summary");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|status| status.starts_with('2')), "{id} has no success");
        assert!(responses.contains_key("429"), "{id}: every route is rate limited");
        if path.starts_with("/storage/signed/") || path.starts_with(PUBLIC_PATH) {
            continue;
        }
        let expected = api::docs::error_statuses(id).unwrap_or_else(|| panic!("{id} has no error statuses"));
        let errors: Vec<u16> =
            responses.keys().filter(|s| s.starts_with('4') || s.starts_with('5')).map(|s| s.parse().unwrap()).collect();
        assert_eq!(errors, expected, "{id}");
    }
    let paths = &document["paths"];
    let upload = &paths["/storage/images"]["post"]["responses"];
    assert!(upload["507"].is_object() && upload["422"].is_object());
    let get = &paths["/storage/images/{id}"]["get"]["responses"];
    assert!(get["404"].is_object() && get["507"].is_null() && get["422"].is_null() && get["409"].is_null());
    assert!(paths["/storage/health"]["get"]["responses"]["401"].is_null());
    assert_eq!(paths["/storage/health"]["get"]["responses"]["503"]["content"].as_object().unwrap().len(), 1);

    let schemas = &document["components"]["schemas"];
    for name in [
        "ImageType",
        "OwnerType",
        "ThumbnailStatus",
        "ChecksumStatus",
        "BackupStatus",
        "BackupTrigger",
        "RestoreStatus",
        "RestoreMode",
        "HealthStatus",
        "AccessType",
        "SortField",
        "SortOrder",
        "MetricName",
        "MaintenanceJob",
        "ErrorCode",
    ] {
        assert!(schemas[name]["enum"].is_array(), "{name} is an enum: {}", schemas[name]);
    }
    assert_eq!(schemas["ErrorCode"]["enum"].as_array().unwrap().len(), api::error::ErrorCode::ALL.len());
    assert_eq!(schemas["ImageView"]["properties"]["image_type"]["$ref"], "#/components/schemas/ImageType");
    for example in ["ImageView", "ImageUpdate", "ImageSearchRequest", "QuotaUpdate", "RestoreRequest", "ErrorBody"] {
        assert!(schemas[example]["example"].is_object(), "{example} has an example");
    }
    let parameter = |path: &str, name: &str| {
        let parameters = paths[path]["get"]["parameters"].as_array().unwrap();
        parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path} {name}"))["schema"].clone()
    };
    assert_eq!(parameter("/storage/images", "sort")["$ref"], "#/components/schemas/SortField");
    assert_eq!(parameter("/storage/images", "image_type")["$ref"], "#/components/schemas/ImageType");
    let page_size = parameter("/storage/images", "page_size");
    assert_eq!((page_size["minimum"].as_f64(), page_size["maximum"].as_f64()), (Some(1.0), Some(100.0)));
    let mut variants = vec!["original".to_owned()];
    variants.extend(app.config.storage.thumbnail_sizes.keys().cloned());
    assert_eq!(parameter("/storage/images/{id}/signed-url", "variant")["enum"], serde_json::json!(variants));
    assert_eq!(parameter(&format!("{PUBLIC_PATH}/{{id}}/{{variant}}"), "variant")["enum"], serde_json::json!(variants));
    let ttl = parameter("/storage/images/{id}/signed-url", "ttl");
    assert_eq!(ttl["maximum"].as_u64(), Some(app.config.signed_urls.max_ttl_secs));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_value_outside_a_documented_enum_is_refused_with_the_apis_own_error(pool: PgPool) {
    let app = spawn(pool).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    for (path, token, status, code) in [
        ("/storage/images?sort=size", &token, StatusCode::BAD_REQUEST, "invalid_field"),
        ("/storage/images?image_type=avatar", &token, StatusCode::BAD_REQUEST, "invalid_field"),
        ("/storage/quota?owner_type=robot", &token, StatusCode::BAD_REQUEST, "invalid_field"),
        ("/storage/stats/metrics?name=cpu", &admin, StatusCode::BAD_REQUEST, "invalid_field"),
        ("/storage/backups?page_size=many", &admin, StatusCode::BAD_REQUEST, "invalid_field"),
    ] {
        let response = app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let body = json(response).await;
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let response = app.client.post(app.url("/storage/maintenance/defrag")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(response).await, "unknown_job");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn swagger_ui_at_docs_shows_the_served_document_with_no_outside_assets(pool: PgPool) {
    let app = spawn(pool).await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let page = response.text().await.unwrap();
    assert!(page.contains("SwaggerUIBundle"), "the Swagger UI script is inline");
    assert!(page.contains(&format!("{PUBLIC_PATH}/{{id}}/{{variant}}")), "the page shows the served document");
    for outside in ["<script src=", "<link ", "https://cdn", "unpkg.com", "jsdelivr"] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }
}

/// What schemathesis found (`scripts/fuzz-api`): each answered 500, or was accepted though
/// the document says it is invalid.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn requests_the_fuzzer_found_are_answered_as_documented(pool: PgPool) {
    let app = spawn(pool).await;
    let (_, token) = app.user();
    let admin = app.token(Role::Admin, Uuid::now_v7());
    let stored = json(app.upload(&token, "user", "a.png", images::png(4, 4), &[]).await).await;
    let image = app.url(&format!("/storage/images/{}", stored["id"].as_str().unwrap()));
    for (body, code) in [
        // PostgreSQL's jsonb cannot hold NUL: this was a 500.
        (serde_json::json!({"metadata": {"note": "a\u{0}b"}}), "invalid_field"),
        (serde_json::json!({"metadata": {"a\u{0}": 1}}), "invalid_field"),
        // The document says strings: `false` is no tag.
        (serde_json::json!({"tags": [false]}), "bad_request"),
        (serde_json::json!({"file_name": 7}), "bad_request"),
    ] {
        let response = app.client.put(&image).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let form = [("metadata", "{\"note\": \"a\\u0000b\"}")];
    let response = app.upload(&token, "user", "b.png", images::png(4, 4), &form).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_field");
    for flag in ["1", "0", ""] {
        let response = app.upload(&token, "user", "c.png", images::png(4, 4), &[("is_public", flag)]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "is_public={flag}");
    }
    let key = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let form = reqwest::multipart::Form::new()
        .text("image_type", "user")
        .part("file", reqwest::multipart::Part::bytes(images::png(4, 4)).file_name("d.png"));
    let request = app.client.post(app.url("/storage/images")).bearer_auth(&token).header("Idempotency-Key", key);
    let response = request.multipart(form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a key that is not ASCII is not ignored");
    assert_eq!(error_code(response).await, "invalid_field");
    let search = app.url("/storage/images/search");
    for body in [serde_json::json!({"order": ""}), serde_json::json!({"sort": " file_size"})] {
        let response = app.client.post(&search).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_field", "{body}");
    }
    let quota = app.url(&format!("/storage/quota/{}", Uuid::now_v7()));
    let body = serde_json::json!({"max_files": 1, "owner_type": ""});
    let response = app.client.put(&quota).bearer_auth(&admin).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response =
        app.client.get(app.url("/storage/backups?page=2147483648")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app.client.request(Method::TRACE, app.url("/storage/signed/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let response = app.client.request(Method::TRACE, image).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, PUT, DELETE, HEAD");
}
