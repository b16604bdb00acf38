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
        let mut done = 0;
        while done < got {
            let rest = msgs.get_mut(done..got).unwrap_or_default();
            // SAFETY: as above; each header now names its sender and the received length.
            let sent = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            match usize::try_from(sent) {
                Ok(0) | Err(_) => break,
                Ok(k) => done += k,
            }
        }
    }
}
