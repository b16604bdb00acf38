//! Who vouches for a REST user once its allocation exists: the owner of the relay (the
//! gateway's session registry) says whether a user is a live session, an ended one, or
//! none of its own, and each connection holding an allocation can be woken when its user's
//! standing changes.
//!
//! Why: a REST credential's expiry protects the moment of *admission*. Checking it again on
//! every Refresh, CreatePermission and ChannelBind cut every relayed viewer of a 24/7 stream
//! when its credential expired, since no shipped browser fetches new credentials
//! mid-stream. So the relay checks expiry when an allocation is created; afterwards:
//!
//! * a [`Standing::Live`] user (a gateway session that is still alive) refreshes for as
//!   long as the session lives;
//! * an [`Standing::Ended`] user is refused at once and its allocations are closed;
//! * an [`Standing::Unknown`] user (minted by `gateway credentials`, the REST endpoint or
//!   another service) refreshes past its expiry only until
//!   `max(expiry, created + Config::unbound_allocation_lifetime)`: bounded, never forever.

/// What the relay's owner says about a REST user (the part after the colon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A live session: its allocations refresh past the credential's expiry.
    Live,
    /// A session that ended: its credential is refused and its allocations close.
    Ended,
    /// Not a session of the owner: bounded lifetime past the credential's expiry.
    Unknown,
}

/// The owner's view of users. Called on the control path only (authentication of
/// Allocate, Refresh, CreatePermission, ChannelBind, and after a wake-up), never per
/// relayed packet; it must be cheap and must not block.
pub trait UserDirectory: Send + Sync {
    /// The standing of `user`.
    fn standing(&self, user: &str) -> Standing;

    /// An allocation of `user` now holds `relayed` (a gateway cluster tells the node that
    /// holds the session, so that an offer naming `relayed` binds to it). Must not block.
    fn allocated(&self, user: &str, relayed: std::net::SocketAddr) {
        let _ = (user, relayed);
    }
}

/// Wakes the connection task that holds an allocation, so it re-checks its user's standing
/// (revocation, session end). Registered per allocation in [`super::Shared`]'s per-user
/// index, so ending one user wakes only that user's connections, not every task.
pub trait Wake: Send + Sync {
    /// Ask the connection to call [`super::Client::check_revoked`] soon. Must not block.
    fn wake(&self);
}
