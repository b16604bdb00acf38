//! Timers and teardown: the next deadline over the allocation, its permissions and its
//! channels (with the channel cooldown), expiry, revocation and closing the client.

use std::time::{Duration, Instant};

use super::super::{Now, RelayPorts};
use super::{after, Client};

/// After a channel binding expires, its number and peer stay reserved this long
/// (RFC 8656 §12: not rebound to another peer for 5 minutes).
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

impl Client {
    // ---------------------------------------------------------------- timers & teardown

    pub(super) fn recompute_deadline(&mut self, now: Instant) {
        self.deadline = self.alloc.as_ref().map(|a| {
            let mut d = a.expires;
            for p in &a.perms {
                d = d.min(p.expires);
            }
            for c in &a.chans {
                let t = if c.expires > now {
                    c.expires
                } else {
                    after(c.expires, CHANNEL_COOLDOWN)
                };
                d = d.min(t);
            }
            d
        });
    }

    /// When [`Client::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.local.flush_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires permissions, channels and the allocation.
    pub fn handle_timeout(&mut self, now: Now, ports: &mut dyn RelayPorts) {
        if self.local.flush_at.is_some_and(|t| t <= now.mono) {
            self.flush_stats();
        }
        let expired = self.alloc.as_ref().is_some_and(|a| a.expires <= now.mono);
        if expired {
            self.delete_allocation(ports);
        } else if let Some(a) = &mut self.alloc {
            a.perms.retain(|p| p.expires > now.mono);
            a.chans
                .retain(|c| after(c.expires, CHANNEL_COOLDOWN) > now.mono);
        }
        self.recompute_deadline(now.mono);
    }

    pub(super) fn delete_allocation(&mut self, ports: &mut dyn RelayPorts) {
        if let Some(a) = self.alloc.take() {
            ports.close(a.relayed);
            // `a._ticket` drops here: quota released.
        }
        self.deadline = None;
    }

    /// After a revocation: deletes the allocation if its user is revoked. Returns true
    /// when it did (the shell then closes a stream connection).
    pub fn check_revoked(&mut self, now: Now, ports: &mut dyn RelayPorts) -> bool {
        let Some(user) = self.user() else {
            return false;
        };
        if !self.shared.is_revoked(user, now) {
            return false;
        }
        self.auth = None;
        if self.alloc.is_some() {
            self.delete_allocation(ports);
            return true;
        }
        false
    }

    /// The connection is gone: deletes the allocation and releases its quota.
    pub fn close(&mut self, ports: &mut dyn RelayPorts) {
        self.delete_allocation(ports);
        self.auth = None;
        self.flush_stats();
    }
}
