//! Typed errors of the media engine.

/// Everything the media engine can refuse or fail at.
///
/// The offer errors are distinct variants so the HTTP layer can map each to its own 4xx JSON
/// error; [`MediaError::code`] gives a stable machine-readable name for that.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The offer is not parseable SDP, or str0m refused it as inconsistent
    /// (missing ICE credentials, fingerprint, mid, ...).
    #[error("malformed SDP offer: {0}")]
    MalformedSdp(String),
    /// The offer is over a bound checked before it is parsed (bytes, lines, m-lines).
    #[error("SDP offer too large: {0}")]
    OfferTooLarge(String),
    /// A session was trickled more remote candidates than it may hold (per ICE generation).
    #[error("too many candidates: a session takes at most {0} trickled candidates")]
    TooManyCandidates(usize),
    /// The offer has no (enabled) `m=video` section.
    #[error("the offer has no video m-line")]
    NoVideo,
    /// The offer's video sections carry no codec the stream can send. The text names the
    /// stream's codecs and what the offer had.
    #[error("no supported video codec in offer: {0}")]
    NoSupportedCodec(String),
    /// `accept_offer` with a session id that is already live.
    #[error("session {0:?} already exists")]
    DuplicateSession(String),
    /// A session id the engine does not know (never existed, or already ended).
    #[error("unknown session {0:?}")]
    UnknownSession(String),
    /// An offer for a stream the engine does not serve (HTTP 404).
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// A WHIP publisher for a stream another publisher holds (HTTP 409).
    #[error("stream {0:?} already has a publisher")]
    StreamHasPublisher(String),
    /// A WHIP offer with no video the gateway can receive (H.264 or VP8, sent to us).
    #[error("no video to receive in offer: {0}")]
    NothingToReceive(String),
    /// A trickled ICE candidate that does not parse.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// A PATCH body that is not a well-formed, bounded `application/trickle-ice-sdpfrag`
    /// (RFC 8840): size, line or candidate limits, bad ICE credentials, unparsable candidate.
    #[error("malformed sdpfrag: {0}")]
    MalformedSdpFrag(String),
    /// A PATCH for an ICE session that is no longer current: its `If-Match` names another
    /// entity-tag, or its `a=ice-ufrag` is of an older ICE generation (HTTP 412).
    #[error("the ICE session changed (ICE restart): If-Match or a=ice-ufrag is stale")]
    IceSessionMismatch,
    /// The engine could not apply a well-formed ICE restart (server side, HTTP 500; the session
    /// is not ended by it).
    #[error("ICE restart failed: {0}")]
    IceRestartFailed(&'static str),
    /// The configured session limit is reached.
    #[error("too many media sessions (limit {0})")]
    TooManySessions(usize),
    /// Invalid engine configuration (start-up only).
    #[error("media config: {0}")]
    Config(String),
    /// Socket errors (start-up only).
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The video source could not be started (e.g. encoder initialisation).
    #[error("video source: {0}")]
    Source(String),
    /// The engine task is gone (shut down or crashed).
    #[error("media engine stopped")]
    EngineStopped,
}

impl MediaError {
    /// Stable, machine-readable name of the error, for JSON error bodies and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::MalformedSdp(_) => "malformed_sdp",
            MediaError::OfferTooLarge(_) => "offer_too_large",
            MediaError::TooManyCandidates(_) => "too_many_candidates",
            MediaError::NoVideo => "no_video",
            MediaError::NoSupportedCodec(_) => "unsupported_codec",
            MediaError::DuplicateSession(_) => "duplicate_session",
            MediaError::UnknownSession(_) => "unknown_session",
            MediaError::UnknownStream(_) => "unknown_stream",
            MediaError::StreamHasPublisher(_) => "stream_has_publisher",
            MediaError::NothingToReceive(_) => "unsupported_codec",
            MediaError::BadCandidate(_) => "bad_candidate",
            MediaError::MalformedSdpFrag(_) => "malformed_sdpfrag",
            MediaError::IceSessionMismatch => "ice_session_mismatch",
            MediaError::IceRestartFailed(_) => "ice_restart_failed",
            MediaError::TooManySessions(_) => "too_many_sessions",
            MediaError::Config(_) => "config",
            MediaError::Io(_) => "io",
            MediaError::Source(_) => "source",
            MediaError::EngineStopped => "engine_stopped",
        }
    }

    /// True when the error is the client's fault (a 4xx), false for server-side failures.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            MediaError::MalformedSdp(_)
                | MediaError::OfferTooLarge(_)
                | MediaError::TooManyCandidates(_)
                | MediaError::NoVideo
                | MediaError::NoSupportedCodec(_)
                | MediaError::DuplicateSession(_)
                | MediaError::UnknownSession(_)
                | MediaError::UnknownStream(_)
                | MediaError::BadCandidate(_)
                | MediaError::StreamHasPublisher(_)
                | MediaError::NothingToReceive(_)
                | MediaError::MalformedSdpFrag(_)
                | MediaError::IceSessionMismatch
        )
    }
}
