//! The shared video feeds between a producer (test pattern, RTP ingest, file) and the engine.
//!
//! A [`VideoSource`] is one encoded bitstream of one codec; a [`VideoFeeds`] is everything one
//! stream can give, one feed per codec. The engine picks a feed per viewer (the first codec
//! in the browser's offer that the stream has), so browsers without H.264 (Firefox without
//! the OpenH264 plugin) can watch a source that also encodes VP8.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

    /// The encoding name as SDP spells it (`a=rtpmap:PT NAME/90000`).
    pub fn sdp_name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
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

/// A cloneable handle on one video feed (one codec): producers publish, the engine subscribes.
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
    /// When the last frame was published: milliseconds after [`epoch`] plus one (0: never).
    last_frame: Arc<AtomicU64>,
}

/// The instant [`VideoSource`]'s frame times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
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
            last_frame: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The codec of the frames.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Publish a frame to every subscriber. Returns the number of subscribers reached.
    pub fn publish(&self, frame: EncodedFrame) -> usize {
        let ms = Instant::now()
            .saturating_duration_since(epoch())
            .as_millis();
        self.last_frame.store(
            u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
        self.frames.send(frame).unwrap_or(0)
    }

    /// When the last frame was published, if ever.
    pub fn last_frame(&self) -> Option<Instant> {
        match self.last_frame.load(Ordering::Relaxed) {
            0 => None,
            ms => epoch().checked_add(Duration::from_millis(ms - 1)),
        }
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

/// Every feed of one stream, at most one per codec, in the stream's own order of preference.
///
/// Why a set and not one feed: a viewer can only decode what its browser offers (Firefox
/// without OpenH264 offers VP8/VP9 only, Safari prefers H.264). A source that can encode more
/// than one codec (the test pattern) publishes one feed per codec; ingest sources (RTP, file)
/// carry the single codec they receive. Each feed keeps its own viewer count and keyframe
/// request, so a producer encodes a codec only while somebody watches it, and a PLI from a VP8
/// viewer never costs an H.264 keyframe.
#[derive(Clone)]
pub struct VideoFeeds {
    feeds: Vec<VideoSource>,
}

impl VideoFeeds {
    /// One new, empty feed per codec of `codecs` (duplicates are ignored, order is kept).
    pub fn new(codecs: &[VideoCodec]) -> Self {
        let mut feeds: Vec<VideoSource> = Vec::new();
        for &c in codecs {
            if feeds.iter().all(|f| f.codec() != c) {
                feeds.push(VideoSource::new(c));
            }
        }
        VideoFeeds { feeds }
    }

    /// The feed of `codec`, if the stream has one.
    pub fn get(&self, codec: VideoCodec) -> Option<&VideoSource> {
        self.feeds.iter().find(|f| f.codec() == codec)
    }

    /// The codecs the stream offers, in its order of preference.
    pub fn codecs(&self) -> Vec<VideoCodec> {
        self.feeds.iter().map(VideoSource::codec).collect()
    }

    /// Every feed, in the stream's order of preference.
    pub fn iter(&self) -> impl Iterator<Item = &VideoSource> {
        self.feeds.iter()
    }

    /// Number of feeds.
    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    /// True when the stream has no feed at all (nothing can be watched).
    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// Connected viewers over all feeds.
    pub fn viewers(&self) -> usize {
        self.feeds.iter().map(VideoSource::viewers).sum()
    }

    /// When any feed last published a frame, if ever.
    pub fn last_frame(&self) -> Option<Instant> {
        self.feeds.iter().filter_map(VideoSource::last_frame).max()
    }
}

impl std::fmt::Debug for VideoFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFeeds")
            .field("codecs", &self.codecs())
            .field("viewers", &self.viewers())
            .finish()
    }
}

impl From<VideoSource> for VideoFeeds {
    /// A stream of one codec (RTP ingest, a file).
    fn from(source: VideoSource) -> Self {
        VideoFeeds {
            feeds: vec![source],
        }
    }
}

/// The name of the stream [`MediaSourceSpec`](crate::media_source::MediaSourceSpec) feeds
/// when no other is named (`MEDIA_SOURCE`, `/whep`, every project id while it is alone).
pub const DEFAULT_STREAM: &str = "default";

/// Every stream the engine serves, by name, each with its feeds.
///
/// Why the engine knows streams and not only feeds: a viewer's codec is picked among the
/// feeds of the stream it asked for, and the frames of one stream must never reach a viewer
/// of another.
#[derive(Clone, Default)]
pub struct StreamSet {
    streams: Vec<(String, VideoFeeds)>,
}

impl StreamSet {
    /// No stream yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the stream `name`.
    pub fn insert(&mut self, name: impl Into<String>, feeds: VideoFeeds) {
        let name = name.into();
        self.streams.retain(|(n, _)| *n != name);
        self.streams.push((name, feeds));
    }

    /// The feeds of `name`.
    pub fn get(&self, name: &str) -> Option<&VideoFeeds> {
        self.streams.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }

    /// Every stream, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &VideoFeeds)> {
        self.streams.iter().map(|(n, f)| (n.as_str(), f))
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when there is no stream.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl From<VideoFeeds> for StreamSet {
    /// One stream, [`DEFAULT_STREAM`].
    fn from(feeds: VideoFeeds) -> Self {
        let mut set = StreamSet::new();
        set.insert(DEFAULT_STREAM, feeds);
        set
    }
}

impl From<VideoSource> for StreamSet {
    /// One stream of one codec, [`DEFAULT_STREAM`].
    fn from(source: VideoSource) -> Self {
        VideoFeeds::from(source).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_are_per_codec_and_ordered() {
        let feeds = VideoFeeds::new(&[VideoCodec::Vp8, VideoCodec::H264, VideoCodec::Vp8]);
        assert_eq!(feeds.codecs(), [VideoCodec::Vp8, VideoCodec::H264]);
        feeds.get(VideoCodec::H264).unwrap().set_viewers(2);
        feeds.get(VideoCodec::Vp8).unwrap().set_viewers(1);
        assert_eq!(feeds.viewers(), 3);
        // Keyframe requests stay with their feed.
        feeds.get(VideoCodec::Vp8).unwrap().request_keyframe();
        assert!(!feeds.get(VideoCodec::H264).unwrap().take_keyframe_request());
        assert!(feeds.get(VideoCodec::Vp8).unwrap().take_keyframe_request());
        let single = VideoFeeds::from(VideoSource::new(VideoCodec::H264));
        assert_eq!(single.codecs(), [VideoCodec::H264]);
        assert!(single.get(VideoCodec::Vp8).is_none());
    }
}
