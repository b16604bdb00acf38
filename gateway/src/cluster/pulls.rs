//! An edge node's pulls: a stream whose origin is another node is pulled from there over
//! WHEP, once per node however many viewers watch it here, and dropped `PULL_IDLE_TIMEOUT`
//! after the last viewer left (the slots of a [`PullPool`]).

use std::sync::Arc;
use std::time::Instant;

use super::Cluster;
use crate::media::pull::{Dialect, PullDemand, PullOptions, Upstream};
use crate::media::VideoFeeds;
use crate::pull_pool::{PoolFull, PullPool};

/// Streams pulled from sibling nodes at once, at most.
pub const MAX_CLUSTER_PULLS: usize = 64;

/// The prefix of the slots' engine stream names (`cluster~N`).
const SLOT_PREFIX: &str = "cluster";

/// See the module docs.
pub struct ClusterPulls {
    cluster: Arc<Cluster>,
    pool: PullPool,
}

impl std::fmt::Debug for ClusterPulls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPulls")
            .field("node", &self.cluster.node_id())
            .field("pool", &self.pool)
            .finish()
    }
}

impl ClusterPulls {
    /// `slots` pulls of `cluster`'s streams at most, each kept `pull.idle` after its last
    /// viewer.
    pub fn new(cluster: Arc<Cluster>, pull: PullOptions, slots: usize) -> Self {
        Self {
            cluster,
            pool: PullPool::new(SLOT_PREFIX, pull, slots),
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The engine's streams of the pool (name, feeds).
    pub fn engine_streams(&self) -> impl Iterator<Item = (&str, &VideoFeeds)> {
        self.pool.engine_streams()
    }

    /// The slot playing `stream` pulled from its origin node; `None` when no other live
    /// node is its origin. Must run within a tokio runtime (a new pull starts here).
    pub fn assign(&self, stream: &str, now: Instant) -> Option<Result<&str, PoolFull>> {
        let origin = self.cluster.origin_elsewhere(stream)?;
        // Keyed by origin too: a stream that moved to another node is a new pull.
        let key = format!("{stream}@{}", origin.id);
        Some(self.pool.assign(&key, now, || {
            let url = format!("{}/whep/{stream}", origin.peer_url.trim_end_matches('/'));
            Some(Upstream {
                dialect: Dialect::Whep,
                url: url.parse().ok()?,
                peer: Some(self.cluster.peer_auth()),
            })
        }))
    }

    /// The feeds and demand of the slot named `name` while a pull holds it.
    pub fn pull_of(&self, name: &str) -> Option<(VideoFeeds, Arc<PullDemand>)> {
        self.pool.pull_of(name)
    }

    /// Whether the slot named `name` still holds the pull of `demand`.
    pub fn still_holds(&self, name: &str, demand: &Arc<PullDemand>) -> bool {
        self.pool.still_holds(name, demand)
    }

    /// For operators: this node's pulls (stream, origin, slot, live, viewers, running).
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        let wanted = self.pool.wanted(now);
        let list: Vec<serde_json::Value> = self
            .pool
            .held(now)
            .into_iter()
            .map(|h| {
                let (stream, origin) = h.key.rsplit_once('@').unwrap_or((h.key.as_str(), ""));
                serde_json::json!({
                    "stream": stream,
                    "origin": origin,
                    "slot": h.stream,
                    "live": h.live,
                    "viewers": h.viewers,
                    "running": wanted.contains(&h.key),
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }
}
