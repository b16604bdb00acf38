//! Hostile SDP offers against the media engine: bounded before parsing, parsed off the async
//! workers, trickled candidates capped per session. Loopback only.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::media::{
    MediaConfig, MediaEngine, MediaError, MediaHandle, PortRange, VideoCodec, VideoSource,
    MAX_OFFER_BYTES, MAX_OFFER_LINES, MAX_OFFER_MEDIA, MAX_TRICKLED_CANDIDATES,
};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine(first_port: u16) -> MediaHandle {
    let config = MediaConfig {
        bind_ip: LOOPBACK,
        ports: PortRange {
            min: first_port,
            max: first_port + 9,
        },
        ..MediaConfig::default()
    };
    MediaEngine::start(config, VideoSource::new(VideoCodec::H264)).expect("engine starts")
}

/// A browser-like offer: one recvonly H.264 video m-line.
fn video_offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// The offer with `lines` appended (each ending in CRLF) until just under `bytes`.
fn padded(offer: &str, line: impl Fn(usize) -> String, bytes: usize) -> String {
    let mut s = offer.to_owned();
    for i in 0.. {
        let l = line(i);
        if s.len() + l.len() > bytes {
            break;
        }
        s.push_str(&l);
    }
    s
}

/// An offer about as costly to parse and answer as the bounds let through (~20-30 ms of CPU
/// in release builds): just under the line limit, its lines format parameters.
fn heavy_offer() -> String {
    let base = video_offer();
    let room = MAX_OFFER_LINES - base.lines().count() - 1;
    let mut s = base;
    for i in 0..room {
        let l = format!("a=fmtp:{} apt={i}\r\n", 96 + i % 30);
        if s.len() + l.len() > MAX_OFFER_BYTES {
            break;
        }
        s.push_str(&l);
    }
    s
}

#[tokio::test]
async fn offers_over_the_bounds_are_refused_before_parsing() {
    let handle = engine(51300);
    let good = video_offer();
    let too_long = padded(
        &good,
        |i| format!("a=x-pad:{i:0>60}\r\n"),
        MAX_OFFER_BYTES + 100,
    );
    let too_many_lines = padded(&good, |_| "a=x\r\n".into(), MAX_OFFER_BYTES);
    let too_many_media = format!(
        "{good}{}",
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(MAX_OFFER_MEDIA)
    );
    assert!(too_many_media.len() < MAX_OFFER_BYTES);
    assert!(too_many_lines.lines().count() > MAX_OFFER_LINES);
    for (offer, what) in [
        (&too_long, "bytes"),
        (&too_many_lines, "lines"),
        (&too_many_media, "m= lines"),
    ] {
        match handle.accept_offer(offer, format!("big-{what}")).await {
            Err(e @ MediaError::OfferTooLarge(_)) => {
                assert_eq!(e.code(), "offer_too_large");
                assert!(e.is_client_error());
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Within the bounds, answered.
    handle
        .accept_offer(&good, "fine".into())
        .await
        .expect("a normal offer is answered");
}

#[test]
fn offers_are_answered_off_the_async_workers() {
    // One async worker: any SDP work done on it stalls every other task for as long.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let handle = engine(51310);
        let heavy = heavy_offer();
        assert!(heavy.len() <= MAX_OFFER_BYTES && heavy.lines().count() <= MAX_OFFER_LINES);
        let t = Instant::now();
        handle
            .accept_offer(&heavy, "probe".into())
            .await
            .expect("the heavy offer is a valid one");
        let one = t.elapsed();

        // A task that wants to run every millisecond adds up the time it was kept waiting
        // while sixteen heavy offers are answered in parallel.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ticker = tokio::spawn(async move {
            let (mut stalled, mut longest) = (Duration::ZERO, Duration::ZERO);
            let mut last = Instant::now();
            let end = Instant::now() + Duration::from_secs(60);
            while stop_rx.try_recv().is_err() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let gap = last.elapsed();
                stalled += gap.saturating_sub(Duration::from_millis(3));
                longest = longest.max(gap);
                last = Instant::now();
            }
            (stalled, longest)
        });
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let (h, offer) = (handle.clone(), heavy.clone());
            set.spawn(async move { h.accept_offer(&offer, format!("heavy-{i}")).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("answered");
        }
        let all = t.elapsed();
        let _ = stop_tx.send(());
        let (stalled, longest) = ticker.await.expect("ticker");
        println!(
            "one heavy offer ({} bytes): {one:?}; sixteen in parallel: {all:?}; the async \
             worker was stalled {stalled:?} of that (longest {longest:?})",
            heavy.len()
        );
        assert!(
            all >= Duration::from_millis(40),
            "the heavy offers ({all:?}) are too cheap for this test to tell anything"
        );
        // Inline, the worker would be stalled for nearly all of it.
        assert!(
            stalled < all / 3,
            "the async worker was stalled {stalled:?} of {all:?} (longest {longest:?})"
        );
    });
}

#[tokio::test]
async fn trickled_candidates_are_capped_per_session() {
    let handle = engine(51320);
    handle
        .accept_offer(&video_offer(), "s1".into())
        .await
        .expect("answered");
    let cand = |i: usize| {
        format!(
            "candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host",
            20000 + i
        )
    };
    for i in 0..MAX_TRICKLED_CANDIDATES {
        handle
            .add_remote_candidate("s1", &cand(i))
            .await
            .unwrap_or_else(|e| panic!("candidate {i}: {e}"));
    }
    match handle
        .add_remote_candidate("s1", &cand(MAX_TRICKLED_CANDIDATES))
        .await
    {
        Err(e @ MediaError::TooManyCandidates(_)) => {
            assert_eq!(e.code(), "too_many_candidates");
            assert!(e.is_client_error());
        }
        other => panic!("one candidate too many: {other:?}"),
    }
    // Through a PATCH trickle too (same count), and end-of-candidates stays fine.
    let frag = format!("a={}\r\n", cand(999));
    assert!(matches!(
        handle.ice_patch("s1", None, &frag).await,
        Err(MediaError::TooManyCandidates(_))
    ));
    handle
        .add_remote_candidate("s1", "")
        .await
        .expect("end of candidates");
    // Another session has its own count.
    handle
        .accept_offer(&video_offer(), "s2".into())
        .await
        .expect("answered");
    let frag: String = (0..32).map(|i| format!("a={}\r\n", cand(i))).collect();
    for _ in 0..MAX_TRICKLED_CANDIDATES / 32 {
        handle
            .ice_patch("s2", None, &frag)
            .await
            .expect("within the cap");
    }
    assert!(matches!(
        handle.ice_patch("s2", None, &frag).await,
        Err(MediaError::TooManyCandidates(_))
    ));
}
