//! Fuzzes the STUN/TURN codec the relay relies on: stun-types' message parser and attribute
//! iteration, the TURN attributes the relay decodes, integrity checking, and turn-types'
//! ChannelData parser. Nothing may panic; parsed views must stay inside the input.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use stun_types::attribute::{
    AttributeFromRaw, AttributeStaticType, Fingerprint, MessageIntegrity, MessageIntegritySha256,
    Nonce, Realm, Software, Username,
};
use stun_types::message::{LongTermCredentials, Message, MessageHeader};
use turn_types::attribute::{
    ChannelNumber, Data, Lifetime, RequestedAddressFamily, RequestedTransport, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::channel::ChannelData;

fn try_attr<'a, A>(raw: &stun_types::attribute::RawAttribute<'a>) -> Option<A>
where
    A: AttributeFromRaw<'a> + AttributeStaticType + std::fmt::Debug,
{
    let attr = A::from_raw_ref(raw).ok()?;
    let _ = format!("{attr:?}");
    Some(attr)
}

static INIT: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // Registers TURN attribute and method names, so that Display covers them too.
    INIT.call_once(turn_types::debug_init);
    let _ = MessageHeader::from_bytes(data);
    if let Ok(msg) = Message::from_bytes(data) {
        assert!(msg.as_bytes().len() <= data.len());
        let tid = msg.transaction_id();
        let _ = (msg.get_type(), msg.class(), msg.method(), msg.is_response());
        let _ = format!("{msg}");
        for (offset, raw) in msg.iter_attributes() {
            assert!(offset < data.len());
            let _ = format!("{raw}");
            // Every decoder on every attribute: each must reject foreign types cleanly.
            if let Some(a) = try_attr::<XorPeerAddress>(&raw) {
                let _ = a.addr(tid);
            }
            if let Some(a) = try_attr::<XorRelayedAddress>(&raw) {
                let _ = a.addr(tid);
            }
            if let Some(a) = try_attr::<ChannelNumber>(&raw) {
                let _ = a.channel();
            }
            if let Some(a) = try_attr::<Lifetime>(&raw) {
                let _ = a.seconds();
            }
            if let Some(a) = try_attr::<Data>(&raw) {
                assert!(a.data().len() <= data.len());
            }
            if let Some(a) = try_attr::<RequestedTransport>(&raw) {
                let _ = a.protocol();
            }
            if let Some(a) = try_attr::<RequestedAddressFamily>(&raw) {
                let _ = a.family();
            }
            let _ = try_attr::<Username>(&raw);
            let _ = try_attr::<Realm>(&raw);
            let _ = try_attr::<Nonce>(&raw);
            let _ = try_attr::<Software>(&raw);
            let _ = try_attr::<MessageIntegrity>(&raw);
            let _ = try_attr::<MessageIntegritySha256>(&raw);
            let _ = try_attr::<Fingerprint>(&raw);
        }
        // The typed accessors the relay core uses.
        let _ = msg.attribute::<XorPeerAddress>().map(|a| a.addr(tid));
        let _ = msg.nth_attribute::<XorPeerAddress>(1).map(|a| a.addr(tid));
        let _ = msg.attribute::<ChannelNumber>();
        let _ = msg.attribute::<Lifetime>();
        let _ = msg.attribute::<Data>();
        let _ = msg.attribute::<RequestedTransport>();
        let _ = msg.attribute::<Username>();
        let _ = msg.attribute::<Nonce>();
        // Long-term credential check (the relay's Allocate/Refresh/... path).
        if msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE)
        {
            let creds = LongTermCredentials::new("1700000000:fuzz".into(), "pass".into())
                .to_key("example.org".into());
            let _ = msg.validate_integrity(&creds.into());
        }
    }
    if let Ok(cd) = ChannelData::parse(data) {
        assert!((0x4000..=0xFFFE).contains(&cd.id()));
        assert_eq!(cd.data(), &data[4..4 + cd.data().len()]);
    }
    let _ = ChannelData::parse_header(data);
    let _ = relay::framer::peek_header(data, relay::framer::DEFAULT_MAX_FRAME_LEN);
});
