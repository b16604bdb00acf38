//! The str0m engine: one tokio task owns every `Rtc`; sockets and callers talk to it by channel.
//!
//! Why one task: str0m is sans-I/O and each `Rtc` is a plain state machine. Owning all of them
//! in one place means no locks on the media path, a single place that demultiplexes datagrams
//! (`Rtc::accepts`) and a single place that fans the shared frames out. Per-viewer work is small
//! (packetize + SRTP); the heavy part (encoding) happens once, in the source.
//!
//! # In-process transport (for the embedded TURN relay)
//!
//! When a browser's relayed candidate lives in our own TURN relay, the datagrams between the
//! relay and this engine need not touch a socket:
//!
//! * relay → engine: the relay calls [`MediaHandle::inject`] with the peer address it relays
//!   from (the allocation's relayed address) as `source` and one of our media addresses
//!   ([`MediaHandle::candidate_addrs`] or [`MediaHandle::local_addrs`]) as `dest`. The engine
//!   treats it exactly like a datagram read from that socket.
//! * engine → relay: the relay registers an [`InProcessSink`] with
//!   [`MediaHandle::set_in_process_sink`]. For every outgoing datagram the engine asks
//!   [`InProcessSink::owns`] whether the destination is one of the relay's in-process addresses;
//!   if so the datagram goes to [`InProcessSink::deliver`] instead of the UDP socket.
//!
//! The relay side is not implemented here; the hook is all the engine needs.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::ice_restart::{IcePatchOutcome, IceRestartAnswer, IceState, IfMatch, SdpFrag};
use super::keyframe::KeyframePacer;
use super::sdp_check::choose_codec;
use super::whip::WhipIngest;
use super::{
    EncodedFrame, MediaError, Published, StreamSet, VideoCodec, VideoSource, DEFAULT_STREAM,
};

/// Largest datagram we read; bigger ones are truncated (WebRTC stays below ~1200 bytes).
const RECV_BUF: usize = 2048;
/// Queue between socket readers / `inject` and the engine task.
const DATAGRAM_QUEUE: usize = 4096;
const COMMAND_QUEUE: usize = 256;
/// Frames of every feed, merged for the engine task (a few frame intervals' worth).
const FRAME_QUEUE: usize = 16;

/// The media sockets' port range (`WEBRTC_PORT_RANGE`): the gateway's one port-range type.
pub use relay::io::PortRange;

/// `WEBRTC_PORT_RANGE`'s default, `50000-50050`.
pub const DEFAULT_MEDIA_PORTS: PortRange = PortRange {
    min: 50000,
    max: 50050,
};

/// Media engine settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address the media sockets bind to. When it is unspecified (`0.0.0.0`), `advertise_ip`
    /// must be set, because a host candidate needs a concrete address.
    pub bind_ip: IpAddr,
    /// Ports to try, in order; the first free ones are taken.
    pub ports: PortRange,
    /// How many media sockets to bind (each becomes one host candidate per session).
    pub sockets: usize,
    /// The IP written into host candidates instead of the bound address (1:1 NAT, containers;
    /// `WEBRTC_ADVERTISE_IP`). The port stays the bound port.
    pub advertise_ip: Option<IpAddr>,
    /// A session that has not connected (ICE + DTLS) within this time is dropped.
    pub connect_timeout: Duration,
    /// Upper bound on concurrent sessions.
    pub max_sessions: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: DEFAULT_MEDIA_PORTS,
            sockets: 1,
            advertise_ip: None,
            connect_timeout: Duration::from_secs(30),
            max_sessions: 1000,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// [`MediaHandle::close`] was called.
    Closed,
    /// The peer closed DTLS (browser `pc.close()`, tab closed cleanly).
    PeerClosed,
    /// ICE consent lost after being connected: the browser stopped sending STUN checks
    /// (tab killed, network gone). This is the idle timeout of an ICE-lite server.
    IceDisconnected,
    /// ICE + DTLS did not complete within [`MediaConfig::connect_timeout`].
    ConnectTimeout,
    /// DTLS/SRTP or another protocol error; the text is for logs.
    Failed(String),
    /// A new WHIP publisher took the stream over (`takeover=true`, `WHIP_TAKEOVER`).
    TakenOver,
}

/// Notification that a session is gone, for the signaling layer (revoke TURN credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnded {
    /// The id given to [`MediaHandle::accept_offer`].
    pub session_id: String,
    /// Why it ended.
    pub reason: EndReason,
}

/// Receiver of the engine's outgoing datagrams for in-process peers (the TURN relay).
///
/// Both methods are called from the engine task for every outgoing datagram, so they must be
/// cheap and must not block: `owns` is a set lookup, `deliver` typically a `try_send` into the
/// relay's queue (dropping on overflow is fine, it is UDP).
pub trait InProcessSink: Send + Sync {
    /// Is `dest` an address the sink takes datagrams for (a relayed address of our own relay)?
    fn owns(&self, dest: SocketAddr) -> bool;
    /// Take a datagram the engine sends from `source` (one of its media addresses) to `dest`.
    /// The datagram is handed over, not copied: one allocation fewer per packet.
    fn deliver(&self, source: SocketAddr, dest: SocketAddr, data: Vec<u8>);
}

/// A fixed set of in-process addresses forwarding into a channel; handy for tests and as the
/// simplest possible relay binding.
pub struct ChannelSink {
    /// The addresses owned.
    pub addrs: HashSet<SocketAddr>,
    /// Where `(source, dest, datagram)` go.
    pub tx: mpsc::Sender<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl InProcessSink for ChannelSink {
    fn owns(&self, dest: SocketAddr) -> bool {
        self.addrs.contains(&dest)
    }
    fn deliver(&self, source: SocketAddr, dest: SocketAddr, data: Vec<u8>) {
        let _ = self.tx.try_send((source, dest, data));
    }
}

/// Entry point: binds the sockets and spawns the engine task.
pub struct MediaEngine;

impl MediaEngine {
    /// Bind the media sockets and start the engine, sending the frames of `streams` (a
    /// [`VideoFeeds`](super::VideoFeeds) or a [`VideoSource`] converts into the one stream
    /// [`DEFAULT_STREAM`]).
    ///
    /// Each viewer gets the feed of the first codec in its offer that its stream has.
    ///
    /// Must be called from within a tokio runtime. The engine runs until the last
    /// [`MediaHandle`] is dropped.
    pub fn start(
        config: MediaConfig,
        streams: impl Into<StreamSet>,
    ) -> Result<MediaHandle, MediaError> {
        let streams: StreamSet = streams.into();
        // Every feed of every stream, in one list the sessions index into; each stream
        // names its feeds (codec, index) in its own order of preference.
        let mut feeds: Vec<VideoSource> = Vec::new();
        let mut stream_feeds: HashMap<String, Vec<(VideoCodec, usize)>> = HashMap::new();
        for (name, set) in streams.iter() {
            if set.is_empty() {
                return Err(MediaError::Config(format!("stream {name:?} has no feed")));
            }
            let mine = stream_feeds.entry(name.to_owned()).or_default();
            for feed in set.iter() {
                mine.push((feed.codec(), feeds.len()));
                feeds.push(feed.clone());
            }
        }
        if feeds.is_empty() {
            return Err(MediaError::Config("the video source has no feed".into()));
        }
        let mut all_codecs: Vec<VideoCodec> = Vec::new();
        for f in &feeds {
            if !all_codecs.contains(&f.codec()) {
                all_codecs.push(f.codec());
            }
        }
        let public_ip = config.advertise_ip.unwrap_or(config.bind_ip);
        if public_ip.is_unspecified() {
            return Err(MediaError::Config(
                "bind_ip is unspecified: set advertise_ip so host candidates carry a real address"
                    .into(),
            ));
        }
        if config.sockets == 0 {
            return Err(MediaError::Config("sockets must be at least 1".into()));
        }
        let mut sockets = Vec::new();
        for port in config.ports.min..=config.ports.max {
            if sockets.len() == config.sockets {
                break;
            }
            let std_sock = match std::net::UdpSocket::bind(SocketAddr::new(config.bind_ip, port)) {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e.into()),
            };
            std_sock.set_nonblocking(true)?;
            let local = std_sock.local_addr()?;
            sockets.push(MediaSocket {
                udp: Arc::new(UdpSocket::from_std(std_sock)?),
                local,
                candidate: SocketAddr::new(public_ip, local.port()),
            });
        }
        if sockets.len() < config.sockets {
            return Err(MediaError::Config(format!(
                "only {} of {} media sockets could be bound in {}-{} on {}",
                sockets.len(),
                config.sockets,
                config.ports.min,
                config.ports.max,
                config.bind_ip
            )));
        }

        // One crypto provider and one DTLS certificate for all sessions: generating a key
        // pair per viewer costs CPU and buys nothing (each DTLS session has its own keys).
        let provider = Arc::new(str0m::crypto::from_feature_flags());
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| MediaError::Config("crypto provider cannot make a DTLS cert".into()))?;
        let mut rtc_config = RtcConfig::new()
            .set_ice_lite(true)
            .set_crypto_provider(provider)
            .set_dtls_cert(cert)
            .clear_codecs();
        // Every codec any stream has; the codec of each session is picked per offer among
        // its stream's.
        for codec in all_codecs.iter().copied() {
            match codec {
                VideoCodec::H264 => {
                    let codecs = rtc_config.codec_config();
                    // Constrained baseline first, plain baseline as a fallback match: our
                    // stream satisfies both. Packetization mode 1 only (FU-A / STAP-A).
                    codecs.add_h264(108.into(), Some(109.into()), true, 0x42e01f);
                    codecs.add_h264(127.into(), Some(121.into()), true, 0x42001f);
                }
                VideoCodec::Vp8 => rtc_config = rtc_config.enable_vp8(true),
            }
        }

        // Publishers (WHIP) send what their encoder makes: every H.264 profile str0m knows,
        // VP8, and Opus so that an audio m-line is answered (recvonly; the audio is dropped).
        let ingest_config = rtc_config
            .clone()
            .clear_codecs()
            .enable_h264(true)
            .enable_vp8(true)
            .enable_opus(true, false);

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (dgram_tx, dgram_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();

        let mut tasks: Vec<JoinHandle<()>> = sockets
            .iter()
            .map(|s| tokio::spawn(read_loop(s.udp.clone(), s.candidate, dgram_tx.clone())))
            .collect();
        // One forwarder per feed merges the feeds' frames into one queue for the engine task.
        let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
        for (i, feed) in feeds.iter().enumerate() {
            tasks.push(tokio::spawn(forward_frames(
                i,
                feed.subscribe(),
                frame_tx.clone(),
            )));
        }
        let shared = Arc::new(Shared {
            cmd_tx,
            dgram_tx,
            local_addrs: sockets.iter().map(|s| s.local).collect(),
            candidate_addrs: sockets.iter().map(|s| s.candidate).collect(),
            ended_rx: std::sync::Mutex::new(Some(ended_rx)),
            rtc_config,
            ingest_config,
            streams: stream_feeds,
            feeds: feeds.clone(),
            sdp_permits: Arc::new(tokio::sync::Semaphore::new(sdp_workers())),
        });
        tracing::info!(addrs = ?shared.local_addrs, advertised = ?shared.candidate_addrs, "media engine started");

        let engine = Engine {
            io: Io {
                sockets,
                sink: None,
            },
            sessions: Vec::new(),
            routes: HashMap::new(),
            wake: Instant::now() + IDLE_WAKE,
            frames: frame_rx,
            feeds,
            ended_tx,
            connect_timeout: config.connect_timeout,
            max_sessions: config.max_sessions,
            _tasks: AbortOnDrop(tasks),
        };
        tokio::spawn(engine.run(cmd_rx, dgram_rx));
        Ok(MediaHandle { shared })
    }
}

/// Cloneable handle to a running engine. The engine stops when the last handle is dropped.
#[derive(Clone)]
pub struct MediaHandle {
    shared: Arc<Shared>,
}

struct Shared {
    cmd_tx: mpsc::Sender<Command>,
    dgram_tx: mpsc::Sender<Datagram>,
    local_addrs: Vec<SocketAddr>,
    candidate_addrs: Vec<SocketAddr>,
    /// Session ends, for the one owner of sessions (taken once, see
    /// [`MediaHandle::take_ended`]).
    ended_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<SessionEnded>>>,
    rtc_config: RtcConfig,
    /// The configuration of publishers' sessions (WHIP ingest).
    ingest_config: RtcConfig,
    /// Each stream's feeds (codec, index into the engine's feeds), in its order of
    /// preference.
    streams: HashMap<String, Vec<(VideoCodec, usize)>>,
    /// Every feed (indexed as in `streams`), to see which deliver frames now.
    feeds: Vec<VideoSource>,
    /// Offers being parsed and answered at once ([`sdp_workers`]).
    sdp_permits: Arc<tokio::sync::Semaphore>,
}

impl MediaHandle {
    /// Accept a browser's SDP offer for a new session and return the SDP answer.
    ///
    /// The answer carries one host candidate per media socket, with the advertised IP. Errors
    /// are typed: [`MediaError::MalformedSdp`], [`MediaError::NoVideo`],
    /// [`MediaError::NoSupportedCodec`], [`MediaError::DuplicateSession`],
    /// [`MediaError::TooManySessions`].
    pub async fn accept_offer(
        &self,
        offer_sdp: &str,
        session_id: String,
    ) -> Result<String, MediaError> {
        self.accept_offer_for(DEFAULT_STREAM, offer_sdp, session_id)
            .await
    }

    /// [`MediaHandle::accept_offer`] for a viewer of `stream`
    /// ([`MediaError::UnknownStream`] when the engine has no such stream).
    pub async fn accept_offer_for(
        &self,
        stream: &str,
        offer_sdp: &str,
        session_id: String,
    ) -> Result<String, MediaError> {
        check_offer_bounds(offer_sdp)?;
        let stream_feeds = self
            .shared
            .streams
            .get(stream)
            .cloned()
            .ok_or_else(|| MediaError::UnknownStream(stream.to_owned()))?;
        // A feed that delivers frames now comes first: an ingest stream (WHIP, pull) carries
        // only the codec its publisher sends, and a viewer that takes both must get that one.
        let now = Instant::now();
        let stream_feeds = live_first(&stream_feeds, |i| {
            self.shared
                .feeds
                .get(i)
                .and_then(VideoSource::last_frame)
                .is_some_and(|t| now.saturating_duration_since(t) <= LIVE_FEED)
        });
        // Parsing and answering cost CPU in proportion to the offer (a 60 KB offer took
        // ~230 ms): it runs on the blocking pool, at most SDP_WORKERS at once, so parallel
        // hostile offers queue here instead of stalling the async workers. The permit goes
        // with the work: a caller that gives up does not free a slot still computing.
        let permit = self
            .shared
            .sdp_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MediaError::EngineStopped)?;
        let shared = self.shared.clone();
        let offer_sdp = offer_sdp.to_owned();
        // The session (its `Rtc` is ~10 KB) is built and boxed on the blocking pool: what
        // this future holds across its awaits stays small, and so do the HTTP handlers'
        // futures, which are allocated whole when a request arrives, before its body.
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (a, answer) = answer_offer(&shared, &stream_feeds, &offer_sdp)?;
            let role = Role::Viewer {
                video: (a.mid, a.pt),
                feed: a.feed,
            };
            Ok::<_, MediaError>((Session::new(session_id, a.rtc, a.ice, role), answer))
        });
        let (session, answer) = work
            .await
            .map_err(|_| MediaError::MalformedSdp("offer rejected (internal error)".into()))??;
        self.add_session(session).await?;
        Ok(answer)
    }

    /// Accept a WHIP publisher's offer (sendonly video, H.264 or VP8; an audio m-line is
    /// answered recvonly and its packets dropped) as the media session `session_id` of the
    /// stream `whip`, and return the SDP answer. The session publishes every frame it
    /// receives to the stream's feed of its codec and asks the publisher for keyframes
    /// (PLI, paced) when the stream's viewers want one. The stream takes one publisher:
    /// [`MediaError::StreamHasPublisher`] while another holds it.
    pub async fn accept_publish(
        &self,
        whip: Arc<WhipIngest>,
        offer_sdp: &str,
        session_id: String,
    ) -> Result<String, MediaError> {
        check_offer_bounds(offer_sdp)?;
        let permit = self
            .shared
            .sdp_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MediaError::EngineStopped)?;
        let shared = self.shared.clone();
        let offer_sdp = offer_sdp.to_owned();
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (rtc, mid, ice, answer) = answer_publish(&shared, &offer_sdp)?;
            let role = Role::Publisher(Box::new(Ingest {
                whip,
                mid,
                need_keyframe: true,
                pacer: KeyframePacer::new(),
            }));
            Ok::<_, MediaError>((Session::new(session_id, rtc, ice, role), answer))
        });
        let (session, answer) = work
            .await
            .map_err(|_| MediaError::MalformedSdp("offer rejected (internal error)".into()))??;
        self.add_session(session).await?;
        Ok(answer)
    }

    /// Hands a new session (viewer or publisher) to the engine task and waits until it is
    /// in place.
    async fn add_session(&self, session: Box<Session>) -> Result<(), MediaError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Add { session, reply }).await?;
        rx.await.map_err(|_| MediaError::EngineStopped)?
    }

    /// Add a trickled remote ICE candidate (`candidate:...`, with or without `a=`).
    ///
    /// An empty string (end of candidates) and mDNS (`*.local`) candidates are accepted and
    /// ignored: an ICE-lite server learns such peers as peer-reflexive from their checks.
    pub async fn add_remote_candidate(
        &self,
        session_id: &str,
        candidate: &str,
    ) -> Result<(), MediaError> {
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        let full = if line.starts_with("candidate:") {
            line.to_owned()
        } else {
            format!("candidate:{line}")
        };
        let cand = match Candidate::from_sdp_string(&full) {
            Ok(c) => Some(c),
            Err(_) if full.split_ascii_whitespace().any(|f| f.ends_with(".local")) => None,
            // Not the parser's text: it carries internal state (heap addresses).
            Err(_) => {
                return Err(MediaError::BadCandidate(
                    "the candidate does not parse".into(),
                ))
            }
        };
        let (reply, rx) = oneshot::channel();
        self.command(Command::AddCandidate {
            session_id: session_id.to_owned(),
            candidate: cand,
            reply,
        })
        .await?;
        rx.await.map_err(|_| MediaError::EngineStopped)?
    }

    /// Apply a WHEP/WHIP `PATCH` (RFC 9725 §4.3): `if_match` is the `If-Match` header (None
    /// when absent), `sdpfrag` the `application/trickle-ice-sdpfrag` body.
    ///
    /// New `a=ice-ufrag`/`a=ice-pwd` restart ICE ([`IcePatchOutcome::Restarted`]: answer
    /// `200` with its `sdpfrag` body and `ETag`); otherwise the candidates are trickled
    /// ([`IcePatchOutcome::Trickled`]: `204`). Errors: [`MediaError::MalformedSdpFrag`] (400),
    /// [`MediaError::IceSessionMismatch`] (412), [`MediaError::UnknownSession`] (404),
    /// [`MediaError::IceRestartFailed`] (500, the session lives on). See
    /// [`super::ice_restart`] for the protocol.
    pub async fn ice_patch(
        &self,
        session_id: &str,
        if_match: Option<&str>,
        sdpfrag: &str,
    ) -> Result<IcePatchOutcome, MediaError> {
        let frag = SdpFrag::parse(sdpfrag)?;
        self.ice_command(session_id, IfMatch::parse(if_match), frag)
            .await
    }

    /// Restart ICE for a session with the client's new credentials and candidates
    /// (`candidate:…` lines, with or without `a=`; at most
    /// [`super::ice_restart::MAX_SDPFRAG_CANDIDATES`]). Returns our new credentials, our
    /// candidates and the new ICE session's entity-tag. DTLS, SRTP and the media carry on;
    /// the new path takes over once the client's checks with the new credentials arrive.
    pub async fn restart_ice(
        &self,
        session_id: &str,
        remote_ufrag: &str,
        remote_pwd: &str,
        candidates: &[String],
    ) -> Result<IceRestartAnswer, MediaError> {
        if candidates.len() > super::ice_restart::MAX_SDPFRAG_CANDIDATES {
            return Err(MediaError::MalformedSdpFrag(format!(
                "more than {} candidates",
                super::ice_restart::MAX_SDPFRAG_CANDIDATES
            )));
        }
        let mut body = format!("a=ice-ufrag:{remote_ufrag}\r\na=ice-pwd:{remote_pwd}\r\n");
        for c in candidates {
            let c = c.trim();
            let c = c.strip_prefix("a=").unwrap_or(c);
            let c = c.strip_prefix("candidate:").unwrap_or(c);
            // One line each: a line break inside would smuggle in other attributes.
            if c.contains(['\r', '\n']) {
                return Err(MediaError::MalformedSdpFrag("candidate spans lines".into()));
            }
            body.push_str(&format!("a=candidate:{c}\r\n"));
        }
        let frag = SdpFrag::parse(&body)?;
        if frag.ice_ufrag.as_deref() != Some(remote_ufrag.trim()) || frag.ice_pwd.is_none() {
            return Err(MediaError::MalformedSdpFrag(
                "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
            ));
        }
        match self.ice_command(session_id, IfMatch::Any, frag).await? {
            IcePatchOutcome::Restarted(a) => Ok(a),
            // The credentials are the current ones: nothing to restart.
            IcePatchOutcome::Trickled => Err(MediaError::MalformedSdpFrag(
                "the ICE credentials are the current ones, not new".into(),
            )),
        }
    }

    async fn ice_command(
        &self,
        session_id: &str,
        if_match: IfMatch,
        frag: SdpFrag,
    ) -> Result<IcePatchOutcome, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::IcePatch {
            session_id: session_id.to_owned(),
            if_match,
            frag: Box::new(frag),
            reply,
        })
        .await?;
        rx.await.map_err(|_| MediaError::EngineStopped)?
    }

    /// End a session (WHEP DELETE). It is reported on [`MediaHandle::take_ended`] with
    /// [`EndReason::Closed`] too.
    pub async fn close(&self, session_id: &str) -> Result<(), MediaError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Close {
            session_id: session_id.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| MediaError::EngineStopped)?
    }

    /// Sessions that ended, for whatever reason: the receiver, for the one owner of
    /// sessions (the first caller; later calls get `None`). Unbounded, yet bounded by the
    /// sessions: each ends once. Unlike a broadcast it cannot lag and lose an end.
    pub fn take_ended(&self) -> Option<mpsc::UnboundedReceiver<SessionEnded>> {
        self.shared
            .ended_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The bound addresses of the media sockets.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.local_addrs
    }

    /// The addresses put into host candidates (advertised IP, bound port): the gateway's own
    /// media addresses as browsers and the TURN relay see them.
    pub fn candidate_addrs(&self) -> &[SocketAddr] {
        &self.shared.candidate_addrs
    }

    /// Hand the engine a datagram as if it had arrived on the media socket `dest` from
    /// `source` (in-process transport from the TURN relay; see the module docs).
    ///
    /// `dest` may be a candidate (advertised) or a bound address. Returns false when `dest` is
    /// not one of ours or the engine's queue is full (the datagram is dropped, as UDP would).
    pub fn inject(&self, source: SocketAddr, dest: SocketAddr, data: &[u8]) -> bool {
        let s = &self.shared;
        let Some(i) = (s.candidate_addrs.iter().position(|a| *a == dest))
            .or_else(|| s.local_addrs.iter().position(|a| *a == dest))
        else {
            return false;
        };
        // Bound addresses and candidates are parallel lists: socket i has both.
        let Some(&dest) = s.candidate_addrs.get(i) else {
            return false;
        };
        s.dgram_tx
            .try_send(Datagram {
                source,
                dest,
                data: data.to_vec(),
                at: Instant::now(),
            })
            .is_ok()
    }

    /// Route outgoing datagrams for in-process destinations to `sink` (None: sockets only).
    pub async fn set_in_process_sink(
        &self,
        sink: Option<Arc<dyn InProcessSink>>,
    ) -> Result<(), MediaError> {
        self.command(Command::SetSink(sink)).await
    }

    async fn command(&self, c: Command) -> Result<(), MediaError> {
        self.shared
            .cmd_tx
            .send(c)
            .await
            .map_err(|_| MediaError::EngineStopped)
    }
}

/// How recent a feed's last frame must be for it to count as delivering (see [`live_first`]).
const LIVE_FEED: Duration = Duration::from_secs(5);

/// A stream's feeds, those that deliver frames now (`live(index)`) first, each group in the
/// stream's order of preference.
fn live_first(
    stream: &[(VideoCodec, usize)],
    live: impl Fn(usize) -> bool,
) -> Vec<(VideoCodec, usize)> {
    let (mut first, rest): (Vec<_>, Vec<_>) = stream.iter().partition(|(_, i)| live(*i));
    first.extend(rest);
    first
}

/// Largest SDP offer taken, in bytes (browser offers are 3-10 KB).
pub const MAX_OFFER_BYTES: usize = 32 * 1024;
/// Most lines in an SDP offer.
pub const MAX_OFFER_LINES: usize = 1024;
/// Most media sections (`m=` lines) in an SDP offer (a viewer needs one or two).
pub const MAX_OFFER_MEDIA: usize = 16;
/// Most remote candidates trickled to one session per ICE generation (`add_remote_candidate`
/// and PATCH trickles; an ICE restart starts a new count). Each one costs the engine task
/// work in proportion to those already there.
pub const MAX_TRICKLED_CANDIDATES: usize = 64;

/// Offers parsed and answered at once (on the blocking pool): twice the cores.
fn sdp_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Refuses an offer over [`MAX_OFFER_BYTES`], [`MAX_OFFER_LINES`] or [`MAX_OFFER_MEDIA`]
/// before any parsing: counting is linear and cheap.
pub(super) fn check_offer_bounds(offer: &str) -> Result<(), MediaError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(MediaError::OfferTooLarge(format!(
            "{} bytes, at most {MAX_OFFER_BYTES}",
            offer.len()
        )));
    }
    let (mut lines, mut media) = (0usize, 0usize);
    for line in offer.split('\n') {
        lines += 1;
        if line.starts_with("m=") {
            media += 1;
        }
    }
    if lines > MAX_OFFER_LINES {
        return Err(MediaError::OfferTooLarge(format!(
            "more than {MAX_OFFER_LINES} lines"
        )));
    }
    if media > MAX_OFFER_MEDIA {
        return Err(MediaError::OfferTooLarge(format!(
            "{media} media sections (m= lines), at most {MAX_OFFER_MEDIA}"
        )));
    }
    Ok(())
}

/// What [`answer_offer`] hands back: a session's `Rtc` with the offer applied.
struct Answered {
    rtc: Rtc,
    mid: Mid,
    pt: Pt,
    feed: usize,
    ice: IceState,
}

/// The CPU-bound part of [`MediaHandle::accept_offer`] (runs on the blocking pool): parse
/// the offer, pick the codec, build the session's `Rtc` and answer.
fn answer_offer(
    shared: &Shared,
    stream: &[(VideoCodec, usize)],
    offer_sdp: &str,
) -> Result<(Answered, String), MediaError> {
    let offer = SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|e| unparsable_offer(offer_sdp, &e.to_string()))?;
    let codecs: Vec<VideoCodec> = stream.iter().map(|(c, _)| *c).collect();
    let codec = choose_codec(offer_sdp, &codecs)?;
    let feed = stream
        .iter()
        .find(|(c, _)| *c == codec)
        .map(|(_, i)| *i)
        .ok_or(MediaError::EngineStopped)?;
    let mut rtc = shared.rtc_config.clone().build(Instant::now());
    for addr in &shared.candidate_addrs {
        let c = Candidate::host(*addr, "udp")
            .map_err(|e| MediaError::Config(format!("host candidate {addr}: {e}")))?;
        rtc.add_local_candidate(c);
    }
    // str0m parses untrusted SDP here; a panic must cost this request, not the process.
    let answer = catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
        .map_err(|_| MediaError::MalformedSdp("offer rejected (internal error)".into()))?
        .map_err(refused_offer)?
        .to_sdp_string();
    let (mid, pt) = pick_video(&mut rtc, &answer, codec).ok_or_else(|| {
        MediaError::NoSupportedCodec(format!(
            "this stream sends {}; the offer's {} was not accepted for a sending video m-line",
            codec.requirement(),
            codec.sdp_name()
        ))
    })?;
    let ice = IceState::new(offer_sdp, &answer);
    Ok((
        Answered {
            rtc,
            mid,
            pt,
            feed,
            ice,
        },
        answer,
    ))
}

/// The CPU-bound part of [`MediaHandle::accept_publish`]: parse the publisher's offer,
/// answer it and find the video m-line we receive on.
fn answer_publish(
    shared: &Shared,
    offer_sdp: &str,
) -> Result<(Rtc, Mid, IceState, String), MediaError> {
    let offer = SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|e| unparsable_offer(offer_sdp, &e.to_string()))?;
    let mut rtc = shared.ingest_config.clone().build(Instant::now());
    for addr in &shared.candidate_addrs {
        let c = Candidate::host(*addr, "udp")
            .map_err(|e| MediaError::Config(format!("host candidate {addr}: {e}")))?;
        rtc.add_local_candidate(c);
    }
    let answer = catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
        .map_err(|_| MediaError::MalformedSdp("offer rejected (internal error)".into()))?
        .map_err(refused_offer)?
        .to_sdp_string();
    let mid = receiving_video(&mut rtc, &answer).ok_or_else(|| {
        MediaError::NothingToReceive(
            "a WHIP offer needs a video m-line the publisher sends (sendonly or sendrecv) \
             with H264 or VP8"
                .into(),
        )
    })?;
    let ice = IceState::new(offer_sdp, &answer);
    Ok((rtc, mid, ice, answer))
}

/// The first video m-line of `answer` we receive on, in H.264 or VP8.
fn receiving_video(rtc: &mut Rtc, answer: &str) -> Option<Mid> {
    let mids = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect::<Vec<_>>();
    mids.into_iter().find(|&mid| {
        let Some(media) = rtc.media(mid) else {
            return false;
        };
        if media.kind() != MediaKind::Video
            || !matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv)
        {
            return false;
        }
        rtc.writer(mid).is_some_and(|w| {
            w.payload_params()
                .any(|p| matches!(p.spec().codec, Codec::H264 | Codec::Vp8))
        })
    })
}

/// A clean refusal of an offer str0m cannot parse: where it failed, never the parser's own
/// text (combine's errors print positions as heap addresses, `PointerOffset(0x7f…)`).
pub(super) fn unparsable_offer(offer: &str, parser_error: &str) -> MediaError {
    let line = parse_error_offset(offer, parser_error)
        .and_then(|at| offer.as_bytes().get(..at))
        .map(|before| 1 + before.iter().filter(|b| **b == b'\n').count())
        .or_else(|| first_malformed_line(offer));
    MediaError::MalformedSdp(match line {
        Some(n) => format!("not valid SDP near line {n}"),
        None => "not valid SDP".into(),
    })
}

/// The byte offset into `offer` at which the parser stopped: its error names the position
/// as an address inside `offer` (the parser works on the caller's string in place). `None`
/// when the text has no such address.
fn parse_error_offset(offer: &str, parser_error: &str) -> Option<usize> {
    let start = parser_error.find("0x")? + 2;
    let hex: String = parser_error
        .get(start..)?
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let addr = usize::from_str_radix(&hex, 16).ok()?;
    let at = addr.checked_sub(offer.as_ptr() as usize)?;
    (at <= offer.len()).then_some(at)
}

/// The first line that is not `<letter>=<value>` (RFC 8866 §5), 1-based.
fn first_malformed_line(offer: &str) -> Option<usize> {
    offer
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .position(|l| {
            let well_formed = matches!(l.as_bytes(), [k, b'=', ..] if k.is_ascii_lowercase());
            !l.is_empty() && !well_formed
        })
        .map(|i| i + 1)
}

/// A clean refusal of a parsed offer that str0m would not accept. str0m's remote-SDP
/// reasons are short fixed or input-derived sentences and are kept; anything else (or any
/// text that looks like internal state) becomes a generic reason.
fn refused_offer(e: str0m::RtcError) -> MediaError {
    let reason = match &e {
        str0m::RtcError::RemoteSdp(s) => Some(s.as_str()),
        str0m::RtcError::Sdp(str0m::error::SdpError::Inconsistent(s)) => Some(s.as_str()),
        _ => None,
    };
    let clean = |s: &str| {
        s.len() <= 200
            && !s.contains("0x")
            && !s.contains("PointerOffset")
            && !s.chars().any(char::is_control)
    };
    MediaError::MalformedSdp(match reason {
        Some(s) if clean(s) => format!("the offer was refused: {s}"),
        _ => {
            tracing::debug!(error = %e, "SDP offer refused");
            "the offer was refused as inconsistent".into()
        }
    })
}

/// Find the video m-line we send on and the payload type to send with.
fn pick_video(rtc: &mut Rtc, answer: &str, codec: VideoCodec) -> Option<(Mid, Pt)> {
    let want = match codec {
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Vp8 => Codec::Vp8,
    };
    let mids = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect::<Vec<_>>();
    for mid in mids {
        let Some(media) = rtc.media(mid) else {
            continue;
        };
        if media.kind() != MediaKind::Video
            || !matches!(media.direction(), Direction::SendOnly | Direction::SendRecv)
        {
            continue;
        }
        let writer = rtc.writer(mid)?;
        let pt = writer
            .payload_params()
            .find(|p| {
                p.spec().codec == want
                    && (want != Codec::H264 || p.spec().format.packetization_mode == Some(1))
            })
            .map(|p| p.pt());
        if let Some(pt) = pt {
            return Some((mid, pt));
        }
    }
    None
}

enum Command {
    Add {
        session: Box<Session>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    AddCandidate {
        session_id: String,
        candidate: Option<Candidate>,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    Close {
        session_id: String,
        reply: oneshot::Sender<Result<(), MediaError>>,
    },
    SetSink(Option<Arc<dyn InProcessSink>>),
    IcePatch {
        session_id: String,
        if_match: IfMatch,
        frag: Box<SdpFrag>,
        reply: oneshot::Sender<Result<IcePatchOutcome, MediaError>>,
    },
}

/// A datagram for the engine: from a socket reader or injected.
struct Datagram {
    source: SocketAddr,
    /// The candidate address it arrived at (what str0m's ICE agent knows as local).
    dest: SocketAddr,
    data: Vec<u8>,
    at: Instant,
}

struct MediaSocket {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    candidate: SocketAddr,
}

async fn read_loop(sock: Arc<UdpSocket>, candidate: SocketAddr, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, source)) => {
                let Some(data) = buf.get(..n) else {
                    continue;
                };
                let d = Datagram {
                    source,
                    dest: candidate,
                    data: data.to_vec(),
                    at: Instant::now(),
                };
                if tx.send(d).await.is_err() {
                    return; // engine gone
                }
            }
            // Transient per-datagram errors (e.g. ICMP-induced on some platforms): keep going.
            Err(e) => tracing::debug!(error = %e, "media socket recv error"),
        }
    }
}

/// What a feed forwarder hands the engine task.
enum FeedEvent {
    Frame(Published),
    /// The forwarder fell behind the feed and skipped frames: its viewers need a keyframe.
    Lagged(u64),
}

/// Moves feed `index`'s frames into the engine's merged queue until either side is gone.
async fn forward_frames(
    index: usize,
    mut rx: broadcast::Receiver<Published>,
    tx: mpsc::Sender<(usize, FeedEvent)>,
) {
    loop {
        let event = match rx.recv().await {
            Ok(frame) => FeedEvent::Frame(frame),
            Err(broadcast::error::RecvError::Lagged(n)) => FeedEvent::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send((index, event)).await.is_err() {
            return; // engine gone
        }
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Output side of the engine: sockets and the optional in-process sink.
struct Io {
    sockets: Vec<MediaSocket>,
    sink: Option<Arc<dyn InProcessSink>>,
}

impl Io {
    fn transmit(&self, t: Transmit) {
        if let Some(sink) = &self.sink {
            if sink.owns(t.destination) {
                sink.deliver(t.source, t.destination, t.contents.into());
                return;
            }
        }
        let Some(sock) = self
            .sockets
            .iter()
            .find(|s| s.candidate == t.source)
            .or_else(|| self.sockets.first())
        else {
            return; // no media socket (the engine always binds at least one)
        };
        // Non-blocking send: a full socket buffer drops the datagram, as the network would,
        // instead of stalling every other viewer.
        if let Err(e) = sock.udp.try_send_to(&t.contents, t.destination) {
            if e.kind() != ErrorKind::WouldBlock {
                tracing::debug!(error = %e, dest = %t.destination, "media send failed");
            }
        }
    }
}

/// How long the engine sleeps when no session wants a timeout.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

struct Session {
    id: String,
    rtc: Rtc,
    /// Mid and payload type to send the video with.
    video: Option<(Mid, Pt)>,
    /// Index of the feed (codec) this viewer is sent, in [`Engine::feeds`] (`None`: a
    /// publisher).
    feed: Option<usize>,
    /// What a publisher's session publishes to (`None`: a viewer).
    ingest: Option<Box<Ingest>>,
    /// ICE credentials and the offer, for PATCH trickle / ICE restart.
    ice: IceState,
    created: Instant,
    connected: bool,
    /// Do not send until a keyframe comes: a decoder cannot start on a P-frame.
    need_keyframe: bool,
    /// Just connected to a feed with a GOP cache: send it the cached GOP before anything else.
    gop_pending: bool,
    /// The feed frames up to this [`Published::seq`] were sent from the GOP cache already
    /// (0: none); the same frames coming through the live queue are skipped.
    sent_upto: u64,
    /// Remote candidates trickled in the current ICE generation
    /// ([`MAX_TRICKLED_CANDIDATES`]).
    trickled: usize,
    /// When str0m wants its next timeout.
    next: Instant,
}

/// The receiving side of a publisher's session (WHIP).
struct Ingest {
    whip: Arc<WhipIngest>,
    /// The video m-line received on.
    mid: Mid,
    /// Frames are published from a keyframe on (at the start, after a loss).
    need_keyframe: bool,
    /// Viewers' keyframe requests, coalesced and paced into PLIs.
    pacer: KeyframePacer,
}

/// How often a publisher's session looks at its viewers' keyframe requests.
const KEYFRAME_POLL: Duration = Duration::from_millis(100);

/// What a new session does: send a feed to a viewer, or receive a publisher's video.
enum Role {
    Viewer {
        /// Mid and payload type to send the video with.
        video: (Mid, Pt),
        /// The feed (codec) sent, in [`Engine::feeds`].
        feed: usize,
    },
    Publisher(Box<Ingest>),
}

impl Session {
    /// A new session, boxed where it is built: its `Rtc` is large, and the futures that
    /// hand it to the engine should not carry it inline.
    fn new(id: String, rtc: Rtc, ice: IceState, role: Role) -> Box<Self> {
        let now = Instant::now();
        let (video, feed, ingest) = match role {
            Role::Viewer { video, feed } => (Some(video), Some(feed), None),
            Role::Publisher(ingest) => (None, None, Some(ingest)),
        };
        Box::new(Session {
            id,
            rtc,
            // A viewer waits for a keyframe; a publisher sends nothing.
            need_keyframe: video.is_some(),
            video,
            feed,
            ingest,
            ice,
            trickled: 0,
            created: now,
            connected: false,
            gop_pending: false,
            sent_upto: 0,
            next: now,
        })
    }

    fn wake_at(&self, connect_timeout: Duration) -> Instant {
        let t = if self.connected {
            self.next
        } else {
            self.next.min(self.created + connect_timeout)
        };
        self.ice.restart_deadline.map_or(t, |d| t.min(d))
    }
}

struct Engine {
    io: Io,
    sessions: Vec<Session>,
    /// Which session took the last datagram of each (source, destination) pair. A hint:
    /// it is checked with `Rtc::accepts` before use, so a stale entry (the session ended,
    /// or moved within `sessions` by a `swap_remove`) costs one failed check and a scan.
    /// Without it every datagram asked every session, O(viewers) per datagram.
    routes: HashMap<(SocketAddr, SocketAddr), usize>,
    /// No session needs a timeout before this. It may be earlier than needed (it only
    /// moves earlier between [`Engine::timeouts`] passes, which recompute it): waking
    /// early costs one pass. Recomputing it per event was O(viewers) per datagram.
    wake: Instant,
    /// Frames of every feed, tagged with the feed's index.
    frames: mpsc::Receiver<(usize, FeedEvent)>,
    /// The stream's feeds, one per codec; sessions refer to them by index.
    feeds: Vec<VideoSource>,
    ended_tx: mpsc::UnboundedSender<SessionEnded>,
    connect_timeout: Duration,
    max_sessions: usize,
    /// Socket readers and feed forwarders.
    _tasks: AbortOnDrop,
}

impl Engine {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut dgram_rx: mpsc::Receiver<Datagram>,
    ) {
        let mut frames_open = true;
        // One timer, moved only when the wake-up time moves.
        let timer = tokio::time::sleep_until(self.wake.into());
        tokio::pin!(timer);
        loop {
            if timer.deadline().into_std() != self.wake {
                timer.as_mut().reset(self.wake.into());
            }
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break, // every handle dropped
                },
                Some(d) = dgram_rx.recv() => self.datagram(d),
                f = self.frames.recv(), if frames_open => match f {
                    Some((feed, FeedEvent::Frame(p))) => self.frame(feed, &p),
                    Some((feed, FeedEvent::Lagged(n))) => {
                        tracing::debug!(skipped = n, feed, "media engine lagged behind the source");
                        for s in self.sessions.iter_mut().filter(|s| s.feed == Some(feed)) {
                            s.need_keyframe = true;
                        }
                        if let Some(f) = self.feeds.get(feed) {
                            f.request_keyframe();
                        }
                    }
                    None => frames_open = false,
                },
                _ = &mut timer => self.timeouts(Instant::now()),
            }
        }
        for s in &mut self.sessions {
            let _ = s.rtc.close();
        }
        for feed in &self.feeds {
            feed.set_viewers(0);
        }
        tracing::info!("media engine stopped");
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add { session, reply } => {
                let res = if self.sessions.iter().any(|s| s.id == session.id) {
                    Err(MediaError::DuplicateSession(session.id))
                } else if self.sessions.len() >= self.max_sessions {
                    Err(MediaError::TooManySessions(self.max_sessions))
                } else if session
                    .ingest
                    .as_ref()
                    .is_some_and(|i| !i.whip.takeover() && !i.whip.claim(&session.id))
                {
                    Err(MediaError::StreamHasPublisher(session.id))
                } else {
                    if let Some(ingest) = session.ingest.as_ref().filter(|i| i.whip.takeover()) {
                        self.take_over(&ingest.whip.clone(), &session.id);
                    }
                    tracing::debug!(session = %session.id, "media session added");
                    self.sessions.push(*session);
                    let i = self.sessions.len() - 1;
                    self.drive_or_end(i);
                    Ok(())
                };
                let _ = reply.send(res);
            }
            Command::AddCandidate {
                session_id,
                candidate,
                reply,
            } => {
                let res = match session_mut(&mut self.sessions, &session_id) {
                    None => Err(MediaError::UnknownSession(session_id)),
                    Some((i, s)) => match candidate {
                        Some(_) if s.trickled >= MAX_TRICKLED_CANDIDATES => {
                            Err(MediaError::TooManyCandidates(MAX_TRICKLED_CANDIDATES))
                        }
                        Some(c) => {
                            s.trickled += 1;
                            s.rtc.add_remote_candidate(c);
                            self.drive_or_end(i);
                            Ok(())
                        }
                        None => Ok(()),
                    },
                };
                let _ = reply.send(res);
            }
            Command::Close { session_id, reply } => {
                let res = match session_mut(&mut self.sessions, &session_id) {
                    None => Err(MediaError::UnknownSession(session_id)),
                    Some((i, s)) => {
                        // Start a graceful close (RTCP BYE, DTLS close_notify), flush what
                        // that produced, then drop the session.
                        let _ = guarded(|| s.rtc.close());
                        let _ = drive(s, &self.io, &self.feeds);
                        self.end(i, EndReason::Closed);
                        Ok(())
                    }
                };
                let _ = reply.send(res);
            }
            Command::SetSink(sink) => self.io.sink = sink,
            Command::IcePatch {
                session_id,
                if_match,
                frag,
                reply,
            } => {
                let res = match session_mut(&mut self.sessions, &session_id) {
                    None => Err(MediaError::UnknownSession(session_id)),
                    Some((i, s)) => {
                        let n = frag.candidates.len();
                        // A trickle (same or no ufrag) adds to this generation's count.
                        let trickle = frag
                            .ice_ufrag
                            .as_deref()
                            .is_none_or(|u| u == s.ice.remote_ufrag());
                        if trickle && s.trickled + n > MAX_TRICKLED_CANDIDATES {
                            Err(MediaError::TooManyCandidates(MAX_TRICKLED_CANDIDATES))
                        } else {
                            let res = s.ice.patch(
                                &mut s.rtc,
                                *frag,
                                &if_match,
                                Instant::now(),
                                self.connect_timeout,
                            );
                            match &res {
                                Ok(IcePatchOutcome::Restarted(_)) => {
                                    tracing::info!(session = %s.id, "ICE restart");
                                    s.trickled = n;
                                }
                                Ok(IcePatchOutcome::Trickled) => s.trickled += n,
                                Err(_) => {}
                            }
                            self.drive_or_end(i);
                            res
                        }
                    }
                };
                let _ = reply.send(res);
            }
        }
    }

    fn datagram(&mut self, d: Datagram) {
        let Ok(contents) = d.data.as_slice().try_into() else {
            return; // not STUN/DTLS/RTP/RTCP: ignore
        };
        let input = Input::Receive(
            d.at,
            Receive {
                proto: Protocol::Udp,
                source: d.source,
                destination: d.dest,
                contents,
            },
        );
        let key = (d.source, d.dest);
        let hinted = self
            .routes
            .get(&key)
            .copied()
            .filter(|&i| self.sessions.get(i).is_some_and(|s| s.rtc.accepts(&input)));
        let i = match hinted {
            Some(i) => i,
            None => {
                let Some(i) = self.sessions.iter().position(|s| s.rtc.accepts(&input)) else {
                    tracing::trace!(source = %d.source, "datagram for no session");
                    return;
                };
                // Bounded: pairs of ended sessions go when the map outgrows the sessions.
                if self.routes.len() >= 4 * self.sessions.len() + 64 {
                    self.routes.clear();
                }
                self.routes.insert(key, i);
                i
            }
        };
        let Some(s) = self.sessions.get_mut(i) else {
            return; // `i` was found in `sessions` just above
        };
        match guarded(|| s.rtc.handle_input(input)) {
            Ok(()) => {
                self.drive_or_end(i);
            }
            Err(e) => self.end(i, EndReason::Failed(e)),
        }
    }

    /// Send a frame of feed `feed` to that feed's viewers.
    fn frame(&mut self, feed: usize, published: &Published) {
        let frame = &published.frame;
        let mut i = 0;
        while let Some(s) = self.sessions.get_mut(i) {
            if s.feed != Some(feed) {
                i += 1;
                continue;
            }
            let Some((mid, pt)) = s.video else {
                i += 1;
                continue;
            };
            if !s.connected || (s.need_keyframe && !frame.keyframe) || published.seq <= s.sent_upto
            {
                i += 1;
                continue;
            }
            let written = write_frame(s, mid, pt, frame.captured, frame.rtp_time, frame);
            match written {
                Ok(()) => {
                    s.need_keyframe = false;
                    if self.drive_or_end(i) {
                        i += 1;
                    }
                }
                Err(e) => self.end(i, EndReason::Failed(e)),
            }
        }
    }

    fn timeouts(&mut self, now: Instant) {
        // Recomputed below from every session that remains.
        self.wake = now + IDLE_WAKE;
        let mut i = 0;
        while let Some(s) = self.sessions.get_mut(i) {
            if !s.connected && now >= s.created + self.connect_timeout {
                self.end(i, EndReason::ConnectTimeout);
                continue;
            }
            if s.ice.restart_deadline.is_some_and(|d| now >= d) {
                // The client restarted ICE and never checked the new credentials.
                self.end(i, EndReason::IceDisconnected);
                continue;
            }
            if s.next > now {
                self.wake = self.wake.min(s.wake_at(self.connect_timeout));
                i += 1;
                continue;
            }
            match guarded(|| s.rtc.handle_input(Input::Timeout(now))) {
                Ok(()) => {
                    if self.drive_or_end(i) {
                        i += 1;
                    }
                }
                Err(e) => self.end(i, EndReason::Failed(e)),
            }
        }
    }

    /// Drive session `i`; if it ended, remove it. Returns true if it is still there.
    fn drive_or_end(&mut self, i: usize) -> bool {
        let Some(s) = self.sessions.get_mut(i) else {
            return false;
        };
        let was_connected = s.connected;
        let mut ended = drive(s, &self.io, &self.feeds);
        if ended.is_none() && s.gop_pending {
            s.gop_pending = false;
            ended = send_gop(s, &self.io, &self.feeds);
        }
        match ended {
            None => {
                self.wake = self.wake.min(s.wake_at(self.connect_timeout));
                if !was_connected && s.connected {
                    self.update_viewers();
                }
                true
            }
            Some(reason) => {
                self.end(i, reason);
                false
            }
        }
    }

    /// The WHIP publisher `key` takes `whip` over: the session it replaces ends (the
    /// publisher sees DTLS close), and every viewer of the stream waits for the new
    /// publisher's keyframe (asked for at once) instead of decoding its frames against the
    /// old one's references.
    fn take_over(&mut self, whip: &Arc<crate::media::whip::WhipIngest>, key: &str) {
        let Some(old) = whip.take_over(key) else {
            return;
        };
        if let Some(i) = self.sessions.iter().position(|s| s.id == old) {
            tracing::info!(session = %old, new = %key, "WHIP publisher taken over");
            self.end(i, EndReason::TakenOver);
        }
        for feed in whip.feeds().iter() {
            feed.request_keyframe();
        }
        for (f, source) in self.feeds.iter().enumerate() {
            if whip.feeds().iter().any(|w| w.same_feed(source)) {
                for s in self.sessions.iter_mut().filter(|s| s.feed == Some(f)) {
                    s.need_keyframe = true;
                }
            }
        }
    }

    /// Remove session `i` and announce it. Uses `swap_remove`: the last session moves to `i`.
    fn end(&mut self, i: usize, reason: EndReason) {
        let mut s = self.sessions.swap_remove(i);
        s.rtc.disconnect();
        if let Some(ingest) = &s.ingest {
            ingest.whip.release(&s.id);
            tracing::info!(session = %s.id, "WHIP publisher gone: the stream has no live source");
        }
        tracing::info!(session = %s.id, ?reason, "media session ended");
        let _ = self.ended_tx.send(SessionEnded {
            session_id: s.id,
            reason,
        });
        self.update_viewers();
    }

    /// Tell each feed how many connected viewers it has (its producer idles at zero).
    fn update_viewers(&self) {
        let mut counts = vec![0usize; self.feeds.len()];
        for s in self.sessions.iter().filter(|s| s.connected) {
            if let Some(c) = s.feed.and_then(|f| counts.get_mut(f)) {
                *c += 1;
            }
        }
        for (feed, n) in self.feeds.iter().zip(counts) {
            feed.set_viewers(n);
        }
    }
}

/// Write one frame to session `s` with RTP time `rtp_time` (90 kHz) and capture time
/// `wallclock`.
fn write_frame(
    s: &mut Session,
    mid: Mid,
    pt: Pt,
    wallclock: Instant,
    rtp_time: u64,
    frame: &EncodedFrame,
) -> Result<(), String> {
    let rtp_time = MediaTime::from_90khz(rtp_time);
    guarded(|| match s.rtc.writer(mid) {
        Some(w) => w
            .write(pt, wallclock, rtp_time, frame.data.clone())
            .map_err(|e| e.to_string()),
        None => Ok(()),
    })
}

/// RTP time between two cached frames sent to a new viewer: 1 ms.
const GOP_BURST_STEP: u64 = 90;

/// The RTP times a cached GOP is sent to a new viewer with: `times` (increasing, oldest
/// first) squeezed to [`GOP_BURST_STEP`] apart, ending at the newest one unchanged.
///
/// Why: the frames go out at once; with their own times (up to a keyframe interval apart) a
/// receiver's jitter buffer would schedule them over that interval and show the current
/// picture seconds late. Squeezed, they are decoded at once and the last one is shown; the
/// live frames that follow keep their own times, continuing from the last. Each result is at
/// least the original time and the results stay strictly increasing.
pub(crate) fn squeeze_gop_times(times: &[u64]) -> Vec<u64> {
    let Some(&last) = times.last() else {
        return Vec::new();
    };
    let n = times.len() as u64;
    times
        .iter()
        .zip(0u64..)
        .map(|(&t, k)| t.max(last.saturating_sub(GOP_BURST_STEP.saturating_mul(n - 1 - k))))
        .collect()
}

/// Send a just-connected viewer of a feed with a GOP cache the cached GOP (squeezed in time,
/// see [`squeeze_gop_times`]), so it shows the current picture without waiting for the
/// sender's next keyframe. With nothing cached yet the viewer waits for a keyframe.
fn send_gop(s: &mut Session, io: &Io, feeds: &[VideoSource]) -> Option<EndReason> {
    let feed = feeds.get(s.feed?)?;
    let gop = feed.gop();
    let (Some(first), Some(last), Some((mid, pt))) = (gop.first(), gop.last(), s.video) else {
        feed.request_keyframe();
        return None;
    };
    if !first.frame.keyframe {
        return None;
    }
    let times: Vec<u64> = gop.iter().map(|p| p.frame.rtp_time).collect();
    let newest = last.frame.captured;
    let last_time = last.frame.rtp_time;
    for (p, t) in gop.iter().zip(squeeze_gop_times(&times)) {
        let wallclock = newest
            .checked_sub(Duration::from_micros(
                last_time.saturating_sub(t).saturating_mul(100) / 9,
            ))
            .unwrap_or(newest);
        if let Err(e) = write_frame(s, mid, pt, wallclock, t, &p.frame) {
            return Some(EndReason::Failed(e));
        }
        // Send each frame's packets before the next is written.
        if let Some(reason) = drive(s, io, feeds) {
            return Some(reason);
        }
    }
    s.need_keyframe = false;
    s.sent_upto = last.seq;
    tracing::debug!(session = %s.id, frames = gop.len(), "cached GOP sent to a new viewer");
    None
}

/// The session with id `id` among `sessions`, and its index there.
fn session_mut<'a>(sessions: &'a mut [Session], id: &str) -> Option<(usize, &'a mut Session)> {
    sessions.iter_mut().enumerate().find(|(_, s)| s.id == id)
}

/// Run `f`, turning a str0m error or panic into an error string. A panic inside one `Rtc` (a
/// bug triggered by hostile input) must end that session only, not the engine.
fn guarded<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("internal error (panic) in WebRTC stack".into()),
    }
}

/// Poll a session until it waits for a timeout, sending its datagrams and handling its events.
/// Returns why it ended, if it did.
/// Keyframe requests (new viewer, PLI/FIR) go to the session's own feed only.
fn drive(s: &mut Session, io: &Io, feeds: &[VideoSource]) -> Option<EndReason> {
    let source = s.feed.and_then(|f| feeds.get(f));
    loop {
        if !s.rtc.is_alive() {
            return Some(EndReason::PeerClosed);
        }
        let out = match guarded(|| s.rtc.poll_output()) {
            Ok(o) => o,
            Err(e) => return Some(EndReason::Failed(e)),
        };
        match out {
            Output::Timeout(t) => {
                s.next = t;
                if let Some(ingest) = s.ingest.as_deref_mut() {
                    // Viewers' keyframe requests become a PLI to the publisher.
                    ingest.pacer.take_from(ingest.whip.feeds());
                    if ingest.need_keyframe {
                        ingest.pacer.want();
                    }
                    let now = Instant::now();
                    if ingest.pacer.due(now, s.connected) && request_keyframe(&mut s.rtc, ingest) {
                        continue; // send it
                    }
                    s.next = t.min(now + KEYFRAME_POLL);
                }
                return None;
            }
            Output::Transmit(t) => io.transmit(t),
            Output::Event(e) => match e {
                Event::Connected => {
                    tracing::info!(session = %s.id, "media session connected");
                    s.connected = true;
                    s.need_keyframe = true;
                    match source {
                        // No back channel: the cached GOP is sent once this poll is over.
                        Some(f) if f.has_gop_cache() => s.gop_pending = true,
                        // PLI on join: a publisher or pulled backend sends a keyframe now.
                        Some(f) => f.request_keyframe(),
                        None => {}
                    }
                }
                Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                    if s.connected =>
                {
                    return Some(EndReason::IceDisconnected);
                }
                Event::IceConnectionStateChange(
                    IceConnectionState::Connected | IceConnectionState::Completed,
                ) if s.ice.restart_deadline.is_some() => {
                    // A pair checked with the restarted credentials is nominated.
                    tracing::info!(session = %s.id, "ICE restart completed");
                    s.ice.restart_deadline = None;
                }
                Event::KeyframeRequest(_) => {
                    if let Some(f) = source {
                        f.request_keyframe();
                    }
                }
                Event::MediaData(d) => {
                    if let Some(ingest) = s.ingest.as_deref_mut() {
                        ingest.publish(&d);
                    }
                }
                Event::Closed => return Some(EndReason::PeerClosed),
                _ => {}
            },
        }
    }
}

/// Asks the publisher of `ingest` for a keyframe (PLI). Returns whether one was queued.
fn request_keyframe(rtc: &mut Rtc, ingest: &Ingest) -> bool {
    let Some(mut w) = rtc.writer(ingest.mid) else {
        return false;
    };
    if !w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
        return false;
    }
    match w.request_keyframe(None, KeyframeRequestKind::Pli) {
        Ok(()) => {
            ingest.whip.count_keyframe_request();
            tracing::debug!("WHIP: keyframe requested from the publisher (PLI)");
            true
        }
        Err(_) => false,
    }
}

impl Ingest {
    /// Publishes a depacketized frame to the stream's feed of its codec, from a keyframe on.
    fn publish(&mut self, d: &str0m::media::MediaData) {
        if d.mid != self.mid {
            return; // audio: not passed through
        }
        let codec = match d.params.spec().codec {
            Codec::H264 => VideoCodec::H264,
            Codec::Vp8 => VideoCodec::Vp8,
            _ => return,
        };
        let Some(feed) = self.whip.feeds().get(codec) else {
            return;
        };
        if !d.contiguous {
            self.need_keyframe = true;
        }
        let keyframe = d.is_keyframe();
        if self.need_keyframe && !keyframe {
            return;
        }
        if keyframe {
            self.pacer.satisfied();
        }
        if self.need_keyframe {
            tracing::debug!(?codec, "WHIP: keyframe from the publisher");
        }
        self.need_keyframe = false;
        self.whip.count_frame();
        feed.publish(EncodedFrame {
            data: d.data.clone(),
            keyframe,
            rtp_time: d.time.rebase(str0m::media::Frequency::NINETY_KHZ).numer(),
            captured: d.network_time,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_gop_is_squeezed_to_end_at_its_own_time() {
        assert!(squeeze_gop_times(&[]).is_empty());
        assert_eq!(squeeze_gop_times(&[5000]), [5000]);
        // 30 fps frames: 1 ms apart, the newest unchanged.
        assert_eq!(
            squeeze_gop_times(&[0, 3000, 6000, 9000]),
            [9000 - 270, 9000 - 180, 9000 - 90, 9000]
        );
        // Never earlier than the frame's own time, always increasing.
        let close = [100, 101, 102, 103];
        assert_eq!(squeeze_gop_times(&close), close);
        let mixed = [0, 10, 20, 3000];
        let got = squeeze_gop_times(&mixed);
        assert!(got.windows(2).all(|w| w[1] > w[0]), "{got:?}");
        assert!(got.iter().zip(mixed).all(|(g, m)| *g >= m), "{got:?}");
    }

    #[test]
    fn parse_errors_name_the_line_not_the_parser_state() {
        // str0m stops quietly at the first line it cannot read after the session's start,
        // so a parse error comes from the first lines.
        let offer = "v=0\r\ngarbage\r\n";
        let e = SdpOffer::from_sdp_string(offer)
            .expect_err("bad line")
            .to_string();
        assert!(e.contains("0x"), "str0m's text changed: {e}");
        let refused = unparsable_offer(offer, &e).to_string();
        assert!(
            !refused.contains("0x") && !refused.contains("Pointer"),
            "{refused}"
        );
        assert!(refused.contains("near line 2"), "{refused}: {e}");
        // Without an address in the parser's text: the first line not of the x=y form.
        let e = unparsable_offer("v=0\r\ns=-\r\n??\r\n", "no position").to_string();
        assert!(e.contains("near line 3"), "{e}");
        let e = unparsable_offer("v=0\r\n", "at 0x1").to_string();
        assert_eq!(e, "malformed SDP offer: not valid SDP");
    }

    #[test]
    fn feeds_that_deliver_come_first_in_the_streams_order() {
        let stream = [(VideoCodec::H264, 3), (VideoCodec::Vp8, 4)];
        assert_eq!(live_first(&stream, |_| false), stream);
        assert_eq!(live_first(&stream, |_| true), stream);
        assert_eq!(
            live_first(&stream, |i| i == 4),
            [(VideoCodec::Vp8, 4), (VideoCodec::H264, 3)]
        );
    }

    #[test]
    fn port_range_parses() {
        assert_eq!(
            "50000-50050".parse::<PortRange>().unwrap(),
            DEFAULT_MEDIA_PORTS
        );
        assert_eq!("7000".parse::<PortRange>().unwrap().max, 7000);
        for bad in ["", "a-b", "10-5", "0-10", "1-70000", "é"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }
}
