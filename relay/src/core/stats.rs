//! Counters for `/metrics`. Relaxed atomics: read by the metrics endpoint, updated in batches.
//!
//! No per-user labels: label values come from small fixed sets (transport, direction, reason).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::badinput::BadInput;
use super::policy::DENY_REASONS;
use super::Transport;

/// Why authentication failed (`turn_auth_failures_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// MESSAGE-INTEGRITY matches no secret.
    BadPassword,
    /// The REST username's expiry has passed.
    Expired,
    /// USERNAME is not a REST username, or an auth attribute does not parse.
    Malformed,
    /// The user's session was ended.
    Revoked,
    /// The NONCE expired or is not ours.
    StaleNonce,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE.
    MissingCredentials,
}

impl AuthFailure {
    /// All values, in label order.
    pub const ALL: [AuthFailure; 6] = [
        AuthFailure::BadPassword,
        AuthFailure::Expired,
        AuthFailure::Malformed,
        AuthFailure::Revoked,
        AuthFailure::StaleNonce,
        AuthFailure::MissingCredentials,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BadPassword => "bad_password",
            AuthFailure::Expired => "expired",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Revoked => "revoked",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::MissingCredentials => "missing_credentials",
        }
    }
}

/// Why a relayed packet was dropped (`turn_dropped_packets_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No allocation on this 5-tuple.
    NoAllocation,
    /// No (live) permission for the peer.
    NoPermission,
    /// ChannelData on an unbound channel.
    NoChannel,
    /// The peer policy refused the peer (Send indication).
    Forbidden,
    /// Unparseable input.
    Malformed,
    /// Too large to wrap for the client.
    TooLarge,
}

impl DropReason {
    /// All values, in label order.
    pub const ALL: [DropReason; 6] = [
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::NoChannel,
        DropReason::Forbidden,
        DropReason::Malformed,
        DropReason::TooLarge,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Forbidden => "forbidden",
            DropReason::Malformed => "malformed",
            DropReason::TooLarge => "too_large",
        }
    }
}

/// Direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the TURN client to a peer.
    ClientToPeer,
    /// From a peer to the TURN client.
    PeerToClient,
}

impl Direction {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToPeer => "client_to_peer",
            Direction::PeerToClient => "peer_to_client",
        }
    }
}

const TRANSPORTS: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];
const N_FORBIDDEN: usize = DENY_REASONS.len() + 1;

fn t_idx(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

fn d_idx(d: Direction) -> usize {
    match d {
        Direction::ClientToPeer => 0,
        Direction::PeerToClient => 1,
    }
}

/// Kind of a metric, as Prometheus has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One value of a snapshot: `name{labels} value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Metric name (Prometheus style, `turn_` prefix).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Label pairs.
    pub labels: Vec<(&'static str, &'static str)>,
    /// The value.
    pub value: u64,
}

/// Relay counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations created since start.
    pub allocations_created: AtomicU64,
    /// Of those, allocations of static users (TURN_STATIC_USERS).
    pub static_user_allocations: AtomicU64,
    /// Allocations alive now (gauge).
    pub allocations_active: AtomicU64,
    /// 401 challenges to requests without credentials (normal first round trip).
    pub auth_challenges: AtomicU64,
    /// Allocate refused with 486 (per-user quota).
    pub quota_user_rejections: AtomicU64,
    /// Allocate refused with 508 (total capacity, relay ports or caps).
    pub capacity_rejections: AtomicU64,
    auth_failures: [AtomicU64; 6],
    forbidden: [AtomicU64; N_FORBIDDEN],
    packets: [[AtomicU64; 3]; 2],
    bytes: [[AtomicU64; 3]; 2],
    dropped: [AtomicU64; 6],
    bad_input: [AtomicU64; 4],
}

impl Stats {
    /// Counts one authentication failure.
    pub fn auth_failure(&self, why: AuthFailure) {
        if let Some(c) = AuthFailure::ALL
            .iter()
            .position(|a| *a == why)
            .and_then(|i| self.auth_failures.get(i))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Authentication failures so far for `why`.
    pub fn auth_failures(&self, why: AuthFailure) -> u64 {
        AuthFailure::ALL
            .iter()
            .position(|a| *a == why)
            .and_then(|i| self.auth_failures.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }

    fn forbidden_idx(reason: &str) -> usize {
        DENY_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(DENY_REASONS.len())
    }

    /// Counts one bad input (see [`super::Shared::bad_input`]).
    pub fn count_bad_input(&self, why: BadInput) {
        if let Some(c) = self.bad_input.get(why.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Bad inputs so far for `why`.
    pub fn bad_input(&self, why: BadInput) -> u64 {
        self.bad_input
            .get(why.index())
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Counts one 403 (or dropped Send) for a policy deny reason.
    pub fn forbid(&self, reason: &str) {
        if let Some(c) = self.forbidden.get(Self::forbidden_idx(reason)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// 403s so far for a deny reason.
    pub fn forbidden(&self, reason: &str) -> u64 {
        self.forbidden
            .get(Self::forbidden_idx(reason))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Adds relayed traffic (a batch).
    pub fn add_traffic(&self, dir: Direction, t: Transport, packets: u64, bytes: u64) {
        if let Some(c) = self.packets.get(d_idx(dir)).and_then(|r| r.get(t_idx(t))) {
            c.fetch_add(packets, Relaxed);
        }
        if let Some(c) = self.bytes.get(d_idx(dir)).and_then(|r| r.get(t_idx(t))) {
            c.fetch_add(bytes, Relaxed);
        }
    }

    /// Relayed packets so far.
    pub fn packets(&self, dir: Direction, t: Transport) -> u64 {
        self.packets
            .get(d_idx(dir))
            .and_then(|r| r.get(t_idx(t)))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Relayed bytes so far.
    pub fn bytes(&self, dir: Direction, t: Transport) -> u64 {
        self.bytes
            .get(d_idx(dir))
            .and_then(|r| r.get(t_idx(t)))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Adds dropped packets (a batch).
    pub fn add_dropped(&self, why: DropReason, n: u64) {
        if let Some(c) = DropReason::ALL
            .iter()
            .position(|a| *a == why)
            .and_then(|i| self.dropped.get(i))
        {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Dropped packets so far.
    pub fn dropped(&self, why: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|a| *a == why)
            .and_then(|i| self.dropped.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Every value, for an exporter.
    pub fn snapshot(&self) -> Vec<Sample> {
        use MetricKind::{Counter, Gauge};
        let mut v = Vec::with_capacity(64);
        let mut push = |name, help, kind, labels, value| {
            v.push(Sample {
                name,
                help,
                kind,
                labels,
                value,
            })
        };
        push(
            "turn_allocations_created_total",
            "Allocations created.",
            Counter,
            vec![],
            self.allocations_created.load(Relaxed),
        );
        push(
            "turn_static_user_allocations_total",
            "Allocations created by static users (TURN_STATIC_USERS), whose passwords never expire.",
            Counter,
            vec![],
            self.static_user_allocations.load(Relaxed),
        );
        push(
            "turn_allocations_active",
            "Allocations alive.",
            Gauge,
            vec![],
            self.allocations_active.load(Relaxed),
        );
        push(
            "turn_auth_challenges_total",
            "401 challenges to requests without credentials.",
            Counter,
            vec![],
            self.auth_challenges.load(Relaxed),
        );
        push(
            "turn_allocation_rejections_total",
            "Allocate requests refused for quota or capacity.",
            Counter,
            vec![("reason", "user_quota")],
            self.quota_user_rejections.load(Relaxed),
        );
        push(
            "turn_allocation_rejections_total",
            "Allocate requests refused for quota or capacity.",
            Counter,
            vec![("reason", "capacity")],
            self.capacity_rejections.load(Relaxed),
        );
        for a in AuthFailure::ALL {
            push(
                "turn_auth_failures_total",
                "Failed authentications by reason.",
                Counter,
                vec![("reason", a.as_str())],
                self.auth_failures(a),
            );
        }
        for (i, c) in self.forbidden.iter().enumerate() {
            let reason = DENY_REASONS.get(i).copied().unwrap_or("other");
            push(
                "turn_forbidden_total",
                "Peers refused by the peer policy, by class.",
                Counter,
                vec![("reason", reason)],
                c.load(Relaxed),
            );
        }
        for dir in [Direction::ClientToPeer, Direction::PeerToClient] {
            for t in TRANSPORTS {
                push(
                    "turn_relayed_packets_total",
                    "Relayed packets.",
                    Counter,
                    vec![("direction", dir.as_str()), ("transport", t.as_str())],
                    self.packets(dir, t),
                );
                push(
                    "turn_relayed_bytes_total",
                    "Relayed payload bytes.",
                    Counter,
                    vec![("direction", dir.as_str()), ("transport", t.as_str())],
                    self.bytes(dir, t),
                );
            }
        }
        for d in DropReason::ALL {
            push(
                "turn_dropped_packets_total",
                "Packets dropped instead of relayed, by reason.",
                Counter,
                vec![("reason", d.as_str())],
                self.dropped(d),
            );
        }
        for b in BadInput::ALL {
            push(
                "turn_bad_input_total",
                "Bad input from clients dropped (unparseable STUN, framing errors, non-TURN streams, non-STUN UDP), by reason.",
                Counter,
                vec![("reason", b.as_str())],
                self.bad_input(b),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_everything() {
        let s = Stats::default();
        s.auth_failure(AuthFailure::Revoked);
        s.forbid("loopback");
        s.forbid("something else");
        s.add_traffic(Direction::PeerToClient, Transport::Tls, 2, 100);
        s.add_dropped(DropReason::NoChannel, 3);
        s.count_bad_input(BadInput::Framing);
        assert_eq!(s.auth_failures(AuthFailure::Revoked), 1);
        assert_eq!(s.forbidden("loopback"), 1);
        assert_eq!(s.forbidden("other"), 1);
        assert_eq!(s.bytes(Direction::PeerToClient, Transport::Tls), 100);
        let snap = s.snapshot();
        assert!(snap.iter().any(|x| x.name == "turn_relayed_bytes_total"
            && x.labels.contains(&("transport", "tls"))
            && x.labels.contains(&("direction", "peer_to_client"))
            && x.value == 100));
        assert!(snap
            .iter()
            .any(|x| x.name == "turn_dropped_packets_total" && x.value == 3));
        assert!(snap.iter().any(|x| x.name == "turn_bad_input_total"
            && x.labels == [("reason", "framing")]
            && x.value == 1));
    }
}
