//! `gateway doctor`: checks a machine and its settings before (or while) the gateway runs,
//! one line per check — `OK`, `WARN` or `FAIL`, what was found and, when not OK, the fix.
//! The exit status is 0 only when no check failed.
//!
//! Checks: every port bindable, or already served by this gateway (it answers `/health`);
//! the advertised address against what a STUN server sees; the certificate covers TURN_HOST
//! and does not expire within 14 days; each external TURN server (COTURN_*, `turn:` and
//! `turns:` entries of ICE_SERVERS) allocates with minted or static credentials; and a
//! forced-relay loop through the embedded relay (Allocate, CreatePermission, Send, Data).
//!
//! Settings the gateway shares with the original deployments (WEBRTC_*, STUN_SERVER,
//! COTURN_*, ICE_SERVERS) are read from the environment, as those deployments set them.

mod turn;

use crate::ice_url::{host_port, split_scheme, strip_scheme, Scheme};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Settings;
use crate::tls;

/// Bound on every network wait.
const WAIT: Duration = Duration::from_secs(5);
/// A certificate expiring sooner than this is reported.
const EXPIRY_MARGIN_SECS: i64 = 14 * 24 * 3600;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: the gateway will not work as configured.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// What was checked (names the setting).
    pub what: String,
    /// What was found, and the fix when not OK.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{s}  {}: {}", self.what, self.detail)
    }
}

struct Report<'a> {
    checks: Vec<Check>,
    out: &'a mut dyn std::io::Write,
}

impl Report<'_> {
    fn add(&mut self, status: Status, what: impl Into<String>, detail: impl Into<String>) {
        let c = Check {
            status,
            what: what.into(),
            detail: detail.into(),
        };
        let _ = writeln!(self.out, "{c}");
        let _ = self.out.flush();
        self.checks.push(c);
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Runs every check, printing each line to `out`; returns whether none failed.
pub async fn run(settings: &Settings, out: &mut dyn std::io::Write) -> bool {
    let mut r = Report {
        checks: Vec::new(),
        out,
    };
    let live = check_ports(settings, &mut r).await;
    check_advertised(&mut r).await;
    check_certificate(settings, &mut r);
    check_external_turn(&mut r).await;
    check_self_loop(settings, live, &mut r).await;
    let failed = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = r.checks.iter().filter(|c| c.status == Status::Warn).count();
    let _ = writeln!(
        r.out,
        "{} checks: {} failed, {} warnings",
        r.checks.len(),
        failed,
        warned
    );
    failed == 0
}

/// Where to connect to reach a listener bound to `addr` from this machine.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Whether a gateway answers `GET /health` with plain HTTP at `addr`.
async fn answers_health(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(reachable(addr)).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: doctor\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf);
        Some(text.starts_with("HTTP/1.1 200") && text.contains("\"status\""))
    };
    tokio::time::timeout(WAIT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn bind_error_fix(e: &std::io::Error, setting: &str, addr: SocketAddr) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied binding {addr}: ports below 1024 need root or \
             CAP_NET_BIND_SERVICE (`setcap cap_net_bind_service=+ep gateway`), or choose a \
             port >= 1024 for {setting}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: set {setting} to one of its addresses \
             or 0.0.0.0",
            addr.ip()
        ),
        _ => format!("cannot bind {addr}: {e}; fix {setting}"),
    }
}

/// Port checks; returns whether a gateway is already serving these settings.
async fn check_ports(s: &Settings, r: &mut Report<'_>) -> bool {
    let mut live = false;
    for (setting, addr) in [
        ("TURN_LISTEN", s.turn_listen),
        ("GATEWAY_HTTP_ADDR", s.gateway_http_addr),
    ] {
        let what = format!("{setting} {addr} (TCP)");
        match TcpListener::bind(addr) {
            Ok(l) => {
                drop(l);
                r.add(Status::Ok, what, "free: the gateway can listen here");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if answers_health(addr).await {
                    live = true;
                    r.add(
                        Status::Ok,
                        what,
                        "in use by this gateway (it answers /health)",
                    );
                } else {
                    r.add(
                        Status::Fail,
                        what,
                        format!(
                            "port {} is in use by another program (no gateway /health \
                             answer there): stop it (`ss -ltnp 'sport = :{}'` names it) or \
                             set {setting} to a free port",
                            addr.port(),
                            addr.port()
                        ),
                    );
                }
            }
            Err(e) => r.add(Status::Fail, what, bind_error_fix(&e, setting, addr)),
        }
    }
    if let Some(addr) = s.turn_udp_listen {
        let what = format!("TURN_UDP_LISTEN {addr} (UDP)");
        match UdpSocket::bind(addr) {
            Ok(_) => r.add(Status::Ok, what, "free"),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if live && turn::stun_binding(reachable(addr), WAIT).await.is_ok() {
                    r.add(Status::Ok, what, "in use by this gateway (it answers STUN)");
                } else {
                    r.add(
                        Status::Fail,
                        what,
                        format!(
                            "UDP port {} is in use by another program: stop it \
                             (`ss -lunp 'sport = :{}'`) or change TURN_UDP_LISTEN",
                            addr.port(),
                            addr.port()
                        ),
                    );
                }
            }
            Err(e) => r.add(
                Status::Fail,
                what,
                bind_error_fix(&e, "TURN_UDP_LISTEN", addr),
            ),
        }
    }
    let range = env("WEBRTC_PORT_RANGE").unwrap_or_else(|| "50000-50050".to_owned());
    let bind_ip: IpAddr = env("WEBRTC_BIND_IP")
        .and_then(|v| v.parse().ok())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let what = format!("WEBRTC_PORT_RANGE {range} (UDP on {bind_ip})");
    let parsed = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| a <= b);
    let Some((first, last)) = parsed else {
        r.add(
            Status::Fail,
            what,
            "not FIRST-LAST (e.g. 50000-50050): fix WEBRTC_PORT_RANGE",
        );
        return live;
    };
    let mut busy = Vec::new();
    let mut other = None;
    for p in first..=last {
        let a = SocketAddr::new(bind_ip, p);
        match UdpSocket::bind(a) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => busy.push(p),
            Err(e) => other = Some(bind_error_fix(&e, "WEBRTC_PORT_RANGE", a)),
        }
    }
    let total = usize::from(last - first) + 1;
    if let Some(fix) = other {
        r.add(Status::Fail, what, fix);
    } else if busy.is_empty() {
        r.add(Status::Ok, what, format!("all {total} ports free"));
    } else if live {
        r.add(
            Status::Ok,
            what,
            format!(
                "{} of {total} ports in use, by this running gateway",
                busy.len()
            ),
        );
    } else if busy.len() == total {
        r.add(
            Status::Fail,
            what,
            "every port is in use by another program: free them or choose another \
             WEBRTC_PORT_RANGE",
        );
    } else {
        r.add(
            Status::Warn,
            what,
            format!(
                "{} of {total} ports in use by another program (first {}): the gateway uses \
                 the free ones",
                busy.len(),
                busy.first().copied().unwrap_or_default()
            ),
        );
    }
    live
}

async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

async fn check_advertised(r: &mut Report<'_>) {
    let advertised = env("WEBRTC_ADVERTISE_IP");
    let Some(stun) = env("STUN_SERVER") else {
        match advertised {
            Some(a) => r.add(
                Status::Ok,
                "WEBRTC_ADVERTISE_IP",
                format!(
                    "{a} is advertised (set STUN_SERVER to have doctor compare it with what \
                     the internet sees)"
                ),
            ),
            None => r.add(
                Status::Warn,
                "WEBRTC_ADVERTISE_IP",
                "unset and no STUN_SERVER: the gateway advertises a local address, fine on a \
                 LAN; behind NAT or in a container set WEBRTC_ADVERTISE_IP to the public IP \
                 or set STUN_SERVER",
            ),
        }
        return;
    };
    let what = format!("STUN_SERVER {stun}");
    let stun = stun.trim();
    let rest = strip_scheme(stun, Scheme::Stun).unwrap_or(stun);
    let Some((host, port)) = host_port(rest, 3478) else {
        r.add(Status::Fail, what, "not HOST:PORT: fix STUN_SERVER");
        return;
    };
    let Some(server) = resolve(&host, port).await else {
        r.add(
            Status::Fail,
            what,
            format!("cannot resolve {host}: fix STUN_SERVER or DNS"),
        );
        return;
    };
    let seen = match turn::stun_binding(server, WAIT).await {
        Ok(a) => a,
        Err(e) => {
            r.add(
                Status::Fail,
                what,
                format!("no usable answer from {server} ({e}): is outbound UDP to it allowed?"),
            );
            return;
        }
    };
    match advertised {
        None => r.add(
            Status::Ok,
            what,
            format!(
                "this machine is seen at {}; the gateway will advertise it",
                seen.ip()
            ),
        ),
        Some(a) => match resolve(&a, 0).await {
            Some(ip) if ip.ip().to_canonical() == seen.ip().to_canonical() => r.add(
                Status::Ok,
                "WEBRTC_ADVERTISE_IP",
                format!("{a} matches the address {server} sees"),
            ),
            Some(ip) => r.add(
                Status::Fail,
                "WEBRTC_ADVERTISE_IP",
                format!(
                    "{a} ({}) differs from the address the STUN server sees ({}): browsers \
                     would try the wrong address; set WEBRTC_ADVERTISE_IP={} (or forward the \
                     media ports from {a})",
                    ip.ip(),
                    seen.ip(),
                    seen.ip()
                ),
            ),
            None => r.add(
                Status::Fail,
                "WEBRTC_ADVERTISE_IP",
                format!("cannot resolve {a}: fix WEBRTC_ADVERTISE_IP or DNS"),
            ),
        },
    }
}

fn check_certificate(s: &Settings, r: &mut Report<'_>) {
    let host = s.turn_host();
    let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) else {
        r.add(
            Status::Warn,
            "TLS_CERT",
            format!(
                "unset: a self-signed certificate for {host} is served; browsers refuse \
                 turns: and HTTPS with it. Set TLS_CERT/TLS_KEY to a certificate for {host}"
            ),
        );
        return;
    };
    let what = format!("TLS_CERT {}", cert.display());
    let (certs, k) = match tls::load_pem(cert, key) {
        Ok(x) => x,
        Err(e) => {
            r.add(Status::Fail, what, format!("{e:#}"));
            return;
        }
    };
    let leaf = certs.first().cloned();
    if let Err(e) = tls::server_config(certs, k) {
        r.add(Status::Fail, what, format!("{e:#}"));
        return;
    }
    let info = match leaf.as_ref().map(|c| tls::CertInfo::parse(c)) {
        Some(Ok(i)) => i,
        Some(Err(e)) => {
            r.add(Status::Fail, what, format!("{e:#}"));
            return;
        }
        None => return,
    };
    if info.covers(&host) {
        r.add(Status::Ok, what.clone(), format!("covers TURN_HOST {host}"));
    } else {
        r.add(
            Status::Fail,
            what.clone(),
            format!(
                "certificate for {} does not cover TURN_HOST {host}: browsers refuse \
                 turns:{host}; get a certificate for {host} or set TURN_HOST to a name it \
                 covers",
                info.names()
            ),
        );
    }
    let now = i64::try_from(relay::io::unix_now()).unwrap_or(i64::MAX);
    let days = (info.not_after - now) / 86_400;
    if info.not_after <= now {
        r.add(
            Status::Fail,
            what,
            "certificate has expired: renew it (the gateway reloads changed files)",
        );
    } else if info.not_before > now {
        r.add(
            Status::Fail,
            what,
            "certificate is not valid yet: check the clock or the certificate",
        );
    } else if info.not_after - now < EXPIRY_MARGIN_SECS {
        r.add(
            Status::Warn,
            what,
            format!("expires in {days} days: renew it soon (the gateway reloads changed files)"),
        );
    } else {
        r.add(Status::Ok, what, format!("valid for {days} more days"));
    }
}

/// An external TURN server to try.
struct External {
    label: String,
    host: String,
    port: u16,
    tls: bool,
    username: String,
    password: String,
    /// The setting that holds the credential (named in failures).
    cred_setting: &'static str,
}

fn mint(secret: &str) -> Option<(String, String)> {
    let ring = auth::SecretRing::parse(secret).ok()?;
    let c = ring.mint("doctor", relay::io::unix_now(), 600).ok()?;
    Some((c.username, c.password))
}

fn coturn(r: &mut Report<'_>, v: &mut Vec<External>) {
    let Some(host) = env("COTURN_HOST") else {
        return;
    };
    let port = env("COTURN_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3478);
    let cred = if let Some(secret) = env("COTURN_SECRET") {
        mint(&secret).map(|(u, p)| (u, p, "COTURN_SECRET"))
    } else {
        match (env("COTURN_USERNAME"), env("COTURN_PASSWORD")) {
            (Some(u), Some(p)) => Some((u, p, "COTURN_USERNAME/COTURN_PASSWORD")),
            _ => None,
        }
    };
    match cred {
        Some((username, password, cred_setting)) => v.push(External {
            label: format!("COTURN_HOST {host}:{port} (TURN over TCP)"),
            host,
            port,
            tls: false,
            username,
            password,
            cred_setting,
        }),
        None => r.add(
            Status::Fail,
            format!("COTURN_HOST {host}:{port}"),
            "no credentials: set COTURN_SECRET (coturn's static-auth-secret) or \
             COTURN_USERNAME and COTURN_PASSWORD",
        ),
    }
}

fn externals(r: &mut Report<'_>) -> Vec<External> {
    let mut v = Vec::new();
    coturn(r, &mut v);
    let Some(json) = env("ICE_SERVERS") else {
        return v;
    };
    let list: serde_json::Value = match serde_json::from_str(&json) {
        Ok(l) => l,
        Err(e) => {
            r.add(Status::Fail, "ICE_SERVERS", format!("not JSON: {e}"));
            return v;
        }
    };
    for entry in list.as_array().into_iter().flatten() {
        let urls: Vec<String> = match &entry["urls"] {
            serde_json::Value::String(u) => vec![u.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let cred = match (
            entry["secret"].as_str(),
            entry["username"].as_str(),
            entry["credential"].as_str(),
        ) {
            (Some(secret), _, _) => mint(secret),
            (None, Some(u), Some(p)) => Some((u.to_owned(), p.to_owned())),
            _ => None,
        };
        for url in urls {
            let lower = url.to_ascii_lowercase();
            let Some((scheme, rest)) = split_scheme(&url).filter(|(s, _)| s.is_turn()) else {
                continue;
            };
            let tls = scheme == Scheme::Turns;
            if lower.contains("transport=udp") {
                r.add(
                    Status::Warn,
                    format!("ICE_SERVERS {url}"),
                    "UDP entry not checked (doctor checks TCP and TLS, what firewalls let through)",
                );
                continue;
            }
            let Some((host, port)) = host_port(rest, if tls { 5349 } else { 3478 }) else {
                r.add(
                    Status::Fail,
                    format!("ICE_SERVERS {url}"),
                    "cannot read host and port",
                );
                continue;
            };
            match &cred {
                Some((u, p)) => v.push(External {
                    label: format!("ICE_SERVERS {url}"),
                    host,
                    port,
                    tls,
                    username: u.clone(),
                    password: p.clone(),
                    cred_setting: "its ICE_SERVERS secret or username/credential",
                }),
                None => r.add(
                    Status::Fail,
                    format!("ICE_SERVERS {url}"),
                    "no \"secret\" nor \"username\"/\"credential\": browsers cannot use it",
                ),
            }
        }
    }
    v
}

/// The trust store: the system's CA bundle (Debian `ca-certificates`).
fn system_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(iter) = CertificateDer::pem_file_iter(path) {
            for c in iter.flatten() {
                let _ = roots.add(c);
            }
            break;
        }
    }
    roots
}

fn client_config(roots: rustls::RootCertStore) -> Option<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(cfg))
}

/// Allocates on `addr` over TCP, or over TLS checking `name` against `roots`.
async fn try_allocate(
    addr: SocketAddr,
    tls: Option<(&str, rustls::RootCertStore)>,
    user: &str,
    pass: &str,
) -> Result<turn::Allocated, String> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no TCP connection to {addr} within {WAIT:?}: firewall?"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => allocate_over(tcp, user, pass).await,
        Some((name, roots)) => {
            let sn = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
            let cfg = client_config(roots).ok_or("no TLS client configuration")?;
            let s =
                tokio::time::timeout(WAIT, tokio_rustls::TlsConnector::from(cfg).connect(sn, tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
            allocate_over(s, user, pass).await
        }
    }
}

async fn allocate_over<S: turn::Stream>(
    s: S,
    user: &str,
    pass: &str,
) -> Result<turn::Allocated, String> {
    let mut c = turn::Client::new(s, user, pass, WAIT);
    let a = c.allocate().await.map_err(|e| e.to_string())?;
    c.release().await;
    c.close().await;
    Ok(a)
}

async fn check_external_turn(r: &mut Report<'_>) {
    for ext in externals(r) {
        let Some(addr) = resolve(&ext.host, ext.port).await else {
            r.add(
                Status::Fail,
                ext.label,
                format!("cannot resolve {}", ext.host),
            );
            continue;
        };
        let tls = ext.tls.then(|| (ext.host.as_str(), system_roots()));
        match try_allocate(addr, tls, &ext.username, &ext.password).await {
            Ok(a) => r.add(
                Status::Ok,
                ext.label,
                match a.mapped {
                    Some(m) => format!(
                        "allocated a relay ({}) with these credentials; it sees us at {m}",
                        a.relayed
                    ),
                    None => format!("allocated a relay ({}) with these credentials", a.relayed),
                },
            ),
            Err(e) if e.contains(" 401 ") => r.add(
                Status::Fail,
                ext.label,
                format!(
                    "credentials rejected ({e}): {} does not match the server's secret or user",
                    ext.cred_setting
                ),
            ),
            Err(e) => r.add(Status::Fail, ext.label, e),
        }
    }
}

/// A relay loop through the embedded relay: Allocate, CreatePermission to a local UDP
/// socket, Send indication, receive it, answer, Data indication.
async fn check_self_loop(s: &Settings, live: bool, r: &mut Report<'_>) {
    let what = "embedded relay loop";
    let ring = match s.secrets() {
        Ok(Some(ring)) => ring,
        Ok(None) if live => {
            r.add(
                Status::Warn,
                what,
                "not checked against the running gateway: TURN_SECRET is unset (random per \
                 start), so doctor cannot mint a credential it accepts",
            );
            return;
        }
        Ok(None) => match auth::SecretRing::parse(&format!("doctor-{}", rand::random::<u64>())) {
            Ok(r) => r,
            Err(_) => return,
        },
        Err(e) => {
            r.add(Status::Fail, what, e.to_string());
            return;
        }
    };
    let policy = match s.policy() {
        Ok(p) => p,
        Err(e) => {
            r.add(Status::Fail, what, e.to_string());
            return;
        }
    };
    let cred = match ring.mint("doctor", relay::io::unix_now(), 300) {
        Ok(c) => c,
        Err(e) => {
            r.add(Status::Fail, what, e.to_string());
            return;
        }
    };
    let peer = match tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await {
        Ok(p) => p,
        Err(e) => {
            r.add(
                Status::Fail,
                what,
                format!("cannot bind a local UDP peer: {e}"),
            );
            return;
        }
    };
    let Ok(peer_addr) = peer.local_addr() else {
        return;
    };
    // Without a running gateway: our own relay on TURN_LISTEN, with these settings' realm,
    // secret and policy.
    let mut own = None;
    let target = if live {
        reachable(s.turn_listen)
    } else {
        let shared = relay::core::Shared::new(
            relay::core::Config {
                realm: s.turn_realm.clone(),
                ..Default::default()
            },
            ring.clone(),
            policy.clone(),
            relay::core::NonceKey::random(),
        );
        // The peer stands in for the gateway's own media address, which the policy admits.
        shared.set_internal_peers(vec![peer_addr]);
        let io = relay::io::IoConfig {
            listen: s.turn_listen,
            relay_ipv4: Some(IpAddr::from([127, 0, 0, 1])),
            ..Default::default()
        };
        match relay::io::RelayServer::start(shared, io, None, None).await {
            Ok(server) => {
                let a = reachable(server.local_tcp());
                own = Some(server);
                a
            }
            Err(e) => {
                r.add(
                    Status::Fail,
                    what,
                    format!("cannot start the relay on TURN_LISTEN: {e}"),
                );
                return;
            }
        }
    };
    let data_path = !live || policy.check(peer_addr, &[]) == relay::core::PolicyVerdict::Allow;
    let result = self_loop(
        target,
        &cred.username,
        &cred.password,
        &peer,
        peer_addr,
        data_path,
    )
    .await;
    match result {
        Ok(None) => r.add(
            Status::Ok,
            what,
            format!(
                "Allocate over TCP on {target} works; data path not checked against the \
                 running gateway because its peer policy (rightly) refuses loopback peers"
            ),
        ),
        Ok(Some(relayed)) => r.add(
            Status::Ok,
            what,
            format!(
                "Allocate, CreatePermission, Send and Data through relay {relayed} on \
                 {target}: relayed both ways"
            ),
        ),
        Err(e) => r.add(Status::Fail, what, format!("{e} (relay at {target})")),
    }
    if let Some(mut server) = own {
        server.begin_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(2), server.drained()).await;
    }
}

async fn self_loop(
    target: SocketAddr,
    user: &str,
    pass: &str,
    peer: &tokio::net::UdpSocket,
    peer_addr: SocketAddr,
    data_path: bool,
) -> Result<Option<SocketAddr>, String> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(target))
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut c = turn::Client::new(tcp, user, pass, WAIT);
    let a = c
        .allocate()
        .await
        .map_err(|e| format!("Allocate failed: {e}"))?;
    if !data_path {
        c.release().await;
        c.close().await;
        return Ok(None);
    }
    c.create_permission(peer_addr)
        .await
        .map_err(|e| format!("CreatePermission to {peer_addr} failed: {e}"))?;
    let probe = b"gateway doctor probe";
    c.send_indication(peer_addr, probe)
        .await
        .map_err(|e| format!("Send failed: {e}"))?;
    let mut buf = [0u8; 256];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .map_err(|_| "the Send indication never reached the peer".to_owned())?
        .map_err(|e| e.to_string())?;
    if buf.get(..n) != Some(&probe[..]) {
        return Err("the peer received something else than was sent".to_owned());
    }
    peer.send_to(b"pong", from)
        .await
        .map_err(|e| e.to_string())?;
    let (p, data) = c
        .recv_data()
        .await
        .map_err(|e| format!("no Data indication back from the relay: {e}"))?;
    if p != peer_addr || data != b"pong" {
        return Err(format!("unexpected Data indication from {p}"));
    }
    c.release().await;
    c.close().await;
    Ok(Some(a.relayed))
}
