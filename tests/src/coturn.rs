//! Debian's coturn (`turnserver`) on loopback for tests: TCP only, TURN REST credentials
//! (`use-auth-secret`, `static-auth-secret`), on a free port, ready when it accepts TCP
//! connections, killed on drop. `./tests/run` installs the `coturn` package. Also the
//! `gateway` binary under test and free loopback ports for running it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `turnserver`.
pub struct Coturn {
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Coturn {
    /// Starts coturn with `secret` as its `static-auth-secret` and waits (at most 10 s) until
    /// it accepts connections. Panics when `turnserver` is missing or does not start.
    pub fn start(secret: &str) -> Self {
        assert!(
            Command::new("turnserver")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "turnserver is missing: install Debian's coturn (./tests/run does)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("test-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("coturn dir");
        let conf = dir.join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 use-auth-secret\nstatic-auth-secret={secret}\nrealm=coturn.test\nno-udp\n\
                 no-dtls\nno-tls\nno-cli\nfingerprint\nno-multicast-peers\n\
                 pidfile={}\nuserdb={}\nlog-file=stdout\n",
                dir.join("pid").display(),
                dir.join("db").display()
            ),
        )
        .expect("coturn config");
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        let mut coturn = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = coturn.child.try_wait() {
                panic!("turnserver exited at start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "coturn did not accept connections within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `gateway` binary under test: GATEWAY_BIN, else the one built beside the running test
/// (`target/<profile>/deps/<test>` → `target/<profile>/gateway`).
pub fn gateway_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("gateway"))
        .expect("target dir")
}

/// Four consecutive free UDP ports on loopback (`FIRST-LAST`), for a media port range.
pub fn free_udp_range() -> String {
    for _ in 0..200 {
        let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(first) = s.local_addr().map(|a| a.port()) else {
            continue;
        };
        drop(s);
        if first > 65_000 {
            continue;
        }
        let free = (first..first + 4).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free {
            return format!("{first}-{}", first + 3);
        }
    }
    panic!("no free UDP port range")
}
