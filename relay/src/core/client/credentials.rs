//! Long-term credentials (RFC 8489 §9.2.4) with TURN REST usernames: the 401/438
//! challenge with REALM and NONCE, nonce checks, and the per-client key cache that keeps
//! repeat requests from the same username to one HMAC.
//!
//! A credential's expiry is checked when it asks for an allocation. The requests that
//! keep an allocation alive (Refresh, CreatePermission, ChannelBind) pass past that expiry
//! while the user's session is live, and for an unbound user until its bounded end (see
//! [`super::super::standing`]); a revoked or ended user is refused either way.

use std::sync::atomic::Ordering::Relaxed;

use stun_types::attribute::{
    AttributeStaticType, AttributeWrite, MessageIntegrity, Nonce, Realm, Username,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, StunParseError,
};

use super::super::nonce::NonceCheck;
use super::super::stats::AuthFailure;
use super::super::{Now, Standing, StaticUsers};
use super::{Client, ClientOutput, Req};

/// The cached result of a successful long-term authentication.
pub(super) struct AuthCache {
    /// The full REST username, `<expiry>:<user>`.
    pub(super) username: String,
    /// The REST user.
    pub(super) user: String,
    /// Unix expiry from the username.
    pub(super) expiry: u64,
    /// MD5(username:realm:password) of the secret that matched.
    pub(super) key: IntegrityKey,
}

fn missing<T>(r: &Result<T, StunParseError>) -> bool {
    matches!(r, Err(StunParseError::MissingAttribute(_)))
}

impl Client {
    /// A 401 or 438 with REALM and a fresh NONCE.
    fn challenge(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        code: u16,
        reason: &str,
        now: Now,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let nonce = self.shared.nonce_key().make(
            self.tuple.client.ip(),
            now.unix.saturating_add(cfg.nonce_ttl.as_secs().max(1)),
        );
        let realm = Realm::new(&cfg.realm);
        let nonce = Nonce::new(&nonce);
        let mut attrs: Vec<&dyn AttributeWrite> = Vec::with_capacity(2);
        if let Ok(r) = &realm {
            attrs.push(r);
        }
        if let Ok(n) = &nonce {
            attrs.push(n);
        }
        self.write_response(out, req, Some((code, reason)), &attrs, None);
        ClientOutput::Reply
    }

    fn auth_fail(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        why: AuthFailure,
        reason: &str,
        now: Now,
    ) -> ClientOutput<'static> {
        self.shared.stats().auth_failure(why);
        self.challenge(out, req, 401, reason, now)
    }

    // ---------------------------------------------------------------- authentication

    /// Whether a credential expiring at `expiry` may still be used by `user` at `now`:
    /// always before its expiry; past it only to keep an existing allocation of the same
    /// user alive (not to make one), while the user's session is live, or, for a user of
    /// no session, until the allocation's bounded end.
    fn still_valid(&self, user: &str, expiry: u64, allocating: bool, now: Now) -> bool {
        if expiry > now.unix {
            return true;
        }
        if allocating {
            return false;
        }
        let Some(a) = self.alloc.as_ref().filter(|a| a.user == user) else {
            return false;
        };
        match self.shared.standing(user) {
            Standing::Live => true,
            Standing::Ended => false,
            Standing::Unknown => self.unbound_end(a.cred_expiry, a.created_unix) > now.unix,
        }
    }

    /// The long-term credential mechanism (RFC 8489 §9.2.4) with REST credentials. Returns
    /// `None` when authenticated (and `self.auth` holds the key), else the reply written.
    /// `allocating` is true for Allocate: only then must the credential be unexpired.
    pub(super) fn authenticate(
        &mut self,
        m: &Message<'_>,
        req: Req,
        allocating: bool,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Option<ClientOutput<'static>> {
        if !m.has_attribute(MessageIntegrity::TYPE) {
            self.shared.stats().auth_challenges.fetch_add(1, Relaxed);
            return Some(self.challenge(out, req, 401, "Unauthenticated", now));
        }
        let username = m.attribute::<Username>();
        let realm = m.attribute::<Realm>();
        let nonce = m.attribute::<Nonce>();
        if missing(&username) || missing(&realm) || missing(&nonce) {
            self.shared
                .stats()
                .auth_failure(AuthFailure::MissingCredentials);
            return Some(self.error(
                out,
                req,
                400,
                "Bad Request: MESSAGE-INTEGRITY without USERNAME, REALM or NONCE",
                None,
            ));
        }
        let (Ok(username), Ok(_realm), Ok(nonce)) = (username, realm, nonce) else {
            self.shared.stats().auth_failure(AuthFailure::Malformed);
            return Some(self.error(
                out,
                req,
                400,
                "Bad Request: malformed USERNAME, REALM or NONCE",
                None,
            ));
        };
        match self
            .shared
            .nonce_key()
            .check(nonce.nonce(), self.tuple.client.ip(), now.unix)
        {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => {
                self.shared.stats().auth_failure(AuthFailure::StaleNonce);
                return Some(self.challenge(out, req, 438, "Stale Nonce", now));
            }
        }
        let username = username.username();

        // Fast path: same username as last time, one HMAC with the cached key.
        if let Some(cache) = self.auth.as_ref().filter(|c| c.username == username) {
            if !self.still_valid(&cache.user, cache.expiry, allocating, now) {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Expired,
                    "Unauthenticated: credential expired",
                    now,
                ));
            }
            if self.shared.is_revoked(&cache.user, now) {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Revoked,
                    "Unauthenticated: credential revoked",
                    now,
                ));
            }
            if m.validate_integrity_with_key(&cache.key).is_err() {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::BadPassword,
                    "Unauthenticated: wrong password",
                    now,
                ));
            }
            return None;
        }

        // A static user (TURN_STATIC_USERS, opt-in): its fixed key, no expiry.
        if let Some(key) = self.shared.static_key(username) {
            if m.validate_integrity_with_key(&key).is_err() {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::BadPassword,
                    "Unauthenticated: wrong password",
                    now,
                ));
            }
            self.auth = Some(AuthCache {
                username: username.to_owned(),
                user: StaticUsers::internal_id(username),
                expiry: u64::MAX,
                key,
            });
            return None;
        }
        let ring = self.shared.secrets();
        let parsed = match auth::RestUsername::parse(username) {
            Ok(p) if !self.still_valid(&p.user, p.expiry, allocating, now) => {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Expired,
                    "Unauthenticated: credential expired",
                    now,
                ));
            }
            Ok(p) => p,
            Err(_) => {
                return Some(self.auth_fail(
                    out,
                    req,
                    AuthFailure::Malformed,
                    "Unauthenticated: USERNAME is not a REST username",
                    now,
                ));
            }
        };
        if self.shared.is_revoked(&parsed.user, now) {
            return Some(self.auth_fail(
                out,
                req,
                AuthFailure::Revoked,
                "Unauthenticated: credential revoked",
                now,
            ));
        }
        let realm = &self.shared.config().realm;
        for password in ring.passwords_for(username) {
            let key = LongTermKeyCredentials::new(username.to_owned(), password, realm.clone())
                .make_key(IntegrityAlgorithm::Sha1);
            if m.validate_integrity_with_key(&key).is_ok() {
                self.auth = Some(AuthCache {
                    username: username.to_owned(),
                    user: parsed.user,
                    expiry: parsed.expiry,
                    key,
                });
                return None;
            }
        }
        Some(self.auth_fail(
            out,
            req,
            AuthFailure::BadPassword,
            "Unauthenticated: wrong password",
            now,
        ))
    }
}
