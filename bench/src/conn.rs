//! Connects to a server over TCP or TLS and sets up allocations with the relay's own TURN
//! client: the 401 → signed Allocate dance, CreatePermission / ChannelBind. Every wait is
//! bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use relay::framer::Framer;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use relay::client::Connection;

/// Bound on every control-plane wait.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A client byte stream: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// TURN over TCP or over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TURN/TCP.
    Tcp,
    /// TURN/TLS.
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TURN/TCP",
            Transport::Tls => "TURN/TLS",
        }
    }
}

/// Where and how to reach one server.
#[derive(Clone)]
pub struct Target {
    /// Plain TURN/TCP port.
    pub tcp: SocketAddr,
    /// TURN/TLS port (the same as `tcp` for the gateway).
    pub tls: SocketAddr,
    /// Client TLS settings accepting the bench certificate, resumption off (every
    /// handshake is a full one).
    pub tls_config: Arc<rustls::ClientConfig>,
    /// REST secret shared by both servers.
    pub secret: auth::SecretRing,
}

/// Client TLS configuration for the bench's servers, without session resumption.
///
/// The client accepts exactly the bench's certificate (byte for byte) and skips the
/// signature checks of a verifying client. A full TLS 1.3 handshake costs the client two
/// ECDSA P-256 verifications (certificate and CertificateVerify), more than the one
/// signature it costs the server: with the load generator on one core, a verifying client
/// was what limited the set-up rate (the bench at 100 % of its core, the gateway at 70 %),
/// so the figure measured the client. The servers' side of the handshake is unchanged.
pub fn tls_client_config(
    cert: &CertificateDer<'static>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            cert: cert.clone(),
            schemes: provider
                .signature_verification_algorithms
                .supported_schemes(),
        }))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Accepts one certificate, compared byte for byte; no signature is checked.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The name the bench certificate is issued for.
pub const SERVER_NAME: &str = "bench.test";

/// Opens a TCP (and TLS) connection. The socket closes with RST (linger 0) so that
/// thousands of closed connections leave no TIME_WAIT behind.
pub async fn connect(target: &Target, transport: Transport) -> anyhow::Result<Box<dyn Stream>> {
    let addr = match transport {
        Transport::Tcp => target.tcp,
        Transport::Tls => target.tls,
    };
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO))?;
        Ok::<_, anyhow::Error>(match transport {
            Transport::Tcp => Box::new(tcp) as Box<dyn Stream>,
            Transport::Tls => {
                let name = ServerName::try_from(SERVER_NAME)?;
                let connector = tokio_rustls::TlsConnector::from(target.tls_config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        })
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out"))?
}

/// One client connection: the relay's own TURN client ([`relay::client::Connection`], the
/// one the doctor and the tests use) over the bench's stream.
pub struct Conn {
    turn: Connection<Box<dyn Stream>>,
    /// The relayed address, after [`Conn::allocate`].
    pub relayed: Option<SocketAddr>,
}

impl Conn {
    /// Wraps a connected stream; `user` becomes the REST user (`<expiry>:<user>`).
    pub fn new(
        stream: Box<dyn Stream>,
        secret: &auth::SecretRing,
        user: &str,
    ) -> anyhow::Result<Self> {
        let cred = secret.mint(user, unix_now(), 3600)?;
        Ok(Self::with_credentials(
            stream,
            &cred.username,
            &cred.password,
        ))
    }

    /// Wraps a connected stream with a credential handed out by someone else (the
    /// gateway's signaling API mints one per viewer session).
    pub fn with_credentials(stream: Box<dyn Stream>, username: &str, password: &str) -> Self {
        Self {
            turn: Connection::with_credentials(stream, username, password, TIMEOUT),
            relayed: None,
        }
    }

    /// An unsigned Allocate, as a client's first contact: a server that is up answers 401.
    pub async fn first_contact(&mut self) -> anyhow::Result<Option<u16>> {
        let reply = self
            .turn
            .allocate_unauthenticated(stun_types::AddressFamily::IPV4)
            .await?;
        Ok(reply.error().map(|e| e.code))
    }

    /// Unauthenticated Allocate (401 with realm and nonce), then the signed one.
    pub async fn allocate(&mut self) -> anyhow::Result<SocketAddr> {
        let relayed = self.turn.allocate().await?.relayed;
        self.relayed = Some(relayed);
        Ok(relayed)
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> anyhow::Result<()> {
        self.turn
            .create_permission(peer)
            .await
            .with_context(|| format!("CreatePermission for {peer}"))
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        self.turn
            .channel_bind(channel, peer)
            .await
            .with_context(|| format!("ChannelBind {channel:#x} to {peer}"))
    }

    /// Relayed data that arrived during the control exchanges (see
    /// [`Connection::take_received`]).
    pub fn take_received(&mut self) -> Vec<(relay::client::Origin, Vec<u8>)> {
        self.turn.take_received()
    }

    /// The stream and the framer with whatever it buffered, for the data path.
    pub fn into_parts(self) -> (Box<dyn Stream>, Framer) {
        self.turn.into_parts()
    }
}

/// Connect, TLS handshake, 401, Allocate, CreatePermission: one allocation set up as a
/// browser does it. Returns the connection and how long it took.
pub async fn setup_allocation(
    target: &Target,
    transport: Transport,
    user: &str,
    peer: SocketAddr,
) -> anyhow::Result<(Conn, Duration)> {
    let t0 = Instant::now();
    let stream = connect(target, transport).await?;
    let mut conn = Conn::new(stream, &target.secret, user)?;
    conn.allocate().await?;
    conn.create_permission(peer).await?;
    Ok((conn, t0.elapsed()))
}

pub use relay::io::unix_now;
