//! Item 4 of the cluster issue: a cluster of gateways against one. Three nodes and Redis in
//! the bench's network namespace (one address, each node its own ports), the clip fed by
//! RTP to the origin node's stream `cam`, the edge nodes pulling it from there over WHEP
//! (one pull per edge however many viewers):
//!
//! ```text
//! ffmpeg ──RTP──▶ origin (cam) ──WHEP pull──▶ edge 1 ──▶ viewers
//!                              └─WHEP pull──▶ edge 2 ──▶ viewers
//! ```
//!
//! * [`Cluster`] starts that, with the node under measurement pinned to the servers' core
//!   and the others beside the load generator.
//! * [`origin_cost`] measures what each edge's pull costs the origin: the origin's CPU
//!   with no pull, one, then two (one viewer on each edge), and with one local viewer, so
//!   the cost reads in viewers too.
//! * The viewers part ([`crate::viewers`], path `ClusterEdge`) ramps viewers on an edge
//!   node pinned to its core, as it does for a single gateway.
//!
//! A cluster of three nodes, a core each, then serves the viewers of two edges plus those
//! of the origin, whose core also carries the two pulls. On a machine with fewer than four
//! cores the three cannot run pinned side by side, so the nodes are measured one at a time
//! on the same core and the cluster's figure is their sum (the report says so).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::clip::Clip;
use crate::http::http_as;
use crate::netns::{Netns, SERVER_IP};
use crate::servers::{self, ChildGuard, Common};

/// The stream the origin feeds and the edges pull.
pub const STREAM: &str = "cam";
/// Operators' token of the bench's nodes (for `/api/v1/cluster`).
const API_TOKEN: &str = "gateway-bench-cluster-api-token";
/// Bound on the cluster's start (Redis, three nodes, the edges hearing of the origin).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports inside the namespace (every port there is free).
const REDIS_PORT: u16 = 6390;
const RTP_PORT: u16 = 5004;

/// Which node runs pinned to the servers' core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// The origin (its cost per edge is measured).
    Origin,
    /// The first edge (its viewers are ramped).
    Edge,
}

/// One node of the bench's cluster.
pub struct Node {
    guard: ChildGuard,
    log: PathBuf,
    /// Its HTTP API.
    pub http: SocketAddr,
}

impl Node {
    /// CPU seconds the node has used.
    pub fn cpu_seconds(&self) -> f64 {
        servers::cpu_seconds(self.guard.pid()).unwrap_or(f64::NAN)
    }
}

/// Redis, an origin fed by the clip, and `edges` edge nodes.
pub struct Cluster {
    _redis: ChildGuard,
    _feed: ChildGuard,
    /// The origin node.
    pub origin: Node,
    /// The edge nodes.
    pub edges: Vec<Node>,
}

impl Cluster {
    /// Starts the cluster in `ns` with `pinned` on the servers' core; waits until every
    /// edge knows the origin holds [`STREAM`] live.
    pub async fn start(
        common: &Common,
        ns: &Netns,
        clip: &Clip,
        edges: usize,
        pinned: Pinned,
        serial: usize,
    ) -> anyhow::Result<Self> {
        let mut redis_cmd = ns.command(None, "redis-server".as_ref());
        redis_cmd
            // Loopback inside the namespace: the nodes' only client, and Redis's protected
            // mode takes loopback clients without a password.
            .args(["--bind", "127.0.0.1", "--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null());
        let redis = ChildGuard::spawn(redis_cmd, "redis-server (cluster)")?;
        let redis_url = format!("redis://127.0.0.1:{REDIS_PORT}/0");
        let node = |i: usize, core: Option<usize>| -> anyhow::Result<Node> {
            let port = |base: u16| base + u16::try_from(i).unwrap_or(0) * 10;
            let http = SocketAddr::new(SERVER_IP, port(8100));
            let turn = SocketAddr::new(SERVER_IP, port(3500));
            let media = (port(40000), port(40000) + 7);
            let log = common.dir.join(format!("cluster-{serial}-n{i}.log"));
            let mut cmd =
                common.gateway_command_core(Some(ns), core, turn, &http.to_string(), &log)?;
            cmd.env("WEBRTC_BIND_IP", SERVER_IP.to_string())
                .env("WEBRTC_ADVERTISE_IP", SERVER_IP.to_string())
                .env("WEBRTC_PORT_RANGE", format!("{}-{}", media.0, media.1))
                .env("TURN_RELAY_IP", SERVER_IP.to_string())
                .env("MAX_VIEWERS", "100000")
                .env("API_TOKEN", API_TOKEN)
                .env("CLUSTER_REDIS_URL", &redis_url)
                .env("CLUSTER_NODE_ID", format!("n{i}"))
                .env(
                    "RUST_LOG",
                    "warn,gateway::cluster=info,gateway::media_source=info",
                );
            if i == 0 {
                cmd.env(
                    "STREAMS",
                    format!("{STREAM}=rtp://{SERVER_IP}:{RTP_PORT}?codec=h264"),
                );
            }
            Ok(Node {
                guard: ChildGuard::spawn(cmd, "gateway (cluster node)")?,
                log,
                http,
            })
        };
        let core = |on: bool| if on { common.server_core } else { None };
        let origin = node(0, core(pinned == Pinned::Origin))?;
        let edges = (1..=edges)
            .map(|i| node(i, core(pinned == Pinned::Edge && i == 1)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let feed = ChildGuard::spawn(
            clip.stream_command(SocketAddr::new(SERVER_IP, RTP_PORT)),
            "ffmpeg (clip)",
        )?;
        let mut cluster = Cluster {
            _redis: redis,
            _feed: feed,
            origin,
            edges,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Until every edge's directory names the origin as [`STREAM`]'s (bounded).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for i in 0..self.edges.len() {
            loop {
                for n in std::iter::once(&mut self.origin).chain(self.edges.iter_mut()) {
                    if let Some(why) = n.guard.exited() {
                        bail!("{why}; log:\n{}", servers::tail(&n.log, 10));
                    }
                }
                let Some(edge) = self.edges.get(i) else { break };
                if origin_known(edge.http).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "edge n{} did not hear of the origin's stream within {READY_TIMEOUT:?}; \
                         origin log:\n{}",
                        i + 1,
                        servers::tail(&self.origin.log, 30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// Whether the node at `http` knows node n0 as [`STREAM`]'s origin.
async fn origin_known(http: SocketAddr) -> bool {
    let Ok((200, body)) = http_as(http, "GET", "/api/v1/cluster", None, Some(API_TOKEN)).await
    else {
        return false;
    };
    let doc: Value = serde_json::from_str(&body).unwrap_or_default();
    doc["streams"].as_array().is_some_and(|a| {
        a.iter()
            .any(|s| s["stream"] == STREAM && s["origin"] == "n0")
    })
}

/// What each edge's pull costs the origin.
#[derive(Debug, Clone, Default)]
pub struct OriginCost {
    /// Origin CPU (fraction of a core) with no pull, one, two; with one local viewer.
    pub idle: f64,
    pub one_edge: f64,
    pub two_edges: f64,
    pub one_viewer: f64,
}

impl OriginCost {
    /// Extra origin CPU per edge node (fraction of a core), from the two-edge window.
    pub fn per_edge(&self) -> f64 {
        (self.two_edges - self.idle) / 2.0
    }

    /// The same, in viewers of the origin (one local viewer's cost).
    pub fn per_edge_in_viewers(&self) -> f64 {
        let viewer = self.one_viewer - self.idle;
        if viewer > 0.0 {
            self.per_edge() / viewer
        } else {
            f64::NAN
        }
    }
}

/// `node`'s CPU over `window`, as a fraction of a core.
async fn cpu_over(node: &Node, window: Duration) -> f64 {
    let (c0, t0) = (node.cpu_seconds(), Instant::now());
    tokio::time::sleep(window).await;
    (node.cpu_seconds() - c0) / t0.elapsed().as_secs_f64().max(1e-3)
}

/// Measures [`OriginCost`]: the origin pinned, two edges beside the load generator, one
/// window of `window` per state.
pub async fn origin_cost(
    common: &Common,
    ns: &Netns,
    clip: &Clip,
    window: Duration,
) -> anyhow::Result<OriginCost> {
    let cluster = Cluster::start(common, ns, clip, 2, Pinned::Origin, 9000).await?;
    // A viewer of [`STREAM`] at `http`, once it has its first frame (bounded).
    let watch = |http: SocketAddr, id: &'static str, stop: tokio::sync::watch::Receiver<bool>| async move {
        let first = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(crate::viewers::watch_one(
            http,
            STREAM,
            id,
            first.clone(),
            stop,
        ));
        tokio::time::timeout(Duration::from_secs(15), first.notified())
            .await
            .with_context(|| format!("viewer {id} had no first frame within 15 s"))?;
        anyhow::Ok(task)
    };
    let mut cost = OriginCost {
        idle: cpu_over(&cluster.origin, window).await,
        ..OriginCost::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut viewers = Vec::new();
    for (i, (edge, id)) in cluster
        .edges
        .iter()
        .zip(["bench-edge-1", "bench-edge-2"])
        .enumerate()
    {
        viewers.push(watch(edge.http, id, rx.clone()).await?);
        let c = cpu_over(&cluster.origin, window).await;
        if i == 0 {
            cost.one_edge = c;
        } else {
            cost.two_edges = c;
        }
    }
    let _ = tx.send(true);
    for v in viewers.drain(..) {
        let _ = v.await;
    }
    drop(cluster);
    // One local viewer of the origin, no pull: what a viewer costs there.
    let cluster = Cluster::start(common, ns, clip, 0, Pinned::Origin, 9001).await?;
    cost.idle = cost.idle.min(cpu_over(&cluster.origin, window).await);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let v = watch(cluster.origin.http, "bench-origin-1", rx).await?;
    cost.one_viewer = cpu_over(&cluster.origin, window).await;
    let _ = tx.send(true);
    let _ = v.await;
    Ok(cost)
}

/// Prefix of the cluster's table rows.
pub const ROW: &str =
    "cluster of 3 gateways (an origin, 2 edges), a core each, direct UDP (peer: one gateway)";

/// The cluster's figures from the viewer parts' `outcomes` (one gateway, one edge) and the
/// origin's cost per edge, measured here; into the table and the notes.
pub async fn report(
    common: &Common,
    clip: &Clip,
    quick: bool,
    outcomes: &[crate::viewers::Outcome],
    results: &mut crate::report::Results,
    notes: &mut Vec<String>,
) {
    use crate::report::Better;
    use crate::servers::Kind;
    use crate::viewers::Path;
    let of = |p: Path| {
        outcomes
            .iter()
            .find(|o| o.path() == p)
            .and_then(|o| o.viewers())
    };
    let window = Duration::from_secs(if quick { 2 } else { 10 });
    let cost = match Netns::create() {
        Ok(ns) => origin_cost(common, &ns, clip, window).await,
        Err(e) => Err(e),
    };
    let cost = match cost {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!(
                "cluster: origin's cost per edge not measured: {e:#}"
            ));
            return;
        }
    };
    notes.push(format!(
        "cluster: origin CPU over {:.0} s windows, pinned to its core: {:.1} % fed by RTP with \
         no viewer; {:.1} % with one edge pulling (one viewer there); {:.1} % with two; \
         {:.1} % with one local viewer instead",
        window.as_secs_f64(),
        cost.idle * 100.0,
        cost.one_edge * 100.0,
        cost.two_edges * 100.0,
        cost.one_viewer * 100.0
    ));
    let mut add = |what: &str, unit: &'static str, better: Better, v: f64| {
        results.add(&format!("{ROW}: {what}"), unit, better, Kind::Gateway, v);
    };
    add(
        "origin's extra CPU per edge node",
        "% of a core",
        Better::Lower,
        cost.per_edge() * 100.0,
    );
    add(
        "origin's extra cost per edge node, in viewers of the origin",
        "viewers",
        Better::Lower,
        cost.per_edge_in_viewers(),
    );
    let (Some(single), Some(edge)) = (of(Path::GatewayDirect), of(Path::ClusterEdge)) else {
        notes.push(
            "cluster: no viewer figure for one gateway or for an edge node: no cluster figure"
                .into(),
        );
        return;
    };
    let pulls = 2.0 * cost.per_edge_in_viewers().max(0.0);
    let origin = (single as f64 - pulls).max(0.0).floor();
    let cluster = origin + 2.0 * edge as f64;
    let name =
        format!("{ROW}: most viewers with RTP loss < 1 % and 95 % of first frames within 1 s");
    results.add(&name, "viewers", Better::Higher, Kind::Gateway, cluster);
    results.add_peer(&name, "viewers", Better::Higher, single as f64);
    // The load generator keeps off the servers' core (the last), so its own view of the
    // machine is one core short.
    let cores = common.server_core.map_or(1, |c| c + 1);
    notes.push(format!(
        "cluster: {cluster:.0} viewers = 2 edges × {edge} (an edge node's ramp, its own core) + \
         the origin's {origin:.0} (one gateway's {single} less its two pulls, {pulls:.1} viewers' \
         worth); {}",
        if cores < 4 {
            format!(
                "this machine has {cores} cores, so the nodes were measured one at a time on \
                 the same core and the cluster's figure is their sum, not a run of three \
                 pinned nodes side by side"
            )
        } else {
            "each node measured pinned to the servers' core, one at a time".to_owned()
        }
    ));
}
