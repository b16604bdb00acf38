//! UDP segmentation offload (Linux `UDP_SEGMENT`): the datagrams one client read yields
//! for one peer leave in one `sendmsg`.
//!
//! Over TCP and TLS a TURN client's datagrams arrive in bursts: a video frame is a run of
//! equal-size RTP packets, and one read of the stream holds several ChannelData messages
//! for the same peer. Sent one `sendto` each, every datagram walks the whole stack (route
//! lookup, skb build, device queue): on loopback at 100 allocations that was over half of
//! the relay's CPU. With `UDP_SEGMENT` the kernel walks it once per run and cuts the
//! buffer into datagrams at the device (or the NIC does). The peer sees exactly the
//! datagrams it would have seen; nothing about them changes (no DF bit, no new sizes).
//!
//! A run is datagrams to one peer, all of one size except a shorter last one (the rule of
//! `UDP_SEGMENT`), at most [`MAX_SEGMENTS`] and [`MAX_RUN_BYTES`]. Where the kernel or the
//! device cannot (`EIO`: no checksum offload; `EINVAL`: a segment above the route's MTU),
//! the run goes out one datagram at a time; `EIO` also turns batching off for the relay.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};

/// `SOL_UDP` / `UDP_SEGMENT` from linux/udp.h (not in `libc` for every Linux target).
const SOL_UDP: i32 = 17;
const UDP_SEGMENT: i32 = 103;
/// The kernel's `UDP_MAX_SEGMENTS` (64 since Linux 4.18; later kernels allow more).
pub const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one run: an IPv4 datagram's 65,535 bytes less its headers.
pub const MAX_RUN_BYTES: usize = 65_507;

/// Whether `UDP_SEGMENT` is used. Shared by a relay's sockets; turned off for good after
/// the first `EIO` (a kernel or device that cannot segment).
#[derive(Debug)]
pub struct Offload {
    enabled: AtomicBool,
}

impl Offload {
    /// Offload on where the platform has it (Linux), off elsewhere.
    pub fn new() -> Self {
        Self::with(cfg!(target_os = "linux"))
    }

    pub fn with(enabled: bool) -> Self {
        Self {
            enabled: AtomicBool::new(enabled),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn disable(&self, why: &std::io::Error) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::info!(error = %why, "UDP segmentation offload unavailable; relaying one datagram per send");
        }
    }
}

impl Default for Offload {
    fn default() -> Self {
        Self::new()
    }
}

/// Datagrams waiting to go to one peer as one run. Its buffer is kept between runs: no
/// allocation per datagram once it has grown to a run's size.
#[derive(Debug, Default)]
pub struct Run {
    buf: Vec<u8>,
    peer: Option<SocketAddr>,
    /// Size of every datagram but possibly the last.
    segment: usize,
    count: usize,
    /// The last datagram was shorter than `segment`: the run can take no more.
    closed: bool,
}

impl Run {
    /// Whether `data` for `peer` can join this run. An empty datagram is a run of its
    /// own: a segment of no bytes cannot be cut from a buffer.
    fn fits(&self, data: &[u8], peer: SocketAddr) -> bool {
        self.count == 0
            || (self.peer == Some(peer)
                && !self.closed
                && !data.is_empty()
                && data.len() <= self.segment
                && self.count < MAX_SEGMENTS
                && self.buf.len() + data.len() <= MAX_RUN_BYTES)
    }

    /// Adds `data` for `peer`, first sending what is queued when `data` cannot join it.
    /// Returns the datagrams dropped by that send (UDP semantics: a full socket buffer
    /// drops).
    pub fn push(
        &mut self,
        data: &[u8],
        peer: SocketAddr,
        sock: &UdpSocket,
        offload: &Offload,
    ) -> usize {
        let dropped = if self.fits(data, peer) {
            0
        } else {
            self.flush(sock, offload)
        };
        if self.count == 0 {
            self.peer = Some(peer);
            self.segment = data.len();
            self.closed = false;
        } else if data.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
        dropped
    }

    /// Sends what is queued. Returns the datagrams dropped.
    pub fn flush(&mut self, sock: &UdpSocket, offload: &Offload) -> usize {
        let dropped = match (self.peer, self.count) {
            (_, 0) | (None, _) => 0,
            (Some(peer), 1) => usize::from(sock.send_to(&self.buf, peer).is_err()),
            (Some(peer), n) if offload.enabled() => {
                match send_segmented(sock, &self.buf, self.segment, peer) {
                    Ok(_) => 0,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => n,
                    Err(e) => {
                        if e.raw_os_error() == Some(EIO) {
                            offload.disable(&e);
                        }
                        self.send_each(sock, peer)
                    }
                }
            }
            (Some(peer), _) => self.send_each(sock, peer),
        };
        self.buf.clear();
        self.count = 0;
        self.closed = false;
        dropped
    }

    /// Sends the run one datagram at a time; returns how many failed.
    fn send_each(&self, sock: &UdpSocket, peer: SocketAddr) -> usize {
        let seg = self.segment.max(1);
        self.buf
            .chunks(seg)
            .filter(|d| sock.send_to(d, peer).is_err())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

const EIO: i32 = 5;

/// One `sendmsg` of `buf` to `peer`, cut by the kernel into datagrams of `segment` bytes.
fn send_segmented(
    sock: &UdpSocket,
    buf: &[u8],
    segment: usize,
    peer: SocketAddr,
) -> std::io::Result<usize> {
    let segment = u16::try_from(segment)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let control = SegmentCmsg::new(segment);
    let addr = socket2::SockAddr::from(peer);
    let bufs = [IoSlice::new(buf)];
    let msg = socket2::MsgHdr::new()
        .with_addr(&addr)
        .with_buffers(&bufs)
        .with_control(control.bytes());
    socket2::SockRef::from(sock).sendmsg(&msg, 0)
}

/// The control message `UDP_SEGMENT` with a `u16` segment size, laid out as the C
/// macros `CMSG_LEN`/`CMSG_SPACE` would: `struct cmsghdr` (`size_t len; int level;
/// int type;`), then the data at the next `size_t` boundary, padded to one.
struct SegmentCmsg {
    buf: [u8; 32],
    len: usize,
}

impl SegmentCmsg {
    const ALIGN: usize = std::mem::size_of::<usize>();

    fn align(n: usize) -> usize {
        n.div_ceil(Self::ALIGN) * Self::ALIGN
    }

    fn new(segment: u16) -> Self {
        let word = Self::ALIGN;
        let header = Self::align(word + 8);
        let cmsg_len = header + 2;
        let space = header + Self::align(2);
        let mut buf = [0u8; 32];
        let fields: [&[u8]; 4] = [
            &cmsg_len.to_ne_bytes(),
            &SOL_UDP.to_ne_bytes(),
            &UDP_SEGMENT.to_ne_bytes(),
            &segment.to_ne_bytes(),
        ];
        let offsets = [0, word, word + 4, header];
        for (f, at) in fields.iter().zip(offsets) {
            if let Some(dst) = buf.get_mut(at..at + f.len()) {
                dst.copy_from_slice(f);
            }
        }
        Self {
            buf,
            len: space.min(32),
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_message_matches_the_c_layout() {
        let c = SegmentCmsg::new(1200);
        let w = std::mem::size_of::<usize>();
        // The header is `struct cmsghdr` exactly; the data follows it at a word boundary.
        let header = std::mem::size_of::<libc::cmsghdr>();
        assert_eq!(header % w, 0);
        let len = usize::from_ne_bytes(c.bytes()[..w].try_into().unwrap());
        assert_eq!(len, header + 2, "CMSG_LEN(2)");
        assert_eq!(c.bytes().len(), header + w, "CMSG_SPACE(2)");
        assert_eq!(
            i32::from_ne_bytes(c.bytes()[w..w + 4].try_into().unwrap()),
            17
        );
        assert_eq!(
            i32::from_ne_bytes(c.bytes()[w + 4..w + 8].try_into().unwrap()),
            103
        );
        assert_eq!(
            u16::from_ne_bytes(c.bytes()[header..header + 2].try_into().unwrap()),
            1200
        );
    }

    fn pair() -> (UdpSocket, UdpSocket) {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (tx, rx)
    }

    fn received(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = rx.recv_from(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    fn datagrams(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect()
    }

    /// Whatever the kernel supports, the peer gets the same datagrams in the same order.
    fn relays_whole(offload: &Offload) {
        let (tx, rx) = pair();
        let to = rx.local_addr().unwrap();
        // Equal sizes, a short one that closes a run, a longer one that starts the next,
        // empty datagrams (each its own run).
        let sent = datagrams(&[
            1200, 1200, 1200, 700, 1200, 1200, 10, 1300, 1300, 0, 0, 5, 0,
        ]);
        let mut run = Run::default();
        let mut dropped = 0;
        for d in &sent {
            dropped += run.push(d, to, &tx, offload);
        }
        dropped += run.flush(&tx, offload);
        assert_eq!(dropped, 0);
        assert!(run.is_empty());
        assert_eq!(received(&rx, sent.len()), sent);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_cuts_one_send_into_datagrams() {
        let (tx, rx) = pair();
        let buf: Vec<u8> = (0..2500u32).map(|i| (i / 1000) as u8).collect();
        let n = send_segmented(&tx, &buf, 1000, rx.local_addr().unwrap()).unwrap();
        assert_eq!(n, 2500);
        assert_eq!(
            received(&rx, 3),
            vec![vec![0u8; 1000], vec![1u8; 1000], vec![2u8; 500]]
        );
    }

    #[test]
    fn peer_receives_each_datagram_as_sent() {
        relays_whole(&Offload::new());
        relays_whole(&Offload::with(false));
    }

    #[test]
    fn a_run_is_one_peer_and_within_the_kernel_limits() {
        let (tx, rx_a) = pair();
        let (_, rx_b) = pair();
        let (a, b) = (rx_a.local_addr().unwrap(), rx_b.local_addr().unwrap());
        let offload = Offload::new();
        let mut run = Run::default();
        run.push(&[1; 100], a, &tx, &offload);
        assert_eq!(run.count, 1);
        // Another peer: the run to `a` leaves first.
        run.push(&[2; 100], b, &tx, &offload);
        assert_eq!((run.count, run.peer), (1, Some(b)));
        assert_eq!(received(&rx_a, 1), vec![vec![1; 100]]);
        // More than MAX_SEGMENTS small datagrams: split into runs of at most that many.
        for _ in 0..MAX_SEGMENTS + 5 {
            run.push(&[3; 100], b, &tx, &offload);
            assert!(run.count <= MAX_SEGMENTS);
        }
        run.flush(&tx, &offload);
        let got = received(&rx_b, MAX_SEGMENTS + 6);
        assert_eq!(got[0], vec![2; 100]);
        assert!(got[1..].iter().all(|d| d == &vec![3u8; 100]));
        // Large datagrams: the run stays within one UDP payload.
        for _ in 0..60 {
            run.push(&[4; 1400], b, &tx, &offload);
            assert!(run.buf.len() <= MAX_RUN_BYTES);
        }
        run.flush(&tx, &offload);
        assert_eq!(received(&rx_b, 60), vec![vec![4u8; 1400]; 60]);
    }
}
