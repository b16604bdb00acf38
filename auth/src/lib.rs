//! TURN REST API credentials ("use-auth-secret", draft-uberti-behave-turn-rest).
//!
//! A credential is a pair `username = "<unix-expiry>:<user>"`,
//! `password = base64(HMAC-SHA1(secret, username))`. The signaling side *mints* such pairs
//! per session; the TURN relay *verifies* them: it recomputes the password from the
//! username under every secret of a [`SecretRing`] and checks the expiry against a clock
//! that the caller passes in (this crate never reads the time and does no I/O).
//!
//! Rotation without restart: a ring holds several secrets, the first mints, every one
//! verifies, so `TURN_SECRET=new,old` lets credentials minted under `old` live out their
//! TTL while new ones are minted under `new`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ice_url;
mod secret;
mod username;

pub use secret::{Secret, SecretError, SecretRing};
pub use username::{RestUsername, UsernameError, MAX_TTL_SECS, MAX_USERNAME_LEN};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<sha1::Sha1>;

/// A minted credential, as a TURN REST API JSON document carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<unix-expiry>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// Seconds from minting until expiry.
    pub ttl: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is a bearer secret: never print it.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The username does not have the REST form.
    #[error("malformed username: {0}")]
    Malformed(#[from] UsernameError),
    /// The expiry in the username lies in the past.
    #[error("credential expired {0} s ago")]
    Expired(u64),
    /// The password matches no secret of the ring.
    #[error("password does not match any secret")]
    BadPassword,
}

/// Errors while minting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The user part is not acceptable in a REST username.
    #[error("invalid user: {0}")]
    User(#[from] UsernameError),
    /// The TTL is zero or too long.
    #[error("ttl must be between 1 and {MAX_TTL_SECS} seconds, got {0}")]
    Ttl(u64),
}

/// Computes `base64(HMAC-SHA1(secret, username))`, the REST password for `username`.
pub fn rest_password(secret: &Secret, username: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret.as_bytes(), username))
}

fn hmac_sha1(key: &[u8], msg: &str) -> [u8; 20] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for Hmac<Sha1>.
    let mut mac = match HmacSha1::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(msg.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC takes keys of any length")
}

impl SecretRing {
    /// Mints a credential for `user`, valid from `now_unix` for `ttl` seconds, under the
    /// first (minting) secret.
    pub fn mint(&self, user: &str, now_unix: u64, ttl: u64) -> Result<Credential, MintError> {
        if ttl == 0 || ttl > MAX_TTL_SECS {
            return Err(MintError::Ttl(ttl));
        }
        let expiry = now_unix.saturating_add(ttl);
        let username = RestUsername::compose(expiry, user)?;
        let password = rest_password(self.minting(), &username);
        Ok(Credential {
            username,
            password,
            ttl,
        })
    }

    /// Verifies a `username`/`password` pair at `now_unix`: the username must parse, must
    /// not be expired, and the password must match one of the ring's secrets. The
    /// comparison is constant-time per secret.
    pub fn verify(
        &self,
        username: &str,
        password: &str,
        now_unix: u64,
    ) -> Result<RestUsername, VerifyError> {
        let parsed = self.check_username(username, now_unix)?;
        let given = password.as_bytes();
        let mut ok = subtle::Choice::from(0u8);
        for secret in self.iter() {
            let expected = rest_password(secret, username);
            ok |= expected.as_bytes().ct_eq(given);
        }
        if bool::from(ok) {
            Ok(parsed)
        } else {
            Err(VerifyError::BadPassword)
        }
    }

    /// Parses `username` and checks its expiry; returns the parsed form.
    pub fn check_username(
        &self,
        username: &str,
        now_unix: u64,
    ) -> Result<RestUsername, VerifyError> {
        let parsed = RestUsername::parse(username)?;
        if parsed.expiry <= now_unix {
            return Err(VerifyError::Expired(now_unix - parsed.expiry));
        }
        Ok(parsed)
    }

    /// The passwords the ring would accept for `username`, one per secret, in ring order.
    ///
    /// A STUN server needs these to derive long-term keys (`MD5(user:realm:password)`):
    /// MESSAGE-INTEGRITY is checked against each, so any secret of the ring verifies.
    pub fn passwords_for(&self, username: &str) -> impl Iterator<Item = String> + '_ {
        let username = username.to_owned();
        self.iter().map(move |s| rest_password(s, &username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(s: &str) -> SecretRing {
        SecretRing::parse(s).expect("ring")
    }

    #[test]
    fn known_vector_matches_coturn_scheme() {
        // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac "north" -binary | base64
        let secret = Secret::new("north").unwrap();
        assert_eq!(
            rest_password(&secret, "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn mint_then_verify() {
        let r = ring("s3cret");
        let c = r.mint("viewer-1", 1_000, 60).unwrap();
        assert_eq!(c.username, "1060:viewer-1");
        let u = r.verify(&c.username, &c.password, 1_059).unwrap();
        assert_eq!(u.user, "viewer-1");
        assert_eq!(u.expiry, 1060);
    }

    #[test]
    fn expired_is_refused() {
        let r = ring("s3cret");
        let c = r.mint("u", 1_000, 60).unwrap();
        assert_eq!(
            r.verify(&c.username, &c.password, 1_060),
            Err(VerifyError::Expired(0))
        );
        assert_eq!(
            r.verify(&c.username, &c.password, 2_000),
            Err(VerifyError::Expired(940))
        );
    }

    #[test]
    fn wrong_password_is_refused() {
        let r = ring("s3cret");
        let c = r.mint("u", 1_000, 60).unwrap();
        assert_eq!(
            r.verify(&c.username, "AAAA", 1_001),
            Err(VerifyError::BadPassword)
        );
        let other = ring("other");
        assert_eq!(
            other.verify(&c.username, &c.password, 1_001),
            Err(VerifyError::BadPassword)
        );
    }

    #[test]
    fn rotation_new_mints_both_verify() {
        let old = ring("old");
        let both = ring("new,old");
        let from_old = old.mint("u", 1_000, 60).unwrap();
        let from_new = both.mint("u", 1_000, 60).unwrap();
        assert!(both
            .verify(&from_old.username, &from_old.password, 1_001)
            .is_ok());
        assert!(both
            .verify(&from_new.username, &from_new.password, 1_001)
            .is_ok());
        // Minting uses the first secret only.
        assert_eq!(
            from_new.password,
            rest_password(&Secret::new("new").unwrap(), &from_new.username)
        );
        assert!(old
            .verify(&from_new.username, &from_new.password, 1_001)
            .is_err());
    }

    #[test]
    fn mint_rejects_bad_ttl_and_user() {
        let r = ring("s");
        assert_eq!(r.mint("u", 0, 0), Err(MintError::Ttl(0)));
        assert!(matches!(
            r.mint("u", 0, MAX_TTL_SECS + 1),
            Err(MintError::Ttl(_))
        ));
        assert!(matches!(r.mint("", 0, 10), Err(MintError::User(_))));
        assert!(r.mint(&"x".repeat(600), 0, 10).is_err());
    }

    #[test]
    fn debug_hides_password() {
        let c = ring("s").mint("u", 0, 10).unwrap();
        assert!(!format!("{c:?}").contains(&c.password));
    }
}
