//! One TURN client over a byte stream (TCP or TLS): frames in, replies and relayed data
//! out, peer datagrams from the allocation's relay socket, timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UdpSocket;

use super::inprocess::{self, Route, ToMedia};
use super::limits::ConnectionSlot;
use super::outbox::{ClientStream, Outbox};
use super::ports::SocketPorts;
use super::{now, wake_at, Context, IoStats};
use crate::core::{BadInput, Client, ClientOutput, FiveTuple, PeerOutput, Transport};
use crate::framer::{Frame, Framer};

/// Most peer datagrams handled per wake-up before writing to the client, so one busy
/// allocation cannot starve its own control messages.
const PEER_BATCH: usize = 64;

pub(crate) async fn serve(
    mut s: ClientStream,
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
    let mut outbox = Outbox::for_stream(&s);
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
    s.shutdown().await;
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
async fn client_io(s: &mut ClientStream, outbox: &mut Outbox, framer: &mut Framer) -> ClientIo {
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
