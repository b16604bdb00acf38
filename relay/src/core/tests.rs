//! Protocol tests of the core: no sockets, a fake clock and fake relay ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::SecretRing;
use rand::{Rng, SeedableRng};
use stun_types::attribute::{
    AttributeStaticType, AttributeType, AttributeWrite, ErrorCode, Fingerprint, MessageIntegrity,
    Nonce, RawAttribute, Realm, Software, UnknownAttributes, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, TransactionId, BINDING,
};
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, DontFragment, Lifetime, RequestedAddressFamily,
    RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::AddressFamily;

use super::stats::{AuthFailure, Direction, DropReason};
use super::*;

const REALM: &str = "gateway";
const UNIX0: u64 = 1_700_000_000;

#[derive(Debug, Default)]
struct FakePorts {
    next: u16,
    v6: bool,
    exhausted: bool,
    opened: Vec<SocketAddr>,
    closed: Vec<SocketAddr>,
}

impl RelayPorts for FakePorts {
    fn open(&mut self, family: Family, _even: bool) -> Result<SocketAddr, RelayPortError> {
        if self.exhausted {
            return Err(RelayPortError::Exhausted("test".into()));
        }
        self.next += 2;
        let port = 40_000 + self.next;
        let a: SocketAddr = match family {
            Family::V4 => SocketAddr::new([192, 0, 2, 10].into(), port),
            Family::V6 if self.v6 => SocketAddr::new("2001:db8::10".parse().unwrap(), port),
            Family::V6 => return Err(RelayPortError::FamilyNotSupported),
        };
        self.opened.push(a);
        Ok(a)
    }
    fn close(&mut self, relayed: SocketAddr) {
        self.closed.push(relayed);
    }
}

/// What `on_client` returned, owned.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    None,
    Reply(Vec<u8>),
    ToPeer(SocketAddr, SocketAddr, Vec<u8>),
    Close,
}

type Attrs = Vec<Box<dyn AttributeWrite>>;

struct H {
    shared: Arc<Shared>,
    client: Client,
    ports: FakePorts,
    base: Instant,
    t: Duration,
    ring: SecretRing,
    username: String,
    password: String,
    nonce: Option<String>,
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        realm: REALM.into(),
        ..Config::default()
    }
}

fn shared_with(cfg: Config, ring: &str, allow: &str, deny: &str) -> Arc<Shared> {
    Shared::new(
        cfg,
        SecretRing::parse(ring).unwrap(),
        PeerPolicy::parse(allow, deny).unwrap(),
        NonceKey::from_bytes([9; 32]),
    )
}

impl H {
    fn new(shared: Arc<Shared>, transport: Transport, client: &str, user: &str) -> Self {
        let ring = (*shared.secrets()).clone();
        let cred = ring.mint(user, UNIX0, 3600).unwrap();
        let tuple = FiveTuple {
            transport,
            client: sa(client),
            server: sa("192.0.2.1:443"),
        };
        Self {
            client: Client::new(shared.clone(), tuple),
            shared,
            ports: FakePorts {
                v6: true,
                ..FakePorts::default()
            },
            base: Instant::now(),
            t: Duration::ZERO,
            ring,
            username: cred.username,
            password: cred.password,
            nonce: None,
        }
    }

    fn udp(allow: &str) -> Self {
        Self::new(
            shared_with(config(), "s3cret", allow, ""),
            Transport::Udp,
            "203.0.113.7:5000",
            "alice",
        )
    }

    fn now(&self) -> Now {
        Now {
            mono: self.base + self.t,
            unix: UNIX0 + self.t.as_secs(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.t += d;
    }

    fn input(&mut self, bytes: &[u8]) -> Out {
        let now = self.now();
        let mut out = Vec::new();
        match self.client.on_client(bytes, now, &mut self.ports, &mut out) {
            ClientOutput::None => {
                assert!(out.is_empty());
                Out::None
            }
            ClientOutput::Reply => Out::Reply(out),
            ClientOutput::ToPeer {
                relayed,
                peer,
                data,
            } => Out::ToPeer(relayed, peer, data.to_vec()),
            ClientOutput::Close => Out::Close,
        }
    }

    /// Builds a request with `attrs` (made from the transaction id); signs it with the
    /// harness credentials when `auth`.
    fn build(&self, method: Method, tid: TransactionId, attrs: &Attrs, auth: bool) -> Vec<u8> {
        build(
            method,
            tid,
            attrs,
            auth.then(|| {
                (
                    self.username.as_str(),
                    self.password.as_str(),
                    self.nonce.as_deref().unwrap_or("none"),
                )
            }),
        )
    }

    /// Sends an authenticated request, fetching a nonce through a 401 first if needed.
    fn request_raw(&mut self, method: Method, attrs: impl Fn(TransactionId) -> Attrs) -> Vec<u8> {
        if self.nonce.is_none() {
            let tid = TransactionId::generate();
            let r = reply(self.input(&self.build(method, tid, &attrs(tid), false)));
            assert_eq!(code(&r), Some(401));
            self.nonce = Some(nonce_of(&r));
        }
        let tid = TransactionId::generate();
        let msg = self.build(method, tid, &attrs(tid), true);
        reply(self.input(&msg))
    }

    /// Like `request_raw`, retrying once with the new nonce on 438 (as clients do).
    fn request(&mut self, method: Method, attrs: impl Fn(TransactionId) -> Attrs) -> Vec<u8> {
        let r = self.request_raw(method, &attrs);
        if code(&r) == Some(438) {
            self.nonce = Some(nonce_of(&r));
            return self.request_raw(method, attrs);
        }
        r
    }

    fn allocate(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, |_| udp_transport());
        assert_eq!(code(&r), None, "{:?}", error_of(&r));
        let m = Message::from_bytes(&r).unwrap();
        m.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(m.transaction_id())
    }

    fn allocate_v6(&mut self) -> SocketAddr {
        let r = self.request(ALLOCATE, |_| {
            let mut a = udp_transport();
            a.push(Box::new(RequestedAddressFamily::new(AddressFamily::IPV6)));
            a
        });
        assert_eq!(code(&r), None, "{:?}", error_of(&r));
        self.client.relayed().unwrap()
    }

    fn permit(&mut self, peer: SocketAddr) -> Option<u16> {
        let r = self.request(CREATE_PERMISSION, move |tid| {
            vec![Box::new(XorPeerAddress::new(peer, tid))]
        });
        code(&r)
    }

    fn bind(&mut self, channel: u16, peer: SocketAddr) -> Option<u16> {
        let r = self.request(CHANNEL_BIND, move |tid| {
            vec![
                Box::new(ChannelNumber::new(channel)),
                Box::new(XorPeerAddress::new(peer, tid)),
            ]
        });
        code(&r)
    }

    fn peer(&mut self, peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let now = self.now();
        let mut out = Vec::new();
        match self.client.on_peer(peer, data, now, &mut out) {
            PeerOutput::Forward => Some(out),
            PeerOutput::Dropped => {
                assert!(out.is_empty());
                None
            }
        }
    }

    fn timeout(&mut self) {
        let now = self.now();
        self.client.handle_timeout(now, &mut self.ports);
    }
}

/// A request forged with the one TURN client's builder ([`crate::client::Session`]).
fn build(
    method: Method,
    tid: TransactionId,
    attrs: &Attrs,
    creds: Option<(&str, &str, &str)>,
) -> Vec<u8> {
    let mut session = crate::client::Session::new();
    if let Some((u, p, n)) = creds {
        session.set_credentials(u, p);
        session.set_realm(REALM);
        session.set_nonce(n);
    }
    let auth = if creds.is_some() {
        crate::client::Auth::LongTerm
    } else {
        crate::client::Auth::None
    };
    session
        .request_with(method, tid, auth, |w, _| {
            for a in attrs {
                w.add_attribute(a.as_ref())
                    .map_err(|e| crate::client::ClientError::Protocol(e.to_string()))?;
            }
            Ok(())
        })
        .unwrap()
        .bytes
}

fn indication(method: Method, attrs: impl Fn(TransactionId) -> Attrs) -> Vec<u8> {
    let tid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, method),
        tid,
        MessageWriteVec::new(),
    );
    for a in attrs(tid) {
        w.add_attribute(a.as_ref()).unwrap();
    }
    w.add_fingerprint().unwrap();
    w.finish()
}

fn udp_transport() -> Attrs {
    vec![Box::new(RequestedTransport::new(RequestedTransport::UDP))]
}

fn data_attr(d: &[u8]) -> Box<dyn AttributeWrite> {
    Box::new(RawAttribute::new(DataAttr::TYPE, d).into_owned())
}

fn reply(o: Out) -> Vec<u8> {
    match o {
        Out::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn code(r: &[u8]) -> Option<u16> {
    let m = Message::from_bytes(r).expect("response parses");
    assert!(m.has_attribute(Fingerprint::TYPE), "FINGERPRINT present");
    m.attribute::<ErrorCode>().ok().map(|e| e.code())
}

fn error_of(r: &[u8]) -> Option<(u16, String)> {
    let m = Message::from_bytes(r).ok()?;
    m.attribute::<ErrorCode>()
        .ok()
        .map(|e| (e.code(), e.reason().to_string()))
}

fn nonce_of(r: &[u8]) -> String {
    let m = Message::from_bytes(r).unwrap();
    assert_eq!(m.attribute::<Realm>().unwrap().realm(), REALM);
    m.attribute::<Nonce>().unwrap().nonce().to_string()
}

fn key_of(h: &H) -> stun_types::message::IntegrityKey {
    LongTermKeyCredentials::new(h.username.clone(), h.password.clone(), REALM.into())
        .make_key(IntegrityAlgorithm::Sha1)
}

// ------------------------------------------------------------------------------ tests

/// A Binding request of ~64 KB holding 16,383 distinct unknown comprehension-required
/// attributes (empty values, 4 bytes each): the check is linear and its 420 lists a subset.
#[test]
fn many_unknown_attributes_cost_linear_time_and_list_a_subset() {
    let mut h = H::udp("");
    let tid = TransactionId::generate();
    let n: u16 = 16_383;
    let mut msg = Vec::with_capacity(20 + 4 * usize::from(n));
    msg.extend_from_slice(&[0x00, 0x01]);
    msg.extend_from_slice(&(4 * n).to_be_bytes());
    msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    let tid_bytes: u128 = tid.into();
    msg.extend_from_slice(&tid_bytes.to_be_bytes()[4..]);
    for i in 0..n {
        // 0x4000..0x7FFE: comprehension-required, none of them ours.
        msg.extend_from_slice(&(0x4000 + i).to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
    }
    assert_eq!(msg.len(), 20 + 65_532);
    let mut best = Duration::MAX;
    let mut r = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        r = reply(h.input(&msg));
        best = best.min(t0.elapsed());
    }
    assert_eq!(code(&r), Some(420));
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.transaction_id(), tid);
    let listed = m.attribute::<UnknownAttributes>().unwrap();
    assert!(listed.has_attribute(AttributeType::new(0x4000)));
    let raw = m.raw_attribute(UnknownAttributes::TYPE).unwrap();
    assert_eq!(
        stun_types::attribute::Attribute::length(&raw),
        2 * super::client::MAX_UNKNOWN_LISTED as u16
    );
    // Quadratic de-duplication took 60-90 ms here in release; linear is well under 1 ms.
    // Generous for a loaded machine and debug builds, still far below quadratic.
    let limit = if cfg!(debug_assertions) { 40 } else { 10 };
    assert!(
        best < Duration::from_millis(limit),
        "a 64 KB Binding took {best:?} (best of 5)"
    );
}

/// Counts events at INFO or more severe, by whether their target is this crate.
#[derive(Default)]
struct LineCounter {
    ours: std::sync::atomic::AtomicUsize,
    others: std::sync::atomic::AtomicUsize,
}

impl tracing::Subscriber for LineCounter {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let c = if e.metadata().target().starts_with("relay") {
            &self.ours
        } else {
            &self.others
        };
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// 4,000 malformed STUN messages (an attribute longer than the message) from one client
/// within 0.4 s: each is counted, and the relay logs one line for all of them.
#[test]
fn a_flood_of_malformed_messages_is_counted_and_logged_once() {
    let counter = Arc::new(LineCounter::default());
    let mut h = H::udp("");
    tracing::subscriber::with_default(counter.clone(), || {
        for i in 0..4_000u32 {
            let class: u16 = if i % 2 == 0 { 0x0001 } else { 0x0011 };
            let mut msg = Vec::new();
            msg.extend_from_slice(&class.to_be_bytes());
            msg.extend_from_slice(&8u16.to_be_bytes());
            msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
            msg.extend_from_slice(&[7; 12]);
            msg.extend_from_slice(&[0x80, 0x22, 0x00, 0xC8, 1, 2, 3, 4]);
            let out = h.input(&msg);
            if class == 0x0001 {
                assert_eq!(code(&reply(out)), Some(400));
            } else {
                assert_eq!(out, Out::None);
            }
            h.advance(Duration::from_micros(100));
        }
    });
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(h.shared.stats().bad_input(BadInput::Malformed), 4_000);
    assert_eq!(counter.ours.load(Relaxed), 1, "relay log lines");
    // Other crates' lines (stun-types warns per malformed message) are the gateway's log
    // filter's business; they are not ours to count here.
}

#[test]
fn binding_returns_mapped_address() {
    let mut h = H::udp("");
    let tid = TransactionId::generate();
    let r = reply(h.input(&h.build(BINDING, tid, &vec![], false)));
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.class(), MessageClass::Success);
    assert_eq!(m.transaction_id(), tid);
    assert_eq!(
        m.attribute::<XorMappedAddress>().unwrap().addr(tid),
        sa("203.0.113.7:5000")
    );
    assert!(m.has_attribute(Software::TYPE));
    assert!(m.has_attribute(Fingerprint::TYPE));
    // A Binding indication (keepalive) gets nothing.
    let ind = indication(BINDING, |_| vec![]);
    assert_eq!(h.input(&ind), Out::None);
}

#[test]
fn allocate_401_then_success() {
    let mut h = H::udp("");
    let tid = TransactionId::generate();
    let r = reply(h.input(&h.build(ALLOCATE, tid, &udp_transport(), false)));
    assert_eq!(code(&r), Some(401));
    let m = Message::from_bytes(&r).unwrap();
    assert!(!m.has_attribute(MessageIntegrity::TYPE));
    assert!(m.has_attribute(Software::TYPE));
    h.nonce = Some(nonce_of(&r));
    assert_eq!(h.shared.stats().auth_challenges.load(Relaxed), 1);

    let tid = TransactionId::generate();
    let r = reply(h.input(&h.build(ALLOCATE, tid, &udp_transport(), true)));
    assert_eq!(code(&r), None);
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.class(), MessageClass::Success);
    let relayed = m.attribute::<XorRelayedAddress>().unwrap().addr(tid);
    assert_eq!(Some(relayed), h.client.relayed());
    assert_eq!(h.ports.opened, vec![relayed]);
    assert_eq!(m.attribute::<Lifetime>().unwrap().seconds(), 600);
    assert_eq!(
        m.attribute::<XorMappedAddress>().unwrap().addr(tid),
        sa("203.0.113.7:5000")
    );
    m.validate_integrity_with_key(&key_of(&h)).unwrap();
    assert!(m.has_attribute(Fingerprint::TYPE));
    assert_eq!(h.client.user(), Some("alice"));
    assert_eq!(h.shared.allocations(), 1);
    assert_eq!(h.shared.stats().allocations_created.load(Relaxed), 1);
    assert_eq!(h.shared.stats().allocations_active.load(Relaxed), 1);
    assert!(h.client.poll_timeout().is_some());
}

use std::sync::atomic::Ordering::Relaxed;

#[test]
fn lifetime_is_clamped() {
    let mut h = H::udp("");
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(Lifetime::new(999_999)));
        a
    });
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.attribute::<Lifetime>().unwrap().seconds(), 3600);
    let r = h.request(REFRESH, |_| vec![Box::new(Lifetime::new(1))]);
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.attribute::<Lifetime>().unwrap().seconds(), 600);
}

#[test]
fn wrong_password_is_401() {
    let mut h = H::udp("");
    h.password = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    assert!(!Message::from_bytes(&r)
        .unwrap()
        .has_attribute(MessageIntegrity::TYPE));
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::BadPassword), 1);
    assert_eq!(h.shared.allocations(), 0);
}

#[test]
fn expired_and_malformed_usernames_are_401() {
    let mut h = H::udp("");
    let cred = h.ring.mint("bob", UNIX0, 60).unwrap();
    h.username = cred.username;
    h.password = cred.password;
    h.advance(Duration::from_secs(61));
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::Expired), 1);

    h.username = "not-a-rest-name".into();
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::Malformed), 1);

    // MESSAGE-INTEGRITY without USERNAME: 400.
    let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    let key = LongTermKeyCredentials::new("u".into(), "p".into(), REALM.into());
    w.add_message_integrity(&key.into(), IntegrityAlgorithm::Sha1)
        .unwrap();
    let r = reply(h.input(&w.finish()));
    assert_eq!(code(&r), Some(400));
    assert_eq!(
        h.shared
            .stats()
            .auth_failures(AuthFailure::MissingCredentials),
        1
    );
}

#[test]
fn stale_nonce_is_438_then_new_nonce_works() {
    let mut h = H::udp("");
    h.allocate();
    let ttl = h.shared.config().nonce_ttl;
    h.advance(ttl + Duration::from_secs(1));
    let r = h.request_raw(REFRESH, |_| vec![]);
    assert_eq!(code(&r), Some(438));
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::StaleNonce), 1);
    let fresh = nonce_of(&r);
    assert_ne!(Some(&fresh), h.nonce.as_ref());
    h.nonce = Some(fresh);
    let r = h.request(REFRESH, |_| vec![]);
    assert_eq!(code(&r), None);
    // A nonce minted for another client address is refused too.
    let mut other = H::new(
        h.shared.clone(),
        Transport::Udp,
        "203.0.113.99:5000",
        "alice",
    );
    other.nonce = h.nonce.clone();
    let r = other.request_raw(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(438));
}

#[test]
fn allocate_errors() {
    let mut h = H::udp("");
    // Missing REQUESTED-TRANSPORT.
    let r = h.request(ALLOCATE, |_| vec![]);
    assert_eq!(code(&r), Some(400));
    // TCP.
    let r = h.request(ALLOCATE, |_| {
        vec![Box::new(RequestedTransport::new(RequestedTransport::TCP))]
    });
    assert_eq!(code(&r), Some(442));
    // IPv6 when the shell has no IPv6 relay address.
    h.ports.v6 = false;
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(RequestedAddressFamily::new(AddressFamily::IPV6)));
        a
    });
    assert_eq!(code(&r), Some(440));
    // Bad family value.
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(
            RawAttribute::new(RequestedAddressFamily::TYPE, &[3, 0, 0, 0]).into_owned(),
        ));
        a
    });
    assert_eq!(code(&r), Some(440));
    // DONT-FRAGMENT is not supported: 420 with UNKNOWN-ATTRIBUTES, signed.
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(DontFragment::new()));
        a
    });
    assert_eq!(code(&r), Some(420));
    let m = Message::from_bytes(&r).unwrap();
    assert!(m
        .attribute::<UnknownAttributes>()
        .unwrap()
        .has_attribute(DontFragment::TYPE));
    m.validate_integrity_with_key(&key_of(&h)).unwrap();
    // Unknown comprehension-required attribute.
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(
            RawAttribute::new(AttributeType::new(0x7777), &[1, 2]).into_owned(),
        ));
        a
    });
    assert_eq!(code(&r), Some(420));
    // Unknown comprehension-optional attribute is ignored.
    let r = h.request(ALLOCATE, |_| {
        let mut a = udp_transport();
        a.push(Box::new(
            RawAttribute::new(AttributeType::new(0x8777), &[1]).into_owned(),
        ));
        a
    });
    assert_eq!(code(&r), None);
    // Exhausted ports: 508.
    let mut h2 = H::udp("");
    h2.ports.exhausted = true;
    let r = h2.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(508));
    assert_eq!(h2.shared.allocations(), 0);
    // Unknown method: 400.
    let r = reply(h.input(&h.build(
        Method::new(0x0123),
        TransactionId::generate(),
        &vec![],
        false,
    )));
    assert_eq!(code(&r), Some(400));
}

#[test]
fn allocation_mismatch_and_retransmit() {
    let mut h = H::udp("");
    // Refresh without allocation: 437.
    let r = h.request(REFRESH, |_| vec![]);
    assert_eq!(code(&r), Some(437));
    let r = h.request(CREATE_PERMISSION, |tid| {
        vec![Box::new(XorPeerAddress::new(sa("8.8.8.8:1"), tid))]
    });
    assert_eq!(code(&r), Some(437));

    let tid = TransactionId::generate();
    let req = h.build(ALLOCATE, tid, &udp_transport(), true);
    let first = reply(h.input(&req));
    assert_eq!(code(&first), None);
    // Retransmission: same answer, no second port.
    let again = reply(h.input(&req));
    assert_eq!(first, again);
    assert_eq!(h.ports.opened.len(), 1);
    // New transaction: 437, signed.
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(437));
    Message::from_bytes(&r)
        .unwrap()
        .validate_integrity_with_key(&key_of(&h))
        .unwrap();
    assert_eq!(h.shared.allocations(), 1);
}

#[test]
fn other_username_gets_441() {
    let mut h = H::udp("");
    h.allocate();
    let cred = h.ring.mint("bob", UNIX0, 3600).unwrap();
    h.username = cred.username;
    h.password = cred.password;
    let r = h.request(REFRESH, |_| vec![]);
    assert_eq!(code(&r), Some(441));
}

#[test]
fn refresh_zero_deletes_and_frees_quota() {
    let mut h = H::udp("");
    let relayed = h.allocate();
    assert_eq!(h.shared.allocations_of("alice"), 1);
    let r = h.request(REFRESH, |_| vec![Box::new(Lifetime::new(0))]);
    assert_eq!(code(&r), None);
    assert_eq!(
        Message::from_bytes(&r)
            .unwrap()
            .attribute::<Lifetime>()
            .unwrap()
            .seconds(),
        0
    );
    assert_eq!(h.ports.closed, vec![relayed]);
    assert_eq!(h.client.relayed(), None);
    assert_eq!(h.shared.allocations(), 0);
    assert_eq!(h.shared.allocations_of("alice"), 0);
    assert_eq!(h.shared.user_table_len(), 0);
    assert_eq!(h.shared.stats().allocations_active.load(Relaxed), 0);
    // A new allocation on the same 5-tuple is fine afterwards.
    h.allocate();
}

#[test]
fn quotas_486_and_508() {
    let cfg = Config {
        max_allocations_per_user: 2,
        max_allocations_total: 3,
        ..config()
    };
    let shared = shared_with(cfg, "s3cret", "", "");
    let mut hs: Vec<H> = (0..3)
        .map(|i| {
            H::new(
                shared.clone(),
                Transport::Tcp,
                &format!("203.0.113.7:{}", 6000 + i),
                "alice",
            )
        })
        .collect();
    hs[0].allocate();
    hs[1].allocate();
    let r = hs[2].request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(486));
    assert!(hs[2].ports.opened.is_empty());
    // Another user fills the total.
    let mut bob = H::new(shared.clone(), Transport::Tcp, "203.0.113.8:1", "bob");
    bob.allocate();
    let mut carol = H::new(shared.clone(), Transport::Tcp, "203.0.113.9:1", "carol");
    let r = carol.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(508));
    assert_eq!(shared.allocations(), 3);
    // Dropping a client releases its quota (RAII), close releases the port.
    let mut first = hs.remove(0);
    first.client.close(&mut first.ports);
    assert_eq!(first.ports.closed.len(), 1);
    drop(first);
    assert_eq!(shared.allocations(), 2);
    drop(bob);
    assert_eq!(shared.allocations(), 1);
    let r = hs[1].request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), None);
}

const SPECIAL_V4: &[&str] = &[
    "127.0.0.1:5000",
    "10.0.0.1:5000",
    "172.16.0.1:5000",
    "192.168.1.1:5000",
    "169.254.169.254:80",
    "100.64.0.1:5000",
    "0.0.0.0:5000",
    "224.0.0.1:5000",
    "255.255.255.255:5000",
];
const SPECIAL_V6: &[&str] = &[
    "[::1]:5000",
    "[::]:5000",
    "[fe80::1]:5000",
    "[fc00::1]:5000",
    "[::ffff:127.0.0.1]:5000",
    "[::ffff:169.254.169.254]:80",
    "[::ffff:10.0.0.1]:5000",
];

#[test]
fn wide_allow_list_still_forbids_special_peers() {
    let mut h = H::udp("0.0.0.0/0,::/0");
    h.allocate();
    for p in SPECIAL_V4 {
        assert_eq!(h.permit(sa(p)), Some(403), "CreatePermission {p}");
        assert_eq!(h.bind(0x4000, sa(p)), Some(403), "ChannelBind {p}");
    }
    assert_eq!(h.permit(sa("8.8.8.8:53")), None);
    // All-or-nothing: a good and a bad peer in one request installs neither.
    let r = h.request(CREATE_PERMISSION, |tid| {
        vec![
            Box::new(XorPeerAddress::new(sa("1.1.1.1:53"), tid)),
            Box::new(XorPeerAddress::new(sa("127.0.0.1:53"), tid)),
        ]
    });
    assert_eq!(code(&r), Some(403));
    assert_eq!(h.peer(sa("1.1.1.1:53"), b"x"), None);
    assert!(h.shared.stats().forbidden("loopback") >= 2);

    let mut h6 = H::new(
        h.shared.clone(),
        Transport::Tls,
        "[2001:db8::7]:5000",
        "alice6",
    );
    h6.allocate_v6();
    for p in SPECIAL_V6 {
        assert_eq!(h6.permit(sa(p)), Some(403), "CreatePermission {p}");
        assert_eq!(h6.bind(0x4000, sa(p)), Some(403), "ChannelBind {p}");
    }
    assert_eq!(h6.permit(sa("[2606:4700::1111]:53")), None);
    // Family mismatch: IPv4 peer on an IPv6 allocation.
    assert_eq!(h6.permit(sa("8.8.8.8:53")), Some(443));
    assert_eq!(h.permit(sa("[2606:4700::1111]:53")), Some(443));
}

#[test]
fn explicit_allow_and_deny_rules() {
    let mut h = H::udp("127.0.0.1");
    h.allocate();
    assert_eq!(h.permit(sa("127.0.0.1:5000")), None);
    assert_eq!(h.permit(sa("127.0.0.2:5000")), Some(403));

    let mut h = H::new(
        shared_with(config(), "s3cret", "0.0.0.0/0", "8.8.8.8,9.9.9.9:53"),
        Transport::Udp,
        "203.0.113.7:5000",
        "alice",
    );
    h.allocate();
    assert_eq!(h.permit(sa("8.8.8.8:53")), Some(403));
    assert_eq!(h.permit(sa("9.9.9.9:53")), Some(403));
    assert_eq!(h.permit(sa("9.9.9.9:54")), None);
    assert_eq!(h.shared.stats().forbidden("denied by rule"), 2);
    // Send to the permitted IP but a denied port: dropped, counted.
    let send = indication(SEND, |tid| {
        vec![
            Box::new(XorPeerAddress::new(sa("9.9.9.9:53"), tid)),
            data_attr(b"hi"),
        ]
    });
    assert_eq!(h.input(&send), Out::None);
    h.client.flush_stats();
    assert_eq!(h.shared.stats().dropped(DropReason::Forbidden), 1);

    // Internal media addresses are allowed by default, and can change at runtime.
    let mut h = H::udp("");
    h.allocate();
    assert_eq!(h.permit(sa("127.0.0.1:50000")), Some(403));
    h.shared.set_internal_peers(vec![sa("127.0.0.1:50000")]);
    assert_eq!(h.permit(sa("127.0.0.1:50000")), None);
    assert_eq!(h.bind(0x4001, sa("127.0.0.1:50000")), None);
    assert_eq!(h.bind(0x4002, sa("127.0.0.1:50001")), Some(403));
}

/// The gateway's own addresses under a broad allow list: its media ports pass, its other
/// ports (API, TURN, relay ports) get 403 for CreatePermission and ChannelBind alike.
#[test]
fn own_addresses_refused_but_media_ports() {
    let mut h = H::udp("0.0.0.0/0,::/0");
    h.allocate();
    // Before the gateway knows its own addresses, 8.8.4.4 is an ordinary peer.
    assert_eq!(h.permit(sa("8.8.4.4:443")), None);
    h.shared.set_internal_peers(vec![sa("8.8.4.4:50000")]);
    let own: Vec<std::net::IpAddr> = vec![
        "::ffff:8.8.4.4".parse().unwrap(),
        "2606:4700::7".parse().unwrap(),
        "8.8.4.4".parse().unwrap(),
    ];
    assert!(h.shared.set_own_addrs(own.clone()));
    assert!(!h.shared.set_own_addrs(own), "the same addresses again");
    assert_eq!(h.shared.own_addrs().len(), 2, "canonical, deduplicated");
    assert_eq!(h.permit(sa("8.8.4.4:50000")), None, "media port");
    assert_eq!(h.bind(0x4001, sa("8.8.4.4:50000")), None);
    // (An IPv6 peer of this IPv4 allocation would get 443; policy.rs tests IPv6.)
    for other in ["8.8.4.4:443", "8.8.4.4:8080", "8.8.4.4:61000"] {
        assert_eq!(h.permit(sa(other)), Some(403), "{other}");
    }
    assert_eq!(h.bind(0x4002, sa("8.8.4.4:61001")), Some(403));
    assert_eq!(h.permit(sa("8.8.4.5:443")), None, "a neighbour is not ours");
    assert_eq!(
        h.shared.check_peer(sa("[::ffff:8.8.4.4]:443")),
        PolicyVerdict::Deny("own address")
    );
    assert_eq!(
        h.shared.check_peer(sa("[2606:4700::7]:443")),
        PolicyVerdict::Deny("own address")
    );
}

#[test]
fn channel_bind_rules() {
    let mut h = H::udp("0.0.0.0/0");
    h.allocate();
    let (a, b) = (sa("8.8.8.8:1000"), sa("8.8.4.4:1000"));
    assert_eq!(h.bind(0x3FFF, a), Some(400));
    assert_eq!(h.bind(0x8000, a), Some(400));
    assert_eq!(h.bind(0xFFFF, a), Some(400));
    assert_eq!(h.bind(0x4000, a), None);
    assert_eq!(h.bind(0x4000, b), Some(400), "channel bound to A");
    assert_eq!(h.bind(0x4001, a), Some(400), "A bound to 0x4000");
    assert_eq!(h.bind(0x4000, a), None, "refresh");
    assert_eq!(h.bind(0x4FFF, b), None);
    // Missing attributes.
    let r = h.request(CHANNEL_BIND, |_| vec![Box::new(ChannelNumber::new(0x4002))]);
    assert_eq!(code(&r), Some(400));
    let r = h.request(CHANNEL_BIND, |tid| {
        vec![Box::new(XorPeerAddress::new(a, tid))]
    });
    assert_eq!(code(&r), Some(400));
    // Binding installed a permission.
    assert!(h.peer(sa("8.8.8.8:9"), b"x").is_some());
    // After expiry plus cooldown, the number may be bound to another peer.
    let r = h.request(REFRESH, |_| vec![Box::new(Lifetime::new(3600))]);
    assert_eq!(code(&r), None);
    h.advance(Duration::from_secs(601));
    h.timeout();
    assert_eq!(h.bind(0x4000, b), Some(400), "still cooling down");
    // Keep the allocation alive.
    assert_eq!(code(&h.request(REFRESH, |_| vec![])), None);
    h.advance(Duration::from_secs(300));
    h.timeout();
    assert_eq!(h.bind(0x4000, sa("1.1.1.1:1")), None);
}

#[test]
fn caps_give_508() {
    let cfg = Config {
        max_permissions_per_allocation: 2,
        max_channels_per_allocation: 1,
        ..config()
    };
    let mut h = H::new(
        shared_with(cfg, "s3cret", "0.0.0.0/0", ""),
        Transport::Udp,
        "203.0.113.7:5000",
        "alice",
    );
    h.allocate();
    assert_eq!(h.permit(sa("1.1.1.1:1")), None);
    assert_eq!(h.bind(0x4000, sa("1.1.1.2:1")), None);
    assert_eq!(h.permit(sa("1.1.1.3:1")), Some(508));
    assert_eq!(h.bind(0x4001, sa("1.1.1.1:2")), Some(508));
    assert_eq!(h.permit(sa("1.1.1.1:9")), None, "refresh is fine");
}

#[test]
fn send_and_channel_data_reach_peer() {
    let mut h = H::new(
        shared_with(config(), "s3cret", "0.0.0.0/0", ""),
        Transport::Tcp,
        "203.0.113.7:5000",
        "alice",
    );
    let relayed = h.allocate();
    let peer = sa("8.8.8.8:3478");
    let send = indication(SEND, |tid| {
        vec![
            Box::new(XorPeerAddress::new(peer, tid)),
            data_attr(b"hello"),
        ]
    });
    // No permission yet: dropped.
    assert_eq!(h.input(&send), Out::None);
    assert_eq!(h.permit(peer), None);
    assert_eq!(
        h.input(&send),
        Out::ToPeer(relayed, peer, b"hello".to_vec())
    );
    // ChannelData on an unbound channel: dropped.
    let mut cd = vec![0u8; 4 + 5];
    ChannelData::new(0x4000, b"howdy").write_into_unchecked(&mut cd);
    assert_eq!(h.input(&cd), Out::None);
    assert_eq!(h.bind(0x4000, peer), None);
    assert_eq!(h.input(&cd), Out::ToPeer(relayed, peer, b"howdy".to_vec()));
    // With stream padding.
    let mut padded = cd.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        h.input(&padded),
        Out::ToPeer(relayed, peer, b"howdy".to_vec())
    );
    // Truncated ChannelData on a stream: close.
    assert_eq!(h.input(&cd[..6]), Out::Close);
    // Reserved channel range: dropped.
    let mut bad = cd.clone();
    bad[0] = 0x50;
    assert_eq!(h.input(&bad), Out::None);
    // Counters are flushed on timeout.
    h.advance(Duration::from_secs(2));
    h.timeout();
    let s = h.shared.stats();
    assert_eq!(s.packets(Direction::ClientToPeer, Transport::Tcp), 3);
    assert_eq!(s.bytes(Direction::ClientToPeer, Transport::Tcp), 15);
    assert!(s.dropped(DropReason::NoPermission) >= 1);
    assert!(s.dropped(DropReason::NoChannel) >= 2);
}

#[test]
fn send_on_wrong_family_or_without_allocation_is_dropped() {
    let mut h = H::udp("0.0.0.0/0,::/0");
    let send = indication(SEND, |tid| {
        vec![
            Box::new(XorPeerAddress::new(sa("8.8.8.8:1"), tid)),
            data_attr(b"x"),
        ]
    });
    assert_eq!(h.input(&send), Out::None);
    h.allocate();
    let send6 = indication(SEND, |tid| {
        vec![
            Box::new(XorPeerAddress::new(sa("[2606:4700::1]:1"), tid)),
            data_attr(b"x"),
        ]
    });
    assert_eq!(h.input(&send6), Out::None);
    let no_data = indication(SEND, |tid| {
        vec![Box::new(XorPeerAddress::new(sa("8.8.8.8:1"), tid))]
    });
    assert_eq!(h.input(&no_data), Out::None);
}

#[test]
fn peer_data_as_channel_data_or_data_indication() {
    for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
        let mut h = H::new(
            shared_with(config(), "s3cret", "0.0.0.0/0", ""),
            transport,
            "203.0.113.7:5000",
            "alice",
        );
        // No allocation.
        assert_eq!(h.peer(sa("8.8.8.8:1"), b"x"), None);
        h.allocate();
        let peer = sa("8.8.8.8:3478");
        assert_eq!(h.peer(peer, b"hello"), None, "no permission");
        assert_eq!(h.permit(peer), None);
        // Permission, no channel: Data indication.
        let out = h.peer(peer, b"hello").unwrap();
        let m = Message::from_bytes(&out).unwrap();
        assert_eq!(m.class(), MessageClass::Indication);
        assert_eq!(m.method(), DATA);
        assert_eq!(
            m.attribute::<XorPeerAddress>()
                .unwrap()
                .addr(m.transaction_id()),
            peer
        );
        assert_eq!(m.attribute::<DataAttr>().unwrap().data(), b"hello");
        // Permission is per IP: another port of the same IP passes too.
        assert!(h.peer(sa("8.8.8.8:9"), b"x").is_some());
        // Channel: ChannelData, padded on streams only.
        assert_eq!(h.bind(0x4001, peer), None);
        let out = h.peer(peer, b"hello").unwrap();
        let expected_len = if transport.is_stream() { 12 } else { 9 };
        assert_eq!(out.len(), expected_len, "{transport:?}");
        let cd = ChannelData::parse(&out).unwrap();
        assert_eq!(cd.id(), 0x4001);
        assert_eq!(cd.data(), b"hello");
        let out = h.peer(peer, b"1234").unwrap();
        assert_eq!(out.len(), 8);
        // Another port of the bound IP: Data indication.
        let out = h.peer(sa("8.8.8.8:9"), b"x").unwrap();
        assert!(Message::from_bytes(&out).is_ok());
        // Too large to wrap: dropped.
        assert_eq!(h.peer(sa("8.8.8.8:9"), &vec![0; 70_000]), None);
        // Batched counters reach the shared stats after 64 packets.
        for _ in 0..128 {
            h.peer(peer, b"abcd").unwrap();
        }
        assert!(h.shared.stats().packets(Direction::PeerToClient, transport) >= 64);
    }
}

#[test]
fn permission_and_allocation_expiry() {
    let mut h = H::udp("0.0.0.0/0");
    let relayed = h.allocate();
    let peer = sa("8.8.8.8:3478");
    assert_eq!(h.permit(peer), None);
    assert!(h.peer(peer, b"x").is_some());
    // The next timer is the stats flush (1 s), then the permission (300 s).
    let first = h.client.poll_timeout().unwrap();
    assert_eq!(first, h.now().mono + Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    h.timeout();
    assert_eq!(
        h.client.poll_timeout().unwrap(),
        h.base + Duration::from_secs(300)
    );
    h.advance(Duration::from_secs(300));
    // Expired even before the timer ran.
    assert_eq!(h.peer(peer, b"x"), None);
    h.timeout();
    assert_eq!(h.peer(peer, b"x"), None);
    // Allocation expiry (600 s default) closes the relayed port.
    h.advance(Duration::from_secs(300));
    h.timeout();
    assert_eq!(h.ports.closed, vec![relayed]);
    assert_eq!(h.client.relayed(), None);
    assert_eq!(h.shared.allocations(), 0);
    h.advance(Duration::from_secs(5));
    h.timeout();
    assert_eq!(h.client.poll_timeout(), None);
}

#[test]
fn revocation_deletes_allocation_and_refuses_credential() {
    let mut h = H::udp("");
    let relayed = h.allocate();
    let now = h.now();
    assert!(h.shared.revoke("alice", UNIX0 + 3600, now));
    assert!(h.shared.is_revoked("alice", now));
    assert!(h.client.check_revoked(now, &mut h.ports));
    assert_eq!(h.ports.closed, vec![relayed]);
    assert_eq!(h.shared.allocations(), 0);
    assert!(!h.client.check_revoked(now, &mut h.ports));
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::Revoked), 1);
    // A fresh client with the same credential too.
    let mut again = H::new(h.shared.clone(), Transport::Tcp, "203.0.113.7:7", "alice");
    let r = again.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    // Revocations end with the credential; the table is pruned.
    let mut later = now;
    later.unix = UNIX0 + 3601;
    assert!(!h.shared.is_revoked("alice", later));
    assert!(!h.shared.revoke("bob", UNIX0 + 3601, later));
    assert_eq!(h.shared.user_table_len(), 0);
}

#[test]
fn rotated_ring_accepts_old_and_new() {
    let shared = shared_with(config(), "new,old", "", "");
    let old = SecretRing::parse("old").unwrap();
    let mut a = H::new(shared.clone(), Transport::Tcp, "203.0.113.7:1", "alice");
    let c = old.mint("alice", UNIX0, 3600).unwrap();
    a.username = c.username;
    a.password = c.password;
    a.allocate();
    let mut b = H::new(shared.clone(), Transport::Tcp, "203.0.113.7:2", "bob");
    b.allocate();
    assert_eq!(shared.allocations(), 2);
    // Cached key: later requests still authenticate.
    assert_eq!(code(&a.request(REFRESH, |_| vec![])), None);
    // After rotation drops "old", a new client with the old credential fails.
    shared.set_secrets(SecretRing::parse("new").unwrap());
    let mut c2 = H::new(shared.clone(), Transport::Tcp, "203.0.113.7:3", "x");
    let c = old.mint("carol", UNIX0, 3600).unwrap();
    c2.username = c.username;
    c2.password = c.password;
    assert_eq!(code(&c2.request(ALLOCATE, |_| udp_transport())), Some(401));
}

#[test]
fn malformed_requests_get_400() {
    let mut h = H::udp("");
    h.allocate();
    // Attribute length running past the end.
    let mut req = h.build(REFRESH, TransactionId::generate(), &vec![], false);
    req.truncate(20);
    req.extend_from_slice(&[0x00, 0x0D, 0xFF, 0xFF, 0, 0, 0, 0]);
    let len = (req.len() - 20) as u16;
    req[2..4].copy_from_slice(&len.to_be_bytes());
    let r = reply(h.input(&req));
    assert_eq!(code(&r), Some(400));
    // Length not a multiple of 4.
    let mut req = h.build(BINDING, TransactionId::generate(), &vec![], false);
    req.truncate(20);
    req.extend_from_slice(&[0, 0, 0]);
    req[2..4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(code(&reply(h.input(&req))), Some(400));
    // Bad fingerprint: silently dropped.
    let mut req = h.build(BINDING, TransactionId::generate(), &vec![], false);
    let n = req.len();
    req[n - 1] ^= 0xFF;
    assert_eq!(h.input(&req), Out::None);
    // Garbage on UDP is dropped, on a stream closes.
    assert_eq!(h.input(&[0xFF, 1, 2, 3]), Out::None);
    assert_eq!(h.input(&[]), Out::None);
    let mut t = H::new(h.shared.clone(), Transport::Tcp, "203.0.113.9:1", "t");
    assert_eq!(t.input(b"GET / HTTP/1.1\r\n"), Out::Close);
}

#[test]
fn garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut h = H::new(
            shared_with(config(), "s3cret", "0.0.0.0/0,::/0", ""),
            transport,
            "203.0.113.7:5000",
            "alice",
        );
        h.allocate();
        let peer = sa("8.8.8.8:3478");
        assert_eq!(h.bind(0x4000, peer), None);
        let mut samples: Vec<Vec<u8>> = vec![
            h.build(ALLOCATE, TransactionId::generate(), &udp_transport(), true),
            h.build(
                CHANNEL_BIND,
                TransactionId::generate(),
                &vec![
                    Box::new(ChannelNumber::new(0x4001)),
                    Box::new(XorPeerAddress::new(peer, TransactionId::generate())),
                ],
                true,
            ),
            indication(SEND, |tid| {
                vec![Box::new(XorPeerAddress::new(peer, tid)), data_attr(b"abc")]
            }),
            vec![0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0],
        ];
        samples.push(h.build(BINDING, TransactionId::generate(), &vec![], false));
        for i in 0..4000 {
            let base = &samples[i % samples.len()];
            let mut m = base.clone();
            match i % 5 {
                0 => {
                    let n = rng.random_range(0..=m.len());
                    m.truncate(n);
                }
                1 => {
                    for _ in 0..rng.random_range(1..4) {
                        let j = rng.random_range(0..m.len());
                        m[j] ^= 1 << rng.random_range(0..8);
                    }
                }
                2 => {
                    // Huge attribute length at a random attribute header offset.
                    if m.len() > 24 {
                        let j = 20 + 4 * rng.random_range(0..(m.len() - 20) / 4);
                        if j + 4 <= m.len() {
                            m[j + 2] = 0xFF;
                            m[j + 3] = rng.random();
                        }
                    }
                }
                3 => {
                    let n = rng.random_range(0..200);
                    m = (0..n).map(|_| rng.random()).collect();
                    if let Some(b) = m.first_mut() {
                        *b &= if i % 2 == 0 { 0x3F } else { 0x7F };
                    }
                    if m.len() >= 8 && i % 3 == 0 {
                        m[4..8].copy_from_slice(&0x2112A442u32.to_be_bytes());
                    }
                }
                _ => {
                    // Header length field lies.
                    if m.len() >= 4 {
                        let l: u16 = rng.random();
                        m[2..4].copy_from_slice(&l.to_be_bytes());
                    }
                }
            }
            let _ = h.input(&m);
            let n = rng.random_range(0..2000);
            let payload: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let _ = h.peer(peer, &payload);
            if i % 500 == 0 {
                h.advance(Duration::from_secs(1));
                h.timeout();
            }
        }
    }
}

#[test]
fn client_debug_hides_key() {
    let mut h = H::udp("");
    h.allocate();
    let d = format!("{:?}", h.client);
    assert!(d.contains("alice"));
    assert!(!d.contains(&h.password));
    let _ = Software::new("x");
    let _: Option<&dyn MessageWrite<Output = Vec<u8>>> = None;
}

mod standing;

/// A harness client authenticating as a static user (TURN_STATIC_USERS).
fn static_client(shared: &Arc<Shared>, client: &str, user: &str, password: &str) -> H {
    let mut h = H::new(shared.clone(), Transport::Tcp, client, "unused");
    h.username = user.into();
    h.password = password.into();
    h
}

#[test]
fn static_users_authenticate_reach_only_the_allow_list_and_share_the_total_quota() {
    let cfg = Config {
        max_allocations_per_user: 2,
        max_allocations_total: 5,
        ..config()
    };
    // The backend's media ports are the allow list (private: named explicitly).
    let shared = shared_with(cfg, "s3cret", "127.0.0.1:40000-40100", "");
    shared.set_static_users(crate::core::StaticUsers::parse("user:password", REALM).unwrap());
    // Wrong password: 401; an unknown plain name is no REST username either: 401.
    let mut bad = static_client(&shared, "203.0.113.7:7000", "user", "wrong");
    assert_eq!(code(&bad.request(ALLOCATE, |_| udp_transport())), Some(401));
    let mut nobody = static_client(&shared, "203.0.113.7:7001", "nobody", "password");
    assert_eq!(
        code(&nobody.request(ALLOCATE, |_| udp_transport())),
        Some(401)
    );
    // More allocations than the per-user quota (2): static users count against the total.
    let mut hs: Vec<H> = (0..4)
        .map(|i| {
            static_client(
                &shared,
                &format!("203.0.113.7:{}", 7100 + i),
                "user",
                "password",
            )
        })
        .collect();
    for h in &mut hs {
        h.allocate();
    }
    assert_eq!(shared.stats().static_user_allocations.load(Relaxed), 4);
    let h = &mut hs[0];
    // Inside the allow list: allowed; outside it (public or private): 403.
    assert_eq!(h.permit(sa("127.0.0.1:40010")), None);
    assert_eq!(h.permit(sa("127.0.0.1:22")), Some(403));
    assert_eq!(h.permit(sa("8.8.8.8:53")), Some(403));
    assert_eq!(h.bind(0x4000, sa("10.0.0.1:40010")), Some(403));
    // Its credential never expires: refreshes go on long past any REST TTL.
    for _ in 0..30 {
        h.advance(Duration::from_secs(500));
        let r = h.request(REFRESH, |_| vec![Box::new(Lifetime::new(600))]);
        assert_eq!(code(&r), None, "{:?}", error_of(&r));
        assert_eq!(h.permit(sa("127.0.0.1:40010")), None);
    }
    // A REST user of the same name is another user: it allocates too (the fifth), and then
    // the total is full for everyone.
    let mut rest: Vec<H> = (0..2)
        .map(|i| {
            H::new(
                shared.clone(),
                Transport::Tcp,
                &format!("203.0.113.9:{}", 1 + i),
                "user",
            )
        })
        .collect();
    rest[0].allocate();
    let r = rest[1].request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(508), "{:?}", error_of(&r));
}
