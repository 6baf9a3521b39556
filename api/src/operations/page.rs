//! `GET /storage/ops`: the operations page for admins, one HTML file with its script and
//! style sheet, compiled into the binary. It holds no data: it asks for an admin token and
//! reads the admin endpoints with it, so serving it needs no authentication.

use poem::http::{HeaderValue, header};
use poem::{Response, Route, get, handler};

const HTML: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Only the page's own script and style sheet, fetches to this origin, no frames, no forms
/// sent anywhere: an injected tag can neither run nor leak the token kept in the tab.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the page is served; its script and style sheet sit under it.
pub const PATH: &str = "/storage/ops";

/// `router` with the page and its two assets.
pub fn mount(router: Route) -> Route {
    router.at(PATH, get(page)).at(format!("{PATH}/page.js"), get(script)).at(format!("{PATH}/page.css"), get(style))
}

#[handler]
fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

#[handler]
fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[handler]
fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY))
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
}
