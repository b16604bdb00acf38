//! WHIP ingest (RFC 9725): `POST /whip/{stream}` (and `/whip` for `default`), `OPTIONS`,
//! `PATCH` and `DELETE /whip/{stream}/{id}`.
//!
//! The same resource model as WHEP ([`super::whep`], whose code paths these handlers use):
//! `201` with the answer, `Location`, `ETag` and the ICE servers in `Link` headers, with
//! credentials minted for the publisher's session (a publisher behind a UDP-blocking
//! firewall publishes through the embedded relay); `PATCH` trickles or restarts ICE;
//! `DELETE` ends the publisher and the stream has no live source again. What differs: the
//! publisher presents the stream's bearer token, takes no viewer slot, and a stream takes
//! one publisher at a time (`409 stream_has_publisher`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::extract::{ApiError, SdpBody, SdpFragBody};
use super::whep;
use super::ClientAddr;
use crate::media::DEFAULT_STREAM;
use crate::streams::WhipRefusal;

/// `POST /whip`: a publisher's offer for the stream `default`.
pub(super) async fn post(
    State(app): State<super::SignalingState>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    SdpBody(sdp): SdpBody,
) -> Result<Response, ApiError> {
    post_to(app, None, peer, headers, sdp).await
}

/// `POST /whip/{stream}`: a publisher's offer for `stream`.
pub(super) async fn post_stream(
    State(app): State<super::SignalingState>,
    Path(stream): Path<String>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    SdpBody(sdp): SdpBody,
) -> Result<Response, ApiError> {
    post_to(app, Some(stream), peer, headers, sdp).await
}

/// 404 for an unknown stream, 400 for one not fed by WHIP.
fn whip_error(e: WhipRefusal) -> ApiError {
    match &e {
        WhipRefusal::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_stream", e.to_string())
        }
        WhipRefusal::NotWhip(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "not_a_whip_stream", e.to_string())
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(stream: &str) -> Response {
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "publishing to {stream:?} needs its token (WHIP_TOKEN, or the stream's \
             `whip?token=`) as `Authorization: Bearer <token>`"
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn has_publisher(stream: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "stream_has_publisher",
        format!("stream {stream:?} already has a live publisher; DELETE its resource first"),
    )
}

async fn post_to(
    app: super::SignalingState,
    stream: Option<String>,
    peer: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    sdp: String,
) -> Result<Response, ApiError> {
    let sig = super::state(&app)?;
    let name = stream.as_deref().unwrap_or(DEFAULT_STREAM).to_owned();
    let whip = sig.streams().whip(Some(&name)).map_err(whip_error)?;
    if !bearer(&headers).is_some_and(|t| whip.authorizes(t)) {
        tracing::info!(stream = %name, "WHIP publisher refused: missing or wrong token");
        return Ok(unauthorized(&name));
    }
    // Checked again, without a race, when the engine takes the session.
    if whip.has_publisher() && !whip.takeover() {
        return Err(has_publisher(&name));
    }
    let named = whep::session_named(&headers)?;
    // Cluster mode: one origin per stream in the whole cluster.
    let cluster = sig.streams().cluster().map(|p| p.cluster().clone());
    if let Some(c) = &cluster {
        if let Err(holder) = c.claim(&name).await {
            tracing::info!(stream = %name, %holder, "WHIP publisher refused: another node is the stream's origin");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream_has_publisher",
                format!("stream {name:?} already has a live publisher on cluster node {holder:?}; DELETE its resource first"),
            ));
        }
    }
    let ip = peer.map(|p| p.0 .0.ip());
    match sig.registry().publish(whip, named, &sdp, ip).await {
        Ok(a) => {
            tracing::info!(stream = %name, session = %a.session, "WHIP publisher accepted");
            if let Some(c) = &cluster {
                c.poke();
            }
            let location = format!("/whip/{name}/{}", a.session);
            whep::created(sig, a, &location)
        }
        Err(e) => {
            if let Some(c) = &cluster {
                c.unclaim(&name);
            }
            match e {
                crate::session::OfferError::Media(
                    crate::media::MediaError::StreamHasPublisher(_),
                ) => Err(has_publisher(&name)),
                e => Ok(whep::refused(e)),
            }
        }
    }
}

/// `PATCH /whip/{stream}/{id}`: trickle or ICE restart, as WHEP's.
pub(super) async fn patch(
    State(app): State<super::SignalingState>,
    Path((_stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    SdpFragBody(frag): SdpFragBody,
) -> Result<Response, ApiError> {
    whep::patch_session(&app, &id, &headers, &frag).await
}

/// `DELETE /whip/{stream}/{id}`: the publisher ends; the stream has no live source until
/// the next one. `id` (from `Location`) is the secret that ends it.
pub(super) async fn delete(
    State(app): State<super::SignalingState>,
    Path((_stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    whep::delete_session(&app, &id, "WHIP DELETE")
}
