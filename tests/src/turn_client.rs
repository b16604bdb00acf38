//! An async TURN client over TCP or TLS, for end-to-end tests of the relay.
//!
//! Messages are built and parsed with `stun-types` / `turn-types` (long-term credentials:
//! USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, FINGERPRINT); the byte stream is cut into
//! messages with the relay's own [`relay::framer::Framer`]. Every wait is bounded by
//! [`TurnClient::timeout`]: a test never hangs on a silent server.
//!
//! Two levels:
//!
//! * [`TurnClient::allocate`], [`TurnClient::refresh`], [`TurnClient::create_permission`],
//!   [`TurnClient::channel_bind`] do what a normal client does (the 401 → retry with the
//!   nonce dance, one retry on 438 Stale Nonce) and return the error code on failure.
//! * [`TurnClient::transact`] sends exactly one request (signed or not, no retry) and hands
//!   back the raw [`Reply`], so tests can assert 401/403/437/438/486/508 exactly.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use relay::framer::{write_channel_data, Frame, FrameError, Framer};
use rustls::pki_types::{CertificateDer, ServerName};
use stun_types::attribute::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, RawAttribute, Realm, Software, Username,
    XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use stun_types::AddressFamily;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedAddressFamily, RequestedTransport, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

/// Default bound on every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream the client runs over (plain TCP or TLS).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// An error response from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TURN error {code} {reason:?}")]
pub struct TurnError {
    /// ERROR-CODE value (e.g. 401, 403, 437, 438, 486, 508).
    pub code: u16,
    /// Its reason phrase.
    pub reason: String,
}

/// Anything that went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error response.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// No answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// Socket or TLS error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server's byte stream cannot be cut into messages.
    #[error("framing error: {0}")]
    Framing(#[from] FrameError),
    /// A message from the server that does not parse or lacks what it must carry.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The STUN error code, when the server answered with an error response.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Turn(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether the connection is gone (closed, reset, broken pipe).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

fn protocol(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(msg.to_string())
}

/// A successful Allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocateOk {
    /// XOR-RELAYED-ADDRESS.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS (our address as the server sees it).
    pub mapped: SocketAddr,
    /// LIFETIME granted, in seconds.
    pub lifetime: u32,
}

/// Where relayed data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Data indication from this peer.
    Peer(SocketAddr),
    /// A ChannelData message on this channel.
    Channel(u16),
}

/// Attributes a test can put into a request.
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    /// REQUESTED-TRANSPORT (17 = UDP).
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedFamily(AddressFamily),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// XOR-PEER-ADDRESS.
    Peer(SocketAddr),
    /// CHANNEL-NUMBER.
    Channel(u16),
    /// DATA.
    Data(&'a [u8]),
    /// SOFTWARE.
    Software(&'a str),
    /// Any attribute, raw.
    Raw(u16, &'a [u8]),
}

/// Whether and how a request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No USERNAME/REALM/NONCE/MESSAGE-INTEGRITY (the first Allocate).
    None,
    /// Signed with the stored credentials, realm and nonce.
    LongTerm,
}

/// One response, owned.
#[derive(Debug, Clone)]
pub struct Reply {
    bytes: Vec<u8>,
    /// Whether the response carried MESSAGE-INTEGRITY that verified with our key
    /// (`None`: it carried none).
    pub integrity_ok: Option<bool>,
}

impl Reply {
    /// Parses the stored message (it parsed when received).
    pub fn message(&self) -> Message<'_> {
        Message::from_bytes(&self.bytes).expect("reply parsed when received")
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Success response?
    pub fn is_success(&self) -> bool {
        self.message().class() == MessageClass::Success
    }

    /// The error, for an error response.
    pub fn error(&self) -> Option<TurnError> {
        let msg = self.message();
        if msg.class() != MessageClass::Error {
            return None;
        }
        Some(match msg.attribute::<ErrorCode>() {
            Ok(e) => TurnError {
                code: e.code(),
                reason: e.reason().to_owned(),
            },
            // An error response without ERROR-CODE: report code 0 so tests fail loudly.
            Err(_) => TurnError {
                code: 0,
                reason: "error response without ERROR-CODE".into(),
            },
        })
    }

    /// Ok for a success response, the error otherwise.
    pub fn into_result(self) -> Result<Reply, ClientError> {
        match self.error() {
            Some(e) => Err(e.into()),
            None => Ok(self),
        }
    }

    /// NONCE, if present.
    pub fn nonce(&self) -> Option<String> {
        let msg = self.message();
        msg.attribute::<Nonce>().ok().map(|n| n.nonce().to_owned())
    }

    /// REALM, if present.
    pub fn realm(&self) -> Option<String> {
        let msg = self.message();
        msg.attribute::<Realm>().ok().map(|r| r.realm().to_owned())
    }

    /// LIFETIME, if present.
    pub fn lifetime(&self) -> Option<u32> {
        let msg = self.message();
        msg.attribute::<Lifetime>().ok().map(|l| l.seconds())
    }

    /// XOR-RELAYED-ADDRESS, if present.
    pub fn relayed(&self) -> Option<SocketAddr> {
        let msg = self.message();
        let tid = msg.transaction_id();
        msg.attribute::<XorRelayedAddress>()
            .ok()
            .map(|a| a.addr(tid))
    }

    /// XOR-MAPPED-ADDRESS, if present.
    pub fn mapped(&self) -> Option<SocketAddr> {
        let msg = self.message();
        let tid = msg.transaction_id();
        msg.attribute::<XorMappedAddress>()
            .ok()
            .map(|a| a.addr(tid))
    }

    /// Whether FINGERPRINT is present (it is checked while parsing).
    pub fn has_fingerprint(&self) -> bool {
        self.message().has_attribute(Fingerprint::TYPE)
    }
}

/// Relayed data that arrived while waiting for something else.
type Received = (Origin, Vec<u8>);

/// A TURN client over one TCP or TLS connection.
pub struct TurnClient {
    stream: Box<dyn ClientStream>,
    framer: Framer,
    local: SocketAddr,
    server: SocketAddr,
    username: Option<String>,
    password: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    /// Data that arrived while a transaction was pending.
    queued: VecDeque<Received>,
    /// Bound on every wait.
    pub timeout: Duration,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("local", &self.local)
            .field("server", &self.server)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// A rustls client configuration trusting only `root` (a test CA or a self-signed
/// certificate), with the given ALPN ids.
pub fn tls_client_config(root: &CertificateDer<'_>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(root.clone().into_owned())
        .expect("test root certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Opens a TLS connection to `addr`, checking the certificate for `server_name` against
/// `root`. Bounded by `timeout`.
pub async fn connect_tls_stream(
    addr: SocketAddr,
    server_name: &str,
    root: &CertificateDer<'_>,
    alpn: &[&[u8]],
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| protocol(format!("server name {server_name:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(root, alpn));
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        connector.connect(name, tcp).await
    };
    Ok(tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(format!("TLS connection to {addr}")))??)
}

impl TurnClient {
    /// Connects over plain TCP.
    pub async fn connect_tcp(addr: SocketAddr) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(format!("TCP connection to {addr}")))??;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        Ok(Self::over(Box::new(tcp), local, addr))
    }

    /// Connects over TLS without ALPN (as browsers do on TURNS), trusting only `root_der`.
    pub async fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        root_der: &CertificateDer<'_>,
    ) -> Result<Self, ClientError> {
        Self::connect_tls_alpn(addr, server_name, root_der, &[]).await
    }

    /// Connects over TLS offering `alpn` (e.g. `b"stun.turn"`), trusting only `root_der`.
    pub async fn connect_tls_alpn(
        addr: SocketAddr,
        server_name: &str,
        root_der: &CertificateDer<'_>,
        alpn: &[&[u8]],
    ) -> Result<Self, ClientError> {
        let tls = connect_tls_stream(addr, server_name, root_der, alpn, DEFAULT_TIMEOUT).await?;
        let local = tls.get_ref().0.local_addr()?;
        Ok(Self::over(Box::new(tls), local, addr))
    }

    /// Runs over an already connected stream.
    pub fn over(stream: Box<dyn ClientStream>, local: SocketAddr, server: SocketAddr) -> Self {
        Self {
            stream,
            framer: Framer::new(),
            local,
            server,
            username: None,
            password: None,
            realm: None,
            nonce: None,
            queued: VecDeque::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Our local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Sets the credentials used by [`Auth::LongTerm`].
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
    }

    /// The nonce last received from the server.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Replaces the stored nonce (to send a stale or forged one).
    pub fn set_nonce(&mut self, nonce: &str) {
        self.nonce = Some(nonce.to_owned());
    }

    /// The realm last received from the server.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    fn key(&self) -> Option<MessageIntegrityCredentials> {
        Some(
            LongTermKeyCredentials::new(
                self.username.clone()?,
                self.password.clone()?,
                self.realm.clone()?,
            )
            .into(),
        )
    }

    /// Builds a request of `method` with `attrs`, signed as `auth` says, ending with
    /// FINGERPRINT. Returns the bytes and the transaction id.
    pub fn build_request(
        &self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Auth,
    ) -> Result<(Vec<u8>, TransactionId), ClientError> {
        let mut msg = Message::builder_request(method, MessageWriteVec::new());
        let tid = msg.transaction_id();
        add_attrs(&mut msg, attrs, tid)?;
        if auth == Auth::LongTerm {
            let (Some(user), Some(realm), Some(nonce), Some(key)) =
                (&self.username, &self.realm, &self.nonce, self.key())
            else {
                return Err(protocol(
                    "signing needs credentials, a realm and a nonce (do the 401 exchange first)",
                ));
            };
            msg.add_attribute(&Username::new(user).map_err(protocol)?)
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

    /// Writes raw bytes to the server.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let fut = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout("write".into()))??;
        Ok(())
    }

    /// Sends one request and waits for its response, without any retry. Error responses
    /// come back as a [`Reply`] too; REALM and NONCE in any response are remembered.
    pub async fn transact(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Auth,
    ) -> Result<Reply, ClientError> {
        let (bytes, tid) = self.build_request(method, attrs, auth)?;
        self.send_raw(&bytes).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let frame = self
                .read_frame_until(deadline, &format!("a response to {method}"))
                .await?;
            let bytes = match frame {
                Incoming::Channel(ch, data) => {
                    self.queued.push_back((Origin::Channel(ch), data));
                    continue;
                }
                Incoming::Stun(b) => b,
            };
            let msg = Message::from_bytes(&bytes)
                .map_err(|e| protocol(format!("unparsable STUN message from server: {e}")))?;
            match msg.class() {
                MessageClass::Indication => {
                    if let Some(d) = parse_data_indication(&msg)? {
                        self.queued.push_back(d);
                    }
                    continue;
                }
                MessageClass::Request => {
                    return Err(protocol(format!("server sent a request: {msg}")));
                }
                MessageClass::Success | MessageClass::Error => {}
            }
            if msg.transaction_id() != tid {
                return Err(protocol(format!(
                    "response with transaction id {} while waiting for {tid}",
                    msg.transaction_id()
                )));
            }
            if msg.method() != method {
                return Err(protocol(format!(
                    "response method {} to a {method} request",
                    msg.method()
                )));
            }
            if let Ok(r) = msg.attribute::<Realm>() {
                self.realm = Some(r.realm().to_owned());
            }
            if let Ok(n) = msg.attribute::<Nonce>() {
                self.nonce = Some(n.nonce().to_owned());
            }
            let integrity_ok = if msg.has_attribute(MessageIntegrity::TYPE) {
                Some(
                    self.key()
                        .is_some_and(|k| msg.validate_integrity(&k).is_ok()),
                )
            } else {
                None
            };
            return Ok(Reply {
                bytes,
                integrity_ok,
            });
        }
    }

    /// A signed request with one retry on 438 Stale Nonce (with the new nonce). Error
    /// responses become [`ClientError::Turn`].
    pub async fn request(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
    ) -> Result<Reply, ClientError> {
        let reply = self.transact(method, attrs, Auth::LongTerm).await?;
        if reply.error().is_some_and(|e| e.code == 438) {
            return self
                .transact(method, attrs, Auth::LongTerm)
                .await?
                .into_result();
        }
        reply.into_result()
    }

    /// An unauthenticated Allocate for a UDP relay of `family`. Normally answered with 401
    /// carrying REALM and NONCE (remembered for signing).
    pub async fn allocate_unauthenticated(
        &mut self,
        family: AddressFamily,
    ) -> Result<Reply, ClientError> {
        self.transact(ALLOCATE, &allocate_attrs(family), Auth::None)
            .await
    }

    /// One signed Allocate with the stored credentials and nonce, no retry.
    pub async fn allocate_signed(
        &mut self,
        family: AddressFamily,
    ) -> Result<AllocateOk, ClientError> {
        let reply = self
            .transact(ALLOCATE, &allocate_attrs(family), Auth::LongTerm)
            .await?
            .into_result()?;
        allocate_ok(&reply)
    }

    /// Allocates an IPv4 UDP relay: 401 → signed retry (→ one more on 438).
    pub async fn allocate(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<AllocateOk, ClientError> {
        self.allocate_family(username, password, AddressFamily::IPV4)
            .await
    }

    /// Allocates a UDP relay of `family`: 401 → signed retry (→ one more on 438).
    pub async fn allocate_family(
        &mut self,
        username: &str,
        password: &str,
        family: AddressFamily,
    ) -> Result<AllocateOk, ClientError> {
        self.set_credentials(username, password);
        let first = self.allocate_unauthenticated(family).await?;
        match first.error() {
            Some(e) if e.code == 401 => {}
            Some(e) => return Err(e.into()),
            None => {
                return Err(protocol(
                    "the server granted an Allocate without credentials",
                ))
            }
        }
        if self.realm.is_none() || self.nonce.is_none() {
            return Err(protocol("401 without REALM and NONCE"));
        }
        let attrs = allocate_attrs(family);
        let reply = self.transact(ALLOCATE, &attrs, Auth::LongTerm).await?;
        let reply = if reply.error().is_some_and(|e| e.code == 438) {
            self.transact(ALLOCATE, &attrs, Auth::LongTerm).await?
        } else {
            reply
        };
        allocate_ok(&reply.into_result()?)
    }

    /// Refreshes the allocation for `lifetime` seconds (0 deletes it); returns the
    /// granted LIFETIME.
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let reply = self.request(REFRESH, &[Attr::Lifetime(lifetime)]).await?;
        reply
            .lifetime()
            .ok_or_else(|| protocol("Refresh success without LIFETIME"))
    }

    /// Installs a permission for `peer`'s IP.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), ClientError> {
        self.request(CREATE_PERMISSION, &[Attr::Peer(peer)])
            .await
            .map(drop)
    }

    /// Binds `channel` (0x4000..=0x4FFF) to `peer`.
    pub async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        self.request(CHANNEL_BIND, &[Attr::Channel(channel), Attr::Peer(peer)])
            .await
            .map(drop)
    }

    /// Sends `data` to `peer` in a Send indication.
    pub async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let mut msg = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = msg.transaction_id();
        add_attrs(&mut msg, &[Attr::Peer(peer), Attr::Data(data)], tid)?;
        msg.add_fingerprint().map_err(protocol)?;
        let bytes = msg.finish();
        self.send_raw(&bytes).await
    }

    /// Sends `data` on `channel` as ChannelData (padded to 4 bytes, as on streams).
    pub async fn send_channel_data(
        &mut self,
        channel: u16,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(data.len() + 8);
        write_channel_data(&mut out, channel, data, true);
        self.send_raw(&out).await
    }

    /// The next relayed data (Data indication or ChannelData), waiting at most `timeout`.
    pub async fn recv_data(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        if let Some(d) = self.queued.pop_front() {
            return Ok(d);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.read_frame_until(deadline, "relayed data").await? {
                Incoming::Channel(ch, data) => return Ok((Origin::Channel(ch), data)),
                Incoming::Stun(bytes) => {
                    let msg = Message::from_bytes(&bytes)
                        .map_err(|e| protocol(format!("unparsable STUN message: {e}")))?;
                    if msg.class() == MessageClass::Indication {
                        if let Some(d) = parse_data_indication(&msg)? {
                            return Ok(d);
                        }
                    }
                    // Stray responses are ignored here.
                }
            }
        }
    }

    /// Waits until the server closes the connection (EOF or reset), discarding whatever
    /// arrives meanwhile. `Ok` once closed; `Timeout` if still open after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.read_frame_until(deadline, "the server to close").await {
                Ok(_) => continue,
                Err(e) if e.is_disconnect() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next whole frame, waiting until `deadline`.
    async fn read_frame_until(
        &mut self,
        deadline: tokio::time::Instant,
        what: &str,
    ) -> Result<Incoming, ClientError> {
        loop {
            if let Some(frame) = self.framer.next_frame()? {
                return Ok(match frame {
                    Frame::Stun(b) => Incoming::Stun(b.to_vec()),
                    f @ Frame::ChannelData(_) => Incoming::Channel(
                        f.channel().unwrap_or_default(),
                        f.channel_payload().unwrap_or_default().to_vec(),
                    ),
                });
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(self.framer.read_buf()))
                .await
                .map_err(|_| ClientError::Timeout(what.to_owned()))?;
            match read {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.framer.commit(n),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Shuts down our side of the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

enum Incoming {
    Stun(Vec<u8>),
    Channel(u16, Vec<u8>),
}

fn allocate_attrs(family: AddressFamily) -> Vec<Attr<'static>> {
    let mut attrs = vec![
        Attr::RequestedTransport(RequestedTransport::UDP),
        Attr::Lifetime(600),
    ];
    if family == AddressFamily::IPV6 {
        attrs.push(Attr::RequestedFamily(AddressFamily::IPV6));
    }
    attrs
}

fn allocate_ok(reply: &Reply) -> Result<AllocateOk, ClientError> {
    Ok(AllocateOk {
        relayed: reply
            .relayed()
            .ok_or_else(|| protocol("Allocate success without XOR-RELAYED-ADDRESS"))?,
        mapped: reply
            .mapped()
            .ok_or_else(|| protocol("Allocate success without XOR-MAPPED-ADDRESS"))?,
        lifetime: reply
            .lifetime()
            .ok_or_else(|| protocol("Allocate success without LIFETIME"))?,
    })
}

fn add_attrs(
    msg: &mut MessageWriteVec,
    attrs: &[Attr<'_>],
    tid: TransactionId,
) -> Result<(), ClientError> {
    for a in attrs {
        let r = match *a {
            Attr::RequestedTransport(p) => msg.add_attribute(&RequestedTransport::new(p)),
            Attr::RequestedFamily(f) => msg.add_attribute(&RequestedAddressFamily::new(f)),
            Attr::Lifetime(s) => msg.add_attribute(&Lifetime::new(s)),
            Attr::Peer(p) => msg.add_attribute(&XorPeerAddress::new(p, tid)),
            Attr::Channel(c) => msg.add_attribute(&ChannelNumber::new(c)),
            Attr::Data(d) => msg.add_attribute(&Data::new(d)),
            Attr::Software(s) => msg.add_attribute(&Software::new(s).map_err(protocol)?),
            Attr::Raw(t, v) => msg.add_attribute(&RawAttribute::new(t.into(), v)),
        };
        r.map_err(protocol)?;
    }
    Ok(())
}

/// A Data indication's (peer, data); `None` for other indications.
fn parse_data_indication(msg: &Message<'_>) -> Result<Option<Received>, ClientError> {
    if msg.method() != DATA {
        return Ok(None);
    }
    let tid = msg.transaction_id();
    let peer = msg
        .attribute::<XorPeerAddress>()
        .map_err(|e| protocol(format!("Data indication without XOR-PEER-ADDRESS: {e}")))?
        .addr(tid);
    let data = msg
        .attribute::<Data>()
        .map_err(|e| protocol(format!("Data indication without DATA: {e}")))?
        .data()
        .to_vec();
    Ok(Some((Origin::Peer(peer), data)))
}
