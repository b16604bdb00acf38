//! The optional UDP listener (`TURN_UDP_LISTEN`). One task reads the listening socket and
//! hands each client's datagrams to that client's own task, which owns its [`Client`]
//! state and relay socket, exactly like a stream connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::inprocess::{self, Route, ToMedia};
use super::ports::SocketPorts;
use super::stats::IoStats;
use super::{now, wake_at, Context};
use crate::core::{Client, ClientOutput, FiveTuple, PeerOutput, Transport};

/// Datagrams queued per client before new ones are dropped (UDP semantics).
const CLIENT_QUEUE: usize = 256;

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
                let datagram = buf.split().freeze();
                if let Some(tx) = clients.get(&from) {
                    if tx.try_send(datagram).is_err() {
                        IoStats::inc(&ctx.stats.udp_dropped);
                    }
                    continue;
                }
                if clients.len() >= ctx.config.max_connections as usize {
                    IoStats::inc(&ctx.stats.udp_dropped);
                    continue;
                }
                let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                let _ = tx.try_send(datagram);
                clients.insert(from, tx);
                let tuple = FiveTuple { transport: Transport::Udp, client: from, server: local };
                let done = done_tx.clone();
                tokio::spawn(client_task(socket.clone(), tuple, rx, ctx.clone(), done));
            }
            Some(gone) = done_rx.recv() => {
                clients.remove(&gone);
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
) {
    let mut client = Client::new(ctx.shared.clone(), tuple);
    let mut ports = SocketPorts::new(ctx.addressing.clone(), tuple.server.ip());
    let mut route = Route::new(ctx.routes.clone());
    let mut out = Vec::with_capacity(2048);
    let mut peer_buf = vec![0u8; 65_536];
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
