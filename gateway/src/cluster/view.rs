//! What this node knows of the cluster: the last snapshot of the node registry and the
//! stream directory read from Redis, and the rules that use it. Sans-I/O: the Redis shell
//! ([`super::store`]) refreshes it; requests read it without waiting on Redis. While Redis
//! is lost the last snapshot stands: streams keep their origins, pulls go on node to node.

use std::collections::BTreeMap;
use std::time::Instant;

use super::node::NodeRecord;

/// Nodes and streams at most (a snapshot beyond these is cut: a bound on what a rogue
/// writer to Redis can make a node hold).
pub const MAX_NODES: usize = 1024;
/// Streams in the directory at most.
pub const MAX_STREAMS: usize = 16_384;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct View {
    me: String,
    nodes: BTreeMap<String, NodeRecord>,
    /// Stream name → the id of its origin node.
    origins: BTreeMap<String, String>,
    refreshed: Option<Instant>,
}

impl View {
    /// An empty view of node `me`.
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            nodes: BTreeMap::new(),
            origins: BTreeMap::new(),
            refreshed: None,
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Replaces the snapshot: the nodes whose records are alive in Redis (the store took
    /// only sealed, sound records filed under their own id), and each live stream's origin.
    pub fn refresh(
        &mut self,
        nodes: impl IntoIterator<Item = NodeRecord>,
        origins: impl IntoIterator<Item = (String, String)>,
        now: Instant,
    ) {
        self.nodes = nodes
            .into_iter()
            .take(MAX_NODES)
            .map(|n| (n.id.clone(), n))
            .collect();
        self.origins = origins.into_iter().take(MAX_STREAMS).collect();
        self.refreshed = Some(now);
    }

    /// When the snapshot was last refreshed (`None`: never, Redis not reached yet).
    pub fn refreshed(&self) -> Option<Instant> {
        self.refreshed
    }

    /// The node that is `stream`'s origin, when it is another live node: a request for
    /// the stream here is served by pulling it from there.
    pub fn origin_elsewhere(&self, stream: &str) -> Option<&NodeRecord> {
        let id = self.origins.get(stream)?;
        if *id == self.me {
            return None;
        }
        self.nodes.get(id)
    }

    /// The live nodes, this one among them once its own heartbeat got through.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// The other live nodes.
    pub fn siblings(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.id != self.me)
    }

    /// Each live stream and its origin node.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &str)> {
        self.origins.iter().map(|(s, n)| (s.as_str(), n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeRecord {
        NodeRecord::sample(id, &format!("http://{id}:9100"))
    }

    #[test]
    fn a_stream_elsewhere_is_pulled_from_its_live_origin_only() {
        let mut v = View::new("n2");
        assert!(v.refreshed().is_none());
        let now = Instant::now();
        v.refresh(
            [node("n1"), node("n2")],
            [
                ("cam".to_owned(), "n1".to_owned()),
                ("mine".to_owned(), "n2".to_owned()),
                ("orphan".to_owned(), "n9".to_owned()),
            ],
            now,
        );
        assert_eq!(v.origin_elsewhere("cam").map(|n| n.id.as_str()), Some("n1"));
        assert!(v.origin_elsewhere("mine").is_none(), "ours");
        assert!(v.origin_elsewhere("orphan").is_none(), "its node is gone");
        assert!(v.origin_elsewhere("none").is_none());
        assert_eq!(v.siblings().count(), 1);
        assert_eq!(v.nodes().count(), 2);
        assert_eq!(v.origins().count(), 3);
        // A snapshot replaces the last one whole: a node whose record expired is gone.
        v.refresh([node("n2")], [("cam".to_owned(), "n1".to_owned())], now);
        assert!(v.origin_elsewhere("cam").is_none());
        assert_eq!(v.siblings().count(), 0);
    }

    #[test]
    fn a_snapshot_is_bounded() {
        let mut v = View::new("me");
        v.refresh(
            (0..MAX_NODES + 10).map(|i| node(&format!("n{i}"))),
            (0..MAX_STREAMS + 10).map(|i| (format!("s{i}"), "n1".to_owned())),
            Instant::now(),
        );
        assert_eq!(v.nodes().count(), MAX_NODES);
        assert_eq!(v.origins().count(), MAX_STREAMS);
    }
}
