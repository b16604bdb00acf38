//! ICE restart through the engine (what a WHEP PATCH with `If-Match: *` does), on loopback: a
//! str0m client in the browser role connects, receives frames, then "changes network" (a new
//! UDP socket) and restarts ICE with new credentials; frames must arrive on the new path, which
//! only works if the engine took the new credentials.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::media::ice_restart::{ice_etag_of_sdp, MAX_SDPFRAG_CANDIDATES};
use gateway::media::testsrc::{TestSource, TestSourceConfig};
use gateway::media::{
    EndReason, IcePatchOutcome, IceRestartAnswer, MediaConfig, MediaEngine, MediaError,
    MediaHandle, PortRange, SdpFrag, VideoCodec, VideoSource,
};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(connect_timeout: Duration) -> MediaConfig {
    MediaConfig {
        bind_ip: LOOPBACK,
        ports: PortRange {
            min: 50000,
            max: 50050,
        },
        advertise_ip: None,
        connect_timeout,
        ..MediaConfig::default()
    }
}

fn small_testsrc(source: &VideoSource) -> TestSource {
    TestSource::spawn(
        TestSourceConfig {
            width: 320,
            height: 240,
            fps: 30,
            ..TestSourceConfig::default()
        },
        source.clone(),
    )
    .expect("test pattern starts")
}

/// A browser-like client on one UDP socket.
struct Client {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    /// ICE connection states seen, in order.
    states: Vec<IceConnectionState>,
}

impl Client {
    async fn new() -> (Client, str0m::change::SdpOffer, SdpPendingOffer) {
        let sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let client = Client {
            rtc,
            sock,
            local,
            states: Vec::new(),
        };
        (client, offer, pending)
    }

    /// Run until `frames` video frames arrived or `limit` passed; returns the frames counted.
    async fn pump(&mut self, frames: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut got = 0;
        let mut buf = vec![0u8; 2048];
        while got < frames && Instant::now() < deadline {
            let timeout = loop {
                match self.rtc.poll_output().expect("client poll") {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(Event::MediaData(_)) => got += 1,
                    Output::Event(Event::IceConnectionStateChange(s)) => self.states.push(s),
                    Output::Event(_) => {}
                }
            };
            let wait = timeout.min(deadline);
            let received = tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let (n, source) = r.expect("client recv");
                    Some((source, n))
                }
                _ = tokio::time::sleep_until(wait.into()) => None,
            };
            let now = Instant::now();
            match received {
                Some((source, n)) => {
                    let Ok(contents) = buf[..n].try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    self.rtc.handle_input(input).expect("client input");
                }
                None => self
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("client timeout"),
            }
        }
        got
    }

    /// The network changes: a new socket, on a new port. The old one is closed.
    async fn move_to_new_socket(&mut self) {
        self.sock = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        self.local = self.sock.local_addr().unwrap();
    }
}

/// The first value of an SDP attribute (`a=ice-ufrag:` ...).
fn attr<'a>(sdp: &'a str, prefix: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {sdp}"))
        .trim()
}

/// A WHEP client's view of the answer after a restart: the old answer with the server's new
/// credentials and candidates from its sdpfrag (RFC 9725 §4.3.2: the non-ICE SDP stays as
/// negotiated). The candidates must be replaced too: str0m, like browsers, tags each candidate
/// with its ICE generation's ufrag and drops candidates of another generation.
fn answer_after_restart(answer: &str, restart: &IceRestartAnswer) -> String {
    let mut out = Vec::new();
    let mut candidates_written = false;
    for l in answer.lines().map(str::trim) {
        if l.starts_with("a=ice-ufrag:") {
            out.push(format!("a=ice-ufrag:{}", restart.ufrag));
        } else if l.starts_with("a=ice-pwd:") {
            out.push(format!("a=ice-pwd:{}", restart.pwd));
        } else if l.starts_with("a=candidate:") {
            if !candidates_written {
                out.extend(restart.candidates.iter().map(|c| format!("a={c}")));
                candidates_written = true;
            }
        } else if !l.is_empty() {
            out.push(l.to_owned());
        }
    }
    assert!(candidates_written, "the answer had candidates: {answer}");
    out.join("\r\n") + "\r\n"
}

async fn connected_client(handle: &MediaHandle, id: &str) -> (Client, String) {
    let (mut client, offer, pending) = Client::new().await;
    let answer = handle
        .accept_offer(&offer.to_sdp_string(), id.into())
        .await
        .expect("offer accepted");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .expect("answer applies");
    let n = client.pump(5, Duration::from_secs(10)).await;
    assert!(n >= 5, "frames before the restart: {n}");
    (client, answer)
}

#[tokio::test]
async fn ice_restart_moves_media_to_a_new_path() {
    let source = VideoSource::new(VideoCodec::H264);
    let _pattern = small_testsrc(&source);
    let handle = MediaEngine::start(config(Duration::from_secs(10)), source).unwrap();
    let mut ended = handle.take_ended().expect("first taker");

    let (mut client, answer) = connected_client(&handle, "viewer").await;
    let etag0 = ice_etag_of_sdp(&answer).expect("the answer names its ICE session");
    let server_ufrag0 = attr(&answer, "a=ice-ufrag:").to_owned();
    let client_ufrag0 = client.rtc.direct_api().local_ice_credentials().ufrag;

    // Before the restart: trickle needs the current ICE session; garbage and unknown sessions
    // are refused with their own errors.
    let trickle = format!(
        "a=ice-ufrag:{client_ufrag0}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
         a=candidate:9 1 udp 2113929471 127.0.0.1 9 typ host\r\n"
    );
    assert!(matches!(
        handle.ice_patch("viewer", Some(&etag0), &trickle).await,
        Ok(IcePatchOutcome::Trickled)
    ));
    assert!(matches!(
        handle.ice_patch("viewer", None, &trickle).await,
        Ok(IcePatchOutcome::Trickled)
    ));
    let err = handle
        .ice_patch("viewer", Some("\"not-the-etag\""), &trickle)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::IceSessionMismatch), "{err:?}");
    assert!(err.is_client_error());
    let err = handle
        .ice_patch("viewer", Some("*"), "a=ice-ufrag:ab\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdpFrag(_)), "{err:?}");
    let err = handle
        .ice_patch("viewer", Some("*"), "\u{0}\u{ff}garbage")
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdpFrag(_)), "{err:?}");
    let err = handle
        .restart_ice("nobody", "abcd", "0123456789abcdefghijkl", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnknownSession(_)), "{err:?}");
    let too_many: Vec<String> = (0..=MAX_SDPFRAG_CANDIDATES)
        .map(|i| format!("candidate:{i} 1 udp 1 127.0.0.1 {} typ host", 1000 + i))
        .collect();
    let err = handle
        .restart_ice("viewer", "abcd", "0123456789abcdefghijkl", &too_many)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdpFrag(_)), "{err:?}");
    let err = handle
        .restart_ice(
            "viewer",
            "abcd",
            "0123456789abcdefghijkl",
            &["candidate:1 1 udp 1 127.0.0.1 1 typ host\r\na=ice-ufrag:zzzz".to_owned()],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdpFrag(_)), "{err:?}");
    // None of that ended the session.
    assert!(ended.try_recv().is_err(), "the session is still alive");

    // The client restarts ICE from a new network (new socket, new candidate).
    let (offer2, pending2) = {
        let mut api = client.rtc.sdp_api();
        api.ice_restart(false);
        api.apply().expect("a restart offer")
    };
    let offer2 = offer2.to_sdp_string();
    let (ufrag, pwd) = (attr(&offer2, "a=ice-ufrag:"), attr(&offer2, "a=ice-pwd:"));
    assert_ne!(ufrag, client_ufrag0);
    client.move_to_new_socket().await;
    let new_candidate = Candidate::host(client.local, "udp").unwrap();
    let restart = handle
        .restart_ice("viewer", ufrag, pwd, &[new_candidate.to_sdp_string()])
        .await
        .expect("ICE restart");
    assert_ne!(restart.ufrag, server_ufrag0, "new local credentials");
    assert_ne!(restart.pwd, attr(&answer, "a=ice-pwd:"));
    assert_ne!(restart.etag, etag0, "a new ICE session, a new entity-tag");
    assert_eq!(restart.etag, format!("\"{}\"", restart.ufrag));
    let host = |c: &str| c.split_ascii_whitespace().nth(4).map(str::to_owned);
    let answer_hosts: Vec<_> = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| host(&format!("candidate:{c}")))
        .collect();
    assert_eq!(
        restart
            .candidates
            .iter()
            .filter_map(|c| host(c))
            .collect::<Vec<_>>(),
        answer_hosts,
        "the same host candidates as the answer"
    );
    for c in &restart.candidates {
        assert!(
            !c.contains(&server_ufrag0),
            "candidates of the new generation: {c}"
        );
    }
    let frag = SdpFrag::parse(&restart.sdpfrag).expect("our sdpfrag parses");
    assert_eq!(frag.ice_ufrag.as_deref(), Some(restart.ufrag.as_str()));
    assert_eq!(frag.ice_pwd.as_deref(), Some(restart.pwd.as_str()));
    assert_eq!(frag.candidates.len(), restart.candidates.len());
    assert!(
        restart.sdpfrag.contains("\r\nm=video "),
        "{}",
        restart.sdpfrag
    );

    let answer2 = answer_after_restart(&answer, &restart);
    client
        .rtc
        .sdp_api()
        .accept_answer(pending2, SdpAnswer::from_sdp_string(&answer2).unwrap())
        .expect("restart answer applies");
    client.rtc.add_local_candidate(new_candidate);
    client.states.clear();

    let n = client.pump(30, Duration::from_secs(15)).await;
    assert!(
        n >= 30,
        "frames on the new path after the restart: {n}; ICE states {:?}",
        client.states
    );
    assert!(
        client.states.iter().any(|s| matches!(
            s,
            IceConnectionState::Connected | IceConnectionState::Completed
        )),
        "ICE connected again on the new credentials: {:?}",
        client.states
    );

    // After the restart: the old entity-tag and the old generation's ufrag are stale (412),
    // the new entity-tag trickles.
    let err = handle
        .ice_patch("viewer", Some(&etag0), &trickle)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::IceSessionMismatch), "{err:?}");
    let err = handle
        .ice_patch("viewer", Some(&restart.etag), &trickle)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MediaError::IceSessionMismatch),
        "old generation's candidates: {err:?}"
    );
    let trickle2 = trickle.replace(&client_ufrag0, ufrag);
    assert!(matches!(
        handle
            .ice_patch("viewer", Some(&restart.etag), &trickle2)
            .await,
        Ok(IcePatchOutcome::Trickled)
    ));
    // Restarting with the current credentials is not a restart.
    let err = handle
        .restart_ice("viewer", ufrag, pwd, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::MalformedSdpFrag(_)), "{err:?}");

    // Still flowing, still one session, never ended.
    let n = client.pump(10, Duration::from_secs(10)).await;
    assert!(n >= 10, "frames after the PATCHes: {n}");
    assert!(ended.try_recv().is_err(), "the session never ended");
    handle.close("viewer").await.unwrap();
}

#[tokio::test]
async fn a_restart_the_client_never_completes_ends_the_session() {
    let source = VideoSource::new(VideoCodec::H264);
    let _pattern = small_testsrc(&source);
    let handle = MediaEngine::start(config(Duration::from_secs(3)), source).unwrap();
    let mut ended = handle.take_ended().expect("first taker");
    let (client, _answer) = connected_client(&handle, "gone").await;
    drop(client);

    let frag = "a=ice-ufrag:newU\r\na=ice-pwd:0123456789abcdefghijklmn\r\n";
    let at = Instant::now();
    match handle.ice_patch("gone", Some("*"), frag).await {
        Ok(IcePatchOutcome::Restarted(a)) => assert!(!a.ufrag.is_empty()),
        other => panic!("expected a restart: {other:?}"),
    }
    let e = tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("ended in time")
        .unwrap();
    assert_eq!(
        (e.session_id.as_str(), e.reason),
        ("gone", EndReason::IceDisconnected)
    );
    assert!(
        at.elapsed() >= Duration::from_millis(2500),
        "ended by the restart deadline (3 s), not at once: {:?}",
        at.elapsed()
    );
    let err = handle.ice_patch("gone", Some("*"), frag).await.unwrap_err();
    assert!(matches!(err, MediaError::UnknownSession(_)), "{err:?}");
}
