//! Proxy mode's streams: one pulled stream per project id of the upstream, made on first use.
//!
//! `POST /api/v1/projects/{id}/offer` on the gateway plays what the upstream's own
//! `/api/v1/projects/{id}/offer` sends, pulled once (one peer connection to the upstream,
//! however many viewers). The engine's streams are fixed at start, so the pool holds
//! [`MAX_PROJECT_STREAMS`] slots, each an engine stream (`upstream~N`) whose feeds a pull
//! fills; a project takes a free slot on its first request, and a slot whose pull nobody
//! wanted for `PULL_IDLE_TIMEOUT` (no viewer, no request) is free again. The
//! [`crate::streams::StreamDirectory`] owns the pool: names resolve there.

use std::sync::Arc;
use std::time::Instant;

use crate::media::pull::{Dialect, PullDemand, PullOptions, Upstream};
use crate::media::VideoFeeds;
pub use crate::pull_pool::PoolFull;
use crate::pull_pool::PullPool;

/// Projects pulled at once, at most.
pub const MAX_PROJECT_STREAMS: usize = 64;

/// The prefix of the slots' engine stream names (`upstream~N`).
const SLOT_PREFIX: &str = "upstream";

/// The pool of project streams.
pub struct ProjectStreams {
    /// `http://host:port` of the upstream.
    base: hyper::Uri,
    pool: PullPool,
}

impl std::fmt::Debug for ProjectStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectStreams")
            .field("base", &self.base)
            .field("slots", &self.pool.capacity())
            .finish()
    }
}

impl ProjectStreams {
    /// A pool of `slots` streams pulling from `base` (`http://host:port`), each kept
    /// `pull.idle` after its last viewer.
    pub fn new(base: hyper::Uri, pull: PullOptions, slots: usize) -> Self {
        Self {
            base,
            pool: PullPool::new(SLOT_PREFIX, pull, slots),
        }
    }

    /// The engine's streams of the pool (name, feeds).
    pub fn engine_streams(&self) -> impl Iterator<Item = (&str, &VideoFeeds)> {
        self.pool.engine_streams()
    }

    /// The upstream's offer endpoint of `project`.
    fn offer_url(&self, project: &str) -> Option<hyper::Uri> {
        let authority = self.base.authority()?.clone();
        hyper::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(format!("/api/v1/projects/{project}/offer"))
            .build()
            .ok()
    }

    /// The slot name playing `project` (a valid stream name: it goes into a URL path),
    /// taking a free slot (or one idle long enough) on first use. Must run within a tokio
    /// runtime (a new pull's task starts here).
    pub fn assign(&self, project: &str, now: Instant) -> Result<&str, PoolFull> {
        self.pool.assign(project, now, || {
            let url = self.offer_url(project)?;
            tracing::info!(project, %url, "proxy: pulling the project's video from the upstream");
            Some(Upstream {
                dialect: Dialect::GetiOffer,
                url,
                peer: None,
            })
        })
    }

    /// The feeds and demand of the slot named `name` while a project holds it.
    pub fn pull_of(&self, name: &str) -> Option<(VideoFeeds, Arc<PullDemand>)> {
        self.pool.pull_of(name)
    }

    /// Whether the slot named `name` still holds the pull of `demand` (a slot may have
    /// gone to another project while a request waited).
    pub fn still_holds(&self, name: &str, demand: &Arc<PullDemand>) -> bool {
        self.pool.still_holds(name, demand)
    }

    /// For operators: each held slot's project, stream and viewers.
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .pool
            .held(now)
            .into_iter()
            .map(|h| {
                serde_json::json!({
                    "project": h.key,
                    "stream": h.stream,
                    "live": h.live,
                    "viewers": h.viewers,
                })
            })
            .collect();
        serde_json::json!({ "upstream": self.base.to_string(), "max": self.pool.capacity(), "projects": list })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn projects_share_a_slot_and_idle_slots_are_taken_back() {
        let pool = ProjectStreams::new(
            "http://127.0.0.1:9".parse().unwrap(),
            PullOptions::new(Duration::from_secs(10), None).unwrap(),
            2,
        );
        assert_eq!(pool.engine_streams().count(), 2);
        let t0 = Instant::now();
        let a = pool.assign("proj-a", t0).unwrap().to_owned();
        assert_eq!(
            pool.assign("proj-a", t0).unwrap(),
            a,
            "one slot per project"
        );
        let b = pool.assign("proj-b", t0).unwrap().to_owned();
        assert_ne!(a, b);
        assert_eq!(pool.assign("proj-c", t0), Err(PoolFull(2)), "both wanted");
        assert!(pool.pull_of(&a).is_some());
        assert!(pool.pull_of("upstream~9").is_none());
        // Ten seconds on, nobody watched: a new project takes a slot back.
        let later = t0 + Duration::from_secs(11);
        let c = pool.assign("proj-c", later).unwrap().to_owned();
        assert!(c == a || c == b);
        let d = pool.describe(later);
        assert_eq!(d["projects"].as_array().unwrap().len(), 2);
        assert_eq!(
            pool.offer_url("proj-c").unwrap().to_string(),
            "http://127.0.0.1:9/api/v1/projects/proj-c/offer"
        );
    }
}
