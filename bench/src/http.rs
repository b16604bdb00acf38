//! The bench's HTTP/1.1 client for the servers' JSON APIs (the gateway's, Janus's):
//! hyper's client, each exchange bounded in time and size, each on a connection of its own
//! (as the bench's hand-written client did; idle connections are not kept).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Bound on every HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP response read.
const MAX_RESPONSE: usize = 1 << 20;

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector)
    })
}

/// One HTTP/1.1 exchange, bounded in time and size; returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    http_as(addr, method, path, body, None).await
}

/// [`http`], with `Authorization: Bearer <bearer>` when given.
pub async fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("accept", "application/json")
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .with_context(|| format!("{method} {path}: building the request"))?;
    let exchange = async {
        let resp = client().request(req).await?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the body: {e}"))?
            .to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no response within {HTTP_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {path} to {addr}"))
}

/// The first 200 characters of a body, for error messages.
pub fn snippet(s: &str) -> String {
    s.chars().take(200).collect()
}
