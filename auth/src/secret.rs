//! Shared secrets and the ring that holds them for rotation.

use std::fmt;

/// A TURN REST shared secret. Its `Debug` shows a fingerprint, never the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// Why a secret or ring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Empty secret, e.g. `TURN_SECRET=a,,b`.
    #[error("empty secret (secret number {0} in the list)")]
    Empty(usize),
    /// No secret at all.
    #[error("no secret given")]
    None,
    /// More secrets than [`SecretRing::MAX_SECRETS`].
    #[error("too many secrets ({0}); at most 8 are allowed")]
    TooMany(usize),
}

impl Secret {
    /// Wraps a non-empty secret.
    pub fn new(s: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let v = s.into();
        if v.is_empty() {
            return Err(SecretError::Empty(1));
        }
        Ok(Self(v))
    }

    /// The raw bytes (the HMAC key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A short, non-reversible fingerprint for logs: the first 8 hex digits of
    /// SHA-1("gateway-secret-fingerprint:" + secret).
    pub fn fingerprint(&self) -> String {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        h.update(b"gateway-secret-fingerprint:");
        h.update(&self.0);
        let d = h.finalize();
        d.iter().take(4).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(fp:{})", self.fingerprint())
    }
}

/// An ordered, non-empty list of secrets: the first mints, all verify.
#[derive(Clone, Debug)]
pub struct SecretRing {
    /// The first secret: it mints.
    minting: Secret,
    /// The others, in order: they only verify.
    older: Vec<Secret>,
}

impl SecretRing {
    /// Most secrets a ring holds; verification costs one HMAC per secret.
    pub const MAX_SECRETS: usize = 8;

    /// Builds a ring from secrets in order (first mints).
    pub fn new(secrets: Vec<Secret>) -> Result<Self, SecretError> {
        if secrets.len() > Self::MAX_SECRETS {
            return Err(SecretError::TooMany(secrets.len()));
        }
        let mut secrets = secrets.into_iter();
        let minting = secrets.next().ok_or(SecretError::None)?;
        Ok(Self {
            minting,
            older: secrets.collect(),
        })
    }

    /// Parses a comma-separated list, as in `TURN_SECRET=new,old`. Surrounding white
    /// space of each entry is trimmed; empty entries are an error, not skipped, so a typo
    /// does not silently drop a secret.
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        for (i, part) in list.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                return Err(SecretError::Empty(i + 1));
            }
            secrets.push(Secret(part.as_bytes().to_vec()));
        }
        Self::new(secrets)
    }

    /// The secret that mints.
    pub fn minting(&self) -> &Secret {
        &self.minting
    }

    /// All secrets, minting first.
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.minting).chain(&self.older)
    }

    /// Fingerprints of every secret, for start-up logs.
    pub fn fingerprints(&self) -> Vec<String> {
        self.iter().map(Secret::fingerprint).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list() {
        let r = SecretRing::parse(" a , b").unwrap();
        let v: Vec<_> = r.iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(v, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            SecretRing::parse("a,,b").unwrap_err(),
            SecretError::Empty(2)
        );
        assert_eq!(SecretRing::parse("").unwrap_err(), SecretError::Empty(1));
    }

    #[test]
    fn debug_shows_fingerprint_only() {
        let s = Secret::new("hunter2").unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"));
        assert_eq!(s.fingerprint().len(), 8);
    }
}
