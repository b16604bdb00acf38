//! "Can you reach me?": a node asked by a sibling's doctor (`gateway doctor`, cluster mode)
//! checks, from where it stands, the address siblings use to reach the asking node: its
//! peer URL (`GET /health`; sibling pulls go there). Only a holder of the cluster token may
//! ask (`POST /api/v1/cluster/probe`), the check is bounded in time, and the answer says
//! only whether the address answered. (A node's TURN host is for browsers, not siblings;
//! its media ports answer no stranger, so they cannot be probed this way.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Each check's longest wait.
pub const PROBE_WAIT: Duration = Duration::from_secs(3);

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// The asking node's peer URL (`http://…` or `https://…`).
    pub peer_url: String,
}

/// What was found: `None` when the address answered, else why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    /// The node answering.
    pub node: String,
    /// The peer URL's `/health`.
    pub peer_url: Option<String>,
}

/// Checks `req` from this node (`me`).
pub async fn reach(me: &str, req: &ProbeRequest) -> ProbeAnswer {
    ProbeAnswer {
        node: me.to_owned(),
        peer_url: health(&req.peer_url).await.err(),
    }
}

async fn health(base: &str) -> Result<(), String> {
    let url: hyper::Uri = format!("{}/health", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| "not a URL".to_owned())?;
    if url.scheme_str() != Some("http") {
        // A sibling checks plain HTTP only (no trust store to judge a certificate by).
        return Err("only http:// peer URLs are probed".into());
    }
    let req = hyper::Request::get(url)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    match tokio::time::timeout(PROBE_WAIT, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
        Ok(Err(e)) => Err(format!("no connection: {}", root_cause(&e))),
        Err(_) => Err(format!("no answer within {} s", PROBE_WAIT.as_secs())),
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(c) = cause.source() {
        cause = c;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn says_what_answered_and_what_did_not() {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = http.accept().await {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let a = reach(
            "n2",
            &ProbeRequest {
                peer_url: format!("http://{addr}"),
            },
        )
        .await;
        assert_eq!(a.peer_url, None);
        let b = reach(
            "n2",
            &ProbeRequest {
                peer_url: format!("http://{closed_addr}/"),
            },
        )
        .await;
        assert!(b.peer_url.unwrap().contains("no connection"));
        let c = reach(
            "n2",
            &ProbeRequest {
                peer_url: "ftp://x".into(),
            },
        )
        .await;
        assert!(c.peer_url.is_some());
    }
}
