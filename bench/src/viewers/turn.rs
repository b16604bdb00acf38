//! A viewer whose only ICE candidate is a TURN/TLS allocation on the gateway's embedded
//! relay, as a relay-only browser.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use relay::framer::write_channel_data;
use serde_json::Value;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::count::{Counter, Stats};
use super::{Ctx, FIRST_FRAME_TIMEOUT, LOOPBACK};
use crate::conn::{self, Conn, Stream, Transport};
use crate::http::{http, snippet};
use relay::client::Origin;

/// First channel number bound (RFC 8656: 0x4000..=0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;
/// At most this many answer candidates get a channel (the gateway sends one or a few).
const MAX_PEERS: usize = 8;

/// Username, credential and port of the first `turns:` entry of a webrtc/config answer.
fn turns_entry(cfg: &Value) -> anyhow::Result<(String, String, u16)> {
    let servers = cfg
        .get("iceServers")
        .and_then(Value::as_array)
        .context("no iceServers in webrtc/config")?;
    for s in servers {
        let urls: Vec<&str> = match s.get("urls") {
            Some(Value::String(u)) => vec![u.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let Some(url) = urls.into_iter().find(|u| u.starts_with("turns:")) else {
            continue;
        };
        // turns:HOST:PORT?transport=tcp
        let port = auth::ice_url::strip_scheme(url, auth::ice_url::Scheme::Turns)
            .and_then(|rest| auth::ice_url::host_port(rest, 443))
            .map_or(0, |(_, p)| p);
        let user = s.get("username").and_then(Value::as_str);
        let cred = s.get("credential").and_then(Value::as_str);
        let (Some(user), Some(cred)) = (user, cred) else {
            bail!("the turns: entry has no username/credential");
        };
        return Ok((user.to_owned(), cred.to_owned(), port));
    }
    bail!("no turns: URL in the ICE servers of webrtc/config")
}

/// Addresses of the `a=candidate` lines of an SDP.
fn candidates(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

/// A viewer past signaling: its WebRTC state and its allocation with bound channels.
pub(super) struct Joined {
    rtc: Rtc,
    stream: Box<dyn Stream>,
    framer: relay::framer::Framer,
    relayed: SocketAddr,
    /// (channel, peer) per answer candidate.
    peers: Vec<(u16, SocketAddr)>,
    /// Datagrams (peer, bytes) relayed while the permissions and channels were set up:
    /// the server's first ICE checks and DTLS flight, which a browser would not drop.
    early: Vec<(SocketAddr, Vec<u8>)>,
}

/// Signaling and TURN: config, Allocate over TLS, offer/answer, permissions and channels.
pub(super) async fn join(ctx: &Ctx) -> anyhow::Result<Joined> {
    let (status, body) = http(ctx.http, "GET", "/api/v1/webrtc/config", None).await?;
    if status != 200 {
        bail!("webrtc/config answered {status}: {}", snippet(&body));
    }
    let cfg: Value = serde_json::from_str(&body).context("webrtc/config is not JSON")?;
    let session = cfg
        .get("sessionId")
        .and_then(Value::as_str)
        .context("no sessionId in webrtc/config")?
        .to_owned();
    let (user, cred, port) = turns_entry(&cfg)?;
    // The URL names TURN_HOST (the bench certificate's name); "DNS" says 127.0.0.1.
    let relay = SocketAddr::new(LOOPBACK, if port == 0 { ctx.turn.port() } else { port });
    let mut target = ctx
        .target
        .clone()
        .context("no TLS settings for the relay")?;
    target.tls = relay;
    let stream = conn::connect(&target, Transport::Tls).await?;
    let mut turn = Conn::with_credentials(stream, &user, &cred);
    let relayed = turn.allocate().await?;

    let mut rtc = RtcConfig::new()
        .set_ice_lite(false)
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let cand = Candidate::relayed(relayed, SocketAddr::new(LOOPBACK, 0), "udp")
        .map_err(|e| anyhow!("relayed candidate {relayed}: {e}"))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("str0m made no offer")?;
    let body = serde_json::json!({
        "webrtc_id": session,
        "sdp": offer.to_sdp_string(),
        "type": "offer",
    })
    .to_string();
    let (status, answer) = http(
        ctx.http,
        "POST",
        "/api/v1/projects/bench/offer",
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
    let remote = candidates(sdp);
    let parsed = SdpAnswer::from_sdp_string(sdp).map_err(|e| anyhow!("answer SDP: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, parsed)
        .map_err(|e| anyhow!("applying the answer: {e}"))?;
    let mut peers = Vec::new();
    for (ch, addr) in (FIRST_CHANNEL..).zip(remote.into_iter().take(MAX_PEERS)) {
        if !addr.ip().is_loopback() {
            bail!("the answer names {addr}, not a loopback address: not sending there");
        }
        turn.create_permission(addr).await?;
        turn.channel_bind(ch, addr).await?;
        peers.push((ch, addr));
    }
    if peers.is_empty() {
        bail!("the answer has no candidates");
    }
    let early = turn
        .take_received()
        .into_iter()
        .filter_map(|(origin, data)| {
            let from = match origin {
                Origin::Peer(a) => a,
                Origin::Channel(ch) => peers.iter().find(|(c, _)| *c == ch)?.1,
            };
            Some((from, data))
        })
        .collect();
    let (stream, framer) = turn.into_parts();
    Ok(Joined {
        rtc,
        stream,
        framer,
        relayed,
        peers,
        early,
    })
}

impl Joined {
    /// Moves str0m's datagrams through the allocation until `stop`, counting frames and RTP
    /// sequence numbers into `stats`. The join permit is given back at the first frame.
    pub(super) async fn pump(
        mut self,
        start: Instant,
        stats: &Stats,
        stop: &mut watch::Receiver<bool>,
        mut permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        let first_deadline = start + FIRST_FRAME_TIMEOUT;
        let mut counter = Counter::default();
        let mut out = Vec::with_capacity(4096);
        let mut sink = Sink {
            out: &mut out,
            stats,
            start,
            permit: &mut permit,
        };
        for (source, data) in std::mem::take(&mut self.early) {
            counter.on_datagram(&data);
            receive(&mut self.rtc, self.relayed, source, &data)?;
            drain(&mut self.rtc, &self.peers, &mut sink)?;
        }
        counter.publish(stats);
        loop {
            let mut sink = Sink {
                out: &mut out,
                stats,
                start,
                permit: &mut permit,
            };
            let next = drain(&mut self.rtc, &self.peers, &mut sink)?;
            if !out.is_empty() {
                let write = async {
                    self.stream.write_all(&out).await?;
                    self.stream.flush().await
                };
                tokio::time::timeout(conn::TIMEOUT, write)
                    .await
                    .map_err(|_| anyhow!("writing to the relay timed out"))?
                    .context("writing to the relay")?;
                out.clear();
            }
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
            let read = tokio::select! {
                r = self.stream.read(self.framer.read_buf()) => Some(r),
                _ = tokio::time::sleep_until(wake.into()) => None,
                _ = stop.changed() => return Ok(()),
            };
            if let Some(r) = read {
                let n = r.context("reading from the relay")?;
                if n == 0 {
                    bail!("the relay closed the connection");
                }
                self.framer.commit(n);
                let mut sink = Sink {
                    out: &mut out,
                    stats,
                    start,
                    permit: &mut permit,
                };
                self.on_frames(&mut counter, &mut sink)?;
            }
            // Timers run even while data keeps arriving.
            let now = Instant::now();
            if now >= next {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(|e| anyhow!("str0m: {e}"))?;
            }
        }
    }

    /// Feeds every complete ChannelData frame to str0m as a datagram from its channel's
    /// peer, draining str0m's output after each one (str0m's contract: a DTLS Finished and
    /// the first SRTP packets often come in one read, and the keys exist only once the
    /// output after the Finished is polled; fed back to back, the packets were dropped and
    /// the viewer waited ~2 s for a decodable frame).
    fn on_frames(&mut self, counter: &mut Counter, sink: &mut Sink<'_>) -> anyhow::Result<()> {
        while let Some(frame) = self
            .framer
            .next_frame()
            .map_err(|e| anyhow!("bad stream from the relay: {e}"))?
        {
            let (Some(ch), Some(p)) = (frame.channel(), frame.channel_payload()) else {
                continue; // STUN (e.g. a Data indication): not used here
            };
            let Some(&(_, source)) = self.peers.iter().find(|(c, _)| *c == ch) else {
                continue;
            };
            counter.on_datagram(p);
            receive(&mut self.rtc, self.relayed, source, p)?;
            drain(&mut self.rtc, &self.peers, sink)?;
        }
        counter.publish(sink.stats);
        Ok(())
    }
}

/// Where str0m's output goes: ChannelData to write, frames to count.
struct Sink<'a> {
    out: &'a mut Vec<u8>,
    stats: &'a Stats,
    start: Instant,
    /// The join permit, given back at the first frame (the next viewer may start joining).
    permit: &'a mut Option<OwnedSemaphorePermit>,
}

/// Polls str0m until it has nothing more to say; returns when it next wants the time.
fn drain(
    rtc: &mut Rtc,
    peers: &[(u16, SocketAddr)],
    sink: &mut Sink<'_>,
) -> anyhow::Result<Instant> {
    loop {
        match rtc.poll_output().map_err(|e| anyhow!("str0m: {e}"))? {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                // Only the bound peers are ever named by the answer; anything else is dropped
                // (it would need a permission).
                if let Some((ch, _)) = peers.iter().find(|(_, a)| *a == t.destination) {
                    write_channel_data(sink.out, *ch, &t.contents, true);
                }
            }
            Output::Event(Event::MediaData(_)) => {
                sink.stats.on_frame(sink.start.elapsed());
                drop(sink.permit.take());
            }
            Output::Event(_) => {}
        }
    }
}

/// Hands str0m one datagram from `source`, received on the relayed address.
fn receive(
    rtc: &mut Rtc,
    relayed: SocketAddr,
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
            destination: relayed,
            contents,
        },
    );
    if rtc.accepts(&input) {
        rtc.handle_input(input).map_err(|e| anyhow!("str0m: {e}"))?;
    }
    Ok(())
}
