//! Relay sockets: the real UDP sockets behind allocations' relayed addresses.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use crate::core::{Family, RelayPortError, RelayPorts};

/// An inclusive UDP port range, e.g. `49152-65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a port range like 50000-50050"))?;
        let min: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a port number"))?;
        let max: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a port number"))?;
        if min == 0 || min > max {
            return Err(format!(
                "port range {s:?} must be ascending and start above 0"
            ));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// The relay socket of one client (a client has at most one allocation).
pub(crate) struct SocketPorts {
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    range: Option<PortRange>,
    /// The local address the client reached; names the relayed address when the relay
    /// sockets bind to a wildcard address.
    local: IpAddr,
    /// The allocation's socket, once opened.
    pub socket: Option<Arc<UdpSocket>>,
}

impl SocketPorts {
    pub fn new(
        ipv4: Option<IpAddr>,
        ipv6: Option<IpAddr>,
        range: Option<PortRange>,
        local: IpAddr,
    ) -> Self {
        Self {
            ipv4,
            ipv6,
            range,
            local: local.to_canonical(),
            socket: None,
        }
    }

    fn bind(&self, ip: IpAddr) -> Result<std::net::UdpSocket, RelayPortError> {
        let Some(range) = self.range else {
            return std::net::UdpSocket::bind((ip, 0))
                .map_err(|e| RelayPortError::Exhausted(e.to_string()));
        };
        // Start at a random port so allocations do not all probe the same low ports.
        let span = u32::from(range.max - range.min) + 1;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            let port = range.min as u32 + (start + i) % span;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if let Ok(s) = std::net::UdpSocket::bind((ip, port)) {
                return Ok(s);
            }
        }
        Err(RelayPortError::Exhausted(format!(
            "every port of {range} is in use on {ip}"
        )))
    }
}

impl RelayPorts for SocketPorts {
    fn open(&mut self, family: Family) -> Result<SocketAddr, RelayPortError> {
        let ip = match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
        .ok_or(RelayPortError::FamilyNotSupported)?;
        let std_socket = self.bind(ip)?;
        std_socket
            .set_nonblocking(true)
            .map_err(|e| RelayPortError::Exhausted(e.to_string()))?;
        let socket = UdpSocket::from_std(std_socket)
            .map_err(|e| RelayPortError::Exhausted(e.to_string()))?;
        let mut addr = socket
            .local_addr()
            .map_err(|e| RelayPortError::Exhausted(e.to_string()))?;
        if addr.ip().is_unspecified() {
            // A wildcard bind has no address a peer could send to: name the relayed
            // address after the local address this client reached, when it is concrete
            // and of the same family.
            if self.local.is_unspecified() || self.local.is_ipv4() != addr.is_ipv4() {
                return Err(RelayPortError::Exhausted(format!(
                    "relay sockets bind to {} and the client's local address {} cannot name \
                     the relayed address: set TURN_RELAY_IP",
                    addr.ip(),
                    self.local
                )));
            }
            addr.set_ip(self.local);
        }
        self.socket = Some(Arc::new(socket));
        Ok(addr)
    }

    fn close(&mut self, _relayed: SocketAddr) {
        self.socket = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(
            "50000-50050".parse::<PortRange>(),
            Ok(PortRange {
                min: 50000,
                max: 50050
            })
        );
        assert!("5-1".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("70000-70001".parse::<PortRange>().is_err());
        assert!("50000".parse::<PortRange>().is_err());
    }

    #[tokio::test]
    async fn binds_inside_range() {
        let mut p = SocketPorts::new(
            Some("127.0.0.1".parse().unwrap()),
            None,
            Some("40000-40100".parse().unwrap()),
            "127.0.0.1".parse().unwrap(),
        );
        let a = p.open(Family::V4).unwrap();
        assert!((40000..=40100).contains(&a.port()));
        assert_eq!(p.open(Family::V6), Err(RelayPortError::FamilyNotSupported));
    }

    #[tokio::test]
    async fn wildcard_bind_names_the_local_address() {
        let mut p = SocketPorts::new(
            Some("0.0.0.0".parse().unwrap()),
            None,
            None,
            "127.0.0.1".parse().unwrap(),
        );
        let a = p.open(Family::V4).unwrap();
        assert_eq!(a.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let mut p = SocketPorts::new(
            Some("0.0.0.0".parse().unwrap()),
            None,
            None,
            "0.0.0.0".parse().unwrap(),
        );
        assert!(p.open(Family::V4).is_err());
    }
}
