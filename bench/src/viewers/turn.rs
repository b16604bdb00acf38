//! A viewer whose only ICE candidate is a TURN/TLS allocation on the gateway's embedded
//! relay, as a relay-only browser.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use relay::framer::write_channel_data;
use serde_json::Value;
use str0m::{Candidate, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::client::{feed, new_rtc, offer_to_gateway, run_timers, Progress};
use super::count::{Counter, Stats};
use super::{Ctx, LOOPBACK};
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

    let cand = Candidate::relayed(relayed, SocketAddr::new(LOOPBACK, 0), "udp")
        .map_err(|e| anyhow!("relayed candidate {relayed}: {e}"))?;
    let mut rtc = new_rtc(cand);
    let answer = offer_to_gateway(&mut rtc, ctx.http, "bench", &session).await?;
    let remote = candidates(&answer);
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
        permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        let mut progress = Progress::new(stats, start, permit);
        let mut counter = Counter::default();
        let mut out = Vec::with_capacity(4096);
        for (source, data) in std::mem::take(&mut self.early) {
            counter.on_datagram(&data);
            feed(&mut self.rtc, self.relayed, source, &data)?;
            progress.drain(&mut self.rtc, |to, d| {
                to_channel(&self.peers, &mut out, to, d)
            })?;
        }
        counter.publish(stats);
        loop {
            let next = progress.drain(&mut self.rtc, |to, d| {
                to_channel(&self.peers, &mut out, to, d)
            })?;
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
            let wake = progress.wake(&self.rtc, next)?;
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
                self.on_frames(&mut counter, &mut progress, &mut out)?;
            }
            run_timers(&mut self.rtc, next)?;
        }
    }

    /// Feeds every complete ChannelData frame to str0m as a datagram from its channel's
    /// peer, draining str0m's output after each one (fed back to back, the SRTP packets
    /// that share a read with the DTLS Finished were dropped and the viewer waited ~2 s for
    /// a decodable frame).
    fn on_frames(
        &mut self,
        counter: &mut Counter,
        progress: &mut Progress<'_>,
        out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
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
            feed(&mut self.rtc, self.relayed, source, p)?;
            progress.drain(&mut self.rtc, |to, d| to_channel(&self.peers, out, to, d))?;
        }
        counter.publish(progress.stats);
        Ok(())
    }
}

/// ChannelData of `data` for `to` into `out`. Only the bound peers are ever named by the
/// answer; anything else is dropped (it would need a permission).
fn to_channel(peers: &[(u16, SocketAddr)], out: &mut Vec<u8>, to: SocketAddr, data: &[u8]) {
    if let Some((ch, _)) = peers.iter().find(|(_, a)| *a == to) {
        write_channel_data(out, *ch, data, true);
    }
}
