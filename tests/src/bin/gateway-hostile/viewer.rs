//! The viewer that watches while the attacks run: str0m in the browser role (full ICE, one
//! recvonly H.264 m-line) whose only candidate is the relayed address of its TURN/TLS
//! allocation on the gateway. It runs on its own thread and runtime, so the attackers'
//! tasks never delay it, and records every RTP sequence number and frame timestamp.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::{ClientError, Origin, TurnClient, TEST_SERVER_NAME};
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, RtcConfig};

use crate::net::{http, HttpReq};

/// RTP clock ticks per frame of the sender (90 kHz, 30 frames/s).
pub const TICKS_PER_FRAME: u64 = 3000;
/// How often the viewer renews its TURN permission and channel (their lifetimes are 5 and
/// 10 minutes; the suite may run longer than the first).
const RENEW: Duration = Duration::from_secs(60);

/// What the viewer has received so far.
#[derive(Default)]
pub struct Seen {
    /// Every RTP sequence number (extended) carried by a complete frame.
    pub seqs: BTreeSet<u64>,
    /// RTP timestamp (extended) of every frame, in arrival order.
    pub frame_times: Vec<u64>,
    /// Set when the viewer stops: why.
    pub failed: Option<String>,
    /// ICE and DTLS are up.
    pub connected: bool,
}

/// A point in the viewer's stream: the highest sequence number and the frame count.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    seq: u64,
    frames: usize,
}

/// The stream between two marks.
#[derive(Debug)]
pub struct Window {
    /// Packets received / expected (by sequence number).
    pub packets: (u64, u64),
    /// Frames received / expected (by RTP timestamp at [`TICKS_PER_FRAME`]).
    pub frames: (u64, u64),
}

impl Window {
    /// Packet loss in percent.
    pub fn packet_loss(&self) -> f64 {
        loss(self.packets)
    }
    /// Frame loss in percent.
    pub fn frame_loss(&self) -> f64 {
        loss(self.frames)
    }
}

fn loss((got, want): (u64, u64)) -> f64 {
    if want == 0 {
        return 100.0;
    }
    100.0 * (want.saturating_sub(got)) as f64 / want as f64
}

/// The running viewer.
pub struct Viewer {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Viewer {
    /// Starts a viewer against the gateway at `http_addr` / `turn_addr` (TLS, trusting
    /// `root`); returns once it has received `frames` frames, or an error after `limit`.
    pub fn start(
        http_addr: SocketAddr,
        turn_addr: SocketAddr,
        root: CertificateDer<'static>,
        frames: usize,
        limit: Duration,
    ) -> Result<Viewer, String> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("viewer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("viewer runtime");
                let r = rt.block_on(run(http_addr, turn_addr, root, s.clone(), st));
                let mut seen = s.lock().expect("viewer state");
                seen.failed = Some(match r {
                    Ok(()) => "stopped".into(),
                    Err(e) => e,
                });
            })
            .map_err(|e| format!("viewer thread: {e}"))?;
        let viewer = Viewer {
            seen,
            stop,
            thread: Some(thread),
        };
        let deadline = Instant::now() + limit;
        loop {
            {
                let seen = viewer.seen.lock().expect("viewer state");
                if let Some(f) = &seen.failed {
                    return Err(format!("the viewer failed to start: {f}"));
                }
                if seen.frame_times.len() >= frames {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let n = viewer.seen.lock().expect("viewer state").frame_times.len();
                return Err(format!(
                    "the viewer got {n} of {frames} frames in {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(viewer)
    }

    /// Where the stream is now.
    pub fn mark(&self) -> Mark {
        let seen = self.seen.lock().expect("viewer state");
        Mark {
            seq: seen.seqs.last().copied().unwrap_or(0),
            frames: seen.frame_times.len(),
        }
    }

    /// Why the viewer stopped, if it did.
    pub fn failed(&self) -> Option<String> {
        self.seen.lock().expect("viewer state").failed.clone()
    }

    /// The stream between `a` and `b`.
    pub fn window(&self, a: Mark, b: Mark) -> Window {
        let seen = self.seen.lock().expect("viewer state");
        let want = b.seq.saturating_sub(a.seq);
        let got = if want == 0 {
            0
        } else {
            seen.seqs.range(a.seq + 1..=b.seq).count() as u64
        };
        let times = seen.frame_times.get(a.frames..b.frames).unwrap_or(&[]);
        let before = a
            .frames
            .checked_sub(1)
            .and_then(|i| seen.frame_times.get(i));
        let frames = match (before, times.last()) {
            (Some(t0), Some(t1)) if t1 > t0 => {
                let want = (t1 - t0 + TICKS_PER_FRAME / 2) / TICKS_PER_FRAME;
                (times.len() as u64, want.max(times.len() as u64))
            }
            _ => (times.len() as u64, times.len().max(1) as u64),
        };
        Window {
            packets: (got, want),
            frames,
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    http_addr: SocketAddr,
    turn_addr: SocketAddr,
    root: CertificateDer<'static>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    // Signaling: a session and its ICE servers.
    let r = http(HttpReq::get(http_addr, "/api/v1/webrtc/config"))
        .await
        .map_err(|e| format!("webrtc/config: {e}"))?;
    if r.status != 200 {
        return Err(format!("webrtc/config: {r:?}"));
    }
    let cfg = r.json();
    let session = cfg["sessionId"].as_str().unwrap_or_default().to_owned();
    let server = cfg["iceServers"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|s| {
                let first = match &s["urls"] {
                    Value::String(u) => Some(u.clone()),
                    Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                };
                first.is_some_and(|u| u.starts_with("turns:"))
            })
        })
        .ok_or_else(|| format!("no turns: server in {cfg}"))?;
    let user = server["username"].as_str().unwrap_or_default().to_owned();
    let pass = server["credential"].as_str().unwrap_or_default().to_owned();

    // TURN over TLS ("DNS": turn.test → the relay's loopback address).
    let mut turn = TurnClient::connect_tls(turn_addr, TEST_SERVER_NAME, &root)
        .await
        .map_err(|e| format!("TLS to {turn_addr}: {e}"))?;
    let alloc = turn
        .allocate(&user, &pass)
        .await
        .map_err(|e| format!("Allocate: {e}"))?;
    let relayed = alloc.relayed;

    let mut rtc = RtcConfig::new()
        .set_ice_lite(false)
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let cand = Candidate::relayed(relayed, turn.local_addr(), "udp")
        .map_err(|e| format!("relayed candidate: {e}"))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let body =
        serde_json::json!({ "webrtc_id": session, "sdp": offer.to_sdp_string(), "type": "offer" })
            .to_string();
    let r = http(
        HttpReq::get(http_addr, "/api/v1/projects/x/offer")
            .method("POST")
            .header("Content-Type", "application/json")
            .body(body.into_bytes()),
    )
    .await
    .map_err(|e| format!("offer: {e}"))?;
    if r.status != 200 {
        return Err(format!("offer: {r:?}"));
    }
    let answer = r.json()["sdp"].as_str().unwrap_or_default().to_owned();
    let remote: Vec<SocketAddr> = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            Some(SocketAddr::new(ip, f.get(5)?.parse().ok()?))
        })
        .collect();
    if remote.is_empty() {
        return Err(format!("no candidates in the answer: {answer}"));
    }
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("answer: {e}"))?,
        )
        .map_err(|e| format!("answer applies: {e}"))?;

    let mut channel_of = HashMap::new();
    let mut peer_of = HashMap::new();
    for (i, addr) in remote.iter().enumerate() {
        let ch = 0x4000 + i as u16;
        turn.create_permission(*addr)
            .await
            .map_err(|e| format!("CreatePermission: {e}"))?;
        turn.channel_bind(ch, *addr)
            .await
            .map_err(|e| format!("ChannelBind: {e}"))?;
        channel_of.insert(*addr, ch);
        peer_of.insert(ch, *addr);
    }

    let mut renewed = Instant::now();
    let mut ice = false;
    while !stop.load(Ordering::Relaxed) {
        let next = loop {
            match rtc.poll_output().map_err(|e| format!("poll_output: {e}"))? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    match channel_of.get(&t.destination) {
                        Some(&ch) => turn.send_channel_data(ch, &t.contents).await,
                        None => turn.send_indication(t.destination, &t.contents).await,
                    }
                    .map_err(|e| format!("send through the relay: {e}"))?;
                }
                Output::Event(e) => match e {
                    Event::IceConnectionStateChange(s) => {
                        ice = matches!(
                            s,
                            IceConnectionState::Connected | IceConnectionState::Completed
                        );
                        if matches!(s, IceConnectionState::Disconnected) {
                            return Err("ICE disconnected".into());
                        }
                    }
                    Event::Connected => {
                        seen.lock().expect("viewer state").connected = ice;
                    }
                    Event::MediaData(d) => {
                        // str0m extends both to 64 bits.
                        let (a, b) = (**d.seq_range.start(), **d.seq_range.end());
                        let t = d.time.numer();
                        let mut s = seen.lock().expect("viewer state");
                        if b >= a && b - a < 10_000 {
                            s.seqs.extend(a..=b);
                        }
                        s.frame_times.push(t);
                    }
                    _ => {}
                },
            }
        };
        if renewed.elapsed() > RENEW {
            renewed = Instant::now();
            for (addr, ch) in &channel_of {
                turn.create_permission(*addr)
                    .await
                    .map_err(|e| format!("renew permission: {e}"))?;
                turn.channel_bind(*ch, *addr)
                    .await
                    .map_err(|e| format!("renew channel: {e}"))?;
            }
        }
        let wait = next
            .min(Instant::now() + Duration::from_millis(100))
            .saturating_duration_since(Instant::now());
        match turn.recv_data(wait).await {
            Ok((origin, data)) => {
                let source = match origin {
                    Origin::Channel(ch) => match peer_of.get(&ch) {
                        Some(p) => *p,
                        None => continue,
                    },
                    Origin::Peer(p) => p,
                };
                let Ok(contents) = data.as_slice().try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: relayed,
                        contents,
                    },
                );
                if rtc.accepts(&input) {
                    rtc.handle_input(input)
                        .map_err(|e| format!("handle_input: {e}"))?;
                }
            }
            Err(ClientError::Timeout(_)) => {}
            Err(e) => return Err(format!("the TURN/TLS connection failed: {e}")),
        }
        let now = Instant::now();
        if now >= next {
            rtc.handle_input(Input::Timeout(now))
                .map_err(|e| format!("timeout: {e}"))?;
        }
    }
    Ok(())
}
