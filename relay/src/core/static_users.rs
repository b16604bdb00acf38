//! Static long-term users (`TURN_STATIC_USERS=user:password,…`): the fixed username and
//! password the original coturn recipe gives Geti's backend and its browsers
//! (`COTURN_USERNAME`/`COTURN_PASSWORD`). Opt-in only, and the owner admits them only with an
//! explicit peer allow list: a static password never expires, so it must never open more than
//! the peers named for it.
//!
//! A static user authenticates with the plain long-term mechanism (RFC 8489 §9.2.4): its key
//! is `MD5(username:realm:password)`, made once here. Its allocations are kept apart from REST
//! users' under an internal id no REST username can produce ([`StaticUsers::internal_id`]):
//! they count against `max_allocations_total` only (one static user is shared by a backend and
//! all its viewers), and they never expire for lack of a session.

use stun_types::message::{IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials};

/// Most static users accepted: a handful of fixed accounts, not a user database.
pub const MAX_STATIC_USERS: usize = 64;

/// Prefix of a static user's internal id. A REST user part cannot hold a control
/// character ([`auth::RestUsername::parse`]), so no REST user collides with it.
const INTERNAL_PREFIX: &str = "\u{1}static:";

/// The static users and their keys, for one realm.
#[derive(Clone, Default)]
pub struct StaticUsers {
    users: Vec<(String, IntegrityKey)>,
}

/// Why `TURN_STATIC_USERS` was refused. Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticUsersError {
    /// An entry without `:` between user and password, or with an empty part.
    #[error("entry {0} is not `user:password` (both non-empty)")]
    Malformed(usize),
    /// A control character, or a username longer than 128 bytes.
    #[error("entry {0}: user names are at most 128 bytes without control characters")]
    BadName(usize),
    /// The same user twice.
    #[error("user {0:?} is listed twice")]
    Duplicate(String),
    /// More than [`MAX_STATIC_USERS`].
    #[error("more than {MAX_STATIC_USERS} users")]
    TooMany,
}

impl std::fmt::Debug for StaticUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a key is as good as the password.
        f.debug_list()
            .entries(self.users.iter().map(|(n, _)| n))
            .finish()
    }
}

impl StaticUsers {
    /// Parses `user:password,user2:password2` (entries split at `,`, each at its first `:`:
    /// a password may hold `:` but not `,`) and makes each user's key for `realm`. An empty
    /// list is no static user.
    pub fn parse(list: &str, realm: &str) -> Result<Self, StaticUsersError> {
        let mut users: Vec<(String, IntegrityKey)> = Vec::new();
        for (n, entry) in Self::entries(list) {
            let (name, password) = entry.ok_or(StaticUsersError::Malformed(n))?;
            if name.len() > 128 || name.chars().any(char::is_control) {
                return Err(StaticUsersError::BadName(n));
            }
            if users.iter().any(|(u, _)| u == name) {
                return Err(StaticUsersError::Duplicate(name.to_owned()));
            }
            if users.len() == MAX_STATIC_USERS {
                return Err(StaticUsersError::TooMany);
            }
            let key =
                LongTermKeyCredentials::new(name.to_owned(), password.to_owned(), realm.to_owned())
                    .make_key(IntegrityAlgorithm::Sha1);
            users.push((name.to_owned(), key));
        }
        Ok(Self { users })
    }

    /// The entries of a TURN_STATIC_USERS list as written, numbered from 1 (empty entries
    /// skipped): `user` and `password`, or `None` for an entry that is not `user:password`.
    /// [`StaticUsers::parse`] keeps only keys; this is for a client that needs the password
    /// (the doctor allocating as each user).
    pub fn entries(list: &str) -> impl Iterator<Item = (usize, Option<(&str, &str)>)> {
        list.split(',')
            .map(str::trim)
            .enumerate()
            .filter(|(_, e)| !e.is_empty())
            .map(|(i, e)| {
                let pair = e
                    .split_once(':')
                    .filter(|(u, p)| !u.is_empty() && !p.is_empty());
                (i + 1, pair)
            })
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// The user names (for logs; never the passwords).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.iter().map(|(n, _)| n.as_str())
    }

    /// The key of `username`, if it is a static user.
    pub fn key(&self, username: &str) -> Option<&IntegrityKey> {
        self.users
            .iter()
            .find(|(n, _)| n == username)
            .map(|(_, k)| k)
    }

    /// The id a static user's allocations are counted under.
    pub fn internal_id(username: &str) -> String {
        format!("{INTERNAL_PREFIX}{username}")
    }

    /// Whether `user` (an id allocations are counted under) is a static user's.
    pub fn is_internal_id(user: &str) -> bool {
        user.starts_with(INTERNAL_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_makes_the_long_term_key() {
        let s = StaticUsers::parse("user:password, viewer:pa:ss", "gateway").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.names().collect::<Vec<_>>(), ["user", "viewer"]);
        // The key is MD5(username:realm:password), RFC 8489 §9.2.2.
        let want = LongTermKeyCredentials::new("viewer".into(), "pa:ss".into(), "gateway".into())
            .make_key(IntegrityAlgorithm::Sha1);
        let got = s.key("viewer").unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert!(s.key("nobody").is_none());
        assert!(StaticUsers::parse("", "gateway").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_lists_without_echoing_passwords() {
        for (list, want) in [
            ("user", StaticUsersError::Malformed(1)),
            ("a:b,:pw", StaticUsersError::Malformed(2)),
            ("a:", StaticUsersError::Malformed(1)),
            ("a\u{7}b:pw", StaticUsersError::BadName(1)),
            ("a:pw1,a:pw2", StaticUsersError::Duplicate("a".into())),
        ] {
            let e = StaticUsers::parse(list, "r").unwrap_err();
            assert_eq!(e, want, "{list:?}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        let many: Vec<String> = (0..=MAX_STATIC_USERS).map(|i| format!("u{i}:p")).collect();
        assert_eq!(
            StaticUsers::parse(&many.join(","), "r").unwrap_err(),
            StaticUsersError::TooMany
        );
    }

    #[test]
    fn internal_ids_are_apart_from_rest_users() {
        let id = StaticUsers::internal_id("user");
        assert!(StaticUsers::is_internal_id(&id));
        // No REST username yields it as its user part.
        assert!(auth::RestUsername::parse(&format!("1700000000:{id}")).is_err());
        assert!(!StaticUsers::is_internal_id("user"));
    }

    #[test]
    fn debug_shows_names_only() {
        let s = StaticUsers::parse("user:hunter2-secret", "r").unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("user") && !d.contains("hunter2"), "{d}");
    }
}
