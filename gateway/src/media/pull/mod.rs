//! WebRTC pull: a stream whose source is another WebRTC server's offer endpoint.
//!
//! The gateway is one recvonly client of the upstream per stream ([`session`]), whatever
//! the number of viewers: the upstream encodes once. The offer goes out in the upstream's
//! dialect ([`signal`]: WHEP or Geti's JSON offer). When the session ends (the upstream
//! restarts, its pipeline stops, the network fails) it is made again with a backoff, so
//! viewers get video again without reconnecting: their sessions with the gateway never
//! broke, and the next keyframe resumes them.
//!
//! ```text
//! upstream (Geti backend, another gateway) ──RTP/SRTP──▶ pull session ──EncodedFrame──▶ feeds ──▶ engine ──▶ viewers
//!            ▲                                               │
//!            └──────────── PLI (viewers' keyframe requests) ─┘
//! ```

pub mod session;
pub mod signal;

use std::time::{Duration, Instant};

pub use session::{PullError, Upstream};
pub use signal::{Dialect, SignalError};

use super::{VideoCodec, VideoFeeds};

/// First wait after a failed session; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A session that delivered frames for this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// The codecs a pulled stream may arrive in (the upstream picks; the engine sends each
/// viewer the feed of its codec).
pub const PULL_CODECS: &[VideoCodec] = &[VideoCodec::H264, VideoCodec::Vp8];

/// A running pull; dropping it stops the pull (the current session ends with the task).
pub struct PullSource {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PullSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PullSource {
    /// Starts pulling `upstream` into `feeds` (which should have a feed per codec of
    /// [`PULL_CODECS`]). Must be called within a tokio runtime.
    pub fn spawn(upstream: Upstream, feeds: VideoFeeds) -> Self {
        let task = tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            let mut attempt: u64 = 0;
            loop {
                attempt += 1;
                // A fresh id per attempt: a Geti backend files connections by it.
                let webrtc_id = format!("gateway-pull-{:016x}", rand::random::<u64>());
                let mut live_since: Option<Instant> = None;
                let mut on_live = || live_since = Some(Instant::now());
                let result = session::run(&upstream, &feeds, &webrtc_id, &mut on_live).await;
                let healthy = live_since.is_some_and(|t| t.elapsed() >= HEALTHY_RUN);
                if healthy || live_since.is_some() {
                    backoff = MIN_BACKOFF;
                }
                match result {
                    Ok(()) => tracing::info!(url = %upstream.url, "pull: session ended"),
                    Err(e) => tracing::warn!(
                        url = %upstream.url,
                        attempt,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %e,
                        "pull: upstream session failed; retrying"
                    ),
                }
                // Jitter: gateways pulling one upstream do not come back in lockstep.
                let jitter = Duration::from_millis(rand::random::<u64>() % 250);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        PullSource { task }
    }
}
