//! Relay-only media end to end: the whole gateway started in-process on loopback, a str0m
//! client in the browser role whose only ICE candidate is a relayed one on the embedded
//! relay (TURN over TLS, our test TURN client), H.264 of the test pattern received and
//! decoded; and the in-process short-circuit proven by the relay's counters: media crosses
//! between allocation and media engine without any relay UDP socket.
//!
//! ```text
//! str0m client ──ChannelData over TLS──▶ relay ──in-process──▶ media engine (str0m, ICE-lite)
//!              ◀─────────────────────── relay ◀──in-process──
//! ```
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gateway_tests::peer::{candidates, decoded_size, relay_only_client, RelayedPeer};
use gateway_tests::{ClientError, Origin, TestCert, TurnClient, UdpEcho, TEST_SERVER_NAME};
use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "relay-only-media-test-secret";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Bound on every HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on receiving the frames (the debug-build encoder is slow on a shared 2-core box).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);
/// First channel number we bind (RFC 8656: 0x4000..=0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;

/// A gateway started in-process, and the certificate it serves (the client's trust anchor).
struct Gateway {
    running: gateway::run::Running,
    cert: TestCert,
}

/// Starts the whole gateway on loopback: TURN (TCP+TLS) and plain HTTP on OS-chosen ports,
/// media on 127.0.0.1, a test certificate for [`TEST_SERVER_NAME`] written into the turns:
/// URLs, relay ports reserved from `relay_ports`, plus `extra` flags.
async fn start_gateway(relay_ports: &str, extra: &[&str]) -> Gateway {
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let (cert_path, key_path) = cert.write_pem_files();
    let cert_path = cert_path.to_str().expect("utf-8 temp path").to_owned();
    let key_path = key_path.to_str().expect("utf-8 temp path").to_owned();
    let mut args = vec![
        "gateway",
        "--turn-listen",
        "127.0.0.1:0",
        "--gateway-http-addr",
        "127.0.0.1:0",
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--turn-host",
        TEST_SERVER_NAME,
        "--turn-secret",
        SECRET,
        "--tls-cert",
        &cert_path,
        "--tls-key",
        &key_path,
        "--turn-relay-ip",
        "127.0.0.1",
        // With a range, a relayed address is reserved at Allocate and its socket bound only
        // for a peer that is not our media. Without one the relay binds at Allocate time
        // (to learn an OS-chosen port), so every allocation would count a socket.
        "--turn-relay-ports",
        relay_ports,
        "--media-source",
        "testsrc",
    ];
    args.extend_from_slice(extra);
    let cli = <gateway::config::Cli as clap::Parser>::try_parse_from(args).expect("flags parse");
    let running = gateway::run::start(cli.settings)
        .await
        .expect("gateway starts");
    Gateway { running, cert }
}

/// One HTTP/1.1 request to `addr` (`Connection: close`), bounded by [`HTTP_TIMEOUT`];
/// returns the status and the body parsed as JSON.
async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = tokio::time::timeout(HTTP_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no complete response in {HTTP_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no end of headers in {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let len = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let body = match len {
        Some(n) => rest.get(..n).unwrap_or(rest),
        None => rest,
    };
    let json = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {body:?}"));
    (status, json)
}

/// What `GET /api/v1/webrtc/config` hands a new viewer: its session id and the embedded
/// relay's `turns:` URL with the credential minted for that session.
struct ViewerConfig {
    session_id: String,
    turns_host: String,
    turns_port: u16,
    username: String,
    credential: String,
}

async fn webrtc_config(gw: &Gateway) -> ViewerConfig {
    let (status, cfg) = http_json(gw.running.http_addr, "GET", "/api/v1/webrtc/config", None).await;
    assert_eq!(status, 200, "webrtc/config: {cfg}");
    let session_id = cfg["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionId in {cfg}"))
        .to_owned();
    let servers = cfg["iceServers"]
        .as_array()
        .unwrap_or_else(|| panic!("no iceServers in {cfg}"));
    // The embedded relay's entry: the one listing a turns: URL for our TURN_HOST.
    let (url, server) = servers
        .iter()
        .find_map(|s| {
            let urls = match &s["urls"] {
                Value::String(u) => vec![u.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            urls.into_iter()
                .find(|u| u.starts_with(&format!("turns:{TEST_SERVER_NAME}:")))
                .map(|u| (u.to_owned(), s))
        })
        .unwrap_or_else(|| panic!("no turns:{TEST_SERVER_NAME} URL in {cfg}"));
    // turns:HOST:PORT?transport=tcp
    let (host, port) = gateway::ice_url::strip_scheme(&url, gateway::ice_url::Scheme::Turns)
        .and_then(|rest| gateway::ice_url::host_port(rest, 443))
        .expect("turns:HOST:PORT URL");
    assert!(url.ends_with("?transport=tcp"), "{url}");
    let username = server["username"].as_str().expect("username").to_owned();
    let credential = server["credential"]
        .as_str()
        .expect("credential")
        .to_owned();
    // The REST username names the session: "<unix-expiry>:<session-id>".
    let (expiry, user) = username.split_once(':').expect("expiry:session");
    assert_eq!(user, session_id, "credential minted for this session");
    assert!(expiry.parse::<u64>().expect("numeric expiry") > gateway_tests::unix_now());
    assert_eq!(
        gateway_tests::rest_password(SECRET, &username),
        credential,
        "credential is the REST password under TURN_SECRET"
    );
    ViewerConfig {
        session_id,
        turns_host: host,
        turns_port: port,
        username,
        credential,
    }
}

/// Connects to the relay the way a browser follows the `turns:` URL: TLS, checking the
/// certificate for the URL's host name, which the test resolves to the relay's loopback
/// address.
async fn connect_turns(gw: &Gateway, cfg: &ViewerConfig) -> TurnClient {
    assert_eq!(cfg.turns_host, TEST_SERVER_NAME, "TURN_HOST is in the URL");
    let relay = gw.running.relay.local_tcp();
    // TURN_LISTEN 127.0.0.1:0 lets the OS choose the port; the URL is built from the
    // configured port, so it may say 0 here. Any other port must be the bound one.
    if cfg.turns_port != 0 {
        assert_eq!(
            cfg.turns_port,
            relay.port(),
            "the URL names the relay's port"
        );
    }
    // "DNS": turn.test → 127.0.0.1.
    let addr = SocketAddr::new(LOOPBACK, relay.port());
    TurnClient::connect_tls(addr, &cfg.turns_host, &gw.cert.cert_der)
        .await
        .unwrap_or_else(|e| panic!("TLS to the relay at {addr}: {e}"))
}

struct Counters {
    to_media: u64,
    from_media: u64,
    sockets: u64,
}

fn counters(gw: &Gateway) -> Counters {
    let s = gw.running.relay.io_stats();
    Counters {
        to_media: s.inprocess_to_media_packets.load(Relaxed),
        from_media: s.inprocess_from_media_packets.load(Relaxed),
        sockets: s.relay_sockets_opened.load(Relaxed),
    }
}

/// Acceptance (1) and (6): a relay-only viewer over TURN/TLS gets decodable H.264 of the
/// test pattern, and its media crosses the relay in-process, without a relay socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_viewer_decodes_h264_through_the_in_process_short_circuit() {
    let gw = start_gateway("42000-42999", &[]).await;
    let media_addrs = gw
        .running
        .media
        .as_ref()
        .expect("media mode")
        .candidate_addrs()
        .to_vec();

    // Signaling: a session and its ICE servers.
    let cfg = webrtc_config(&gw).await;

    // TURN over TLS: allocate with the session's credential.
    let mut turn = connect_turns(&gw, &cfg).await;
    let turn_local = turn.local_addr();
    let alloc = turn
        .allocate(&cfg.username, &cfg.credential)
        .await
        .expect("Allocate with the minted credential");
    assert_eq!(alloc.relayed.ip(), LOOPBACK, "relayed on TURN_RELAY_IP");
    assert_eq!(
        counters(&gw).sockets,
        0,
        "Allocate reserves the relayed address without binding a socket"
    );

    // The browser offers with only its relayed candidate.
    let (rtc, offer, pending) = relay_only_client(alloc.relayed, turn_local, true);
    let offered = candidates(&offer);
    assert!(
        !offered.is_empty() && offered.iter().all(|(_, t)| t == "relay"),
        "the client offers relay candidates only: {offered:?}"
    );
    let body = serde_json::json!({ "webrtc_id": cfg.session_id, "sdp": offer, "type": "offer" });
    let (status, answer) = http_json(
        gw.running.http_addr,
        "POST",
        "/api/v1/projects/x/offer",
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "offer: {answer}");
    assert_eq!(answer["type"], "answer", "{answer}");
    let answer_sdp = answer["sdp"].as_str().expect("answer sdp").to_owned();

    // The answer's candidates are the media engine's host candidates, not the relay's.
    let remote = candidates(&answer_sdp);
    assert!(!remote.is_empty(), "answer has candidates: {answer_sdp}");
    for (addr, typ) in &remote {
        assert_eq!(typ, "host", "{answer_sdp}");
        assert!(
            media_addrs.contains(addr),
            "answer candidate {addr} is one of the media engine's {media_addrs:?}"
        );
        assert_ne!(addr.port(), gw.running.relay.local_tcp().port());
        assert_ne!(*addr, alloc.relayed);
    }

    let mut peer = RelayedPeer::new(rtc, turn, alloc.relayed);
    peer.rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer_sdp).expect("answer parses"),
        )
        .expect("answer applies");
    for (addr, _) in &remote {
        peer.bind(*addr).await;
    }

    // Media: at least 10 frames within the bound.
    let got = peer.pump(MEDIA_TIMEOUT, |p| p.frames.len() >= 10).await;
    assert!(peer.ice_connected, "ICE connected through the relay");
    assert!(peer.dtls_connected, "DTLS connected through the relay");
    assert!(
        got,
        "expected >= 10 H.264 frames in {MEDIA_TIMEOUT:?}, got {}",
        peer.frames.len()
    );
    assert!(
        peer.frames[0].0,
        "the first frame a viewer gets is a keyframe"
    );
    assert_eq!(
        decoded_size(&peer.frames),
        Some((640, 480)),
        "the test pattern decodes at its default size"
    );
    assert_eq!(
        peer.unbound_sends, 0,
        "every transmit went on a bound channel"
    );

    // The short-circuit carried it: both counters moved, no relay socket exists.
    let first = counters(&gw);
    assert!(first.to_media > 0, "client → media went in-process");
    assert!(first.from_media > 0, "media → client went in-process");
    assert_eq!(
        first.sockets, 0,
        "no relay UDP socket for a relay-only session"
    );

    // And they keep moving while media flows.
    let stats = gw.running.relay.io_stats().clone();
    let frames_before = peer.frames.len();
    let grew = peer
        .pump(MEDIA_TIMEOUT, |p| {
            p.frames.len() > frames_before
                && stats.inprocess_to_media_packets.load(Relaxed) > first.to_media
                && stats.inprocess_from_media_packets.load(Relaxed) > first.from_media
        })
        .await;
    let second = counters(&gw);
    assert!(
        grew,
        "in-process counters grow while media flows: to_media {} → {}, from_media {} → {}, \
         frames {frames_before} → {}",
        first.to_media,
        second.to_media,
        first.from_media,
        second.from_media,
        peer.frames.len()
    );
    assert_eq!(second.sockets, 0, "still no relay UDP socket");
}

/// The counter can move: next to an allocation that talks to our media in-process, an
/// allocation that talks to a real UDP peer (allowed by TURN_ALLOWED_PEERS) opens exactly
/// one relay socket, and data flows through it both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_with_a_real_peer_opens_a_relay_socket() {
    let gw = start_gateway("43000-43999", &["--turn-allowed-peers", "127.0.0.1"]).await;
    let media = gw
        .running
        .media
        .as_ref()
        .expect("media mode")
        .candidate_addrs()[0];
    let echo = UdpEcho::start(LOOPBACK).await.expect("echo peer");
    let cfg = webrtc_config(&gw).await;

    // First allocation: its peer is our media, so its datagrams go in-process.
    let mut to_media = connect_turns(&gw, &cfg).await;
    to_media
        .allocate(&cfg.username, &cfg.credential)
        .await
        .expect("first Allocate");
    to_media
        .create_permission(media)
        .await
        .expect("permission for the media address");
    let before = counters(&gw);
    to_media
        .send_indication(media, b"not a STUN message, dropped by the engine")
        .await
        .expect("Send to media");
    let stats = gw.running.relay.io_stats().clone();
    assert!(
        gateway_tests::eventually(Duration::from_secs(5), || {
            stats.inprocess_to_media_packets.load(Relaxed) > before.to_media
        })
        .await,
        "the datagram for our media went in-process"
    );
    assert_eq!(
        counters(&gw).sockets,
        0,
        "the short-circuit opened no socket"
    );

    // Second allocation: its peer is a real socket on 127.0.0.1.
    let mut to_echo = connect_turns(&gw, &cfg).await;
    let alloc = to_echo
        .allocate(&cfg.username, &cfg.credential)
        .await
        .expect("second Allocate");
    to_echo
        .create_permission(echo.addr)
        .await
        .expect("permission for the allowed echo peer");
    assert_eq!(counters(&gw).sockets, 0, "permission alone binds nothing");
    to_echo
        .send_indication(echo.addr, b"ping")
        .await
        .expect("Send to echo");
    let stats = gw.running.relay.io_stats().clone();
    assert!(
        gateway_tests::eventually(Duration::from_secs(5), || {
            stats.relay_sockets_opened.load(Relaxed) == 1
        })
        .await,
        "the first Send to a real peer binds the allocation's relay socket"
    );

    // The socket carries data both ways. The first datagram is currently lost (see
    // `first_datagram_to_a_real_peer_is_relayed`), so resend until the echo is back: each
    // wait is bounded, and so is the number of tries.
    let mut echoed = None;
    for _ in 0..10 {
        match to_echo.recv_data(Duration::from_millis(500)).await {
            Ok(d) => {
                echoed = Some(d);
                break;
            }
            Err(ClientError::Timeout(_)) => to_echo
                .send_indication(echo.addr, b"ping")
                .await
                .expect("Send to echo"),
            Err(e) => panic!("relay connection failed: {e}"),
        }
    }
    let (origin, data) = echoed.unwrap_or_else(|| {
        panic!(
            "no echo through the relay socket (echo received {}, relay sockets opened {})",
            echo.received.load(std::sync::atomic::Ordering::SeqCst),
            counters(&gw).sockets
        )
    });
    assert_eq!(origin, Origin::Peer(echo.addr));
    assert_eq!(data, b"ping");
    let after = counters(&gw);
    assert_eq!(
        after.sockets, 1,
        "exactly one relay socket, for the allocation {} with a real peer",
        alloc.relayed
    );
    assert_eq!(
        after.from_media, before.from_media,
        "the echo did not go through the in-process path"
    );
}

/// The datagram that makes the relay bind an allocation's socket (lazily, at the first Send
/// to a real peer) must itself be relayed.
/// (tokio's `try_send_to` on a socket its reactor has not polled yet reports `WouldBlock`,
/// so the relay sends through a std handle of the same socket.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_datagram_to_a_real_peer_is_relayed() {
    let gw = start_gateway("44000-44999", &["--turn-allowed-peers", "127.0.0.1"]).await;
    let echo = UdpEcho::start(LOOPBACK).await.expect("echo peer");
    let cfg = webrtc_config(&gw).await;
    let mut turn = connect_turns(&gw, &cfg).await;
    turn.allocate(&cfg.username, &cfg.credential)
        .await
        .expect("Allocate");
    turn.create_permission(echo.addr)
        .await
        .expect("permission for the allowed echo peer");
    turn.send_indication(echo.addr, b"first")
        .await
        .expect("Send to echo");
    let got = turn.recv_data(Duration::from_secs(5)).await;
    assert!(
        matches!(&got, Ok((Origin::Peer(p), d)) if *p == echo.addr && d == b"first"),
        "the first datagram comes back: {got:?} (echo received {}, relay sockets opened {})",
        echo.received.load(std::sync::atomic::Ordering::SeqCst),
        counters(&gw).sockets
    );
}

/// [`http_json`] from a chosen loopback source address (per-source bounds).
async fn http_json_from(src: Ipv4Addr, addr: SocketAddr, method: &str, path: &str) -> u16 {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = tokio::time::timeout(HTTP_TIMEOUT, async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        let mut s = sock.connect(addr).await?;
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    })
    .await
    .expect("bounded")
    .expect("request");
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The Geti UI's client as it ships: it ignores `sessionId` and offers with a `webrtc_id` of
/// its own. Its offer is bound to its config session by the relay candidate it carries;
/// that session outlives SESSION_IDLE_TIMEOUT while its allocation lives. Floods of config
/// requests (from one address and from many), offers abandoned mid-request and DELETEs
/// that name its webrtc_id leave the viewer, its allocation and the viewer slots alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_its_own_webrtc_id_is_bound_by_its_relay_candidate_and_survives_floods() {
    let gw = start_gateway(
        "43000-43999",
        &["--session-idle-timeout", "2", "--max-viewers", "64"],
    )
    .await;
    let registry = gw
        .running
        .app
        .signaling()
        .expect("signaling")
        .registry()
        .clone();
    let http = gw.running.http_addr;
    let cfg = webrtc_config(&gw).await;
    let mut turn = connect_turns(&gw, &cfg).await;
    let turn_local = turn.local_addr();
    let alloc = turn
        .allocate(&cfg.username, &cfg.credential)
        .await
        .expect("Allocate with the minted credential");
    let (rtc, offer, pending) = relay_only_client(alloc.relayed, turn_local, true);
    let webrtc_id = "5b0e7c1e-5f43-4a8e-9d57-6f1f3c2a9e10";
    let body = serde_json::json!({ "webrtc_id": webrtc_id, "sdp": offer, "type": "offer" });
    let (status, answer) = http_json(http, "POST", "/api/v1/projects/x/offer", Some(&body)).await;
    assert_eq!(status, 200, "offer: {answer}");
    let answer_sdp = answer["sdp"].as_str().expect("answer sdp").to_owned();
    assert_eq!(
        registry.counts(),
        (1, 0, 1),
        "bound to the config session: one session, none pending, one slot"
    );
    let mut peer = RelayedPeer::new(rtc, turn, alloc.relayed);
    peer.rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer_sdp).expect("answer parses"),
        )
        .expect("answer applies");
    for (addr, _) in candidates(&answer_sdp) {
        peer.bind(addr).await;
    }
    assert!(
        peer.pump(MEDIA_TIMEOUT, |p| p.frames.len() >= 10).await,
        "video flows"
    );

    // A flood of config requests from one address, then from many.
    for _ in 0..1000 {
        assert_eq!(
            http_json_from(Ipv4Addr::LOCALHOST, http, "GET", "/api/v1/webrtc/config").await,
            200
        );
    }
    let (_, pending_now, _) = registry.counts();
    assert!(pending_now <= 64, "bounded per source: {pending_now}");
    for i in 0..1000u32 {
        let src = Ipv4Addr::new(127, 0, 1, (i % 50 + 2) as u8);
        assert_eq!(
            http_json_from(src, http, "GET", "/api/v1/webrtc/config").await,
            200
        );
    }
    // Offers abandoned mid-request (the client goes away while the engine works): polled
    // once, then dropped. One the engine answered within that poll is a real session, ended
    // the way its client would (DELETE with its id); the others give their slot back.
    let sig = gw.running.app.signaling().expect("signaling").clone();
    let (mut abandoned, mut answered) = (0, Vec::new());
    for i in 0..50 {
        let id = format!("abandoned-{i}");
        match tokio::time::timeout(
            Duration::ZERO,
            sig.offer(
                "default",
                Some(&id),
                true,
                &offer_for_abandon(),
                Some(LOOPBACK),
            ),
        )
        .await
        {
            Err(_) => abandoned += 1,
            Ok(Ok(a)) => answered.push(a.session),
            Ok(Err(e)) => panic!("offer refused: {e:?}"),
        }
    }
    assert!(abandoned > 0, "some offers were abandoned mid-request");
    for id in answered {
        let path = format!("/whep/{id}");
        assert_eq!(
            http_json_from(Ipv4Addr::LOCALHOST, http, "DELETE", &path).await,
            200
        );
    }
    // DELETEs naming the viewer's webrtc_id, or a made-up session id.
    for path in [
        format!("/whep/{webrtc_id}"),
        "/whep/gws-00000000000000000000000000000000".to_owned(),
    ] {
        let (status, _) = http_json(http, "DELETE", &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    // Slots are back at their baseline (the viewer's one), its allocation is untouched,
    // and video keeps flowing past twice the idle timeout.
    assert!(
        gateway_tests::eventually(Duration::from_secs(5), || registry.counts().2 == 1).await,
        "slots back to baseline: {:?}",
        registry.counts()
    );
    assert_eq!(
        gw.running
            .app
            .relay_shared()
            .allocations_of(&cfg.session_id),
        1
    );
    let before = peer.frames.len();
    let t0 = Instant::now();
    let grew = peer
        .pump(Duration::from_secs(8), |p| {
            t0.elapsed() > Duration::from_secs(5) && p.frames.len() > before + 30
        })
        .await;
    assert!(
        grew,
        "frames {before} → {} after the floods",
        peer.frames.len()
    );
    assert!(registry.contains(&cfg.session_id), "the session lives on");
    // The pending sessions of the flood idle out (they hold no allocation).
    assert!(
        gateway_tests::eventually(Duration::from_secs(10), || registry.counts().1 == 0).await,
        "{:?}",
        registry.counts()
    );
}

/// A plain recvonly H.264 offer with no candidates.
fn offer_for_abandon() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// The gateway's own addresses are no peers under an allow list that does not name them
/// (DESIGN.md, *Peer policy*): with `127.0.0.0/8` allowed, the media address still works,
/// but the gateway's HTTP API and TURN port on 127.0.0.1 (an interface address) get 403,
/// while 127.0.0.2 (in the allowed range, not an address of this machine's interfaces) does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_addresses_are_refused_but_the_media_ports() {
    let gw = start_gateway("45000-45999", &["--turn-allowed-peers", "127.0.0.0/8"]).await;
    let media = gw
        .running
        .media
        .as_ref()
        .expect("media mode")
        .candidate_addrs()[0];
    assert_eq!(media.ip(), LOOPBACK);
    let cfg = webrtc_config(&gw).await;
    let mut c = connect_turns(&gw, &cfg).await;
    c.allocate(&cfg.username, &cfg.credential)
        .await
        .expect("Allocate");
    c.create_permission(media)
        .await
        .expect("permission for the media address");
    c.channel_bind(FIRST_CHANNEL, media)
        .await
        .expect("channel to the media address");
    for own in [
        gw.running.http_addr,
        gw.running.relay.local_tcp(),
        SocketAddr::new(LOOPBACK, media.port() + 1),
    ] {
        let e = c
            .create_permission(own)
            .await
            .expect_err("a permission for the gateway's own port");
        assert_eq!(e.code(), Some(403), "{own}: {e}");
        let e = c
            .channel_bind(FIRST_CHANNEL + 1, own)
            .await
            .expect_err("a channel to the gateway's own port");
        assert_eq!(e.code(), Some(403), "{own}: {e}");
    }
    c.create_permission(SocketAddr::new(IpAddr::from([127, 0, 0, 2]), 9))
        .await
        .expect("127.0.0.2 is in the allowed range and not ours");
}
