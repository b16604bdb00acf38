//! One client 5-tuple: its STUN transactions and, once allocated, its allocation.
//!
//! Control path (Binding, Allocate, Refresh, CreatePermission, ChannelBind) may allocate and
//! takes the per-user lock in [`Shared`] for quotas and revocations. The data path
//! (ChannelData and Send from the client, [`Client::on_peer`] towards it) does neither: it
//! borrows payloads from the input, writes into the caller's reused buffer, scans the
//! allocation's small permission and channel tables, and counts into local counters that
//! are flushed into the shared [`super::Stats`] in batches.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stun_types::attribute::{
    Attribute, AttributeExt, AttributeFromRaw, AttributeStaticType, AttributeType, AttributeWrite,
    ErrorCode, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, MessageClass, MessageHeader,
    MessageType, MessageWriteExt, MessageWriteMutSlice, MessageWriteVec, Method, StunParseError,
    TransactionId, BINDING,
};
use turn_types::attribute::{
    AdditionalAddressFamily, ChannelNumber, Data as DataAttr, DontFragment, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::AddressFamily;

use super::nonce::NonceCheck;
use super::shared::{QuotaError, QuotaTicket};
use super::stats::{AuthFailure, Direction, DropReason};
use super::{Family, FiveTuple, Now, PolicyVerdict, RelayPortError, RelayPorts, Shared};

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

/// After a channel binding expires, its number and peer stay reserved this long
/// (RFC 8656 §12: not rebound to another peer for 5 minutes).
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// Local counters are flushed into the shared ones after this many packets…
const FLUSH_EVERY: u32 = 64;
/// …or this long after the first unflushed one.
const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Longest reason phrase we put into ERROR-CODE.
const MAX_REASON: usize = 127;

const CHANNEL_MIN: u16 = 0x4000;
/// RFC 8656 allocates 0x4000–0x4FFF; RFC 5766 clients (coturn's among them) use up to
/// 0x7FFF. Accepting the older range costs nothing on the server side.
const CHANNEL_MAX: u16 = 0x7FFF;

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

/// The cached result of a successful long-term authentication.
struct AuthCache {
    /// The full REST username, `<expiry>:<user>`.
    username: String,
    /// The REST user.
    user: String,
    /// Unix expiry from the username.
    expiry: u64,
    /// MD5(username:realm:password) of the secret that matched.
    key: IntegrityKey,
}

#[derive(Debug)]
struct Permission {
    ip: IpAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    relayed: SocketAddr,
    family: Family,
    expires: Instant,
    username: String,
    user: String,
    /// The Allocate transaction that created it, and our answer (for retransmits).
    txn: TransactionId,
    response: Vec<u8>,
    perms: Vec<Permission>,
    chans: Vec<Channel>,
    _ticket: QuotaTicket,
}

impl Allocation {
    fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|p| p.ip == ip && p.expires > now)
    }
}

/// Per-client counters, flushed into the shared atomics in batches.
#[derive(Debug, Default)]
struct LocalStats {
    c2p_packets: u64,
    c2p_bytes: u64,
    p2c_packets: u64,
    p2c_bytes: u64,
    dropped: [u64; DropReason::ALL.len()],
    pending: u32,
    flush_at: Option<Instant>,
}

/// The sans-I/O state of one client.
pub struct Client {
    shared: Arc<Shared>,
    tuple: FiveTuple,
    auth: Option<AuthCache>,
    alloc: Option<Allocation>,
    local: LocalStats,
    /// Next allocation / permission / channel timer.
    deadline: Option<Instant>,
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

fn missing<T>(r: &Result<T, StunParseError>) -> bool {
    matches!(r, Err(StunParseError::MissingAttribute(_)))
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

fn truncate_reason(s: &str) -> &str {
    if s.len() <= MAX_REASON {
        return s;
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
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
        }
    }

    // ---------------------------------------------------------------- responses

    /// Writes a response (success or error) to `out`: `attrs`, SOFTWARE when configured,
    /// MESSAGE-INTEGRITY when `key` is given, FINGERPRINT.
    fn write_response(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        error: Option<(u16, &str)>,
        attrs: &[&dyn AttributeWrite],
        key: Option<&IntegrityKey>,
    ) {
        let class = if error.is_some() {
            MessageClass::Error
        } else {
            MessageClass::Success
        };
        let mut w = Message::builder(
            MessageType::from_class_method(class, req.method),
            req.tid,
            MessageWriteVec::with_capacity(160),
        );
        if let Some((code, reason)) = error {
            if let Ok(e) = ErrorCode::new(code, truncate_reason(reason)) {
                let _ = w.add_attribute(&e);
            }
        }
        for a in attrs {
            let _ = w.add_attribute(*a);
        }
        if let Some(s) = self.shared.config().software.as_deref() {
            if let Ok(s) = Software::new(s) {
                let _ = w.add_attribute(&s);
            }
        }
        if let Some(k) = key {
            let _ = w.add_message_integrity_with_key(k, IntegrityAlgorithm::Sha1);
        }
        let _ = w.add_fingerprint();
        out.clear();
        out.extend_from_slice(&w);
    }

    /// An error response, signed with `key` when the request was authenticated.
    fn error(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        code: u16,
        reason: &str,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        self.write_response(out, req, Some((code, reason)), &[], key);
        ClientOutput::Reply
    }

    /// A 401 or 438 with REALM and a fresh NONCE.
    fn challenge(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        code: u16,
        reason: &str,
        now: Now,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let nonce = self.shared.nonce_key().make(
            self.tuple.client.ip(),
            now.unix.saturating_add(cfg.nonce_ttl.as_secs().max(1)),
        );
        let realm = Realm::new(&cfg.realm);
        let nonce = Nonce::new(&nonce);
        let mut attrs: Vec<&dyn AttributeWrite> = Vec::with_capacity(2);
        if let Ok(r) = &realm {
            attrs.push(r);
        }
        if let Ok(n) = &nonce {
            attrs.push(n);
        }
        self.write_response(out, req, Some((code, reason)), &attrs, None);
        ClientOutput::Reply
    }

    fn auth_fail(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        why: AuthFailure,
        reason: &str,
        now: Now,
    ) -> ClientOutput<'static> {
        self.shared.stats().auth_failure(why);
        self.challenge(out, req, 401, reason, now)
    }

    // ---------------------------------------------------------------- counters

    fn tick(&mut self, now: Instant) {
        if self.local.pending == 0 {
            self.local.flush_at = Some(after(now, FLUSH_AFTER));
        }
        self.local.pending += 1;
        if self.local.pending >= FLUSH_EVERY {
            self.flush_stats();
        }
    }

    fn count_relay(&mut self, dir: Direction, bytes: usize, now: Instant) {
        let b = bytes as u64;
        match dir {
            Direction::ClientToPeer => {
                self.local.c2p_packets += 1;
                self.local.c2p_bytes += b;
            }
            Direction::PeerToClient => {
                self.local.p2c_packets += 1;
                self.local.p2c_bytes += b;
            }
        }
        self.tick(now);
    }

    fn count_drop(&mut self, why: DropReason, now: Instant) {
        if let Some(i) = DropReason::ALL.iter().position(|d| *d == why) {
            if let Some(c) = self.local.dropped.get_mut(i) {
                *c += 1;
            }
        }
        self.tick(now);
    }

    /// Pushes the local counters into the shared [`super::Stats`].
    pub fn flush_stats(&mut self) {
        let l = std::mem::take(&mut self.local);
        let stats = self.shared.stats();
        let t = self.tuple.transport;
        if l.c2p_packets > 0 {
            stats.add_traffic(Direction::ClientToPeer, t, l.c2p_packets, l.c2p_bytes);
        }
        if l.p2c_packets > 0 {
            stats.add_traffic(Direction::PeerToClient, t, l.p2c_packets, l.p2c_bytes);
        }
        for (why, n) in DropReason::ALL.iter().zip(l.dropped) {
            if n > 0 {
                stats.add_dropped(*why, n);
            }
        }
    }

    fn garbage(&mut self, now: Now) -> ClientOutput<'static> {
        self.count_drop(DropReason::Malformed, now.mono);
        if self.tuple.transport.is_stream() {
            ClientOutput::Close
        } else {
            ClientOutput::None
        }
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
                self.count_drop(DropReason::Malformed, now.mono);
                return ClientOutput::None;
            }
            Err(e) => {
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
        if let Some(r) = self.authenticate(m, req, now, out) {
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
        let mut unknown: Vec<AttributeType> = Vec::new();
        for (_, a) in m.iter_attributes() {
            let t = a.get_type();
            if t.comprehension_required() && !SUPPORTED.contains(&t) && !unknown.contains(&t) {
                unknown.push(t);
            }
        }
        if unknown.is_empty() {
            return None;
        }
        let ua = UnknownAttributes::new(&unknown);
        self.write_response(out, req, Some((420, "Unknown Attribute")), &[&ua], key);
        Some(ClientOutput::Reply)
    }

    // ---------------------------------------------------------------- authentication

    /// The long-term credential mechanism (RFC 8489 §9.2.4) with REST credentials. Returns
    /// `None` when authenticated (and `self.auth` holds the key), else the reply written.
    fn authenticate(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Option<ClientOutput<'static>> {
        if !m.has_attribute(MessageIntegrity::TYPE) {
            self.shared.stats().auth_challenges.fetch_add(1, Relaxed);
            return Some(self.challenge(out, req, 401, "Unauthenticated", now));
        }
        let username = m.attribute::<Username>();
        let realm = m.attribute::<Realm>();
        let nonce = m.attribute::<Nonce>();
        if missing(&username) || missing(&realm) || missing(&nonce) {
            self.shared
                .stats()
                .auth_failure(AuthFailure::MissingCredentials);
            return Some(self.error(
                out,
                req,
                400,
                "Bad Request: MESSAGE-INTEGRITY without USERNAME, REALM or NONCE",
                None,
            ));
        }
        let (Ok(username), Ok(_realm), Ok(nonce)) = (username, realm, nonce) else {
            self.shared.stats().auth_failure(AuthFailure::Malformed);
            return Some(self.error(
                out,
                req,
                400,
                "Bad Request: malformed USERNAME, REALM or NONCE",
                None,
            ));
        };
        match self
            .shared
            .nonce_key()
            .check(nonce.nonce(), self.tuple.client.ip(), now.unix)
        {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.shared.stats().auth_failure(AuthFailure::StaleNonce);
                return Some(self.challenge(out, req, 438, "Stale Nonce", now));
            }
        }
        let username = username.username();

        // Fast path: same username as last time, one HMAC with the cached key.
        if let Some(cache) = self.auth.as_ref().filter(|c| c.username == username) {
            if cache.expiry <= now.unix {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Expired,
                    "Unauthenticated: credential expired",
                    now,
                ));
            }
            if self.shared.is_revoked(&cache.user, now) {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Revoked,
                    "Unauthenticated: credential revoked",
                    now,
                ));
            }
            if m.validate_integrity_with_key(&cache.key).is_err() {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::BadPassword,
                    "Unauthenticated: wrong password",
                    now,
                ));
            }
            return None;
        }

        let ring = self.shared.secrets();
        let parsed = match ring.check_username(username, now.unix) {
            Ok(p) => p,
            Err(auth::VerifyError::Expired(_)) => {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Expired,
                    "Unauthenticated: credential expired",
                    now,
                ));
            }
            Err(_) => {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Malformed,
                    "Unauthenticated: USERNAME is not a REST username",
                    now,
                ));
            }
        };
        if self.shared.is_revoked(&parsed.user, now) {
            return Some(self.auth_fail(
                out,
                req,
                AuthFailure::Revoked,
                "Unauthenticated: credential revoked",
                now,
            ));
        }
        let realm = &self.shared.config().realm;
        for password in ring.passwords_for(username) {
            let key = LongTermKeyCredentials::new(username.to_owned(), password, realm.clone())
                .make_key(IntegrityAlgorithm::Sha1);
            if m.validate_integrity_with_key(&key).is_ok() {
                self.auth = Some(AuthCache {
                    username: username.to_owned(),
                    user: parsed.user,
                    expiry: parsed.expiry,
                    key,
                });
                return None;
            }
        }
        Some(self.auth_fail(
            out,
            req,
            AuthFailure::BadPassword,
            "Unauthenticated: wrong password",
            now,
        ))
    }

    // ---------------------------------------------------------------- requests

    /// The lifetime granted for a requested one: the default when none is asked, else the
    /// request clamped to [default, max].
    fn grant(&self, requested: Option<u32>) -> Duration {
        let cfg = self.shared.config();
        let max = cfg.max_lifetime;
        let min = cfg.default_lifetime.min(max);
        match requested {
            None => min,
            Some(s) => Duration::from_secs(u64::from(s)).clamp(min, max),
        }
    }

    fn lifetime_attr(d: Duration) -> Lifetime {
        Lifetime::new(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_allocate(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        if let Some(a) = &self.alloc {
            if a.txn == req.tid {
                // Retransmission of the request that created it: same answer.
                out.clear();
                out.extend_from_slice(&a.response);
                return ClientOutput::Reply;
            }
            return self.error(
                out,
                req,
                437,
                "Allocation Mismatch: this 5-tuple already has an allocation",
                key,
            );
        }
        match m.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => {
                return self.error(out, req, 442, "Unsupported Transport Protocol", key);
            }
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: missing REQUESTED-TRANSPORT",
                    key,
                );
            }
            Err(_) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed REQUESTED-TRANSPORT",
                    key,
                );
            }
        }
        let even = match m.attribute::<EvenPort>() {
            Ok(e) => Some(e.requested()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed EVEN-PORT", key),
        };
        let requested_family = match m.attribute::<RequestedAddressFamily>() {
            Ok(f) => Some(f.family()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => {
                return self.error(out, req, 440, "Address Family not Supported", key);
            }
        };
        let token = m.has_attribute(ReservationToken::TYPE);
        if token && (even.is_some() || requested_family.is_some()) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
                key,
            );
        }
        if requested_family.is_some() && m.has_attribute(AdditionalAddressFamily::TYPE) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY",
                key,
            );
        }
        if token {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: reservations are not supported",
                key,
            );
        }
        if even == Some(true) {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: cannot reserve the next port",
                key,
            );
        }
        let family = match requested_family {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        let lifetime = match m.attribute::<Lifetime>() {
            Ok(l) => self.grant(Some(l.seconds())),
            Err(StunParseError::MissingAttribute(_)) => self.grant(None),
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed LIFETIME", key),
        };
        let Some((username, user)) = self
            .auth
            .as_ref()
            .map(|a| (a.username.clone(), a.user.clone()))
        else {
            return self.error(out, req, 401, "Unauthenticated", None);
        };
        let ticket = match self.shared.acquire(&user) {
            Ok(t) => t,
            Err(QuotaError::User) => {
                return self.error(out, req, 486, "Allocation Quota Reached", key);
            }
            Err(QuotaError::Total) => {
                return self.error(out, req, 508, "Insufficient Capacity", key);
            }
        };
        let relayed = match ports.open(family, even == Some(false)) {
            Ok(a) => a,
            Err(RelayPortError::FamilyNotSupported) => {
                return self.error(out, req, 440, "Address Family not Supported", key);
            }
            Err(RelayPortError::Exhausted(_)) => {
                self.shared
                    .stats()
                    .capacity_rejections
                    .fetch_add(1, Relaxed);
                return self.error(out, req, 508, "Insufficient Capacity: no relay port", key);
            }
        };
        if family_of(&relayed) != family {
            ports.close(relayed);
            return self.error(out, req, 440, "Address Family not Supported", key);
        }
        if even == Some(false) && relayed.port() % 2 == 1 {
            ports.close(relayed);
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: no even port available",
                key,
            );
        }
        let xr = XorRelayedAddress::new(relayed, req.tid);
        let lt = Self::lifetime_attr(lifetime);
        let xm = XorMappedAddress::new(self.tuple.client, req.tid);
        self.write_response(out, req, None, &[&xr, &lt, &xm], key);
        self.alloc = Some(Allocation {
            relayed,
            family,
            expires: after(now.mono, lifetime),
            username,
            user,
            txn: req.tid,
            response: out.clone(),
            perms: Vec::new(),
            chans: Vec::new(),
            _ticket: ticket,
        });
        ClientOutput::Reply
    }

    fn on_refresh(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let Some(family) = self.alloc.as_ref().map(|a| a.family) else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        match m.attribute::<RequestedAddressFamily>() {
            Ok(f) => {
                let f = if f.family() == AddressFamily::IPV6 {
                    Family::V6
                } else {
                    Family::V4
                };
                if f != family {
                    return self.error(out, req, 443, "Peer Address Family Mismatch", key);
                }
            }
            Err(StunParseError::MissingAttribute(_)) => {}
            Err(_) => return self.error(out, req, 440, "Address Family not Supported", key),
        }
        let requested = match m.attribute::<Lifetime>() {
            Ok(l) => Some(l.seconds()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed LIFETIME", key),
        };
        if requested == Some(0) {
            self.delete_allocation(ports);
            let lt = Lifetime::new(0);
            self.write_response(out, req, None, &[&lt], key);
            return ClientOutput::Reply;
        }
        let lifetime = self.grant(requested);
        if let Some(a) = &mut self.alloc {
            a.expires = after(now.mono, lifetime);
        }
        let lt = Self::lifetime_attr(lifetime);
        self.write_response(out, req, None, &[&lt], key);
        ClientOutput::Reply
    }

    /// Checks a peer of a CreatePermission / ChannelBind: family and policy.
    fn check_peer(
        &self,
        peer: SocketAddr,
        family: Family,
        req: Req,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> Option<ClientOutput<'static>> {
        if family_of(&peer) != family {
            return Some(self.error(out, req, 443, "Peer Address Family Mismatch", key));
        }
        if let PolicyVerdict::Deny(why) = self.shared.check_peer(peer) {
            self.shared.stats().forbid(why);
            let reason = format!("Forbidden: peer refused ({why})");
            return Some(self.error(out, req, 403, &reason, key));
        }
        None
    }

    fn on_create_permission(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let max = cfg.max_permissions_per_allocation;
        let lifetime = cfg.permission_lifetime;
        let Some(alloc) = &self.alloc else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        let family = alloc.family;
        let mut peers: Vec<SocketAddr> = Vec::new();
        for (_, raw) in m.iter_attributes() {
            if raw.get_type() != XorPeerAddress::TYPE {
                continue;
            }
            let Ok(p) = XorPeerAddress::from_raw_ref(&raw) else {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed XOR-PEER-ADDRESS",
                    key,
                );
            };
            if peers.len() > max {
                return self.error(
                    out,
                    req,
                    508,
                    "Insufficient Capacity: too many permissions",
                    key,
                );
            }
            peers.push(p.addr(req.tid));
        }
        if peers.is_empty() {
            return self.error(out, req, 400, "Bad Request: missing XOR-PEER-ADDRESS", key);
        }
        for p in &peers {
            if let Some(r) = self.check_peer(*p, family, req, out, key) {
                return r;
            }
        }
        // All-or-nothing: count the new ones against the cap before installing any.
        let mut new_ips: Vec<IpAddr> = Vec::new();
        for p in &peers {
            let ip = p.ip();
            if !alloc.perms.iter().any(|x| x.ip == ip) && !new_ips.contains(&ip) {
                new_ips.push(ip);
            }
        }
        if alloc.perms.len() + new_ips.len() > max {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many permissions",
                key,
            );
        }
        let expires = after(now.mono, lifetime);
        if let Some(a) = &mut self.alloc {
            for p in &peers {
                install_permission(&mut a.perms, p.ip(), expires);
            }
        }
        self.write_response(out, req, None, &[], key);
        ClientOutput::Reply
    }

    fn on_channel_bind(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let (max_chan, max_perm) = (
            cfg.max_channels_per_allocation,
            cfg.max_permissions_per_allocation,
        );
        let (chan_life, perm_life) = (cfg.channel_lifetime, cfg.permission_lifetime);
        let Some(alloc) = &self.alloc else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        let number = match m.attribute::<ChannelNumber>() {
            Ok(c) => c.channel(),
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(out, req, 400, "Bad Request: missing CHANNEL-NUMBER", key);
            }
            Err(_) => {
                return self.error(out, req, 400, "Bad Request: malformed CHANNEL-NUMBER", key);
            }
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: CHANNEL-NUMBER outside 0x4000-0x7FFF",
                key,
            );
        }
        let peer = match m.attribute::<XorPeerAddress>() {
            Ok(p) => p.addr(req.tid),
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(out, req, 400, "Bad Request: missing XOR-PEER-ADDRESS", key);
            }
            Err(_) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed XOR-PEER-ADDRESS",
                    key,
                );
            }
        };
        if let Some(r) = self.check_peer(peer, alloc.family, req, out, key) {
            return r;
        }
        // Entries still in their cooldown count as bound (RFC 8656 §12).
        if alloc
            .chans
            .iter()
            .any(|c| c.number == number && c.peer != peer)
        {
            return self.error(
                out,
                req,
                400,
                "Bad Request: channel is bound to another peer",
                key,
            );
        }
        if alloc
            .chans
            .iter()
            .any(|c| c.peer == peer && c.number != number)
        {
            return self.error(
                out,
                req,
                400,
                "Bad Request: peer is bound to another channel",
                key,
            );
        }
        let new_chan = !alloc.chans.iter().any(|c| c.number == number);
        if new_chan && alloc.chans.len() >= max_chan {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many channels",
                key,
            );
        }
        let new_perm = !alloc.perms.iter().any(|p| p.ip == peer.ip());
        if new_perm && alloc.perms.len() >= max_perm {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many permissions",
                key,
            );
        }
        if let Some(a) = &mut self.alloc {
            let expires = after(now.mono, chan_life);
            match a.chans.iter_mut().find(|c| c.number == number) {
                Some(c) => c.expires = expires,
                None => a.chans.push(Channel {
                    number,
                    peer,
                    expires,
                }),
            }
            install_permission(&mut a.perms, peer.ip(), after(now.mono, perm_life));
        }
        self.write_response(out, req, None, &[], key);
        ClientOutput::Reply
    }

    // ---------------------------------------------------------------- data path

    /// A Send indication: relay DATA to XOR-PEER-ADDRESS when permitted. No allocation.
    fn on_send<'a>(
        &mut self,
        m: &Message<'_>,
        bytes: &'a [u8],
        req: Req,
        now: Now,
    ) -> ClientOutput<'a> {
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return ClientOutput::None;
        };
        let mut peer = None;
        let mut data = None;
        let mut bad = false;
        for (off, raw) in m.iter_attributes() {
            let t = raw.get_type();
            if t == XorPeerAddress::TYPE {
                if peer.is_none() {
                    match XorPeerAddress::from_raw_ref(&raw) {
                        Ok(p) => peer = Some(p.addr(req.tid)),
                        Err(_) => bad = true,
                    }
                }
            } else if t == DataAttr::TYPE {
                if data.is_none() {
                    let start = off + 4;
                    data = bytes.get(start..start + usize::from(raw.length()));
                    bad |= data.is_none();
                }
            } else if t.comprehension_required()
                && t != DontFragment::TYPE
                && !SUPPORTED.contains(&t)
            {
                // Unknown comprehension-required attribute in an indication: discard.
                bad = true;
            }
        }
        let (Some(peer), Some(data), false) = (peer, data, bad) else {
            self.count_drop(DropReason::Malformed, now.mono);
            return ClientOutput::None;
        };
        if family_of(&peer) != alloc.family {
            self.count_drop(DropReason::Malformed, now.mono);
            return ClientOutput::None;
        }
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return ClientOutput::None;
        }
        // Permissions are per IP; the policy may restrict ports, so check the peer too.
        if let PolicyVerdict::Deny(why) = self.shared.check_peer(peer) {
            self.shared.stats().forbid(why);
            self.count_drop(DropReason::Forbidden, now.mono);
            return ClientOutput::None;
        }
        let relayed = alloc.relayed;
        self.count_relay(Direction::ClientToPeer, data.len(), now.mono);
        ClientOutput::ToPeer {
            relayed,
            peer,
            data,
        }
    }

    /// ChannelData from the client. No allocation.
    fn on_channel_data<'a>(&mut self, msg: &'a [u8], now: Now) -> ClientOutput<'a> {
        let (number, len) = match ChannelData::parse(msg) {
            Ok(cd) => (cd.id(), cd.data().len()),
            Err(StunParseError::Truncated { .. }) => return self.garbage(now),
            Err(_) => {
                self.count_drop(DropReason::NoChannel, now.mono);
                return ClientOutput::None;
            }
        };
        let Some(data) = msg.get(4..4 + len) else {
            return self.garbage(now);
        };
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return ClientOutput::None;
        };
        let Some(peer) = alloc
            .chans
            .iter()
            .find(|c| c.number == number && c.expires > now.mono)
            .map(|c| c.peer)
        else {
            self.count_drop(DropReason::NoChannel, now.mono);
            return ClientOutput::None;
        };
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return ClientOutput::None;
        }
        let relayed = alloc.relayed;
        self.count_relay(Direction::ClientToPeer, data.len(), now.mono);
        ClientOutput::ToPeer {
            relayed,
            peer,
            data,
        }
    }

    /// A datagram from `peer` reached this client's relayed address.
    pub fn on_peer(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Now,
        out: &mut Vec<u8>,
    ) -> PeerOutput {
        out.clear();
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return PeerOutput::Dropped;
        };
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return PeerOutput::Dropped;
        }
        let channel = alloc
            .chans
            .iter()
            .find(|c| {
                c.peer.ip() == peer.ip() && c.peer.port() == peer.port() && c.expires > now.mono
            })
            .map(|c| c.number);
        let ok = match channel {
            Some(number) => self.write_channel_data(number, data, out),
            None => write_data_indication(peer, data, out),
        };
        if !ok {
            out.clear();
            self.count_drop(DropReason::TooLarge, now.mono);
            return PeerOutput::Dropped;
        }
        self.count_relay(Direction::PeerToClient, data.len(), now.mono);
        PeerOutput::Forward
    }

    fn write_channel_data(&self, number: u16, data: &[u8], out: &mut Vec<u8>) -> bool {
        if data.len() > usize::from(u16::MAX) {
            return false;
        }
        let n = data.len() + 4;
        out.resize(n, 0);
        ChannelData::new(number, data).write_into_unchecked(out);
        if self.tuple.transport.is_stream() {
            out.resize((n + 3) & !3, 0);
        }
        true
    }

    // ---------------------------------------------------------------- timers & teardown

    fn recompute_deadline(&mut self, now: Instant) {
        self.deadline = self.alloc.as_ref().map(|a| {
            let mut d = a.expires;
            for p in &a.perms {
                d = d.min(p.expires);
            }
            for c in &a.chans {
                let t = if c.expires > now {
                    c.expires
                } else {
                    after(c.expires, CHANNEL_COOLDOWN)
                };
                d = d.min(t);
            }
            d
        });
    }

    /// When [`Client::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.local.flush_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires permissions, channels and the allocation.
    pub fn handle_timeout(&mut self, now: Now, ports: &mut dyn RelayPorts) {
        if self.local.flush_at.is_some_and(|t| t <= now.mono) {
            self.flush_stats();
        }
        let expired = self.alloc.as_ref().is_some_and(|a| a.expires <= now.mono);
        if expired {
            self.delete_allocation(ports);
        } else if let Some(a) = &mut self.alloc {
            a.perms.retain(|p| p.expires > now.mono);
            a.chans
                .retain(|c| after(c.expires, CHANNEL_COOLDOWN) > now.mono);
        }
        self.recompute_deadline(now.mono);
    }

    fn delete_allocation(&mut self, ports: &mut dyn RelayPorts) {
        if let Some(a) = self.alloc.take() {
            ports.close(a.relayed);
            // `a._ticket` drops here: quota released.
        }
        self.deadline = None;
    }

    /// After a revocation: deletes the allocation if its user is revoked. Returns true
    /// when it did (the shell then closes a stream connection).
    pub fn check_revoked(&mut self, now: Now, ports: &mut dyn RelayPorts) -> bool {
        let Some(user) = self.user() else {
            return false;
        };
        if !self.shared.is_revoked(user, now) {
            return false;
        }
        self.auth = None;
        if self.alloc.is_some() {
            self.delete_allocation(ports);
            return true;
        }
        false
    }

    /// The connection is gone: deletes the allocation and releases its quota.
    pub fn close(&mut self, ports: &mut dyn RelayPorts) {
        self.delete_allocation(ports);
        self.auth = None;
        self.flush_stats();
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

fn install_permission(perms: &mut Vec<Permission>, ip: IpAddr, expires: Instant) {
    match perms.iter_mut().find(|p| p.ip == ip) {
        Some(p) => p.expires = p.expires.max(expires),
        None => perms.push(Permission { ip, expires }),
    }
}

/// Writes a Data indication (XOR-PEER-ADDRESS, DATA) into `out` without allocating.
fn write_data_indication(peer: SocketAddr, data: &[u8], out: &mut Vec<u8>) -> bool {
    let tid = TransactionId::generate();
    let xpa = XorPeerAddress::new(peer, tid);
    let body = xpa.padded_len() + 4 + ((data.len() + 3) & !3);
    if data.len() > usize::from(u16::MAX) || body > usize::from(u16::MAX) {
        return false;
    }
    out.resize(MessageHeader::LENGTH + body, 0);
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, DATA),
        tid,
        MessageWriteMutSlice::new(out),
    );
    if w.add_attribute(&xpa).is_err() || w.add_attribute(&DataAttr::new(data)).is_err() {
        return false;
    }
    let n = stun_types::message::MessageWrite::finish(w);
    out.truncate(n);
    true
}
