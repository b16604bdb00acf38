//! The original JSON API: `GET …/webrtc/config` and `POST /api/v1/projects/{id}/offer`,
//! shaped as Geti's backend answers it (its UI is the reference client).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiError, ApiJson};
use super::ClientAddr;
use crate::session::{valid_id, OfferError, TableError};
use crate::streams::StreamRefusal;

/// `GET /api/v1/webrtc/config`, `GET /api/v1/system/webrtc/config`:
/// `{"iceServers": [...], "sessionId": "..."}` for a new pending session. Clients that
/// ignore `sessionId` (Geti's UI) are bound by the relay candidates their offer carries.
pub(super) async fn webrtc_config(
    State(app): State<super::SignalingState>,
    peer: Option<Extension<ClientAddr>>,
) -> Result<Json<Value>, ApiError> {
    let sig = super::state(&app)?;
    let (id, servers) = sig.hand_out(peer.map(|p| p.0 .0.ip()))?;
    Ok(Json(json!({ "iceServers": servers, "sessionId": id })))
}

fn default_type() -> String {
    "offer".to_owned()
}

/// Body of `POST /api/v1/projects/{project_id}/offer` (Geti's schema: `type` optional,
/// `"offer"` by default).
#[derive(Debug, Deserialize)]
pub(super) struct OfferRequest {
    webrtc_id: String,
    sdp: String,
    #[serde(rename = "type", default = "default_type")]
    kind: String,
}

/// `POST /api/v1/projects/{project_id}/offer` → `{"sdp", "type": "answer"}` for the stream
/// named `project_id` (see [`crate::streams`]). At capacity it answers 200
/// `{"status":"failed","meta":{"error":"concurrency_limit_reached","limit":N}}`: the FastRTC
/// convention Geti's UI parses and can retry from (any non-2xx leaves it stuck). A stream
/// with no live source answers as Geti's backend does with no active pipeline:
/// 400 `{"detail": "No active pipeline."}`; an unknown stream 404 `unknown_stream`.
pub(super) async fn offer(
    State(app): State<super::SignalingState>,
    Path(project_id): Path<String>,
    peer: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<OfferRequest>,
) -> Result<Response, ApiError> {
    if req.kind != "offer" {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("\"type\" must be \"offer\", got {:?}", req.kind),
        ));
    }
    if !valid_id(&req.webrtc_id) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "\"webrtc_id\" must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    let sig = super::state(&app)?;
    let resolved = sig
        .streams()
        .resolve(Some(&project_id), std::time::Instant::now())
        .map(str::to_owned);
    let resolved = match resolved {
        Ok(name) => sig.streams().ready(&name).await.map(|()| name),
        Err(e) => Err(e),
    };
    let stream = match resolved {
        Ok(s) => s,
        // Proxy mode: the backend's own refusal, as it gave it (status, type and body).
        Err(StreamRefusal::UpstreamRefused(_, answer)) => {
            let mut resp = (
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST),
                answer.body,
            )
                .into_response();
            if let Some(v) = answer
                .content_type
                .and_then(|t| axum::http::HeaderValue::from_str(&t).ok())
            {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, v);
            }
            return Ok(resp);
        }
        Err(StreamRefusal::NotLive(_)) => {
            let body = Json(json!({ "detail": "No active pipeline." }));
            return Ok((StatusCode::BAD_REQUEST, body).into_response());
        }
        Err(e) => return Err(super::stream_error(e)),
    };
    let ip = peer.map(|p| p.0 .0.ip());
    match sig
        .offer(&stream, Some(&req.webrtc_id), true, &req.sdp, ip)
        .await
    {
        Ok(a) => Ok(Json(json!({ "sdp": a.answer, "type": "answer" })).into_response()),
        Err(OfferError::Table(TableError::Full(limit))) => Ok(Json(json!({
            "status": "failed",
            "meta": { "error": "concurrency_limit_reached", "limit": limit },
        }))
        .into_response()),
        Err(e) => Err(super::offer_error(e)),
    }
}
