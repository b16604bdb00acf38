//! End-to-end tests of the TURN relay: a real relay (or the whole gateway) in-process on
//! 127.0.0.1:0, driven by the test TURN client over TCP and TLS, relaying to a UDP echo
//! peer on loopback.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use clap::Parser as _;
use gateway_tests::turn_client::{connect_tls_stream, Attr, Auth, ClientError, Origin};
use gateway_tests::{
    connect, eventually, http_get, rest_password, test_io_config, unix_now, TestCert, TestRelay,
    TurnClient, UdpEcho, Via, TEST_SERVER_NAME,
};
use relay::client::{Received, Step};
use relay::framer::Frame;
use stun_types::AddressFamily;
use turn_types::message::{ALLOCATE, CREATE_PERMISSION};

/// Bound on waits for things that should happen promptly.
const T: Duration = Duration::from_secs(5);

fn core_config() -> relay::core::Config {
    relay::core::Config::default()
}

/// The error code of a failed call; panics on success or on a non-TURN error.
#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Turn(e)) => e.code,
        other => panic!("expected a TURN error response, got {other:?}"),
    }
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_401_then_allocate_and_relay_both_ways() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    for (i, via) in Via::ALL.into_iter().enumerate() {
        let cred = relay.mint(&format!("session-{i}"));
        let mut c = relay.connect(via).await;
        c.set_credentials(&cred.username, &cred.password);

        // 401 with REALM and NONCE, FINGERPRINT present.
        let first = c
            .allocate_unauthenticated(AddressFamily::IPV4)
            .await
            .unwrap();
        let err = first.error().expect("unauthenticated Allocate must fail");
        assert_eq!(err.code, 401, "{via:?}: {err:?}");
        assert_eq!(first.realm().as_deref(), Some("gateway"), "{via:?}");
        assert!(first.nonce().is_some(), "{via:?}: 401 without NONCE");
        assert!(first.has_fingerprint(), "{via:?}: 401 without FINGERPRINT");

        // Signed retry: success, signed with our key.
        let reply = c
            .transact(
                ALLOCATE,
                &[Attr::RequestedTransport(17), Attr::Lifetime(600)],
                Auth::LongTerm,
            )
            .await
            .unwrap();
        assert!(reply.is_success(), "{via:?}: {:?}", reply.error());
        assert_eq!(
            reply.integrity_ok,
            Some(true),
            "{via:?}: response integrity"
        );
        let relayed = reply.relayed().expect("XOR-RELAYED-ADDRESS");
        assert_eq!(relayed.ip(), localhost(), "{via:?}");
        assert_ne!(relayed.port(), 0, "{via:?}");
        assert_eq!(reply.mapped(), Some(c.local_addr()), "{via:?}");
        assert_eq!(reply.lifetime(), Some(600), "{via:?}");

        // Send indication → echo → Data indication.
        c.create_permission(echo.addr).await.unwrap();
        for payload in [&b"hello"[..], b"x", &[0xA5; 1201][..]] {
            c.send_indication(echo.addr, payload).await.unwrap();
            let (from, data) = c.recv_data(T).await.unwrap();
            assert_eq!(from, Origin::Peer(echo.addr), "{via:?}");
            assert_eq!(data, payload, "{via:?}");
        }

        // ChannelData → echo → ChannelData (odd lengths exercise stream padding).
        let ch = 0x4000 + i as u16;
        c.channel_bind(ch, echo.addr).await.unwrap();
        for payload in [&b"abcde"[..], b"z", b"four", &[7u8; 999][..]] {
            c.send_channel_data(ch, payload).await.unwrap();
            let (from, data) = c.recv_data(T).await.unwrap();
            assert_eq!(from, Origin::Channel(ch), "{via:?}");
            assert_eq!(data, payload, "{via:?}");
        }
        // With a channel bound, the peer's answers to a Send indication come on the channel.
        c.send_indication(echo.addr, b"via-send").await.unwrap();
        let (from, data) = c.recv_data(T).await.unwrap();
        assert_eq!(
            (from, data.as_slice()),
            (Origin::Channel(ch), &b"via-send"[..])
        );
    }
    assert!(echo.received.load(SeqCst) >= 3 * 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_401() {
    let relay = TestRelay::start(core_config(), test_io_config(), "", "s3cret").await;
    for via in [Via::Tcp, Via::Tls] {
        let good = relay.mint("u");
        // Wrong password.
        let mut c = relay.connect(via).await;
        assert_eq!(
            code(c.allocate(&good.username, "not-the-password").await),
            401
        );
        // Minted under another secret.
        let other = auth::SecretRing::parse("other").unwrap();
        let foreign = other.mint("u", unix_now(), 600).unwrap();
        let mut c = relay.connect(via).await;
        assert_eq!(
            code(c.allocate(&foreign.username, &foreign.password).await),
            401
        );
        // Expired (minted an hour ago for ten minutes).
        let old = relay.ring.mint("u", unix_now() - 3600, 600).unwrap();
        let mut c = relay.connect(via).await;
        assert_eq!(code(c.allocate(&old.username, &old.password).await), 401);
        // And the good one works.
        let mut c = relay.connect(via).await;
        c.allocate(&good.username, &good.password).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_nonce_gets_438_and_the_new_nonce_works() {
    let core = relay::core::Config {
        nonce_ttl: Duration::from_secs(1),
        ..core_config()
    };
    let relay = TestRelay::start(core, test_io_config(), "", "s3cret").await;
    let cred = relay.mint("nonce-user");
    let mut clients = Vec::new();
    for via in Via::ALL {
        let mut c = relay.connect(via).await;
        c.set_credentials(&cred.username, &cred.password);
        let r = c
            .allocate_unauthenticated(AddressFamily::IPV4)
            .await
            .unwrap();
        assert_eq!(r.error().map(|e| e.code), Some(401));
        clients.push((via, c));
    }
    // Every nonce was made at or before `t0` and lives 1 s (whole unix seconds): it is
    // stale once the wall clock reaches t0 + 1. Wait on the clock, bounded.
    let t0 = unix_now();
    assert!(
        eventually(Duration::from_secs(3), || unix_now() > t0).await,
        "wall clock did not advance"
    );
    for (via, c) in &mut clients {
        let stale = c.nonce().unwrap().to_owned();
        let r = c
            .transact(ALLOCATE, &[Attr::RequestedTransport(17)], Auth::LongTerm)
            .await
            .unwrap();
        let err = r
            .error()
            .unwrap_or_else(|| panic!("{via:?}: stale nonce accepted"));
        assert_eq!(err.code, 438, "{via:?}: {err:?}");
        assert!(r.realm().is_some(), "{via:?}: 438 without REALM");
        let fresh = r
            .nonce()
            .unwrap_or_else(|| panic!("{via:?}: 438 without NONCE"));
        assert_ne!(fresh, stale, "{via:?}");
        // The new nonce is good for a second; retry (again if a second boundary slipped
        // between the 438 and the retry).
        let mut ok = None;
        for _ in 0..3 {
            match c.allocate_signed(AddressFamily::IPV4).await {
                Ok(a) => {
                    ok = Some(a);
                    break;
                }
                Err(e) if e.code() == Some(438) => continue,
                Err(e) => panic!("{via:?}: retry with the fresh nonce failed: {e}"),
            }
        }
        assert!(ok.is_some(), "{via:?}: three 438s in a row");
    }
}

/// Peers that `0.0.0.0/0,::/0` must not open (DESIGN.md, peer policy).
const DENIED: &[&str] = &[
    "127.0.0.1:5000",
    "10.0.0.1:5000",
    "172.16.0.1:5000",
    "192.168.1.1:5000",
    "169.254.169.254:80",
    "100.64.0.1:5000",
    "0.0.0.0:5000",
    "224.0.0.1:5000",
    "255.255.255.255:5000",
    "[::1]:5000",
    "[::]:5000",
    "[fe80::1]:5000",
    "[fc00::1]:5000",
    "[::ffff:127.0.0.1]:5000",
    "[::ffff:169.254.169.254]:80",
    "[::ffff:10.0.0.1]:5000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_allow_list_still_forbids_special_addresses() {
    let relay = TestRelay::start(core_config(), test_io_config(), "0.0.0.0/0,::/0", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    for via in [Via::Tcp, Via::Tls] {
        let cred = relay.mint("policy");
        let mut v4 = relay.connect(via).await;
        let a4 = v4.allocate(&cred.username, &cred.password).await.unwrap();
        assert!(a4.relayed.is_ipv4());
        let mut v6 = relay.connect(via).await;
        let a6 = v6
            .allocate_family(&cred.username, &cred.password, AddressFamily::IPV6)
            .await
            .unwrap();
        assert_eq!(a6.relayed.ip(), "::1".parse::<IpAddr>().unwrap());

        // Controls: public addresses of each family are allowed, so the 403s below come
        // from the special ranges, not from something else.
        v4.create_permission("8.8.8.8:53".parse().unwrap())
            .await
            .unwrap();
        v6.create_permission("[2606:4700::1111]:53".parse().unwrap())
            .await
            .unwrap();

        for s in DENIED {
            let peer: SocketAddr = s.parse().unwrap();
            // An allocation of the peer's family, so 443 cannot mask the policy.
            let c = if peer.is_ipv4() { &mut v4 } else { &mut v6 };
            let r = c.create_permission(peer).await;
            assert_eq!(code(r), 403, "{via:?}: CreatePermission {s}");
            let r = c.channel_bind(0x4abc, peer).await;
            assert_eq!(code(r), 403, "{via:?}: ChannelBind {s}");
            // A multi-peer CreatePermission with one denied peer fails as a whole.
            let good: SocketAddr = if peer.is_ipv4() {
                "8.8.4.4:53".parse().unwrap()
            } else {
                "[2606:4700::1001]:53".parse().unwrap()
            };
            let r = c
                .request(CREATE_PERMISSION, &[Attr::Peer(good), Attr::Peer(peer)])
                .await;
            assert_eq!(code(r), 403, "{via:?}: CreatePermission [good, {s}]");
        }

        // Data to a denied peer goes nowhere: the loopback echo never hears it.
        v4.send_indication(echo.addr, b"must not arrive")
            .await
            .unwrap();
        v4.send_channel_data(0x4abc, b"nor this").await.unwrap();
        // A request after them: once answered, the relay has handled both.
        v4.refresh(600).await.unwrap();
        assert!(
            !eventually(Duration::from_millis(200), || echo.received.load(SeqCst)
                > 0)
            .await,
            "{via:?}: a datagram reached the loopback peer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_quota_gets_486() {
    let core = relay::core::Config {
        max_allocations_per_user: 2,
        ..core_config()
    };
    let relay = TestRelay::start(core, test_io_config(), "", "s3cret").await;
    for via in [Via::Tcp, Via::Tls] {
        let user = format!("quota-{via:?}");
        let cred = relay.mint(&user);
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = relay.connect(via).await;
            c.allocate(&cred.username, &cred.password).await.unwrap();
            held.push(c);
        }
        assert_eq!(relay.server.shared().allocations_of(&user), 2);
        let mut third = relay.connect(via).await;
        assert_eq!(
            code(third.allocate(&cred.username, &cred.password).await),
            486,
            "{via:?}"
        );
        // Another user is not affected.
        let other = relay.mint(&format!("other-{via:?}"));
        let mut o = relay.connect(via).await;
        o.allocate(&other.username, &other.password).await.unwrap();

        // Closing one connection gives its quota back.
        held.pop().unwrap().close().await;
        let shared = relay.server.shared().clone();
        assert!(
            eventually(T, || shared.allocations_of(&user) == 1).await,
            "{via:?}: quota not released after close"
        );
        third.allocate_signed(AddressFamily::IPV4).await.unwrap();
        assert_eq!(relay.server.shared().allocations_of(&user), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_zero_deletes_the_allocation() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    for via in [Via::Tcp, Via::Tls] {
        let user = format!("refresh-{via:?}");
        let cred = relay.mint(&user);
        let mut c = relay.connect(via).await;
        c.allocate(&cred.username, &cred.password).await.unwrap();
        assert_eq!(c.refresh(600).await.unwrap(), 600);
        c.create_permission(echo.addr).await.unwrap();
        assert_eq!(relay.server.shared().allocations_of(&user), 1);

        assert_eq!(c.refresh(0).await.unwrap(), 0);
        assert_eq!(relay.server.shared().allocations_of(&user), 0);
        assert_eq!(code(c.create_permission(echo.addr).await), 437, "{via:?}");
        assert_eq!(
            code(c.channel_bind(0x4000, echo.addr).await),
            437,
            "{via:?}"
        );
        assert_eq!(code(c.refresh(600).await), 437, "{via:?}");
        // Nothing is relayed any more.
        c.send_indication(echo.addr, b"gone").await.unwrap();
        assert!(matches!(
            c.recv_data(Duration::from_millis(200)).await,
            Err(ClientError::Timeout(_))
        ));
        // The 5-tuple may allocate again.
        c.allocate_signed(AddressFamily::IPV4).await.unwrap();
        assert_eq!(relay.server.shared().allocations_of(&user), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_allocations_and_refuses_the_credential() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    let alice = relay.mint("alice");
    let bob = relay.mint("bob");
    let mut alices = Vec::new();
    for via in [Via::Tcp, Via::Tls, Via::Tcp] {
        let mut c = relay.connect(via).await;
        c.allocate(&alice.username, &alice.password).await.unwrap();
        alices.push((via, c));
    }
    let mut b = relay.connect(Via::Tls).await;
    b.allocate(&bob.username, &bob.password).await.unwrap();
    b.create_permission(echo.addr).await.unwrap();
    assert_eq!(relay.server.shared().allocations_of("alice"), 3);

    relay.server.revoke("alice", unix_now() + 3600);

    for (via, c) in &mut alices {
        c.wait_closed(T)
            .await
            .unwrap_or_else(|e| panic!("{via:?}: alice's connection still open: {e}"));
    }
    let shared = relay.server.shared().clone();
    assert!(eventually(T, || shared.allocations_of("alice") == 0).await);
    // Bob is untouched.
    assert_eq!(b.refresh(600).await.unwrap(), 600);
    b.send_indication(echo.addr, b"still here").await.unwrap();
    assert_eq!(b.recv_data(T).await.unwrap().1, b"still here");
    // Alice's credential is refused from now on, on new connections of either kind.
    for via in [Via::Tcp, Via::Tls] {
        let mut c = relay.connect(via).await;
        assert_eq!(
            code(c.allocate(&alice.username, &alice.password).await),
            401,
            "{via:?}"
        );
    }
    // A fresh credential for the same user is refused too (the user is revoked).
    let again = relay.mint("alice");
    let mut c = relay.connect(Via::Tcp).await;
    assert_eq!(
        code(c.allocate(&again.username, &again.password).await),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_delay_others_and_are_closed() {
    const IDLE: usize = 200;
    let io = relay::io::IoConfig {
        handshake_timeout: Duration::from_secs(2),
        max_connections_per_ip: 1000,
        ..test_io_config()
    };
    let relay = TestRelay::start(core_config(), io, "", "s3cret").await;
    let cred = relay.mint("timing");

    // TLS handshake + 401 + Allocate, best of a few runs (filters scheduler noise on a
    // shared machine without hiding a systematic delay).
    async fn measure(relay: &TestRelay, cred: &auth::Credential, runs: usize) -> Duration {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let t = Instant::now();
            let mut c = relay.connect(Via::Tls).await;
            c.allocate(&cred.username, &cred.password).await.unwrap();
            best = best.min(t.elapsed());
            c.close().await;
        }
        best
    }
    let _warm = measure(&relay, &cred, 1).await;
    let baseline = measure(&relay, &cred, 5).await;

    let stats = relay.server.io_stats().clone();
    let accepted_before = stats.connections_accepted.load(Relaxed);
    let mut idle = Vec::with_capacity(IDLE);
    let opened = Instant::now();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(relay.addr()).await.unwrap());
    }
    // Wait until the relay has accepted all of them (they hold slots, not just backlog).
    assert!(
        eventually(T, || stats.connections_accepted.load(Relaxed)
            >= accepted_before + IDLE as u64)
        .await,
        "relay did not accept the idle connections"
    );
    let loaded = measure(&relay, &cred, 5).await;
    eprintln!("TLS + Allocate: baseline {baseline:?}, with {IDLE} idle connections {loaded:?}");
    assert!(
        opened.elapsed() < Duration::from_millis(1800),
        "measurement overlapped the handshake timeout; result is meaningless"
    );
    // They were really held open during the measurement.
    let still_open = idle
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(
        still_open, IDLE,
        "idle connections closed before the handshake timeout"
    );
    let extra = loaded.saturating_sub(baseline);
    assert!(
        extra < Duration::from_millis(100),
        "{IDLE} idle connections delayed TLS + Allocate by {extra:?} (baseline {baseline:?}, with idle {loaded:?})"
    );

    // Every idle connection is closed by the server after the handshake timeout (2 s).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut n = 0;
        for s in &mut idle {
            let mut b = [0u8; 16];
            use tokio::io::AsyncReadExt;
            match s.read(&mut b).await {
                Ok(0) | Err(_) => n += 1,
                Ok(_) => {}
            }
        }
        n
    })
    .await
    .expect("idle connections still open 5 s after a 2 s handshake timeout");
    assert_eq!(closed, IDLE);
    // The counter is bumped just after the socket is dropped: poll for it.
    assert!(
        eventually(T, || stats.handshake_timeouts.load(Relaxed) >= IDLE as u64).await,
        "handshake timeouts counted: {}",
        stats.handshake_timeouts.load(Relaxed)
    );
    // And the relay still serves.
    let mut c = relay.connect(Via::Tcp).await;
    c.allocate(&cred.username, &cred.password).await.unwrap();
}

/// Starts the whole gateway on loopback with `secrets` and a certificate for
/// [`TEST_SERVER_NAME`]; returns it with the certificate.
async fn start_gateway(secrets: &str, extra: &[&str]) -> (gateway::run::Running, TestCert) {
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let (cert_path, key_path) = cert.write_pem_files();
    let mut args = vec![
        "gateway".to_owned(),
        "--turn-listen".into(),
        "127.0.0.1:0".into(),
        "--gateway-http-addr".into(),
        "127.0.0.1:0".into(),
        "--turn-secret".into(),
        secrets.into(),
        "--turn-host".into(),
        TEST_SERVER_NAME.into(),
        "--tls-cert".into(),
        cert_path.display().to_string(),
        "--tls-key".into(),
        key_path.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = gateway::config::Cli::try_parse_from(args).expect("gateway flags");
    let running = gateway::run::start(cli.settings)
        .await
        .expect("gateway starts");
    let _ = std::fs::remove_dir_all(cert_path.parent().unwrap());
    (running, cert)
}

/// The rotation test's secrets (TURN_SECRET=new,old) and API token.
const NEW: &str = "new-secret-0123456789";
const OLD: &str = "old-secret-0123456789";
const API_TOKEN: &str = "relay-e2e-api-token-0123456789";

/// `GET path` with `Authorization: Bearer API_TOKEN`; (status, body).
async fn authorized_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {API_TOKEN}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(T, run)
        .await
        .expect("in time")
        .expect("HTTP");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_secret_rotation_new_mints_both_verify() {
    let (gw, cert) = start_gateway(
        &format!("{NEW},{OLD}"),
        &["--turn-relay-ip", "127.0.0.1", "--api-token", API_TOKEN],
    )
    .await;
    let addr = gw.relay.local_tcp();
    let now = unix_now();
    let old_cred = auth::SecretRing::parse(OLD)
        .unwrap()
        .mint("old-session", now, 600)
        .unwrap();
    let new_cred = auth::SecretRing::parse(NEW)
        .unwrap()
        .mint("new-session", now, 600)
        .unwrap();
    let foreign = auth::SecretRing::parse("neither")
        .unwrap()
        .mint("x", now, 600)
        .unwrap();
    for via in [Via::Tcp, Via::Tls] {
        for cred in [&old_cred, &new_cred] {
            let mut c = connect(addr, via, &cert.cert_der).await.unwrap();
            c.allocate(&cred.username, &cred.password)
                .await
                .unwrap_or_else(|e| panic!("{via:?} {}: {e}", cred.username));
        }
        let mut c = connect(addr, via, &cert.cert_der).await.unwrap();
        assert_eq!(
            code(c.allocate(&foreign.username, &foreign.password).await),
            401
        );
    }

    // Minting uses "new" only: the REST endpoint ...
    let (status, body) = authorized_get(
        gw.http_addr,
        "/api/v1/turn/credentials?service=turn&username=rest-user",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let username = doc["username"].as_str().unwrap();
    let password = doc["password"].as_str().unwrap();
    assert!(username.ends_with(":rest-user"), "{username}");
    assert_eq!(password, rest_password(NEW, username));
    assert_ne!(password, rest_password(OLD, username));
    assert!(doc["ttl"].as_u64().unwrap() > 0);
    // ... and the application's own minting.
    let minted = gw.app.mint("app-user").unwrap();
    assert_eq!(minted.password, rest_password(NEW, &minted.username));
    // Both allocate.
    let mut c = connect(addr, Via::Tls, &cert.cert_der).await.unwrap();
    c.allocate(username, password).await.unwrap();
    let mut c = connect(addr, Via::Tcp, &cert.cert_der).await.unwrap();
    c.allocate(&minted.username, &minted.password)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_on_the_turn_port_is_handed_off() {
    let (gw, cert) = start_gateway("s3cret-0123456789abcdef", &[]).await;
    let addr = gw.relay.local_tcp();

    // Plain HTTP.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (status, body) = http_get(tcp, "localhost", "/health", T).await.unwrap();
    assert_eq!(status, 200, "plain HTTP on the TURN port: {body}");
    assert!(body.contains("\"ok\""), "{body}");

    // HTTPS without ALPN: the first plaintext bytes decide.
    let tls = connect_tls_stream(addr, TEST_SERVER_NAME, &cert.cert_der, &[], T)
        .await
        .unwrap();
    let (status, body) = http_get(tls, TEST_SERVER_NAME, "/health", T).await.unwrap();
    assert_eq!(status, 200, "HTTPS (no ALPN) on the TURN port: {body}");
    assert!(body.contains("\"ok\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn_on_the_turn_port_is_handed_off() {
    let (gw, cert) =
        start_gateway("s3cret-0123456789abcdef", &["--turn-relay-ip", "127.0.0.1"]).await;
    let addr = gw.relay.local_tcp();
    let tls = connect_tls_stream(addr, TEST_SERVER_NAME, &cert.cert_der, &[b"http/1.1"], T)
        .await
        .unwrap();
    let (status, body) = http_get(tls, TEST_SERVER_NAME, "/health", T).await.unwrap();
    assert_eq!(
        status, 200,
        "HTTPS (ALPN http/1.1) on the TURN port: {body}"
    );
    assert!(body.contains("\"ok\""), "{body}");
    assert!(gw.relay.io_stats().http_handoffs.load(Relaxed) >= 1);

    // TURN still works on the same port, over TCP and both TLS flavours.
    let cred = gw.app.mint("same-port").unwrap();
    for via in Via::ALL {
        let mut c: TurnClient = connect(addr, via, &cert.cert_der).await.unwrap();
        c.allocate(&cred.username, &cred.password).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_default_relayed_address_is_concrete() {
    let (gw, cert) = start_gateway("s3cret-0123456789abcdef", &[]).await;
    let cred = gw.app.mint("relay-ip").unwrap();
    for via in [Via::Tcp, Via::Tls] {
        let mut c = connect(gw.relay.local_tcp(), via, &cert.cert_der)
            .await
            .unwrap();
        let a = c.allocate(&cred.username, &cred.password).await.unwrap();
        assert!(
            !a.relayed.ip().is_unspecified(),
            "{via:?}: XOR-RELAYED-ADDRESS {} is the wildcard address",
            a.relayed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_data_needs_a_permission_for_its_ip() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    // Another loopback IP (Linux routes all of 127/8 to lo).
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let same_ip = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for via in [Via::Tcp, Via::Tls] {
        let cred = relay.mint("perm");
        let mut c = relay.connect(via).await;
        let a = c.allocate(&cred.username, &cred.password).await.unwrap();
        // No permission yet: nothing from anyone gets through.
        same_ip.send_to(b"early", a.relayed).await.unwrap();
        assert!(matches!(
            c.recv_data(Duration::from_millis(200)).await,
            Err(ClientError::Timeout(_))
        ));
        c.create_permission(echo.addr).await.unwrap();
        // Permissions are per IP: another port of 127.0.0.1 gets through ...
        same_ip.send_to(b"same ip", a.relayed).await.unwrap();
        let (from, data) = c.recv_data(T).await.unwrap();
        assert_eq!(from, Origin::Peer(same_ip.local_addr().unwrap()), "{via:?}");
        assert_eq!(data, b"same ip");
        // ... 127.0.0.2 does not.
        stranger.send_to(b"stranger", a.relayed).await.unwrap();
        assert!(matches!(
            c.recv_data(Duration::from_millis(200)).await,
            Err(ClientError::Timeout(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_expires_without_refresh() {
    let core = relay::core::Config {
        default_lifetime: Duration::from_secs(1),
        max_lifetime: Duration::from_secs(1),
        ..core_config()
    };
    let relay = TestRelay::start(core, test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    let cred = relay.mint("expiry");
    let mut clients = Vec::new();
    for via in [Via::Tcp, Via::Tls] {
        let mut c = relay.connect(via).await;
        let a = c.allocate(&cred.username, &cred.password).await.unwrap();
        assert_eq!(a.lifetime, 1, "{via:?}: lifetime clamped to max_lifetime");
        clients.push((via, c));
    }
    let shared = relay.server.shared().clone();
    assert!(
        eventually(T, || shared.allocations_of("expiry") == 0).await,
        "allocations did not expire"
    );
    for (via, c) in &mut clients {
        assert_eq!(code(c.create_permission(echo.addr).await), 437, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_and_fragmented_writes_are_framed() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let echo = UdpEcho::start(localhost()).await.unwrap();
    for via in [Via::Tcp, Via::Tls] {
        let cred = relay.mint("framing");
        let mut c = relay.connect(via).await;
        c.allocate(&cred.username, &cred.password).await.unwrap();
        c.channel_bind(0x4123, echo.addr).await.unwrap();
        // A second Allocate on the same 5-tuple is a mismatch.
        assert_eq!(code(c.allocate_signed(AddressFamily::IPV4).await), 437);

        // Three ChannelData messages (odd sizes, padded) in one write.
        let mut wire = Vec::new();
        for p in [&b"a"[..], b"bb", b"ccc"] {
            relay::framer::write_channel_data(&mut wire, 0x4123, p, true);
        }
        c.send_raw(&wire).await.unwrap();
        for p in [&b"a"[..], b"bb", b"ccc"] {
            let (from, data) = c.recv_data(T).await.unwrap();
            assert_eq!(
                (from, data.as_slice()),
                (Origin::Channel(0x4123), p),
                "{via:?}"
            );
        }

        // A signed Refresh written one byte at a time, then a ChannelData split in two.
        let req = c
            .build_request(
                turn_types::message::REFRESH,
                &[Attr::Lifetime(600)],
                Auth::LongTerm,
            )
            .unwrap();
        for b in &req.bytes {
            c.send_raw(std::slice::from_ref(b)).await.unwrap();
        }
        let mut cd = Vec::new();
        relay::framer::write_channel_data(&mut cd, 0x4123, b"split payload", true);
        let (x, y) = cd.split_at(7);
        c.send_raw(x).await.unwrap();
        c.send_raw(y).await.unwrap();
        let (from, data) = c.recv_data(T).await.unwrap();
        assert_eq!(
            (from, data.as_slice()),
            (Origin::Channel(0x4123), &b"split payload"[..]),
            "{via:?}"
        );
        // The Refresh response arrived before the data and was skipped by recv_data;
        // the connection is still in sync: a normal request works.
        assert_eq!(c.refresh(600).await.unwrap(), 600, "{via:?}");
    }
}

/// A burst from a peer that queues up on the relay socket before the connection's task
/// runs is relayed whole: the task takes datagrams in batches, and a datagram taken at a
/// batch's end must be handled, not dropped (it was, once per 64, which cost about 1 % of
/// the echoes of one busy allocation).
#[tokio::test(flavor = "current_thread")]
async fn peer_burst_larger_than_a_batch_is_relayed_whole() {
    const BURST: u16 = 150;
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cred = relay.mint("burst");
    let mut c = relay.connect(Via::Tcp).await;
    let a = c.allocate(&cred.username, &cred.password).await.unwrap();
    let ch = 0x4001;
    c.channel_bind(ch, peer.local_addr().unwrap())
        .await
        .unwrap();
    // One datagram out first, so the relay's socket is bound and the peer knows it.
    c.send_channel_data(ch, b"hello").await.unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = tokio::time::timeout(T, peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, a.relayed);
    // The whole burst is queued before this (single-threaded) runtime lets the relay's
    // task run again: no await between the sends.
    for i in 0..BURST {
        peer.try_send_to(&i.to_be_bytes(), a.relayed).unwrap();
    }
    for i in 0..BURST {
        let (from, data) = c
            .recv_data(T)
            .await
            .unwrap_or_else(|e| panic!("datagram {i} of {BURST}: {e:?}"));
        assert_eq!(from, Origin::Channel(ch));
        assert_eq!(data, i.to_be_bytes(), "datagram {i} of {BURST}");
    }
}

/// A client's burst of ChannelData, arriving in one read, reaches its peers exactly as
/// sent: the relay sends runs of equal-size datagrams to one peer in one `sendmsg`
/// (UDP segmentation offload), and runs end at a peer change, a size change, after a
/// shorter datagram and at the kernel's limits. Every datagram arrives whole, once, and
/// in order per peer.
#[tokio::test]
async fn client_burst_reaches_each_peer_as_separate_datagrams_in_order() {
    let relay = TestRelay::start(core_config(), test_io_config(), "127.0.0.1", "s3cret").await;
    let peer_a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cred = relay.mint("gso");
    let mut c = relay.connect(Via::Tcp).await;
    c.allocate(&cred.username, &cred.password).await.unwrap();
    let (ch_a, ch_b) = (0x4001, 0x4002);
    c.channel_bind(ch_a, peer_a.local_addr().unwrap())
        .await
        .unwrap();
    c.channel_bind(ch_b, peer_b.local_addr().unwrap())
        .await
        .unwrap();
    // Sizes per peer: long equal runs (past 64 segments and past 64 KiB), a short
    // datagram inside a run, a longer one right after a run, odd lengths (stream padding).
    let mut plan: Vec<(u16, usize)> = Vec::new();
    plan.extend((0..70).map(|_| (ch_a, 1200)));
    plan.extend([
        (ch_a, 300),
        (ch_a, 1200),
        (ch_b, 1201),
        (ch_b, 1201),
        (ch_a, 1200),
    ]);
    plan.extend((0..60).map(|_| (ch_b, 1400)));
    plan.extend([
        (ch_b, 17),
        (ch_a, 1000),
        (ch_a, 1000),
        (ch_a, 1200),
        (ch_a, 1),
    ]);
    let mut wire = Vec::new();
    let mut expect: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (i, &(ch, len)) in plan.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|k| (i * 7 + k) as u8).collect();
        relay::framer::write_channel_data(&mut wire, ch, &data, true);
        expect[usize::from(ch == ch_b)].push(data);
    }
    c.send_raw(&wire).await.unwrap();
    let mut buf = vec![0u8; 2048];
    for (peer, want) in [(&peer_a, &expect[0]), (&peer_b, &expect[1])] {
        for (i, d) in want.iter().enumerate() {
            let (n, _) = tokio::time::timeout(T, peer.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("datagram {i} of {} never came", want.len()))
                .unwrap();
            assert_eq!(&buf[..n], &d[..], "datagram {i} of {}", want.len());
        }
    }
}

/// A TCP connection that never authenticates is closed after the unauthenticated timeout
/// even though it keeps busy (a Binding request and an unsigned Allocate every 100 ms, each
/// answered); an authenticated connection opened at the same time stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_closed_even_when_busy() {
    let io = relay::io::IoConfig {
        unauthenticated_timeout: Duration::from_secs(1),
        ..test_io_config()
    };
    let relay = TestRelay::start(core_config(), io, "", "s3cret").await;
    let stats = relay.server.io_stats().clone();
    let cred = relay.mint("patient");
    let mut good = relay.connect(Via::Tcp).await;
    good.allocate(&cred.username, &cred.password).await.unwrap();
    let mut busy = relay.connect(Via::Tcp).await;
    let opened = Instant::now();
    let mut answered = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let closed_after = loop {
        tick.tick().await;
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "an unauthenticated connection still open after 5 s ({answered} answers)"
        );
        let r = if answered % 2 == 0 {
            busy.transact(stun_types::message::BINDING, &[], Auth::None)
                .await
        } else {
            busy.allocate_unauthenticated(AddressFamily::IPV4).await
        };
        match r {
            Ok(_) => answered += 1,
            Err(e) if e.is_disconnect() => break opened.elapsed(),
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    };
    assert!(
        answered >= 5,
        "only {answered} requests answered before the close"
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}, before the 1 s timeout"
    );
    assert!(
        eventually(T, || stats.unauthenticated_timeouts.load(Relaxed) == 1).await,
        "unauthenticated timeouts counted: {}",
        stats.unauthenticated_timeouts.load(Relaxed)
    );
    // The authenticated connection, older than the timeout, still works.
    assert!(opened.elapsed() > Duration::from_secs(1));
    good.refresh(600).await.unwrap();
}

/// Sends `req` from `sock` to `to` and returns the answer with the same transaction id
/// (three tries of 2 s: UDP).
async fn udp_transact(sock: &tokio::net::UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    let tid = stun_types::message::Message::from_bytes(req)
        .unwrap()
        .transaction_id();
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        sock.send_to(req, to).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        {
            let got = buf[..n].to_vec();
            if stun_types::message::Message::from_bytes(&got)
                .is_ok_and(|m| m.transaction_id() == tid)
            {
                return got;
            }
        }
    }
    panic!("no answer over UDP from {to}")
}

/// The UDP listener parses before it allocates: datagrams from new sources that are not
/// STUN requests (junk, indications, responses, ChannelData, truncated requests) create no
/// client and are counted as bad input; STUN requests from one address make clients only
/// up to the per-source cap, the rest are refused; and a real client from another address
/// still gets its Binding answered and allocates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_garbage_creates_no_clients_and_sources_are_capped() {
    use relay::core::BadInput;
    use stun_types::attribute::XorMappedAddress;
    use stun_types::message::{Message, MessageWriteVec, BINDING};
    use stun_types::prelude::*;

    const CAP: u32 = 20;
    let io = relay::io::IoConfig {
        udp_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        max_connections_per_ip: CAP,
        ..test_io_config()
    };
    let relay = TestRelay::start(core_config(), io, "127.0.0.1", "s3cret").await;
    let udp = relay.server.local_udp().unwrap();
    let stats = relay.server.io_stats().clone();
    let shared = relay.server.shared().clone();
    let not_stun = || shared.stats().bad_input(BadInput::UdpNotStun);

    let header = |mtype: u16, len: u16, body: usize| {
        let mut d = Vec::new();
        d.extend_from_slice(&mtype.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        d.extend_from_slice(&[5; 12]);
        d.resize(20 + body, 0);
        d
    };
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4],
        header(0x0011, 0, 0),                     // Binding indication
        header(0x0101, 0, 0),                     // Binding success response
        header(0x0001, 8, 0),                     // a request shorter than its length
        vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], // ChannelData
    ];
    // 200 source ports, 10 datagrams each, in batches the listener is let to catch up with
    // (so the kernel's receive buffer does not drop any).
    let mut sent = 0u64;
    for _ in 0..20 {
        let mut batch = Vec::new();
        for _ in 0..10 {
            batch.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        for (i, s) in batch.iter().enumerate() {
            for k in 0..10 {
                s.send_to(&garbage[(i + k) % garbage.len()], udp)
                    .await
                    .unwrap();
                sent += 1;
            }
        }
        assert!(
            eventually(T, || not_stun() >= sent).await,
            "bad input counted {} of {sent}",
            not_stun()
        );
    }
    assert_eq!(not_stun(), 2_000);
    assert_eq!(stats.udp_clients.load(Relaxed), 0, "garbage made clients");

    // Binding requests from 2 x CAP source ports of one address: CAP clients, CAP refused.
    let refused_before = stats.connections_refused.load(Relaxed);
    let mut probes = Vec::new();
    for _ in 0..2 * CAP {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        s.send_to(&req, udp).await.unwrap();
        probes.push(s);
        assert!(
            eventually(T, || stats.udp_clients.load(Relaxed)
                + stats.connections_refused.load(Relaxed)
                - refused_before
                == probes.len() as u64)
            .await,
            "request {} neither made a client nor was refused",
            probes.len()
        );
    }
    assert_eq!(stats.udp_clients.load(Relaxed), u64::from(CAP));
    assert_eq!(
        stats.connections_refused.load(Relaxed) - refused_before,
        u64::from(CAP)
    );

    // A real client from another address: Binding, then 401 and a signed Allocate.
    let c = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let me = c.local_addr().unwrap();
    let req = Message::builder_request(BINDING, MessageWriteVec::new());
    let tid = req.transaction_id();
    let r = udp_transact(&c, udp, &req.finish()).await;
    let m = Message::from_bytes(&r).unwrap();
    assert_eq!(m.attribute::<XorMappedAddress>().unwrap().addr(tid), me);
    let cred = relay.mint("udp-user");
    // The one TURN client's sans-I/O session, its bytes carried in datagrams.
    let mut session = relay::client::Session::with_credentials(&cred.username, &cred.password);
    let attrs = [Attr::RequestedTransport(17)];
    let out = session.request(ALLOCATE, &attrs, Auth::None).unwrap();
    let r = udp_transact(&c, udp, &out.bytes).await;
    let reply = match session.receive(Frame::Stun(&r), Some(&out)).unwrap() {
        Received::Reply(reply) => reply,
        other => panic!("no response to the Allocate: {other:?}"),
    };
    assert_eq!(reply.error().map(|e| e.code), Some(401));
    assert!(matches!(session.after(Auth::None, reply, 0), Step::Retry));
    let out = session.request(ALLOCATE, &attrs, Auth::LongTerm).unwrap();
    let r = udp_transact(&c, udp, &out.bytes).await;
    let relayed = match session.receive(Frame::Stun(&r), Some(&out)).unwrap() {
        Received::Reply(reply) => reply
            .relayed()
            .unwrap_or_else(|| panic!("Allocate over UDP failed: {}", reply.message())),
        other => panic!("no response to the Allocate: {other:?}"),
    };
    assert_eq!(relayed.ip(), localhost());
    assert_eq!(stats.udp_clients.load(Relaxed), u64::from(CAP) + 1);
}

/// A TCP connection from `from` to `to` that sends the first bytes of a TLS ClientHello (a
/// record header announcing 512 bytes, then one byte of them) and stalls: the server waits
/// for the rest until its handshake timeout.
async fn stalled_client_hello(from: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from, 0))
        .expect("bind a loopback source");
    let mut s = sock.connect(to).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("send a partial ClientHello");
    s
}

/// Whether the server closed `s` (EOF or reset) within `wait`.
async fn closed_by_server(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// TLS handshakes in flight are bounded per source address and in all (issue 14): many
/// stalled ClientHellos from one address hold only that address's share, so a handshake
/// from another address still completes; once every share is taken, the next one is
/// closed before its handshake and counted; and the budget comes back when they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_budget_per_address_and_in_all() {
    const PER_IP: u32 = 4;
    const TOTAL: u32 = 12;
    const STALLED: usize = 40;
    let io = relay::io::IoConfig {
        handshake_timeout: Duration::from_secs(20),
        max_connections_per_ip: 1000,
        max_tls_handshakes_per_ip: PER_IP,
        max_tls_handshakes: TOTAL,
        ..test_io_config()
    };
    let relay = TestRelay::start(core_config(), io, "", "s3cret").await;
    let stats = relay.server.io_stats().clone();
    let budget = relay.server.tls_handshakes().clone();
    let cred = relay.mint("budget");
    let ip = |d: u8| IpAddr::from([127, 0, 0, d]);

    // 40 stalled ClientHellos from 127.0.0.2: 4 are in their handshake, 36 closed at once.
    let mut hog = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        hog.push(stalled_client_hello(ip(2), relay.addr()).await);
    }
    let over = (STALLED - PER_IP as usize) as u64;
    assert!(
        eventually(T, || stats.tls_handshakes_refused.load(Relaxed) >= over).await,
        "refused {} of {STALLED} stalled handshakes from one address",
        stats.tls_handshakes_refused.load(Relaxed)
    );
    assert_eq!(stats.tls_handshakes_refused.load(Relaxed), over);
    assert_eq!(budget.open(), PER_IP);
    let mut closed = 0;
    for s in &mut hog {
        closed += usize::from(closed_by_server(s, Duration::from_millis(300)).await);
    }
    assert_eq!(
        closed,
        STALLED - PER_IP as usize,
        "over-budget connections closed"
    );

    // Another address (127.0.0.1) completes its handshake and allocates.
    let mut c = relay.connect(Via::Tls).await;
    c.allocate(&cred.username, &cred.password).await.unwrap();
    c.close().await;

    // Two more addresses take the rest of the total budget...
    let mut fill = Vec::new();
    for d in [3, 4] {
        for _ in 0..PER_IP {
            fill.push(stalled_client_hello(ip(d), relay.addr()).await);
        }
    }
    assert!(
        eventually(T, || budget.open() == TOTAL).await,
        "handshakes in flight: {}",
        budget.open()
    );
    // ... so a handshake from a fresh address is closed before it starts, and counted.
    let before = stats.tls_handshakes_refused.load(Relaxed);
    let refused = connect(relay.addr(), Via::Tls, &relay.cert.cert_der).await;
    assert!(
        refused.is_err(),
        "a handshake over the total budget completed"
    );
    assert_eq!(stats.tls_handshakes_refused.load(Relaxed), before + 1);

    // The hog goes away: its handshakes fail, the budget is back.
    drop(hog);
    assert!(
        eventually(T, || budget.open() == 2 * PER_IP).await,
        "handshakes in flight after the hog left: {}",
        budget.open()
    );
    let mut c = relay.connect(Via::Tls).await;
    c.allocate(&cred.username, &cred.password).await.unwrap();
    drop(fill);
    assert!(eventually(T, || budget.open() == 0).await);
}
