//! Which peers the relay may send to (DESIGN.md, *Peer policy*).
//!
//! Order of a check: canonicalize IPv4-mapped / IPv4-compatible IPv6 to IPv4, refuse port 0,
//! then the deny list wins, then the gateway's own media addresses are allowed, then the allow
//! list — where an address in a special-purpose range (loopback, private, link-local, …) is
//! admitted only by an allow entry that names such a range explicitly (its network lies inside
//! a special range), so `0.0.0.0/0` or `::/0` never opens loopback or cloud metadata.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Every reason [`PolicyVerdict::Deny`] can carry (the `forbidden` counter's label values).
pub const DENY_REASONS: &[&str] = &[
    "port zero",
    "denied by rule",
    "not in allow list",
    "unspecified",
    "private",
    "shared address space",
    "loopback",
    "link-local",
    "reserved",
    "documentation",
    "benchmarking",
    "multicast",
    "broadcast",
    "site-local",
    "nat64",
    "discard-only",
    "6to4",
    "teredo",
];

/// Special-purpose ranges and the class each belongs to. Order matters only for the class
/// name: the first containing range names it.
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("fc00::/7", "private"),
    ("ff00::/8", "multicast"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("2001:db8::/32", "documentation"),
    ("100::/64", "discard-only"),
    ("2002::/16", "6to4"),
    ("2001::/32", "teredo"),
];

/// One allow or deny entry: a network and an inclusive port range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpNet,
    ports: (u16, u16),
    /// The network lies inside a special-purpose range: it may admit such addresses.
    explicit: bool,
}

impl Rule {
    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(&ip) && self.ports.0 <= port && port <= self.ports.1
    }
}

/// Allow and deny rules.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    special: Vec<(IpNet, &'static str)>,
}

/// Outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// Relaying to this peer is allowed.
    Allow,
    /// Refused; the reason names which rule, for logs and the `forbidden` counter.
    Deny(&'static str),
}

/// A rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer rule {rule:?}: {reason}")]
pub struct PolicyError {
    /// The offending entry.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

fn special_ranges() -> Vec<(IpNet, &'static str)> {
    SPECIAL
        .iter()
        .filter_map(|(net, class)| net.parse::<IpNet>().ok().map(|n| (n, *class)))
        .collect()
}

/// Maps IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`, except `::` and
/// `::1`) IPv6 addresses to IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6].iter().all(|&x| x == 0)
                && v6 != Ipv6Addr::UNSPECIFIED
                && v6 != Ipv6Addr::LOCALHOST
            {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
    }
}

/// Like [`canonical_ip`] for a network: `::ffff:10.0.0.0/104` becomes `10.0.0.0/8`.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.addr().to_ipv4_mapped() {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n.trunc());
                }
            }
        }
    }
    net.trunc()
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) => Err("port 0 is not a valid peer port".into()),
            Ok(v) => Ok(v),
            Err(_) => Err(format!("{p:?} is not a port number")),
        }
    };
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(format!("port range {lo}-{hi} is empty"));
            }
            Ok((lo, hi))
        }
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
    }
}

fn parse_addr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.contains('/') {
        s.parse::<IpNet>()
            .map(canonical_net)
            .map_err(|_| format!("{s:?} is not a CIDR network"))
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        let net = match ip {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
            IpAddr::V6(v6) => IpNet::V6(Ipv6Net::from(v6)),
        };
        Ok(canonical_net(net))
    }
}

fn parse_rule(entry: &str, special: &[(IpNet, &'static str)]) -> Result<Rule, String> {
    let (addr, ports) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "missing ']' after IPv6 address".to_string())?;
        if after.is_empty() {
            (inside, None)
        } else if let Some(p) = after.strip_prefix(':') {
            (inside, Some(p))
        } else {
            return Err(format!("unexpected {after:?} after ']'"));
        }
    } else {
        match entry.matches(':').count() {
            0 => (entry, None),
            1 => {
                let (a, p) = entry.split_once(':').unwrap_or((entry, ""));
                (a, Some(p))
            }
            // Bare IPv6 (no port; a port needs brackets).
            _ => (entry, None),
        }
    };
    let net = parse_addr(addr)?;
    let ports = match ports {
        Some(p) => parse_ports(p)?,
        None => (1, u16::MAX),
    };
    let explicit = special.iter().any(|(s, _)| s.contains(&net));
    Ok(Rule {
        net,
        ports,
        explicit,
    })
}

fn parse_list(list: &str, special: &[(IpNet, &'static str)]) -> Result<Vec<Rule>, PolicyError> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            parse_rule(e, special).map_err(|reason| PolicyError {
                rule: e.to_string(),
                reason,
            })
        })
        .collect()
}

impl PeerPolicy {
    /// Parses comma-separated allow and deny lists (`CIDR[:port[-port]]`, IPv6 in brackets
    /// when a port is given).
    pub fn parse(allowed: &str, denied: &str) -> Result<Self, PolicyError> {
        let special = special_ranges();
        Ok(Self {
            allow: parse_list(allowed, &special)?,
            deny: parse_list(denied, &special)?,
            special,
        })
    }

    /// The special-purpose class of `ip` (already canonical), if any.
    fn class_of(&self, ip: IpAddr) -> Option<&'static str> {
        if self.special.is_empty() {
            // `Default` policy: the table was not built; fall back to a linear parse-free scan.
            return SPECIAL.iter().find_map(|(net, class)| {
                net.parse::<IpNet>()
                    .ok()
                    .filter(|n| n.contains(&ip))
                    .map(|_| *class)
            });
        }
        self.special
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, c)| *c)
    }

    /// Checks a peer; `internal` are the gateway's own media addresses.
    pub fn check(&self, peer: SocketAddr, internal: &[SocketAddr]) -> PolicyVerdict {
        let ip = canonical_ip(peer.ip());
        let port = peer.port();
        if port == 0 {
            return PolicyVerdict::Deny("port zero");
        }
        if self.deny.iter().any(|r| r.matches(ip, port)) {
            return PolicyVerdict::Deny("denied by rule");
        }
        if internal
            .iter()
            .any(|i| i.port() == port && canonical_ip(i.ip()) == ip)
        {
            return PolicyVerdict::Allow;
        }
        let mut matched = false;
        let mut explicit = false;
        for r in self.allow.iter().filter(|r| r.matches(ip, port)) {
            matched = true;
            explicit |= r.explicit;
        }
        if !matched {
            return PolicyVerdict::Deny("not in allow list");
        }
        match self.class_of(ip) {
            Some(class) if !explicit => PolicyVerdict::Deny(class),
            _ => PolicyVerdict::Allow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_all_forms() {
        let p = PeerPolicy::parse(
            "10.0.0.0/8, 203.0.113.5:3478,198.51.100.0/24:5000-6000,[2001:db8::/32]:5000-6000,2001:db8::1,[::1]",
            "",
        )
        .unwrap();
        assert_eq!(p.allow.len(), 6);
        assert_eq!(p.allow[1].ports, (3478, 3478));
        assert_eq!(p.allow[2].ports, (5000, 6000));
        assert_eq!(p.allow[3].ports, (5000, 6000));
        assert_eq!(p.allow[4].ports, (1, u16::MAX));
        assert!(PeerPolicy::parse("", "").unwrap().allow.is_empty());
    }

    #[test]
    fn errors_name_the_rule() {
        for bad in [
            "10.0.0.0/33",
            "nonsense",
            "1.2.3.4:0",
            "1.2.3.4:6000-5000",
            "1.2.3.4:x",
            "[::1",
            "[::1]x",
            "1.2.3.4:70000",
        ] {
            let e = PeerPolicy::parse(&format!("1.1.1.1,{bad}"), "").unwrap_err();
            assert_eq!(e.rule, bad);
            assert!(e.to_string().contains(bad));
        }
        assert!(PeerPolicy::parse("", "bad").is_err());
    }

    #[test]
    fn canonicalizes() {
        assert_eq!(
            canonical_ip("::ffff:127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical_ip("::".parse().unwrap()),
            "::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn wide_allow_keeps_special_denied() {
        let p = PeerPolicy::parse("0.0.0.0/0,::/0", "").unwrap();
        for (a, class) in [
            ("127.0.0.1:5000", "loopback"),
            ("10.0.0.1:5000", "private"),
            ("172.16.0.1:5000", "private"),
            ("192.168.1.1:5000", "private"),
            ("169.254.169.254:80", "link-local"),
            ("100.64.0.1:5000", "shared address space"),
            ("0.0.0.0:5000", "unspecified"),
            ("224.0.0.1:5000", "multicast"),
            ("255.255.255.255:5000", "broadcast"),
            ("[::1]:5000", "loopback"),
            ("[::]:5000", "unspecified"),
            ("[fe80::1]:5000", "link-local"),
            ("[fc00::1]:5000", "private"),
            ("[::ffff:127.0.0.1]:5000", "loopback"),
            ("[::ffff:169.254.169.254]:80", "link-local"),
            ("[::ffff:10.0.0.1]:5000", "private"),
            ("[::127.0.0.1]:5000", "loopback"),
            ("[64:ff9b::7f00:1]:5000", "nat64"),
            ("[2002:7f00:1::]:5000", "6to4"),
            ("[2001::1]:5000", "teredo"),
        ] {
            assert_eq!(p.check(sa(a), &[]), PolicyVerdict::Deny(class), "{a}");
        }
        assert_eq!(p.check(sa("8.8.8.8:53"), &[]), PolicyVerdict::Allow);
        assert_eq!(
            p.check(sa("[2606:4700::1111]:53"), &[]),
            PolicyVerdict::Allow
        );
        assert_eq!(
            p.check(sa("8.8.8.8:0"), &[]),
            PolicyVerdict::Deny("port zero")
        );
        for r in DENY_REASONS {
            assert!(!r.is_empty());
        }
    }

    #[test]
    fn explicit_allow_admits_special() {
        let p = PeerPolicy::parse("127.0.0.1,10.0.0.0/8,[fc00::/7]:5000-6000", "").unwrap();
        assert_eq!(p.check(sa("127.0.0.1:9"), &[]), PolicyVerdict::Allow);
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:9"), &[]),
            PolicyVerdict::Allow
        );
        assert_eq!(p.check(sa("10.9.9.9:9"), &[]), PolicyVerdict::Allow);
        assert_eq!(p.check(sa("[fc00::1]:5500"), &[]), PolicyVerdict::Allow);
        assert_eq!(
            p.check(sa("[fc00::1]:6001"), &[]),
            PolicyVerdict::Deny("not in allow list")
        );
        assert_eq!(
            p.check(sa("127.0.0.2:9"), &[]),
            PolicyVerdict::Deny("not in allow list")
        );
        // An allow entry wider than any special range does not name it.
        let wide = PeerPolicy::parse("8.0.0.0/5", "").unwrap();
        assert_eq!(
            wide.check(sa("10.0.0.1:9"), &[]),
            PolicyVerdict::Deny("private")
        );
    }

    #[test]
    fn deny_wins_and_internal_allowed() {
        let p = PeerPolicy::parse("0.0.0.0/0,10.0.0.0/8", "8.8.8.8,10.0.0.5:5000-5001").unwrap();
        assert_eq!(
            p.check(sa("8.8.8.8:53"), &[]),
            PolicyVerdict::Deny("denied by rule")
        );
        assert_eq!(
            p.check(sa("10.0.0.5:5000"), &[]),
            PolicyVerdict::Deny("denied by rule")
        );
        assert_eq!(p.check(sa("10.0.0.5:5002"), &[]), PolicyVerdict::Allow);
        // Default policy (empty): only internal addresses.
        let d = PeerPolicy::parse("", "").unwrap();
        let internal = [sa("127.0.0.1:50000")];
        assert_eq!(
            d.check(sa("127.0.0.1:50000"), &internal),
            PolicyVerdict::Allow
        );
        assert_eq!(
            d.check(sa("[::ffff:127.0.0.1]:50000"), &internal),
            PolicyVerdict::Allow
        );
        assert_eq!(
            d.check(sa("127.0.0.1:50001"), &internal),
            PolicyVerdict::Deny("not in allow list")
        );
        assert_eq!(
            PeerPolicy::default().check(sa("1.1.1.1:1"), &[]),
            PolicyVerdict::Deny("not in allow list")
        );
        // Deny applies to internal too.
        let dd = PeerPolicy::parse("", "127.0.0.1").unwrap();
        assert_eq!(
            dd.check(sa("127.0.0.1:50000"), &internal),
            PolicyVerdict::Deny("denied by rule")
        );
    }
}
