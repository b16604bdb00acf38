//! The HTTP API: served on GATEWAY_HTTP_ADDR and, through the TURN port's
//! demultiplexer, as HTTPS on TURN_LISTEN.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;

/// The bearer token `GET /api/v1/turn/credentials` requires (API_TOKEN); `None`: the
/// endpoint is off.
#[derive(Clone)]
struct ApiToken(Option<Arc<str>>);

/// Builds the router; `cors` (from CORS_ORIGINS) wraps it when set. `api_token` (API_TOKEN)
/// guards the TURN REST endpoint, which is off without one. Without signaling (relay-only
/// mode) only /health, /metrics and the TURN REST endpoint are served.
pub fn router(
    app: Arc<App>,
    cors: Option<tower_http::cors::CorsLayer>,
    api_token: Option<String>,
) -> Router {
    if api_token.is_none() {
        tracing::info!(
            "GET /api/v1/turn/credentials is off (404): set API_TOKEN (e.g. \
             `openssl rand -base64 32`) and send it as `Authorization: Bearer <token>` to mint \
             TURN REST credentials over HTTP"
        );
    }
    let relay_only = app.signaling().is_none();
    let proxy = app.proxy().cloned();
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::handler))
        .route("/api/v1/turn/credentials", get(turn_credentials));
    // Relay-only mode (no signaling) serves no page, streams or offers: 404 there.
    if !relay_only {
        r = r
            .route("/api/v1/streams", get(streams_list))
            .route("/api/v1/cluster", get(cluster_view))
            .route(
                "/api/v1/cluster/probe",
                axum::routing::post(cluster_probe)
                    .layer(axum::extract::DefaultBodyLimit::max(4096)),
            )
            .merge(if proxy.is_some() {
                // Proxy mode: the upstream owns `/`; the gateway's page moves.
                crate::web::routes_under(crate::web::PROXY_PAGE_PREFIX)
            } else {
                crate::web::routes()
            })
            .merge(crate::signaling::routes());
    }
    let r = r
        .layer(axum::Extension(ApiToken(api_token.map(Arc::from))))
        .with_state(app);
    let Some(proxy) = proxy else {
        let r = r.fallback(not_found);
        let r = match cors {
            Some(c) => r.layer(c),
            None => r,
        };
        // Outermost: the deadline covers every route, CORS preflights included.
        return r.layer(axum::middleware::from_fn(request_deadline));
    };
    // Proxy mode: the gateway's own routes keep their CORS and deadline; everything else
    // goes to the upstream, which answers its own preflights and has its own timeouts
    // (see `crate::proxy`): a long upload or an event stream is no 408.
    let r = match cors {
        Some(c) => r.route_layer(c),
        None => r,
    };
    r.route_layer(axum::middleware::from_fn(request_deadline))
        .fallback(move |req: axum::extract::Request| {
            let proxy = proxy.clone();
            async move { proxy.forward(req).await }
        })
}

/// Time a request has, from its complete head to its response head: its body must arrive
/// and the handler answer within it. (The head itself has `HEADER_READ_TIMEOUT`, below.)
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers 408 (JSON, `Connection: close`) to a request whose body has not arrived, or that
/// is not answered, within [`REQUEST_TIMEOUT`]: a client that sends a head with a
/// `Content-Length` and then stalls holds its connection for at most that long. Dropping
/// the handler's future drops the half-read body; the connection closes after the 408.
async fn request_deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not complete within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            );
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}

/// A JSON error body `{"error": "...", "detail": "..."}` with a status.
pub fn error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": code, "detail": detail.into() })),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// `{"status": "ok", "allocations": N}`; in proxy mode also `"upstream": {...}` (see
/// [`crate::proxy::Proxy::health`]), and `"status": "degraded"` while the upstream is not ok
/// (still 200: the gateway itself serves).
async fn health(State(app): State<Arc<App>>) -> Response {
    let mut body = json!({
        "status": "ok",
        "allocations": app.relay_shared().allocations(),
    });
    if let Some(p) = app.proxy() {
        let upstream = p.health().await;
        let ok = upstream.get("status").and_then(|s| s.as_str()) == Some("ok");
        if let Some(o) = body.as_object_mut() {
            if !ok {
                o.insert("status".into(), "degraded".into());
            }
            o.insert("upstream".into(), upstream);
        }
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct CredentialsQuery {
    service: Option<String>,
    username: Option<String>,
}

/// TURN REST API (draft-uberti-behave-turn-rest): `GET ?service=turn&username=U` →
/// `{username, password, ttl, uris}`.
/// Requires `Authorization: Bearer <API_TOKEN>`: 404 when no token is configured, 401
/// without the right one (compared in constant time).
async fn turn_credentials(
    State(app): State<Arc<App>>,
    axum::Extension(ApiToken(token)): axum::Extension<ApiToken>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CredentialsQuery>,
) -> Response {
    let Some(token) = token else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the TURN REST credentials endpoint is off: the gateway has no API_TOKEN",
        );
    };
    if !bearer_matches(&headers, &token) {
        return unauthorized();
    }
    if let Some(s) = q.service.as_deref() {
        if s != "turn" {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_service",
                format!("service must be \"turn\", got {s:?}"),
            );
        }
    }
    let user = q.username.unwrap_or_else(|| "user".to_owned());
    if user.starts_with(crate::session::SESSION_PREFIX) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_username",
            format!(
                "usernames starting with {:?} are reserved for the gateway's own sessions",
                crate::session::SESSION_PREFIX
            ),
        );
    }
    match app.mint(&user) {
        Ok(c) => Json(json!({
            "username": c.username,
            "password": c.password,
            "ttl": c.ttl,
            "uris": app.turn_uris(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_username", e.to_string()),
    }
}

/// `GET /api/v1/cluster`: the cluster's nodes, where each stream lives, the siblings'
/// pulls this node serves and its own pulls. Needs `Authorization: Bearer <API_TOKEN>`
/// (404 without API_TOKEN: it names internal addresses); 404 outside cluster mode.
async fn cluster_view(
    State(app): State<Arc<App>>,
    axum::Extension(ApiToken(token)): axum::Extension<ApiToken>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(token) = token else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "GET /api/v1/cluster needs API_TOKEN to be set (and sent as `Authorization: Bearer`)",
        );
    };
    if !bearer_matches(&headers, &token) {
        return unauthorized();
    }
    match app.signaling().and_then(|s| s.streams().cluster()) {
        Some(pulls) => {
            let mine = pulls.describe(std::time::Instant::now());
            Json(pulls.cluster().describe(mine)).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this gateway is a single node (CLUSTER_REDIS_URL is not set)",
        ),
    }
}

/// `POST /api/v1/cluster/probe` `{"peer_url"}`: a sibling node's doctor asks whether
/// this node reaches its peer URL ([`crate::cluster::probe`]). Only for holders of
/// the cluster token naming their node (`X-Gateway-Node`).
async fn cluster_probe(
    State(app): State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(cluster) = app
        .signaling()
        .and_then(|s| s.streams().cluster())
        .map(|p| p.cluster().clone())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this gateway is a single node (CLUSTER_REDIS_URL is not set)",
        );
    };
    let node = headers
        .get(crate::media::pull::PeerAuth::NODE_HEADER)
        .and_then(|v| v.to_str().ok());
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match cluster.sibling_of(node, token) {
        Ok(Some(_)) => {}
        _ => return unauthorized(),
    }
    let Ok(req) = serde_json::from_slice::<crate::cluster::probe::ProbeRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_probe",
            "the body is {\"peer_url\": \"http://HOST:PORT\"}",
        );
    };
    Json(crate::cluster::probe::reach(cluster.node_id(), &req).await).into_response()
}

/// `GET /api/v1/streams`: every stream, its source, codecs, whether it is live and its
/// viewers. For operators: behind `Authorization: Bearer <API_TOKEN>` when one is set.
async fn streams_list(
    State(app): State<Arc<App>>,
    axum::Extension(ApiToken(token)): axum::Extension<ApiToken>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = token {
        if !bearer_matches(&headers, &token) {
            return unauthorized();
        }
    }
    match app.signaling() {
        Some(sig) => Json(sig.streams().describe(std::time::Instant::now())).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "signaling_unavailable",
            "the media engine is not running",
        ),
    }
}

/// 401 with `WWW-Authenticate: Bearer`.
fn unauthorized() -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send the gateway's API_TOKEN as `Authorization: Bearer <token>`",
    );
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time
/// (a length mismatch tells only the length).
fn bearer_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = v.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// Time a client has to send a complete request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one HTTP/1.1 connection (plain or TLS) with `router`, if `limits` has room for
/// it; otherwise closes it at once. The HTTP limits shed ([`relay::io::ConnectionLimits::shedding`]):
/// when they are full, a client from a less busy address closes the busiest address's oldest
/// connection, which ends here, mid-request or not.
pub fn serve_connection<S>(
    stream: S,
    remote: SocketAddr,
    tls: bool,
    router: Router,
    limits: &Arc<relay::io::ConnectionLimits>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let slot = match limits.acquire(remote.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            tracing::debug!(%remote, %why, "HTTP connection refused (HTTP_MAX_CONNECTIONS*)");
            return;
        }
    };
    tokio::spawn(async move {
        // Handlers learn the client's address (per-source bounds) from this extension.
        let service = tower::Layer::layer(
            &axum::Extension(crate::signaling::ClientAddr(remote)),
            router,
        );
        let service = tower::Layer::layer(&axum::Extension(crate::proxy::ClientTls(tls)), service);
        let service = TowerToHyperService::new(service);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // A client that opens a connection and trickles its request head (slowloris) is
        // cut off: hyper enforces the header timeout only with a timer.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let builder = builder.http1_only();
        // Upgrades (WebSocket) are served: proxy mode passes them to the upstream.
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::select! {
            r = conn => if let Err(e) = r {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            },
            () = slot.shed() => {
                tracing::debug!(%remote, "HTTP connection closed to make room (HTTP_MAX_CONNECTIONS)");
            }
        }
    });
}

/// The relay hands HTTP and HTTPS streams from the TURN port to this.
pub struct HttpHandoff {
    /// Router to serve.
    pub router: Router,
    /// Shared with the plain HTTP port.
    pub limits: Arc<relay::io::ConnectionLimits>,
}

impl relay::io::Handoff for HttpHandoff {
    fn serve(&self, stream: Box<dyn relay::io::IoStream>, remote: SocketAddr, tls: bool) {
        serve_connection(stream, remote, tls, self.router.clone(), &self.limits);
    }
}
