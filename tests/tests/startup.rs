//! Start-up errors of the real `gateway` binary (GATEWAY_BIN, else the one built beside this
//! test) are one line that names the setting and the fix: port 443 refused to an
//! unprivileged user names CAP_NET_BIND_SERVICE (setcap), root and another TURN_LISTEN port;
//! a port already held names the process holding it (this test). Everything on loopback.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::coturn::{free_udp_range, gateway_bin};
use gateway_tests::free_tcp_port;

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("Uid line")
}

/// Runs the gateway (through `wrapper`, e.g. setpriv, when given) with everything on loopback
/// and `turn_listen`, expects it to exit with failure within 30 s and returns its stderr.
fn run_to_failure(
    bin: &std::path::Path,
    wrapper: &[&str],
    turn_listen: &str,
    http: Option<&str>,
) -> String {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let http = http
        .map(str::to_owned)
        .unwrap_or_else(|| format!("127.0.0.1:{}", free_tcp_port()));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TURN_LISTEN", turn_listen)
        .env("GATEWAY_HTTP_ADDR", http)
        .env("TURN_SECRET", "startup-test-secret")
        .env("TURN_RELAY_IP", "127.0.0.1")
        .env("WEBRTC_PORT_RANGE", free_udp_range())
        .env("WEBRTC_BIND_IP", "127.0.0.1")
        .env("WEBRTC_ADVERTISE_IP", "127.0.0.1")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gateway");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not stop within 30 s (it should fail to bind)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "the gateway started: {err}");
    // Logs are off; the error is the one line of the gateway's own (the video encoder
    // library may print its own warnings before it).
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gateway")).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one line from the gateway on stderr, got: {err}"
    );
    assert!(lines[0].starts_with("gateway: "), "{err}");
    lines[0].to_owned()
}

#[test]
fn privileged_port_as_unprivileged_user_names_the_three_fixes() {
    let limit: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    assert!(
        limit > 443,
        "net.ipv4.ip_unprivileged_port_start is {limit}: port 443 is not privileged on this \
         machine, so this test cannot provoke the error"
    );
    // Tests run as root in CI: drop to nobody for the gateway. Run as a normal user, the
    // gateway is unprivileged already.
    let wrapper: &[&str] = if effective_uid() == 0 {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    // The checkout may sit where nobody cannot reach it (/root): run a copy from a
    // world-readable temporary directory.
    let dir = std::env::temp_dir().join(format!("gateway-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("gateway");
    std::fs::copy(gateway_bin(), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = std::panic::catch_unwind(|| run_to_failure(&copy, wrapper, "127.0.0.1:443", None));
    std::fs::remove_dir_all(&dir).unwrap();
    let line = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let bin = copy.display();
    for want in [
        "TURN_LISTEN: cannot listen on TCP 127.0.0.1:443",
        "CAP_NET_BIND_SERVICE",
        &format!("setcap 'cap_net_bind_service=+ep' {bin}"),
        "run it as root",
        "set TURN_LISTEN to a port >= ",
        "TURN_LISTEN=127.0.0.1:8443",
    ] {
        assert!(line.contains(want), "{want:?} missing in: {line}");
    }
}

#[test]
fn port_in_use_names_the_process_holding_it() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let me = format!("held by pid {} (", std::process::id());

    let line = run_to_failure(&gateway_bin(), &[], &addr, None);
    assert!(
        line.contains(&format!("TURN_LISTEN: cannot listen on TCP {addr}")),
        "{line}"
    );
    assert!(line.contains(&me), "{me:?} missing in: {line}");
    assert!(line.contains("set TURN_LISTEN to a free port"), "{line}");

    // The same for the HTTP port (bound after the relay).
    let turn = format!("127.0.0.1:{}", free_tcp_port());
    let line = run_to_failure(&gateway_bin(), &[], &turn, Some(&addr));
    assert!(
        line.contains(&format!("GATEWAY_HTTP_ADDR: cannot listen on TCP {addr}")),
        "{line}"
    );
    assert!(line.contains(&me), "{me:?} missing in: {line}");
    assert!(
        line.contains("set GATEWAY_HTTP_ADDR to a free port"),
        "{line}"
    );
    drop(held);
}
