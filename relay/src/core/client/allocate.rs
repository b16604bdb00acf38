//! Allocate and Refresh (RFC 8656 §7): the allocation itself, its granted lifetime, the
//! relay port it holds and the quota ticket that is released when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use stun_types::attribute::{AttributeStaticType, XorMappedAddress};
use stun_types::message::{IntegrityKey, Message, StunParseError, TransactionId};
use turn_types::attribute::{
    AdditionalAddressFamily, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorRelayedAddress,
};
use turn_types::AddressFamily;

use super::super::shared::{QuotaError, QuotaTicket};
use super::super::{Family, Now, RelayPortError, RelayPorts, Standing};
use super::permission::{Channel, Permission};
use super::{after, family_of, Client, ClientOutput, Req};

#[derive(Debug)]
pub(super) struct Allocation {
    pub(super) relayed: SocketAddr,
    pub(super) family: Family,
    pub(super) expires: Instant,
    pub(super) username: String,
    pub(super) user: String,
    /// Unix expiry of the credential that made it, and unix time it was made: together
    /// they bound the life of an allocation whose user is no live session.
    pub(super) cred_expiry: u64,
    pub(super) created_unix: u64,
    /// The Allocate transaction that created it, and our answer (for retransmits).
    txn: TransactionId,
    response: Vec<u8>,
    pub(super) perms: Vec<Permission>,
    pub(super) chans: Vec<Channel>,
    _ticket: QuotaTicket,
}

impl Client {
    // ---------------------------------------------------------------- requests

    /// The lifetime granted for a requested one: the default when none is asked, else the
    /// request clamped to [default, max].
    fn grant(&self, requested: Option<u32>) -> Duration {
        let cfg = self.shared.config();
        let max = cfg.max_lifetime;
        let min = cfg.default_lifetime.min(max);
        match requested {
            None => min,
            Some(s) => Duration::from_secs(u64::from(s)).clamp(min, max),
        }
    }

    /// `lifetime` cut so that an allocation whose user is no live session ends by
    /// [`Client::unbound_end`]; a live session's allocation keeps the full grant.
    fn bounded(
        &self,
        lifetime: Duration,
        user: &str,
        cred_expiry: u64,
        created_unix: u64,
        now: Now,
    ) -> Duration {
        if self.shared.standing(user) == Standing::Live {
            return lifetime;
        }
        let end = self.unbound_end(cred_expiry, created_unix);
        lifetime.min(Duration::from_secs(end.saturating_sub(now.unix)))
    }

    /// Unix time after which an allocation whose user is no live session may not live:
    /// `max(credential expiry, created + unbound_allocation_lifetime)`.
    pub(super) fn unbound_end(&self, cred_expiry: u64, created_unix: u64) -> u64 {
        let grace = self.shared.config().unbound_allocation_lifetime.as_secs();
        cred_expiry.max(created_unix.saturating_add(grace))
    }

    fn lifetime_attr(d: Duration) -> Lifetime {
        Lifetime::new(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_allocate(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        if let Some(a) = &self.alloc {
            if a.txn == req.tid {
                // Retransmission of the request that created it: same answer.
                out.clear();
                out.extend_from_slice(&a.response);
                return ClientOutput::Reply;
            }
            return self.error(
                out,
                req,
                437,
                "Allocation Mismatch: this 5-tuple already has an allocation",
                key,
            );
        }
        match m.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => {
                return self.error(out, req, 442, "Unsupported Transport Protocol", key);
            }
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: missing REQUESTED-TRANSPORT",
                    key,
                );
            }
            Err(_) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed REQUESTED-TRANSPORT",
                    key,
                );
            }
        }
        let even = match m.attribute::<EvenPort>() {
            Ok(e) => Some(e.requested()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed EVEN-PORT", key),
        };
        let requested_family = match m.attribute::<RequestedAddressFamily>() {
            Ok(f) => Some(f.family()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => {
                return self.error(out, req, 440, "Address Family not Supported", key);
            }
        };
        let token = m.has_attribute(ReservationToken::TYPE);
        if token && (even.is_some() || requested_family.is_some()) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
                key,
            );
        }
        if requested_family.is_some() && m.has_attribute(AdditionalAddressFamily::TYPE) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY",
                key,
            );
        }
        if token {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: reservations are not supported",
                key,
            );
        }
        if even == Some(true) {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: cannot reserve the next port",
                key,
            );
        }
        let family = match requested_family {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        let lifetime = match m.attribute::<Lifetime>() {
            Ok(l) => self.grant(Some(l.seconds())),
            Err(StunParseError::MissingAttribute(_)) => self.grant(None),
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed LIFETIME", key),
        };
        let Some((username, user, cred_expiry)) = self
            .auth
            .as_ref()
            .map(|a| (a.username.clone(), a.user.clone(), a.expiry))
        else {
            return self.error(out, req, 401, "Unauthenticated", None);
        };
        let lifetime = self.bounded(lifetime, &user, cred_expiry, now.unix, now);
        let mut ticket = match self.shared.acquire(&user, self.waker.clone()) {
            Ok(t) => t,
            Err(QuotaError::User) => {
                return self.error(out, req, 486, "Allocation Quota Reached", key);
            }
            Err(QuotaError::Total) => {
                return self.error(out, req, 508, "Insufficient Capacity", key);
            }
        };
        let relayed = match ports.open(family, even == Some(false)) {
            Ok(a) => a,
            Err(RelayPortError::FamilyNotSupported) => {
                return self.error(out, req, 440, "Address Family not Supported", key);
            }
            Err(RelayPortError::Exhausted(_)) => {
                self.shared
                    .stats()
                    .capacity_rejections
                    .fetch_add(1, Relaxed);
                return self.error(out, req, 508, "Insufficient Capacity: no relay port", key);
            }
        };
        if family_of(&relayed) != family {
            ports.close(relayed);
            return self.error(out, req, 440, "Address Family not Supported", key);
        }
        if even == Some(false) && relayed.port() % 2 == 1 {
            ports.close(relayed);
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: no even port available",
                key,
            );
        }
        ticket.set_relayed(relayed);
        let xr = XorRelayedAddress::new(relayed, req.tid);
        let lt = Self::lifetime_attr(lifetime);
        let xm = XorMappedAddress::new(self.tuple.client, req.tid);
        self.write_response(out, req, None, &[&xr, &lt, &xm], key);
        self.alloc = Some(Allocation {
            relayed,
            family,
            expires: after(now.mono, lifetime),
            username,
            user,
            cred_expiry,
            created_unix: now.unix,
            txn: req.tid,
            response: out.clone(),
            perms: Vec::new(),
            chans: Vec::new(),
            _ticket: ticket,
        });
        ClientOutput::Reply
    }

    pub(super) fn on_refresh(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        ports: &mut dyn RelayPorts,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let Some(family) = self.alloc.as_ref().map(|a| a.family) else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        match m.attribute::<RequestedAddressFamily>() {
            Ok(f) => {
                let f = if f.family() == AddressFamily::IPV6 {
                    Family::V6
                } else {
                    Family::V4
                };
                if f != family {
                    return self.error(out, req, 443, "Peer Address Family Mismatch", key);
                }
            }
            Err(StunParseError::MissingAttribute(_)) => {}
            Err(_) => return self.error(out, req, 440, "Address Family not Supported", key),
        }
        let requested = match m.attribute::<Lifetime>() {
            Ok(l) => Some(l.seconds()),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return self.error(out, req, 400, "Bad Request: malformed LIFETIME", key),
        };
        if requested == Some(0) {
            self.delete_allocation(ports);
            let lt = Lifetime::new(0);
            self.write_response(out, req, None, &[&lt], key);
            return ClientOutput::Reply;
        }
        let mut lifetime = self.grant(requested);
        if let Some(a) = &self.alloc {
            lifetime = self.bounded(lifetime, &a.user, a.cred_expiry, a.created_unix, now);
        }
        if let Some(a) = &mut self.alloc {
            a.expires = after(now.mono, lifetime);
        }
        let lt = Self::lifetime_attr(lifetime);
        self.write_response(out, req, None, &[&lt], key);
        ClientOutput::Reply
    }
}
