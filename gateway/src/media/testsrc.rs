//! Live test pattern: moving colour bars, a bouncing box, a frame counter and the wall-clock
//! time, encoded once with openh264 (constrained baseline) and shared by every viewer.
//!
//! The pattern is drawn straight into I420 planes (no RGB conversion) with a tiny built-in
//! 3×5 bitmap font. Encoding runs on its own OS thread because it is CPU-bound and must not
//! stall the tokio runtime; frames leave through a [`VideoSource`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use super::{EncodedFrame, MediaError, VideoCodec, VideoSource};

/// A keyframe request (new viewer, PLI, FIR) is honoured at most this often, so a burst of
/// requests from many viewers does not turn the stream into all-IDR.
const MIN_FORCED_KEYFRAME_GAP: Duration = Duration::from_millis(300);

/// Settings of the test pattern.
#[derive(Debug, Clone)]
pub struct TestSourceConfig {
    /// Frame width in pixels (even, at least 64).
    pub width: u32,
    /// Frame height in pixels (even, at least 64).
    pub height: u32,
    /// Frames per second (1..=60).
    pub fps: u32,
    /// Periodic IDR interval (on-demand keyframes come on top).
    pub keyframe_interval: Duration,
    /// Target bitrate of the encoder.
    pub bitrate_bps: u32,
    /// Encode even when no viewer is connected. Off by default: idle encoding only burns CPU.
    pub encode_without_viewers: bool,
}

impl Default for TestSourceConfig {
    fn default() -> Self {
        TestSourceConfig {
            width: 640,
            height: 480,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            bitrate_bps: 1_000_000,
            encode_without_viewers: false,
        }
    }
}

impl TestSourceConfig {
    fn validate(&self) -> Result<(), MediaError> {
        if self.width < 64 || self.height < 64 || self.width % 2 != 0 || self.height % 2 != 0 {
            return Err(MediaError::Config(format!(
                "test pattern size {}x{} must be even and at least 64x64",
                self.width, self.height
            )));
        }
        if self.width > 1920 || self.height > 1088 {
            return Err(MediaError::Config(
                "test pattern larger than 1920x1088".into(),
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return Err(MediaError::Config(format!(
                "fps {} not in 1..=60",
                self.fps
            )));
        }
        Ok(())
    }

    /// The lowest H.264 level that fits the configured size and rate.
    fn level(&self) -> Level {
        let mbs = u64::from(self.width.div_ceil(16)) * u64::from(self.height.div_ceil(16));
        let mbps = mbs * u64::from(self.fps);
        if mbs <= 3600 && mbps <= 108_000 {
            Level::Level_3_1 // 42e01f: what browsers offer, and what we advertise
        } else if mbs <= 8192 && mbps <= 245_760 {
            Level::Level_4_0
        } else {
            Level::Level_4_2
        }
    }
}

/// A running test pattern. Dropping it stops the encoder thread.
pub struct TestSource {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestSource {
    /// Start the pattern; frames are published to `source` (which must be an H.264 source).
    ///
    /// The encoder is created and the first frame encoded before this returns, so encoder
    /// problems surface here instead of in a background thread.
    pub fn spawn(config: TestSourceConfig, source: VideoSource) -> Result<TestSource, MediaError> {
        config.validate()?;
        if source.codec() != VideoCodec::H264 {
            return Err(MediaError::Config("the test pattern produces H.264".into()));
        }
        let mut gen = Generator::new(&config)?;
        // Prime the encoder (and report errors synchronously).
        gen.encode(0, SystemTime::now())?;

        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("media-testsrc".into())
            .spawn(move || run(gen, config, source, stop2))
            .map_err(|e| MediaError::Source(format!("spawning testsrc thread: {e}")))?;
        Ok(TestSource {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TestSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pacing loop of the encoder thread.
fn run(mut gen: Generator, config: TestSourceConfig, source: VideoSource, stop: Arc<AtomicBool>) {
    let interval = Duration::from_secs(1) / config.fps;
    let start = Instant::now();
    let mut next = start;
    let mut frame_no: u64 = 0;
    let mut last_forced = start;
    let mut was_idle = true;

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            // Pacing to the frame clock (not a readiness wait).
            std::thread::sleep(next - now);
            continue;
        }
        let captured = Instant::now();
        frame_no += 1;
        next += interval;
        if captured > next + interval {
            // Encoding fell behind (slow machine, debug build): skip frames instead of bursting.
            next = captured + interval;
        }

        if source.viewers() == 0 && !config.encode_without_viewers {
            was_idle = true;
            continue;
        }
        let wanted =
            last_forced.elapsed() >= MIN_FORCED_KEYFRAME_GAP && source.take_keyframe_request();
        if wanted || was_idle {
            gen.encoder.force_intra_frame();
            last_forced = captured;
            was_idle = false;
        }

        let rtp_time = duration_to_90khz(captured - start);
        match gen.encode(frame_no, SystemTime::now()) {
            Ok(Some((data, keyframe))) => {
                source.publish(EncodedFrame {
                    data,
                    keyframe,
                    rtp_time,
                    captured,
                });
            }
            Ok(None) => {} // encoder skipped the frame
            Err(e) => {
                tracing::error!(error = %e, "testsrc: encoding failed, stopping the test pattern");
                return;
            }
        }
    }
}

fn duration_to_90khz(d: Duration) -> u64 {
    (d.as_micros() * 9 / 100).try_into().unwrap_or(u64::MAX)
}

/// One encoded access unit and whether it is a keyframe.
type EncodedAu = (Arc<[u8]>, bool);

/// Pattern renderer plus encoder.
struct Generator {
    pattern: TestPattern,
    encoder: Encoder,
}

impl Generator {
    fn new(config: &TestSourceConfig) -> Result<Self, MediaError> {
        let frames = (config.keyframe_interval.as_millis() * u128::from(config.fps) / 1000).max(1);
        let enc_config = EncoderConfig::new()
            .profile(Profile::Baseline)
            .level(config.level())
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .skip_frames(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                u32::try_from(frames).unwrap_or(u32::MAX),
            ))
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), enc_config)
            .map_err(|e| MediaError::Source(format!("openh264 encoder: {e}")))?;
        Ok(Generator {
            pattern: TestPattern::new(config.width as usize, config.height as usize),
            encoder,
        })
    }

    /// Render and encode one frame. `None` when the encoder produced no output.
    fn encode(
        &mut self,
        frame_no: u64,
        wallclock: SystemTime,
    ) -> Result<Option<EncodedAu>, MediaError> {
        self.pattern.render(frame_no, wallclock);
        let bs = self
            .encoder
            .encode(&self.pattern.yuv())
            .map_err(|e| MediaError::Source(format!("openh264 encode: {e}")))?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let mut data = bs.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        mark_constrained_baseline(&mut data);
        Ok(Some((data.into(), keyframe)))
    }
}

/// Set `constraint_set1_flag` in every baseline SPS of an Annex-B access unit.
///
/// openh264's baseline output uses none of the tools (FMO, ASO, redundant slices) that
/// constrained baseline forbids, but its SPS may not say so. Browsers negotiate `42e01f`
/// (constrained baseline); marking the SPS makes the bitstream match what the SDP promised.
/// The flag byte sits at a fixed offset right after `profile_idc`, before any Exp-Golomb field,
/// and raising bits in it cannot create a start-code emulation.
pub fn mark_constrained_baseline(au: &mut [u8]) {
    let mut i = 0;
    while i + 3 < au.len() {
        let start = if au[i..].starts_with(&[0, 0, 1]) {
            i + 3
        } else if au[i..].starts_with(&[0, 0, 0, 1]) {
            i + 4
        } else {
            i += 1;
            continue;
        };
        // start: NAL header byte
        if start + 2 < au.len() && au[start] & 0x1f == 7 && au[start + 1] == 66 {
            au[start + 2] |= 0x40 | 0x80;
        }
        i = start;
    }
}

/// The picture generator: I420 planes redrawn each frame.
pub struct TestPattern {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

/// BT.601 limited-range YUV of the classic bars: white, yellow, cyan, green, magenta, red,
/// blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];

const BOX: usize = 64;
/// Font scale: each font pixel becomes SCALE×SCALE picture pixels.
const SCALE: usize = 4;

impl TestPattern {
    /// A pattern of the given (even) size.
    pub fn new(width: usize, height: usize) -> Self {
        TestPattern {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
        }
    }

    /// The current picture as openh264 input.
    pub fn yuv(&self) -> YUVSlices<'_> {
        YUVSlices::new(
            (&self.y, &self.u, &self.v),
            (self.width, self.height),
            (self.width, self.width / 2, self.width / 2),
        )
    }

    /// The luma plane (for tests).
    pub fn luma(&self) -> &[u8] {
        &self.y
    }

    /// Draw frame `frame_no` showing `wallclock`.
    pub fn render(&mut self, frame_no: u64, wallclock: SystemTime) {
        let (w, h) = (self.width, self.height);
        let (cw, ch) = (w / 2, h / 2);

        // Scrolling bars: compute one row per plane, then copy it down.
        let offset = (frame_no as usize * 4) % w;
        for x in 0..w {
            self.y[x] = BARS[((x + offset) % w) * 8 / w].0;
        }
        for x in 0..cw {
            let bar = BARS[((2 * x + offset) % w) * 8 / w];
            self.u[x] = bar.1;
            self.v[x] = bar.2;
        }
        for row in 1..h {
            self.y.copy_within(0..w, row * w);
        }
        for row in 1..ch {
            self.u.copy_within(0..cw, row * cw);
            self.v.copy_within(0..cw, row * cw);
        }

        // Bouncing box: a triangle wave in each axis.
        let bx = bounce(frame_no * 5, w - BOX);
        let by = bounce(frame_no * 3, h - BOX);
        self.fill(bx, by, BOX, BOX, (235, 128, 128));
        self.fill(bx + 16, by + 16, BOX - 32, BOX - 32, (81, 90, 240));

        // Text panel: frame counter and UTC wall-clock time.
        let since = wallclock.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() % 86_400;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            since.subsec_millis()
        );
        let counter = format!("{:08}", frame_no % 100_000_000);
        let line_h = 6 * SCALE;
        let panel_w = (clock.len() * 4 * SCALE + 2 * SCALE).min(w);
        let panel_h = (2 * line_h + 2 * SCALE).min(h);
        self.fill(0, 0, panel_w, panel_h, (16, 128, 128));
        self.text(SCALE, SCALE, &counter);
        self.text(SCALE, SCALE + line_h, &clock);

        self.snow(frame_no);
    }

    /// Luma noise in the bottom-right corner (a sixth of each side), new in every frame. Like a
    /// camera's sensor noise it cannot be predicted, so the encoder spends the bitrate it
    /// is given: a clean synthetic picture streams at a fraction of it (about 0.3 of
    /// 1 Mbit/s), and load figures measured with it would flatter the gateway.
    fn snow(&mut self, frame_no: u64) {
        let (w, h) = (self.width, self.height);
        let (nw, nh) = (w / 6, h / 6);
        // xorshift64: cheap, and any non-zero seed will do.
        let mut x = frame_no.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for row in h - nh..h {
            let Some(line) = self.y.get_mut(row * w + (w - nw)..(row + 1) * w) else {
                continue;
            };
            for px in line {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *px = 16 + (x % 220) as u8;
            }
        }
    }

    /// Fill a rectangle (clipped) with a YUV colour. Chroma is written at 2×2 granularity.
    fn fill(&mut self, x0: usize, y0: usize, bw: usize, bh: usize, c: (u8, u8, u8)) {
        let (w, h) = (self.width, self.height);
        let (x0, y0) = (x0.min(w), y0.min(h));
        let (x1, y1) = ((x0 + bw).min(w), (y0 + bh).min(h));
        for row in y0..y1 {
            self.y[row * w + x0..row * w + x1].fill(c.0);
        }
        let cw = w / 2;
        for row in y0 / 2..y1.div_ceil(2).min(h / 2) {
            let (a, b) = (row * cw + x0 / 2, row * cw + x1.div_ceil(2).min(cw));
            self.u[a..b].fill(c.1);
            self.v[a..b].fill(c.2);
        }
    }

    /// Draw `s` in white with the built-in font; unknown characters are left blank.
    fn text(&mut self, x: usize, y: usize, s: &str) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = glyph(ch);
            let gx = x + n * 4 * SCALE;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        self.fill(
                            gx + col * SCALE,
                            y + row * SCALE,
                            SCALE,
                            SCALE,
                            (235, 128, 128),
                        );
                    }
                }
            }
        }
    }
}

/// Triangle wave over `0..=max`.
fn bounce(t: u64, max: usize) -> usize {
    if max == 0 {
        return 0;
    }
    let period = 2 * max as u64;
    let p = (t % period) as usize;
    if p <= max {
        p
    } else {
        2 * max - p
    }
}

/// 3×5 glyphs, one row per byte, bit 2 is the leftmost column.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        ':' => [0b000, 0b010, 0b000, 0b010, 0b000],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        _ => [0; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_moves_between_frames() {
        let mut p = TestPattern::new(160, 120);
        p.render(1, UNIX_EPOCH);
        let a = p.luma().to_vec();
        p.render(2, UNIX_EPOCH);
        assert_ne!(a, p.luma(), "consecutive frames must differ");
    }

    #[test]
    fn pattern_handles_odd_geometry_edges() {
        // Smallest allowed size: box and text panel clip without panicking.
        let mut p = TestPattern::new(64, 64);
        for f in 0..200 {
            p.render(f, SystemTime::now());
        }
    }

    #[test]
    fn bounce_stays_in_range() {
        for t in 0..1000 {
            assert!(bounce(t, 17) <= 17);
        }
        assert_eq!(bounce(5, 0), 0);
    }

    #[test]
    fn sps_gets_constraint_set1() {
        let mut au = vec![
            0, 0, 0, 1, 0x67, 66, 0x00, 0x1f, 0xaa, 0, 0, 1, 0x68, 66, 0x00,
        ];
        mark_constrained_baseline(&mut au);
        assert_eq!(au[6], 0xc0, "SPS constraint byte");
        assert_eq!(au[14], 0x00, "PPS untouched");
    }

    #[test]
    fn encoder_spends_its_bitrate() {
        // Two seconds of the default pattern (the snow patch makes it incompressible) come
        // out near the 1 Mbit/s target: not at a fraction of it (a clean synthetic picture
        // did, ~0.24 Mbit/s), and not far above it.
        let config = TestSourceConfig::default();
        let mut gen = Generator::new(&config).unwrap();
        let bytes: usize = (0..2 * u64::from(config.fps))
            .filter_map(|f| gen.encode(f, SystemTime::now()).unwrap())
            .map(|(au, _)| au.len())
            .sum();
        let bps = bytes * 8 / 2;
        let target = config.bitrate_bps as usize;
        assert!(
            bps > target * 6 / 10 && bps < target * 13 / 10,
            "the test pattern streams {bps} bit/s, target {target}"
        );
    }

    #[test]
    fn encoder_emits_constrained_baseline_keyframe() {
        let config = TestSourceConfig {
            width: 160,
            height: 120,
            ..TestSourceConfig::default()
        };
        let mut gen = Generator::new(&config).unwrap();
        let (au, keyframe) = gen
            .encode(0, SystemTime::now())
            .unwrap()
            .expect("first frame");
        assert!(keyframe);
        let sps = au
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)
            .expect("an SPS in the first access unit");
        assert_eq!(au[sps + 4], 66, "baseline profile_idc");
        assert_eq!(au[sps + 5] & 0x40, 0x40, "constraint_set1_flag");
    }
}
