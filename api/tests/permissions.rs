//! The permission matrix: every endpoint that concerns one image, for every kind of caller,
//! against private and public images of each type. Another owner's private image is a 404
//! (existence does not leak); another owner's public image is readable, never writable.

use api::test_support::{TestApp, images};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::auth::Role;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Owner,
    OtherUser,
    Vendor,
    Service,
    Admin,
    Anonymous,
}

const CALLERS: [Caller; 6] =
    [Caller::Owner, Caller::OtherUser, Caller::Vendor, Caller::Service, Caller::Admin, Caller::Anonymous];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    GetMetadata,
    SignedUrl,
    AccessUrl,
    Update,
    Delete,
}

const ENDPOINTS: [Endpoint; 5] =
    [Endpoint::GetMetadata, Endpoint::SignedUrl, Endpoint::AccessUrl, Endpoint::Update, Endpoint::Delete];

/// What a caller may do with an image: `Hidden` (404), `Read` or `Write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    Hidden,
    Read,
    Write,
}

/// The rule under test, written out independently of the implementation.
fn expected_access(caller: Caller, image_type: &str, public: bool) -> Access {
    match caller {
        Caller::Owner | Caller::Admin => Access::Write,
        Caller::Service if image_type == "result" => Access::Write,
        Caller::OtherUser | Caller::Vendor | Caller::Service if public => Access::Read,
        _ => Access::Hidden,
    }
}

fn expected_status(endpoint: Endpoint, caller: Caller, access: Access) -> StatusCode {
    if caller == Caller::Anonymous {
        return StatusCode::UNAUTHORIZED;
    }
    let writes = matches!(endpoint, Endpoint::Update | Endpoint::Delete);
    match (access, writes) {
        (Access::Hidden, _) => StatusCode::NOT_FOUND,
        (Access::Read, true) => StatusCode::FORBIDDEN,
        (_, false) => StatusCode::OK,
        (Access::Write, true) if endpoint == Endpoint::Delete => StatusCode::NO_CONTENT,
        (Access::Write, true) => StatusCode::OK,
    }
}

struct Cast {
    owner: Uuid,
    owner_token: String,
    tokens: Vec<(Caller, Option<String>)>,
}

fn cast(app: &TestApp) -> Cast {
    let (owner, owner_token) = app.user();
    let tokens = vec![
        (Caller::Owner, Some(owner_token.clone())),
        (Caller::OtherUser, Some(app.user().1)),
        (Caller::Vendor, Some(app.token(Role::Vendor, Uuid::now_v7()))),
        (Caller::Service, Some(app.token(Role::Service, Uuid::now_v7()))),
        (Caller::Admin, Some(app.token(Role::Admin, Uuid::now_v7()))),
        (Caller::Anonymous, None),
    ];
    Cast { owner, owner_token, tokens }
}

/// A fresh image of the owner's (deletes must not see each other's effects).
async fn image(app: &TestApp, cast: &Cast, image_type: &str, public: bool) -> String {
    let public = if public { "true" } else { "false" };
    let response = match image_type {
        "user" => app.upload(&cast.owner_token, "user", "me.jpg", images::jpeg(8, 8), &[("is_public", public)]).await,
        _ => {
            let service = app.token(Role::Service, Uuid::now_v7());
            let owner = cast.owner.to_string();
            let fields = [("owner_id", owner.as_str()), ("is_public", public)];
            app.upload(&service, "result", "r.jpg", images::jpeg(8, 8), &fields).await
        }
    };
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn call(app: &TestApp, endpoint: Endpoint, id: &str, token: Option<&str>) -> StatusCode {
    let (method, path, body) = match endpoint {
        Endpoint::GetMetadata => (Method::GET, format!("/storage/images/{id}"), None),
        Endpoint::SignedUrl => (Method::GET, format!("/storage/images/{id}/signed-url"), None),
        Endpoint::AccessUrl => (Method::GET, format!("/storage/images/{id}/access"), None),
        Endpoint::Update => (Method::PUT, format!("/storage/images/{id}"), Some(json!({"tags": ["checked"]}))),
        Endpoint::Delete => (Method::DELETE, format!("/storage/images/{id}"), None),
    };
    let mut request = app.client.request(method, app.url(&path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_image_endpoint_answers_every_caller_as_the_rules_say(pool: PgPool) {
    // One fresh image per cell of the matrix.
    let app = TestApp::spawn_with(pool, |c| c.quota.default_max_files = 1000).await;
    let cast = cast(&app);
    let mut failures = Vec::new();
    for image_type in ["user", "result"] {
        for public in [false, true] {
            for (caller, token) in &cast.tokens {
                let access = expected_access(*caller, image_type, public);
                for endpoint in ENDPOINTS {
                    let id = image(&app, &cast, image_type, public).await;
                    let expected = expected_status(endpoint, *caller, access);
                    let actual = call(&app, endpoint, &id, token.as_deref()).await;
                    if actual != expected {
                        failures.push(format!(
                            "{endpoint:?} by {caller:?} on a {} {image_type} image: {actual}, expected {expected}",
                            if public { "public" } else { "private" }
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(CALLERS.len(), cast.tokens.len(), "every caller is in the cast");
}

/// Listing and search: callers see exactly the images they own (the service: the results of
/// the owner it names; admins: everyone's), never someone else's private ones.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn listings_show_each_caller_only_what_it_may_see(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let cast = cast(&app);
    let private_photo = image(&app, &cast, "user", false).await;
    let public_photo = image(&app, &cast, "user", true).await;
    let result = image(&app, &cast, "result", false).await;
    let owner = cast.owner.to_string();

    let ids = |body: Value| -> Vec<String> {
        let mut ids: Vec<String> =
            body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let everything = sorted(vec![private_photo.clone(), public_photo.clone(), result.clone()]);

    for (caller, token) in &cast.tokens {
        let Some(token) = token else {
            assert_eq!(app.client.get(app.url("/storage/images")).send().await.unwrap().status(), 401);
            continue;
        };
        let query: &[(&str, &str)] = if *caller == Caller::Service { &[("owner_id", &owner)] } else { &[] };
        let response = app.list_images(token, query).await;
        assert_eq!(response.status(), StatusCode::OK, "{caller:?}");
        let seen = ids(response.json().await.unwrap());
        let expected = match caller {
            Caller::Owner | Caller::Admin => everything.clone(),
            Caller::Service => vec![result.clone()],
            _ => vec![],
        };
        assert_eq!(seen, expected, "{caller:?} lists");

        let search = json!({"query": "", "owner_id": if *caller == Caller::Service { Some(&owner) } else { None }});
        let response = app.search_images(token, &search).await;
        assert_eq!(response.status(), StatusCode::OK, "{caller:?}");
        assert_eq!(ids(response.json().await.unwrap()), expected, "{caller:?} searches");
    }
    // Naming another owner is for admins only.
    let (_, other) = &cast.tokens[1];
    let response = app.list_images(other.as_deref().unwrap(), &[("owner_id", &owner)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}
