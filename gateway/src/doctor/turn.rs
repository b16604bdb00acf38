//! A minimal TURN client for the doctor: Allocate (401 → signed retry, one more on 438),
//! CreatePermission, Send indication, Data indication. Over any byte stream (TCP or TLS),
//! cut into messages with the relay's framer. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use relay::framer::{Frame, Framer};
use stun_types::attribute::{ErrorCode, Nonce, Realm, Username, XorMappedAddress};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turn_types::attribute::{
    Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CREATE_PERMISSION, DATA, SEND};

/// A byte stream to a TURN server.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What went wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum TurnFailure {
    /// An error response.
    #[error("the server answered {code} {reason}")]
    Error {
        /// STUN error code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection closed or broken.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// Garbage from the server.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

fn protocol(e: impl std::fmt::Display) -> TurnFailure {
    TurnFailure::Protocol(e.to_string())
}

/// A successful Allocate.
#[derive(Debug, Clone, Copy)]
pub struct Allocated {
    /// XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS: our address as the server sees it.
    pub mapped: Option<SocketAddr>,
}

/// One TURN client connection.
pub struct Client<S> {
    stream: S,
    framer: Framer,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    timeout: Duration,
}

impl<S: Stream> Client<S> {
    /// A client over `stream` with long-term credentials.
    pub fn new(stream: S, username: &str, password: &str, timeout: Duration) -> Self {
        Self {
            stream,
            framer: Framer::new(),
            username: username.to_owned(),
            password: password.to_owned(),
            realm: None,
            nonce: None,
            timeout,
        }
    }

    fn key(&self) -> Option<MessageIntegrityCredentials> {
        Some(
            LongTermKeyCredentials::new(
                self.username.clone(),
                self.password.clone(),
                self.realm.clone()?,
            )
            .into(),
        )
    }

    fn build(
        &self,
        method: Method,
        sign: bool,
        add: impl FnOnce(&mut MessageWriteVec, TransactionId) -> Result<(), TurnFailure>,
    ) -> Result<(Vec<u8>, TransactionId), TurnFailure> {
        let mut msg = Message::builder_request(method, MessageWriteVec::new());
        let tid = msg.transaction_id();
        add(&mut msg, tid)?;
        if sign {
            let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, self.key())
            else {
                return Err(protocol("no REALM/NONCE from the server to sign with"));
            };
            msg.add_attribute(&Username::new(&self.username).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_attribute(&Realm::new(realm).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_attribute(&Nonce::new(nonce).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
                .map_err(protocol)?;
        }
        msg.add_fingerprint().map_err(protocol)?;
        Ok((msg.finish(), tid))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), TurnFailure> {
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| TurnFailure::Timeout(self.timeout))??;
        Ok(())
    }

    /// The next STUN message (ChannelData is skipped).
    async fn next_stun(&mut self, deadline: tokio::time::Instant) -> Result<Vec<u8>, TurnFailure> {
        loop {
            match self.framer.next_frame().map_err(protocol)? {
                Some(Frame::Stun(b)) => return Ok(b.to_vec()),
                Some(Frame::ChannelData(_)) => continue,
                None => {}
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(self.framer.read_buf()))
                .await
                .map_err(|_| TurnFailure::Timeout(self.timeout))??;
            if n == 0 {
                return Err(TurnFailure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.framer.commit(n);
        }
    }

    /// One request; returns the raw response of the same transaction (success or error).
    async fn transact(
        &mut self,
        method: Method,
        sign: bool,
        add: impl Fn(&mut MessageWriteVec, TransactionId) -> Result<(), TurnFailure>,
    ) -> Result<Vec<u8>, TurnFailure> {
        let (bytes, tid) = self.build(method, sign, add)?;
        self.send(&bytes).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let b = self.next_stun(deadline).await?;
            let msg = Message::from_bytes(&b).map_err(protocol)?;
            if msg.transaction_id() != tid || msg.class() == MessageClass::Indication {
                continue;
            }
            if let Ok(r) = msg.attribute::<Realm>() {
                self.realm = Some(r.realm().to_owned());
            }
            if let Ok(n) = msg.attribute::<Nonce>() {
                self.nonce = Some(n.nonce().to_owned());
            }
            return Ok(b);
        }
    }

    /// Sends `method` signed, retrying once after 401 (first contact) and once after 438.
    async fn request(
        &mut self,
        method: Method,
        add: impl Fn(&mut MessageWriteVec, TransactionId) -> Result<(), TurnFailure>,
    ) -> Result<Vec<u8>, TurnFailure> {
        let mut sign = self.nonce.is_some();
        for _ in 0..3 {
            let b = self.transact(method, sign, &add).await?;
            let msg = Message::from_bytes(&b).map_err(protocol)?;
            if msg.class() == MessageClass::Success {
                return Ok(b);
            }
            let err = msg.attribute::<ErrorCode>().map_err(protocol)?;
            let retry = match err.code() {
                401 => !sign,
                438 => true,
                _ => false,
            };
            if !retry {
                return Err(TurnFailure::Error {
                    code: err.code(),
                    reason: err.reason().to_owned(),
                });
            }
            sign = true;
        }
        Err(protocol("the server keeps asking for credentials"))
    }

    /// Allocates a UDP relay.
    pub async fn allocate(&mut self) -> Result<Allocated, TurnFailure> {
        let b = self
            .request(ALLOCATE, |m, _| {
                m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .map_err(protocol)?;
                m.add_attribute(&Lifetime::new(300)).map_err(protocol)
            })
            .await?;
        let msg = Message::from_bytes(&b).map_err(protocol)?;
        let tid = msg.transaction_id();
        let relayed = msg
            .attribute::<XorRelayedAddress>()
            .map_err(|_| protocol("Allocate success without XOR-RELAYED-ADDRESS"))?
            .addr(tid);
        let mapped = msg
            .attribute::<XorMappedAddress>()
            .ok()
            .map(|a| a.addr(tid));
        Ok(Allocated { relayed, mapped })
    }

    /// Deletes the allocation (Refresh with LIFETIME 0); errors are ignored.
    pub async fn release(&mut self) {
        let _ = self
            .request(turn_types::message::REFRESH, |m, _| {
                m.add_attribute(&Lifetime::new(0)).map_err(protocol)
            })
            .await;
    }

    /// Installs a permission for `peer`.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnFailure> {
        self.request(CREATE_PERMISSION, move |m, tid| {
            m.add_attribute(&XorPeerAddress::new(peer, tid))
                .map_err(protocol)
        })
        .await
        .map(drop)
    }

    /// Sends `data` to `peer` in a Send indication.
    pub async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), TurnFailure> {
        let mut msg = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = msg.transaction_id();
        msg.add_attribute(&XorPeerAddress::new(peer, tid))
            .map_err(protocol)?;
        msg.add_attribute(&Data::new(data)).map_err(protocol)?;
        msg.add_fingerprint().map_err(protocol)?;
        let bytes = msg.finish();
        self.send(&bytes).await
    }

    /// The next Data indication: (peer, data).
    pub async fn recv_data(&mut self) -> Result<(SocketAddr, Vec<u8>), TurnFailure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let b = self.next_stun(deadline).await?;
            let msg = Message::from_bytes(&b).map_err(protocol)?;
            if msg.class() != MessageClass::Indication || msg.method() != DATA {
                continue;
            }
            let tid = msg.transaction_id();
            let peer = msg
                .attribute::<XorPeerAddress>()
                .map_err(protocol)?
                .addr(tid);
            let data = msg.attribute::<Data>().map_err(protocol)?.data().to_vec();
            return Ok((peer, data));
        }
    }

    /// Closes our side.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
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
    Err(TurnFailure::Timeout(timeout))
}
