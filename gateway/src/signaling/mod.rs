//! The signaling API: ICE server lists, SDP offer/answer (the original JSON API and WHEP),
//! and the session table that ties a browser's TURN credential to its media session.
//!
//! ```text
//! GET  /api/v1/webrtc/config        ─┐ new session (waits for its offer, idle timeout)
//! GET  /api/v1/system/webrtc/config ─┤ + ICE servers minted for it
//! OPTIONS /whep                     ─┘
//! POST /api/v1/projects/{p}/offer   ── offer → answer (binds to the session, or a new one)
//! POST /whep                        ── offer → 201 answer + Location + Link ice-servers
//! PATCH /whep/{id}                  ── trickled candidates
//! DELETE /whep/{id}                 ── end
//! ```
//!
//! Ending a session, whatever the cause (WHEP DELETE, the media engine's `SessionEnded`:
//! peer gone, ICE failure, connect timeout; the idle timeout of a session that never
//! offered), revokes its TURN user (the session id) on the embedded relay, which closes that
//! user's allocations, and closes the media session.

pub mod extract;
pub mod ice_servers;
mod offer;
pub mod sessions;
mod whep;

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::Router;

use crate::app::{unix_now, App};
use crate::media::{MediaError, MediaHandle};
use extract::ApiError;
use ice_servers::{IceServer, IceServerPlan};
use sessions::{SessionError, Sessions};

/// Largest request body accepted by the signaling endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// Signaling state shared by the handlers.
pub struct Signaling {
    media: MediaHandle,
    sessions: Sessions,
    plan: IceServerPlan,
    embedded_uris: OnceLock<Vec<String>>,
    embedded_default: Vec<String>,
    relay: Arc<relay::core::Shared>,
    revoker: OnceLock<relay::io::Revoker>,
}

impl Signaling {
    /// Wires the state. `embedded_uris` are the embedded relay's URLs as configured (see
    /// [`Signaling::set_relay`]).
    pub fn new(
        media: MediaHandle,
        plan: IceServerPlan,
        embedded_uris: Vec<String>,
        relay: Arc<relay::core::Shared>,
        max_viewers: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        let s = Arc::new(Self {
            media,
            sessions: Sessions::new(max_viewers, idle_timeout),
            plan,
            embedded_uris: OnceLock::new(),
            embedded_default: embedded_uris,
            relay,
            revoker: OnceLock::new(),
        });
        s.spawn_tasks();
        s
    }

    /// Connects to the running relay: revocations then close live connections, and the
    /// embedded URLs become `embedded_uris` (with the ports actually bound).
    pub fn set_relay(&self, revoker: relay::io::Revoker, embedded_uris: Vec<String>) {
        let _ = self.revoker.set(revoker);
        let _ = self.embedded_uris.set(embedded_uris);
    }

    /// The media engine.
    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    /// The session table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The embedded relay's URLs.
    pub fn embedded_uris(&self) -> &[String] {
        self.embedded_uris.get().unwrap_or(&self.embedded_default)
    }

    /// Ends `id`: removes it, revokes its TURN user, closes its media session. Returns
    /// whether it existed.
    pub async fn end(&self, id: &str, why: &str) -> bool {
        let Some(until) = self.sessions.remove(id) else {
            return false;
        };
        self.revoke(id, until);
        match self.media.close(id).await {
            Ok(()) | Err(MediaError::UnknownSession(_)) => {}
            Err(e) => tracing::debug!(session = %id, error = %e, "closing media session"),
        }
        tracing::info!(session = %id, reason = why, "session ended");
        true
    }

    fn revoke(&self, user: &str, until: u64) {
        match self.revoker.get() {
            Some(r) => r.revoke(user, until),
            None => {
                self.relay.revoke(user, until, relay::io::now());
            }
        }
    }

    /// Creates a session that waits for its offer and mints its ICE servers.
    pub fn hand_out(&self, app: &App) -> Result<(String, Vec<IceServer>), ApiError> {
        let id = sessions::new_id();
        let (servers, until) = self.mint(app, &id)?;
        self.sessions.create(&id, until).map_err(session_error)?;
        Ok((id, servers))
    }

    /// The ICE server list for `id` and the expiry of its embedded credential.
    fn mint(&self, app: &App, id: &str) -> Result<(Vec<IceServer>, u64), ApiError> {
        let now = unix_now();
        let cred = app.mint(id).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "mint_failed",
                e.to_string(),
            )
        })?;
        let servers = self
            .plan
            .for_session(id, self.embedded_uris(), &cred, now)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "mint_failed",
                    e.to_string(),
                )
            })?;
        Ok((servers, now.saturating_add(app.credential_ttl())))
    }

    /// Accepts an offer for session `id` (binding to a waiting session or creating one);
    /// returns the answer and the session's ICE servers.
    pub async fn offer(
        &self,
        app: &App,
        id: &str,
        sdp: &str,
    ) -> Result<(String, Vec<IceServer>), ApiError> {
        let (servers, until) = self.mint(app, id)?;
        let begin = self
            .sessions
            .begin_offer(id, until)
            .map_err(session_error)?;
        match self.media.accept_offer(sdp, id.to_owned()).await {
            Ok(answer) => {
                tracing::info!(session = %id, bound = (begin == sessions::Begin::Bound), "session offered");
                Ok((answer, servers))
            }
            Err(e) => {
                self.sessions.offer_failed(id, begin);
                Err(media_error(e))
            }
        }
    }

    fn spawn_tasks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut ended = self.media.subscribe_ended();
        tokio::spawn({
            let weak = weak.clone();
            async move {
                loop {
                    match ended.recv().await {
                        Ok(e) => {
                            let Some(s) = weak.upgrade() else { return };
                            let why = format!("media: {:?}", e.reason);
                            s.end(&e.session_id, &why).await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "session-ended notifications lagged");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        tokio::spawn(idle_sweeper(weak));
    }
}

async fn idle_sweeper(weak: Weak<Signaling>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = weak.upgrade() else { return };
        for id in s.sessions.idle(Instant::now()) {
            s.end(&id, "idle: no offer").await;
        }
    }
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::Full(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("the gateway serves at most {n} viewers (MAX_VIEWERS); try again later"),
        ),
        SessionError::Duplicate => ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_session",
            "this session already has a media connection; use a new session id",
        ),
    }
}

/// Maps a media engine error to its HTTP error.
pub fn media_error(e: MediaError) -> ApiError {
    let status = match &e {
        MediaError::UnknownSession(_) => StatusCode::NOT_FOUND,
        MediaError::DuplicateSession(_) => StatusCode::CONFLICT,
        MediaError::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
        MediaError::EngineStopped => StatusCode::SERVICE_UNAVAILABLE,
        e if e.is_client_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = match &e {
        MediaError::TooManySessions(_) => "too_many_viewers",
        e => e.code(),
    };
    ApiError::new(status, code, e.to_string())
}

/// The signaling routes (merged into [`crate::http::router`]).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/webrtc/config", get(offer::webrtc_config))
        .route("/api/v1/system/webrtc/config", get(offer::webrtc_config))
        .route("/api/v1/projects/{project_id}/offer", post(offer::offer))
        .route("/whep", post(whep::post).options(whep::options))
        .route("/whep/{id}", patch(whep::patch).delete(whep::delete))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The signaling state, or 503 when the gateway runs without one.
pub(crate) fn state(app: &App) -> Result<&Arc<Signaling>, ApiError> {
    app.signaling().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signaling_unavailable",
            "the media engine is not running",
        )
    })
}
