//! Gateway only: how long a new viewer of an RTP-ingested stream waits for its first frame
//! when the sender makes a keyframe only every 10 s (RTP has no way to ask it for one; the
//! gateway's GOP cache is what should make the wait short).
//!
//! ```text
//! ffmpeg (H.264, -g 300 at 30 fps, -re) ─RTP─▶ gateway MEDIA_SOURCE=rtp://:PORT (loopback)
//!                                                │ WebRTC, host candidates on 127.0.0.1
//!                         N str0m viewers ◀──────┘ each joining at a random point of one
//!                                                  keyframe interval
//! ```
//!
//! A fresh gateway (pinned to the servers' core, as every other part) and one ffmpeg; once
//! `/api/v1/streams` says the stream is live (its first frame, a keyframe, arrived), the
//! viewers start at uniformly random offsets within the next 10 s (a shorter span in the
//! quick run), so they land anywhere in the keyframe interval. Time to first frame runs from
//! a viewer's start (before its offer) to its first complete frame (`Event::MediaData`; it is
//! checked to be a keyframe, i.e. decodable on its own). A second figure runs to the picture
//! that was current when the viewer joined: the gateway sends the cached frames 1 ms apart
//! in RTP time, so the last of them is the frame before the first live frame interval.
//! Figures only: nothing here asserts a timing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output};
use tokio::net::TcpStream;

use crate::http::http;
use crate::load::percentile;
use crate::report::{fmt, Better, Results};
use crate::servers::{self, ChildGuard, Common, Kind};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The sender's keyframe interval, in frames at 30 fps: 10 s.
const GOP_FRAMES: u32 = 300;
/// Bound on the gateway's start and on the stream going live.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// A viewer without a first frame this long after its start has failed (longer than the
/// keyframe interval: without a GOP cache a viewer would still get one).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(15);
/// Prefix of every table row of this part.
pub const ROW: &str =
    "time to first frame for a new viewer of an RTP stream whose keyframes come every 10 s";

/// How this part runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Viewers, each joining once.
    viewers: usize,
    /// The viewers' start offsets are uniform in `0..span` after the stream went live.
    span: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Plan {
                viewers: 4,
                span: Duration::from_secs(2),
            }
        } else {
            Plan {
                viewers: 20,
                span: Duration::from_secs(10),
            }
        }
    }
}

/// What the part measured.
#[derive(Debug, Default)]
pub struct Outcome {
    plan_line: String,
    /// Why the part could not run (ffmpeg or the gateway did not start, the stream never
    /// went live).
    error: Option<String>,
    /// Time to first frame of each viewer that got one, µs.
    ttff_us: Vec<u32>,
    /// Time to the picture current at the viewer's join (the end of the cached burst), µs.
    current_us: Vec<u32>,
    /// Viewers whose first frame was not a keyframe (should be none).
    not_keyframe: usize,
    failed: usize,
    first_failure: Option<String>,
}

/// Deterministic offsets in `0..span` (xorshift, seeded by the clock): random points of the
/// keyframe interval, without a dependency.
fn offsets(n: usize, span: Duration) -> Vec<Duration> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let span_us = span.as_micros().max(1) as u64;
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_micros(x % span_us)
        })
        .collect();
    v.sort();
    v
}

/// ffmpeg's test pattern as H.264 RTP to `dest`: baseline, 1 Mbit/s, a keyframe every
/// [`GOP_FRAMES`] frames and none at scene cuts, in real time, for `secs`.
fn ffmpeg_command(dest: SocketAddr, secs: u64) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30"])
        .args(["-t", &secs.to_string(), "-an", "-pix_fmt", "yuv420p"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-tune",
            "zerolatency",
        ])
        .args(["-b:v", "1M", "-maxrate", "1M", "-bufsize", "1M"])
        .args([
            "-g",
            &GOP_FRAMES.to_string(),
            "-keyint_min",
            &GOP_FRAMES.to_string(),
        ])
        .args(["-sc_threshold", "0"])
        .args(["-f", "rtp", &format!("rtp://{dest}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Polls (bounded) until `/health` answers and the `default` stream is live.
pub(crate) async fn wait_live(
    http_addr: SocketAddr,
    gateway: &mut ChildGuard,
    log: &PathBuf,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(why) = gateway.exited() {
            bail!(
                "{why}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let live = async {
            TcpStream::connect(http_addr).await.ok()?;
            let (status, body) = http(http_addr, "GET", "/api/v1/streams", None).await.ok()?;
            let doc: Value = serde_json::from_str(&body).ok()?;
            let live = doc.get("streams")?.as_array()?.iter().any(|s| {
                s.get("name") == Some(&Value::from("default"))
                    && s.get("live") == Some(&Value::Bool(true))
            });
            Some(status == 200 && live)
        };
        if tokio::time::timeout(Duration::from_secs(2), live).await == Ok(Some(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the RTP stream was not live within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one viewer measured.
struct Joined {
    /// From its start to its first frame.
    first: Duration,
    /// Whether that frame is a keyframe.
    keyframe: bool,
    /// From its start to the last frame of the cached burst: the picture current when it
    /// joined (the frame before the first RTP time step of at least [`LIVE_STEP`]).
    current: Duration,
}

/// An RTP time step (90 kHz) at least this long is between live frames (30 fps: 3000), not
/// inside the gateway's burst of cached frames (90).
const LIVE_STEP: u64 = 1000;

/// One viewer: str0m (full ICE, host candidate on loopback, recvonly H.264) offers to the
/// Geti-style endpoint and receives until its first live frame.
async fn viewer(http_addr: SocketAddr, id: usize) -> anyhow::Result<Joined> {
    let start = Instant::now();
    let (mut rtc, sock, local) = crate::viewers::direct::join_gateway(
        http_addr,
        LOOPBACK,
        LOOPBACK,
        &format!("rtp-join-{id}"),
    )
    .await?
    .into_parts();
    let deadline = start + FIRST_FRAME_TIMEOUT;
    let mut buf = vec![0u8; 2048];
    // First frame: (elapsed, keyframe); last frame: (elapsed, RTP time).
    let mut first: Option<(Duration, bool)> = None;
    let mut last: Option<(Duration, u64)> = None;
    loop {
        let next = loop {
            match rtc.poll_output().map_err(|e| anyhow!("str0m: {e}"))? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    // The answer's candidates are the gateway's loopback media addresses.
                    if t.destination.ip().is_loopback() {
                        let _ = sock.send_to(&t.contents, t.destination).await;
                    }
                }
                Output::Event(Event::MediaData(d)) => {
                    let now = start.elapsed();
                    let time = d.time.numer();
                    let (elapsed, keyframe) = *first.get_or_insert((now, d.is_keyframe()));
                    if let Some((at, t)) = last {
                        if time.saturating_sub(t) >= LIVE_STEP {
                            return Ok(Joined {
                                first: elapsed,
                                keyframe,
                                current: at,
                            });
                        }
                    }
                    last = Some((now, time));
                }
                Output::Event(_) => {}
            }
        };
        if Instant::now() >= deadline {
            bail!("no live frame within {FIRST_FRAME_TIMEOUT:?} of the viewer's start");
        }
        let input = tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r?;
                let Ok(contents) = buf.get(..n).unwrap_or_default().try_into() else { continue };
                Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents })
            }
            _ = tokio::time::sleep_until(next.min(deadline).into()) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).map_err(|e| anyhow!("str0m: {e}"))?;
    }
}

/// Runs the part: a gateway fed by ffmpeg, `plan.viewers` joining at random points.
pub async fn run(common: &Common, plan: &Plan) -> Outcome {
    let mut out = Outcome {
        plan_line: format!(
            "{} viewers joining at random points of {:.0} s after the stream went live; ffmpeg \
             libx264 640x480 at 30 fps, 1 Mbit/s, a keyframe every {GOP_FRAMES} frames",
            plan.viewers,
            plan.span.as_secs_f64()
        ),
        ..Outcome::default()
    };
    if let Err(e) = measure(common, plan, &mut out).await {
        out.error = Some(format!("{e:#}"));
    }
    out
}

async fn measure(common: &Common, plan: &Plan, out: &mut Outcome) -> anyhow::Result<()> {
    let rtp_port = servers::free_port()?;
    let turn = SocketAddr::new(LOOPBACK, servers::free_port()?);
    let http_addr = SocketAddr::new(LOOPBACK, servers::free_port()?);
    let log = common.dir.join("rtp-join.log");
    let mut cmd = common.gateway_command(turn, &http_addr.to_string(), &log)?;
    // No host: RTP ingest on 127.0.0.1.
    cmd.env("MEDIA_SOURCE", format!("rtp://:{rtp_port}?codec=h264"))
        .env("WEBRTC_BIND_IP", "127.0.0.1")
        .env("WEBRTC_ADVERTISE_IP", "127.0.0.1");
    let mut gateway = ChildGuard::spawn(cmd, "gateway (RTP join)")?;
    // Long enough for the whole span, the last viewer's first frame and start-up.
    let secs = plan.span.as_secs() + FIRST_FRAME_TIMEOUT.as_secs() + 10;
    let _ffmpeg = ChildGuard::spawn(
        ffmpeg_command(SocketAddr::new(LOOPBACK, rtp_port), secs),
        "ffmpeg (RTP sender; Debian package ffmpeg)",
    )?;
    wait_live(http_addr, &mut gateway, &log).await?;
    let live = Instant::now();
    let tasks: Vec<_> = offsets(plan.viewers, plan.span)
        .into_iter()
        .enumerate()
        .map(|(i, at)| {
            tokio::spawn(async move {
                tokio::time::sleep_until((live + at).into()).await;
                viewer(http_addr, i).await
            })
        })
        .collect();
    for t in tasks {
        match t
            .await
            .map_err(|e| anyhow!("viewer task: {e}"))
            .and_then(|r| r)
        {
            Ok(j) => {
                let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                out.ttff_us.push(us(j.first));
                out.current_us.push(us(j.current));
                if !j.keyframe {
                    out.not_keyframe += 1;
                }
            }
            Err(e) => {
                out.failed += 1;
                out.first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Ok(())
}

impl Outcome {
    pub fn report(&self, results: &mut Results, notes: &mut Vec<String>) {
        let ms = |p: f64| percentile(&mut self.ttff_us.clone(), p) / 1000.0;
        let current = |p: f64| percentile(&mut self.current_us.clone(), p) / 1000.0;
        for (what, p) in [("p50", 50.0), ("p95", 95.0), ("max", 100.0)] {
            results.add(
                &format!("{ROW}: {what}"),
                "ms",
                Better::Lower,
                Kind::Gateway,
                ms(p),
            );
        }
        for (what, p) in [("p50", 50.0), ("max", 100.0)] {
            results.add(
                &format!("{ROW}: to the current picture (cached frames all in), {what}"),
                "ms",
                Better::Lower,
                Kind::Gateway,
                current(p),
            );
        }
        let mut line = format!("RTP join: {}", self.plan_line);
        if let Some(e) = &self.error {
            line.push_str(&format!("; could not run: {e}"));
        } else {
            line.push_str(&format!(
                "; {} of {} got a first frame (p50 {} ms, p95 {} ms, max {} ms) and the \
                 current picture (p50 {} ms, max {} ms)",
                self.ttff_us.len(),
                self.ttff_us.len() + self.failed,
                fmt(ms(50.0)),
                fmt(ms(95.0)),
                fmt(ms(100.0)),
                fmt(current(50.0)),
                fmt(current(100.0)),
            ));
            if self.not_keyframe > 0 {
                line.push_str(&format!(
                    "; {} first frames were not keyframes",
                    self.not_keyframe
                ));
            }
            if let Some(f) = &self.first_failure {
                line.push_str(&format!("; first failure: {f}"));
            }
        }
        notes.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_sorted_and_within_the_span() {
        let span = Duration::from_secs(10);
        let v = offsets(50, span);
        assert_eq!(v.len(), 50);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        assert!(v.iter().all(|d| *d < span));
        assert!(
            v.last().unwrap() > v.first().unwrap(),
            "not all the same point"
        );
    }
}
