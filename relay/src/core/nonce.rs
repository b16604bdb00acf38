//! Stateless nonces: the nonce carries its own expiry and a MAC over (expiry, client IP),
//! so an unauthenticated request costs no memory.
//!
//! Format (ASCII, 38 characters): `g1` + 16 hex digits of the unix expiry + 20 hex digits of
//! HMAC-SHA1(key, "gateway-nonce" ‖ expiry ‖ client IP) truncated to 80 bits.

use std::net::IpAddr;

use hmac::{Hmac, Mac};

type HmacSha1 = Hmac<sha1::Sha1>;

const PREFIX: &str = "g1";
const MAC_LEN: usize = 10;
const NONCE_LEN: usize = PREFIX.len() + 16 + 2 * MAC_LEN;

/// The random key that MACs nonces; made once per process.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

/// What a presented nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// Ours, for this client, not expired.
    Valid,
    /// Ours but expired.
    Stale,
    /// Not one of ours, or for another client address.
    Invalid,
}

impl NonceKey {
    /// From raw bytes (tests use a fixed key).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A fresh random key.
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn mac(&self, expiry: u64, client: IpAddr) -> HmacSha1 {
        // HMAC takes keys of any length; the fallback is never taken.
        let mut mac = match HmacSha1::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => <HmacSha1 as hmac::digest::KeyInit>::new(&Default::default()),
        };
        mac.update(b"gateway-nonce");
        mac.update(&expiry.to_be_bytes());
        match client {
            IpAddr::V4(v4) => {
                mac.update(&[4]);
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(&[6]);
                mac.update(&v6.octets());
            }
        }
        mac
    }

    /// A nonce for `client`, valid until `expiry_unix`.
    pub(crate) fn make(&self, client: IpAddr, expiry_unix: u64) -> String {
        use std::fmt::Write as _;
        let tag = self.mac(expiry_unix, client).finalize().into_bytes();
        let mut s = String::with_capacity(NONCE_LEN);
        s.push_str(PREFIX);
        let _ = write!(s, "{expiry_unix:016x}");
        for b in tag.iter().take(MAC_LEN) {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Checks a nonce presented by `client` at `now_unix`.
    pub(crate) fn check(&self, nonce: &str, client: IpAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Some(rest) = nonce.strip_prefix(PREFIX) else {
            return NonceCheck::Invalid;
        };
        let (exp_hex, mac_hex) = rest.split_at(16);
        let Ok(expiry) = u64::from_str_radix(exp_hex, 16) else {
            return NonceCheck::Invalid;
        };
        let mut tag = [0u8; MAC_LEN];
        for (i, t) in tag.iter_mut().enumerate() {
            let Some(h) = mac_hex.get(2 * i..2 * i + 2) else {
                return NonceCheck::Invalid;
            };
            let Ok(b) = u8::from_str_radix(h, 16) else {
                return NonceCheck::Invalid;
            };
            *t = b;
        }
        if self
            .mac(expiry, client)
            .verify_truncated_left(&tag)
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        if expiry <= now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let k = NonceKey::from_bytes([7; 32]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let n = k.make(ip, 1_000);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(k.check(&n, ip, 999), NonceCheck::Valid);
        assert_eq!(k.check(&n, ip, 1_000), NonceCheck::Stale);
        assert_eq!(
            k.check(&n, "192.0.2.2".parse().unwrap(), 999),
            NonceCheck::Invalid
        );
        assert_eq!(
            NonceKey::from_bytes([8; 32]).check(&n, ip, 999),
            NonceCheck::Invalid
        );
        // Tampered expiry.
        let t = n.replacen("00000000000003e8", "00000000000007e8", 1);
        assert_eq!(k.check(&t, ip, 999), NonceCheck::Invalid);
        for junk in ["", "g1", "zz", &"g1".repeat(19), "g1ééééééééééééééééé"] {
            assert_eq!(k.check(junk, ip, 0), NonceCheck::Invalid);
        }
    }
}
