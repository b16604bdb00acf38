//! Relayed addresses and the real UDP sockets behind them.
//!
//! An allocation's relayed address is *reserved* at Allocate time but its socket is bound
//! only when the client first sends to a peer that is not the gateway's own media: a
//! browser that talks only to the gateway (the common case) relays in-process and never
//! costs a socket, a file descriptor or a kernel hop. Reservations come from a process-wide
//! [`PortPool`] over the relay port range, so two allocations never share a port.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

use super::gso;
use super::stats::IoStats;
use crate::core::{Family, RelayPortError, RelayPorts};

/// An inclusive UDP port range: the one type and grammar of every port-range setting
/// (`TURN_RELAY_PORTS`, `WEBRTC_PORT_RANGE`): `FIRST-LAST` or a single port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}

impl PortRange {
    /// Whether two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// `"50000-50050"` or a single port `"50000"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let port = |p: &str| -> Result<u16, String> {
            p.trim().parse().map_err(|_| {
                format!(
                    "{p:?} is not a port number (want FIRST-LAST, e.g. 50000-50050, or one port)"
                )
            })
        };
        let (min, max) = (port(a)?, port(b)?);
        if min == 0 || min > max {
            return Err(format!(
                "port range {s:?} must be ascending and start above 0"
            ));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// The ports of the relay range currently reserved by allocations. Touched on Allocate
/// and on allocation end only.
#[derive(Debug)]
pub(crate) struct PortPool {
    range: PortRange,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    next: u32,
    used: HashSet<u16>,
}

impl PortPool {
    pub fn new(range: PortRange) -> Self {
        let span = u32::from(range.max - range.min) + 1;
        Self {
            range,
            state: Mutex::new(PoolState {
                next: rand::random::<u32>() % span,
                used: HashSet::new(),
            }),
        }
    }

    /// Reserves a free port (even when asked), round-robin so a port just released is not
    /// reused at once (late datagrams of the old allocation would reach the new one).
    fn reserve(&self, even: bool) -> Option<u16> {
        let span = u32::from(self.range.max - self.range.min) + 1;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..span {
            let offset = st.next % span;
            st.next = st.next.wrapping_add(1);
            let Ok(port) = u16::try_from(u32::from(self.range.min) + offset) else {
                continue;
            };
            if (even && port % 2 == 1) || st.used.contains(&port) {
                continue;
            }
            st.used.insert(port);
            return Some(port);
        }
        None
    }

    fn release(&self, port: u16) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.used.remove(&port);
    }
}

/// How relay addresses are made, shared by every client of a relay.
#[derive(Debug)]
pub(crate) struct RelayAddressing {
    /// Bind address for IPv4 relay sockets (`None`: no IPv4 relaying).
    pub ipv4: Option<IpAddr>,
    /// Bind address for IPv6 relay sockets (`None`: no IPv6 relaying).
    pub ipv6: Option<IpAddr>,
    /// Reserved ports; `None` binds at once on an OS-chosen port.
    pub pool: Option<PortPool>,
    /// Counters.
    pub stats: Arc<IoStats>,
    /// Whether runs of datagrams to one peer leave in one send.
    pub offload: gso::Offload,
}

/// The relayed address of one client (a client has at most one allocation) and, once
/// needed, its socket.
pub(crate) struct SocketPorts {
    addressing: Arc<RelayAddressing>,
    /// The local address the client reached; names the relayed address when the relay
    /// sockets bind to a wildcard address.
    local: IpAddr,
    /// The relayed address handed to the client, and the address to bind.
    reserved: Option<(SocketAddr, SocketAddr)>,
    /// The allocation's socket, once bound (the connection task receives on it).
    pub socket: Option<Arc<UdpSocket>>,
    /// A second handle on the same socket for sending. Sending on a non-blocking UDP
    /// socket needs no readiness tracking, and tokio reports none for a socket its reactor
    /// has not polled yet: its `try_send_to` would drop the first datagram after a bind.
    sender: Option<std::net::UdpSocket>,
    /// Datagrams queued for one peer by [`SocketPorts::queue_to`], until
    /// [`SocketPorts::flush`].
    run: gso::Run,
}

impl SocketPorts {
    pub fn new(addressing: Arc<RelayAddressing>, local: IpAddr) -> Self {
        Self {
            addressing,
            local: local.to_canonical(),
            reserved: None,
            socket: None,
            sender: None,
            run: gso::Run::default(),
        }
    }

    /// The relayed address a peer can reach for a socket bound on `bind`.
    fn advertised(&self, bind: SocketAddr) -> Result<SocketAddr, RelayPortError> {
        if !bind.ip().is_unspecified() {
            return Ok(bind);
        }
        // A wildcard bind has no address a peer could send to: name the relayed address
        // after the local address this client reached, when it is concrete and of the same
        // family.
        if self.local.is_unspecified() || self.local.is_ipv4() != bind.is_ipv4() {
            return Err(RelayPortError::Exhausted(format!(
                "relay sockets bind to {} and the client's local address {} cannot name the \
                 relayed address: set TURN_RELAY_IP",
                bind.ip(),
                self.local
            )));
        }
        Ok(SocketAddr::new(self.local, bind.port()))
    }

    /// Sends `data` to a real peer from the allocation's relayed address at once (see
    /// [`SocketPorts::queue_to`]). Returns false when the datagram was dropped.
    pub fn send_to(&mut self, data: &[u8], peer: SocketAddr) -> bool {
        self.queue_to(data, peer) + self.flush() == 0
    }

    /// Queues `data` for a real peer, to leave from the allocation's relayed address with
    /// the datagrams queued next to it (one send per run to one peer, see [`gso`]), at the
    /// latest on [`SocketPorts::flush`]. Binds the socket on first use. A datagram that
    /// cannot go (binding failed, logged; the socket buffer is full: UDP semantics) is
    /// dropped and counted. Returns how many were dropped now (queuing may send the run
    /// before it).
    pub fn queue_to(&mut self, data: &[u8], peer: SocketAddr) -> usize {
        if self.sender.is_none() && !self.bind() {
            return self.count_dropped(1);
        }
        let dropped = match &self.sender {
            Some(sock) => self.run.push(data, peer, sock, &self.addressing.offload),
            None => 0,
        };
        self.count_dropped(dropped)
    }

    /// Sends whatever [`SocketPorts::queue_to`] has queued. Returns how many were dropped.
    pub fn flush(&mut self) -> usize {
        if self.run.is_empty() {
            return 0;
        }
        let dropped = match &self.sender {
            Some(sock) => self.run.flush(sock, &self.addressing.offload),
            None => 0,
        };
        self.count_dropped(dropped)
    }

    /// Adds `n` to the relay's dropped-datagram counter; returns `n`.
    fn count_dropped(&self, n: usize) -> usize {
        if n > 0 {
            self.addressing
                .stats
                .peer_send_dropped
                .fetch_add(n as u64, Relaxed);
        }
        n
    }

    /// Binds the reserved relay port. False (logged) when it cannot.
    fn bind(&mut self) -> bool {
        let Some((relayed, bind)) = self.reserved else {
            return false;
        };
        match bind_pair(bind) {
            Ok((recv, send)) => {
                IoStats::inc(&self.addressing.stats.relay_sockets_opened);
                self.socket = Some(Arc::new(recv));
                self.sender = Some(send);
                true
            }
            Err(e) => {
                tracing::warn!(%relayed, error = %e, "cannot bind the reserved relay port; datagram dropped");
                false
            }
        }
    }
}

/// Socket buffers asked for on each relay socket (each way). Peers' datagrams queue in the
/// receive buffer while the allocation's task is busy or not scheduled, and one read from
/// a busy client yields dozens of datagrams sent back to back, which the kernel holds
/// against the send buffer until it has passed them on. The defaults (~208 KiB, about 90
/// full-size datagrams) overflowed at tens of thousands of packets per second: a full
/// send buffer fails the send (`EAGAIN`), and the datagram is lost without a trace in the
/// kernel's counters. The kernel caps these at `net.core.rmem_max`/`wmem_max` and charges
/// only what is queued.
const RELAY_SOCKET_BUFFER: usize = 1 << 20;

fn bind_nonblocking(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    // Best effort: smaller buffers still work.
    let sock = socket2::SockRef::from(&s);
    let _ = sock.set_recv_buffer_size(RELAY_SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(RELAY_SOCKET_BUFFER);
    Ok(s)
}

/// Binds `addr`: a tokio handle to receive on and a std handle (same socket) to send on.
fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, std::net::UdpSocket)> {
    let s = bind_nonblocking(addr)?;
    let send = s.try_clone()?;
    Ok((UdpSocket::from_std(s)?, send))
}

impl RelayPorts for SocketPorts {
    fn open(&mut self, family: Family, even: bool) -> Result<SocketAddr, RelayPortError> {
        let ip = match family {
            Family::V4 => self.addressing.ipv4,
            Family::V6 => self.addressing.ipv6,
        }
        .ok_or(RelayPortError::FamilyNotSupported)?;
        let Some(pool) = &self.addressing.pool else {
            // No range: bind now on an OS-chosen port (kept even when asked by binding
            // until the kernel hands out an even one).
            let mut odd = Vec::new();
            for _ in 0..16 {
                let (s, send) = bind_pair(SocketAddr::new(ip, 0))
                    .map_err(|e| RelayPortError::Exhausted(e.to_string()))?;
                let bound = s
                    .local_addr()
                    .map_err(|e| RelayPortError::Exhausted(e.to_string()))?;
                if even && bound.port() % 2 == 1 {
                    odd.push(s);
                    continue;
                }
                let relayed = self.advertised(bound)?;
                IoStats::inc(&self.addressing.stats.relay_sockets_opened);
                self.socket = Some(Arc::new(s));
                self.sender = Some(send);
                self.reserved = Some((relayed, bound));
                return Ok(relayed);
            }
            return Err(RelayPortError::Exhausted("no even port".into()));
        };
        let port = pool.reserve(even).ok_or_else(|| {
            RelayPortError::Exhausted(format!("every port of {} is reserved", pool.range))
        })?;
        let bind = SocketAddr::new(ip, port);
        match self.advertised(bind) {
            Ok(relayed) => {
                self.reserved = Some((relayed, bind));
                Ok(relayed)
            }
            Err(e) => {
                pool.release(port);
                Err(e)
            }
        }
    }

    fn close(&mut self, _relayed: SocketAddr) {
        self.flush();
        self.socket = None;
        self.sender = None;
        if let (Some((_, bind)), Some(pool)) = (self.reserved.take(), &self.addressing.pool) {
            pool.release(bind.port());
        }
    }
}

impl Drop for SocketPorts {
    fn drop(&mut self) {
        self.flush();
        if let (Some((_, bind)), Some(pool)) = (self.reserved.take(), &self.addressing.pool) {
            pool.release(bind.port());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing(ip: &str, range: Option<&str>) -> Arc<RelayAddressing> {
        Arc::new(RelayAddressing {
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
            pool: range.map(|r| PortPool::new(r.parse().unwrap())),
            stats: Arc::default(),
            offload: gso::Offload::new(),
        })
    }

    #[test]
    fn parses_ranges() {
        assert_eq!(
            "50000-50050".parse::<PortRange>(),
            Ok(PortRange {
                min: 50000,
                max: 50050
            })
        );
        assert!("5-1".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("70000-70001".parse::<PortRange>().is_err());
        // One grammar for every range setting: a single port is a range of one.
        assert_eq!(
            "50000".parse::<PortRange>(),
            Ok(PortRange {
                min: 50000,
                max: 50000
            })
        );
        assert!("é".parse::<PortRange>().is_err());
        let a = PortRange { min: 10, max: 20 };
        assert!(a.overlaps(&PortRange { min: 20, max: 30 }));
        assert!(!a.overlaps(&PortRange { min: 21, max: 30 }));
    }

    #[tokio::test]
    async fn reserves_inside_range_and_binds_lazily() {
        let a = addressing("127.0.0.1", Some("40000-40100"));
        let mut p = SocketPorts::new(a.clone(), "127.0.0.1".parse().unwrap());
        let r = p.open(Family::V4, true).unwrap();
        assert!((40000..=40100).contains(&r.port()));
        assert_eq!(r.port() % 2, 0);
        assert!(p.socket.is_none(), "no socket before the first real peer");
        assert_eq!(
            a.stats
                .relay_sockets_opened
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(p.send_to(b"first", peer.local_addr().unwrap()));
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"first"[..], r),
            "the first datagram is sent"
        );
        assert_eq!(p.socket.as_ref().unwrap().local_addr().unwrap(), r);
        assert_eq!(
            a.stats
                .relay_sockets_opened
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            p.open(Family::V6, false),
            Err(RelayPortError::FamilyNotSupported)
        );
    }

    #[test]
    fn pool_never_hands_out_a_port_twice() {
        let pool = PortPool::new("40000-40003".parse().unwrap());
        let mut got: Vec<u16> = (0..4).map(|_| pool.reserve(false).unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![40000, 40001, 40002, 40003]);
        assert_eq!(pool.reserve(false), None);
        pool.release(40001);
        assert_eq!(pool.reserve(true), None, "only an odd port is free");
        assert_eq!(pool.reserve(false), Some(40001));
    }

    #[tokio::test]
    async fn wildcard_bind_names_the_local_address() {
        let mut p = SocketPorts::new(addressing("0.0.0.0", None), "127.0.0.1".parse().unwrap());
        let a = p.open(Family::V4, true).unwrap();
        assert_eq!(a.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.port() % 2, 0);
        let mut p = SocketPorts::new(addressing("0.0.0.0", None), "0.0.0.0".parse().unwrap());
        assert!(p.open(Family::V4, false).is_err());
    }
}
