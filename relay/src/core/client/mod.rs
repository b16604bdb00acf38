//! One client 5-tuple: its STUN transactions and, once allocated, its allocation.
//!
//! Control path (Binding, Allocate, Refresh, CreatePermission, ChannelBind) may allocate and
//! takes the per-user lock in [`Shared`] for quotas and revocations. The data path
//! (ChannelData and Send from the client, [`Client::on_peer`] towards it) does neither: it
//! borrows payloads from the input, writes into the caller's reused buffer, scans the
//! allocation's small permission and channel tables, and counts into local counters that
//! are flushed into the shared [`super::Stats`] in batches.
//!
//! This file holds the [`Client`] struct, its public API and the dispatch of client input;
//! each protocol concept (credentials, Allocate/Refresh, permissions and channels, the data
//! path, responses, counters, timers) lives in its own submodule.

mod allocate;
mod counters;
mod credentials;
mod data;
mod permission;
mod response;
mod timers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stun_types::attribute::{
    Attribute, AttributeStaticType, AttributeType, ErrorCode, MessageIntegrity, Nonce, Realm,
    UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityKey, Message, MessageClass, MessageHeader, Method, StunParseError, TransactionId,
    BINDING,
};
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

use self::allocate::Allocation;
use self::counters::LocalStats;
use self::credentials::AuthCache;
use super::badinput::BadInput;
use super::stats::DropReason;
use super::{Family, FiveTuple, Now, RelayPorts, Shared, Wake};

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

/// Comprehension-required attributes we understand in requests (others get 420).
const SUPPORTED: &[AttributeType] = &[
    Username::TYPE,
    MessageIntegrity::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    ErrorCode::TYPE,
    UnknownAttributes::TYPE,
    XorMappedAddress::TYPE,
    ChannelNumber::TYPE,
    Lifetime::TYPE,
    XorPeerAddress::TYPE,
    DataAttr::TYPE,
    XorRelayedAddress::TYPE,
    RequestedAddressFamily::TYPE,
    EvenPort::TYPE,
    RequestedTransport::TYPE,
    ReservationToken::TYPE,
];

/// Most attribute types listed in a 420's UNKNOWN-ATTRIBUTES (and collected per request).
pub(crate) const MAX_UNKNOWN_LISTED: usize = 16;

/// The sans-I/O state of one client.
pub struct Client {
    shared: Arc<Shared>,
    tuple: FiveTuple,
    auth: Option<AuthCache>,
    alloc: Option<Allocation>,
    local: LocalStats,
    /// Next allocation / permission / channel timer.
    deadline: Option<Instant>,
    /// Wakes this client's shell when its user is revoked or its session ends.
    waker: Option<Arc<dyn Wake>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The long-term key is a credential: never print it.
        f.debug_struct("Client")
            .field("tuple", &self.tuple)
            .field("user", &self.user())
            .field("allocation", &self.alloc)
            .finish_non_exhaustive()
    }
}

/// A request's identity, for building its response.
#[derive(Clone, Copy)]
struct Req {
    method: Method,
    tid: TransactionId,
}

fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

fn family_of(addr: &SocketAddr) -> Family {
    match addr {
        SocketAddr::V4(_) => Family::V4,
        SocketAddr::V6(_) => Family::V6,
    }
}

impl Client {
    /// A new client on `tuple`.
    pub fn new(shared: Arc<Shared>, tuple: FiveTuple) -> Self {
        Self {
            shared,
            tuple,
            auth: None,
            alloc: None,
            local: LocalStats::default(),
            deadline: None,
            waker: None,
        }
    }

    /// Registers how to wake this client's shell (a connection task) when the user of its
    /// allocation is revoked or its session ends; the shell then calls
    /// [`Client::check_revoked`]. Takes effect for allocations made after the call.
    pub fn set_waker(&mut self, waker: Arc<dyn Wake>) {
        self.waker = Some(waker);
    }

    fn garbage(&mut self, now: Now) -> ClientOutput<'static> {
        self.malformed(now);
        if self.tuple.transport.is_stream() {
            ClientOutput::Close
        } else {
            ClientOutput::None
        }
    }

    /// Counts (and rate-limited, logs) one unparseable message.
    fn malformed(&mut self, now: Now) {
        self.count_drop(DropReason::Malformed, now.mono);
        self.shared
            .bad_input(self.tuple.client.ip(), BadInput::Malformed, now.mono);
    }

    // ---------------------------------------------------------------- input

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
        out.clear();
        match msg.first().map(|b| b >> 6) {
            Some(0) => self.on_stun(msg, now, ports, out),
            Some(1) => self.on_channel_data(msg, now),
            _ => self.garbage(now),
        }
    }

    fn on_stun<'a>(
        &mut self,
        msg: &'a [u8],
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
    ) -> ClientOutput<'a> {
        let Ok(hdr) = MessageHeader::from_bytes(msg) else {
            return self.garbage(now);
        };
        let len = usize::from(hdr.data_length());
        let Some(bytes) = msg.get(..MessageHeader::LENGTH + len) else {
            return self.garbage(now);
        };
        let mtype = hdr.get_type();
        let class = mtype.class();
        let req = Req {
            method: mtype.method(),
            tid: hdr.transaction_id(),
        };
        if len % 4 != 0 {
            if class == MessageClass::Request {
                self.shared
                    .bad_input(self.tuple.client.ip(), BadInput::Malformed, now.mono);
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: message length is not a multiple of 4",
                    None,
                );
            }
            return self.garbage(now);
        }
        let m = match Message::from_bytes(bytes) {
            Ok(m) => m,
            // Not STUN after all (RFC 8489 §7.3): drop silently.
            Err(StunParseError::FingerprintMismatch) => {
                self.malformed(now);
                return ClientOutput::None;
            }
            Err(e) => {
                self.shared
                    .bad_input(self.tuple.client.ip(), BadInput::Malformed, now.mono);
                if class == MessageClass::Request {
                    let reason = format!("Bad Request: malformed message: {e}");
                    return self.error(out, req, 400, &reason, None);
                }
                self.count_drop(DropReason::Malformed, now.mono);
                return ClientOutput::None;
            }
        };
        match class {
            MessageClass::Request => {
                let r = self.on_request(&m, req, now, ports, out);
                self.recompute_deadline(now.mono);
                r
            }
            MessageClass::Indication if req.method == SEND => self.on_send(&m, bytes, req, now),
            // Binding indications (keepalives), responses: nothing to do.
            _ => ClientOutput::None,
        }
    }

    fn on_request(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
    ) -> ClientOutput<'static> {
        let method = req.method;
        if method == BINDING {
            if let Some(r) = self.unknown_attributes(m, req, out, None) {
                return r;
            }
            let mapped = XorMappedAddress::new(self.tuple.client, req.tid);
            self.write_response(out, req, None, &[&mapped], None);
            return ClientOutput::Reply;
        }
        let known = [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND];
        if !known.contains(&method) {
            return self.error(out, req, 400, "Bad Request: unsupported method", None);
        }
        if let Some(r) = self.authenticate(m, req, method == ALLOCATE, now, out) {
            return r;
        }
        // Authenticated: `self.auth` is set.
        let key = self.auth.as_ref().map(|a| a.key.clone());
        let key = key.as_ref();
        if let Some(r) = self.unknown_attributes(m, req, out, key) {
            return r;
        }
        if method == ALLOCATE {
            return self.on_allocate(m, req, now, ports, out, key);
        }
        // Every other request needs this 5-tuple's allocation, made by the same username.
        let Some(alloc) = &self.alloc else {
            return self.error(
                out,
                req,
                437,
                "Allocation Mismatch: no allocation on this 5-tuple",
                key,
            );
        };
        if self.auth.as_ref().map(|a| a.username.as_str()) != Some(alloc.username.as_str()) {
            return self.error(
                out,
                req,
                441,
                "Wrong Credentials: not the allocation's USERNAME",
                key,
            );
        }
        if method == REFRESH {
            self.on_refresh(m, req, now, ports, out, key)
        } else if method == CREATE_PERMISSION {
            self.on_create_permission(m, req, now, out, key)
        } else {
            self.on_channel_bind(m, req, now, out, key)
        }
    }

    /// 420 when `m` holds comprehension-required attributes we do not understand.
    fn unknown_attributes(
        &self,
        m: &Message<'_>,
        req: Req,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> Option<ClientOutput<'static>> {
        // Linear in the message and bounded: the de-duplication scans at most
        // MAX_UNKNOWN_LISTED entries, and the scan stops once that many are found (RFC 8489
        // §14.9 lets the 420 list a subset). A 64 KB request holds ~16K attributes.
        let mut unknown: Vec<AttributeType> = Vec::new();
        for (_, a) in m.iter_attributes() {
            let t = a.get_type();
            if t.comprehension_required() && !SUPPORTED.contains(&t) && !unknown.contains(&t) {
                unknown.push(t);
                if unknown.len() >= MAX_UNKNOWN_LISTED {
                    break;
                }
            }
        }
        if unknown.is_empty() {
            return None;
        }
        let ua = UnknownAttributes::new(&unknown);
        self.write_response(out, req, Some((420, "Unknown Attribute")), &[&ua], key);
        Some(ClientOutput::Reply)
    }

    /// Whether a request of this client has been authenticated (and not since revoked).
    pub fn authenticated(&self) -> bool {
        self.auth.is_some()
    }

    /// The relayed address, when allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.alloc.as_ref().map(|a| a.relayed)
    }

    /// The authenticated REST user (part after the colon), once authenticated.
    pub fn user(&self) -> Option<&str> {
        self.alloc
            .as_ref()
            .map(|a| a.user.as_str())
            .or_else(|| self.auth.as_ref().map(|a| a.user.as_str()))
    }

    /// This client's 5-tuple.
    pub fn tuple(&self) -> FiveTuple {
        self.tuple
    }

    /// When the allocation expires, if any.
    pub fn expires(&self) -> Option<Instant> {
        self.alloc.as_ref().map(|a| a.expires)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Quota is released by the allocation's ticket; counters must not be lost either.
        self.flush_stats();
    }
}
