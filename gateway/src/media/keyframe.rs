//! Keyframe requests towards a source with a back channel (a WHIP publisher, a pulled
//! upstream): viewers' requests (a new viewer, a PLI/FIR, a lagging feed) coalesce into at
//! most one PLI per [`KEYFRAME_REQUEST_INTERVAL`]. Sans-I/O: time comes in as an `Instant`.

use std::time::{Duration, Instant};

use super::VideoFeeds;

/// Least time between two keyframe requests to a source.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Coalesces keyframe requests and paces them (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct KeyframePacer {
    /// When the last request went out.
    last: Option<Instant>,
    /// A request is owed (taken from the feeds while the interval ran: never lost).
    wanted: bool,
}

impl KeyframePacer {
    /// No request owed, none sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the keyframe requests of every feed of `feeds` (they are owed from now on).
    pub fn take_from(&mut self, feeds: &VideoFeeds) {
        self.wanted |= feeds
            .iter()
            .fold(false, |w, f| f.take_keyframe_request() | w);
    }

    /// Notes that a keyframe is wanted (the receiver itself lost the picture).
    pub fn want(&mut self) {
        self.wanted = true;
    }

    /// A keyframe arrived: what was owed is served (the viewers that asked get it).
    pub fn satisfied(&mut self) {
        self.wanted = false;
    }

    /// Whether a request should go out at `now`: one is owed, `possible` (the source can be
    /// asked: connected, sending) and the interval since the last one has passed. A `true`
    /// counts as sent.
    pub fn due(&mut self, now: Instant, possible: bool) -> bool {
        let allowed = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL);
        if self.wanted && possible && allowed {
            self.wanted = false;
            self.last = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::VideoCodec;

    #[test]
    fn requests_coalesce_and_are_paced() {
        let feeds = VideoFeeds::new(&[VideoCodec::H264, VideoCodec::Vp8]);
        let mut p = KeyframePacer::new();
        let t0 = Instant::now();
        p.take_from(&feeds);
        assert!(!p.due(t0, true), "nothing wanted");
        // Three viewers ask at once: one request.
        for f in feeds.iter() {
            f.request_keyframe();
        }
        feeds.get(VideoCodec::H264).unwrap().request_keyframe();
        p.take_from(&feeds);
        assert!(!p.due(t0, false), "the source cannot be asked yet");
        assert!(p.due(t0, true));
        assert!(!p.due(t0, true), "sent: nothing owed");
        // A request during the interval waits for it, and is not lost.
        feeds.get(VideoCodec::Vp8).unwrap().request_keyframe();
        p.take_from(&feeds);
        assert!(!p.due(t0 + Duration::from_millis(100), true));
        p.take_from(&feeds);
        assert!(!p.due(t0 + Duration::from_millis(499), true));
        assert!(p.due(t0 + KEYFRAME_REQUEST_INTERVAL, true));
        p.want();
        assert!(p.due(t0 + 2 * KEYFRAME_REQUEST_INTERVAL, true));
        // A keyframe that arrives while a request is owed serves it.
        p.want();
        p.satisfied();
        assert!(!p.due(t0 + 4 * KEYFRAME_REQUEST_INTERVAL, true));
    }
}
