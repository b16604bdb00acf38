//! WHIP ingest (RFC 9725): a stream fed by a publisher (OBS, GStreamer `whipsink`, ffmpeg
//! `-f whip`, aiortc) that pushes its video to the gateway.
//!
//! The publisher is a recvonly session of the media engine (so it can come through the
//! embedded TURN relay's in-process path like any viewer): the engine depacketizes what it
//! receives and publishes each frame to the stream's feed of its codec, and turns the
//! viewers' keyframe requests into paced PLIs to the publisher ([`super::keyframe`]).
//!
//! A [`WhipIngest`] is the stream's side of that: its feeds, its bearer token, and the one
//! publisher slot. The engine claims the slot when it adds a publisher's session and gives
//! it back when that session ends (DELETE, ICE consent lost, DTLS failure, connect
//! timeout), whatever the path: the stream is live exactly while a publisher holds it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{VideoCodec, VideoFeeds};

/// The codecs a publisher may send (each viewer gets the feed of its codec).
pub const WHIP_CODECS: &[VideoCodec] = &[VideoCodec::H264, VideoCodec::Vp8];

/// One WHIP stream: feeds, token, publisher slot (see the module docs).
pub struct WhipIngest {
    feeds: VideoFeeds,
    token: String,
    /// The media session of the publisher that holds the stream.
    publisher: Mutex<Option<String>>,
    /// Keyframe requests (PLI) sent to publishers of this stream.
    keyframe_requests: AtomicU64,
    /// Frames received from publishers of this stream.
    frames: AtomicU64,
    /// A new publisher replaces the live one (`takeover=true`, `WHIP_TAKEOVER`).
    takeover: bool,
}

impl std::fmt::Debug for WhipIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipIngest")
            .field("feeds", &self.feeds)
            .field("publisher", &self.has_publisher())
            .finish_non_exhaustive()
    }
}

impl WhipIngest {
    /// A stream publishers reach with `Authorization: Bearer <token>`, frames going to
    /// `feeds` (a feed per codec of [`WHIP_CODECS`]).
    pub fn new(feeds: VideoFeeds, token: impl Into<String>) -> Self {
        Self {
            feeds,
            token: token.into(),
            publisher: Mutex::new(None),
            keyframe_requests: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            takeover: false,
        }
    }

    /// A new authenticated publisher takes the stream over from the live one.
    pub fn with_takeover(mut self, takeover: bool) -> Self {
        self.takeover = takeover;
        self
    }

    /// Whether a new publisher takes the stream over (else it is refused while one holds it).
    pub fn takeover(&self) -> bool {
        self.takeover
    }

    /// The stream's feeds.
    pub fn feeds(&self) -> &VideoFeeds {
        &self.feeds
    }

    /// Whether `given` (the token of an `Authorization: Bearer` header) is the stream's,
    /// compared in constant time (a mismatch tells at most the length).
    pub fn authorizes(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(given.as_bytes().ct_eq(self.token.as_bytes()))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.publisher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a publisher holds the stream.
    pub fn has_publisher(&self) -> bool {
        self.slot().is_some()
    }

    /// The media session `key` becomes the stream's publisher, unless another holds it.
    pub fn claim(&self, key: &str) -> bool {
        let mut slot = self.slot();
        match slot.as_deref() {
            Some(k) => k == key,
            None => {
                *slot = Some(key.to_owned());
                true
            }
        }
    }

    /// The media session `key` becomes the stream's publisher; returns the one it replaces
    /// (whose session the engine then ends), if another held it. Only with [`Self::takeover`].
    pub fn take_over(&self, key: &str) -> Option<String> {
        let mut slot = self.slot();
        match slot.as_deref() {
            Some(k) if k == key => None,
            _ => slot.replace(key.to_owned()),
        }
    }

    /// The media session `key` ended: the stream is free if `key` held it.
    pub fn release(&self, key: &str) {
        let mut slot = self.slot();
        if slot.as_deref() == Some(key) {
            *slot = None;
        }
    }

    /// Counts a keyframe request sent to the publisher.
    pub(crate) fn count_keyframe_request(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Keyframe requests (PLI) sent to this stream's publishers so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Counts a frame received from the publisher.
    pub(crate) fn count_frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames received from this stream's publishers so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_publisher_holds_the_stream_until_its_session_ends() {
        let w = WhipIngest::new(VideoFeeds::new(WHIP_CODECS), "0123456789abcdef");
        assert!(!w.has_publisher());
        assert!(w.claim("a~1"));
        assert!(w.claim("a~1"), "the holder again");
        assert!(!w.claim("b~2"), "a second publisher");
        w.release("b~2");
        assert!(w.has_publisher(), "only the holder frees it");
        w.release("a~1");
        assert!(!w.has_publisher());
        assert!(w.claim("b~2"));
    }

    #[test]
    fn a_new_publisher_takes_over_and_the_old_one_frees_nothing() {
        let w =
            WhipIngest::new(VideoFeeds::new(WHIP_CODECS), "0123456789abcdef").with_takeover(true);
        assert!(w.takeover());
        assert_eq!(w.take_over("a~1"), None);
        assert_eq!(w.take_over("a~1"), None, "the holder again");
        assert_eq!(w.take_over("b~2").as_deref(), Some("a~1"));
        w.release("a~1");
        assert!(
            w.has_publisher(),
            "the replaced session's end frees nothing"
        );
        assert!(!w.claim("c~3"));
        w.release("b~2");
        assert!(!w.has_publisher());
    }

    #[test]
    fn the_token_must_match_exactly() {
        let w = WhipIngest::new(VideoFeeds::new(WHIP_CODECS), "0123456789abcdef");
        assert!(w.authorizes("0123456789abcdef"));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdefg",
            "0123456789ABCDEF",
        ] {
            assert!(!w.authorizes(bad), "{bad:?}");
        }
        assert!(
            !format!("{w:?}").contains("0123"),
            "the token is not logged"
        );
    }
}
