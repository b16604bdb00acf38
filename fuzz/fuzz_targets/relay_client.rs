//! Fuzzes the relay core's state machine: a sequence of inputs, each a client message, a
//! peer datagram, a clock step or a revocation check, is fed to one `relay::core::Client`
//! with a fake clock and fake relay ports. Nothing may panic, and every reply must be a
//! whole STUN message.
//!
//! Input format: records `[op][len_hi][len_lo][len bytes]`; `op % 4` picks client message,
//! peer datagram (source port from the first two bytes), time step (seconds = first byte)
//! or revocation check.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::core::{
    Client, ClientOutput, Config, Family, FiveTuple, NonceKey, Now, PeerPolicy, RelayPortError,
    RelayPorts, Shared, Transport,
};

struct FakePorts(u16);

impl RelayPorts for FakePorts {
    fn open(&mut self, family: Family, _even: bool) -> Result<SocketAddr, RelayPortError> {
        self.0 = self.0.wrapping_add(2);
        match family {
            Family::V4 => Ok(SocketAddr::from(([192, 0, 2, 10], 40_000 + self.0 % 1000))),
            Family::V6 => Err(RelayPortError::FamilyNotSupported),
        }
    }
    fn close(&mut self, _relayed: SocketAddr) {}
}

fn shared() -> std::sync::Arc<Shared> {
    static SHARED: OnceLock<std::sync::Arc<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            Shared::new(
                Config::default(),
                auth::SecretRing::parse("fuzz-secret").expect("ring"),
                PeerPolicy::parse("0.0.0.0/0", "").expect("policy"),
                NonceKey::from_bytes([7; 32]),
            )
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let base = Instant::now();
    let mut t = Duration::ZERO;
    let transport = if data.first().is_some_and(|b| b & 1 == 1) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let tuple = FiveTuple {
        transport,
        client: SocketAddr::from(([203, 0, 113, 7], 5000)),
        server: SocketAddr::from(([192, 0, 2, 1], 443)),
    };
    let mut client = Client::new(shared(), tuple);
    let mut ports = FakePorts(0);
    let mut out = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let body = &rest[3..end];
        rest = &rest[end..];
        let now = Now {
            mono: base + t,
            unix: 1_700_000_000 + t.as_secs(),
        };
        match op % 4 {
            0 => match client.on_client(body, now, &mut ports, &mut out) {
                ClientOutput::Reply => {
                    assert!(out.len() >= 20, "a reply is a whole STUN message");
                    assert!(stun_types::message::Message::from_bytes(&out).is_ok());
                }
                ClientOutput::ToPeer { data, .. } => assert!(data.len() <= body.len()),
                ClientOutput::None | ClientOutput::Close => {}
            },
            1 => {
                let port = body
                    .get(..2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .unwrap_or(1);
                let peer = SocketAddr::from(([198, 51, 100, 1], port));
                let _ = client.on_peer(peer, body, now, &mut out);
            }
            2 => {
                t += Duration::from_secs(u64::from(body.first().copied().unwrap_or(1)));
                client.handle_timeout(now, &mut ports);
            }
            _ => {
                let _ = client.check_revoked(now, &mut ports);
            }
        }
        let _ = client.poll_timeout();
    }
    client.close(&mut ports);
});
