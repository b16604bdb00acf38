//! Which peers the relay may send to (DESIGN.md, *Peer policy*).

use std::net::SocketAddr;

/// Allow and deny rules.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    _private: (),
}

/// Outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Relaying to this peer is allowed.
    Allow,
    /// Refused; the reason names which rule, for logs and the `forbidden` counter.
    Deny(&'static str),
}

/// A rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer rule {rule:?}: {reason}")]
pub struct PolicyError {
    /// The offending entry.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PeerPolicy {
    /// Parses comma-separated allow and deny lists (`CIDR[:port[-port]]`, IPv6 in brackets
    /// when a port is given).
    pub fn parse(allowed: &str, denied: &str) -> Result<Self, PolicyError> {
        let _ = (allowed, denied);
        unimplemented!()
    }

    /// Checks a peer; `internal` are the gateway's own media addresses.
    pub fn check(&self, peer: SocketAddr, internal: &[SocketAddr]) -> PolicyVerdict {
        let _ = (peer, internal);
        unimplemented!()
    }
}
