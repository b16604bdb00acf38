//! A viewer over direct UDP: str0m (full ICE, recvonly H.264) with one host candidate on
//! its own socket, as a browser on the server's network. The signaling is the server's
//! own: the gateway answers the viewer's offer on its Geti-style endpoint; Janus's
//! streaming plugin makes the offer and the viewer answers ([`crate::janus`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{anyhow, Context as _};
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::client::{feed, new_rtc, offer_to_gateway, run_timers, Progress};
use super::count::{Counter, Stats};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// A viewer past signaling: its WebRTC state and its socket.
pub(crate) struct Joined {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    /// The only address datagrams go to and are taken from: the server's.
    server_ip: IpAddr,
}

/// A str0m client with a host candidate on a fresh socket on `local_ip`.
async fn client(local_ip: IpAddr) -> anyhow::Result<(Rtc, UdpSocket, SocketAddr)> {
    let sock = UdpSocket::bind((local_ip, 0)).await?;
    let local = sock.local_addr()?;
    let rtc = new_rtc(Candidate::host(local, "udp").map_err(|e| anyhow!("{e}"))?);
    Ok((rtc, sock, local))
}

/// The gateway: the viewer offers to `/api/v1/projects/default/offer` (the Geti client's
/// request, its own `webrtc_id`), the gateway answers.
pub(crate) async fn join_gateway(
    http_addr: SocketAddr,
    local_ip: IpAddr,
    server_ip: IpAddr,
    webrtc_id: &str,
) -> anyhow::Result<Joined> {
    join_gateway_stream(http_addr, local_ip, server_ip, "default", webrtc_id).await
}

/// [`join_gateway`] for the stream (project id) `stream`.
pub(crate) async fn join_gateway_stream(
    http_addr: SocketAddr,
    local_ip: IpAddr,
    server_ip: IpAddr,
    stream: &str,
    webrtc_id: &str,
) -> anyhow::Result<Joined> {
    let (mut rtc, sock, local) = client(local_ip).await?;
    offer_to_gateway(&mut rtc, http_addr, stream, webrtc_id).await?;
    Ok(Joined {
        rtc,
        sock,
        local,
        server_ip,
    })
}

/// A viewer answering a server's offer (Janus): returns the answer SDP to send back.
pub(super) async fn answer_offer(
    offer: &str,
    local_ip: IpAddr,
    server_ip: IpAddr,
) -> anyhow::Result<(Joined, String)> {
    let (mut rtc, sock, local) = client(local_ip).await?;
    let offer = SdpOffer::from_sdp_string(offer).map_err(|e| anyhow!("offer SDP: {e}"))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| anyhow!("answering the offer: {e}"))?;
    Ok((
        Joined {
            rtc,
            sock,
            local,
            server_ip,
        },
        answer.to_sdp_string(),
    ))
}

impl Joined {
    /// The str0m client, its socket and the socket's address, for a caller with a receive
    /// loop of its own (the RTP join part).
    pub(crate) fn into_parts(self) -> (Rtc, UdpSocket, SocketAddr) {
        (self.rtc, self.sock, self.local)
    }

    /// Moves str0m's datagrams until `stop`, counting frames and RTP sequence numbers into
    /// `stats`. The join permit is given back at the first frame.
    pub(super) async fn pump(
        mut self,
        start: Instant,
        stats: &Stats,
        stop: &mut watch::Receiver<bool>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        let mut progress = Progress::new(stats, start, permit);
        let mut counter = Counter::default();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sends: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        loop {
            let server_ip = self.server_ip;
            let next = progress.drain(&mut self.rtc, |to, data| {
                // Only to the server: an SDP could name any address.
                if to.ip() == server_ip {
                    sends.push((to, data.to_vec()));
                }
            })?;
            for (to, data) in sends.drain(..) {
                let _ = self.sock.send_to(&data, to).await;
            }
            if *stop.borrow() {
                return Ok(());
            }
            let wake = progress.wake(&self.rtc, next)?;
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, source) = r.context("receiving")?;
                    let p = buf.get(..n).unwrap_or_default();
                    if source.ip() != self.server_ip {
                        continue;
                    }
                    counter.on_datagram(p);
                    counter.publish(stats);
                    feed(&mut self.rtc, self.local, source, p)?;
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = stop.changed() => return Ok(()),
            };
            run_timers(&mut self.rtc, next)?;
        }
    }
}
