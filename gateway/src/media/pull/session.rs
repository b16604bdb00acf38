//! One pull session: a recvonly str0m peer (full ICE, the offerer) that receives an
//! upstream's video and publishes each frame to the stream's feed of its codec, until the
//! upstream stops sending or the connection fails.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::Uri;
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, RtcConfig};
use tokio::net::UdpSocket;

use super::signal::PeerAuth;
use super::signal::{self, Dialect, SignalError};
use crate::media::keyframe::KeyframePacer;
use crate::media::{EncodedFrame, VideoCodec, VideoFeeds};

/// Time from the answer to the first frame before the session counts as failed.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a connected upstream counts as gone.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The offer/answer exchange failed (the upstream's reason when it gave one).
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The upstream's answer or the connection did not work out.
    #[error("{0}")]
    Media(String),
    /// Nothing arrived in time.
    #[error("{0}")]
    Silent(&'static str),
}

fn media_err(e: impl std::fmt::Display) -> PullError {
    PullError::Media(e.to_string())
}

/// Where the upstream is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The offer dialect.
    pub dialect: Dialect,
    /// The endpoint (`http://…` or `https://…`).
    pub url: Uri,
    /// A sibling gateway node's pull presents itself (see [`PeerAuth`]).
    pub peer: Option<PeerAuth>,
}

/// The local address that routes to `url`'s host: our one host candidate.
async fn local_address_towards(url: &Uri) -> Result<SocketAddr, PullError> {
    let host = url.host().ok_or_else(|| media_err("the URL has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let remote = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| PullError::Signal(SignalError::Unreachable(format!("{host}: {e}"))))?
        .next()
        .ok_or_else(|| {
            PullError::Signal(SignalError::Unreachable(format!("{host}: no address")))
        })?;
    let probe = std::net::UdpSocket::bind(match remote {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    })
    .map_err(media_err)?;
    probe.connect(remote).map_err(media_err)?;
    Ok(SocketAddr::new(
        probe.local_addr().map_err(media_err)?.ip(),
        0,
    ))
}

/// Runs one session until it fails, or until `keep` says nobody wants it any more (`Ok`).
/// `on_live` is called once, at the first frame.
pub async fn run(
    upstream: &Upstream,
    feeds: &VideoFeeds,
    webrtc_id: &str,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    on_live: &mut (dyn FnMut() + Send),
    keep: &(dyn Fn() -> bool + Send + Sync),
) -> Result<(), PullError> {
    let sock = UdpSocket::bind(local_address_towards(&upstream.url).await?)
        .await
        .map_err(media_err)?;
    let local = sock.local_addr().map_err(media_err)?;
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(feeds.get(VideoCodec::H264).is_some())
        .enable_vp8(feeds.get(VideoCodec::Vp8).is_some())
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(media_err)?);
    let mut api = rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or_else(|| media_err("no offer to make"))?;
    let answer = signal::exchange(
        upstream.dialect,
        &upstream.url,
        &offer.to_sdp_string(),
        webrtc_id,
        upstream.peer.as_ref(),
        tls,
    )
    .await?;
    let sdp = SdpAnswer::from_sdp_string(&answer.sdp)
        .map_err(|e| media_err(format!("the upstream's answer is not SDP: {e}")))?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .map_err(|e| media_err(format!("the upstream's answer does not fit the offer: {e}")))?;

    let result = receive(&mut rtc, &sock, local, mid, feeds, on_live, keep).await;
    rtc.disconnect();
    if let Some(location) = &answer.location {
        signal::delete(location, tls).await;
    }
    result
}

async fn receive(
    rtc: &mut str0m::Rtc,
    sock: &UdpSocket,
    local: SocketAddr,
    mid: Mid,
    feeds: &VideoFeeds,
    on_live: &mut (dyn FnMut() + Send),
    keep: &(dyn Fn() -> bool + Send + Sync),
) -> Result<(), PullError> {
    let started = Instant::now();
    let mut last_frame: Option<Instant> = None;
    let mut pacer = KeyframePacer::new();
    // Frames are published from a keyframe on: after a gap, until the next one.
    let mut need_keyframe = true;
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output().map_err(media_err)? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = sock.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => {
                    return Err(media_err("ICE disconnected"));
                }
                Output::Event(Event::MediaData(d)) => {
                    let codec = match d.params.spec().codec {
                        Codec::H264 => VideoCodec::H264,
                        Codec::Vp8 => VideoCodec::Vp8,
                        _ => continue,
                    };
                    let Some(feed) = feeds.get(codec) else {
                        continue;
                    };
                    if !d.contiguous {
                        need_keyframe = true;
                    }
                    let keyframe = d.is_keyframe();
                    if need_keyframe && !keyframe {
                        continue;
                    }
                    need_keyframe = false;
                    if keyframe {
                        pacer.satisfied();
                    }
                    if last_frame.is_none() {
                        tracing::info!(?codec, "pull: first frame from the upstream");
                        on_live();
                    }
                    last_frame = Some(Instant::now());
                    feed.publish(EncodedFrame {
                        data: d.data.clone(),
                        keyframe,
                        rtp_time: d.time.rebase(str0m::media::Frequency::NINETY_KHZ).numer(),
                        captured: d.network_time,
                    });
                }
                Output::Event(_) => {}
            }
        };
        let now = Instant::now();
        if !keep() {
            return Ok(());
        }
        match last_frame {
            None if now > started + FIRST_FRAME_TIMEOUT => {
                return Err(PullError::Silent("no frame from the upstream"));
            }
            Some(t) if now > t + SILENCE_TIMEOUT => {
                return Err(PullError::Silent("the upstream stopped sending"));
            }
            _ => {}
        }
        // A viewer wants a keyframe (joined, lost packets), or we do: ask the upstream. A
        // request taken while the interval runs waits for it, never lost.
        pacer.take_from(feeds);
        if need_keyframe {
            pacer.want();
        }
        if pacer.due(now, last_frame.is_some()) {
            if let Some(mut w) = rtc.writer(mid) {
                if w.is_request_keyframe_possible(KeyframeRequestKind::Pli)
                    && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
                {
                    tracing::debug!("pull: keyframe requested from the upstream (PLI)");
                }
            }
        }
        let wake = timeout.min(now + Duration::from_millis(200));
        let input = tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, source) = r.map_err(media_err)?;
                let Some(data) = buf.get(..n) else { continue };
                let Ok(contents) = data.try_into() else { continue };
                Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                })
            }
            _ = tokio::time::sleep_until(wake.into()) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).map_err(media_err)?;
    }
}
