//! The settings file (`GATEWAY_CONFIG` / `--config`) as the real binary reads it, in an
//! environment holding only PATH: the file sets what nothing else does, an environment
//! variable wins over it, a flag wins over both, and a bad file stops the binary with one
//! line naming the file and the key. `gateway credentials` prints the effective
//! TURN_CREDENTIAL_TTL as its `ttl`.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gateway_tests::coturn::gateway_bin;

struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "gateway-config-file-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `gateway [args] credentials --user u` with only PATH and `env` in the environment.
fn credentials(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(gateway_bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .args(["credentials", "--user", "u"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the gateway binary")
}

fn ttl(out: &Output) -> u64 {
    assert!(
        out.status.success(),
        "gateway credentials failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    doc["ttl"].as_u64().expect("ttl")
}

fn path(f: &TempFile) -> &str {
    Path::new(&f.0).to_str().unwrap()
}

#[test]
fn file_then_environment_then_flag() {
    let f = TempFile::new(
        "turn_secret = \"config-file-test-secret-0123456789\"\n\
         turn_credential_ttl = 555\n\
         [streams]\n\
         cam = \"testsrc\"\n",
    );
    // The file, named by the flag or by the environment.
    assert_eq!(ttl(&credentials(&["--config", path(&f)], &[])), 555);
    assert_eq!(ttl(&credentials(&[], &[("GATEWAY_CONFIG", path(&f))])), 555);
    // The environment wins over the file.
    let env = [("GATEWAY_CONFIG", path(&f)), ("TURN_CREDENTIAL_TTL", "777")];
    assert_eq!(ttl(&credentials(&[], &env)), 777);
    // A flag wins over both.
    assert_eq!(
        ttl(&credentials(&["--turn-credential-ttl", "999"], &env)),
        999
    );
}

#[test]
fn a_bad_file_stops_the_binary_with_one_line_naming_it() {
    for (text, want) in [
        (
            "turn_credential_tll = 5\n",
            "unknown setting `turn_credential_tll`",
        ),
        ("turn_credential_ttl = \"soon\"\n", "`turn_credential_ttl`"),
        ("turn_credential_ttl = \n", "not valid TOML"),
    ] {
        let f = TempFile::new(text);
        let out = credentials(&["--config", path(&f)], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(out.stdout.is_empty(), "{text:?}: printed a document anyway");
        assert_eq!(err.trim_end().lines().count(), 1, "{text:?}: {err}");
        assert!(
            err.starts_with(&format!("gateway: GATEWAY_CONFIG ({})", path(&f)))
                && err.contains(want),
            "{text:?}: {err}"
        );
    }
    // A file that is not there.
    let out = credentials(&["--config", "/nonexistent/gateway.toml"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/gateway.toml") && err.contains("cannot open"),
        "{err}"
    );
}

/// deploy/gateway.toml.example loads and makes a valid plan, so what the README points
/// operators to works as written.
#[test]
fn the_example_file_is_a_valid_plan() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/gateway.toml.example"
    );
    let cli =
        gateway::config_file::load_from(vec!["gateway".into(), "--config".into(), example.into()])
            .unwrap_or_else(|e| panic!("{example}: {e:?}"));
    assert_eq!(
        cli.settings.turn_host.as_deref(),
        Some("gateway.example.com")
    );
    assert_eq!(cli.settings.streams.len(), 1);
    if let Err(e) = cli.settings.plan() {
        panic!("{example}: {e}");
    }
}
