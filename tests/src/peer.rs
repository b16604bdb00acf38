//! Media peers for the end-to-end tests: str0m viewers over UDP ([`Viewer`]) and through a
//! TURN allocation ([`RelayedPeer`]), what their frames decode to, and child processes
//! (stand-ins, other gateways) killed on drop. Everything talks to loopback only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

use crate::http::request;
use crate::{ClientError, Origin, TurnClient};

/// First channel number a [`RelayedPeer`] binds (RFC 8656: 0x4000..=0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;

/// A child process (the origin gateway, the stand-in), killed by PID and reaped on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ready` every 100 ms; fails the test when it is not true within 30 s.
pub async fn wait_for<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A viewer: str0m over UDP on loopback, joined by Geti's JSON offer endpoint.
pub struct Viewer {
    /// Its peer connection.
    pub rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
}

impl Viewer {
    /// Joins `stream` of `edge`, offering H.264 (`h264`) or VP8.
    pub async fn join_as(edge: SocketAddr, stream: &str, id: &str, h264: bool) -> Viewer {
        Viewer::join_with(edge, stream, id, h264, !h264).await
    }

    /// Joins `stream` of `edge`, offering H.264 when `h264` and VP8 when `vp8`.
    pub async fn join_with(
        edge: SocketAddr,
        stream: &str,
        id: &str,
        h264: bool,
        vp8: bool,
    ) -> Viewer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(h264)
            .enable_vp8(vp8)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let body = json!({ "webrtc_id": id, "sdp": offer.to_sdp_string(), "type": "offer" });
        let r = request(
            edge,
            "POST",
            &format!("/api/v1/projects/{stream}/offer"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let answer = r.json()["sdp"].as_str().expect("sdp").to_owned();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .expect("answer applies");
        Viewer { rtc, sock, local }
    }

    /// Receives until `want` frames arrived or `limit` passed; returns the frames.
    pub async fn frames(&mut self, want: usize, limit: Duration) -> Vec<(bool, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        while got.len() < want && Instant::now() < deadline {
            let timeout = loop {
                match self.rtc.poll_output().expect("poll") {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(Event::MediaData(d)) => {
                        got.push((d.is_keyframe(), d.data.to_vec()))
                    }
                    Output::Event(_) => {}
                }
            };
            let wait = timeout.min(deadline);
            let input = tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, source) = r.expect("recv");
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    })
                }
                _ = tokio::time::sleep_until(wait.into()) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).expect("input");
        }
        got
    }
}

/// The size of the first picture openh264 decodes from `frames`.
pub fn decoded_size(frames: &[(bool, Vec<u8>)]) -> Option<(usize, usize)> {
    use openh264::formats::YUVSource;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    frames.iter().find_map(|(_, data)| {
        decoder
            .decode(data)
            .ok()
            .flatten()
            .map(|pic| pic.dimensions())
    })
}

/// Width and height from a VP8 keyframe's header (RFC 6386 §9.1), if `frame` is one.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let is_key = frame.first()? & 1 == 0;
    if !is_key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

/// `(ip, port, type)` of every candidate in an SDP.
pub fn candidates(sdp: &str) -> Vec<(SocketAddr, String)> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let ip: IpAddr = f.get(4)?.parse().ok()?;
            let port: u16 = f.get(5)?.parse().ok()?;
            let typ = f
                .iter()
                .position(|x| *x == "typ")
                .and_then(|i| f.get(i + 1))?;
            Some((SocketAddr::new(ip, port), (*typ).to_owned()))
        })
        .collect()
}

/// The browser: str0m with full ICE (not lite), offering one recvonly video m-line (H.264
/// when `h264`, else VP8), whose only local candidate is the relayed address of its TURN
/// allocation.
pub fn relay_only_client(
    relayed: SocketAddr,
    turn_local: SocketAddr,
    h264: bool,
) -> (Rtc, String, SdpPendingOffer) {
    let mut rtc = RtcConfig::new()
        .set_ice_lite(false)
        .clear_codecs()
        .enable_h264(h264)
        .enable_vp8(!h264)
        .build(Instant::now());
    let cand = Candidate::relayed(relayed, turn_local, "udp").expect("relayed candidate");
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    (rtc, offer.to_sdp_string(), pending)
}

/// A str0m client whose every datagram travels through a TURN allocation: transmits go out
/// as ChannelData on the channel bound to the destination, relayed data comes in as if
/// received on the relayed address.
pub struct RelayedPeer {
    /// Its peer connection.
    pub rtc: Rtc,
    /// Its TURN connection.
    pub turn: TurnClient,
    /// Its relayed address (its only candidate).
    pub relayed: SocketAddr,
    channel_of: HashMap<SocketAddr, u16>,
    peer_of: HashMap<u16, SocketAddr>,
    /// ICE connected.
    pub ice_connected: bool,
    /// DTLS connected.
    pub dtls_connected: bool,
    /// (keyframe, access unit) of every frame received.
    pub frames: Vec<(bool, Vec<u8>)>,
    /// Transmits to an address without a channel (sent as Send indications).
    pub unbound_sends: usize,
}

impl RelayedPeer {
    /// A peer of `rtc` over `turn`, whose allocation relays on `relayed`.
    pub fn new(rtc: Rtc, turn: TurnClient, relayed: SocketAddr) -> Self {
        RelayedPeer {
            rtc,
            turn,
            relayed,
            channel_of: HashMap::new(),
            peer_of: HashMap::new(),
            ice_connected: false,
            dtls_connected: false,
            frames: Vec::new(),
            unbound_sends: 0,
        }
    }

    /// Permission and a channel for `peer`.
    pub async fn bind(&mut self, peer: SocketAddr) {
        let ch = FIRST_CHANNEL + u16::try_from(self.channel_of.len()).expect("few peers");
        self.turn
            .create_permission(peer)
            .await
            .unwrap_or_else(|e| panic!("CreatePermission {peer}: {e}"));
        self.turn
            .channel_bind(ch, peer)
            .await
            .unwrap_or_else(|e| panic!("ChannelBind {ch:#x} {peer}: {e}"));
        self.channel_of.insert(peer, ch);
        self.peer_of.insert(ch, peer);
    }

    /// Runs the client until `done` says so or `limit` passes; returns whether `done` did.
    pub async fn pump(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let next_timeout = loop {
                match self.rtc.poll_output().expect("client poll_output") {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        assert_eq!(t.source, self.relayed, "the client only sends relayed");
                        match self.channel_of.get(&t.destination) {
                            Some(&ch) => self.turn.send_channel_data(ch, &t.contents).await,
                            None => {
                                self.unbound_sends += 1;
                                self.turn.send_indication(t.destination, &t.contents).await
                            }
                        }
                        .expect("send through the relay");
                    }
                    Output::Event(e) => self.on_event(e),
                }
            };
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = next_timeout.min(deadline).saturating_duration_since(now);
            match self.turn.recv_data(wait).await {
                Ok((origin, data)) => {
                    let source = match origin {
                        Origin::Channel(ch) => *self
                            .peer_of
                            .get(&ch)
                            .unwrap_or_else(|| panic!("data on unbound channel {ch:#x}")),
                        Origin::Peer(p) => p,
                    };
                    let Ok(contents) = data.as_slice().try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.relayed,
                            contents,
                        },
                    );
                    if self.rtc.accepts(&input) {
                        self.rtc.handle_input(input).expect("client input");
                    }
                }
                Err(ClientError::Timeout(_)) => {}
                Err(e) => panic!("TURN connection failed while pumping media: {e}"),
            }
            // Timers run even while data keeps arriving.
            let now = Instant::now();
            if now >= next_timeout {
                self.rtc
                    .handle_input(Input::Timeout(now))
                    .expect("client timeout");
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::IceConnectionStateChange(s) => {
                if matches!(
                    s,
                    IceConnectionState::Connected | IceConnectionState::Completed
                ) {
                    self.ice_connected = true;
                }
            }
            Event::Connected => self.dtls_connected = true,
            Event::MediaData(d) => self.frames.push((d.is_keyframe(), d.data.to_vec())),
            _ => {}
        }
    }
}

/// A relay-only viewer of `stream` on the gateway at `http` (plain HTTP): it takes a session
/// and its ICE servers (`GET /api/v1/webrtc/config`), allocates on the embedded relay's
/// `turns:` URL (TLS to `relay`, the certificate checked against `cert_der` for the URL's
/// host name), offers (H.264 when `h264`, else VP8) with its relayed candidate only, by
/// Geti's offer endpoint naming that session, and binds a channel to each of the answer's
/// candidates. [`RelayedPeer::pump`] runs it.
pub async fn relayed_viewer(
    http: SocketAddr,
    relay: SocketAddr,
    cert_der: &rustls::pki_types::CertificateDer<'static>,
    stream: &str,
    h264: bool,
) -> RelayedPeer {
    relayed_viewer_as(http, relay, cert_der, stream, h264, None)
        .await
        .0
}

/// As [`relayed_viewer`], offering with `webrtc_id` as its id when given (as Geti's UI does:
/// its own UUID, never the session's id), so the offer binds to its session by the relay
/// candidate alone. Returns the viewer and its session's id.
pub async fn relayed_viewer_as(
    http: SocketAddr,
    relay: SocketAddr,
    cert_der: &rustls::pki_types::CertificateDer<'static>,
    stream: &str,
    h264: bool,
    webrtc_id: Option<&str>,
) -> (RelayedPeer, String) {
    let cfg = request(http, "GET", "/api/v1/webrtc/config", &[], b"")
        .await
        .json();
    let session = cfg["sessionId"].as_str().expect("sessionId").to_owned();
    let servers = cfg["iceServers"].as_array().expect("iceServers");
    let (host, server) = servers
        .iter()
        .find_map(|s| {
            let urls: Vec<&str> = match &s["urls"] {
                serde_json::Value::String(u) => vec![u.as_str()],
                serde_json::Value::Array(a) => a.iter().filter_map(|u| u.as_str()).collect(),
                _ => Vec::new(),
            };
            urls.into_iter().find_map(|u| {
                let rest = gateway::ice_url::strip_scheme(u, gateway::ice_url::Scheme::Turns)?;
                Some((gateway::ice_url::host_port(rest, 443)?.0, s))
            })
        })
        .unwrap_or_else(|| panic!("no turns: URL in {cfg}"));
    let username = server["username"].as_str().expect("username");
    let credential = server["credential"].as_str().expect("credential");
    let mut turn = TurnClient::connect_tls(relay, &host, cert_der)
        .await
        .unwrap_or_else(|e| panic!("TLS to the relay at {relay}: {e}"));
    let turn_local = turn.local_addr();
    let alloc = turn
        .allocate(username, credential)
        .await
        .expect("Allocate with the minted credential");
    let (rtc, offer, pending) = relay_only_client(alloc.relayed, turn_local, h264);
    let body = json!({ "webrtc_id": webrtc_id.unwrap_or(&session), "sdp": offer, "type": "offer" });
    let r = request(
        http,
        "POST",
        &format!("/api/v1/projects/{stream}/offer"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "relayed viewer's offer: {r:?}");
    let answer = r.json()["sdp"].as_str().expect("sdp").to_owned();
    let mut peer = RelayedPeer::new(rtc, turn, alloc.relayed);
    peer.rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
        )
        .expect("answer applies");
    for (addr, _) in candidates(&answer) {
        peer.bind(addr).await;
    }
    (peer, session)
}
