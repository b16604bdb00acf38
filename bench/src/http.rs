//! The bench's HTTP/1.1 client for the servers' JSON APIs: one exchange per connection,
//! bounded in time and size.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP response read.
const MAX_RESPONSE: u64 = 1 << 20;

/// One HTTP/1.1 exchange (`Connection: close`), bounded in time and size; returns the
/// status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut s).take(MAX_RESPONSE).read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    })
    .await
    .map_err(|_| anyhow!("{method} {path}: no response within {HTTP_TIMEOUT:?}"))?
    .with_context(|| format!("{method} {path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: no end of the response head"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: bad status line"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        bail!("{method} {path}: chunked response (not expected from the API)");
    }
    let body = match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => rest.get(..n).unwrap_or(rest),
        None => rest,
    };
    Ok((status, body.to_owned()))
}

/// The first 200 characters of a body, for error messages.
pub fn snippet(s: &str) -> String {
    s.chars().take(200).collect()
}
