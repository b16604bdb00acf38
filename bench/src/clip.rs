//! The H.264 video every media server in the viewer parts gets: ffmpeg's `testsrc2`
//! pattern encoded once per run into a short clip, then streamed as RTP in real time
//! (`-re`, copied, looped) to the server under test. Encoding once keeps the encoder's CPU
//! off both the server's core and the load generator's, and gives the gateway and Janus the
//! very same packets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Frames per second of the clip.
pub const FPS: u32 = 30;
/// A keyframe every this many frames (0.5 s): a server without a GOP cache (Janus's RTP
/// mountpoints) makes a new viewer wait for the next keyframe, and the viewer parts judge
/// the first frame against 1 s.
pub const GOP_FRAMES: u32 = 15;
/// Length of the clip; it loops.
const SECONDS: u32 = 20;
/// RTP payload size limit ffmpeg packetizes to (as a browser's encoder: fits any path,
/// TURN/TLS ChannelData included).
const RTP_PAYLOAD: u32 = 1200;
/// RTP payload type of the stream (what Janus's mountpoint and the gateway expect).
pub const PAYLOAD_TYPE: u8 = 96;

/// The encoded clip.
pub struct Clip {
    path: PathBuf,
}

impl Clip {
    /// Encodes the clip into `dir` (a few seconds of CPU, once per run).
    pub fn encode(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("clip-1mbit.mkv");
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=640x480:rate={FPS}"))
            .args(["-t", &SECONDS.to_string(), "-an", "-pix_fmt", "yuv420p"])
            .args(["-c:v", "libx264", "-profile:v", "baseline"])
            .args(["-tune", "zerolatency", "-b:v", "1M", "-maxrate", "1M"])
            .args(["-bufsize", "1M", "-g", &GOP_FRAMES.to_string()])
            .args(["-keyint_min", &GOP_FRAMES.to_string(), "-sc_threshold", "0"])
            // SPS and PPS before every keyframe, inside the stream: a server that joins a
            // viewer at a keyframe needs them in band (the RTP muxer sends them only in its
            // SDP otherwise).
            .args(["-x264-params", "repeat-headers=1"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running ffmpeg (Debian's ffmpeg) to encode the test clip")?;
        if !status.success() {
            bail!("ffmpeg could not encode the test clip ({status})");
        }
        Ok(Self { path })
    }

    /// ffmpeg streaming the clip as H.264 RTP to `dest` in real time, looping, without
    /// re-encoding.
    pub fn stream_command(&self, dest: SocketAddr) -> Command {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(&self.path)
            // No explicit `h264_mp4toannexb`: the RTP muxer converts by itself, and the
            // explicit filter ends the stream at the first loop ("packet sent after an EOF").
            .args(["-an", "-c:v", "copy"])
            .args(["-payload_type", &PAYLOAD_TYPE.to_string()])
            .args(["-f", "rtp"])
            .arg(format!("rtp://{dest}?pkt_size={}", RTP_PAYLOAD + 12))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}
