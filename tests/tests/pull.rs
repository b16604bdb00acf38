//! WebRTC pull: an edge gateway serves a stream it pulls from an origin's Geti-style offer
//! endpoint (`offer+http://…/api/v1/projects/default/offer`). The origin is the release
//! gateway binary, a separate process: two viewers of the edge decode its picture while
//! the origin serves exactly one session (the pull); the origin is killed and started again
//! and the viewers, still on their first session with the edge, get frames again.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::coturn::{free_udp_range, gateway_bin};
use gateway_tests::free_tcp_port;
use gateway_tests::http::request;
use serde_json::{json, Value};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

const SECRET: &str = "pull-test-secret-0123456789";

/// A child process (the origin gateway, the stand-in), killed by PID and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the origin on `http_port` and waits for its `/health`.
async fn start_origin(http_port: u16, media_ports: &str) -> Process {
    let child = Command::new(gateway_bin())
        .args(["--gateway-http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--turn-listen", "127.0.0.1:0", "--turn-secret", SECRET])
        .args([
            "--turn-relay-ip",
            "127.0.0.1",
            "--webrtc-bind-ip",
            "127.0.0.1",
        ])
        .args(["--webrtc-port-range", media_ports])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("origin gateway starts");
    let origin = Process(child);
    let addr: SocketAddr = ([127, 0, 0, 1], http_port).into();
    // Listening first: `request` treats a refused connection as a failed test.
    wait_for("origin healthy", || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
            && request(addr, "GET", "/health", &[], b"").await.status == 200
    })
    .await;
    origin
}

/// Polls `ready` every 100 ms; fails the test when it is not true within 30 s.
async fn wait_for<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The edge gateway, in-process on loopback, serving the pulled stream `source`
/// (`NAME=SOURCE`), with `extra` flags.
async fn start_edge(source: &str, extra: &[&str]) -> gateway::run::Running {
    let media = free_udp_range();
    let mut args = vec![
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        &media,
        "--stream",
        source,
    ];
    args.extend_from_slice(extra);
    gateway_tests::start_gateway(SECRET, &args).await
}

/// `GET /api/v1/streams` of a gateway, as JSON.
async fn streams(addr: SocketAddr) -> Value {
    request(addr, "GET", "/api/v1/streams", &[], b"")
        .await
        .json()
}

/// A viewer of the edge's stream `cam`: str0m over UDP, H.264.
struct Viewer {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
}

impl Viewer {
    async fn join(edge: SocketAddr, id: &str) -> Viewer {
        Viewer::join_as(edge, "cam", id, true).await
    }

    /// Joins `stream` of `edge`, offering H.264 (`h264`) or VP8.
    async fn join_as(edge: SocketAddr, stream: &str, id: &str, h264: bool) -> Viewer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(h264)
            .enable_vp8(!h264)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let body = json!({ "webrtc_id": id, "sdp": offer.to_sdp_string(), "type": "offer" });
        let r = request(
            edge,
            "POST",
            &format!("/api/v1/projects/{stream}/offer"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let answer = r.json()["sdp"].as_str().expect("sdp").to_owned();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .expect("answer applies");
        Viewer { rtc, sock, local }
    }

    /// Receives until `want` frames arrived or `limit` passed; returns the frames.
    async fn frames(&mut self, want: usize, limit: Duration) -> Vec<(bool, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        while got.len() < want && Instant::now() < deadline {
            let timeout = loop {
                match self.rtc.poll_output().expect("poll") {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(Event::MediaData(d)) => {
                        got.push((d.is_keyframe(), d.data.to_vec()))
                    }
                    Output::Event(_) => {}
                }
            };
            let wait = timeout.min(deadline);
            let input = tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, source) = r.expect("recv");
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    })
                }
                _ = tokio::time::sleep_until(wait.into()) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).expect("input");
        }
        got
    }
}

/// The size of the first picture openh264 decodes from `frames`.
fn decoded_size(frames: &[(bool, Vec<u8>)]) -> Option<(usize, usize)> {
    use openh264::formats::YUVSource;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    frames.iter().find_map(|(_, data)| {
        decoder
            .decode(data)
            .ok()
            .flatten()
            .map(|pic| pic.dimensions())
    })
}

/// Width and height from a VP8 keyframe's header (RFC 6386 §9.1), if `frame` is one.
fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let is_key = frame.first()? & 1 == 0;
    if !is_key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_pulls_once_for_many_viewers_and_survives_an_origin_restart() {
    let origin_port = free_tcp_port();
    let origin_media = free_udp_range();
    let mut origin = start_origin(origin_port, &origin_media).await;
    let origin_addr: SocketAddr = ([127, 0, 0, 1], origin_port).into();

    let source = format!("cam=offer+http://127.0.0.1:{origin_port}/api/v1/projects/default/offer");
    let edge = start_edge(&source, &[]).await;
    let edge_addr = edge.http_addr;
    // Nothing is pulled before a viewer asks.
    let before = streams(origin_addr).await;
    assert_eq!(before["streams"][0]["viewers"], 0, "{before}");

    // The first viewer's request connects the pull and waits for its first frame.
    let mut a = Viewer::join(edge_addr, "viewer-a").await;
    let mut b = Viewer::join(edge_addr, "viewer-b").await;
    let limit = Duration::from_secs(20);
    let (fa, fb) = tokio::join!(a.frames(30, limit), b.frames(30, limit));
    assert!(fa.len() >= 30, "viewer a got {} frames", fa.len());
    assert!(fb.len() >= 30, "viewer b got {} frames", fb.len());
    assert_eq!(
        decoded_size(&fa),
        Some((640, 480)),
        "the origin's pattern decodes at a"
    );
    assert_eq!(
        decoded_size(&fb),
        Some((640, 480)),
        "the origin's pattern decodes at b"
    );
    let origin_streams = streams(origin_addr).await;
    assert_eq!(
        origin_streams["streams"][0]["viewers"], 1,
        "the origin serves the pull alone: {origin_streams}"
    );

    // The origin goes away and comes back on the same address.
    drop(origin);
    let _gap = a.frames(usize::MAX, Duration::from_secs(2)).await;
    origin = start_origin(origin_port, &origin_media).await;
    let (fa, fb) = tokio::join!(a.frames(30, limit), b.frames(30, limit));
    assert!(
        fa.len() >= 30,
        "after the restart viewer a got {} frames",
        fa.len()
    );
    assert!(
        fb.len() >= 30,
        "after the restart viewer b got {} frames",
        fb.len()
    );
    assert!(
        decoded_size(&fa).is_some(),
        "frames after the restart decode"
    );
    drop(origin);
}

/// Starts the stand-in on `port` (inactive: no pipeline) and waits for it to listen.
async fn start_standin(port: u16) -> Process {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv-aiortc/bin/python");
    assert!(
        python.exists(),
        "{} is missing: ./tests/run creates the aiortc virtualenv",
        python.display()
    );
    let child = Command::new(python)
        .arg(root.join("standins/geti_backend.py"))
        .args([
            "--port",
            &port.to_string(),
            "--inactive",
            "--lifetime",
            "120",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("stand-in starts");
    let standin = Process(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("stand-in listening", || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    standin
}

async fn standin_post(port: u16, path: &str) -> Value {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    request(addr, "POST", path, &[], b"").await.json()
}

async fn standin_stats(port: u16) -> Value {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    request(addr, "GET", "/test/stats", &[], b"").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_geti_backend_stand_in_is_pulled_once_for_three_viewers() {
    // The gateway's log, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gateway=debug,str0m=warn")
        .with_test_writer()
        .try_init();
    let port = free_tcp_port();
    let standin = start_standin(port).await;
    // Geti's UI uses the project UUID; the gateway names its stream `cam`.
    let source = format!(
        "cam=offer+http://127.0.0.1:{port}/api/v1/projects/6f1c0e1a-2b7d-4c1e-9a43-1f0a6b2c3d4e/offer"
    );
    let edge = start_edge(&source, &["--pull-idle-timeout", "2"]).await;
    let edge_addr = edge.http_addr;

    // No pipeline at the backend: the viewer hears what Geti would say.
    let body = json!({ "webrtc_id": "early", "sdp": "v=0", "type": "offer" });
    let r = request(
        edge_addr,
        "POST",
        "/api/v1/projects/cam/offer",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json(), json!({ "detail": "No active pipeline." }));

    standin_post(port, "/test/pipeline?active=1").await;
    let mut viewers = Vec::new();
    for id in ["geti-1", "geti-2", "geti-3"] {
        viewers.push(Viewer::join_as(edge_addr, "cam", id, false).await);
    }
    let limit = Duration::from_secs(20);
    let [a, b, c] = &mut viewers[..] else {
        unreachable!()
    };
    let (fa, fb, fc) = tokio::join!(
        a.frames(20, limit),
        b.frames(20, limit),
        c.frames(20, limit)
    );
    let edge_streams = streams(edge_addr).await;
    for (name, frames) in [("1", &fa), ("2", &fb), ("3", &fc)] {
        assert!(
            frames.len() >= 20,
            "viewer {name} got {} frames; edge: {edge_streams}",
            frames.len()
        );
        let size = frames.iter().find_map(|(_, f)| vp8_keyframe_size(f));
        assert_eq!(
            size,
            Some((320, 240)),
            "viewer {name}: the stand-in's VP8 keyframe"
        );
        let distinct: std::collections::HashSet<&Vec<u8>> = frames.iter().map(|(_, f)| f).collect();
        assert!(distinct.len() > 10, "viewer {name}: the picture moves");
    }
    let stats = standin_stats(port).await;
    assert_eq!(
        stats["peers_total"], 1,
        "one peer connection at the backend: {stats}"
    );

    // PLI on join: a fourth viewer arrives, the backend is asked for a keyframe (by the one
    // pull, with the viewers' requests coalesced) and the viewer starts with it.
    let before = stats["keyframe_requests"]
        .as_u64()
        .expect("keyframe_requests");
    let mut d = Viewer::join_as(edge_addr, "cam", "geti-4", false).await;
    let fd = d.frames(5, limit).await;
    assert!(
        fd.first().is_some_and(|(key, _)| *key),
        "viewer 4 starts with a keyframe"
    );
    wait_for("a keyframe request at the backend for viewer 4", || async {
        standin_stats(port).await["keyframe_requests"].as_u64() > Some(before)
    })
    .await;

    // The backend restarts: the viewers get video again on the sessions they have.
    drop(standin);
    let _gap = a.frames(usize::MAX, Duration::from_secs(1)).await;
    let _standin = start_standin(port).await;
    standin_post(port, "/test/pipeline?active=1").await;
    let (fa, fb, fc) = tokio::join!(
        a.frames(20, limit),
        b.frames(20, limit),
        c.frames(20, limit)
    );
    for (name, frames) in [("1", &fa), ("2", &fb), ("3", &fc)] {
        assert!(
            frames.len() >= 20,
            "after the restart viewer {name} got {} frames",
            frames.len()
        );
    }

    // The viewers leave: once the edge has ended their sessions, the pull closes after
    // PULL_IDLE_TIMEOUT (2 s here) and the backend has no peer left.
    drop(viewers);
    drop(d);
    // The edge notices a silent viewer by ICE consent, aiortc a silent pull the same way
    // (about 30 s): bounded well above both.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats = standin_stats(port).await;
        if stats["peers_open"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull still holds the backend 90 s after the viewers left: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
