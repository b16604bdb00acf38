//! Named streams over the HTTP API: which stream a project id or a WHEP path plays, the
//! 404 for an unknown one, and the answers for a stream whose source sends nothing yet
//! (Geti's `400 {"detail": "No active pipeline."}` on its endpoint, 409 on WHEP), until its
//! RTP sender starts.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use gateway_tests::http::{request, Resp};
use gateway_tests::video_offer;
use serde_json::{json, Value};

const SECRET: &str = "streams-test-secret-0123";

async fn geti_offer(addr: SocketAddr, project: &str, id: &str) -> Resp {
    let body: Value = json!({ "webrtc_id": id, "sdp": video_offer(), "type": "offer" });
    request(
        addr,
        "POST",
        &format!("/api/v1/projects/{project}/offer"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

async fn whep(addr: SocketAddr, path: &str) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/sdp")],
        video_offer().as_bytes(),
    )
    .await
}

/// A loopback UDP port free now (the gateway binds it next).
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// One H.264 access unit as RTP: SPS+PPS in a STAP-A, then an IDR slice with the marker.
fn rtp_keyframe(seq: u16, ts: u32) -> [Vec<u8>; 2] {
    let header = |seq: u16, marker: bool| {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x5eed_cafe_u32.to_be_bytes());
        p
    };
    let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xab];
    let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    let mut stap = header(seq, false);
    stap.push(0x18);
    for nal in [sps, pps] {
        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        stap.extend_from_slice(nal);
    }
    let mut idr = header(seq.wrapping_add(1), true);
    idr.extend_from_slice(&[0x65, 0x88, 0x84, 0x00, 0x33]);
    [stap, idr]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_ids_and_whep_paths_name_streams() {
    let rtp_port = free_udp_port();
    let cam1 = format!("cam1=rtp://127.0.0.1:{rtp_port}?codec=h264");
    let gw = gateway_tests::start_gateway(SECRET, &["--stream", &cam1, "--stream", "loop=testsrc"])
        .await;
    let addr = gw.http_addr;

    // Unknown names are refused once named streams exist.
    geti_offer(addr, "nope", "v1")
        .await
        .expect_error(404, "unknown_stream");
    whep(addr, "/whep/nope")
        .await
        .expect_error(404, "unknown_stream");

    // A known stream whose sender has not started answers as Geti's backend does.
    let r = geti_offer(addr, "cam1", "v2").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json(), json!({ "detail": "No active pipeline." }));
    whep(addr, "/whep/cam1")
        .await
        .expect_error(409, "no_active_source");

    // Streams with a producer in the gateway play at once, by either API.
    let r = geti_offer(addr, "loop", "v3").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["type"], "answer");
    let r = whep(addr, "/whep/loop").await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = whep(addr, "/whep").await;
    assert_eq!(r.status, 201, "/whep plays default: {r:?}");

    // The RTP sender starts: cam1 is live.
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0u16;
    let played = loop {
        for p in rtp_keyframe(n.wrapping_mul(2), u32::from(n) * 3000) {
            sender.send_to(&p, ("127.0.0.1", rtp_port)).expect("send");
        }
        n = n.wrapping_add(1);
        let r = geti_offer(addr, "cam1", &format!("v4-{n}")).await;
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 400, "{r:?}");
        assert!(Instant::now() < deadline, "cam1 never became live: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(played.json()["type"], "answer");

    // Operators see every stream.
    let r = request(addr, "GET", "/api/v1/streams", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    let names: Vec<&str> = j["streams"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "cam1", "loop"]);
    assert_eq!(j["streams"][1]["live"], true, "{j}");
    assert_eq!(
        j["streams"][1]["source"],
        format!("rtp://127.0.0.1:{rtp_port}?codec=h264")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_list_needs_the_api_token_when_one_is_set() {
    let token = "streams-api-token-0123456789";
    let gw = gateway_tests::start_gateway(SECRET, &["--api-token", token]).await;
    request(gw.http_addr, "GET", "/api/v1/streams", &[], b"")
        .await
        .expect_error(401, "unauthorized");
    let bearer = format!("Bearer {token}");
    let r = request(
        gw.http_addr,
        "GET",
        "/api/v1/streams",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["streams"][0]["name"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_play_default_when_configured_or_when_it_is_alone() {
    let gw = gateway_tests::start_gateway(
        SECRET,
        &["--stream", "loop=testsrc", "--stream-fallback", "default"],
    )
    .await;
    let r = geti_offer(gw.http_addr, "6f1c0e1a-2b7d-4c1e-9a43-1f0a6b2c3d4e", "a").await;
    assert_eq!(r.status, 200, "falls back to default: {r:?}");

    let alone = gateway_tests::start_gateway(SECRET, &[]).await;
    let r = geti_offer(alone.http_addr, "any-project", "b").await;
    assert_eq!(r.status, 200, "default alone plays for every id: {r:?}");

    // Bad names are refused at start with the setting named.
    let e = <gateway::config::Cli as clap::Parser>::try_parse_from([
        "gateway",
        "--stream",
        "default=testsrc",
    ])
    .map(|_| ())
    .expect_err("default is MEDIA_SOURCE's")
    .to_string();
    assert!(e.contains("MEDIA_SOURCE"), "{e}");
}

/// The value of `name{stream="<stream>"}` in a `/metrics` body, if exported.
fn stream_metric(body: &str, name: &str, stream: &str) -> Option<u64> {
    let prefix = format!("{name}{{stream=\"{stream}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(addr: SocketAddr) -> String {
    let r = request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// Per-stream metrics move with each stream: a watched test pattern counts its viewer and
/// its frames, an RTP stream is not live until its sender starts, then counts frames, bytes
/// and the packets its sender skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_metrics_follow_each_stream() {
    let rtp_port = free_udp_port();
    let cam1 = format!("cam1=rtp://127.0.0.1:{rtp_port}?codec=h264");
    let gw = gateway_tests::start_gateway(SECRET, &["--stream", &cam1, "--stream", "loop=testsrc"])
        .await;
    let addr = gw.http_addr;

    let body = scrape(addr).await;
    for s in ["default", "cam1", "loop"] {
        for m in [
            "gateway_stream_viewers",
            "gateway_stream_live",
            "gateway_stream_frames_total",
            "gateway_stream_bytes_total",
            "gateway_stream_keyframe_requests_total",
        ] {
            assert!(stream_metric(&body, m, s).is_some(), "{m}{{{s}}}: {body}");
        }
    }
    assert_eq!(stream_metric(&body, "gateway_stream_live", "cam1"), Some(0));
    assert_eq!(
        stream_metric(&body, "gateway_stream_frames_total", "cam1"),
        Some(0)
    );
    assert_eq!(
        stream_metric(&body, "gateway_stream_ingest_lost_packets_total", "cam1"),
        Some(0)
    );
    // Only RTP streams know their losses; no stream here is WHIP.
    assert_eq!(
        stream_metric(&body, "gateway_stream_ingest_lost_packets_total", "loop"),
        None
    );
    assert!(!body.contains("gateway_stream_publishers{"), "{body}");

    // A viewer of `loop`: counted there only, and its frames grow.
    let mut viewer = gateway_tests::peer::Viewer::join_as(addr, "loop", "m1", true).await;
    let got = viewer.frames(3, Duration::from_secs(15)).await;
    assert!(got.len() >= 3, "the viewer got {} frames", got.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let body = scrape(addr).await;
        if stream_metric(&body, "gateway_stream_viewers", "loop") == Some(1) {
            break body;
        }
        assert!(Instant::now() < deadline, "viewer never counted: {body}");
        viewer.frames(1, Duration::from_millis(200)).await;
    };
    assert_eq!(
        stream_metric(&first, "gateway_stream_viewers", "cam1"),
        Some(0)
    );
    assert_eq!(
        stream_metric(&first, "gateway_stream_live", "loop"),
        Some(1)
    );
    assert!(stream_metric(&first, "gateway_stream_keyframe_requests_total", "loop") >= Some(1));
    let frames = stream_metric(&first, "gateway_stream_frames_total", "loop").unwrap();
    let bytes = stream_metric(&first, "gateway_stream_bytes_total", "loop").unwrap();
    assert!(
        frames >= 3 && bytes > frames,
        "{frames} frames, {bytes} bytes"
    );
    viewer.frames(5, Duration::from_secs(10)).await;
    let later = scrape(addr).await;
    assert!(stream_metric(&later, "gateway_stream_frames_total", "loop").unwrap() > frames);
    assert!(stream_metric(&later, "gateway_stream_bytes_total", "loop").unwrap() > bytes);

    // cam1's sender starts, skipping 8 sequence numbers between two keyframes.
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender");
    for (seq, ts) in [(0u16, 0u32), (10, 3000)] {
        for p in rtp_keyframe(seq, ts) {
            sender.send_to(&p, ("127.0.0.1", rtp_port)).expect("send");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 2u16;
    let body = loop {
        let body = scrape(addr).await;
        if stream_metric(&body, "gateway_stream_ingest_lost_packets_total", "cam1") >= Some(8)
            && stream_metric(&body, "gateway_stream_frames_total", "cam1") >= Some(2)
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "cam1's ingest never counted: {body}"
        );
        // Later keyframes in order push the jitter buffer past the hole.
        for p in rtp_keyframe(10 + 2 * (n - 1), 3000 * u32::from(n)) {
            sender.send_to(&p, ("127.0.0.1", rtp_port)).expect("send");
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        stream_metric(&body, "gateway_stream_ingest_lost_packets_total", "cam1"),
        Some(8),
        "{body}"
    );
    assert_eq!(stream_metric(&body, "gateway_stream_live", "cam1"), Some(1));
    assert!(stream_metric(&body, "gateway_stream_bytes_total", "cam1") > Some(0));
}
