//! Interop: coturn's own client, `turnutils_uclient`, relays through our relay to coturn's
//! `turnutils_peer` over TURN/TCP and TURN/TLS with REST credentials (`-W secret`), and is
//! refused with a wrong secret and with an expired username.
//!
//! Needs the Debian package `coturn` (`./tests/run` installs it).
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use gateway::config::Cli;

const SECRET: &str = "interop-secret-0123456789";

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: install Debian's coturn (./tests/run does)"
    );
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// Starts `turnutils_peer` and waits until it echoes a probe datagram.
fn start_peer() -> (Guard, u16) {
    let port = free_udp_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    let guard = Guard(child);
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        assert!(
            Instant::now() < deadline,
            "turnutils_peer did not echo within 10 s"
        );
        let _ = probe.send_to(b"ready?", ("127.0.0.1", port));
        if let Ok((n, _)) = probe.recv_from(&mut buf) {
            if buf.get(..n) == Some(&b"ready?"[..]) {
                return (guard, port);
            }
        }
    }
}

struct Outcome {
    success: bool,
    output: String,
}

impl Outcome {
    fn lost_packets(&self) -> Option<u64> {
        let line = self
            .output
            .lines()
            .find(|l| l.contains("Total lost packets"))?;
        let after = line.split("Total lost packets").nth(1)?;
        after.split_whitespace().next()?.parse().ok()
    }
}

/// Runs `turnutils_uclient` with a deadline; output is stdout and stderr together.
fn uclient(args: &[&str]) -> Outcome {
    let mut child = Command::new("turnutils_uclient")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnutils_uclient");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = reader.join().unwrap_or_default();
    Outcome {
        success: status.is_some_and(|s| s.success()),
        output,
    }
}

fn start_gateway(rt: &tokio::runtime::Runtime) -> (gateway::run::Running, SocketAddr) {
    let cli = Cli::try_parse_from([
        "gateway",
        "--turn-listen",
        "127.0.0.1:0",
        "--gateway-http-addr",
        "127.0.0.1:0",
        "--turn-secret",
        SECRET,
        "--turn-allowed-peers",
        "127.0.0.1",
        "--turn-relay-ip",
        "127.0.0.1",
        "--turn-host",
        "127.0.0.1",
    ])
    .expect("settings");
    let running = rt
        .block_on(gateway::run::start(cli.settings))
        .expect("gateway starts");
    let addr = running.relay.local_tcp();
    (running, addr)
}

fn relay_args<'a>(extra: &[&'a str], port: &'a str, peer_port: &'a str) -> Vec<&'a str> {
    // `-c`: no RTCP allocation. Without it uclient asks for EVEN-PORT with the reservation
    // bit (an RTP/RTCP port pair), which the relay refuses with 508 as RFC 8656 §7.2
    // allows: WebRTC never reserves port pairs.
    let mut v = extra.to_vec();
    v.extend_from_slice(&[
        "-c",
        "-p",
        port,
        "-e",
        "127.0.0.1",
        "-r",
        peer_port,
        "-n",
        "50",
        "-l",
        "120",
        "-z",
        "5",
        "127.0.0.1",
    ]);
    v
}

#[test]
fn coturn_client_relays_over_tcp_and_tls_with_rest_credentials() {
    require("turnutils_uclient");
    require("turnutils_peer");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_gw, addr) = start_gateway(&rt);
    let (_peer, peer_port) = start_peer();
    let port = addr.port().to_string();
    let peer_port = peer_port.to_string();

    for (name, flags) in [
        ("TCP", vec!["-t"]),
        ("TLS", vec!["-t", "-S"]),
        ("TCP, Send indications", vec!["-t", "-s"]),
        ("TLS, Send indications", vec!["-t", "-S", "-s"]),
    ] {
        let mut extra = flags.clone();
        extra.extend_from_slice(&["-W", SECRET, "-u", "interop"]);
        let out = uclient(&relay_args(&extra, &port, &peer_port));
        assert!(
            out.success,
            "{name}: turnutils_uclient failed:\n{}",
            out.output
        );
        assert_eq!(
            out.lost_packets(),
            Some(0),
            "{name}: expected 0 lost packets:\n{}",
            out.output
        );
        eprintln!("{name}: 0 lost packets");
    }

    // A wrong secret is refused.
    let out = uclient(&relay_args(
        &["-t", "-W", "not-the-secret", "-u", "interop"],
        &port,
        &peer_port,
    ));
    assert!(
        !out.success || out.lost_packets().is_none_or(|n| n > 0),
        "a wrong secret must not relay:\n{}",
        out.output
    );

    // An expired username with a correctly computed password is refused.
    let now = relay::io::unix_now();
    let username = format!("{}:interop", now - 60);
    let ring = auth::SecretRing::parse(SECRET).expect("ring");
    let password = auth::rest_password(ring.minting(), &username);
    let out = uclient(&relay_args(
        &["-t", "-u", &username, "-w", &password],
        &port,
        &peer_port,
    ));
    assert!(
        !out.success || out.lost_packets().is_none_or(|n| n > 0),
        "an expired username must not relay:\n{}",
        out.output
    );
    // ... while the same scheme with a live expiry works (the check above is not vacuous).
    let username = format!("{}:interop", now + 600);
    let password = auth::rest_password(ring.minting(), &username);
    let out = uclient(&relay_args(
        &["-t", "-u", &username, "-w", &password],
        &port,
        &peer_port,
    ));
    assert!(out.success, "live hand-made credential:\n{}", out.output);
    assert_eq!(out.lost_packets(), Some(0), "{}", out.output);
}

/// `GET path` on `addr` over plain HTTP/1.1: status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Relay-only mode (GATEWAY_MODE=relay) with the original recipe's static user: coturn's
/// client relays with `-u user -w password` over TCP and TLS to the peer TURN_ALLOWED_PEERS
/// names, and not to another port of the same host; a wrong password relays nothing; no
/// media port is bound and only /health, /metrics (and the REST endpoint) are served.
#[test]
fn relay_only_mode_with_a_static_user_reaches_only_the_allowed_peer() {
    require("turnutils_uclient");
    require("turnutils_peer");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_peer, peer_port) = start_peer();
    // uclient talks to the peer port and the one after it (its RTCP peer): both allowed; the
    // other peer's port lies outside that pair.
    let (_other, other_port) = loop {
        let (g, p) = start_peer();
        if p.abs_diff(peer_port) > 2 {
            break (g, p);
        }
    };
    let media_range = {
        // A range that must stay free: the relay-only gateway binds no media port.
        let p = free_udp_port();
        format!("{p}-{p}")
    };
    let allowed = format!("127.0.0.1:{peer_port}-{}", peer_port + 1);
    let flags = |static_users: bool| {
        let mut v = vec![
            "gateway".to_owned(),
            "--gateway-mode".into(),
            "relay".into(),
            "--turn-listen".into(),
            "127.0.0.1:0".into(),
            "--gateway-http-addr".into(),
            "127.0.0.1:0".into(),
            "--turn-secret".into(),
            SECRET.into(),
            "--turn-relay-ip".into(),
            "127.0.0.1".into(),
            "--turn-host".into(),
            "127.0.0.1".into(),
            "--webrtc-port-range".into(),
            media_range.clone(),
            "--turn-static-users".into(),
            "user:password".into(),
        ];
        if static_users {
            v.extend(["--turn-allowed-peers".into(), allowed.clone()]);
        }
        v
    };
    // Static users without an allow list are refused before anything starts.
    let cli = Cli::try_parse_from(flags(false)).expect("settings");
    let err = cli
        .settings
        .plan()
        .err()
        .expect("static users need TURN_ALLOWED_PEERS");
    assert!(
        err.to_string().contains("TURN_STATIC_USERS")
            && err.to_string().contains("TURN_ALLOWED_PEERS"),
        "{err}"
    );
    let cli = Cli::try_parse_from(flags(true)).expect("settings");
    let running = rt
        .block_on(gateway::run::start(cli.settings))
        .expect("relay-only gateway starts");
    assert!(running.media.is_none());
    let port = running.relay.local_tcp().port().to_string();
    let (peer_port, other_port) = (peer_port.to_string(), other_port.to_string());
    for (name, flags) in [("TCP", vec!["-t"]), ("TLS", vec!["-t", "-S"])] {
        let mut extra = flags.clone();
        extra.extend_from_slice(&["-u", "user", "-w", "password"]);
        let out = uclient(&relay_args(&extra, &port, &peer_port));
        assert!(out.success, "{name}: static user:\n{}", out.output);
        assert_eq!(out.lost_packets(), Some(0), "{name}:\n{}", out.output);
    }
    // Another port of the same host is outside the allow list: nothing relayed.
    let out = uclient(&relay_args(
        &["-t", "-u", "user", "-w", "password"],
        &port,
        &other_port,
    ));
    assert!(
        !out.success || out.lost_packets().is_none_or(|n| n > 0),
        "a static user must not reach a peer outside TURN_ALLOWED_PEERS:\n{}",
        out.output
    );
    assert!(
        running
            .app
            .relay_shared()
            .stats()
            .forbidden("not in allow list")
            >= 1,
        "the refusal is a 403 of the peer policy"
    );
    // A wrong password relays nothing.
    let out = uclient(&relay_args(
        &["-t", "-u", "user", "-w", "wrong"],
        &port,
        &peer_port,
    ));
    assert!(
        !out.success || out.lost_packets().is_none_or(|n| n > 0),
        "a wrong static password must not relay:\n{}",
        out.output
    );
    // No media port taken.
    let p: u16 = media_range.split('-').next().unwrap().parse().unwrap();
    UdpSocket::bind(("0.0.0.0", p)).expect("the media port range stays free in relay-only mode");
    // HTTP: health and metrics only.
    let http = running.http_addr;
    let (status, body) = http_get(http, "/health");
    assert_eq!(status, 200, "{body}");
    for path in ["/", "/api/v1/webrtc/config", "/api/v1/streams", "/whep"] {
        let (status, body) = http_get(http, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("not_found"), "{path}: {body}");
    }
    let (status, metrics) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    let static_allocs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("turn_static_user_allocations_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("turn_static_user_allocations_total in /metrics");
    assert!(static_allocs >= 2, "{static_allocs}");
    drop(running);
}
