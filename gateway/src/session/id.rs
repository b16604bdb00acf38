//! Session ids, client-chosen ids and source buckets.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Every session id the gateway makes starts with this. It is also the session's TURN REST
/// user, so the relay can tell a session of ours that ended (refused at once) from a user
/// minted elsewhere (bounded lifetime). The REST endpoint refuses to mint names with it.
pub const SESSION_PREFIX: &str = "gws-";

/// Longest id accepted from a client (`webrtc_id`, `X-Session-Id`).
pub const MAX_ID_LEN: usize = 64;

/// A fresh, unguessable session id: the prefix and 128 random bits in hex. Holding it is
/// what lets a client end or restart its session.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut s = String::with_capacity(SESSION_PREFIX.len() + 32);
    s.push_str(SESSION_PREFIX);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `user` has the shape of a gateway session id.
pub fn is_session_id(user: &str) -> bool {
    user.strip_prefix(SESSION_PREFIX)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| HEX.contains(&b)))
}

/// Whether a client-chosen id is acceptable: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a request comes from, for per-source bounds: an IPv4 address, or an IPv6 /64
/// (one host usually holds a whole /64, so a per-/128 bound would bound nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// One IPv4 address (IPv4-mapped IPv6 counts as IPv4).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id();
        assert!(is_session_id(&id), "{id}");
        assert!(valid_id(&id));
        assert_ne!(new_id(), id);
        assert!(!is_session_id("gws-xyz"));
        assert!(!is_session_id("alice"));
        assert!(!valid_id(""));
        assert!(!valid_id("a:b"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn sources_bucket_ipv6_by_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(Source::from(mapped), Source::from(v4));
    }
}
