//! The Redis shell of cluster mode: what a node writes (its record, the streams it is the
//! origin of) and reads (every live node, every stream's origin) each heartbeat.
//!
//! Keys, each with a TTL the heartbeat renews, so a node that dies leaves no trace past
//! [`NODE_TTL`]:
//!
//! ```text
//! gateway:node:{id}       JSON NodeRecord
//! gateway:stream:{name}   the id of the stream's origin node (set if absent, renewed by its holder)
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::node::NodeRecord;
use super::view::{MAX_NODES, MAX_STREAMS};

/// How long a node's record and its streams' claims live without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How often a node renews them (and reads the others').
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A Redis command's longest wait: a slow Redis delays the directory, never a viewer.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1500);

const NODE_PREFIX: &str = "gateway:node:";
const STREAM_PREFIX: &str = "gateway:stream:";
/// Keys read per SCAN round, and rounds at most.
const SCAN_COUNT: usize = 512;
const SCAN_ROUNDS: usize = 64;

/// Claims a stream for a node: renews the claim if the node holds it, takes it if nobody
/// does; answers 1, or the id of the node that holds it.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
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

    /// Claims `stream` for `node` ([`CLAIM`]).
    pub async fn claim(&self, stream: &str, node: &str) -> redis::RedisResult<Claim> {
        let mut conn = self.conn.clone();
        let v: redis::Value = self
            .claim
            .key(format!("{STREAM_PREFIX}{stream}"))
            .arg(node)
            .arg(NODE_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match v {
            redis::Value::Int(1) => Claim::Held,
            other => Claim::HeldBy(redis::from_redis_value::<String>(other).unwrap_or_default()),
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

    /// One heartbeat: writes `record`, claims the streams `live` here and releases those of
    /// `claimed` no longer live (updating `claimed`), then reads every node and origin.
    pub async fn heartbeat(
        &self,
        record: &NodeRecord,
        live: &[String],
        claimed: &mut BTreeSet<String>,
    ) -> redis::RedisResult<Snapshot> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(record).unwrap_or_default();
        redis::cmd("SET")
            .arg(format!("{NODE_PREFIX}{}", record.id))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .exec_async(&mut conn)
            .await?;
        let mut snapshot = Snapshot::default();
        for stream in live {
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
        let gone: Vec<String> = claimed
            .iter()
            .filter(|s| !live.contains(s))
            .cloned()
            .collect();
        for stream in gone {
            self.release(&stream, &record.id).await?;
            claimed.remove(&stream);
        }
        for (_, json) in self.read_prefix(NODE_PREFIX, MAX_NODES).await? {
            if let Ok(n) = serde_json::from_str::<NodeRecord>(&json) {
                snapshot.nodes.push(n);
            }
        }
        snapshot.origins = self.read_prefix(STREAM_PREFIX, MAX_STREAMS).await?;
        Ok(snapshot)
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

    /// PING, then every live node's record (for the doctor).
    pub async fn nodes(&self) -> redis::RedisResult<Vec<NodeRecord>> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").exec_async(&mut conn).await?;
        Ok(self
            .read_prefix(NODE_PREFIX, MAX_NODES)
            .await?
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str(&json).ok())
            .collect())
    }

    /// This node leaves: its record and its claims go at once (not at their TTL).
    pub async fn leave(&self, node: &str, claimed: &BTreeSet<String>) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        for stream in claimed {
            self.release(stream, node).await?;
        }
        redis::cmd("DEL")
            .arg(format!("{NODE_PREFIX}{node}"))
            .exec_async(&mut conn)
            .await
    }

    /// Every key under `prefix` (at most `max`) with its value, suffix first.
    async fn read_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> redis::RedisResult<Vec<(String, String)>> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..SCAN_ROUNDS {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= max {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(max);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v?)))
            .collect())
    }
}
