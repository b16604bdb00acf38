//! Sessions across nodes: what a node knows of the sessions its siblings hold, so that an
//! allocation landing on it (one TURNS name behind a load balancer) lives as long as its
//! session on another node, binds that node's offer, and closes when the session ends there.
//!
//! Nodes tell each other three things on the Redis channel [`CHANNEL`]:
//!
//! ```text
//! live  <node> <session>            the session offered on <node>: its allocations anywhere are Live
//! end   <node> <session>            it ended: every node closes its allocations (Ended)
//! alloc <node> <session> <relayed>  <node> holds an allocation of a sibling's session at <relayed>
//! ```
//!
//! [`SessionBook`] is the sans-I/O part: it parses messages and answers the relay's and the
//! registry's questions. Every map is bounded; the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use relay::core::Standing;

/// The Redis channel of session messages.
pub const CHANNEL: &str = "gateway:sessions";
/// Entries per map at most.
pub const MAX_ENTRIES: usize = 65_536;
/// How long an ended session is remembered (its credential cannot be older than
/// `TURN_CREDENTIAL_TTL`'s maximum, a day); a relayed address, until its offer comes.
const ENDED_MEMORY: Duration = Duration::from_secs(86_400);
const RELAYED_MEMORY: Duration = Duration::from_secs(60);
/// Longest message taken from the channel.
pub const MAX_MESSAGE: usize = 256;

/// One message on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The session offered on `node`.
    Live {
        /// The node.
        node: String,
        /// The session id.
        session: String,
    },
    /// The session ended on `node`.
    End {
        /// The node.
        node: String,
        /// The session id.
        session: String,
    },
    /// `node` holds an allocation of `session` (a sibling's) at `relayed`.
    Alloc {
        /// The node holding the allocation.
        node: String,
        /// The session id.
        session: String,
        /// The allocation's relayed address.
        relayed: SocketAddr,
    },
}

impl Message {
    /// The wire form.
    pub fn encode(&self) -> String {
        match self {
            Message::Live { node, session } => format!("live {node} {session}"),
            Message::End { node, session } => format!("end {node} {session}"),
            Message::Alloc {
                node,
                session,
                relayed,
            } => format!("alloc {node} {session} {relayed}"),
        }
    }

    /// Parses a message; anything malformed (too long, unknown verb, bad id) is `None`.
    pub fn parse(text: &str) -> Option<Message> {
        if text.len() > MAX_MESSAGE {
            return None;
        }
        let mut parts = text.split(' ');
        let (verb, node, session) = (parts.next()?, parts.next()?, parts.next()?);
        if !super::node::valid_node_id(node) || !crate::session::is_session_id(session) {
            return None;
        }
        let (node, session) = (node.to_owned(), session.to_owned());
        let m = match verb {
            "live" => Message::Live { node, session },
            "end" => Message::End { node, session },
            "alloc" => Message::Alloc {
                node,
                session,
                relayed: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(m)
    }

    /// The node that sent it.
    pub fn node(&self) -> &str {
        match self {
            Message::Live { node, .. }
            | Message::End { node, .. }
            | Message::Alloc { node, .. } => node,
        }
    }
}

/// A bounded map whose oldest entries go first.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, (V, Instant)>,
    order: VecDeque<(K, Instant)>,
}

impl<K: std::hash::Hash + Eq + Clone, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Bounded<K, V> {
    fn insert(&mut self, k: K, v: V, now: Instant) {
        self.map.insert(k.clone(), (v, now));
        self.order.push_back((k, now));
        while self.map.len() > MAX_ENTRIES || self.order.len() > 2 * MAX_ENTRIES {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, t)| *t == at) {
                self.map.remove(&old);
            }
        }
    }

    fn get(&self, k: &K, now: Instant, memory: Duration) -> Option<&V> {
        self.map
            .get(k)
            .filter(|(_, t)| now.saturating_duration_since(*t) < memory)
            .map(|(v, _)| v)
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// What a sibling's message did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heard {
    /// A session that ended: its allocations here must re-check their standing.
    pub ended: Option<String>,
    /// A relayed address now binds one of this node's sessions.
    pub bound: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct SessionBook {
    /// Siblings' sessions that offered: session → node.
    live: Bounded<String, String>,
    /// Sessions that offered and ended, here or on a sibling.
    ended: Bounded<String, ()>,
    /// This node's sessions that ended without offering (kept apart: anonymous config
    /// requests make many, and they must not push the offered ones out).
    ended_pending: Bounded<String, ()>,
    /// Relayed addresses siblings hold for this node's sessions: relayed → session.
    relayed: Bounded<SocketAddr, String>,
    /// This node's sessions announced live (their end is announced too).
    announced: Bounded<String, ()>,
}

impl SessionBook {
    /// The standing of `user`, a session id not live on this node: Live while a live
    /// sibling (`alive`) holds it, Ended once it ended anywhere, else Unknown (a sibling's
    /// session that has not offered yet, or whose node is gone: bounded lifetime).
    pub fn standing(&self, user: &str, now: Instant, alive: &dyn Fn(&str) -> bool) -> Standing {
        let user = user.to_owned();
        if self.ended.get(&user, now, ENDED_MEMORY).is_some()
            || self.ended_pending.get(&user, now, ENDED_MEMORY).is_some()
        {
            return Standing::Ended;
        }
        match self.live.get(&user, now, ENDED_MEMORY) {
            Some(node) if alive(node) => Standing::Live,
            _ => Standing::Unknown,
        }
    }

    /// The session of this node a sibling's allocation at `relayed` belongs to.
    pub fn user_of_relayed(&self, relayed: SocketAddr, now: Instant) -> Option<String> {
        self.relayed.get(&relayed, now, RELAYED_MEMORY).cloned()
    }

    /// A session of this node offered: returns the message to announce it.
    pub fn offered(&mut self, me: &str, session: &str, now: Instant) -> Message {
        self.announced.insert(session.to_owned(), (), now);
        Message::Live {
            node: me.to_owned(),
            session: session.to_owned(),
        }
    }

    /// A session of this node ended: remembered as ended; returns the message to announce
    /// it when it had been announced live (a session that never offered is nobody's
    /// business but this node's).
    pub fn ended(&mut self, me: &str, session: &str, now: Instant) -> Option<Message> {
        if self.announced.remove(&session.to_owned()).is_none() {
            self.ended_pending.insert(session.to_owned(), (), now);
            return None;
        }
        self.ended.insert(session.to_owned(), (), now);
        Some(Message::End {
            node: me.to_owned(),
            session: session.to_owned(),
        })
    }

    /// A sibling's message (`local`: whether a session is live on this node).
    pub fn receive(&mut self, m: Message, local: &dyn Fn(&str) -> bool, now: Instant) -> Heard {
        match m {
            Message::Live { node, session } => {
                self.live.insert(session, node, now);
                Heard::default()
            }
            Message::End { session, .. } => {
                self.live.remove(&session);
                self.ended.insert(session.clone(), (), now);
                Heard {
                    ended: Some(session),
                    bound: false,
                }
            }
            Message::Alloc {
                session, relayed, ..
            } => {
                // Only this node's sessions: the others' are their nodes' business.
                let bound = local(&session);
                if bound {
                    self.relayed.insert(relayed, session, now);
                }
                Heard { ended: None, bound }
            }
        }
    }

    /// Entries held (for watching that they stay bounded).
    pub fn len(&self) -> usize {
        self.live.len()
            + self.ended.len()
            + self.ended_pending.len()
            + self.relayed.len()
            + self.announced.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "gws-0123456789abcdef0123456789abcdef";

    #[test]
    fn messages_round_trip_and_malformed_ones_are_dropped() {
        let msgs = [
            Message::Live {
                node: "n1".into(),
                session: S.into(),
            },
            Message::End {
                node: "n1".into(),
                session: S.into(),
            },
            Message::Alloc {
                node: "n2".into(),
                session: S.into(),
                relayed: "127.0.0.3:61000".parse().unwrap(),
            },
        ];
        for m in msgs {
            assert_eq!(Message::parse(&m.encode()), Some(m.clone()));
        }
        for bad in [
            "",
            "live",
            "live n1",
            "live n1 not-a-session",
            "kill n1 gws-0123456789abcdef0123456789abcdef",
            "live n@1 gws-0123456789abcdef0123456789abcdef",
            "live n1 gws-0123456789abcdef0123456789abcdef extra",
            "alloc n1 gws-0123456789abcdef0123456789abcdef nowhere",
            &"x".repeat(MAX_MESSAGE + 1),
            "live n1 gws-0123456789abcdef0123456789abcdeé",
        ] {
            assert_eq!(Message::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_siblings_session_is_live_until_it_ends_anywhere() {
        let mut book = SessionBook::default();
        let now = Instant::now();
        let none = |_: &str| false;
        let up = |n: &str| n == "n1";
        assert_eq!(
            book.standing(S, now, &up),
            Standing::Unknown,
            "not offered yet"
        );
        let live = Message::Live {
            node: "n1".into(),
            session: S.into(),
        };
        assert_eq!(book.receive(live.clone(), &none, now), Heard::default());
        assert_eq!(book.standing(S, now, &up), Standing::Live);
        assert_eq!(
            book.standing(S, now, &none),
            Standing::Unknown,
            "its node is gone: bounded"
        );
        let end = Message::End {
            node: "n1".into(),
            session: S.into(),
        };
        assert_eq!(
            book.receive(end, &none, now).ended.as_deref(),
            Some(S),
            "wake its allocations"
        );
        assert_eq!(book.standing(S, now, &up), Standing::Ended);
        // A late "live" does not bring an ended session back.
        book.receive(live, &none, now);
        assert_eq!(book.standing(S, now, &up), Standing::Ended);
    }

    #[test]
    fn this_nodes_sessions_are_announced_and_their_relayed_addresses_bind() {
        let mut book = SessionBook::default();
        let now = Instant::now();
        let relayed: SocketAddr = "127.0.0.3:61000".parse().unwrap();
        let alloc = Message::Alloc {
            node: "n2".into(),
            session: S.into(),
            relayed,
        };
        assert!(!book.receive(alloc.clone(), &|_| false, now).bound);
        assert_eq!(book.user_of_relayed(relayed, now), None, "not ours");
        assert!(book.receive(alloc, &|s| s == S, now).bound);
        assert_eq!(book.user_of_relayed(relayed, now).as_deref(), Some(S));
        assert_eq!(
            book.user_of_relayed(relayed, now + RELAYED_MEMORY),
            None,
            "forgotten"
        );
        // A pending session that ends is not announced (but ended here); an offered one is.
        let pending = "gws-ffffffffffffffffffffffffffffffff";
        assert_eq!(book.ended("n1", pending, now), None);
        assert_eq!(book.standing(pending, now, &|_| true), Standing::Ended);
        assert_eq!(book.offered("n1", S, now).encode(), format!("live n1 {S}"));
        assert_eq!(
            book.ended("n1", S, now).map(|m| m.encode()),
            Some(format!("end n1 {S}"))
        );
        assert_eq!(
            book.standing(S, now, &|_| true),
            Standing::Ended,
            "ended here"
        );
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = SessionBook::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 100 {
            book.receive(
                Message::Live {
                    node: "n1".into(),
                    session: format!("gws-{i:032x}"),
                },
                &|_| false,
                now,
            );
        }
        assert_eq!(book.len(), MAX_ENTRIES);
    }
}
