//! Named streams: which stream a viewer's request plays, and whether it can play now.
//!
//! `MEDIA_SOURCE` feeds the stream `default`; `--stream NAME=SOURCE` (`STREAMS`) adds named
//! ones. A request names a stream by the project id of Geti's offer endpoint, the path of
//! `/whep/{stream}`, or the viewer page's `?stream=`. While `default` is the only stream,
//! every name plays it (what a single-stream deployment has always done, so Geti's UI with
//! its project UUIDs keeps working); once named streams exist, an unknown name is refused
//! unless `STREAM_FALLBACK=default` says to play `default` instead.
//!
//! The directory is sans-I/O: [`StreamDirectory::resolve`] is a pure function of the
//! configured names, the fallback rule and each stream's [`Liveness`] at `now`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::media::pull::PullDemand;
use crate::media::rtp::RtpStats;
use crate::media::whip::WhipIngest;
use crate::media::{VideoFeeds, DEFAULT_STREAM};
use crate::media_source::MediaSourceSpec;
use crate::metrics::Registry;
use relay::core::stats::MetricKind;

/// How long after its last frame an ingest stream (RTP) still counts as live: a few
/// keyframe intervals of a slow encoder, far below a human's "is it on?".
pub const LIVE_GRACE: Duration = Duration::from_secs(5);

/// One `--stream NAME=SOURCE` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedStream {
    /// The stream's name (1 to 64 of `A-Z a-z 0-9 - _ .`, not `default`).
    pub name: String,
    /// Its source, in `MEDIA_SOURCE`'s syntax.
    pub source: MediaSourceSpec,
}

/// Whether `name` can name a stream: 1 to 64 characters of `A-Z a-z 0-9 - _ .` (a Geti
/// project UUID is one).
pub fn valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for NamedStream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, source)) = s.split_once('=') else {
            return Err(format!(
                "{s:?}: a stream is NAME=SOURCE (e.g. cam1=rtp://127.0.0.1:5004?codec=h264)"
            ));
        };
        let name = name.trim();
        if !valid_stream_name(name) {
            return Err(format!(
                "{name:?}: a stream name is 1 to 64 characters of A-Z a-z 0-9 - _ ."
            ));
        }
        if name == DEFAULT_STREAM {
            return Err(format!(
                "{DEFAULT_STREAM:?} is the stream of MEDIA_SOURCE: set MEDIA_SOURCE instead"
            ));
        }
        let source = source
            .parse::<MediaSourceSpec>()
            .map_err(|e| format!("stream {name:?}: {e}"))?;
        Ok(NamedStream {
            name: name.to_owned(),
            source,
        })
    }
}

/// `STREAM_FALLBACK`: what an unknown stream name plays once named streams exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StreamFallback {
    /// Refuse it (404 `unknown_stream`).
    #[default]
    None,
    /// Play the stream `default`.
    Default,
}

/// When a stream can be played.
#[derive(Debug, Clone)]
pub enum Liveness {
    /// Always: the producer runs in the gateway (test pattern, looped file).
    Always,
    /// While frames arrive (RTP ingest): not before the sender's first frame, nor
    /// [`LIVE_GRACE`] after its last.
    WhileFramesArrive(VideoFeeds),
    /// On request (a pull): a viewer's request connects to the upstream and waits for its
    /// first frame or its refusal ([`StreamDirectory::ready`]).
    OnRequest(VideoFeeds, Arc<PullDemand>),
    /// While a WHIP publisher holds the stream (from its offer to its session's end).
    Published(Arc<WhipIngest>),
}

impl Liveness {
    /// The liveness of a stream of `spec` whose frames arrive on `feeds`; `pull` is the
    /// demand of a pull source.
    pub fn of(spec: &MediaSourceSpec, feeds: &VideoFeeds, pull: Option<Arc<PullDemand>>) -> Self {
        match (spec, pull) {
            (MediaSourceSpec::Pull(_), Some(demand)) => Liveness::OnRequest(feeds.clone(), demand),
            (MediaSourceSpec::Rtp { .. } | MediaSourceSpec::Pull(_), _) => {
                Liveness::WhileFramesArrive(feeds.clone())
            }
            (MediaSourceSpec::TestSrc | MediaSourceSpec::File(_), _) => Liveness::Always,
            // Until [`StreamEntry::with_whip`] names the ingest: live while frames arrive.
            (MediaSourceSpec::Whip { .. }, _) => Liveness::WhileFramesArrive(feeds.clone()),
        }
    }

    /// Whether a request may go ahead (a pull decides in [`StreamDirectory::ready`]).
    fn is_live(&self, now: Instant) -> bool {
        match self {
            Liveness::Always | Liveness::OnRequest(..) => true,
            Liveness::WhileFramesArrive(feeds) => delivering(feeds, now),
            Liveness::Published(whip) => whip.has_publisher(),
        }
    }

    /// Whether frames arrive now (for operators).
    fn delivering(&self, now: Instant) -> bool {
        match self {
            Liveness::Always => true,
            Liveness::WhileFramesArrive(feeds) | Liveness::OnRequest(feeds, _) => {
                delivering(feeds, now)
            }
            Liveness::Published(whip) => whip.has_publisher() && delivering(whip.feeds(), now),
        }
    }
}

fn delivering(feeds: &VideoFeeds, now: Instant) -> bool {
    feeds
        .last_frame()
        .is_some_and(|t| now.saturating_duration_since(t) <= LIVE_GRACE)
}

/// How long a viewer's request waits for a pulled stream's first frame.
pub const PULL_READY_TIMEOUT: Duration = Duration::from_secs(8);

/// Why a request cannot play a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefusal {
    /// No stream has that name (and no fallback applies).
    #[error("no stream is named {0:?}")]
    Unknown(String),
    /// The stream exists but its source sends nothing now.
    #[error("stream {0:?} has no active source")]
    NotLive(String),
    /// A pulled stream's `https://` upstream has a certificate not trusted here (system
    /// roots, `PULL_CA_FILE`).
    #[error("stream {0:?}: {1}")]
    UpstreamUntrusted(String, String),
    /// A pulled stream's upstream refused the offer with this answer of its own (a 4xx),
    /// which proxy mode hands the viewer as is.
    #[error("stream {0:?}: the upstream refused the offer ({status})", status = .1.status)]
    UpstreamRefused(String, crate::media::pull::UpstreamAnswer),
    /// Proxy mode or cluster mode: every pull slot is taken (and wanted).
    #[error("the gateway pulls {0} streams already, all watched; try again later")]
    PoolFull(usize),
}

/// Why a WHIP publisher cannot publish to a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipRefusal {
    /// No stream has that name.
    #[error("no stream is named {0:?}")]
    Unknown(String),
    /// The stream's source is not `whip`.
    #[error("stream {0:?} is not published by WHIP (its source is not `whip`)")]
    NotWhip(String),
}

/// One stream as the directory knows it.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// Its name.
    pub name: String,
    /// When it can be played.
    pub liveness: Liveness,
    /// Its feeds (viewer counts).
    pub feeds: VideoFeeds,
    /// Its source as configured, for operators (`rtp://…`, a path, `testsrc`).
    pub source: String,
    /// The RTP ingest's counters (packets lost), when the source is RTP.
    pub rtp: Option<Arc<RtpStats>>,
}

impl StreamEntry {
    /// The entry of a stream `name` fed by `spec` on `feeds` (`pull`: a pull's demand).
    pub fn new(
        name: impl Into<String>,
        spec: &MediaSourceSpec,
        feeds: &VideoFeeds,
        pull: Option<Arc<PullDemand>>,
    ) -> Self {
        Self {
            name: name.into(),
            liveness: Liveness::of(spec, feeds, pull),
            feeds: feeds.clone(),
            source: spec.redacted(),
            rtp: None,
        }
    }

    /// The entry of an RTP stream exports its ingest's lost packets.
    pub fn with_rtp_stats(mut self, rtp: Option<Arc<RtpStats>>) -> Self {
        self.rtp = rtp;
        self
    }

    /// The entry of a WHIP stream is live while its publisher holds it (`whip`: the
    /// stream's ingest, when its source is one).
    pub fn with_whip(mut self, whip: Option<Arc<WhipIngest>>) -> Self {
        if let Some(w) = whip {
            self.liveness = Liveness::Published(w);
        }
        self
    }
}

/// Every stream the gateway serves and how names resolve to them.
#[derive(Debug, Clone)]
pub struct StreamDirectory {
    streams: Vec<StreamEntry>,
    fallback: StreamFallback,
    /// Proxy mode: every other name is a project id of the upstream.
    projects: Option<Arc<crate::project_streams::ProjectStreams>>,
    /// Cluster mode: a stream not live here whose origin is another node is pulled from it.
    cluster: Option<Arc<crate::cluster::pulls::ClusterPulls>>,
}

impl StreamDirectory {
    /// A directory of `streams` (`default` among them), resolving unknown names by
    /// `fallback` once named streams exist.
    pub fn new(streams: Vec<StreamEntry>, fallback: StreamFallback) -> Self {
        Self {
            streams,
            fallback,
            projects: None,
            cluster: None,
        }
    }

    /// Cluster mode: a name not live here that another node is the origin of plays that
    /// node's stream, pulled once ([`crate::cluster::pulls`]).
    pub fn with_cluster(mut self, pulls: Arc<crate::cluster::pulls::ClusterPulls>) -> Self {
        self.cluster = Some(pulls);
        self
    }

    /// The cluster's pulls, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::pulls::ClusterPulls>> {
        self.cluster.as_ref()
    }

    /// The streams this node is the origin of at `now`: live and fed here (a WHIP
    /// publisher, an RTP sender, a configured pull), not the test pattern or a file, which
    /// every node configured with them plays itself.
    pub fn origins(&self, now: Instant) -> Vec<String> {
        self.streams
            .iter()
            .filter(|e| match &e.liveness {
                Liveness::Always => false,
                // From the publisher's offer on: a second publisher elsewhere is refused
                // before its first frame too.
                Liveness::Published(w) => w.has_publisher(),
                other => other.delivering(now),
            })
            .map(|e| e.name.clone())
            .collect()
    }

    /// Proxy mode: a name that is no configured stream is a project id of the upstream,
    /// played from `projects` (no fallback to `default`).
    pub fn with_projects(mut self, projects: Arc<crate::project_streams::ProjectStreams>) -> Self {
        self.projects = Some(projects);
        self
    }

    /// For operators (`GET /api/v1/streams`): each stream's name, source, codecs, whether
    /// it is live and how many viewers watch it.
    pub fn describe(&self, now: Instant) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .streams
            .iter()
            .map(|e| {
                let mut v = serde_json::json!({
                    "name": e.name,
                    "source": e.source,
                    "codecs": e.feeds.codecs().iter().map(|c| c.sdp_name()).collect::<Vec<_>>(),
                    "live": e.liveness.delivering(now),
                    "viewers": e.feeds.viewers(),
                });
                if let (Liveness::Published(w), Some(o)) = (&e.liveness, v.as_object_mut()) {
                    o.insert("publisher".into(), w.has_publisher().into());
                    o.insert("keyframe_requests".into(), w.keyframe_requests().into());
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({ "streams": list, "fallback": match self.fallback {
            StreamFallback::None => "none",
            StreamFallback::Default => "default",
        } });
        if let (Some(p), Some(o)) = (&self.projects, v.as_object_mut()) {
            o.insert("proxy".into(), p.describe(now));
        }
        v
    }

    /// The stream `requested` plays (`None`: the caller named none, e.g. `POST /whep`).
    pub fn resolve(&self, requested: Option<&str>, now: Instant) -> Result<&str, StreamRefusal> {
        self.resolve_in(requested, now, true)
    }

    /// As [`StreamDirectory::resolve`], from this node's own streams only: a sibling
    /// node's pull is never served by pulling from a third node (no loops).
    pub fn resolve_local(
        &self,
        requested: Option<&str>,
        now: Instant,
    ) -> Result<&str, StreamRefusal> {
        self.resolve_in(requested, now, false)
    }

    fn resolve_in(
        &self,
        requested: Option<&str>,
        now: Instant,
        cross_node: bool,
    ) -> Result<&str, StreamRefusal> {
        let requested = requested.unwrap_or(DEFAULT_STREAM);
        if let Some(pulls) = self.cluster.as_ref().filter(|_| cross_node) {
            let live_here = self
                .find(requested)
                .is_some_and(|e| e.liveness.is_live(now));
            if !live_here && valid_stream_name(requested) {
                if let Some(slot) = pulls.assign(requested, now) {
                    return slot.map_err(|full| StreamRefusal::PoolFull(full.0));
                }
            }
        }
        if let Some(projects) = &self.projects {
            if self.find(requested).is_none() && valid_stream_name(requested) {
                return projects
                    .assign(requested, now)
                    .map_err(|full| StreamRefusal::PoolFull(full.0));
            }
        }
        let found = self.find(requested).or_else(|| {
            let alone = self.streams.iter().all(|e| e.name == DEFAULT_STREAM);
            (alone || self.fallback == StreamFallback::Default)
                .then(|| self.find(DEFAULT_STREAM))
                .flatten()
        });
        let Some(entry) = found else {
            return Err(StreamRefusal::Unknown(requested.to_owned()));
        };
        if !entry.liveness.is_live(now) {
            return Err(StreamRefusal::NotLive(entry.name.clone()));
        }
        Ok(&entry.name)
    }

    /// For a request that [`StreamDirectory::resolve`]d to `name`: a pulled stream
    /// connects (or stays connected) and this waits for its first frame; the upstream's
    /// refusal is a [`StreamRefusal::NotLive`]. Other streams are ready at once.
    pub async fn ready(&self, name: &str) -> Result<(), StreamRefusal> {
        let (feeds, demand) = match self.find(name) {
            Some(StreamEntry {
                liveness: Liveness::OnRequest(feeds, demand),
                ..
            }) => (feeds.clone(), demand.clone()),
            Some(_) => return Ok(()),
            None => match self
                .projects
                .as_ref()
                .and_then(|p| p.pull_of(name))
                .or_else(|| self.cluster.as_ref().and_then(|c| c.pull_of(name)))
            {
                Some(pull) => pull,
                None => return Ok(()),
            },
        };
        // A project slot may still show its previous project's last frames: only a live
        // pull counts.
        if delivering(&feeds, Instant::now())
            && demand.status() == crate::media::pull::PullStatus::Live
        {
            demand.request(Instant::now());
            return Ok(());
        }
        let ready = demand.ready(PULL_READY_TIMEOUT).await;
        // A project slot given to another project meanwhile does not carry this one (a
        // refusal is still this project's: a refused slot is freed at once).
        let given_away = self.find(name).is_none()
            && self
                .projects
                .as_ref()
                .is_none_or(|p| !p.still_holds(name, &demand))
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| !c.still_holds(name, &demand));
        match ready {
            Ok(()) if given_away => Err(StreamRefusal::NotLive(name.to_owned())),
            Ok(()) => Ok(()),
            Err(r) if r.reason.starts_with(crate::media::pull::signal::UNTRUSTED) => {
                let reason = r.reason;
                tracing::warn!(stream = name, %reason, "pulled stream not available: set PULL_CA_FILE to the upstream's CA");
                Err(StreamRefusal::UpstreamUntrusted(name.to_owned(), reason))
            }
            Err(r) => {
                let reason = r.reason;
                tracing::info!(stream = name, %reason, own_answer = r.answer.is_some(), "pulled stream not available");
                match r.answer {
                    Some(a) => Err(StreamRefusal::UpstreamRefused(name.to_owned(), a)),
                    None => Err(StreamRefusal::NotLive(name.to_owned())),
                }
            }
        }
    }

    fn find(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.iter().find(|e| e.name == name)
    }

    /// The WHIP ingest of the stream `requested` (`None`: `default`), by its exact name (no
    /// fallback: a publisher names the stream it feeds).
    pub fn whip(&self, requested: Option<&str>) -> Result<Arc<WhipIngest>, WhipRefusal> {
        let name = requested.unwrap_or(DEFAULT_STREAM);
        let entry = self
            .find(name)
            .ok_or_else(|| WhipRefusal::Unknown(name.to_owned()))?;
        match &entry.liveness {
            Liveness::Published(w) => Ok(w.clone()),
            _ => Err(WhipRefusal::NotWhip(name.to_owned())),
        }
    }

    /// Every stream name, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|e| e.name.as_str())
    }

    /// Exports the per-stream families (`gateway_stream_*{stream}`) of `directory` to
    /// `metrics`: values are read from the streams' own counters at every scrape.
    pub fn export_metrics(directory: &Arc<Self>, metrics: &Registry) {
        use MetricKind::{Counter, Gauge};
        type Read = fn(&StreamEntry, Instant) -> Option<u64>;
        let families: [(&'static str, &'static str, MetricKind, Read); 7] = [
            (
                "gateway_stream_viewers",
                "Viewers receiving the stream.",
                Gauge,
                |e, _| Some(e.feeds.viewers() as u64),
            ),
            (
                "gateway_stream_live",
                "1 while the stream's source delivers frames, else 0.",
                Gauge,
                |e, now| Some(u64::from(e.liveness.delivering(now))),
            ),
            (
                "gateway_stream_frames_total",
                "Frames the stream's source delivered (every codec's feed).",
                Counter,
                |e, _| Some(e.feeds.frames_published()),
            ),
            (
                "gateway_stream_bytes_total",
                "Bytes of encoded video the stream's source delivered (its rate is the \
                 ingest bitrate).",
                Counter,
                |e, _| Some(e.feeds.bytes_published()),
            ),
            (
                "gateway_stream_keyframe_requests_total",
                "Keyframe requests of the stream's viewers (new viewers, PLI/FIR).",
                Counter,
                |e, _| Some(e.feeds.keyframe_requests()),
            ),
            (
                "gateway_stream_publishers",
                "WHIP publishers holding the stream (0 or 1; WHIP streams only).",
                Gauge,
                |e, _| match &e.liveness {
                    Liveness::Published(w) => Some(u64::from(w.has_publisher())),
                    _ => None,
                },
            ),
            (
                "gateway_stream_ingest_lost_packets_total",
                "Ingest packets lost (missing sequence numbers past the jitter buffer; RTP \
                 streams only).",
                Counter,
                |e, _| {
                    e.rtp
                        .as_ref()
                        .map(|r| r.lost.load(std::sync::atomic::Ordering::Relaxed))
                },
            ),
        ];
        for (name, help, kind, read) in families {
            let d = directory.clone();
            metrics.set_family(name, help, kind, "stream", move || {
                let now = Instant::now();
                d.streams
                    .iter()
                    .filter_map(|e| read(e, now).map(|v| (e.name.clone(), v)))
                    .collect()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EncodedFrame, VideoCodec, VideoSource};

    fn rtp_feeds() -> VideoFeeds {
        VideoSource::new(VideoCodec::H264).into()
    }

    fn entry(name: &str, liveness: Liveness) -> StreamEntry {
        StreamEntry {
            name: name.to_owned(),
            liveness,
            feeds: rtp_feeds(),
            source: "testsrc".to_owned(),
            rtp: None,
        }
    }

    fn frame() -> EncodedFrame {
        EncodedFrame {
            data: vec![0u8, 0, 0, 1, 0x65].into(),
            keyframe: true,
            rtp_time: 0,
            captured: Instant::now(),
        }
    }

    #[test]
    fn parses_named_streams() {
        let s: NamedStream = "cam-1=rtp://127.0.0.1:5004?codec=vp8".parse().unwrap();
        assert_eq!(s.name, "cam-1");
        assert!(matches!(s.source, MediaSourceSpec::Rtp { .. }));
        let s: NamedStream = "loop=testsrc".parse().unwrap();
        assert_eq!(s.source, MediaSourceSpec::TestSrc);
        for bad in [
            "",
            "cam",
            "=testsrc",
            "a b=testsrc",
            "default=testsrc",
            "x=rtp://nope",
        ] {
            let e = bad.parse::<NamedStream>().unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
        let long = format!("{}=testsrc", "a".repeat(65));
        assert!(long.parse::<NamedStream>().is_err());
        // Non-ASCII input is refused, never sliced.
        assert!("câm=testsrc".parse::<NamedStream>().is_err());
    }

    #[test]
    fn a_lone_default_stream_plays_for_every_name() {
        let d = StreamDirectory::new(
            vec![entry(DEFAULT_STREAM, Liveness::Always)],
            StreamFallback::None,
        );
        let now = Instant::now();
        assert_eq!(d.resolve(None, now), Ok(DEFAULT_STREAM));
        assert_eq!(
            d.resolve(Some("6f1c0e1a-2b7d-4c1e-9a43-1f0a6b2c3d4e"), now),
            Ok(DEFAULT_STREAM)
        );
    }

    #[test]
    fn named_streams_refuse_unknown_names_unless_falling_back() {
        let streams = vec![
            entry(DEFAULT_STREAM, Liveness::Always),
            entry("cam1", Liveness::Always),
        ];
        let now = Instant::now();
        let strict = StreamDirectory::new(streams.clone(), StreamFallback::None);
        assert_eq!(strict.resolve(Some("cam1"), now), Ok("cam1"));
        assert_eq!(
            strict.resolve(Some("cam2"), now),
            Err(StreamRefusal::Unknown("cam2".into()))
        );
        assert_eq!(strict.resolve(None, now), Ok(DEFAULT_STREAM));
        let lenient = StreamDirectory::new(streams, StreamFallback::Default);
        assert_eq!(lenient.resolve(Some("cam2"), now), Ok(DEFAULT_STREAM));
        assert_eq!(lenient.names().collect::<Vec<_>>(), ["default", "cam1"]);
    }

    #[test]
    fn an_ingest_stream_is_live_only_while_frames_arrive() {
        let feeds = rtp_feeds();
        let d = StreamDirectory::new(
            vec![
                entry(DEFAULT_STREAM, Liveness::Always),
                entry("cam1", Liveness::WhileFramesArrive(feeds.clone())),
            ],
            StreamFallback::None,
        );
        let now = Instant::now();
        assert_eq!(
            d.resolve(Some("cam1"), now),
            Err(StreamRefusal::NotLive("cam1".into())),
            "no frame yet"
        );
        if let Some(f) = feeds.iter().next() {
            f.publish(frame());
        }
        assert_eq!(d.resolve(Some("cam1"), Instant::now()), Ok("cam1"));
        let later = Instant::now() + LIVE_GRACE + Duration::from_secs(1);
        assert_eq!(
            d.resolve(Some("cam1"), later),
            Err(StreamRefusal::NotLive("cam1".into())),
            "the sender stopped"
        );
        let described = d.describe(Instant::now());
        assert_eq!(described["streams"][1]["name"], "cam1");
        assert_eq!(described["streams"][1]["live"], true);
        assert_eq!(described["streams"][1]["codecs"][0], "H264");
        assert_eq!(described["fallback"], "none");
    }

    #[test]
    fn a_whip_stream_is_live_while_a_publisher_holds_it() {
        let feeds = VideoFeeds::new(crate::media::whip::WHIP_CODECS);
        let whip = Arc::new(WhipIngest::new(feeds.clone(), "0123456789abcdef"));
        let spec = MediaSourceSpec::Whip {
            token: None,
            takeover: false,
        };
        let d = StreamDirectory::new(
            vec![
                entry(DEFAULT_STREAM, Liveness::Always),
                StreamEntry::new("cam", &spec, &feeds, None).with_whip(Some(whip.clone())),
            ],
            StreamFallback::None,
        );
        let now = Instant::now();
        assert_eq!(
            d.resolve(Some("cam"), now),
            Err(StreamRefusal::NotLive("cam".into()))
        );
        assert!(d.whip(Some("cam")).is_ok());
        assert_eq!(
            d.whip(None).unwrap_err(),
            WhipRefusal::NotWhip(DEFAULT_STREAM.into())
        );
        assert_eq!(
            d.whip(Some("cam2")).unwrap_err(),
            WhipRefusal::Unknown("cam2".into())
        );
        assert!(whip.claim("p~1"));
        assert_eq!(d.resolve(Some("cam"), now), Ok("cam"));
        assert_eq!(d.describe(now)["streams"][1]["source"], "whip");
        assert_eq!(d.describe(now)["streams"][1]["publisher"], true);
        assert_eq!(d.describe(now)["streams"][1]["keyframe_requests"], 0);
        whip.release("p~1");
        assert_eq!(
            d.resolve(Some("cam"), now),
            Err(StreamRefusal::NotLive("cam".into()))
        );
    }
}
