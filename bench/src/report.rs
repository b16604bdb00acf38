//! Results: medians, the gateway / coturn table in Markdown, the machine, the targets, and
//! the `turnutils_uclient` cross-check.

use std::collections::HashMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::conn::Transport;
use crate::load::{EchoPeers, Mesh};
use crate::plots::Written;
use crate::servers::{Common, Kind, Server};

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

struct Row {
    name: String,
    unit: &'static str,
    better: Better,
    gateway: Vec<f64>,
    coturn: Vec<f64>,
}

/// Every figure of every repeat, in the order first reported.
#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Results {
    pub fn add(&mut self, name: &str, unit: &'static str, better: Better, kind: Kind, value: f64) {
        self.add_to(name, unit, better, kind == Kind::Gateway, value);
    }

    /// A figure of the peer the row names (the table's second column: coturn for the relay
    /// rows, Janus for the media-server comparison).
    pub fn add_peer(&mut self, name: &str, unit: &'static str, better: Better, value: f64) {
        self.add_to(name, unit, better, false, value);
    }

    fn add_to(
        &mut self,
        name: &str,
        unit: &'static str,
        better: Better,
        gateway: bool,
        value: f64,
    ) {
        let i = match self.rows.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    name: name.to_owned(),
                    unit,
                    better,
                    gateway: Vec::new(),
                    coturn: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        if gateway {
            row.gateway.push(value);
        } else {
            row.coturn.push(value);
        }
    }

    /// The median of one server's repeats of a figure (NaN when it has none).
    pub fn median_of(&self, name: &str, kind: Kind) -> f64 {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map_or(f64::NAN, |r| match kind {
                Kind::Gateway => median(&r.gateway),
                Kind::Coturn => median(&r.coturn),
            })
    }

    fn medians(&self, name: &str) -> Option<(f64, f64)> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| (median(&r.gateway), median(&r.coturn)))
    }
}

/// A number with a sensible precision and thousands separators.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn ratio(g: f64, c: f64) -> String {
    if g.is_finite() && c.is_finite() && c != 0.0 {
        format!("{:.2}×", g / c)
    } else {
        "n/a".into()
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cores, CPU model, kernel, date, versions.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    // The machine's cores, not this process's share (the bench keeps itself off the
    // servers' core, and available_parallelism() follows that).
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024
                / 1024
        })
        .unwrap_or(0);
    let coturn = sh("turnserver", &["--version"]);
    let rev = sh(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    format!(
        "- Date: {}\n- Machine: {cores} cores, {model}, {mem} GiB RAM\n- Kernel: {}\n- coturn: {}\n- gateway: commit {}\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-srm"]),
        if coturn.is_empty() { "unknown".into() } else { coturn },
        if rev.is_empty() { "unknown".into() } else { rev },
    )
}

fn target_line(
    results: &Results,
    what: &str,
    row: &str,
    check: impl Fn(f64, f64) -> Option<bool>,
    rule: &str,
) -> String {
    let verdict = match results.medians(row) {
        Some((g, c)) if g.is_finite() => match check(g, c) {
            Some(true) => format!("**met** (gateway {} vs coturn {})", fmt(g), fmt(c)),
            Some(false) => format!("**MISSED** (gateway {} vs coturn {})", fmt(g), fmt(c)),
            None => "not measured".into(),
        },
        _ => "not measured in this run".into(),
    };
    format!("| {what} | {rule} | {verdict} |\n")
}

/// The whole report.
pub fn markdown(
    results: &Results,
    plan: &str,
    machine: &str,
    notes: &[String],
    crosscheck: Option<&str>,
    charts: &[Written],
    took: Duration,
) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks: the gateway's embedded TURN relay vs coturn\n\n");
    s.push_str(
        "Written by `gateway-bench` (`just bench`, or `cargo run --release -p gateway-bench -- [--quick]`). \
         Both servers run as child processes on 127.0.0.1 with the same settings (REST secret, TCP + TLS, \
         no UDP/DTLS, loopback peers allowed, relay address 127.0.0.1, quotas out of the way); every figure \
         is measured for both in the same run, interleaved (the order alternates between repeats), with the \
         same load generator in the bench process. The server under test is confined to one core (the \
         last, with `taskset`) and the load generator to the others, so both servers get the same CPU \
         budget whatever their thread count; where that was not possible the notes say so. How the \
         figures were investigated and what changed because of them: [PERFORMANCE.md](PERFORMANCE.md).\n\n",
    );
    s.push_str(machine);
    s.push_str(&format!(
        "- Run: {plan}; took {:.0} s\n\n",
        took.as_secs_f64()
    ));
    s.push_str(
        "The peer is coturn in every row except those that say `(peer: Janus)`, where it is Janus \
         (coturn has no media engine; the gateway-only rows have no peer).\n\n",
    );
    s.push_str("| figure | unit | better | gateway | peer | gateway / peer |\n|---|---|---|---:|---:|---:|\n");
    for r in &results.rows {
        let (g, c) = (median(&r.gateway), median(&r.coturn));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.unit,
            match r.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            },
            fmt(g),
            fmt(c),
            ratio(g, c)
        ));
    }
    s.push('\n');
    s.push_str(
        "How to read it:\n\n\
         - *relayed packets / payload*: each client sends 1,200-byte ChannelData on a bound channel to a UDP \
         echo peer; the relay forwards it to the peer and the echo back, so relayed = sent + echoed. The \
         step passes when the clients could send what was offered, under 0.1 % of the echoes were lost \
         and the server kept up: every echo was back within 5 % of the step's length after the senders \
         stopped (a server that falls behind loses nothing at first, its backlog waits in the clients' \
         TCP send buffers, so loss alone does not show it). The figure is the highest passing rate (ramp \
         ×2, then bisection, steps as in the plan), counted over the sending time plus that drain.\n\
         - *server CPU*: user + system seconds of the server process (/proc/PID/stat) over that step and its \
         drain, per gigabit of relayed payload.\n\
         - *set-up*: TCP connect, full TLS 1.3 handshake (no resumption), Allocate → 401, signed Allocate, \
         CreatePermission; connections are held until all are done. The bench's TLS client accepts exactly the \
         bench certificate (compared byte for byte) without checking signatures: a verifying client spends two \
         ECDSA verifications per handshake, more than the server's one signature, and on one load core it was \
         the client that limited the rate. The servers' side of the handshake is the same either way.\n\
         - *RSS per idle allocation*: VmRSS growth after opening that many TLS allocations (each with a \
         permission, no traffic), divided by the count; measured first, on fresh processes, after a \
         100-allocation warm-up.\n\
         - *added one-way latency*: while 10 allocations carry half of the server's own highest rate, a \
         probe allocation and a direct UDP socket each send 1,000 timestamped packets/s to an echo peer of \
         their own; (probe round trip through the relay − direct UDP round trip) / 2, per percentile.\n\
         - *viewers of the 1 Mbit/s test pattern*: every media server gets the same H.264 RTP: ffmpeg's \
         `testsrc2` (640x480, 30 fps, libx264 baseline, 1 Mbit/s, a keyframe every 0.5 s) encoded once per \
         run and streamed in real time by ffmpeg without re-encoding. A fresh server per step, pinned to one \
         core (`taskset -c`, the core the servers use), streams it to N str0m clients in the bench process, \
         which start at a steady rate (100 per second, 200 in the quick run), at most 32 joining at a time. \
         *TURN/TLS* (gateway only; coturn has no media): each client's only ICE candidate is a TURN/TLS \
         allocation on the embedded relay (config request, Allocate, offer/answer, ChannelBind, DTLS/SRTP \
         through ChannelData), all on loopback. *Direct UDP (peer: Janus)*: each client has one host \
         candidate on a UDP socket of its own; the server runs in a network namespace the bench creates, \
         reached through a veth pair (Janus never offers a loopback candidate, so both servers run there \
         and pay the same path); the gateway answers the client's offer on its Geti-style endpoint, Janus \
         1.1.2 (Debian's package: streaming plugin, one RTP mountpoint, HTTP API, full ICE, one event \
         loop, nothing else loaded) offers on `watch` and the client answers. Every client decrypts and \
         depacketizes every packet (no sampling); its CPU is in the notes. After the joins, a window of a \
         few seconds counts RTP sequence-number gaps against packets received, per viewer and SSRC, summed \
         (before NACK repair). A step passes when every viewer got a first frame within a join bound that \
         grows with N, 95 % of them within 1 s, loss is under 1 % and the mean frame rate is at least 80 % \
         of the one-viewer step's; the count ramps, then bisects, within a time bound (the plan, every step \
         and what limited the ramp are in the notes). *Time to first frame* runs from a viewer's start \
         (before its first request) to its first complete frame. *Server CPU* is the server's \
         /proc/PID/stat time over the window, per cent of its one core.\n\
         - *time to first frame for a new viewer of an RTP stream whose keyframes come every 10 s* (gateway \
         only): a fresh gateway (pinned as above) ingests RTP on loopback (`MEDIA_SOURCE=rtp://:PORT`) from \
         ffmpeg (libx264 baseline, 640x480 at 30 fps, 1 Mbit/s, `-g 300`, no scene-cut keyframes: one \
         keyframe every 10 s); once the stream is live, str0m viewers (host candidates on loopback) join at \
         uniformly random points of the next 10 s (2 s in the quick run) and the time runs from a viewer's \
         start (before its offer) to its first complete frame, a keyframe. RTP cannot ask the sender for a \
         keyframe: what keeps the wait short is the gateway's GOP cache (the last keyframe and the frames \
         after it, sent to a new viewer at once, 1 ms apart in RTP time); without it a viewer would wait up \
         to 10 s. *To the current picture* runs to the last of those cached frames, the picture that was \
         current when the viewer joined.\n\n",
    );
    if !charts.is_empty() {
        s.push_str("## Charts\n\nDrawn by the same run from the figures above (SVG files beside this one):\n\n");
        for c in charts {
            s.push_str(&format!("- [{}]({}): {}\n", c.file, c.file, c.caption));
        }
        s.push('\n');
        if let Some(c) = charts.first() {
            s.push_str(&format!("![{}]({})\n\n", c.caption, c.file));
        }
    }
    s.push_str("## Targets\n\n| target | rule | result |\n|---|---|---|\n");
    for t in [Transport::Tcp, Transport::Tls] {
        let row = format!("{}, 100 alloc: relayed packets", t.name());
        s.push_str(&target_line(
            results,
            &format!("relay throughput, {} at 100 allocations", t.name()),
            &row,
            |g, c| c.is_finite().then_some(g >= 2.0 * c),
            "≥ 2× coturn",
        ));
    }
    s.push_str(&target_line(
        results,
        "TURN/TLS allocation set-up rate",
        "TURN/TLS allocation set-up rate",
        |g, c| c.is_finite().then_some(g >= 1.5 * c),
        "≥ 1.5× coturn",
    ));
    let mem_row = results
        .rows
        .iter()
        .rev()
        .find(|r| r.name.starts_with("RSS per idle"))
        .map(|r| r.name.clone())
        .unwrap_or_default();
    s.push_str(&target_line(
        results,
        &format!(
            "memory per idle TLS allocation ({})",
            mem_row.trim_start_matches("RSS per idle TURN/TLS allocation ")
        ),
        &mem_row,
        |g, c| c.is_finite().then_some(g <= c),
        "≤ coturn",
    ));
    for t in [Transport::Tcp, Transport::Tls] {
        let row = format!(
            "{}, 10 alloc, half load: added one-way latency p99",
            t.name()
        );
        s.push_str(&target_line(
            results,
            &format!("p99 added latency at half load, {}", t.name()),
            &row,
            |g, _| Some(g <= 1000.0),
            "≤ 1 ms (1000 µs)",
        ));
    }
    if let Some(x) = crosscheck {
        s.push_str("\n## Cross-check with coturn's `turnutils_uclient`\n\n");
        s.push_str(x);
    }
    if !notes.is_empty() {
        s.push_str("\n## Notes from this run\n\n");
        for n in notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s.push_str("\n## Every repeat\n\n| figure | gateway | coturn |\n|---|---|---|\n");
    for r in &results.rows {
        let j = |v: &[f64]| v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(", ");
        s.push_str(&format!(
            "| {} ({}) | {} | {} |\n",
            r.name,
            r.unit,
            j(&r.gateway),
            j(&r.coturn)
        ));
    }
    s
}

/// Output of one `turnutils_uclient` run.
struct Uclient {
    ok: bool,
    lost: Option<String>,
    rtt: Option<String>,
    output: String,
}

fn after<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let line = out.lines().rev().find(|l| l.contains(key))?;
    Some(line.split(key).nth(1)?.trim())
}

fn run_uclient(args: Vec<String>) -> Uclient {
    let mut child = match Command::new("turnutils_uclient")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Uclient {
                ok: false,
                lost: None,
                rtt: None,
                output: e.to_string(),
            };
        }
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = reader.join().unwrap_or_default();
    Uclient {
        ok: status.is_some_and(|s| s.success()),
        lost: after(&output, "Total lost packets").map(str::to_owned),
        rtt: after(&output, "Average round trip delay").map(str::to_owned),
        output,
    }
}

/// Runs `turnutils_uclient` (TURN/TCP, 10 clients, 1,200-byte messages every 5 ms each:
/// 2,000 packets/s) against both servers, then our load generator at the same rate, and
/// tabulates loss and mean round-trip time side by side.
pub async fn crosscheck(
    servers: &HashMap<Kind, Server>,
    order: [Kind; 2],
    peers: &EchoPeers,
    common: &Common,
    messages: u32,
) -> String {
    let clients = 10usize;
    let interval_ms = 5u32;
    let rate = clients as f64 * 1000.0 / interval_ms as f64;
    let dur = Duration::from_millis(u64::from(messages * interval_ms));
    let mut s = format!(
        "TURN/TCP, {clients} clients × {messages} messages of 1,200 bytes, one every {interval_ms} ms each \
         ({rate:.0} packets/s in all), echoed by the bench's UDP peer. `turnutils_uclient -t -c -m {clients} \
         -n {messages} -l 1200 -z {interval_ms} -W <secret>` against our load generator at the same rate \
         and allocation count:\n\n\
         | client | server | packets | lost | mean round trip |\n|---|---|---:|---|---|\n"
    );
    for k in order {
        let Some(server) = servers.get(&k) else {
            continue;
        };
        let peer = peers.addrs[0];
        let args: Vec<String> = [
            "-t",
            "-c",
            "-e",
            "127.0.0.1",
            "-r",
            &peer.port().to_string(),
            "-n",
            &messages.to_string(),
            "-l",
            "1200",
            "-m",
            &clients.to_string(),
            "-z",
            &interval_ms.to_string(),
            "-W",
            &common.secret,
            "-u",
            "uclient",
            "-p",
            &server.target.tcp.port().to_string(),
            "127.0.0.1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        let u = tokio::task::spawn_blocking(move || run_uclient(args))
            .await
            .unwrap_or(Uclient {
                ok: false,
                lost: None,
                rtt: None,
                output: "join error".into(),
            });
        let total = messages as usize * clients;
        if u.ok {
            s.push_str(&format!(
                "| turnutils_uclient | {} | {total} | {} | {} |\n",
                k.name(),
                u.lost.as_deref().unwrap_or("?"),
                u.rtt.as_deref().unwrap_or("?")
            ));
        } else {
            let tail: Vec<&str> = u.output.lines().rev().take(3).collect();
            s.push_str(&format!(
                "| turnutils_uclient | {} | {total} | failed: {} | |\n",
                k.name(),
                tail.join(" / ").replace('|', "/")
            ));
        }
        match Mesh::open(&server.target, Transport::Tcp, clients, &peers.addrs).await {
            Ok(mut mesh) => {
                let st = mesh.step(server, rate, dur, true).await;
                let rtts = mesh.take_rtts();
                let mean = if rtts.is_empty() {
                    f64::NAN
                } else {
                    rtts.iter().map(|x| f64::from(*x)).sum::<f64>() / rtts.len() as f64 / 1000.0
                };
                s.push_str(&format!(
                    "| gateway-bench | {} | {} | {} ({:.2}%) | {:.3} ms |\n",
                    k.name(),
                    st.sent,
                    st.sent - st.received,
                    st.loss() * 100.0,
                    mean
                ));
            }
            Err(e) => s.push_str(&format!(
                "| gateway-bench | {} | | failed: {e} | |\n",
                k.name()
            )),
        }
    }
    s.push_str(
        "\nBoth clients should see no loss at this rate on both servers and round trips of the same order; \
         uclient reports round trips in whole milliseconds (a sub-millisecond \
         round trip reads 0), ours in microseconds.\n",
    );
    s
}

/// `--uclient-repeat N`: coturn's own client at video-like load against one server, `runs`
/// times over TURN/TCP and TURN/TLS: 40 allocations, each sending a 1,200-byte packet every
/// 5 ms for 600 packets (200 packets/s each way each), echoed by the bench's UDP peer. One
/// line per run with the packets lost as uclient counts them; the summary says how many runs
/// lost none.
pub async fn uclient_repeat(server: &Server, peers: &EchoPeers, common: &Common, runs: u32) {
    let peer = peers.addrs[0];
    for (name, tls) in [("TURN/TCP", false), ("TURN/TLS", true)] {
        let mut clean = 0;
        for run in 1..=runs {
            let port = if tls {
                server.target.tls.port()
            } else {
                server.target.tcp.port()
            };
            let mut args: Vec<String> = vec!["-t".into()];
            if tls {
                args.push("-S".into());
            }
            for a in [
                "-c",
                "-e",
                "127.0.0.1",
                "-r",
                &peer.port().to_string(),
                "-m",
                "40",
                "-n",
                "600",
                "-l",
                "1200",
                "-z",
                "5",
                "-W",
                &common.secret,
                "-u",
                "uclient",
                "-p",
                &port.to_string(),
                "127.0.0.1",
            ] {
                args.push(a.to_owned());
            }
            let cpu0 = server.cpu_seconds();
            let u = tokio::task::spawn_blocking(move || run_uclient(args))
                .await
                .unwrap_or(Uclient {
                    ok: false,
                    lost: None,
                    rtt: None,
                    output: "join error".into(),
                });
            let cpu = server.cpu_seconds() - cpu0;
            let lost = u.lost.as_deref().unwrap_or("?");
            let none = u.ok && lost.split_whitespace().next() == Some("0");
            clean += u32::from(none);
            eprintln!(
                "uclient-repeat: {} {name} run {run}/{runs}: {} lost {lost}, round trip {}, server CPU {cpu:.2} s",
                server.kind.name(),
                if u.ok { "ok" } else { "FAILED" },
                u.rtt.as_deref().unwrap_or("?"),
            );
            if !u.ok {
                let tail: Vec<&str> = u.output.lines().rev().take(3).collect();
                eprintln!("  {}", tail.join(" / "));
            }
        }
        eprintln!(
            "uclient-repeat: {} {name}: {clean} of {runs} runs lost no packet (40 allocations x 600 packets each way)",
            server.kind.name()
        );
    }
}
