//! The sans-I/O session table: every viewer session from its first request to its end, the
//! viewer slots, the bounds on sessions that have not offered, and the rules that bind an
//! offer to a session. No clock, no socket, no lock: time comes in as an `Instant`, what
//! the relay knows comes in as arguments, and every session that ends comes out as an
//! [`Ended`] for the shell to act on (close its allocations, close its media).
//!
//! A session is *pending* from an ICE config request (or WHEP `OPTIONS`) until it offers;
//! pending sessions cost no viewer slot, are bounded per source and in total (the oldest
//! pending session that holds no allocation makes room for a new one), and end after the
//! idle timeout unless their TURN user holds an allocation. An offer takes a slot; every
//! path that ends or abandons it gives the slot back.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::id::{is_session_id, new_id, Source};

/// Bounds of the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sessions that offered (viewer slots), `MAX_VIEWERS`.
    pub max_viewers: usize,
    /// Pending sessions in total.
    pub max_pending: usize,
    /// Pending sessions per source (IPv4 address, IPv6 /64).
    pub max_pending_per_source: usize,
    /// A pending session whose user holds no allocation ends after this.
    pub idle: Duration,
}

/// Why a request could not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// Every viewer slot is taken.
    Full(usize),
    /// Too many pending sessions from this source hold allocations to make room.
    SourceBusy(usize),
    /// Too many pending sessions in total hold allocations to make room.
    Busy(usize),
    /// The client named a session id (`X-Session-Id`) that is not live.
    Unknown,
}

/// A session that ended, for the shell: close its allocations and its media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The session (and TURN user).
    pub id: String,
    /// Its media session in the engine, if it had one.
    pub media: Option<String>,
    /// Why, for logs.
    pub reason: &'static str,
}

/// How an offer found its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A pending session whose TURN user made the relay candidates in the offer.
    Candidate,
    /// A pending session named by its id (`sessionId` echoed as `webrtc_id`, `X-Session-Id`).
    Named,
    /// A re-offer of a session that already has media (the old media is replaced).
    Renewed,
    /// No session to bind to: a new one.
    New,
}

/// What an offer request says about itself.
#[derive(Debug, Clone, Default)]
pub struct OfferRequest<'a> {
    /// The id the client sent (`webrtc_id` or `X-Session-Id`), if any.
    pub named: Option<&'a str>,
    /// Whether `named` may be a client-chosen id (the Geti/FastRTC `webrtc_id`) rather
    /// than a session id of ours (WHEP's `X-Session-Id` must be ours).
    pub client_ids: bool,
    /// The TURN users whose allocations made the relay candidates in the offer.
    pub candidate_users: Vec<String>,
    /// Where the request comes from.
    pub source: Option<Source>,
    /// A WHIP publisher's offer: it takes no viewer slot (its stream takes one publisher,
    /// which the media engine enforces).
    pub publisher: bool,
}

/// What the shell must do for an accepted offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPlan {
    /// The session the offer belongs to.
    pub session: String,
    /// The media session id to create in the engine (unique per offer).
    pub media: String,
    /// How the session was found.
    pub binding: Binding,
    /// Other sessions this offer ended (replaced), for the shell to finish.
    pub ended: Vec<Ended>,
    /// The old media session of a renewed session, to close.
    pub replaced_media: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Handed ICE servers, no offer yet.
    Pending,
    /// An offer is being answered, or was: the session holds a viewer slot.
    Offered {
        /// Generation of its current media session.
        media: u64,
        /// Whether the engine accepted that media session.
        answered: bool,
        /// Whether the session was pending before this offer (a failed offer returns it
        /// there), as opposed to made for it or renewed (a failed offer ends it).
        was_pending: bool,
    },
}

#[derive(Debug)]
struct Session {
    source: Option<Source>,
    created: Instant,
    alias: Option<String>,
    state: State,
    /// Seen holding an allocation while pending.
    held_allocation: bool,
    /// Offered as a WHIP publisher: holds no viewer slot.
    publisher: bool,
}

/// The table. One owner (the registry) holds it behind one lock.
#[derive(Debug)]
pub struct SessionTable {
    limits: Limits,
    sessions: HashMap<String, Session>,
    /// Client-chosen ids (`webrtc_id`) of sessions that offered.
    aliases: HashMap<String, String>,
    /// Pending sessions, oldest first (entries of sessions no longer pending are skipped).
    pending_order: VecDeque<String>,
    pending_per_source: HashMap<Option<Source>, usize>,
    pending: usize,
    slots: usize,
    next_media: u64,
}

fn media_key(id: &str, generation: u64) -> String {
    format!("{id}~{generation}")
}

/// Splits a media session id into its session id and generation.
fn parse_media_key(key: &str) -> Option<(&str, u64)> {
    let (id, g) = key.rsplit_once('~')?;
    Some((id, g.parse().ok()?))
}

impl SessionTable {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            aliases: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_per_source: HashMap::new(),
            pending: 0,
            slots: 0,
            next_media: 0,
        }
    }

    /// Whether `id` is a live session.
    pub fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// The current media session of `id`, once it offered.
    pub fn media_of(&self, id: &str) -> Option<String> {
        match self.sessions.get(id)?.state {
            State::Offered { media, .. } => Some(media_key(id, media)),
            State::Pending => None,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Viewer slots taken (sessions that offered).
    pub fn slots_used(&self) -> usize {
        self.slots
    }

    /// Sessions waiting for their offer.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A new pending session for a config request from `source`. To stay within the
    /// bounds it may end the oldest pending sessions (of that source first) whose users hold
    /// no allocation (`holds(user)`); those come back for the shell.
    pub fn hand_out(
        &mut self,
        source: Option<Source>,
        now: Instant,
        holds: &dyn Fn(&str) -> bool,
    ) -> Result<(String, Vec<Ended>), TableError> {
        let mut ended = Vec::new();
        let per_source = self.pending_per_source.get(&source).copied().unwrap_or(0);
        if per_source >= self.limits.max_pending_per_source {
            let victim = self
                .oldest_pending(|s| s.source == source, holds)
                .ok_or(TableError::SourceBusy(self.limits.max_pending_per_source))?;
            ended.extend(self.end(
                &victim,
                "evicted: too many pending sessions from its source",
            ));
        }
        if self.pending >= self.limits.max_pending {
            let victim = self
                .oldest_pending(|_| true, holds)
                .ok_or(TableError::Busy(self.limits.max_pending))?;
            ended.extend(self.end(&victim, "evicted: too many pending sessions"));
        }
        let id = new_id();
        self.insert_pending(id.clone(), source, now);
        Ok((id, ended))
    }

    fn insert_pending(&mut self, id: String, source: Option<Source>, now: Instant) {
        self.sessions.insert(
            id.clone(),
            Session {
                source,
                created: now,
                alias: None,
                state: State::Pending,
                held_allocation: false,
                publisher: false,
            },
        );
        self.pending_order.push_back(id);
        self.pending += 1;
        *self.pending_per_source.entry(source).or_insert(0) += 1;
        self.compact_order();
    }

    /// The order queue keeps entries of sessions that stopped pending; drop them once they
    /// outnumber the live ones, so it stays O(pending).
    fn compact_order(&mut self) {
        if self.pending_order.len() > 2 * self.pending + 64 {
            let sessions = &self.sessions;
            self.pending_order
                .retain(|id| sessions.get(id).is_some_and(|s| s.state == State::Pending));
        }
    }

    fn oldest_pending(
        &self,
        pick: impl Fn(&Session) -> bool,
        holds: &dyn Fn(&str) -> bool,
    ) -> Option<String> {
        self.pending_order
            .iter()
            .filter(|id| {
                self.sessions
                    .get(id.as_str())
                    .is_some_and(|s| s.state == State::Pending && pick(s))
            })
            .find(|id| !holds(id))
            .cloned()
    }

    fn leave_pending(&mut self, source: Option<Source>) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(n) = self.pending_per_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_per_source.remove(&source);
            }
        }
    }

    /// Ends `id`: the session disappears (its TURN user then stands as ended), its slot and
    /// alias are given back. `None` if it was not live.
    pub fn end(&mut self, id: &str, reason: &'static str) -> Option<Ended> {
        let s = self.sessions.remove(id)?;
        if let Some(a) = &s.alias {
            if self.aliases.get(a).map(String::as_str) == Some(id) {
                self.aliases.remove(a);
            }
        }
        let media = match s.state {
            State::Pending => {
                self.leave_pending(s.source);
                None
            }
            State::Offered { media, .. } => {
                if !s.publisher {
                    self.slots = self.slots.saturating_sub(1);
                }
                Some(media_key(id, media))
            }
        };
        Some(Ended {
            id: id.to_owned(),
            media,
            reason,
        })
    }

    /// The media session `key` ended in the engine: ends its session if that media is
    /// still the session's current one (a replaced media session ending is no news).
    pub fn media_ended(&mut self, key: &str, reason: &'static str) -> Option<Ended> {
        let (id, generation) = parse_media_key(key)?;
        match self.sessions.get(id)?.state {
            State::Offered { media, .. } if media == generation => self.end(id, reason),
            _ => None,
        }
    }

    /// Binds an offer to its session (see the module docs for the rules) and takes a
    /// viewer slot for it, unless it renews a session that holds one.
    pub fn begin_offer(
        &mut self,
        req: &OfferRequest<'_>,
        now: Instant,
    ) -> Result<OfferPlan, TableError> {
        let mut ended = Vec::new();
        // The session whose credential made the offer's relay candidates.
        let by_candidate = req
            .candidate_users
            .iter()
            .find(|u| self.sessions.contains_key(u.as_str()))
            .cloned();
        // The session the client names: one of our ids, or (Geti) its own id.
        let named_own = req
            .named
            .filter(|n| self.sessions.contains_key(*n))
            .map(str::to_owned);
        let named_alias = match (&named_own, req.named) {
            (None, Some(n)) if req.client_ids => self.aliases.get(n).cloned(),
            _ => None,
        };
        if named_own.is_none() && named_alias.is_none() && !req.client_ids && req.named.is_some() {
            return Err(TableError::Unknown);
        }
        let named = named_own.clone().or(named_alias);

        let mut target: Option<(String, Binding)> = None;
        if let Some(c) = &by_candidate {
            if self.is_pending(c) {
                target = Some((c.clone(), Binding::Candidate));
            } else if named.as_deref() == Some(c.as_str()) {
                target = Some((c.clone(), Binding::Renewed));
            }
        }
        if target.is_none() {
            if let Some(n) = &named_own {
                target = Some((
                    n.clone(),
                    if self.is_pending(n) {
                        Binding::Named
                    } else {
                        Binding::Renewed
                    },
                ));
            }
        }
        // Another session the client named, that offered: it is replaced. Our own id is a
        // secret, so naming it is enough; a client-chosen id is not, so only a request from
        // the same source ends that session; from elsewhere the id moves to the new session
        // and the old one lives on until its own end (ICE consent, DTLS close).
        let target_id = target.as_ref().map(|(t, _)| t.clone());
        if let Some(old) = named.filter(|o| Some(o) != target_id.as_ref()) {
            let (offered, same_source) = self
                .sessions
                .get(&old)
                .map(|s| (s.state != State::Pending, s.source == req.source))
                .unwrap_or((false, false));
            if offered && (named_own.is_some() || same_source) {
                ended.extend(self.end(&old, "replaced by a new offer"));
            } else if offered {
                if let Some(s) = self.sessions.get_mut(&old) {
                    s.alias = None;
                }
            }
        }

        let (id, binding) = match target {
            Some(t) => t,
            None => {
                if !req.publisher && self.slots >= self.limits.max_viewers {
                    return Err(TableError::Full(self.limits.max_viewers));
                }
                let id = new_id();
                self.sessions.insert(
                    id.clone(),
                    Session {
                        source: req.source,
                        created: now,
                        alias: None,
                        state: State::Pending,
                        held_allocation: false,
                        publisher: false,
                    },
                );
                // Not counted as pending: it offers right now.
                (id, Binding::New)
            }
        };
        let generation = self.next_media;
        self.next_media += 1;
        let Some(s) = self.sessions.get(&id) else {
            return Err(TableError::Unknown);
        };
        let (state, replaced_media) = match s.state {
            State::Pending => {
                if !req.publisher && self.slots >= self.limits.max_viewers {
                    if binding == Binding::New {
                        self.sessions.remove(&id);
                    }
                    return Err(TableError::Full(self.limits.max_viewers));
                }
                if binding != Binding::New {
                    self.leave_pending(s.source);
                }
                if !req.publisher {
                    self.slots += 1;
                }
                (
                    State::Offered {
                        media: generation,
                        answered: false,
                        was_pending: binding != Binding::New,
                    },
                    None,
                )
            }
            State::Offered { media, .. } => (
                State::Offered {
                    media: generation,
                    answered: false,
                    was_pending: false,
                },
                Some(media_key(&id, media)),
            ),
        };
        let alias = req
            .named
            .filter(|n| req.client_ids && !is_session_id(n) && !self.sessions.contains_key(*n))
            .map(str::to_owned);
        if let Some(s) = self.sessions.get_mut(&id) {
            // A renewed session keeps its role (and its slot accounting).
            if replaced_media.is_none() {
                s.publisher = req.publisher;
            }
            s.state = state;
            if let Some(a) = &alias {
                s.alias = Some(a.clone());
            }
        }
        if let Some(a) = alias {
            self.aliases.insert(a, id.clone());
        }
        Ok(OfferPlan {
            media: media_key(&id, generation),
            session: id,
            binding,
            ended,
            replaced_media,
        })
    }

    fn is_pending(&self, id: &str) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|s| s.state == State::Pending)
    }

    /// The offer of media session `key` was answered (`ok`) or failed / was abandoned. A
    /// failed offer of a session that was pending returns it to pending (its slot given
    /// back); one made for the offer, or renewing media, ends it. Stale keys do nothing.
    pub fn finish_offer(&mut self, key: &str, ok: bool, now: Instant) -> Option<Ended> {
        let (id, generation) = parse_media_key(key)?;
        let s = self.sessions.get_mut(id)?;
        let State::Offered {
            media,
            answered: false,
            was_pending,
        } = s.state
        else {
            return None;
        };
        if media != generation {
            return None;
        }
        if ok {
            s.state = State::Offered {
                media,
                answered: true,
                was_pending,
            };
            return None;
        }
        if !was_pending {
            let id = id.to_owned();
            let mut e = self.end(&id, "offer failed")?;
            e.media = None;
            return Some(e);
        }
        s.state = State::Pending;
        s.created = now;
        let source = s.source;
        if let Some(a) = s.alias.take() {
            self.aliases.remove(&a);
        }
        if !std::mem::take(&mut s.publisher) {
            self.slots = self.slots.saturating_sub(1);
        }
        self.pending += 1;
        *self.pending_per_source.entry(source).or_insert(0) += 1;
        self.pending_order.push_back(id.to_owned());
        self.compact_order();
        None
    }

    /// Ends the pending sessions that are done: idle past the timeout with no allocation,
    /// or whose user held allocations and holds none now. `allocations(user)` is what the
    /// relay says.
    pub fn sweep(&mut self, now: Instant, allocations: &dyn Fn(&str) -> u32) -> Vec<Ended> {
        let idle = self.limits.idle;
        let mut done = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            if s.state != State::Pending {
                continue;
            }
            if allocations(id) > 0 {
                s.held_allocation = true;
            } else if s.held_allocation {
                done.push((id.clone(), "its last TURN allocation closed"));
            } else if now.saturating_duration_since(s.created) >= idle {
                done.push((id.clone(), "idle: no offer and no TURN allocation"));
            }
        }
        done.into_iter()
            .filter_map(|(id, why)| self.end(&id, why))
            .collect()
    }
}

#[cfg(test)]
mod tests;
