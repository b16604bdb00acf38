//! Proxy mode's streams: one pulled stream per project id of the upstream, made on first use.
//!
//! `POST /api/v1/projects/{id}/offer` on the gateway plays what the upstream's own
//! `/api/v1/projects/{id}/offer` sends, pulled once (one peer connection to the upstream,
//! however many viewers). The engine's streams are fixed at start, so the pool holds
//! [`MAX_PROJECT_STREAMS`] slots, each an engine stream (`upstream~N`) whose feeds a pull
//! fills; a project takes a free slot on its first request, and a slot whose pull nobody
//! wanted for `PULL_IDLE_TIMEOUT` (no viewer, no request) is free again. The
//! [`crate::streams::StreamDirectory`] owns the pool: names resolve there.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::media::pull::{
    Dialect, PullDemand, PullOptions, PullSource, PullStatus, Upstream, PULL_CODECS,
};
use crate::media::VideoFeeds;

/// Projects pulled at once, at most.
pub const MAX_PROJECT_STREAMS: usize = 64;

/// The prefix of the slots' engine stream names (`~` is no stream name's character, so a
/// slot never shadows a configured stream).
const SLOT_PREFIX: &str = "upstream~";

/// A project's pull in a slot.
struct Held {
    project: String,
    pull: PullSource,
}

/// The pool of project streams.
pub struct ProjectStreams {
    /// `http://host:port` of the upstream.
    base: hyper::Uri,
    /// PULL_IDLE_TIMEOUT and the TLS roots of the pulls.
    pull: PullOptions,
    names: Vec<String>,
    feeds: Vec<VideoFeeds>,
    slots: Mutex<Vec<Option<Held>>>,
}

impl std::fmt::Debug for ProjectStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectStreams")
            .field("base", &self.base)
            .field("slots", &self.names.len())
            .finish()
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFull(pub usize);

impl ProjectStreams {
    /// A pool of `slots` streams pulling from `base` (`http://host:port`), each kept
    /// `pull.idle` after its last viewer.
    pub fn new(base: hyper::Uri, pull: PullOptions, slots: usize) -> Self {
        Self {
            base,
            pull,
            names: (0..slots).map(|i| format!("{SLOT_PREFIX}{i}")).collect(),
            feeds: (0..slots).map(|_| VideoFeeds::new(PULL_CODECS)).collect(),
            slots: Mutex::new((0..slots).map(|_| None).collect()),
        }
    }

    /// The engine's streams of the pool (name, feeds).
    pub fn engine_streams(&self) -> impl Iterator<Item = (&str, &VideoFeeds)> {
        self.names.iter().map(String::as_str).zip(self.feeds.iter())
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
    /// taking a free slot (or one idle long enough) on first use; the request counts as
    /// demand, so the slot is not taken back before its first viewer could come. Must run
    /// within a tokio runtime (a new pull's task starts here).
    pub fn assign(&self, project: &str, now: Instant) -> Result<&str, PoolFull> {
        let full = PoolFull(self.names.len());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mine = slots.iter().zip(&self.names).find_map(|(s, name)| {
            let h = s.as_ref().filter(|h| h.project == project)?;
            h.pull.demand().request(now);
            Some(name.as_str())
        });
        if let Some(name) = mine {
            return Ok(name);
        }
        // Free: empty or nobody wanted it for PULL_IDLE_TIMEOUT; else one the upstream
        // refused with nobody watching (a request for a wrong project id holds no slot long).
        let viewers: Vec<usize> = self.feeds.iter().map(VideoFeeds::viewers).collect();
        let free = slots
            .iter()
            .zip(&viewers)
            .position(|(s, v)| s.as_ref().is_none_or(|h| !h.pull.demand().wanted(now, *v)))
            .or_else(|| {
                slots.iter().zip(&viewers).position(|(s, v)| {
                    s.as_ref().is_some_and(|h| {
                        *v == 0 && matches!(h.pull.demand().status(), PullStatus::Failed { .. })
                    })
                })
            });
        let (Some(slot), Some(name), Some(feeds)) = (
            free.and_then(|i| slots.get_mut(i)),
            free.and_then(|i| self.names.get(i)),
            free.and_then(|i| self.feeds.get(i)),
        ) else {
            return Err(full);
        };
        let Some(url) = self.offer_url(project) else {
            return Err(full);
        };
        if let Some(old) = slot.as_ref() {
            tracing::info!(project = %old.project, "proxy: idle project stream dropped");
        }
        tracing::info!(project, %url, stream = %name, "proxy: pulling the project's video from the upstream");
        let pull = PullSource::spawn(
            Upstream {
                dialect: Dialect::GetiOffer,
                url,
            },
            feeds.clone(),
            &self.pull,
        );
        pull.demand().request(now);
        *slot = Some(Held {
            project: project.to_owned(),
            pull,
        });
        Ok(name)
    }

    /// The feeds and demand of the slot named `name` while a project holds it.
    pub fn pull_of(&self, name: &str) -> Option<(VideoFeeds, Arc<PullDemand>)> {
        let i = self.names.iter().position(|n| n == name)?;
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let held = slots.get(i)?.as_ref()?;
        Some((self.feeds.get(i)?.clone(), held.pull.demand().clone()))
    }

    /// Whether the slot named `name` still holds the pull of `demand` (a slot may have
    /// gone to another project while a request waited).
    pub fn still_holds(&self, name: &str, demand: &Arc<PullDemand>) -> bool {
        self.pull_of(name)
            .is_some_and(|(_, d)| Arc::ptr_eq(&d, demand))
    }

    /// For operators: each held slot's project, stream and viewers.
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<serde_json::Value> = slots
            .iter()
            .zip(self.names.iter().zip(&self.feeds))
            .filter_map(|(s, (name, feeds))| {
                let h = s.as_ref()?;
                let live = feeds.last_frame().is_some_and(|t| {
                    now.saturating_duration_since(t) <= crate::streams::LIVE_GRACE
                });
                Some(serde_json::json!({
                    "project": h.project,
                    "stream": name,
                    "live": live,
                    "viewers": feeds.viewers(),
                }))
            })
            .collect();
        serde_json::json!({ "upstream": self.base.to_string(), "max": self.names.len(), "projects": list })
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
