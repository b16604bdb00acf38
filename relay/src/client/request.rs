//! What the client sends: request attributes, signing, and the built bytes.

use std::net::SocketAddr;

use stun_types::attribute::{RawAttribute, Software};
use stun_types::message::{MessageWriteVec, Method, TransactionId};
use stun_types::prelude::*;
use stun_types::AddressFamily;
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedAddressFamily, RequestedTransport, XorPeerAddress,
};

use super::{protocol, ClientError};

/// An attribute to put into a request (tests put odd ones in on purpose).
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    /// REQUESTED-TRANSPORT (17 = UDP).
    RequestedTransport(u8),
    /// REQUESTED-ADDRESS-FAMILY.
    RequestedFamily(AddressFamily),
    /// LIFETIME in seconds.
    Lifetime(u32),
    /// XOR-PEER-ADDRESS.
    Peer(SocketAddr),
    /// CHANNEL-NUMBER.
    Channel(u16),
    /// DATA.
    Data(&'a [u8]),
    /// SOFTWARE.
    Software(&'a str),
    /// Any attribute, raw.
    Raw(u16, &'a [u8]),
}

/// Whether and how a request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No USERNAME/REALM/NONCE/MESSAGE-INTEGRITY (first contact).
    None,
    /// Signed with the credentials, realm and nonce the session holds.
    LongTerm,
}

/// A built request: its bytes, and what identifies its response.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The whole message, FINGERPRINT included.
    pub bytes: Vec<u8>,
    /// Its transaction id.
    pub tid: TransactionId,
    /// Its method.
    pub method: Method,
}

/// The attributes of an Allocate for a UDP relay of `family`, for `lifetime` seconds.
pub fn allocate_attrs(family: AddressFamily, lifetime: u32) -> Vec<Attr<'static>> {
    let mut attrs = vec![
        Attr::RequestedTransport(RequestedTransport::UDP),
        Attr::Lifetime(lifetime),
    ];
    if family == AddressFamily::IPV6 {
        attrs.push(Attr::RequestedFamily(AddressFamily::IPV6));
    }
    attrs
}

pub(super) fn add_attrs(
    msg: &mut MessageWriteVec,
    attrs: &[Attr<'_>],
    tid: TransactionId,
) -> Result<(), ClientError> {
    for a in attrs {
        let r = match *a {
            Attr::RequestedTransport(p) => msg.add_attribute(&RequestedTransport::new(p)),
            Attr::RequestedFamily(f) => msg.add_attribute(&RequestedAddressFamily::new(f)),
            Attr::Lifetime(s) => msg.add_attribute(&Lifetime::new(s)),
            Attr::Peer(p) => msg.add_attribute(&XorPeerAddress::new(p, tid)),
            Attr::Channel(c) => msg.add_attribute(&ChannelNumber::new(c)),
            Attr::Data(d) => msg.add_attribute(&Data::new(d)),
            Attr::Software(s) => msg.add_attribute(&Software::new(s).map_err(protocol)?),
            Attr::Raw(t, v) => msg.add_attribute(&RawAttribute::new(t.into(), v)),
        };
        r.map_err(protocol)?;
    }
    Ok(())
}
