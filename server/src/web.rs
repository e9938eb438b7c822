//! The web client: the built browser app (`web-client/dist`), served at `/`, `/join` and
//! `/assets/...`.
//!
//! Why here: a party opens `<public-url>/join#token=...` on a phone with nothing installed, so the
//! same server that answers the websocket must also hand out the page, from the same origin
//! (the page's Content-Security-Policy then allows nothing else).
//!
//! The files come from [`rust_embed`]: a debug build reads `web-client/dist` from disk at request
//! time (rebuild the client, reload the page), a release build carries them inside the binary,
//! so `yuntiao` stays one file to deploy. When the client was not built, `/` and `/join` answer
//! a short page saying how to build it instead of failing.
//!
//! Caching: `index.html` must be revalidated every time (`no-cache`, with an ETag) because it
//! names the current asset files; those carry a content hash in their names (Vite), so they are
//! cached for a year as immutable.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

/// The built client. `allow_missing`: the server still compiles (and says how to build the
/// client) when `web-client/dist` does not exist. The folder is `web-client/dist` as an
/// absolute path without `..` (`YUNTIAO_WEB_DIST`, from build.rs), so that a debug build made
/// before the client was built serves it once it is.
#[derive(RustEmbed)]
#[folder = "$YUNTIAO_WEB_DIST/"]
#[allow_missing = true]
struct Assets;

/// Only our own origin: scripts, styles and images from this server, websockets to it; no inline
/// script, no framing, no forms posting elsewhere. `connect-src 'self'` covers the websockets to
/// this same host and port too (`ws:` from an `http:` page, `wss:` from `https:`: CSP Level 3,
/// as Chromium, Firefox and Safari implement it), so no scheme-wide `ws:`/`wss:` is needed, which
/// would have let a script talk to any host. The browser test (`tests/e2e/session.mjs`) runs the
/// whole session under this policy and fails on any violation.
pub const CSP: &str = concat!(
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; ",
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; ",
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
);

/// Shown at `/` when the client was not built.
const NOT_BUILT: &str = concat!(
    "The web client has not been built.\n",
    "网页客户端尚未构建。\n\n",
    "Build it, then restart the server (or just reload in a debug build):\n",
    "    cd web-client && npm ci && npm run build\n",
    "or start everything with ./scripts/run.sh\n",
);

/// The routes of the web client, merged into the main router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/join", get(index))
        .route("/assets/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    match Assets::get("index.html") {
        Some(file) => respond(file, "no-cache", &headers),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            NOT_BUILT,
        )
            .into_response(),
    }
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match Assets::get(&format!("assets/{file}")) {
        Some(f) => respond(f, "public, max-age=31536000, immutable", &headers),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// One file with its type, cache policy, ETag (its SHA-256) and the security headers; `304`
/// when the browser already has this version.
fn respond(file: rust_embed::EmbeddedFile, cache: &'static str, req: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut mime = file.metadata.mimetype().to_owned();
        if mime.starts_with("text/") && !mime.contains("charset") {
            mime.push_str("; charset=utf-8");
        }
        let mut r = file.data.into_owned().into_response();
        if let Ok(v) = HeaderValue::from_str(&mime) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=()"),
    );
    resp
}
