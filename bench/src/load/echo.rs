//! UDP echo peers on their own threads, batched with `recvmmsg`/`sendmmsg`.
//!
//! The peers are part of the load generator, so they must never be what limits a server:
//! as tokio tasks among a hundred reader tasks they fell behind (their 16 MiB buffers
//! filled) long before either server did. Here each peer is one OS thread that takes up
//! to [`BATCH`] datagrams per system call and echoes them with one more.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Most datagrams per system call.
const BATCH: usize = 64;
/// Room per datagram: the bench sends 1,200-byte payloads (longer ones are cut, and
/// echoed cut, which the receivers would count as lost).
const SLOT: usize = 2048;
/// How often a blocked peer looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// UDP peers on 127.0.0.1 that echo every datagram to its sender.
pub struct EchoPeers {
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoPeers {
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            sock.set_read_timeout(Some(POLL))?;
            super::force_buffers(&sock, 8 << 20);
            addrs.push(sock.local_addr()?);
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("echo-{i}"))
                    .spawn(move || echo(&sock, &stop))?,
            );
        }
        Ok(Self {
            addrs,
            stop,
            threads,
        })
    }
}

impl Drop for EchoPeers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn echo(sock: &UdpSocket, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; SLOT]; BATCH];
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: SLOT,
        })
        .collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut runs_buf: Vec<Run> = Vec::with_capacity(BATCH);
    let mut out_iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut ctl: Vec<[u64; 4]> = vec![[0; 4]; BATCH];
    while !stop.load(Ordering::Relaxed) {
        for ((m, iov), name) in msgs.iter_mut().zip(iovs.iter_mut()).zip(names.iter_mut()) {
            iov.iov_len = SLOT;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_len = 0;
        }
        // SAFETY: every header points at a live iovec over a live SLOT-byte buffer and at a
        // live sockaddr_storage, all owned by this frame and not moved during the call.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let Ok(got) = usize::try_from(got) else {
            continue; // timeout (checks the stop flag) or EINTR
        };
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()).take(got) {
            iov.iov_len = (m.msg_len as usize).min(SLOT);
        }
        let batch = msgs.get(..got).unwrap_or_default();
        let runs = runs(batch, &names, &mut runs_buf);
        let mut out = gso_messages(runs, batch, &iovs, &mut names, &mut out_iovs, &mut ctl);
        let mut done = 0;
        while done < out.len() {
            let rest = out.get_mut(done..).unwrap_or_default();
            // SAFETY: each header points at a sender's address, at iovecs over received
            // datagrams and at a control buffer, all owned by this frame and unmoved.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            match usize::try_from(sent) {
                Ok(k) if k > 0 => done += k,
                // The first entry failed (its datagrams are lost, as UDP may): go on
                // with the rest.
                _ => done += 1,
            }
        }
    }
}

/// Datagrams of one batch that go back to one sender in one `sendmsg` with
/// `UDP_SEGMENT`: all of one size, in the order received. Echoing a run in one send
/// instead of one per datagram halves the echo's cost, and the server's relay socket
/// still receives separate datagrams (the kernel cuts the run before its receive queue).
struct Run {
    /// Index in the batch of the first datagram (whose sender address the run uses).
    first: usize,
    size: usize,
    members: Vec<usize>,
}

/// The kernel's limits on one `UDP_SEGMENT` send: segments, and the bytes of one UDP
/// payload.
const MAX_SEGMENTS: usize = 64;
const MAX_RUN_BYTES: usize = 65_507;

/// Groups the batch into runs, in order of their first datagram; each sender's datagrams
/// stay in order (a datagram that cannot join its sender's open run starts a new one,
/// and the old one takes no more).
fn runs<'a>(
    batch: &[libc::mmsghdr],
    names: &[libc::sockaddr_storage],
    runs: &'a mut Vec<Run>,
) -> &'a [Run] {
    runs.clear();
    let mut open: Vec<usize> = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        let len = m.msg_len as usize;
        let from = name_bytes(names, i, m.msg_hdr.msg_namelen);
        let mine = open.iter().position(|&r| {
            runs.get(r)
                .is_some_and(|run| name_bytes(names, run.first, m.msg_hdr.msg_namelen) == from)
        });
        if let Some(k) = mine {
            let r = open[k];
            if let Some(run) = runs.get_mut(r) {
                if run.size == len
                    && run.members.len() < MAX_SEGMENTS
                    && (run.members.len() + 1) * len <= MAX_RUN_BYTES
                {
                    run.members.push(i);
                    continue;
                }
            }
            open.swap_remove(k);
        }
        open.push(runs.len());
        runs.push(Run {
            first: i,
            size: len,
            members: vec![i],
        });
    }
    runs
}

fn name_bytes(names: &[libc::sockaddr_storage], i: usize, len: u32) -> &[u8] {
    let Some(n) = names.get(i) else { return &[] };
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `n` is a live sockaddr_storage of at least `len` bytes; any byte is a u8.
    unsafe { std::slice::from_raw_parts((n as *const libc::sockaddr_storage).cast::<u8>(), len) }
}

/// One `sendmmsg` entry per run: the sender's address, the run's datagrams as iovecs
/// (the kernel joins them and cuts at `UDP_SEGMENT`), and the control message when the
/// run has more than one datagram.
fn gso_messages(
    runs: &[Run],
    batch: &[libc::mmsghdr],
    iovs: &[libc::iovec],
    names: &mut [libc::sockaddr_storage],
    out_iovs: &mut Vec<libc::iovec>,
    ctl: &mut [[u64; 4]],
) -> Vec<libc::mmsghdr> {
    out_iovs.clear();
    for run in runs {
        for &i in &run.members {
            if let Some(v) = iovs.get(i) {
                out_iovs.push(*v);
            }
        }
    }
    let mut out = Vec::with_capacity(runs.len());
    let mut at = 0usize;
    for (run, c) in runs.iter().zip(ctl.iter_mut()) {
        // SAFETY: all-zero is a valid mmsghdr.
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let namelen = batch.get(run.first).map_or(0, |b| b.msg_hdr.msg_namelen);
        if let Some(name) = names.get_mut(run.first) {
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = namelen;
        }
        m.msg_hdr.msg_iov = out_iovs.as_mut_ptr().wrapping_add(at);
        m.msg_hdr.msg_iovlen = run.members.len();
        at += run.members.len();
        if run.members.len() > 1 {
            let space = unsafe { libc::CMSG_SPACE(2) } as usize;
            m.msg_hdr.msg_control = c.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = space;
            // SAFETY: the control buffer is 32 bytes, aligned for cmsghdr, and `space`
            // (CMSG_SPACE of a u16) fits it; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
            unsafe {
                let h = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                (*h).cmsg_level = libc::SOL_UDP;
                (*h).cmsg_type = UDP_SEGMENT;
                (*h).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(h).cast::<u16>(), run.size as u16);
            }
        }
        out.push(m);
    }
    out
}

/// `UDP_SEGMENT` from linux/udp.h.
const UDP_SEGMENT: libc::c_int = 103;
