//! The optional UDP listener (`TURN_UDP_LISTEN`). One task reads the listening socket and
//! hands each client's datagrams to that client's own task, which owns its [`Client`]
//! state and relay socket, exactly like a stream connection.
//!
//! UDP sources are free to forge, so the listener parses before it allocates: a datagram
//! from a source without a client is dropped (and counted as bad input) unless it is a
//! plausible STUN request, and a new client takes a place under the same per-source (IPv4
//! address or IPv6 /64) and total caps as stream connections ([`ConnectionLimits`]). A
//! client costs no 64 KiB peer buffer until its allocation has a relay socket to read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::inprocess::{self, Route, ToMedia};
use super::limits::ConnectionSlot;
use super::ports::SocketPorts;
use super::stats::IoStats;
use super::{now, wake_at, Context};
use crate::core::{BadInput, Client, ClientOutput, FiveTuple, PeerOutput, Transport};

/// Datagrams queued per client before new ones are dropped (UDP semantics).
const CLIENT_QUEUE: usize = 256;

/// The STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Whether `d` can be the first datagram of a TURN client: a whole STUN request (the
/// first two bits zero, request class, the magic cookie, a length that is a multiple of
/// four and matches the datagram). Looks at the 20-byte header only.
pub(crate) fn plausible_stun_request(d: &[u8]) -> bool {
    let Some(h) = d.first_chunk::<20>() else {
        return false;
    };
    let mtype = u16::from_be_bytes([h[0], h[1]]);
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    mtype & 0xC000 == 0
        && mtype & 0x0110 == 0
        && h[4..8] == MAGIC_COOKIE
        && len % 4 == 0
        && d.len() == 20 + len
}

pub(crate) async fn serve(socket: Arc<UdpSocket>, ctx: Arc<Context>) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    loop {
        if buf.capacity() < 65_536 {
            buf = BytesMut::with_capacity(256 * 1024);
        }
        tokio::select! {
            r = socket.recv_buf_from(&mut buf) => {
                let Ok((_, from)) = r else { continue };
                if let Some(tx) = clients.get(&from) {
                    let datagram = buf.split().freeze();
                    if tx.try_send(datagram).is_err() {
                        IoStats::inc(&ctx.stats.udp_dropped);
                    }
                    continue;
                }
                // A new source: look before spending anything on it.
                if !plausible_stun_request(&buf) {
                    buf.clear();
                    ctx.shared.bad_input(from.ip(), BadInput::UdpNotStun, Instant::now());
                    continue;
                }
                let slot = match ctx.limits.acquire(from.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        buf.clear();
                        IoStats::inc(&ctx.stats.connections_refused);
                        tracing::debug!(%from, %why, "UDP client refused");
                        continue;
                    }
                };
                // Its own small copy: a queued first datagram must not pin the shared
                // 256 KiB receive chunk.
                let datagram = Bytes::copy_from_slice(&buf);
                buf.clear();
                let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                let _ = tx.try_send(datagram);
                clients.insert(from, tx);
                let tuple = FiveTuple { transport: Transport::Udp, client: from, server: local };
                let done = done_tx.clone();
                ctx.stats.udp_clients.fetch_add(1, Relaxed);
                tokio::spawn(client_task(socket.clone(), tuple, rx, ctx.clone(), done, slot));
            }
            Some(gone) = done_rx.recv() => {
                clients.remove(&gone);
                ctx.stats.udp_clients.fetch_sub(1, Relaxed);
            }
        }
    }
}

async fn client_task(
    socket: Arc<UdpSocket>,
    tuple: FiveTuple,
    mut rx: mpsc::Receiver<Bytes>,
    ctx: Arc<Context>,
    done: mpsc::UnboundedSender<SocketAddr>,
    _slot: ConnectionSlot,
) {
    let mut client = Client::new(ctx.shared.clone(), tuple);
    let mut ports = SocketPorts::new(ctx.addressing.clone(), tuple.server.ip());
    let mut route = Route::new(ctx.routes.clone());
    // Both grow with use: a client that never gets a relay socket costs no 64 KiB.
    let mut out = Vec::new();
    let mut peer_buf: Vec<u8> = Vec::new();
    let waker = Arc::new(super::TaskWaker::default());
    client.set_waker(waker.clone());
    let mut shutdown = ctx.shutdown.clone();
    let mut last = Instant::now();
    let opened = last;
    let mut authenticated = false;
    loop {
        let unauth = super::unauthenticated_deadline(
            authenticated,
            opened,
            ctx.config.unauthenticated_timeout,
        );
        let idle = (client.relayed().is_none()).then(|| last + ctx.config.idle_timeout);
        let idle = super::earliest(idle, unauth);
        let deadline = wake_at(client.poll_timeout(), idle, ctx.config.idle_timeout);
        let sock = ports.socket.clone();
        if sock.is_some() && peer_buf.is_empty() {
            // Room for any UDP datagram a peer can send.
            peer_buf.resize(65_536, 0);
        }
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break };
                last = Instant::now();
                let output = client.on_client(&d, now(), &mut ports, &mut out);
                authenticated |= client.authenticated();
                match output {
                    ClientOutput::None => {}
                    ClientOutput::Reply => { let _ = socket.try_send_to(&out, tuple.client); }
                    ClientOutput::ToPeer { relayed, peer, data } => match ctx.local_media.load().as_deref() {
                        Some(m) if m.0.is_local(peer) => {
                            let mut to_media = ToMedia::default();
                            to_media.note(m.0.deliver(relayed, peer, data), data.len());
                            to_media.flush(&ctx.stats);
                        }
                        _ => {
                            ports.send_to(data, peer);
                        }
                    },
                    ClientOutput::Close => break,
                }
                if ctx.local_media.load().is_some() {
                    route.sync(client.relayed());
                }
            }
            d = inprocess::recv(&mut route) => {
                if let Some((peer, data)) = d {
                    if client.on_peer(peer, &data, now(), &mut out) == PeerOutput::Forward {
                        let _ = socket.try_send_to(&out, tuple.client);
                    }
                }
            }
            r = async {
                match &sock { Some(s) => s.recv_from(&mut peer_buf).await, None => std::future::pending().await }
            } => {
                if let Ok((n, peer)) = r {
                    let data = peer_buf.get(..n).unwrap_or_default();
                    if client.on_peer(peer, data, now(), &mut out) == PeerOutput::Forward {
                        let _ = socket.try_send_to(&out, tuple.client);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let t = now();
                if unauth.is_some_and(|d| d <= t.mono) {
                    IoStats::inc(&ctx.stats.unauthenticated_timeouts);
                    break;
                }
                if idle.is_some_and(|d| d <= t.mono) { break; }
                client.handle_timeout(t, &mut ports);
                route.sync(client.relayed());
            }
            _ = waker.0.notified() => {
                if client.check_revoked(now(), &mut ports) { break; }
            }
            _ = super::shutting_down(&mut shutdown) => break,
        }
    }
    client.close(&mut ports);
    let _ = done.send(tuple.client);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(mtype: u16, len: u16) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&mtype.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[9; 12]);
        d.resize(20 + usize::from(len), 0);
        d
    }

    #[test]
    fn only_whole_stun_requests_make_a_client() {
        assert!(plausible_stun_request(&header(0x0001, 0))); // Binding request
        assert!(plausible_stun_request(&header(0x0003, 8))); // Allocate request
        assert!(!plausible_stun_request(&header(0x0011, 0))); // indication
        assert!(!plausible_stun_request(&header(0x0101, 0))); // success response
        assert!(!plausible_stun_request(&header(0x0111, 0))); // error response
        assert!(!plausible_stun_request(&header(0x4001, 0))); // ChannelData range
        let mut d = header(0x0001, 8);
        d.pop();
        assert!(!plausible_stun_request(&d), "shorter than its length");
        let mut d = header(0x0001, 8);
        d.push(0);
        assert!(!plausible_stun_request(&d), "longer than its length");
        let mut d = header(0x0001, 0);
        d[4] = 0;
        assert!(!plausible_stun_request(&d), "no magic cookie");
        let mut d = header(0x0001, 0);
        d[3] = 2;
        d.extend_from_slice(&[0, 0]);
        assert!(!plausible_stun_request(&d), "length not a multiple of 4");
        assert!(!plausible_stun_request(&[0; 8]));
        assert!(!plausible_stun_request(&[]));
    }
}
