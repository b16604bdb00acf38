//! Fuzzes the gateway's RTP ingest (gateway/src/media/rtp.rs): the sender lock, the RTP
//! parser (which must refuse RTCP muxed on the same port) and the H.264 (RFC 6184) and VP8
//! (RFC 7741) depacketizers, fed a sequence of datagrams from a few senders over time.
//!
//! Input: `[flags, (sender, dt, len_hi, len_lo, datagram[len])...]`. `flags & 1` picks VP8
//! (else H.264), `flags & 2` a fixed sender (else first-sender mode); `sender` picks one of
//! four source addresses, `dt` advances the clock by `dt * 10` ms (so stream switches and
//! sender silences happen), `len` is cut to what is left.
//!
//! Checks: nothing panics; a parsed packet's payload lies inside its datagram and RTCP
//! (second byte 192..=223) or a version other than 2 never parses; every frame is non-empty
//! and within `MAX_FRAME_BYTES`; the first frame is a keyframe and presentation times
//! strictly increase; H.264 frames are Annex-B, VP8 frames carry a consistent frame tag
//! whose keyframe bit is the frame's; the counters add up.
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use gateway::media::rtp::{
    vp8_frame_info, RtpDepacketizer, RtpPacket, SenderLock, MAX_FRAME_BYTES,
};
use gateway::media::{EncodedFrame, VideoCodec};
use libfuzzer_sys::fuzz_target;

fn check_parse(d: &[u8]) {
    let parsed = RtpPacket::parse(d);
    if d.len() >= 2 && ((192..=223).contains(&d[1]) || d[0] >> 6 != 2) {
        assert!(parsed.is_none(), "RTCP or a non-v2 packet parsed as RTP");
    }
    if let Some(p) = parsed {
        let (start, end) = (d.as_ptr() as usize, d.as_ptr() as usize + d.len());
        let (ps, pe) = (
            p.payload.as_ptr() as usize,
            p.payload.as_ptr() as usize + p.payload.len(),
        );
        assert!(
            start + 12 <= ps && pe <= end,
            "payload outside the datagram"
        );
        assert_eq!(p.seq, u16::from_be_bytes([d[2], d[3]]));
        assert_eq!(p.ssrc, u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
        assert_eq!(p.pt, d[1] & 0x7f);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let codec = if flags & 1 == 1 {
        VideoCodec::Vp8
    } else {
        VideoCodec::H264
    };
    let senders: Vec<SocketAddr> = (0..4u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 5000 + i)))
        .collect();
    let mut lock = SenderLock::new((flags & 2 == 2).then_some(senders[0]));
    let mut depack = RtpDepacketizer::new(codec);
    assert_eq!(depack.codec(), codec);
    let mut now = Instant::now();
    let mut frames: Vec<EncodedFrame> = Vec::new();
    let mut pushed = 0u64;
    while rest.len() >= 4 {
        let sender = senders[usize::from(rest[0] & 3)];
        now += Duration::from_millis(u64::from(rest[1]) * 10);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let datagram = &rest[4..4 + len];
        rest = &rest[4 + len..];
        check_parse(datagram);
        if !lock.admit(sender, now) {
            assert!(
                flags & 2 == 0 || sender != senders[0],
                "the fixed sender was refused"
            );
            continue;
        }
        if flags & 2 == 2 {
            assert_eq!(
                sender, senders[0],
                "another sender than the fixed one was admitted"
            );
        }
        depack.push(datagram, now, &mut |f| frames.push(f));
        pushed += 1;
    }
    let stats = depack.stats();
    assert_eq!(stats.packets.load(Relaxed), pushed);
    assert_eq!(stats.frames.load(Relaxed), frames.len() as u64);
    assert_eq!(
        stats.keyframes.load(Relaxed),
        frames.iter().filter(|f| f.keyframe).count() as u64
    );
    if let Some(first) = frames.first() {
        assert!(
            first.keyframe,
            "the first frame published is not a keyframe"
        );
    }
    for w in frames.windows(2) {
        assert!(
            w[0].rtp_time < w[1].rtp_time,
            "presentation times do not increase"
        );
    }
    for f in &frames {
        assert!(!f.data.is_empty() && f.data.len() <= MAX_FRAME_BYTES);
        match codec {
            VideoCodec::H264 => assert!(f.data.starts_with(&[0, 0, 0, 1]), "not Annex-B"),
            VideoCodec::Vp8 => assert_eq!(vp8_frame_info(&f.data), Some(f.keyframe)),
        }
    }
});
