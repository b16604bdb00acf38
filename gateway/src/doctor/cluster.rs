//! Cluster mode's checks (CLUSTER_REDIS_URL):
//!
//! - Redis answers, and how many nodes are live in it;
//! - no other live node uses this node's id (CLUSTER_NODE_ID) with another peer URL;
//! - a sibling node reaches this node's peer URL (where sibling pulls go), asked of the
//!   sibling over `POST /api/v1/cluster/probe` with the cluster token. Reaching the media
//!   ports (UDP) is not checked: nothing there answers a stranger.

use std::time::Duration;

use super::{Report, Status, System, WAIT};
use crate::cluster::probe::{ProbeAnswer, ProbeRequest};
use crate::cluster::{ClusterPlan, NodeRecord};
use crate::config::Plan;

/// Talking to Redis and to sibling nodes (real, or a fake in tests).
pub(crate) trait ClusterProbe {
    /// PING Redis and read the live nodes' records (those sealed with the cluster token).
    async fn nodes(&self, plan: &ClusterPlan) -> Result<Vec<NodeRecord>, String>;
    /// Ask `sibling` to reach `target`, as node `plan.node_id`.
    async fn ask(
        &self,
        plan: &ClusterPlan,
        sibling: &NodeRecord,
        target: &ProbeRequest,
    ) -> Result<ProbeAnswer, String>;
    /// This node's peer URL, as siblings are told it.
    async fn own_addresses(&self, plan: &Plan) -> Result<ProbeRequest, String>;
}

/// The checks, when `plan` is a cluster node's.
pub(crate) async fn check(plan: &Plan, net: &impl ClusterProbe, r: &mut Report<'_>) {
    let Some(cluster) = &plan.cluster else { return };
    let nodes = match net.nodes(cluster).await {
        Ok(n) => n,
        Err(e) => {
            r.add(
                Status::Fail,
                "CLUSTER_REDIS_URL",
                format!(
                    "Redis does not answer ({e}): the node would serve alone, pulling nothing \
                     from its siblings; check the URL, that Redis runs and that this machine \
                     reaches it"
                ),
            );
            return;
        }
    };
    r.add(
        Status::Ok,
        "CLUSTER_REDIS_URL",
        format!("Redis answers; {} live node(s) registered", nodes.len()),
    );
    let own = match net.own_addresses(plan).await {
        Ok(o) => o,
        Err(e) => {
            r.add(Status::Fail, "CLUSTER_PEER_URL", e);
            return;
        }
    };
    let name = format!("CLUSTER_NODE_ID {}", cluster.node_id);
    match nodes.iter().find(|n| n.id == cluster.node_id) {
        Some(n) if n.peer_url != own.peer_url => r.add(
            Status::Fail,
            name,
            format!(
                "a live node with this id has the peer URL {}, not {}: two nodes share an \
                 id; give each its own CLUSTER_NODE_ID",
                n.peer_url, own.peer_url
            ),
        ),
        Some(_) => r.add(Status::Ok, name, "registered (this node runs)"),
        None => r.add(Status::Ok, name, "no live node uses it"),
    }
    let Some(sibling) = nodes.iter().find(|n| n.id != cluster.node_id) else {
        r.add(
            Status::Warn,
            "cluster reachability",
            "no other node is live: run the doctor again once a sibling runs, to check that it \
             reaches this node",
        );
        return;
    };
    let name = format!("reachable from node {}", sibling.id);
    match net.ask(cluster, sibling, &own).await {
        Err(e) => r.add(
            Status::Fail,
            name,
            format!(
                "node {} at {} did not take the question ({e}): this machine must reach its \
                 peer URL, and the nodes must share TURN_SECRET (or CLUSTER_TOKEN)",
                sibling.id, sibling.peer_url
            ),
        ),
        Ok(ProbeAnswer { peer_url: None, .. }) => r.add(
            Status::Ok,
            name,
            format!(
                "it reaches the peer URL {} (media ports, UDP, not checked)",
                own.peer_url
            ),
        ),
        Ok(ProbeAnswer {
            peer_url: Some(e), ..
        }) => r.add(
            Status::Fail,
            name,
            format!(
                "the peer URL {}: {e}; start the gateway here first, then open its port \
                 between the nodes (or set CLUSTER_PEER_URL to an address they reach)",
                own.peer_url
            ),
        ),
    }
}

impl ClusterProbe for System {
    async fn nodes(&self, plan: &ClusterPlan) -> Result<Vec<NodeRecord>, String> {
        use crate::cluster::store::{describe, Store};
        let store = Store::new(&plan.redis_url).map_err(|e| format!("{:?}", e.kind()))?;
        let seal = crate::cluster::seal::Seal::new(&plan.token);
        tokio::time::timeout(WAIT, store.nodes(&seal))
            .await
            .map_err(|_| format!("no answer within {} s", WAIT.as_secs()))?
            .map_err(|e| describe(&e))
    }

    async fn ask(
        &self,
        plan: &ClusterPlan,
        sibling: &NodeRecord,
        target: &ProbeRequest,
    ) -> Result<ProbeAnswer, String> {
        use http_body_util::BodyExt as _;
        let url = format!(
            "{}/api/v1/cluster/probe",
            sibling.peer_url.trim_end_matches('/')
        );
        let req = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", plan.token),
            )
            .header(
                crate::media::pull::PeerAuth::NODE_HEADER,
                plan.node_id.as_str(),
            )
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                serde_json::to_vec(target).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let wait = WAIT + crate::cluster::probe::PROBE_WAIT;
        let resp = tokio::time::timeout(wait, client.request(req))
            .await
            .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = tokio::time::timeout(
            Duration::from_secs(2),
            http_body_util::Limited::new(resp.into_body(), 16 * 1024).collect(),
        )
        .await
        .map_err(|_| "the answer did not finish".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
        if !status.is_success() {
            return Err(format!("{status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a probe answer: {e}"))
    }

    async fn own_addresses(&self, plan: &Plan) -> Result<ProbeRequest, String> {
        let (advertised, _) = crate::advertise::advertised_ip(&plan.media)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let cluster = plan.cluster.as_ref().ok_or("not a cluster node")?;
        Ok(ProbeRequest {
            peer_url: cluster.peer_url_for(plan.settings.gateway_http_addr, advertised),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    struct Fake {
        nodes: Result<Vec<NodeRecord>, String>,
        answer: Result<ProbeAnswer, String>,
    }

    fn node(id: &str, peer_url: &str) -> NodeRecord {
        NodeRecord::sample(id, peer_url)
    }

    impl ClusterProbe for Fake {
        async fn nodes(&self, _: &ClusterPlan) -> Result<Vec<NodeRecord>, String> {
            self.nodes.clone()
        }
        async fn ask(
            &self,
            _: &ClusterPlan,
            _: &NodeRecord,
            _: &ProbeRequest,
        ) -> Result<ProbeAnswer, String> {
            self.answer.clone()
        }
        async fn own_addresses(&self, _: &Plan) -> Result<ProbeRequest, String> {
            Ok(ProbeRequest {
                peer_url: "http://10.0.0.1:9100".into(),
            })
        }
    }

    fn plan() -> Plan {
        crate::config::Cli::try_parse_from([
            "gateway",
            "--turn-secret",
            "0123456789abcdef0123",
            "--cluster-redis-url",
            "redis://127.0.0.1:6379",
            "--cluster-node-id",
            "n1",
        ])
        .unwrap()
        .settings
        .plan()
        .unwrap()
    }

    async fn run(f: Fake) -> Vec<(Status, String)> {
        let mut r = Report::collecting();
        check(&plan(), &f, &mut r).await;
        r.checks()
            .iter()
            .map(|c| (c.status, format!("{}: {}", c.name, c.detail)))
            .collect()
    }

    fn ok_answer() -> Result<ProbeAnswer, String> {
        Ok(ProbeAnswer {
            node: "n2".into(),
            peer_url: None,
        })
    }

    #[tokio::test]
    async fn names_each_fault() {
        let down = run(Fake {
            nodes: Err("Io".into()),
            answer: ok_answer(),
        })
        .await;
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0, Status::Fail);
        assert!(down[0].1.starts_with("CLUSTER_REDIS_URL"), "{down:?}");

        let alone = run(Fake {
            nodes: Ok(vec![]),
            answer: ok_answer(),
        })
        .await;
        assert_eq!(
            alone.iter().map(|c| c.0).collect::<Vec<_>>(),
            [Status::Ok, Status::Ok, Status::Warn]
        );

        let good = run(Fake {
            nodes: Ok(vec![
                node("n1", "http://10.0.0.1:9100"),
                node("n2", "http://10.0.0.2:9100"),
            ]),
            answer: ok_answer(),
        })
        .await;
        assert!(good.iter().all(|c| c.0 == Status::Ok), "{good:?}");
        assert!(good[2].1.starts_with("reachable from node n2"), "{good:?}");

        let twin = run(Fake {
            nodes: Ok(vec![node("n1", "http://10.0.0.9:9100")]),
            answer: ok_answer(),
        })
        .await;
        assert_eq!(twin[1].0, Status::Fail, "{twin:?}");
        assert!(twin[1].1.contains("two nodes share an id"));

        let blocked = run(Fake {
            nodes: Ok(vec![node("n2", "http://10.0.0.2:9100")]),
            answer: Ok(ProbeAnswer {
                node: "n2".into(),
                peer_url: Some("no connection: refused".into()),
            }),
        })
        .await;
        assert_eq!(blocked[2].0, Status::Fail);
        assert!(
            blocked[2]
                .1
                .contains("peer URL http://10.0.0.1:9100: no connection"),
            "{blocked:?}"
        );

        let refused = run(Fake {
            nodes: Ok(vec![node("n2", "http://10.0.0.2:9100")]),
            answer: Err("401 Unauthorized".into()),
        })
        .await;
        assert_eq!(refused[2].0, Status::Fail);
        assert!(refused[2].1.contains("TURN_SECRET"), "{refused:?}");
    }
}
