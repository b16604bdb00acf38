//! Caps on concurrent connections, in all and per source address, for the TURN port and
//! (through the gateway) its HTTP servers: a client that opens connections without end
//! runs into a limit instead of into the process's file descriptors and memory.
//!
//! A cap alone lets a few addresses that hold many connections (heads or bodies that never
//! finish, up to the request timeout) fill the total and keep everyone else out. Limits made
//! [`ConnectionLimits::shedding`] therefore make room when the total is full: a newcomer
//! whose address holds fewer connections than the busiest address closes that address's
//! oldest connection ([`ConnectionSlot::shed`] fires for it). Each address then keeps at most
//! a fair share of a full server, and a new client always gets in unless every address holds
//! as few as it would.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::core::source_prefix;

/// Connection counters: total and per source (an IPv4 address, or the /64 of an IPv6
/// address: one host usually holds a whole /64). Touched on accept and close only.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    /// Whether a newcomer may close the busiest address's oldest connection when full.
    shed: bool,
    /// Connections closed to make room, since start.
    shed_total: AtomicU64,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    /// Only sources with open connections: bounded by `max_total`.
    per_ip: HashMap<IpAddr, Source>,
    /// Id of the next slot: ids grow with time, so a source's smallest is its oldest.
    next_id: u64,
}

/// One source's open connections.
#[derive(Debug, Default)]
struct Source {
    open: u32,
    /// With shedding: the open connections' signals by id (oldest first).
    by_age: BTreeMap<u64, Arc<ShedSignal>>,
}

/// Fired for a connection that is closed to make room.
#[derive(Debug, Default)]
struct ShedSignal {
    /// Set (under the limits' lock) when the slot's place was given away: its drop must not
    /// release it a second time.
    fired: AtomicBool,
    notify: Notify,
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
    id: u64,
    signal: Option<Arc<ShedSignal>>,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections in all and `max_per_ip` from one address; when full,
    /// newcomers are refused.
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Self::build(max_total, max_per_ip, false)
    }

    /// Like [`ConnectionLimits::new`], but a newcomer finding the total full closes the
    /// oldest connection of the address holding the most, if that address holds at least
    /// two more than the newcomer's (see the module doc). For connections that are cheap to
    /// make again (HTTP); the owner of a slot must close its connection when
    /// [`ConnectionSlot::shed`] fires.
    pub fn shedding(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Self::build(max_total, max_per_ip, true)
    }

    fn build(max_total: u32, max_per_ip: u32, shed: bool) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            shed,
            shed_total: AtomicU64::new(0),
            state: Mutex::new(Counts::default()),
        })
    }

    /// A slot for a connection from `ip`, or why not. IPv4-mapped IPv6 counts as IPv4,
    /// and IPv6 addresses count per /64 ([`source_prefix`]).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let ip = source_prefix(ip);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = st.per_ip.get(&ip).map_or(0, |s| s.open);
        if mine >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        if st.total >= self.max_total && !(self.shed && self.shed_one(&mut st, ip, mine)) {
            return Err(Refused::Total);
        }
        let id = st.next_id;
        st.next_id += 1;
        let signal = self.shed.then(|| Arc::new(ShedSignal::default()));
        let src = st.per_ip.entry(ip).or_default();
        src.open += 1;
        if let Some(sig) = &signal {
            src.by_age.insert(id, sig.clone());
        }
        st.total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
            id,
            signal,
        })
    }

    /// Closes the oldest connection of the busiest source if it holds at least two more
    /// than `mine` (the newcomer's count at `newcomer`); whether a place was freed. One pass
    /// over the sources, only while the total is full.
    fn shed_one(&self, st: &mut Counts, newcomer: IpAddr, mine: u32) -> bool {
        let busiest = st
            .per_ip
            .iter()
            .filter(|(ip, s)| **ip != newcomer && s.open > mine.saturating_add(1))
            .max_by_key(|(_, s)| s.open)
            .map(|(ip, _)| *ip);
        let Some(victim) = busiest else {
            return false;
        };
        let Some(src) = st.per_ip.get_mut(&victim) else {
            return false;
        };
        let Some((_, sig)) = src.by_age.pop_first() else {
            return false;
        };
        sig.fired.store(true, Ordering::Release);
        sig.notify.notify_one();
        src.open = src.open.saturating_sub(1);
        if src.open == 0 {
            st.per_ip.remove(&victim);
        }
        st.total = st.total.saturating_sub(1);
        self.shed_total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Connections closed to make room for others, since start.
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    fn release(&self, ip: IpAddr, id: u64, signal: Option<&ShedSignal>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A shed slot's place was given away when it was shed (under this lock).
        if signal.is_some_and(|s| s.fired.load(Ordering::Acquire)) {
            return;
        }
        st.total = st.total.saturating_sub(1);
        if let Some(src) = st.per_ip.get_mut(&ip) {
            src.open = src.open.saturating_sub(1);
            src.by_age.remove(&id);
            if src.open == 0 {
                st.per_ip.remove(&ip);
            }
        }
    }
}

impl ConnectionSlot {
    /// Resolves when this connection is closed to make room for another
    /// ([`ConnectionLimits::shedding`]); never for limits that do not shed.
    pub async fn shed(&self) {
        match &self.signal {
            Some(sig) => {
                while !sig.fired.load(Ordering::Acquire) {
                    sig.notify.notified().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits
            .release(self.ip, self.id, self.signal.as_deref());
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
        drop(st);
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn fired(slot: &ConnectionSlot) -> bool {
        slot.signal
            .as_ref()
            .is_some_and(|s| s.fired.load(Ordering::Acquire))
    }

    #[test]
    fn a_full_server_sheds_the_busiest_address_oldest_first() {
        let l = ConnectionLimits::shedding(4, 4);
        let a: Vec<_> = (0..3).map(|_| l.acquire(ip(1)).unwrap()).collect();
        let b1 = l.acquire(ip(2)).unwrap();
        // Full: a newcomer from a third address closes a's oldest.
        let c1 = l.acquire(ip(3)).unwrap();
        assert!(fired(&a[0]) && !fired(&a[1]) && !fired(&a[2]) && !fired(&b1));
        assert_eq!((l.open(), l.shed_total()), (4, 1));
        // a now holds 2, c 1: 2 is not above 1 + 1, so c's second connection is refused and
        // nobody is shed for it.
        assert_eq!(l.acquire(ip(3)).unwrap_err(), Refused::Total);
        // A fourth address (0 open) sheds from a again (2 > 0 + 1).
        let _d1 = l.acquire(ip(4)).unwrap();
        assert!(fired(&a[1]) && !fired(&a[2]));
        // Now every address holds one: nothing to shed, the newcomer is refused.
        assert_eq!(l.acquire(ip(5)).unwrap_err(), Refused::Total);
        assert_eq!((l.open(), l.shed_total()), (4, 2));
        // Dropping a shed slot releases nothing a second time; dropping a live one does.
        drop(a);
        assert_eq!(l.open(), 3);
        drop((b1, c1));
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn an_address_never_sheds_its_own_connections_and_the_per_address_cap_holds() {
        let l = ConnectionLimits::shedding(3, 2);
        let _a1 = l.acquire(ip(1)).unwrap();
        let _a2 = l.acquire(ip(1)).unwrap();
        assert_eq!(l.acquire(ip(1)).unwrap_err(), Refused::PerIp);
        let b1 = l.acquire(ip(2)).unwrap();
        // Full (3): b (1) would not shed from a (2): 2 is not above 1 + 1.
        assert_eq!(l.acquire(ip(2)).unwrap_err(), Refused::Total);
        assert!(!fired(&b1));
        // Limits made with `new` never shed.
        let n = ConnectionLimits::new(2, 2);
        let _n1 = n.acquire(ip(1)).unwrap();
        let _n2 = n.acquire(ip(1)).unwrap();
        assert_eq!(n.acquire(ip(2)).unwrap_err(), Refused::Total);
        assert_eq!(n.shed_total(), 0);
    }

    #[tokio::test]
    async fn shed_resolves_for_the_shed_connection_only() {
        let l = ConnectionLimits::shedding(2, 2);
        let a1 = l.acquire(ip(1)).unwrap();
        let a2 = l.acquire(ip(1)).unwrap();
        let waiter = tokio::spawn(async move {
            a1.shed().await;
            a1
        });
        tokio::task::yield_now().await;
        let _b1 = l.acquire(ip(2)).unwrap();
        let a1 = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the shed connection is told")
            .unwrap();
        assert!(fired(&a1));
        // The other one is not: its shed() is still pending.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), a2.shed()).await;
        assert!(pending.is_err());
        drop(a1);
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn churn_under_shedding_keeps_the_counts_exact() {
        let l = ConnectionLimits::shedding(64, 64);
        let mut held = Vec::new();
        for round in 0..2_000u32 {
            let from = if round % 3 == 0 {
                ip(200)
            } else {
                ip((round % 17) as u8)
            };
            if let Ok(s) = l.acquire(from) {
                held.push(s);
            }
            // Close some, shed or not, in an order unrelated to age.
            if round % 5 == 0 && !held.is_empty() {
                let i = (round as usize * 7) % held.len();
                held.swap_remove(i);
            }
        }
        let live = held.iter().filter(|s| !fired(s)).count() as u32;
        assert_eq!(l.open(), live);
        drop(held);
        let st = l.state.lock().unwrap();
        assert_eq!((st.total, st.per_ip.len()), (0, 0));
    }
}
