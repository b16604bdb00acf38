//! The gateway's own addresses, which the relay's peer policy refuses as peers on every port
//! but the media ports unless TURN_ALLOWED_PEERS names them as a host (DESIGN.md, *Peer
//! policy*): a broad allow list must not let a TURN client reach the gateway's HTTP API, its
//! TURN port or its relay ports through the relay.
//!
//! They are the advertised address (WEBRTC_ADVERTISE_IP or what STUN reported), every concrete
//! address in the settings (WEBRTC_BIND_IP, TURN_LISTEN, TURN_UDP_LISTEN, TURN_RELAY_IP,
//! GATEWAY_HTTP_ADDR, TURN_HOST when it is an IP) and every interface address of the machine
//! (`getifaddrs(3)`), read at start-up and again every [`REFRESH`] (DHCP, a new interface).

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use relay::core::Shared;

use crate::config::Settings;

/// How often the interface addresses are read again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Every address of the machine's interfaces (IPv4 and IPv6, loopback included), without
/// duplicates. Empty when the interfaces cannot be read (logged).
pub fn interface_addrs() -> Vec<IpAddr> {
    let ifaddrs = match nix::ifaddrs::getifaddrs() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the interface addresses (getifaddrs)");
            return Vec::new();
        }
    };
    let mut out: Vec<IpAddr> = ifaddrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The concrete addresses the settings name, and `advertised`.
pub fn configured_addrs(settings: &Settings, advertised: IpAddr) -> Vec<IpAddr> {
    let mut out = vec![
        advertised,
        settings.webrtc_bind_ip,
        settings.turn_listen.ip(),
        settings.turn_relay_ip,
        settings.gateway_http_addr.ip(),
    ];
    out.extend(settings.turn_udp_listen.map(|a| a.ip()));
    out.extend(
        settings
            .turn_host
            .as_deref()
            .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok()),
    );
    out.retain(|ip| !ip.is_unspecified());
    out.sort_unstable();
    out.dedup();
    out
}

/// Hands the relay its own addresses now, and again every [`REFRESH`] for as long as the
/// relay's shared state lives.
pub fn install(shared: &Arc<Shared>, settings: &Settings, advertised: IpAddr) {
    let configured = configured_addrs(settings, advertised);
    let all = |configured: &[IpAddr]| {
        let mut v = configured.to_vec();
        v.extend(interface_addrs());
        v
    };
    shared.set_own_addrs(all(&configured));
    tracing::debug!(own = ?shared.own_addrs(), "peer policy: the gateway's own addresses");
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else { break };
            if shared.set_own_addrs(all(&configured)) {
                tracing::info!(own = ?shared.own_addrs(), "the gateway's own addresses changed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_include_loopback() {
        // Every Linux network namespace has `lo` with 127.0.0.1 once it is up; CI runs
        // in one where it is.
        let addrs = interface_addrs();
        assert!(
            addrs.contains(&IpAddr::from([127, 0, 0, 1])),
            "getifaddrs found {addrs:?}"
        );
        let mut sorted = addrs.clone();
        sorted.dedup();
        assert_eq!(sorted, addrs, "no duplicates");
    }
}
