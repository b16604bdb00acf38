//! Which IP the media engine writes into its host candidates (and, by default, into TURN
//! URLs), decided once at start-up:
//!
//! 1. `WEBRTC_ADVERTISE_IP` (an IP, or a DNS name resolved now);
//! 2. else the address a STUN server reports (`STUN_SERVER`, then `stun:` entries of
//!    `ICE_SERVERS`), asked with a Binding request sent from `WEBRTC_BIND_IP`;
//! 3. else `WEBRTC_BIND_IP` itself when it is a concrete address;
//! 4. else the machine's primary non-loopback IPv4 (the source address of the default
//!    route, else the first local address in `/proc/net/fib_trie`), else 127.0.0.1 with a
//!    warning.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{Message, MessageClass, MessageWriteVec, BINDING};
use stun_types::prelude::*;
use tokio::net::UdpSocket;

use crate::config::{MediaPlan, StunServerSetting};

/// Where the advertised address came from (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// WEBRTC_ADVERTISE_IP.
    Configured,
    /// A STUN server's answer.
    Stun,
    /// WEBRTC_BIND_IP.
    BindIp,
    /// The machine's interfaces.
    Interface,
    /// Nothing better: loopback.
    Loopback,
}

/// Decides the advertised IP (see the module docs) for a validated plan. Errors name the
/// setting.
pub async fn advertised_ip(media: &MediaPlan) -> anyhow::Result<(IpAddr, Origin)> {
    if let Some(host) = &media.advertise {
        return Ok((resolve(host, media.bind_ip).await?, Origin::Configured));
    }
    for probe in &media.stun_probes {
        let stun = &probe.server;
        match stun_public_ip(stun, media.bind_ip).await {
            Ok(ip) => {
                tracing::info!(stun = %stun.url(), %ip, "public address from STUN");
                return Ok((ip, Origin::Stun));
            }
            Err(e) => tracing::warn!(stun = %stun.url(), setting = probe.setting,
                error = %format!("{e:#}"), "the STUN server did not tell the public address"),
        }
    }
    if !media.bind_ip.is_unspecified() {
        return Ok((media.bind_ip, Origin::BindIp));
    }
    if let Some(ip) = primary_ipv4() {
        tracing::info!(%ip, "WEBRTC_ADVERTISE_IP not set: advertising this machine's address");
        return Ok((ip, Origin::Interface));
    }
    tracing::warn!(
        "WEBRTC_ADVERTISE_IP not set and no non-loopback address found: advertising \
         127.0.0.1, reachable from this machine only"
    );
    Ok((IpAddr::V4(Ipv4Addr::LOCALHOST), Origin::Loopback))
}

/// An IP literal, or the first address `host` resolves to (IPv4 preferred when binding IPv4).
async fn resolve(host: &str, bind: IpAddr) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((host, 0)))
            .await
            .map_err(|_| anyhow::anyhow!("WEBRTC_ADVERTISE_IP: resolving {host:?} timed out"))?
            .with_context(|| format!("WEBRTC_ADVERTISE_IP: cannot resolve {host:?}"))?
            .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .or(addrs.first())
        .map(|a| a.ip())
        .ok_or_else(|| anyhow::anyhow!("WEBRTC_ADVERTISE_IP: {host:?} resolves to nothing"))
}

/// Asks `server` for our public address with a STUN Binding request over UDP, sent from
/// `bind_ip` (three tries, 500 ms apart).
pub async fn stun_public_ip(server: &StunServerSetting, bind_ip: IpAddr) -> anyhow::Result<IpAddr> {
    let target = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((server.host.as_str(), server.port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("resolving {} timed out", server.host))?
    .with_context(|| format!("cannot resolve {}", server.host))?
    .find(|a| a.is_ipv4() == bind_ip.is_ipv4())
    .ok_or_else(|| anyhow::anyhow!("{} has no address of the bind IP's family", server.host))?;
    let sock = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
        .await
        .with_context(|| format!("cannot bind a UDP socket on {bind_ip}"))?;
    let mut request = Message::builder_request(BINDING, MessageWriteVec::new());
    let tid = request.transaction_id();
    request
        .add_fingerprint()
        .map_err(|e| anyhow::anyhow!("building the Binding request: {e}"))?;
    let request = request.finish();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&request, target).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from != target {
                continue;
            }
            let Some(Ok(msg)) = buf.get(..n).map(Message::from_bytes) else {
                continue;
            };
            if msg.transaction_id() != tid || msg.method() != BINDING {
                continue;
            }
            if msg.class() != MessageClass::Success {
                anyhow::bail!("{target} answered the Binding request with an error");
            }
            if let Ok(a) = msg.attribute::<XorMappedAddress>() {
                return Ok(a.addr(tid).ip());
            }
            anyhow::bail!("{target} answered without XOR-MAPPED-ADDRESS");
        }
    }
    anyhow::bail!("no answer from {target}")
}

/// The machine's primary IPv4: the source address the kernel would pick for the default
/// route (a UDP `connect` sends nothing), else the first non-loopback local address.
pub fn primary_ipv4() -> Option<IpAddr> {
    let via_route = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            // TEST-NET-1: nothing is sent, only a route lookup happens.
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    via_route.or_else(|| {
        std::fs::read_to_string("/proc/net/fib_trie")
            .ok()
            .and_then(|t| fib_trie_local_ipv4(&t).into_iter().next())
            .map(IpAddr::V4)
    })
}

/// Local (`/32 host LOCAL`) non-loopback IPv4 addresses listed in `/proc/net/fib_trie`.
fn fib_trie_local_ipv4(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("|-- ") {
            last = rest.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last {
                if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fib_trie() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.0.0/24 2 0 2\n        |-- 10.0.0.0\n           /24 link UNICAST\n        |-- 10.0.0.7\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n  |-- 10.0.0.7\n     /32 host LOCAL\n";
        assert_eq!(fib_trie_local_ipv4(t), vec![Ipv4Addr::new(10, 0, 0, 7)]);
    }
}
