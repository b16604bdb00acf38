//! The tokio shell around [`crate::core`]: listeners, TLS, relay sockets and timers.
//!
//! One TCP listener serves plain TURN-over-TCP and TURN-over-TLS on the same port (told
//! apart by the first byte: 0x16 is a TLS record, a STUN or ChannelData header is plain
//! TURN). Inside TLS, ALPN or the first plaintext bytes tell TURN from HTTP. Streams that
//! are not TURN (HTTP, HTTPS) are handed to a [`Handoff`], so the gateway can serve its
//! HTTPS API on the same port 443. Every connection runs in its own task: a slow TLS
//! handshake or an idle connection delays nobody else.

mod gso;
mod inprocess;
mod limits;
mod listener;
mod outbox;
mod ports;
mod prefixed;
mod stats;
mod stream;
mod udp;

pub use inprocess::{InProcessRoutes, LocalMedia, MediaDatagram};
pub use limits::{ConnectionLimits, ConnectionSlot, Refused};
pub use listener::{bind_tcp, sniff, Handoff, IoStream, Sniffed, LISTEN_BACKLOG};
pub use ports::PortRange;
pub use prefixed::Prefixed;
pub use stats::IoStats;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::{Now, Shared};

/// Shell settings.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// TCP address serving TURN/TCP, TURN/TLS (and handed-off HTTP(S)).
    pub listen: SocketAddr,
    /// Optional UDP listener.
    pub udp_listen: Option<SocketAddr>,
    /// Address relay sockets bind to for IPv4 peers (`None`: no IPv4 relaying).
    pub relay_ipv4: Option<IpAddr>,
    /// Address relay sockets bind to for IPv6 peers (`None`: no IPv6 relaying).
    pub relay_ipv6: Option<IpAddr>,
    /// Ports relay sockets bind to; `None` lets the OS choose.
    pub relay_ports: Option<PortRange>,
    /// Time a new connection has to complete its TLS handshake and send its first bytes.
    pub handshake_timeout: Duration,
    /// A connection with no allocation and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// A connection (or UDP client) that has not sent a successfully authenticated request
    /// this long after it opened is closed, however busy it is (Binding requests and 401
    /// challenges do not keep it alive).
    pub unauthenticated_timeout: Duration,
    /// Most concurrent connections from one source IP (IPv6: one /64).
    pub max_connections_per_ip: u32,
    /// Most concurrent connections in all.
    pub max_connections: u32,
    /// Most TLS handshakes in flight from one source IP (IPv6: one /64); a connection over
    /// the budget is closed before its handshake starts.
    pub max_tls_handshakes_per_ip: u32,
    /// Most TLS handshakes in flight in all.
    pub max_tls_handshakes: u32,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            udp_listen: None,
            relay_ipv4: Some(IpAddr::from([0, 0, 0, 0])),
            relay_ipv6: None,
            relay_ports: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            unauthenticated_timeout: Duration::from_secs(15),
            max_connections_per_ip: 256,
            max_connections: 50_000,
            max_tls_handshakes_per_ip: 8,
            max_tls_handshakes: 256,
        }
    }
}

/// The TLS server configuration, swappable at runtime (certificate reload).
pub type TlsConfig = Arc<ArcSwap<rustls::ServerConfig>>;

/// Reads the clock once for the core.
pub fn now() -> Now {
    Now {
        mono: std::time::Instant::now(),
        unix: unix_now(),
    }
}

/// Wall-clock seconds since the unix epoch (0 before it): the project's one reading of the
/// wall clock (REST usernames carry their expiry in unix seconds).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When a client task next wakes: the core's next timer or the idle deadline, whichever
/// comes first, and at the latest one idle timeout from now.
pub(crate) fn wake_at(
    core: Option<std::time::Instant>,
    idle: Option<std::time::Instant>,
    idle_timeout: Duration,
) -> std::time::Instant {
    match (core, idle) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a
            .or(b)
            .unwrap_or_else(|| std::time::Instant::now() + idle_timeout),
    }
}

/// When a client that is not (yet) authenticated must go: `opened` plus the timeout.
pub(crate) fn unauthenticated_deadline(
    authenticated: bool,
    opened: std::time::Instant,
    timeout: Duration,
) -> Option<std::time::Instant> {
    (!authenticated).then(|| opened.checked_add(timeout).unwrap_or(opened))
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// State every connection task shares.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
    pub config: IoConfig,
    pub tls: Option<TlsConfig>,
    pub handoff: Option<Arc<dyn Handoff>>,
    /// Becomes `true` when the relay shuts down; every connection task holds a clone and
    /// ends politely when it flips. [`RelayServer::drained`] waits for all clones to drop.
    pub shutdown: watch::Receiver<bool>,
    pub limits: Arc<ConnectionLimits>,
    /// TLS handshakes in flight, per source and in all.
    pub handshakes: Arc<ConnectionLimits>,
    pub stats: Arc<IoStats>,
    /// How relayed addresses are reserved and bound.
    pub addressing: Arc<ports::RelayAddressing>,
    /// Allocations reachable from the media engine.
    pub routes: Arc<InProcessRoutes>,
    /// The gateway's media engine, once plugged in.
    pub local_media: arc_swap::ArcSwapOption<LocalMediaRef>,
}

/// A plugged-in [`LocalMedia`] (a sized wrapper so it can live in an `ArcSwapOption`).
pub(crate) struct LocalMediaRef(pub Box<dyn LocalMedia>);

/// A running relay.
pub struct RelayServer {
    shared: Arc<Shared>,
    local_tcp: SocketAddr,
    local_udp: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    stats: Arc<IoStats>,
    tasks: Vec<JoinHandle<()>>,
    context: Arc<Context>,
}

impl RelayServer {
    /// Binds the listeners and starts serving.
    pub async fn start(
        shared: Arc<Shared>,
        config: IoConfig,
        tls: Option<TlsConfig>,
        handoff: Option<Arc<dyn Handoff>>,
    ) -> std::io::Result<Self> {
        let tcp = bind_tcp(config.listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on TCP {}: {e}", config.listen),
            )
        })?;
        let local_tcp = tcp.local_addr()?;
        let udp = match config.udp_listen {
            Some(addr) => Some(UdpSocket::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on UDP {addr}: {e}"))
            })?),
            None => None,
        };
        let local_udp = match &udp {
            Some(s) => Some(s.local_addr()?),
            None => None,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(IoStats::default());
        let addressing = Arc::new(ports::RelayAddressing {
            ipv4: config.relay_ipv4,
            ipv6: config.relay_ipv6,
            pool: config.relay_ports.map(ports::PortPool::new),
            stats: stats.clone(),
            offload: gso::Offload::new(),
        });
        let routes = Arc::new(InProcessRoutes::new(stats.clone()));
        let ctx = Arc::new(Context {
            shared: shared.clone(),
            limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
            handshakes: ConnectionLimits::new(
                config.max_tls_handshakes,
                config.max_tls_handshakes_per_ip,
            ),
            config,
            tls,
            handoff,
            shutdown: shutdown_rx,
            stats: stats.clone(),
            addressing,
            routes,
            local_media: arc_swap::ArcSwapOption::empty(),
        });
        let mut tasks = vec![tokio::spawn(listener::accept_loop(tcp, ctx.clone()))];
        let context = ctx.clone();
        if let Some(udp) = udp {
            tasks.push(tokio::spawn(udp::serve(Arc::new(udp), ctx)));
        }
        tracing::info!(tcp = %local_tcp, udp = ?local_udp, "TURN relay listening (TCP and TLS on the same port)");
        Ok(Self {
            shared,
            local_tcp,
            local_udp,
            shutdown,
            stats,
            tasks,
            context,
        })
    }

    /// The bound TCP (and TLS) address.
    pub fn local_tcp(&self) -> SocketAddr {
        self.local_tcp
    }

    /// The bound UDP address, if any.
    pub fn local_udp(&self) -> Option<SocketAddr> {
        self.local_udp
    }

    /// The shared core state (metrics, secrets, policy).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Connection counters.
    pub fn io_stats(&self) -> &Arc<IoStats> {
        &self.stats
    }

    /// The budget of TLS handshakes in flight ([`IoConfig::max_tls_handshakes`] and
    /// [`IoConfig::max_tls_handshakes_per_ip`]); its [`ConnectionLimits::open`] is a gauge.
    pub fn tls_handshakes(&self) -> &Arc<ConnectionLimits> {
        &self.context.handshakes
    }

    /// Plugs in the gateway's media engine: datagrams for peers it calls local are handed
    /// to it instead of a relay socket (see [`inprocess`](LocalMedia)).
    pub fn set_local_media(&self, media: Box<dyn LocalMedia>) {
        self.context
            .local_media
            .store(Some(Arc::new(LocalMediaRef(media))));
    }

    /// The routes the media engine uses to reach allocations by relayed address.
    pub fn routes(&self) -> Arc<InProcessRoutes> {
        self.context.routes.clone()
    }

    /// Revokes `user` until `until_unix` and closes the connections holding its allocations
    /// (only those: the per-user index wakes them, no other task).
    pub fn revoke(&self, user: &str, until_unix: u64) {
        self.shared.revoke(user, until_unix, now());
    }

    /// Stops accepting. Live connections end when their tasks notice (not awaited).
    pub fn stop_accepting(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Wakes one connection task (see [`crate::core::Wake`]): a `Notify` keeps a permit when
/// the task is busy, so a wake-up between two `select!` turns is not lost.
#[derive(Default)]
pub(crate) struct TaskWaker(pub tokio::sync::Notify);

impl crate::core::Wake for TaskWaker {
    fn wake(&self) {
        self.0.notify_one();
    }
}

impl RelayServer {
    /// Graceful shutdown, step one: stops accepting and tells every connection (TCP, TLS,
    /// UDP, handshakes in progress) to end: each deletes its allocation, flushes what it
    /// has to send, closes TLS with close_notify and the TCP stream with FIN.
    pub fn begin_shutdown(&mut self) {
        self.stop_accepting();
        self.shutdown.send_replace(true);
    }

    /// Completes once every connection task has ended (after [`Self::begin_shutdown`]).
    pub async fn drained(&self) {
        self.shutdown.closed().await
    }
}

/// Completes when `rx` says the relay is shutting down; never if the relay was dropped
/// without a shutdown (live connections then keep going, as before).
pub(crate) async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}
