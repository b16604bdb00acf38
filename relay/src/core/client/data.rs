//! The data path: Send indications and ChannelData from the client, and datagrams from
//! peers turned into ChannelData or Data indications towards it. Nothing here allocates
//! or locks: payloads are borrowed from the input and written into the caller's buffer.

use std::net::SocketAddr;

use stun_types::attribute::{Attribute, AttributeExt, AttributeFromRaw, AttributeStaticType};
use stun_types::message::{
    Message, MessageClass, MessageHeader, MessageType, MessageWriteExt, MessageWriteMutSlice,
    StunParseError, TransactionId,
};
use turn_types::attribute::{Data as DataAttr, DontFragment, XorPeerAddress};
use turn_types::channel::ChannelData;
use turn_types::message::DATA;

use super::super::stats::{Direction, DropReason};
use super::super::{Now, PolicyVerdict};
use super::{family_of, Client, ClientOutput, PeerOutput, Req, SUPPORTED};

impl Client {
    // ---------------------------------------------------------------- data path

    /// A Send indication: relay DATA to XOR-PEER-ADDRESS when permitted. No allocation.
    pub(super) fn on_send<'a>(
        &mut self,
        m: &Message<'_>,
        bytes: &'a [u8],
        req: Req,
        now: Now,
    ) -> ClientOutput<'a> {
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return ClientOutput::None;
        };
        let mut peer = None;
        let mut data = None;
        let mut bad = false;
        for (off, raw) in m.iter_attributes() {
            let t = raw.get_type();
            if t == XorPeerAddress::TYPE {
                if peer.is_none() {
                    match XorPeerAddress::from_raw_ref(&raw) {
                        Ok(p) => peer = Some(p.addr(req.tid)),
                        Err(_) => bad = true,
                    }
                }
            } else if t == DataAttr::TYPE {
                if data.is_none() {
                    let start = off + 4;
                    data = bytes.get(start..start + usize::from(raw.length()));
                    bad |= data.is_none();
                }
            } else if t.comprehension_required()
                && t != DontFragment::TYPE
                && !SUPPORTED.contains(&t)
            {
                // Unknown comprehension-required attribute in an indication: discard.
                bad = true;
            }
        }
        let (Some(peer), Some(data), false) = (peer, data, bad) else {
            self.count_drop(DropReason::Malformed, now.mono);
            return ClientOutput::None;
        };
        if family_of(&peer) != alloc.family {
            self.count_drop(DropReason::Malformed, now.mono);
            return ClientOutput::None;
        }
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return ClientOutput::None;
        }
        // Permissions are per IP; the policy may restrict ports, so check the peer too.
        if let PolicyVerdict::Deny(why) = self.shared.check_peer(peer) {
            self.shared.stats().forbid(why);
            self.count_drop(DropReason::Forbidden, now.mono);
            return ClientOutput::None;
        }
        let relayed = alloc.relayed;
        self.count_relay(Direction::ClientToPeer, data.len(), now.mono);
        ClientOutput::ToPeer {
            relayed,
            peer,
            data,
        }
    }

    /// ChannelData from the client. No allocation.
    pub(super) fn on_channel_data<'a>(&mut self, msg: &'a [u8], now: Now) -> ClientOutput<'a> {
        let (number, len) = match ChannelData::parse(msg) {
            Ok(cd) => (cd.id(), cd.data().len()),
            Err(StunParseError::Truncated { .. }) => return self.garbage(now),
            Err(_) => {
                self.count_drop(DropReason::NoChannel, now.mono);
                return ClientOutput::None;
            }
        };
        let Some(data) = msg.get(4..4 + len) else {
            return self.garbage(now);
        };
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return ClientOutput::None;
        };
        let Some(peer) = alloc
            .chans
            .iter()
            .find(|c| c.number == number && c.expires > now.mono)
            .map(|c| c.peer)
        else {
            self.count_drop(DropReason::NoChannel, now.mono);
            return ClientOutput::None;
        };
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return ClientOutput::None;
        }
        let relayed = alloc.relayed;
        self.count_relay(Direction::ClientToPeer, data.len(), now.mono);
        ClientOutput::ToPeer {
            relayed,
            peer,
            data,
        }
    }

    /// A datagram from `peer` reached this client's relayed address.
    pub fn on_peer(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
        now: Now,
        out: &mut Vec<u8>,
    ) -> PeerOutput {
        out.clear();
        let Some(alloc) = &self.alloc else {
            self.count_drop(DropReason::NoAllocation, now.mono);
            return PeerOutput::Dropped;
        };
        if !alloc.has_permission(peer.ip(), now.mono) {
            self.count_drop(DropReason::NoPermission, now.mono);
            return PeerOutput::Dropped;
        }
        let channel = alloc
            .chans
            .iter()
            .find(|c| {
                c.peer.ip() == peer.ip() && c.peer.port() == peer.port() && c.expires > now.mono
            })
            .map(|c| c.number);
        let ok = match channel {
            Some(number) => self.write_channel_data(number, data, out),
            None => write_data_indication(peer, data, out),
        };
        if !ok {
            out.clear();
            self.count_drop(DropReason::TooLarge, now.mono);
            return PeerOutput::Dropped;
        }
        self.count_relay(Direction::PeerToClient, data.len(), now.mono);
        PeerOutput::Forward
    }

    fn write_channel_data(&self, number: u16, data: &[u8], out: &mut Vec<u8>) -> bool {
        if data.len() > usize::from(u16::MAX) {
            return false;
        }
        let n = data.len() + 4;
        out.resize(n, 0);
        ChannelData::new(number, data).write_into_unchecked(out);
        if self.tuple.transport.is_stream() {
            out.resize((n + 3) & !3, 0);
        }
        true
    }
}

/// Writes a Data indication (XOR-PEER-ADDRESS, DATA) into `out` without allocating.
fn write_data_indication(peer: SocketAddr, data: &[u8], out: &mut Vec<u8>) -> bool {
    let tid = TransactionId::generate();
    let xpa = XorPeerAddress::new(peer, tid);
    let body = xpa.padded_len() + 4 + ((data.len() + 3) & !3);
    if data.len() > usize::from(u16::MAX) || body > usize::from(u16::MAX) {
        return false;
    }
    out.resize(MessageHeader::LENGTH + body, 0);
    let mut w = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, DATA),
        tid,
        MessageWriteMutSlice::new(out),
    );
    if w.add_attribute(&xpa).is_err() || w.add_attribute(&DataAttr::new(data)).is_err() {
        return false;
    }
    let n = stun_types::message::MessageWrite::finish(w);
    out.truncate(n);
    true
}
