//! A small jitter buffer for RTP ingest: puts packets that arrive out of order back in
//! sequence order before they are depacketized.
//!
//! On a LAN or a loopback, RTP arrives in order nearly always; through a switch with several
//! paths, Wi-Fi, or a sender's pacer, a few packets overtake each other. Without reordering,
//! the depacketizer would see a gap, drop the frame in progress and every frame up to the next
//! keyframe (seconds with a long keyframe interval), and then throw the late packet away.
//!
//! The rule: a packet is released as soon as every packet before it has been (in order); a
//! missing packet is waited for at most [`MAX_WAIT`] after a later one arrived, and at most
//! [`WINDOW`] packets are held. After that the hole is skipped (the depacketizer then sees the
//! gap and counts the loss), and a packet for a skipped slot that still arrives is late and
//! dropped. Duplicates are dropped. Sans-I/O: time is passed in, so it is tested with a fake
//! clock; memory is bounded by [`WINDOW`] held items.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most packets held while a missing one is awaited.
pub const WINDOW: usize = 32;
/// Longest wait for a missing packet, from the arrival of the first packet after it.
pub const MAX_WAIT: Duration = Duration::from_millis(50);
/// This many late packets in a row mean the sender's sequence restarted behind the current
/// one (a restarted sender with the same SSRC): the buffer follows the new numbering.
const RESYNC_AFTER_LATE: usize = 2 * WINDOW;

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Taken: released by [`JitterBuffer::pop`] in sequence order.
    Held,
    /// Its slot was released or skipped already (too late, or a duplicate of a released
    /// packet): dropped.
    Late,
    /// The same sequence number is held already: dropped.
    Duplicate,
}

/// Counters (monotonic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived after a later one and were put back in order.
    pub reordered: u64,
    /// Sequence numbers skipped (never arrived within the window).
    pub skipped: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Packets dropped as duplicates of a held one.
    pub duplicates: u64,
}

/// Reorders items (RTP packets) by their 16-bit sequence number; see the module doc.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    /// Sequence number of `held[0]` (the next one to release); `None` before the first packet.
    next: Option<u16>,
    /// Slots from `next` on: an item and when it arrived, or a hole.
    held: VecDeque<Option<(T, Instant)>>,
    /// Items released from `held` ahead of their turn (a jump past the window), in order.
    ready: VecDeque<(u16, T)>,
    /// Late packets in a row (see [`RESYNC_AFTER_LATE`]).
    late_run: usize,
    stats: JitterStats,
}

impl<T> Default for JitterBuffer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> JitterBuffer<T> {
    /// An empty buffer.
    pub fn new() -> Self {
        JitterBuffer {
            next: None,
            held: VecDeque::with_capacity(WINDOW),
            ready: VecDeque::new(),
            late_run: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Items held (waiting for a missing packet) or ready.
    pub fn len(&self) -> usize {
        self.held.iter().flatten().count() + self.ready.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget everything (a new stream starts): the next packet sets the numbering.
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
        self.ready.clear();
        self.late_run = 0;
    }

    /// Take packet `seq` arriving at `now`.
    pub fn push(&mut self, seq: u16, item: T, now: Instant) -> Pushed {
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next) as i16;
        if ahead < 0 {
            self.late_run += 1;
            if self.late_run < RESYNC_AFTER_LATE {
                self.stats.late += 1;
                return Pushed::Late;
            }
            // The numbering restarted behind: release what is held, follow the new one.
            self.flush_held();
            self.next = Some(seq);
        }
        self.late_run = 0;
        let next = self.next.unwrap_or(seq);
        let mut offset = usize::from(seq.wrapping_sub(next));
        if offset >= WINDOW {
            // Past the window: give up the oldest slots (released in order, holes lost) so
            // that this packet is the window's last; numbers past the held slots never came.
            let skip = offset + 1 - WINDOW;
            let from_held = skip.min(self.held.len());
            for _ in 0..from_held {
                self.release_front();
            }
            self.stats.skipped += (skip - from_held) as u64;
            self.next = Some(next.wrapping_add(skip as u16));
            offset = WINDOW - 1;
        }
        if self.held.len() <= offset {
            self.held.resize_with(offset + 1, || None);
        }
        let overtaken = self.held.iter().skip(offset + 1).any(Option::is_some);
        match self.held.get_mut(offset) {
            Some(slot @ None) => {
                if overtaken {
                    self.stats.reordered += 1;
                }
                *slot = Some((item, now));
                Pushed::Held
            }
            _ => {
                self.stats.duplicates += 1;
                Pushed::Duplicate
            }
        }
    }

    /// The next packet in order, if it may go now: it is next in sequence, or the packets
    /// before it are given up (held for [`MAX_WAIT`], or the window is full).
    pub fn pop(&mut self, now: Instant) -> Option<(u16, T)> {
        if let Some(r) = self.ready.pop_front() {
            return Some(r);
        }
        let next = self.next?;
        if let Some(Some(_)) = self.held.front() {
            let (item, _) = self.held.pop_front().flatten()?;
            self.next = Some(next.wrapping_add(1));
            return Some((next, item));
        }
        // A hole first: skip it once the wait is over.
        let due = self.deadline().is_some_and(|d| now >= d);
        if !due {
            return None;
        }
        while let Some(None) = self.held.front() {
            self.held.pop_front();
            self.stats.skipped += 1;
            self.next = self.next.map(|n| n.wrapping_add(1));
        }
        self.pop(now)
    }

    /// When [`JitterBuffer::pop`] will give up the hole at the front, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.ready.is_empty() || !matches!(self.held.front(), Some(None)) {
            return None;
        }
        self.held
            .iter()
            .flatten()
            .map(|(_, t)| *t)
            .min()
            .map(|t| t + MAX_WAIT)
    }

    /// Release the front slot to `ready` (a hole counts as skipped).
    fn release_front(&mut self) {
        let Some(next) = self.next else {
            return;
        };
        match self.held.pop_front() {
            Some(Some((item, _))) => self.ready.push_back((next, item)),
            Some(None) => self.stats.skipped += 1,
            None => {}
        }
        self.next = Some(next.wrapping_add(1));
    }

    /// Release every held slot to `ready` (holes count as skipped).
    fn flush_held(&mut self) {
        while !self.held.is_empty() {
            self.release_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: `at(ms)` is `ms` milliseconds after a fixed start.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn clock() -> Clock {
        Clock(Instant::now())
    }

    /// Everything `pop` releases at `now`.
    fn drain(j: &mut JitterBuffer<u16>, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        while let Some((seq, item)) = j.pop(now) {
            assert_eq!(seq, item, "an item comes out with its own sequence number");
            out.push(seq);
        }
        out
    }

    /// Push `seqs` at `now`, then drain.
    fn feed(j: &mut JitterBuffer<u16>, seqs: &[u16], now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        for &s in seqs {
            j.push(s, s, now);
            out.extend(drain(j, now));
        }
        out
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[10, 11, 12], c.at(0)), [10, 11, 12]);
        assert!(j.is_empty());
        assert_eq!(j.deadline(), None);
        assert_eq!(j.stats(), JitterStats::default());
    }

    #[test]
    fn reordered_packets_are_put_back_in_order() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[1, 3, 4], c.at(0)), [1]);
        assert_eq!(j.len(), 2);
        assert_eq!(j.deadline(), Some(c.at(0) + MAX_WAIT));
        // 2 comes 10 ms later, within the wait: everything goes, in order.
        assert_eq!(feed(&mut j, &[2], c.at(10)), [2, 3, 4]);
        assert_eq!(feed(&mut j, &[6, 5], c.at(11)), [5, 6]);
        assert_eq!(j.stats().reordered, 2);
        assert_eq!(j.stats().skipped, 0);
    }

    #[test]
    fn a_loss_is_skipped_after_the_wait_and_counted() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[1, 4, 5], c.at(0)), [1]);
        assert_eq!(drain(&mut j, c.at(49)), Vec::<u16>::new(), "still waiting");
        assert_eq!(drain(&mut j, c.at(50)), [4, 5], "2 and 3 given up");
        assert_eq!(j.stats().skipped, 2);
        // 2 arrives after all: too late.
        assert_eq!(j.push(2, 2, c.at(60)), Pushed::Late);
        assert_eq!(j.stats().late, 1);
        assert_eq!(feed(&mut j, &[6], c.at(61)), [6]);
    }

    #[test]
    fn a_full_window_gives_up_the_hole_without_waiting() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[0], c.at(0)), [0]);
        // 1 is lost; 2..=WINDOW fill the window (WINDOW - 1 packets, slots 1..WINDOW-1).
        let more: Vec<u16> = (2..=WINDOW as u16).collect();
        assert_eq!(feed(&mut j, &more, c.at(1)), Vec::<u16>::new());
        assert_eq!(j.len(), WINDOW - 1);
        // One more: the hole at 1 goes, and everything held with it.
        let next = WINDOW as u16 + 1;
        let out = feed(&mut j, &[next], c.at(2));
        assert_eq!(out, (2..=next).collect::<Vec<_>>());
        assert_eq!(j.stats().skipped, 1);
        assert!(j.len() <= WINDOW, "bounded");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(
            feed(&mut j, &[65534, 0, 65535, 1], c.at(0)),
            [65534, 65535, 0, 1]
        );
        assert_eq!(j.stats().reordered, 1);
        // A loss across the wrap.
        assert_eq!(feed(&mut j, &[3], c.at(1)), Vec::<u16>::new());
        assert_eq!(drain(&mut j, c.at(100)), [3]);
        assert_eq!(j.stats().skipped, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[1, 3], c.at(0)), [1]);
        assert_eq!(j.push(3, 3, c.at(1)), Pushed::Duplicate, "held already");
        assert_eq!(j.push(1, 1, c.at(1)), Pushed::Late, "released already");
        assert_eq!(feed(&mut j, &[2], c.at(2)), [2, 3]);
        assert_eq!(j.stats().duplicates, 1);
        assert_eq!(j.stats().late, 1);
    }

    #[test]
    fn a_jump_restarts_the_numbering() {
        let c = clock();
        let mut j = JitterBuffer::new();
        assert_eq!(feed(&mut j, &[100, 102], c.at(0)), [100]);
        // The sender restarts 20,000 ahead: 102 is released in order, the new packet waits
        // at the end of the window for MAX_WAIT (stragglers just before it may come).
        assert_eq!(feed(&mut j, &[20_000], c.at(1)), [102]);
        assert_eq!(feed(&mut j, &[20_001], c.at(2)), Vec::<u16>::new());
        assert_eq!(drain(&mut j, c.at(1) + MAX_WAIT), [20_000, 20_001]);
        // ... or restarts behind: late at first, then followed.
        let behind: Vec<u16> = (5..5 + RESYNC_AFTER_LATE as u16).collect();
        let out = feed(&mut j, &behind, c.at(100));
        assert_eq!(out, [5 + RESYNC_AFTER_LATE as u16 - 1]);
        assert_eq!(
            feed(&mut j, &[5 + RESYNC_AFTER_LATE as u16], c.at(101)).len(),
            1
        );
    }

    #[test]
    fn memory_stays_bounded_under_garbage() {
        let c = clock();
        let mut j = JitterBuffer::new();
        let mut x: u32 = 0x1234_5678;
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let now = c.at(i / 10);
            j.push(x as u16, x as u16, now);
            while j.pop(now).is_some() {}
            assert!(j.len() <= WINDOW, "at most the window is held");
        }
    }
}
