//! The Grafana dashboard (`deploy/grafana/gateway.json`) queries only what the gateway
//! exports: every metric name, every label it matches, groups by or shows in a legend, and
//! every label value it matches exactly, exists in `/metrics` of a running gateway (started
//! in-process on loopback, with a PEM certificate so the certificate metrics exist too).
//! `instance` and `job` are the labels Prometheus adds when it scrapes.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gateway_tests::{http_get, TestCert, TEST_SERVER_NAME};

/// Labels Prometheus attaches to every scraped series.
const SCRAPE_LABELS: &[&str] = &["instance", "job"];
/// PromQL words the dashboard may use besides metric and label names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "time",
    "label_values",
];

/// Families of `/metrics`: name → label name → values seen.
type Families = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn parse_metrics(text: &str) -> Families {
    let mut out = Families::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let fam = out.entry(name.to_owned()).or_default();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("unterminated label value");
                match c {
                    '\\' => value.push(chars.next().expect("escape").1),
                    '"' => break i,
                    c => value.push(c),
                }
            };
            fam.entry(k.to_owned()).or_default().insert(value);
            rest = after[end + 1..].trim_start_matches(',');
        }
    }
    out
}

/// What one PromQL expression uses.
#[derive(Debug, Default)]
struct Uses {
    metrics: BTreeSet<String>,
    /// Labels in matchers and `by (...)`.
    labels: BTreeSet<String>,
    /// Exact matchers: label, value.
    exact: Vec<(String, String)>,
    /// Labels of the result when aggregated (`by`), else `None` (the metrics' own).
    grouped: Option<BTreeSet<String>>,
}

/// A small PromQL reader for the subset the dashboard uses; anything else fails the test.
fn read_expr(expr: &str) -> Uses {
    let b = expr.as_bytes();
    let mut u = Uses::default();
    let mut i = 0;
    let ident = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_' || b[*i] == b':') {
            *i += 1;
        }
        expr[s..*i].to_owned()
    };
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let word = ident(&mut i);
            if word == "by" {
                skip_ws(&mut i);
                assert_eq!(b.get(i), Some(&b'('), "`by` without labels in {expr}");
                i += 1;
                let mut group = BTreeSet::new();
                loop {
                    skip_ws(&mut i);
                    let l = ident(&mut i);
                    assert!(!l.is_empty(), "bad `by` list in {expr}");
                    group.insert(l.clone());
                    u.labels.insert(l);
                    skip_ws(&mut i);
                    match b.get(i) {
                        Some(b',') => i += 1,
                        Some(b')') => {
                            i += 1;
                            break;
                        }
                        _ => panic!("bad `by` list in {expr}"),
                    }
                }
                u.grouped = Some(group);
            } else if word.starts_with("gateway_") || word.starts_with("turn_") {
                u.metrics.insert(word);
            } else {
                assert!(
                    PROMQL_WORDS.contains(&word.as_str()),
                    "unknown word {word:?} in {expr}"
                );
            }
        } else if c == b'{' {
            i += 1;
            loop {
                skip_ws(&mut i);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                    break;
                }
                let label = ident(&mut i);
                assert!(!label.is_empty(), "bad matcher in {expr}");
                let op_start = i;
                while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
                    i += 1;
                }
                let op = &expr[op_start..i];
                assert!(
                    matches!(op, "=" | "!=" | "=~" | "!~"),
                    "bad op {op:?} in {expr}"
                );
                assert_eq!(b.get(i), Some(&b'"'), "unquoted value in {expr}");
                let close = expr[i + 1..].find('"').expect("closing quote") + i + 1;
                let value = &expr[i + 1..close];
                if op == "=" {
                    u.exact.push((label.clone(), value.to_owned()));
                }
                u.labels.insert(label);
                i = close + 1;
                skip_ws(&mut i);
                if b.get(i) == Some(&b',') {
                    i += 1;
                }
            }
        } else if c == b'[' {
            // A range: [5m], [$__rate_interval], [$__range].
            i += expr[i..].find(']').expect("closing bracket") + 1;
        } else if c == b'"' {
            panic!("string outside a matcher in {expr}");
        } else {
            i += 1;
        }
    }
    u
}

/// Every query of the dashboard with its legend: panel targets and template variables.
fn queries(dash: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                title.clone(),
                t["expr"].as_str().expect("expr").to_owned(),
                t["legendFormat"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().expect("variable query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = inner.split_once(',').expect("metric, label");
            out.push((
                format!("variable {}", v["name"]),
                format!("sum by ({}) ({})", label.trim(), metric.trim()),
                String::new(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_exported_metrics_and_labels() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/gateway.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    // Importable as is: no unresolved import inputs, a datasource variable for the panels.
    assert!(
        dash.get("__inputs").is_none(),
        "dashboard needs import inputs"
    );
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"datasource"), "{vars:?}");
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }

    let (cert_path, key_path) = TestCert::new(&[TEST_SERVER_NAME]).write_pem_files();
    let cert = cert_path.to_str().unwrap().to_owned();
    let key = key_path.to_str().unwrap().to_owned();
    // An RTP and a WHIP stream, so every per-stream family exists.
    let rtp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cam = format!("cam=rtp://127.0.0.1:{rtp_port}?codec=h264");
    let cli = <gateway::config::Cli as clap::Parser>::try_parse_from([
        "gateway",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-udp-listen",
        "127.0.0.1:0",
        "--gateway-http-addr",
        "127.0.0.1:0",
        "--turn-secret",
        "dashboard-test-secret",
        "--turn-relay-ip",
        "127.0.0.1",
        "--webrtc-bind-ip",
        "127.0.0.1",
        "--webrtc-advertise-ip",
        "127.0.0.1",
        "--webrtc-port-range",
        "51140-51159",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--stream",
        &cam,
        "--stream",
        "pub=whip?token=dashboard-whip-token-0123",
    ])
    .expect("flags");
    let gw = gateway::run::start(cli.settings)
        .await
        .expect("gateway starts");
    let s = tokio::net::TcpStream::connect(gw.http_addr).await.unwrap();
    let (status, body) = http_get(s, "x", "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    gw.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_file(&cert_path);
    let _ = std::fs::remove_file(&key_path);
    assert_eq!(status, 200);
    let families = parse_metrics(&body);

    let qs = queries(&dash);
    assert!(qs.len() >= 15, "only {} queries", qs.len());
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (title, expr, legend) in &qs {
        let u = read_expr(expr);
        if u.metrics.is_empty() {
            problems.push(format!("{title}: {expr}: no metric"));
        }
        let mut labels: BTreeSet<&str> = SCRAPE_LABELS.iter().copied().collect();
        for m in &u.metrics {
            used.insert(m.clone());
            match families.get(m) {
                Some(fam) => labels.extend(fam.keys().map(String::as_str)),
                None => problems.push(format!("{title}: {m} is not in /metrics")),
            }
        }
        for l in &u.labels {
            if !labels.contains(l.as_str()) {
                problems.push(format!("{title}: label {l} is not on {:?}", u.metrics));
            }
        }
        for (l, v) in &u.exact {
            let known = u
                .metrics
                .iter()
                .filter_map(|m| families.get(m)?.get(l))
                .any(|vals| vals.contains(v));
            if !known {
                problems.push(format!("{title}: no series with {l}=\"{v}\""));
            }
        }
        // Legend labels must be on the result: the `by` labels when aggregated.
        let mut rest = legend.as_str();
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").expect("closing }}") + start;
            let l = rest[start + 2..end].trim();
            let ok = match &u.grouped {
                Some(g) => g.contains(l),
                None => labels.contains(l),
            };
            if !ok {
                problems.push(format!(
                    "{title}: legend label {l} is not on the result of {expr}"
                ));
            }
            rest = &rest[end + 2..];
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The families the dashboard is about are all charted.
    for want in [
        "gateway_sessions_active",
        "gateway_sessions_pending",
        "gateway_viewer_slots_used",
        "gateway_viewers",
        "turn_allocations_active",
        "turn_relayed_bytes_total",
        "turn_auth_failures_total",
        "turn_forbidden_total",
        "turn_tls_handshakes_total",
        "turn_dropped_packets_total",
    ] {
        assert!(used.contains(want), "the dashboard does not chart {want}");
    }
}

#[test]
fn the_reader_catches_what_the_gateway_does_not_export() {
    let fams =
        parse_metrics("# TYPE a counter\nturn_x_total{reason=\"p q\",dir=\"in\"} 1\nturn_y 2\n");
    assert_eq!(fams["turn_x_total"]["reason"].iter().next().unwrap(), "p q");
    let u = read_expr("sum by (reason) (rate(turn_x_total{dir=\"in\",instance=~\"$instance\"}[$__rate_interval])) * 8");
    assert_eq!(u.metrics.iter().collect::<Vec<_>>(), ["turn_x_total"]);
    assert!(u.labels.contains("reason") && u.labels.contains("dir"));
    assert_eq!(u.exact, vec![("dir".to_owned(), "in".to_owned())]);
    assert_eq!(u.grouped.unwrap().len(), 1);
    let r = std::panic::catch_unwind(|| read_expr("histogram_quantile(0.9, turn_x_total)"));
    assert!(r.is_err(), "an unknown function must fail the test");
}
