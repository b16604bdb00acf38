//! The TURN relay of the gateway.
//!
//! Data flows through two layers:
//!
//! * [`core`] is a sans-I/O state machine. One [`core::Client`] exists per client 5-tuple
//!   (a TCP or TLS connection, or a UDP source address). The shell feeds it whole
//!   STUN messages / ChannelData frames from the client ([`core::Client::on_client`]) and
//!   datagrams arriving on the allocation's relayed address ([`core::Client::on_peer`]),
//!   with the current time; it answers with bytes for the client and datagrams for peers.
//!   State shared between clients (credentials, nonces, quotas, revocations, the peer
//!   policy, counters) lives in [`core::Shared`], touched only on the control path
//!   (Allocate, Refresh, revocation), never per relayed packet.
//! * [`framer`] cuts a TCP/TLS byte stream into those messages (RFC 8656 §11.5: STUN by its
//!   length field, ChannelData padded to a multiple of 4 on streams).
//! * [`io`] is the tokio shell: listeners, TLS, relay sockets, timers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod core;
pub mod framer;
pub mod io;
