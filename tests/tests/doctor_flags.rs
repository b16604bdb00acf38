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
