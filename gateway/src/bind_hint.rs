//! Start-up bind errors that name the fix: a privileged port refused to a normal user names
//! the three usual ways out, an address in use names the process holding it (found through
//! `/proc/net/*` and `/proc/*/fd`, bounded) when it can be found.

use std::net::SocketAddr;
use std::path::Path;

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP listener.
    Tcp,
    /// A UDP socket.
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// Most processes and descriptors looked at when searching for a port's owner.
const MAX_PIDS: usize = 8192;
const MAX_FDS: usize = 200_000;
/// Most lines read from one `/proc/net/*` table.
const MAX_SOCKET_LINES: usize = 200_000;

/// One line a person can act on, for `err` from binding `addr` (`setting` names it).
pub fn explain(setting: &str, proto: Proto, addr: SocketAddr, err: &std::io::Error) -> String {
    explain_with(
        setting,
        proto,
        addr,
        err,
        Path::new("/proc"),
        &binary_path(),
    )
}

/// [`explain`] reading process information from `proc` (tests point it elsewhere).
pub fn explain_with(
    setting: &str,
    proto: Proto,
    addr: SocketAddr,
    err: &std::io::Error,
    proc: &Path,
    binary: &str,
) -> String {
    let head = format!(
        "{setting}: cannot listen on {proto} {addr}: {}",
        io_reason(err)
    );
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => {
            let limit = unprivileged_port_start(proc);
            let alternative = suggest_port(addr.port());
            if addr.port() < limit {
                format!(
                    "{head}; ports below {limit} need privileges: grant the binary \
                     CAP_NET_BIND_SERVICE (sudo setcap 'cap_net_bind_service=+ep' {binary}), \
                     or run it as root, or set {setting} to a port >= {limit} \
                     (e.g. {setting}={})",
                    SocketAddr::new(addr.ip(), alternative)
                )
            } else {
                format!(
                    "{head}; the port is not privileged here, so a security policy (SELinux, \
                     AppArmor, a container or systemd sandbox) refuses it: allow it there or set \
                     {setting} to another address"
                )
            }
        }
        std::io::ErrorKind::AddrInUse => {
            let owner = match find_owner(proc, proto, addr.port()) {
                Some(o) => o,
                None => "unknown".to_owned(),
            };
            format!(
                "{head}; the port is held by {owner}: stop that process, or set {setting} \
                 to a free port"
            )
        }
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{head}; {} is not an address of this machine: set {setting} to one of its \
             addresses, or 0.0.0.0 for all",
            addr.ip()
        ),
        _ => format!("{head}; check {setting}"),
    }
}

/// The OS reason without the wrapping the relay adds ("cannot listen on TCP a: reason").
fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    let reason = match text.rsplit_once(": ") {
        Some((_, r)) if text.starts_with("cannot listen on") => r.to_owned(),
        _ => text,
    };
    reason.replace(['\n', '\r'], " ")
}

/// The path of this executable, for the `setcap` command line.
fn binary_path() -> String {
    std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/path/to/gateway".to_owned())
}

/// First unprivileged port (`net.ipv4.ip_unprivileged_port_start`, 1024 when unreadable).
fn unprivileged_port_start(proc: &Path) -> u16 {
    std::fs::read_to_string(proc.join("sys/net/ipv4/ip_unprivileged_port_start"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// An unprivileged port to suggest instead of `port` (443 -> 8443, 80 -> 8080).
fn suggest_port(port: u16) -> u16 {
    let p = 8000 + u32::from(port);
    if p <= 9999 && p != 9100 {
        p as u16
    } else {
        8443
    }
}

/// Who holds `port`: "pid N (comm)" when the socket's inode is among the fds this process
/// may read, else "a process of uid N" from the socket table, else `None`.
pub fn find_owner(proc: &Path, proto: Proto, port: u16) -> Option<String> {
    let tables: &[&str] = match proto {
        Proto::Tcp => &["net/tcp", "net/tcp6"],
        Proto::Udp => &["net/udp", "net/udp6"],
    };
    let mut sockets = Vec::new();
    for t in tables {
        if let Ok(text) = std::fs::read_to_string(proc.join(t)) {
            sockets.extend(parse_sockets(&text, proto, port));
        }
    }
    let first_uid = sockets.first()?.uid;
    if let Some(found) = owner_of_inodes(proc, &sockets) {
        return Some(found);
    }
    Some(format!("a process of uid {first_uid}"))
}

/// A socket from `/proc/net/{tcp,udp}{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketEntry {
    uid: u32,
    inode: u64,
}

/// Sockets bound to `port` in one table: TCP in state LISTEN (0A), UDP in any state.
/// Malformed lines are skipped.
fn parse_sockets(text: &str, proto: Proto, port: u16) -> Vec<SocketEntry> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).take(MAX_SOCKET_LINES) {
        let f: Vec<&str> = line.split_whitespace().take(10).collect();
        let Ok(f) = <[&str; 10]>::try_from(f) else {
            continue;
        };
        let Some((_, port_hex)) = f[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        if proto == Proto::Tcp && f[3] != "0A" {
            continue;
        }
        let (Ok(uid), Ok(inode)) = (f[7].parse::<u32>(), f[9].parse::<u64>()) else {
            continue;
        };
        if inode != 0 {
            out.push(SocketEntry { uid, inode });
        }
    }
    out
}

/// Scans `/proc/<pid>/fd` for a link `socket:[inode]` of one of `sockets` (bounded).
fn owner_of_inodes(proc: &Path, sockets: &[SocketEntry]) -> Option<String> {
    let targets: Vec<String> = sockets
        .iter()
        .map(|s| format!("socket:[{}]", s.inode))
        .collect();
    let mut fds_seen = 0usize;
    let entries = std::fs::read_dir(proc).ok()?;
    for entry in entries.flatten().take(MAX_PIDS) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            fds_seen += 1;
            if fds_seen > MAX_FDS {
                return None;
            }
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                let comm = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().chars().take(64).collect::<String>())
                    .unwrap_or_default();
                return Some(if comm.is_empty() {
                    format!("pid {pid}")
                } else {
                    format!("pid {pid} ({comm})")
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "cannot listen on TCP 0.0.0.0:443: Permission denied")
    }

    #[test]
    fn permission_denied_names_the_three_fixes() {
        let dir = tempdir();
        let m = explain_with(
            "TURN_LISTEN",
            Proto::Tcp,
            "0.0.0.0:443".parse().unwrap(),
            &err(std::io::ErrorKind::PermissionDenied),
            &dir,
            "/usr/local/bin/gateway",
        );
        assert!(
            m.starts_with("TURN_LISTEN: cannot listen on TCP 0.0.0.0:443: Permission denied;"),
            "{m}"
        );
        assert!(m.contains("CAP_NET_BIND_SERVICE"), "{m}");
        assert!(
            m.contains("setcap 'cap_net_bind_service=+ep' /usr/local/bin/gateway"),
            "{m}"
        );
        assert!(m.contains("as root"), "{m}");
        assert!(m.contains("TURN_LISTEN=0.0.0.0:8443"), "{m}");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn permission_denied_above_the_privileged_limit_blames_a_policy() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("sys/net/ipv4")).unwrap();
        std::fs::write(dir.join("sys/net/ipv4/ip_unprivileged_port_start"), "80\n").unwrap();
        let m = explain_with(
            "GATEWAY_HTTP_ADDR",
            Proto::Tcp,
            "0.0.0.0:443".parse().unwrap(),
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            &dir,
            "gw",
        );
        assert!(m.contains("security policy"), "{m}");
        assert!(!m.contains("setcap"), "{m}");
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:01BB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 5151 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:238C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1\n\
   garbage line\n\
   3: 0100007F:ZZZZ 00000000:0000 0A 0 0 0 0 0 1\n";

    #[test]
    fn socket_table_parsing_finds_listeners_only() {
        assert_eq!(
            parse_sockets(TCP, Proto::Tcp, 443),
            vec![SocketEntry {
                uid: 0,
                inode: 4242
            }]
        );
        assert_eq!(
            parse_sockets(TCP, Proto::Tcp, 9100),
            vec![SocketEntry {
                uid: 1000,
                inode: 777
            }]
        );
        assert!(parse_sockets(TCP, Proto::Tcp, 80).is_empty());
        // UDP has no LISTEN state: every bound socket counts.
        assert_eq!(parse_sockets(TCP, Proto::Udp, 443).len(), 2);
        assert!(parse_sockets("", Proto::Tcp, 443).is_empty());
    }

    #[test]
    fn owner_from_a_fake_proc_tree() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("net/tcp"), TCP).unwrap();
        // No process holds the inode: the uid from the table is all there is.
        assert_eq!(
            find_owner(&dir, Proto::Tcp, 443).as_deref(),
            Some("a process of uid 0")
        );
        let fd = dir.join("31337/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::fs::write(dir.join("31337/comm"), "nginx\n").unwrap();
        std::os::unix::fs::symlink("socket:[4242]", fd.join("3")).unwrap();
        assert_eq!(
            find_owner(&dir, Proto::Tcp, 443).as_deref(),
            Some("pid 31337 (nginx)")
        );
        assert_eq!(find_owner(&dir, Proto::Tcp, 80), None);
        let m = explain_with(
            "TURN_LISTEN",
            Proto::Tcp,
            "0.0.0.0:443".parse().unwrap(),
            &std::io::Error::from(std::io::ErrorKind::AddrInUse),
            &dir,
            "gw",
        );
        assert!(m.contains("held by pid 31337 (nginx)"), "{m}");
        assert!(m.contains("set TURN_LISTEN to a free port"), "{m}");
        let m = explain_with(
            "TURN_LISTEN",
            Proto::Tcp,
            "0.0.0.0:80".parse().unwrap(),
            &std::io::Error::from(std::io::ErrorKind::AddrInUse),
            &dir,
            "gw",
        );
        assert!(m.contains("held by unknown"), "{m}");
    }

    #[test]
    fn owner_on_this_machine_is_this_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let owner = find_owner(Path::new("/proc"), Proto::Tcp, port).unwrap();
        assert!(
            owner.starts_with(&format!("pid {} ", std::process::id())),
            "{owner}"
        );
    }

    #[test]
    fn suggestions_stay_unprivileged() {
        assert_eq!(suggest_port(443), 8443);
        assert_eq!(suggest_port(80), 8080);
        assert_eq!(suggest_port(1100), 8443);
        assert_eq!(suggest_port(2000), 8443);
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "gateway-bind-hint-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
