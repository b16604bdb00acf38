//! `MEDIA_SOURCE`: what the gateway streams to its viewers.
//!
//! The setting is parsed (and its syntax checked) at start-up into a [`MediaSourceSpec`];
//! [`start`] turns a spec into running [`VideoFeeds`]: the built-in test pattern
//! ([`crate::media::testsrc`], H.264 and VP8), RTP ingest ([`crate::media::rtp`]) or a looped
//! file ([`crate::media::file`]), each of the latter in its one codec.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::media::testsrc::{TestSource, TestSourceConfig};
use crate::media::{VideoCodec, VideoFeeds, VideoSource};

/// A parsed `MEDIA_SOURCE` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSourceSpec {
    /// `testsrc`: the built-in test pattern, in H.264 and VP8 (each encoded only while
    /// somebody watches it).
    TestSrc,
    /// `rtp://ADDR:PORT?codec=h264|vp8[&source=IP:PORT]`: RTP received on a local UDP
    /// address, from the configured sender or else the first that sends.
    Rtp {
        /// Local address to receive RTP on.
        addr: SocketAddr,
        /// Codec of the incoming stream.
        codec: VideoCodec,
        /// The only sender taken (`source=`), if configured.
        sender: Option<SocketAddr>,
    },
    /// A file path (played in a loop).
    File(PathBuf),
}

/// Why a `MEDIA_SOURCE` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceSpecError(String);

impl FromStr for MediaSourceSpec {
    type Err = SourceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SourceSpecError(
                "empty; use `testsrc`, `rtp://ADDR:PORT?codec=h264|vp8` or a file path".into(),
            ));
        }
        if s.eq_ignore_ascii_case("testsrc") {
            return Ok(MediaSourceSpec::TestSrc);
        }
        if let Some(rest) = s.strip_prefix("rtp://") {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            let addr: SocketAddr = addr.trim_end_matches('/').parse().map_err(|_| {
                SourceSpecError(format!(
                    "{s:?}: the RTP address must be IP:PORT (e.g. rtp://0.0.0.0:5004?codec=h264)"
                ))
            })?;
            let mut codec = VideoCodec::H264;
            let mut sender = None;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("source", v)) => {
                        sender = Some(v.parse::<SocketAddr>().map_err(|_| {
                            SourceSpecError(format!(
                                "{s:?}: source={v:?} must be the sender's IP:PORT \
                                 (e.g. source=127.0.0.1:6000)"
                            ))
                        })?);
                    }
                    Some(("codec", v)) => {
                        codec = match v.to_ascii_lowercase().as_str() {
                            "h264" => VideoCodec::H264,
                            "vp8" => VideoCodec::Vp8,
                            other => {
                                return Err(SourceSpecError(format!(
                                    "{s:?}: codec {other:?} is not supported (h264 or vp8)"
                                )))
                            }
                        }
                    }
                    _ => {
                        return Err(SourceSpecError(format!(
                            "{s:?}: unknown parameter {pair:?} (codec=h264|vp8, source=IP:PORT)"
                        )))
                    }
                }
            }
            return Ok(MediaSourceSpec::Rtp {
                addr,
                codec,
                sender,
            });
        }
        if s.contains("://") {
            return Err(SourceSpecError(format!(
                "{s:?}: unknown scheme; use `testsrc`, `rtp://ADDR:PORT?codec=h264|vp8` or a \
                 file path"
            )));
        }
        Ok(MediaSourceSpec::File(PathBuf::from(s)))
    }
}

/// Keeps a source's producer alive (an encoder thread, an ingest task); dropping it stops it.
pub struct SourceGuard {
    inner: Box<dyn std::any::Any + Send + Sync>,
}

impl SourceGuard {
    /// Wraps whatever keeps a producer running.
    pub fn new<T: Send + Sync + 'static>(inner: T) -> Self {
        Self {
            inner: Box::new(inner),
        }
    }

    /// The RTP ingest's counters, when the source is RTP.
    pub fn rtp_stats(&self) -> Option<std::sync::Arc<crate::media::rtp::RtpStats>> {
        self.inner
            .downcast_ref::<crate::media::rtp::RtpSource>()
            .map(|r| r.stats_handle())
    }
}

/// Starts the producer named by `spec`. Errors name `MEDIA_SOURCE`.
pub fn start(spec: &MediaSourceSpec) -> anyhow::Result<(VideoFeeds, SourceGuard)> {
    match spec {
        MediaSourceSpec::TestSrc => {
            // H.264 first: a viewer whose browser takes both gets H.264 (the cheaper feed),
            // VP8 serves browsers without H.264 (Firefox without OpenH264).
            let codecs = crate::media::testsrc::available_codecs();
            if !codecs.contains(&VideoCodec::Vp8) {
                tracing::info!(
                    "test pattern in H.264 only: this build has no VP8 encoder, so browsers \
                     without H.264 (Firefox without OpenH264) get no video; build with \
                     `--features vp8` (needs `apt-get install libvpx-dev`)"
                );
            }
            let feeds = VideoFeeds::new(codecs);
            let test = TestSource::spawn(TestSourceConfig::default(), feeds.clone())
                .map_err(|e| anyhow::anyhow!("MEDIA_SOURCE=testsrc: {e}"))?;
            Ok((feeds, SourceGuard::new(test)))
        }
        MediaSourceSpec::Rtp {
            addr,
            codec,
            sender,
        } => {
            let source = VideoSource::new(*codec);
            let rtp = crate::media::rtp::RtpSource::bind_from(*addr, *sender, source.clone())
                .map_err(|e| anyhow::anyhow!("MEDIA_SOURCE=rtp://{addr}: {e}"))?;
            Ok((source.into(), SourceGuard::new(rtp)))
        }
        MediaSourceSpec::File(path) => {
            let config = crate::media::file::FileSourceConfig::default();
            let (source, file) = crate::media::file::FileSource::spawn(path, &config)
                .map_err(|e| anyhow::anyhow!("MEDIA_SOURCE={}: {e}", path.display()))?;
            Ok((source.into(), SourceGuard::new(file)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("testsrc".parse(), Ok(MediaSourceSpec::TestSrc));
        assert_eq!(
            "rtp://0.0.0.0:5004?codec=vp8".parse(),
            Ok(MediaSourceSpec::Rtp {
                addr: "0.0.0.0:5004".parse().unwrap(),
                codec: VideoCodec::Vp8,
                sender: None
            })
        );
        assert_eq!(
            "rtp://127.0.0.1:5004".parse(),
            Ok(MediaSourceSpec::Rtp {
                addr: "127.0.0.1:5004".parse().unwrap(),
                codec: VideoCodec::H264,
                sender: None
            })
        );
        assert_eq!(
            "/videos/a.h264".parse(),
            Ok(MediaSourceSpec::File("/videos/a.h264".into()))
        );
        assert!("rtp://nope".parse::<MediaSourceSpec>().is_err());
        assert!("rtp://1.2.3.4:5?codec=av1"
            .parse::<MediaSourceSpec>()
            .is_err());
        assert!("http://x/y".parse::<MediaSourceSpec>().is_err());
        assert!("".parse::<MediaSourceSpec>().is_err());
    }

    #[tokio::test]
    async fn rtp_and_file_sources_start_or_explain() {
        let (feeds, _guard) = start(&"rtp://127.0.0.1:0?codec=vp8".parse().unwrap()).unwrap();
        assert_eq!(feeds.codecs(), [VideoCodec::Vp8]);
        let (feeds, _guard) = start(&MediaSourceSpec::TestSrc).unwrap();
        assert_eq!(feeds.codecs(), [VideoCodec::H264, VideoCodec::Vp8]);
        let e = start(&MediaSourceSpec::File("/nonexistent/x.ivf".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("MEDIA_SOURCE=/nonexistent/x.ivf"), "{e}");
    }

    #[tokio::test]
    async fn only_an_rtp_source_has_rtp_counters() {
        let (_, guard) = start(&"rtp://127.0.0.1:0?codec=h264".parse().unwrap()).unwrap();
        let stats = guard.rtp_stats().expect("RTP counters");
        assert_eq!(
            stats
                .other_senders
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let (_, guard) = start(&MediaSourceSpec::TestSrc).unwrap();
        assert!(guard.rtp_stats().is_none());
    }
}
