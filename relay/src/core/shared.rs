//! State shared by every client of one relay: configuration, the credential ring, the
//! nonce key, the peer policy, per-user quotas, the per-user index of live allocations
//! (who to wake on a revocation, which user holds a relayed address), revocations, the
//! owner's [`UserDirectory`] and counters.
//!
//! Only the control path (Allocate, Refresh, delete, revoke) touches the locked parts;
//! relaying a packet never does (the secret ring and the internal peers are behind
//! `ArcSwap`, read lock-free).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use auth::SecretRing;

use super::badinput::{BadInput, BadInputLog};
use super::policy::SiblingMedia;
use super::{
    NonceKey, Now, PeerPolicy, PolicyVerdict, Standing, StaticUsers, Stats, UserDirectory, Wake,
};

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
    /// How long an allocation whose user is not a live session of the relay's owner
    /// ([`Standing::Unknown`]) may live: it refreshes past its credential's expiry until
    /// `max(expiry, created + this)`, never longer.
    pub unbound_allocation_lifetime: Duration,
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
            unbound_allocation_lifetime: Duration::from_secs(3600),
        }
    }
}

/// One user's live allocations: how many, and how to wake the connections holding them.
#[derive(Default)]
struct UserAllocs {
    count: u32,
    /// `(ticket id, waker)` of each allocation that registered one.
    wakers: Vec<(u64, Arc<dyn Wake>)>,
}

/// Per-user bookkeeping (control path only).
#[derive(Default)]
struct Users {
    /// Live allocations per REST user; entries at zero are removed.
    allocs: HashMap<String, UserAllocs>,
    /// The user holding each relayed address (binds a browser's relay candidate to the
    /// credential that made it).
    relayed: HashMap<SocketAddr, String>,
    /// Ticket ids, for removing a ticket's waker.
    next_ticket: u64,
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
pub(crate) struct QuotaTicket {
    shared: Arc<Shared>,
    user: String,
    id: u64,
    relayed: Option<SocketAddr>,
}

impl std::fmt::Debug for QuotaTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaTicket")
            .field("user", &self.user)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

impl QuotaTicket {
    /// Records that this allocation holds `relayed` (see [`Shared::user_of_relayed`]).
    pub(crate) fn set_relayed(&mut self, relayed: SocketAddr) {
        let mut users = self.shared.users();
        if let Some(old) = self.relayed.replace(relayed) {
            users.relayed.remove(&old);
        }
        users.relayed.insert(relayed, self.user.clone());
        drop(users);
        if let Some(d) = &self.shared.directory {
            d.allocated(&self.user, relayed);
        }
    }
}

impl Drop for QuotaTicket {
    fn drop(&mut self) {
        let mut users = self.shared.users();
        if let Some(r) = self.relayed {
            if users.relayed.get(&r) == Some(&self.user) {
                users.relayed.remove(&r);
            }
        }
        if let Some(e) = users.allocs.get_mut(&self.user) {
            e.count = e.count.saturating_sub(1);
            e.wakers.retain(|(id, _)| *id != self.id);
            if e.count == 0 {
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
    siblings: ArcSwap<Vec<SiblingMedia>>,
    own: ArcSwap<Vec<IpAddr>>,
    policy: PeerPolicy,
    nonce_key: NonceKey,
    users: Mutex<Users>,
    directory: Option<Arc<dyn UserDirectory>>,
    static_users: ArcSwap<StaticUsers>,
    bad_input_log: BadInputLog,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("internal", &self.internal.load())
            .field("own", &self.own.load())
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
        Self::with_directory(config, secrets, policy, nonce_key, None)
    }

    /// Creates the shared state with the owner's view of users (see [`UserDirectory`]);
    /// without one, every user is [`Standing::Unknown`].
    pub fn with_directory(
        config: Config,
        secrets: SecretRing,
        policy: PeerPolicy,
        nonce_key: NonceKey,
        directory: Option<Arc<dyn UserDirectory>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            stats: Stats::default(),
            secrets: ArcSwap::from_pointee(secrets),
            internal: ArcSwap::from_pointee(Vec::new()),
            siblings: ArcSwap::from_pointee(Vec::new()),
            own: ArcSwap::from_pointee(Vec::new()),
            policy,
            nonce_key,
            users: Mutex::new(Users::default()),
            directory,
            static_users: ArcSwap::from_pointee(StaticUsers::default()),
            bad_input_log: BadInputLog::default(),
        })
    }

    /// Admits `users` (TURN_STATIC_USERS) besides REST credentials; see [`StaticUsers`].
    /// Their keys must be made for this relay's realm.
    pub fn set_static_users(&self, users: StaticUsers) {
        self.static_users.store(Arc::new(users));
    }

    /// The key of `username` if it is a static user.
    pub(crate) fn static_key(&self, username: &str) -> Option<stun_types::message::IntegrityKey> {
        self.static_users.load().key(username).cloned()
    }

    /// What the owner says about `user`.
    pub fn standing(&self, user: &str) -> Standing {
        // A static user's allocations live as long as their clients refresh them.
        if StaticUsers::is_internal_id(user) {
            return Standing::Live;
        }
        match &self.directory {
            Some(d) => d.standing(user),
            None => Standing::Unknown,
        }
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

    /// Counts one bad input from `ip` and logs it, at most once per source and reason per
    /// [`super::badinput::LOG_INTERVAL`] (see [`BadInputLog`]).
    pub fn bad_input(&self, ip: IpAddr, why: BadInput, now: Instant) {
        self.stats.count_bad_input(why);
        self.bad_input_log.note(ip, why, now, |line| line.log());
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

    /// The sibling nodes' media (cluster mode).
    pub fn sibling_peers(&self) -> Arc<Vec<SiblingMedia>> {
        self.siblings.load_full()
    }

    /// Replaces the sibling nodes' media (cluster mode), allowed as peers on their media
    /// ports (see [`PeerPolicy::check_with_siblings`]). Returns whether they changed.
    pub fn set_sibling_peers(&self, siblings: Vec<SiblingMedia>) -> bool {
        let changed = **self.siblings.load() != siblings;
        if changed {
            self.siblings.store(Arc::new(siblings));
        }
        changed
    }

    /// Replaces the gateway's own addresses (public, advertised, interface): refused as
    /// peers on every port but the media ports unless an allow entry names them (see
    /// [`PeerPolicy::check_with_own`]). Returns whether they changed.
    pub fn set_own_addrs(&self, mut addrs: Vec<IpAddr>) -> bool {
        for a in &mut addrs {
            *a = super::policy::canonical_ip(*a);
        }
        addrs.sort_unstable();
        addrs.dedup();
        let changed = **self.own.load() != addrs;
        self.own.store(Arc::new(addrs));
        changed
    }

    /// The gateway's own addresses.
    pub fn own_addrs(&self) -> Arc<Vec<IpAddr>> {
        self.own.load_full()
    }

    /// The peer policy.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// Checks `peer` against the policy, the internal peers and the gateway's own addresses
    /// (lock-free, no allocation).
    pub fn check_peer(&self, peer: SocketAddr) -> PolicyVerdict {
        let internal = self.internal.load();
        let siblings = self.siblings.load();
        let own = self.own.load();
        self.policy
            .check_with_siblings(peer, &internal, &siblings, &own)
    }

    pub(crate) fn nonce_key(&self) -> &NonceKey {
        &self.nonce_key
    }

    /// Revokes `user` (the part after the colon of a REST username): its credential is
    /// refused until `until_unix`, and the connections holding its allocations are woken
    /// to delete them ([`super::Client::check_revoked`]). Returns whether the user held
    /// any allocation.
    pub fn revoke(&self, user: &str, until_unix: u64, now: Now) -> bool {
        let mut users = self.users();
        users.revoked.retain(|_, until| *until > now.unix);
        if until_unix > now.unix {
            let e = users.revoked.entry(user.to_owned()).or_insert(until_unix);
            *e = (*e).max(until_unix);
        }
        drop(users);
        self.wake_user(user)
    }

    /// Wakes the connections holding `user`'s allocations so they re-check its standing
    /// (the owner ended its session). Touches only that user's connections. Returns
    /// whether the user held any allocation.
    pub fn wake_user(&self, user: &str) -> bool {
        let wakers: Vec<Arc<dyn Wake>> = match self.users().allocs.get(user) {
            Some(e) => e.wakers.iter().map(|(_, w)| w.clone()).collect(),
            None => return false,
        };
        for w in &wakers {
            w.wake();
        }
        true
    }

    /// The user whose allocation holds the relayed address `relayed`, if any.
    pub fn user_of_relayed(&self, relayed: SocketAddr) -> Option<String> {
        self.users().relayed.get(&relayed).cloned()
    }

    /// Whether `user` is revoked at `now`, or its session has ended.
    pub fn is_revoked(&self, user: &str, now: Now) -> bool {
        if self.standing(user) == Standing::Ended {
            return true;
        }
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
        self.users().allocs.get(user).map_or(0, |e| e.count)
    }

    /// Entries held in the per-user tables (allocation counts, revocations): for tests and
    /// for watching that they stay bounded.
    pub fn user_table_len(&self) -> usize {
        let u = self.users();
        u.allocs.len() + u.revoked.len() + u.relayed.len()
    }

    /// Takes one allocation's share of the quotas for `user`; `waker` (if any) is woken
    /// when the user is revoked or its session ends, until the ticket drops.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        user: &str,
        waker: Option<Arc<dyn Wake>>,
    ) -> Result<QuotaTicket, QuotaError> {
        let mut users = self.users();
        let held = users.allocs.get(user).map_or(0, |e| e.count);
        // One static user serves a backend and all its viewers: only the total bounds it.
        let is_static = StaticUsers::is_internal_id(user);
        if held >= self.config.max_allocations_per_user && !is_static {
            self.stats.quota_user_rejections.fetch_add(1, Relaxed);
            return Err(QuotaError::User);
        }
        if users.total >= self.config.max_allocations_total {
            self.stats.capacity_rejections.fetch_add(1, Relaxed);
            return Err(QuotaError::Total);
        }
        users.next_ticket = users.next_ticket.wrapping_add(1);
        let id = users.next_ticket;
        let e = users.allocs.entry(user.to_owned()).or_default();
        e.count += 1;
        if let Some(w) = waker {
            e.wakers.push((id, w));
        }
        users.total = users.total.saturating_add(1);
        drop(users);
        self.stats.allocations_created.fetch_add(1, Relaxed);
        self.stats.allocations_active.fetch_add(1, Relaxed);
        if is_static {
            self.stats.static_user_allocations.fetch_add(1, Relaxed);
        }
        Ok(QuotaTicket {
            shared: Arc::clone(self),
            user: user.to_owned(),
            id,
            relayed: None,
        })
    }
}
