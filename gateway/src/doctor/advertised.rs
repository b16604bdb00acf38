//! The advertised address (WEBRTC_ADVERTISE_IP) against what a STUN server (STUN_SERVER,
//! else a `stun:` entry of ICE_SERVERS) sees of this machine.

use std::net::SocketAddr;

use super::{Report, Status, System, WAIT};
use crate::config::MediaPlan;

/// Name lookups and STUN Binding requests (the network, or a fake in tests).
pub(crate) trait Stun {
    /// `host` (IP literal or name) with `port`.
    async fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr>;
    /// The address `server` sees us at.
    async fn binding(&self, server: SocketAddr) -> Result<SocketAddr, String>;
}

impl Stun for System {
    async fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        super::resolve(host, port).await
    }

    async fn binding(&self, server: SocketAddr) -> Result<SocketAddr, String> {
        super::turn::stun_binding(server, WAIT)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Checks the advertised address of `media`.
pub(crate) async fn check(media: &MediaPlan, net: &impl Stun, r: &mut Report<'_>) {
    let advertised = media.advertise.as_deref();
    let Some(probe) = media.stun_probes.first() else {
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
    let (host, port) = (&probe.server.host, probe.server.port);
    let what = format!("{} {}", probe.setting, probe.server.url());
    let Some(server) = net.resolve(host, port).await else {
        r.add(
            Status::Fail,
            what,
            format!("cannot resolve {host}: fix {} or DNS", probe.setting),
        );
        return;
    };
    let seen = match net.binding(server).await {
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
    let Some(a) = advertised else {
        r.add(
            Status::Ok,
            what,
            format!(
                "this machine is seen at {}; the gateway will advertise it",
                seen.ip()
            ),
        );
        return;
    };
    match net.resolve(a, 0).await {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Plan;
    use clap::Parser;
    use std::collections::HashMap;
    use std::net::IpAddr;

    /// A resolver with fixed answers and a STUN server that sees us at `seen`.
    struct FakeStun {
        names: HashMap<&'static str, IpAddr>,
        seen: Option<IpAddr>,
    }

    impl Stun for FakeStun {
        async fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
            let ip = host
                .parse()
                .ok()
                .or_else(|| self.names.get(host).copied())?;
            Some(SocketAddr::new(ip, port))
        }
        async fn binding(&self, _: SocketAddr) -> Result<SocketAddr, String> {
            self.seen
                .map(|ip| SocketAddr::new(ip, 40000))
                .ok_or_else(|| "no answer within 5s".to_owned())
        }
    }

    fn plan(args: &[&str]) -> Plan {
        let mut v = vec!["gateway"];
        v.extend_from_slice(args);
        crate::config::Cli::try_parse_from(v)
            .unwrap()
            .settings
            .plan()
            .unwrap()
    }

    async fn run(args: &[&str], net: &FakeStun) -> Vec<super::super::Check> {
        let mut r = Report::collecting();
        check(&plan(args).media, net, &mut r).await;
        r.checks().to_vec()
    }

    fn net(seen: Option<&str>) -> FakeStun {
        FakeStun {
            names: HashMap::from([
                ("stun.example", IpAddr::from([192, 0, 2, 53])),
                ("media.example", IpAddr::from([203, 0, 113, 7])),
            ]),
            seen: seen.map(|s| s.parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn matching_address_passes() {
        let c = run(
            &[
                "--stun-server",
                "stun.example:3478",
                "--webrtc-advertise-ip",
                "media.example",
            ],
            &net(Some("203.0.113.7")),
        )
        .await;
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Ok, "{}", c[0]);
        assert!(c[0].detail.contains("matches"), "{}", c[0]);
        // Without an advertised address, what the STUN server sees is what will be used.
        let c = run(
            &["--stun-server", "stun.example"],
            &net(Some("203.0.113.7")),
        )
        .await;
        assert_eq!(c[0].status, Status::Ok);
        assert_eq!(c[0].name, "STUN_SERVER stun:stun.example:3478");
        assert!(c[0].detail.contains("seen at 203.0.113.7"), "{}", c[0]);
    }

    #[tokio::test]
    async fn a_different_address_fails_with_the_right_one() {
        let c = run(
            &[
                "--stun-server",
                "stun.example",
                "--webrtc-advertise-ip",
                "media.example",
            ],
            &net(Some("198.51.100.9")),
        )
        .await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(
            c[0].detail.contains("set WEBRTC_ADVERTISE_IP=198.51.100.9"),
            "{}",
            c[0]
        );
    }

    #[tokio::test]
    async fn unresolvable_or_silent_stun_server_fails() {
        let c = run(&["--stun-server", "nowhere.example"], &net(None)).await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(
            c[0].detail.contains("cannot resolve nowhere.example"),
            "{}",
            c[0]
        );
        let c = run(&["--stun-server", "stun.example"], &net(None)).await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].detail.contains("outbound UDP"), "{}", c[0]);
        // A stun: entry of ICE_SERVERS is asked when STUN_SERVER is unset, and named.
        let c = run(
            &["--ice-servers", r#"[{"urls":"stun:stun.example:19302"}]"#],
            &net(None),
        )
        .await;
        assert_eq!(c[0].name, "ICE_SERVERS stun:stun.example:19302");
    }

    #[tokio::test]
    async fn without_stun_the_setting_is_reported() {
        let c = run(&[], &net(None)).await;
        assert_eq!(c[0].status, Status::Warn);
        let c = run(&["--webrtc-advertise-ip", "203.0.113.7"], &net(None)).await;
        assert_eq!(c[0].status, Status::Ok);
    }
}
