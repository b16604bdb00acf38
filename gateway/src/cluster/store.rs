//! The Redis shell of cluster mode: what a node writes (its record, the streams it is the
//! origin of) and reads (every live node, every stream's origin) each heartbeat.
//!
//! Keys, each with a TTL the heartbeat renews, so a node that dies leaves no trace past
//! [`NODE_TTL`]; two sets index them (members whose key expired are pruned on reading):
//!
//! ```text
//! gateway:nodes           set of node ids
//! gateway:node:{id}       the node's sealed record: "<mac> <JSON NodeRecord>" (see seal)
//! gateway:streams         set of stream names
//! gateway:stream:{name}   the id of the stream's origin node (set if absent, renewed by its holder)
//! ```
//!
//! Whatever is read is bounded ([`MAX_VALUE`], the view's counts) and checked: a value
//! that is not UTF-8, too long, unsealed or not a valid record is skipped, never trusted.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::node::NodeRecord;
use super::seal::Seal;
use super::view::{MAX_NODES, MAX_STREAMS};

/// How long a node's record and its streams' claims live without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How often a node renews them (and reads the others').
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A Redis command's longest wait: a slow Redis delays the directory, never a viewer.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1500);
/// Longest value taken from Redis.
pub const MAX_VALUE: usize = 4096;

const NODES: &str = "gateway:nodes";
const NODE_PREFIX: &str = "gateway:node:";
const STREAMS: &str = "gateway:streams";
const STREAM_PREFIX: &str = "gateway:stream:";

/// Claims a stream for a node: renews the claim if the node holds it, takes it if nobody
/// does; answers 1, or the id of the node that holds it.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
return cur";

/// Drops a node's claim of a stream (and nobody else's).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the stream.
    Held,
    /// Another node does.
    HeldBy(String),
}

/// One node's connection to Redis (reconnecting by itself).
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    claim: redis::Script,
    release: redis::Script,
}

/// What one heartbeat read.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every live node's record.
    pub nodes: Vec<NodeRecord>,
    /// Every live stream and its origin node.
    pub origins: Vec<(String, String)>,
    /// Streams this node is live for but another node holds: (stream, holder).
    pub conflicts: Vec<(String, String)>,
}

/// A Redis error as logs may show it: its kind and the server's words, never the URL
/// (which may hold a password).
pub fn describe(e: &redis::RedisError) -> String {
    match e.detail() {
        Some(d) => format!(
            "{:?}: {}",
            e.kind(),
            d.chars().take(200).collect::<String>()
        ),
        None => format!("{:?}", e.kind()),
    }
}

impl Store {
    /// A store for `url` (connects lazily; commands time out after [`REDIS_TIMEOUT`]).
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client.clone(), config)?,
            client,
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
        })
    }

    /// Claims `stream` for `node`: renews it if `node` holds it, takes it if nobody does.
    pub async fn claim(&self, stream: &str, node: &str) -> redis::RedisResult<Claim> {
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .claim
            .key(format!("{STREAM_PREFIX}{stream}"))
            .key(STREAMS)
            .arg(node)
            .arg(NODE_TTL.as_millis() as u64)
            .arg(stream)
            .invoke_async(&mut conn)
            .await?;
        Ok(match v {
            redis::Value::Int(1) => Claim::Held,
            other => Claim::HeldBy(
                redis::from_redis_value::<String>(other)
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect(),
            ),
        })
    }

    /// Drops `node`'s claim of `stream`.
    pub async fn release(&self, stream: &str, node: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: redis::Value = self
            .release
            .key(format!("{STREAM_PREFIX}{stream}"))
            .arg(node)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// One heartbeat: writes `record` (sealed), claims the streams of `keep` and releases
    /// those of `claimed` not in it (updating `claimed`), then reads every node and origin.
    pub async fn heartbeat(
        &self,
        seal: &Seal,
        record: &NodeRecord,
        keep: &BTreeSet<String>,
        claimed: &mut BTreeSet<String>,
    ) -> redis::RedisResult<Snapshot> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(record).unwrap_or_default();
        redis::pipe()
            .cmd("SET")
            .arg(format!("{NODE_PREFIX}{}", record.id))
            .arg(seal.seal(&json))
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(&record.id)
            .ignore()
            .exec_async(&mut conn)
            .await?;
        let mut snapshot = Snapshot::default();
        for stream in keep {
            match self.claim(stream, &record.id).await? {
                Claim::Held => {
                    claimed.insert(stream.clone());
                }
                Claim::HeldBy(holder) => {
                    claimed.remove(stream);
                    snapshot.conflicts.push((stream.clone(), holder));
                }
            }
        }
        let gone: Vec<String> = claimed.difference(keep).cloned().collect();
        for stream in gone {
            self.release(&stream, &record.id).await?;
            claimed.remove(&stream);
        }
        snapshot.nodes = self.nodes_sealed(seal).await?;
        snapshot.origins = self
            .read_set(STREAMS, STREAM_PREFIX, MAX_STREAMS)
            .await?
            .into_iter()
            .filter(|(_, node)| super::node::valid_node_id(node))
            .collect();
        Ok(snapshot)
    }

    /// Every live node's record whose seal verifies and that checks out.
    async fn nodes_sealed(&self, seal: &Seal) -> redis::RedisResult<Vec<NodeRecord>> {
        Ok(self
            .read_set(NODES, NODE_PREFIX, MAX_NODES)
            .await?
            .into_iter()
            .filter_map(|(id, value)| {
                let record: NodeRecord = serde_json::from_str(seal.open(&value)?).ok()?;
                (record.id == id && record.is_sound()).then_some(record)
            })
            .collect())
    }

    /// PING, then every live node's record (for the doctor).
    pub async fn nodes(&self, seal: &Seal) -> redis::RedisResult<Vec<NodeRecord>> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").exec_async(&mut conn).await?;
        self.nodes_sealed(seal).await
    }

    /// Publishes `message` on `channel`.
    pub async fn publish(&self, channel: &str, message: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .exec_async(&mut conn)
            .await
    }

    /// A subscription to `channel` (its own connection).
    pub async fn subscribe(&self, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }

    /// This node leaves: its record and its claims go at once (not at their TTL).
    pub async fn leave(&self, node: &str, claimed: &BTreeSet<String>) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        for stream in claimed {
            self.release(stream, node).await?;
        }
        redis::pipe()
            .cmd("DEL")
            .arg(format!("{NODE_PREFIX}{node}"))
            .ignore()
            .cmd("SREM")
            .arg(NODES)
            .arg(node)
            .ignore()
            .exec_async(&mut conn)
            .await
    }

    /// The members of `set` (at most `max`, valid names only) with the values of their
    /// keys `prefix{member}`; members whose key is gone are pruned from the set. Values
    /// that are not UTF-8 or longer than [`MAX_VALUE`] are skipped.
    async fn read_set(
        &self,
        set: &str,
        prefix: &str,
        max: usize,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let members: Vec<Vec<u8>> = redis::cmd("SRANDMEMBER")
            .arg(set)
            .arg(max)
            .query_async(&mut conn)
            .await?;
        let mut names: Vec<String> = members
            .into_iter()
            .filter_map(|m| String::from_utf8(m).ok())
            .filter(|m| crate::streams::valid_stream_name(m))
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let gone: Vec<&String> = names
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        if !gone.is_empty() {
            redis::cmd("SREM")
                .arg(set)
                .arg(&gone)
                .exec_async(&mut conn)
                .await?;
        }
        Ok(names
            .iter()
            .zip(values)
            .filter_map(|(n, v)| {
                let v = v.filter(|v| v.len() <= MAX_VALUE)?;
                Some((n.clone(), String::from_utf8(v).ok()?))
            })
            .collect())
    }
}
