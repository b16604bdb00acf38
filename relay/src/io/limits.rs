//! Caps on concurrent connections, in all and per source address, for the TURN port and
//! (through the gateway) its HTTP servers: a client that opens connections without end
//! runs into a limit instead of into the process's file descriptors and memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::core::source_prefix;

/// Connection counters: total and per source (an IPv4 address, or the /64 of an IPv6
/// address: one host usually holds a whole /64). Touched on accept and close only.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    /// Only sources with open connections: bounded by `max_total`.
    per_ip: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The limit on all connections is reached.
    #[error("too many connections")]
    Total,
    /// The limit on connections from one address (IPv6: one /64) is reached.
    #[error("too many connections from this address")]
    PerIp,
}

/// One open connection's place; released when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections in all and `max_per_ip` from one address.
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            state: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a connection from `ip`, or why not. IPv4-mapped IPv6 counts as IPv4,
    /// and IPv6 addresses count per /64 ([`source_prefix`]).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let ip = source_prefix(ip);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = st.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        st.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, ip: IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_ip.remove(&ip);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_total() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.acquire(a).unwrap();
        let _a2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), Refused::PerIp);
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert_eq!(
            l.acquire("::ffff:10.0.0.1".parse().unwrap()).unwrap_err(),
            Refused::PerIp
        );
        let _b1 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), Refused::Total);
        assert_eq!(l.open(), 3);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _b2 = l.acquire(b).unwrap();
    }

    #[test]
    fn ipv6_counts_per_64() {
        let l = ConnectionLimits::new(100, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = l.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).unwrap();
        // A third host of the same /64 is the same source.
        assert_eq!(
            l.acquire(ip("2001:db8:1:2:1234::9")).unwrap_err(),
            Refused::PerIp
        );
        // The neighbouring /64 is another one.
        let _c = l.acquire(ip("2001:db8:1:3::1")).unwrap();
        // A closed connection frees its /64's place.
        drop(a);
        let _d = l.acquire(ip("2001:db8:1:2::77")).unwrap();
        assert_eq!(l.open(), 3);
        let st = l.state.lock().unwrap();
        assert_eq!(st.per_ip.len(), 2);
    }

    #[test]
    fn closed_addresses_are_forgotten() {
        let l = ConnectionLimits::new(10, 10);
        for i in 0..100u8 {
            drop(l.acquire(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        let st = l.state.lock().unwrap();
        assert_eq!((st.total, st.per_ip.len()), (0, 0));
    }
}
