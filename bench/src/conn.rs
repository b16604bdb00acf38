//! Moves a [`Session`]'s bytes over TCP or TLS: connect, the 401 → signed Allocate dance,
//! CreatePermission / ChannelBind. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use relay::framer::{Frame, Framer};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proto::{Answer, Request, Session};

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

/// One client connection with its session.
pub struct Conn {
    pub stream: Box<dyn Stream>,
    pub framer: Framer,
    session: Session,
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
        Ok(Self {
            stream,
            framer: Framer::new(),
            session: Session::new(cred.username, cred.password),
            relayed: None,
        })
    }

    /// Wraps a connected stream with a credential handed out by someone else (the
    /// gateway's signaling API mints one per viewer session).
    pub fn with_credentials(stream: Box<dyn Stream>, username: String, password: String) -> Self {
        Self {
            stream,
            framer: Framer::new(),
            session: Session::new(username, password),
            relayed: None,
        }
    }

    /// Sends `req` and waits for its answer (ChannelData arriving meanwhile is dropped).
    pub async fn transact(&mut self, req: Request) -> anyhow::Result<Answer> {
        let bytes = self.session.request(req)?;
        let fut = async {
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await?;
            loop {
                while let Some(frame) = self.framer.next_frame()? {
                    if let Frame::Stun(b) = frame {
                        if let Some(a) = self.session.on_stun(b)? {
                            return Ok(a);
                        }
                    }
                }
                let n = self.stream.read(self.framer.read_buf()).await?;
                if n == 0 {
                    bail!("connection closed by the server");
                }
                self.framer.commit(n);
            }
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("no answer to {req:?} within {TIMEOUT:?}"))?
    }

    /// A signed request, retried once on 438 (stale nonce); error codes become errors.
    async fn signed(&mut self, req: Request) -> anyhow::Result<Option<SocketAddr>> {
        let mut answer = self.transact(req).await?;
        if matches!(answer, Answer::Error(438)) {
            answer = self.transact(req).await?;
        }
        match answer {
            Answer::Ok(a) => Ok(a),
            Answer::Error(code) => bail!("{req:?} refused with {code}"),
        }
    }

    /// Unauthenticated Allocate (expects 401 with realm and nonce), then the signed one.
    pub async fn allocate(&mut self) -> anyhow::Result<SocketAddr> {
        match self.transact(Request::Allocate).await? {
            Answer::Error(401) if self.session.can_sign() => {}
            Answer::Error(code) => {
                bail!("first Allocate answered {code}, expected 401 with a nonce")
            }
            Answer::Ok(_) => bail!("Allocate granted without credentials"),
        }
        let relayed = self
            .signed(Request::Allocate)
            .await?
            .context("Allocate success without XOR-RELAYED-ADDRESS")?;
        self.relayed = Some(relayed);
        Ok(relayed)
    }

    pub async fn create_permission(&mut self, peer: SocketAddr) -> anyhow::Result<()> {
        self.signed(Request::CreatePermission(peer)).await.map(drop)
    }

    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        self.signed(Request::ChannelBind(channel, peer))
            .await
            .map(drop)
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
