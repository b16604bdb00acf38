//! The doctor's TURN and STUN probes. TURN goes through the relay's own client
//! ([`relay::client`]: the one the tests and the bench use), re-exported here under the
//! names the checks use; STUN Binding over UDP is below. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use stun_types::attribute::XorMappedAddress;
use stun_types::message::{Message, MessageWriteVec};
use stun_types::prelude::*;

pub use relay::client::{
    AllocateOk as Allocated, ClientError as TurnFailure, Connection as Client,
};

/// A byte stream to a TURN server.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

fn protocol(e: impl std::fmt::Display) -> TurnFailure {
    TurnFailure::Protocol(e.to_string())
}

/// A STUN Binding request over UDP to `server`: the address it sees us at.
pub async fn stun_binding(
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, TurnFailure> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    let mut msg = Message::builder_request(stun_types::message::BINDING, MessageWriteVec::new());
    let tid = msg.transaction_id();
    msg.add_fingerprint().map_err(protocol)?;
    let bytes = msg.finish();
    let mut buf = vec![0u8; 2048];
    // Three tries, as UDP loses packets.
    for _ in 0..3 {
        sock.send_to(&bytes, server).await?;
        let wait = timeout / 3;
        let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await else {
            continue;
        };
        let (n, _) = r?;
        let Ok(msg) = Message::from_bytes(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        if msg.transaction_id() != tid {
            continue;
        }
        return msg
            .attribute::<XorMappedAddress>()
            .map(|a| a.addr(tid))
            .map_err(|_| protocol("Binding response without XOR-MAPPED-ADDRESS"));
    }
    Err(TurnFailure::Timeout(format!(
        "a Binding response from {server} within {timeout:?}"
    )))
}
