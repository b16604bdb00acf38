//! The accept loop of the shared TCP port and the first-bytes demultiplexer.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::limits::ConnectionSlot;
use super::outbox::ClientStream;
use super::{stream, Context, IoStats, Prefixed};
use crate::core::{BadInput, Transport};

/// Connections the kernel queues for a listener before the accept loop takes them.
///
/// The usual default (128) overflows when a burst of clients connects at once (a page
/// load, viewers reconnecting after a restart, thousands of connections under attack):
/// the kernel then drops SYNs and each dropped client waits a full second to retry. The
/// kernel caps this at `net.core.somaxconn` (4096 on current Linux).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` as servers do: `SO_REUSEADDR` (a restart does not wait
/// for old connections in TIME_WAIT) and a [`LISTEN_BACKLOG`] deep accept queue.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A byte stream the shell hands off: plain TCP or decrypted TLS.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> IoStream for T {}

/// Receives streams on the TURN port that are not TURN (HTTP or HTTPS), so one port
/// serves both. The relay knows nothing of HTTP.
pub trait Handoff: Send + Sync + 'static {
    /// Serves `stream` from `remote`; `tls` tells whether it came through TLS.
    fn serve(&self, stream: Box<dyn IoStream>, remote: SocketAddr, tls: bool);
}

/// ALPN protocol id for TURN (RFC 7443).
pub const ALPN_TURN: &[u8] = b"stun.turn";

/// What the first byte of a stream says it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS record (handshake): 0x16.
    Tls,
    /// A STUN message (a TURN client's first message is always STUN).
    Turn,
    /// Anything else that looks like text: an HTTP request line.
    Http,
    /// Nothing we serve.
    Unknown,
}

/// Classifies a fresh stream by its first byte. TLS records start with 0x16. A TURN client
/// must Allocate (a STUN request, first byte 0x00 or 0x01) before it may send ChannelData,
/// so a stream that *starts* with 0x40–0x4F is not TURN; that range is where HTTP methods
/// (`GET`, `HEAD`, `DELETE`, `OPTIONS`) begin, so upper-case ASCII letters mean HTTP.
pub fn sniff(first: u8) -> Sniffed {
    match first {
        0x16 => Sniffed::Tls,
        0x00..=0x03 => Sniffed::Turn,
        b'A'..=b'Z' => Sniffed::Http,
        _ => Sniffed::Unknown,
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match ctx.limits.acquire(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                IoStats::inc(&ctx.stats.connections_refused);
                tracing::debug!(%remote, %why, "connection refused");
                continue;
            }
        };
        IoStats::inc(&ctx.stats.connections_accepted);
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handle(tcp, remote, ctx.clone(), slot));
    }
}

async fn handle(tcp: TcpStream, remote: SocketAddr, ctx: Arc<Context>, slot: ConnectionSlot) {
    let timeout = ctx.config.handshake_timeout;
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut shutdown = ctx.shutdown.clone();
    let classified = tokio::select! {
        c = tokio::time::timeout(timeout, classify(tcp, remote, &ctx)) => c,
        _ = super::shutting_down(&mut shutdown) => return,
    };
    match classified {
        Ok(Ok(Classified::Turn(s, transport))) => {
            stream::serve(s, transport, remote, local, ctx, slot).await
        }
        Ok(Ok(Classified::Http(s, tls))) => match &ctx.handoff {
            Some(h) => {
                IoStats::inc(&ctx.stats.http_handoffs);
                // The HTTP server owns the stream from here, under its own limits
                // (the gateway's HTTP_MAX_CONNECTIONS*); this slot covered the handshake.
                drop(slot);
                h.serve(s, remote, tls)
            }
            None => tracing::debug!(%remote, "HTTP on the TURN port but no HTTP server: closed"),
        },
        Ok(Ok(Classified::Closed)) => {}
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "connection rejected"),
        Err(_) => {
            IoStats::inc(&ctx.stats.handshake_timeouts);
            tracing::debug!(%remote, ?timeout, "handshake timeout: closed")
        }
    }
}

enum Classified {
    Turn(ClientStream, Transport),
    Http(Box<dyn IoStream>, bool),
    Closed,
}

async fn classify(
    tcp: TcpStream,
    remote: SocketAddr,
    ctx: &Context,
) -> std::io::Result<Classified> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 0 {
        return Ok(Classified::Closed);
    }
    match sniff(first[0]) {
        Sniffed::Turn => Ok(Classified::Turn(
            ClientStream::Plain(Box::new(tcp)),
            Transport::Tcp,
        )),
        Sniffed::Http => Ok(Classified::Http(Box::new(tcp), false)),
        Sniffed::Unknown => {
            ctx.shared.bad_input(
                remote.ip(),
                BadInput::UnknownProtocol,
                std::time::Instant::now(),
            );
            Err(invalid(format!(
                "first byte 0x{:02x} is neither TLS, STUN nor HTTP",
                first[0]
            )))
        }
        Sniffed::Tls => {
            let Some(tls) = &ctx.tls else {
                return Err(invalid("TLS ClientHello but TLS is not configured".into()));
            };
            // A handshake costs the server a key exchange and a signature: bounded in flight
            // per source and in all, so that stalled or slow ClientHellos from one address
            // cannot hold every handshake. Over budget: closed before the handshake.
            let budget = match ctx.handshakes.acquire(remote.ip()) {
                Ok(b) => b,
                Err(why) => {
                    IoStats::inc(&ctx.stats.tls_handshakes_refused);
                    tracing::debug!(%remote, %why, "TLS handshake refused: closed");
                    return Ok(Classified::Closed);
                }
            };
            let acceptor = TlsAcceptor::from(tls.load_full());
            let mut stream = acceptor.accept(tcp).await.map_err(|e| {
                IoStats::inc(&ctx.stats.tls_failures);
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                e
            })?;
            drop(budget);
            IoStats::inc(&ctx.stats.tls_handshakes);
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            match alpn.as_deref() {
                Some(ALPN_TURN) => {
                    let s = Box::new(Prefixed::new(Vec::new(), stream));
                    return Ok(Classified::Turn(ClientStream::Tls(s), Transport::Tls));
                }
                Some(b"http/1.1") | Some(b"h2") => {
                    return Ok(Classified::Http(Box::new(stream), true))
                }
                _ => {}
            }
            // No ALPN (browsers send none on TURNS): look at the first plaintext byte.
            let mut b = [0u8; 1];
            let n = stream.read(&mut b).await?;
            if n == 0 {
                return Ok(Classified::Closed);
            }
            // One byte asked, `n` is 1: what was read is `b` itself.
            let s = Prefixed::new(b.to_vec(), stream);
            match sniff(b[0]) {
                Sniffed::Turn => Ok(Classified::Turn(
                    ClientStream::Tls(Box::new(s)),
                    Transport::Tls,
                )),
                Sniffed::Http => Ok(Classified::Http(Box::new(s), true)),
                _ => {
                    ctx.shared.bad_input(
                        remote.ip(),
                        BadInput::UnknownProtocol,
                        std::time::Instant::now(),
                    );
                    Err(invalid(format!(
                        "first byte 0x{:02x} inside TLS is neither STUN nor HTTP",
                        b[0]
                    )))
                }
            }
        }
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of connections larger than the usual default backlog (128) completes at once
    /// even before the accept loop takes any: with 128, the 130th waited a second for the
    /// kernel to retry its dropped SYN.
    #[tokio::test]
    async fn a_connection_burst_queues_without_drops() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for i in 0..600 {
            let c = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                TcpStream::connect(addr),
            )
            .await;
            match c {
                Ok(Ok(c)) => held.push(c),
                other => panic!("connection {i} of the burst: {other:?}"),
            }
        }
        drop(listener);
    }

    #[test]
    fn sniffs_first_bytes() {
        assert_eq!(sniff(0x16), Sniffed::Tls);
        assert_eq!(sniff(0x00), Sniffed::Turn);
        assert_eq!(sniff(0x01), Sniffed::Turn);
        // ChannelData cannot open a connection (it needs an allocation first); the bytes
        // are HTTP methods.
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert_eq!(sniff(method.as_bytes()[0]), Sniffed::Http, "{method}");
        }
        assert_eq!(sniff(0x80), Sniffed::Unknown);
        assert_eq!(sniff(b'@'), Sniffed::Unknown);
        assert_eq!(sniff(b'a'), Sniffed::Unknown);
    }
}
