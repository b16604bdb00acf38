//! The in-process short-circuit between the embedded TURN relay and the media engine
//! (DESIGN.md, *Data flow*).
//!
//! A browser that can only reach us through TURN allocates on our relay and names one of
//! the media engine's candidate addresses as its peer. Its datagrams then go from the
//! relay's connection task straight into the engine ([`MediaAsLocal`]), and the engine's
//! datagrams for that allocation's relayed address go straight back to the connection task
//! ([`RelayAsSink`]). No relay socket is opened for such an allocation.

use std::net::SocketAddr;
use std::sync::Arc;

use relay::io::{InProcessRoutes, LocalMedia, RelayServer};

use crate::media::{InProcessSink, MediaError, MediaHandle};

/// The media engine, seen by the relay as the local peer it relays to in-process.
pub struct MediaAsLocal(pub MediaHandle);

impl LocalMedia for MediaAsLocal {
    fn is_local(&self, peer: SocketAddr) -> bool {
        !peer.ip().is_unspecified()
            && (self.0.candidate_addrs().contains(&peer) || self.0.local_addrs().contains(&peer))
    }

    fn deliver(&self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) -> bool {
        self.0.inject(relayed, peer, data)
    }
}

/// The relay's allocations, seen by the media engine as in-process destinations.
pub struct RelayAsSink(pub Arc<InProcessRoutes>);

impl InProcessSink for RelayAsSink {
    fn owns(&self, dest: SocketAddr) -> bool {
        self.0.owns(dest)
    }

    fn deliver(&self, source: SocketAddr, dest: SocketAddr, data: Vec<u8>) {
        self.0.deliver(source, dest, data);
    }
}

/// Connects `relay` and `media` both ways, and lets the relay's peer policy admit the
/// media engine's addresses (its only default peers).
pub async fn connect(relay: &RelayServer, media: &MediaHandle) -> Result<(), MediaError> {
    let mut peers = media.candidate_addrs().to_vec();
    // A wildcard bind address is no peer anyone may name (0.0.0.0 stays denied).
    peers.extend(
        media
            .local_addrs()
            .iter()
            .filter(|a| !a.ip().is_unspecified()),
    );
    relay.shared().set_internal_peers(peers);
    relay.set_local_media(Box::new(MediaAsLocal(media.clone())));
    media
        .set_in_process_sink(Some(Arc::new(RelayAsSink(relay.routes()))))
        .await
}
