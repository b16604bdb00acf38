//! Settings: command-line flags, each also readable from the environment variable of the
//! same name (the names the original deployments use), with safe defaults.
//!
//! Every value is parsed and checked here, before anything binds a port, and a bad value
//! stops start-up with a message naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use relay::core::PeerPolicy;
use relay::io::PortRange;

pub use crate::media_source::MediaSourceSpec;
pub use crate::signaling::ice_servers::{IceServersSetting, StunServerSetting};

/// Shortest TURN_SECRET (each, when rotating) and API_TOKEN accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A host name or IP literal (no port, no scheme).
fn parse_host(s: &str) -> Result<String, String> {
    let t = s.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(t);
    let ok = crate::ice_url::is_host(t);
    if ok {
        Ok(t.to_owned())
    } else {
        Err(format!("{s:?} is neither an IP address nor a DNS name"))
    }
}

/// The precedence rule, printed at the end of `--help`.
const PRECEDENCE: &str =
    "Every setting is a flag, the environment variable named in brackets, and \
    a key of the settings file (GATEWAY_CONFIG; the variable's name in lower case). \
    Precedence: a flag wins over its environment variable, which wins over the settings file, \
    which wins over the built-in default. \
    Settings go before the sub-command (`gateway --coturn-host h doctor`); `gateway doctor` \
    checks exactly what `gateway` would run with.";

/// TURN-aware WebRTC edge gateway: live video to browsers, its signaling API, and an
/// embedded TURN relay (TCP and TLS on port 443) with expiring REST credentials.
///
/// Every flag can also be set through the environment variable named in brackets, or in the
/// settings file (GATEWAY_CONFIG). Precedence: flag, environment, settings file, built-in
/// default. `gateway doctor` checks exactly what `gateway` would run with.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about, long_about = None, max_term_width = 100,
          after_help = PRECEDENCE, after_long_help = PRECEDENCE)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Sub-commands; without one, the gateway runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Print a TURN REST API credential document (`username`, `password`, `ttl`, `uris`)
    /// minted with TURN_SECRET, as coturn deployments expect.
    Credentials {
        /// User or session id placed after the colon of the username.
        #[arg(long, default_value = "user")]
        user: String,
        /// Seconds until the credential expires (default: TURN_CREDENTIAL_TTL).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Check this machine and these settings: ports, advertised address, certificate,
    /// external TURN servers, and a relay loop through the embedded relay. One line per
    /// check (OK, WARN or FAIL with the fix); exit status 0 only when nothing failed. Reads
    /// the same flags and environment as `gateway run`.
    Doctor {
        /// One JSON document (`{"ok":…,"checks":[{"name","status","detail"}]}`) instead of
        /// lines, for machines.
        #[arg(long)]
        json: bool,
    },
}

/// Settings shared by every sub-command.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// A TOML settings file: keys are these settings' environment names in lower case
    /// (`turn_secret = "…"`), named streams in a `[streams]` table (`cam1 = "rtp://…"`).
    /// Flags and environment variables win over it.
    #[arg(long, env = "GATEWAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What runs: `media` (the media engine, the signaling API and the relay) or `relay`
    /// (the TURN relay alone, for a WebRTC backend that keeps its own signaling and ICE
    /// config: no media ports, HTTP serves only /health, /metrics and, with API_TOKEN, the
    /// TURN REST endpoint).
    #[arg(long, env = "GATEWAY_MODE", value_enum, default_value_t = GatewayMode::Media)]
    pub gateway_mode: GatewayMode,

    /// Proxy mode: the web application the gateway fronts (e.g. Geti's backend,
    /// `http://127.0.0.1:9100`). Every request the gateway does not answer itself is proxied
    /// to it (bodies streamed, WebSocket and SSE included, `X-Forwarded-*` added); the
    /// gateway answers /health, /metrics, the ICE config endpoints and each project's offer
    /// endpoint, by pulling that project's video from the upstream once
    /// (`offer+UPSTREAM_URL/api/v1/projects/ID/offer`). Its own viewer page moves to
    /// `/gateway/`. `http://` only, no path.
    #[arg(long, env = "UPSTREAM_URL", value_name = "URL")]
    pub upstream_url: Option<String>,

    /// Static TURN users, `user:password,…` (the original coturn recipe's
    /// COTURN_USERNAME/COTURN_PASSWORD). Opt-in, for a backend that cannot mint REST
    /// credentials: refused unless TURN_ALLOWED_PEERS is set; they reach only the peers it
    /// names; they never expire; warned about at every start and counted in /metrics
    /// (`turn_static_user_allocations_total`). Prefer REST credentials (TURN_SECRET).
    #[arg(
        long,
        env = "TURN_STATIC_USERS",
        hide_env_values = true,
        value_name = "USER:PASSWORD,…"
    )]
    pub turn_static_users: Option<String>,

    /// Address of the plain-HTTP signaling API and web page.
    #[arg(long, env = "GATEWAY_HTTP_ADDR", default_value = "0.0.0.0:9100")]
    pub gateway_http_addr: SocketAddr,

    /// TCP address serving TURN over TLS, TURN over TCP and HTTPS, told apart by their
    /// first bytes.
    #[arg(long, env = "TURN_LISTEN", default_value = "0.0.0.0:443")]
    pub turn_listen: SocketAddr,

    /// UDP address for TURN over UDP; off unless set.
    #[arg(long, env = "TURN_UDP_LISTEN")]
    pub turn_udp_listen: Option<SocketAddr>,

    /// Shared secrets for TURN REST credentials, comma-separated: the first mints, all
    /// verify (rotate with `new,old`). Random per start when unset (logged as a
    /// fingerprint, never in clear).
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Bearer token for `GET /api/v1/turn/credentials` (`Authorization: Bearer <token>`),
    /// the TURN REST endpoint that mints credentials for any name. Unset: the endpoint is off
    /// (404). Make one with `openssl rand -base64 32`.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Bearer token WHIP publishers present (`Authorization: Bearer <token>`) to publish to a
    /// `whip` stream that has no token of its own (`whip?token=…`). A `whip` stream with no
    /// token at all is refused at start. Make one with `openssl rand -base64 32`.
    #[arg(long, env = "WHIP_TOKEN", hide_env_values = true)]
    pub whip_token: Option<String>,

    /// A new authenticated WHIP publisher on a live `whip` stream replaces the one there (its
    /// session ends; viewers stay and get the new video from its first keyframe) instead of
    /// being refused with 409. For every `whip` stream; one stream alone:
    /// `whip?token=…&takeover=true`.
    #[arg(long, env = "WHIP_TAKEOVER", default_value_t = false, action = clap::ArgAction::Set)]
    pub whip_takeover: bool,

    /// TURN realm.
    #[arg(long, env = "TURN_REALM", default_value = "gateway")]
    pub turn_realm: String,

    /// Host name or IP written into turn:/turns: URLs handed to browsers. Must match the
    /// TLS certificate for TURNS. Default: WEBRTC_ADVERTISE_IP, else `localhost`.
    #[arg(long, env = "TURN_HOST", value_parser = parse_host)]
    pub turn_host: Option<String>,

    /// Lifetime of minted TURN credentials, in seconds.
    #[arg(long, env = "TURN_CREDENTIAL_TTL", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=auth::MAX_TTL_SECS))]
    pub turn_credential_ttl: u64,

    /// Peers the relay may send to besides the gateway's own media addresses,
    /// comma-separated CIDRs with optional port range (`203.0.113.0/24:5000-6000`,
    /// `[2001:db8::/32]:3478`). Private, loopback, link-local, multicast, unspecified and
    /// other special-purpose addresses stay denied unless an entry names them explicitly, and
    /// so do the gateway's own addresses (advertised, configured, interfaces) on any port but
    /// its media ports unless an entry names the address itself (`203.0.113.7:8443`).
    #[arg(long, env = "TURN_ALLOWED_PEERS", default_value = "")]
    pub turn_allowed_peers: String,

    /// Peers the relay never sends to (same syntax); wins over the allow list.
    #[arg(long, env = "TURN_DENIED_PEERS", default_value = "")]
    pub turn_denied_peers: String,

    /// Local IPv4 address relay sockets bind to (for peers the policy allows).
    #[arg(long, env = "TURN_RELAY_IP", default_value = "0.0.0.0")]
    pub turn_relay_ip: IpAddr,

    /// UDP port range of relayed addresses, one port per allocation. Sockets are bound
    /// only for allocations that talk to a peer other than the gateway's own media. Keep it
    /// outside WEBRTC_PORT_RANGE and the kernel's ephemeral range
    /// (net.ipv4.ip_local_port_range, 32768-60999 by default); widen it for more than
    /// ~4,500 concurrent allocations.
    #[arg(long, env = "TURN_RELAY_PORTS", default_value = "61000-65535")]
    pub turn_relay_ports: PortRange,

    /// Allocations one credential user may hold at once.
    #[arg(long, env = "TURN_USER_QUOTA", default_value_t = 10)]
    pub turn_user_quota: u32,

    /// Allocations the relay holds at once.
    #[arg(long, env = "TURN_TOTAL_QUOTA", default_value_t = 20_000)]
    pub turn_total_quota: u32,

    /// Concurrent connections allowed from one source IP (IPv6: one /64) on the TURN port.
    #[arg(long, env = "TURN_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub turn_max_connections_per_ip: u32,

    /// Concurrent HTTP connections, on GATEWAY_HTTP_ADDR and HTTPS on the TURN port
    /// together; more are closed at once. Idle keep-alive connections close after 10 s.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 8192,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// Concurrent HTTP connections from one source IP, IPv6 counted per /64 (viewers behind
    /// one corporate NAT share an address: keep it well above their number).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_ip: u32,

    /// TLS handshakes in flight from one source IP (IPv6: one /64) on TURN_LISTEN (TURNS and
    /// HTTPS); a connection over it is closed before its handshake (counted in /metrics as
    /// turn_tls_handshakes_total{result="refused"}). A handshake takes a round trip or two,
    /// so even many viewers behind one NAT rarely have more than a few in flight.
    #[arg(long, env = "TURN_MAX_TLS_HANDSHAKES_PER_IP", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub turn_max_tls_handshakes_per_ip: u32,

    /// TLS handshakes in flight in all on TURN_LISTEN; more are closed before their
    /// handshake.
    #[arg(long, env = "TURN_MAX_TLS_HANDSHAKES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub turn_max_tls_handshakes: u32,

    /// Seconds a new connection has to finish its TLS handshake and send its first bytes.
    #[arg(long, env = "TURN_HANDSHAKE_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub turn_handshake_timeout: u64,

    /// Seconds a TURN connection (TCP, TLS or UDP client) has, from when it opens, to send
    /// a request that authenticates; it is closed then, however many Binding requests or
    /// unauthenticated requests it sends. Real clients authenticate in their second round
    /// trip.
    #[arg(long, env = "TURN_UNAUTHENTICATED_TIMEOUT", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub turn_unauthenticated_timeout: u64,

    /// PEM certificate chain for TLS on TURN_LISTEN. A self-signed certificate for
    /// TURN_HOST is made when unset (with a warning).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS_CERT.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// What to stream (the stream `default`): `testsrc` (built-in test pattern, H.264 and
    /// VP8), `rtp://[ADDR]:PORT?codec=h264|vp8` (RTP ingest; 127.0.0.1 without ADDR), a file
    /// path, or a pull from
    /// another WebRTC server: `offer+http://HOST:PORT/api/v1/projects/ID/offer` (Geti's offer
    /// endpoint) or `whep+http://HOST:PORT/whep/…` (`https://` too, see PULL_CA_FILE), or
    /// `whip[?token=TOKEN][&takeover=true]` (published by WHIP at `/whip`, with WHIP_TOKEN or
    /// the stream's own token; `takeover=true`: a new publisher replaces the live one).
    #[arg(long, env = "MEDIA_SOURCE", default_value = "testsrc")]
    pub media_source: MediaSourceSpec,

    /// Named streams besides `default` (which MEDIA_SOURCE feeds): NAME=SOURCE, SOURCE as in
    /// MEDIA_SOURCE. Repeat the flag; in the environment, separate entries with spaces.
    /// `POST /api/v1/projects/NAME/offer`, `POST /whep/NAME` and the viewer page's
    /// `?stream=NAME` play them.
    #[arg(
        long = "stream",
        env = "STREAMS",
        value_name = "NAME=SOURCE",
        value_delimiter = ' '
    )]
    pub streams: Vec<crate::streams::NamedStream>,

    /// What a request for an unknown stream plays once named streams exist: `none` (404
    /// `unknown_stream`) or `default`. While `default` is the only stream, every name plays it.
    #[arg(long, env = "STREAM_FALLBACK", value_enum, default_value = "none")]
    pub stream_fallback: crate::streams::StreamFallback,

    /// Seconds a pulled stream (`offer+http://…`, `whep+http://…`) stays connected to its
    /// upstream after its last viewer left. The first viewer's request connects it.
    #[arg(long, env = "PULL_IDLE_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub pull_idle_timeout: u64,

    /// PEM file of certificates (a private CA) trusted for `https://` pull upstreams
    /// (`whep+https://…`, `offer+https://…`), besides the system's roots.
    #[arg(long, env = "PULL_CA_FILE")]
    pub pull_ca_file: Option<std::path::PathBuf>,

    /// IP or DNS name (resolved at start) written into host candidates instead of the bound
    /// address (1:1 NAT, containers). Default: the address STUN_SERVER reports, else
    /// WEBRTC_BIND_IP when it is concrete, else the machine's first non-loopback IPv4.
    #[arg(long, env = "WEBRTC_ADVERTISE_IP", value_parser = parse_host)]
    pub webrtc_advertise_ip: Option<String>,

    /// UDP ports the media sockets may bind (`FIRST-LAST`, or one port).
    #[arg(long, env = "WEBRTC_PORT_RANGE", default_value = "50000-50050")]
    pub webrtc_port_range: PortRange,

    /// Local IP the media sockets bind to.
    #[arg(long, env = "WEBRTC_BIND_IP", default_value = "0.0.0.0")]
    pub webrtc_bind_ip: IpAddr,

    /// Extra ICE servers for browsers: a JSON list of RTCIceServer
    /// (`[{"urls":"turn:h:3478","username":"u","credential":"p"}]`). An entry may carry
    /// `"secret"` instead of `"credential"`: the gateway then mints TURN REST credentials for
    /// it per session.
    #[arg(long, env = "ICE_SERVERS", hide_env_values = true)]
    pub ice_servers: Option<IceServersSetting>,

    /// STUN server (`stun:HOST:PORT` or `HOST:PORT`) listed for browsers and, when
    /// WEBRTC_ADVERTISE_IP is unset, asked at start-up for the public address to advertise.
    /// A `stun:` entry of ICE_SERVERS is asked too.
    #[arg(long, env = "STUN_SERVER")]
    pub stun_server: Option<StunServerSetting>,

    /// External coturn listed after the embedded relay (host name or IP).
    #[arg(long, env = "COTURN_HOST", value_parser = parse_host)]
    pub coturn_host: Option<String>,

    /// Port of the external coturn.
    #[arg(long, env = "COTURN_PORT", default_value_t = 3478,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub coturn_port: u16,

    /// Static username for the external coturn.
    #[arg(long, env = "COTURN_USERNAME", requires = "coturn_password")]
    pub coturn_username: Option<String>,

    /// Static password for the external coturn.
    #[arg(
        long,
        env = "COTURN_PASSWORD",
        hide_env_values = true,
        requires = "coturn_username"
    )]
    pub coturn_password: Option<String>,

    /// Shared secret of the external coturn (`use-auth-secret`): REST credentials are minted
    /// for it per session (wins over COTURN_USERNAME/COTURN_PASSWORD).
    #[arg(long, env = "COTURN_SECRET", hide_env_values = true)]
    pub coturn_secret: Option<String>,

    /// List the embedded relay in the ICE servers handed to browsers. With `false` the
    /// lists name only ICE_SERVERS / COTURN_* (an external coturn as the only relay); the
    /// TURN port still serves HTTPS.
    #[arg(long, env = "TURN_EMBEDDED", default_value_t = true, action = clap::ArgAction::Set)]
    pub turn_embedded: bool,

    /// Most concurrent viewers (sessions that sent an offer). Beyond, the Geti offer
    /// endpoint answers 200 `{"status":"failed","meta":{"error":"concurrency_limit_reached"}}`
    /// (what Geti's UI retries from) and WHEP answers 503. ICE config requests take no slot.
    #[arg(long, env = "MAX_VIEWERS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_viewers: u32,

    /// Seconds a session that received ICE servers but never offered, and whose TURN
    /// credential holds no allocation, lives; then it ends and its credential is refused. A
    /// session whose credential holds an allocation never idles out: it ends with its last
    /// allocation, or with its media.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub session_idle_timeout: u64,

    /// Sessions waiting for their offer, in total. When full, the oldest one whose
    /// credential holds no allocation makes room.
    #[arg(long, env = "SESSION_PENDING_MAX", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub session_pending_max: u32,

    /// Sessions waiting for their offer per source (an IPv4 address or an IPv6 /64). When
    /// full, that source's oldest one whose credential holds no allocation makes room, so
    /// one client flooding ICE config requests evicts only its own.
    #[arg(long, env = "SESSION_PENDING_PER_SOURCE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub session_pending_per_source: u32,

    /// Seconds an allocation whose credential belongs to no live session of this gateway
    /// (minted by `gateway credentials`, the REST endpoint or another service) may live
    /// past its creation: it refreshes past its credential's expiry until
    /// max(expiry, created + this), never longer. A session's own allocations refresh for as
    /// long as the session lives.
    #[arg(long, env = "TURN_UNBOUND_ALLOCATION_LIFETIME", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub turn_unbound_allocation_lifetime: u64,

    /// Browser origins allowed to call the API from pages served elsewhere (CORS), e.g. a
    /// UI on another port: comma-separated origins (`https://ui.example.com`) or `*`.
    /// Unset: no CORS headers at all.
    #[arg(long, env = "CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// Seconds a graceful shutdown (SIGTERM, Ctrl-C) waits for TURN sessions to end
    /// before exiting anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout: u64,

    /// Cluster mode: several gateways as one service, sharing a node registry, the
    /// directory of each live stream's origin node and session revocations through this
    /// Valkey/Redis (`redis://HOST:PORT[/DB]`, `rediss://` for TLS). A node asked for a
    /// stream another node holds pulls it from there, once per node. Unset: a single node
    /// that needs no Redis. Needs TURN_SECRET, the same on every node.
    #[arg(
        long,
        env = "CLUSTER_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub cluster_redis_url: Option<String>,

    /// Cluster mode: this node's id (1 to 64 of `A-Z a-z 0-9 - _ .`), unique in the
    /// cluster. Default: the host name.
    #[arg(long, env = "CLUSTER_NODE_ID", value_name = "ID")]
    pub cluster_node_id: Option<String>,

    /// Cluster mode: the URL sibling nodes reach this node's HTTP API at (their pulls of
    /// its streams go there). Default: `http://` + GATEWAY_HTTP_ADDR's address (the
    /// advertised media address when it is 0.0.0.0) and port.
    #[arg(long, env = "CLUSTER_PEER_URL", value_name = "URL")]
    pub cluster_peer_url: Option<String>,

    /// Cluster mode: the token nodes present to each other when one pulls a stream from
    /// another (at least 16 characters, the same on every node). Default: derived from the
    /// first TURN_SECRET (set it explicitly while rotating TURN_SECRET).
    #[arg(long, env = "CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

    /// Log format: `text` (human-readable) or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// A setting that failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct SettingError {
    /// Environment variable / flag name.
    pub setting: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Everything the gateway and `gateway doctor` need from the settings, validated once by
/// [`Settings::plan`]: what `gateway` would run with is exactly what the doctor checks.
/// Nothing in it touches the network; the advertised address is decided at start-up from
/// [`MediaPlan`].
#[derive(Clone)]
pub struct Plan {
    /// The settings it was made from (request handlers read the credential TTL and URLs).
    pub settings: Settings,
    /// TURN_SECRET; `None` when unset (start-up then makes a random one).
    pub secrets: Option<auth::SecretRing>,
    /// API_TOKEN; `None`: the TURN REST endpoint is off.
    pub api_token: Option<String>,
    /// TURN_ALLOWED_PEERS / TURN_DENIED_PEERS.
    pub policy: PeerPolicy,
    /// The relay's protocol settings (realm, quotas, lifetimes).
    pub relay: relay::core::Config,
    /// The relay's sockets and connection limits.
    pub io: relay::io::IoConfig,
    /// HTTP_MAX_CONNECTIONS and HTTP_MAX_CONNECTIONS_PER_IP.
    pub http_limits: (u32, u32),
    /// The media engine's settings.
    pub media: MediaPlan,
    /// Session bounds (MAX_VIEWERS, SESSION_*).
    pub sessions: crate::session::Limits,
    /// External ICE servers (ICE_SERVERS, COTURN_*, STUN_SERVER), checked.
    pub ice: crate::signaling::ice_servers::IceServerPlan,
    /// CORS_ORIGINS; `None`: no CORS headers.
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// TLS_CERT and TLS_KEY; `None`: a self-signed certificate.
    pub tls: Option<TlsFiles>,
    /// Switches.
    pub modes: Modes,
    /// TURN_STATIC_USERS (keys made for TURN_REALM); empty unless opted in.
    pub static_users: relay::core::StaticUsers,
    /// CLUSTER_*; `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterPlan>,
}

/// GATEWAY_MODE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatewayMode {
    /// Media engine, signaling API and relay.
    Media,
    /// The TURN relay alone.
    Relay,
}

/// TLS_CERT and TLS_KEY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// What the media engine needs, before the advertised address is known.
#[derive(Debug, Clone)]
pub struct MediaPlan {
    /// WEBRTC_BIND_IP.
    pub bind_ip: IpAddr,
    /// WEBRTC_PORT_RANGE.
    pub ports: PortRange,
    /// WEBRTC_ADVERTISE_IP as written (an IP or a DNS name resolved at start).
    pub advertise: Option<String>,
    /// STUN servers asked for the public address when `advertise` is unset, in order.
    pub stun_probes: Vec<StunProbe>,
    /// Backstop on the engine's sessions: room beyond MAX_VIEWERS for sessions being
    /// replaced (closed while their successor starts).
    pub max_sessions: usize,
    /// MEDIA_SOURCE (the stream `default`).
    pub source: MediaSourceSpec,
    /// STREAMS: the named streams, names unique.
    pub streams: Vec<crate::streams::NamedStream>,
    /// STREAM_FALLBACK.
    pub stream_fallback: crate::streams::StreamFallback,
    /// PULL_IDLE_TIMEOUT.
    pub pull_idle: Duration,
    /// PULL_CA_FILE.
    pub pull_ca_file: Option<std::path::PathBuf>,
    /// UPSTREAM_URL (proxy mode): `http://host:port`, no path.
    pub upstream: Option<hyper::Uri>,
}

impl MediaPlan {
    /// The engine's configuration once the advertised address is decided.
    pub fn config(&self, advertised: IpAddr) -> crate::media::MediaConfig {
        crate::media::MediaConfig {
            bind_ip: self.bind_ip,
            ports: self.ports,
            advertise_ip: Some(advertised),
            max_sessions: self.max_sessions,
            ..Default::default()
        }
    }
}

/// A STUN server to ask for the public address, and the setting that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunProbe {
    /// `STUN_SERVER` or `ICE_SERVERS`.
    pub setting: &'static str,
    /// The server.
    pub server: StunServerSetting,
}

/// Switches of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// GATEWAY_MODE=relay: the TURN relay alone.
    pub relay_only: bool,
    /// TURN_EMBEDDED: the embedded relay is listed in ICE server lists.
    pub turn_embedded: bool,
    /// LOG_FORMAT=json.
    pub json_logs: bool,
}

impl Plan {
    /// Whether a self-signed certificate is served (TLS_CERT/TLS_KEY unset).
    pub fn self_signed(&self) -> bool {
        self.tls.is_none()
    }
}

impl Settings {
    /// Validates every setting and the ones that depend on each other, and returns what the
    /// gateway runs with. Pure: no file, socket or name lookup. Errors name the setting and
    /// the offending value.
    pub fn plan(&self) -> Result<Plan, SettingError> {
        let secrets = self.secrets()?;
        let api_token = self.api_token()?;
        self.check_port_ranges()?;
        let policy = self.policy()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(SettingError {
                    setting: if self.tls_key.is_none() {
                        "TLS_KEY"
                    } else {
                        "TLS_CERT"
                    },
                    reason: "TLS_CERT and TLS_KEY go together: set both, or neither for a \
                             self-signed certificate"
                        .into(),
                });
            }
        };
        let cors = crate::signaling::cors::layer(self.cors_origins.as_deref())?;
        let ice = crate::signaling::ice_servers::IceServerPlan::new(
            crate::signaling::ice_servers::PlanInput {
                ice_servers: self
                    .ice_servers
                    .as_ref()
                    .map(|l| l.0.as_slice())
                    .unwrap_or_default(),
                coturn: self.coturn_host.as_deref().map(|h| (h, self.coturn_port)),
                coturn_static: self
                    .coturn_username
                    .as_deref()
                    .zip(self.coturn_password.as_deref()),
                coturn_secret: self.coturn_secret.as_deref(),
                stun: self.stun_server.as_ref(),
                ttl: self.turn_credential_ttl,
            },
        )?;
        let relay = relay::core::Config {
            realm: self.turn_realm.clone(),
            max_allocations_per_user: self.turn_user_quota,
            max_allocations_total: self.turn_total_quota,
            unbound_allocation_lifetime: Duration::from_secs(self.turn_unbound_allocation_lifetime),
            ..Default::default()
        };
        let io = relay::io::IoConfig {
            listen: self.turn_listen,
            udp_listen: self.turn_udp_listen,
            relay_ipv4: Some(self.turn_relay_ip),
            relay_ipv6: None,
            relay_ports: Some(self.turn_relay_ports),
            handshake_timeout: self.handshake_timeout(),
            unauthenticated_timeout: Duration::from_secs(self.turn_unauthenticated_timeout),
            max_connections_per_ip: self.turn_max_connections_per_ip,
            max_tls_handshakes_per_ip: self.turn_max_tls_handshakes_per_ip,
            max_tls_handshakes: self.turn_max_tls_handshakes,
            ..Default::default()
        };
        let viewers = self.max_viewers as usize;
        let (source, streams) = self.whip_tokens()?;
        let media = MediaPlan {
            bind_ip: self.webrtc_bind_ip,
            ports: self.webrtc_port_range,
            advertise: self.webrtc_advertise_ip.clone(),
            stun_probes: self.stun_probes_named(),
            max_sessions: viewers + viewers / 4 + 8,
            source,
            streams,
            stream_fallback: self.stream_fallback,
            pull_idle: Duration::from_secs(self.pull_idle_timeout),
            pull_ca_file: self.pull_ca_file.clone(),
            upstream: self.upstream()?,
        };
        for (i, a) in self.streams.iter().enumerate() {
            if self.streams.iter().skip(i + 1).any(|b| b.name == a.name) {
                return Err(SettingError {
                    setting: "STREAMS",
                    reason: format!("the stream {:?} is named twice", a.name),
                });
            }
        }
        let sessions = crate::session::Limits {
            max_viewers: viewers,
            max_pending: self.session_pending_max as usize,
            max_pending_per_source: self.session_pending_per_source as usize,
            idle: Duration::from_secs(self.session_idle_timeout),
        };
        let cluster = self.cluster(secrets.as_ref())?;
        Ok(Plan {
            settings: self.clone(),
            secrets,
            api_token,
            policy,
            relay,
            io,
            http_limits: (self.http_max_connections, self.http_max_connections_per_ip),
            media,
            sessions,
            ice,
            cors,
            tls,
            static_users: self.static_users()?,
            cluster,
            modes: Modes {
                relay_only: self.gateway_mode == GatewayMode::Relay,
                turn_embedded: self.turn_embedded,
                json_logs: self.log_format == "json",
            },
        })
    }
}

impl Settings {
    /// CLUSTER_*, checked (`secrets`: TURN_SECRET's ring, which cluster mode needs).
    fn cluster(
        &self,
        secrets: Option<&auth::SecretRing>,
    ) -> Result<Option<crate::cluster::ClusterPlan>, SettingError> {
        let Some(url) = self.cluster_redis_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if self.gateway_mode == GatewayMode::Relay {
            return Err(SettingError {
                setting: "CLUSTER_REDIS_URL",
                reason: "cluster mode needs the media engine (GATEWAY_MODE=media)".into(),
            });
        }
        crate::cluster::ClusterPlan::new(
            url,
            self.cluster_node_id.as_deref(),
            self.cluster_peer_url.as_deref(),
            self.cluster_token.as_deref(),
            secrets,
        )
        .map(Some)
        .map_err(|(setting, reason)| SettingError { setting, reason })
    }

    /// UPSTREAM_URL, checked: `http://HOST[:PORT]` (a trailing `/` allowed), and not with
    /// GATEWAY_MODE=relay.
    pub fn upstream(&self) -> Result<Option<hyper::Uri>, SettingError> {
        let Some(s) = self.upstream_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad = |reason: String| SettingError {
            setting: "UPSTREAM_URL",
            reason,
        };
        if self.gateway_mode == GatewayMode::Relay {
            return Err(bad(
                "proxy mode needs the media engine: unset UPSTREAM_URL or GATEWAY_MODE=relay"
                    .into(),
            ));
        }
        let uri: hyper::Uri = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a URL; e.g. http://127.0.0.1:9100")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            return Err(bad(format!(
                "{s:?}: the upstream must be an http:// URL with a host, e.g. \
                 http://127.0.0.1:9100 (it sits beside the gateway)"
            )));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad(format!(
                "{s:?}: give the upstream's address without a path (its paths are the \
                 requests' own)"
            )));
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        hyper::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }

    /// The secret ring from TURN_SECRET, or `None` when unset. Every secret must be at least
    /// [`MIN_SECRET_BYTES`] long: each minted credential is an offline brute-force oracle for
    /// a weak one.
    pub fn secrets(&self) -> Result<Option<auth::SecretRing>, SettingError> {
        let Some(s) = self.turn_secret.as_deref() else {
            return Ok(None);
        };
        let ring = auth::SecretRing::parse(s).map_err(|e| SettingError {
            setting: "TURN_SECRET",
            reason: format!(
                "{e}: set TURN_SECRET to one secret (e.g. `openssl rand -base64 32`) or a \
                 comma-separated list, newest first, without empty entries"
            ),
        })?;
        for (i, secret) in s.split(',').map(str::trim).enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(SettingError {
                    setting: "TURN_SECRET",
                    reason: format!(
                        "secret #{} is {} bytes, at least {MIN_SECRET_BYTES} are needed; make one \
                         with `openssl rand -base64 32`",
                        i + 1,
                        secret.len()
                    ),
                });
            }
        }
        Ok(Some(ring))
    }

    /// TURN_STATIC_USERS, with keys for TURN_REALM. Refused without TURN_ALLOWED_PEERS: a
    /// password that never expires must not open every public address.
    pub fn static_users(&self) -> Result<relay::core::StaticUsers, SettingError> {
        let list = self.turn_static_users.as_deref().unwrap_or("");
        let users =
            relay::core::StaticUsers::parse(list, &self.turn_realm).map_err(|e| SettingError {
                setting: "TURN_STATIC_USERS",
                reason: format!("{e}: write `user:password`, entries separated by commas"),
            })?;
        if !users.is_empty() && self.turn_allowed_peers.trim().is_empty() {
            return Err(SettingError {
                setting: "TURN_STATIC_USERS",
                reason: "static users need TURN_ALLOWED_PEERS: name the peers they may reach \
                         (the backend's media address and ports, e.g. \
                         `TURN_ALLOWED_PEERS=10.0.0.5:50000-50050`); their passwords never \
                         expire, so they never get the whole internet"
                    .into(),
            });
        }
        Ok(users)
    }

    /// MEDIA_SOURCE and STREAMS with WHIP_TOKEN given to every `whip` stream without a token
    /// of its own; a `whip` stream with no token at all, or a short WHIP_TOKEN, is refused.
    pub fn whip_tokens(
        &self,
    ) -> Result<(MediaSourceSpec, Vec<crate::streams::NamedStream>), SettingError> {
        let token = match self.whip_token.as_deref().map(str::trim) {
            Some(t) if t.len() < MIN_SECRET_BYTES => {
                return Err(SettingError {
                    setting: "WHIP_TOKEN",
                    reason: format!(
                        "{} bytes, at least {MIN_SECRET_BYTES} are needed; make one with \
                         `openssl rand -base64 32`",
                        t.len()
                    ),
                })
            }
            t => t,
        };
        let source = self
            .media_source
            .clone()
            .with_whip_takeover(self.whip_takeover)
            .with_whip_token(token)
            .map_err(|e| SettingError {
                setting: "MEDIA_SOURCE",
                reason: e.to_string(),
            })?;
        let streams = self
            .streams
            .iter()
            .map(|n| {
                Ok(crate::streams::NamedStream {
                    name: n.name.clone(),
                    source: n
                        .source
                        .clone()
                        .with_whip_takeover(self.whip_takeover)
                        .with_whip_token(token)
                        .map_err(|e| SettingError {
                            setting: "STREAMS",
                            reason: format!("stream {:?}: {e}", n.name),
                        })?,
                })
            })
            .collect::<Result<Vec<_>, SettingError>>()?;
        Ok((source, streams))
    }

    /// The API token (API_TOKEN), or `None` when unset. An empty or short one is refused.
    pub fn api_token(&self) -> Result<Option<String>, SettingError> {
        match self.api_token.as_deref().map(str::trim) {
            None => Ok(None),
            Some(t) if t.len() < MIN_SECRET_BYTES => Err(SettingError {
                setting: "API_TOKEN",
                reason: format!(
                    "{} bytes, at least {MIN_SECRET_BYTES} are needed; make one with \
                     `openssl rand -base64 32`",
                    t.len()
                ),
            }),
            Some(t) => Ok(Some(t.to_owned())),
        }
    }

    /// Checks that TURN_RELAY_PORTS and WEBRTC_PORT_RANGE do not overlap: a relayed
    /// address on a media port could never be bound.
    pub fn check_port_ranges(&self) -> Result<(), SettingError> {
        let (relay, media) = (self.turn_relay_ports, self.webrtc_port_range);
        if relay.overlaps(&media) {
            return Err(SettingError {
                setting: "TURN_RELAY_PORTS",
                reason: format!(
                    "{relay} overlaps WEBRTC_PORT_RANGE {media}: a relayed address on a media \
                     port could never be bound; set TURN_RELAY_PORTS or WEBRTC_PORT_RANGE so \
                     that the two ranges do not overlap (e.g. the defaults, TURN_RELAY_PORTS=61000-65535 \
                     and WEBRTC_PORT_RANGE=50000-50050)"
                ),
            });
        }
        Ok(())
    }

    /// The peer policy from TURN_ALLOWED_PEERS / TURN_DENIED_PEERS.
    pub fn policy(&self) -> Result<PeerPolicy, SettingError> {
        const FIX: &str = "write comma-separated CIDRs with an optional port or port range, \
                           e.g. 203.0.113.0/24:5000-6000,[2001:db8::/32]:3478";
        let bad = |setting, e: &dyn std::fmt::Display| SettingError {
            setting,
            reason: format!("{e}: {FIX}"),
        };
        PeerPolicy::parse(&self.turn_allowed_peers, "")
            .map_err(|e| bad("TURN_ALLOWED_PEERS", &e))?;
        PeerPolicy::parse("", &self.turn_denied_peers).map_err(|e| bad("TURN_DENIED_PEERS", &e))?;
        PeerPolicy::parse(&self.turn_allowed_peers, &self.turn_denied_peers)
            .map_err(|e| bad("TURN_ALLOWED_PEERS", &e))
    }

    /// The host written into TURN URLs: TURN_HOST, else WEBRTC_ADVERTISE_IP, else
    /// `localhost` (the running gateway uses the address it advertises instead, see
    /// [`Settings::turn_uris_for`]).
    pub fn turn_host(&self) -> String {
        self.turn_host
            .clone()
            .or_else(|| self.webrtc_advertise_ip.clone())
            .unwrap_or_else(|| "localhost".to_owned())
    }

    /// `turns:` and `turn:` URLs of the embedded relay, in the order browsers should try.
    pub fn turn_uris(&self) -> Vec<String> {
        self.turn_uris_for(&self.turn_host())
    }

    /// STUN servers to ask for the public address: STUN_SERVER, then the `stun:` URLs of
    /// ICE_SERVERS.
    pub fn stun_probes(&self) -> Vec<StunServerSetting> {
        self.stun_probes_named()
            .into_iter()
            .map(|p| p.server)
            .collect()
    }

    /// [`Settings::stun_probes`] with the setting each comes from.
    fn stun_probes_named(&self) -> Vec<StunProbe> {
        let mut out: Vec<StunProbe> = self
            .stun_server
            .iter()
            .map(|s| StunProbe {
                setting: "STUN_SERVER",
                server: s.clone(),
            })
            .collect();
        if let Some(list) = &self.ice_servers {
            for e in &list.0 {
                let urls = match &e.urls {
                    crate::signaling::ice_servers::Urls::One(u) => vec![u.clone()],
                    crate::signaling::ice_servers::Urls::Many(v) => v.clone(),
                };
                for u in urls {
                    if crate::ice_url::strip_scheme(&u, crate::ice_url::Scheme::Stun).is_some() {
                        if let Ok(server) = u.parse() {
                            out.push(StunProbe {
                                setting: "ICE_SERVERS",
                                server,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// `turns:` and `turn:` URLs of the embedded relay for `host`.
    pub fn turn_uris_for(&self, host: &str) -> Vec<String> {
        let host = host.to_owned();
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host
        };
        let port = self.turn_listen.port();
        let mut uris = vec![
            format!("turns:{host}:{port}?transport=tcp"),
            format!("turn:{host}:{port}?transport=tcp"),
        ];
        if let Some(udp) = self.turn_udp_listen {
            uris.push(format!("turn:{host}:{}?transport=udp", udp.port()));
        }
        uris
    }

    /// The TLS handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.turn_handshake_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec!["gateway"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    }

    #[test]
    fn upstream_url_is_checked() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let mut all = vec!["gateway"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().settings.upstream()
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(
            parse(&["--upstream-url", "http://127.0.0.1:9100"])
                .unwrap()
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9100/"
        );
        for bad in [
            "https://127.0.0.1:9100",
            "http://127.0.0.1:9100/api",
            "127.0.0.1:9100",
            "not a url",
        ] {
            let e = parse(&["--upstream-url", bad]).unwrap_err();
            assert_eq!(e.setting, "UPSTREAM_URL", "{bad}");
        }
        let e = parse(&[
            "--upstream-url",
            "http://127.0.0.1:9100",
            "--gateway-mode",
            "relay",
        ])
        .unwrap_err();
        assert!(e.reason.contains("GATEWAY_MODE"), "{e:?}");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_states_the_precedence_rule() {
        let help = Cli::command().render_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains(
                "a flag wins over its environment variable, which wins over the settings file, \
                 which wins over the built-in default"
            ),
            "{help}"
        );
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.settings.turn_listen.port(), 443);
        assert_eq!(c.settings.gateway_http_addr.port(), 9100);
        assert!(c.settings.turn_udp_listen.is_none());
        assert_eq!(
            c.settings.turn_uris(),
            vec![
                "turns:localhost:443?transport=tcp",
                "turn:localhost:443?transport=tcp"
            ]
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = parse(&["--turn-listen", "nope"]).unwrap_err().to_string();
        assert!(e.contains("--turn-listen"), "{e}");
        let e = parse(&["--turn-credential-ttl", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--turn-credential-ttl"), "{e}");
        let c = parse(&["--turn-secret", "a,,b"]).unwrap();
        assert!(c
            .settings
            .secrets()
            .unwrap_err()
            .to_string()
            .contains("TURN_SECRET"));
        // Short secrets are refused with how to make a good one; rotation checks each.
        for short in ["x", "fifteen-bytes!!", "0123456789abcdef,old"] {
            let c = parse(&["--turn-secret", short]).unwrap();
            let e = c.settings.secrets().unwrap_err().to_string();
            assert!(
                e.contains("TURN_SECRET") && e.contains("openssl rand -base64 32"),
                "{short}: {e}"
            );
        }
        let c = parse(&["--turn-secret", "0123456789abcdef,fedcba9876543210"]).unwrap();
        assert!(c.settings.secrets().unwrap().is_some());
        let c = parse(&["--api-token", "short"]).unwrap();
        let e = c.settings.api_token().unwrap_err().to_string();
        assert!(e.contains("API_TOKEN") && e.contains("openssl"), "{e}");
        assert_eq!(parse(&[]).unwrap().settings.api_token().unwrap(), None);
        for (flag, setting) in [
            ("--turn-allowed-peers", "TURN_ALLOWED_PEERS"),
            ("--turn-denied-peers", "TURN_DENIED_PEERS"),
        ] {
            let c = parse(&[flag, "300.1.2.3/8"]).unwrap();
            let e = c.settings.policy().unwrap_err().to_string();
            assert!(
                e.contains(setting) && e.contains("write comma-separated CIDRs"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn media_and_signaling_settings() {
        let c = parse(&[]).unwrap().settings;
        assert_eq!(c.media_source, MediaSourceSpec::TestSrc);
        assert_eq!(
            (c.webrtc_port_range.min, c.webrtc_port_range.max),
            (50000, 50050)
        );
        assert!(c.webrtc_bind_ip.is_unspecified());
        assert_eq!((c.max_viewers, c.coturn_port), (100, 3478));
        let c = parse(&["--webrtc-advertise-ip", "media.example.org"]).unwrap();
        assert_eq!(c.settings.turn_host(), "media.example.org");
        for (flag, value) in [
            ("--webrtc-port-range", "50050-50000"),
            ("--webrtc-advertise-ip", "not a host"),
            ("--ice-servers", "[{\"urls\":\"turn:x\"}]"),
            ("--stun-server", "stun:host:port"),
            ("--media-source", "ftp://x"),
            ("--max-viewers", "0"),
            ("--session-idle-timeout", "0"),
        ] {
            let e = parse(&[flag, value]).unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
        let c = parse(&[
            "--stun-server",
            "stun:a.example:1",
            "--ice-servers",
            "[{\"urls\":[\"stun:b.example:2\",\"turn:c:3\"],\"secret\":\"s\"}]",
        ])
        .unwrap();
        let probes: Vec<_> = c.settings.stun_probes().iter().map(|s| s.url()).collect();
        assert_eq!(probes, vec!["stun:a.example:1", "stun:b.example:2"]);
    }

    #[test]
    fn plan_carries_every_part() {
        let c = parse(&[
            "--turn-listen",
            "127.0.0.1:4443",
            "--turn-udp-listen",
            "127.0.0.1:3478",
            "--turn-secret",
            "0123456789abcdef",
            "--turn-realm",
            "r.example",
            "--turn-relay-ports",
            "62000-62010",
            "--webrtc-port-range",
            "50000",
            "--webrtc-advertise-ip",
            "media.example",
            "--stun-server",
            "stun:s.example:3479",
            "--ice-servers",
            r#"[{"urls":"stun:i.example"}]"#,
            "--coturn-host",
            "c.example",
            "--coturn-secret",
            "coturn",
            "--max-viewers",
            "8",
            "--turn-embedded",
            "false",
            "--log-format",
            "json",
        ])
        .unwrap();
        let p = c.settings.plan().unwrap();
        assert!(p.secrets.is_some() && p.api_token.is_none() && p.self_signed());
        assert_eq!(p.relay.realm, "r.example");
        assert_eq!(p.io.listen, "127.0.0.1:4443".parse().unwrap());
        assert_eq!(p.io.udp_listen, Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!(
            p.io.relay_ports.map(|r| (r.min, r.max)),
            Some((62000, 62010))
        );
        assert_eq!((p.media.ports.min, p.media.ports.max), (50000, 50000));
        assert_eq!(p.media.advertise.as_deref(), Some("media.example"));
        let probes: Vec<_> = p
            .media
            .stun_probes
            .iter()
            .map(|s| (s.setting, s.server.url()))
            .collect();
        assert_eq!(
            probes,
            vec![
                ("STUN_SERVER", "stun:s.example:3479".to_owned()),
                ("ICE_SERVERS", "stun:i.example:3478".to_owned())
            ]
        );
        assert_eq!((p.sessions.max_viewers, p.media.max_sessions), (8, 18));
        assert_eq!(
            p.modes,
            Modes {
                relay_only: false,
                turn_embedded: false,
                json_logs: true
            }
        );
        let targets = p.ice.turn_targets("doctor", 1000);
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|t| t.host == "c.example"));
    }

    #[test]
    fn plan_refuses_what_start_up_would_and_names_the_setting() {
        for (args, setting) in [
            (&["--turn-secret", "short"][..], "TURN_SECRET"),
            (&["--api-token", "short"][..], "API_TOKEN"),
            (
                &["--turn-relay-ports", "50000-50001"][..],
                "TURN_RELAY_PORTS",
            ),
            (&["--turn-denied-peers", "x"][..], "TURN_DENIED_PEERS"),
            (&["--cors-origins", "not an origin"][..], "CORS_ORIGINS"),
            (&["--coturn-host", "c.example"][..], "COTURN_HOST"),
            (
                &["--stream", "a=testsrc", "--stream", "a=testsrc"][..],
                "STREAMS",
            ),
            (&["--media-source", "whip"][..], "MEDIA_SOURCE"),
            (&["--stream", "cam=whip"][..], "STREAMS"),
            (
                &["--stream", "cam=whip", "--whip-token", "short"][..],
                "WHIP_TOKEN",
            ),
        ] {
            let e = parse(args).unwrap().settings.plan().err().unwrap();
            assert_eq!(e.setting, setting, "{args:?}: {e}");
            assert!(e.to_string().starts_with(&format!("invalid {setting}: ")));
        }
        // WHIP_TOKEN serves every `whip` stream without a token of its own.
        let p = parse(&[
            "--media-source",
            "whip",
            "--stream",
            "cam=whip?token=cam-token-0123456789",
            "--whip-token",
            "global-token-0123456789",
        ])
        .unwrap()
        .settings
        .plan()
        .unwrap();
        assert_eq!(
            p.media.source.to_string(),
            "whip?token=global-token-0123456789"
        );
        assert_eq!(
            p.media.streams[0].source.to_string(),
            "whip?token=cam-token-0123456789"
        );
        // TLS_CERT without TLS_KEY cannot come from flags (clap requires both), but a plan
        // built from any Settings value checks it too.
        let mut s = parse(&[]).unwrap().settings;
        s.tls_cert = Some("/c.pem".into());
        assert_eq!(s.plan().err().unwrap().setting, "TLS_KEY");
        s.tls_key = Some("/k.pem".into());
        let p = s.plan().unwrap();
        assert_eq!(
            p.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert!(!p.self_signed());
    }

    #[test]
    fn relay_ports_must_not_overlap_media_ports() {
        let c = parse(&[]).unwrap();
        assert!(c.settings.check_port_ranges().is_ok());
        let c = parse(&["--turn-relay-ports", "50040-50100"]).unwrap();
        let e = c.settings.check_port_ranges().unwrap_err().to_string();
        assert!(
            e.contains("TURN_RELAY_PORTS") && e.contains("WEBRTC_PORT_RANGE"),
            "{e}"
        );
        assert!(e.contains("do not overlap (e.g. the defaults"), "{e}");
    }

    #[test]
    fn ipv6_host_is_bracketed() {
        let c = parse(&[
            "--turn-host",
            "2001:db8::1",
            "--turn-udp-listen",
            "[::]:3478",
        ])
        .unwrap();
        assert_eq!(
            c.settings.turn_uris(),
            vec![
                "turns:[2001:db8::1]:443?transport=tcp",
                "turn:[2001:db8::1]:443?transport=tcp",
                "turn:[2001:db8::1]:3478?transport=udp"
            ]
        );
    }
}
