//! RTP ingest: a camera or an ffmpeg/GStreamer pipeline sends RTP over UDP; the frames are
//! forwarded to every viewer without re-encoding.
//!
//! ```text
//! UDP socket ─▶ RtpDepacketizer ─▶ EncodedFrame (whole access unit) ─▶ VideoSource ─▶ engine
//!                (H.264: RFC 6184 single NAL / STAP-A / FU-A → Annex-B;
//!                 VP8: RFC 7741 descriptor stripped → VP8 frame)
//! ```
//!
//! Why depacketize instead of relaying the packets: the engine's str0m writers packetize each
//! frame again per viewer, so every viewer gets its own continuous sequence numbers and
//! timestamps, SRTP and retransmissions for free, and a viewer that joins mid-stream starts at
//! a keyframe.
//!
//! What the sender must do: RTP cannot carry a keyframe request back to it, so **the pipeline
//! must send keyframes periodically** (ffmpeg `-g 30`, GStreamer `x264enc key-int-max=30`,
//! most cameras' "I-frame interval"). The feed keeps the last keyframe and the frames after
//! it ([`super::GopCache`], when the source is made with [`VideoSource::with_gop_cache`], as
//! `MEDIA_SOURCE=rtp://…` does), so a new viewer starts at once with that group of pictures
//! instead of waiting for the next keyframe. H.264 must use
//! packetization mode 1 or 0 (single NAL, STAP-A, FU-A) and no B-frames (baseline or main
//! without B-frames, like every WebRTC sender); VP8 per RFC 7741.
//!
//! Robustness: the socket reads any datagram; anything that is not a well-formed RTP packet of
//! the current stream is counted and dropped, never a panic. Packets that overtake each other
//! are put back in order by a small jitter buffer ([`super::jitter`]: up to 32 packets, 50 ms).
//! A frame is published only when it is complete: a sequence gap that the jitter buffer gives
//! up on drops the frame in progress and everything up to the next
//! keyframe (a decoder fed a frame whose reference was lost shows garbage; a short freeze is
//! better). Frames are bounded by [`MAX_FRAME_BYTES`]. One stream at a time: once a stream
//! (SSRC and payload type) has produced a frame, packets of another are ignored until it has
//! been silent for [`STREAM_SWITCH_AFTER`], so a restarted pipeline takes over after a second;
//! a stray RTP-looking datagram cannot lock the source, because a stream that has produced no
//! frame yet gives way to the next one at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::jitter::{JitterBuffer, Pushed};
use super::{EncodedFrame, MediaError, VideoCodec, VideoSource};

/// Largest frame (access unit) accepted; bigger ones are dropped.
pub const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;
/// Packets of a new SSRC replace the current stream once it has been silent this long.
pub const STREAM_SWITCH_AFTER: Duration = Duration::from_secs(1);
/// A timestamp step larger than this (or backwards) is a discontinuity, not a frame interval.
const MAX_TS_STEP: u32 = 10 * 90_000;
/// Step used across a discontinuity: one frame at 30 fps.
const DISCONTINUITY_STEP: u64 = 3_000;
/// Largest SPS/PPS kept for re-insertion in front of IDR frames.
const MAX_PARAM_SET: usize = 4096;

const ANNEX_B: [u8; 4] = [0, 0, 0, 1];

/// Counters of one RTP source (monotonic, cheap to read).
#[derive(Debug, Default)]
pub struct RtpStats {
    /// Datagrams read from the socket.
    pub packets: AtomicU64,
    /// Datagrams that were not RTP (or RTCP, or another stream's packets).
    pub ignored: AtomicU64,
    /// Packets missing according to sequence numbers (not come within the jitter buffer's
    /// window).
    pub lost: AtomicU64,
    /// Packets that arrived out of order and were put back in order by the jitter buffer.
    pub reordered: AtomicU64,
    /// Frames published to viewers.
    pub frames: AtomicU64,
    /// Keyframes among them.
    pub keyframes: AtomicU64,
    /// Frames dropped: incomplete, malformed, too large, or waiting for a keyframe.
    pub dropped_frames: AtomicU64,
    /// Datagrams dropped because they came from another address than the sender the source
    /// takes (the configured one, or the first one while it keeps sending).
    pub other_senders: AtomicU64,
}

impl RtpStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A parsed RTP packet (RFC 3550), borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit: last packet of a video frame.
    pub marker: bool,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload without header, CSRCs, extension and padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parse an RTP packet; `None` for anything else (too short, version ≠ 2, RTCP, bad
    /// lengths).
    pub fn parse(buf: &'a [u8]) -> Option<Self> {
        let h: &[u8; 12] = buf.first_chunk()?;
        if h[0] >> 6 != 2 {
            return None;
        }
        // RTCP (SR, RR, SDES, BYE, APP, feedback: 192..=223) when muxed on the same port.
        if (192..=223).contains(&h[1]) {
            return None;
        }
        let padding = h[0] & 0x20 != 0;
        let extension = h[0] & 0x10 != 0;
        let csrcs = usize::from(h[0] & 0x0f);
        let mut start = 12 + 4 * csrcs;
        if extension {
            let ext: &[u8; 4] = buf.get(start..)?.first_chunk()?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
        }
        let mut end = buf.len();
        if padding {
            let pad = usize::from(*buf.last()?);
            if pad == 0 {
                return None;
            }
            end = end.checked_sub(pad)?;
        }
        let payload = buf.get(start..end)?;
        Some(RtpPacket {
            marker: h[1] & 0x80 != 0,
            pt: h[1] & 0x7f,
            seq: u16::from_be_bytes([h[2], h[3]]),
            timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            payload,
        })
    }
}

/// Why the payload of a packet could not be used; the frame it belongs to is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Malformed,
    TooLarge,
}

/// Reassembles the payloads of one frame (codec specific).
trait Assembler {
    /// Add one packet's payload to the current frame.
    fn push(&mut self, payload: &[u8]) -> Result<(), Bad>;
    /// Does this payload begin a frame (so a loss just before it did not hurt it)?
    fn starts_frame(&self, payload: &[u8]) -> bool;
    /// True when nothing has been added since the last `take`/`reset`.
    fn is_empty(&self) -> bool;
    /// The complete frame and whether it is a keyframe; resets the assembler. `None` when the
    /// frame is unusable (empty, truncated, invalid header).
    fn take(&mut self) -> Option<(Vec<u8>, bool)>;
    /// Forget the current frame.
    fn reset(&mut self);
}

/// RFC 6184 → Annex-B access units.
#[derive(Default)]
struct H264Assembler {
    au: Vec<u8>,
    has_idr: bool,
    has_sps: bool,
    has_pps: bool,
    /// Inside an FU-A NAL (its start was seen, its end not yet).
    in_fu: bool,
    /// Latest parameter sets seen, put in front of an IDR frame that comes without them.
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl H264Assembler {
    fn nal(&mut self, nal: &[u8]) -> Result<(), Bad> {
        let Some(&header) = nal.first() else {
            return Err(Bad::Malformed);
        };
        if header & 0x80 != 0 {
            return Err(Bad::Malformed); // forbidden_zero_bit
        }
        self.reserve(ANNEX_B.len() + nal.len())?;
        match header & 0x1f {
            5 => self.has_idr = true,
            7 => {
                self.has_sps = true;
                if nal.len() <= MAX_PARAM_SET {
                    self.sps = nal.to_vec();
                }
            }
            8 => {
                self.has_pps = true;
                if nal.len() <= MAX_PARAM_SET {
                    self.pps = nal.to_vec();
                }
            }
            _ => {}
        }
        self.au.extend_from_slice(&ANNEX_B);
        self.au.extend_from_slice(nal);
        Ok(())
    }

    fn reserve(&self, more: usize) -> Result<(), Bad> {
        if self.au.len() + more > MAX_FRAME_BYTES {
            Err(Bad::TooLarge)
        } else {
            Ok(())
        }
    }
}

impl Assembler for H264Assembler {
    fn push(&mut self, payload: &[u8]) -> Result<(), Bad> {
        let Some((&indicator, body)) = payload.split_first() else {
            return Err(Bad::Malformed);
        };
        let kind = indicator & 0x1f;
        if self.in_fu && kind != 28 {
            return Err(Bad::Malformed); // FU-A interrupted
        }
        match kind {
            1..=23 => self.nal(payload),
            24 => {
                // STAP-A: (size u16, NAL)*
                let mut rest = body;
                if rest.is_empty() {
                    return Err(Bad::Malformed);
                }
                while !rest.is_empty() {
                    let (size, tail) = rest.split_first_chunk::<2>().ok_or(Bad::Malformed)?;
                    let size = usize::from(u16::from_be_bytes(*size));
                    let (nal, after) = tail.split_at_checked(size).ok_or(Bad::Malformed)?;
                    self.nal(nal)?;
                    rest = after;
                }
                Ok(())
            }
            28 => {
                // FU-A: indicator, header (S E R type), fragment.
                let (&fu, fragment) = body.split_first().ok_or(Bad::Malformed)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start == self.in_fu {
                    return Err(Bad::Malformed); // start inside a NAL, or middle without start
                }
                if start {
                    let header = (indicator & 0xe0) | (fu & 0x1f);
                    self.nal(&[header])?;
                }
                self.reserve(fragment.len())?;
                self.au.extend_from_slice(fragment);
                self.in_fu = !end;
                Ok(())
            }
            // STAP-B, MTAP (interleaved mode), FU-B, reserved values: not supported.
            _ => Err(Bad::Malformed),
        }
    }

    fn starts_frame(&self, payload: &[u8]) -> bool {
        let Some(&first) = payload.first() else {
            return false;
        };
        // The first NAL carried and the byte after its header.
        let (kind, next) = match first & 0x1f {
            24 => (payload.get(3).map(|h| h & 0x1f), payload.get(4)),
            28 => match payload.get(1) {
                Some(fu) if fu & 0x80 != 0 => (Some(fu & 0x1f), payload.get(2)),
                _ => return false,
            },
            t => (Some(t), payload.get(1)),
        };
        match kind {
            // SEI, SPS, PPS, access unit delimiter, prefix/subset NALs: only before a picture.
            Some(6..=9 | 14..=18) => true,
            // A slice with first_mb_in_slice = 0 (ue(v) "1"): the first slice of a picture.
            Some(1 | 5) => next.is_some_and(|b| b & 0x80 != 0),
            _ => false,
        }
    }

    fn is_empty(&self) -> bool {
        self.au.is_empty()
    }

    fn take(&mut self) -> Option<(Vec<u8>, bool)> {
        let complete = !self.in_fu && !self.au.is_empty();
        let mut au = std::mem::take(&mut self.au);
        let (idr, sps, pps) = (self.has_idr, self.has_sps, self.has_pps);
        self.reset();
        if !complete {
            return None;
        }
        let mut keyframe = idr && sps && pps;
        if idr && !keyframe && !self.sps.is_empty() && !self.pps.is_empty() {
            // Parameter sets sent earlier (or only at the start): repeat them so a viewer
            // joining at this IDR can decode it.
            let mut with = Vec::with_capacity(au.len() + self.sps.len() + self.pps.len() + 8);
            for ps in [(&self.sps, sps), (&self.pps, pps)] {
                if !ps.1 {
                    with.extend_from_slice(&ANNEX_B);
                    with.extend_from_slice(ps.0);
                }
            }
            with.extend_from_slice(&au);
            au = with;
            keyframe = true;
        }
        super::testsrc::mark_constrained_baseline(&mut au);
        Some((au, keyframe))
    }

    fn reset(&mut self) {
        self.au.clear();
        self.has_idr = false;
        self.has_sps = false;
        self.has_pps = false;
        self.in_fu = false;
    }
}

/// RFC 7741 → VP8 frames.
#[derive(Default)]
struct Vp8Assembler {
    frame: Vec<u8>,
    started: bool,
}

/// Strip the VP8 payload descriptor: returns (start of partition 0, VP8 payload).
fn vp8_descriptor(payload: &[u8]) -> Option<(bool, &[u8])> {
    let b0 = *payload.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M flag).
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    let start = b0 & 0x10 != 0 && b0 & 0x0f == 0;
    Some((start, payload.get(i..)?))
}

/// Check the VP8 frame tag (RFC 6386 §9.1): returns whether it is a keyframe, `None` when the
/// header is inconsistent.
pub fn vp8_frame_info(frame: &[u8]) -> Option<bool> {
    let &[t0, t1, t2] = frame.first_chunk::<3>()?;
    let tag = u32::from(t0) | u32::from(t1) << 8 | u32::from(t2) << 16;
    let keyframe = tag & 1 == 0;
    let version = (tag >> 1) & 7;
    let first_part = (tag >> 5) as usize;
    let header = if keyframe { 10 } else { 3 };
    if version > 3 || frame.len() < header || first_part > frame.len() - header {
        return None;
    }
    if keyframe {
        // Start code, then width and height (14 bits each, little-endian).
        let &[_, _, _, s0, s1, s2, w0, w1, h0, h1] = frame.first_chunk::<10>()?;
        if [s0, s1, s2] != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let w = u16::from_le_bytes([w0, w1]) & 0x3fff;
        let h = u16::from_le_bytes([h0, h1]) & 0x3fff;
        if w == 0 || h == 0 {
            return None;
        }
    }
    Some(keyframe)
}

impl Assembler for Vp8Assembler {
    fn push(&mut self, payload: &[u8]) -> Result<(), Bad> {
        let (start, data) = vp8_descriptor(payload).ok_or(Bad::Malformed)?;
        if start == self.started {
            // A second start in one frame, or a continuation without a start.
            return Err(Bad::Malformed);
        }
        if self.frame.len() + data.len() > MAX_FRAME_BYTES {
            return Err(Bad::TooLarge);
        }
        self.started = true;
        self.frame.extend_from_slice(data);
        Ok(())
    }

    fn starts_frame(&self, payload: &[u8]) -> bool {
        vp8_descriptor(payload).is_some_and(|(start, _)| start)
    }

    fn is_empty(&self) -> bool {
        !self.started
    }

    fn take(&mut self) -> Option<(Vec<u8>, bool)> {
        let frame = std::mem::take(&mut self.frame);
        self.started = false;
        let keyframe = vp8_frame_info(&frame)?;
        Some((frame, keyframe))
    }

    fn reset(&mut self) {
        self.frame.clear();
        self.started = false;
    }
}

/// Turns a sequence of RTP packets into whole frames. Sans-I/O (time is passed in), so it is
/// tested with crafted and garbage packets.
pub struct RtpDepacketizer {
    codec: VideoCodec,
    asm: Box<dyn Assembler + Send>,
    /// (SSRC, PT) of the stream followed, when it was last heard, whether it made a frame.
    stream: Option<(u32, u8, Instant, bool)>,
    /// Puts the followed stream's packets back in sequence order (datagrams, parsed again
    /// when released).
    jitter: JitterBuffer<Vec<u8>>,
    next_seq: Option<u16>,
    /// RTP timestamp of the frame being assembled.
    frame_ts: Option<u32>,
    /// The frame being assembled lost a packet or carried a bad payload.
    broken: bool,
    /// Publish nothing until a keyframe (at start, after a loss, after a stream switch).
    need_keyframe: bool,
    /// Timestamp unwrapping: last RTP timestamp published and its 90 kHz time.
    last_ts: Option<(u32, u64)>,
    /// The next frame's timestamp is unrelated to the last one (new stream).
    ts_reset: bool,
    stats: Arc<RtpStats>,
}

impl RtpDepacketizer {
    /// A depacketizer for `codec`.
    pub fn new(codec: VideoCodec) -> Self {
        Self::with_stats(codec, Arc::default())
    }

    fn with_stats(codec: VideoCodec, stats: Arc<RtpStats>) -> Self {
        let asm: Box<dyn Assembler + Send> = match codec {
            VideoCodec::H264 => Box::<H264Assembler>::default(),
            VideoCodec::Vp8 => Box::<Vp8Assembler>::default(),
        };
        RtpDepacketizer {
            codec,
            asm,
            stream: None,
            jitter: JitterBuffer::new(),
            next_seq: None,
            frame_ts: None,
            broken: false,
            need_keyframe: true,
            last_ts: None,
            ts_reset: false,
            stats,
        }
    }

    /// The codec expected.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Counters.
    pub fn stats(&self) -> &RtpStats {
        &self.stats
    }

    /// Feed one datagram received at `now`; every frame it completes goes to `out`.
    ///
    /// Packets of the followed stream go through the jitter buffer
    /// ([`super::jitter`]): one that arrives ahead of a missing packet is held until that
    /// one comes, or until [`RtpDepacketizer::deadline`] (call [`RtpDepacketizer::poll`]
    /// then).
    pub fn push(&mut self, datagram: &[u8], now: Instant, out: &mut impl FnMut(EncodedFrame)) {
        RtpStats::add(&self.stats.packets, 1);
        let Some(pkt) = RtpPacket::parse(datagram) else {
            RtpStats::add(&self.stats.ignored, 1);
            return;
        };
        let mut produced = false;
        match self.stream {
            Some((ssrc, pt, _, p)) if (ssrc, pt) == (pkt.ssrc, pkt.pt) => produced = p,
            Some((_, _, last, true))
                if now.saturating_duration_since(last) < STREAM_SWITCH_AFTER =>
            {
                RtpStats::add(&self.stats.ignored, 1);
                return;
            }
            previous => {
                if previous.is_some() {
                    tracing::info!(ssrc = pkt.ssrc, pt = pkt.pt, "RTP source: new stream");
                }
                self.drop_frame();
                self.jitter.reset();
                self.next_seq = None;
                self.need_keyframe = true;
                self.ts_reset = true;
            }
        }
        self.stream = Some((pkt.ssrc, pkt.pt, now, produced));
        let before = self.jitter.stats().reordered;
        match self.jitter.push(pkt.seq, datagram.to_vec(), now) {
            Pushed::Held => {}
            Pushed::Late | Pushed::Duplicate => RtpStats::add(&self.stats.ignored, 1),
        }
        RtpStats::add(
            &self.stats.reordered,
            self.jitter.stats().reordered - before,
        );
        self.poll(now, out);
    }

    /// When [`RtpDepacketizer::poll`] should be called if no packet comes before: the jitter
    /// buffer then gives up waiting for a missing packet.
    pub fn deadline(&self) -> Option<Instant> {
        self.jitter.deadline()
    }

    /// Depacketize every packet the jitter buffer releases at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut impl FnMut(EncodedFrame)) {
        while let Some((_, datagram)) = self.jitter.pop(now) {
            if let Some(pkt) = RtpPacket::parse(&datagram) {
                self.depacketize(&pkt, now, out);
            }
        }
    }

    /// One packet of the followed stream, in sequence order (gaps are losses).
    fn depacketize(
        &mut self,
        pkt: &RtpPacket<'_>,
        now: Instant,
        out: &mut impl FnMut(EncodedFrame),
    ) {
        let mut gap = false;
        if let Some(expected) = self.next_seq {
            let ahead = pkt.seq.wrapping_sub(expected) as i16;
            if ahead < 0 {
                // Duplicate or late (reordered) packet: its frame is already gone.
                RtpStats::add(&self.stats.ignored, 1);
                return;
            }
            if ahead > 0 {
                RtpStats::add(&self.stats.lost, u64::from(ahead.unsigned_abs()));
                gap = true;
                self.need_keyframe = true;
            }
        }
        self.next_seq = Some(pkt.seq.wrapping_add(1));

        let new_frame = self.frame_ts != Some(pkt.timestamp);
        if gap && self.frame_ts.is_some() {
            // The frame in progress lost its middle or its end.
            self.broken = true;
        }
        // A new timestamp ends the previous frame even if its marker never came.
        if new_frame {
            self.finish(now, out);
        }
        if gap && !(new_frame && self.asm.starts_frame(pkt.payload)) {
            // The lost packets may have been the beginning of this frame.
            self.broken = true;
        }
        self.frame_ts = Some(pkt.timestamp);
        if !pkt.payload.is_empty() && !self.broken {
            if let Err(bad) = self.asm.push(pkt.payload) {
                if bad == Bad::TooLarge {
                    tracing::warn!(
                        limit = MAX_FRAME_BYTES,
                        "RTP source: frame too large, dropped"
                    );
                }
                self.broken = true;
                self.asm.reset();
            }
        }
        if pkt.marker {
            self.finish(now, out);
        }
    }

    fn drop_frame(&mut self) {
        if !self.asm.is_empty() || self.broken {
            RtpStats::add(&self.stats.dropped_frames, 1);
        }
        self.asm.reset();
        self.broken = false;
        self.frame_ts = None;
    }

    /// The current frame is over: publish it if it is whole and usable.
    fn finish(&mut self, now: Instant, out: &mut impl FnMut(EncodedFrame)) {
        let Some(ts) = self.frame_ts.take() else {
            return;
        };
        if self.broken || self.asm.is_empty() {
            self.drop_frame();
            self.need_keyframe = true;
            return;
        }
        let Some((data, keyframe)) = self.asm.take() else {
            RtpStats::add(&self.stats.dropped_frames, 1);
            self.need_keyframe = true;
            return;
        };
        if self.need_keyframe && !keyframe {
            RtpStats::add(&self.stats.dropped_frames, 1);
            return;
        }
        self.need_keyframe = false;
        let rtp_time = match self.last_ts {
            None => 0,
            Some((last, t)) => {
                let step = ts.wrapping_sub(last);
                if step == 0 || step > MAX_TS_STEP || self.ts_reset {
                    t + DISCONTINUITY_STEP
                } else {
                    t + u64::from(step)
                }
            }
        };
        self.last_ts = Some((ts, rtp_time));
        self.ts_reset = false;
        if let Some(stream) = self.stream.as_mut() {
            stream.3 = true;
        }
        RtpStats::add(&self.stats.frames, 1);
        if keyframe {
            RtpStats::add(&self.stats.keyframes, 1);
        }
        out(EncodedFrame {
            data: data.into(),
            keyframe,
            rtp_time,
            captured: now,
        });
    }
}

/// A sender silent this long gives the source up to the next one (first-sender mode).
pub const SENDER_SILENCE: Duration = Duration::from_secs(2);

/// Which sender an RTP source takes datagrams from: the configured address, or else the
/// first that sends, for as long as it keeps sending. Without it, anyone who can reach the
/// port could inject a stream or interleave packets into the viewers' video.
#[derive(Debug, Clone)]
pub struct SenderLock {
    fixed: Option<SocketAddr>,
    current: Option<(SocketAddr, Instant)>,
}

impl SenderLock {
    /// Takes only `fixed` when set, else the first sender (see [`SENDER_SILENCE`]).
    pub fn new(fixed: Option<SocketAddr>) -> Self {
        Self {
            fixed,
            current: None,
        }
    }

    /// Whether a datagram from `from` at `now` is taken.
    pub fn admit(&mut self, from: SocketAddr, now: Instant) -> bool {
        if let Some(f) = self.fixed {
            return f == from;
        }
        match self.current {
            Some((who, last))
                if who != from && now.saturating_duration_since(last) < SENDER_SILENCE =>
            {
                false
            }
            Some((who, _)) if who == from => {
                self.current = Some((from, now));
                true
            }
            _ => {
                match self.current {
                    Some((old, _)) => tracing::info!(
                        %old,
                        new = %from,
                        "RTP source: sender changed after silence; datagrams of others are dropped"
                    ),
                    None => tracing::info!(
                        sender = %from,
                        "RTP source: taking the first sender; datagrams of others are dropped \
                         while it keeps sending"
                    ),
                }
                self.current = Some((from, now));
                true
            }
        }
    }
}

/// A running RTP receiver publishing into a [`VideoSource`]. Dropping it closes the socket.
pub struct RtpSource {
    local: SocketAddr,
    stats: Arc<RtpStats>,
    task: JoinHandle<()>,
}

impl RtpSource {
    /// Bind `addr` (a unicast address to listen on, port 0 for any; or an IPv4/IPv6 multicast
    /// group, joined on the default interface) and publish the received frames to `source`,
    /// whose codec says how to depacketize.
    ///
    /// Must be called within a tokio runtime.
    pub fn bind(addr: SocketAddr, source: VideoSource) -> Result<RtpSource, MediaError> {
        Self::bind_from(addr, None, source)
    }

    /// Like [`RtpSource::bind`], taking datagrams only from `sender` when it is set (else
    /// from the first sender; see [`SenderLock`]).
    pub fn bind_from(
        addr: SocketAddr,
        sender: Option<SocketAddr>,
        source: VideoSource,
    ) -> Result<RtpSource, MediaError> {
        let bind_addr = if addr.ip().is_multicast() {
            let any = match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            SocketAddr::new(any, addr.port())
        } else {
            addr
        };
        let sock = std::net::UdpSocket::bind(bind_addr).map_err(|e| {
            MediaError::Source(format!("RTP source: cannot bind UDP {bind_addr}: {e}"))
        })?;
        match addr.ip() {
            IpAddr::V4(group) if group.is_multicast() => {
                sock.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
            }
            IpAddr::V6(group) if group.is_multicast() => sock.join_multicast_v6(&group, 0),
            _ => Ok(()),
        }
        .map_err(|e| MediaError::Source(format!("RTP source: joining {addr}: {e}")))?;
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let sock = UdpSocket::from_std(sock)?;
        let stats = Arc::new(RtpStats::default());
        let depack = RtpDepacketizer::with_stats(source.codec(), stats.clone());
        match sender {
            Some(sender) => tracing::info!(
                %local,
                codec = ?source.codec(),
                %sender,
                "RTP source listening, taking datagrams from the configured sender only"
            ),
            None => tracing::info!(
                %local,
                codec = ?source.codec(),
                "RTP source listening, taking datagrams from the first sender"
            ),
        }
        if !local.ip().is_loopback() {
            tracing::info!(
                %local,
                "RTP source listening beyond loopback: RTP is unauthenticated, set source= to \
                 name the sender"
            );
        }
        let task = tokio::spawn(receive(
            sock,
            depack,
            source,
            SenderLock::new(sender),
            stats.clone(),
        ));
        Ok(RtpSource { local, stats, task })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Live counters.
    pub fn stats(&self) -> &RtpStats {
        &self.stats
    }

    /// A handle on the live counters (for /metrics).
    pub fn stats_handle(&self) -> Arc<RtpStats> {
        self.stats.clone()
    }
}

impl Drop for RtpSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    sock: UdpSocket,
    mut depack: RtpDepacketizer,
    source: VideoSource,
    mut lock: SenderLock,
    stats: Arc<RtpStats>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut warned = false;
    loop {
        // Wake for the jitter buffer's deadline too: a packet held behind a lost one must
        // not wait for the next datagram.
        let received = match depack.deadline() {
            Some(d) => tokio::time::timeout_at(d.into(), sock.recv_from(&mut buf))
                .await
                .ok(),
            None => Some(sock.recv_from(&mut buf).await),
        };
        let Some(received) = received else {
            depack.poll(Instant::now(), &mut |f| {
                source.publish(f);
            });
            continue;
        };
        let n = match received {
            Ok((n, from)) => {
                if !lock.admit(from, Instant::now()) {
                    RtpStats::add(&stats.other_senders, 1);
                    continue;
                }
                n
            }
            Err(e) => {
                // ICMP-induced errors and the like: keep listening.
                tracing::debug!(error = %e, "RTP source: recv error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        depack.push(datagram, Instant::now(), &mut |f| {
            source.publish(f);
        });
        if source.take_keyframe_request() && !warned {
            warned = true;
            tracing::info!(
                "RTP source: a viewer waits for a keyframe; RTP input cannot be asked for one, \
                 make the sender emit keyframes periodically (e.g. ffmpeg -g 30)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// Pushes `packets` at one instant, then lets the jitter buffer give up on any hole.
    fn run(d: &mut RtpDepacketizer, packets: &[Vec<u8>]) -> Vec<EncodedFrame> {
        let mut out = Vec::new();
        let now = Instant::now();
        for p in packets {
            d.push(p, now, &mut |f| out.push(f));
        }
        d.poll(now + super::super::jitter::MAX_WAIT, &mut |f| out.push(f));
        out
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xab];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x18];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    #[test]
    fn the_first_sender_keeps_the_source_until_it_falls_silent() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:6000".parse().unwrap(),
            "127.0.0.1:6001".parse().unwrap(),
        );
        let t0 = Instant::now();
        let mut lock = SenderLock::new(None);
        assert!(lock.admit(a, t0));
        assert!(!lock.admit(b, t0 + Duration::from_millis(10)));
        assert!(lock.admit(a, t0 + Duration::from_secs(1)));
        assert!(!lock.admit(b, t0 + Duration::from_millis(2900)));
        assert!(
            lock.admit(b, t0 + Duration::from_secs(3)),
            "a silent for 2 s"
        );
        assert!(!lock.admit(a, t0 + Duration::from_millis(3100)));
        let mut fixed = SenderLock::new(Some(b));
        assert!(!fixed.admit(a, t0));
        assert!(fixed.admit(b, t0));
        assert!(!fixed.admit(a, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn parses_rtp_header_with_csrc_extension_and_padding() {
        let mut p = vec![0xb1, 0xe0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 1];
        p.extend_from_slice(&[1, 2, 3, 4]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        p.extend_from_slice(&[0xaa, 0xbb, 0, 0, 3]); // payload + 3 bytes padding
        let r = RtpPacket::parse(&p).unwrap();
        assert_eq!(
            (r.marker, r.pt, r.seq, r.timestamp, r.ssrc),
            (true, 96, 7, 9, 1)
        );
        assert_eq!(r.payload, &[0xaa, 0xbb]);
        assert!(RtpPacket::parse(&[0x80, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none()); // RTCP SR
        assert!(RtpPacket::parse(&[0x40; 20]).is_none()); // version 1
    }

    #[test]
    fn h264_single_stap_and_fu_make_annex_b_frames() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let idr = [0x65, 1, 2, 3, 4, 5, 6];
        let frames = run(
            &mut d,
            &[
                rtp(1, 1000, false, &stap(&[SPS, PPS])),
                rtp(2, 1000, false, &[0x7c, 0x85, 1, 2, 3]), // FU-A start of IDR
                rtp(3, 1000, false, &[0x7c, 0x05, 4]),
                rtp(4, 1000, true, &[0x7c, 0x45, 5, 6]), // end
                rtp(5, 4000, true, &[0x41, 9, 9]),       // P slice, single NAL
            ],
        );
        assert_eq!(frames.len(), 2);
        let mut want = Vec::new();
        for n in [SPS, PPS, &idr[..]] {
            want.extend_from_slice(&ANNEX_B);
            want.extend_from_slice(n);
        }
        want[4 + 2] |= 0xc0; // constraint_set0/1 (already set here)
        assert_eq!(&*frames[0].data, &want[..]);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].rtp_time, 0);
        assert_eq!(&*frames[1].data, &[0, 0, 0, 1, 0x41, 9, 9]);
        assert!(!frames[1].keyframe);
        assert_eq!(frames[1].rtp_time, 3000);
        assert_eq!(d.stats().frames.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn waits_for_keyframe_and_drops_frames_after_a_gap() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let frames = run(
            &mut d,
            &[
                rtp(10, 0, true, &[0x41, 1]), // P-frame first: dropped
                rtp(11, 3000, false, &stap(&[SPS, PPS])),
                rtp(12, 3000, true, &[0x65, 1]),
                rtp(13, 6000, false, &[0x7c, 0x81, 1]),
                // 14 lost
                rtp(15, 6000, true, &[0x7c, 0x41, 3]),
                rtp(16, 9000, true, &[0x41, 2]), // P after a loss: dropped
                rtp(17, 12000, true, &[0x65, 7]), // IDR without SPS/PPS: cached ones added
            ],
        );
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames.iter().all(|f| f.keyframe));
        assert!(frames[1].data.starts_with(&[0, 0, 0, 1, 0x67]));
        assert!(frames[1].data.ends_with(&[0, 0, 0, 1, 0x65, 7]));
        assert_eq!(frames[1].rtp_time, 9000);
        assert_eq!(d.stats().lost.load(Ordering::Relaxed), 1);
    }

    /// Packets swapped within a frame and across frames are put back in order: every frame
    /// is whole, nothing counts as lost. A packet that never comes is given up after the
    /// jitter buffer's wait, and its frame dropped.
    #[test]
    fn reordered_packets_make_whole_frames_and_a_loss_is_given_up() {
        use super::super::jitter::MAX_WAIT;
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let packets = [
            rtp(1, 0, false, &stap(&[SPS, PPS])),
            rtp(2, 0, false, &[0x7c, 0x85, 1, 2]), // FU-A start of IDR
            rtp(3, 0, true, &[0x7c, 0x45, 3]),     // end
            rtp(4, 3000, true, &[0x41, 0x80, 1]),
            rtp(5, 6000, true, &[0x41, 0x80, 2]),
        ];
        for i in [0, 2, 1, 4, 3] {
            d.push(&packets[i], t0, &mut |f| out.push(f));
        }
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].keyframe);
        assert!(out[0].data.ends_with(&[0, 0, 0, 1, 0x65, 1, 2, 3]));
        assert_eq!(d.stats().lost.load(Ordering::Relaxed), 0);
        assert_eq!(d.stats().reordered.load(Ordering::Relaxed), 2);
        // 6 never comes: 7 and 8 wait, then the hole is given up; 7 (a P-frame after a loss)
        // is dropped until the next keyframe, 8.
        d.push(&rtp(7, 12000, true, &[0x41, 0x80, 3]), t0, &mut |f| {
            out.push(f)
        });
        d.push(
            &rtp(8, 15000, true, &stap(&[SPS, PPS, &[0x65, 9]])),
            t0,
            &mut |f| out.push(f),
        );
        assert_eq!(out.len(), 3, "held behind the hole");
        assert_eq!(d.deadline(), Some(t0 + MAX_WAIT));
        d.poll(t0 + MAX_WAIT, &mut |f| out.push(f));
        assert_eq!(out.len(), 4);
        assert!(out[3].keyframe);
        assert_eq!(d.stats().lost.load(Ordering::Relaxed), 1);
        // 6 at last: late, ignored.
        d.push(
            &rtp(6, 9000, true, &[0x41, 0x80, 4]),
            t0 + MAX_WAIT,
            &mut |f| out.push(f),
        );
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn frame_without_marker_ends_at_next_timestamp() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let frames = run(
            &mut d,
            &[
                rtp(1, 0, false, &stap(&[SPS, PPS, &[0x65, 1]])),
                rtp(2, 3000, false, &[0x41, 1]),
                rtp(3, 6000, true, &[0x41, 2]),
            ],
        );
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames.iter().map(|f| f.rtp_time).collect::<Vec<_>>(),
            [0, 3000, 6000]
        );
    }

    #[test]
    fn timestamps_unwrap_and_stay_monotonic() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let key = stap(&[SPS, PPS, &[0x65, 1]]);
        let frames = run(
            &mut d,
            &[
                rtp(1, u32::MAX - 1000, true, &key),
                rtp(2, 2000, true, &[0x41, 1]), // wrapped: +3001
                rtp(3, 1000, true, &[0x41, 1]), // backwards: discontinuity
                rtp(4, 1_000_000_000, true, &[0x41, 1]), // jump: discontinuity
            ],
        );
        let times: Vec<u64> = frames.iter().map(|f| f.rtp_time).collect();
        assert_eq!(times, [0, 3001, 6001, 9001]);
    }

    #[test]
    fn other_ssrc_is_ignored_until_the_stream_is_silent() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let key = stap(&[SPS, PPS, &[0x65, 1]]);
        let t0 = Instant::now();
        let mut out = Vec::new();
        d.push(&rtp(1, 0, true, &key), t0, &mut |f| out.push(f));
        let mut other = rtp(500, 77, true, &key);
        other[8..12].copy_from_slice(&[9, 9, 9, 9]);
        d.push(&other, t0, &mut |f| out.push(f));
        assert_eq!(out.len(), 1);
        d.push(&other, t0 + Duration::from_secs(2), &mut |f| out.push(f));
        assert_eq!(out.len(), 2, "the new stream took over");
        assert_eq!(out[1].rtp_time, 3000);
    }

    #[test]
    fn a_stray_packet_does_not_lock_the_source() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let t0 = Instant::now();
        let mut out = Vec::new();
        d.push(&[0x80; 40], t0, &mut |f| out.push(f)); // RTP-looking junk, SSRC 0x80808080
        d.push(
            &rtp(1, 0, true, &stap(&[SPS, PPS, &[0x65, 1]])),
            t0,
            &mut |f| out.push(f),
        );
        assert_eq!(out.len(), 1);
    }

    fn vp8_key(w: u16, h: u16, body: &[u8]) -> Vec<u8> {
        let size = body.len() as u32; // first partition: the whole body
        let tag = (size << 5) | 0x10; // show_frame, keyframe (bit 0 = 0)
        let mut f = vec![
            tag as u8,
            (tag >> 8) as u8,
            (tag >> 16) as u8,
            0x9d,
            0x01,
            0x2a,
        ];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn vp8_frames_reassemble_and_keyframes_are_detected() {
        let key = vp8_key(320, 240, &[7; 20]);
        let inter = {
            let tag: u32 = (4 << 5) | 0x11;
            vec![tag as u8, (tag >> 8) as u8, (tag >> 16) as u8, 1, 2, 3, 4]
        };
        let mut d = RtpDepacketizer::new(VideoCodec::Vp8);
        // Descriptor with X, I (15-bit picture id), L, T: 6 bytes.
        let mut p1 = vec![0x90, 0xe0, 0x80, 0x01, 0x00, 0x00];
        p1.extend_from_slice(&key[..12]);
        let mut p2 = vec![0x80, 0x80, 0x80, 0x01];
        p2.extend_from_slice(&key[12..]);
        let mut p3 = vec![0x10];
        p3.extend_from_slice(&inter);
        let frames = run(
            &mut d,
            &[
                rtp(1, 0, false, &p1),
                rtp(2, 0, true, &p2),
                rtp(3, 3000, true, &p3),
            ],
        );
        assert_eq!(frames.len(), 2);
        assert_eq!(&*frames[0].data, &key[..]);
        assert!(frames[0].keyframe);
        assert!(!frames[1].keyframe);
        assert_eq!(vp8_frame_info(&key), Some(true));
        assert_eq!(vp8_frame_info(&key[..8]), None);
        let mut bad = key.clone();
        bad[3] = 0;
        assert_eq!(vp8_frame_info(&bad), None);
    }

    #[test]
    fn oversized_frames_are_dropped() {
        let mut d = RtpDepacketizer::new(VideoCodec::H264);
        let mut packets = vec![rtp(0, 0, false, &stap(&[SPS, PPS]))];
        let chunk = vec![0xaa; 1400];
        let n = MAX_FRAME_BYTES / 1400 + 2;
        for i in 0..n {
            let fu = match i {
                0 => 0x85,
                _ if i == n - 1 => 0x45,
                _ => 0x05,
            };
            let mut p = vec![0x7c, fu];
            p.extend_from_slice(&chunk);
            packets.push(rtp(i as u16 + 1, 0, i == n - 1, &p));
        }
        packets.push(rtp(
            n as u16 + 1,
            3000,
            true,
            &stap(&[SPS, PPS, &[0x65, 1]]),
        ));
        let frames = run(&mut d, &packets);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data.len(), 4 * 3 + SPS.len() + PPS.len() + 2);
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random packets, plus RTP headers with random payloads.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for codec in [VideoCodec::H264, VideoCodec::Vp8] {
            let mut d = RtpDepacketizer::new(codec);
            let now = Instant::now();
            for i in 0..20_000u32 {
                let len = (next() % 64) as usize;
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if i % 2 == 0 && p.len() >= 12 {
                    p[0] = 0x80 | (p[0] & 0x3f);
                    p[1] &= 0xef; // never RTCP
                    p[8..12].copy_from_slice(&[0, 0, 0, 1]);
                    p[1] = (p[1] & 0x80) | 96;
                }
                d.push(&p, now, &mut |f| {
                    assert!(f.data.len() <= MAX_FRAME_BYTES + 2 * MAX_PARAM_SET + 8);
                });
            }
        }
    }
}
