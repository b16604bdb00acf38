//! `gateway-bench`: the embedded TURN relay against coturn on the same machine, in the
//! same run, interleaved. Prints one table (each figure for both servers and the ratio
//! gateway / coturn, median of the repeats) and writes it to `docs/BENCHMARKS.md`, with SVG
//! charts of the measured points beside it (`plots.rs`).
//!
//! ```text
//! cargo run --release -p gateway-bench -- [--quick] [--out FILE] [--repeats N]
//! ```
//!
//! Both servers run as child processes on 127.0.0.1 (our `gateway` release binary, built
//! first when needed, and coturn's `turnserver`), so each one's CPU time and memory are
//! read from /proc/PID. The load generator is in this process: TURN clients over TCP/TLS
//! (sans-I/O sessions, the relay's framer), UDP echo peers. It measures:
//!
//! 1. relayed throughput with 1,200-byte ChannelData at 1, 10, 100 allocations: the
//!    highest rate with loss under 0.1 % (ramp, then bisection), and CPU per gigabit;
//! 2. TURN/TLS allocation set-up rate and latency (connect, TLS, 401, Allocate,
//!    CreatePermission);
//! 3. resident memory per idle TURN/TLS allocation at 1,000 and 10,000;
//! 4. added one-way latency at half the highest rate (echo RTT minus direct UDP, halved);
//! 5. gateway only: viewers of its 1 Mbit/s test pattern that one core (`taskset -c`, as the servers)
//!    serves through the embedded relay over TURN/TLS with under 1 % RTP loss, and time
//!    to first frame (str0m clients whose only candidate is relayed; see `viewers.rs`);
//! 6. gateway only: time to first frame for viewers joining at random points of an RTP
//!    stream whose sender (ffmpeg) makes a keyframe every 10 s (see `rtp_join.rs`).
//!
//! Figures only: nothing here asserts a timing.
// A measuring tool run by hand or by the benchmark smoke test, not a server: it handles no
// hostile input, and a panic aborts one run with a message, so the workspace's no-panic lints
// (unwrap, expect, indexing, string slicing) are not enforced here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod clip;
mod cluster;
mod conn;
mod cpu;
mod http;
mod janus;
mod load;
mod netns;
mod plots;
mod report;
mod rtp_join;
mod servers;
mod viewers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use conn::Transport;
use load::{EchoPeers, Mesh, Step};
use report::{Better, Results};
use servers::{Common, Kind, Server};

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    repeats: usize,
    allocs: Vec<usize>,
    step: Duration,
    idle: Vec<usize>,
    setup_count: usize,
    setup_concurrency: usize,
    latency_step: Duration,
    uclient_messages: u32,
    out: PathBuf,
    gateway_bin: Option<PathBuf>,
    /// `--soak SERVER TRANSPORT ALLOCS RATE SECS`: steady load on one server (for a
    /// profiler attached to the printed PID), no report.
    soak: Option<(Kind, Transport, usize, f64, u64)>,
    /// `--soak-setup SERVER COUNT ROUNDS`: TLS set-up of COUNT allocations, ROUNDS times,
    /// with the server's and the bench's CPU per round (is the server the limit?).
    soak_setup: Option<(Kind, usize, u64)>,
    /// `--viewers`: only the viewers-per-core part over TURN/TLS, printed (no report
    /// written).
    viewers_only: bool,
    /// `--janus`: only the direct-UDP viewers of the gateway and Janus, printed.
    janus_only: bool,
    /// `--cluster`: only the cluster of three gateways against one, printed.
    cluster_only: bool,
    /// `--rtp-join`: only the RTP join part, printed (no report written).
    rtp_join_only: bool,
    /// Only the video-like relay load (step 7), both servers, for a quiet measurement or a
    /// profiler attached to the printed PIDs.
    video_only: bool,
    /// Allocation counts of the video-like relay load (each a 1,200-byte packet every 5-10
    /// ms each way); `--full` adds 4,000.
    video_allocs: Vec<usize>,
    /// How long each video-like step lasts.
    video_step: Duration,
    /// `--uclient-repeat SERVER N`: coturn's client at video-like load, N runs over TCP and
    /// TLS, printed (no report written).
    uclient_repeat: Option<(Kind, u32)>,
}

impl Plan {
    fn parse() -> anyhow::Result<Self> {
        let root = workspace_root();
        let mut plan = Plan {
            quick: false,
            repeats: 3,
            allocs: vec![1, 10, 100],
            step: Duration::from_millis(1000),
            idle: vec![1000, 10_000],
            setup_count: 1000,
            setup_concurrency: 32,
            latency_step: Duration::from_secs(2),
            uclient_messages: 1000,
            out: root.join("docs/BENCHMARKS.md"),
            gateway_bin: std::env::var_os("GATEWAY_BIN").map(PathBuf::from),
            soak: None,
            soak_setup: None,
            viewers_only: false,
            janus_only: false,
            cluster_only: false,
            rtp_join_only: false,
            video_only: false,
            video_allocs: vec![100, 1000],
            video_step: Duration::from_secs(10),
            uclient_repeat: None,
        };
        let mut args = std::env::args().skip(1);
        let mut repeats: Option<usize> = None;
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => plan.quick = true,
                "--full" => plan.video_allocs = vec![100, 1000, 4000],
                "--uclient-repeat" => {
                    let mut next = || args.next().context("--uclient-repeat SERVER N");
                    let kind = Kind::from_arg(&next()?).context("--uclient-repeat")?;
                    plan.uclient_repeat = Some((kind, next()?.parse()?));
                }
                "--out" => plan.out = PathBuf::from(args.next().context("--out needs a file")?),
                "--repeats" => {
                    repeats = Some(args.next().context("--repeats needs a number")?.parse()?)
                }
                "--gateway-bin" => {
                    plan.gateway_bin = Some(PathBuf::from(
                        args.next().context("--gateway-bin needs a path")?,
                    ))
                }
                "--soak" => {
                    let mut next = || {
                        args.next()
                            .context("--soak SERVER TRANSPORT ALLOCS RATE SECS")
                    };
                    let kind = Kind::from_arg(&next()?).context("--soak")?;
                    let transport = match next()?.as_str() {
                        "tcp" => Transport::Tcp,
                        "tls" => Transport::Tls,
                        o => bail!("--soak: unknown transport {o:?}"),
                    };
                    plan.soak = Some((
                        kind,
                        transport,
                        next()?.parse()?,
                        next()?.parse()?,
                        next()?.parse()?,
                    ));
                }
                "--viewers" => plan.viewers_only = true,
                "--janus" => plan.janus_only = true,
                "--cluster" => plan.cluster_only = true,
                "--rtp-join" => plan.rtp_join_only = true,
                "--video" => plan.video_only = true,
                "--soak-setup" => {
                    let mut next = || args.next().context("--soak-setup SERVER COUNT ROUNDS");
                    let kind = Kind::from_arg(&next()?).context("--soak-setup")?;
                    plan.soak_setup = Some((kind, next()?.parse()?, next()?.parse()?));
                }
                "-h" | "--help" => {
                    println!(
                        "gateway-bench [--quick|--full] [--out FILE] [--repeats N] [--gateway-bin PATH]\n\
                         Benchmarks the gateway's TURN relay against coturn (turnserver) on loopback\n\
                         and writes the table to docs/BENCHMARKS.md (or FILE), with SVG charts\n\
                         beside it (<stem>-throughput.svg, -cpu.svg, -viewers-cpu.svg, -ttff.svg).\n\n\
                         Diagnostics (no report; attach a profiler to the printed PID):\n  \
                         --soak SERVER tcp|tls ALLOCS RATE SECS   steady relay load, one line per second\n  \
                         --soak-setup SERVER COUNT ROUNDS         TLS set-up rate with server and bench CPU\n  \
                         --viewers                                only the viewers-per-core part (TURN/TLS)\n  \
                         --janus                                  only the direct-UDP viewers, gateway and Janus\n  \
                                                                  (needs root for a network namespace, and janus)\n  \
                         --cluster                                only a 3-node cluster (Redis) against one gateway\n  \
                                                                  (needs root for a network namespace, and redis-server)\n  \
                         --rtp-join                               only the RTP join part (needs ffmpeg)\n  \
                         --video                                  only the video-like relay load, both servers\n  \
                         --uclient-repeat SERVER N                turnutils_uclient at video-like load (40 allocations\n  \
                                                                  x 200 packets/s each way), N runs over TCP and TLS\n\
                         --full: the video-like relay load also at 4,000 allocations.\n\
                         SERVER is gateway or coturn."
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        if plan.quick {
            plan.repeats = 1;
            plan.allocs = vec![1, 10];
            plan.step = Duration::from_millis(500);
            plan.idle = vec![1000];
            plan.setup_count = 300;
            plan.latency_step = Duration::from_secs(1);
            plan.uclient_messages = 200;
            plan.video_allocs = vec![50];
            plan.video_step = Duration::from_secs(3);
        }
        if let Some(r) = repeats {
            plan.repeats = r.max(1);
        }
        Ok(plan)
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The gateway binary: given, or built (`cargo build --release -p gateway`) next to ours.
fn gateway_binary(plan: &Plan) -> anyhow::Result<PathBuf> {
    if let Some(p) = &plan.gateway_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("gateway");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the gateway (cargo build --release -p gateway)...");
    let ok = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "gateway"])
        .current_dir(workspace_root())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if bin.exists() {
            eprintln!(
                "warning: building the gateway failed; using the existing {}",
                bin.display()
            );
        } else {
            bail!(
                "cannot build the gateway binary and {} does not exist",
                bin.display()
            );
        }
    }
    Ok(bin)
}

fn log(start: Instant, msg: impl AsRef<str>) {
    eprintln!("[{:6.1} s] {}", start.elapsed().as_secs_f64(), msg.as_ref());
}

fn main() -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        servers::kill_registered();
        default_hook(info);
    }));
    let plan = match Plan::parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gateway-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts, so every thread of the bench inherits the placement.
    let server_core = cpu::server_core();
    match server_core {
        Some(core) => match cpu::avoid(core) {
            Ok(()) => eprintln!("servers run on CPU {core} only, the load generator on the others"),
            Err(e) => eprintln!("warning: cannot keep the bench off CPU {core}: {e}"),
        },
        None => {
            eprintln!("warning: one core or no taskset: servers and load generator share the CPUs")
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(plan, server_core) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    // The run future (and every server guard in it) is dropped by now; make sure.
    servers::kill_registered();
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut plan: Plan, server_core: Option<usize>) -> anyhow::Result<()> {
    if Command::new("turnserver").arg("--help").output().is_err() {
        bail!("turnserver not found: install Debian's coturn (apt-get install coturn)");
    }
    let bin = gateway_binary(&plan)?;
    // The clock of the time bound starts after the build.
    let start = Instant::now();
    let load_before = report::loadavg();
    let biggest = plan.idle.iter().copied().max().unwrap_or(0);
    let mut notes_early = Vec::new();
    if server_core.is_none() {
        notes_early.push(
            "the servers were not confined to a core (one core, or no `taskset`): they shared the \
             CPUs with the load generator, and their thread counts, not only their efficiency, \
             decided their share"
                .to_owned(),
        );
    }
    // Per idle allocation a server holds a connection and a relay socket; the bench holds
    // one socket. Without CAP_SYS_RESOURCE the hard limit stays (20,000 here), so the
    // largest count is capped to what fits, and the report says so.
    let nofile = servers::raise_nofile(2 * biggest as u64 + 4096);
    let fit = ((nofile as usize).saturating_sub(1024) / 2) / 1000 * 1000;
    if fit < biggest {
        let msg = format!(
            "RLIMIT_NOFILE is {nofile} and cannot be raised (no CAP_SYS_RESOURCE): a server needs \
             two descriptors per allocation, so the idle-memory counts above {fit} are measured \
             at {fit} instead"
        );
        eprintln!("warning: {msg}");
        notes_early.push(msg);
        for n in plan.idle.iter_mut() {
            *n = (*n).min(fit.max(1000));
        }
        plan.idle.dedup();
    }
    let common = Common::new(bin, server_core)?;
    let peers = EchoPeers::start(4).await?;
    if let Some((kind, transport, n, rate, secs)) = plan.soak {
        let server = Server::start(kind, &common, 0).await?;
        let mut mesh = Mesh::open(&server.target, transport, n, &peers.addrs).await?;
        eprintln!("soak: {} pid {} ready", kind.name(), server.pid());
        for _ in 0..secs {
            let st = mesh
                .step(&server, rate, Duration::from_secs(1), false)
                .await;
            eprintln!(
                "soak: offered {rate:.0}/s sent {} loss {:.3} % relayed {:.0} pkt/s, {:.2} CPU s/Gbit (backlog drained in {:.0} ms; {})",
                st.sent, st.loss() * 100.0, st.relayed_pps(), st.cpu_per_gbit(), st.drain * 1e3,
                if st.passed() { "passes" } else { "fails" }
            );
        }
        return Ok(());
    }
    if let Some((kind, count, rounds)) = plan.soak_setup {
        let server = Server::start(kind, &common, 0).await?;
        eprintln!("soak-setup: {} pid {} ready", kind.name(), server.pid());
        for _ in 0..rounds {
            load::settled_cpu(&[&server]).await;
            let (cpu0, own0) = (
                server.cpu_seconds(),
                servers::cpu_seconds(std::process::id()),
            );
            let held = load::hold(
                &server.target,
                Transport::Tls,
                count,
                plan.setup_concurrency,
                peers.addrs[0],
                "soak",
            )
            .await;
            let cpu = server.cpu_seconds() - cpu0;
            let own = servers::cpu_seconds(std::process::id()).unwrap_or(0.0) - own0.unwrap_or(0.0);
            eprintln!(
                "soak-setup: {} of {count} in {:.2} s: {:.0}/s; server CPU {:.0} %, bench CPU {:.0} %, {} errors",
                held.conns.len(),
                held.secs,
                held.conns.len() as f64 / held.secs,
                100.0 * cpu / held.secs,
                100.0 * own / held.secs,
                held.errors
            );
        }
        return Ok(());
    }
    if let Some((kind, runs)) = plan.uclient_repeat {
        let server = Server::start(kind, &common, 0).await?;
        eprintln!("uclient-repeat: {} pid {} ready", kind.name(), server.pid());
        report::uclient_repeat(&server, &peers, &common, runs).await;
        return Ok(());
    }
    if plan.rtp_join_only {
        let outcome = rtp_join::run(&common, &rtp_join::Plan::new(plan.quick)).await;
        let (mut results, mut notes) = (Results::default(), Vec::new());
        outcome.report(&mut results, &mut notes);
        for n in notes {
            eprintln!("{n}");
        }
        return Ok(());
    }
    if plan.video_only {
        let probe_peer = EchoPeers::start(1).await?;
        let mut servers = HashMap::new();
        for k in [Kind::Gateway, Kind::Coturn] {
            let s = Server::start(k, &common, 0).await?;
            eprintln!("video: {} pid {} ready", k.name(), s.pid());
            servers.insert(k, s);
        }
        let (mut results, mut notes) = (Results::default(), Vec::new());
        let order = [Kind::Gateway, Kind::Coturn];
        video_load(
            &servers,
            order,
            &peers,
            &probe_peer,
            &plan,
            &mut results,
            &mut notes,
            start,
        )
        .await;
        for n in notes {
            eprintln!("video: {n}");
        }
        return Ok(());
    }
    if plan.viewers_only || plan.janus_only || plan.cluster_only {
        let paths: &[viewers::Path] = if plan.janus_only {
            &[viewers::Path::GatewayDirect, viewers::Path::JanusDirect]
        } else if plan.cluster_only {
            &[viewers::Path::GatewayDirect, viewers::Path::ClusterEdge]
        } else {
            &[viewers::Path::GatewayTurnTls]
        };
        let (mut results, mut notes) = (Results::default(), Vec::new());
        viewer_parts(&common, plan.quick, paths, start, &mut results, &mut notes).await;
        for n in notes {
            eprintln!("{n}");
        }
        return Ok(());
    }
    let probe_peer = EchoPeers::start(1).await?;
    let mut results = Results::default();
    let mut hints: HashMap<(Kind, Transport, usize), f64> = HashMap::new();
    let mut notes: Vec<String> = notes_early;
    let mut crosscheck = None;
    log(start, format!("plan: {plan:?}"));

    for rep in 0..plan.repeats {
        let order = if rep % 2 == 0 {
            [Kind::Gateway, Kind::Coturn]
        } else {
            [Kind::Coturn, Kind::Gateway]
        };
        let mut servers = HashMap::new();
        for k in order {
            servers.insert(k, Server::start(k, &common, rep as u32).await?);
        }
        log(
            start,
            format!("repeat {}/{}: servers up", rep + 1, plan.repeats),
        );

        // 3. Memory per idle TLS allocation (first, on fresh processes).
        for k in order {
            let s = &servers[&k];
            memory(s, &plan, &peers, &mut results, &mut notes).await;
            log(start, format!("  memory {}", k.name()));
        }

        // 2. TLS allocation set-up rate.
        for k in order {
            let s = &servers[&k];
            load::settled_cpu(&servers.values().collect::<Vec<_>>()).await;
            let held = load::hold(
                &s.target,
                Transport::Tls,
                plan.setup_count,
                plan.setup_concurrency,
                peers.addrs[0],
                "setup",
            )
            .await;
            let ok = held.conns.len();
            if held.errors > 0 {
                notes.push(format!(
                    "{} set-up (repeat {}): {} of {} failed, first: {}",
                    k.name(),
                    rep + 1,
                    held.errors,
                    plan.setup_count,
                    held.first_error.as_deref().unwrap_or("?")
                ));
            }
            let mut lat = held.latencies_us.clone();
            let rate = ok as f64 / held.secs;
            results.add(
                "TURN/TLS allocation set-up rate",
                "alloc/s",
                Better::Higher,
                k,
                rate,
            );
            results.add(
                "TURN/TLS set-up latency p50",
                "ms",
                Better::Lower,
                k,
                load::percentile(&mut lat, 50.0) / 1000.0,
            );
            results.add(
                "TURN/TLS set-up latency p99",
                "ms",
                Better::Lower,
                k,
                load::percentile(&mut lat, 99.0) / 1000.0,
            );
            drop(held);
            log(start, format!("  set-up rate {}: {rate:.0}/s", k.name()));
        }

        // 1. Throughput.
        let mut best: HashMap<(Kind, Transport, usize), Step> = HashMap::new();
        for transport in [Transport::Tcp, Transport::Tls] {
            let mut prev: HashMap<Kind, f64> = HashMap::new();
            for &n in &plan.allocs {
                for k in order {
                    let s = &servers[&k];
                    let hint = hints
                        .get(&(k, transport, n))
                        .copied()
                        .or(prev.get(&k).copied());
                    let mut mesh = match Mesh::open(&s.target, transport, n, &peers.addrs).await {
                        Ok(m) => m,
                        Err(e) => {
                            notes.push(format!(
                                "{} {} {n} allocations: set-up failed: {e:#}",
                                k.name(),
                                transport.name()
                            ));
                            continue;
                        }
                    };
                    load::settled_cpu(&servers.values().collect::<Vec<_>>()).await;
                    let found = search(&mut mesh, s, hint, &plan).await;
                    drop(mesh);
                    let name = format!("{}, {n} alloc", transport.name());
                    match found {
                        Some(st) => {
                            hints.insert((k, transport, n), st.rate);
                            prev.insert(k, st.rate);
                            best.insert((k, transport, n), st);
                            results.add(
                                &format!("{name}: relayed packets"),
                                "pkt/s",
                                Better::Higher,
                                k,
                                st.relayed_pps(),
                            );
                            results.add(
                                &format!("{name}: relayed payload"),
                                "Mbit/s",
                                Better::Higher,
                                k,
                                st.relayed_mbps(),
                            );
                            results.add(
                                &format!("{name}: server CPU"),
                                "s/Gbit",
                                Better::Lower,
                                k,
                                st.cpu_per_gbit(),
                            );
                            log(
                                start,
                                format!(
                                "  {name} {}: {:.0} pkt/s relayed ({:.0} Mbit/s), {:.2} CPU s/Gbit",
                                k.name(), st.relayed_pps(), st.relayed_mbps(), st.cpu_per_gbit()
                            ),
                            );
                        }
                        None => {
                            notes.push(format!("{} {name}: no rate passed", k.name()));
                            results.add(
                                &format!("{name}: relayed packets"),
                                "pkt/s",
                                Better::Higher,
                                k,
                                f64::NAN,
                            );
                        }
                    }
                }
            }
        }

        // 4. Added latency at half the highest rate (10 allocations, or the most below).
        let n_lat = plan
            .allocs
            .iter()
            .copied()
            .filter(|n| *n <= 10)
            .max()
            .unwrap_or(1);
        for transport in [Transport::Tcp, Transport::Tls] {
            for k in order {
                let Some(b) = best.get(&(k, transport, n_lat)) else {
                    continue;
                };
                let s = &servers[&k];
                let rate = b.rate / 2.0;
                // Background load on `n_lat` allocations (not timed), and two light probes
                // at the same time: one more allocation through the relay and direct UDP,
                // both to the same echo peer of their own, 1,000 packets/s each.
                let Ok(mut bg) = Mesh::open(&s.target, transport, n_lat, &peers.addrs).await else {
                    continue;
                };
                let Ok(mut probe) = Mesh::open(&s.target, transport, 1, &probe_peer.addrs).await
                else {
                    continue;
                };
                let probe_rate = 1000.0;
                let (st, _, base) = tokio::join!(
                    bg.step(s, rate, plan.latency_step, false),
                    probe.step(s, probe_rate, plan.latency_step, true),
                    load::udp_baseline(probe_peer.addrs[0], probe_rate, plan.latency_step),
                );
                let mut rtt = probe.take_rtts();
                let mut base = base.unwrap_or_default();
                drop((bg, probe));
                let p50 =
                    (load::percentile(&mut rtt, 50.0) - load::percentile(&mut base, 50.0)) / 2.0;
                let p99 =
                    (load::percentile(&mut rtt, 99.0) - load::percentile(&mut base, 99.0)) / 2.0;
                let name = format!(
                    "{}, {n_lat} alloc, half load: added one-way latency",
                    transport.name()
                );
                results.add(&format!("{name} p50"), "µs", Better::Lower, k, p50.max(0.0));
                results.add(&format!("{name} p99"), "µs", Better::Lower, k, p99.max(0.0));
                results.add(
                    &format!(
                        "{}, {n_lat} alloc, half load: offered rate",
                        transport.name()
                    ),
                    "pkt/s",
                    Better::Higher,
                    k,
                    rate,
                );
                log(start, format!(
                    "  latency {} {} at {rate:.0} pkt/s: +{p50:.0} µs p50, +{p99:.0} µs p99 (loss {:.3} %)",
                    transport.name(), k.name(), st.loss() * 100.0
                ));
            }
        }

        // 7. Video-like relay load: every allocation a 1,200-byte packet every 5-10 ms each
        // way (jittered), each its own write: server CPU per million relayed packets, loss,
        // added latency.
        video_load(
            &servers,
            order,
            &peers,
            &probe_peer,
            &plan,
            &mut results,
            &mut notes,
            start,
        )
        .await;

        // Cross-check with coturn's own client, once, on the last repeat's servers.
        if rep + 1 == plan.repeats {
            crosscheck = Some(
                report::crosscheck(&servers, order, &peers, &common, plan.uclient_messages).await,
            );
            log(start, "  turnutils_uclient cross-check done");
        }
        drop(servers);
    }

    // 5. Viewers per core: the gateway over TURN/TLS; the gateway and Janus over direct UDP.
    let outcomes = viewer_parts(
        &common,
        plan.quick,
        &[
            viewers::Path::GatewayTurnTls,
            viewers::Path::GatewayDirect,
            viewers::Path::JanusDirect,
            viewers::Path::ClusterEdge,
        ],
        start,
        &mut results,
        &mut notes,
    )
    .await;
    log(start, "  viewers done");

    // 6. First frame of a late viewer of an RTP stream with a 10 s keyframe interval.
    rtp_join::run(&common, &rtp_join::Plan::new(plan.quick))
        .await
        .report(&mut results, &mut notes);
    log(start, "  RTP join done");

    let machine = format!(
        "{}- Load average (1, 5, 15 min) at start: {load_before}; at end: {} (other work on the \
         machine takes CPU from both servers alike, but unevenly between steps)\n",
        report::machine(),
        report::loadavg()
    );
    if let Some(dir) = plan.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    // The charts beside the report, before it, so that it names only those written.
    let (charts, chart_notes) = plots::write_all(
        &plots::charts(&results, &plan.allocs, outcomes.first()),
        &plan.out,
    );
    for n in &chart_notes {
        eprintln!("warning: {n}");
    }
    notes.extend(chart_notes);
    for c in &charts {
        log(start, format!("chart written: {}", c.file));
    }
    let md = report::markdown(
        &results,
        &plan_summary(&plan),
        &machine,
        &notes,
        crosscheck.as_deref(),
        &charts,
        start.elapsed(),
    );
    println!("{md}");
    std::fs::write(&plan.out, &md).with_context(|| format!("writing {}", plan.out.display()))?;
    log(start, format!("written to {}", plan.out.display()));
    Ok(())
}

fn plan_summary(p: &Plan) -> String {
    format!(
        "{} run: median of {} repeat(s); throughput at {:?} allocations, steps of {:.1} s; \
         set-up rate over {} TLS allocations ({} at a time); idle memory at {:?} TLS allocations",
        if p.quick { "quick" } else { "full" },
        p.repeats,
        p.allocs,
        p.step.as_secs_f64(),
        p.setup_count,
        p.setup_concurrency,
        p.idle
    )
}

/// Highest passing rate: geometric ramp from the hint (or 4,000 pkt/s) until the verdict
/// flips, then bisection.
async fn search(mesh: &mut Mesh, server: &Server, hint: Option<f64>, plan: &Plan) -> Option<Step> {
    let (mut r, f, bisect) = match hint {
        Some(h) => (h, 1.3, 2),
        None => (4000.0, 2.0, if plan.quick { 2 } else { 3 }),
    };
    let mut lo: Option<Step> = None;
    let mut hi: Option<f64> = None;
    for _ in 0..10 {
        let s = mesh.step(server, r, plan.step, false).await;
        if s.passed() {
            lo = Some(s);
            if hi.is_some() {
                break;
            }
            r *= f;
        } else {
            hi = Some(r);
            if lo.is_some() {
                break;
            }
            r /= f;
        }
        if !(200.0..=2_000_000.0).contains(&r) {
            break;
        }
    }
    for _ in 0..bisect {
        let (Some(l), Some(h)) = (lo, hi) else { break };
        let m = (l.rate * h).sqrt();
        let s = mesh.step(server, m, plan.step, false).await;
        if s.passed() {
            lo = Some(s);
        } else {
            hi = Some(m);
        }
    }
    lo
}

/// RSS growth per idle TURN/TLS allocation at each count of `plan.idle`.
async fn memory(
    s: &Server,
    plan: &Plan,
    peers: &EchoPeers,
    results: &mut Results,
    notes: &mut Vec<String>,
) {
    // Warm-up: lazy initialisation (thread pools, TLS state) is not per allocation.
    drop(load::hold(&s.target, Transport::Tls, 100, 16, peers.addrs[0], "warm").await);
    let rss0 = load::settled_rss(s).await;
    let mut held = Vec::new();
    let mut have = 0usize;
    for &n in &plan.idle {
        let h = load::hold(
            &s.target,
            Transport::Tls,
            n - have,
            64,
            peers.addrs[0],
            &format!("idle{n}-"),
        )
        .await;
        if h.errors > 0 {
            notes.push(format!(
                "{} idle {n}: {} set-ups failed, first: {}",
                s.kind.name(),
                h.errors,
                h.first_error.as_deref().unwrap_or("?")
            ));
        }
        have += h.conns.len();
        held.push(h);
        let rss = load::settled_rss(s).await;
        let per = rss.saturating_sub(rss0) as f64 / have.max(1) as f64 / 1024.0;
        results.add(
            &format!("RSS per idle TURN/TLS allocation at {n}"),
            "KiB",
            Better::Lower,
            s.kind,
            per,
        );
    }
    drop(held);
}

/// Step 7 (see the crate doc): the video-like relay load on both servers.
#[allow(clippy::too_many_arguments)]
async fn video_load(
    servers: &HashMap<Kind, Server>,
    order: [Kind; 2],
    peers: &EchoPeers,
    probe_peer: &EchoPeers,
    plan: &Plan,
    results: &mut Results,
    notes: &mut Vec<String>,
    start: Instant,
) {
    let gap = (Duration::from_millis(5), Duration::from_millis(10));
    let mut base = load::udp_baseline(probe_peer.addrs[0], 1000.0, Duration::from_secs(1))
        .await
        .unwrap_or_default();
    let base_p99 = load::percentile(&mut base, 99.0);
    for transport in [Transport::Tcp, Transport::Tls] {
        for &n in &plan.video_allocs {
            for k in order {
                let s = &servers[&k];
                let mut mesh = match Mesh::open(&s.target, transport, n, &peers.addrs).await {
                    Ok(m) => m,
                    Err(e) => {
                        notes.push(format!(
                            "{} {} video-like load, {n} allocations: set-up failed: {e:#}",
                            k.name(),
                            transport.name()
                        ));
                        continue;
                    }
                };
                load::settled_cpu(&servers.values().collect::<Vec<_>>()).await;
                let st = mesh.video_step(s, gap, plan.video_step).await;
                let mut rtt = mesh.take_rtts();
                drop(mesh);
                let packets = (st.sent + st.received) as f64;
                let cpu_per_m = st.cpu / (packets / 1e6).max(1e-9);
                let p99 = ((load::percentile(&mut rtt, 99.0) - base_p99) / 2.0).max(0.0);
                let name = format!(
                    "{}, {n} alloc, video-like (1,200 B every 5-10 ms each way)",
                    transport.name()
                );
                results.add(
                    &format!("{name}: server CPU"),
                    "s/Mpkt",
                    Better::Lower,
                    k,
                    cpu_per_m,
                );
                results.add(
                    &format!("{name}: loss"),
                    "%",
                    Better::Lower,
                    k,
                    st.loss() * 100.0,
                );
                results.add(
                    &format!("{name}: added one-way latency p99"),
                    "µs",
                    Better::Lower,
                    k,
                    p99,
                );
                log(
                    start,
                    format!(
                        "  video-like {name} {}: {:.0} pkt/s sent, CPU {cpu_per_m:.2} s per million \
                         relayed packets, loss {:.3} %, p99 +{p99:.0} µs",
                        k.name(),
                        st.sent as f64 / st.secs,
                        st.loss() * 100.0
                    ),
                );
            }
        }
    }
}

/// The viewer parts of `paths`, one after the other, on one encoded clip; their outcomes
/// in the same order (none when the clip could not be made).
async fn viewer_parts(
    common: &Common,
    quick: bool,
    paths: &[viewers::Path],
    start: Instant,
    results: &mut Results,
    notes: &mut Vec<String>,
) -> Vec<viewers::Outcome> {
    let clip = match clip::Clip::encode(&common.dir) {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("viewers: not measured: {e:#}"));
            return Vec::new();
        }
    };
    let plan = viewers::Plan::new(quick);
    let mut outcomes = Vec::new();
    for &path in paths {
        let outcome = viewers::run(common, &plan, path, &clip, start).await;
        outcome.report(results, notes);
        outcomes.push(outcome);
    }
    if paths.contains(&viewers::Path::ClusterEdge) {
        cluster::report(common, &clip, quick, &outcomes, results, notes).await;
        log(start, "  cluster done");
    }
    outcomes
}
