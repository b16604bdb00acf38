//! Viewer sessions: one registry owns each session from its first request (ICE config,
//! WHEP `OPTIONS`/`POST`, or offer) to its end, and nothing else keeps session state.
//!
//! ```text
//! config request ─▶ pending ──offer──▶ offered (viewer slot) ──▶ ended
//!                     │  bound by relay candidate, id, or new      ▲
//!                     └── idle with no allocation / last allocation closed
//! ended ◀── WHEP DELETE (holder of the id), media end (ICE/DTLS failure, peer gone),
//!           replacement by a re-offer with the same webrtc_id
//! ```
//!
//! * [`table`] is the sans-I/O core: the rules, tested with a fake clock.
//! * [`registry`] is the shell: one lock around the table, the relay (who holds which
//!   relayed address and how many allocations; closing a user's allocations) and the media
//!   engine (accepting offers, closing media), and the task that sweeps idle sessions and
//!   hears the engine's session ends.
//!
//! A session's id is also its TURN REST user. The relay asks the registry about a user's
//! [`Standing`](relay::core::Standing): a live session's allocations refresh past the
//! credential's expiry; an ended one's are refused and closed.

pub mod id;
pub mod registry;
pub mod table;

pub use id::{is_session_id, new_id, valid_id, Source, SESSION_PREFIX};
pub use registry::{OfferError, Registry, Siblings};
pub use table::{Binding, Limits, TableError};
