//! The topology view: a page and a script, embedded in the binary (no CDN), served without a
//! credential because they hold no data; everything they show comes through the API with the
//! operator's token, and a refused token is said on the page.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
/// Scripts from this origin only; nothing inline runs, nothing is fetched from elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

/// `GET /ui`.
pub(crate) async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], PAGE).into_response()
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], SCRIPT).into_response()
}
