//! Counters of the shell (the core counts protocol events in [`crate::core::Stats`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Connection-level counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct IoStats {
    /// TCP connections accepted on the TURN port.
    pub connections_accepted: AtomicU64,
    /// Connections (and new UDP clients) refused by the per-source or total limit.
    pub connections_refused: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// TLS connections closed before their handshake because their source address (or
    /// everyone) had the most handshakes in flight already.
    pub tls_handshakes_refused: AtomicU64,
    /// Connections closed because they sent nothing usable before the handshake timeout.
    pub handshake_timeouts: AtomicU64,
    /// Connections (and UDP clients) closed for not authenticating in time.
    pub unauthenticated_timeouts: AtomicU64,
    /// Streams handed to the HTTP server.
    pub http_handoffs: AtomicU64,
    /// Datagrams dropped by the UDP listener because their client's queue was full.
    pub udp_dropped: AtomicU64,
    /// UDP clients (source addresses with client state and a task) now: a gauge, not in
    /// [`IoStats::snapshot`] (which holds counters only).
    pub udp_clients: AtomicU64,
    /// Relay UDP sockets bound (allocations that talked to a peer other than the gateway's
    /// own media).
    pub relay_sockets_opened: AtomicU64,
    /// Datagrams handed from allocations to the media engine in-process.
    pub inprocess_to_media_packets: AtomicU64,
    /// Bytes handed from allocations to the media engine in-process.
    pub inprocess_to_media_bytes: AtomicU64,
    /// Datagrams handed from the media engine to allocations in-process.
    pub inprocess_from_media_packets: AtomicU64,
    /// Bytes handed from the media engine to allocations in-process.
    pub inprocess_from_media_bytes: AtomicU64,
    /// In-process datagrams dropped (queue full, no such allocation).
    pub inprocess_dropped: AtomicU64,
    /// Datagrams for peers dropped by a relay socket: its send buffer was full, or it
    /// could not be bound.
    pub peer_send_dropped: AtomicU64,
}

impl IoStats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Every counter as `(name, value)`, for exporters.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "connections_accepted",
                self.connections_accepted.load(Relaxed),
            ),
            (
                "connections_refused",
                self.connections_refused.load(Relaxed),
            ),
            ("tls_handshakes", self.tls_handshakes.load(Relaxed)),
            ("tls_failures", self.tls_failures.load(Relaxed)),
            (
                "tls_handshakes_refused",
                self.tls_handshakes_refused.load(Relaxed),
            ),
            ("handshake_timeouts", self.handshake_timeouts.load(Relaxed)),
            ("http_handoffs", self.http_handoffs.load(Relaxed)),
            (
                "unauthenticated_timeouts",
                self.unauthenticated_timeouts.load(Relaxed),
            ),
            ("udp_dropped", self.udp_dropped.load(Relaxed)),
            (
                "relay_sockets_opened",
                self.relay_sockets_opened.load(Relaxed),
            ),
            (
                "inprocess_to_media_packets",
                self.inprocess_to_media_packets.load(Relaxed),
            ),
            (
                "inprocess_to_media_bytes",
                self.inprocess_to_media_bytes.load(Relaxed),
            ),
            (
                "inprocess_from_media_packets",
                self.inprocess_from_media_packets.load(Relaxed),
            ),
            (
                "inprocess_from_media_bytes",
                self.inprocess_from_media_bytes.load(Relaxed),
            ),
            ("inprocess_dropped", self.inprocess_dropped.load(Relaxed)),
            ("peer_send_dropped", self.peer_send_dropped.load(Relaxed)),
        ]
    }
}
