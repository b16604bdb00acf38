//! WebRTC pull: a stream whose source is another WebRTC server's offer endpoint.
//!
//! On demand ([`demand`]): the first viewer's request connects, the last viewer's leaving
//! disconnects after `PULL_IDLE_TIMEOUT`; a request waits for the upstream's first frame or
//! hears its refusal (Geti's "No active pipeline.").
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

pub mod demand;
pub mod session;
pub mod signal;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use demand::{PullDemand, PullRefusal, PullStatus};
pub use session::{PullError, Upstream};
pub use signal::{Dialect, PeerAuth, SignalError, UpstreamAnswer};

use super::{VideoCodec, VideoFeeds};

/// First wait after a failed session; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The codecs a pulled stream may arrive in (the upstream picks; the engine sends each
/// viewer the feed of its codec).
pub const PULL_CODECS: &[VideoCodec] = &[VideoCodec::H264, VideoCodec::Vp8];

/// A running pull; dropping it stops the pull (the current session ends with the task).
pub struct PullSource {
    task: tokio::task::JoinHandle<()>,
    demand: Arc<PullDemand>,
}

impl Drop for PullSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How pulls run: how long one stays after its last viewer, whom its `https://` upstreams
/// must be certified by.
#[derive(Clone)]
pub struct PullOptions {
    /// `PULL_IDLE_TIMEOUT`.
    pub idle: Duration,
    /// The system's roots plus `PULL_CA_FILE` ([`signal::client_tls`]).
    pub tls: Arc<rustls::ClientConfig>,
}

impl PullOptions {
    /// Pulls staying `idle` after their last viewer, trusting the system's roots and the
    /// certificates of `ca_file` (PEM).
    pub fn new(idle: Duration, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        Ok(Self {
            idle,
            tls: signal::client_tls(ca_file)?,
        })
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl PullSource {
    /// Starts the pull task for `upstream` into `feeds` (which should have a feed per codec
    /// of [`PULL_CODECS`]). The task connects on demand: from a viewer's request
    /// ([`PullDemand::ready`]) until `idle` after the last viewer left. Must be called
    /// within a tokio runtime.
    pub fn spawn(upstream: Upstream, feeds: VideoFeeds, options: &PullOptions) -> Self {
        let demand = Arc::new(PullDemand::new(options.idle));
        let task = tokio::spawn(pull_task(
            upstream,
            feeds,
            demand.clone(),
            options.tls.clone(),
        ));
        PullSource { task, demand }
    }

    /// The demand viewers' requests go through.
    pub fn demand(&self) -> &Arc<PullDemand> {
        &self.demand
    }
}

async fn pull_task(
    upstream: Upstream,
    feeds: VideoFeeds,
    demand: Arc<PullDemand>,
    tls: Arc<rustls::ClientConfig>,
) {
    let mut wake = demand.subscribe();
    let mut backoff = MIN_BACKOFF;
    loop {
        // Nobody watches: no session, until a viewer asks.
        while !demand.wanted(Instant::now(), feeds.viewers()) {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await;
        }
        let attempt = demand.attempt_started();
        // A fresh id per attempt: a Geti backend files connections by it.
        let webrtc_id = format!("gateway-pull-{:016x}", rand::random::<u64>());
        let mut live_since: Option<Instant> = None;
        let mut on_live = || {
            live_since = Some(Instant::now());
            demand.set(PullStatus::Live);
        };
        let keep = || demand.wanted(Instant::now(), feeds.viewers());
        tracing::info!(url = %upstream.url, attempt, "pull: connecting to the upstream");
        let result = session::run(&upstream, &feeds, &webrtc_id, &tls, &mut on_live, &keep).await;
        if live_since.is_some() {
            backoff = MIN_BACKOFF;
        }
        match result {
            Ok(()) => {
                tracing::info!(url = %upstream.url, idle_s = demand.idle().as_secs(), "pull: no viewer left; session closed");
                demand.set(PullStatus::Idle);
                continue;
            }
            Err(e) => {
                tracing::warn!(
                    url = %upstream.url,
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = %e,
                    "pull: upstream session failed; retrying while viewers want it"
                );
                let (reason, answer) = match &e {
                    PullError::Signal(SignalError::Refused(r, a)) => (r.clone(), a.clone()),
                    other => (other.to_string(), None),
                };
                demand.set(PullStatus::Failed {
                    attempt,
                    reason,
                    answer,
                });
                // Our own report is no wake-up: without this the backoff below ends at
                // once and a refusing upstream is asked again in a tight loop.
                wake.borrow_and_update();
            }
        }
        // Jitter: gateways pulling one upstream do not come back in lockstep. A viewer's
        // request cuts the wait short.
        let jitter = Duration::from_millis(rand::random::<u64>() % 250);
        let _ = tokio::time::timeout(backoff + jitter, wake.changed()).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
