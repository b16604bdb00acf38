//! A fixed pool of pulled streams made on first use: proxy mode's project streams
//! ([`crate::project_streams`]) and a cluster node's streams pulled from their origin node
//! ([`crate::cluster::pulls`]).
//!
//! The engine's streams are fixed at start, so the pool holds a number of slots, each an
//! engine stream (`PREFIX~N`) whose feeds a pull fills. A key (a project id, a stream at its
//! origin node) takes a free slot on its first request, and a slot whose pull nobody wanted
//! for `PULL_IDLE_TIMEOUT` (no viewer, no request) is free again. However many viewers watch
//! a key, it is one pull: the upstream sends once.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::media::pull::{PullDemand, PullOptions, PullSource, PullStatus, Upstream, PULL_CODECS};
use crate::media::VideoFeeds;

/// A key's pull in a slot.
struct Held {
    key: String,
    pull: PullSource,
}

/// Why no slot could be had: every one is held and wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFull(pub usize);

/// One held slot, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSlot {
    /// The key that holds it.
    pub key: String,
    /// Its engine stream.
    pub stream: String,
    /// Whether frames arrive.
    pub live: bool,
    /// Viewers watching it.
    pub viewers: usize,
}

/// See the module docs.
pub struct PullPool {
    /// PULL_IDLE_TIMEOUT and the TLS roots of the pulls.
    pull: PullOptions,
    names: Vec<String>,
    feeds: Vec<VideoFeeds>,
    slots: Mutex<Vec<Option<Held>>>,
}

impl std::fmt::Debug for PullPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullPool")
            .field("slots", &self.names.len())
            .finish()
    }
}

impl PullPool {
    /// A pool of `slots` engine streams named `{prefix}~{i}`, each pull kept `pull.idle`
    /// after its last viewer. `prefix` must not be a stream name's character set alone
    /// (`~` is none of them, so a slot never shadows a configured stream).
    pub fn new(prefix: &str, pull: PullOptions, slots: usize) -> Self {
        Self {
            pull,
            names: (0..slots).map(|i| format!("{prefix}~{i}")).collect(),
            feeds: (0..slots).map(|_| VideoFeeds::new(PULL_CODECS)).collect(),
            slots: Mutex::new((0..slots).map(|_| None).collect()),
        }
    }

    /// How many slots the pool has.
    pub fn capacity(&self) -> usize {
        self.names.len()
    }

    /// The engine's streams of the pool (name, feeds).
    pub fn engine_streams(&self) -> impl Iterator<Item = (&str, &VideoFeeds)> {
        self.names.iter().map(String::as_str).zip(self.feeds.iter())
    }

    /// The slot name playing `key`, taking a free slot (or one idle long enough) on first
    /// use with a pull of `upstream()` (`None`: no slot is taken). The request counts as
    /// demand, so the slot is not taken back before its first viewer could come. Must run
    /// within a tokio runtime (a new pull's task starts here).
    pub fn assign(
        &self,
        key: &str,
        now: Instant,
        upstream: impl FnOnce() -> Option<Upstream>,
    ) -> Result<&str, PoolFull> {
        let full = PoolFull(self.names.len());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mine = slots.iter().zip(&self.names).find_map(|(s, name)| {
            let h = s.as_ref().filter(|h| h.key == key)?;
            h.pull.demand().request(now);
            Some(name.as_str())
        });
        if let Some(name) = mine {
            return Ok(name);
        }
        // Free: empty or nobody wanted it for PULL_IDLE_TIMEOUT; else one the upstream
        // refused with nobody watching (a request for a wrong key holds no slot long).
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
        let Some(upstream) = upstream() else {
            return Err(full);
        };
        if let Some(old) = slot.as_ref() {
            tracing::info!(key = %old.key, stream = %name, "idle pulled stream dropped");
        }
        tracing::info!(key, url = %upstream.url, stream = %name, "pulling a stream from its upstream");
        let pull = PullSource::spawn(upstream, feeds.clone(), &self.pull);
        pull.demand().request(now);
        *slot = Some(Held {
            key: key.to_owned(),
            pull,
        });
        Ok(name)
    }

    /// The feeds and demand of the slot named `name` while a key holds it.
    pub fn pull_of(&self, name: &str) -> Option<(VideoFeeds, Arc<PullDemand>)> {
        let i = self.names.iter().position(|n| n == name)?;
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let held = slots.get(i)?.as_ref()?;
        Some((self.feeds.get(i)?.clone(), held.pull.demand().clone()))
    }

    /// Whether the slot named `name` still holds the pull of `demand` (a slot may have gone
    /// to another key while a request waited).
    pub fn still_holds(&self, name: &str, demand: &Arc<PullDemand>) -> bool {
        self.pull_of(name)
            .is_some_and(|(_, d)| Arc::ptr_eq(&d, demand))
    }

    /// Every held slot (whether its pull runs or idles), for operators.
    pub fn held(&self, now: Instant) -> Vec<HeldSlot> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .zip(self.names.iter().zip(&self.feeds))
            .filter_map(|(s, (name, feeds))| {
                let h = s.as_ref()?;
                let live = feeds.last_frame().is_some_and(|t| {
                    now.saturating_duration_since(t) <= crate::streams::LIVE_GRACE
                });
                Some(HeldSlot {
                    key: h.key.clone(),
                    stream: name.clone(),
                    live,
                    viewers: feeds.viewers(),
                })
            })
            .collect()
    }

    /// The keys whose pull is wanted now (a viewer watches, or one asked within
    /// `PULL_IDLE_TIMEOUT`): the pulls that run or are about to.
    pub fn wanted(&self, now: Instant) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .zip(&self.feeds)
            .filter_map(|(s, feeds)| {
                let h = s.as_ref()?;
                h.pull
                    .demand()
                    .wanted(now, feeds.viewers())
                    .then(|| h.key.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::pull::Dialect;
    use std::time::Duration;

    fn upstream(path: &str) -> Option<Upstream> {
        Some(Upstream {
            dialect: Dialect::Whep,
            url: format!("http://127.0.0.1:9{path}").parse().ok()?,
            peer: None,
        })
    }

    #[tokio::test]
    async fn keys_share_a_slot_and_idle_slots_are_taken_back() {
        let pool = PullPool::new(
            "t",
            PullOptions::new(Duration::from_secs(10), None).unwrap(),
            2,
        );
        assert_eq!(pool.engine_streams().count(), 2);
        let t0 = Instant::now();
        let a = pool.assign("a", t0, || upstream("/a")).unwrap().to_owned();
        assert_eq!(a, "t~0");
        let again = pool.assign("a", t0, || panic!("no second pull")).unwrap();
        assert_eq!(again, a, "one slot per key");
        assert_eq!(
            pool.assign("x", t0, || None),
            Err(PoolFull(2)),
            "no upstream"
        );
        let b = pool.assign("b", t0, || upstream("/b")).unwrap().to_owned();
        assert_ne!(a, b);
        assert_eq!(pool.assign("c", t0, || upstream("/c")), Err(PoolFull(2)));
        assert!(pool.pull_of(&a).is_some());
        assert!(pool.pull_of("t~9").is_none());
        assert_eq!(pool.wanted(t0).len(), 2);
        // Ten seconds on, nobody watched: a new key takes a slot back.
        let later = t0 + Duration::from_secs(11);
        assert!(pool.wanted(later).is_empty());
        let c = pool
            .assign("c", later, || upstream("/c"))
            .unwrap()
            .to_owned();
        assert!(c == a || c == b);
        let held = pool.held(later);
        assert_eq!(held.len(), 2);
        assert!(held
            .iter()
            .any(|h| h.key == "c" && h.stream == c && !h.live));
    }
}
