//! `gateway doctor`: checks a machine and its settings before (or while) the gateway runs,
//! one line per check — `OK`, `WARN` or `FAIL`, what was found and, when not OK, the fix —
//! or, with `--json`, one JSON document for machines. The exit status is 0 only when no
//! check failed.
//!
//! The doctor reads nothing itself: it checks the [`Plan`] that [`Settings::plan`] makes
//! from the same flags and environment `gateway` runs with, so what it checks is what would
//! run. One module per check, each talking to the network only through a small trait that
//! its unit tests replace with a fake:
//!
//! - [`ports`]: every port bindable, or already served by this gateway (it answers
//!   `/health`);
//! - [`advertised`]: the advertised address against what a STUN server sees;
//! - [`certificate`]: the certificate covers TURN_HOST and does not expire within 14 days;
//! - [`external`]: each external TURN server (COTURN_*, `turn:`/`turns:` entries of
//!   ICE_SERVERS) allocates with minted or static credentials;
//! - [`self_loop`]: a forced-relay loop through the embedded relay (Allocate,
//!   CreatePermission, Send, Data);
//! - [`cluster`]: cluster mode's Redis, node id, and that a sibling node reaches this one;
//! - [`modes`]: proxy mode's upstream and its offer endpoint; relay-only mode's static
//!   users (each allocates) and allow list.

pub mod advertised;
pub mod certificate;
pub mod cluster;
pub mod external;
pub mod modes;
pub mod ports;
pub mod self_loop;
mod turn;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{Plan, Settings};

/// Bound on every network wait.
pub const WAIT: Duration = Duration::from_secs(5);

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: the gateway will not work as configured.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`, as in the JSON document.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// What was checked (names the setting).
    pub name: String,
    /// What was found, and the fix when not OK.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.status {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "{s}  {}: {}", self.name, self.detail)
    }
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per check as it completes, then a summary line.
    Human,
    /// One JSON document at the end.
    Json,
}

/// The checks made so far; in human format each is printed as it is added.
pub struct Report<'a> {
    checks: Vec<Check>,
    out: Option<&'a mut dyn std::io::Write>,
}

impl<'a> Report<'a> {
    /// A report that prints each check to `out` as it is added.
    pub fn printing(out: &'a mut dyn std::io::Write) -> Self {
        Self {
            checks: Vec::new(),
            out: Some(out),
        }
    }

    /// A report that only collects.
    pub fn collecting() -> Self {
        Self {
            checks: Vec::new(),
            out: None,
        }
    }

    /// Adds one check.
    pub fn add(&mut self, status: Status, name: impl Into<String>, detail: impl Into<String>) {
        let c = Check {
            status,
            name: name.into(),
            detail: detail.into(),
        };
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(out, "{c}");
            let _ = out.flush();
        }
        self.checks.push(c);
    }

    /// The checks so far.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// The JSON document of `gateway doctor --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "status": c.status.as_str(),
                    "detail": c.detail,
                })
            })
            .collect();
        serde_json::json!({
            "ok": self.passed(),
            "failed": self.count(Status::Fail),
            "warnings": self.count(Status::Warn),
            "checks": checks,
        })
    }
}

/// Runs every check on the plan made from `settings`, writing the report to `out` in
/// `format`; returns whether none failed. Settings that do not make a valid plan are one
/// failed check, named after the setting, as `gateway` would refuse to start with them.
pub async fn run(settings: &Settings, format: Format, out: &mut dyn std::io::Write) -> bool {
    let mut r = match format {
        Format::Human => Report::printing(out),
        Format::Json => Report::collecting(),
    };
    match settings.plan() {
        Ok(plan) => check_plan(&plan, &System, &mut r).await,
        Err(e) => r.add(
            Status::Fail,
            e.setting,
            format!("{e}: gateway would not start with it"),
        ),
    }
    let passed = r.passed();
    let summary = (r.checks.len(), r.count(Status::Fail), r.count(Status::Warn));
    let doc = r.to_json();
    drop(r);
    match format {
        Format::Human => {
            let _ = writeln!(
                out,
                "{} checks: {} failed, {} warnings",
                summary.0, summary.1, summary.2
            );
        }
        Format::Json => {
            let _ = writeln!(out, "{doc}");
        }
    }
    let _ = out.flush();
    passed
}

/// Every check, in order, through `net`.
pub(crate) async fn check_plan<N>(plan: &Plan, net: &N, r: &mut Report<'_>)
where
    N: ports::Binder
        + advertised::Stun
        + external::TurnProbe
        + self_loop::LoopRunner
        + modes::ModeProbe
        + cluster::ClusterProbe,
{
    let live = ports::check(plan, net, r).await;
    advertised::check(&plan.media, net, r).await;
    certificate::check(
        plan.tls.as_ref(),
        &plan.settings.turn_host(),
        unix_now_i64(),
        r,
    );
    external::check(&plan.ice, relay::io::unix_now(), net, r).await;
    self_loop::check(plan, live, relay::io::unix_now(), net, r).await;
    modes::check(plan, live, net, r).await;
    cluster::check(plan, net, r).await;
}

fn unix_now_i64() -> i64 {
    i64::try_from(relay::io::unix_now()).unwrap_or(i64::MAX)
}

/// The real network: sockets, DNS, TURN and STUN.
pub(crate) struct System;

/// Where to connect to reach a listener bound to `addr` from this machine.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(a) if a.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// An IP literal (brackets allowed), else the first address `host` resolves to.
pub(crate) async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::time::timeout(WAIT, tokio::net::lookup_host((host, port)))
        .await
        .ok()?
        .ok()?
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_document_lists_every_check() {
        let mut r = Report::collecting();
        r.add(Status::Ok, "TURN_LISTEN 0.0.0.0:443 (TCP)", "free");
        r.add(Status::Warn, "TLS_CERT", "unset");
        let doc = r.to_json();
        assert_eq!(doc["ok"], true);
        assert_eq!(doc["warnings"], 1);
        assert_eq!(doc["checks"][1]["status"], "warn");
        assert_eq!(doc["checks"][0]["name"], "TURN_LISTEN 0.0.0.0:443 (TCP)");
        r.add(Status::Fail, "COTURN_HOST", "401");
        let doc = r.to_json();
        assert_eq!(
            (doc["ok"].clone(), doc["failed"].clone()),
            (false.into(), 1.into())
        );
        assert_eq!(doc["checks"][2]["detail"], "401");
    }

    #[test]
    fn human_lines_are_printed_as_checks_complete() {
        let mut out = Vec::new();
        let mut r = Report::printing(&mut out);
        r.add(Status::Fail, "X", "broken: fix X");
        drop(r);
        assert_eq!(String::from_utf8(out).unwrap(), "FAIL  X: broken: fix X\n");
    }

    #[tokio::test]
    async fn invalid_settings_are_one_failed_check_naming_the_setting() {
        use clap::Parser;
        let cli =
            crate::config::Cli::try_parse_from(["gateway", "--turn-relay-ports", "50000-50100"])
                .unwrap();
        let mut out = Vec::new();
        assert!(!run(&cli.settings, Format::Json, &mut out).await);
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["checks"][0]["name"], "TURN_RELAY_PORTS");
        assert_eq!(doc["checks"][0]["status"], "fail");
        assert_eq!(doc["checks"].as_array().map(Vec::len), Some(1));
    }
}
