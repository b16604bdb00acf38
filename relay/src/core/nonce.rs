//! Stateless nonces: the nonce carries its own expiry and a MAC over (expiry, client IP),
//! so an unauthenticated request costs no memory.

/// The random key that MACs nonces; made once per process.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl NonceKey {
    /// From raw bytes (tests use a fixed key).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A fresh random key.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}
