//! Media engine: WebRTC peers (str0m) that send one shared video stream to many browsers,
//! each in a codec its browser offered (one feed per codec, see [`VideoFeeds`]).
//!
//! Data flow:
//!
//! ```text
//! source (testsrc thread, RTP ingest, looped file)
//!    │  EncodedFrame { Arc<[u8]> access unit }   (encoded once, shared, never copied per viewer)
//!    ▼
//! engine task ── owns every str0m `Rtc` (one per viewer: own ICE-lite agent, DTLS, SRTP)
//!    ▲      │
//!    │      ├─▶ UDP media sockets (port range, shared by all sessions)
//!    │      └─▶ in-process sink (TURN relay short-circuit, see [`InProcessSink`])
//!    │
//! UDP sockets / [`MediaHandle::inject`] (datagrams from the relay)
//! ```
//!
//! The signaling layer talks to the engine through a cloneable [`MediaHandle`]:
//! [`MediaHandle::accept_offer`] turns a browser offer into an answer,
//! [`MediaHandle::add_remote_candidate`] trickles, [`MediaHandle::ice_patch`] applies a WHEP PATCH
//! (trickle or ICE restart, see [`ice_restart`]), [`MediaHandle::close`] ends a session, and
//! [`MediaHandle::take_ended`] reports sessions that ended on their own (ICE consent lost,
//! DTLS failure, peer closed, connect timeout) so TURN credentials can be revoked.

// Every public item of the media engine is documented (checked by this lint).
#![warn(missing_docs)]

mod engine;
mod error;
pub mod file;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ice_restart;
pub mod jitter;
pub mod keyframe;
pub mod pull;
pub mod rtp;
mod sdp_check;
mod source;
pub mod testsrc;
pub mod whip;

pub use engine::{
    ChannelSink, EndReason, InProcessSink, MediaConfig, MediaEngine, MediaHandle, PortRange,
    SessionEnded, MAX_OFFER_BYTES, MAX_OFFER_LINES, MAX_OFFER_MEDIA, MAX_TRICKLED_CANDIDATES,
};
pub use error::MediaError;
pub use ice_restart::{IcePatchOutcome, IceRestartAnswer, IfMatch, SdpFrag};
pub use source::{
    EncodedFrame, GopCache, GopSubscription, Published, StreamSet, VideoCodec, VideoFeeds,
    VideoSource, DEFAULT_STREAM, GOP_CACHE_BYTES, GOP_CACHE_FRAMES,
};
