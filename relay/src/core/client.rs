//! One client 5-tuple: its STUN transactions and, once allocated, its allocation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{FiveTuple, Now, RelayPorts, Shared};

/// What [`Client::on_client`] asks the shell to do.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOutput<'a> {
    /// Nothing (an indication or ChannelData was dropped, e.g. no permission).
    None,
    /// `out` holds one message to write to the client.
    Reply,
    /// Send `data` from the relayed address `relayed` to `peer`.
    ToPeer {
        /// The allocation's relayed address (source of the datagram).
        relayed: SocketAddr,
        /// Destination peer.
        peer: SocketAddr,
        /// Payload, borrowed from the input.
        data: &'a [u8],
    },
    /// The input is garbage on a stream: close the connection.
    Close,
}

/// What [`Client::on_peer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutput {
    /// `out` holds a ChannelData message or Data indication for the client.
    Forward,
    /// Dropped: no permission for that peer (or no allocation).
    Dropped,
}

/// The sans-I/O state of one client.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    tuple: FiveTuple,
}

impl Client {
    /// A new client on `tuple`.
    pub fn new(shared: Arc<Shared>, tuple: FiveTuple) -> Self {
        Self { shared, tuple }
    }

    /// Handles one whole message from the client: a STUN message or a ChannelData message
    /// (on streams its padding may or may not be present). Responses are written to `out`
    /// (cleared first).
    pub fn on_client<'a>(
        &mut self,
        msg: &'a [u8],
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
    ) -> ClientOutput<'a> {
        let _ = (msg, now, ports, out, &self.shared, &self.tuple);
        unimplemented!()
    }

    /// A datagram from `peer` reached this client's relayed address.
    pub fn on_peer(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Now,
        out: &mut Vec<u8>,
    ) -> PeerOutput {
        let _ = (peer, data, now, out);
        unimplemented!()
    }

    /// When [`Client::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        unimplemented!()
    }

    /// Expires permissions, channels and the allocation.
    pub fn handle_timeout(&mut self, now: Now, ports: &mut dyn RelayPorts) {
        let _ = (now, ports);
        unimplemented!()
    }

    /// After a revocation: deletes the allocation if its user is revoked. Returns true
    /// when it did (the shell then closes a stream connection).
    pub fn check_revoked(&mut self, now: Now, ports: &mut dyn RelayPorts) -> bool {
        let _ = (now, ports);
        unimplemented!()
    }

    /// The connection is gone: deletes the allocation and releases its quota.
    pub fn close(&mut self, ports: &mut dyn RelayPorts) {
        let _ = ports;
        unimplemented!()
    }

    /// The relayed address, when allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        unimplemented!()
    }

    /// The authenticated REST user (part after the colon), once authenticated.
    pub fn user(&self) -> Option<&str> {
        unimplemented!()
    }

    /// This client's 5-tuple.
    pub fn tuple(&self) -> FiveTuple {
        self.tuple
    }
}
