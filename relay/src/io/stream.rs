//! One TURN client over a byte stream (TCP or TLS): frames in, replies and relayed data
//! out, peer datagrams from the allocation's relay socket, timers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::inprocess::{self, Route, ToMedia};
use super::listener::{IoStream, Slot};
use super::ports::SocketPorts;
use super::{now, wake_at, Context};
use crate::core::{Client, ClientOutput, FiveTuple, PeerOutput, Transport};
use crate::framer::{Frame, Framer};

/// Most peer datagrams handled per wake-up before writing to the client, so one busy
/// allocation cannot starve its own control messages.
const PEER_BATCH: usize = 64;
/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 64 * 1024;

pub(crate) async fn serve(
    mut s: Box<dyn IoStream>,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Context>,
    _slot: Slot,
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
    let mut wbuf: Vec<u8> = Vec::new();
    let mut sock: Option<Arc<UdpSocket>> = None;
    let mut revocations = ctx.revocations.clone();
    let mut shutdown = ctx.shutdown.clone();
    let mut last_client_activity = Instant::now();
    tracing::debug!(%remote, transport = transport.as_str(), "TURN connection");

    let reason = 'conn: loop {
        let idle_deadline =
            (client.relayed().is_none()).then(|| last_client_activity + ctx.config.idle_timeout);
        let deadline = wake_at(
            client.poll_timeout(),
            idle_deadline,
            ctx.config.idle_timeout,
        );
        tokio::select! {
            r = s.read(framer.spare()) => {
                let n = match r {
                    Ok(0) => break 'conn "closed by client",
                    Ok(n) => n,
                    Err(_) => break 'conn "read error",
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
                            break 'conn "framing error";
                        }
                    };
                    let bytes = match frame {
                        Frame::Stun(b) | Frame::ChannelData(b) => b,
                    };
                    match client.on_client(bytes, t, &mut ports, &mut out) {
                        ClientOutput::None => {}
                        ClientOutput::Reply => wbuf.extend_from_slice(&out),
                        ClientOutput::ToPeer { relayed, peer, data } => match media.as_deref() {
                            // The gateway's own media: in-process, no socket.
                            Some(m) if m.0.is_local(peer) => {
                                to_media.note(m.0.deliver(relayed, peer, data), data.len());
                            }
                            _ => {
                                // UDP semantics: a full socket buffer drops the datagram.
                                ports.send_to(data, peer);
                            }
                        },
                        ClientOutput::Close => break 'conn "protocol error",
                    }
                }
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
            d = inprocess::recv(&mut route) => {
                let t = now();
                let mut next = d;
                for _ in 0..PEER_BATCH {
                    let Some((peer, data)) = next else { break };
                    if client.on_peer(peer, &data, t, &mut out) == PeerOutput::Forward {
                        wbuf.extend_from_slice(&out);
                    }
                    if wbuf.len() >= WRITE_HIGH_WATER {
                        break;
                    }
                    next = route.rx.as_mut().and_then(|rx| rx.try_recv().ok());
                }
            }
            r = recv_peer(&sock, &mut peer_buf) => {
                let t = now();
                let mut next = r;
                for _ in 0..PEER_BATCH {
                    let Ok((n, peer)) = next else { break };
                    let data = peer_buf.get(..n).unwrap_or_default();
                    if client.on_peer(peer, data, t, &mut out) == PeerOutput::Forward {
                        wbuf.extend_from_slice(&out);
                    }
                    if wbuf.len() >= WRITE_HIGH_WATER {
                        break;
                    }
                    next = match &sock {
                        Some(s) => s.try_recv_from(&mut peer_buf),
                        None => break,
                    };
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let t = now();
                if idle_deadline.is_some_and(|d| d <= t.mono) {
                    break 'conn "idle";
                }
                client.handle_timeout(t, &mut ports);
                route.sync(client.relayed());
                if !same_socket(&sock, &ports.socket) {
                    sock = ports.socket.clone();
                }
            }
            r = revocations.changed(), if client.user().is_some() => {
                if r.is_err() {
                    break 'conn "relay stopped";
                }
                if client.check_revoked(now(), &mut ports) {
                    break 'conn "credential revoked";
                }
            }
            _ = super::shutting_down(&mut shutdown) => break 'conn "relay shutting down",
        }
        if !wbuf.is_empty() {
            let r = async {
                s.write_all(&wbuf).await?;
                s.flush().await
            }
            .await;
            wbuf.clear();
            if r.is_err() {
                break 'conn "write error";
            }
        }
    };
    client.close(&mut ports);
    let _ = s.shutdown().await;
    tracing::debug!(%remote, reason, "TURN connection closed");
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
