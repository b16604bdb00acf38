//! The HTTP half of a pull: one offer out, one answer back, in the upstream's dialect.
//!
//! * WHEP (RFC 9725): `POST` the SDP offer as `application/sdp`, `201 Created` with the
//!   answer and a `Location` to `DELETE` when done.
//! * Geti / FastRTC JSON: `POST {"webrtc_id", "sdp", "type": "offer"}`, `200 {"sdp", "type":
//!   "answer"}`; a backend with no pipeline running says `400 {"detail": "No active
//!   pipeline."}`, one at capacity `200 {"status": "failed", "meta": {...}}`.
//!
//! Plain `http://` only: upstreams this gateway pulls from sit beside it (loopback, a private
//! network); an `https://` upstream is refused when the setting is read.

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
    /// The upstream answered, but not with an SDP answer (its reason, e.g. Geti's
    /// "No active pipeline.").
    #[error("upstream refused the offer: {0}")]
    Refused(String),
}

/// Sends `offer` to `url` in `dialect` and returns the answer. `webrtc_id` is the id a Geti
/// backend files the connection under.
pub async fn exchange(
    dialect: Dialect,
    url: &Uri,
    offer: &str,
    webrtc_id: &str,
) -> Result<Answer, SignalError> {
    let (content_type, body) = match dialect {
        Dialect::Whep => ("application/sdp", offer.to_owned()),
        Dialect::GetiOffer => (
            "application/json",
            serde_json::json!({ "webrtc_id": webrtc_id, "sdp": offer, "type": "offer" })
                .to_string(),
        ),
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SignalError::Unreachable(format!("bad request: {e}")))?;
    let (status, location, body) = send(req).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    match dialect {
        Dialect::Whep => {
            if status != StatusCode::CREATED && status != StatusCode::OK {
                return Err(SignalError::Refused(format!(
                    "{status}: {}",
                    reason_of(&text)
                )));
            }
            let location = location.and_then(|l| absolute(url, &l));
            Ok(Answer {
                sdp: text,
                location,
            })
        }
        Dialect::GetiOffer => {
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                SignalError::Refused(format!("{status}: not a JSON answer: {}", reason_of(&text)))
            })?;
            match json.get("sdp").and_then(|s| s.as_str()) {
                Some(sdp) if status.is_success() => Ok(Answer {
                    sdp: sdp.to_owned(),
                    location: None,
                }),
                _ => Err(SignalError::Refused(format!(
                    "{status}: {}",
                    reason_of(&text)
                ))),
            }
        }
    }
}

/// Ends a WHEP session (best effort, bounded in time).
pub async fn delete(location: &Uri) {
    let Ok(req) = Request::builder()
        .method(Method::DELETE)
        .uri(location.clone())
        .body(Full::new(Bytes::new()))
    else {
        return;
    };
    let _ = send(req).await;
}

async fn send(
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Option<String>, Bytes), SignalError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let run = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| SignalError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| SignalError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, location, body))
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
