//! RTP ingest and file sources end to end: ffmpeg sends RTP (H.264, VP8) or writes a file,
//! the gateway's media engine forwards the frames without re-encoding, and two str0m viewers
//! (browser role, like `media_loopback.rs`) check what arrives: a keyframe first, whole frames
//! that decode (H.264 with openh264, VP8 by ffmpeg), and per-viewer RTP sequence numbers with no
//! gap. Also: a late viewer of a sender with a 10 s keyframe interval starts from the GOP
//! cache, and a viewer connected across a mid-stream resolution change decodes both sizes.
//!
//! Needs `ffmpeg` (Debian package `ffmpeg`, with libx264 and libvpx; `tests/run` installs it).
//! Without it the tests fail, unless `GATEWAY_SKIP_FFMPEG_TESTS=1` says to skip them.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::media::file::{FileSource, FileSourceConfig};
use gateway::media::rtp::{vp8_frame_info, RtpSource};
use gateway::media::{MediaConfig, MediaEngine, MediaHandle, PortRange, VideoCodec, VideoSource};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use tokio::net::UdpSocket;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine(source: VideoSource) -> MediaHandle {
    MediaEngine::start(
        MediaConfig {
            bind_ip: LOOPBACK,
            ports: PortRange {
                min: 50000,
                max: 50050,
            },
            advertise_ip: Some(LOOPBACK),
            ..MediaConfig::default()
        },
        source,
    )
    .expect("engine starts")
}

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("GATEWAY_SKIP_FFMPEG_TESTS").is_some(),
            "ffmpeg is not installed (apt-get install ffmpeg; tests/run does it), or set \
             GATEWAY_SKIP_FFMPEG_TESTS=1 to skip these tests"
        );
        eprintln!("ffmpeg not installed: skipped (GATEWAY_SKIP_FFMPEG_TESTS)");
    }
    ok
}

/// A running ffmpeg, killed (by PID) and reaped on drop.
struct Ffmpeg(Child);

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ffmpeg encoding its test pattern and sending it as RTP to `dest`, for at most 60 s.
fn ffmpeg_rtp(codec: VideoCodec, dest: SocketAddr) -> Ffmpeg {
    ffmpeg_rtp_with(codec, dest, &RtpRun::default())
}

/// How an ffmpeg RTP sender runs (beyond the codec and destination).
struct RtpRun {
    /// Picture size (`WxH`).
    size: &'static str,
    /// Keyframe interval in frames (scene-cut keyframes are turned off).
    gop: u32,
    /// Seconds of video sent.
    seconds: u32,
    /// Local UDP port to send from (0: any), so a second run is the same sender.
    local_port: u16,
    /// RTP SSRC and first sequence number (`None`: ffmpeg's random ones).
    ssrc_seq: Option<(u32, u16)>,
}

impl Default for RtpRun {
    fn default() -> Self {
        RtpRun {
            size: "320x240",
            gop: 30,
            seconds: 60,
            local_port: 0,
            ssrc_seq: None,
        }
    }
}

fn ffmpeg_rtp_with(codec: VideoCodec, dest: SocketAddr, run: &RtpRun) -> Ffmpeg {
    let mut cmd = Command::new("ffmpeg");
    let gop = run.gop.to_string();
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size={}:rate=30", run.size),
            "-t",
            &run.seconds.to_string(),
        ])
        .args(["-an", "-pix_fmt", "yuv420p"]);
    match codec {
        VideoCodec::H264 => cmd.args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-tune",
            "zerolatency",
            "-sc_threshold",
            "0",
            "-g",
            &gop,
        ]),
        VideoCodec::Vp8 => cmd.args([
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "500k",
            "-g",
            &gop,
        ]),
    };
    if let Some((ssrc, seq)) = run.ssrc_seq {
        cmd.args(["-ssrc", &ssrc.to_string(), "-seq", &seq.to_string()]);
    }
    let url = match run.local_port {
        0 => format!("rtp://{dest}"),
        port => format!("rtp://{dest}?localport={port}"),
    };
    cmd.args(["-f", "rtp", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // the SDP ffmpeg prints
        .stderr(Stdio::inherit());
    Ffmpeg(cmd.spawn().expect("ffmpeg starts"))
}

/// One received frame as a viewer sees it.
#[derive(Debug)]
struct Got {
    keyframe: bool,
    data: Vec<u8>,
    first_seq: u64,
    last_seq: u64,
    contiguous: bool,
    time: u64,
}

/// A str0m client in the browser role: offers one recvonly video m-line of `codec`, applies
/// the engine's answer, then receives `want` frames (or gives up at `limit`).
async fn viewer(
    handle: MediaHandle,
    id: &str,
    codec: VideoCodec,
    want: usize,
    limit: Duration,
) -> Vec<Got> {
    let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let local = sock.local_addr().unwrap();
    let h264 = codec == VideoCodec::H264;
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(h264)
        .enable_vp8(!h264)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), id.to_owned())
        .await
        .expect("offer accepted");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("answer applies");

    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    while got.len() < want && Instant::now() < deadline {
        let timeout = loop {
            match rtc.poll_output().expect("client poll") {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = sock.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::MediaData(d)) => got.push(Got {
                    keyframe: d.is_keyframe(),
                    data: d.data.to_vec(),
                    first_seq: **d.seq_range.start(),
                    last_seq: **d.seq_range.end(),
                    contiguous: d.contiguous,
                    time: d.time.numer(),
                }),
                Output::Event(_) => {}
            }
        };
        let wait = timeout.min(deadline);
        let received = tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r.expect("client recv");
                Some((source, buf[..n].to_vec()))
            }
            _ = tokio::time::sleep_until(wait.into()) => None,
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

/// Checks common to every viewer: enough frames, keyframe first, gap-free RTP sequence numbers
/// and increasing timestamps.
fn check_stream(name: &str, frames: &[Got], want: usize) {
    assert!(
        frames.len() >= want,
        "{name}: expected {want} frames, got {}",
        frames.len()
    );
    assert!(frames[0].keyframe, "{name}: the first frame is a keyframe");
    for (i, w) in frames.windows(2).enumerate() {
        assert_eq!(
            w[1].first_seq,
            w[0].last_seq + 1,
            "{name}: RTP sequence numbers continue from frame {i} to {}",
            i + 1
        );
        assert!(w[1].contiguous, "{name}: frame {} is contiguous", i + 1);
        assert!(
            w[1].time > w[0].time,
            "{name}: RTP time increases at frame {}",
            i + 1
        );
    }
}

/// Decode H.264 access units with openh264: every frame must decode, pictures 320×240.
fn check_h264_decodes(name: &str, frames: &[Got]) {
    for (i, size) in h264_picture_sizes(name, frames).into_iter().enumerate() {
        assert_eq!(size, (320, 240), "{name}: picture {i} size");
    }
}

/// Decode H.264 access units with openh264: every frame must decode (all but two give a
/// picture); returns the size of each picture.
fn h264_picture_sizes(name: &str, frames: &[Got]) -> Vec<(usize, usize)> {
    use openh264::formats::YUVSource;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    let mut sizes = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match decoder.decode(&f.data) {
            Ok(Some(pic)) => sizes.push(pic.dimensions()),
            Ok(None) => {}
            Err(e) => panic!("{name}: frame {i} does not decode: {e}"),
        }
    }
    assert!(
        sizes.len() + 2 >= frames.len(),
        "{name}: only {} of {} frames gave a picture",
        sizes.len(),
        frames.len()
    );
    sizes
}

/// VP8: valid frame headers (keyframes 320×240), then a real decode by ffmpeg from an IVF.
fn check_vp8_decodes(name: &str, frames: &[Got], dir: &Path) {
    for (i, f) in frames.iter().enumerate() {
        let key = vp8_frame_info(&f.data)
            .unwrap_or_else(|| panic!("{name}: frame {i} has no valid VP8 header"));
        assert_eq!(key, f.keyframe, "{name}: frame {i} keyframe flag");
        if key {
            let w = u16::from_le_bytes([f.data[6], f.data[7]]) & 0x3fff;
            let h = u16::from_le_bytes([f.data[8], f.data[9]]) & 0x3fff;
            assert_eq!((w, h), (320, 240), "{name}: keyframe {i} size");
        }
    }
    let ivf = dir.join(format!("{name}.ivf"));
    std::fs::write(&ivf, ivf_file(frames)).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(&ivf)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{name}: ffmpeg cannot decode the received VP8: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(decoded, frames.len(), "{name}: ffmpeg decoded every frame");
}

fn ivf_file(frames: &[Got]) -> Vec<u8> {
    let mut b = b"DKIF".to_vec();
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"VP80");
    b.extend_from_slice(&320u16.to_le_bytes());
    b.extend_from_slice(&240u16.to_le_bytes());
    b.extend_from_slice(&30u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&(i as u64).to_le_bytes());
        b.extend_from_slice(&f.data);
    }
    b
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "gateway-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// ffmpeg → RTP → engine → two viewers, for `codec`.
async fn rtp_to_two_viewers(codec: VideoCodec) {
    if !have_ffmpeg() {
        return;
    }
    let source = VideoSource::new(codec);
    let rtp = RtpSource::bind((LOOPBACK, 0).into(), source.clone()).expect("RTP source binds");
    let handle = engine(source);

    // Garbage first: the source must shrug it off.
    let junk = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
    for p in [
        &b""[..],
        b"\x80",
        b"hello world, not RTP",
        &[0x80; 40],
        &[0xff; 1500],
    ] {
        junk.send_to(p, rtp.local_addr()).unwrap();
    }

    let _ffmpeg = ffmpeg_rtp(codec, rtp.local_addr());
    let want = 60; // two seconds: at least one keyframe interval after joining
    let limit = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        viewer(handle.clone(), "viewer-a", codec, want, limit),
        viewer(handle.clone(), "viewer-b", codec, want, limit),
    );
    let stats = rtp.stats();
    let counters = format!(
        "packets {} ignored {} lost {} frames {} keyframes {} dropped {}",
        stats.packets.load(std::sync::atomic::Ordering::Relaxed),
        stats.ignored.load(std::sync::atomic::Ordering::Relaxed),
        stats.lost.load(std::sync::atomic::Ordering::Relaxed),
        stats.frames.load(std::sync::atomic::Ordering::Relaxed),
        stats.keyframes.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .dropped_frames
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!("{codec:?} RTP source: {counters}");
    assert!(
        stats.ignored.load(std::sync::atomic::Ordering::Relaxed) >= 4,
        "garbage was counted as ignored: {counters}"
    );
    // A forger sending while ffmpeg streams is not taken: the first sender keeps the source.
    let forger = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
    for _ in 0..10 {
        forger.send_to(&[0x80; 200], rtp.local_addr()).unwrap();
    }
    let other = || {
        stats
            .other_senders
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while other() < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        other() >= 10,
        "the forger's datagrams were dropped: {}",
        other()
    );
    let dir = TempDir::new("rtp");
    for (name, frames) in [("viewer-a", &a), ("viewer-b", &b)] {
        check_stream(name, frames, want);
        match codec {
            VideoCodec::H264 => check_h264_decodes(name, frames),
            VideoCodec::Vp8 => check_vp8_decodes(name, frames, &dir.0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_rtp_from_ffmpeg_reaches_two_viewers() {
    rtp_to_two_viewers(VideoCodec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_rtp_from_ffmpeg_reaches_two_viewers() {
    rtp_to_two_viewers(VideoCodec::Vp8).await;
}

/// Encode 2 s of ffmpeg's test pattern into `path` (30 fps, keyframe every 30 frames).
fn ffmpeg_file(codec: VideoCodec, path: &Path) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "2",
        ])
        .args(["-an", "-pix_fmt", "yuv420p", "-g", "30"]);
    match codec {
        VideoCodec::H264 => cmd.args(["-c:v", "libx264", "-profile:v", "baseline", "-f", "h264"]),
        VideoCodec::Vp8 => cmd.args(["-c:v", "libvpx", "-deadline", "realtime", "-f", "ivf"]),
    };
    let status = cmd.arg(path).status().expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg wrote {}", path.display());
}

/// A 2-second file looped: 75 frames cross the loop boundary with no gap.
async fn file_to_two_viewers(codec: VideoCodec, name: &str) {
    if !have_ffmpeg() {
        return;
    }
    let dir = TempDir::new("file");
    let path = dir.0.join(name);
    ffmpeg_file(codec, &path);
    let (source, _file) =
        FileSource::spawn(&path, &FileSourceConfig::default()).expect("file source starts");
    assert_eq!(source.codec(), codec);
    let handle = engine(source);
    let want = 75;
    let limit = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        viewer(handle.clone(), "file-a", codec, want, limit),
        viewer(handle.clone(), "file-b", codec, want, limit),
    );
    for (name, frames) in [("file-a", &a), ("file-b", &b)] {
        check_stream(name, frames, want);
        match codec {
            VideoCodec::H264 => check_h264_decodes(name, frames),
            VideoCodec::Vp8 => check_vp8_decodes(name, frames, &dir.0),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_file_loops_to_two_viewers() {
    file_to_two_viewers(VideoCodec::H264, "clip.h264").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_ivf_file_loops_to_two_viewers() {
    file_to_two_viewers(VideoCodec::Vp8, "clip.ivf").await;
}

#[test]
fn bad_files_are_refused_at_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = TempDir::new("bad");
        let cfg = FileSourceConfig::default();
        assert!(FileSource::spawn(&dir.0.join("missing.ivf"), &cfg).is_err());
        let junk = dir.0.join("junk.bin");
        std::fs::write(&junk, b"not a video").unwrap();
        assert!(FileSource::spawn(&junk, &cfg).is_err());
        let empty = dir.0.join("empty.h264");
        std::fs::write(&empty, b"").unwrap();
        assert!(FileSource::spawn(&empty, &cfg).is_err());
    });
}

/// Polls `done` every 20 ms for at most `limit`; true once it holds.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// A sender whose keyframes come every 10 s: a viewer joining 1.5 s after the only keyframe
/// so far starts at once with the cached GOP (keyframe first, then the cached frames squeezed
/// 1 ms apart), then the live frames, with no frame missing or doubled at the seam, all
/// decoding. Without the cache it would get nothing for 8.5 s.
async fn gop_cache_serves_a_late_viewer(codec: VideoCodec) {
    if !have_ffmpeg() {
        return;
    }
    let source = VideoSource::with_gop_cache(codec);
    let rtp = RtpSource::bind((LOOPBACK, 0).into(), source.clone()).expect("RTP source binds");
    let handle = engine(source.clone());
    let _ffmpeg = ffmpeg_rtp_with(
        codec,
        rtp.local_addr(),
        &RtpRun {
            gop: 300,
            seconds: 20,
            ..RtpRun::default()
        },
    );
    let stats = rtp.stats();
    assert!(
        wait_until(Duration::from_secs(20), || counter(&stats.frames) >= 45).await,
        "the sender's first 45 frames arrive"
    );
    let cached = source.gop().len();
    assert!(cached >= 45, "the GOP so far is cached: {cached} frames");
    let want = cached + 30;
    let frames = viewer(handle.clone(), "late", codec, want, Duration::from_secs(6)).await;
    assert_eq!(
        counter(&stats.keyframes),
        1,
        "the sender made no second keyframe while the viewer joined"
    );
    let name = format!("{codec:?} late viewer");
    check_stream(&name, &frames, want);
    // RTP time steps: 1 ms (90) inside the cached burst, then 1/30 s (3000) once live; a
    // frame missing at the seam would show as 6000, a frame twice as 0 (check_stream).
    let steps: Vec<u64> = frames.windows(2).map(|w| w[1].time - w[0].time).collect();
    let burst = steps.iter().take_while(|&&s| s == 90).count();
    assert!(
        burst + 1 >= cached,
        "{name}: the cached GOP came as a burst: steps {steps:?}"
    );
    assert!(
        steps[burst..].iter().all(|&s| s == 3000),
        "{name}: live frames follow the burst without a gap: steps {steps:?}"
    );
    let dir = TempDir::new("gop");
    match codec {
        VideoCodec::H264 => check_h264_decodes(&name, &frames),
        VideoCodec::Vp8 => check_vp8_decodes("late", &frames, &dir.0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_gop_cache_serves_a_late_viewer() {
    gop_cache_serves_a_late_viewer(VideoCodec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_gop_cache_serves_a_late_viewer() {
    gop_cache_serves_a_late_viewer(VideoCodec::Vp8).await;
}

/// The sender switches from 320×240 to 640×480 mid-stream (same address, SSRC and payload
/// type; new SPS/PPS with the next IDR): a viewer connected before the change decodes every
/// frame, first of the old size, then of the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_resolution_change_reaches_a_connected_viewer() {
    if !have_ffmpeg() {
        return;
    }
    let codec = VideoCodec::H264;
    let source = VideoSource::with_gop_cache(codec);
    let rtp = RtpSource::bind((LOOPBACK, 0).into(), source.clone()).expect("RTP source binds");
    let handle = engine(source);
    let local_port = {
        let probe = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let run = |size, seq, seconds| RtpRun {
        size,
        gop: 30,
        seconds,
        local_port,
        ssrc_seq: Some((0x5eed, seq)),
    };
    let mut small = ffmpeg_rtp_with(codec, rtp.local_addr(), &run("320x240", 0, 3));
    let stats = rtp.stats();
    assert!(
        wait_until(Duration::from_secs(20), || counter(&stats.frames) >= 10).await,
        "the first sender's frames arrive"
    );
    // The viewer joins during the small run and stays through the change.
    let want = 140;
    let watching = tokio::spawn(viewer(
        handle.clone(),
        "resize",
        codec,
        want,
        Duration::from_secs(30),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while small.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(small.0.try_wait().unwrap().is_some(), "the small run ends");
    let _large = ffmpeg_rtp_with(codec, rtp.local_addr(), &run("640x480", 20_000, 4));
    let frames = watching.await.unwrap();
    let name = "resized viewer";
    check_stream(name, &frames, want);
    let sizes = h264_picture_sizes(name, &frames);
    let small_n = sizes.iter().take_while(|&&s| s == (320, 240)).count();
    assert!(small_n >= 10, "{name}: starts at 320×240: {sizes:?}");
    assert!(
        sizes.len() - small_n >= 30 && sizes[small_n..].iter().all(|&s| s == (640, 480)),
        "{name}: then 640×480 only: {sizes:?}"
    );
    assert_eq!(counter(&stats.other_senders), 0, "both runs are one sender");
}
