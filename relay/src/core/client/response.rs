//! Writing responses: success and error responses with ERROR-CODE, SOFTWARE,
//! MESSAGE-INTEGRITY and FINGERPRINT. Every request handler ends here, so the wire format
//! of our answers is decided in one place.

use stun_types::attribute::{AttributeWrite, ErrorCode, Software};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageType, MessageWriteExt,
    MessageWriteVec,
};

use super::{Client, ClientOutput, Req};

/// Longest reason phrase we put into ERROR-CODE.
const MAX_REASON: usize = 127;

fn truncate_reason(s: &str) -> &str {
    if s.len() <= MAX_REASON {
        return s;
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

impl Client {
    // ---------------------------------------------------------------- responses

    /// Writes a response (success or error) to `out`: `attrs`, SOFTWARE when configured,
    /// MESSAGE-INTEGRITY when `key` is given, FINGERPRINT.
    pub(super) fn write_response(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        error: Option<(u16, &str)>,
        attrs: &[&dyn AttributeWrite],
        key: Option<&IntegrityKey>,
    ) {
        let class = if error.is_some() {
            MessageClass::Error
        } else {
            MessageClass::Success
        };
        let mut w = Message::builder(
            MessageType::from_class_method(class, req.method),
            req.tid,
            MessageWriteVec::with_capacity(160),
        );
        if let Some((code, reason)) = error {
            if let Ok(e) = ErrorCode::new(code, truncate_reason(reason)) {
                let _ = w.add_attribute(&e);
            }
        }
        for a in attrs {
            let _ = w.add_attribute(*a);
        }
        if let Some(s) = self.shared.config().software.as_deref() {
            if let Ok(s) = Software::new(s) {
                let _ = w.add_attribute(&s);
            }
        }
        if let Some(k) = key {
            let _ = w.add_message_integrity_with_key(k, IntegrityAlgorithm::Sha1);
        }
        let _ = w.add_fingerprint();
        out.clear();
        out.extend_from_slice(&w);
    }

    /// An error response, signed with `key` when the request was authenticated.
    pub(super) fn error(
        &self,
        out: &mut Vec<u8>,
        req: Req,
        code: u16,
        reason: &str,
        key: Option<&IntegrityKey>,
    ) -> ClientOutput<'static> {
        self.write_response(out, req, Some((code, reason)), &[], key);
        ClientOutput::Reply
    }
}
