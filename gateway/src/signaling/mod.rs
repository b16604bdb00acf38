//! The signaling API: ICE server lists, SDP offer/answer (the original JSON API and WHEP).
//! Session state is not kept here: the [`Registry`] owns it.
//!
//! ```text
//! GET  /api/v1/webrtc/config        ─┐ a pending session (no viewer slot)
//! GET  /api/v1/system/webrtc/config ─┤ + ICE servers minted for it
//! OPTIONS /whep                     ─┘
//! POST /api/v1/projects/{p}/offer   ── offer → answer (bound by relay candidate, id, or new)
//! POST /whep                        ── offer → 201 answer + Location + Link ice-servers
//! PATCH /whep/{id}                  ── trickled candidates
//! DELETE /whep/{id}                 ── end (the id is the secret from Location)
//! POST /whip[/{stream}]             ── publisher's offer (bearer token) → 201 + Location
//! PATCH|DELETE /whip/{stream}/{id}  ── as WHEP's, for the publisher
//! ```

pub mod cors;
pub mod extract;
pub mod ice_servers;
mod offer;
mod whep;
mod whip;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::media::{MediaError, MediaHandle};
use crate::session::registry::Answered;
use crate::session::{OfferError, Registry, TableError};
use crate::streams::{StreamDirectory, StreamRefusal};
use extract::ApiError;
use ice_servers::{IceServer, IceServerPlan};
use relay::io::unix_now;

/// Largest request body accepted by the signaling endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The address a request came from (set per connection by [`crate::http`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Signaling state shared by the handlers: the session registry and how to mint ICE
/// servers.
pub struct Signaling {
    registry: Arc<Registry>,
    plan: IceServerPlan,
    /// The embedded relay's URLs; final once the relay has bound its port.
    embedded_uris: ArcSwap<Vec<String>>,
    ttl: u64,
    /// Which stream a request plays.
    streams: Arc<StreamDirectory>,
}

impl Signaling {
    /// Wires the state. `embedded_uris` are the embedded relay's URLs as configured (see
    /// [`Signaling::set_embedded_uris`]); `ttl` is the lifetime of minted credentials.
    pub fn new(
        registry: Arc<Registry>,
        plan: IceServerPlan,
        embedded_uris: Vec<String>,
        ttl: u64,
        streams: Arc<StreamDirectory>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            plan,
            embedded_uris: ArcSwap::from_pointee(embedded_uris),
            ttl,
            streams,
        })
    }

    /// The embedded relay's URLs with the ports it actually bound.
    pub fn set_embedded_uris(&self, uris: Vec<String>) {
        self.embedded_uris.store(Arc::new(uris));
    }

    /// The embedded relay's URLs.
    pub fn embedded_uris(&self) -> Arc<Vec<String>> {
        self.embedded_uris.load_full()
    }

    /// The session registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The media engine.
    pub fn media(&self) -> &MediaHandle {
        self.registry.media()
    }

    /// A pending session for a config request from `ip`, and its ICE servers.
    pub fn hand_out(&self, ip: Option<IpAddr>) -> Result<(String, Vec<IceServer>), ApiError> {
        let id = self.registry.hand_out(ip).map_err(table_error)?;
        let servers = self.ice_servers(&id)?;
        Ok((id, servers))
    }

    /// The ICE server list for session `id`, with credentials minted for it.
    pub fn ice_servers(&self, id: &str) -> Result<Vec<IceServer>, ApiError> {
        let now = unix_now();
        let mint_failed =
            |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "mint_failed", e);
        let cred = self
            .registry
            .relay()
            .secrets()
            .mint(id, now, self.ttl)
            .map_err(|e| mint_failed(e.to_string()))?;
        self.plan
            .for_session(id, &self.embedded_uris(), &cred, now)
            .map_err(|e| mint_failed(e.to_string()))
    }

    /// The stream directory.
    pub fn streams(&self) -> &StreamDirectory {
        &self.streams
    }

    /// Answers an offer for `stream`, already resolved by [`StreamDirectory::resolve`] (see
    /// [`Registry::offer`]).
    pub async fn offer(
        &self,
        stream: &str,
        named: Option<&str>,
        client_ids: bool,
        sdp: &str,
        ip: Option<IpAddr>,
    ) -> Result<Answered, OfferError> {
        self.registry
            .offer(stream, named, client_ids, sdp, ip)
            .await
    }
}

/// Maps a table refusal to its HTTP error.
pub fn table_error(e: TableError) -> ApiError {
    match e {
        TableError::Full(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("the gateway serves at most {n} viewers (MAX_VIEWERS); try again later"),
        ),
        TableError::SourceBusy(n) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending_sessions",
            format!(
                "{n} sessions from your address are waiting for their offer and hold TURN \
                 allocations (SESSION_PENDING_PER_SOURCE); offer or close one first"
            ),
        ),
        TableError::Busy(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_pending_sessions",
            format!(
                "{n} sessions are waiting for their offer (SESSION_PENDING_MAX); try again later"
            ),
        ),
        TableError::Unknown => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no live session with that id",
        ),
    }
}

/// Maps a stream refusal to its HTTP error: 404 for an unknown stream, 409 for one with no
/// live source (Geti's endpoint answers the latter its own way, see the private `offer` module).
pub fn stream_error(e: StreamRefusal) -> ApiError {
    match &e {
        StreamRefusal::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_stream", e.to_string())
        }
        StreamRefusal::NotLive(_) | StreamRefusal::UpstreamRefused(..) => {
            ApiError::new(StatusCode::CONFLICT, "no_active_source", e.to_string())
        }
        StreamRefusal::UpstreamUntrusted(..) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_untrusted", e.to_string())
        }
        StreamRefusal::PoolFull(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_projects",
            e.to_string(),
        ),
    }
}

/// Maps an offer refusal to its HTTP error.
pub fn offer_error(e: OfferError) -> ApiError {
    match e {
        OfferError::Table(t) => table_error(t),
        OfferError::Media(m) => media_error(m),
    }
}

/// Maps a media engine error to its HTTP error.
pub fn media_error(e: MediaError) -> ApiError {
    let status = match &e {
        MediaError::UnknownSession(_) | MediaError::UnknownStream(_) => StatusCode::NOT_FOUND,
        MediaError::DuplicateSession(_) | MediaError::StreamHasPublisher(_) => StatusCode::CONFLICT,
        MediaError::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
        MediaError::EngineStopped => StatusCode::SERVICE_UNAVAILABLE,
        MediaError::IceSessionMismatch => StatusCode::PRECONDITION_FAILED,
        e if e.is_client_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match &e {
        MediaError::TooManySessions(_) => "too_many_viewers",
        e => e.code(),
    };
    ApiError::new(status, code, e.to_string())
}

/// What the signaling handlers take from the router's state: the signaling state, when the
/// media engine runs. `App` provides it through `FromRef`, so this module needs nothing of
/// `App`.
#[derive(Clone)]
pub struct SignalingState(pub Option<Arc<Signaling>>);

/// The signaling routes (merged into [`crate::http::router`]).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SignalingState: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/api/v1/webrtc/config", get(offer::webrtc_config))
        .route("/api/v1/system/webrtc/config", get(offer::webrtc_config))
        .route("/api/v1/projects/{project_id}/offer", post(offer::offer))
        .route("/whep", post(whep::post).options(whep::options))
        // POST names a stream; PATCH and DELETE name a session (the `Location` of a POST).
        .route(
            "/whep/{id}",
            post(whep::post_stream)
                .options(whep::options)
                .patch(whep::patch)
                .delete(whep::delete),
        )
        .route("/whip", post(whip::post).options(whep::options))
        .route(
            "/whip/{stream}",
            post(whip::post_stream).options(whep::options),
        )
        .route(
            "/whip/{stream}/{id}",
            axum::routing::patch(whip::patch).delete(whip::delete),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The signaling state, or 503 when the gateway runs without one.
pub(crate) fn state(s: &SignalingState) -> Result<&Arc<Signaling>, ApiError> {
    s.0.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signaling_unavailable",
            "the media engine is not running",
        )
    })
}
