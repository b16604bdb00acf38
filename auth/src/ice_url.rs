//! The one parser of `stun:`, `stuns:`, `turn:` and `turns:` URLs (RFC 7064, RFC 7065) the
//! project has: the gateway's settings, ICE server plan and doctor, the tests and the bench
//! all read them here (it lives beside the credentials those URLs travel with in a TURN
//! REST API document). Operator input: no byte slicing, no panic on any string.

/// An ICE server URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `stun:`
    Stun,
    /// `stuns:`
    Stuns,
    /// `turn:`
    Turn,
    /// `turns:`
    Turns,
}

impl Scheme {
    /// The scheme with its colon, lower case.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::Stun => "stun:",
            Scheme::Stuns => "stuns:",
            Scheme::Turn => "turn:",
            Scheme::Turns => "turns:",
        }
    }

    /// Whether it names a TURN server.
    pub fn is_turn(self) -> bool {
        matches!(self, Scheme::Turn | Scheme::Turns)
    }
}

/// The scheme of `url` (case-insensitive) and the rest after it, when the rest is not empty.
pub fn split_scheme(url: &str) -> Option<(Scheme, &str)> {
    [Scheme::Stuns, Scheme::Stun, Scheme::Turns, Scheme::Turn]
        .into_iter()
        .find_map(|s| strip_scheme(url, s).map(|rest| (s, rest)))
}

/// `url` without `scheme`, when it starts with it (case-insensitive) and something follows.
pub fn strip_scheme(url: &str, scheme: Scheme) -> Option<&str> {
    let p = scheme.prefix();
    let head = url.get(..p.len())?;
    let rest = url.get(p.len()..)?;
    (head.eq_ignore_ascii_case(p) && !rest.is_empty()).then_some(rest)
}

/// Splits `host[:port][?query]` (IPv6 in brackets, or bare without a port); `default` when
/// there is no port. `None` for an empty host or a bad port.
pub fn host_port(v: &str, default: u16) -> Option<(String, u16)> {
    let v = v.split('?').next().unwrap_or(v);
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().ok()?),
            None if after.is_empty() => (h, default),
            None => return None,
        }
    } else if v.matches(':').count() > 1 {
        (v, default)
    } else if let Some((h, p)) = v.split_once(':') {
        (h, p.parse().ok()?)
    } else {
        (v, default)
    };
    if port == 0 || !is_host(host) {
        return None;
    }
    Some((host.to_owned(), port))
}

/// Whether `host` (without brackets) is an IP address or a DNS name: dot-separated labels of
/// 1 to 63 ASCII letters, digits, `-` or `_`, 253 bytes at most. The one host grammar of
/// every setting that names a host.
pub fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_hosts() {
        assert_eq!(
            split_scheme("TURNS:h:443?transport=tcp"),
            Some((Scheme::Turns, "h:443?transport=tcp"))
        );
        assert_eq!(split_scheme("stun:x"), Some((Scheme::Stun, "x")));
        assert_eq!(split_scheme("stun:"), None);
        for s in ["stunéx", "éstun:x", "st", "", "tur\u{301}n:x", "http://x"] {
            assert_eq!(split_scheme(s), None, "{s}");
        }
        assert_eq!(host_port("h:3479", 3478), Some(("h".into(), 3479)));
        assert_eq!(host_port("[::1]:5", 3478), Some(("::1".into(), 5)));
        assert_eq!(host_port("::1", 3478), Some(("::1".into(), 3478)));
        assert_eq!(host_port("h?transport=udp", 3478), Some(("h".into(), 3478)));
        for bad in [
            "", ":5", "h:0", "h:x", "[::1", "[::1]x", "a b:1", "u@h:1", "é:99999", "stunéx",
            "a..b:1",
        ] {
            assert_eq!(host_port(bad, 3478), None, "{bad}");
        }
    }
}
