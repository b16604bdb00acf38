//! Fuzzes the SDP checks the gateway runs on untrusted text before str0m answers an offer
//! (gateway/src/media: the offer bounds, str0m's parse and the refusal built from its error,
//! the codec choice) and on trickled candidates (the RFC 8840 sdpfrag parser, If-Match).
//!
//! Input: the text itself (not UTF-8: refused as the HTTP layer does, nothing to check).
//!
//! Checks: nothing panics; the bounds refuse exactly the offers over
//! `MAX_OFFER_BYTES` / `MAX_OFFER_LINES` / `MAX_OFFER_MEDIA` (counted here independently);
//! a refusal never carries a heap address or str0m's internal text; a chosen codec is one
//! the stream has, and an offer without an enabled `m=video` section gets `no_video`; an
//! accepted sdpfrag is within its byte and candidate bounds.
#![no_main]

use gateway::media::fuzzing::offer_checks;
use gateway::media::ice_restart::{
    ice_etag, ice_etag_of_sdp, IfMatch, SdpFrag, MAX_SDPFRAG_BYTES, MAX_SDPFRAG_CANDIDATES,
};
use gateway::media::{MediaError, MAX_OFFER_BYTES, MAX_OFFER_LINES, MAX_OFFER_MEDIA};
use libfuzzer_sys::fuzz_target;

/// What a client may see: no heap address, no parser internals, no control characters.
fn assert_clean(e: &MediaError) {
    let s = e.to_string();
    assert!(!s.contains("0x"), "heap address in {s:?}");
    assert!(!s.contains("PointerOffset"), "parser internals in {s:?}");
    assert!(s.len() <= 300, "refusal of {} bytes", s.len());
    assert!(
        !s.chars().any(char::is_control),
        "control character in {s:?}"
    );
}

fn has_enabled_video(sdp: &str) -> bool {
    sdp.lines().map(str::trim).any(|l| {
        let mut f = l.strip_prefix("m=").unwrap_or("").split_ascii_whitespace();
        f.next() == Some("video") && f.next().is_some_and(|p| p != "0")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let checks = offer_checks(sdp);
    let lines = sdp.split('\n').count();
    let media = sdp.split('\n').filter(|l| l.starts_with("m=")).count();
    let over = sdp.len() > MAX_OFFER_BYTES || lines > MAX_OFFER_LINES || media > MAX_OFFER_MEDIA;
    match &checks.bounds {
        Ok(()) => assert!(!over, "an offer over the bounds passed"),
        Err(e) => {
            assert!(over, "an offer within the bounds was refused: {e}");
            assert_eq!(e.code(), "offer_too_large");
            assert!(checks.parsed.is_none() && checks.codecs.is_empty());
        }
    }
    if let Some(Err(e)) = &checks.parsed {
        assert_eq!(e.code(), "malformed_sdp");
        assert_clean(e);
    }
    for (order, choice) in &checks.codecs {
        match choice {
            Ok(c) => {
                assert!(order.contains(c), "chose {c:?} from {order:?}");
                assert!(
                    has_enabled_video(sdp),
                    "chose a codec without a video section"
                );
            }
            Err(MediaError::NoVideo) => {}
            Err(e @ MediaError::NoSupportedCodec(_)) => {
                assert!(has_enabled_video(sdp), "{e} without a video section");
            }
            Err(e) => panic!("unexpected codec refusal {e:?}"),
        }
        if !has_enabled_video(sdp) {
            assert!(matches!(choice, Err(MediaError::NoVideo)), "{choice:?}");
        }
    }

    // The same text as a trickle-ICE sdpfrag (PATCH body).
    match SdpFrag::parse(sdp) {
        Ok(frag) => {
            assert!(sdp.len() <= MAX_SDPFRAG_BYTES);
            assert!(frag.candidates.len() <= MAX_SDPFRAG_CANDIDATES);
            if let Some(u) = &frag.ice_ufrag {
                assert!(sdp.contains(u.as_str()));
            }
        }
        Err(e) => {
            assert_eq!(e.code(), "malformed_sdpfrag");
            assert!(!e.to_string().contains("0x"), "{e}");
        }
    }
    // And its first line as an If-Match header against an ETag of the text.
    let first = sdp.lines().next();
    let etag = ice_etag_of_sdp(sdp).unwrap_or_else(|| ice_etag("fuzz"));
    let m = IfMatch::parse(first);
    let _ = m.matches(&etag);
    if !etag.contains(',') && etag.chars().count() <= 300 {
        assert!(
            IfMatch::parse(Some(etag.as_str())).matches(&etag),
            "{etag} does not match itself"
        );
    }
});
