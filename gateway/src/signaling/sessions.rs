//! The session table: one entry per viewer session, from the moment it is handed ICE servers
//! or sends an offer until it ends. Bounded by `MAX_VIEWERS`.
//!
//! The table holds no media state (the engine does) and no credential (it is derived from
//! the id): only what ending a session needs, i.e. until when its TURN user must stay
//! revoked, and whether it is still waiting for its offer (the idle timeout applies then).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest session id accepted from a client.
pub const MAX_ID_LEN: usize = 64;

/// Why a session could not be created or bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `MAX_VIEWERS` sessions exist.
    Full(usize),
    /// The id is taken by a session that already offered.
    Duplicate,
}

/// How [`Sessions::begin_offer`] found the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// A session that was handed ICE servers and now offers.
    Bound,
    /// A new session, made for this offer.
    Created,
}

#[derive(Debug)]
struct Entry {
    created: Instant,
    offered: bool,
    revoke_until: u64,
}

/// The table.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
    max: usize,
    idle: Duration,
}

/// A fresh, unguessable session id (128 random bits, hex).
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a client-chosen id is acceptable: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Sessions {
    /// A table of at most `max` sessions; sessions that never offer end after `idle`.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            max,
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Adds a session that is handed ICE servers (it has not offered yet).
    pub fn create(&self, id: &str, revoke_until: u64) -> Result<(), SessionError> {
        let mut m = self.lock();
        if m.contains_key(id) {
            return Err(SessionError::Duplicate);
        }
        if m.len() >= self.max {
            return Err(SessionError::Full(self.max));
        }
        m.insert(
            id.to_owned(),
            Entry {
                created: Instant::now(),
                offered: false,
                revoke_until,
            },
        );
        Ok(())
    }

    /// Marks `id` as offering: binds to a waiting session, or creates one.
    pub fn begin_offer(&self, id: &str, revoke_until: u64) -> Result<Begin, SessionError> {
        let mut m = self.lock();
        if let Some(e) = m.get_mut(id) {
            if e.offered {
                return Err(SessionError::Duplicate);
            }
            e.offered = true;
            e.revoke_until = e.revoke_until.max(revoke_until);
            return Ok(Begin::Bound);
        }
        if m.len() >= self.max {
            return Err(SessionError::Full(self.max));
        }
        m.insert(
            id.to_owned(),
            Entry {
                created: Instant::now(),
                offered: true,
                revoke_until,
            },
        );
        Ok(Begin::Created)
    }

    /// Undoes [`Sessions::begin_offer`] after the engine refused the offer: a created
    /// session disappears, a bound one waits for another offer.
    pub fn offer_failed(&self, id: &str, begin: Begin) {
        let mut m = self.lock();
        match begin {
            Begin::Created => {
                m.remove(id);
            }
            Begin::Bound => {
                if let Some(e) = m.get_mut(id) {
                    e.offered = false;
                }
            }
        }
    }

    /// Removes `id`; returns until when its TURN user must stay revoked.
    pub fn remove(&self, id: &str) -> Option<u64> {
        self.lock().remove(id).map(|e| e.revoke_until)
    }

    /// Ids of sessions that were handed ICE servers longer than the idle timeout ago and
    /// never offered.
    pub fn idle(&self, now: Instant) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| !e.offered && now.duration_since(e.created) >= self.idle)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_bind_and_idle() {
        let s = Sessions::new(2, Duration::from_secs(5));
        s.create("a", 10).unwrap();
        assert_eq!(s.begin_offer("b", 10), Ok(Begin::Created));
        assert_eq!(s.begin_offer("c", 10), Err(SessionError::Full(2)));
        assert_eq!(s.begin_offer("a", 20), Ok(Begin::Bound));
        assert_eq!(s.begin_offer("a", 20), Err(SessionError::Duplicate));
        s.offer_failed("a", Begin::Bound);
        let later = Instant::now() + Duration::from_secs(6);
        assert_eq!(s.idle(later), vec!["a".to_owned()]);
        assert_eq!(s.remove("a"), Some(20));
        s.offer_failed("b", Begin::Created);
        assert!(s.is_empty());
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(valid_id(&id));
        assert!(!valid_id(""));
        assert!(!valid_id("a:b"));
        assert!(!valid_id(&"x".repeat(65)));
    }
}
