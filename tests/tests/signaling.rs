//! The signaling API end to end: the whole gateway started in-process on loopback, driven
//! over raw HTTP/1.1, with str0m as the browser making offers and the TURN test client
//! checking that ending a session revokes its credential.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_tests::http::{request, Resp};
use gateway_tests::{unix_now, TurnClient};
use serde_json::Value;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{Message, MessageWriteVec, BINDING};
use stun_types::prelude::*;
use tokio::net::UdpSocket;

const SECRET: &str = "signaling-test-secret";

/// Starts the gateway on loopback with `extra` flags.
async fn start(extra: &[&str]) -> gateway::run::Running {
    gateway_tests::start_gateway(SECRET, extra).await
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// A browser-like offer: one recvonly m-line of `kind` with H.264 (or VP8).
fn offer(kind: MediaKind, h264: bool) -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(h264)
        .enable_vp8(!h264)
        .enable_opus(true, false)
        .build(Instant::now());
    let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(kind, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// A video offer with VP9 only: a codec no source of the gateway sends.
fn vp9_offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_vp9(true)
        .build(Instant::now());
    let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

fn video_offer() -> String {
    offer(MediaKind::Video, true)
}

/// `(ip, port)` of every host candidate in an SDP.
fn host_candidates(sdp: &str) -> Vec<(IpAddr, u16)> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter(|l| l.contains(" typ host"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            Some((f.get(4)?.parse().ok()?, f.get(5)?.parse().ok()?))
        })
        .collect()
}

/// Every URL of an `iceServers` list, in order.
fn urls(servers: &Value) -> Vec<String> {
    servers
        .as_array()
        .expect("iceServers is a list")
        .iter()
        .flat_map(|s| s["urls"].as_array().cloned().unwrap_or_default())
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

/// `(url, username, credential)` of one `Link` header.
fn parse_link(v: &str) -> (String, Option<String>, Option<String>) {
    let url = v
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(u, _)| u.to_owned())
        .expect("<url>");
    let param = |name: &str| {
        let key = format!("{name}=\"");
        let start = v.find(&key)? + key.len();
        let end = v[start..].find('"')?;
        Some(v[start..start + end].to_owned())
    };
    assert!(v.contains("rel=\"ice-server\""), "{v}");
    (url, param("username"), param("credential"))
}

/// Offers through the JSON API and returns the answer SDP.
async fn offer_json(addr: SocketAddr, id: &str, sdp: &str) -> Resp {
    post_json(
        addr,
        "/api/v1/projects/p1/offer",
        &serde_json::json!({"webrtc_id": id, "sdp": sdp, "type": "offer"}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_carries_advertised_ip_and_port_in_range() {
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "192.0.2.44",
        "--webrtc-port-range",
        "51000-51019",
    ])
    .await;
    let cfg = get(gw.http_addr, "/api/v1/webrtc/config").await;
    assert_eq!(cfg.status, 200, "{cfg:?}");
    let j = cfg.json();
    let id = j["sessionId"].as_str().expect("sessionId").to_owned();
    // TURN_HOST defaults to WEBRTC_ADVERTISE_IP.
    let port = gw.relay.local_tcp().port();
    assert_eq!(
        urls(&j["iceServers"]),
        vec![
            format!("turns:192.0.2.44:{port}?transport=tcp"),
            format!("turn:192.0.2.44:{port}?transport=tcp"),
        ]
    );
    let r = offer_json(gw.http_addr, &id, &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["type"], "answer");
    let cands = host_candidates(j["sdp"].as_str().unwrap());
    assert!(!cands.is_empty(), "{j}");
    for (ip, port) in cands {
        assert_eq!(ip, "192.0.2.44".parse::<IpAddr>().unwrap());
        assert!((51000..=51019).contains(&port), "port {port}");
    }
    // The system path answers the same shape.
    let r = get(gw.http_addr, "/api/v1/system/webrtc/config").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["iceServers"][0]["credential"].is_string());
    // And the HTTPS/plain-HTTP handoff on the TURN port serves the same router.
    let r = get(gw.relay.local_tcp(), "/health").await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// A STUN server on loopback that reports `mapped` for every Binding request.
async fn fake_stun(mapped: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let Ok(req) = Message::from_bytes(&buf[..n]) else {
                continue;
            };
            if req.method() != BINDING {
                continue;
            }
            let mut resp = Message::builder_success(&req, MessageWriteVec::new());
            let xma = XorMappedAddress::new(mapped, req.transaction_id());
            resp.add_attribute(&xma).unwrap();
            let _ = sock.send_to(&resp.finish(), from).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_server_supplies_the_advertised_address() {
    // A STUN server that reports a public address: the answer must carry it.
    let (stun, _task) = fake_stun("198.51.100.7:40000".parse().unwrap()).await;
    let stun_url = format!("stun:{stun}");
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51020-51039",
        "--stun-server",
        &stun_url,
    ])
    .await;
    let r = offer_json(gw.http_addr, "stun-viewer", &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cands = host_candidates(r.json()["sdp"].as_str().unwrap());
    assert_eq!(cands[0].0, "198.51.100.7".parse::<IpAddr>().unwrap());
    // The STUN server is listed last, after the embedded relay.
    let cfg = get(gw.http_addr, "/api/v1/webrtc/config").await.json();
    assert_eq!(urls(&cfg["iceServers"]).last().unwrap(), &stun_url);
    // TURN_HOST defaults to the advertised address.
    assert!(urls(&cfg["iceServers"])[0].starts_with("turns:198.51.100.7:"));

    // The relay's own Binding answer (a real STUN server) works too, as an ICE_SERVERS entry:
    // asked from the wildcard bind address, it reports loopback.
    let relay = gateway_tests::TestRelay::start(
        relay::core::Config::default(),
        relay::io::IoConfig {
            udp_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..gateway_tests::test_io_config()
        },
        "",
        "x",
    )
    .await;
    let udp = relay.server.local_udp().unwrap();
    let ice = format!(r#"[{{"urls":"stun:{udp}"}}]"#);
    let gw2 = start(&[
        "--webrtc-bind-ip",
        "0.0.0.0",
        "--webrtc-port-range",
        "51040-51059",
        "--ice-servers",
        &ice,
    ])
    .await;
    let r = offer_json(gw2.http_addr, "stun-viewer-2", &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let cands = host_candidates(r.json()["sdp"].as_str().unwrap());
    assert_eq!(cands[0].0, "127.0.0.1".parse::<IpAddr>().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_servers_get_minted_or_passed_through_in_order() {
    let ice = r#"[{"urls":"stun:stun.example:19302"},
                  {"urls":["turn:ext.example:3478?transport=udp"],"secret":"ext-secret"}]"#;
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51060-51079",
        "--turn-udp-listen",
        "127.0.0.1:0",
        "--turn-host",
        "turn.test",
        "--ice-servers",
        ice,
        "--coturn-host",
        "coturn.example",
        "--coturn-secret",
        "coturn-secret",
        "--stun-server",
        "stun:stun2.example:3478",
    ])
    .await;
    let j = get(gw.http_addr, "/api/v1/webrtc/config").await.json();
    let id = j["sessionId"].as_str().unwrap();
    let servers = j["iceServers"].as_array().unwrap();
    let tcp = gw.relay.local_tcp().port();
    let udp = gw.relay.local_udp().unwrap().port();
    assert_eq!(
        urls(&j["iceServers"]),
        vec![
            format!("turns:turn.test:{tcp}?transport=tcp"),
            format!("turn:turn.test:{tcp}?transport=tcp"),
            format!("turn:turn.test:{udp}?transport=udp"),
            "turn:ext.example:3478?transport=udp".into(),
            "turn:coturn.example:3478?transport=udp".into(),
            "turn:coturn.example:3478?transport=tcp".into(),
            "stun:stun.example:19302".into(),
            "stun:stun2.example:3478".into(),
        ]
    );
    let now = unix_now();
    let check = |i: usize, secret: &str| {
        let u = servers[i]["username"].as_str().unwrap();
        let c = servers[i]["credential"].as_str().unwrap();
        assert!(u.ends_with(&format!(":{id}")), "{u}");
        auth::SecretRing::parse(secret)
            .unwrap()
            .verify(u, c, now)
            .unwrap_or_else(|e| panic!("entry {i} does not verify with its secret: {e}"));
    };
    check(0, SECRET);
    check(1, "ext-secret");
    check(2, "coturn-secret");
    assert!(servers[3].get("username").is_none());
    assert!(servers[4].get("credential").is_none());

    // Static coturn credentials are passed through.
    let gw2 = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51060-51079",
        "--coturn-host",
        "coturn.example",
        "--coturn-port",
        "5349",
        "--coturn-username",
        "alice",
        "--coturn-password",
        "wonderland",
    ])
    .await;
    let j = get(gw2.http_addr, "/api/v1/webrtc/config").await.json();
    let last = j["iceServers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["urls"][0], "turn:coturn.example:5349?transport=udp");
    assert_eq!(last["username"], "alice");
    assert_eq!(last["credential"], "wonderland");

    // COTURN_HOST without any credential is refused at start-up, naming the setting.
    let cli = <gateway::config::Cli as clap::Parser>::try_parse_from([
        "gateway",
        "--turn-listen",
        "127.0.0.1:0",
        "--gateway-http-addr",
        "127.0.0.1:0",
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51060-51079",
        "--coturn-host",
        "coturn.example",
    ])
    .unwrap();
    let e = gateway::run::start(cli.settings).await.err().unwrap();
    assert!(format!("{e:#}").contains("COTURN_HOST"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_delete_revokes_the_credential_and_closes_allocations() {
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51080-51099",
    ])
    .await;
    let sdp = video_offer();
    let r = request(
        gw.http_addr,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        sdp.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert!(r.body.starts_with("v=0"), "{r:?}");
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/whep/"), "{location}");
    let links: Vec<_> = r.all("link").into_iter().map(parse_link).collect();
    let port = gw.relay.local_tcp().port();
    assert_eq!(links[0].0, format!("turns:127.0.0.1:{port}?transport=tcp"));
    assert_eq!(links[1].0, format!("turn:127.0.0.1:{port}?transport=tcp"));
    assert!(r.all("link")[0].contains("credential-type=\"password\""));
    let (_, Some(user), Some(pass)) = links[1].clone() else {
        panic!("no credential in {links:?}");
    };
    let id = location.trim_start_matches("/whep/");
    assert!(user.ends_with(&format!(":{id}")));

    let etag = r
        .header("etag")
        .expect("ETag names the ICE session")
        .to_owned();
    // ICE restart (RFC 9725 §4.3): new credentials → 200, the gateway's new ones, a new ETag.
    let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
    let r = request(
        gw.http_addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", "*"),
        ],
        frag.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    assert!(r.body.contains("a=ice-ufrag:"), "{r:?}");
    let new_etag = r.header("etag").expect("new ETag").to_owned();
    assert_ne!(new_etag, etag);
    // A PATCH against the old ICE session is refused; garbage is a 400.
    let r = request(
        gw.http_addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &etag),
        ],
        frag.as_bytes(),
    )
    .await;
    r.expect_error(412, "ice_session_mismatch");
    // Trickle within the current ICE session: 204.
    let trickle = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host\r\n";
    let r = request(
        gw.http_addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &new_etag),
        ],
        trickle.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = request(
        gw.http_addr,
        "PATCH",
        &location,
        &[("Content-Type", "text/plain")],
        frag.as_bytes(),
    )
    .await;
    r.expect_error(415, "unsupported_media_type");

    // The session's credential allocates on the embedded relay...
    let mut c = TurnClient::connect_tcp(gw.relay.local_tcp()).await.unwrap();
    c.allocate(&user, &pass)
        .await
        .expect("allocate before DELETE");
    assert_eq!(gw.relay.shared().allocations(), 1);

    // ...until the session is deleted: the allocation is closed, the credential refused.
    let r = request(gw.http_addr, "DELETE", &location, &[], b"").await;
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    c.wait_closed(Duration::from_secs(5))
        .await
        .expect("the allocation's connection is closed");
    assert!(
        gateway_tests::eventually(Duration::from_secs(5), || gw.relay.shared().allocations()
            == 0)
        .await
    );
    let mut c2 = TurnClient::connect_tcp(gw.relay.local_tcp()).await.unwrap();
    let e = c2.allocate(&user, &pass).await.unwrap_err();
    assert_eq!(e.code(), Some(401), "{e}");

    // The session is gone.
    request(gw.http_addr, "DELETE", &location, &[], b"")
        .await
        .expect_error(404, "unknown_session");

    // OPTIONS hands out ICE servers in Link headers for a session a POST can bind to.
    let r = request(gw.http_addr, "OPTIONS", "/whep", &[], b"").await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(parse_link(r.all("link")[0]).1.is_some());
    let sid = r.header("x-session-id").unwrap().to_owned();
    let r = request(
        gw.http_addr,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp"), ("X-Session-Id", &sid)],
        sdp.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("location"), Some(format!("/whep/{sid}").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_get_json_errors_and_the_gateway_keeps_serving() {
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51100-51119",
    ])
    .await;
    let a = gw.http_addr;
    let path = "/api/v1/projects/p1/offer";
    // Wrong content type.
    request(a, "POST", path, &[("Content-Type", "text/plain")], b"{}")
        .await
        .expect_error(415, "unsupported_media_type");
    request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "text/plain")],
        b"v=0",
    )
    .await
    .expect_error(415, "unsupported_media_type");
    // Not JSON.
    request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        b"{nope",
    )
    .await
    .expect_error(400, "malformed_json");
    // Missing and invalid fields.
    post_json(
        a,
        path,
        &serde_json::json!({"webrtc_id": "x", "type": "offer"}),
    )
    .await
    .expect_error(422, "invalid_field");
    post_json(
        a,
        path,
        &serde_json::json!({"webrtc_id": "x", "sdp": video_offer(), "type": "answer"}),
    )
    .await
    .expect_error(422, "invalid_field");
    post_json(
        a,
        path,
        &serde_json::json!({"webrtc_id": "a b", "sdp": video_offer(), "type": "offer"}),
    )
    .await
    .expect_error(422, "invalid_field");
    // Malformed SDP, no video, unsupported codec.
    offer_json(a, "bad-1", "this is not sdp")
        .await
        .expect_error(400, "malformed_sdp");
    request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        b"v=0\r\ngarbage\r\n",
    )
    .await
    .expect_error(400, "malformed_sdp");
    offer_json(a, "bad-2", &offer(MediaKind::Audio, true))
        .await
        .expect_error(400, "no_video");
    // The test pattern sends H.264 and VP8 (VP8 is tested in gateway/tests/media_loopback.rs);
    // a VP9-only offer has neither.
    offer_json(a, "bad-3", &vp9_offer())
        .await
        .expect_error(400, "unsupported_codec");
    // Over-long body.
    let big = format!(
        "{{\"webrtc_id\":\"x\",\"type\":\"offer\",\"sdp\":\"{}\"}}",
        "a".repeat(70 * 1024)
    );
    request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    )
    .await
    .expect_error(413, "body_too_large");
    // Unknown sessions.
    request(a, "DELETE", "/whep/nope", &[], b"")
        .await
        .expect_error(404, "unknown_session");
    request(
        a,
        "PATCH",
        "/whep/nope",
        &[("Content-Type", "application/trickle-ice-sdpfrag")],
        b"a=end-of-candidates\r\n",
    )
    .await
    .expect_error(404, "unknown_session");
    // None of it left a session behind, and a valid offer still works.
    let sig = gw.app.signaling().unwrap();
    assert_eq!(sig.registry().counts().0, 0);
    let r = offer_json(a, "good-1", &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "answer");
    // A re-offer with the same webrtc_id replaces the session (as Geti's backend does):
    // answered, and still one session.
    let r = offer_json(a, "good-1", &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "answer");
    assert_eq!(sig.registry().counts(), (1, 0, 1));
    // `type` is optional in Geti's schema (default "offer").
    let r = post_json(
        a,
        "/api/v1/projects/p1/offer",
        &serde_json::json!({"webrtc_id": "good-2", "sdp": video_offer()}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A VP8-only browser (Firefox without OpenH264) is answered with VP8 by the test pattern
    // (in a build with VP8; without it, a 400 that says how to get it).
    let r = offer_json(a, "vp8-1", &offer(MediaKind::Video, false)).await;
    if cfg!(feature = "vp8") {
        assert_eq!(r.status, 200, "{r:?}");
        let answer = r.json()["sdp"].as_str().unwrap_or_default().to_owned();
        assert!(answer.contains("VP8/90000"), "{answer}");
    } else {
        r.expect_error(400, "unsupported_codec");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_and_idle_timeout() {
    let gw = start(&[
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51120-51139",
        "--max-viewers",
        "1",
        "--session-idle-timeout",
        "1",
    ])
    .await;
    let a = gw.http_addr;
    let sig = gw.app.signaling().unwrap().clone();
    let first = get(a, "/api/v1/webrtc/config").await;
    assert_eq!(first.status, 200);
    let j = first.json();
    let user = j["iceServers"][0]["username"].as_str().unwrap().to_owned();
    let pass = j["iceServers"][0]["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    // Config requests take no viewer slot.
    assert_eq!(get(a, "/api/v1/webrtc/config").await.status, 200);
    let r = offer_json(a, "viewer-1", &video_offer()).await;
    assert_eq!(r.json()["type"], "answer", "{r:?}");
    // Full: the Geti endpoint answers what Geti's UI can retry from, WHEP a 503.
    let r = offer_json(a, "other", &video_offer()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "failed", "meta": {"error": "concurrency_limit_reached", "limit": 1}})
    );
    let w = request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        video_offer().as_bytes(),
    )
    .await;
    w.expect_error(503, "too_many_viewers");
    assert_eq!(w.header("retry-after"), Some("5"));
    // Naming a session by its webrtc_id does not end it: DELETE takes only the secret id.
    request(a, "DELETE", "/whep/viewer-1", &[], b"")
        .await
        .expect_error(404, "unknown_session");
    assert_eq!(sig.registry().counts().2, 1);
    // The sessions that never offered and hold no allocation idle out; the credential of
    // the first is refused from then on.
    assert!(
        gateway_tests::eventually(Duration::from_secs(5), || sig.registry().counts().1 == 0).await
    );
    let mut c = TurnClient::connect_tcp(gw.relay.local_tcp()).await.unwrap();
    assert_eq!(
        c.allocate(&user, &pass).await.unwrap_err().code(),
        Some(401)
    );
    // The viewer's re-offer with its own webrtc_id replaces its session: answered.
    let r = offer_json(a, "viewer-1", &video_offer()).await;
    assert_eq!(r.json()["type"], "answer", "{r:?}");
    assert_eq!(sig.registry().counts(), (1, 0, 1));
}

/// CORS_ORIGINS: a preflight from an allowed origin is answered with the CORS headers and a
/// real request from it gets `Access-Control-Allow-Origin`; another origin gets none; and
/// without the setting there are no CORS headers at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_for_allowed_and_other_origins() {
    let ui = "http://ui.example:3000";
    let preflight = |origin: &'static str| {
        [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ]
    };
    let gw = start(&[
        "--cors-origins",
        "https://other.example, http://ui.example:3000",
    ])
    .await;
    let a = gw.http_addr;
    for path in ["/api/v1/projects/p1/offer", "/whep"] {
        let r = request(a, "OPTIONS", path, &preflight(ui), b"").await;
        assert!(r.status == 200 || r.status == 204, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ui), "{r:?}");
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST"), "{r:?}");
        let allowed = r.header("access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.to_ascii_lowercase().contains("content-type"),
            "{r:?}"
        );
        let r = request(a, "OPTIONS", path, &preflight("http://evil.example"), b"").await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    }
    let r = request(
        a,
        "GET",
        "/api/v1/system/webrtc/config",
        &[("Origin", ui)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(ui));
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.to_ascii_lowercase().contains("location"), "{r:?}");
    let r = request(
        a,
        "GET",
        "/api/v1/system/webrtc/config",
        &[("Origin", "http://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    let plain = start(&[]).await;
    let r = request(
        plain.http_addr,
        "GET",
        "/api/v1/system/webrtc/config",
        &[("Origin", ui)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "no CORS headers without CORS_ORIGINS: {r:?}"
    );
    assert_eq!(r.header("vary"), None);
}
