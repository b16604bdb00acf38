//! Operations end-to-end tests against the real `gateway` binary (GATEWAY_BIN, else the one
//! built beside this test): `/metrics` parses and moves with real TURN traffic, a
//! certificate reload (SIGHUP) keeps a live TURN/TLS allocation relaying while new
//! handshakes get the new certificate, SIGTERM during live sessions exits 0 in time, and
//! `gateway doctor` against a real coturn (Debian `turnserver`) reports success and names
//! each injected fault. Everything on loopback.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::coturn::{free_udp_range, gateway_bin, Coturn};
use gateway_tests::turn_client::connect_tls_stream;
use gateway_tests::{http_get, unix_now, TestCert, TurnClient, UdpEcho, TEST_SERVER_NAME};

const SECRET: &str = "ops-test-secret-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    turn: SocketAddr,
    http: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

impl Gateway {
    async fn start(cert: &TestCert, extra: &[(&str, &str)]) -> Self {
        Self::start_with_stderr(cert, extra, Stdio::inherit()).await
    }

    async fn start_with_stderr(cert: &TestCert, extra: &[(&str, &str)], stderr: Stdio) -> Self {
        let (cert_path, key_path) = cert.write_pem_files();
        let turn: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(gateway_bin());
        cmd.env("TURN_LISTEN", turn.to_string())
            .env("GATEWAY_HTTP_ADDR", http.to_string())
            .env("TURN_SECRET", SECRET)
            .env("TURN_HOST", TEST_SERVER_NAME)
            .env("TURN_ALLOWED_PEERS", "127.0.0.1")
            .env("TURN_RELAY_IP", "127.0.0.1")
            .env("WEBRTC_PORT_RANGE", free_udp_range())
            .env("WEBRTC_BIND_IP", "127.0.0.1")
            .env("WEBRTC_ADVERTISE_IP", "127.0.0.1")
            .env("TLS_CERT", &cert_path)
            .env("TLS_KEY", &key_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gateway");
        let g = Self {
            child,
            turn,
            http,
            cert: cert_path,
            key: key_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = tokio::net::TcpStream::connect(http).await {
                if let Ok((200, _)) = http_get(s, "x", "/health", Duration::from_secs(2)).await {
                    return g;
                }
            }
            assert!(Instant::now() < deadline, "gateway did not answer /health");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let s = tokio::net::TcpStream::connect(self.http).await.unwrap();
        let (status, body) = http_get(s, "x", "/metrics", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200);
        parse_prometheus(&body)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A strict parser of the text exposition format: every sample line belongs to a family
/// announced by `# HELP` and `# TYPE` (counter or gauge) before it, names and labels are
/// well formed, label values correctly escaped, values numbers, and no series repeats.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    let mut out = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "bad name in {line:?}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(matches!(kind, "counter" | "gauge"), "{line:?}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line:?}");
        assert!(
            types.contains_key(name) && helped.contains(name),
            "sample before HELP/TYPE: {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .expect("braces");
            // key="value" pairs, value escapes only \\ \" \n.
            let mut rest = inner;
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"").expect("key=\"");
                assert!(name_ok(k) && !k.contains(':'), "label name {k:?}");
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect("unterminated label value");
                    match c {
                        '\\' => {
                            let (_, e) = chars.next().expect("escape");
                            assert!(matches!(e, '\\' | '"' | 'n'), "bad escape in {line:?}");
                        }
                        '"' => break i,
                        '\n' => panic!("newline in label value"),
                        _ => {}
                    }
                };
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series twice: {series}"
        );
    }
    out
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing; have {:?}", m.keys().collect::<Vec<_>>()))
}

async fn tls_client(g: &Gateway, cert: &TestCert) -> TurnClient {
    TurnClient::connect_tls(g.turn, TEST_SERVER_NAME, &cert.cert_der)
        .await
        .expect("TLS connect")
}

fn mint(user: &str) -> (String, String) {
    let username = format!("{}:{user}", unix_now() + 600);
    let password = gateway_tests::rest_password(SECRET, &username);
    (username, password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_sigterm_exits_cleanly() {
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let mut g = Gateway::start(&cert, &[("SHUTDOWN_TIMEOUT", "5")]).await;
    let before = g.metrics().await;
    for family in [
        "turn_allocations_active",
        "turn_relayed_packets_total{direction=\"client_to_peer\",transport=\"in_process\"}",
        "turn_tls_handshakes_total{result=\"failed\"}",
        "turn_tls_handshakes_total{result=\"refused\"}",
        "turn_tls_handshakes_in_flight",
        "gateway_viewers",
        "gateway_sessions_active",
        "turn_dropped_packets_total{reason=\"no_permission\"}",
        "turn_forbidden_total{reason=\"loopback\"}",
    ] {
        get(&before, family);
    }

    // A wrong password: one auth failure.
    let mut bad = tls_client(&g, &cert).await;
    let (u, _) = mint("bad");
    assert_eq!(
        bad.allocate(&u, "wrong").await.unwrap_err().code(),
        Some(401)
    );

    // A real allocation relaying 5 packets each way over TLS.
    let echo = UdpEcho::start([127, 0, 0, 1].into()).await.unwrap();
    let mut c = tls_client(&g, &cert).await;
    let (u, p) = mint("alice");
    c.allocate(&u, &p).await.unwrap();
    c.create_permission(echo.addr).await.unwrap();
    for i in 0..5u8 {
        c.send_indication(echo.addr, &[i; 100]).await.unwrap();
        let (_, data) = c.recv_data(Duration::from_secs(5)).await.unwrap();
        assert_eq!(data, vec![i; 100]);
    }
    // The relay flushes its per-connection counters at most a second after traffic.
    let c2p = "turn_relayed_packets_total{direction=\"client_to_peer\",transport=\"tls\"}";
    let p2c = "turn_relayed_packets_total{direction=\"peer_to_client\",transport=\"tls\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let m = g.metrics().await;
        if get(&m, c2p) - get(&before, c2p) >= 5.0 && get(&m, p2c) - get(&before, p2c) >= 5.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "relayed packet counters did not move: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let d = |s: &str| get(&after, s) - get(&before, s);
    assert_eq!(get(&after, "turn_allocations_active"), 1.0);
    assert!(d("turn_auth_failures_total{reason=\"bad_password\"}") >= 1.0);
    assert!(d("turn_relayed_packets_total{direction=\"client_to_peer\",transport=\"tls\"}") >= 5.0);
    assert!(d("turn_relayed_packets_total{direction=\"peer_to_client\",transport=\"tls\"}") >= 5.0);
    assert!(d("turn_relayed_bytes_total{direction=\"client_to_peer\",transport=\"tls\"}") >= 500.0);
    assert!(d("turn_tls_handshakes_total{result=\"ok\"}") >= 2.0);

    // SIGTERM with the allocation live: the server closes it, the process exits 0 in time.
    let start = Instant::now();
    g.signal("TERM");
    c.wait_closed(Duration::from_secs(6))
        .await
        .expect("TURN/TLS connection closed by the shutdown");
    let status = loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gateway still running 10 s after SIGTERM (SHUTDOWN_TIMEOUT=5)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    drop(bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_live_allocation_and_serves_new_certificate() {
    let old = TestCert::new(&[TEST_SERVER_NAME]);
    let g = Gateway::start(&old, &[]).await;
    let echo = UdpEcho::start([127, 0, 0, 1].into()).await.unwrap();
    let mut c = tls_client(&g, &old).await;
    let (u, p) = mint("live");
    c.allocate(&u, &p).await.unwrap();
    c.create_permission(echo.addr).await.unwrap();

    // A broken file first: error logged, old certificate kept.
    std::fs::write(&g.cert, "garbage").unwrap();
    g.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = connect_tls_stream(
        g.turn,
        TEST_SERVER_NAME,
        &old.cert_der,
        &[],
        Duration::from_secs(5),
    )
    .await
    .expect("old certificate still served after a bad reload");
    drop(s);

    // The new certificate, then SIGHUP.
    let new = TestCert::new(&[TEST_SERVER_NAME]);
    std::fs::write(&g.key, &new.key_pem).unwrap();
    std::fs::write(&g.cert, &new.cert_pem).unwrap();
    g.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let served = loop {
        if let Ok(s) = connect_tls_stream(
            g.turn,
            TEST_SERVER_NAME,
            &new.cert_der,
            &[],
            Duration::from_secs(2),
        )
        .await
        {
            break s.get_ref().1.peer_certificates().unwrap()[0].clone();
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(served, new.cert_der);

    // The allocation made before the reload still relays both ways.
    for i in 0..3u8 {
        c.send_indication(echo.addr, &[i; 32]).await.unwrap();
        let (_, data) = c.recv_data(Duration::from_secs(5)).await.unwrap();
        assert_eq!(data, vec![i; 32]);
    }
    let m = g.metrics().await;
    assert!(get(&m, "gateway_tls_reloads_total{result=\"ok\"}") >= 1.0);
    assert!(get(&m, "gateway_tls_reloads_total{result=\"failed\"}") >= 1.0);
}

fn doctor(envs: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("doctor")
        .env("TURN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WEBRTC_PORT_RANGE", free_udp_range())
        .env("WEBRTC_BIND_IP", "127.0.0.1")
        .env("WEBRTC_ADVERTISE_IP", "127.0.0.1")
        .env("TURN_SECRET", SECRET)
        .env("TURN_HOST", TEST_SERVER_NAME)
        .env("RUST_LOG", "error")
        .env_remove("STUN_SERVER")
        .env_remove("ICE_SERVERS");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gateway doctor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn doctor_passes_against_coturn_and_names_each_fault() {
    let coturn = Coturn::start("coturn-secret");
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let (c, k) = cert.write_pem_files();
    let base = vec![
        ("COTURN_HOST", "127.0.0.1".to_owned()),
        ("COTURN_PORT", coturn.port.to_string()),
        ("TLS_CERT", c.display().to_string()),
        ("TLS_KEY", k.display().to_string()),
    ];

    let mut env = base.clone();
    env.push(("COTURN_SECRET", "coturn-secret".to_owned()));
    let (ok, out) = doctor(&env);
    assert!(ok, "doctor should pass:\n{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK") && l.contains("COTURN_HOST")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("OK")
            && l.contains("embedded relay loop")
            && l.contains("relayed both ways")),
        "{out}"
    );

    // A wrong secret.
    let mut env = base.clone();
    env.push(("COTURN_SECRET", "not-the-secret".to_owned()));
    let (ok, out) = doctor(&env);
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("COTURN_SECRET") && l.contains("401")),
        "{out}"
    );

    // A certificate for another name.
    let other = TestCert::new(&["other.example.test"]);
    let (oc, ok_) = other.write_pem_files();
    let mut env = vec![
        ("TLS_CERT", oc.display().to_string()),
        ("TLS_KEY", ok_.display().to_string()),
    ];
    env.push(("COTURN_SECRET", "coturn-secret".to_owned()));
    env.push(("COTURN_HOST", "127.0.0.1".to_owned()));
    env.push(("COTURN_PORT", coturn.port.to_string()));
    let (ok, out) = doctor(&env);
    assert!(!ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains("does not cover TURN_HOST")
            && l.contains("other.example.test")),
        "{out}"
    );

    // A port held by another socket (not a gateway).
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap();
    let mut env = base.clone();
    env.push(("COTURN_SECRET", "coturn-secret".to_owned()));
    env.push(("GATEWAY_HTTP_ADDR", held.to_string()));
    let (ok, out) = doctor(&env);
    assert!(!ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains("GATEWAY_HTTP_ADDR")
            && l.contains("in use by another program")),
        "{out}"
    );
    drop(holder);
}

/// HTTP connections are capped per source address (HTTP_MAX_CONNECTIONS_PER_IP): one more
/// from a full address is closed at once, other addresses are still served, and a closed
/// connection frees its place. The clients use different loopback source addresses.
#[tokio::test]
async fn http_connections_are_capped_per_address_and_freed_on_close() {
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let g = Gateway::start(&cert, &[("HTTP_MAX_CONNECTIONS_PER_IP", "3")]).await;
    let from = |ip: [u8; 4]| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((ip, 0))).unwrap();
        s.connect(g.http).await.unwrap()
    };
    // Three idle connections fill 127.0.0.2's share (they stay up to the 10 s head timeout).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from([127, 0, 0, 2]).await);
    }
    // A fourth from the same address is closed without an answer.
    let refused = http_get(
        from([127, 0, 0, 2]).await,
        "x",
        "/health",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        !matches!(refused, Ok((200, _))),
        "a fourth connection from a full address was served: {refused:?}"
    );
    // Another address is served, and the open connections are counted.
    let m = g.metrics().await;
    assert!(m["gateway_http_connections"] >= 3.0, "{m:?}");
    // Closing one of the three frees its place (the server sees the close shortly after).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http_get(
            from([127, 0, 0, 2]).await,
            "x",
            "/health",
            Duration::from_secs(2),
        )
        .await
        {
            Ok((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "no connection from 127.0.0.2 served after one closed: {other:?}"
            ),
        }
    }
}

/// A flood of malformed STUN (4,000 messages whose attribute runs past the end, half of
/// them requests) on one TURN/TCP connection, with the default log level: each one is
/// counted in `turn_bad_input_total`, and the log gets a bounded number of lines (it was
/// one WARN per message, from the STUN parser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_malformed_stun_is_counted_and_barely_logged() {
    use std::io::BufRead as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let mut g = Gateway::start_with_stderr(&cert, &[("RUST_LOG", "info")], Stdio::piped()).await;
    let stderr = g.child.stderr.take().expect("piped stderr");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr).lines() {
                let Ok(l) = l else { break };
                lines.lock().unwrap().push(l);
            }
        })
    };
    let series = "turn_bad_input_total{reason=\"malformed\"}";
    let before = get(&g.metrics().await, series);
    let logged_before = lines.lock().unwrap().len();
    let mut flood = Vec::new();
    for i in 0..4_000u32 {
        let class: u16 = if i % 2 == 0 { 0x0001 } else { 0x0011 };
        flood.extend_from_slice(&class.to_be_bytes());
        flood.extend_from_slice(&8u16.to_be_bytes());
        flood.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        flood.extend_from_slice(&i.to_be_bytes());
        flood.extend_from_slice(&[7; 8]);
        flood.extend_from_slice(&[0x80, 0x22, 0x00, 0xC8, 1, 2, 3, 4]);
    }
    let mut s = tokio::net::TcpStream::connect(g.turn).await.unwrap();
    let (mut rd, mut wr) = s.split();
    // Read the 400s while writing, so neither side's buffers fill.
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    };
    let write = async {
        wr.write_all(&flood).await.unwrap();
    };
    let (answered, ()) = tokio::join!(drain, write);
    assert!(answered > 0, "no 400 answers");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = get(&g.metrics().await, series) - before;
        if n >= 4_000.0 {
            assert_eq!(n, 4_000.0);
            break;
        }
        assert!(Instant::now() < deadline, "bad input counted {n} of 4000");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    g.signal("TERM");
    let _ = g.child.wait();
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let flood_lines: Vec<&String> = lines[logged_before..]
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("bad input") || l.contains("stun"))
        .collect();
    assert!(
        !flood_lines.is_empty() && flood_lines.len() <= 5,
        "{} log lines for 4,000 bad messages: {flood_lines:#?}",
        flood_lines.len()
    );
}
