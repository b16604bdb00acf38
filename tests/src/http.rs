//! A minimal HTTP/1.1 client for the tests: one request per connection (`Connection:
//! close`), the response read to EOF, bounded in time. Raw on purpose: the tests also send
//! what a well-behaved client library would refuse to.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// A response: status, headers (lower-case names), body (de-chunked).
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Resp {
    /// Parses a whole raw response; `None` when there is no status line and head.
    pub fn parse(raw: &[u8]) -> Option<Resp> {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header `name` (lower case).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON (panics with the response when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.body))
    }

    /// Asserts a JSON error `{"error": code, "detail": "…"}` with `status`.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let j = self.json();
        assert_eq!(j["error"], code, "{self:?}");
        assert!(
            j["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(rest));
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// One HTTP/1.1 request with `Connection: close` and a Content-Length body; reads the
/// response to EOF. Bounded by [`HTTP_TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        // A server may answer (413) before reading the whole body: a failed write is fine.
        let _ = s.write_all(body).await;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, run)
        .await
        .expect("HTTP request timed out")
        .expect("HTTP request");
    Resp::parse(&raw).unwrap_or_else(|| panic!("no HTTP response: {raw:?}"))
}
