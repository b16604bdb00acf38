//! File source: a VP8 `.ivf` or an Annex-B H.264 elementary stream (`.h264`, `.264`), loaded
//! into memory, split into frames once, and played in a loop at its frame rate.
//!
//! Like RTP ingest, nothing is re-encoded: the frames are published as [`EncodedFrame`]s and
//! the engine packetizes them per viewer. A file cannot produce a keyframe on request: the
//! feed keeps the last keyframe and the frames after it ([`super::GopCache`]) and a viewer that
//! joins is sent those first, so it starts at once whatever the keyframe interval (within the
//! cache's bounds; beyond them it waits for the next keyframe). The playback starts (and every
//! loop restarts) at the first keyframe.
//!
//! Timing: IVF frames are timed by their timestamps (the header's time base; the header's
//! frame rate when timestamps do not increase); a raw H.264 stream has no timing, so it plays
//! at a configured rate (30 fps by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::rtp::vp8_frame_info;
use super::{EncodedFrame, MediaError, VideoCodec, VideoSource};

/// Largest file loaded (it is held in memory).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Largest single frame accepted.
pub const MAX_FRAME_BYTES: usize = super::rtp::MAX_FRAME_BYTES;

/// Settings of a file source.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// Frame rate of raw H.264 files (they carry no timing). 1..=120.
    pub h264_fps: u32,
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        FileSourceConfig { h264_fps: 30 }
    }
}

/// One frame of a clip.
#[derive(Debug, Clone)]
pub struct ClipFrame {
    /// The encoded frame (Annex-B access unit or VP8 frame).
    pub data: Arc<[u8]>,
    /// Decodable on its own.
    pub keyframe: bool,
    /// How long it is shown, in 90 kHz units (at least 1).
    pub duration: u32,
}

/// A parsed file: frames from the first keyframe on.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Codec of the frames.
    pub codec: VideoCodec,
    /// The frames, starting with a keyframe; never empty.
    pub frames: Vec<ClipFrame>,
}

impl Clip {
    /// Read and parse `path`; the format comes from the extension (`.ivf`, `.h264`/`.264`/
    /// `.avc`), or from the first bytes when the extension is unknown.
    pub fn load(path: &Path, config: &FileSourceConfig) -> Result<Clip, MediaError> {
        let err = |what: String| MediaError::Source(format!("{}: {what}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let clip = match ext.as_deref() {
            Some("ivf") => Clip::from_ivf(&bytes),
            Some("h264" | "264" | "avc" | "h26l") => Clip::from_h264(&bytes, config.h264_fps),
            _ if bytes.starts_with(b"DKIF") => Clip::from_ivf(&bytes),
            _ if bytes.starts_with(&[0, 0, 1]) || bytes.starts_with(&[0, 0, 0, 1]) => {
                Clip::from_h264(&bytes, config.h264_fps)
            }
            _ => Err(MediaError::Source(
                "unknown file type: want .ivf (VP8) or .h264 (Annex-B)".into(),
            )),
        };
        clip.map_err(|e| match e {
            MediaError::Source(m) => err(m),
            other => other,
        })
    }

    /// Parse an IVF file (VP8 only).
    pub fn from_ivf(bytes: &[u8]) -> Result<Clip, MediaError> {
        let bad = |m: &str| MediaError::Source(format!("IVF: {m}"));
        let Some(h) = bytes.first_chunk::<32>().filter(|h| h.starts_with(b"DKIF")) else {
            return Err(bad("no DKIF header"));
        };
        let fourcc = &h[8..12];
        if !fourcc.eq_ignore_ascii_case(b"VP80") {
            return Err(bad(&format!(
                "codec {:?} not supported, only VP80",
                String::from_utf8_lossy(fourcc)
            )));
        }
        let header_len = usize::from(u16::from_le_bytes([h[6], h[7]])).max(32);
        // Time base: timestamps count in units of `scale / rate` seconds.
        let rate = u64::from(u32::from_le_bytes([h[16], h[17], h[18], h[19]]));
        let scale = u64::from(u32::from_le_bytes([h[20], h[21], h[22], h[23]]));
        let fallback_step = if rate > 0 && scale > 0 {
            (90_000 * scale / rate).clamp(750, 90_000) // 1..120 fps
        } else {
            3_000
        };
        let mut raw = Vec::new(); // (data, pts)
        let mut rest = bytes.get(header_len..).unwrap_or_default();
        // Each frame: size (u32), pts (u64), then `size` bytes.
        while let Some((&[s0, s1, s2, s3, ref pts @ ..], tail)) = rest.split_first_chunk::<12>() {
            let size = u32::from_le_bytes([s0, s1, s2, s3]) as usize;
            let pts = u64::from_le_bytes(*pts);
            let Some((data, after)) = tail
                .split_at_checked(size)
                .filter(|_| size <= MAX_FRAME_BYTES)
            else {
                break; // truncated or corrupt tail: keep what came before
            };
            rest = after;
            if let Some(keyframe) = vp8_frame_info(data) {
                raw.push((data, keyframe, pts));
            }
        }
        let to_90k = |ticks: u64| -> Option<u32> {
            if rate == 0 || scale == 0 {
                return None;
            }
            let step = ticks.checked_mul(90_000)?.checked_mul(scale)? / rate;
            (1..=90_000).contains(&step).then_some(step as u32)
        };
        let mut frames = Vec::with_capacity(raw.len());
        for (n, &(data, keyframe, pts)) in raw.iter().enumerate() {
            let duration = raw
                .get(n + 1)
                .and_then(|next| to_90k(next.2.checked_sub(pts)?))
                .or_else(|| frames.last().map(|f: &ClipFrame| f.duration))
                .unwrap_or(fallback_step as u32);
            frames.push(ClipFrame {
                data: data.into(),
                keyframe,
                duration,
            });
        }
        Clip::new(VideoCodec::Vp8, frames)
    }

    /// Parse an Annex-B H.264 elementary stream, played at `fps`.
    pub fn from_h264(bytes: &[u8], fps: u32) -> Result<Clip, MediaError> {
        if !(1..=120).contains(&fps) {
            return Err(MediaError::Config(format!(
                "H.264 file fps {fps} not in 1..=120"
            )));
        }
        let duration = 90_000 / fps;
        let mut frames = Vec::new();
        let mut au: Vec<u8> = Vec::new();
        let (mut has_vcl, mut idr, mut sps, mut pps) = (false, false, false, false);
        let mut flush = |au: &mut Vec<u8>, idr: bool, sps: bool, pps: bool| {
            if !au.is_empty() && au.len() <= MAX_FRAME_BYTES {
                let mut data = std::mem::take(au);
                super::testsrc::mark_constrained_baseline(&mut data);
                frames.push(ClipFrame {
                    data: data.into(),
                    keyframe: idr && sps && pps,
                    duration,
                });
            }
            au.clear();
        };
        for nal in annex_b_nals(bytes) {
            let Some(&header) = nal.first() else { continue };
            let kind = header & 0x1f;
            let first_slice = matches!(kind, 1 | 5) && nal.get(1).is_some_and(|b| b & 0x80 != 0);
            let starts_au = matches!(kind, 6..=9 | 14..=18) || first_slice;
            if has_vcl && starts_au {
                flush(&mut au, idr, sps, pps);
                (has_vcl, idr, sps, pps) = (false, false, false, false);
            }
            match kind {
                1 => has_vcl = true,
                5 => (has_vcl, idr) = (true, true),
                7 => sps = true,
                8 => pps = true,
                _ => {}
            }
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(nal);
        }
        if has_vcl {
            flush(&mut au, idr, sps, pps);
        }
        Clip::new(VideoCodec::H264, frames)
    }

    fn new(codec: VideoCodec, mut frames: Vec<ClipFrame>) -> Result<Clip, MediaError> {
        let Some(first_key) = frames.iter().position(|f| f.keyframe) else {
            return Err(MediaError::Source(
                "no keyframe (H.264: IDR with SPS and PPS; VP8: key frame) in the file".into(),
            ));
        };
        frames.drain(..first_key);
        Ok(Clip { codec, frames })
    }

    /// Total duration of one loop in 90 kHz units.
    pub fn duration_90khz(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.duration)).sum()
    }
}

/// The NAL units (without start codes) of an Annex-B stream.
fn annex_b_nals(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new(); // (start code index, payload index)
    let mut i = 0;
    while let Some(window) = bytes.get(i..i + 3) {
        if window == [0, 0, 1] {
            let sc = match i.checked_sub(1) {
                Some(before) if bytes.get(before) == Some(&0) => before,
                _ => i,
            };
            starts.push((sc, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| s.0)
        .chain(std::iter::once(bytes.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter_map(move |((_, from), to)| {
            let nal = bytes.get(from..to.max(from))?;
            // Trailing zero bytes belong to the next start code or are padding.
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            nal.get(..end)
        })
        .filter(|n| !n.is_empty())
}

/// A file playing in a loop into a [`VideoSource`]. Dropping it stops the playback.
pub struct FileSource {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl FileSource {
    /// Load `path` and start playing it into a new [`VideoSource`] of the file's codec.
    ///
    /// Must be called within a tokio runtime. Format errors are reported here.
    pub fn spawn(
        path: &Path,
        config: &FileSourceConfig,
    ) -> Result<(VideoSource, FileSource), MediaError> {
        let clip = Clip::load(path, config)?;
        tracing::info!(
            path = %path.display(),
            codec = ?clip.codec,
            frames = clip.frames.len(),
            seconds = clip.duration_90khz() as f64 / 90_000.0,
            "file source loaded"
        );
        let source = VideoSource::with_gop_cache(clip.codec);
        let task = tokio::spawn(play(clip, source.clone()));
        Ok((
            source,
            FileSource {
                path: path.to_owned(),
                task,
            },
        ))
    }

    /// The file played.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn play(clip: Clip, source: VideoSource) {
    let mut rtp_time: u64 = 0;
    let mut next = Instant::now();
    loop {
        for f in &clip.frames {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next.into()).await;
            } else if now - next > Duration::from_secs(1) {
                next = now; // the runtime stalled: resume instead of bursting
            }
            source.publish(EncodedFrame {
                data: f.data.clone(),
                keyframe: f.keyframe,
                rtp_time,
                captured: Instant::now(),
            });
            // Keyframe requests cannot be honoured; clear them so they do not pile up.
            let _ = source.take_keyframe_request();
            let step = u64::from(f.duration);
            rtp_time += step;
            next += Duration::from_micros(step * 100 / 9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ivf(frames: &[(&[u8], u64)], rate: u32, scale: u32) -> Vec<u8> {
        let mut b = b"DKIF".to_vec();
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&32u16.to_le_bytes());
        b.extend_from_slice(b"VP80");
        b.extend_from_slice(&320u16.to_le_bytes());
        b.extend_from_slice(&240u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&scale.to_le_bytes());
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for (data, pts) in frames {
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(&pts.to_le_bytes());
            b.extend_from_slice(data);
        }
        b
    }

    fn vp8(key: bool) -> Vec<u8> {
        let tag: u32 = (2 << 5) | 0x10 | u32::from(!key);
        let mut f = vec![tag as u8, (tag >> 8) as u8, (tag >> 16) as u8];
        if key {
            f.extend_from_slice(&[0x9d, 0x01, 0x2a, 64, 1, 240, 0]);
        }
        f.extend_from_slice(&[1, 2]);
        f
    }

    #[test]
    fn ivf_frames_and_durations() {
        let (k, p) = (vp8(true), vp8(false));
        // Time base 1/1000: frames 33 ms apart, starting with an inter frame (skipped).
        let b = ivf(&[(&p, 0), (&k, 33), (&p, 66), (&p, 99)], 1000, 1);
        let clip = Clip::from_ivf(&b).unwrap();
        assert_eq!(clip.codec, VideoCodec::Vp8);
        assert_eq!(clip.frames.len(), 3);
        assert!(clip.frames[0].keyframe);
        assert!(clip.frames.iter().all(|f| f.duration == 2970));
        // Time base 1/30 with non-increasing timestamps: the header rate.
        let b = ivf(&[(&k, 0), (&p, 0)], 30, 1);
        let clip = Clip::from_ivf(&b).unwrap();
        assert!(clip.frames.iter().all(|f| f.duration == 3000));
        // Truncated last frame: ignored.
        let mut b = ivf(&[(&k, 0), (&p, 1)], 30, 1);
        b.truncate(b.len() - 1);
        assert_eq!(Clip::from_ivf(&b).unwrap().frames.len(), 1);
        assert!(
            Clip::from_ivf(&ivf(&[(&p, 0)], 30, 1)).is_err(),
            "no keyframe"
        );
        assert!(Clip::from_ivf(b"DKIF").is_err());
        let mut vp9 = ivf(&[(&k, 0)], 30, 1);
        vp9[8..12].copy_from_slice(b"VP90");
        assert!(Clip::from_ivf(&vp9).is_err());
    }

    #[test]
    fn h264_access_units_are_split() {
        let mut s = Vec::new();
        for nal in [
            &[0x09, 0xf0][..],         // AUD
            &[0x67, 0x42, 0x00, 0x1e], // SPS
            &[0x68, 0xce],             // PPS
            &[0x65, 0x88, 1],          // IDR, first slice
            &[0x65, 0x40, 2],          // IDR, second slice (first_mb != 0)
            &[0x41, 0x9a, 3],          // P, first slice
            &[0x41, 0x9a, 4, 0, 0],    // P, first slice, trailing zeros
        ] {
            s.extend_from_slice(&[0, 0, 1]);
            s.extend_from_slice(nal);
        }
        let clip = Clip::from_h264(&s, 25).unwrap();
        assert_eq!(clip.frames.len(), 3);
        assert!(clip.frames[0].keyframe);
        assert_eq!(
            clip.frames[0].data.iter().filter(|&&b| b == 0x65).count(),
            2
        );
        assert_eq!(
            clip.frames[0].data[4 + 2 + 4 + 2],
            0xc0,
            "SPS marked constrained"
        );
        assert_eq!(&*clip.frames[2].data, &[0, 0, 0, 1, 0x41, 0x9a, 4]);
        assert_eq!(clip.frames[1].duration, 3600);
        assert!(Clip::from_h264(&s, 0).is_err());
        assert!(Clip::from_h264(b"garbage", 30).is_err());
    }

    #[test]
    fn garbage_files_do_not_panic() {
        let mut x: u32 = 12345;
        for len in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8 % 4 // many zeros and ones: start codes
                })
                .collect();
            let _ = Clip::from_h264(&b, 30);
            let mut ivf = b"DKIF\0\0\x20\0VP80".to_vec();
            ivf.extend_from_slice(&b);
            let _ = Clip::from_ivf(&ivf);
        }
    }
}
