//! Items 5 and 7 of the bench: how many viewers of a 1 Mbit/s H.264 stream one media-server
//! core serves with under 1 % RTP loss and every first frame within 1 s, and how long a
//! viewer waits for that first frame. Three paths ([`Path`]), each its own ramp:
//!
//! * the gateway through its embedded relay over TURN/TLS (gateway only: coturn has no
//!   media engine);
//! * the gateway over direct UDP, and Janus (its streaming plugin) over direct UDP: the
//!   comparison with a media server that users run for the same job.
//!
//! Every server gets the same H.264 RTP ([`crate::clip`]: encoded once, streamed by ffmpeg
//! in real time, copied). Every step starts a fresh server pinned to the servers' core (see
//! `cpu.rs`) and N viewers in this process (kept off that core), starting at a steady rate
//! ([`Plan::join_rate`]), at most [`Plan::join_concurrency`] joining at a time. A TURN/TLS
//! viewer does what a relay-only browser does (as `tests/tests/relay_only_media.rs`):
//!
//! ```text
//! GET /api/v1/webrtc/config ─▶ sessionId + turns: URL + credential minted for it
//! TLS to the relay, Allocate (401, signed) ─▶ relayed address, the only local candidate
//! str0m (full ICE, recvonly H.264) offer ─▶ POST /api/v1/projects/bench/offer ─▶ answer
//! CreatePermission + ChannelBind per answer candidate (the gateway's media addresses)
//! str0m datagrams ⇄ ChannelData on the TLS connection, until the step ends
//! ```
//!
//! A direct viewer is str0m with a host candidate on a UDP socket of its own, reaching the
//! server in the bench's network namespace ([`crate::netns`]; Janus offers no loopback
//! candidate): the gateway answers its offer (the Geti client's request), Janus offers and
//! it answers ([`crate::janus`]). Every viewer decrypts and depacketizes every packet (no
//! sampling): the load generator's own CPU is in the notes, and a step it saturated says so.
//!
//! Time to first frame runs from the viewer's start (before its first request) to its
//! first complete frame (`Event::MediaData`). Loss is counted from the RTP sequence numbers
//! of the datagrams that arrive (the RTP header is clear text in SRTP), per SSRC, as gaps
//! against packets received, before str0m's NACK/RTX repair.
//!
//! Figures only: nothing here asserts a timing; a step that fails is recorded as such.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::{watch, Semaphore};

mod client;
mod count;
pub(crate) mod direct;
mod server;
mod turn;

use count::{Snap, Stats};
use server::MediaServer;

use crate::clip::Clip;
use crate::conn::Target;
use crate::load::percentile;
use crate::netns::Netns;
use crate::report::{fmt, Better, Results};
use crate::servers::{self, Common, Kind};

pub(super) const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A viewer without a first frame this long after its start has failed.
pub(super) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A step's joins must be done within `JOIN_BASE + n × JOIN_PER_VIEWER` (see
/// [`Plan::join_bound`]).
const JOIN_BASE: Duration = Duration::from_secs(4);
const JOIN_PER_VIEWER: Duration = Duration::from_millis(20);
/// Frame rate of the gateway's test pattern (`testsrc`), when no one-viewer step measured it.
const NOMINAL_FPS: f64 = 30.0;
/// A step passes with RTP loss under this fraction...
const MAX_LOSS: f64 = 0.01;
/// ...and a mean frame rate per viewer of at least this fraction of the one-viewer rate.
/// (Not closer to 1: other work on a shared machine costs a few frames in a short window;
/// a saturated gateway loses far more, as its engine skips frames when it lags.)
const MIN_FPS_SHARE: f64 = 0.8;
/// Prefix of every table row of this part.
const ROW: &str = "viewers of the 1 Mbit/s test pattern, 1 gateway core, TURN/TLS";
/// Prefix of every table row of the direct-UDP comparison (gateway and Janus columns).
pub const ROW_DIRECT: &str =
    "viewers of the 1 Mbit/s test pattern, 1 core, direct UDP (peer: Janus)";
/// Prefix of every table row of a cluster's edge node.
pub const ROW_EDGE: &str =
    "viewers of the 1 Mbit/s test pattern, 1 core, direct UDP, cluster edge node pulling it from its origin";
/// The first frames must come within this for a step to pass...
const MAX_TTFF: Duration = Duration::from_secs(1);
/// ...at this percentile. Not the maximum: one lost handshake datagram costs a viewer a
/// one-second retransmission timer however idle the server is, and a maximum made the
/// figure jump by a third between identical runs.
const TTFF_PERCENTILE: f64 = 95.0;

/// Which server the viewers watch, and how they reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The gateway, through its embedded relay over TURN/TLS (on loopback).
    GatewayTurnTls,
    /// The gateway over direct UDP (in the bench's network namespace).
    GatewayDirect,
    /// Janus's streaming plugin over direct UDP (in the namespace).
    JanusDirect,
    /// A cluster's edge node over direct UDP, its stream pulled from its origin node (in
    /// the namespace, with the origin and Redis: [`crate::cluster`]).
    ClusterEdge,
}

impl Path {
    /// The server, as the notes name it.
    fn server(self) -> &'static str {
        match self {
            Path::GatewayTurnTls | Path::GatewayDirect => "gateway",
            Path::JanusDirect => "Janus",
            Path::ClusterEdge => "edge gateway",
        }
    }

    /// The prefix of the notes' lines.
    fn label(self) -> &'static str {
        match self {
            Path::GatewayTurnTls => "viewers",
            Path::GatewayDirect => "viewers, gateway direct UDP",
            Path::JanusDirect => "viewers, Janus direct UDP",
            Path::ClusterEdge => "viewers, cluster edge direct UDP",
        }
    }

    fn in_namespace(self) -> bool {
        self != Path::GatewayTurnTls
    }
}

/// How this part runs.
#[derive(Debug, Clone)]
pub struct Plan {
    quick: bool,
    /// Wall time for the whole part, gateway starts included.
    budget: Duration,
    /// Receiving time measured per step, after every viewer joined.
    window: Duration,
    /// Pause between the last join and the window.
    settle: Duration,
    /// Largest viewer count tried.
    max_viewers: usize,
    /// Ramp factor between steps while they pass, below `fast_until` viewers...
    fast_factor: usize,
    fast_until: usize,
    /// ...and from there on.
    factor: usize,
    /// Bisection steps between the last pass and the first failure.
    bisect: usize,
    /// Viewers joining at the same time.
    join_concurrency: usize,
    /// Viewers starting per second, at most (a steady rate, not all at once).
    join_rate: f64,
}

impl Plan {
    /// Bound on a step's joins: every viewer must have its first frame by then. (Joins
    /// slow down sharply as the gateway's core fills; without this bound one step past the
    /// limit could take the whole time budget.)
    fn join_bound(&self, n: usize) -> Duration {
        JOIN_BASE + JOIN_PER_VIEWER * u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                budget: Duration::from_secs(22),
                window: Duration::from_millis(1500),
                settle: Duration::from_millis(300),
                max_viewers: 256,
                fast_factor: 4,
                fast_until: 256,
                factor: 4,
                bisect: 0,
                join_concurrency: 32,
                join_rate: 200.0,
            }
        } else {
            Plan {
                quick,
                budget: Duration::from_secs(150),
                window: Duration::from_secs(2),
                settle: Duration::from_millis(500),
                max_viewers: 2048,
                fast_factor: 4,
                fast_until: 64,
                factor: 2,
                bisect: 3,
                join_concurrency: 32,
                join_rate: 100.0,
            }
        }
    }
}

/// What every viewer of a step shares.
pub(super) struct Ctx {
    pub(super) path: Path,
    /// The gateway's HTTP API, or Janus's.
    pub(super) http: SocketAddr,
    pub(super) turn: SocketAddr,
    /// How to reach the relay over TLS (TURN/TLS path only).
    pub(super) target: Option<Target>,
    /// Where the server's media comes from, and where the viewers' sockets are.
    pub(super) server_ip: IpAddr,
    pub(super) client_ip: IpAddr,
}

/// A viewer past signaling.
enum Joined {
    Turn(turn::Joined),
    Direct(direct::Joined),
}

/// Signaling (and TURN set-up) for one viewer of `ctx.path`.
async fn join(ctx: &Ctx, id: usize) -> anyhow::Result<Joined> {
    Ok(match ctx.path {
        Path::GatewayTurnTls => Joined::Turn(turn::join(ctx).await?),
        Path::GatewayDirect => Joined::Direct(
            direct::join_gateway(
                ctx.http,
                ctx.client_ip,
                ctx.server_ip,
                &format!("bench-direct-{id}"),
            )
            .await?,
        ),
        Path::ClusterEdge => Joined::Direct(
            direct::join_gateway_stream(
                ctx.http,
                ctx.client_ip,
                ctx.server_ip,
                crate::cluster::STREAM,
                &format!("bench-edge-{id}"),
            )
            .await?,
        ),
        Path::JanusDirect => {
            let (watch, offer) = crate::janus::Watch::begin(ctx.http).await?;
            let (joined, answer) =
                direct::answer_offer(&offer, ctx.client_ip, ctx.server_ip).await?;
            watch.start(&answer).await?;
            Joined::Direct(joined)
        }
    })
}

/// One viewer: waits for its start time and a join slot, joins, receives until `stop`.
async fn viewer(
    ctx: Arc<Ctx>,
    id: usize,
    at: Instant,
    stats: Arc<Stats>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = tokio::select! {
        p = async {
            tokio::time::sleep_until(at.into()).await;
            gate.acquire_owned().await
        } => p.ok(),
        _ = stop.changed() => return,
    };
    let start = Instant::now();
    let result = async {
        let joined = tokio::time::timeout(FIRST_FRAME_TIMEOUT, join(&ctx, id))
            .await
            .map_err(|_| anyhow!("signaling and set-up took over {FIRST_FRAME_TIMEOUT:?}"))??;
        match joined {
            Joined::Turn(j) => j.pump(start, &stats, &mut stop, permit).await,
            Joined::Direct(j) => j.pump(start, &stats, &mut stop, permit).await,
        }
    };
    if let Err(e) = result.await {
        let _ = stats.failed.set(format!("{e:#}"));
    }
}

/// One direct viewer of `stream` on the gateway at `http` in the namespace, outside the
/// ramp (the cluster part's probes): joins as the Geti client does and receives until
/// `stop`. Returns when it ended; `first` is set at its first frame.
pub(crate) async fn watch_one(
    http: SocketAddr,
    stream: &'static str,
    id: &'static str,
    first: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let joined = direct::join_gateway_stream(
        http,
        crate::netns::CLIENT_IP,
        crate::netns::SERVER_IP,
        stream,
        id,
    )
    .await?;
    let watcher = {
        let stats = stats.clone();
        async move {
            while stats.ttff().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            first.notify_one();
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = joined.pump(start, &stats, &mut stop, None) => r,
        () = watcher => Ok(()),
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, Default)]
struct StepResult {
    n: usize,
    /// Why the step could not run (the gateway did not start, or the part's time bound
    /// came during the joins): no verdict on the count.
    error: Option<String>,
    /// Viewers that got a first frame.
    joined: usize,
    /// Viewers that failed (before or after their first frame).
    failed: usize,
    first_failure: Option<String>,
    /// From the first viewer's start until every viewer got its first frame or failed.
    join_secs: f64,
    /// Viewers still joining at the step's join bound (the window is then skipped).
    late: usize,
    /// Gateway and bench CPU during the joins, as a fraction of one core.
    join_gateway_cpu: f64,
    join_bench_cpu: f64,
    /// Whether the receiving window ran (not after a failed join).
    measured: bool,
    ttff_us: Vec<u32>,
    /// RTP packets expected and lost in the window, all viewers.
    expected: u64,
    lost: u64,
    /// Joined viewers that received no RTP at all in the window.
    stalled: usize,
    /// Mean frames/s and Mbit/s (RTP datagrams) per joined viewer in the window.
    fps: f64,
    mbps: f64,
    /// CPU in the window, as a fraction of one core.
    gateway_cpu: f64,
    bench_cpu: f64,
    /// Wall time of the whole step.
    secs: f64,
    passed: bool,
    /// Why it did not pass.
    verdict: String,
}

impl StepResult {
    fn loss(&self) -> f64 {
        if self.expected == 0 {
            return f64::NAN;
        }
        self.lost as f64 / self.expected as f64
    }

    fn ttff_ms(&self, p: f64) -> f64 {
        percentile(&mut self.ttff_us.clone(), p) / 1000.0
    }

    /// Passes with every viewer joined and receiving, loss under [`MAX_LOSS`] and the frame
    /// rate at least [`MIN_FPS_SHARE`] of `fps_base`.
    fn judge(&mut self, fps_base: Option<f64>) {
        let why = if let Some(e) = &self.error {
            format!("did not run: {e}")
        } else if self.late > 0 {
            format!(
                "{} of {} viewers had no first frame within the step's join bound ({:.1} s; \
                 gateway CPU {:.0} % of its core during the joins)",
                self.late,
                self.n,
                self.join_secs,
                self.join_gateway_cpu * 100.0
            )
        } else if self.joined < self.n || self.failed > 0 {
            format!(
                "{} of {} viewers got a first frame, {} failed (first: {})",
                self.joined,
                self.n,
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            )
        } else if self.stalled > 0 {
            format!("{} viewers received no RTP in the window", self.stalled)
        } else if self.expected == 0 {
            "no RTP counted in the window".to_owned()
        } else if self.ttff_ms(TTFF_PERCENTILE) > MAX_TTFF.as_secs_f64() * 1000.0 {
            format!(
                "time to first frame p{TTFF_PERCENTILE:.0} {} ms (p50 {} ms, max {} ms), over {} ms",
                fmt(self.ttff_ms(TTFF_PERCENTILE)),
                fmt(self.ttff_ms(50.0)),
                fmt(self.ttff_ms(100.0)),
                MAX_TTFF.as_millis()
            )
        } else if self.loss() >= MAX_LOSS {
            format!("RTP loss {:.2} %", self.loss() * 100.0)
        } else if fps_base.is_some_and(|b| self.fps < MIN_FPS_SHARE * b) {
            format!(
                "{:.1} frames/s per viewer, under {:.0} % of the one-viewer {:.1}",
                self.fps,
                MIN_FPS_SHARE * 100.0,
                fps_base.unwrap_or(NOMINAL_FPS)
            )
        } else {
            String::new()
        };
        self.passed = why.is_empty();
        self.verdict = if self.passed { "pass".into() } else { why };
    }

    fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{} viewers: step did not run: {e}", self.n);
        }
        let window = if self.measured {
            format!(
                "loss {loss} % of {exp} RTP packets; {fps:.1} frames/s and {mbps:.2} Mbit/s per \
                 viewer; server CPU {g:.0} % of its core, bench CPU {b:.0} % of a core",
                loss = if self.expected == 0 {
                    "n/a".into()
                } else {
                    format!("{:.2}", self.loss() * 100.0)
                },
                exp = self.expected,
                fps = self.fps,
                mbps = self.mbps,
                g = self.gateway_cpu * 100.0,
                b = self.bench_cpu * 100.0,
            )
        } else {
            "no receiving window (the step failed while joining)".into()
        };
        format!(
            "{n} viewers: {j}/{n} joined in {js:.1} s (server CPU {jg:.0} %, bench CPU {jb:.0} \
             % meanwhile); {window}; time to first frame p50 {p50} ms, max {max} ms; step took \
             {secs:.1} s; {v}",
            n = self.n,
            j = self.joined,
            js = self.join_secs,
            jg = self.join_gateway_cpu * 100.0,
            jb = self.join_bench_cpu * 100.0,
            p50 = fmt(self.ttff_ms(50.0)),
            max = fmt(self.ttff_ms(100.0)),
            secs = self.secs,
            v = self.verdict,
        )
    }
}

/// What a part's steps share: the server path, the clip, the namespace.
struct Part<'a> {
    common: &'a Common,
    plan: &'a Plan,
    path: Path,
    clip: &'a Clip,
    ns: Option<&'a Netns>,
}

/// Runs one step of `n` viewers on a fresh server, ending by `deadline` at the latest.
async fn step(part: &Part<'_>, n: usize, serial: usize, deadline: Instant) -> StepResult {
    let plan = part.plan;
    let t_step = Instant::now();
    let mut r = StepResult {
        n,
        ..StepResult::default()
    };
    let gw = match MediaServer::start(part.common, part.path, part.clip, part.ns, serial).await {
        Ok(g) => g,
        Err(e) => {
            r.error = Some(format!("{e:#}").replace('\n', " / "));
            r.secs = t_step.elapsed().as_secs_f64();
            return r;
        }
    };
    let ctx = Arc::new(Ctx {
        path: part.path,
        http: gw.http,
        turn: gw.turn,
        target: gw.target.clone(),
        server_ip: gw.ip,
        client_ip: if part.ns.is_some() {
            crate::netns::CLIENT_IP
        } else {
            LOOPBACK
        },
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(plan.join_concurrency.max(1)));
    let stats: Vec<Arc<Stats>> = (0..n).map(|_| Arc::new(Stats::default())).collect();
    let join_start = Instant::now();
    let spacing = Duration::from_secs_f64(1.0 / plan.join_rate.max(1.0));
    let mut tasks: Vec<_> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = join_start + spacing * u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(viewer(
                ctx.clone(),
                i,
                at,
                s.clone(),
                gate.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    // Every viewer gets its first frame or fails, within the join bound (and leaving time
    // for the window before the part's deadline).
    let tail = plan.settle + plan.window + Duration::from_secs(1);
    let by_bound = join_start + plan.join_bound(n);
    let by_deadline = deadline.checked_sub(tail).unwrap_or(join_start);
    let me = std::process::id();
    let (g_join, b_join) = (
        gw.cpu_seconds(),
        servers::cpu_seconds(me).unwrap_or(f64::NAN),
    );
    loop {
        let settled = stats
            .iter()
            .filter(|s| s.ttff().is_some() || s.failed.get().is_some())
            .count();
        if settled >= n || Instant::now() >= by_bound.min(by_deadline) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.join_secs = join_start.elapsed().as_secs_f64();
    r.join_gateway_cpu = (gw.cpu_seconds() - g_join) / r.join_secs.max(1e-3);
    r.join_bench_cpu =
        (servers::cpu_seconds(me).unwrap_or(f64::NAN) - b_join) / r.join_secs.max(1e-3);
    r.late = stats
        .iter()
        .filter(|s| s.ttff().is_none() && s.failed.get().is_none())
        .count();
    let failed_early = stats.iter().any(|s| s.failed.get().is_some());
    if r.late > 0 && by_deadline < by_bound {
        r.error = Some(format!(
            "the part's time bound came while {} of {n} viewers were still joining",
            r.late
        ));
    }

    // The window, unless the step has failed already.
    if r.late == 0 && !failed_early {
        tokio::time::sleep(plan.settle).await;
        r.measured = true;
        let s0: Vec<Snap> = stats.iter().map(|s| s.snap()).collect();
        let (g0, b0, t0) = (
            gw.cpu_seconds(),
            servers::cpu_seconds(me).unwrap_or(f64::NAN),
            Instant::now(),
        );
        tokio::time::sleep(plan.window).await;
        let s1: Vec<Snap> = stats.iter().map(|s| s.snap()).collect();
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        r.gateway_cpu = (gw.cpu_seconds() - g0) / secs;
        r.bench_cpu = (servers::cpu_seconds(me).unwrap_or(f64::NAN) - b0) / secs;
        window_stats(&mut r, &stats, &s0, &s1, secs);
    }

    // Stop the viewers (bounded), then the gateway.
    let _ = stop_tx.send(true);
    let stop_end = Instant::now() + Duration::from_secs(2);
    for t in &mut tasks {
        let left = stop_end.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, &mut *t).await.is_err() {
            t.abort();
        }
    }
    drop(gw);

    for st in &stats {
        if let Some(t) = st.ttff() {
            r.joined += 1;
            r.ttff_us.push(u32::try_from(t).unwrap_or(u32::MAX));
        }
        if let Some(e) = st.failed.get() {
            r.failed += 1;
            r.first_failure.get_or_insert_with(|| e.clone());
        }
    }
    r.secs = t_step.elapsed().as_secs_f64();
    r
}

/// Loss, stalls, frame rate and bit rate of the window from `a` to `b`.
fn window_stats(r: &mut StepResult, stats: &[Arc<Stats>], a: &[Snap], b: &[Snap], secs: f64) {
    let (mut frames, mut bytes, mut receiving) = (0u64, 0u64, 0usize);
    for ((st, a), b) in stats.iter().zip(a).zip(b) {
        if st.ttff().is_none() {
            continue;
        }
        receiving += 1;
        if b.expected == a.expected {
            r.stalled += 1;
        }
        let exp = b.expected.saturating_sub(a.expected);
        let rec = b.received.saturating_sub(a.received);
        r.expected += exp;
        r.lost += exp.saturating_sub(rec);
        frames += b.frames.saturating_sub(a.frames);
        bytes += b.bytes.saturating_sub(a.bytes);
    }
    let per = receiving.max(1) as f64 * secs.max(1e-3);
    r.fps = frames as f64 / per;
    r.mbps = bytes as f64 * 8.0 / 1e6 / per;
}

/// One viewer step as a chart sees it.
pub struct ViewerPoint {
    pub n: usize,
    pub passed: bool,
    pub gateway_cpu_pct: Option<f64>,
    pub ttff_p50_ms: Option<f64>,
    pub ttff_p99_ms: Option<f64>,
}

/// Everything this part measured.
pub struct Outcome {
    path: Path,
    steps: Vec<StepResult>,
    notes: Vec<String>,
}

/// Ramps the viewer count (×factor while steps pass), then bisects, within the plan's
/// time budget; every step on a fresh gateway.
pub async fn run(
    common: &Common,
    plan: &Plan,
    path: Path,
    clip: &Clip,
    log_start: Instant,
) -> Outcome {
    let label = path.label();
    let skipped = |why: String| Outcome {
        path,
        steps: Vec::new(),
        notes: vec![format!("{label}: not measured: {why}")],
    };
    let janus_version = if path == Path::JanusDirect {
        match crate::janus::available() {
            Ok(v) => Some(v),
            Err(why) => return skipped(why),
        }
    } else {
        None
    };
    let ns = if path.in_namespace() {
        match Netns::create() {
            Ok(ns) => Some(ns),
            Err(e) => return skipped(format!("{e:#}")),
        }
    } else {
        None
    };
    let part = Part {
        common,
        plan,
        path,
        clip,
        ns: ns.as_ref(),
    };
    let begin = Instant::now();
    let deadline = begin + plan.budget;
    let mut notes = Vec::new();
    if let Some(version) = janus_version {
        notes.push(format!(
            "{label}: {} (Debian package), streaming plugin with one RTP mountpoint, HTTP \
             transport, full ICE, one event loop, in the bench's network namespace",
            version
        ));
    }
    if common.server_core.is_none() {
        notes.push(format!(
            "{label}: the {} ran UNPINNED (one core, or no taskset): it shared the cores \
             with the load generator, so the figure is not per core",
            path.server()
        ));
    }
    let mut steps: Vec<StepResult> = Vec::new();
    let mut lo: Option<usize> = None;
    let mut hi: Option<usize> = None;
    let mut fps_base: Option<f64> = None;
    let mut stopped: Option<String> = None;
    let mut next = Some(1usize);
    for round in 0..(20 + plan.bisect) {
        let Some(n) = next.take() else { break };
        // Cost at worst: the last step's part outside the joins plus the join bound.
        let fixed = steps.last().map_or(Duration::from_secs(3), |l| {
            Duration::from_secs_f64((l.secs - l.join_secs).max(0.0))
        });
        let est = fixed.max(plan.settle + plan.window) + plan.join_bound(n);
        if Instant::now() + est > deadline {
            stopped = Some(format!(
                "the next step ({n} viewers, about {:.0} s) would pass the part's time bound \
                 ({:.0} s)",
                est.as_secs_f64(),
                plan.budget.as_secs_f64()
            ));
            break;
        }
        let mut r = step(&part, n, round, deadline).await;
        r.judge(if n == 1 { None } else { fps_base });
        if n == 1 && r.passed {
            fps_base = Some(r.fps);
        }
        crate::log(log_start, format!("  {label}: {}", r.line()));
        let (passed, error) = (r.passed, r.error.clone());
        steps.push(r);
        if let Some(e) = error {
            // No verdict on this count: the ramp ends here.
            stopped = Some(format!("the step of {n} viewers could not run ({e})"));
            break;
        }
        if passed {
            lo = Some(lo.map_or(n, |l| l.max(n)));
        } else {
            hi = Some(hi.map_or(n, |h| h.min(n)));
        }
        next = match (lo, hi) {
            (_, None) if n < plan.max_viewers => {
                let f = if n < plan.fast_until {
                    plan.fast_factor
                } else {
                    plan.factor
                };
                Some((n * f.max(2)).min(plan.max_viewers))
            }
            (Some(l), Some(h)) => {
                let bisections = steps.len().saturating_sub(ramp_len(&steps));
                let close = h.saturating_sub(l) <= (l / 8).max(1);
                (bisections < plan.bisect && !close).then_some((l + h) / 2)
            }
            _ => None,
        };
    }
    notes.insert(
        0,
        format!(
            "{label}: {} run: ramp ×{} from 1{} up to {} viewers, then {}; {:.0} start per \
             second, at most {} joining at a time, all within {:.0} s + {:.0} ms per viewer; \
             {:.1} s window after {:.1} s; the whole part bounded to {:.0} s",
            if plan.quick { "quick" } else { "full" },
            plan.fast_factor,
            if plan.fast_until < plan.max_viewers {
                format!(" to {}, then ×{}", plan.fast_until, plan.factor)
            } else {
                String::new()
            },
            plan.max_viewers,
            if plan.bisect == 0 {
                "no bisection".to_owned()
            } else {
                format!("up to {} bisections", plan.bisect)
            },
            plan.join_rate,
            plan.join_concurrency,
            JOIN_BASE.as_secs_f64(),
            JOIN_PER_VIEWER.as_secs_f64() * 1000.0,
            plan.window.as_secs_f64(),
            plan.settle.as_secs_f64(),
            plan.budget.as_secs_f64()
        ),
    );
    if let Some(why) = stopped {
        notes.push(format!(
            "{label}: the search stopped early: {why}; the figure may be a lower bound"
        ));
    }
    if hi.is_none() && lo == Some(plan.max_viewers) {
        notes.push(format!(
            "{label}: every step up to the cap of {} passed; the figure is a lower bound",
            plan.max_viewers
        ));
    }
    Outcome { path, steps, notes }
}

/// Steps of the ramp: up to and including the first failure.
fn ramp_len(steps: &[StepResult]) -> usize {
    steps
        .iter()
        .position(|s| !s.passed)
        .map_or(steps.len(), |i| i + 1)
}

impl Outcome {
    /// Each step that ran, by viewer count, for the charts: gateway CPU in its window
    /// (when the window ran) and time to first frame of the viewers that joined.
    pub fn points(&self) -> Vec<ViewerPoint> {
        let mut v: Vec<ViewerPoint> = self
            .steps
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| ViewerPoint {
                n: s.n,
                passed: s.passed,
                gateway_cpu_pct: s.measured.then_some(s.gateway_cpu * 100.0),
                ttff_p50_ms: (!s.ttff_us.is_empty()).then(|| s.ttff_ms(50.0)),
                ttff_p99_ms: (s.ttff_us.len() >= 20).then(|| s.ttff_ms(99.0)),
            })
            .collect();
        v.sort_by_key(|p| p.n);
        v
    }

    /// Which server the viewers watched.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The most viewers of a passing step.
    pub fn viewers(&self) -> Option<usize> {
        self.best().map(|b| b.n)
    }

    fn best(&self) -> Option<&StepResult> {
        self.steps.iter().filter(|s| s.passed).max_by_key(|s| s.n)
    }

    /// The figures into the table; the ramp and what limited it into the notes.
    pub fn report(&self, results: &mut Results, notes: &mut Vec<String>) {
        let best = self.best();
        let single = self.steps.iter().find(|s| s.n == 1 && s.joined == 1);
        let (row, gateway) = match self.path {
            Path::GatewayTurnTls => (ROW, true),
            Path::GatewayDirect => (ROW_DIRECT, true),
            Path::JanusDirect => (ROW_DIRECT, false),
            Path::ClusterEdge => (ROW_EDGE, true),
        };
        let label = self.path.label();
        let server = self.path.server();
        let mut add = |what: &str, unit: &'static str, better: Better, v: f64| {
            let name = format!("{row}: {what}");
            if gateway {
                results.add(&name, unit, better, Kind::Gateway, v);
            } else {
                results.add_peer(&name, unit, better, v);
            }
        };
        add(
            "most viewers with RTP loss < 1 % and 95 % of first frames within 1 s",
            "viewers",
            Better::Higher,
            best.map_or(f64::NAN, |b| b.n as f64),
        );
        add(
            "server CPU at that count",
            "% of a core",
            Better::Lower,
            best.map_or(f64::NAN, |b| b.gateway_cpu * 100.0),
        );
        add(
            "RTP loss at that count",
            "%",
            Better::Lower,
            best.map_or(f64::NAN, |b| b.loss() * 100.0),
        );
        add(
            "RTP received per viewer at that count",
            "Mbit/s",
            Better::Higher,
            best.map_or(f64::NAN, |b| b.mbps),
        );
        add(
            "time to first frame, 1 viewer",
            "ms",
            Better::Lower,
            single.map_or(f64::NAN, |s| s.ttff_ms(50.0)),
        );
        add(
            "time to first frame p50 at that count",
            "ms",
            Better::Lower,
            best.map_or(f64::NAN, |b| b.ttff_ms(50.0)),
        );
        // A 99th percentile of fewer than 20 samples would be the maximum by another name.
        add(
            "time to first frame p99 at that count",
            "ms",
            Better::Lower,
            best.filter(|b| b.ttff_us.len() >= 20)
                .map_or(f64::NAN, |b| b.ttff_ms(99.0)),
        );

        notes.extend(self.notes.iter().cloned());
        if let Some(b) = best.filter(|b| b.mbps < 0.8) {
            notes.push(format!(
                "{label}: the clip is encoded at 1 Mbit/s, but the viewers received {:.2} \
                 Mbit/s of RTP each: the viewer count is for streams of that rate",
                b.mbps
            ));
        }
        for s in &self.steps {
            notes.push(format!("{label} step: {}", s.line()));
        }
        match best {
            None => notes.push(format!(
                "{label}: no step passed, so there is no viewer figure (see the steps above)"
            )),
            Some(b) if b.ttff_us.len() < 20 => notes.push(format!(
                "{label}: time to first frame p99 needs at least 20 viewers in the passing step \
                 (had {})",
                b.ttff_us.len()
            )),
            Some(_) => {}
        }
        // What limited the ramp: the first failing step above the best.
        let best_n = best.map_or(0, |b| b.n);
        if let Some(f) = self
            .steps
            .iter()
            .filter(|s| !s.passed && s.error.is_none() && s.n > best_n)
            .min_by_key(|s| s.n)
        {
            // CPU in the window, or during the joins when the step failed before it.
            let (g, b) = if f.measured {
                (f.gateway_cpu, f.bench_cpu)
            } else {
                (f.join_gateway_cpu, f.join_bench_cpu)
            };
            let limit = if g >= 0.9 {
                format!(
                    "the {server}'s core was saturated ({:.0} % of it; the load generator used \
                     {:.0} % of a core)",
                    g * 100.0,
                    b * 100.0
                )
            } else if b >= 0.9 {
                format!(
                    "the {server} used only {:.0} % of its core while the load generator (this \
                     process: {} str0m clients doing DTLS, SRTP and H.264 depacketizing) used \
                     {:.0} % of a core on a {}-core machine: the load generator, not the \
                     {server}, is the likely limit, and the figure a lower bound",
                    g * 100.0,
                    f.n,
                    b * 100.0,
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                )
            } else {
                format!(
                    "neither the {server} ({:.0} % of its core) nor the load generator ({:.0} % \
                     of a core) was saturated",
                    g * 100.0,
                    b * 100.0
                )
            };
            notes.push(format!(
                "{label}: the first failing step ({} viewers: {}) — {limit}",
                f.n, f.verdict
            ));
        }
    }
}
