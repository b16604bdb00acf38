//! WHIP ingest end to end: aiortc publishers (tests/standins/whip_publisher.py) push a moving
//! H.264 picture and a moving VP8 picture of different sizes into two named streams of a
//! gateway started in-process on loopback; two viewers of each (one over UDP, one relay-only
//! over TURN/TLS through the embedded relay) decode their stream's picture and not the
//! other's. A wrong token gets 401, a second publisher 409; a viewer's arrival reaches the
//! publisher as a PLI; DELETE ends the publisher and the stream answers "No active
//! pipeline." until a new publisher comes, when the viewers that stayed get video again.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_tests::coturn::free_udp_range;
use gateway_tests::http::request;
use gateway_tests::peer::{decoded_size, relayed_viewer, vp8_keyframe_size, wait_for, Viewer};
use gateway_tests::publisher::Publisher;
use gateway_tests::{TestCert, TEST_SERVER_NAME};
use serde_json::json;

const SECRET: &str = "whip-test-secret-0123456789";
/// The H.264 stream's own token.
const CAM_TOKEN: &str = "cam-h264-token-0123456789";
/// WHIP_TOKEN, for the VP8 stream (no token of its own).
const WHIP_TOKEN: &str = "whip-global-token-0123456789";
const H264_SIZE: (usize, usize) = (320, 240);
const VP8_SIZE: (u16, u16) = (352, 288);
const MEDIA_LIMIT: Duration = Duration::from_secs(20);

/// The gateway: two WHIP streams, TLS for the relay's turns: URL, media on loopback.
async fn start(cert: &TestCert) -> gateway::run::Running {
    let (cert_path, key_path) = cert.write_pem_files();
    let media = free_udp_range();
    let cam = format!("cam=whip?token={CAM_TOKEN}");
    gateway_tests::start_gateway(
        SECRET,
        &[
            "--webrtc-bind-ip",
            "127.0.0.1",
            "--webrtc-advertise-ip",
            "127.0.0.1",
            "--webrtc-port-range",
            &media,
            "--turn-host",
            TEST_SERVER_NAME,
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--stream",
            &cam,
            "--stream",
            "screen=whip",
            "--whip-token",
            WHIP_TOKEN,
        ],
    )
    .await
}

/// Keyframe requests the gateway sent to the `cam` stream's publishers.
async fn keyframe_requests(http: SocketAddr) -> u64 {
    let s = request(http, "GET", "/api/v1/streams", &[], b"")
        .await
        .json();
    assert_eq!(s["streams"][1]["name"], "cam", "{s}");
    s["streams"][1]["keyframe_requests"]
        .as_u64()
        .expect("a WHIP stream's count")
}

/// What Geti's offer endpoint answers a viewer of `stream` (status, body).
async fn geti_offer(http: SocketAddr, stream: &str) -> (u16, serde_json::Value) {
    let body =
        json!({ "webrtc_id": "probe", "sdp": gateway_tests::video_offer(), "type": "offer" });
    let r = request(
        http,
        "POST",
        &format!("/api/v1/projects/{stream}/offer"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_publishers_feed_their_own_streams_through_udp_and_the_relay() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gateway=info,str0m=warn")
        .with_test_writer()
        .try_init();
    let cert = TestCert::new(&[TEST_SERVER_NAME]);
    let gw = start(&cert).await;
    let http = gw.http_addr;
    let relay: SocketAddr = ([127, 0, 0, 1], gw.relay.local_tcp().port()).into();
    let sdp = [("Content-Type", "application/sdp")];

    // Refusals that need no publisher.
    let bearer = format!("Bearer {CAM_TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let offer = gateway_tests::video_offer();
    request(
        http,
        "POST",
        "/whip/nope",
        &[sdp[0], auth],
        offer.as_bytes(),
    )
    .await
    .expect_error(404, "unknown_stream");
    request(http, "POST", "/whip", &[sdp[0], auth], offer.as_bytes())
        .await
        .expect_error(400, "not_a_whip_stream");
    let r = request(http, "POST", "/whip/cam", &[sdp[0]], offer.as_bytes()).await;
    r.expect_error(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    request(
        http,
        "POST",
        "/whip/cam",
        &[("Content-Type", "text/plain"), auth],
        offer.as_bytes(),
    )
    .await
    .expect_error(415, "unsupported_media_type");
    // No publisher yet: Geti's "no pipeline" answer, WHEP's 409.
    assert_eq!(
        geti_offer(http, "cam").await,
        (400, json!({ "detail": "No active pipeline." }))
    );
    request(http, "POST", "/whep/cam", &sdp, offer.as_bytes())
        .await
        .expect_error(409, "no_active_source");

    // A wrong token (the other stream's) is refused by the real publisher too.
    let wrong = Publisher::start(http, "/whip/cam", WHIP_TOKEN, "h264", "320x240", 150);
    assert!(wrong.line("STATUS").await.starts_with("STATUS 401"));

    let cam = Publisher::start(http, "/whip/cam", CAM_TOKEN, "h264", "320x240", 150);
    let screen = Publisher::start(http, "/whip/screen", WHIP_TOKEN, "vp8", "352x288", 150);
    assert_eq!(cam.line("STATUS").await.trim(), "STATUS 201");
    let location = cam.line("LOCATION").await;
    let location = location.strip_prefix("LOCATION ").unwrap().to_owned();
    assert!(location.starts_with("/whip/cam/"), "{location}");
    assert_eq!(screen.line("STATUS").await.trim(), "STATUS 201");
    cam.line("CONNECTED").await;
    screen.line("CONNECTED").await;

    // A second publisher of a live stream.
    let second = Publisher::start(http, "/whip/cam", CAM_TOKEN, "h264", "320x240", 150);
    let status = second.line("STATUS").await;
    assert!(status.starts_with("STATUS 409"), "{status}");
    assert!(status.contains("stream_has_publisher"), "{status}");

    // Frames flow (the publishers' first keyframes are in): from now on a keyframe request
    // comes from a viewer. The gateway's count of them, and the publisher's.
    wait_for("the cam stream delivers frames", || async move {
        let s = request(http, "GET", "/api/v1/streams", &[], b"")
            .await
            .json();
        s["streams"][1]["live"] == true
    })
    .await;
    let sent_before = keyframe_requests(http).await;
    // Two viewers of each stream: one over UDP, one relay-only over TURN/TLS.
    // The UDP viewers take both codecs, as browsers do: each gets the codec its stream's
    // publisher sends.
    let mut cam_udp = Viewer::join_with(http, "cam", "cam-udp", true, true).await;
    let mut screen_udp = Viewer::join_with(http, "screen", "screen-udp", true, true).await;
    let mut cam_relayed = relayed_viewer(http, relay, &cert.cert_der, "cam", true).await;
    let mut screen_relayed = relayed_viewer(http, relay, &cert.cert_der, "screen", false).await;
    let (fc, fs, got_cr, got_sr) = tokio::join!(
        cam_udp.frames(30, MEDIA_LIMIT),
        screen_udp.frames(30, MEDIA_LIMIT),
        cam_relayed.pump(MEDIA_LIMIT, |p| p.frames.len() >= 30),
        screen_relayed.pump(MEDIA_LIMIT, |p| p.frames.len() >= 30),
    );
    assert!(fc.len() >= 30, "cam UDP viewer got {} frames", fc.len());
    assert!(fs.len() >= 30, "screen UDP viewer got {} frames", fs.len());
    assert!(
        got_cr,
        "cam relayed viewer got {}",
        cam_relayed.frames.len()
    );
    assert!(
        got_sr,
        "screen relayed viewer got {}",
        screen_relayed.frames.len()
    );
    // Each decodes its own stream's picture: H.264 at 320x240, VP8 at 352x288.
    assert_eq!(decoded_size(&fc), Some(H264_SIZE), "cam over UDP");
    assert_eq!(
        decoded_size(&cam_relayed.frames),
        Some(H264_SIZE),
        "cam relayed"
    );
    let vp8 = |f: &[(bool, Vec<u8>)]| f.iter().find_map(|(_, d)| vp8_keyframe_size(d));
    assert_eq!(vp8(&fs), Some(VP8_SIZE), "screen over UDP");
    assert_eq!(
        vp8(&screen_relayed.frames),
        Some(VP8_SIZE),
        "screen relayed"
    );
    let distinct: std::collections::HashSet<&Vec<u8>> = fc.iter().map(|(_, f)| f).collect();
    assert!(distinct.len() > 10, "the picture moves");
    assert!(cam_relayed.ice_connected && cam_relayed.dtls_connected);
    // The relayed viewers' media crossed the relay in-process.
    let io = gw.relay.io_stats();
    assert!(
        io.inprocess_from_media_packets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // The viewers' arrival reached the publisher as a keyframe request: the gateway sent
    // more, and the publisher received every one it sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent_after = loop {
        let plis = cam.plis() as u64;
        let sent = keyframe_requests(http).await;
        if sent > sent_before && plis >= sent {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "no PLI reached the H.264 publisher after its viewers joined: the gateway sent \
             {sent_before} before, {sent} now; the publisher received {plis}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "PLIs sent to the H.264 publisher: {sent_before} before its viewers joined, {sent_after} \
         after; it received {}",
        cam.plis()
    );
    let streams = request(http, "GET", "/api/v1/streams", &[], b"")
        .await
        .json();
    let listed = streams.to_string();
    assert!(
        !listed.contains(CAM_TOKEN) && !listed.contains(WHIP_TOKEN),
        "{listed}"
    );
    assert_eq!(streams["streams"][1]["source"], "whip", "{streams}");
    assert_eq!(streams["streams"][1]["live"], true, "{streams}");
    let (_, _, slots) = gw.app.signaling().unwrap().registry().counts();
    assert_eq!(
        slots, 4,
        "four viewers hold slots; the publishers hold none"
    );

    // DELETE ends the publisher: no live source, until the next one.
    let r = request(http, "DELETE", &location, &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        geti_offer(http, "cam").await,
        (400, json!({ "detail": "No active pipeline." }))
    );
    cam.line("CLOSED").await;
    request(http, "DELETE", &location, &[], b"")
        .await
        .expect_error(404, "unknown_session");
    let _gap = cam_udp.frames(usize::MAX, Duration::from_millis(500)).await;
    let again = Publisher::start(http, "/whip/cam", CAM_TOKEN, "h264", "320x240", 150);
    assert_eq!(again.line("STATUS").await.trim(), "STATUS 201");
    let started = Instant::now();
    let fc = cam_udp.frames(20, MEDIA_LIMIT).await;
    assert!(
        fc.len() >= 20,
        "the cam viewer that stayed got {} frames from the new publisher",
        fc.len()
    );
    assert_eq!(decoded_size(&fc), Some(H264_SIZE));
    println!(
        "video again {:?} after the new publisher",
        started.elapsed()
    );
    drop((wrong, second, screen, again));
}

/// A publisher's offer built with str0m: sendonly video (H.264) and, when `audio`, sendonly
/// Opus audio; with no video at all when `video` is false.
fn publisher_offer(video: bool, audio: bool) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(Instant::now());
    let local: SocketAddr = ([127, 0, 0, 1], 9).into();
    rtc.add_local_candidate(str0m::Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    if video {
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    }
    if audio {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// The media section of `sdp` that starts with `m=<kind>`.
fn section<'a>(sdp: &'a str, kind: &str) -> &'a str {
    let start = sdp
        .find(&format!("m={kind}"))
        .unwrap_or_else(|| panic!("no m={kind} in {sdp}"));
    let rest = &sdp[start..];
    let end = rest[2..].find("\nm=").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_stream_takes_a_whip_publisher_with_audio_and_whep_style_patch() {
    let media = free_udp_range();
    let gw = gateway_tests::start_gateway(
        SECRET,
        &[
            "--webrtc-bind-ip",
            "127.0.0.1",
            "--webrtc-port-range",
            &media,
            "--media-source",
            "whip",
            "--whip-token",
            WHIP_TOKEN,
        ],
    )
    .await;
    let http = gw.http_addr;
    let bearer = format!("Bearer {WHIP_TOKEN}");
    let headers = [
        ("Content-Type", "application/sdp"),
        ("Authorization", bearer.as_str()),
    ];

    // No video to receive: refused, and the stream stays free.
    let audio_only = publisher_offer(false, true);
    request(http, "POST", "/whip", &headers, audio_only.as_bytes())
        .await
        .expect_error(400, "unsupported_codec");

    // Video and audio: video received, audio answered recvonly (and dropped).
    let offer = publisher_offer(true, true);
    let r = request(http, "POST", "/whip", &headers, offer.as_bytes()).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let video = section(&r.body, "video");
    assert!(
        video.contains("a=recvonly") && video.contains("H264"),
        "{video}"
    );
    let audio = section(&r.body, "audio");
    assert!(
        audio.contains("a=recvonly") && audio.contains("opus"),
        "{audio}"
    );
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/whip/default/gws-"), "{location}");
    let etag = r.header("etag").expect("ETag").to_owned();
    assert!(!r.all("link").is_empty(), "ICE servers in Link headers");
    // The stream has a publisher (its offer is in; ICE has not connected yet).
    assert_eq!(
        geti_offer(http, "whatever").await.0,
        200,
        "a viewer may join while the publisher connects"
    );
    request(http, "POST", "/whip", &headers, offer.as_bytes())
        .await
        .expect_error(409, "stream_has_publisher");

    // PATCH as WHEP's: a trickled candidate (204), a stale ICE session (412).
    let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n";
    let patch = |if_match: &'static str| {
        let location = location.clone();
        async move {
            request(
                http,
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/trickle-ice-sdpfrag"),
                    ("If-Match", if_match),
                ],
                frag.as_bytes(),
            )
            .await
        }
    };
    assert_eq!(patch("*").await.status, 204);
    patch("\"stale\"")
        .await
        .expect_error(412, "ice_session_mismatch");
    let r = request(
        http,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/trickle-ice-sdpfrag"),
            ("If-Match", &etag),
        ],
        frag.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");

    // DELETE: the stream is free again, for a viewer as for the next publisher.
    assert_eq!(
        request(http, "DELETE", &location, &[], b"").await.status,
        200
    );
    assert_eq!(
        geti_offer(http, "whatever").await,
        (400, json!({ "detail": "No active pipeline." }))
    );
    let r = request(http, "POST", "/whip", &headers, offer.as_bytes()).await;
    assert_eq!(r.status, 201, "{r:?}");
}

/// `takeover=true`: a second authenticated publisher replaces the live one instead of the
/// 409. The first one's session ends (its resource is gone), the viewer keeps its session
/// and decodes the new publisher's picture (another size) from its keyframe on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_publisher_takes_over_a_stream_that_allows_it() {
    let media = free_udp_range();
    let cam = format!("cam=whip?token={CAM_TOKEN}&takeover=true");
    let gw = gateway_tests::start_gateway(
        SECRET,
        &[
            "--webrtc-bind-ip",
            "127.0.0.1",
            "--webrtc-advertise-ip",
            "127.0.0.1",
            "--webrtc-port-range",
            &media,
            "--stream",
            &cam,
        ],
    )
    .await;
    let http = gw.http_addr;
    let first = Publisher::start(http, "/whip/cam", CAM_TOKEN, "h264", "320x240", 150);
    assert_eq!(first.line("STATUS").await.trim(), "STATUS 201");
    let first_location = first.line("LOCATION").await;
    let first_location = first_location.strip_prefix("LOCATION ").unwrap().to_owned();
    first.line("CONNECTED").await;
    wait_for("the cam stream delivers frames", || async move {
        let s = request(http, "GET", "/api/v1/streams", &[], b"")
            .await
            .json();
        s["streams"][1]["live"] == true
    })
    .await;
    let mut viewer = Viewer::join_with(http, "cam", "takeover-viewer", true, false).await;
    let before = viewer.frames(20, MEDIA_LIMIT).await;
    assert_eq!(
        decoded_size(&before),
        Some(H264_SIZE),
        "the first publisher"
    );

    // A wrong token still cannot take anything over.
    let wrong = Publisher::start(http, "/whip/cam", WHIP_TOKEN, "h264", "640x480", 150);
    assert!(wrong.line("STATUS").await.starts_with("STATUS 401"));

    let second = Publisher::start(http, "/whip/cam", CAM_TOKEN, "h264", "640x480", 150);
    assert_eq!(second.line("STATUS").await.trim(), "STATUS 201");
    second.line("CONNECTED").await;
    // The first publisher's session is over: its resource is gone.
    let mut gone = false;
    for _ in 0..100 {
        let r = request(http, "DELETE", &first_location, &[], b"").await;
        if r.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the replaced publisher's resource still exists");
    // The viewer, in the same session, gets the new picture.
    let deadline = Instant::now() + MEDIA_LIMIT;
    let mut size = None;
    while Instant::now() < deadline && size != Some((640, 480)) {
        let after = viewer.frames(20, Duration::from_secs(5)).await;
        size = decoded_size(&after);
    }
    assert_eq!(
        size,
        Some((640, 480)),
        "the viewer decodes the new publisher"
    );
    let s = request(http, "GET", "/api/v1/streams", &[], b"")
        .await
        .json();
    assert_eq!(s["streams"][1]["publisher"], true, "{s}");
    assert_eq!(s["streams"][1]["source"], "whip", "{s}");
    gw.shutdown(Duration::from_secs(2)).await;
}
