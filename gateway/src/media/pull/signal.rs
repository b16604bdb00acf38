//! The HTTP half of a pull: one offer out, one answer back, in the upstream's dialect.
//!
//! * WHEP (RFC 9725): `POST` the SDP offer as `application/sdp`, `201 Created` with the
//!   answer and a `Location` to `DELETE` when done.
//! * Geti / FastRTC JSON: `POST {"webrtc_id", "sdp", "type": "offer"}`, `200 {"sdp", "type":
//!   "answer"}`; a backend with no pipeline running says `400 {"detail": "No active
//!   pipeline."}`, one at capacity `200 {"status": "failed", "meta": {...}}`.
//!
//! `http://` or `https://`: an `https://` upstream's certificate is checked against the
//! system's roots plus `PULL_CA_FILE` ([`client_tls`]); one not trusted is a
//! [`SignalError::Untrusted`].

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Time for one signaling exchange (connect, request, response).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body taken from an upstream.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// How an upstream takes offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// WHEP: `whep+http://…`.
    Whep,
    /// Geti's (FastRTC's) JSON offer endpoint: `offer+http://…/api/v1/projects/{id}/offer`.
    GetiOffer,
}

impl Dialect {
    /// The `MEDIA_SOURCE` scheme prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Dialect::Whep => "whep+",
            Dialect::GetiOffer => "offer+",
        }
    }
}

/// How [`SignalError::Untrusted`] reads (a viewer's refusal tells it apart by it).
pub const UNTRUSTED: &str = "the upstream's certificate is not trusted";

/// What an upstream answered.
#[derive(Debug)]
pub struct Answer {
    /// The SDP answer.
    pub sdp: String,
    /// WHEP's `Location` (absolute), to end the session.
    pub location: Option<Uri>,
}

/// Why an exchange failed. The text is for logs and, for [`SignalError::Refused`], for
/// viewers: it is the upstream's own reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The upstream could not be reached or did not answer in time.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream's TLS certificate is not trusted (not issued by a system root nor by
    /// `PULL_CA_FILE`, or not for its name).
    #[error("the upstream's certificate is not trusted: {0}")]
    Untrusted(String),
    /// The upstream answered, but not with an SDP answer (its reason, e.g. Geti's
    /// "No active pipeline."), and its own answer when it was a client error (4xx).
    #[error("upstream refused the offer: {0}")]
    Refused(String, Option<UpstreamAnswer>),
}

/// An upstream's own answer to an offer it refused (a 4xx), kept whole so that proxy mode
/// can hand a viewer exactly what the backend said (Geti: 400 `{"detail": "Project ID …
/// does not match the active pipeline's project ID."}`, 422 for a malformed id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAnswer {
    /// Its status code.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Its body (at most the bound on an answer's size).
    pub body: Bytes,
}

/// How a gateway node's pull presents itself to a sibling node (cluster mode): the
/// cluster's shared token as `Authorization: Bearer`, and its node id as
/// [`PeerAuth::NODE_HEADER`]. The sibling then serves only what it holds itself and counts
/// the pull as that node's.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerAuth {
    /// The pulling node's id.
    pub node: String,
    /// The cluster token (a secret: never printed).
    pub token: String,
}

impl PeerAuth {
    /// The header naming the pulling node.
    pub const NODE_HEADER: &'static str = "x-gateway-node";
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Sends `offer` to `url` in `dialect` and returns the answer. `webrtc_id` is the id a Geti
/// backend files the connection under; `peer`, how a sibling node's pull presents itself.
pub async fn exchange(
    dialect: Dialect,
    url: &Uri,
    offer: &str,
    webrtc_id: &str,
    peer: Option<&PeerAuth>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Answer, SignalError> {
    let (content_type, body) = match dialect {
        Dialect::Whep => ("application/sdp", offer.to_owned()),
        Dialect::GetiOffer => (
            "application/json",
            serde_json::json!({ "webrtc_id": webrtc_id, "sdp": offer, "type": "offer" })
                .to_string(),
        ),
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(hyper::header::CONTENT_TYPE, content_type);
    if let Some(p) = peer {
        req = req
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", p.token))
            .header(PeerAuth::NODE_HEADER, p.node.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SignalError::Unreachable(format!("bad request: {e}")))?;
    let (status, location, answer_type, body) = send(req, tls).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let own = status.is_client_error().then(|| UpstreamAnswer {
        status: status.as_u16(),
        content_type: answer_type,
        body: body.clone(),
    });
    match dialect {
        Dialect::Whep => {
            if status != StatusCode::CREATED && status != StatusCode::OK {
                return Err(SignalError::Refused(
                    format!("{status}: {}", reason_of(&text)),
                    own,
                ));
            }
            let location = location.and_then(|l| absolute(url, &l));
            Ok(Answer {
                sdp: text,
                location,
            })
        }
        Dialect::GetiOffer => {
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(_) => {
                    return Err(SignalError::Refused(
                        format!("{status}: not a JSON answer: {}", reason_of(&text)),
                        own,
                    ))
                }
            };
            match json.get("sdp").and_then(|s| s.as_str()) {
                Some(sdp) if status.is_success() => Ok(Answer {
                    sdp: sdp.to_owned(),
                    location: None,
                }),
                _ => Err(SignalError::Refused(
                    format!("{status}: {}", reason_of(&text)),
                    own,
                )),
            }
        }
    }
}

/// Ends a WHEP session (best effort, bounded in time).
pub async fn delete(location: &Uri, tls: &Arc<rustls::ClientConfig>) {
    let Ok(req) = Request::builder()
        .method(Method::DELETE)
        .uri(location.clone())
        .body(Full::new(Bytes::new()))
    else {
        return;
    };
    let _ = send(req, tls).await;
}

/// The TLS client configuration of pulls: the system's roots plus the certificates of
/// `ca_file` (PEM, `PULL_CA_FILE`). The error names the file.
pub fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{}: a certificate is not usable: {e}", path.display()))?;
        }
    } else if added == 0 {
        tracing::warn!(
            "no system root certificates found: https:// pulls will fail (set PULL_CA_FILE)"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request over a new TLS connection to `req`'s host (HTTP/1.1).
async fn send_https(
    req: Request<Full<Bytes>>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<hyper::Response<hyper::body::Incoming>, SignalError> {
    let unreachable = |e: String| SignalError::Unreachable(e);
    let host = req
        .uri()
        .host()
        .ok_or_else(|| unreachable("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = req.uri().port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| unreachable(format!("{host}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(format!("{host}:{port}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => {
                    SignalError::Untrusted(format!("{host}:{port}: {c:?}"))
                }
                _ => unreachable(format!("TLS with {host}:{port}: {e}")),
            },
        )?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = req;
    // HTTP/1.1 wants the Host header; the URI goes as its path.
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    if let Some(a) = authority.and_then(|a| hyper::header::HeaderValue::from_str(&a).ok()) {
        req.headers_mut().insert(hyper::header::HOST, a);
    }
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(pq);
    }
    sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// Sends `req`; the answer's status, `Location`, `Content-Type` and body (bounded).
async fn send(
    req: Request<Full<Bytes>>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(StatusCode, Option<String>, Option<String>, Bytes), SignalError> {
    let run = async {
        let resp = if req.uri().scheme_str() == Some("https") {
            send_https(req, tls).await?
        } else {
            Client::builder(TokioExecutor::new())
                .build_http::<Full<Bytes>>()
                .request(req)
                .await
                .map_err(|e| SignalError::Unreachable(e.to_string()))?
        };
        let status = resp.status();
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SignalError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, location, content_type, body))
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run)
        .await
        .map_err(|_| {
            SignalError::Unreachable(format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs()))
        })?
}

/// The human part of an error body: Geti's `detail`, our `detail`/`error`, or the text cut
/// short.
fn reason_of(body: &str) -> String {
    if let Ok(j) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["detail", "error", "message"] {
            if let Some(s) = j.get(key).and_then(|v| v.as_str()) {
                return s.to_owned();
            }
        }
        if let Some(e) = j.pointer("/meta/error").and_then(|v| v.as_str()) {
            return e.to_owned();
        }
    }
    body.chars().take(200).collect()
}

/// `location` resolved against `base` (WHEP allows a relative `Location`).
fn absolute(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(loc.path_and_query()?.clone());
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_reads_as_its_prefix() {
        assert!(SignalError::Untrusted("x".into())
            .to_string()
            .starts_with(UNTRUSTED));
        let pull = super::super::session::PullError::from(SignalError::Untrusted("x".into()));
        assert!(pull.to_string().starts_with(UNTRUSTED));
    }

    #[test]
    fn reasons_come_from_the_body() {
        assert_eq!(
            reason_of(r#"{"detail":"No active pipeline."}"#),
            "No active pipeline."
        );
        assert_eq!(
            reason_of(r#"{"status":"failed","meta":{"error":"concurrency_limit_reached"}}"#),
            "concurrency_limit_reached"
        );
        assert_eq!(reason_of("plain words"), "plain words");
        assert_eq!(reason_of(&"é".repeat(500)).chars().count(), 200);
    }

    #[test]
    fn relative_locations_resolve_against_the_endpoint() {
        let base: Uri = "http://127.0.0.1:9100/whep/cam".parse().unwrap();
        assert_eq!(
            absolute(&base, "/whep/gws-1").unwrap().to_string(),
            "http://127.0.0.1:9100/whep/gws-1"
        );
        assert_eq!(
            absolute(&base, "http://10.0.0.1/x").unwrap().to_string(),
            "http://10.0.0.1/x"
        );
    }
}
