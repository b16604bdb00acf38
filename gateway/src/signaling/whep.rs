//! WHEP (RFC 9725): `POST /whep`, `OPTIONS /whep`, `PATCH /whep/{id}`, `DELETE /whep/{id}`.
//!
//! ICE servers travel in `Link` headers, one per URL:
//! `<turns:host:443?transport=tcp>; rel="ice-server"; username="…"; credential="…";
//! credential-type="password"`. A client that fetched them with `OPTIONS` (which creates a
//! session waiting for its offer) can bind its `POST` to that session by sending the
//! `X-Session-Id` header it got back; otherwise the `POST` makes a new session.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{ApiError, SdpBody, SdpFragBody};
use super::ice_servers::{link_headers, IceServer};
use super::sessions::{new_id, valid_id};
use crate::app::App;

/// Header carrying the session id of an `OPTIONS` response, and binding a `POST` to it.
pub const SESSION_HEADER: &str = "x-session-id";

fn with_links(headers: &mut HeaderMap, servers: &[IceServer]) {
    for l in link_headers(servers) {
        if let Ok(v) = HeaderValue::from_str(&l) {
            headers.append(header::LINK, v);
        }
    }
}

/// `POST /whep` with an `application/sdp` offer → `201 Created` with the answer.
pub(super) async fn post(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    SdpBody(sdp): SdpBody,
) -> Result<Response, ApiError> {
    let sig = super::state(&app)?;
    let id = match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) if sig.sessions().contains(id) => id.to_owned(),
        Some(id) if !valid_id(id) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_session_id",
                "X-Session-Id must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
            ))
        }
        Some(id) => return Err(ApiError::unknown_session(id)),
        None => new_id(),
    };
    let (answer, servers) = sig.offer(&app, &id, &sdp).await?;
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/whep/{id}")) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    with_links(h, &servers);
    Ok(resp)
}

/// `OPTIONS /whep`: a CORS preflight gets the allowed methods; any other `OPTIONS` gets the
/// ICE servers of a new session in `Link` headers (and its id in `X-Session-Id`).
pub(super) async fn options(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, PATCH, DELETE"),
    );
    h.insert(
        HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/sdp"),
    );
    if headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return Ok(resp);
    }
    let sig = super::state(&app)?;
    let (id, servers) = sig.hand_out(&app)?;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    with_links(h, &servers);
    Ok(resp)
}

/// `PATCH /whep/{id}` with `application/trickle-ice-sdpfrag`: adds the trickled candidates.
pub(super) async fn patch(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    SdpFragBody(frag): SdpFragBody,
) -> Result<Response, ApiError> {
    let sig = super::state(&app)?;
    if !sig.sessions().contains(&id) {
        return Err(ApiError::unknown_session(&id));
    }
    for line in frag.lines().map(str::trim) {
        if line.starts_with("a=candidate:") || line.starts_with("candidate:") {
            sig.media()
                .add_remote_candidate(&id, line)
                .await
                .map_err(super::media_error)?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /whep/{id}`: ends the session (revokes its TURN credential).
pub(super) async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sig = super::state(&app)?;
    if sig.end(&id, "WHEP DELETE").await {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::unknown_session(&id))
    }
}
