//! What nodes write for each other is sealed with the cluster token: node records and
//! session messages carry an HMAC of their text, and a node takes only what verifies. So
//! whoever can write to Redis but does not hold the token cannot add a node (and with it,
//! a range of media addresses the relay would admit as peers, or a peer URL that pulls
//! would send the token to), nor end or keep alive anyone's sessions.

use subtle::ConstantTimeEq as _;

/// Seals and opens texts with the cluster token.
pub struct Seal {
    key: auth::Secret,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal")
    }
}

impl Seal {
    /// A seal keyed by `token` (non-empty: the settings check it).
    pub fn new(token: &str) -> Self {
        let key = auth::Secret::new(token.as_bytes().to_vec())
            .or_else(|_| auth::Secret::new(b"-".to_vec()));
        match key {
            Ok(key) => Self { key },
            // `new` refuses only an empty secret, and "-" is not empty.
            Err(_) => unreachable!("a one-byte secret is valid"),
        }
    }

    /// `text` with its seal in front: `<mac> <text>`.
    pub fn seal(&self, text: &str) -> String {
        format!("{} {text}", auth::rest_password(&self.key, text))
    }

    /// The text of a sealed `value`, when its seal verifies.
    pub fn open<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (mac, text) = value.split_once(' ')?;
        let want = auth::rest_password(&self.key, text);
        bool::from(mac.as_bytes().ct_eq(want.as_bytes())).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_token_sealed_opens() {
        let seal = Seal::new("0123456789abcdef-token");
        let sealed = seal.seal("live n1 gws-00");
        assert_eq!(seal.open(&sealed), Some("live n1 gws-00"));
        let forged = sealed.replace("n1", "n2");
        assert_eq!(seal.open(&forged), None);
        assert_eq!(Seal::new("another-token-0123456").open(&sealed), None);
        for junk in ["", " ", "x", "x y", "é é"] {
            assert_eq!(seal.open(junk), None, "{junk:?}");
        }
    }
}
