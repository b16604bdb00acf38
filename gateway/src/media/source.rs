//! The shared video feed between a producer (test pattern, later RTP ingest) and the engine.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

/// How many frames the broadcast channel buffers; a viewer loop that lags further behind skips
/// ahead and waits for the next keyframe.
const FRAME_BUFFER: usize = 64;

/// Video codec of a source's bitstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 constrained baseline, packetization-mode=1, Annex-B access units.
    H264,
    /// VP8 frames.
    Vp8,
}

impl VideoCodec {
    /// Human-readable requirement, used in [`crate::media::MediaError::NoSupportedCodec`].
    pub fn requirement(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264 packetization-mode=1, constrained baseline (42e01f)",
            VideoCodec::Vp8 => "VP8",
        }
    }
}

/// One encoded access unit (H.264: Annex-B with start codes, as str0m's packetizer wants it).
///
/// `data` is an `Arc<[u8]>` because str0m's `Writer::write` takes `impl Into<Arc<[u8]>>`: every
/// viewer gets a reference to the same buffer, the frame is never copied per viewer.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The access unit.
    pub data: Arc<[u8]>,
    /// True for IDR frames (with SPS/PPS): a new viewer can start decoding here.
    pub keyframe: bool,
    /// Presentation time in 90 kHz units since the source started.
    pub rtp_time: u64,
    /// Wall-clock instant the frame was captured/generated.
    pub captured: Instant,
}

/// A cloneable handle on one video feed: producers publish, the engine subscribes.
///
/// It also carries the two signals that flow back from viewers to the producer: "a keyframe is
/// needed" (new viewer, PLI/FIR) and "how many viewers are connected" (so a producer may idle
/// instead of encoding for nobody).
#[derive(Clone)]
pub struct VideoSource {
    codec: VideoCodec,
    frames: broadcast::Sender<EncodedFrame>,
    keyframe_wanted: Arc<AtomicBool>,
    viewers: Arc<AtomicUsize>,
}

impl VideoSource {
    /// A new, empty feed of the given codec.
    pub fn new(codec: VideoCodec) -> Self {
        let (frames, _) = broadcast::channel(FRAME_BUFFER);
        VideoSource {
            codec,
            frames,
            keyframe_wanted: Arc::new(AtomicBool::new(false)),
            viewers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The codec of the frames.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Publish a frame to every subscriber. Returns the number of subscribers reached.
    pub fn publish(&self, frame: EncodedFrame) -> usize {
        self.frames.send(frame).unwrap_or(0)
    }

    /// Receive the frames published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EncodedFrame> {
        self.frames.subscribe()
    }

    /// Ask the producer for a keyframe as soon as possible.
    pub fn request_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// Producer side: returns true (once) if a keyframe was requested since the last call.
    pub fn take_keyframe_request(&self) -> bool {
        self.keyframe_wanted.swap(false, Ordering::Relaxed)
    }

    /// Number of connected viewers, as last reported by the engine.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    pub(crate) fn set_viewers(&self, n: usize) {
        self.viewers.store(n, Ordering::Relaxed);
    }
}
