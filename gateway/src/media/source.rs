//! The shared video feeds between a producer (test pattern, RTP ingest, file) and the engine.
//!
//! A [`VideoSource`] is one encoded bitstream of one codec; a [`VideoFeeds`] is everything one
//! stream can give, one feed per codec. The engine picks a feed per viewer (the first codec
//! in the browser's offer that the stream has), so browsers without H.264 (Firefox without
//! the OpenH264 plugin) can watch a source that also encodes VP8.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// A frame as a feed delivers it: numbered in publishing order (1, 2, …), so a consumer that
/// got some frames from the [`GopCache`] can tell which of its live frames it already has.
#[derive(Debug, Clone)]
pub struct Published {
    /// Publishing order within the feed; never 0, never repeated.
    pub seq: u64,
    /// The frame.
    pub frame: EncodedFrame,
}

/// Bytes a [`GopCache`] holds at most (frames beyond it are not cached: see [`GopCache::push`]).
pub const GOP_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Frames a [`GopCache`] holds at most (10 s at 30 fps, 5 s at 60 fps).
pub const GOP_CACHE_FRAMES: usize = 300;

/// The last keyframe of a feed and every frame after it, for sources that cannot be asked for
/// a keyframe (RTP ingest, files): a new viewer is sent this group of pictures at once and
/// decodes the current picture, instead of waiting up to a whole keyframe interval.
///
/// Bounded by bytes and frame count. When a frame would exceed a bound the cache is emptied
/// and stays empty until the next keyframe (a GOP with a hole cannot be decoded: keeping its
/// head would only feed a decoder references without the frames that follow them), so a new
/// viewer then waits for the next keyframe as it did without the cache.
#[derive(Debug)]
pub struct GopCache {
    frames: VecDeque<Published>,
    bytes: usize,
    max_bytes: usize,
    max_frames: usize,
    /// The GOP outgrew a bound: cache nothing until the next keyframe.
    overflowed: bool,
}

impl GopCache {
    /// An empty cache of at most `max_bytes` of frame data and `max_frames` frames.
    pub fn new(max_bytes: usize, max_frames: usize) -> Self {
        GopCache {
            frames: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_frames,
            overflowed: false,
        }
    }

    /// Add the next published frame: a keyframe starts a new GOP (the old one is dropped), a
    /// delta frame joins the current one (or is ignored while there is none).
    pub fn push(&mut self, p: &Published) {
        if p.frame.keyframe {
            self.clear();
            self.overflowed = false;
        } else if self.frames.is_empty() || self.overflowed {
            return;
        }
        let len = p.frame.data.len();
        if self.frames.len() >= self.max_frames || self.bytes.saturating_add(len) > self.max_bytes {
            self.clear();
            self.overflowed = true;
            return;
        }
        self.bytes += len;
        self.frames.push_back(p.clone());
    }

    /// The cached GOP, keyframe first, oldest to newest (empty when there is none).
    pub fn frames(&self) -> impl ExactSizeIterator<Item = &Published> {
        self.frames.iter()
    }

    /// Bytes of frame data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no GOP is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// What [`VideoSource::publish`] updates under one lock, so a subscriber's snapshot of the
/// cache and its receiver's position agree.
#[derive(Debug)]
struct PublishState {
    next_seq: u64,
    gop: Option<GopCache>,
}

/// What [`VideoSource::subscribe_with_gop`] returns: the cached GOP, then every frame
/// published after it, none missing, none twice.
pub struct GopSubscription {
    /// The cached frames, keyframe first (empty without a cache or before the first keyframe).
    pub cached: Vec<Published>,
    /// The frames published after the last cached one.
    pub live: broadcast::Receiver<Published>,
}

/// A cloneable handle on one video feed (one codec): producers publish, the engine subscribes.
///
/// It also carries the two signals that flow back from viewers to the producer: "a keyframe is
/// needed" (new viewer, PLI/FIR) and "how many viewers are connected" (so a producer may idle
/// instead of encoding for nobody).
#[derive(Clone)]
pub struct VideoSource {
    codec: VideoCodec,
    frames: broadcast::Sender<Published>,
    state: Arc<Mutex<PublishState>>,
    keyframe_wanted: Arc<AtomicBool>,
    viewers: Arc<AtomicUsize>,
    /// When the last frame was published: milliseconds after [`epoch`] plus one (0: never).
    last_frame: Arc<AtomicU64>,
    counters: Arc<FeedCounters>,
}

/// What a feed has carried since it was made (read by `/metrics`).
#[derive(Debug, Default)]
struct FeedCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// The instant [`VideoSource`]'s frame times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl VideoSource {
    /// A new, empty feed of the given codec.
    pub fn new(codec: VideoCodec) -> Self {
        Self::build(codec, None)
    }

    /// A new, empty feed that keeps its last GOP ([`GopCache`], default bounds) for new
    /// viewers: for producers that cannot make a keyframe on request (RTP ingest, files).
    pub fn with_gop_cache(codec: VideoCodec) -> Self {
        Self::build(
            codec,
            Some(GopCache::new(GOP_CACHE_BYTES, GOP_CACHE_FRAMES)),
        )
    }

    fn build(codec: VideoCodec, gop: Option<GopCache>) -> Self {
        let (frames, _) = broadcast::channel(FRAME_BUFFER);
        VideoSource {
            codec,
            frames,
            state: Arc::new(Mutex::new(PublishState { next_seq: 1, gop })),
            keyframe_wanted: Arc::new(AtomicBool::new(false)),
            viewers: Arc::new(AtomicUsize::new(0)),
            last_frame: Arc::new(AtomicU64::new(0)),
            counters: Arc::default(),
        }
    }

    /// The codec of the frames.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Publish a frame to every subscriber. Returns the number of subscribers reached.
    pub fn publish(&self, frame: EncodedFrame) -> usize {
        self.counters.frames.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        let ms = Instant::now()
            .saturating_duration_since(epoch())
            .as_millis();
        self.last_frame.store(
            u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1,
            Ordering::Relaxed,
        );
        // One lock around numbering, caching and sending: a subscriber that takes the same
        // lock sees the cache and the channel at the same point.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let published = Published {
            seq: state.next_seq,
            frame,
        };
        state.next_seq += 1;
        if let Some(gop) = state.gop.as_mut() {
            gop.push(&published);
        }
        self.frames.send(published).unwrap_or(0)
    }

    /// Whether this feed keeps a [`GopCache`] (its producer cannot make keyframes on request).
    pub fn has_gop_cache(&self) -> bool {
        self.lock_state().gop.is_some()
    }

    /// The cached GOP (empty without a cache or before the first keyframe).
    pub fn gop(&self) -> Vec<Published> {
        self.lock_state()
            .gop
            .as_ref()
            .map(|g| g.frames().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached GOP and a receiver of every frame published after it, taken atomically.
    pub fn subscribe_with_gop(&self) -> GopSubscription {
        let state = self.lock_state();
        let cached = state
            .gop
            .as_ref()
            .map(|g| g.frames().cloned().collect())
            .unwrap_or_default();
        GopSubscription {
            cached,
            live: self.frames.subscribe(),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, PublishState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the last frame was published, if ever.
    pub fn last_frame(&self) -> Option<Instant> {
        match self.last_frame.load(Ordering::Relaxed) {
            0 => None,
            ms => epoch().checked_add(Duration::from_millis(ms - 1)),
        }
    }

    /// Receive the frames published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.frames.subscribe()
    }

    /// Ask the producer for a keyframe as soon as possible.
    pub fn request_keyframe(&self) {
        self.counters
            .keyframe_requests
            .fetch_add(1, Ordering::Relaxed);
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether `other` is this same feed (a clone of it), not merely one of the same codec.
    pub fn same_feed(&self, other: &VideoSource) -> bool {
        Arc::ptr_eq(&self.counters, &other.counters)
    }

    /// Frames published since the feed was made.
    pub fn frames_published(&self) -> u64 {
        self.counters.frames.load(Ordering::Relaxed)
    }

    /// Bytes of frame data published since the feed was made.
    pub fn bytes_published(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Keyframe requests (new viewers, PLI/FIR) since the feed was made.
    pub fn keyframe_requests(&self) -> u64 {
        self.counters.keyframe_requests.load(Ordering::Relaxed)
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

    /// Frames published over all feeds.
    pub fn frames_published(&self) -> u64 {
        self.feeds.iter().map(VideoSource::frames_published).sum()
    }

    /// Bytes of frame data published over all feeds.
    pub fn bytes_published(&self) -> u64 {
        self.feeds.iter().map(VideoSource::bytes_published).sum()
    }

    /// Keyframe requests over all feeds.
    pub fn keyframe_requests(&self) -> u64 {
        self.feeds.iter().map(VideoSource::keyframe_requests).sum()
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

    fn frame(keyframe: bool, len: usize, rtp_time: u64) -> EncodedFrame {
        EncodedFrame {
            data: vec![0u8; len].into(),
            keyframe,
            rtp_time,
            captured: Instant::now(),
        }
    }

    fn numbered(seq: u64, keyframe: bool, len: usize) -> Published {
        Published {
            seq,
            frame: frame(keyframe, len, seq * 3000),
        }
    }

    fn seqs(cache: &GopCache) -> Vec<u64> {
        cache.frames().map(|p| p.seq).collect()
    }

    #[test]
    fn gop_cache_starts_at_a_keyframe_and_resets_at_the_next() {
        let mut c = GopCache::new(1000, 10);
        c.push(&numbered(1, false, 10)); // no keyframe yet: nothing to start from
        assert!(c.is_empty());
        c.push(&numbered(2, true, 100));
        c.push(&numbered(3, false, 10));
        c.push(&numbered(4, false, 10));
        assert_eq!(seqs(&c), [2, 3, 4]);
        assert_eq!(c.bytes(), 120);
        c.push(&numbered(5, true, 50));
        assert_eq!(seqs(&c), [5], "a keyframe drops the previous GOP");
        assert_eq!(c.bytes(), 50);
    }

    #[test]
    fn gop_cache_is_bounded_by_bytes_and_frames() {
        // Bytes: the frame that would pass the bound empties the cache until the next
        // keyframe (a GOP with a hole is no use to a decoder).
        let mut c = GopCache::new(100, 10);
        c.push(&numbered(1, true, 60));
        c.push(&numbered(2, false, 30));
        c.push(&numbered(3, false, 30));
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        c.push(&numbered(4, false, 1));
        assert!(c.is_empty(), "no delta frame after an overflow");
        c.push(&numbered(5, true, 100));
        assert_eq!(seqs(&c), [5], "a keyframe of exactly the bound fits");
        c.push(&numbered(6, true, 101));
        assert!(c.is_empty(), "a keyframe above the bound is not cached");
        // Frames.
        let mut c = GopCache::new(1000, 3);
        for seq in 1..=3 {
            c.push(&numbered(seq, seq == 1, 1));
        }
        assert_eq!(seqs(&c), [1, 2, 3]);
        c.push(&numbered(4, false, 1));
        assert!(c.is_empty());
        c.push(&numbered(5, true, 1));
        assert_eq!(seqs(&c), [5]);
    }

    #[test]
    fn feeds_without_a_cache_give_no_gop_and_number_their_frames() {
        let plain = VideoSource::new(VideoCodec::H264);
        assert!(!plain.has_gop_cache());
        let mut rx = plain.subscribe();
        plain.publish(frame(true, 10, 0));
        plain.publish(frame(false, 10, 3000));
        assert!(plain.gop().is_empty());
        assert!(plain.subscribe_with_gop().cached.is_empty());
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(rx.try_recv().unwrap().seq, 2);
        let cached = VideoSource::with_gop_cache(VideoCodec::H264);
        assert!(cached.has_gop_cache());
        cached.publish(frame(false, 10, 0));
        cached.publish(frame(true, 10, 3000));
        cached.publish(frame(false, 10, 6000));
        let gop: Vec<u64> = cached.gop().iter().map(|p| p.seq).collect();
        assert_eq!(gop, [2, 3]);
    }

    /// While a producer thread publishes, subscribers taken at random points get the cached
    /// GOP and then the live frames: consecutive numbers from the GOP's keyframe on, no frame
    /// missing and none twice.
    #[test]
    fn subscribe_with_gop_is_atomic() {
        const FRAMES: u64 = 20_000;
        let source = VideoSource::with_gop_cache(VideoCodec::Vp8);
        // The producer goes on past FRAMES until the checker has seen enough (bounded by
        // time), so a checker thread starved by a loaded machine still gets its chances.
        let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let source = source.clone();
            let enough = enough.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(20);
                for n in 0.. {
                    if n >= FRAMES
                        && (enough.load(std::sync::atomic::Ordering::Relaxed)
                            || Instant::now() > until)
                    {
                        break;
                    }
                    // A keyframe every 7 frames.
                    source.publish(frame(n % 7 == 0, 16, n * 3000));
                    std::thread::yield_now();
                }
            })
        };
        let (mut checked, mut joined) = (0, 0);
        while !producer.is_finished() || checked == 0 {
            if joined >= 20 {
                enough.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let sub = source.subscribe_with_gop();
            let mut live = sub.live;
            let mut seqs: Vec<u64> = sub.cached.iter().map(|p| p.seq).collect();
            if let Some(first) = sub.cached.first() {
                assert!(first.frame.keyframe, "a cached GOP starts with a keyframe");
            }
            // Up to 20 live frames after the snapshot (fewer when the producer ends).
            let deadline = Instant::now() + Duration::from_secs(5);
            while seqs.len() < sub.cached.len() + 20 && Instant::now() < deadline {
                match live.try_recv() {
                    Ok(p) => seqs.push(p.seq),
                    Err(broadcast::error::TryRecvError::Empty) if producer.is_finished() => break,
                    Err(broadcast::error::TryRecvError::Empty) => std::thread::yield_now(),
                    // Outrun by the producer: what was read so far is still checked.
                    Err(broadcast::error::TryRecvError::Lagged(_)) => break,
                    Err(e) => panic!("receiver failed: {e}"),
                }
            }
            for w in seqs.windows(2) {
                assert_eq!(w[1], w[0] + 1, "no frame lost or doubled: {seqs:?}");
            }
            if !sub.cached.is_empty() && seqs.len() > sub.cached.len() {
                joined += 1;
            }
            checked += 1;
        }
        producer.join().unwrap();
        assert!(
            joined > 0,
            "{checked} subscriptions, none with both a GOP and live frames"
        );
    }
}
