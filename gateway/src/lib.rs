//! The gateway: media engine, signaling API and embedded TURN relay in one process.
//!
//! # Where to start reading
//!
//! Start-up is one straight line, and the same validated settings serve both the server and
//! `gateway doctor`:
//!
//! ```text
//! src/main.rs ─▶ config::Cli ─▶ Settings::plan() ─▶ Plan ─┬─▶ run::start_plan ─▶ Running
//!   (binary)     flags + env     every value checked,     │   binds, serves until a signal
//!                (clap)          errors name the setting   └─▶ doctor::run ─▶ OK / WARN / FAIL
//! ```
//!
//! 1. `src/main.rs` parses [`config::Cli`] (flags, each also read from its environment
//!    variable; a flag wins) and picks the sub-command: run (default), `doctor`, `credentials`.
//! 2. [`config::Settings::plan`] turns the raw [`config::Settings`] into a [`config::Plan`]:
//!    relay and I/O configuration, media plan, ICE server plan, TLS files, modes. It is pure
//!    and is where every setting is validated; nothing binds a port before it succeeds.
//! 3. [`run::start_plan`] (via [`run::start`]) builds everything from the plan, in this order:
//!    media sources ([`media_source`], named [`streams`]), the [`media::MediaEngine`], the
//!    TLS identity ([`tls`], reloaded by [`reload`]), the [`session::Registry`] with the relay
//!    core it owns, [`signaling`], the HTTP router ([`http::router`]), the relay's listeners
//!    ([`relay::io::RelayServer`]), the in-process [`shortcut`] between relay and media, and
//!    the plain-HTTP listener. [`shutdown`] stops it all gracefully.
//! 4. [`doctor`] checks the same [`config::Plan`] against the machine and the network
//!    (ports, advertised address, certificate, external TURN servers, a self-loop).
//!
//! # Data flow
//!
//! ```text
//!  browser ──────────────────────────────────────────┐
//!    │ TCP 443 (TURN_LISTEN): TLS or plain TCP,      │ HTTP (GATEWAY_HTTP_ADDR)
//!    ▼ told apart by first bytes; in TLS, by ALPN    ▼
//!  relay::io demux ── HTTP(S): http::HttpHandoff ──▶ http::router (/api/v1/…, /whep, /metrics, /)
//!    │ TURN                                          │
//!    ▼                                               ▼
//!  relay::core (allocations)                         signaling (ICE servers, offer → answer)
//!    │ peer = one of the engine's                    │
//!    │ addresses: shortcut, both ways,               ▼
//!    │ in-process (no relay socket)                  session::Registry (owns every session;
//!    │                                               │ when one ends: media closed,
//!    ▼                                               ▼ credential revoked, allocations closed)
//!  media::MediaEngine (str0m, ICE-lite, one Rtc per viewer) ◀── encoded frames ── media_source
//!    ▲                                      (test pattern, RTP ingest or file; one per stream)
//!    │ UDP (host candidates, WEBRTC_PORT_RANGE)
//!  browser
//! ```
//!
//! * A viewer first gets ICE servers (a TURN REST credential whose user is its session id)
//!   from [`signaling`], which asks the [`session::Registry`] for a pending session.
//! * Its SDP offer goes through [`signaling`] to the registry, which binds it to a session
//!   and hands it to the engine through a [`media::MediaHandle`]; the answer goes back.
//! * Media flows either over UDP straight to the engine's host candidates, or, behind a
//!   restrictive firewall, as TURN over TCP/TLS on port 443 into the embedded relay, which
//!   hands datagrams whose peer is one of the engine's addresses to the engine in-process
//!   ([`shortcut`]).
//! * When a session ends (WHEP DELETE, ICE/DTLS failure, idle), the registry closes its media,
//!   revokes its credential and closes its allocations.
//!
//! The relay itself is the `relay` crate (sans-I/O core, tokio shell; its crate doc draws
//! its own flow); credentials are the `auth` crate. Prometheus counters are rendered by
//! [`metrics`], the viewer page is [`web`].
#![forbid(unsafe_code)]

pub mod advertise;
pub mod app;
pub mod bind_hint;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod doctor;
pub mod http;
pub use auth::ice_url;
pub mod media;
pub mod media_source;
pub mod metrics;
pub mod own_addrs;
pub mod project_streams;
pub mod proxy;
pub mod pull_pool;
pub mod relay_mode;
pub mod reload;
pub mod run;
pub mod session;
pub mod shortcut;
pub mod shutdown;
pub mod signaling;
pub mod streams;
pub mod tls;
pub mod web;
