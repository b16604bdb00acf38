//! The in-process short-circuit between the relay and the gateway's own media engine.
//!
//! When an allocation's peer is one of the gateway's media addresses, a datagram from the
//! TURN client is handed straight to the media engine ([`LocalMedia::deliver`]), and the
//! media engine's datagrams for a relayed address come straight back to that allocation's
//! connection task through [`InProcessRoutes`]. No relay socket, no kernel hop, no hairpin
//! NAT and no relay port range to publish.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::IoStats;

/// The gateway's media engine as the relay sees it.
pub trait LocalMedia: Send + Sync + 'static {
    /// Whether `peer`, as a TURN client names it, is one of the media engine's addresses.
    fn is_local(&self, peer: SocketAddr) -> bool;
    /// A datagram from the allocation `relayed` for the media address `peer`. Returns
    /// false when it was dropped (engine queue full).
    fn deliver(&self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) -> bool;
}

/// A datagram from the media engine for one allocation: (media address, payload).
pub type MediaDatagram = (SocketAddr, Vec<u8>);

/// Datagrams queued per allocation before new ones are dropped (UDP semantics).
pub(crate) const ROUTE_QUEUE: usize = 512;

/// Allocations reachable from the media engine, by relayed address.
///
/// A sharded concurrent map: the media engine's lookup per datagram takes one shard's read
/// lock, inserting and removing (on allocation create and delete) one shard's write lock.
/// It was a copy-on-write map once: lock-free reads, but every allocation copied the whole
/// map (and bumped every sender's count), O(allocations) per Allocate, which made setting
/// up thousands of allocations quadratic (22 % of the set-up CPU at 6,000, in a profile).
#[derive(Default)]
pub struct InProcessRoutes {
    map: DashMap<SocketAddr, mpsc::Sender<MediaDatagram>>,
    stats: Arc<IoStats>,
}

impl InProcessRoutes {
    pub(crate) fn new(stats: Arc<IoStats>) -> Self {
        Self {
            map: DashMap::new(),
            stats,
        }
    }

    /// Whether `relayed` is the relayed address of a live allocation.
    pub fn owns(&self, relayed: SocketAddr) -> bool {
        self.map.contains_key(&relayed)
    }

    /// Hands a datagram from the media address `from` to the allocation `relayed` (moved,
    /// not copied). Returns false when there is no such allocation or its queue is full.
    pub fn deliver(&self, from: SocketAddr, relayed: SocketAddr, data: Vec<u8>) -> bool {
        let len = data.len();
        let ok = self
            .map
            .get(&relayed)
            .is_some_and(|tx| tx.try_send((from, data)).is_ok());
        if ok {
            self.stats
                .inprocess_from_media_packets
                .fetch_add(1, Relaxed);
            self.stats
                .inprocess_from_media_bytes
                .fetch_add(len as u64, Relaxed);
        } else {
            IoStats::inc(&self.stats.inprocess_dropped);
        }
        ok
    }

    pub(crate) fn insert(&self, relayed: SocketAddr, tx: mpsc::Sender<MediaDatagram>) {
        self.map.insert(relayed, tx);
    }

    pub(crate) fn remove(&self, relayed: SocketAddr) {
        self.map.remove(&relayed);
    }

    /// Number of allocations reachable in-process.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no allocation is reachable in-process.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-process deliveries of one read, counted locally and added to the shared counters
/// once per batch rather than once per packet.
#[derive(Default)]
pub(crate) struct ToMedia {
    packets: u64,
    bytes: u64,
    dropped: u64,
}

impl ToMedia {
    pub(crate) fn note(&mut self, delivered: bool, len: usize) {
        if delivered {
            self.packets += 1;
            self.bytes += len as u64;
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn flush(self, stats: &IoStats) {
        if self.packets > 0 {
            stats
                .inprocess_to_media_packets
                .fetch_add(self.packets, Relaxed);
            stats
                .inprocess_to_media_bytes
                .fetch_add(self.bytes, Relaxed);
        }
        if self.dropped > 0 {
            stats.inprocess_dropped.fetch_add(self.dropped, Relaxed);
        }
    }
}

/// One connection's registration: its relayed address in the routes while allocated, and
/// the receiving end of its queue. Removed from the routes when dropped.
pub(crate) struct Route {
    routes: Arc<InProcessRoutes>,
    relayed: Option<SocketAddr>,
    pub rx: Option<mpsc::Receiver<MediaDatagram>>,
}

impl Route {
    pub fn new(routes: Arc<InProcessRoutes>) -> Self {
        Self {
            routes,
            relayed: None,
            rx: None,
        }
    }

    /// Keeps the registration in step with the client's allocation.
    pub fn sync(&mut self, relayed: Option<SocketAddr>) {
        if self.relayed == relayed {
            return;
        }
        if let Some(old) = self.relayed.take() {
            self.routes.remove(old);
            self.rx = None;
        }
        if let Some(new) = relayed {
            let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
            self.routes.insert(new, tx);
            self.relayed = Some(new);
            self.rx = Some(rx);
        }
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(old) = self.relayed.take() {
            self.routes.remove(old);
        }
    }
}

/// Receives the next in-process datagram, or never completes without a route.
pub(crate) async fn recv(route: &mut Route) -> Option<MediaDatagram> {
    match &mut route.rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn route_follows_the_allocation() {
        let routes = Arc::new(InProcessRoutes::new(Arc::default()));
        let a: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:50002".parse().unwrap();
        let media: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let mut r = Route::new(routes.clone());
        assert!(!routes.deliver(media, a, b"x".to_vec()));
        r.sync(Some(a));
        assert!(routes.owns(a));
        assert!(routes.deliver(media, a, b"hello".to_vec()));
        assert_eq!(recv(&mut r).await, Some((media, b"hello".to_vec())));
        r.sync(Some(b));
        assert!(!routes.owns(a) && routes.owns(b));
        drop(r);
        assert!(routes.is_empty());
    }
}
