//! Trickle ICE and ICE restart over HTTP PATCH (RFC 9725 §4.3, used by WHEP as by WHIP), with
//! RFC 8840 `application/trickle-ice-sdpfrag` bodies.
//!
//! # Protocol, as the engine implements it
//!
//! Every session has one *ICE session* at a time, named by a strong entity-tag: the quoted
//! local ICE username fragment (`"<ufrag>"`, opaque to clients). It is returned in the `ETag`
//! of the `201` that answers the POST ([`ice_etag_of_sdp`] on the SDP answer) and of every
//! `200` that answers an ICE restart. A PATCH carries an sdpfrag:
//!
//! * **ICE restart**: the frag has `a=ice-ufrag` *and* `a=ice-pwd` and the ufrag differs from
//!   the client's current one. The client sends `If-Match: *`. The session's str0m `Rtc` takes
//!   the new remote credentials and makes new local ones (its own ICE restart, as for a
//!   re-offer), keeps its local host candidates, DTLS and SRTP; media keeps going out on the
//!   old path until the client's checks with the new credentials nominate a pair. The answer
//!   is `200` + `Content-Type: application/trickle-ice-sdpfrag` + the new `ETag`, the body
//!   being [`IceRestartAnswer::sdpfrag`]. If the new path is not checked within the engine's
//!   connect timeout the session ends ([`super::EndReason::IceDisconnected`]).
//! * **Trickle**: otherwise. The candidates are added; the answer is `204`.
//! * `If-Match` naming an entity-tag other than the current one (a PATCH of an ICE session
//!   that has since been restarted): [`MediaError::IceSessionMismatch`], `412`. A trickle frag
//!   whose `a=ice-ufrag` is not the client's current one (an older ICE generation) gets the
//!   same. `If-Match: *` and no `If-Match` at all are accepted.
//!
//! Input is hostile: a frag is at most [`MAX_SDPFRAG_BYTES`] bytes and
//! [`MAX_SDPFRAG_CANDIDATES`] candidates, and anything malformed is a
//! [`MediaError::MalformedSdpFrag`] (a 400) whose text never echoes internal state.
//!
//! # Wiring the WHEP handlers (signaling)
//!
//! * `POST /whep` (and the JSON offer endpoint, if it wants to): after
//!   [`MediaHandle::accept_offer`](super::MediaHandle::accept_offer) returns `answer`, send
//!   `ETag: {ice_etag_of_sdp(&answer)}` with the `201` (and list `ETag` in
//!   `Access-Control-Expose-Headers` if CORS is served).
//! * `PATCH /whep/{id}`: the whole handler is one call:
//!
//!   ```ignore
//!   let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
//!   match sig.media().ice_patch(&id, if_match, &frag).await {
//!       Ok(IcePatchOutcome::Trickled) => StatusCode::NO_CONTENT.into_response(),
//!       Ok(IcePatchOutcome::Restarted(a)) => (
//!           StatusCode::OK,
//!           [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag"), (header::ETAG, &a.etag)],
//!           a.sdpfrag,
//!       ).into_response(),
//!       Err(e) => media_error(e), // see the status list below
//!   }
//!   ```
//!
//!   Status codes: [`MediaError::IceSessionMismatch`] → `412 Precondition Failed` (add it to
//!   `signaling::media_error`: it is a client error and would otherwise map to 400),
//!   [`MediaError::MalformedSdpFrag`] → 400, [`MediaError::UnknownSession`] → 404,
//!   [`MediaError::IceRestartFailed`] → 500 (the session lives on, as RFC 9725 asks).
//!   The viewer page (`web/viewer.js`) PATCHes `/whep/{webrtc_id}` for sessions it made through
//!   the JSON offer endpoint too, so PATCH should find any live session of the registry by id.

use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};

use super::MediaError;

/// Largest sdpfrag body accepted, in bytes.
pub const MAX_SDPFRAG_BYTES: usize = 16 * 1024;
/// Most `a=candidate` lines accepted in one sdpfrag.
pub const MAX_SDPFRAG_CANDIDATES: usize = 32;
/// Most lines accepted in one sdpfrag (candidates included).
const MAX_LINES: usize = 128;
/// Longest line accepted.
const MAX_LINE: usize = 1024;
/// Most entity-tags looked at in one `If-Match`.
const MAX_IF_MATCH_TAGS: usize = 16;

/// A parsed `application/trickle-ice-sdpfrag` body.
#[derive(Debug, Clone, Default)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, if present (the same in every section that has one).
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, if present.
    pub ice_pwd: Option<String>,
    /// The candidates, parsed. mDNS (`*.local`) candidates are left out: an ICE-lite server
    /// learns such peers as peer-reflexive from their checks.
    pub candidates: Vec<Candidate>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

impl SdpFrag {
    /// Parse an sdpfrag body (RFC 8840), bounded in size, lines and candidates.
    ///
    /// Lines other than `a=ice-ufrag`, `a=ice-pwd`, `a=candidate`, `a=end-of-candidates` that
    /// are well-formed SDP (`m=`, `a=mid:`, `a=ice-options:`, `a=group:` ...) are ignored.
    pub fn parse(body: &str) -> Result<SdpFrag, MediaError> {
        let bad = |m: String| Err(MediaError::MalformedSdpFrag(m));
        if body.len() > MAX_SDPFRAG_BYTES {
            return bad(format!("sdpfrag larger than {MAX_SDPFRAG_BYTES} bytes"));
        }
        let mut frag = SdpFrag::default();
        let mut seen_candidates = 0usize;
        for (n, raw) in body.split('\n').enumerate() {
            let no = n + 1;
            if no > MAX_LINES {
                return bad(format!("sdpfrag has more than {MAX_LINES} lines"));
            }
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() {
                continue;
            }
            if line.len() > MAX_LINE {
                return bad(format!("line {no} longer than {MAX_LINE} bytes"));
            }
            if !matches!(line.as_bytes(), [k, b'=', ..] if k.is_ascii_lowercase()) {
                return bad(format!("line {no} is not an SDP line (want x=...)"));
            }
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                let v = v.trim();
                if !valid_ice_chars(v, 4) {
                    return bad(format!(
                        "line {no}: a=ice-ufrag must be 4 to 256 of A-Z a-z 0-9 + /"
                    ));
                }
                if frag.ice_ufrag.as_deref().is_some_and(|u| u != v) {
                    return bad(format!("line {no}: a second, different a=ice-ufrag"));
                }
                frag.ice_ufrag = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                let v = v.trim();
                if !valid_ice_chars(v, 22) {
                    return bad(format!(
                        "line {no}: a=ice-pwd must be 22 to 256 of A-Z a-z 0-9 + /"
                    ));
                }
                if frag.ice_pwd.as_deref().is_some_and(|p| p != v) {
                    return bad(format!("line {no}: a second, different a=ice-pwd"));
                }
                frag.ice_pwd = Some(v.to_owned());
            } else if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    seen_candidates += 1;
                    if seen_candidates > MAX_SDPFRAG_CANDIDATES {
                        return bad(format!(
                            "more than {MAX_SDPFRAG_CANDIDATES} candidates in one sdpfrag"
                        ));
                    }
                    match Candidate::from_sdp_string(c) {
                        Ok(cand) => frag.candidates.push(cand),
                        Err(_) if c.split_ascii_whitespace().any(|f| f.ends_with(".local")) => {}
                        Err(_) => return bad(format!("line {no}: candidate does not parse")),
                    }
                } else if c == "end-of-candidates" {
                    frag.end_of_candidates = true;
                }
            }
        }
        if frag.ice_pwd.is_some() && frag.ice_ufrag.is_none() {
            return bad("a=ice-pwd without a=ice-ufrag".into());
        }
        Ok(frag)
    }
}

/// RFC 8839 `ice-char` (ALPHA / DIGIT / "+" / "/"), `min..=256` of them.
fn valid_ice_chars(v: &str, min: usize) -> bool {
    (min..=256).contains(&v.len())
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// The `If-Match` request header of a PATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header.
    Absent,
    /// `If-Match: *`.
    Any,
    /// Entity-tags as sent (quotes included), at most a few.
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parse the header value (None: no header). Weak tags (`W/"…"`) are kept as sent and so
    /// never match, as RFC 9110 §13.1.1 asks (strong comparison).
    pub fn parse(header: Option<&str>) -> IfMatch {
        let Some(h) = header else {
            return IfMatch::Absent;
        };
        if h.trim() == "*" {
            return IfMatch::Any;
        }
        IfMatch::Tags(
            h.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .take(MAX_IF_MATCH_TAGS)
                .map(|t| t.chars().take(300).collect())
                .collect(),
        )
    }

    /// Does the precondition hold for the current entity-tag `etag` (quoted)?
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Absent | IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// The strong entity-tag (quoted) naming the ICE session whose local ufrag is `local_ufrag`.
pub fn ice_etag(local_ufrag: &str) -> String {
    format!("\"{local_ufrag}\"")
}

/// The entity-tag of the ICE session an SDP answer of the engine starts: the `ETag` for the
/// `201 Created` of a WHEP POST. None when the SDP has no `a=ice-ufrag`.
pub fn ice_etag_of_sdp(answer_sdp: &str) -> Option<String> {
    first_attr(answer_sdp, "a=ice-ufrag:").map(ice_etag)
}

fn first_attr<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
}

/// What an ICE restart gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceRestartAnswer {
    /// The new local ICE username fragment.
    pub ufrag: String,
    /// The new local ICE password.
    pub pwd: String,
    /// The local candidates (`candidate:…`, without `a=`): the host candidates of the answer.
    pub candidates: Vec<String>,
    /// The entity-tag of the new ICE session (quoted), for the `ETag` header.
    pub etag: String,
    /// The response body (`application/trickle-ice-sdpfrag`): `a=ice-lite`, the new
    /// credentials, the bundle's first m-line and mid, the candidates, `a=end-of-candidates`.
    pub sdpfrag: String,
}

/// What a PATCH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcePatchOutcome {
    /// Candidates added to the current ICE session: answer `204 No Content`.
    Trickled,
    /// ICE restarted: answer `200 OK` with the sdpfrag body and the new `ETag`.
    Restarted(IceRestartAnswer),
}

/// Write an sdpfrag (RFC 8840) with our ICE credentials and candidates.
///
/// `media` is the m-line and mid of the section the candidates belong to (the bundle's
/// first), as RFC 9725's example answers carry them.
pub fn write_sdpfrag(
    ufrag: &str,
    pwd: &str,
    media: Option<(&str, &str)>,
    candidates: &[String],
) -> String {
    let mut s = String::with_capacity(256 + 100 * candidates.len());
    s.push_str("a=ice-lite\r\n");
    s.push_str(&format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"));
    if let Some((m_line, mid)) = media {
        s.push_str(&format!("{m_line}\r\na=mid:{mid}\r\n"));
    }
    for c in candidates {
        s.push_str(&format!("a={c}\r\n"));
    }
    s.push_str("a=end-of-candidates\r\n");
    s
}

/// Per-session ICE bookkeeping the engine keeps beside the `Rtc`.
pub(super) struct IceState {
    /// The client's offer without its candidate lines: re-applied with new credentials on a
    /// restart, which is how str0m restarts ICE for a remote peer (as for a re-offer).
    offer: String,
    /// The client's current ufrag.
    remote_ufrag: String,
    /// Our current ufrag (names the ICE session: [`ice_etag`]).
    local_ufrag: String,
    /// Set by a restart, cleared when a pair is nominated again: the session ends if the
    /// client does not complete the restart by then.
    pub(super) restart_deadline: Option<Instant>,
}

impl IceState {
    /// From the offer the session was created with and the answer given to it.
    pub(super) fn new(offer_sdp: &str, answer_sdp: &str) -> IceState {
        IceState {
            offer: without_candidates(offer_sdp),
            remote_ufrag: first_attr(offer_sdp, "a=ice-ufrag:")
                .unwrap_or_default()
                .to_owned(),
            local_ufrag: first_attr(answer_sdp, "a=ice-ufrag:")
                .unwrap_or_default()
                .to_owned(),
            restart_deadline: None,
        }
    }

    /// The client's current ufrag (a PATCH with another one restarts ICE or is stale).
    pub(super) fn remote_ufrag(&self) -> &str {
        &self.remote_ufrag
    }

    /// The entity-tag of the current ICE session.
    pub(super) fn etag(&self) -> String {
        ice_etag(&self.local_ufrag)
    }

    /// Apply a PATCH to the session's `Rtc`. On a restart the session has `restart_timeout`
    /// to be checked on its new credentials.
    pub(super) fn patch(
        &mut self,
        rtc: &mut Rtc,
        frag: SdpFrag,
        if_match: &IfMatch,
        now: Instant,
        restart_timeout: Duration,
    ) -> Result<IcePatchOutcome, MediaError> {
        if !if_match.matches(&self.etag()) {
            return Err(MediaError::IceSessionMismatch);
        }
        match (&frag.ice_ufrag, &frag.ice_pwd) {
            (Some(ufrag), Some(pwd)) if *ufrag != self.remote_ufrag => {
                let (ufrag, pwd) = (ufrag.clone(), pwd.clone());
                self.restart(rtc, &ufrag, &pwd, frag.candidates, now, restart_timeout)
                    .map(IcePatchOutcome::Restarted)
            }
            (Some(ufrag), _) if *ufrag != self.remote_ufrag => {
                // Candidates of another (older) ICE generation: out of order.
                Err(MediaError::IceSessionMismatch)
            }
            _ => {
                for c in frag.candidates {
                    rtc.add_remote_candidate(c);
                }
                Ok(IcePatchOutcome::Trickled)
            }
        }
    }

    fn restart(
        &mut self,
        rtc: &mut Rtc,
        ufrag: &str,
        pwd: &str,
        candidates: Vec<Candidate>,
        now: Instant,
        restart_timeout: Duration,
    ) -> Result<IceRestartAnswer, MediaError> {
        let failed = || MediaError::IceRestartFailed("the ICE restart could not be applied");
        let reoffer = with_credentials(&self.offer, ufrag, pwd);
        let offer = SdpOffer::from_sdp_string(&reoffer).map_err(|_| failed())?;
        // Same offer, new credentials: str0m sees an ICE restart by the remote, makes new
        // local credentials and keeps its local candidates, DTLS and SRTP.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rtc.sdp_api().accept_offer(offer)
        }))
        .map_err(|_| failed())?
        .map_err(|_| failed())?
        .to_sdp_string();
        for c in candidates {
            rtc.add_remote_candidate(c);
        }
        let creds = rtc.direct_api().local_ice_credentials();
        self.offer = reoffer;
        self.remote_ufrag = ufrag.to_owned();
        self.local_ufrag = creds.ufrag.clone();
        self.restart_deadline = Some(now + restart_timeout);

        let (media, local_candidates) = first_section(&answer);
        let etag = self.etag();
        let sdpfrag = write_sdpfrag(&creds.ufrag, &creds.pass, media, &local_candidates);
        Ok(IceRestartAnswer {
            ufrag: creds.ufrag,
            pwd: creds.pass,
            candidates: local_candidates,
            etag,
            sdpfrag,
        })
    }
}

/// The SDP without `a=candidate` and `a=end-of-candidates` lines, CRLF line ends.
fn without_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for l in sdp.lines() {
        let t = l.trim();
        if t.is_empty() || t.starts_with("a=candidate:") || t == "a=end-of-candidates" {
            continue;
        }
        out.push_str(t);
        out.push_str("\r\n");
    }
    out
}

/// `sdp` (already without candidates) with every ice-ufrag / ice-pwd replaced.
fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for l in sdp.lines() {
        if l.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if l.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(l);
        }
        out.push_str("\r\n");
    }
    out
}

/// The first m-section of an SDP: its m-line and mid, and its candidates (without `a=`).
fn first_section(sdp: &str) -> (Option<(&str, &str)>, Vec<String>) {
    let mut m_line = None;
    let mut mid = None;
    let mut candidates = Vec::new();
    for l in sdp.lines().map(str::trim) {
        if l.starts_with("m=") {
            if m_line.is_some() {
                break;
            }
            m_line = Some(l);
        } else if m_line.is_some() {
            if let Some(v) = l.strip_prefix("a=mid:") {
                mid = Some(v.trim());
            } else if let Some(c) = l.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    candidates.push(c.to_owned());
                }
            }
        }
    }
    (m_line.zip(mid), candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UFRAG: &str = "EsAw";
    const PWD: &str = "P2uYro0UCOQ4zxjKXaWCBui1";

    fn restart_frag() -> String {
        format!(
            "a=ice-options:trickle ice2\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
             a=mid:0\r\na=ice-ufrag:{UFRAG}\r\na=ice-pwd:{PWD}\r\n\
             a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
             a=candidate:3 1 udp 2122260223 e1a3a5b1-0b6c-4bd5-b3a5-6f4e0f43c2c1.local 61765 typ host\r\n\
             a=end-of-candidates\r\n"
        )
    }

    #[test]
    fn parses_a_restart_frag() {
        let f = SdpFrag::parse(&restart_frag()).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some(UFRAG));
        assert_eq!(f.ice_pwd.as_deref(), Some(PWD));
        assert_eq!(f.candidates.len(), 1, "the mDNS candidate is left out");
        assert_eq!(f.candidates[0].addr().to_string(), "192.0.2.1:61764");
        assert!(f.end_of_candidates);
    }

    #[test]
    fn parses_a_trickle_frag_with_lf_only() {
        let f = SdpFrag::parse(
            "a=ice-ufrag:EsAw\nm=video 9 UDP/TLS/RTP/SAVPF 0\na=mid:0\n\
             a=candidate:1 1 udp 2122260223 192.0.2.1 1 typ host\n",
        )
        .unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.ice_pwd, None);
        assert_eq!(f.candidates.len(), 1);
        assert!(!f.end_of_candidates);
        assert_eq!(SdpFrag::parse("").unwrap().candidates.len(), 0);
    }

    #[test]
    fn refuses_malformed_frags_with_a_client_error() {
        let many: String = (0..=MAX_SDPFRAG_CANDIDATES)
            .map(|i| {
                format!(
                    "a=candidate:{i} 1 udp 1 192.0.2.1 {} typ host\r\n",
                    1000 + i
                )
            })
            .collect();
        let long_line = format!("a=x:{}", "y".repeat(MAX_LINE));
        let many_lines = "a=x\r\n".repeat(MAX_LINES + 1);
        let huge = "a".repeat(MAX_SDPFRAG_BYTES + 1);
        let cases: Vec<(&str, String)> = vec![
            ("size", huge),
            ("lines", many_lines),
            ("line length", long_line),
            ("candidates", many),
            ("not sdp", "hello world".into()),
            ("binary-ish", "a=ice-ufrag:\u{0}\u{1}abcd".into()),
            ("short ufrag", "a=ice-ufrag:abc".into()),
            ("bad ufrag char", "a=ice-ufrag:ab cd:ef".into()),
            ("short pwd", "a=ice-ufrag:abcd\na=ice-pwd:short".into()),
            (
                "two ufrags",
                "a=ice-ufrag:abcd\na=ice-ufrag:efgh\n".to_owned(),
            ),
            ("pwd alone", format!("a=ice-pwd:{PWD}")),
            ("bad candidate", "a=candidate:nonsense".into()),
            (
                "bad candidate address",
                "a=candidate:1 1 udp 1 999.0.0.1 1 typ host".into(),
            ),
        ];
        for (what, body) in cases {
            let err = SdpFrag::parse(&body).expect_err(what);
            assert!(
                matches!(err, MediaError::MalformedSdpFrag(_)),
                "{what}: {err:?}"
            );
            assert!(err.is_client_error(), "{what}");
            assert_eq!(err.code(), "malformed_sdpfrag");
            let text = err.to_string();
            assert!(text.len() < 200, "{what}: short message, no echo: {text}");
            assert!(
                !text.contains("nonsense") && !text.contains("999."),
                "{text}"
            );
        }
    }

    #[test]
    fn if_match_parses_and_compares_strongly() {
        assert_eq!(IfMatch::parse(None), IfMatch::Absent);
        assert_eq!(IfMatch::parse(Some(" * ")), IfMatch::Any);
        let tag = ice_etag("abcd");
        assert_eq!(tag, "\"abcd\"");
        assert!(IfMatch::parse(Some("\"abcd\"")).matches(&tag));
        assert!(IfMatch::parse(Some("\"x\", \"abcd\"")).matches(&tag));
        assert!(!IfMatch::parse(Some("W/\"abcd\"")).matches(&tag));
        assert!(!IfMatch::parse(Some("\"abce\"")).matches(&tag));
        assert!(!IfMatch::parse(Some("")).matches(&tag));
        assert!(IfMatch::Any.matches(&tag) && IfMatch::Absent.matches(&tag));
        let many = vec!["\"x\""; 1000].join(",");
        match IfMatch::parse(Some(&many)) {
            IfMatch::Tags(t) => assert_eq!(t.len(), MAX_IF_MATCH_TAGS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_a_frag_that_parses_back() {
        let cands = vec!["candidate:1 1 udp 2130706431 192.0.2.9 50000 typ host".to_owned()];
        let s = write_sdpfrag(
            "abcdEFGH12345678",
            "0123456789abcdefghijkl",
            Some(("m=video 9 UDP/TLS/RTP/SAVPF 108", "0")),
            &cands,
        );
        assert!(s.starts_with("a=ice-lite\r\n"));
        assert!(s.contains("\r\nm=video 9 UDP/TLS/RTP/SAVPF 108\r\na=mid:0\r\n"));
        assert!(s.ends_with("a=end-of-candidates\r\n"));
        let back = SdpFrag::parse(&s).unwrap();
        assert_eq!(back.ice_ufrag.as_deref(), Some("abcdEFGH12345678"));
        assert_eq!(back.ice_pwd.as_deref(), Some("0123456789abcdefghijkl"));
        assert_eq!(back.candidates.len(), 1);
        assert!(back.end_of_candidates);
    }

    #[test]
    fn sdp_helpers() {
        let sdp = "v=0\r\na=ice-ufrag:old1\r\nm=video 9 X 96\r\na=mid:v\r\na=ice-ufrag:old1\r\n\
                   a=ice-pwd:oldoldoldoldoldoldold1\r\na=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n\
                   a=end-of-candidates\r\nm=audio 9 X 0\r\na=mid:a\r\na=candidate:2 1 udp 1 192.0.2.1 2 typ host\r\n";
        assert_eq!(ice_etag_of_sdp(sdp).as_deref(), Some("\"old1\""));
        assert_eq!(ice_etag_of_sdp("v=0\r\n"), None);
        let (media, cands) = first_section(sdp);
        assert_eq!(media, Some(("m=video 9 X 96", "v")));
        assert_eq!(cands, vec!["candidate:1 1 udp 1 192.0.2.1 1 typ host"]);
        let stripped = without_candidates(sdp);
        assert!(!stripped.contains("candidate"));
        let re = with_credentials(&stripped, "new1", "newnewnewnewnewnewnew1");
        assert_eq!(re.matches("a=ice-ufrag:new1\r\n").count(), 2);
        assert!(re.contains("a=ice-pwd:newnewnewnewnewnewnew1\r\n"));
        assert!(!re.contains("old"));
    }
}
