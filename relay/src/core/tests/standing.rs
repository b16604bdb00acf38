//! Credential lifetime past expiry by standing, per-user wake-ups and the relayed-address
//! index (see `core::standing`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Directory(Mutex<HashMap<String, Standing>>);

impl Directory {
    fn set(&self, user: &str, s: Standing) {
        self.0.lock().unwrap().insert(user.to_owned(), s);
    }
}

impl UserDirectory for Directory {
    fn standing(&self, user: &str) -> Standing {
        self.0
            .lock()
            .unwrap()
            .get(user)
            .copied()
            .unwrap_or(Standing::Unknown)
    }
}

#[derive(Default)]
struct Counter(AtomicU32);

impl Wake for Counter {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A harness whose credential for `user` expires after `ttl` seconds, on a relay with
/// `dir` as its owner's directory and a 1 h unbound lifetime.
fn harness(dir: &Arc<Directory>, user: &str, ttl: u64) -> H {
    let shared = Shared::with_directory(
        config(),
        SecretRing::parse("s3cret").unwrap(),
        PeerPolicy::parse("0.0.0.0/0", "").unwrap(),
        NonceKey::from_bytes([9; 32]),
        Some(dir.clone() as Arc<dyn UserDirectory>),
    );
    let mut h = H::new(shared, Transport::Tcp, "203.0.113.7:5000", user);
    let cred = h.ring.mint(user, UNIX0, ttl).unwrap();
    h.username = cred.username;
    h.password = cred.password;
    h
}

fn refresh(h: &mut H, secs: u32) -> (Option<u16>, Option<u32>) {
    let r = h.request(REFRESH, move |_| vec![Box::new(Lifetime::new(secs))]);
    let m = Message::from_bytes(&r).unwrap();
    (
        code(&r),
        m.attribute::<Lifetime>().ok().map(|l| l.seconds()),
    )
}

#[test]
fn a_live_session_refreshes_past_its_credential_expiry() {
    let dir = Arc::new(Directory::default());
    dir.set("s1", Standing::Live);
    let mut h = harness(&dir, "s1", 30);
    h.allocate();
    let peer = sa("8.8.8.8:3478");
    // Two days later, with the credential long expired: every keep-alive request passes.
    for _ in 0..600 {
        h.advance(Duration::from_secs(290));
        h.timeout();
        assert_eq!(refresh(&mut h, 3600), (None, Some(3600)));
        assert_eq!(h.permit(peer), None);
        assert_eq!(h.bind(0x4000, peer), None);
    }
    assert!(h.client.relayed().is_some());
    assert_eq!(h.shared.stats().auth_failures(AuthFailure::Expired), 0);
    // A new allocation with the expired credential is refused, even for a live session.
    let mut second = H::new(h.shared.clone(), Transport::Tcp, "203.0.113.7:6000", "s1");
    second.username = h.username.clone();
    second.password = h.password.clone();
    second.t = h.t;
    let r = second.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
}

#[test]
fn an_ended_session_is_refused_and_its_connection_woken() {
    let dir = Arc::new(Directory::default());
    dir.set("s1", Standing::Live);
    let mut h = harness(&dir, "s1", 3600);
    let woken = Arc::new(Counter::default());
    h.client.set_waker(woken.clone());
    let relayed = h.allocate();
    // Another user's allocation must not be woken.
    dir.set("s2", Standing::Live);
    let mut other = H::new(h.shared.clone(), Transport::Tcp, "203.0.113.9:5000", "s2");
    other.ports.next = 1000;
    let other_woken = Arc::new(Counter::default());
    other.client.set_waker(other_woken.clone());
    other.allocate();

    assert_eq!(h.shared.user_of_relayed(relayed).as_deref(), Some("s1"));
    dir.set("s1", Standing::Ended);
    assert!(h.shared.wake_user("s1"));
    assert_eq!(woken.0.load(Ordering::Relaxed), 1);
    assert_eq!(other_woken.0.load(Ordering::Relaxed), 0);
    let now = h.now();
    assert!(h.client.check_revoked(now, &mut h.ports));
    assert_eq!(h.ports.closed, vec![relayed]);
    assert_eq!(h.shared.user_of_relayed(relayed), None);
    assert!(!h.shared.wake_user("s1"), "no allocation left to wake");
    let r = h.request(ALLOCATE, |_| udp_transport());
    assert_eq!(code(&r), Some(401));
    assert_eq!(h.shared.allocations_of("s2"), 1);
}

#[test]
fn an_unbound_credential_lives_a_bounded_time() {
    let dir = Arc::new(Directory::default());
    // 30 s credential, 1 h unbound lifetime: the allocation may live until created + 1 h.
    let mut h = harness(&dir, "minted-elsewhere", 30);
    h.allocate();
    h.advance(Duration::from_secs(600));
    assert_eq!(
        refresh(&mut h, 3600),
        (None, Some(3000)),
        "cut to the bound"
    );
    h.advance(Duration::from_secs(2990));
    assert_eq!(refresh(&mut h, 600), (None, Some(10)));
    h.advance(Duration::from_secs(10));
    h.timeout();
    assert_eq!(h.client.relayed(), None, "expired at its bound");
    // And a refresh past the bound is refused.
    let (code, _) = refresh(&mut h, 600);
    assert_eq!(code, Some(401));
}

#[test]
fn a_long_credential_is_never_cut_below_its_expiry() {
    let dir = Arc::new(Directory::default());
    let mut h = harness(&dir, "u", 7200);
    h.allocate();
    h.advance(Duration::from_secs(3000));
    assert_eq!(refresh(&mut h, 3600), (None, Some(3600)));
    h.advance(Duration::from_secs(3600));
    assert_eq!(refresh(&mut h, 3600), (None, Some(600)));
}
