//! Fuzzes `relay::framer::Framer`: an arbitrary byte stream, delivered in arbitrary chunks,
//! must cut into exactly the frames an independent one-shot reference parser finds, fail
//! with the same error, never yield an ill-formed or oversized frame, and never grow its
//! buffer past the largest frame the limit allows.
//!
//! Input layout: `[config, chunk_seed, stream...]`.
//! * `config` bits 0-1 pick the frame limit (default, 1500, 64, or 20 + 4 * (config >> 3)),
//!   bit 2 a small initial buffer (64 bytes) instead of the default.
//! * `chunk_seed` 0 delivers the stream in one piece; otherwise it seeds the chunk sizes, and
//!   odd seeds write through `read_buf` + `commit` instead of `feed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::framer::{
    Frame, FrameError, FrameKind, Framer, DEFAULT_INITIAL_CAPACITY, DEFAULT_MAX_FRAME_LEN,
};

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Stream ends on a frame boundary.
    Clean,
    /// Stream ends inside a frame; these bytes are left over.
    Partial(usize),
    /// Framing error.
    Error(FrameError),
}

/// One-shot reference cutter, written independently of the framer.
fn reference(stream: &[u8], limit: usize) -> (Vec<(FrameKind, &[u8])>, End) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        let first = rest[0];
        if first >= 0x80 {
            return (frames, End::Error(FrameError::InvalidFirstByte(first)));
        }
        if rest.len() < 4 {
            return (frames, End::Partial(rest.len()));
        }
        let field = u16::from_be_bytes([rest[2], rest[3]]);
        let (kind, len, wire) = if first < 0x40 {
            if !field.is_multiple_of(4) {
                return (frames, End::Error(FrameError::UnalignedStunLength(field)));
            }
            (FrameKind::Stun, 20 + field as usize, 20 + field as usize)
        } else {
            let len = 4 + field as usize;
            (FrameKind::ChannelData, len, len.div_ceil(4) * 4)
        };
        if len > limit {
            let err = FrameError::TooLong {
                kind,
                len,
                max: limit,
            };
            return (frames, End::Error(err));
        }
        if rest.len() < wire {
            return (frames, End::Partial(rest.len()));
        }
        frames.push((kind, &rest[..len]));
        pos += wire;
    }
}

/// xorshift32, for chunk sizes.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

fn check_frame(frame: &Frame<'_>, limit: usize) {
    let bytes = frame.as_bytes();
    assert!(bytes.len() <= limit, "frame over the limit");
    assert!(bytes.len() >= 4);
    let field = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    match frame {
        Frame::Stun(_) => {
            assert!(bytes[0] < 0x40);
            assert_eq!(field % 4, 0);
            assert_eq!(bytes.len(), 20 + field);
        }
        Frame::ChannelData(_) => {
            assert!((0x40..0x80).contains(&bytes[0]));
            assert_eq!(bytes.len(), 4 + field);
            assert_eq!(frame.channel_payload().map(<[u8]>::len), Some(field));
            let parsed = turn_types::channel::ChannelData::parse(bytes).expect("valid ChannelData");
            assert_eq!(parsed.data().len(), field);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [config, chunk_seed, stream @ ..] = data else {
        return;
    };
    let limit = match config & 3 {
        0 => DEFAULT_MAX_FRAME_LEN,
        1 => 1500,
        2 => 64,
        _ => 20 + usize::from(config >> 3) * 4,
    };
    let initial = if config & 4 != 0 {
        64
    } else {
        DEFAULT_INITIAL_CAPACITY
    };
    // Largest buffer ever justified: the initial size, or the largest frame (padded).
    let cap_bound = initial.max(limit.min(20 + 65532).saturating_add(3));

    let (expected, expected_end) = reference(stream, limit);
    let mut framer = Framer::with_limits(limit, initial);
    let mut got: Vec<(FrameKind, Vec<u8>)> = Vec::new();
    let mut rng = u32::from(*chunk_seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut pos = 0;
    let mut error = None;

    'feed: while pos < stream.len() {
        let want = if *chunk_seed == 0 {
            stream.len() - pos
        } else {
            1 + (next(&mut rng) as usize % 97)
        };
        let src = &stream[pos..(pos + want).min(stream.len())];
        let n = if chunk_seed % 2 == 1 {
            let buf = framer.read_buf();
            assert!(!buf.is_empty(), "empty read buffer after Ok(None)");
            let n = buf.len().min(src.len());
            buf[..n].copy_from_slice(&src[..n]);
            framer.commit(n);
            n
        } else {
            let n = framer.feed(src);
            assert!(n > 0, "feed made no progress");
            n
        };
        pos += n;
        assert!(framer.capacity() <= cap_bound, "buffer grew past the limit");
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    check_frame(&frame, limit);
                    got.push((frame.kind(), frame.as_bytes().to_vec()));
                }
                Ok(None) => break,
                Err(err) => {
                    // Errors are final.
                    assert_eq!(framer.next_frame().unwrap_err(), err);
                    error = Some(err);
                    break 'feed;
                }
            }
        }
    }

    let got_end = match error {
        Some(err) => End::Error(err),
        None if framer.is_empty() => End::Clean,
        None => End::Partial(framer.buffered().len()),
    };
    assert_eq!(got.len(), expected.len());
    for ((gk, gb), (ek, eb)) in got.iter().zip(&expected) {
        assert_eq!(gk, ek);
        assert_eq!(gb.as_slice(), *eb);
    }
    assert_eq!(got_end, expected_end);
    if let End::Partial(n) = got_end {
        assert_eq!(framer.buffered(), &stream[stream.len() - n..]);
    }
});
