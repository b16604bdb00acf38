//! The load generator: echo peers, meshes of allocations with a bound channel each,
//! paced ChannelData senders, receivers that count and time the echoes, the allocation
//! set-up and idle-memory drivers.
//!
//! Sending is paced per 1 ms tick from the elapsed time (no drift), in batches: one write
//! per connection per tick, many connections per sender task. Each 1,200-byte payload
//! carries a step number and its send time, so late echoes of an earlier step are not
//! counted and round-trip times need no matching table.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use relay::framer::{Frame, Framer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::conn::{self, Conn, Stream, Target, Transport};
use crate::servers::Server;

// The UDP echo peer batches with recvmmsg/sendmmsg through libc (unsafe, with SAFETY notes).
#[allow(unsafe_code)]
mod echo;
pub use echo::EchoPeers;

/// Payload size of every relayed packet.
pub const PAYLOAD: usize = 1200;
/// The channel every bench allocation binds.
const CHANNEL: u16 = 0x4000;
/// Largest burst a sender catches up with in one tick (beyond it the step fails anyway).
const MAX_BURST: Duration = Duration::from_millis(10);

fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    t0().elapsed().as_nanos() as u64
}

/// Raises a socket buffer past `net.core.*mem_max` (we are root; falls back silently).
#[allow(unsafe_code)] // setsockopt(2), see the SAFETY note
fn force_buffers(sock: &impl std::os::fd::AsFd, bytes: i32) {
    use std::os::fd::AsRawFd as _;
    let fd = sock.as_fd().as_raw_fd();
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt on a socket we own with a pointer to a local i32.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let s = socket2::SockRef::from(sock);
            let _ = s.set_recv_buffer_size(bytes as usize);
            let _ = s.set_send_buffer_size(bytes as usize);
        }
    }
}

/// State shared by a mesh's receivers.
#[derive(Default)]
struct Counters {
    step: AtomicU32,
    received: AtomicU64,
    /// Reader tasks that stopped (end of stream, read or framing error): their
    /// allocations' echoes are no longer counted, which shows as loss.
    readers_ended: AtomicU64,
    record: AtomicBool,
    rtts_us: Mutex<Vec<u32>>,
}

/// Payload header: step (u32), sender index (u32), send time in ns since t0 (u64).
fn stamp(buf: &mut [u8], step: u32, idx: u32) {
    if let Some(h) = buf.get_mut(..16) {
        h[..4].copy_from_slice(&step.to_be_bytes());
        h[4..8].copy_from_slice(&idx.to_be_bytes());
        h[8..16].copy_from_slice(&now_ns().to_be_bytes());
    }
}

fn unstamp(p: &[u8]) -> Option<(u32, u64)> {
    let step = u32::from_be_bytes(p.get(..4)?.try_into().ok()?);
    let ts = u64::from_be_bytes(p.get(8..16)?.try_into().ok()?);
    Some((step, ts))
}

impl Counters {
    /// Counts one echoed payload (and its round-trip time when recording).
    fn on_payload(&self, p: &[u8], local: &mut (u64, Vec<u32>)) {
        let Some((step, ts)) = unstamp(p) else { return };
        if step != self.step.load(Ordering::Relaxed) {
            return;
        }
        local.0 += 1;
        if self.record.load(Ordering::Relaxed) {
            let rtt = now_ns().saturating_sub(ts) / 1000;
            local.1.push(rtt.min(u32::MAX as u64) as u32);
        }
    }

    fn reader_ended(&self, why: std::fmt::Arguments<'_>) {
        if self.readers_ended.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("bench: a mesh connection stopped: {why}");
        }
    }

    fn flush(&self, local: &mut (u64, Vec<u32>)) {
        if local.0 > 0 {
            self.received.fetch_add(local.0, Ordering::Relaxed);
            local.0 = 0;
        }
        if !local.1.is_empty() {
            if let Ok(mut v) = self.rtts_us.lock() {
                v.append(&mut local.1);
            }
        }
    }
}

/// The outcome of one paced step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Step {
    /// Offered rate, packets/s (client → peer; each is echoed back).
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    /// Wall time the senders ran.
    pub secs: f64,
    /// Wall time from the senders' end until the last echo was back: the backlog the
    /// server had built up. A server that keeps up has nearly none; one that does not
    /// can still lose nothing (the clients' TCP send buffers hold megabytes per
    /// connection), so loss alone does not show it.
    pub drain: f64,
    /// Server CPU seconds from the first send to the end of the drain.
    pub cpu: f64,
}

/// The most backlog a passing step may leave, as a share of the step: at 5 %, a server
/// that passes relayed at least about 95 % of the offered rate as it was offered.
const MAX_BACKLOG_SHARE: f64 = 0.05;

impl Step {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        1.0 - self.received as f64 / self.sent as f64
    }

    /// Sent what was offered (within 3 %), lost under 0.1 % and kept up: the echoes were
    /// all back within a small share of the step after the senders stopped.
    pub fn passed(&self) -> bool {
        self.sent as f64 >= 0.97 * self.rate * self.secs
            && self.loss() < 0.001
            && self.drain <= MAX_BACKLOG_SHARE * self.secs
    }

    /// Packets relayed per second, both directions (to the peer and the echo back), over
    /// the whole time the server took: sending and draining its backlog.
    pub fn relayed_pps(&self) -> f64 {
        (self.sent + self.received) as f64 / (self.secs + self.drain).max(1e-9)
    }

    /// Relayed payload, Mbit/s, both directions.
    pub fn relayed_mbps(&self) -> f64 {
        self.relayed_pps() * (PAYLOAD * 8) as f64 / 1e6
    }

    /// Server CPU seconds per relayed gigabit of payload.
    pub fn cpu_per_gbit(&self) -> f64 {
        let gbit = (self.sent + self.received) as f64 * (PAYLOAD * 8) as f64 / 1e9;
        self.cpu / gbit.max(1e-12)
    }
}

/// `n` allocations on one server, each with channel 0x4000 bound to an echo peer, split
/// into writers (used by paced senders) and reader tasks.
pub struct Mesh {
    writers: Vec<WriteHalf<Box<dyn Stream>>>,
    readers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl Mesh {
    pub async fn open(
        target: &Target,
        transport: Transport,
        n: usize,
        peers: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let mut writers = Vec::with_capacity(n);
        let mut readers = Vec::with_capacity(n);
        for i in 0..n {
            let peer = peers[i % peers.len()];
            let stream = conn::connect(target, transport).await?;
            let mut c = Conn::new(stream, &target.secret, &format!("mesh{i}"))?;
            c.allocate().await.context("Allocate")?;
            c.channel_bind(CHANNEL, peer).await.context("ChannelBind")?;
            let (stream, framer) = c.into_parts();
            let (rd, wr) = tokio::io::split(stream);
            writers.push(wr);
            readers.push(tokio::spawn(read_loop(rd, framer, counters.clone())));
        }
        Ok(Self {
            writers,
            readers,
            counters,
        })
    }

    /// Sends at `rate` packets/s in all for `dur`, waits for the echoes (bounded), and
    /// reports. With `record`, round-trip times are kept (see [`Mesh::take_rtts`]).
    pub async fn step(&mut self, server: &Server, rate: f64, dur: Duration, record: bool) -> Step {
        let (step, cpu0) = self.begin(server, record);
        // Up to 4 sender tasks, each pacing its share of the connections.
        let groups = self.writers.len().clamp(1, 4);
        let total = self.writers.len().max(1);
        let mut all: Vec<_> = self.writers.drain(..).collect();
        let per = all.len().div_ceil(groups).max(1);
        let mut handles = Vec::new();
        let start = Instant::now();
        while !all.is_empty() {
            let chunk: Vec<_> = all.drain(..per.min(all.len())).collect();
            let share = rate * chunk.len() as f64 / total as f64;
            handles.push(tokio::spawn(pace(chunk, share, dur, step, start)));
        }
        let mut sent = 0;
        for h in handles {
            if let Ok((w, n)) = h.await {
                self.writers.extend(w);
                sent += n;
            }
        }
        self.finish(server, rate, sent, start, dur, cpu0).await
    }

    /// Video-like load: every allocation sends one packet every `gap.0..gap.1` (uniformly
    /// jittered, as RTP of a ~1 Mbit/s stream arrives), each packet its own write, for `dur`;
    /// round-trip times are kept for every packet.
    pub async fn video_step(
        &mut self,
        server: &Server,
        gap: (Duration, Duration),
        dur: Duration,
    ) -> Step {
        let (step, cpu0) = self.begin(server, true);
        let groups = self.writers.len().clamp(1, 4);
        let mut all: Vec<_> = self.writers.drain(..).collect();
        let per = all.len().div_ceil(groups).max(1);
        let mut handles = Vec::new();
        let start = Instant::now();
        let mut first = 0usize;
        while !all.is_empty() {
            let chunk: Vec<_> = all.drain(..per.min(all.len())).collect();
            let n = chunk.len();
            handles.push(tokio::spawn(pace_video(
                chunk, first, gap, dur, step, start,
            )));
            first += n;
        }
        let mut sent = 0;
        for h in handles {
            if let Ok((w, n)) = h.await {
                self.writers.extend(w);
                sent += n;
            }
        }
        let mean = (gap.0 + gap.1).as_secs_f64() / 2.0;
        let rate = self.writers.len() as f64 / mean.max(1e-6);
        self.finish(server, rate, sent, start, dur, cpu0).await
    }

    /// Starts a step: a new step number, counters cleared; the server's CPU seconds now.
    fn begin(&self, server: &Server, record: bool) -> (u32, f64) {
        let c = &self.counters;
        let step = c.step.fetch_add(1, Ordering::Relaxed) + 1;
        c.received.store(0, Ordering::Relaxed);
        c.record.store(record, Ordering::Relaxed);
        if let Ok(mut v) = c.rtts_us.lock() {
            v.clear();
        }
        (step, server.cpu_seconds())
    }

    /// Ends a step whose senders sent `sent` packets since `start`: waits for the echoes
    /// (bounded) and reports.
    async fn finish(
        &self,
        server: &Server,
        rate: f64,
        sent: u64,
        start: Instant,
        dur: Duration,
        cpu0: f64,
    ) -> Step {
        let c = &self.counters;
        let secs = start
            .elapsed()
            .as_secs_f64()
            .min(dur.as_secs_f64())
            .max(1e-3);
        // Drain: until every echo is back, or nothing more arrived for 200 ms (max 5 s).
        // The drain ends at the last echo's arrival, not at the poll that saw it.
        let senders_done = Instant::now();
        let drain_end = senders_done + Duration::from_secs(5);
        let mut last = (c.received.load(Ordering::Relaxed), senders_done);
        loop {
            let r = c.received.load(Ordering::Relaxed);
            if r != last.0 {
                last = (r, Instant::now());
            }
            if r >= sent
                || Instant::now() > drain_end
                || last.1.elapsed() > Duration::from_millis(200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let drain = last.1.saturating_duration_since(senders_done).as_secs_f64();
        let cpu = server.cpu_seconds() - cpu0;
        c.record.store(false, Ordering::Relaxed);
        Step {
            rate,
            sent,
            received: c.received.load(Ordering::Relaxed).min(sent),
            secs,
            drain,
            cpu,
        }
    }

    pub fn take_rtts(&self) -> Vec<u32> {
        self.counters
            .rtts_us
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

async fn read_loop(mut rd: ReadHalf<Box<dyn Stream>>, mut framer: Framer, c: Arc<Counters>) {
    let mut local = (0u64, Vec::new());
    loop {
        loop {
            match framer.next_frame() {
                Ok(Some(f @ Frame::ChannelData(_))) => {
                    if let Some(p) = f.channel_payload() {
                        c.on_payload(p, &mut local);
                    }
                }
                Ok(Some(Frame::Stun(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    c.reader_ended(format_args!("framing error: {e}"));
                    return;
                }
            }
        }
        c.flush(&mut local);
        match rd.read(framer.read_buf()).await {
            Ok(0) => return c.reader_ended(format_args!("closed by the server")),
            Err(e) => return c.reader_ended(format_args!("read error: {e}")),
            Ok(n) => framer.commit(n),
        }
    }
}

/// Paces `rate` packets/s over `writers` for `dur`; returns the writers and the count sent.
async fn pace(
    mut writers: Vec<WriteHalf<Box<dyn Stream>>>,
    rate: f64,
    dur: Duration,
    step: u32,
    start: Instant,
) -> (Vec<WriteHalf<Box<dyn Stream>>>, u64) {
    let n = writers.len().max(1) as u64;
    let mut frame = Vec::with_capacity(PAYLOAD + 4);
    relay::framer::write_channel_data(&mut frame, CHANNEL, &[0u8; PAYLOAD], true);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut sent = 0u64;
    let mut rr = 0u64;
    let max_burst = (rate * MAX_BURST.as_secs_f64()).max(n as f64) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    'run: loop {
        tick.tick().await;
        let el = start.elapsed();
        if el >= dur {
            break;
        }
        let target = (rate * el.as_secs_f64()) as u64;
        let due = target.saturating_sub(sent).min(max_burst);
        if due == 0 {
            continue;
        }
        for k in 0..n {
            let i = ((rr + k) % n) as usize;
            let mine = due / n + u64::from(k < due % n);
            if mine == 0 {
                continue;
            }
            buf.clear();
            for _ in 0..mine {
                let at = buf.len();
                buf.extend_from_slice(&frame);
                stamp(&mut buf[at + 4..], step, i as u32);
            }
            let Some(w) = writers.get_mut(i) else {
                continue;
            };
            if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                break 'run;
            }
            sent += mine;
        }
        rr = rr.wrapping_add(due % n);
    }
    (writers, sent)
}

/// One packet per writer every `gap.0..gap.1` (jittered per writer by a small xorshift
/// generator seeded with the writer's index), each packet its own write and flush, for
/// `dur`; the writers (numbered from `first` in the payload stamp) and the count sent.
async fn pace_video(
    mut writers: Vec<WriteHalf<Box<dyn Stream>>>,
    first: usize,
    gap: (Duration, Duration),
    dur: Duration,
    step: u32,
    start: Instant,
) -> (Vec<WriteHalf<Box<dyn Stream>>>, u64) {
    let mut frame = Vec::with_capacity(PAYLOAD + 4);
    relay::framer::write_channel_data(&mut frame, CHANNEL, &[0u8; PAYLOAD], true);
    let span = gap.1.saturating_sub(gap.0).as_nanos().max(1) as u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ first as u64;
    let mut jitter = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        gap.0 + Duration::from_nanos(rng % span)
    };
    // Each writer starts at a random point of its first gap, so sends spread out.
    let mut due: Vec<Duration> = writers.iter().map(|_| jitter() - gap.0).collect();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    'run: loop {
        tick.tick().await;
        let el = start.elapsed();
        if el >= dur {
            break;
        }
        for (i, w) in writers.iter_mut().enumerate() {
            let Some(d) = due.get_mut(i) else { continue };
            if *d > el {
                continue;
            }
            // A writer that fell behind sends once and goes on from now (no catch-up burst).
            *d = (*d + jitter()).max(el);
            stamp(&mut frame[4..], step, (first + i) as u32);
            if w.write_all(&frame).await.is_err() || w.flush().await.is_err() {
                break 'run;
            }
            sent += 1;
        }
    }
    (writers, sent)
}

/// Round-trip times of direct UDP to the echo peer at `rate` for `dur` (the baseline the
/// relay's added latency is measured against).
pub async fn udp_baseline(peer: SocketAddr, rate: f64, dur: Duration) -> anyhow::Result<Vec<u32>> {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    force_buffers(&sock, 8 << 20);
    sock.connect(peer).await?;
    let rx = sock.clone();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        let mut buf = vec![0u8; 2048];
        while !done2.load(Ordering::Relaxed) {
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), rx.recv(&mut buf)).await
            {
                if let Some((_, ts)) = unstamp(&buf[..n]) {
                    v.push((now_ns().saturating_sub(ts) / 1000) as u32);
                }
            }
        }
        v
    });
    let mut pkt = vec![0u8; PAYLOAD];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < dur {
        tick.tick().await;
        let target = (rate * start.elapsed().as_secs_f64()) as u64;
        while sent < target {
            stamp(&mut pkt, 0, 0);
            let _ = sock.send(&pkt).await;
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, Ordering::Relaxed);
    Ok(reader.await.unwrap_or_default())
}

/// Percentile `p` (0..=100) of `v` (sorted in place).
pub fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)] as f64
}

/// Allocations set up (connect, TLS, 401, Allocate, CreatePermission) and held open.
pub struct Held {
    pub conns: Vec<Conn>,
    pub latencies_us: Vec<u32>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub secs: f64,
}

/// Sets up `count` TURN/TLS (or TCP) allocations, `concurrency` at a time, and keeps
/// them open.
pub async fn hold(
    target: &Target,
    transport: Transport,
    count: usize,
    concurrency: usize,
    peer: SocketAddr,
    tag: &str,
) -> Held {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(count).max(1) {
        let next = next.clone();
        let target = target.clone();
        let tag = tag.to_owned();
        workers.push(tokio::spawn(async move {
            let mut conns = Vec::new();
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                match conn::setup_allocation(&target, transport, &format!("{tag}{i}"), peer).await {
                    Ok((c, d)) => {
                        conns.push(c);
                        lat.push(d.as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (conns, lat, errors, first)
        }));
    }
    let mut held = Held {
        conns: Vec::with_capacity(count),
        latencies_us: Vec::with_capacity(count),
        errors: 0,
        first_error: None,
        secs: 0.0,
    };
    for w in workers {
        if let Ok((c, l, e, f)) = w.await {
            held.conns.extend(c);
            held.latencies_us.extend(l);
            held.errors += e;
            if held.first_error.is_none() {
                held.first_error = f;
            }
        }
    }
    held.secs = start.elapsed().as_secs_f64();
    held
}

/// Polls the RSS of `server` until it stops changing for 200 ms (at most 3 s).
pub async fn settled_rss(server: &Server) -> u64 {
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = server.rss_bytes();
    let mut since = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = server.rss_bytes();
        if r != last {
            last = r;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(200) {
            break;
        }
    }
    last
}

/// Waits (up to 15 s) until `servers` together use under 5 % of a core over 200 ms, so a
/// measurement does not pay for the previous one's teardown. Both servers share
/// one core, so a step on one must also wait for the other to finish what the previous
/// step left it (coturn takes seconds to tear down the memory test's 9,000 allocations,
/// and a gateway set-up step run meanwhile measured coturn's teardown: 1,467/s against
/// 4,257/s when run after it).
pub async fn settled_cpu(servers: &[&Server]) {
    let end = Instant::now() + Duration::from_secs(15);
    let total = || servers.iter().map(|s| s.cpu_seconds()).sum::<f64>();
    let mut last = total();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = total();
        if now - last < 0.01 {
            return;
        }
        last = now;
    }
}
