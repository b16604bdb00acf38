//! The registry: the one owner of session state. A thin shell around [`SessionTable`] that
//! does what the table decides: ask the relay who made an offer's relay candidates, close a
//! finished session's allocations (through the relay's per-user index, so only that user's
//! connections wake) and its media, and run the task that sweeps idle sessions and hears
//! the media engine's session ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use relay::core::{Shared as RelayShared, Standing, UserDirectory};

use super::id::{is_session_id, Source};
use super::table::{Binding, Ended, Limits, OfferRequest, SessionTable, TableError};
use crate::media::whip::WhipIngest;
use crate::media::{MediaError, MediaHandle, SessionEnded};

/// How often pending sessions are checked for idleness and closed allocations.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Relay candidates looked at per offer (an offer has a handful; the body is bounded too).
const MAX_RELAY_CANDIDATES: usize = 16;

/// Why an offer was not answered.
#[derive(Debug)]
pub enum OfferError {
    /// The table refused it (capacity, unknown session).
    Table(TableError),
    /// The media engine refused it (bad SDP, no common codec, engine full).
    Media(MediaError),
}

/// An answered offer.
#[derive(Debug)]
pub struct Answered {
    /// The session (its id is the secret that ends or restarts it).
    pub session: String,
    /// The SDP answer.
    pub answer: String,
    /// How the offer found its session.
    pub binding: Binding,
}

/// See the module docs.
pub struct Registry {
    table: Mutex<SessionTable>,
    relay: Arc<RelayShared>,
    media: MediaHandle,
    /// Cluster mode: the sibling nodes' view of sessions ([`Siblings`]).
    siblings: std::sync::OnceLock<Arc<dyn Siblings>>,
}

/// What the registry tells, and asks, the other nodes of a gateway cluster: a session id
/// not live here may be a sibling's, whose allocations land here behind a shared TURNS
/// name. Implemented by [`crate::cluster::Cluster`]; calls must not block.
pub trait Siblings: Send + Sync {
    /// The standing of `user`, a session id not live on this node.
    fn standing(&self, user: &str) -> Standing;
    /// The session of this node that a sibling's allocation at `relayed` belongs to.
    fn user_of_relayed(&self, relayed: SocketAddr) -> Option<String>;
    /// A session of this node offered.
    fn offered(&self, session: &str);
    /// A session of this node ended.
    fn ended(&self, session: &str);
    /// This node's relay holds an allocation of `user` (a session id not live here) at
    /// `relayed`.
    fn allocated(&self, user: &str, relayed: SocketAddr);
    /// Notified whenever a sibling tells of an allocation of one of this node's sessions
    /// (an offer may come before the news of its relay candidate's allocation).
    fn allocations_heard(&self) -> Arc<tokio::sync::Notify>;
    /// Whether any other node is live (else no sibling holds an allocation to wait for).
    fn has_siblings(&self) -> bool;
}

/// How long an offer whose relay candidates are no allocation known here waits to hear of
/// them from a sibling node (cluster mode): pub/sub delivers in about a millisecond, a
/// browser offers right after its allocation succeeded.
const SIBLING_ALLOCATION_WAIT: Duration = Duration::from_millis(500);

/// What the relay sees of the registry: whether a TURN user is a live session.
struct Directory(Weak<Registry>);

impl UserDirectory for Directory {
    fn standing(&self, user: &str) -> Standing {
        if !is_session_id(user) {
            return Standing::Unknown;
        }
        match self.0.upgrade() {
            Some(r) if r.table().contains(user) => Standing::Live,
            Some(r) => r
                .siblings
                .get()
                .map_or(Standing::Ended, |s| s.standing(user)),
            None => Standing::Ended,
        }
    }

    fn allocated(&self, user: &str, relayed: SocketAddr) {
        if !is_session_id(user) {
            return;
        }
        let Some(r) = self.0.upgrade() else { return };
        if let Some(s) = r.siblings.get() {
            if !r.table().contains(user) {
                s.allocated(user, relayed);
            }
        }
    }
}

impl Registry {
    /// A registry with `limits`, the media engine, and the relay state that `make_relay`
    /// builds around the registry's [`UserDirectory`] (the relay asks the registry; the
    /// registry holds the relay; the directory's weak reference keeps that from a cycle).
    pub fn new(
        limits: Limits,
        media: MediaHandle,
        make_relay: impl FnOnce(Arc<dyn UserDirectory>) -> Arc<RelayShared>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|weak| Registry {
            table: Mutex::new(SessionTable::new(limits)),
            relay: make_relay(Arc::new(Directory(weak.clone()))),
            media,
            siblings: std::sync::OnceLock::new(),
        })
    }

    /// Cluster mode: sessions are known to, and from, the sibling nodes (once; later
    /// calls do nothing).
    pub fn join(&self, siblings: Arc<dyn Siblings>) {
        let _ = self.siblings.set(siblings);
    }

    fn table(&self) -> MutexGuard<'_, SessionTable> {
        // The table's operations leave it consistent at every step; a panic elsewhere
        // while it was held must not stop every viewer.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay state (built around this registry).
    pub fn relay(&self) -> &Arc<RelayShared> {
        &self.relay
    }

    /// The media engine.
    pub fn media(&self) -> &MediaHandle {
        &self.media
    }

    /// Whether `id` is a live session.
    pub fn contains(&self, id: &str) -> bool {
        self.table().contains(id)
    }

    /// The media session of `id` in the engine, once it offered.
    pub fn media_of(&self, id: &str) -> Option<String> {
        self.table().media_of(id)
    }

    /// `(live sessions, pending sessions, viewer slots used)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.table();
        (t.len(), t.pending(), t.slots_used())
    }

    /// A new pending session for a config request from `ip`.
    pub fn hand_out(&self, ip: Option<IpAddr>) -> Result<String, TableError> {
        let relay = &self.relay;
        let (id, evicted) = self
            .table()
            .hand_out(ip.map(Source::from), Instant::now(), &|u| {
                relay.allocations_of(u) > 0
            })?;
        for e in evicted {
            self.finish(e);
        }
        Ok(id)
    }

    /// Answers an offer: binds it to its session (by the relay candidates in `sdp`, by
    /// `named`, or a new session), replaces what it replaces, and asks the engine. A
    /// request dropped half-way (client gone) gives its slot back all the same.
    pub async fn offer(
        self: &Arc<Self>,
        stream: &str,
        named: Option<&str>,
        client_ids: bool,
        sdp: &str,
        ip: Option<IpAddr>,
    ) -> Result<Answered, OfferError> {
        self.answer(Role::Viewer(stream), named, client_ids, sdp, ip)
            .await
    }

    /// Answers a WHIP publisher's offer for the stream of `whip`, bound as
    /// [`Registry::offer`] binds a viewer's (`named`: one of our session ids), but taking no
    /// viewer slot; the engine refuses a second publisher of the stream.
    pub async fn publish(
        self: &Arc<Self>,
        whip: Arc<WhipIngest>,
        named: Option<&str>,
        sdp: &str,
        ip: Option<IpAddr>,
    ) -> Result<Answered, OfferError> {
        self.answer(Role::Publisher(whip), named, false, sdp, ip)
            .await
    }

    async fn answer(
        self: &Arc<Self>,
        role: Role<'_>,
        named: Option<&str>,
        client_ids: bool,
        sdp: &str,
        ip: Option<IpAddr>,
    ) -> Result<Answered, OfferError> {
        let candidate_users = self.candidate_users(sdp, named).await;
        let req = OfferRequest {
            named,
            client_ids,
            candidate_users,
            source: ip.map(Source::from),
            publisher: matches!(role, Role::Publisher(_)),
        };
        let plan = self
            .table()
            .begin_offer(&req, Instant::now())
            .map_err(OfferError::Table)?;
        for e in plan.ended {
            self.finish(e);
        }
        if let Some(old) = plan.replaced_media {
            self.close_media(old);
        }
        let mut ticket = OfferTicket {
            registry: self.clone(),
            media: plan.media.clone(),
            done: false,
        };
        let answer = match &role {
            Role::Viewer(stream) => {
                self.media
                    .accept_offer_for(stream, sdp, plan.media.clone())
                    .await
            }
            Role::Publisher(whip) => {
                self.media
                    .accept_publish(whip.clone(), sdp, plan.media.clone())
                    .await
            }
        };
        ticket.done = true;
        match answer {
            Ok(answer) => {
                self.table().finish_offer(&plan.media, true, Instant::now());
                if let Some(s) = self.siblings.get() {
                    s.offered(&plan.session);
                }
                match &role {
                    Role::Viewer(stream) => {
                        tracing::info!(session = %plan.session, stream, binding = ?plan.binding, "session offered")
                    }
                    Role::Publisher(_) => {
                        tracing::info!(session = %plan.session, binding = ?plan.binding, "WHIP publisher offered")
                    }
                }
                Ok(Answered {
                    session: plan.session,
                    answer,
                    binding: plan.binding,
                })
            }
            Err(e) => {
                let ended = self
                    .table()
                    .finish_offer(&plan.media, false, Instant::now());
                if let Some(e) = ended {
                    self.finish(e);
                }
                Err(OfferError::Media(e))
            }
        }
    }

    /// The users whose allocations hold the relay candidates of `sdp`: this node's relay
    /// knows its own; in cluster mode a sibling's allocation of one of this node's sessions
    /// is told by the sibling, waited for a moment when not heard of yet (not when the
    /// offer names a live session of this node, or when no sibling is live).
    async fn candidate_users(&self, sdp: &str, named: Option<&str>) -> Vec<String> {
        let relayed: Vec<SocketAddr> = relay_candidates(sdp).collect();
        let find = |s: Option<&Arc<dyn Siblings>>| -> (Vec<String>, bool) {
            let mut missing = false;
            let users = relayed
                .iter()
                .filter_map(|a| {
                    let u = self
                        .relay
                        .user_of_relayed(*a)
                        .or_else(|| s.and_then(|s| s.user_of_relayed(*a)));
                    missing |= u.is_none();
                    u
                })
                .collect();
            (users, missing)
        };
        let Some(siblings) = self.siblings.get() else {
            return find(None).0;
        };
        if !siblings.has_siblings() || named.is_some_and(|n| self.table().contains(n)) {
            return find(Some(siblings)).0;
        }
        let heard = siblings.allocations_heard();
        let deadline = tokio::time::Instant::now() + SIBLING_ALLOCATION_WAIT;
        loop {
            let news = heard.notified();
            let (users, missing) = find(Some(siblings));
            if !users.is_empty() || !missing {
                return users;
            }
            if tokio::time::timeout_at(deadline, news).await.is_err() {
                return users;
            }
        }
    }

    /// Ends `id` (WHEP DELETE by the holder of its id, shutdown). Returns whether it was
    /// live.
    pub fn end(&self, id: &str, reason: &'static str) -> bool {
        let ended = self.table().end(id, reason);
        match ended {
            Some(e) => {
                self.finish(e);
                true
            }
            None => false,
        }
    }

    /// Acts on a session that ended in the table: its TURN user now stands as ended, so
    /// waking its connections closes its allocations; its media session is closed.
    fn finish(&self, e: Ended) {
        let had_allocations = self.relay.wake_user(&e.id);
        if let Some(s) = self.siblings.get() {
            s.ended(&e.id);
        }
        tracing::info!(session = %e.id, reason = e.reason, had_allocations, "session ended");
        if let Some(m) = e.media {
            self.close_media(m);
        }
    }

    fn close_media(&self, key: String) {
        let media = self.media.clone();
        tokio::spawn(async move {
            match media.close(&key).await {
                Ok(()) | Err(MediaError::UnknownSession(_)) => {}
                Err(e) => tracing::debug!(media = %key, error = %e, "closing media session"),
            }
        });
    }

    /// Starts the task that sweeps pending sessions and hears the engine's session ends.
    /// It holds the registry weakly and stops with it.
    pub fn spawn_tasks(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let ended = self.media.take_ended();
        tokio::spawn(run(weak, ended));
    }
}

async fn run(
    weak: Weak<Registry>,
    mut ended: Option<tokio::sync::mpsc::UnboundedReceiver<SessionEnded>>,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(r) = weak.upgrade() else { return };
                let relay = r.relay.clone();
                let done = r.table().sweep(Instant::now(), &|u| relay.allocations_of(u));
                for e in done {
                    r.finish(e);
                }
            }
            e = async {
                match ended.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(e) = e else { ended = None; continue };
                let Some(r) = weak.upgrade() else { return };
                let reason = end_reason(&e.reason);
                let done = r.table().media_ended(&e.session_id, reason);
                if let Some(done) = done {
                    r.finish(Ended { media: None, ..done });
                }
            }
        }
    }
}

fn end_reason(r: &crate::media::EndReason) -> &'static str {
    use crate::media::EndReason::*;
    match r {
        Closed => "media closed",
        PeerClosed => "peer closed the connection",
        IceDisconnected => "ICE consent lost (peer gone)",
        ConnectTimeout => "ICE/DTLS did not connect in time",
        Failed(_) => "DTLS/SRTP failure",
        TakenOver => "a new WHIP publisher took the stream over",
    }
}

/// What an offer is for.
enum Role<'a> {
    /// A viewer of the stream.
    Viewer(&'a str),
    /// The publisher of a WHIP stream.
    Publisher(Arc<WhipIngest>),
}

/// Gives the slot back if the offer request is dropped before the engine answered.
struct OfferTicket {
    registry: Arc<Registry>,
    media: String,
    done: bool,
}

impl Drop for OfferTicket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let ended = self
            .registry
            .table()
            .finish_offer(&self.media, false, Instant::now());
        if let Some(e) = ended {
            self.registry.finish(e);
        }
        // The engine may have taken the session before the request went away.
        self.registry.close_media(std::mem::take(&mut self.media));
        tracing::debug!("offer abandoned by its client; slot given back");
    }
}

/// The relayed addresses of the `typ relay` candidates in an SDP (at most a few).
pub fn relay_candidates(sdp: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_ascii_whitespace().take(8).collect();
            match f.as_slice() {
                [_, _, _, _, ip, port, "typ", "relay"] => {
                    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
                }
                _ => None,
            }
        })
        .take(MAX_RELAY_CANDIDATES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_candidates_are_read_from_the_offer() {
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2122260223 192.168.1.5 54321 typ host generation 0\r\n\
            a=candidate:2 1 udp 41885439 10.213.0.1 40002 typ relay raddr 10.213.0.2 rport 5 generation 0\r\n\
            a=candidate:3 1 udp 41885439 2001:db8::1 40004 typ relay raddr :: rport 0\r\n\
            a=candidate:bad\r\n\
            a=candidate:4 1 udp 1 x.local 9 typ relay\r\n";
        let got: Vec<SocketAddr> = relay_candidates(sdp).collect();
        assert_eq!(
            got,
            vec![
                "10.213.0.1:40002".parse().unwrap(),
                "[2001:db8::1]:40004".parse().unwrap()
            ]
        );
        let many = "a=candidate:2 1 udp 1 10.0.0.1 4 typ relay\r\n".repeat(100);
        assert_eq!(relay_candidates(&many).count(), MAX_RELAY_CANDIDATES);
    }
}
