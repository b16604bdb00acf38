//! Helpers shared by the end-to-end tests: a TURN test client ([`turn_client`]), test
//! certificates, an in-process relay harness, a UDP echo peer and a tiny HTTP/1.1 client.
//! Everything binds to loopback only.
// Test infrastructure, only ever linked into tests: a panic in a helper is a failed test,
// which is the right outcome, so the workspace's no-panic lints do not apply here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]
#![forbid(unsafe_code)]

pub mod coturn;
pub mod http;
pub mod peer;
pub mod publisher;
pub mod turn_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub use turn_client::{AllocateOk, Attr, Auth, ClientError, Origin, Reply, TurnClient, TurnError};

/// The name test certificates are issued for.
pub const TEST_SERVER_NAME: &str = "turn.test";

pub use relay::io::unix_now;

/// Starts the whole gateway in-process: TURN and HTTP on OS-chosen loopback ports, relay
/// sockets on 127.0.0.1, `secret` as TURN_SECRET, then `extra` flags.
pub async fn start_gateway(secret: &str, extra: &[&str]) -> gateway::run::Running {
    let mut args = vec![
        "gateway",
        "--turn-listen",
        "127.0.0.1:0",
        "--gateway-http-addr",
        "127.0.0.1:0",
        "--turn-secret",
        secret,
        "--turn-relay-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let cli = <gateway::config::Cli as clap::Parser>::try_parse_from(args).expect("flags");
    gateway::run::start(cli.settings)
        .await
        .expect("gateway starts")
}

/// A loopback TCP port free now (the caller binds it next).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback TCP port")
}

/// A browser-like offer: one recvonly H.264 video m-line, a host candidate.
pub fn video_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .build(std::time::Instant::now());
    let local: SocketAddr = ([127, 0, 0, 1], 9).into();
    rtc.add_local_candidate(str0m::Candidate::host(local, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// `base64(HMAC-SHA1(secret, username))`, computed here independently of the `auth` crate.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A self-signed certificate with its key, in DER and PEM.
#[derive(Debug)]
pub struct TestCert {
    /// Certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// PKCS#8 key, DER.
    pub key_der: Vec<u8>,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Key, PEM.
    pub key_pem: String,
}

impl TestCert {
    /// A self-signed certificate for `names`.
    pub fn new(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        Self {
            cert_der: ck.cert.der().clone(),
            key_der: ck.signing_key.serialize_der(),
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        }
    }

    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// A relay TLS configuration serving this certificate, with ALPN `stun.turn` and
    /// `http/1.1` (as the gateway configures it).
    pub fn relay_tls(&self) -> relay::io::TlsConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], self.key())
            .expect("server certificate");
        cfg.alpn_protocols = vec![b"stun.turn".to_vec(), b"http/1.1".to_vec()];
        Arc::new(arc_swap::ArcSwap::from_pointee(cfg))
    }

    /// Writes the PEM files into a fresh directory under the system temp dir; returns
    /// (cert path, key path). The directory is unique per call.
    pub fn write_pem_files(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "gateway-tests-{}-{}-{n}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// How a test client reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Plain TURN over TCP.
    Tcp,
    /// TURN over TLS without ALPN (as browsers connect to `turns:`).
    Tls,
    /// TURN over TLS with ALPN `stun.turn` (RFC 7443).
    TlsAlpn,
}

impl Via {
    /// TCP and both TLS flavours.
    pub const ALL: [Via; 3] = [Via::Tcp, Via::Tls, Via::TlsAlpn];
}

/// A relay started in-process on 127.0.0.1:0 with a self-signed certificate for
/// [`TEST_SERVER_NAME`] and REST secrets.
pub struct TestRelay {
    /// The running relay.
    pub server: relay::io::RelayServer,
    /// Its TLS certificate (trust anchor for clients).
    pub cert: TestCert,
    /// The secrets it verifies with.
    pub ring: auth::SecretRing,
}

impl std::fmt::Debug for TestRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRelay")
            .field("addr", &self.server.local_tcp())
            .finish_non_exhaustive()
    }
}

/// Shell settings for tests: listen on 127.0.0.1:0, relay on 127.0.0.1 (and `::1`).
pub fn test_io_config() -> relay::io::IoConfig {
    relay::io::IoConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        udp_listen: None,
        relay_ipv4: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        relay_ipv6: Some(std::net::Ipv6Addr::LOCALHOST.into()),
        ..Default::default()
    }
}

impl TestRelay {
    /// Starts a relay with `core` settings, `io` shell settings, the peer allow list
    /// `allowed` and the comma-separated `secrets`.
    pub async fn start(
        core: relay::core::Config,
        io: relay::io::IoConfig,
        allowed: &str,
        secrets: &str,
    ) -> Self {
        let ring = auth::SecretRing::parse(secrets).expect("secrets");
        let policy = relay::core::PeerPolicy::parse(allowed, "").expect("allow list");
        let shared =
            relay::core::Shared::new(core, ring.clone(), policy, relay::core::NonceKey::random());
        let cert = TestCert::new(&[TEST_SERVER_NAME]);
        let server = relay::io::RelayServer::start(shared, io, Some(cert.relay_tls()), None)
            .await
            .expect("relay starts");
        Self { server, cert, ring }
    }

    /// The TCP/TLS address.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_tcp()
    }

    /// A credential for `user`, valid for an hour, under the first secret.
    pub fn mint(&self, user: &str) -> auth::Credential {
        self.ring.mint(user, unix_now(), 3600).expect("mint")
    }

    /// A client connected `via` TCP or TLS.
    pub async fn connect(&self, via: Via) -> TurnClient {
        connect(self.addr(), via, &self.cert.cert_der)
            .await
            .unwrap_or_else(|e| panic!("connect {via:?} to {}: {e}", self.addr()))
    }
}

/// Connects a TURN client to `addr` `via` TCP or TLS (trusting `root`, name
/// [`TEST_SERVER_NAME`]).
pub async fn connect(
    addr: SocketAddr,
    via: Via,
    root: &CertificateDer<'_>,
) -> Result<TurnClient, ClientError> {
    match via {
        Via::Tcp => TurnClient::connect_tcp(addr).await,
        Via::Tls => TurnClient::connect_tls(addr, TEST_SERVER_NAME, root).await,
        Via::TlsAlpn => {
            TurnClient::connect_tls_alpn(addr, TEST_SERVER_NAME, root, &[b"stun.turn"]).await
        }
    }
}

/// A UDP peer on 127.0.0.1 (or `[::1]`) that sends every datagram back to its sender.
#[derive(Debug)]
pub struct UdpEcho {
    /// Its address.
    pub addr: SocketAddr,
    /// Datagrams received so far.
    pub received: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl UdpEcho {
    /// Binds on `ip:0` and starts echoing.
    pub async fn start(ip: std::net::IpAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = sock.local_addr()?;
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = sock.send_to(&buf[..n], from).await;
            }
        });
        Ok(Self {
            addr,
            received,
            task,
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal HTTP/1.1 GET over `stream` (`Connection: close`); returns (status, body).
/// Bounded by `timeout`.
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = |raw: &[u8]| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "HTTP GET {path} timed out after receiving {:?}",
                String::from_utf8_lossy(raw)
            ),
        )
    };
    tokio::time::timeout_at(deadline, async {
        stream.write_all(req.as_bytes()).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| timed_out(b""))??;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Until EOF (Connection: close) or a complete response: some servers keep the
    // connection open, TLS peers may end without close_notify.
    while !response_complete(&raw) {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| timed_out(&raw))?;
        match read {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_http_response(&raw)
}

/// Whether `raw` holds a whole response with a Content-Length body or a finished chunked
/// body.
fn response_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= len;
    }
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return body.ends_with("0\r\n\r\n");
    }
    false
}

fn parse_http_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of HTTP headers"))?;
    let status_line = head.lines().next().ok_or_else(|| bad("empty response"))?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(&format!("not an HTTP/1 response: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Polls `check` every few milliseconds until it returns true or `timeout` passes.
/// Returns whether it became true.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_auth_crate() {
        let ring = auth::SecretRing::parse("s3cret").unwrap();
        let c = ring.mint("alice", 1_000, 60).unwrap();
        assert_eq!(rest_password("s3cret", &c.username), c.password);
    }

    #[test]
    fn parses_http_responses() {
        let (s, b) =
            parse_http_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!((s, b.as_str()), (200, "ok"));
        let (s, b) = parse_http_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (404, "abcde"));
        assert!(parse_http_response(b"garbage").is_err());
    }
}
