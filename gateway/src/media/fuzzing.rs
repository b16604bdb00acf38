//! Pure entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`; not an API):
//! the checks an SDP offer meets before str0m answers it, which are private to the engine.

use super::sdp_check::choose_codec;
use super::{MediaError, VideoCodec};

/// What the pre-answer checks made of one offer.
#[derive(Debug)]
pub struct OfferChecks {
    /// The size, line and media-section bounds ([`super::MAX_OFFER_BYTES`],
    /// [`super::MAX_OFFER_LINES`], [`super::MAX_OFFER_MEDIA`]). When refused, nothing
    /// else ran (as in `MediaHandle::accept_offer`).
    pub bounds: Result<(), MediaError>,
    /// str0m's parse of the offer: `Ok`, or the refusal the client would get.
    pub parsed: Option<Result<(), MediaError>>,
    /// The codec choice for each order of the stream's codecs that a stream can have.
    pub codecs: Vec<(Vec<VideoCodec>, Result<VideoCodec, MediaError>)>,
}

/// Runs the checks `MediaHandle::accept_offer` runs on `sdp` before building an answer:
/// the bounds, str0m's parse (a failure turned into the client's error, as the engine does)
/// and the codec choice.
pub fn offer_checks(sdp: &str) -> OfferChecks {
    let bounds = super::engine::check_offer_bounds(sdp);
    if bounds.is_err() {
        return OfferChecks {
            bounds,
            parsed: None,
            codecs: Vec::new(),
        };
    }
    let parsed = Some(
        str0m::change::SdpOffer::from_sdp_string(sdp)
            .map(drop)
            .map_err(|e| super::engine::unparsable_offer(sdp, &e.to_string())),
    );
    let orders: [&[VideoCodec]; 4] = [
        &[VideoCodec::H264, VideoCodec::Vp8],
        &[VideoCodec::Vp8, VideoCodec::H264],
        &[VideoCodec::H264],
        &[VideoCodec::Vp8],
    ];
    let codecs = orders
        .iter()
        .map(|o| (o.to_vec(), choose_codec(sdp, o)))
        .collect();
    OfferChecks {
        bounds,
        parsed,
        codecs,
    }
}
