//! The original JSON API: `GET …/webrtc/config` and `POST /api/v1/projects/{id}/offer`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiError, ApiJson};
use super::sessions::valid_id;
use crate::app::App;

/// `GET /api/v1/webrtc/config`, `GET /api/v1/system/webrtc/config`:
/// `{"iceServers": [...], "sessionId": "..."}` for a new session.
pub(super) async fn webrtc_config(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let sig = super::state(&app)?;
    let (id, servers) = sig.hand_out(&app)?;
    Ok(Json(json!({ "iceServers": servers, "sessionId": id })))
}

/// Body of `POST /api/v1/projects/{project_id}/offer`.
#[derive(Debug, Deserialize)]
pub(super) struct OfferRequest {
    webrtc_id: String,
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `POST /api/v1/projects/{project_id}/offer` → `{"sdp", "type": "answer"}`.
pub(super) async fn offer(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<OfferRequest>,
) -> Result<Json<Value>, ApiError> {
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
    let (answer, _) = sig.offer(&app, &req.webrtc_id, &req.sdp).await?;
    Ok(Json(json!({ "sdp": answer, "type": "answer" })))
}
