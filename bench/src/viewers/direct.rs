//! A viewer over direct UDP: str0m (full ICE, recvonly H.264) with one host candidate on
//! its own socket, as a browser on the server's network. The signaling is the server's
//! own: the gateway answers the viewer's offer on its Geti-style endpoint; Janus's
//! streaming plugin makes the offer and the viewer answers ([`crate::janus`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::count::{Counter, Stats};
use super::FIRST_FRAME_TIMEOUT;
use crate::http::{http, snippet};

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
    let mut rtc = RtcConfig::new()
        .set_ice_lite(false)
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| anyhow!("{e}"))?);
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
    let (mut rtc, sock, local) = client(local_ip).await?;
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("str0m made no offer")?;
    let body = serde_json::json!({
        "webrtc_id": webrtc_id,
        "sdp": offer.to_sdp_string(),
        "type": "offer",
    })
    .to_string();
    let (status, answer) = http(
        http_addr,
        "POST",
        "/api/v1/projects/default/offer",
        Some(&body),
    )
    .await?;
    if status != 200 {
        bail!("offer answered {status}: {}", snippet(&answer));
    }
    let answer: Value = serde_json::from_str(&answer).context("the answer is not JSON")?;
    let sdp = answer
        .get("sdp")
        .and_then(Value::as_str)
        .context("no sdp in the answer")?;
    let parsed = SdpAnswer::from_sdp_string(sdp).map_err(|e| anyhow!("answer SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, parsed)
        .map_err(|e| anyhow!("applying the answer: {e}"))?;
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
        mut permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        let first_deadline = start + FIRST_FRAME_TIMEOUT;
        let mut counter = Counter::default();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let next = loop {
                match self.rtc.poll_output().map_err(|e| anyhow!("str0m: {e}"))? {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        // Only to the server: an SDP could name any address.
                        if t.destination.ip() == self.server_ip {
                            let _ = self.sock.send_to(&t.contents, t.destination).await;
                        }
                    }
                    Output::Event(Event::MediaData(_)) => {
                        stats.on_frame(start.elapsed());
                        drop(permit.take());
                    }
                    Output::Event(_) => {}
                }
            };
            if *stop.borrow() {
                return Ok(());
            }
            let first_pending = stats.ttff().is_none();
            if first_pending && Instant::now() >= first_deadline {
                bail!("no frame within {FIRST_FRAME_TIMEOUT:?} of the viewer's start");
            }
            if !self.rtc.is_alive() {
                bail!("the WebRTC session closed");
            }
            let wake = if first_pending {
                next.min(first_deadline)
            } else {
                next
            };
            let input = tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, source) = r.context("receiving")?;
                    let p = buf.get(..n).unwrap_or_default();
                    if source.ip() != self.server_ip {
                        continue;
                    }
                    counter.on_datagram(p);
                    counter.publish(stats);
                    let Ok(contents) = p.try_into() else { continue };
                    Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    })
                }
                _ = tokio::time::sleep_until(wake.into()) => Input::Timeout(Instant::now()),
                _ = stop.changed() => return Ok(()),
            };
            if let Input::Receive(..) = &input {
                if !self.rtc.accepts(&input) {
                    continue;
                }
            }
            self.rtc
                .handle_input(input)
                .map_err(|e| anyhow!("str0m: {e}"))?;
            // Timers run even while data keeps arriving.
            let now = Instant::now();
            if now >= next {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(|e| anyhow!("str0m: {e}"))?;
            }
        }
    }
}
