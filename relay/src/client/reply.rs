//! What the client receives: a response, owned, with accessors for what tests and callers
//! read from it; relayed data and where it came from.

use std::net::SocketAddr;

use stun_types::attribute::{ErrorCode, Fingerprint, Nonce, Realm, XorMappedAddress};
use stun_types::message::{Message, MessageClass};
use stun_types::prelude::*;
use turn_types::attribute::{Data, Lifetime, XorPeerAddress, XorRelayedAddress};

use super::{protocol, ClientError, TurnError};

/// One response, owned. It parsed when it was received.
#[derive(Debug, Clone)]
pub struct Reply {
    bytes: Vec<u8>,
    /// Whether the response carried MESSAGE-INTEGRITY that verified with our key
    /// (`None`: it carried none).
    pub integrity_ok: Option<bool>,
}

impl Reply {
    pub(super) fn new(bytes: Vec<u8>, integrity_ok: Option<bool>) -> Self {
        Self {
            bytes,
            integrity_ok,
        }
    }

    /// The message. It parsed when received, and parsing the same bytes again cannot fail.
    #[allow(clippy::expect_used)]
    pub fn message(&self) -> Message<'_> {
        Message::from_bytes(&self.bytes).expect("a reply parsed when it was received")
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Success response?
    pub fn is_success(&self) -> bool {
        self.message().class() == MessageClass::Success
    }

    /// The error, for an error response (code 0 if it lacks ERROR-CODE, so that a check on
    /// the code fails loudly).
    pub fn error(&self) -> Option<TurnError> {
        let msg = self.message();
        if msg.class() != MessageClass::Error {
            return None;
        }
        Some(match msg.attribute::<ErrorCode>() {
            Ok(e) => TurnError {
                code: e.code(),
                reason: e.reason().to_owned(),
            },
            Err(_) => TurnError {
                code: 0,
                reason: "error response without ERROR-CODE".into(),
            },
        })
    }

    /// Ok for a success response, the error otherwise.
    pub fn into_result(self) -> Result<Reply, ClientError> {
        match self.error() {
            Some(e) => Err(e.into()),
            None => Ok(self),
        }
    }

    /// NONCE, if present.
    pub fn nonce(&self) -> Option<String> {
        let msg = self.message();
        msg.attribute::<Nonce>().ok().map(|n| n.nonce().to_owned())
    }

    /// REALM, if present.
    pub fn realm(&self) -> Option<String> {
        let msg = self.message();
        msg.attribute::<Realm>().ok().map(|r| r.realm().to_owned())
    }

    /// LIFETIME, if present.
    pub fn lifetime(&self) -> Option<u32> {
        let msg = self.message();
        msg.attribute::<Lifetime>().ok().map(|l| l.seconds())
    }

    /// XOR-RELAYED-ADDRESS, if present.
    pub fn relayed(&self) -> Option<SocketAddr> {
        let msg = self.message();
        let tid = msg.transaction_id();
        msg.attribute::<XorRelayedAddress>()
            .ok()
            .map(|a| a.addr(tid))
    }

    /// XOR-MAPPED-ADDRESS, if present.
    pub fn mapped(&self) -> Option<SocketAddr> {
        let msg = self.message();
        let tid = msg.transaction_id();
        msg.attribute::<XorMappedAddress>()
            .ok()
            .map(|a| a.addr(tid))
    }

    /// Whether FINGERPRINT is present (it is checked while parsing).
    pub fn has_fingerprint(&self) -> bool {
        self.message().has_attribute(Fingerprint::TYPE)
    }
}

/// A successful Allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateOk {
    /// XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS: our address as the server sees it (RFC 8656 requires it; a
    /// server that leaves it out still relays).
    pub mapped: Option<SocketAddr>,
    /// LIFETIME granted, in seconds.
    pub lifetime: u32,
}

impl AllocateOk {
    pub(super) fn from_reply(reply: &Reply) -> Result<Self, ClientError> {
        Ok(AllocateOk {
            relayed: reply
                .relayed()
                .ok_or_else(|| protocol("Allocate success without XOR-RELAYED-ADDRESS"))?,
            mapped: reply.mapped(),
            lifetime: reply
                .lifetime()
                .ok_or_else(|| protocol("Allocate success without LIFETIME"))?,
        })
    }
}

/// Where relayed data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Data indication from this peer.
    Peer(SocketAddr),
    /// A ChannelData message on this channel.
    Channel(u16),
}

/// A Data indication's (peer, data); `None` for another method.
pub(super) fn data_indication(msg: &Message<'_>) -> Result<Option<(Origin, Vec<u8>)>, ClientError> {
    if msg.method() != turn_types::message::DATA {
        return Ok(None);
    }
    let tid = msg.transaction_id();
    let peer = msg
        .attribute::<XorPeerAddress>()
        .map_err(|e| protocol(format!("Data indication without XOR-PEER-ADDRESS: {e}")))?
        .addr(tid);
    let data = msg
        .attribute::<Data>()
        .map_err(|e| protocol(format!("Data indication without DATA: {e}")))?
        .data()
        .to_vec();
    Ok(Some((Origin::Peer(peer), data)))
}
