//! Sans-I/O TURN server core (RFC 8656, RFC 8489 long-term credentials, TURN REST API).
//!
//! Nothing here reads a clock or touches a socket: time comes in as [`Now`], bytes come in
//! as slices, and everything to send goes out through the [`Client`] API's return values and
//! the caller's buffers, so the whole protocol is tested with a fake clock.

pub mod badinput;
mod client;
mod nonce;
pub mod policy;
mod shared;
mod standing;
pub mod static_users;
pub mod stats;

pub use badinput::{source_prefix, BadInput};
pub use client::{Client, ClientOutput, PeerOutput};
pub use nonce::NonceKey;
pub use policy::{PeerPolicy, PolicyError, PolicyVerdict, SiblingMedia};
pub use shared::{Config, Shared};
pub use standing::{Standing, UserDirectory, Wake};
pub use static_users::{StaticUsers, StaticUsersError};
pub use stats::Stats;

use std::net::SocketAddr;
use std::time::Instant;

/// The transport a client reached us on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain UDP (optional listener).
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Streams pad ChannelData to a multiple of four bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The current time, in both forms the core needs: a monotonic instant for timers and
/// unix seconds for credential expiry (REST usernames carry unix time).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for lifetimes and timers.
    pub mono: Instant,
    /// Wall-clock seconds since the unix epoch.
    pub unix: u64,
}

/// The addresses identifying one client: its transport, its address, and the local
/// address it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Transport of the client connection.
    pub transport: Transport,
    /// Client's address as seen by us.
    pub client: SocketAddr,
    /// Our listener address the client reached.
    pub server: SocketAddr,
}

/// Address family of a relayed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// What the shell provides to the core for relayed addresses. Implemented by `io` with real
/// UDP sockets (or in-process addresses for the gateway's own media), and by tests with a
/// fake.
pub trait RelayPorts {
    /// Reserves a relayed transport address of `family` for a new allocation; with `even`
    /// its port must be even (EVEN-PORT, RFC 8656 §14.6). Called while handling an Allocate
    /// request; an error becomes a 508 (Insufficient Capacity) answer (or 440 Address Family
    /// not Supported when the family has no relay address at all).
    fn open(&mut self, family: Family, even: bool) -> Result<SocketAddr, RelayPortError>;
    /// Releases a relayed address obtained from `open` (allocation deleted or expired).
    fn close(&mut self, relayed: SocketAddr);
}

/// Why no relayed address could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayPortError {
    /// This family is not served (no local address of that family).
    #[error("address family not supported")]
    FamilyNotSupported,
    /// Port range exhausted or socket error.
    #[error("no relay port available: {0}")]
    Exhausted(String),
}

#[cfg(test)]
mod tests;
