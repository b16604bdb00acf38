//! Counting what a viewer receives: RTP sequence numbers per SSRC (from the clear RTP
//! header), frames, bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// At most this many SSRCs are tracked per viewer (video and its RTX stream).
const MAX_SSRCS: usize = 8;

/// SSRC and sequence number of an RTP packet (RFC 7983 first byte 128..=191, and not RTCP:
/// RFC 5761 second byte 192..=223).
pub(super) fn rtp_header(p: &[u8]) -> Option<(u32, u16)> {
    let b0 = *p.first()?;
    let b1 = *p.get(1)?;
    if !(128..=191).contains(&b0) || (192..=223).contains(&b1) {
        return None;
    }
    let seq = u16::from_be_bytes(p.get(2..4)?.try_into().ok()?);
    let ssrc = u32::from_be_bytes(p.get(8..12)?.try_into().ok()?);
    Some((ssrc, seq))
}

/// Extended sequence numbers of one SSRC: the lowest and highest seen, and the count.
pub(super) struct Track {
    base: i64,
    max: i64,
    pub(super) received: u64,
}

impl Track {
    pub(super) fn new(seq: u16) -> Self {
        let s = i64::from(seq);
        Self {
            base: s,
            max: s,
            received: 1,
        }
    }

    pub(super) fn on(&mut self, seq: u16) {
        // Signed distance from the highest seen, modulo 2^16 (wrap-around, reordering).
        let delta = i64::from(seq.wrapping_sub(self.max as u16) as i16);
        let ext = self.max + delta;
        if ext > self.max {
            self.max = ext;
        } else if ext < self.base {
            self.base = ext;
        }
        self.received += 1;
    }

    pub(super) fn expected(&self) -> u64 {
        u64::try_from(self.max - self.base + 1).unwrap_or(0)
    }
}

/// What one viewer has seen so far, read by the step (relaxed atomics, monotonic counts).
#[derive(Default)]
pub(super) struct Stats {
    /// Time to first frame in µs; 0 until then.
    pub(super) ttff_us: AtomicU64,
    pub(super) frames: AtomicU64,
    /// RTP packets the sequence numbers say were sent (summed over SSRCs).
    pub(super) expected: AtomicU64,
    /// RTP packets received (duplicates included).
    pub(super) received: AtomicU64,
    /// Bytes of RTP datagrams received (SRTP, as relayed).
    pub(super) bytes: AtomicU64,
    pub(super) failed: OnceLock<String>,
}

impl Stats {
    pub(super) fn ttff(&self) -> Option<u64> {
        Some(self.ttff_us.load(Relaxed)).filter(|t| *t > 0)
    }

    pub(super) fn snap(&self) -> Snap {
        Snap {
            frames: self.frames.load(Relaxed),
            expected: self.expected.load(Relaxed),
            received: self.received.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Snap {
    pub(super) frames: u64,
    pub(super) expected: u64,
    pub(super) received: u64,
    pub(super) bytes: u64,
}

/// One viewer's RTP counting: sequence numbers per SSRC, published into its [`Stats`].
#[derive(Default)]
pub(super) struct Counter {
    tracks: HashMap<u32, Track>,
    rtp: u64,
    bytes: u64,
}

impl Counter {
    /// Counts `p` if it is RTP (a clear header: no decryption needed).
    pub(super) fn on_datagram(&mut self, p: &[u8]) {
        let Some((ssrc, seq)) = rtp_header(p) else {
            return;
        };
        if let Some(t) = self.tracks.get_mut(&ssrc) {
            t.on(seq);
        } else if self.tracks.len() < MAX_SSRCS {
            self.tracks.insert(ssrc, Track::new(seq));
        }
        self.rtp += 1;
        self.bytes += p.len() as u64;
    }

    /// Publishes what was counted since the last call.
    pub(super) fn publish(&mut self, stats: &Stats) {
        if self.rtp == 0 {
            return;
        }
        let expected = self.tracks.values().map(Track::expected).sum();
        let received = self.tracks.values().map(|t| t.received).sum();
        stats.expected.store(expected, Relaxed);
        stats.received.store(received, Relaxed);
        stats.bytes.fetch_add(self.bytes, Relaxed);
        self.rtp = 0;
        self.bytes = 0;
    }
}

impl Stats {
    /// A complete frame arrived, `since_start` after the viewer's start.
    pub(super) fn on_frame(&self, since_start: std::time::Duration) {
        self.frames.fetch_add(1, Relaxed);
        if self.ttff().is_none() {
            let us = since_start.as_micros().clamp(1, u128::from(u64::MAX));
            self.ttff_us.store(us as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_tracking_counts_gaps_wraps_and_reordering() {
        let mut t = Track::new(65_530);
        for s in [65_531u16, 65_533, 65_535, 0, 1, 65_532] {
            t.on(s);
        }
        // 65530..=1 is 8 packets; 65534 is missing.
        assert_eq!(t.expected(), 8);
        assert_eq!(t.received, 7);
        let mut t = Track::new(100);
        t.on(98); // late packet from before the first one seen
        assert_eq!(t.expected(), 3);
    }

    #[test]
    fn rtp_header_rejects_rtcp_and_short_input() {
        let mut p = [0u8; 12];
        p[0] = 0x80;
        p[1] = 96;
        p[2..4].copy_from_slice(&7u16.to_be_bytes());
        p[8..12].copy_from_slice(&42u32.to_be_bytes());
        assert_eq!(rtp_header(&p), Some((42, 7)));
        p[1] = 200; // RTCP SR
        assert_eq!(rtp_header(&p), None);
        assert_eq!(rtp_header(&[0x80, 96, 0]), None);
        assert_eq!(rtp_header(&[]), None);
        assert_eq!(rtp_header(&[0x16, 0xfe, 0xfd]), None); // DTLS
    }
}
