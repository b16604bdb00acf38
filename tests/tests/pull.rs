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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::coturn::{free_udp_range, gateway_bin};
use gateway_tests::free_tcp_port;
use gateway_tests::http::request;
use gateway_tests::peer::{decoded_size, vp8_keyframe_size, wait_for, Process, Viewer};
use serde_json::{json, Value};

const SECRET: &str = "pull-test-secret-0123456789";

/// A viewer of the edge's stream `cam`, in H.264.
async fn join(edge: SocketAddr, id: &str) -> Viewer {
    Viewer::join_as(edge, "cam", id, true).await
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
    let mut a = join(edge_addr, "viewer-a").await;
    let mut b = join(edge_addr, "viewer-b").await;
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

/// An `https://` upstream: the edge pulls from the origin's HTTPS on its TURN port, trusting
/// the origin's certificate by `PULL_CA_FILE`; an edge without it refuses its viewer with
/// `502 upstream_untrusted`, naming the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_pulled_when_its_ca_is_trusted() {
    let cert = gateway_tests::TestCert::new(&["127.0.0.1"]);
    let (cert_path, key_path) = cert.write_pem_files();
    let origin_media = gateway_tests::coturn::free_udp_range();
    let origin = gateway_tests::start_gateway(
        "pull-https-secret-0123456789",
        &[
            "--webrtc-bind-ip",
            "127.0.0.1",
            "--webrtc-advertise-ip",
            "127.0.0.1",
            "--webrtc-port-range",
            &origin_media,
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    )
    .await;
    let upstream = format!("cam=whep+https://{}/whep", origin.relay.local_tcp());
    let edge_with = |ca: Option<String>| {
        let upstream = upstream.clone();
        async move {
            let media = gateway_tests::coturn::free_udp_range();
            let mut args = vec![
                "--webrtc-bind-ip".to_owned(),
                "127.0.0.1".to_owned(),
                "--webrtc-advertise-ip".to_owned(),
                "127.0.0.1".to_owned(),
                "--webrtc-port-range".to_owned(),
                media,
                "--stream".to_owned(),
                upstream,
            ];
            if let Some(ca) = ca {
                args.extend(["--pull-ca-file".to_owned(), ca]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gateway_tests::start_gateway("pull-https-edge-secret-0123456789", &args).await
        }
    };

    // Untrusted: the viewer is told why.
    let untrusting = edge_with(None).await;
    let body = json!({ "webrtc_id": "u1", "sdp": gateway_tests::video_offer(), "type": "offer" });
    let r = gateway_tests::http::request(
        untrusting.http_addr,
        "POST",
        "/api/v1/projects/cam/offer",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    r.expect_error(502, "upstream_untrusted");
    assert!(
        r.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("certificate is not trusted")),
        "{r:?}"
    );
    untrusting.shutdown(Duration::from_secs(2)).await;

    // Trusted by PULL_CA_FILE: the viewer decodes the origin's picture.
    let edge = edge_with(Some(cert_path.to_str().unwrap().to_owned())).await;
    let mut viewer = Viewer::join_as(edge.http_addr, "cam", "https-1", true).await;
    let frames = viewer.frames(20, Duration::from_secs(20)).await;
    assert!(frames.len() >= 20, "got {} frames", frames.len());
    assert!(decoded_size(&frames).is_some(), "the picture decodes");
    edge.shutdown(Duration::from_secs(2)).await;
    origin.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&cert_path);
    let _ = std::fs::remove_file(&key_path);
}
