//! Several gateways as one service (`CLUSTER_REDIS_URL`), with Valkey/Redis as the shared
//! state.
//!
//! ```text
//!            Redis: gateway:node:{id} (record, TTL)   gateway:stream:{name} (origin, TTL)
//!              ▲ heartbeat: write own, read all ▲
//!   node n1 ───┘                                └─── node n2
//!   WHIP publisher ─▶ cam (origin) ◀──WHEP pull (cluster token)── cluster~0 ─▶ viewers of cam
//! ```
//!
//! * [`node`]: the record a node publishes and the settings of cluster mode.
//! * [`view`]: the last snapshot of nodes and origins, read by requests without touching
//!   Redis (sans-I/O).
//! * [`store`]: the Redis shell (heartbeat, claims, leaving); `tasks`: the heartbeat, and
//!   the publisher and subscriber of session messages.
//! * [`probe`]: a sibling's doctor asks whether this node reaches it.
//! * [`sessions`]: sessions across nodes (pub/sub): an allocation on one node for a
//!   session of another lives, binds and ends with that session.
//! * [`seal`]: records and messages carry an HMAC keyed by the cluster token.
//! * [`pulls`]: an edge node's pulls of streams whose origin is another node, one per
//!   stream however many viewers, dropped after the last viewer.
//!
//! A node asked for a stream it does not hold live pulls it from the origin node the
//! directory names, over WHEP, presenting the cluster token and its id; the origin serves
//! such a pull only from what it holds itself (never pulling further: no loops) and lists
//! it in `/api/v1/cluster`. Losing Redis stops nothing a node serves: requests read the
//! last snapshot, pulls talk node to node, and the heartbeat retries (the log says so once).

pub mod node;
pub mod probe;
pub mod pulls;
pub mod seal;
pub mod sessions;
pub mod store;
mod tasks;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq as _;
use tokio::sync::Notify;

pub use node::{ClusterPlan, NodeRecord};
use store::{Claim, Store, REDIS_TIMEOUT};
use view::View;

use crate::media::pull::PeerAuth;

/// Session messages waiting to be published, at most (beyond, they are dropped: a sibling
/// then learns the session's end from the media's, later).
const OUTBOX: usize = 4096;

/// Siblings' pulls an origin keeps track of, at most (each is a session, which the
/// registry bounds too).
const MAX_SERVED: usize = 4096;

/// What the heartbeat asks the rest of the gateway.
pub struct Local {
    /// This node's record as of now.
    pub record: Box<dyn Fn() -> NodeRecord + Send + Sync>,
    /// The streams this node is the origin of now (live, fed here: a publisher, an RTP
    /// sender, a configured pull).
    pub origins: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Whether a session is still live (to forget siblings' pulls that ended).
    pub session_live: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// A sibling's session ended: wake this node's allocations of it (they close).
    pub wake: Box<dyn Fn(&str) + Send + Sync>,
    /// The sibling nodes' media changed: the relay admits them as peers.
    pub set_siblings: Box<dyn Fn(Vec<relay::core::SiblingMedia>) + Send + Sync>,
}

/// A sibling's pull this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    stream: String,
    node: String,
}

/// Why a sibling's request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// It names a node but does not hold the cluster token.
    #[error("a request naming a cluster node needs the cluster token as `Authorization: Bearer`")]
    BadToken,
    /// Its node id is not one.
    #[error("{0:?} is not a node id")]
    BadNode(String),
}

/// One node's part in the cluster. See the module docs.
pub struct Cluster {
    plan: ClusterPlan,
    store: Store,
    seal: seal::Seal,
    view: Mutex<View>,
    wake: Notify,
    redis_up: AtomicBool,
    /// Bumped each time Redis is reached again after a loss (the subscription is then
    /// made anew: a connection that died silently would hear nothing forever).
    epoch: tokio::sync::watch::Sender<u64>,
    /// Session id → the sibling's pull it is.
    served: Mutex<BTreeMap<String, Served>>,
    /// Streams this node's claims hold (the heartbeat's: it renews and releases them).
    claimed: Mutex<BTreeSet<String>>,
    /// Streams a WHIP publisher claimed before its session is up: kept claimed for
    /// [`store::NODE_TTL`] even while no publisher is registered yet.
    pending: Mutex<BTreeMap<String, Instant>>,
    /// Held by a heartbeat while it talks to Redis; leaving waits for it.
    beat: tokio::sync::Mutex<()>,
    /// Set when the node leaves: the heartbeat writes nothing more.
    leaving: AtomicBool,
    local: std::sync::OnceLock<Local>,
    /// Sessions across nodes ([`sessions`]).
    book: Mutex<sessions::SessionBook>,
    outbox: tokio::sync::mpsc::Sender<String>,
    outbox_rx: Mutex<Option<tokio::sync::mpsc::Receiver<String>>>,
    /// Notified when a sibling tells of an allocation of one of this node's sessions.
    allocations_heard: Arc<Notify>,
}

impl Cluster {
    /// This node's part, not yet started ([`Cluster::start`]).
    pub fn new(plan: ClusterPlan) -> anyhow::Result<Arc<Self>> {
        let store = Store::new(&plan.redis_url)
            .map_err(|e| anyhow::anyhow!("CLUSTER_REDIS_URL: {:?}", e.kind()))?;
        let (outbox, outbox_rx) = tokio::sync::mpsc::channel(OUTBOX);
        Ok(Arc::new(Self {
            seal: seal::Seal::new(&plan.token),
            book: Mutex::new(sessions::SessionBook::default()),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            allocations_heard: Arc::new(Notify::new()),
            view: Mutex::new(View::new(&plan.node_id)),
            plan,
            store,
            wake: Notify::new(),
            redis_up: AtomicBool::new(false),
            epoch: tokio::sync::watch::Sender::new(0),
            served: Mutex::new(BTreeMap::new()),
            claimed: Mutex::new(BTreeSet::new()),
            pending: Mutex::new(BTreeMap::new()),
            beat: tokio::sync::Mutex::new(()),
            leaving: AtomicBool::new(false),
            local: std::sync::OnceLock::new(),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.plan.node_id
    }

    /// The settings.
    pub fn plan(&self) -> &ClusterPlan {
        &self.plan
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the heartbeat with what it asks of the gateway (once; later calls do
    /// nothing). The task holds the cluster weakly and stops with it.
    pub fn start(self: &Arc<Self>, local: Local) {
        if self.local.set(local).is_err() {
            return;
        }
        tracing::info!(node = %self.plan.node_id, "cluster mode: joining through Redis");
        tokio::spawn(tasks::heartbeat(Arc::downgrade(self)));
        tokio::spawn(tasks::subscribe(Arc::downgrade(self)));
        let rx = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(tasks::publish(Arc::downgrade(self), rx));
        }
    }

    fn book(&self) -> MutexGuard<'_, sessions::SessionBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a session message for the siblings (dropped when the queue is full).
    fn announce(&self, m: sessions::Message) {
        if self.outbox.try_send(self.seal.seal(&m.encode())).is_err() {
            tracing::debug!("cluster: session message dropped (queue full or Redis gone)");
        }
    }

    /// Makes the heartbeat run now (a stream just got its source).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Whether the last heartbeat reached Redis.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// The node `stream` is pulled from, when another live node is its origin.
    pub fn origin_elsewhere(&self, stream: &str) -> Option<NodeRecord> {
        self.view().origin_elsewhere(stream).cloned()
    }

    /// The other live nodes as of the last heartbeat.
    pub fn siblings(&self) -> Vec<NodeRecord> {
        self.view().siblings().cloned().collect()
    }

    /// How this node's pulls present themselves to a sibling.
    pub fn peer_auth(&self) -> PeerAuth {
        PeerAuth {
            node: self.plan.node_id.clone(),
            token: self.plan.token.clone(),
        }
    }

    /// A request's sibling node: `Ok(None)` when it names none (`X-Gateway-Node`), the
    /// node when it also holds the cluster token (compared in constant time).
    pub fn sibling_of(
        &self,
        node: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Option<String>, PeerRefusal> {
        let Some(node) = node else { return Ok(None) };
        let ok = bearer.is_some_and(|b| bool::from(b.as_bytes().ct_eq(self.plan.token.as_bytes())));
        if !ok {
            return Err(PeerRefusal::BadToken);
        }
        if !node::valid_node_id(node) {
            return Err(PeerRefusal::BadNode(node.chars().take(80).collect()));
        }
        Ok(Some(node.to_owned()))
    }

    /// Notes that `session` is `node`'s pull of `stream` (for `/api/v1/cluster`).
    pub fn note_served(&self, session: &str, stream: &str, node: &str) {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.len() >= MAX_SERVED {
            if let Some(first) = served.keys().next().cloned() {
                served.remove(&first);
            }
        }
        served.insert(
            session.to_owned(),
            Served {
                stream: stream.to_owned(),
                node: node.to_owned(),
            },
        );
        tracing::info!(node, stream, "serving a sibling node's pull");
    }

    /// Siblings' pulls served now: (stream, node) per live session.
    pub fn served(&self) -> Vec<(String, String)> {
        let live = self.local.get().map(|l| &l.session_live);
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served.retain(|id, _| live.is_some_and(|f| f(id)));
        served
            .values()
            .map(|s| (s.stream.clone(), s.node.clone()))
            .collect()
    }

    /// A WHIP publisher wants `stream`: `Err(holder)` when another node is its origin
    /// (refused like a second publisher). Without Redis the publisher is taken (this node
    /// serves what it has) and the heartbeat settles the claim when Redis is back. A claim
    /// holds for [`store::NODE_TTL`] while the publisher's session comes up.
    pub async fn claim(&self, stream: &str) -> Result<(), String> {
        let held =
            tokio::time::timeout(REDIS_TIMEOUT, self.store.claim(stream, &self.plan.node_id)).await;
        let outcome = match held {
            Ok(Ok(Claim::Held)) => Ok(()),
            Ok(Ok(Claim::HeldBy(holder))) => Err(holder),
            // The last snapshot decides.
            _ => match self.origin_elsewhere(stream) {
                Some(n) => Err(n.id),
                None => Ok(()),
            },
        };
        if outcome.is_ok() {
            lock(&self.pending).insert(stream.to_owned(), Instant::now());
        }
        outcome
    }

    /// The publisher that claimed `stream` did not come up: the claim goes with the next
    /// heartbeat (unless the stream is live here after all).
    pub fn unclaim(&self, stream: &str) {
        lock(&self.pending).remove(stream);
        self.poke();
    }

    /// The streams to hold now: those `live` here and the pending claims.
    fn to_hold(&self, live: Vec<String>, now: Instant) -> BTreeSet<String> {
        let mut pending = lock(&self.pending);
        pending.retain(|_, at| now.saturating_duration_since(*at) < store::NODE_TTL);
        live.into_iter().chain(pending.keys().cloned()).collect()
    }

    /// This node leaves (SIGTERM): the heartbeat stops writing, and its record and claims
    /// go now, so siblings stop sending pulls here at once rather than at the TTL. Bounded
    /// in time.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        // A heartbeat under way finishes first (bounded by its own timeout).
        let _beat = tokio::time::timeout(store::HEARTBEAT + REDIS_TIMEOUT, self.beat.lock()).await;
        let claimed: BTreeSet<String> = lock(&self.claimed)
            .iter()
            .chain(lock(&self.pending).keys())
            .cloned()
            .collect();
        match tokio::time::timeout(
            REDIS_TIMEOUT,
            self.store.leave(&self.plan.node_id, &claimed),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(node = %self.plan.node_id, "left the cluster"),
            _ => {
                tracing::warn!(node = %self.plan.node_id, "could not reach Redis to leave the cluster; siblings forget this node at its TTL")
            }
        }
    }

    /// For operators (`/api/v1/cluster`): the nodes, where each stream lives, the
    /// siblings' pulls this node serves and its own pulls (`pulls`).
    pub fn describe(&self, pulls: serde_json::Value) -> serde_json::Value {
        let (nodes, origins, age) = {
            let v = self.view();
            let nodes: Vec<serde_json::Value> = v
                .nodes()
                .map(|n| {
                    serde_json::json!({
                        "id": n.id,
                        "self": n.id == self.plan.node_id,
                        "peer_url": n.peer_url,
                        "media": format!("{}:{}-{}", n.media_ip, n.media_ports.0, n.media_ports.1),
                        "turn_host": n.turn_host,
                        "viewers": n.viewers,
                        "allocations": n.allocations,
                        "cpu_percent": n.cpu_percent,
                        "started_unix": n.started_unix,
                    })
                })
                .collect();
            let origins: Vec<serde_json::Value> = v
                .origins()
                .map(|(s, n)| serde_json::json!({ "stream": s, "origin": n }))
                .collect();
            let age = v.refreshed().map(|t| t.elapsed().as_millis() as u64);
            (nodes, origins, age)
        };
        let served: Vec<serde_json::Value> = self
            .served()
            .into_iter()
            .map(|(stream, node)| serde_json::json!({ "stream": stream, "node": node }))
            .collect();
        serde_json::json!({
            "node": self.plan.node_id,
            "redis": if self.redis_up() { "up" } else { "unreachable" },
            "directory_age_ms": age,
            "nodes": nodes,
            "streams": origins,
            "serving": served,
            "pulling": pulls,
        })
    }

    /// Exports the cluster's gauges (labels: node ids only).
    pub fn export_metrics(self: &Arc<Self>, metrics: &crate::metrics::Registry) {
        use relay::core::stats::MetricKind::Gauge;
        let c = self.clone();
        metrics.set_gauge(
            "gateway_cluster_redis_up",
            "1 while the last cluster heartbeat reached Redis, else 0.",
            move || u64::from(c.redis_up()),
        );
        let c = self.clone();
        metrics.set_family(
            "gateway_cluster_node_viewers",
            "Viewers of each live cluster node, as its last heartbeat said.",
            Gauge,
            "node",
            move || {
                c.view()
                    .nodes()
                    .map(|n| (n.id.clone(), n.viewers))
                    .collect()
            },
        );
        let c = self.clone();
        metrics.set_family(
            "gateway_cluster_pulls_served",
            "Streams this node serves to each sibling node's pull.",
            Gauge,
            "node",
            move || {
                let mut per: BTreeMap<String, u64> = BTreeMap::new();
                for (_, node) in c.served() {
                    *per.entry(node).or_default() += 1;
                }
                per.into_iter().collect()
            },
        );
    }
}

impl crate::session::Siblings for Cluster {
    fn standing(&self, user: &str) -> relay::core::Standing {
        let view = self.view();
        let alive = |node: &str| view.nodes().any(|n| n.id == node);
        self.book().standing(user, Instant::now(), &alive)
    }

    fn has_siblings(&self) -> bool {
        self.view().siblings().next().is_some()
    }

    fn user_of_relayed(&self, relayed: std::net::SocketAddr) -> Option<String> {
        self.book().user_of_relayed(relayed, Instant::now())
    }

    fn offered(&self, session: &str) {
        let m = self
            .book()
            .offered(&self.plan.node_id, session, Instant::now());
        self.announce(m);
    }

    fn ended(&self, session: &str) {
        let m = self
            .book()
            .ended(&self.plan.node_id, session, Instant::now());
        if let Some(m) = m {
            self.announce(m);
        }
    }

    fn allocated(&self, user: &str, relayed: std::net::SocketAddr) {
        self.announce(sessions::Message::Alloc {
            node: self.plan.node_id.clone(),
            session: user.to_owned(),
            relayed,
        });
    }

    fn allocations_heard(&self) -> Arc<Notify> {
        self.allocations_heard.clone()
    }
}

/// Process CPU time, for the node's load.
pub(crate) fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec().max(0) as u64)
                    + Duration::from_micros(tv.tv_usec().max(0) as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// A std mutex's guard, through poisoning (every holder leaves the data consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
