//! The end-to-end tests' TURN client: the relay's own client ([`relay::client`], the one
//! the doctor and the bench use too) over a TCP or TLS connection this module opens, with
//! the addresses tests assert on. Every wait is bounded by [`Connection::timeout`]: a test
//! never hangs on a silent server.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use stun_types::AddressFamily;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use relay::client::{
    AllocateOk, Attr, Auth, ClientError, Connection, Origin, Reply, TurnError, DEFAULT_TIMEOUT,
};

/// A byte stream the client runs over (plain TCP or TLS).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

/// A TURN client over one TCP or TLS connection; everything but connecting and the
/// addresses is [`Connection`]'s (through `Deref`).
pub struct TurnClient {
    conn: Connection<Box<dyn ClientStream>>,
    local: SocketAddr,
    server: SocketAddr,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("local", &self.local)
            .field("server", &self.server)
            .field("conn", &self.conn)
            .finish()
    }
}

impl Deref for TurnClient {
    type Target = Connection<Box<dyn ClientStream>>;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl DerefMut for TurnClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

fn protocol(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(msg.to_string())
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
            conn: Connection::new(stream),
            local,
            server,
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

    /// Allocates an IPv4 UDP relay with these credentials: 401 → signed retry (→ one more
    /// on 438).
    pub async fn allocate(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<AllocateOk, ClientError> {
        self.allocate_family(username, password, AddressFamily::IPV4)
            .await
    }

    /// Allocates a UDP relay of `family` with these credentials.
    pub async fn allocate_family(
        &mut self,
        username: &str,
        password: &str,
        family: AddressFamily,
    ) -> Result<AllocateOk, ClientError> {
        self.conn.set_credentials(username, password);
        self.conn.allocate_family(family).await
    }

    /// Shuts down our side of the connection.
    pub async fn close(self) {
        self.conn.close().await;
    }
}
