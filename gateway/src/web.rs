//! The viewer page: `GET /` plays the stream in a browser and shows which network path it
//! takes (host / srflx / relay over udp / tcp / tls), bitrate, frame rate, round-trip time and
//! packet loss. The files live in `gateway/web/` and are compiled into the binary, so the page
//! needs nothing but the gateway (no CDN, no external resources).
//!
//! The page uses the signaling API like any client: `GET /api/v1/webrtc/config` for ICE
//! servers, `POST /api/v1/projects/default/offer` with `{webrtc_id, sdp, type}`. Query
//! parameters `?relay=1` and `?transport=tls|tcp|udp` force TURN paths; see `web/viewer.js` for
//! the DOM contract tests read (`#stats` data attributes, `window.gatewayStats`).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
pub const INDEX_HTML: &str = include_str!("../web/index.html");
/// Its script.
pub const VIEWER_JS: &str = include_str!("../web/viewer.js");

/// Only our own script and connections; inline styles are the page's one `<style>` block.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'unsafe-inline'; media-src 'self' blob:; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes of the viewer page, to merge into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/viewer.js", get(viewer_js))
        // Browsers ask for it on every page load; no icon, and no 404 in the console.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

/// Where the page lives in proxy mode (UPSTREAM_URL), since the upstream owns `/`.
pub const PROXY_PAGE_PREFIX: &str = "/gateway";

/// The page and its script under `prefix` (`/gateway/`, `/gateway/viewer.js`), for proxy
/// mode; `prefix` without its slash redirects to the page.
pub fn routes_under<S: Clone + Send + Sync + 'static>(prefix: &'static str) -> Router<S> {
    let page = format!("{prefix}/");
    Router::new()
        .route(
            prefix,
            get(move || async move { axum::response::Redirect::to(&format!("{prefix}/")) }),
        )
        .route(&page, get(move || async move { index_under(prefix) }))
        .route(
            &format!("{prefix}/index.html"),
            get(move || async move { index_under(prefix) }),
        )
        .route(&format!("{prefix}/viewer.js"), get(viewer_js))
}

fn index_under(prefix: &str) -> Response {
    let html = INDEX_HTML.replace(
        r#"<script src="/viewer.js"></script>"#,
        &format!(r#"<script src="{prefix}/viewer.js"></script>"#),
    );
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (HeaderName::from_static("content-security-policy"), CSP),
        ],
        html,
    )
        .into_response()
}

async fn index() -> Response {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

async fn viewer_js() -> Response {
    static_file("text/javascript; charset=utf-8", VIEWER_JS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            // Small files that change with the binary: revalidate instead of caching stale.
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (HeaderName::from_static("content-security-policy"), CSP),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_page_and_script() {
        let page = index().await;
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.headers()[CONTENT_TYPE],
            "text/html; charset=utf-8",
            "HTML content type"
        );
        let js = viewer_js().await;
        assert!(js.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
    }

    #[test]
    fn page_is_self_contained_and_keeps_its_dom_contract() {
        assert!(INDEX_HTML.contains(r#"<script src="/viewer.js"></script>"#));
        for id in [
            r#"id="video""#,
            r#"id="status""#,
            r#"id="stats""#,
            r#"id="stat-path""#,
            r#"id="stat-protocol""#,
            r#"id="stat-bitrate""#,
            r#"id="stat-fps""#,
            r#"id="stat-rtt""#,
            r#"id="stat-loss""#,
            r#"id="stat-frames""#,
        ] {
            assert!(INDEX_HTML.contains(id), "{id} in index.html");
        }
        for needle in [
            "/api/v1/webrtc/config",
            "/offer",
            "iceTransportPolicy",
            "window.gatewayStats",
            "d.path",
            "d.protocol",
            "d.frames",
        ] {
            assert!(VIEWER_JS.contains(needle), "{needle} in viewer.js");
        }
        for page in [INDEX_HTML, VIEWER_JS] {
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
    }
}
