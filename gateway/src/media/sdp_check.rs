//! Early classification of an offer: does it have video, and which of the stream's codecs
//! does the browser prefer?
//!
//! str0m negotiates the real answer; this scan picks the codec (the browser lists its payload
//! types in order of preference on the `m=video` line) and turns "nothing to send" into a
//! specific error (no video vs. no usable codec, naming both sides) the HTTP layer can report.
//! It reads the SDP text line by line and never panics on odd input.

use super::{MediaError, VideoCodec};

/// The first codec of `available` (the stream's codecs, in the stream's order of
/// preference) that the offer can receive.
///
/// The stream's order wins over the browser's: Chromium lists VP8 first, yet H.264 is the
/// cheaper feed to serve (openh264 encodes on one thread; the VP8 binding's encoder threads
/// spin), so a browser that takes both gets H.264 and VP8 serves those that lack H.264
/// (Firefox without OpenH264). H.264 counts only with packetization-mode=1 and a profile a
/// constrained-baseline stream satisfies, as the engine sends nothing else.
pub(crate) fn choose_codec(sdp: &str, available: &[VideoCodec]) -> Result<VideoCodec, MediaError> {
    let sections = video_sections(sdp);
    if sections.is_empty() {
        return Err(MediaError::NoVideo);
    }
    for want in available {
        let offered = sections.iter().any(|section| {
            section
                .pts
                .iter()
                .any(|pt| usable_codec(&section.attrs, pt) == Some(*want))
        });
        if offered {
            return Ok(*want);
        }
    }
    let stream = available
        .iter()
        .map(|c| c.requirement())
        .collect::<Vec<_>>()
        .join(" or ");
    let mut offered: Vec<String> = Vec::new();
    for section in &sections {
        for pt in &section.pts {
            let Some(name) = encoding_name(&section.attrs, pt) else {
                continue;
            };
            if ["rtx", "red", "ulpfec", "flexfec-03"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            let mut label = name.to_ascii_uppercase();
            if label == "H264" && usable_codec(&section.attrs, pt).is_none() {
                label = "H264 (not packetization-mode=1 constrained baseline)".into();
            }
            if !offered.contains(&label) {
                offered.push(label);
            }
        }
    }
    let offered = if offered.is_empty() {
        "no video codec".to_owned()
    } else {
        offered.join(", ")
    };
    // Bounded: a hostile offer may list many names; the error message stays short.
    let offered: String = offered.chars().take(200).collect();
    Err(MediaError::NoSupportedCodec(format!(
        "this stream sends {stream}; the offer has {offered}"
    )))
}

/// One enabled (`port != 0`) `m=video` section: its payload types in the offer's order and
/// its attribute lines.
struct VideoSection<'a> {
    pts: Vec<&'a str>,
    attrs: Vec<&'a str>,
}

fn video_sections(sdp: &str) -> Vec<VideoSection<'_>> {
    let mut out = Vec::new();
    let mut current: Option<VideoSection<'_>> = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            out.extend(current.take());
            let mut fields = m.split_ascii_whitespace();
            let is_video = fields.next() == Some("video");
            let port_enabled = fields.next().is_some_and(|p| p != "0");
            let _proto = fields.next();
            if is_video && port_enabled {
                current = Some(VideoSection {
                    pts: fields.collect(),
                    attrs: Vec::new(),
                });
            }
        } else if let Some(sec) = current.as_mut() {
            if let Some(attr) = line.strip_prefix("a=") {
                sec.attrs.push(attr);
            }
        }
    }
    out.extend(current);
    out
}

/// The encoding name of payload type `pt` (`a=rtpmap:PT NAME/CLOCK`).
fn encoding_name<'a>(attrs: &[&'a str], pt: &str) -> Option<&'a str> {
    attrs
        .iter()
        .filter_map(|a| a.strip_prefix("rtpmap:"))
        .find_map(|r| {
            let (p, enc) = r.split_once(' ')?;
            (p.trim() == pt).then(|| enc.trim().split('/').next().unwrap_or(""))
        })
}

/// The codec payload type `pt` carries, if it is one the engine can send.
fn usable_codec(attrs: &[&str], pt: &str) -> Option<VideoCodec> {
    let name = encoding_name(attrs, pt)?;
    if name.eq_ignore_ascii_case("vp8") {
        Some(VideoCodec::Vp8)
    } else if name.eq_ignore_ascii_case("h264") && h264_fmtp_ok(fmtp(attrs, pt)) {
        Some(VideoCodec::H264)
    } else {
        None
    }
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
    let hex = |r: std::ops::Range<usize>| plid.get(r).map(|s| u8::from_str_radix(s, 16));
    let (Some(Ok(profile)), Some(Ok(flags))) = (hex(0..2), hex(2..4)) else {
        return false;
    };
    profile == 0x42 || flags & 0x40 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[VideoCodec] = &[VideoCodec::H264, VideoCodec::Vp8];
    const H264_ONLY: &[VideoCodec] = &[VideoCodec::H264];

    /// Chrome-like: VP8 preferred over H.264.
    const VP8_FIRST: &str =
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    /// Firefox without OpenH264.
    const VP8_VP9: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125\r\n\
        a=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\na=rtpmap:121 VP9/90000\r\n\
        a=rtpmap:125 rtx/90000\r\n";

    #[test]
    fn follows_the_stream_preference_among_what_the_offer_takes() {
        assert_eq!(choose_codec(VP8_FIRST, BOTH).unwrap(), VideoCodec::H264);
        let vp8_then_h264 = &[VideoCodec::Vp8, VideoCodec::H264];
        assert_eq!(
            choose_codec(VP8_FIRST, vp8_then_h264).unwrap(),
            VideoCodec::Vp8
        );
        assert_eq!(
            choose_codec(VP8_FIRST, H264_ONLY).unwrap(),
            VideoCodec::H264
        );
        let h264_first = "m=video 9 X 102 96\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1\r\n";
        assert_eq!(choose_codec(h264_first, BOTH).unwrap(), VideoCodec::H264);
        assert_eq!(
            choose_codec(h264_first, vp8_then_h264).unwrap(),
            VideoCodec::Vp8
        );
        assert_eq!(
            choose_codec(h264_first, &[VideoCodec::Vp8]).unwrap(),
            VideoCodec::Vp8
        );
        assert_eq!(choose_codec(VP8_VP9, BOTH).unwrap(), VideoCodec::Vp8);
    }

    #[test]
    fn unsupported_names_both_sides() {
        let err = choose_codec(VP8_VP9, H264_ONLY).unwrap_err();
        let MediaError::NoSupportedCodec(msg) = &err else {
            panic!("{err:?}");
        };
        assert!(msg.contains("H264 packetization-mode=1"), "{msg}");
        assert!(msg.contains("the offer has VP8, VP9"), "{msg}");
        assert!(!msg.to_ascii_lowercase().contains("rtx"), "{msg}");
        assert_eq!(err.code(), "unsupported_codec");
    }

    #[test]
    fn audio_only_is_no_video() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(choose_codec(sdp, BOTH), Err(MediaError::NoVideo)));
        let disabled = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(matches!(
            choose_codec(disabled, BOTH),
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
                choose_codec(sdp, H264_ONLY),
                Err(MediaError::NoSupportedCodec(_))
            ));
        }
        let MediaError::NoSupportedCodec(msg) = choose_codec(mode0, BOTH).unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("H264 (not packetization-mode=1"), "{msg}");
    }

    #[test]
    fn garbage_does_not_panic() {
        for sdp in [
            "",
            "m=",
            "m=video",
            "a=rtpmap:",
            "m=video 9\na=fmtp:\na=rtpmap:1",
            "m=video 9 X 1 1 1\na=rtpmap:1 \na=rtpmap:1",
        ] {
            let _ = choose_codec(sdp, BOTH);
        }
        assert!(!profile_accepts_cb("4é001")); // 6 bytes, not on char boundaries
                                               // A huge list of codec names yields a bounded message.
        let mut sdp = String::from("m=video 9 X");
        for i in 0..2000 {
            sdp.push_str(&format!(" {i}"));
        }
        sdp.push_str("\r\n");
        for i in 0..2000 {
            sdp.push_str(&format!("a=rtpmap:{i} CODEC{i}/90000\r\n"));
        }
        let MediaError::NoSupportedCodec(msg) = choose_codec(&sdp, BOTH).unwrap_err() else {
            panic!()
        };
        assert!(msg.len() < 400, "{}", msg.len());
    }
}
