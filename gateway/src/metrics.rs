//! `GET /metrics`: every counter of the relay core, the relay's I/O shell and the gateway,
//! rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! The counters stay where they are counted (relaxed atomics in [`relay::core::Stats`],
//! [`relay::io::IoStats`] and here); a scrape reads their snapshots and renders them. No
//! label carries a user, session or address: label values come from small fixed sets
//! (transport, direction, reason, result).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use relay::core::stats::{MetricKind, Sample};

use crate::app::App;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label value of relayed traffic that never touched a socket (relay ↔ media engine).
pub const IN_PROCESS: &str = "in_process";

type GaugeFn = Box<dyn Fn() -> u64 + Send + Sync>;

/// Reads a labelled family: one (label value, value) pair per sample.
type FamilyFn = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// One labelled family: name, help, kind, its one label's name, and how to read it.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    label: &'static str,
    read: FamilyFn,
}

/// The gateway's own counters and the gauges other parts register (sessions, viewers).
#[derive(Default)]
pub struct Registry {
    io: RwLock<Option<Arc<relay::io::IoStats>>>,
    /// Values read at every scrape: (name, help, counter or gauge, read).
    gauges: RwLock<Vec<(&'static str, &'static str, MetricKind, GaugeFn)>>,
    /// Labelled families read at every scrape (per stream).
    families: RwLock<Vec<Family>>,
    tls_reloads_ok: AtomicU64,
    tls_reloads_failed: AtomicU64,
    tls_not_after: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Gauges that are always exported (0 until something registers a source for them).
const DEFAULT_GAUGES: &[(&str, &str)] = &[
    ("gateway_sessions_active", "WebRTC sessions alive."),
    ("gateway_viewers", "Viewers receiving video."),
];

impl Registry {
    /// Exports the relay shell's connection counters.
    pub fn set_io_stats(&self, io: Arc<relay::io::IoStats>) {
        *self.io.write().unwrap_or_else(|p| p.into_inner()) = Some(io);
    }

    /// Exports a gauge read at every scrape (`gateway_sessions_active`, `gateway_viewers`,
    /// or a new name). A later registration of the same name replaces the earlier one.
    pub fn set_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.set_read(name, help, MetricKind::Gauge, Box::new(read));
    }

    /// Exports a counter (monotonic) read at every scrape, kept by its owner.
    pub fn set_counter(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.set_read(name, help, MetricKind::Counter, Box::new(read));
    }

    fn set_read(&self, name: &'static str, help: &'static str, kind: MetricKind, read: GaugeFn) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        let mut g = self.gauges.write().unwrap_or_else(|p| p.into_inner());
        g.retain(|(n, _, _, _)| *n != name);
        g.push((name, help, kind, read));
    }

    /// Exports a family of samples distinguished by one label (`stream`), read at every
    /// scrape. Label values must come from a bounded set (operator-configured names): each
    /// distinct value is kept for the life of the process. A later registration of the same
    /// name replaces the earlier one.
    pub fn set_family(
        &self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        label: &'static str,
        read: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        debug_assert!(valid_label(label), "bad label name {label:?}");
        let mut f = self.families.write().unwrap_or_else(|p| p.into_inner());
        f.retain(|f| f.name != name);
        f.push(Family {
            name,
            help,
            kind,
            label,
            read: Box::new(read),
        });
    }

    /// Counts a certificate reload; `not_after` is the new certificate's expiry (unix).
    pub fn tls_reloaded(&self, ok: bool, not_after: Option<u64>) {
        if ok {
            self.tls_reloads_ok.fetch_add(1, Relaxed);
        } else {
            self.tls_reloads_failed.fetch_add(1, Relaxed);
        }
        if let Some(t) = not_after {
            self.tls_not_after.store(t, Relaxed);
        }
    }

    /// Records the expiry of the certificate being served (unix seconds).
    pub fn set_tls_not_after(&self, not_after: u64) {
        self.tls_not_after.store(not_after, Relaxed);
    }

    /// Every sample: the relay core's, the shell's, the gateway's.
    pub fn samples(&self, core: &relay::core::Stats) -> Vec<Sample> {
        use MetricKind::{Counter, Gauge};
        let mut v = core.snapshot();
        if let Some(io) = self.io.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            for (name, value) in io.snapshot() {
                let (metric, help, labels) = io_metric(name);
                v.push(sample(metric, help, Counter, labels, value));
            }
        }
        // In-process traffic (relay <-> media engine, no socket) is counted by the relay
        // shell; the label exists even where it does not (yet) count it.
        for name in ["turn_relayed_packets_total", "turn_relayed_bytes_total"] {
            for dir in ["client_to_peer", "peer_to_client"] {
                let present = v.iter().any(|s| {
                    s.name == name
                        && s.labels.contains(&("direction", dir))
                        && s.labels
                            .iter()
                            .any(|(k, val)| *k == "transport" && is_in_process(val))
                });
                if !present {
                    let help = if name == "turn_relayed_packets_total" {
                        "Relayed packets."
                    } else {
                        "Relayed payload bytes."
                    };
                    let labels = vec![("direction", dir), ("transport", IN_PROCESS)];
                    v.push(sample(name, help, Counter, labels, 0));
                }
            }
        }
        for (result, c) in [
            ("ok", &self.tls_reloads_ok),
            ("failed", &self.tls_reloads_failed),
        ] {
            v.push(sample(
                "gateway_tls_reloads_total",
                "Certificate reloads (SIGHUP or file change), by result.",
                Counter,
                vec![("result", result)],
                c.load(Relaxed),
            ));
        }
        let not_after = self.tls_not_after.load(Relaxed);
        if not_after > 0 {
            v.push(sample(
                "gateway_tls_certificate_not_after_seconds",
                "Expiry of the served TLS certificate, unix seconds.",
                Gauge,
                vec![],
                not_after,
            ));
        }
        let gauges = self.gauges.read().unwrap_or_else(|p| p.into_inner());
        for (name, help) in DEFAULT_GAUGES {
            if !gauges.iter().any(|(n, _, _, _)| n == name) {
                v.push(sample(name, help, Gauge, vec![], 0));
            }
        }
        for (name, help, kind, read) in gauges.iter() {
            v.push(sample(name, help, *kind, vec![], read()));
        }
        let families = self.families.read().unwrap_or_else(|p| p.into_inner());
        for f in families.iter() {
            for (value_of_label, value) in (f.read)() {
                let labels = vec![(f.label, intern(&value_of_label))];
                v.push(sample(f.name, f.help, f.kind, labels, value));
            }
        }
        v
    }
}

/// Label values of families live as long as the process: each distinct one is stored once
/// (a bounded set: stream names come from the configuration).
fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(v) = seen.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_owned().into_boxed_str());
    seen.insert(v);
    v
}

fn is_in_process(v: &str) -> bool {
    matches!(v, "in_process" | "in-process" | "inprocess")
}

fn sample(
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    labels: Vec<(&'static str, &'static str)>,
    value: u64,
) -> Sample {
    Sample {
        name,
        help,
        kind,
        labels,
        value,
    }
}

/// Metric name, help and labels of a shell counter.
fn io_metric(
    name: &'static str,
) -> (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
) {
    match name {
        "connections_accepted" => (
            "turn_connections_accepted_total",
            "TCP connections accepted on the TURN port.",
            vec![],
        ),
        "connections_refused" => (
            "turn_connections_refused_total",
            "Connections refused by the per-IP or total connection limit.",
            vec![],
        ),
        "tls_handshakes" => (
            "turn_tls_handshakes_total",
            "TLS handshakes on the TURN port (TURNS and HTTPS), by result.",
            vec![("result", "ok")],
        ),
        "tls_failures" => (
            "turn_tls_handshakes_total",
            "TLS handshakes on the TURN port (TURNS and HTTPS), by result.",
            vec![("result", "failed")],
        ),
        "tls_handshakes_refused" => (
            "turn_tls_handshakes_total",
            "TLS handshakes on the TURN port (TURNS and HTTPS), by result.",
            vec![("result", "refused")],
        ),
        "handshake_timeouts" => (
            "turn_handshake_timeouts_total",
            "Connections closed for sending nothing usable before the handshake timeout.",
            vec![],
        ),
        "unauthenticated_timeouts" => (
            "turn_unauthenticated_timeouts_total",
            "TURN connections and UDP clients closed for not authenticating in time.",
            vec![],
        ),
        "http_handoffs" => (
            "turn_http_handoffs_total",
            "Streams on the TURN port handed to the HTTP server.",
            vec![],
        ),
        "udp_dropped" => (
            "turn_dropped_packets_total",
            "Packets dropped instead of relayed, by reason.",
            vec![("reason", "udp_queue_full")],
        ),
        "inprocess_dropped" => (
            "turn_dropped_packets_total",
            "Packets dropped instead of relayed, by reason.",
            vec![("reason", "in_process_queue_full")],
        ),
        "peer_send_dropped" => (
            "turn_dropped_packets_total",
            "Packets dropped instead of relayed, by reason.",
            vec![("reason", "peer_send_failed")],
        ),
        "relay_sockets_opened" => (
            "turn_relay_sockets_opened_total",
            "Relay UDP sockets bound (allocations reaching peers other than the gateway's media).",
            vec![],
        ),
        "inprocess_to_media_packets" => (
            "turn_relayed_packets_total",
            "Relayed packets.",
            vec![("direction", "client_to_peer"), ("transport", IN_PROCESS)],
        ),
        "inprocess_to_media_bytes" => (
            "turn_relayed_bytes_total",
            "Relayed payload bytes.",
            vec![("direction", "client_to_peer"), ("transport", IN_PROCESS)],
        ),
        "inprocess_from_media_packets" => (
            "turn_relayed_packets_total",
            "Relayed packets.",
            vec![("direction", "peer_to_client"), ("transport", IN_PROCESS)],
        ),
        "inprocess_from_media_bytes" => (
            "turn_relayed_bytes_total",
            "Relayed payload bytes.",
            vec![("direction", "peer_to_client"), ("transport", IN_PROCESS)],
        ),
        other => ("turn_io_other_total", "Other shell counters.", {
            vec![("counter", other)]
        }),
    }
}

/// Renders samples in the text format: one `# HELP` and `# TYPE` per metric name, then its
/// samples; samples of one name are grouped even if they arrive apart.
pub fn render(samples: &[Sample]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    for s in samples {
        if !order.contains(&s.name) {
            order.push(s.name);
        }
    }
    let mut out = String::with_capacity(samples.len() * 80);
    for name in order {
        if !valid_name(name) {
            continue;
        }
        let mut first = true;
        for s in samples.iter().filter(|s| s.name == name) {
            if first {
                let kind = match s.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {name} {}", escape_help(s.help));
                let _ = writeln!(out, "# TYPE {name} {kind}");
                first = false;
            }
            out.push_str(name);
            let labels: Vec<_> = s.labels.iter().filter(|(k, _)| valid_label(k)).collect();
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn valid_label(n: &str) -> bool {
    valid_name(n) && !n.contains(':') && !n.starts_with("__")
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn handler(State(app): State<Arc<App>>) -> Response {
    let body = render(&app.metrics.samples(app.relay_shared().stats()));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_read_at_every_scrape_with_their_label() {
        let r = Registry::default();
        let n = Arc::new(AtomicU64::new(1));
        let m = n.clone();
        r.set_family(
            "x_frames_total",
            "Frames.",
            MetricKind::Counter,
            "stream",
            move || vec![("a".to_owned(), m.load(Relaxed)), ("b\"".to_owned(), 7)],
        );
        let core = relay::core::Stats::default();
        let text = render(&r.samples(&core));
        assert!(text.contains("x_frames_total{stream=\"a\"} 1\n"), "{text}");
        assert!(
            text.contains("x_frames_total{stream=\"b\\\"\"} 7\n"),
            "{text}"
        );
        n.store(5, Relaxed);
        let text = render(&r.samples(&core));
        assert!(text.contains("x_frames_total{stream=\"a\"} 5\n"), "{text}");
        assert_eq!(text.matches("# TYPE x_frames_total counter").count(), 1);
    }

    #[test]
    fn renders_help_type_and_escapes() {
        let s = vec![
            sample(
                "a_total",
                "A\nb\\",
                MetricKind::Counter,
                vec![("r", "x\"y\\z\n")],
                3,
            ),
            sample("g", "G.", MetricKind::Gauge, vec![], 1),
            sample(
                "a_total",
                "A\nb\\",
                MetricKind::Counter,
                vec![("r", "w")],
                4,
            ),
        ];
        let text = render(&s);
        assert_eq!(
            text,
            "# HELP a_total A\\nb\\\\\n# TYPE a_total counter\na_total{r=\"x\\\"y\\\\z\\n\"} 3\n\
             a_total{r=\"w\"} 4\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn exports_every_required_family() {
        let r = Registry::default();
        r.set_io_stats(Arc::new(relay::io::IoStats::default()));
        r.set_gauge("gateway_viewers", "Viewers.", || 7);
        let core = relay::core::Stats::default();
        let text = render(&r.samples(&core));
        for want in [
            "turn_allocations_active 0",
            "turn_relayed_bytes_total{direction=\"peer_to_client\",transport=\"in_process\"} 0",
            "turn_relayed_packets_total{direction=\"client_to_peer\",transport=\"tcp\"} 0",
            "turn_auth_failures_total{reason=\"bad_password\"} 0",
            "turn_forbidden_total{reason=\"loopback\"} 0",
            "turn_tls_handshakes_total{result=\"failed\"} 0",
            "turn_tls_handshakes_total{result=\"refused\"} 0",
            "turn_forbidden_total{reason=\"own address\"} 0",
            "turn_forbidden_total{reason=\"cloud host\"} 0",
            "turn_dropped_packets_total{reason=\"udp_queue_full\"} 0",
            "gateway_sessions_active 0",
            "gateway_viewers 7",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "{want} missing from\n{text}"
            );
        }
        // One HELP/TYPE per family.
        let types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE turn_dropped_packets_total"));
        assert_eq!(types.count(), 1, "{text}");
        for key in ["user=", "username=", "session=", "peer=", "client="] {
            assert!(!text.contains(key), "no per-user labels: {text}");
        }
        // Every series once.
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k))
            .collect();
        let n = series.len();
        series.sort_unstable();
        series.dedup();
        assert_eq!(n, series.len(), "duplicate series in\n{text}");
    }
}
