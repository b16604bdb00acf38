//! State shared by every client of one relay: configuration, the credential ring, the
//! nonce key, the peer policy, per-user quotas, revocations and counters.
//!
//! Only the control path (Allocate, Refresh, delete, revoke) touches the locked parts;
//! relaying a packet never does.

use std::sync::Arc;
use std::time::Duration;

use auth::SecretRing;

use super::{NonceKey, Now, PeerPolicy, Stats};

/// Relay settings with safe defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// REALM sent in 401 answers and used for the long-term key.
    pub realm: String,
    /// SOFTWARE attribute value, or none to send none.
    pub software: Option<String>,
    /// How long a NONCE stays valid before 438 Stale Nonce.
    pub nonce_ttl: Duration,
    /// Allocation lifetime when the client asks for none.
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel_lifetime: Duration,
    /// Allocations one REST user may hold at once (486 beyond).
    pub max_allocations_per_user: u32,
    /// Allocations the relay holds at once (508 beyond).
    pub max_allocations_total: u32,
    /// Permissions one allocation may hold (508 beyond).
    pub max_permissions_per_allocation: usize,
    /// Channels one allocation may hold (508 beyond).
    pub max_channels_per_allocation: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            realm: "gateway".into(),
            software: Some(concat!("gateway/", env!("CARGO_PKG_VERSION")).into()),
            nonce_ttl: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_allocations_per_user: 10,
            max_allocations_total: 20_000,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
        }
    }
}

/// Shared relay state. Cheap to clone through `Arc`.
#[derive(Debug)]
pub struct Shared {
    config: Config,
    stats: Stats,
    _private: (),
}

impl Shared {
    /// Creates the shared state.
    pub fn new(
        config: Config,
        secrets: SecretRing,
        policy: PeerPolicy,
        nonce_key: NonceKey,
    ) -> Arc<Self> {
        let _ = (secrets, policy, nonce_key);
        Arc::new(Self {
            config,
            stats: Stats::default(),
            _private: (),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Replaces the secret ring (rotation without restart).
    pub fn set_secrets(&self, secrets: SecretRing) {
        let _ = secrets;
        unimplemented!()
    }

    /// The current secret ring.
    pub fn secrets(&self) -> Arc<SecretRing> {
        unimplemented!()
    }

    /// Replaces the gateway's own media addresses, always allowed as peers.
    pub fn set_internal_peers(&self, peers: Vec<std::net::SocketAddr>) {
        let _ = peers;
        unimplemented!()
    }

    /// Revokes `user` (the part after the colon of a REST username): its credential is
    /// refused until its expiry passes. Existing allocations are deleted by each
    /// [`super::Client::check_revoked`] the shell calls after this. Returns whether the
    /// user held any allocation.
    pub fn revoke(&self, user: &str, until_unix: u64, now: Now) -> bool {
        let _ = (user, until_unix, now);
        unimplemented!()
    }

    /// Whether `user` is revoked at `now`.
    pub fn is_revoked(&self, user: &str, now: Now) -> bool {
        let _ = (user, now);
        unimplemented!()
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> u32 {
        unimplemented!()
    }
}
