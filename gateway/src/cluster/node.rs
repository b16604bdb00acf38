//! A node as its siblings see it: the record each node writes into Redis under its id, and
//! the settings that make a gateway a cluster node.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a node tells its siblings (JSON under `gateway:node:{id}`, with a TTL the
/// heartbeat renews).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `CLUSTER_NODE_ID`.
    pub id: String,
    /// Where siblings reach its HTTP API (`CLUSTER_PEER_URL`): their pulls go there.
    pub peer_url: String,
    /// The address its media engine advertises (host candidates).
    pub media_ip: IpAddr,
    /// Its media ports (`WEBRTC_PORT_RANGE`), first and last.
    pub media_ports: (u16, u16),
    /// The name its sessions' `turn:` URLs carry (`TURN_HOST`).
    pub turn_host: String,
    /// Viewers receiving video there.
    pub viewers: u64,
    /// TURN allocations there.
    pub allocations: u64,
    /// The process's CPU use over the last heartbeat, in percent of one core.
    pub cpu_percent: f64,
    /// Unix time the node started.
    pub started_unix: u64,
}

/// Media ports a node may announce at most (WEBRTC_PORT_RANGE is a few dozen): a bound on
/// what the relay admits as one sibling's media.
pub const MAX_MEDIA_PORTS: u16 = 4096;

impl NodeRecord {
    /// Whether the record is one a gateway could have written: a valid id, a peer URL, a
    /// media address a peer could send to and a bounded port range. (Records are sealed
    /// too; this bounds what a node holding the token, or a bug, can make its siblings do.)
    pub fn is_sound(&self) -> bool {
        let ip = self.media_ip;
        let (first, last) = self.media_ports;
        valid_node_id(&self.id)
            && self.peer_url.len() <= 256
            && self
                .peer_url
                .parse::<hyper::Uri>()
                .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")))
            && self.turn_host.len() <= 253
            && !ip.is_unspecified()
            && !ip.is_multicast()
            && first > 0
            && first <= last
            && last - first < MAX_MEDIA_PORTS
            && self.cpu_percent.is_finite()
    }
}

#[cfg(test)]
impl NodeRecord {
    /// A sound record of node `id` reached at `peer_url`, for tests.
    pub(crate) fn sample(id: &str, peer_url: &str) -> Self {
        NodeRecord {
            id: id.into(),
            peer_url: peer_url.into(),
            media_ip: std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
            media_ports: (50000, 50050),
            turn_host: format!("{id}.example.com"),
            viewers: 1,
            allocations: 1,
            cpu_percent: 3.5,
            started_unix: 1,
        }
    }
}

/// A valid node id: 1 to 64 of `A-Z a-z 0-9 - _ .` (a Kubernetes node name is one).
pub fn valid_node_id(id: &str) -> bool {
    crate::streams::valid_stream_name(id)
}

/// The settings of cluster mode, validated.
#[derive(Clone)]
pub struct ClusterPlan {
    /// `CLUSTER_REDIS_URL` (may hold a password: never printed).
    pub redis_url: String,
    /// `CLUSTER_NODE_ID`, else the host name.
    pub node_id: String,
    /// `CLUSTER_PEER_URL`; `None`: made from the HTTP address and the advertised address
    /// once they are known ([`ClusterPlan::peer_url_for`]).
    pub peer_url: Option<String>,
    /// `CLUSTER_TOKEN`, else derived from the minting `TURN_SECRET`.
    pub token: String,
}

impl std::fmt::Debug for ClusterPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlan")
            .field("node_id", &self.node_id)
            .field("peer_url", &self.peer_url)
            .finish_non_exhaustive()
    }
}

/// The label the default cluster token is derived under (HMAC of the minting secret).
const TOKEN_LABEL: &str = "gateway-cluster-token";

impl ClusterPlan {
    /// Validates the cluster settings. `secrets` is `TURN_SECRET`'s ring, which cluster
    /// mode needs (every node verifies every node's credentials).
    pub fn new(
        redis_url: &str,
        node_id: Option<&str>,
        peer_url: Option<&str>,
        token: Option<&str>,
        secrets: Option<&auth::SecretRing>,
    ) -> Result<Self, (&'static str, String)> {
        if let Err(e) = redis::Client::open(redis_url) {
            return Err((
                "CLUSTER_REDIS_URL",
                // Its kind only: the detail may quote the URL, and with it a password.
                format!(
                    "not a Redis URL ({:?}): write redis://HOST:PORT[/DB] or rediss://…",
                    e.kind()
                ),
            ));
        }
        let Some(secrets) = secrets else {
            return Err((
                "TURN_SECRET",
                "cluster mode (CLUSTER_REDIS_URL) needs TURN_SECRET, the same on every node: \
                 each node verifies the credentials the others mint"
                    .into(),
            ));
        };
        let node_id = match node_id {
            Some(id) => id.to_owned(),
            None => host_name().ok_or((
                "CLUSTER_NODE_ID",
                "the host name is not a valid node id; set CLUSTER_NODE_ID".to_owned(),
            ))?,
        };
        if !valid_node_id(&node_id) {
            return Err((
                "CLUSTER_NODE_ID",
                format!("{node_id:?}: a node id is 1 to 64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
        if let Some(url) = peer_url {
            let ok = url.parse::<hyper::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                return Err((
                    "CLUSTER_PEER_URL",
                    format!("{url:?}: write the URL siblings reach this node's HTTP API at, e.g. http://10.0.0.5:9100"),
                ));
            }
        }
        let token = match token {
            Some(t) if t.len() >= 16 => t.to_owned(),
            Some(_) => {
                return Err((
                    "CLUSTER_TOKEN",
                    "at least 16 characters (it lets a node pull any stream)".into(),
                ))
            }
            None => auth::rest_password(secrets.minting(), TOKEN_LABEL),
        };
        Ok(Self {
            redis_url: redis_url.to_owned(),
            node_id,
            peer_url: peer_url.map(|u| u.trim_end_matches('/').to_owned()),
            token,
        })
    }

    /// `CLUSTER_PEER_URL`, else `http://` and the HTTP address (its IP, or the advertised
    /// address when it listens on every address) and port.
    pub fn peer_url_for(&self, http: std::net::SocketAddr, advertised: IpAddr) -> String {
        if let Some(u) = &self.peer_url {
            return u.clone();
        }
        let ip = if http.ip().is_unspecified() {
            advertised
        } else {
            http.ip()
        };
        format!("http://{}", std::net::SocketAddr::new(ip, http.port()))
    }
}

/// This machine's host name, when it is a valid node id.
fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    valid_node_id(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> auth::SecretRing {
        auth::SecretRing::parse("0123456789abcdef0123").unwrap()
    }

    #[test]
    fn validates_the_settings() {
        let r = ring();
        let p =
            ClusterPlan::new("redis://127.0.0.1:6379", Some("n1"), None, None, Some(&r)).unwrap();
        assert_eq!(p.node_id, "n1");
        assert_eq!(p.token, auth::rest_password(r.minting(), TOKEN_LABEL));
        assert!(
            !format!("{p:?}").contains(&p.token),
            "the token is never printed"
        );
        assert_eq!(
            p.peer_url_for("0.0.0.0:9100".parse().unwrap(), "10.0.0.5".parse().unwrap()),
            "http://10.0.0.5:9100"
        );
        assert_eq!(
            p.peer_url_for(
                "127.0.0.2:9101".parse().unwrap(),
                "10.0.0.5".parse().unwrap()
            ),
            "http://127.0.0.2:9101"
        );
        let bad = |url, id, peer, token, secrets: Option<&auth::SecretRing>| {
            ClusterPlan::new(url, id, peer, token, secrets)
                .unwrap_err()
                .0
        };
        assert_eq!(
            bad("nope://x", Some("n1"), None, None, Some(&r)),
            "CLUSTER_REDIS_URL"
        );
        assert_eq!(
            bad("redis://h", Some("n1"), None, None, None),
            "TURN_SECRET"
        );
        assert_eq!(
            bad("redis://h", Some("a b"), None, None, Some(&r)),
            "CLUSTER_NODE_ID"
        );
        assert_eq!(
            bad("redis://h", Some("n1"), Some("ftp://x"), None, Some(&r)),
            "CLUSTER_PEER_URL"
        );
        assert_eq!(
            bad("redis://h", Some("n1"), None, Some("short"), Some(&r)),
            "CLUSTER_TOKEN"
        );
        let p = ClusterPlan::new(
            "redis://h",
            Some("n1"),
            Some("http://gw1:9100/"),
            Some("0123456789abcdefXYZ"),
            Some(&r),
        )
        .unwrap();
        assert_eq!(
            p.peer_url_for("0.0.0.0:1".parse().unwrap(), "10.0.0.1".parse().unwrap()),
            "http://gw1:9100"
        );
        assert_eq!(p.token, "0123456789abcdefXYZ");
    }

    #[test]
    fn unsound_records_are_refused() {
        let good = NodeRecord::sample("n1", "http://10.0.0.1:9100");
        assert!(good.is_sound());
        let bad = [
            NodeRecord {
                id: "n 1".into(),
                ..good.clone()
            },
            NodeRecord {
                peer_url: "file:///etc".into(),
                ..good.clone()
            },
            NodeRecord {
                media_ip: "0.0.0.0".parse().unwrap(),
                ..good.clone()
            },
            NodeRecord {
                media_ip: "224.0.0.1".parse().unwrap(),
                ..good.clone()
            },
            NodeRecord {
                media_ports: (1, 65535),
                ..good.clone()
            },
            NodeRecord {
                media_ports: (0, 10),
                ..good.clone()
            },
            NodeRecord {
                media_ports: (50050, 50000),
                ..good.clone()
            },
            NodeRecord {
                cpu_percent: f64::NAN,
                ..good.clone()
            },
            NodeRecord {
                turn_host: "x".repeat(300),
                ..good.clone()
            },
        ];
        for b in bad {
            assert!(!b.is_sound(), "{b:?}");
        }
    }
}
