//! The REST username `<unix-expiry>:<user>`.

/// Longest username accepted, in bytes. STUN USERNAME is limited to 513 bytes (RFC 8489);
/// we stay well below so one bad request cannot make us hash a large input.
pub const MAX_USERNAME_LEN: usize = 256;

/// Longest TTL minted or accepted: 7 days. A username whose expiry lies further in the
/// future than this is absurd (a forged or misconfigured clock) and is refused.
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// A parsed REST username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestUsername {
    /// Unix time (seconds) after which the credential is invalid.
    pub expiry: u64,
    /// The user or session id after the colon.
    pub user: String,
}

/// Why a username is not a REST username.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Longer than [`MAX_USERNAME_LEN`].
    #[error("username is {0} bytes, longer than {MAX_USERNAME_LEN}")]
    TooLong(usize),
    /// No `:` separating expiry and user.
    #[error("username has no ':' between expiry and user")]
    NoColon,
    /// The part before `:` is not a decimal number.
    #[error("expiry is not a decimal unix time")]
    BadExpiry,
    /// The expiry is implausibly far away (more than 100 years from 1970 + max TTL).
    #[error("expiry {0} is absurd")]
    AbsurdExpiry(u64),
    /// Nothing after the colon.
    #[error("user part is empty")]
    EmptyUser,
    /// A control character in the user part (would corrupt logs).
    #[error("user part contains a control character")]
    ControlChar,
}

/// Unix time of 2100-01-01; expiries beyond it are refused as absurd.
const LATEST_EXPIRY: u64 = 4_102_444_800;

impl RestUsername {
    /// Parses `<unix-expiry>:<user>`. coturn accepts the reverse order too when the
    /// first part is not numeric; we do not: the gateway mints the timestamp first.
    pub fn parse(s: &str) -> Result<Self, UsernameError> {
        if s.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong(s.len()));
        }
        let (exp, user) = s.split_once(':').ok_or(UsernameError::NoColon)?;
        if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UsernameError::BadExpiry);
        }
        let expiry: u64 = exp.parse().map_err(|_| UsernameError::BadExpiry)?;
        if expiry > LATEST_EXPIRY {
            return Err(UsernameError::AbsurdExpiry(expiry));
        }
        check_user(user)?;
        Ok(Self {
            expiry,
            user: user.to_owned(),
        })
    }

    /// Builds the username string for `expiry` and `user`, checking `user`.
    pub fn compose(expiry: u64, user: &str) -> Result<String, UsernameError> {
        check_user(user)?;
        let s = format!("{expiry}:{user}");
        if s.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong(s.len()));
        }
        if expiry > LATEST_EXPIRY {
            return Err(UsernameError::AbsurdExpiry(expiry));
        }
        Ok(s)
    }
}

fn check_user(user: &str) -> Result<(), UsernameError> {
    if user.is_empty() {
        return Err(UsernameError::EmptyUser);
    }
    if user.chars().any(char::is_control) {
        return Err(UsernameError::ControlChar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid() {
        let u = RestUsername::parse("1700000000:cam:1").unwrap();
        assert_eq!(u.expiry, 1_700_000_000);
        assert_eq!(u.user, "cam:1");
    }

    #[test]
    fn rejects_malformed() {
        use UsernameError::*;
        assert_eq!(RestUsername::parse("alice"), Err(NoColon));
        assert_eq!(RestUsername::parse("abc:alice"), Err(BadExpiry));
        assert_eq!(RestUsername::parse(":alice"), Err(BadExpiry));
        assert_eq!(RestUsername::parse("-5:alice"), Err(BadExpiry));
        assert_eq!(RestUsername::parse("+5:alice"), Err(BadExpiry));
        assert_eq!(RestUsername::parse("1700000000:"), Err(EmptyUser));
        assert_eq!(RestUsername::parse("1700000000:a\nb"), Err(ControlChar));
        // Overflows u64.
        assert_eq!(
            RestUsername::parse("99999999999999999999:a"),
            Err(BadExpiry)
        );
        assert!(matches!(
            RestUsername::parse("9999999999:a"),
            Err(AbsurdExpiry(9_999_999_999))
        ));
        let long = format!("1:{}", "x".repeat(MAX_USERNAME_LEN));
        assert!(matches!(RestUsername::parse(&long), Err(TooLong(_))));
    }
}
