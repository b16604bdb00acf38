//! External TURN servers (COTURN_*, `turn:`/`turns:` entries of ICE_SERVERS): each
//! allocates a relay with the credentials browsers would be handed (minted with the shared
//! secret, or static). Over TCP and TLS, what restrictive firewalls let through; UDP entries
//! are listed as not checked.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::turn;
use super::{Report, Status, System, WAIT};
use crate::signaling::ice_servers::{IceServerPlan, ServerOrigin, TurnTarget};

/// Why an Allocate did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeError {
    /// The TURN error code, when the server answered with one.
    pub code: Option<u16>,
    /// What happened, for the report.
    pub message: String,
}

/// Reaching TURN servers (the network, or a fake in tests).
pub(crate) trait TurnProbe {
    /// `host` (IP literal or name) with `port`.
    async fn resolve_turn(&self, host: &str, port: u16) -> Option<SocketAddr>;
    /// Allocates (and releases) a relay on `addr` over TCP, or over TLS checking the
    /// certificate against `tls_name` when given.
    async fn allocate(
        &self,
        addr: SocketAddr,
        tls_name: Option<&str>,
        user: &str,
        pass: &str,
    ) -> Result<turn::Allocated, ProbeError>;
}

impl TurnProbe for System {
    async fn resolve_turn(&self, host: &str, port: u16) -> Option<SocketAddr> {
        super::resolve(host, port).await
    }

    async fn allocate(
        &self,
        addr: SocketAddr,
        tls_name: Option<&str>,
        user: &str,
        pass: &str,
    ) -> Result<turn::Allocated, ProbeError> {
        let other = |message: String| ProbeError {
            code: None,
            message,
        };
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                other(format!(
                    "no TCP connection to {addr} within {WAIT:?}: firewall?"
                ))
            })?
            .map_err(|e| other(format!("cannot connect to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match tls_name {
            None => allocate_over(tcp, user, pass).await,
            Some(name) => {
                let sn = ServerName::try_from(name.to_owned()).map_err(|e| other(e.to_string()))?;
                let cfg = client_config(system_roots())
                    .ok_or_else(|| other("no TLS client configuration".to_owned()))?;
                let s = tokio::time::timeout(
                    WAIT,
                    tokio_rustls::TlsConnector::from(cfg).connect(sn, tcp),
                )
                .await
                .map_err(|_| other("TLS handshake timed out".to_owned()))?
                .map_err(|e| other(format!("TLS handshake failed: {e}")))?;
                allocate_over(s, user, pass).await
            }
        }
    }
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

async fn allocate_over<S: turn::Stream>(
    s: S,
    user: &str,
    pass: &str,
) -> Result<turn::Allocated, ProbeError> {
    let mut c = turn::Client::with_credentials(s, user, pass, WAIT);
    let a = c.allocate().await.map_err(|e| ProbeError {
        code: e.code(),
        message: e.to_string(),
    })?;
    c.release().await;
    c.close().await;
    Ok(a)
}

/// What a target is called in the report: the setting and where it points.
fn label(t: &TurnTarget) -> String {
    match t.origin {
        ServerOrigin::CoturnSecret | ServerOrigin::CoturnStatic => format!(
            "COTURN_HOST {}:{} (TURN over TCP)",
            crate::signaling::ice_servers::bracket(&t.host),
            t.port
        ),
        ServerOrigin::IceServers(_) | ServerOrigin::StunServer => {
            format!("ICE_SERVERS {}", t.url)
        }
    }
}

/// Checks every external TURN URL of `ice`, with credentials minted at `now` (unix seconds).
pub(crate) async fn check(ice: &IceServerPlan, now: u64, net: &impl TurnProbe, r: &mut Report<'_>) {
    for t in ice.turn_targets("doctor", now) {
        let coturn = matches!(
            t.origin,
            ServerOrigin::CoturnSecret | ServerOrigin::CoturnStatic
        );
        if t.udp {
            // COTURN_HOST is listed for UDP and TCP; its TCP URL is the one checked.
            if !coturn {
                r.add(
                    Status::Warn,
                    label(&t),
                    "UDP entry not checked (doctor checks TCP and TLS, what firewalls let \
                     through)",
                );
            }
            continue;
        }
        let what = label(&t);
        let (user, pass) = match &t.credential {
            Ok(c) => c,
            Err(e) => {
                r.add(
                    Status::Fail,
                    what,
                    format!("no credential ({e}): fix {}", t.origin.credential_setting()),
                );
                continue;
            }
        };
        let Some(addr) = net.resolve_turn(&t.host, t.port).await else {
            r.add(Status::Fail, what, format!("cannot resolve {}", t.host));
            continue;
        };
        let tls_name = t.tls.then_some(t.host.as_str());
        match net.allocate(addr, tls_name, user, pass).await {
            Ok(a) => r.add(
                Status::Ok,
                what,
                match a.mapped {
                    Some(m) => format!(
                        "allocated a relay ({}) at {addr} with these credentials; it sees us \
                         at {m}",
                        a.relayed
                    ),
                    None => format!(
                        "allocated a relay ({}) at {addr} with these credentials",
                        a.relayed
                    ),
                },
            ),
            Err(e) if e.code == Some(401) => r.add(
                Status::Fail,
                what,
                format!(
                    "credentials rejected by {addr} ({}): {} does not match the server's \
                     secret or user",
                    e.message,
                    t.origin.credential_setting()
                ),
            ),
            Err(e) if e.message.contains(&addr.to_string()) => r.add(Status::Fail, what, e.message),
            Err(e) => r.add(Status::Fail, what, format!("{addr}: {}", e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;

    const SECRET: &str = "coturn-secret-0123456789";

    /// A TURN server that accepts REST credentials made with `secret`, or `static_user`;
    /// records what it was asked.
    struct FakeTurn {
        secret: auth::SecretRing,
        static_user: (&'static str, &'static str),
        resolves: bool,
        asked: Mutex<Vec<(SocketAddr, Option<String>)>>,
    }

    impl FakeTurn {
        fn new() -> Self {
            Self {
                secret: auth::SecretRing::parse(SECRET).unwrap(),
                static_user: ("u", "p"),
                resolves: true,
                asked: Mutex::new(Vec::new()),
            }
        }
    }

    impl TurnProbe for FakeTurn {
        async fn resolve_turn(&self, host: &str, port: u16) -> Option<SocketAddr> {
            let ip = if host == "coturn.example" {
                [192, 0, 2, 3].into()
            } else {
                host.parse().ok()?
            };
            self.resolves.then_some(SocketAddr::new(ip, port))
        }
        async fn allocate(
            &self,
            addr: SocketAddr,
            tls_name: Option<&str>,
            user: &str,
            pass: &str,
        ) -> Result<turn::Allocated, ProbeError> {
            self.asked
                .lock()
                .unwrap()
                .push((addr, tls_name.map(str::to_owned)));
            let ok = self.secret.verify(user, pass, 1_000_001).is_ok()
                || (user, pass) == self.static_user;
            if ok {
                Ok(turn::Allocated {
                    relayed: "192.0.2.3:50000".parse().unwrap(),
                    mapped: Some("198.51.100.1:4000".parse().unwrap()),
                    lifetime: 600,
                })
            } else {
                Err(ProbeError {
                    code: Some(401),
                    message: "the server answered 401 Unauthorized".into(),
                })
            }
        }
    }

    fn ice(args: &[&str]) -> IceServerPlan {
        let mut v = vec!["gateway"];
        v.extend_from_slice(args);
        crate::config::Cli::try_parse_from(v)
            .unwrap()
            .settings
            .plan()
            .unwrap()
            .ice
    }

    async fn run(plan: &IceServerPlan, net: &FakeTurn) -> Vec<super::super::Check> {
        let mut r = Report::collecting();
        check(plan, 1_000_000, net, &mut r).await;
        r.checks().to_vec()
    }

    #[tokio::test]
    async fn coturn_with_the_right_secret_passes() {
        let net = FakeTurn::new();
        let plan = ice(&[
            "--coturn-host",
            "coturn.example",
            "--coturn-port",
            "3479",
            "--coturn-secret",
            SECRET,
        ]);
        let c = run(&plan, &net).await;
        assert_eq!(
            c.len(),
            1,
            "the UDP URL of COTURN_HOST is not a separate check"
        );
        assert_eq!(c[0].status, Status::Ok, "{}", c[0]);
        assert_eq!(c[0].name, "COTURN_HOST coturn.example:3479 (TURN over TCP)");
        assert_eq!(
            net.asked.lock().unwrap().as_slice(),
            &[("192.0.2.3:3479".parse().unwrap(), None)]
        );
    }

    #[tokio::test]
    async fn coturn_with_a_wrong_secret_fails_naming_it() {
        let plan = ice(&[
            "--coturn-host",
            "coturn.example",
            "--coturn-secret",
            "not-the-secret-0123456789",
        ]);
        let c = run(&plan, &FakeTurn::new()).await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(
            c[0].detail.contains("COTURN_SECRET") && c[0].detail.contains("401"),
            "{}",
            c[0]
        );
        // Static credentials that are wrong name those settings instead.
        let plan = ice(&[
            "--coturn-host",
            "coturn.example",
            "--coturn-username",
            "u",
            "--coturn-password",
            "wrong",
        ]);
        let c = run(&plan, &FakeTurn::new()).await;
        assert!(
            c[0].detail.contains("COTURN_USERNAME/COTURN_PASSWORD"),
            "{}",
            c[0]
        );
    }

    #[tokio::test]
    async fn ice_servers_entries_tls_udp_and_unresolvable() {
        let plan = ice(&[
            "--ice-servers",
            r#"[{"urls":["turns:198.51.100.4","turn:198.51.100.4?transport=udp"],"username":"u","credential":"p"}]"#,
        ]);
        let net = FakeTurn::new();
        let c = run(&plan, &net).await;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].status, Status::Ok, "{}", c[0]);
        assert_eq!(c[0].name, "ICE_SERVERS turns:198.51.100.4");
        assert_eq!(c[1].status, Status::Warn);
        assert!(c[1].detail.contains("UDP entry not checked"));
        // turns: checks the certificate against the host, on the default TLS port.
        assert_eq!(
            net.asked.lock().unwrap().as_slice(),
            &[(
                "198.51.100.4:5349".parse().unwrap(),
                Some("198.51.100.4".to_owned())
            )]
        );
        let net = FakeTurn {
            resolves: false,
            ..FakeTurn::new()
        };
        let c = run(&plan, &net).await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].detail.contains("cannot resolve"), "{}", c[0]);
    }
}
