//! `gateway doctor` reads its settings exactly as `gateway` does: the real binary, given
//! every setting as a flag and an empty environment (only PATH), checks the coturn the flags
//! name (Debian's `turnserver` on loopback) and reports the wrong secret the flags give it,
//! in both the human and the `--json` report; with the right secret, the same flags pass,
//! also when the environment says otherwise (a flag wins over its environment variable).
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::TcpListener;
use std::process::Command;

use gateway_tests::coturn::{free_udp_range, gateway_bin, Coturn};
use gateway_tests::{TestCert, TEST_SERVER_NAME};

const COTURN_SECRET: &str = "doctor-coturn-secret-0123456789";
const TURN_SECRET: &str = "doctor-turn-secret-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn doctor(flags: &[String]) -> Run {
    doctor_with_env(flags, &[])
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `gateway doctor` with `flags` only: the environment is cleared but for PATH (and `env`).
fn doctor_with_env(flags: &[String], env: &[(&str, String)]) -> Run {
    let mut cmd = Command::new(gateway_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .args(flags);
    let out = cmd.output().expect("run gateway doctor");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn flags(coturn_port: u16, coturn_secret: &str, cert: &TestCert, json: bool) -> Vec<String> {
    let (c, k) = cert.write_pem_files();
    let mut v: Vec<String> = [
        "--turn-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--gateway-http-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--webrtc-port-range",
        &free_udp_range(),
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--turn-secret",
        TURN_SECRET,
        "--turn-host",
        TEST_SERVER_NAME,
        "--tls-cert",
        &c.display().to_string(),
        "--tls-key",
        &k.display().to_string(),
        "--coturn-host",
        "127.0.0.1",
        "--coturn-port",
        &coturn_port.to_string(),
        "--coturn-secret",
        coturn_secret,
        "--log-format",
        "json",
        "doctor",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if json {
        v.push("--json".to_owned());
    }
    v
}

#[test]
fn doctor_checks_the_coturn_named_by_flags_and_reports_the_wrong_secret() {
    let coturn = Coturn::start(COTURN_SECRET);
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let coturn_check = format!("COTURN_HOST 127.0.0.1:{} (TURN over TCP)", coturn.port);

    // Wrong secret, JSON report.
    let run = doctor(&flags(
        coturn.port,
        "not-the-coturn-secret-0123",
        &cert,
        true,
    ));
    assert!(!run.ok, "doctor must fail:\n{}\n{}", run.stdout, run.stderr);
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", run.stdout));
    assert_eq!(doc["ok"], false, "{doc:#}");
    let checks = doc["checks"].as_array().expect("checks");
    let coturn_result = checks
        .iter()
        .find(|c| c["name"] == coturn_check.as_str())
        .unwrap_or_else(|| panic!("no check of the flagged coturn ({coturn_check}):\n{doc:#}"));
    assert_eq!(coturn_result["status"], "fail", "{doc:#}");
    let detail = coturn_result["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("401")
            && detail.contains("COTURN_SECRET")
            && detail.contains(&format!("127.0.0.1:{}", coturn.port)),
        "{detail}"
    );
    // The auth failure is the only failure: the other flags (ports, certificate, the
    // embedded relay's secret) were read and pass.
    let failed: Vec<_> = checks.iter().filter(|c| c["status"] == "fail").collect();
    assert_eq!(failed.len(), 1, "{doc:#}");
    assert_eq!(doc["failed"], 1);
    for c in checks {
        assert!(
            ["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap_or_default()),
            "{c}"
        );
    }
    assert!(
        checks.iter().any(|c| c["status"] == "ok"
            && c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("TLS_CERT"))
            && c["detail"]
                .as_str()
                .is_some_and(|d| d.contains(TEST_SERVER_NAME))),
        "{doc:#}"
    );
    assert!(
        checks.iter().any(|c| c["name"] == "embedded relay loop"
            && c["status"] == "ok"
            && c["detail"]
                .as_str()
                .is_some_and(|d| d.contains("relayed both ways"))),
        "{doc:#}"
    );

    // Wrong secret, human report: the same failure, as a line.
    let run = doctor(&flags(
        coturn.port,
        "not-the-coturn-secret-0123",
        &cert,
        false,
    ));
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains(&coturn_check)
            && l.contains("COTURN_SECRET")
            && l.contains("401")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("checks: 1 failed"), "{}", run.stdout);

    // A flag wins over its environment variable: with the environment naming another port
    // and the wrong secret, the flags' coturn and secret are what is checked.
    let run = doctor_with_env(
        &flags(coturn.port, COTURN_SECRET, &cert, false),
        &[
            ("COTURN_HOST", "127.0.0.2".to_owned()),
            ("COTURN_PORT", "1".to_owned()),
            ("COTURN_SECRET", "not-the-coturn-secret-0123".to_owned()),
        ],
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains(&coturn_check)),
        "{}",
        run.stdout
    );

    // The right secret: the same flags pass, so the failure above was the secret.
    let run = doctor(&flags(coturn.port, COTURN_SECRET, &cert, true));
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    assert!(run.ok, "{doc:#}\n{}", run.stderr);
    assert!(
        doc["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["name"] == coturn_check.as_str() && c["status"] == "ok"),
        "{doc:#}"
    );
}

/// The flags every mode test shares: loopback listeners on free ports, JSON report.
fn mode_flags(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--turn-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--gateway-http-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--webrtc-port-range".into(),
        free_udp_range(),
        "--webrtc-bind-ip".into(),
        "127.0.0.1".into(),
        "--webrtc-advertise-ip".into(),
        "127.0.0.1".into(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v.extend(["doctor".into(), "--json".into()]);
    v
}

fn check_named<'a>(doc: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no check named {prefix}…:\n{doc:#}"))
}

/// A minimal upstream on loopback for `n` requests: `/health` 200, the offer path 422 (as
/// Geti answers an empty offer for a project id that is not a UUID), anything else 404. The
/// request lines it saw come back from the join handle.
fn upstream(n: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let status = if line.starts_with("GET /health ") {
                "200 OK"
            } else if line.contains("/api/v1/projects/") && line.contains("/offer ") {
                "422 Unprocessable Entity"
            } else {
                "404 Not Found"
            };
            let mut s = r.into_inner();
            write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                 Connection: close\r\n\r\n{{}}"
            )
            .unwrap();
            seen.push(line.trim().to_owned());
        }
        seen
    });
    (port, h)
}

#[test]
fn doctor_checks_proxy_modes_upstream_and_its_offer_endpoint() {
    let (port, seen) = upstream(2);
    let url = format!("http://127.0.0.1:{port}");
    let run = doctor(&mode_flags(&["--upstream-url", &url]));
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    assert_eq!(check_named(&doc, "UPSTREAM_URL")["status"], "ok", "{doc:#}");
    let offer = check_named(&doc, "upstream offer endpoint");
    assert_eq!(offer["status"], "ok", "{doc:#}");
    assert!(offer["detail"].as_str().unwrap().contains("422"), "{doc:#}");
    let seen = seen.join().unwrap();
    assert_eq!(seen[0], "GET /health HTTP/1.1");
    assert!(seen[1].starts_with("POST /api/v1/projects/"), "{seen:?}");

    // The upstream down: a failed check naming UPSTREAM_URL, and doctor fails.
    let closed = free_port();
    let run = doctor(&mode_flags(&[
        "--upstream-url",
        &format!("http://127.0.0.1:{closed}"),
    ]));
    assert!(!run.ok, "{}", run.stdout);
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    let up = check_named(&doc, "UPSTREAM_URL");
    assert_eq!(up["status"], "fail", "{doc:#}");
    assert!(
        up["detail"].as_str().unwrap().contains("cannot reach"),
        "{doc:#}"
    );
}

#[test]
fn doctor_allocates_with_relay_only_modes_static_users() {
    // No gateway runs: the doctor starts a relay with these settings, and the static user's
    // Allocate succeeds with its password; the allow list is reported.
    let run = doctor(&mode_flags(&[
        "--gateway-mode",
        "relay",
        "--turn-static-users",
        "user:password",
        "--turn-allowed-peers",
        "127.0.0.1/32",
    ]));
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    let user = check_named(&doc, "static user \"user\"");
    assert_eq!(user["status"], "ok", "{doc:#}");
    assert!(
        user["detail"].as_str().unwrap().contains("Allocate"),
        "{doc:#}"
    );
    let peers = check_named(&doc, "TURN_ALLOWED_PEERS");
    assert_eq!(peers["status"], "ok", "{doc:#}");
    assert!(
        peers["detail"].as_str().unwrap().contains("127.0.0.1/32"),
        "{doc:#}"
    );
}
