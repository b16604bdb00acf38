//! One TURN client over a byte stream (TCP or TLS): frames in, replies and relayed data
//! out, peer datagrams from the allocation's relay socket, timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UdpSocket;

use super::inprocess::{self, Route, ToMedia};
use super::limits::ConnectionSlot;
use super::listener::IoStream;
use super::ports::SocketPorts;
use super::{now, wake_at, Context, IoStats};
use crate::core::{BadInput, Client, ClientOutput, FiveTuple, PeerOutput, Transport};
use crate::framer::{Frame, Framer};

/// Most peer datagrams handled per wake-up before writing to the client, so one busy
/// allocation cannot starve its own control messages.
const PEER_BATCH: usize = 64;
/// Most bytes queued for the client. While the client does not take them (its TCP window
/// is closed), its own reads pause and the relay socket is not read (the kernel drops what
/// peers send meanwhile: UDP semantics); below it the connection keeps relaying both ways.
const OUTBOX_LIMIT: usize = 256 * 1024;

pub(crate) async fn serve(
    mut s: Box<dyn IoStream>,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Context>,
    _slot: ConnectionSlot,
) {
    let tuple = FiveTuple {
        transport,
        client: remote,
        server: local,
    };
    let mut client = Client::new(ctx.shared.clone(), tuple);
    let mut ports = SocketPorts::new(ctx.addressing.clone(), local.ip());
    let mut route = Route::new(ctx.routes.clone());
    let mut framer = Framer::default();
    // Buffers start small or empty and grow with use: an idle allocation (most of them,
    // and every in-process one) costs no 64 KiB peer buffer.
    let mut peer_buf: Vec<u8> = Vec::new();
    let mut out = Vec::with_capacity(256);
    let mut outbox = Outbox::default();
    let mut sock: Option<Arc<UdpSocket>> = None;
    let waker = Arc::new(super::TaskWaker::default());
    client.set_waker(waker.clone());
    let mut shutdown = ctx.shutdown.clone();
    let mut last_client_activity = Instant::now();
    let opened = last_client_activity;
    let mut authenticated = false;
    tracing::debug!(%remote, transport = transport.as_str(), "TURN connection");

    // One timer for the connection's life, moved only when the deadline moves: a new
    // `sleep_until` per loop turn would insert into and remove from the timer wheel once
    // per relayed packet.
    let timer = tokio::time::sleep_until(Instant::now().into());
    tokio::pin!(timer);

    let reason = 'conn: loop {
        let idle_deadline =
            (client.relayed().is_none()).then(|| last_client_activity + ctx.config.idle_timeout);
        let unauth_deadline = super::unauthenticated_deadline(
            authenticated,
            opened,
            ctx.config.unauthenticated_timeout,
        );
        let idle_deadline = super::earliest(idle_deadline, unauth_deadline);
        let deadline = wake_at(
            client.poll_timeout(),
            idle_deadline,
            ctx.config.idle_timeout,
        );
        if timer.deadline().into_std() != deadline {
            timer.as_mut().reset(deadline.into());
        }
        tokio::select! {
            ev = client_io(&mut s, &mut outbox, &mut framer) => {
                let n = match ev {
                    ClientIo::WriteFailed => break 'conn "write error",
                    ClientIo::Read(Ok(0)) => break 'conn "closed by client",
                    ClientIo::Read(Ok(n)) => {
                        if n * 2 >= framer.capacity() {
                            // A busy stream filled most of the buffer: read more per call.
                            framer.grow(2 * n);
                        }
                        n
                    }
                    ClientIo::Read(Err(_)) => break 'conn "read error",
                };
                framer.advance(n);
                last_client_activity = Instant::now();
                let t = now();
                let media = ctx.local_media.load();
                let mut to_media = ToMedia::default();
                loop {
                    let frame = match framer.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "framing error");
                            ctx.shared.bad_input(remote.ip(), BadInput::Framing, t.mono);
                            break 'conn "framing error";
                        }
                    };
                    let bytes = match frame {
                        Frame::Stun(b) | Frame::ChannelData(b) => b,
                    };
                    match client.on_client(bytes, t, &mut ports, &mut out) {
                        ClientOutput::None => {}
                        ClientOutput::Reply => outbox.push(&out),
                        ClientOutput::ToPeer { relayed, peer, data } => match media.as_deref() {
                            // The gateway's own media: in-process, no socket.
                            Some(m) if m.0.is_local(peer) => {
                                to_media.note(m.0.deliver(relayed, peer, data), data.len());
                            }
                            _ => {
                                // Queued with its neighbours for the same peer; out below.
                                ports.queue_to(data, peer);
                            }
                        },
                        ClientOutput::Close => break 'conn "protocol error",
                    }
                }
                authenticated |= client.authenticated();
                ports.flush();
                to_media.flush(&ctx.stats);
                if media.is_some() {
                    route.sync(client.relayed());
                }
                if !same_socket(&sock, &ports.socket) {
                    sock = ports.socket.clone();
                    if sock.is_some() && peer_buf.is_empty() {
                        // Room for any UDP datagram a peer can send.
                        peer_buf.resize(65_536, 0);
                    }
                }
            }
            d = inprocess::recv(&mut route), if !outbox.is_full() => {
                let t = now();
                let mut next = d;
                for taken in 1..=PEER_BATCH {
                    let Some((peer, data)) = next else { break };
                    if client.on_peer(peer, &data, t, &mut out) == PeerOutput::Forward {
                        outbox.push(&out);
                    }
                    // Stop before taking one more, never after: a datagram taken and
                    // not handled would be lost.
                    if outbox.is_full() || taken == PEER_BATCH {
                        break;
                    }
                    next = route.rx.as_mut().and_then(|rx| rx.try_recv().ok());
                }
            }
            r = recv_peer(&sock, &mut peer_buf), if !outbox.is_full() => {
                let t = now();
                let mut next = r;
                for taken in 1..=PEER_BATCH {
                    let Ok((n, peer)) = next else { break };
                    let data = peer_buf.get(..n).unwrap_or_default();
                    if client.on_peer(peer, data, t, &mut out) == PeerOutput::Forward {
                        outbox.push(&out);
                    }
                    if outbox.is_full() || taken == PEER_BATCH {
                        break;
                    }
                    next = match &sock {
                        Some(s) => s.try_recv_from(&mut peer_buf),
                        None => break,
                    };
                }
            }
            _ = &mut timer => {
                let t = now();
                if unauth_deadline.is_some_and(|d| d <= t.mono) {
                    IoStats::inc(&ctx.stats.unauthenticated_timeouts);
                    break 'conn "not authenticated in time";
                }
                if idle_deadline.is_some_and(|d| d <= t.mono) {
                    break 'conn "idle";
                }
                client.handle_timeout(t, &mut ports);
                route.sync(client.relayed());
                if !same_socket(&sock, &ports.socket) {
                    sock = ports.socket.clone();
                }
            }
            _ = waker.0.notified() => {
                if client.check_revoked(now(), &mut ports) {
                    break 'conn "credential revoked";
                }
            }
            _ = super::shutting_down(&mut shutdown) => break 'conn "relay shutting down",
        }
        // Out at once what this turn produced, as far as the stream takes it; the rest
        // goes out from `client_io` as the stream drains.
        if outbox.write_now(&mut s).await.is_err() {
            break 'conn "write error";
        }
    };
    client.close(&mut ports);
    let _ = s.shutdown().await;
    tracing::debug!(%remote, reason, "TURN connection closed");
}

/// Why [`client_io`] returned.
enum ClientIo {
    /// Writing or flushing failed: the connection is gone.
    WriteFailed,
    /// A read completed with this many bytes (0: end of stream).
    Read(std::io::Result<usize>),
}

/// Drives the client stream: writes out (and then flushes) whatever the outbox holds as
/// the stream takes it, and reads into the framer, in one future on the one stream. Returns
/// when a read completes or a write fails; writing alone never wakes the connection loop.
/// Reading pauses while the outbox is full.
async fn client_io(
    s: &mut Box<dyn IoStream>,
    outbox: &mut Outbox,
    framer: &mut Framer,
) -> ClientIo {
    std::future::poll_fn(|cx| {
        if outbox.drive(s, cx).is_err() {
            return Poll::Ready(ClientIo::WriteFailed);
        }
        if outbox.is_full() {
            return Poll::Pending;
        }
        let mut rb = ReadBuf::new(framer.spare());
        match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(ClientIo::Read(r.map(|()| rb.filled().len()))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Bytes for the client, written as the stream takes them. Writing is one branch of the
/// connection's `select!` rather than a wait after each event, so a client that reads
/// slowly does not stop the allocation from draining its relay socket: datagrams queue
/// here (up to [`OUTBOX_LIMIT`]) instead of overflowing the socket's receive buffer.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Written since the last flush (TLS may hold a partial record until flushed).
    unflushed: bool,
}

impl Outbox {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn unsent(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn has_unsent(&self) -> bool {
        self.pos < self.buf.len()
    }

    fn is_full(&self) -> bool {
        self.buf.len() - self.pos >= OUTBOX_LIMIT
    }

    fn sent(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        self.unflushed = true;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= OUTBOX_LIMIT {
            // Keep the buffer from creeping: move the unsent tail to the front.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Writes and flushes as far as the stream takes it now, without waiting (the stream
    /// wakes the task when it can take more). `Err`: the stream failed.
    fn drive(&mut self, s: &mut Box<dyn IoStream>, cx: &mut TaskContext<'_>) -> Result<(), ()> {
        while self.has_unsent() {
            match Pin::new(&mut *s).poll_write(cx, self.unsent()) {
                Poll::Ready(Ok(n)) if n > 0 => self.sent(n),
                Poll::Ready(_) => return Err(()),
                Poll::Pending => return Ok(()),
            }
        }
        if self.needs_flush() {
            match Pin::new(&mut *s).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushed(),
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// [`Outbox::drive`] once, from async code.
    async fn write_now(&mut self, s: &mut Box<dyn IoStream>) -> Result<(), ()> {
        std::future::poll_fn(|cx| Poll::Ready(self.drive(s, cx))).await
    }

    fn needs_flush(&self) -> bool {
        self.unflushed && !self.has_unsent()
    }

    fn flushed(&mut self) {
        self.unflushed = false;
    }
}

fn same_socket(a: &Option<Arc<UdpSocket>>, b: &Option<Arc<UdpSocket>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Receives from the relay socket, or never completes when there is none.
async fn recv_peer(
    sock: &Option<Arc<UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_tracks_partial_writes_and_flushes() {
        let mut o = Outbox::default();
        assert!(!o.has_unsent() && !o.needs_flush() && !o.is_full());
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.unsent(), b"hello world");
        o.sent(6);
        assert_eq!(o.unsent(), b"world");
        assert!(!o.needs_flush(), "no flush while bytes are unsent");
        o.sent(5);
        assert!(!o.has_unsent() && o.needs_flush());
        assert!(o.buf.is_empty(), "a drained outbox starts over");
        o.flushed();
        assert!(!o.needs_flush());
        // A write longer than what is left cannot push the position past the end.
        o.push(b"x");
        o.sent(10);
        assert!(!o.has_unsent());
    }

    #[test]
    fn outbox_is_full_at_the_limit_and_compacts() {
        let mut o = Outbox::default();
        let chunk = vec![7u8; 1024];
        while !o.is_full() {
            o.push(&chunk);
        }
        assert_eq!(o.unsent().len(), OUTBOX_LIMIT);
        // Half written: room again, and the written half is kept until the limit.
        o.sent(OUTBOX_LIMIT / 2);
        assert!(!o.is_full());
        assert_eq!(o.unsent().len(), OUTBOX_LIMIT / 2);
        o.push(&chunk);
        o.sent(OUTBOX_LIMIT / 2);
        assert_eq!(
            o.pos, 0,
            "written bytes past the limit are dropped from the front"
        );
        assert_eq!(o.unsent(), &chunk[..]);
    }
}
