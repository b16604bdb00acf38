//! Proxy mode (`UPSTREAM_URL`): every request the gateway does not answer itself goes to the
//! upstream web application (Geti's backend), on GATEWAY_HTTP_ADDR and as HTTPS on the TURN
//! port.
//!
//! * Bodies stream both ways (hyper's backpressure: a 100 MB upload holds a few buffers, not
//!   the file); server-sent events and other long responses flow as they come.
//! * `Upgrade` (WebSocket) is passed on; once the upstream answers 101 the two connections
//!   are spliced byte for byte.
//! * Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the headers it names,
//!   `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are dropped
//!   both ways; everything else, status codes included, passes through. `X-Forwarded-For`
//!   (appended), `X-Forwarded-Proto` and `X-Forwarded-Host` are set; `Host` names the
//!   upstream.
//! * Timeouts: [`CONNECT_TIMEOUT`] to connect, [`HEAD_TIMEOUT`] from the request body's last
//!   progress (its end, for most requests) to the response head: an upload that keeps moving
//!   is never cut, a stalled one is; none on the response body. An upstream that
//!   refuses or is down gets the client a JSON 502 `upstream_unavailable`, one that does not
//!   answer in time a 504 `upstream_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Time to open a connection to the upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from the request body's last progress (its end) to the upstream's response head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the health check gives the upstream.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the connection a request came on is TLS (set per connection by [`crate::http`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientTls(pub bool);

/// The proxy to one upstream.
#[derive(Clone)]
pub struct Proxy {
    base: Uri,
    client: Client<HttpConnector, Body>,
    head_timeout: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("base", &self.base).finish()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), besides those `Connection` names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers; returns the `Upgrade` value when the message asked for
/// one (`Connection: upgrade` and an `Upgrade` header).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut upgrade_asked = false;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            if t.eq_ignore_ascii_case("upgrade") {
                upgrade_asked = true;
            }
            !t.is_empty()
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade = headers
        .get(header::UPGRADE)
        .filter(|_| upgrade_asked)
        .cloned();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
    upgrade
}

impl Proxy {
    /// A proxy to `base` (`http://host:port/`, checked by [`crate::config::Settings::upstream`]).
    pub fn new(base: Uri) -> Self {
        Self::with_timeouts(base, CONNECT_TIMEOUT, HEAD_TIMEOUT)
    }

    /// [`Proxy::new`] with other timeouts (tests).
    pub fn with_timeouts(base: Uri, connect: Duration, head: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(32)
            .build(connector);
        Self {
            base,
            client,
            head_timeout: head,
        }
    }

    /// The upstream's base URL.
    pub fn base(&self) -> &Uri {
        &self.base
    }

    fn target(&self, path_and_query: Option<&axum::http::uri::PathAndQuery>) -> Option<Uri> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| axum::http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
    }

    /// Forwards `req` (from `remote`) to the upstream and its answer back.
    pub async fn forward(&self, mut req: Request) -> Response {
        let remote = req
            .extensions()
            .get::<crate::signaling::ClientAddr>()
            .map(|a| a.0);
        let tls = req.extensions().get::<ClientTls>().is_some_and(|t| t.0);
        let Some(uri) = self.target(req.uri().path_and_query()) else {
            return crate::http::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "bad request target",
            );
        };
        let client_upgrade = {
            let mut h = req.headers().clone();
            strip_hop_by_hop(&mut h).map(|u| (u, hyper::upgrade::on(&mut req)))
        };
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        forwarded_headers(&mut headers, remote, tls, self.base.authority());
        if let Some((proto, _)) = &client_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }
        let progress = Progress::start();
        let body = Body::new(ProgressBody {
            inner: body,
            progress: progress.clone(),
        });
        let mut out = axum::http::Request::new(body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;
        // The head timeout runs from the request body's last progress: a long upload that
        // keeps moving is no 504, a stalled one (or a silent upstream) is.
        let sent = {
            let request = self.client.request(out);
            tokio::pin!(request);
            loop {
                let wait = self.head_timeout.saturating_sub(progress.since());
                match tokio::time::timeout(wait, &mut request).await {
                    Ok(r) => break Ok(r),
                    Err(_) if progress.since() >= self.head_timeout => break Err(()),
                    Err(_) => continue,
                }
            }
        };
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::info!(method = %parts.method, path = %parts.uri.path(), error = %e, "proxy: upstream unavailable");
                return upstream_unavailable(&self.base, &e);
            }
            Err(_) => {
                tracing::info!(method = %parts.method, path = %parts.uri.path(), "proxy: upstream response head timed out");
                return crate::http::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!(
                        "the upstream ({}) did not answer within {} s",
                        self.base,
                        self.head_timeout.as_secs()
                    ),
                );
            }
        };
        let upstream_upgrade = strip_hop_by_hop(resp.headers_mut());
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some((_, client_side)), Some(proto)) = (client_upgrade, upstream_upgrade) else {
                return crate::http::error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_bad_upgrade",
                    "the upstream switched protocols without an upgrade being asked",
                );
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_side, upstream_side) {
                    Ok((c, u)) => {
                        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "proxy: upgrade failed"),
                }
            });
            let (mut parts, _) = resp.into_parts();
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
            return Response::from_parts(parts, Body::empty());
        }
        resp.map(Body::new)
    }

    /// The upstream's health, for `/health`: a GET of its `/health`, else of `/` when it has
    /// none, within [`HEALTH_TIMEOUT`].
    pub async fn health(&self) -> serde_json::Value {
        let check = async {
            let mut last = None;
            for path in ["/health", "/"] {
                let Some(uri) =
                    self.target(Some(&axum::http::uri::PathAndQuery::from_static(path)))
                else {
                    continue;
                };
                let mut req = axum::http::Request::new(Body::empty());
                *req.uri_mut() = uri;
                match self.client.request(req).await {
                    Ok(resp) if resp.status() == StatusCode::NOT_FOUND && path == "/health" => {
                        last = Some(Ok((path, resp.status())));
                    }
                    Ok(resp) => return Ok((path, resp.status())),
                    Err(e) => return Err(e.to_string()),
                }
            }
            last.unwrap_or_else(|| Err("no request could be made".into()))
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
            Ok(Ok((path, status))) => serde_json::json!({
                "url": self.base.to_string(),
                "status": if status.is_success() || status.is_redirection() { "ok" } else { "error" },
                "checked": path,
                "http_status": status.as_u16(),
            }),
            Ok(Err(e)) => serde_json::json!({
                "url": self.base.to_string(),
                "status": "unavailable",
                "detail": e,
            }),
            Err(_) => serde_json::json!({
                "url": self.base.to_string(),
                "status": "unavailable",
                "detail": format!("no answer within {} s", HEALTH_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// When a request body last moved (a frame passed, or it ended).
#[derive(Clone)]
struct Progress(std::sync::Arc<std::sync::Mutex<std::time::Instant>>);

impl Progress {
    fn start() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            std::time::Instant::now(),
        )))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    fn since(&self) -> Duration {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// The client's request body on its way to the upstream, noting its progress.
struct ProgressBody {
    inner: Body,
    progress: Progress,
}

impl hyper::body::Body for ProgressBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            self.progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `X-Forwarded-For` (the client appended), `-Proto`, `-Host` (the client's `Host`), and
/// `Host` set to the upstream's.
fn forwarded_headers(
    headers: &mut HeaderMap,
    remote: Option<SocketAddr>,
    tls: bool,
    upstream: Option<&axum::http::uri::Authority>,
) {
    if let Some(remote) = remote {
        let ip = remote.ip().to_string();
        let value = match headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    match headers.get(header::HOST).cloned() {
        Some(host) => {
            headers.insert("x-forwarded-host", host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    if let Some(a) = upstream.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
        headers.insert(header::HOST, a);
    }
}

fn upstream_unavailable(base: &Uri, e: &hyper_util::client::legacy::Error) -> Response {
    let why = if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    crate::http::error(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        format!("the upstream ({base}) is unavailable: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_are_told() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade, x-secret"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["cache-control", "cross-origin-opener-policy"]);
        // An Upgrade header without Connection: upgrade asks for nothing.
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers_append_and_name_the_upstream() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert(header::HOST, HeaderValue::from_static("gw.test"));
        let up: axum::http::uri::Authority = "127.0.0.1:9100".parse().unwrap();
        forwarded_headers(
            &mut h,
            Some("192.0.2.1:5000".parse().unwrap()),
            true,
            Some(&up),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "gw.test");
        assert_eq!(h[header::HOST], "127.0.0.1:9100");
    }

    async fn json_of(resp: Response) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_refusing_upstream_is_a_502_and_a_silent_one_a_504() {
        // A port nothing listens on (bound, then closed): connection refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let p = Proxy::new(format!("http://127.0.0.1:{port}/").parse().unwrap());
        let (status, body) = json_of(p.forward(Request::new(Body::empty())).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"], "upstream_unavailable");
        assert_eq!(p.health().await["status"], "unavailable");

        // One that accepts and never answers: 504 after the head timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let p = Proxy::with_timeouts(
            format!("http://{addr}/").parse().unwrap(),
            Duration::from_secs(2),
            Duration::from_millis(300),
        );
        let (status, body) = json_of(p.forward(Request::new(Body::empty())).await).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"], "upstream_timeout");
        hold.abort();
    }

    #[tokio::test]
    async fn an_upload_that_keeps_moving_outlasts_the_head_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An upstream that reads the whole (chunked) body, then answers.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = up.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"0\r\n\r\n") && got.len() < 65_536 {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await
                .unwrap();
            got
        });
        /// A body fed piece by piece.
        struct Trickle(tokio::sync::mpsc::Receiver<hyper::body::Bytes>);
        impl hyper::body::Body for Trickle {
            type Data = hyper::body::Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>>
            {
                self.0
                    .poll_recv(cx)
                    .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let body = Trickle(rx);
        // Ten pieces 100 ms apart: 1 s of upload against a 300 ms head timeout.
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx
                    .send(hyper::body::Bytes::from_static(b"0123456789"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let p = Proxy::with_timeouts(
            format!("http://{addr}/").parse().unwrap(),
            Duration::from_secs(2),
            Duration::from_millis(300),
        );
        let mut req = Request::new(Body::new(body));
        *req.method_mut() = axum::http::Method::POST;
        let resp = p.forward(req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = String::from_utf8_lossy(&server.await.unwrap()).into_owned();
        assert_eq!(seen.matches("0123456789").count(), 10, "{seen}");
    }

    #[test]
    fn targets_keep_path_and_query() {
        let p = Proxy::new("http://127.0.0.1:9100/".parse().unwrap());
        let pq: axum::http::uri::PathAndQuery = "/api/x?y=1".parse().unwrap();
        assert_eq!(
            p.target(Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:9100/api/x?y=1"
        );
    }
}
