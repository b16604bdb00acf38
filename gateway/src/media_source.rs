//! `MEDIA_SOURCE`: what the gateway streams to its viewers.
//!
//! The setting is parsed (and its syntax checked) at start-up into a [`MediaSourceSpec`];
//! [`start`] turns a spec into running [`VideoFeeds`]: the built-in test pattern
//! ([`crate::media::testsrc`], H.264 and VP8), RTP ingest ([`crate::media::rtp`]) or a looped
//! file ([`crate::media::file`]), each of the latter in its one codec.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::media::pull::{Dialect, PullSource, PULL_CODECS};
use crate::media::testsrc::{TestSource, TestSourceConfig};
use crate::media::whip::{WhipIngest, WHIP_CODECS};
use crate::media::{VideoCodec, VideoFeeds, VideoSource};

/// A parsed `MEDIA_SOURCE` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSourceSpec {
    /// `testsrc`: the built-in test pattern, in H.264 and VP8 (each encoded only while
    /// somebody watches it).
    TestSrc,
    /// `rtp://[ADDR]:PORT?codec=h264|vp8[&source=IP:PORT]`: RTP received on a local UDP
    /// address (127.0.0.1 when ADDR is left out: RTP has no authentication, so listening
    /// beyond loopback is something to write explicitly), from the configured sender or else
    /// the first that sends.
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
    /// `whep+http://…` or `offer+http://…/api/v1/projects/{id}/offer`: pulled over WebRTC
    /// from another server's offer endpoint (see [`crate::media::pull`]).
    Pull(crate::media::pull::Upstream),
    /// `whip`, `whip?token=TOKEN`, `whip?token=TOKEN&takeover=true`: published by WHIP
    /// (`POST /whip/{stream}`) by a holder of the bearer token (this stream's, else
    /// `WHIP_TOKEN`; see [`MediaSourceSpec::with_whip_token`]).
    Whip {
        /// The stream's own token, if given.
        token: Option<WhipToken>,
        /// A new authenticated publisher replaces the live one (else it is refused, 409).
        takeover: bool,
    },
}

/// `whip?…`'s parameters: `token=TOKEN` (at least [`crate::config::MIN_SECRET_BYTES`]
/// printable characters) and `takeover=true|false`, each at most once.
fn parse_whip_query(query: &str) -> Result<MediaSourceSpec, SourceSpecError> {
    let mut token = None;
    let mut takeover = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("token", t)) if token.is_none() => {
                if t.len() < crate::config::MIN_SECRET_BYTES
                    || !t.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(SourceSpecError(format!(
                        "whip?token=…: the token must be at least {} printable characters \
                         without spaces or `&` (make one with `openssl rand -base64 32`)",
                        crate::config::MIN_SECRET_BYTES
                    )));
                }
                token = Some(WhipToken(t.to_owned()));
            }
            Some(("takeover", v)) if takeover.is_none() => {
                takeover = Some(match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(SourceSpecError(
                            "whip?takeover= is `true` or `false`".into(),
                        ))
                    }
                });
            }
            _ => {
                return Err(SourceSpecError(
                    "whip takes `token=TOKEN` and `takeover=true|false`, each once \
                     (`whip?token=TOKEN&takeover=true`)"
                        .into(),
                ))
            }
        }
    }
    Ok(MediaSourceSpec::Whip {
        token,
        takeover: takeover.unwrap_or(false),
    })
}

/// A WHIP bearer token: shown as `…` in logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct WhipToken(pub String);

impl std::fmt::Debug for WhipToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WhipToken(…)")
    }
}

impl MediaSourceSpec {
    /// A `whip` stream with no token of its own takes `fallback` (`WHIP_TOKEN`); one with no
    /// token at all is refused: a stream is never open to anonymous publishers. Other
    /// sources are returned as they are.
    pub fn with_whip_token(self, fallback: Option<&str>) -> Result<Self, SourceSpecError> {
        match self {
            MediaSourceSpec::Whip {
                token: None,
                takeover,
            } => match fallback {
                Some(t) => Ok(MediaSourceSpec::Whip {
                    token: Some(WhipToken(t.to_owned())),
                    takeover,
                }),
                None => Err(SourceSpecError(
                    "a `whip` stream needs a bearer token for its publishers: set WHIP_TOKEN \
                     (e.g. `openssl rand -base64 32`) or give the stream its own, \
                     `whip?token=…`"
                        .into(),
                )),
            },
            other => Ok(other),
        }
    }

    /// With `WHIP_TAKEOVER=true` (`all`), every `whip` stream lets a new publisher take over.
    pub fn with_whip_takeover(self, all: bool) -> Self {
        match self {
            MediaSourceSpec::Whip { token, takeover } => MediaSourceSpec::Whip {
                token,
                takeover: takeover || all,
            },
            other => other,
        }
    }

    /// The spec for operators (`GET /api/v1/streams`, logs): as [`Display`](std::fmt::Display),
    /// without a WHIP token.
    pub fn redacted(&self) -> String {
        match self {
            MediaSourceSpec::Whip { .. } => "whip".to_owned(),
            other => other.to_string(),
        }
    }
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
                "empty; use `testsrc`, `rtp://ADDR:PORT?codec=h264|vp8`, a file path, \
                 `offer+http://…/offer`, `whep+http://…` or `whip`"
                    .into(),
            ));
        }
        if s.eq_ignore_ascii_case("testsrc") {
            return Ok(MediaSourceSpec::TestSrc);
        }
        if s.eq_ignore_ascii_case("whip") {
            return Ok(MediaSourceSpec::Whip {
                token: None,
                takeover: false,
            });
        }
        if let Some(query) = s.strip_prefix("whip?") {
            return parse_whip_query(query);
        }
        if let Some(rest) = s.strip_prefix("rtp://") {
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            let addr = addr.trim_end_matches('/');
            // `rtp://:PORT`: loopback, the safe default for an unauthenticated input.
            let addr = match addr.strip_prefix(':') {
                Some(port) => port
                    .parse::<u16>()
                    .ok()
                    .map(|p| SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, p))),
                None => addr.parse::<SocketAddr>().ok(),
            };
            let addr = addr.ok_or_else(|| {
                SourceSpecError(format!(
                    "{s:?}: the RTP address must be :PORT (loopback) or IP:PORT \
                     (e.g. rtp://:5004?codec=h264, rtp://0.0.0.0:5004?codec=h264)"
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
        for dialect in [Dialect::Whep, Dialect::GetiOffer] {
            let Some(url) = s.strip_prefix(dialect.prefix()) else {
                continue;
            };
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(SourceSpecError(format!(
                    "{s:?}: the upstream must be an http:// or https:// URL, e.g. \
                     {}http://127.0.0.1:9100/api/v1/projects/ID/offer",
                    dialect.prefix()
                )));
            }
            let url: hyper::Uri = url
                .parse()
                .ok()
                .filter(|u: &hyper::Uri| u.host().is_some_and(|h| !h.is_empty()))
                .ok_or_else(|| SourceSpecError(format!("{s:?}: not a valid URL")))?;
            return Ok(MediaSourceSpec::Pull(crate::media::pull::Upstream {
                dialect,
                url,
                peer: None,
            }));
        }
        if s.contains("://") {
            return Err(SourceSpecError(format!(
                "{s:?}: unknown scheme; use `testsrc`, `rtp://ADDR:PORT?codec=h264|vp8`, a \
                 file path, `offer+http://…/api/v1/projects/ID/offer`, `whep+http://…` or `whip`"
            )));
        }
        Ok(MediaSourceSpec::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for MediaSourceSpec {
    /// The spec in `MEDIA_SOURCE`'s syntax (it parses back to itself).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaSourceSpec::TestSrc => f.write_str("testsrc"),
            MediaSourceSpec::Rtp {
                addr,
                codec,
                sender,
            } => {
                let codec = match codec {
                    VideoCodec::H264 => "h264",
                    VideoCodec::Vp8 => "vp8",
                };
                write!(f, "rtp://{addr}?codec={codec}")?;
                match sender {
                    Some(s) => write!(f, "&source={s}"),
                    None => Ok(()),
                }
            }
            MediaSourceSpec::File(p) => write!(f, "{}", p.display()),
            MediaSourceSpec::Pull(u) => write!(f, "{}{}", u.dialect.prefix(), u.url),
            MediaSourceSpec::Whip { token, takeover } => {
                f.write_str("whip")?;
                let mut sep = '?';
                if let Some(t) = token {
                    write!(f, "{sep}token={}", t.0)?;
                    sep = '&';
                }
                if *takeover {
                    write!(f, "{sep}takeover=true")?;
                }
                Ok(())
            }
        }
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

    /// The demand of a pull, when the source is one (viewers' requests go through it).
    pub fn pull_demand(&self) -> Option<std::sync::Arc<crate::media::pull::PullDemand>> {
        self.inner
            .downcast_ref::<PullSource>()
            .map(|p| p.demand().clone())
    }

    /// The WHIP ingest, when the source is one (publishers' requests go through it).
    pub fn whip(&self) -> Option<std::sync::Arc<WhipIngest>> {
        self.inner
            .downcast_ref::<std::sync::Arc<WhipIngest>>()
            .cloned()
    }

    /// The RTP ingest's counters, when the source is RTP.
    pub fn rtp_stats(&self) -> Option<std::sync::Arc<crate::media::rtp::RtpStats>> {
        self.inner
            .downcast_ref::<crate::media::rtp::RtpSource>()
            .map(|r| r.stats_handle())
    }
}

/// How long a pull stays connected after its last viewer left (`PULL_IDLE_TIMEOUT`'s
/// default).
pub const DEFAULT_PULL_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the producer named by `spec` (a pull with [`DEFAULT_PULL_IDLE`]). Errors name
/// `MEDIA_SOURCE`.
pub fn start(spec: &MediaSourceSpec) -> anyhow::Result<(VideoFeeds, SourceGuard)> {
    let options = crate::media::pull::PullOptions::new(DEFAULT_PULL_IDLE, None)
        .map_err(|e| anyhow::anyhow!(e))?;
    start_with(spec, &options)
}

/// [`start`], a pull run by `pull` (idle time, trusted certificates).
pub fn start_with(
    spec: &MediaSourceSpec,
    pull: &crate::media::pull::PullOptions,
) -> anyhow::Result<(VideoFeeds, SourceGuard)> {
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
            let source = VideoSource::with_gop_cache(*codec);
            let rtp = crate::media::rtp::RtpSource::bind_from(*addr, *sender, source.clone())
                .map_err(|e| anyhow::anyhow!("MEDIA_SOURCE=rtp://{addr}: {e}"))?;
            Ok((source.into(), SourceGuard::new(rtp)))
        }
        MediaSourceSpec::Pull(upstream) => {
            let feeds = VideoFeeds::new(PULL_CODECS);
            tracing::info!(url = %upstream.url, dialect = ?upstream.dialect, "pulling a stream over WebRTC");
            let pull = PullSource::spawn(upstream.clone(), feeds.clone(), pull);
            Ok((feeds, SourceGuard::new(pull)))
        }
        MediaSourceSpec::Whip { token, takeover } => {
            let Some(token) = token else {
                anyhow::bail!(
                    "a `whip` stream needs a bearer token: set WHIP_TOKEN or `whip?token=…`"
                );
            };
            let feeds = VideoFeeds::new(WHIP_CODECS);
            let ingest = std::sync::Arc::new(
                WhipIngest::new(feeds.clone(), token.0.clone()).with_takeover(*takeover),
            );
            Ok((feeds, SourceGuard::new(ingest)))
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
        assert_eq!(
            "rtp://:5004?codec=vp8".parse(),
            Ok(MediaSourceSpec::Rtp {
                addr: "127.0.0.1:5004".parse().unwrap(),
                codec: VideoCodec::Vp8,
                sender: None
            }),
            "no host: loopback"
        );
        for bad in [
            "rtp://nope",
            "rtp://:",
            "rtp://:70000",
            "rtp://:x",
            "rtp://5004",
        ] {
            assert!(bad.parse::<MediaSourceSpec>().is_err(), "{bad}");
        }
        assert!("rtp://1.2.3.4:5?codec=av1"
            .parse::<MediaSourceSpec>()
            .is_err());
        assert!("http://x/y".parse::<MediaSourceSpec>().is_err());
        assert!("".parse::<MediaSourceSpec>().is_err());
        for bad in [
            "offer+https://",
            "whep+ftp://x",
            "offer+http://",
            "whep+http:// /",
        ] {
            assert!(bad.parse::<MediaSourceSpec>().is_err(), "{bad}");
        }
        for s in [
            "testsrc",
            "rtp://127.0.0.1:5004?codec=vp8",
            "rtp://[::1]:5004?codec=h264&source=[::1]:6000",
            "/videos/a.h264",
            "offer+http://127.0.0.1:9100/api/v1/projects/p1/offer",
            "whep+http://[::1]:8080/whep/cam",
            "whep+https://origin.example:443/whep/cam",
            "offer+https://10.0.0.2/api/v1/projects/p1/offer",
            "whip",
            "whip?token=0123456789abcdef+/==",
            "whip?token=0123456789abcdef+/==&takeover=true",
            "whip?takeover=true",
        ] {
            let spec: MediaSourceSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
    }

    #[test]
    fn a_whip_stream_has_a_token_or_is_refused() {
        for bad in [
            "whip?token=short",
            "whip?token=",
            "whip?key=0123456789abcdef",
            "whip?",
            "whip?token=0123456789abcdef&takeover=yes",
            "whip?token=0123456789abcdef&takeover=true&takeover=false",
            "whip?token=0123456789abcdef&token=0123456789abcdef",
        ] {
            assert!(bad.parse::<MediaSourceSpec>().is_err(), "{bad}");
        }
        let anonymous: MediaSourceSpec = "whip".parse().unwrap();
        let e = anonymous
            .clone()
            .with_whip_token(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("WHIP_TOKEN"), "{e}");
        let fallback = anonymous
            .with_whip_token(Some("global-token-0123456789"))
            .unwrap();
        assert_eq!(fallback.to_string(), "whip?token=global-token-0123456789");
        assert_eq!(fallback.redacted(), "whip");
        assert!(!format!("{fallback:?}").contains("global"), "not in logs");
        // A stream's own token wins.
        let own: MediaSourceSpec = "whip?token=own-token-0123456789".parse().unwrap();
        assert_eq!(
            own.clone().with_whip_token(Some("global-token-0123456789")),
            Ok(own)
        );
        assert_eq!(
            MediaSourceSpec::TestSrc.with_whip_token(None),
            Ok(MediaSourceSpec::TestSrc)
        );
    }

    #[tokio::test]
    async fn a_whip_source_is_an_ingest_in_both_codecs() {
        let spec: MediaSourceSpec = "whip?token=own-token-0123456789".parse().unwrap();
        let (feeds, guard) = start(&spec).unwrap();
        assert_eq!(feeds.codecs(), [VideoCodec::H264, VideoCodec::Vp8]);
        let whip = guard.whip().expect("a WHIP ingest");
        assert!(whip.authorizes("own-token-0123456789") && !whip.has_publisher());
        assert!(start(&"whip".parse().unwrap()).is_err(), "no token");
        assert!(guard.pull_demand().is_none() && guard.rtp_stats().is_none());
    }

    #[tokio::test]
    async fn rtp_and_file_sources_start_or_explain() {
        let (feeds, _guard) = start(&"rtp://127.0.0.1:0?codec=vp8".parse().unwrap()).unwrap();
        assert_eq!(feeds.codecs(), [VideoCodec::Vp8]);
        let (feeds, _guard) = start(&MediaSourceSpec::TestSrc).unwrap();
        // VP8 too when built with the `vp8` feature.
        assert_eq!(feeds.codecs(), crate::media::testsrc::available_codecs());
        assert_eq!(feeds.codecs().first(), Some(&VideoCodec::H264));
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
