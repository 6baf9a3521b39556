//! The OpenAPI document of the whole service, served at `GET /openapi.json`, and Swagger UI
//! at `GET /docs` (its assets are compiled into poem-openapi: no CDN, works offline).
//!
//! poem-openapi writes the document from the handlers. This adds what it cannot know: the
//! file-serving routes, which a hand-written endpoint answers in front of the router (under
//! the configured `server.publicPath`); the thumbnail sizes a `variant` may name, which are
//! configured; and, per operation, only the error statuses it can answer (every handler
//! returns the one `ApiError`, which lists them all).
//!
//! Served outside the document, on purpose ([`UNDOCUMENTED`]): `/openapi.json` and `/docs`
//! themselves, `GET /metrics`, the Prometheus scrape endpoint of operators (see
//! `docs/operations.md`), which answers in Prometheus' text format to scrapers, not to API
//! clients, and the operations page's HTML, script and style sheet.
//! `api/tests/openapi.rs` checks that nothing else answers.

mod allow;
pub mod checked;
mod schemas;
mod serving;
mod statuses;

pub use statuses::error_statuses;

use bytes::Bytes;
use poem::endpoint::make_sync;
use poem::http::header;
use poem::{Endpoint, Response};
use poem_openapi::OpenApiService;
use serde_json::{Value, json};
use shared::config::Config;

pub use allow::AllowHeader;
pub use checked::Checked;

use crate::Apis;

/// Paths the server answers that the document leaves out, each with the reason.
pub const UNDOCUMENTED: [(&str, &str); 6] = [
    ("/openapi.json", "the document itself"),
    ("/docs", "Swagger UI, a page that shows the document"),
    ("/metrics", "Prometheus' scrape endpoint for operators, in its text format (docs/operations.md)"),
    ("/storage/ops", "the operations page for admins, HTML over the admin endpoints (docs/operations.md)"),
    ("/storage/ops/page.js", "the operations page's script"),
    ("/storage/ops/page.css", "the operations page's style sheet"),
];

/// The finished document and the UI page that shows it, built once at start-up.
#[derive(Clone)]
pub struct Docs {
    json: Bytes,
    ui: Bytes,
    allow: AllowHeader,
}

impl Docs {
    pub fn new(service: &OpenApiService<Apis, ()>, config: &Config) -> Self {
        let generated = service.spec();
        let document = document(&generated, config);
        let json = serde_json::to_string_pretty(&document).expect("a JSON value serializes");
        // poem-openapi's page embeds the generated document verbatim; it shows ours instead.
        let page = service.swagger_ui_html();
        assert!(page.contains(&generated), "the Swagger UI page embeds the generated document");
        let ui = page.replacen(&generated, &json, 1).replacen("<title>Swagger UI</title>", TITLE, 1);
        Self { json: Bytes::from(json), ui: Bytes::from(ui), allow: AllowHeader::new(&document) }
    }

    /// The middleware that names the allowed methods in 405 answers of the API's routes.
    pub fn allow_header(&self) -> AllowHeader {
        self.allow.clone()
    }

    /// `GET /openapi.json`.
    pub fn document_endpoint(&self) -> impl Endpoint + 'static {
        let json = self.json.clone();
        make_sync(move |_| Response::builder().content_type("application/json").body(json.clone()))
    }

    /// `GET /docs`.
    pub fn ui_endpoint(&self) -> impl Endpoint + 'static {
        let page = self.ui.clone();
        make_sync(move |_| {
            Response::builder()
                .content_type("text/html; charset=utf-8")
                .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(page.clone())
        })
    }
}

const TITLE: &str = "<title>Stayler Storage API</title>";

/// What every API client is told first, in the document's `info`.
const DESCRIPTION: &str = "\
Stores images (users' photos, vendors' clothing, AI try-on results), makes their thumbnails, \
checksums and backups, and serves them through signed, time-limited URLs.\n\n\
Every request but the health summary and file serving carries `Authorization: Bearer <JWT>` \
(HS256; claims `sub`, `role` = `user` | `vendor` | `service` | `admin`, `exp`). Every error \
answers `{\"error\": {\"code\": \"…\", \"message\": \"…\"}}` with a stable `code`; a 429 or 503 \
carries `Retry-After`. A `GET` is also answered to `HEAD`.";

/// The generated document `generated` completed for `config`.
fn document(generated: &str, config: &Config) -> Value {
    let mut document: Value = serde_json::from_str(generated).expect("poem-openapi writes JSON");
    document["info"]["description"] = Value::from(DESCRIPTION);
    let variants = variant_schema(config);
    for_each_operation(&mut document, |_, _, operation| {
        // `get_mut`: indexing a missing key mutably would add it as `null`.
        for parameter in operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
            if parameter["name"] == "variant" && parameter["in"] == "query" {
                parameter["schema"] = variants.clone();
            }
            if parameter["name"] == "ttl" && parameter["in"] == "query" {
                parameter["schema"]["minimum"] = Value::from(1);
                parameter["schema"]["maximum"] = Value::from(config.signed_urls.max_ttl_secs);
                parameter["schema"]["default"] = Value::from(config.signed_urls.default_ttl_secs);
            }
        }
    });
    let paths = document["paths"].as_object_mut().expect("paths");
    paths.insert(format!("{}/{{signed_path}}", serving::SIGNED_PREFIX.trim_end_matches('/')), serving::signed());
    paths.insert(format!("{}/{{id}}/{{variant}}", config.server.public_path), serving::public(&variants));
    statuses::narrow(&mut document);
    schemas::refine(&mut document);
    document
}

/// `original` or one of the configured thumbnail sizes.
fn variant_schema(config: &Config) -> Value {
    let names: Vec<&str> = std::iter::once(shared::model::ORIGINAL)
        .chain(config.storage.thumbnail_sizes.keys().map(String::as_str))
        .collect();
    json!({
        "type": "string",
        "enum": names,
        "default": shared::model::ORIGINAL,
        "description": "The original, or a thumbnail of one of the configured sizes (`storage.thumbnailSizes`).",
    })
}

/// Calls `visit(path, method, operation)` for every operation of `document`.
fn for_each_operation(document: &mut Value, mut visit: impl FnMut(&str, &str, &mut Value)) {
    let Some(paths) = document["paths"].as_object_mut() else { return };
    for (path, item) in paths {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item {
            if HTTP_METHODS.contains(&method.as_str()) {
                visit(path, method, operation);
            }
        }
    }
}

/// The keys of a path item that are operations.
const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
