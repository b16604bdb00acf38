//! Per-client traffic and drop counters. The data path counts into plain local fields and
//! flushes them into the shared atomic [`crate::core::Stats`] in batches, so relaying a
//! packet never touches a shared cache line.

use std::time::{Duration, Instant};

use super::super::stats::{Direction, DropReason};
use super::{after, Client};

/// Local counters are flushed into the shared ones after this many packets…
const FLUSH_EVERY: u32 = 64;
/// …or this long after the first unflushed one.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// Per-client counters, flushed into the shared atomics in batches.
#[derive(Debug, Default)]
pub(super) struct LocalStats {
    c2p_packets: u64,
    c2p_bytes: u64,
    p2c_packets: u64,
    p2c_bytes: u64,
    dropped: [u64; DropReason::ALL.len()],
    pending: u32,
    pub(super) flush_at: Option<Instant>,
}

impl Client {
    // ---------------------------------------------------------------- counters

    fn tick(&mut self, now: Instant) {
        if self.local.pending == 0 {
            self.local.flush_at = Some(after(now, FLUSH_AFTER));
        }
        self.local.pending += 1;
        if self.local.pending >= FLUSH_EVERY {
            self.flush_stats();
        }
    }

    pub(super) fn count_relay(&mut self, dir: Direction, bytes: usize, now: Instant) {
        let b = bytes as u64;
        match dir {
            Direction::ClientToPeer => {
                self.local.c2p_packets += 1;
                self.local.c2p_bytes += b;
            }
            Direction::PeerToClient => {
                self.local.p2c_packets += 1;
                self.local.p2c_bytes += b;
            }
        }
        self.tick(now);
    }

    pub(super) fn count_drop(&mut self, why: DropReason, now: Instant) {
        if let Some(i) = DropReason::ALL.iter().position(|d| *d == why) {
            if let Some(c) = self.local.dropped.get_mut(i) {
                *c += 1;
            }
        }
        self.tick(now);
    }

    /// Pushes the local counters into the shared [`crate::core::Stats`].
    pub fn flush_stats(&mut self) {
        let l = std::mem::take(&mut self.local);
        let stats = self.shared.stats();
        let t = self.tuple.transport;
        if l.c2p_packets > 0 {
            stats.add_traffic(Direction::ClientToPeer, t, l.c2p_packets, l.c2p_bytes);
        }
        if l.p2c_packets > 0 {
            stats.add_traffic(Direction::PeerToClient, t, l.p2c_packets, l.p2c_bytes);
        }
        for (why, n) in DropReason::ALL.iter().zip(l.dropped) {
            if n > 0 {
                stats.add_dropped(*why, n);
            }
        }
    }
}
