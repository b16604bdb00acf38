//! Hostile clients on the signaling/HTTP side (issue 14): the whole gateway started
//! in-process on loopback and attacked over raw HTTP/1.1. Every connection goes to
//! 127.0.0.0/8 only; every loop is bounded in count and time.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway_tests::http::{request, Resp};
use gateway_tests::video_offer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const SECRET: &str = "hostile-http-test-secret";
const T: Duration = Duration::from_secs(20);

/// Starts the gateway on loopback with `extra` flags (media on loopback too).
async fn start(extra: &[&str]) -> gateway::run::Running {
    let mut args = vec![
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    gateway_tests::start_gateway(SECRET, &args).await
}

/// Raises this process's open-file limit to at least `need` (the in-process gateway and the
/// attacker share it), failing loudly when the hard limit does not allow it.
fn need_open_files(need: u64) {
    let got = rlimit::increase_nofile_limit(need).expect("raise RLIMIT_NOFILE");
    assert!(
        got >= need,
        "this test needs {need} open files, the hard limit allows {got} (ulimit -Hn)"
    );
}

/// Connections that stall mid-body.
const STALLED: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_arrive_are_timed_out() {
    // Both ends of every connection live in this process.
    need_open_files(2 * STALLED as u64 + 1024);
    let gw = start(&["--webrtc-port-range", "51200-51209"]).await;
    let a = gw.http_addr;
    let bound = gateway::http::REQUEST_TIMEOUT;

    // 2,000 connections from four loopback addresses send a complete head announcing a body
    // and a few bytes of it, then nothing: signaling bodies (SDP, JSON) and a body sent to a
    // route that never reads one.
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8));
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(src, 0))
            .expect("bind loopback source");
        let mut s = tokio::time::timeout(T, sock.connect(a))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (method, path, ctype, part) = match i % 3 {
            0 => ("POST", "/whep", "application/sdp", "v=0\r\n"),
            1 => (
                "POST",
                "/api/v1/projects/p1/offer",
                "application/json",
                "{\"webrtc_id\":",
            ),
            _ => ("GET", "/health", "text/plain", "x"),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {a}\r\nContent-Type: {ctype}\r\n\
             Content-Length: 5000\r\n\r\n{part}"
        );
        s.write_all(head.as_bytes()).await.expect("send head");
        stalled.push((Instant::now(), s));
    }
    let opened = Instant::now();

    // Meanwhile normal requests are answered at once: a health check and a real offer.
    let t = Instant::now();
    let r = request(a, "GET", "/health", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        video_offer().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "normal requests took {:?} next to {STALLED} stalled ones",
        t.elapsed()
    );
    assert!(
        opened.elapsed() < bound,
        "the stalled connections took too long to open for the test to mean anything"
    );

    // Every stalled connection is answered 408 (JSON) and closed once the bound has passed,
    // not before and not much after.
    let mut set = tokio::task::JoinSet::new();
    for (i, (sent, mut s)) in stalled.into_iter().enumerate() {
        set.spawn(async move {
            let mut raw = Vec::new();
            let read = tokio::time::timeout_at(
                (sent + bound + Duration::from_secs(5)).into(),
                s.read_to_end(&mut raw),
            )
            .await;
            (i, sent.elapsed(), read.is_ok(), raw)
        });
    }
    let (mut timed_out, mut answered_early, mut longest) = (0, 0, Duration::ZERO);
    while let Some(res) = set.join_next().await {
        let (i, after, eof, raw) = res.expect("reader task");
        longest = longest.max(after);
        assert!(
            eof,
            "stalled connection {i} still open {after:?} after its head (bound {bound:?})"
        );
        let resp = Resp::parse(&raw)
            .unwrap_or_else(|| panic!("connection {i}: no HTTP response: {raw:?}"));
        if i % 3 == 2 {
            // A route that reads no body answers at once; hyper then closes the connection
            // rather than wait for the rest of the body.
            assert_eq!(resp.status, 200, "{resp:?}");
            answered_early += 1;
        } else {
            resp.expect_error(408, "request_timeout");
            assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
            assert!(
                after >= bound - Duration::from_millis(500),
                "connection {i} cut after {after:?}, before the bound {bound:?}"
            );
            timed_out += 1;
        }
    }
    assert_eq!(timed_out + answered_early, STALLED);
    println!(
        "{STALLED} stalled bodies: {timed_out} answered 408 and closed after {bound:?}, \
         {answered_early} (a route reading no body) answered and closed; the longest lived {:?}",
        longest
    );
    // The gateway let go of them: the metrics request itself is the one HTTP connection open.
    let t = Instant::now();
    loop {
        let r = request(a, "GET", "/metrics", &[], b"").await;
        let open = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("gateway_http_connections "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no gateway_http_connections in {:?}", r.body));
        if open == 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{open} HTTP connections still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `text` holds something that looks like internal state: a Rust Debug of a
/// parser position or a hexadecimal address.
fn leaks_internal_state(text: &str) -> bool {
    text.contains("PointerOffset")
        || text
            .match_indices("0x")
            .any(|(i, _)| text[i + 2..].starts_with(|c: char| c.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdp_errors_never_echo_internal_state() {
    let gw = start(&["--webrtc-port-range", "51210-51219"]).await;
    let a = gw.http_addr;
    let good = video_offer();
    let without = |prefix: &str| {
        good.lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
    };
    // (offer, what, must it be refused?): str0m skips some lines it cannot read, so a few
    // of these may be answered; every one that is refused is checked.
    let malformed: Vec<(String, &str, bool)> = vec![
        ("this is not sdp".into(), "no line form", true),
        ("v=0\r\ngarbage\r\n".into(), "line 2 not x=y", true),
        (String::new(), "empty", true),
        (
            good.replacen("m=video 9", "m=video x", 1),
            "bad m-line port",
            false,
        ),
        (
            good.replacen("c=IN IP4", "c=IN IP9", 1),
            "bad connection line",
            false,
        ),
        (good[..good.len() / 2].to_owned(), "truncated", false),
        (
            good.replacen("a=rtpmap:", "a=rtpmap:x", 1),
            "bad rtpmap",
            false,
        ),
        (good.replacen("v=0", "v=1", 1), "version 1", true),
        (without("a=fingerprint"), "no fingerprint", true),
        (without("a=ice-ufrag"), "no ICE ufrag", true),
        (without("a=mid"), "no mid", false),
        (
            format!("{good}a=candidate:1 1 udp x 127.0.0.1 9 typ host\r\n"),
            "bad candidate",
            false,
        ),
        ("v=0\r\n\u{7f}\u{1}\r\n".into(), "control characters", true),
        (
            good.replace("\r\n", "\r\n\u{1}"),
            "junk before each line",
            true,
        ),
    ];
    let mut bodies = 0;
    for (i, (sdp, what, must_fail)) in malformed.iter().enumerate() {
        let whep = request(
            a,
            "POST",
            "/whep",
            &[("Content-Type", "application/sdp")],
            sdp.as_bytes(),
        )
        .await;
        let json = request(
            a,
            "POST",
            "/api/v1/projects/p1/offer",
            &[("Content-Type", "application/json")],
            serde_json::json!({"webrtc_id": format!("bad-{i}"), "sdp": sdp, "type": "offer"})
                .to_string()
                .as_bytes(),
        )
        .await;
        for r in [&whep, &json] {
            if !*must_fail && r.status < 300 {
                continue;
            }
            assert!(
                (400..500).contains(&r.status),
                "{what}: a malformed offer must be refused with a 4xx: {r:?}"
            );
            assert!(!leaks_internal_state(&r.body), "{what}: {:?}", r.body);
            let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
            assert!(!detail.is_empty(), "{what}: {r:?}");
            bodies += 1;
        }
    }
    // A parse error says where.
    let r = request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        b"v=0\r\ngarbage\r\n",
    )
    .await;
    r.expect_error(400, "malformed_sdp");
    assert!(
        r.json()["detail"].as_str().unwrap().contains("line 2"),
        "{r:?}"
    );
    // Trickled candidates that do not parse: refused without the parser's text either.
    let r = request(
        a,
        "POST",
        "/whep",
        &[("Content-Type", "application/sdp")],
        good.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let location = r.header("location").expect("Location").to_owned();
    for frag in [
        "a=candidate:1 1 udp x 127.0.0.1 9 typ host\r\n",
        "a=candidate:\u{1}\r\n",
        "a=candidate:1 1 udp 1 127.0.0.1 notaport typ host\r\n",
    ] {
        let r = request(
            a,
            "PATCH",
            &location,
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            frag.as_bytes(),
        )
        .await;
        assert!((400..500).contains(&r.status), "{frag:?}: {r:?}");
        assert!(!leaks_internal_state(&r.body), "{frag:?}: {:?}", r.body);
        bodies += 1;
    }
    println!("{bodies} error bodies, none with internal state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_need_the_api_token() {
    const PATH: &str = "/api/v1/turn/credentials?service=turn&username=alice";
    const TOKEN: &str = "hostile-http-api-token-0123456789";
    // Without API_TOKEN the endpoint is off.
    let gw = start(&["--webrtc-port-range", "51220-51229"]).await;
    request(gw.http_addr, "GET", PATH, &[], b"")
        .await
        .expect_error(404, "not_found");
    request(
        gw.http_addr,
        "GET",
        PATH,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await
    .expect_error(404, "not_found");
    drop(gw);

    let gw = start(&["--webrtc-port-range", "51230-51239", "--api-token", TOKEN]).await;
    let a = gw.http_addr;
    let wrong_length = format!("Bearer {TOKEN}x");
    let wrong_byte = format!("Bearer {}X", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    for (what, headers) in [
        ("no header", vec![]),
        ("empty", vec![("Authorization", "")]),
        ("bearer only", vec![("Authorization", "Bearer")]),
        (
            "longer token",
            vec![("Authorization", wrong_length.as_str())],
        ),
        (
            "last byte differs",
            vec![("Authorization", wrong_byte.as_str())],
        ),
        ("not bearer", vec![("Authorization", basic.as_str())]),
    ] {
        let r = request(a, "GET", PATH, &headers, b"").await;
        r.expect_error(401, "unauthorized");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer"),
            "{what}: {r:?}"
        );
    }
    let auth = format!("bearer {TOKEN}");
    let r = request(a, "GET", PATH, &[("Authorization", &auth)], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.json();
    let username = doc["username"].as_str().expect("username");
    assert!(username.ends_with(":alice"), "{doc}");
    assert_eq!(
        doc["password"].as_str(),
        Some(gateway_tests::rest_password(SECRET, username).as_str())
    );
}

#[test]
fn short_turn_secrets_and_api_tokens_are_refused_at_start() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for args in [
        ["--turn-secret", "short-secret"],
        ["--turn-secret", "a-long-enough-secret,old"],
        ["--api-token", "short-token"],
    ] {
        let mut all = vec![
            "gateway",
            "--turn-listen",
            "127.0.0.1:0",
            "--gateway-http-addr",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(&args);
        let cli = <gateway::config::Cli as clap::Parser>::try_parse_from(all).expect("flags");
        let e = match rt.block_on(gateway::run::start(cli.settings)) {
            Ok(_) => panic!("{args:?}: the gateway started"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("openssl rand -base64 32"), "{args:?}: {e}");
    }
}
