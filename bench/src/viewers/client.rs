//! The str0m side every bench viewer shares, whatever carries its datagrams (ChannelData on
//! a TURN/TLS connection, or a UDP socket of its own): the client's configuration, the offer
//! to the gateway's Geti-style endpoint, feeding datagrams, draining output, and the
//! first-frame deadline.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::sync::OwnedSemaphorePermit;

use super::count::Stats;
use super::FIRST_FRAME_TIMEOUT;
use crate::http::{http, snippet};

/// A str0m client (full ICE, H.264 only) whose only local candidate is `candidate`.
pub(super) fn new_rtc(candidate: Candidate) -> Rtc {
    let mut rtc = RtcConfig::new()
        .set_ice_lite(false)
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    rtc.add_local_candidate(candidate);
    rtc
}

/// Offers recvonly video to the gateway's `/api/v1/projects/{project}/offer` (the Geti
/// client's request, with its own `webrtc_id`) and applies the answer; returns the answer
/// SDP.
pub(super) async fn offer_to_gateway(
    rtc: &mut Rtc,
    http_addr: SocketAddr,
    project: &str,
    webrtc_id: &str,
) -> anyhow::Result<String> {
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("str0m made no offer")?;
    let body = serde_json::json!({
        "webrtc_id": webrtc_id,
        "sdp": offer.to_sdp_string(),
        "type": "offer",
    })
    .to_string();
    let path = format!("/api/v1/projects/{project}/offer");
    let (status, answer) = http(http_addr, "POST", &path, Some(&body)).await?;
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
    Ok(sdp.to_owned())
}

/// Hands str0m one datagram from `source`, received at `destination`.
pub(super) fn feed(
    rtc: &mut Rtc,
    destination: SocketAddr,
    source: SocketAddr,
    data: &[u8],
) -> anyhow::Result<()> {
    let Ok(contents) = data.try_into() else {
        return Ok(());
    };
    let input = Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source,
            destination,
            contents,
        },
    );
    if rtc.accepts(&input) {
        rtc.handle_input(input).map_err(|e| anyhow!("str0m: {e}"))?;
    }
    Ok(())
}

/// Gives str0m the time when its timer is due (`next`), even while data keeps arriving.
pub(super) fn run_timers(rtc: &mut Rtc, next: Instant) -> anyhow::Result<()> {
    let now = Instant::now();
    if now >= next {
        rtc.handle_input(Input::Timeout(now))
            .map_err(|e| anyhow!("str0m: {e}"))?;
    }
    Ok(())
}

/// One viewer's way to its first frame: its counters, its start, its join permit.
pub(super) struct Progress<'a> {
    pub(super) stats: &'a Stats,
    start: Instant,
    /// Given back at the first frame: the next viewer may start joining.
    permit: Option<OwnedSemaphorePermit>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(
        stats: &'a Stats,
        start: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            stats,
            start,
            permit,
        }
    }

    /// Polls str0m until it wants the time (returned): datagrams go to `transmit`, complete
    /// frames are counted. str0m wants this after every input: a DTLS Finished and the first
    /// SRTP packets can come together, and the keys exist only once the output after the
    /// Finished is polled.
    pub(super) fn drain(
        &mut self,
        rtc: &mut Rtc,
        mut transmit: impl FnMut(SocketAddr, &[u8]),
    ) -> anyhow::Result<Instant> {
        loop {
            match rtc.poll_output().map_err(|e| anyhow!("str0m: {e}"))? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => transmit(t.destination, &t.contents),
                Output::Event(Event::MediaData(_)) => {
                    self.stats.on_frame(self.start.elapsed());
                    drop(self.permit.take());
                }
                Output::Event(_) => {}
            }
        }
    }

    /// When to wake next: at str0m's `next`, or at the first-frame deadline while no frame
    /// came. Fails past that deadline, or when the session has closed.
    pub(super) fn wake(&self, rtc: &Rtc, next: Instant) -> anyhow::Result<Instant> {
        let first_deadline = self.start + FIRST_FRAME_TIMEOUT;
        let first_pending = self.stats.ttff().is_none();
        if first_pending && Instant::now() >= first_deadline {
            bail!("no frame within {FIRST_FRAME_TIMEOUT:?} of the viewer's start");
        }
        if !rtc.is_alive() {
            bail!("the WebRTC session closed");
        }
        Ok(if first_pending {
            next.min(first_deadline)
        } else {
            next
        })
    }
}
