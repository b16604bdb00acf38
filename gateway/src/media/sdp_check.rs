//! Early classification of an offer: does it have video, and a codec we can send?
//!
//! str0m negotiates the real answer; this scan only exists to turn "str0m found nothing to
//! send" into a specific error (no video vs. no usable codec) the HTTP layer can report. It
//! reads the SDP text line by line and never panics on odd input.

use super::{MediaError, VideoCodec};

/// Check `sdp` (already known to parse) for an enabled video section offering `codec`.
pub(crate) fn check_offer(sdp: &str, codec: VideoCodec) -> Result<(), MediaError> {
    let mut any_video = false;
    for section in video_sections(sdp) {
        any_video = true;
        if section_supports(&section, codec) {
            return Ok(());
        }
    }
    if any_video {
        Err(MediaError::NoSupportedCodec(codec.requirement()))
    } else {
        Err(MediaError::NoVideo)
    }
}

/// The attribute lines of each enabled (`port != 0`) `m=video` section.
fn video_sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(current.take());
            let mut fields = m.split_ascii_whitespace();
            let is_video = fields.next() == Some("video");
            let port_enabled = fields.next().is_some_and(|p| p != "0");
            if is_video && port_enabled {
                current = Some(Vec::new());
            }
        } else if let Some(sec) = current.as_mut() {
            if let Some(attr) = line.strip_prefix("a=") {
                sec.push(attr);
            }
        }
    }
    out.extend(current);
    out
}

fn section_supports(attrs: &[&str], codec: VideoCodec) -> bool {
    let want = match codec {
        VideoCodec::H264 => "h264",
        VideoCodec::Vp8 => "vp8",
    };
    attrs
        .iter()
        .filter_map(|a| a.strip_prefix("rtpmap:"))
        .filter_map(|r| {
            let (pt, enc) = r.split_once(' ')?;
            let name = enc.split('/').next()?;
            name.eq_ignore_ascii_case(want).then_some(pt.trim())
        })
        .any(|pt| match codec {
            VideoCodec::Vp8 => true,
            VideoCodec::H264 => h264_fmtp_ok(fmtp(attrs, pt)),
        })
}

fn fmtp<'a>(attrs: &[&'a str], pt: &str) -> &'a str {
    attrs
        .iter()
        .filter_map(|a| a.strip_prefix("fmtp:"))
        .find_map(|f| {
            let (p, params) = f.split_once(' ')?;
            (p == pt).then_some(params)
        })
        .unwrap_or("")
}

/// packetization-mode=1 and a profile a constrained-baseline stream satisfies.
fn h264_fmtp_ok(params: &str) -> bool {
    let mut mode1 = false;
    // RFC 6184: absent profile-level-id means 42000a (baseline), which CB satisfies.
    let mut profile_ok = true;
    for kv in params.split(';') {
        let Some((k, v)) = kv.trim().split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "packetization-mode" => mode1 = v.trim() == "1",
            "profile-level-id" => profile_ok = profile_accepts_cb(v.trim()),
            _ => {}
        }
    }
    mode1 && profile_ok
}

/// Does a receiver announcing `plid` (6 hex digits) decode constrained baseline?
/// Baseline (42xx) and anything flagged constraint_set1 (4de0, 58e0, 64e0...) do.
fn profile_accepts_cb(plid: &str) -> bool {
    if plid.len() != 6 || !plid.is_ascii() {
        return false;
    }
    let (Ok(profile), Ok(flags)) = (
        u8::from_str_radix(&plid[0..2], 16),
        u8::from_str_radix(&plid[2..4], 16),
    ) else {
        return false;
    };
    profile == 0x42 || flags & 0x40 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn accepts_browser_h264() {
        assert!(check_offer(H264, VideoCodec::H264).is_ok());
        assert!(check_offer(H264, VideoCodec::Vp8).is_ok());
    }

    #[test]
    fn audio_only_is_no_video() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            check_offer(sdp, VideoCodec::H264),
            Err(MediaError::NoVideo)
        ));
        let disabled = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(matches!(
            check_offer(disabled, VideoCodec::H264),
            Err(MediaError::NoVideo)
        ));
    }

    #[test]
    fn rejects_mode0_and_high_profile() {
        let vp8 = "m=video 9 X 96\r\na=rtpmap:96 VP8/90000\r\n";
        let mode0 = "m=video 9 X 97\r\na=rtpmap:97 H264/90000\r\n\
            a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n";
        let high = "m=video 9 X 98\r\na=rtpmap:98 H264/90000\r\n\
            a=fmtp:98 packetization-mode=1;profile-level-id=640032\r\n";
        for sdp in [vp8, mode0, high] {
            assert!(matches!(
                check_offer(sdp, VideoCodec::H264),
                Err(MediaError::NoSupportedCodec(_))
            ));
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        for sdp in [
            "",
            "m=",
            "m=video",
            "a=rtpmap:",
            "m=video 9\na=fmtp:\na=rtpmap:1",
        ] {
            let _ = check_offer(sdp, VideoCodec::H264);
        }
        assert!(!profile_accepts_cb("4é001")); // 6 bytes, not on char boundaries
    }
}
