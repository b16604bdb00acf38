//! State shared by every client of one relay: configuration, the credential ring, the
//! nonce key, the peer policy, per-user quotas, revocations and counters.
//!
//! Only the control path (Allocate, Refresh, delete, revoke) touches the locked parts;
//! relaying a packet never does (the secret ring and the internal peers are behind
//! `ArcSwap`, read lock-free).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use auth::SecretRing;

use super::{NonceKey, Now, PeerPolicy, PolicyVerdict, Stats};

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

/// Per-user bookkeeping (control path only).
#[derive(Debug, Default)]
struct Users {
    /// Live allocations per REST user; entries at zero are removed.
    allocs: HashMap<String, u32>,
    /// Revoked users and the unix time until which they stay revoked; expired entries are
    /// pruned on access.
    revoked: HashMap<String, u64>,
    /// Live allocations in total.
    total: u32,
}

/// Why an allocation quota could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaError {
    /// The user holds `max_allocations_per_user` already (486).
    User,
    /// The relay holds `max_allocations_total` already (508).
    Total,
}

/// One allocation's share of the quotas; released when dropped, so a dropped client can
/// never leak quota.
#[derive(Debug)]
pub(crate) struct QuotaTicket {
    shared: Arc<Shared>,
    user: String,
}

impl Drop for QuotaTicket {
    fn drop(&mut self) {
        let mut users = self.shared.users();
        if let Some(n) = users.allocs.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.allocs.remove(&self.user);
            }
        }
        users.total = users.total.saturating_sub(1);
        drop(users);
        // Saturating decrement of the gauge.
        let _ = self
            .shared
            .stats
            .allocations_active
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }
}

/// Shared relay state. Cheap to clone through `Arc`.
pub struct Shared {
    config: Config,
    stats: Stats,
    secrets: ArcSwap<SecretRing>,
    internal: ArcSwap<Vec<SocketAddr>>,
    policy: PeerPolicy,
    nonce_key: NonceKey,
    users: Mutex<Users>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("internal", &self.internal.load())
            .field("allocations", &self.allocations())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Creates the shared state.
    pub fn new(
        config: Config,
        secrets: SecretRing,
        policy: PeerPolicy,
        nonce_key: NonceKey,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            stats: Stats::default(),
            secrets: ArcSwap::from_pointee(secrets),
            internal: ArcSwap::from_pointee(Vec::new()),
            policy,
            nonce_key,
            users: Mutex::new(Users::default()),
        })
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        // A panic while holding the lock cannot leave `Users` inconsistent in a way that
        // matters more than refusing service; keep going.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
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
        self.secrets.store(Arc::new(secrets));
    }

    /// The current secret ring.
    pub fn secrets(&self) -> Arc<SecretRing> {
        self.secrets.load_full()
    }

    /// Replaces the gateway's own media addresses, always allowed as peers.
    pub fn set_internal_peers(&self, peers: Vec<std::net::SocketAddr>) {
        self.internal.store(Arc::new(peers));
    }

    /// The gateway's own media addresses.
    pub fn internal_peers(&self) -> Arc<Vec<SocketAddr>> {
        self.internal.load_full()
    }

    /// The peer policy.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// Checks `peer` against the policy and the internal peers (lock-free, no allocation).
    pub fn check_peer(&self, peer: SocketAddr) -> PolicyVerdict {
        let internal = self.internal.load();
        self.policy.check(peer, &internal)
    }

    pub(crate) fn nonce_key(&self) -> &NonceKey {
        &self.nonce_key
    }

    /// Revokes `user` (the part after the colon of a REST username): its credential is
    /// refused until its expiry passes. Existing allocations are deleted by each
    /// [`super::Client::check_revoked`] the shell calls after this. Returns whether the
    /// user held any allocation.
    pub fn revoke(&self, user: &str, until_unix: u64, now: Now) -> bool {
        let mut users = self.users();
        users.revoked.retain(|_, until| *until > now.unix);
        if until_unix > now.unix {
            let e = users.revoked.entry(user.to_owned()).or_insert(until_unix);
            *e = (*e).max(until_unix);
        }
        users.allocs.get(user).is_some_and(|n| *n > 0)
    }

    /// Whether `user` is revoked at `now`.
    pub fn is_revoked(&self, user: &str, now: Now) -> bool {
        let mut users = self.users();
        match users.revoked.get(user) {
            Some(until) if *until > now.unix => true,
            Some(_) => {
                users.revoked.remove(user);
                false
            }
            None => false,
        }
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> u32 {
        self.users().total
    }

    /// Number of live allocations of `user`.
    pub fn allocations_of(&self, user: &str) -> u32 {
        self.users().allocs.get(user).copied().unwrap_or(0)
    }

    /// Entries held in the per-user tables (allocation counts, revocations): for tests and
    /// for watching that they stay bounded.
    pub fn user_table_len(&self) -> usize {
        let u = self.users();
        u.allocs.len() + u.revoked.len()
    }

    /// Takes one allocation's share of the quotas for `user`.
    pub(crate) fn acquire(self: &Arc<Self>, user: &str) -> Result<QuotaTicket, QuotaError> {
        let mut users = self.users();
        let held = users.allocs.get(user).copied().unwrap_or(0);
        if held >= self.config.max_allocations_per_user {
            self.stats.quota_user_rejections.fetch_add(1, Relaxed);
            return Err(QuotaError::User);
        }
        if users.total >= self.config.max_allocations_total {
            self.stats.capacity_rejections.fetch_add(1, Relaxed);
            return Err(QuotaError::Total);
        }
        *users.allocs.entry(user.to_owned()).or_insert(0) += 1;
        users.total = users.total.saturating_add(1);
        drop(users);
        self.stats.allocations_created.fetch_add(1, Relaxed);
        self.stats.allocations_active.fetch_add(1, Relaxed);
        Ok(QuotaTicket {
            shared: Arc::clone(self),
            user: user.to_owned(),
        })
    }
}
