//! CreatePermission and ChannelBind (RFC 8656 §9, §11): the allocation's permission and
//! channel tables, the peer checks (family and policy) that guard them, and the caps on
//! their size.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use stun_types::attribute::{Attribute, AttributeFromRaw, AttributeStaticType};
use stun_types::message::{IntegrityKey, Message, StunParseError};
use turn_types::attribute::{ChannelNumber, XorPeerAddress};

use super::super::{Family, Now, PolicyVerdict};
use super::allocate::Allocation;
use super::{after, family_of, Client, ClientOutput, Req};

const CHANNEL_MIN: u16 = 0x4000;
/// RFC 8656 allocates 0x4000–0x4FFF; RFC 5766 clients (coturn's among them) use up to
/// 0x7FFF. Accepting the older range costs nothing on the server side.
const CHANNEL_MAX: u16 = 0x7FFF;

#[derive(Debug)]
pub(super) struct Permission {
    ip: IpAddr,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct Channel {
    pub(super) number: u16,
    pub(super) peer: SocketAddr,
    pub(super) expires: Instant,
}

impl Allocation {
    pub(super) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|p| p.ip == ip && p.expires > now)
    }
}

impl Client {
    /// Checks a peer of a CreatePermission / ChannelBind: family and policy.
    fn check_peer(
        &self,
        peer: SocketAddr,
        family: Family,
        req: Req,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> Option<ClientOutput<'static>> {
        if family_of(&peer) != family {
            return Some(self.error(out, req, 443, "Peer Address Family Mismatch", key));
        }
        if let PolicyVerdict::Deny(why) = self.shared.check_peer(peer) {
            self.shared.stats().forbid(why);
            let reason = format!("Forbidden: peer refused ({why})");
            return Some(self.error(out, req, 403, &reason, key));
        }
        None
    }

    pub(super) fn on_create_permission(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let max = cfg.max_permissions_per_allocation;
        let lifetime = cfg.permission_lifetime;
        let Some(alloc) = &self.alloc else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        let family = alloc.family;
        let mut peers: Vec<SocketAddr> = Vec::new();
        for (_, raw) in m.iter_attributes() {
            if raw.get_type() != XorPeerAddress::TYPE {
                continue;
            }
            let Ok(p) = XorPeerAddress::from_raw_ref(&raw) else {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed XOR-PEER-ADDRESS",
                    key,
                );
            };
            if peers.len() > max {
                return self.error(
                    out,
                    req,
                    508,
                    "Insufficient Capacity: too many permissions",
                    key,
                );
            }
            peers.push(p.addr(req.tid));
        }
        if peers.is_empty() {
            return self.error(out, req, 400, "Bad Request: missing XOR-PEER-ADDRESS", key);
        }
        for p in &peers {
            if let Some(r) = self.check_peer(*p, family, req, out, key) {
                return r;
            }
        }
        // All-or-nothing: count the new ones against the cap before installing any.
        let mut new_ips: Vec<IpAddr> = Vec::new();
        for p in &peers {
            let ip = p.ip();
            if !alloc.perms.iter().any(|x| x.ip == ip) && !new_ips.contains(&ip) {
                new_ips.push(ip);
            }
        }
        if alloc.perms.len() + new_ips.len() > max {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many permissions",
                key,
            );
        }
        let expires = after(now.mono, lifetime);
        if let Some(a) = &mut self.alloc {
            for p in &peers {
                install_permission(&mut a.perms, p.ip(), expires);
            }
        }
        self.write_response(out, req, None, &[], key);
        ClientOutput::Reply
    }

    pub(super) fn on_channel_bind(
        &mut self,
        m: &Message<'_>,
        req: Req,
        now: Now,
        out: &mut Vec<u8>,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        let cfg = self.shared.config();
        let (max_chan, max_perm) = (
            cfg.max_channels_per_allocation,
            cfg.max_permissions_per_allocation,
        );
        let (chan_life, perm_life) = (cfg.channel_lifetime, cfg.permission_lifetime);
        let Some(alloc) = &self.alloc else {
            return self.error(out, req, 437, "Allocation Mismatch", key);
        };
        let number = match m.attribute::<ChannelNumber>() {
            Ok(c) => c.channel(),
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(out, req, 400, "Bad Request: missing CHANNEL-NUMBER", key);
            }
            Err(_) => {
                return self.error(out, req, 400, "Bad Request: malformed CHANNEL-NUMBER", key);
            }
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return self.error(
                out,
                req,
                400,
                "Bad Request: CHANNEL-NUMBER outside 0x4000-0x7FFF",
                key,
            );
        }
        let peer = match m.attribute::<XorPeerAddress>() {
            Ok(p) => p.addr(req.tid),
            Err(StunParseError::MissingAttribute(_)) => {
                return self.error(out, req, 400, "Bad Request: missing XOR-PEER-ADDRESS", key);
            }
            Err(_) => {
                return self.error(
                    out,
                    req,
                    400,
                    "Bad Request: malformed XOR-PEER-ADDRESS",
                    key,
                );
            }
        };
        if let Some(r) = self.check_peer(peer, alloc.family, req, out, key) {
            return r;
        }
        // Entries still in their cooldown count as bound (RFC 8656 §12).
        if alloc
            .chans
            .iter()
            .any(|c| c.number == number && c.peer != peer)
        {
            return self.error(
                out,
                req,
                400,
                "Bad Request: channel is bound to another peer",
                key,
            );
        }
        if alloc
            .chans
            .iter()
            .any(|c| c.peer == peer && c.number != number)
        {
            return self.error(
                out,
                req,
                400,
                "Bad Request: peer is bound to another channel",
                key,
            );
        }
        let new_chan = !alloc.chans.iter().any(|c| c.number == number);
        if new_chan && alloc.chans.len() >= max_chan {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many channels",
                key,
            );
        }
        let new_perm = !alloc.perms.iter().any(|p| p.ip == peer.ip());
        if new_perm && alloc.perms.len() >= max_perm {
            return self.error(
                out,
                req,
                508,
                "Insufficient Capacity: too many permissions",
                key,
            );
        }
        if let Some(a) = &mut self.alloc {
            let expires = after(now.mono, chan_life);
            match a.chans.iter_mut().find(|c| c.number == number) {
                Some(c) => c.expires = expires,
                None => a.chans.push(Channel {
                    number,
                    peer,
                    expires,
                }),
            }
            install_permission(&mut a.perms, peer.ip(), after(now.mono, perm_life));
        }
        self.write_response(out, req, None, &[], key);
        ClientOutput::Reply
    }
}

fn install_permission(perms: &mut Vec<Permission>, ip: IpAddr, expires: Instant) {
    match perms.iter_mut().find(|p| p.ip == ip) {
        Some(p) => p.expires = p.expires.max(expires),
        None => perms.push(Permission { ip, expires }),
    }
}
