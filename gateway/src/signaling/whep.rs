//! WHEP (RFC 9725): `POST /whep`, `OPTIONS /whep`, `PATCH /whep/{id}`, `DELETE /whep/{id}`.
//!
//! ICE servers travel in `Link` headers, one per URL:
//! `<turns:host:443?transport=tcp>; rel="ice-server"; username="…"; credential="…";
//! credential-type="password"`. A client that fetched them with `OPTIONS` (which creates a
//! pending session) is bound to that session by the relay candidates of its offer, or by
//! the `X-Session-Id` header it got back; otherwise the `POST` makes a new session. The
//! session id in `Location` is the secret that ends it: `DELETE` takes nothing else.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::extract::{ApiError, SdpBody, SdpFragBody};
use super::ice_servers::{link_headers, IceServer};
use super::ClientAddr;
use crate::media::ice_restart::ice_etag_of_sdp;
use crate::media::IcePatchOutcome;
use crate::session::valid_id;

/// Header carrying the session id of an `OPTIONS` response, and binding a `POST` to it.
pub const SESSION_HEADER: &str = "x-session-id";

fn with_links(headers: &mut HeaderMap, servers: &[IceServer]) {
    for l in link_headers(servers) {
        if let Ok(v) = HeaderValue::from_str(&l) {
            headers.append(header::LINK, v);
        }
    }
}

/// `POST /whep` with an `application/sdp` offer → `201 Created` with the answer, for the
/// stream `default`.
pub(super) async fn post(
    State(app): State<super::SignalingState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    SdpBody(sdp): SdpBody,
) -> Result<Response, ApiError> {
    post_to(app, None, peer, headers, sdp).await
}

/// `POST /whep/{stream}`: as `POST /whep`, for the stream named in the path (404
/// `unknown_stream`, 409 `no_active_source`).
pub(super) async fn post_stream(
    State(app): State<super::SignalingState>,
    Path(stream): Path<String>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    SdpBody(sdp): SdpBody,
) -> Result<Response, ApiError> {
    post_to(app, Some(stream), peer, headers, sdp).await
}

async fn post_to(
    app: super::SignalingState,
    stream: Option<String>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    sdp: String,
) -> Result<Response, ApiError> {
    let sig = super::state(&app)?;
    // Cluster mode: a sibling node's pull (cluster token and node id) plays this node's
    // own streams only.
    let sibling = match sig.streams().cluster() {
        Some(p) => p
            .cluster()
            .sibling_of(
                headers
                    .get(crate::media::pull::PeerAuth::NODE_HEADER)
                    .and_then(|v| v.to_str().ok()),
                super::whip::bearer(&headers),
            )
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?,
        None => None,
    };
    let now = std::time::Instant::now();
    let directory = sig.streams();
    let stream = match &sibling {
        Some(_) => directory.resolve_local(stream.as_deref(), now),
        None => directory.resolve(stream.as_deref(), now),
    }
    .map_err(super::stream_error)?
    .to_owned();
    sig.streams()
        .ready(&stream)
        .await
        .map_err(super::stream_error)?;
    let named = session_named(&headers)?;
    match sig
        .offer(&stream, named, false, &sdp, peer.map(|p| p.0 .0.ip()))
        .await
    {
        Ok(a) => {
            if let (Some(node), Some(p)) = (&sibling, sig.streams().cluster()) {
                p.cluster().note_served(&a.session, &stream, node);
            }
            let location = format!("/whep/{}", a.session);
            created(sig, a, &location)
        }
        Err(e) => Ok(refused(e)),
    }
}

/// The session a WHEP/WHIP `POST` names in `X-Session-Id` (one of ours, from `OPTIONS`).
pub(super) fn session_named(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(SESSION_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) if valid_id(id) => Ok(Some(id)),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_session_id",
            "X-Session-Id must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
        )),
        None => Ok(None),
    }
}

/// The error response of a refused WHEP/WHIP offer (`Retry-After` when the gateway is full).
pub(super) fn refused(e: crate::session::OfferError) -> Response {
    let full = matches!(
        e,
        crate::session::OfferError::Table(crate::session::TableError::Full(_))
    );
    let mut resp = super::offer_error(e).into_response();
    if full {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// `201 Created` for an answered WHEP/WHIP offer: the answer, `Location` (the resource that
/// `PATCH` and `DELETE` take), the session id, the `ETag` of its ICE session and its ICE
/// servers (with credentials minted for the session) in `Link` headers.
pub(super) fn created(
    sig: &super::Signaling,
    answered: crate::session::registry::Answered,
    location: &str,
) -> Result<Response, ApiError> {
    let id = answered.session;
    let servers = sig.ice_servers(&id)?;
    // The entity-tag names the ICE session; an ICE restart (PATCH) makes a new one.
    let etag = ice_etag_of_sdp(&answered.answer);
    let mut resp = (StatusCode::CREATED, answered.answer).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    with_links(h, &servers);
    Ok(resp)
}

/// `OPTIONS /whep`: a CORS preflight gets the allowed methods; any other `OPTIONS` gets the
/// ICE servers of a new session in `Link` headers (and its id in `X-Session-Id`).
pub(super) async fn options(
    State(app): State<super::SignalingState>,
    peer: Option<Extension<ClientAddr>>,
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
    let (id, servers) = sig.hand_out(peer.map(|p| p.0 .0.ip()))?;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(HeaderName::from_static(SESSION_HEADER), v);
    }
    with_links(h, &servers);
    Ok(resp)
}

/// `PATCH /whep/{id}` with `application/trickle-ice-sdpfrag` (RFC 9725 §4.3): new
/// `a=ice-ufrag`/`a=ice-pwd` restart ICE (`200` with the gateway's new credentials and
/// candidates and a new `ETag`), so a client can move networks or renew its path without a
/// new session; otherwise the trickled candidates are added (`204`). `If-Match` with a stale
/// entity-tag gets `412`. `id` is the session id from `Location` (or `sessionId`).
pub(super) async fn patch(
    State(app): State<super::SignalingState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    SdpFragBody(frag): SdpFragBody,
) -> Result<Response, ApiError> {
    patch_session(&app, &id, &headers, &frag).await
}

/// `PATCH` of the WHEP or WHIP resource of session `id` (see [`patch`]).
pub(super) async fn patch_session(
    app: &super::SignalingState,
    id: &str,
    headers: &HeaderMap,
    frag: &str,
) -> Result<Response, ApiError> {
    let sig = super::state(app)?;
    let Some(media) = sig.registry().media_of(id) else {
        return Err(ApiError::unknown_session(id));
    };
    let if_match = match headers.get(header::IF_MATCH).map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_if_match",
                "If-Match must be ASCII",
            ))
        }
        None => None,
    };
    match sig
        .media()
        .ice_patch(&media, if_match, frag)
        .await
        .map_err(super::media_error)?
    {
        IcePatchOutcome::Trickled => Ok(StatusCode::NO_CONTENT.into_response()),
        IcePatchOutcome::Restarted(r) => {
            tracing::info!(session = %id, "ICE restarted by PATCH");
            let mut resp = (StatusCode::OK, r.sdpfrag).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/trickle-ice-sdpfrag"),
            );
            if let Ok(v) = HeaderValue::from_str(&r.etag) {
                h.insert(header::ETAG, v);
            }
            Ok(resp)
        }
    }
}

/// `DELETE /whep/{id}`: ends the session (its credential is refused from then on and its
/// allocations close). `id` must be the session id from `Location`: a client-chosen
/// `webrtc_id` names a session, it does not own it.
pub(super) async fn delete(
    State(app): State<super::SignalingState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    delete_session(&app, &id, "WHEP DELETE")
}

/// `DELETE` of the WHEP or WHIP resource of session `id` (see [`delete`]).
pub(super) fn delete_session(
    app: &super::SignalingState,
    id: &str,
    why: &'static str,
) -> Result<Response, ApiError> {
    let sig = super::state(app)?;
    if sig.registry().end(id, why) {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::unknown_session(id))
    }
}
