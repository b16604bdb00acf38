//! Port checks: TURN_LISTEN and GATEWAY_HTTP_ADDR (TCP), TURN_UDP_LISTEN and every port of
//! WEBRTC_PORT_RANGE (UDP) can be bound, or are held by this gateway already running.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{reachable, Report, Status, System, WAIT};
use crate::config::Plan;

/// Binding and probing ports (the real sockets, or a fake in tests).
pub(crate) trait Binder {
    /// Binds a TCP listener on `addr` and closes it.
    fn bind_tcp(&self, addr: SocketAddr) -> io::Result<()>;
    /// Binds a UDP socket on `addr` and closes it.
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<()>;
    /// Whether a gateway answers `GET /health` on `addr`.
    async fn answers_health(&self, addr: SocketAddr) -> bool;
    /// Whether a STUN server answers a Binding request on UDP `addr`.
    async fn answers_stun(&self, addr: SocketAddr) -> bool;
}

impl Binder for System {
    fn bind_tcp(&self, addr: SocketAddr) -> io::Result<()> {
        std::net::TcpListener::bind(addr).map(drop)
    }

    fn bind_udp(&self, addr: SocketAddr) -> io::Result<()> {
        std::net::UdpSocket::bind(addr).map(drop)
    }

    async fn answers_health(&self, addr: SocketAddr) -> bool {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(reachable(addr)).await.ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: doctor\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            // A /health answer is small; read at most 64 KiB of whatever answers.
            let mut buf = Vec::new();
            let _ = (&mut s).take(64 * 1024).read_to_end(&mut buf).await;
            let text = String::from_utf8_lossy(&buf);
            Some(text.starts_with("HTTP/1.1 200") && text.contains("\"status\""))
        };
        tokio::time::timeout(WAIT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    async fn answers_stun(&self, addr: SocketAddr) -> bool {
        super::turn::stun_binding(reachable(addr), WAIT)
            .await
            .is_ok()
    }
}

fn bind_error_fix(e: &io::Error, setting: &str, addr: SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "permission denied binding {addr}: ports below 1024 need root or \
             CAP_NET_BIND_SERVICE (`setcap cap_net_bind_service=+ep gateway`), or choose a \
             port >= 1024 for {setting}"
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine: set {setting} to one of its addresses \
             or 0.0.0.0",
            addr.ip()
        ),
        _ => format!("cannot bind {addr}: {e}; fix {setting}"),
    }
}

/// Port checks; returns whether a gateway is already serving these settings.
pub(crate) async fn check(plan: &Plan, b: &impl Binder, r: &mut Report<'_>) -> bool {
    let mut live = false;
    for (setting, addr) in [
        ("TURN_LISTEN", plan.io.listen),
        ("GATEWAY_HTTP_ADDR", plan.settings.gateway_http_addr),
    ] {
        let what = format!("{setting} {addr} (TCP)");
        match b.bind_tcp(addr) {
            Ok(()) => r.add(Status::Ok, what, "free: the gateway can listen here"),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if b.answers_health(addr).await {
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
    if let Some(addr) = plan.io.udp_listen {
        let what = format!("TURN_UDP_LISTEN {addr} (UDP)");
        match b.bind_udp(addr) {
            Ok(()) => r.add(Status::Ok, what, "free"),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if live && b.answers_stun(addr).await {
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
    let (range, bind_ip) = (plan.media.ports, plan.media.bind_ip);
    let what = format!("WEBRTC_PORT_RANGE {range} (UDP on {bind_ip})");
    let mut busy = Vec::new();
    let mut other = None;
    for p in range.min..=range.max {
        let a = SocketAddr::new(bind_ip, p);
        match b.bind_udp(a) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => busy.push(p),
            Err(e) => other = Some(bind_error_fix(&e, "WEBRTC_PORT_RANGE", a)),
        }
    }
    let total = usize::from(range.max - range.min) + 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    /// Ports with a fixed outcome; everything else binds. `health`: a gateway answers.
    #[derive(Default)]
    struct FakePorts {
        tcp: HashMap<u16, io::ErrorKind>,
        udp: HashMap<u16, io::ErrorKind>,
        health: bool,
        stun: bool,
    }

    impl Binder for FakePorts {
        fn bind_tcp(&self, addr: SocketAddr) -> io::Result<()> {
            self.tcp
                .get(&addr.port())
                .map_or(Ok(()), |k| Err((*k).into()))
        }
        fn bind_udp(&self, addr: SocketAddr) -> io::Result<()> {
            self.udp
                .get(&addr.port())
                .map_or(Ok(()), |k| Err((*k).into()))
        }
        async fn answers_health(&self, _: SocketAddr) -> bool {
            self.health
        }
        async fn answers_stun(&self, _: SocketAddr) -> bool {
            self.stun
        }
    }

    fn plan(extra: &[&str]) -> Plan {
        let mut args = vec![
            "gateway",
            "--turn-listen",
            "127.0.0.1:4443",
            "--gateway-http-addr",
            "127.0.0.1:9100",
            "--webrtc-port-range",
            "50000-50003",
        ];
        args.extend_from_slice(extra);
        crate::config::Cli::try_parse_from(args)
            .unwrap()
            .settings
            .plan()
            .unwrap()
    }

    async fn run(plan: &Plan, b: &FakePorts) -> (bool, Vec<super::super::Check>) {
        let mut r = Report::collecting();
        let live = check(plan, b, &mut r).await;
        (live, r.checks().to_vec())
    }

    #[tokio::test]
    async fn free_ports_pass() {
        let p = plan(&["--turn-udp-listen", "127.0.0.1:3478"]);
        let (live, checks) = run(&p, &FakePorts::default()).await;
        assert!(!live);
        assert_eq!(checks.len(), 4);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
        assert!(checks[0].name.starts_with("TURN_LISTEN 127.0.0.1:4443"));
        assert_eq!(checks[3].detail, "all 4 ports free");
    }

    #[tokio::test]
    async fn a_port_held_by_another_program_fails_and_names_the_setting() {
        let mut b = FakePorts::default();
        b.tcp.insert(9100, io::ErrorKind::AddrInUse);
        let (live, checks) = run(&plan(&[]), &b).await;
        assert!(!live);
        let c = &checks[1];
        assert_eq!(c.status, Status::Fail);
        assert!(c.name.starts_with("GATEWAY_HTTP_ADDR"), "{c}");
        assert!(c.detail.contains("in use by another program"), "{c}");
    }

    #[tokio::test]
    async fn ports_held_by_this_gateway_pass_and_mark_it_live() {
        let mut b = FakePorts {
            health: true,
            stun: true,
            ..Default::default()
        };
        b.tcp.insert(4443, io::ErrorKind::AddrInUse);
        b.tcp.insert(9100, io::ErrorKind::AddrInUse);
        b.udp.insert(3478, io::ErrorKind::AddrInUse);
        b.udp.insert(50001, io::ErrorKind::AddrInUse);
        let p = plan(&["--turn-udp-listen", "127.0.0.1:3478"]);
        let (live, checks) = run(&p, &b).await;
        assert!(live);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
        assert!(checks[3]
            .detail
            .contains("1 of 4 ports in use, by this running gateway"));
        // The same UDP port without a STUN answer belongs to someone else.
        b.stun = false;
        let (_, checks) = run(&p, &b).await;
        assert_eq!(checks[2].status, Status::Fail, "{checks:?}");
    }

    #[tokio::test]
    async fn media_ports_partly_or_fully_taken() {
        let mut b = FakePorts::default();
        b.udp.insert(50002, io::ErrorKind::AddrInUse);
        let (_, checks) = run(&plan(&[]), &b).await;
        assert_eq!(checks[2].status, Status::Warn);
        assert!(checks[2].detail.contains("(first 50002)"), "{}", checks[2]);
        for p in 50000..=50003 {
            b.udp.insert(p, io::ErrorKind::AddrInUse);
        }
        let (_, checks) = run(&plan(&[]), &b).await;
        assert_eq!(checks[2].status, Status::Fail);
    }

    #[tokio::test]
    async fn privileged_port_and_foreign_address_explain_the_fix() {
        let mut b = FakePorts::default();
        b.tcp.insert(4443, io::ErrorKind::PermissionDenied);
        b.udp.insert(50000, io::ErrorKind::AddrNotAvailable);
        let (_, checks) = run(&plan(&[]), &b).await;
        assert_eq!(checks[0].status, Status::Fail);
        assert!(
            checks[0].detail.contains("CAP_NET_BIND_SERVICE"),
            "{}",
            checks[0]
        );
        assert_eq!(checks[2].status, Status::Fail);
        assert!(
            checks[2]
                .detail
                .contains("is not an address of this machine"),
            "{}",
            checks[2]
        );
    }
}
