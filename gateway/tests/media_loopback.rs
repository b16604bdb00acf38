//! Media engine end to end on loopback: a str0m client in the browser role (full ICE, offerer,
//! H.264 or VP8 receiver) against the engine (ICE-lite) sending the shared test pattern.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::media::testsrc::{TestSource, TestSourceConfig};
use gateway::media::{
    ChannelSink, EndReason, MediaConfig, MediaEngine, MediaError, MediaHandle, PortRange,
    StreamSet, VideoCodec, VideoFeeds, VideoSource,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const RANGE: PortRange = PortRange {
    min: 50000,
    max: 50050,
};

fn config(advertise_ip: Option<IpAddr>) -> MediaConfig {
    MediaConfig {
        bind_ip: LOOPBACK,
        ports: RANGE,
        advertise_ip,
        ..MediaConfig::default()
    }
}

/// Small pattern so the unoptimised (debug) encoder keeps up on a 2-core machine.
fn small_testsrc(feeds: impl Into<VideoFeeds>) -> TestSource {
    TestSource::spawn(
        TestSourceConfig {
            width: 320,
            height: 240,
            fps: 30,
            ..TestSourceConfig::default()
        },
        feeds,
    )
    .expect("test pattern starts")
}

/// A browser-like client: offers one recvonly video m-line with the given codecs.
fn client(local: SocketAddr, h264: bool) -> (Rtc, str0m::change::SdpOffer, SdpPendingOffer) {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(h264)
        .enable_vp8(!h264)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    (rtc, offer, pending)
}

/// `(ip, port)` of every host candidate in an SDP.
fn host_candidates(sdp: &str) -> Vec<(IpAddr, u16)> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter(|l| l.contains(" typ host"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            Some((f.get(4)?.parse().ok()?, f.get(5)?.parse().ok()?))
        })
        .collect()
}

/// How the client reaches the engine.
enum Path {
    Udp(UdpSocket),
    /// In-process: client → `MediaHandle::inject`, engine → `ChannelSink` → client.
    InProcess {
        handle: MediaHandle,
        from_engine: mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>,
    },
}

/// One received frame: keyframe flag, data, codec.
type Got = (bool, Vec<u8>, Codec);

/// Run the client until `frames` frames arrived or `limit` passed. Returns the frames.
async fn receive_frames(
    rtc: &mut Rtc,
    path: &mut Path,
    local: SocketAddr,
    frames: usize,
    limit: Duration,
) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    while got.len() < frames && Instant::now() < deadline {
        let timeout = loop {
            match rtc.poll_output().expect("client poll") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => match path {
                    Path::Udp(sock) => {
                        let _ = sock.send_to(&t.contents, t.destination).await;
                    }
                    Path::InProcess { handle, .. } => {
                        handle.inject(t.source, t.destination, &t.contents);
                    }
                },
                Output::Event(Event::MediaData(d)) => {
                    got.push((d.is_keyframe(), d.data.to_vec(), d.params.spec().codec))
                }
                Output::Event(_) => {}
            }
        };
        let wait = timeout.min(deadline);
        let received = match path {
            Path::Udp(sock) => {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let (n, source) = r.expect("client recv");
                        Some((source, buf[..n].to_vec()))
                    }
                    _ = tokio::time::sleep_until(wait.into()) => None,
                }
            }
            Path::InProcess { from_engine, .. } => {
                tokio::select! {
                    r = from_engine.recv() => r.map(|(source, _dest, data)| (source, data)),
                    _ = tokio::time::sleep_until(wait.into()) => None,
                }
            }
        };
        let now = Instant::now();
        match received {
            Some((source, data)) => {
                let Ok(contents) = data.as_slice().try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    },
                );
                rtc.handle_input(input).expect("client input");
            }
            None => rtc
                .handle_input(Input::Timeout(now))
                .expect("client timeout"),
        }
    }
    got
}

/// Decode received access units with openh264; returns the size of the first decoded picture.
fn decode_any(frames: &[Got]) -> Option<(usize, usize)> {
    use openh264::formats::YUVSource;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    for (_, au, _) in frames {
        if let Ok(Some(pic)) = decoder.decode(au) {
            return Some(pic.dimensions());
        }
    }
    None
}

#[tokio::test]
async fn browser_client_receives_and_decodes_h264_over_udp() {
    let source = VideoSource::new(VideoCodec::H264);
    let _pattern = small_testsrc(source.clone());
    let handle = MediaEngine::start(config(Some(LOOPBACK)), source).expect("engine starts");

    let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let (mut rtc, offer, pending) = client(local, true);
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), "viewer-1".into())
        .await
        .expect("offer accepted");

    // The host candidate carries the advertised IP and a bound port inside the range.
    let cands = host_candidates(&answer);
    assert_eq!(
        cands.len(),
        1,
        "one host candidate per media socket: {answer}"
    );
    let (ip, port) = cands[0];
    assert_eq!(ip, LOOPBACK);
    assert!((RANGE.min..=RANGE.max).contains(&port));
    assert_eq!(handle.local_addrs(), &[SocketAddr::new(LOOPBACK, port)]);
    assert!(answer.contains("a=ice-lite"), "engine answers as ICE-lite");

    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("answer applies");

    let mut path = Path::Udp(sock);
    let frames = receive_frames(&mut rtc, &mut path, local, 10, Duration::from_secs(10)).await;
    assert!(
        frames.len() >= 10,
        "expected >= 10 H.264 frames in 10 s, got {}",
        frames.len()
    );
    assert!(frames[0].0, "the first frame a viewer gets is a keyframe");
    assert_eq!(decode_any(&frames), Some((320, 240)), "bitstream decodes");

    // Ending the session is reported (so TURN credentials can be revoked).
    let mut ended = handle.take_ended().expect("first taker");
    handle.close("viewer-1").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("ended in time")
        .unwrap();
    assert_eq!(e.session_id, "viewer-1");
    assert_eq!(e.reason, EndReason::Closed);
    assert!(matches!(
        handle.close("viewer-1").await,
        Err(MediaError::UnknownSession(_))
    ));
}

#[tokio::test]
async fn in_process_path_carries_a_whole_session() {
    let source = VideoSource::new(VideoCodec::H264);
    let _pattern = small_testsrc(source.clone());
    let handle = MediaEngine::start(config(None), source).expect("engine starts");

    // The client's "address" never exists as a socket: every datagram goes through the hook.
    let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (tx, from_engine) = mpsc::channel(1024);
    let sink = ChannelSink {
        addrs: HashSet::from([local]),
        tx,
    };
    handle
        .set_in_process_sink(Some(Arc::new(sink)))
        .await
        .unwrap();

    let (mut rtc, offer, pending) = client(local, true);
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), "relayed".into())
        .await
        .unwrap();
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let mut path = Path::InProcess {
        handle: handle.clone(),
        from_engine,
    };
    let frames = receive_frames(&mut rtc, &mut path, local, 5, Duration::from_secs(10)).await;
    assert!(frames.len() >= 5, "got {} frames in-process", frames.len());
}

#[tokio::test]
async fn answer_advertises_configured_ip() {
    // 203.0.113.0/24 is a documentation network: only written into SDP, never contacted.
    let advertised: IpAddr = "203.0.113.7".parse().unwrap();
    let handle = MediaEngine::start(config(Some(advertised)), VideoSource::new(VideoCodec::H264))
        .expect("engine starts");
    let (_rtc, offer, _) = client("127.0.0.1:40000".parse().unwrap(), true);
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), "s".into())
        .await
        .unwrap();
    let cands = host_candidates(&answer);
    assert_eq!(cands.len(), 1, "{answer}");
    assert_eq!(cands[0].0, advertised);
    assert!((RANGE.min..=RANGE.max).contains(&cands[0].1));
    assert_eq!(
        handle.local_addrs()[0].ip(),
        LOOPBACK,
        "bound locally, advertised publicly"
    );
    assert_eq!(
        handle.candidate_addrs()[0],
        SocketAddr::new(advertised, cands[0].1)
    );
    assert!(
        !answer.contains("127.0.0.1"),
        "no local address leaks into the answer"
    );
}

#[tokio::test]
async fn offers_are_classified() {
    let handle = MediaEngine::start(
        MediaConfig {
            connect_timeout: Duration::from_millis(300),
            ..config(None)
        },
        VideoSource::new(VideoCodec::H264),
    )
    .unwrap();
    let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();

    let err = handle.accept_offer("hello", "a".into()).await.unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdp(_)), "{err:?}");
    assert_eq!(err.code(), "malformed_sdp");

    let mut audio = RtcConfig::new().build(Instant::now());
    audio.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = audio.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _) = api.apply().unwrap();
    let err = handle
        .accept_offer(&offer.to_sdp_string(), "b".into())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::NoVideo), "{err:?}");

    let (_vp8, offer, _) = client(local, false);
    let err = handle
        .accept_offer(&offer.to_sdp_string(), "c".into())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::NoSupportedCodec(_)), "{err:?}");
    assert!(err.is_client_error());
    let msg = err.to_string();
    assert!(
        msg.contains("this stream sends H264") && msg.contains("the offer has VP8"),
        "the error names both sides: {msg}"
    );

    // A good offer, then the same id again.
    let mut ended = handle.take_ended().expect("first taker");
    let (_h264, offer, _) = client(local, true);
    let sdp = offer.to_sdp_string();
    handle.accept_offer(&sdp, "d".into()).await.unwrap();
    let err = handle.accept_offer(&sdp, "d".into()).await.unwrap_err();
    assert!(matches!(err, MediaError::DuplicateSession(_)), "{err:?}");

    // Trickle: a good candidate, an mDNS one (ignored), garbage, unknown session.
    let good = "candidate:1 1 udp 2113929471 127.0.0.1 40002 typ host";
    handle.add_remote_candidate("d", good).await.unwrap();
    handle
        .add_remote_candidate(
            "d",
            "a=candidate:2 1 udp 2113929471 abc.local 40003 typ host",
        )
        .await
        .unwrap();
    handle.add_remote_candidate("d", "").await.unwrap();
    assert!(matches!(
        handle.add_remote_candidate("d", "candidate:nonsense").await,
        Err(MediaError::BadCandidate(_))
    ));
    assert!(matches!(
        handle.add_remote_candidate("zz", good).await,
        Err(MediaError::UnknownSession(_))
    ));

    // Nobody connects: the session ends by the connect timeout.
    let e = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("ended in time")
        .unwrap();
    assert_eq!(
        (e.session_id.as_str(), e.reason),
        ("d", EndReason::ConnectTimeout)
    );
}

#[tokio::test]
async fn unspecified_bind_needs_advertise_ip() {
    let cfg = MediaConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..config(None)
    };
    let err = MediaEngine::start(cfg, VideoSource::new(VideoCodec::H264))
        .err()
        .expect("refused");
    assert!(matches!(err, MediaError::Config(_)), "{err:?}");
}

#[test]
fn injected_datagrams_to_unknown_addresses_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let handle = MediaEngine::start(config(None), VideoSource::new(VideoCodec::H264)).unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(!handle.inject(peer, other, b"x"));
        assert!(handle.inject(peer, handle.local_addrs()[0], b"garbage is dropped quietly"));
    });
}

/// VP8: valid frame headers (keyframes `width`×`height`), then a real decode by ffmpeg.
#[cfg(feature = "vp8")]
fn check_vp8_decodes(frames: &[Got], width: u16, height: u16) {
    let mut ivf = b"DKIF".to_vec();
    ivf.extend_from_slice(&0u16.to_le_bytes());
    ivf.extend_from_slice(&32u16.to_le_bytes());
    ivf.extend_from_slice(b"VP80");
    ivf.extend_from_slice(&width.to_le_bytes());
    ivf.extend_from_slice(&height.to_le_bytes());
    ivf.extend_from_slice(&30u32.to_le_bytes());
    ivf.extend_from_slice(&1u32.to_le_bytes());
    ivf.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    ivf.extend_from_slice(&0u32.to_le_bytes());
    for (i, (key, data, _)) in frames.iter().enumerate() {
        assert!(data.len() >= 3, "frame {i} too short");
        assert_eq!(
            data[0] & 1 == 0,
            *key,
            "frame {i}: keyframe flag and bitstream"
        );
        if *key {
            assert_eq!(data[3..6], [0x9d, 0x01, 0x2a], "frame {i}: VP8 start code");
            let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
            let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
            assert_eq!((w, h), (width, height), "keyframe {i} size");
        }
        ivf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        ivf.extend_from_slice(&(i as u64).to_le_bytes());
        ivf.extend_from_slice(data);
    }
    let path =
        std::env::temp_dir().join(format!("gateway-loopback-vp8-{}.ivf", std::process::id()));
    std::fs::write(&path, ivf).unwrap();
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(&path)
        .args(["-f", "framemd5", "-"])
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.expect("ffmpeg runs (tests/run installs it)");
    assert!(
        out.status.success(),
        "ffmpeg cannot decode the received VP8: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(decoded, frames.len(), "ffmpeg decoded every frame");
}

/// Connects a client offering only `h264` (true) or only VP8 (false) over UDP.
#[cfg(feature = "vp8")]
async fn connect_client(handle: &MediaHandle, h264: bool, id: &str) -> (Rtc, Path, SocketAddr) {
    let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let (mut rtc, offer, pending) = client(local, h264);
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), id.into())
        .await
        .expect("offer accepted");
    let want = if h264 { "H264/90000" } else { "VP8/90000" };
    assert!(answer.contains(want), "{id}: answer has {want}: {answer}");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("answer applies");
    (rtc, Path::Udp(sock), local)
}

#[cfg(feature = "vp8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_and_h264_viewers_watch_the_same_testsrc_at_once() {
    let feeds = VideoFeeds::new(&[VideoCodec::H264, VideoCodec::Vp8]);
    let _pattern = small_testsrc(feeds.clone());
    let handle = MediaEngine::start(config(Some(LOOPBACK)), feeds.clone()).expect("engine starts");

    let (mut vp8_rtc, mut vp8_path, vp8_local) = connect_client(&handle, false, "firefox").await;
    let (mut h264_rtc, mut h264_path, h264_local) = connect_client(&handle, true, "safari").await;
    let limit = Duration::from_secs(15);
    let (vp8_frames, h264_frames) = tokio::join!(
        receive_frames(&mut vp8_rtc, &mut vp8_path, vp8_local, 20, limit),
        receive_frames(&mut h264_rtc, &mut h264_path, h264_local, 20, limit),
    );
    assert!(
        vp8_frames.len() >= 20,
        "VP8 viewer got {} frames",
        vp8_frames.len()
    );
    assert!(
        h264_frames.len() >= 20,
        "H.264 viewer got {} frames",
        h264_frames.len()
    );
    assert!(
        vp8_frames.iter().all(|f| f.2 == Codec::Vp8),
        "the VP8 offer receives VP8 only"
    );
    assert!(
        h264_frames.iter().all(|f| f.2 == Codec::H264),
        "the H.264 offer receives H.264 only"
    );
    assert!(vp8_frames[0].0, "the first VP8 frame is a keyframe");
    assert!(h264_frames[0].0, "the first H.264 frame is a keyframe");
    check_vp8_decodes(&vp8_frames, 320, 240);
    assert_eq!(decode_any(&h264_frames), Some((320, 240)), "H.264 decodes");
    // One viewer per feed: each codec's producer knows its own audience.
    assert_eq!(feeds.get(VideoCodec::Vp8).unwrap().viewers(), 1);
    assert_eq!(feeds.get(VideoCodec::H264).unwrap().viewers(), 1);

    // The H.264 viewer leaves: the VP8 viewer keeps getting frames, the H.264 feed has none.
    let mut ended = handle.take_ended().expect("first taker");
    handle.close("safari").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("ended in time")
        .unwrap();
    assert_eq!(feeds.get(VideoCodec::H264).unwrap().viewers(), 0);
    let more = receive_frames(&mut vp8_rtc, &mut vp8_path, vp8_local, 10, limit).await;
    assert!(
        more.len() >= 10,
        "VP8 viewer got {} more frames",
        more.len()
    );
}

#[tokio::test]
async fn vp8_offer_against_an_h264_rtp_source_is_refused_with_both_codecs_named() {
    // The real RTP ingest source of `MEDIA_SOURCE=rtp://...?codec=h264`: one H.264 feed.
    let (feeds, _guard) =
        gateway::media_source::start(&"rtp://127.0.0.1:0?codec=h264".parse().unwrap()).unwrap();
    assert_eq!(feeds.codecs(), [VideoCodec::H264]);
    let handle = MediaEngine::start(config(Some(LOOPBACK)), feeds).expect("engine starts");
    let (_rtc, offer, _) = client("127.0.0.1:40002".parse().unwrap(), false);
    let err = handle
        .accept_offer(&offer.to_sdp_string(), "vp8-only".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unsupported_codec");
    assert!(err.is_client_error(), "a 4xx");
    let msg = err.to_string();
    assert!(msg.contains("H264 packetization-mode=1"), "{msg}");
    assert!(msg.contains("the offer has VP8"), "{msg}");
    // A VP8 RTP source takes the same offer.
    let (feeds, _guard) =
        gateway::media_source::start(&"rtp://127.0.0.1:0?codec=vp8".parse().unwrap()).unwrap();
    let handle = MediaEngine::start(config(Some(LOOPBACK)), feeds).expect("engine starts");
    let (_rtc, offer, _) = client("127.0.0.1:40003".parse().unwrap(), false);
    handle
        .accept_offer(&offer.to_sdp_string(), "vp8-ok".into())
        .await
        .expect("a VP8 source serves a VP8 offer");
}

/// Connects an H.264 client over UDP to `stream`.
async fn connect_to_stream(
    handle: &MediaHandle,
    stream: &str,
    id: &str,
) -> (Rtc, Path, SocketAddr) {
    let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let (mut rtc, offer, pending) = client(local, true);
    let answer = handle
        .accept_offer_for(stream, &offer.to_sdp_string(), id.into())
        .await
        .expect("offer accepted");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("answer applies");
    (rtc, Path::Udp(sock), local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_named_stream_reaches_its_own_viewers_only() {
    // Two streams told apart by picture size: `default` 320x240, `cam1` 160x96.
    let default = VideoFeeds::new(&[VideoCodec::H264]);
    let cam1 = VideoFeeds::new(&[VideoCodec::H264]);
    let _big = small_testsrc(default.clone());
    let _small = TestSource::spawn(
        TestSourceConfig {
            width: 160,
            height: 96,
            fps: 30,
            ..TestSourceConfig::default()
        },
        cam1.clone(),
    )
    .expect("second pattern starts");
    let mut streams = StreamSet::from(default.clone());
    streams.insert("cam1", cam1.clone());
    let handle = MediaEngine::start(config(Some(LOOPBACK)), streams).expect("engine starts");

    let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let (_rtc, offer, _pending) = client(sock.local_addr().unwrap(), true);
    let err = handle
        .accept_offer_for("cam2", &offer.to_sdp_string(), "lost".into())
        .await
        .expect_err("no such stream");
    assert!(
        matches!(err, MediaError::UnknownStream(ref s) if s == "cam2"),
        "{err}"
    );

    let (mut a_rtc, mut a_path, a_local) = connect_to_stream(&handle, "default", "a").await;
    let (mut b_rtc, mut b_path, b_local) = connect_to_stream(&handle, "cam1", "b").await;
    let limit = Duration::from_secs(15);
    let (a_frames, b_frames) = tokio::join!(
        receive_frames(&mut a_rtc, &mut a_path, a_local, 15, limit),
        receive_frames(&mut b_rtc, &mut b_path, b_local, 15, limit),
    );
    assert!(
        a_frames.len() >= 15,
        "default viewer got {}",
        a_frames.len()
    );
    assert!(b_frames.len() >= 15, "cam1 viewer got {}", b_frames.len());
    assert_eq!(
        decode_any(&a_frames),
        Some((320, 240)),
        "default decodes as itself"
    );
    assert_eq!(
        decode_any(&b_frames),
        Some((160, 96)),
        "cam1 decodes as itself"
    );
    assert_eq!(default.viewers(), 1);
    assert_eq!(cam1.viewers(), 1);
}
