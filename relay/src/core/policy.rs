//! Which peers the relay may send to (DESIGN.md, *Peer policy*).
//!
//! Order of a check: canonicalize IPv4-mapped / IPv4-compatible IPv6 to IPv4, refuse port 0,
//! then the deny list wins, then the gateway's own media addresses are allowed, then the allow
//! list — where an address in a special-purpose range (loopback, private, link-local, …) is
//! admitted only by an allow entry that names such a range explicitly (its network lies inside
//! a special range), so `0.0.0.0/0` or `::/0` never opens loopback or cloud metadata, and
//! where one of the gateway's own addresses (public, advertised, interface: see
//! [`PeerPolicy::check_with_own`]) on any port but its media ports is admitted only by an
//! allow entry that names that very address (a host entry, `/32` or `/128`), so a broad allow
//! list never lets a client relay to the gateway's own services (its HTTP API, its relay
//! ports, its TURN port).

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
    "as112",
    "amt",
    "cloud host",
    "ietf protocol assignment",
    "srv6",
    "own address",
];

/// Special-purpose ranges and the class each belongs to. Order matters only for the class
/// name: the first containing range names it. Checked against the IANA IPv4 and IPv6
/// Special-Purpose Address Registries; ranges the registry calls globally reachable but no
/// browser's peer ever is (6to4 relay anycast, AS112, AMT, the 2001::/23 IETF block) are
/// here too, and so is Azure's host address (168.63.129.16, the wire server: metadata,
/// health probes and DNS for every VM).
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "as112"),
    ("192.52.193.0/24", "amt"),
    ("192.88.99.0/24", "6to4"),
    ("192.175.48.0/24", "as112"),
    ("168.63.129.16/32", "cloud host"),
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
    ("3fff::/20", "documentation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "reserved"),
    ("2002::/16", "6to4"),
    ("2001::/32", "teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "amt"),
    ("2001:4:112::/48", "as112"),
    ("2620:4f:8000::/48", "as112"),
    // The rest of the IETF protocol assignments block (PCP and TURN anycast, ORCHID, drone
    // remote ID, ...), after its sub-blocks so that those keep their names.
    ("2001::/23", "ietf protocol assignment"),
    ("5f00::/16", "srv6"),
];

/// One allow or deny entry: a network and an inclusive port range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpNet,
    ports: (u16, u16),
    /// The network lies inside a special-purpose range: it may admit such addresses.
    explicit: bool,
    /// The network is one address (`/32`, `/128`): it may admit that address when it is one
    /// of the gateway's own.
    host: bool,
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

/// A sibling gateway node's media: one address and its media port range (cluster mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingMedia {
    /// The node's advertised media address.
    pub ip: IpAddr,
    /// Its first media port.
    pub first: u16,
    /// Its last media port.
    pub last: u16,
}

impl SiblingMedia {
    /// Whether `ip:port` is this node's media.
    pub fn contains(&self, ip: IpAddr, port: u16) -> bool {
        canonical_ip(self.ip) == canonical_ip(ip) && (self.first..=self.last).contains(&port)
    }
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
    let host = net.prefix_len() == net.max_prefix_len();
    Ok(Rule {
        net,
        ports,
        explicit,
        host,
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

    /// Checks a peer; `internal` are the gateway's own media addresses. Knows none of the
    /// gateway's other addresses: see [`PeerPolicy::check_with_own`].
    pub fn check(&self, peer: SocketAddr, internal: &[SocketAddr]) -> PolicyVerdict {
        self.check_with_own(peer, internal, &[])
    }

    /// Checks a peer; `internal` are the gateway's own media addresses (always allowed
    /// unless denied by a rule), `own` every address of the gateway (public, advertised,
    /// interface): on any other port, such an address is refused unless an allow entry
    /// names it as a single host.
    pub fn check_with_own(
        &self,
        peer: SocketAddr,
        internal: &[SocketAddr],
        own: &[IpAddr],
    ) -> PolicyVerdict {
        self.check_with_siblings(peer, internal, &[], own)
    }

    /// As [`PeerPolicy::check_with_own`], with `siblings`: the media addresses of the other
    /// gateway nodes of a cluster, allowed like the gateway's own media (unless denied by a
    /// rule) and only on their media ports, so that an allocation landing on one node can
    /// reach a session whose media is on another.
    pub fn check_with_siblings(
        &self,
        peer: SocketAddr,
        internal: &[SocketAddr],
        siblings: &[SiblingMedia],
        own: &[IpAddr],
    ) -> PolicyVerdict {
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
        if siblings.iter().any(|s| s.contains(ip, port)) {
            return PolicyVerdict::Allow;
        }
        let mut matched = false;
        let mut explicit = false;
        let mut named = false;
        for r in self.allow.iter().filter(|r| r.matches(ip, port)) {
            matched = true;
            explicit |= r.explicit;
            named |= r.host;
        }
        if !matched {
            return PolicyVerdict::Deny("not in allow list");
        }
        if !named && own.iter().any(|o| canonical_ip(*o) == ip) {
            return PolicyVerdict::Deny("own address");
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

    /// Every class the table can name is a label the `forbidden` counter knows.
    #[test]
    fn every_class_is_a_deny_reason() {
        for (net, class) in SPECIAL {
            assert!(net.parse::<IpNet>().is_ok(), "{net}");
            assert!(DENY_REASONS.contains(class), "{class}");
        }
        assert!(DENY_REASONS.contains(&"own address"));
    }

    /// The ranges added for issue 14 and the IANA special-purpose registry review: each
    /// refused by the default policy, refused under a broad allow list (with its class),
    /// and admitted by an allow entry that names its range.
    #[test]
    fn special_purpose_entries() {
        let default = PeerPolicy::parse("", "").unwrap();
        let broad = PeerPolicy::parse("0.0.0.0/0,::/0", "").unwrap();
        for (peer, class, range) in [
            ("192.88.99.1:3478", "6to4", "192.88.99.0/24"),
            ("192.88.99.2:3478", "6to4", "192.88.99.2"),
            ("192.31.196.1:53", "as112", "192.31.196.0/24"),
            ("192.175.48.6:53", "as112", "192.175.48.0/24"),
            ("[2620:4f:8000::6]:53", "as112", "[2620:4f:8000::/48]"),
            ("[2001:4:112::1]:53", "as112", "[2001:4:112::/48]"),
            ("192.52.193.1:2268", "amt", "192.52.193.0/24"),
            ("[2001:3::1]:2268", "amt", "[2001:3::/32]"),
            ("168.63.129.16:80", "cloud host", "168.63.129.16"),
            ("168.63.129.16:32526", "cloud host", "168.63.129.16/32"),
            ("[64:ff9b:1::1]:5000", "nat64", "[64:ff9b:1::/48]"),
            ("[64:ff9b::808:808]:53", "nat64", "[64:ff9b::/96]"),
            ("[100::1]:5000", "discard-only", "[100::/64]"),
            ("[100:0:0:1::1]:5000", "reserved", "[100:0:0:1::/64]"),
            ("[2001::1]:3478", "teredo", "[2001::/32]"),
            (
                "[2001:1::2]:3478",
                "ietf protocol assignment",
                "[2001:1::2]",
            ),
            ("[2001:2::1]:5000", "benchmarking", "[2001:2::/48]"),
            (
                "[2001:20::1]:5000",
                "ietf protocol assignment",
                "[2001:20::/28]",
            ),
            (
                "[2001:1ff:ffff::1]:5000",
                "ietf protocol assignment",
                "[2001::/23]",
            ),
            ("[2002:c000:201::1]:5000", "6to4", "[2002::/16]"),
            ("[3fff::1]:5000", "documentation", "[3fff::/20]"),
            ("[5f00::1]:5000", "srv6", "[5f00::/16]"),
            ("[fc00::1]:5000", "private", "[fc00::/7]"),
            ("[fd12:3456::1]:5000", "private", "[fd00::/8]"),
            ("[fe80::1]:5000", "link-local", "[fe80::/10]"),
            ("[febf::1]:5000", "link-local", "[fe80::/10]"),
            ("[fec0::1]:5000", "site-local", "[fec0::/10]"),
            ("[ff02::1]:5000", "multicast", "[ff00::/8]"),
            ("[ff0e::1]:5000", "multicast", "[ff0e::/16]"),
            ("[2001:db8::1]:5000", "documentation", "[2001:db8::/32]"),
            // IPv4-mapped forms of the new IPv4 ranges.
            ("[::ffff:168.63.129.16]:80", "cloud host", "168.63.129.16"),
            ("[::ffff:192.88.99.1]:80", "6to4", "192.88.99.0/24"),
        ] {
            let a = sa(peer);
            assert_eq!(
                default.check(a, &[]),
                PolicyVerdict::Deny("not in allow list"),
                "{peer} under the default policy"
            );
            assert_eq!(
                broad.check(a, &[]),
                PolicyVerdict::Deny(class),
                "{peer} under 0.0.0.0/0,::/0"
            );
            let named = PeerPolicy::parse(&format!("0.0.0.0/0,::/0,{range}"), "").unwrap();
            assert_eq!(
                named.check(a, &[]),
                PolicyVerdict::Allow,
                "{peer} with {range}"
            );
        }
        // Neighbours of the new ranges stay ordinary global addresses.
        for peer in [
            "192.88.100.1:3478",
            "192.88.98.255:3478",
            "192.31.197.1:53",
            "192.175.49.1:53",
            "192.52.194.1:53",
            "168.63.129.15:80",
            "168.63.129.17:80",
            "[2620:4f:8001::1]:53",
            "[2001:200::1]:53",
            "[2003::1]:53",
            "[3fff:1000::1]:53",
            "[5f01::1]:53",
        ] {
            assert_eq!(broad.check(sa(peer), &[]), PolicyVerdict::Allow, "{peer}");
            assert_eq!(
                default.check(sa(peer), &[]),
                PolicyVerdict::Deny("not in allow list"),
                "{peer}"
            );
        }
    }

    #[test]
    fn sibling_media_passes_on_its_ports_only_and_deny_rules_still_win() {
        let default = PeerPolicy::parse("", "").unwrap();
        let sib = [SiblingMedia {
            ip: "127.0.0.3".parse().unwrap(),
            first: 50000,
            last: 50015,
        }];
        let check = |p: &PeerPolicy, peer: &str| p.check_with_siblings(sa(peer), &[], &sib, &[]);
        assert_eq!(check(&default, "127.0.0.3:50000"), PolicyVerdict::Allow);
        assert_eq!(check(&default, "127.0.0.3:50015"), PolicyVerdict::Allow);
        assert_eq!(
            check(&default, "[::ffff:127.0.0.3]:50001"),
            PolicyVerdict::Allow
        );
        assert_ne!(
            check(&default, "127.0.0.3:50016"),
            PolicyVerdict::Allow,
            "not a media port"
        );
        assert_ne!(
            check(&default, "127.0.0.3:9100"),
            PolicyVerdict::Allow,
            "its HTTP API"
        );
        assert_ne!(
            check(&default, "127.0.0.4:50000"),
            PolicyVerdict::Allow,
            "not a sibling"
        );
        let deny = PeerPolicy::parse("", "127.0.0.3").unwrap();
        assert_eq!(
            check(&deny, "127.0.0.3:50000"),
            PolicyVerdict::Deny("denied by rule")
        );
        assert_eq!(
            default.check_with_own(sa("127.0.0.3:50000"), &[], &[]),
            PolicyVerdict::Deny("not in allow list"),
            "without the cluster, no sibling"
        );
    }

    /// The gateway's own addresses: its media ports pass (they are `internal`), any other
    /// port of the same address is refused under a broad allow list, unless an allow entry
    /// names the address itself.
    #[test]
    fn own_addresses_refused_except_media_ports() {
        let media = [sa("203.0.113.7:50000"), sa("[2001:db8:7::7]:50000")];
        let own: Vec<IpAddr> = vec![
            "198.51.100.9".parse().unwrap(), // a public address that is not advertised
            "203.0.113.7".parse().unwrap(),  // advertised
            "2001:db8:7::7".parse().unwrap(),
            "8.8.4.4".parse().unwrap(), // an ordinary public interface address
        ];
        let broad = PeerPolicy::parse("0.0.0.0/0,::/0", "").unwrap();
        // Media ports pass.
        for m in media {
            assert_eq!(broad.check_with_own(m, &media, &own), PolicyVerdict::Allow);
        }
        // Other ports of the same addresses: the API, the TURN port, relay ports.
        for peer in [
            "8.8.4.4:443",
            "8.8.4.4:8080",
            "8.8.4.4:61000",
            "8.8.4.4:50000",
            "[::ffff:8.8.4.4]:443",
            "[::8.8.4.4]:443",
        ] {
            assert_eq!(
                broad.check_with_own(sa(peer), &media, &own),
                PolicyVerdict::Deny("own address"),
                "{peer}"
            );
            // Without the own list the same address is an ordinary public peer.
            assert_eq!(
                broad.check(sa(peer), &media),
                PolicyVerdict::Allow,
                "{peer}"
            );
        }
        // Special-purpose own addresses keep their class (denied earlier or later, never
        // allowed).
        for peer in ["203.0.113.7:443", "[2001:db8:7::7]:443", "198.51.100.9:1"] {
            assert!(matches!(
                broad.check_with_own(sa(peer), &media, &own),
                PolicyVerdict::Deny(_)
            ));
        }
        // Another address in the same network is not ours.
        assert_eq!(
            broad.check_with_own(sa("8.8.4.5:443"), &media, &own),
            PolicyVerdict::Allow
        );
        // A network entry does not name the address; a host entry does (with its ports).
        let net = PeerPolicy::parse("8.8.4.0/24", "").unwrap();
        assert_eq!(
            net.check_with_own(sa("8.8.4.4:443"), &media, &own),
            PolicyVerdict::Deny("own address")
        );
        let named = PeerPolicy::parse("0.0.0.0/0,8.8.4.4:8080", "").unwrap();
        assert_eq!(
            named.check_with_own(sa("8.8.4.4:8080"), &media, &own),
            PolicyVerdict::Allow
        );
        assert_eq!(
            named.check_with_own(sa("8.8.4.4:443"), &media, &own),
            PolicyVerdict::Deny("own address")
        );
        let named6 = PeerPolicy::parse("::/0,[2001:db8:7::7]", "").unwrap();
        assert_eq!(
            named6.check_with_own(sa("[2001:db8:7::7]:443"), &media, &own),
            PolicyVerdict::Allow,
            "a host entry names the address (and, lying in documentation space, its class)"
        );
        // The default policy: media ports only.
        let default = PeerPolicy::parse("", "").unwrap();
        assert_eq!(
            default.check_with_own(media[0], &media, &own),
            PolicyVerdict::Allow
        );
        assert_eq!(
            default.check_with_own(sa("203.0.113.7:50001"), &media, &own),
            PolicyVerdict::Deny("not in allow list")
        );
        // A deny rule still wins over a media port.
        let deny = PeerPolicy::parse("0.0.0.0/0", "203.0.113.7").unwrap();
        assert_eq!(
            deny.check_with_own(media[0], &media, &own),
            PolicyVerdict::Deny("denied by rule")
        );
    }
}
