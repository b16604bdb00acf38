//! The client's protocol state, without I/O: credentials, the server's REALM and NONCE,
//! building requests, digesting what arrives, and the retry rules.

use std::net::SocketAddr;

use stun_types::attribute::{MessageIntegrity, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use turn_types::message::SEND;

use super::reply::data_indication;
use super::request::add_attrs;
use super::{protocol, Attr, Auth, ClientError, Origin, Outgoing, Reply};
use crate::framer::{write_channel_data, Frame};

/// Retries after 438 Stale Nonce before giving up (a server that keeps saying the nonce
/// is stale is broken; one retry is what RFC 8489 §9.2.5 asks of a client).
const STALE_NONCE_RETRIES: u32 = 1;

/// One client's protocol state.
#[derive(Default)]
pub struct Session {
    username: Option<String>,
    password: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log.
        f.debug_struct("Session")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// What a frame from the server was.
#[derive(Debug)]
pub enum Received {
    /// The response to the request we wait for (success or error).
    Reply(Reply),
    /// Relayed data: a Data indication or ChannelData.
    Data(Origin, Vec<u8>),
    /// Nothing for us: another indication, or a response to no pending request.
    Other,
}

/// What to do after a response ([`Session::after`]).
#[derive(Debug)]
pub enum Step {
    /// Send the same request again, signed (with the nonce just received).
    Retry,
    /// The exchange is over: a success response.
    Done(Reply),
    /// The exchange is over: an error response, or one we cannot act on.
    Failed(ClientError),
}

impl Session {
    /// A session without credentials (it can only send unsigned requests until
    /// [`Session::set_credentials`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A session that signs with `username` / `password` once it knows the realm.
    pub fn with_credentials(username: &str, password: &str) -> Self {
        let mut s = Self::new();
        s.set_credentials(username, password);
        s
    }

    /// Sets the credentials used by [`Auth::LongTerm`].
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
    }

    /// The nonce last received from the server.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Replaces the stored nonce (tests send a stale or forged one).
    pub fn set_nonce(&mut self, nonce: &str) {
        self.nonce = Some(nonce.to_owned());
    }

    /// The realm last received from the server.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// Sets the realm, for a caller that knows it without a 401 (a test harness).
    pub fn set_realm(&mut self, realm: &str) {
        self.realm = Some(realm.to_owned());
    }

    /// Whether requests can be signed: credentials, a realm and a nonce are known (after
    /// the first 401).
    pub fn can_sign(&self) -> bool {
        self.key().is_some() && self.nonce.is_some()
    }

    /// How the next request should be sent: signed once the server's realm and nonce are
    /// known, unsigned before (the server answers that with 401 and both).
    pub fn auth(&self) -> Auth {
        if self.can_sign() {
            Auth::LongTerm
        } else {
            Auth::None
        }
    }

    fn key(&self) -> Option<MessageIntegrityCredentials> {
        Some(
            LongTermKeyCredentials::new(
                self.username.clone()?,
                self.password.clone()?,
                self.realm.clone()?,
            )
            .into(),
        )
    }

    /// Builds a request of `method` with `attrs`, signed as `auth` says, ending with
    /// FINGERPRINT.
    pub fn request(
        &self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Auth,
    ) -> Result<Outgoing, ClientError> {
        self.request_with(method, TransactionId::generate(), auth, |msg, tid| {
            add_attrs(msg, attrs, tid)
        })
    }

    /// Builds a request of `method` with transaction id `tid`, its attributes written by
    /// `add` (any attribute, even a malformed one: the relay's own unit tests forge
    /// requests through this), signed as `auth` says, ending with FINGERPRINT.
    pub fn request_with(
        &self,
        method: Method,
        tid: TransactionId,
        auth: Auth,
        add: impl FnOnce(&mut MessageWriteVec, TransactionId) -> Result<(), ClientError>,
    ) -> Result<Outgoing, ClientError> {
        let mut msg = Message::builder(
            MessageType::from_class_method(MessageClass::Request, method),
            tid,
            MessageWriteVec::new(),
        );
        add(&mut msg, tid)?;
        if auth == Auth::LongTerm {
            let (Some(user), Some(realm), Some(nonce), Some(key)) =
                (&self.username, &self.realm, &self.nonce, self.key())
            else {
                return Err(protocol(
                    "signing needs credentials, and the realm and nonce of a 401 first",
                ));
            };
            msg.add_attribute(&Username::new(user).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_attribute(&Realm::new(realm).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_attribute(&Nonce::new(nonce).map_err(protocol)?)
                .map_err(protocol)?;
            msg.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
                .map_err(protocol)?;
        }
        msg.add_fingerprint().map_err(protocol)?;
        Ok(Outgoing {
            bytes: msg.finish(),
            tid,
            method,
        })
    }

    /// A Send indication carrying `data` to `peer`.
    pub fn send_indication(&self, peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut msg = Message::builder_indication(SEND, MessageWriteVec::new());
        let tid = msg.transaction_id();
        add_attrs(&mut msg, &[Attr::Peer(peer), Attr::Data(data)], tid)?;
        msg.add_fingerprint().map_err(protocol)?;
        Ok(msg.finish())
    }

    /// ChannelData carrying `data` on `channel`, padded to 4 bytes as on streams.
    pub fn channel_data(channel: u16, data: &[u8], out: &mut Vec<u8>) {
        write_channel_data(out, channel, data, true);
    }

    /// Digests one frame from the server while `waiting` (if any) is the request without
    /// a response yet. A response to it updates the realm and nonce and says whether its
    /// MESSAGE-INTEGRITY verified.
    pub fn receive(
        &mut self,
        frame: Frame<'_>,
        waiting: Option<&Outgoing>,
    ) -> Result<Received, ClientError> {
        let bytes = match frame {
            Frame::ChannelData(_) => {
                return Ok(Received::Data(
                    Origin::Channel(frame.channel().unwrap_or_default()),
                    frame.channel_payload().unwrap_or_default().to_vec(),
                ))
            }
            Frame::Stun(b) => b,
        };
        let msg = Message::from_bytes(bytes)
            .map_err(|e| protocol(format!("unparsable STUN message from the server: {e}")))?;
        match msg.class() {
            MessageClass::Indication => {
                return Ok(match data_indication(&msg)? {
                    Some((origin, data)) => Received::Data(origin, data),
                    None => Received::Other,
                })
            }
            MessageClass::Request => {
                return Err(protocol(format!("the server sent a request: {msg}")));
            }
            MessageClass::Success | MessageClass::Error => {}
        }
        let Some(out) = waiting.filter(|o| o.tid == msg.transaction_id()) else {
            return Ok(Received::Other);
        };
        if msg.method() != out.method {
            return Err(protocol(format!(
                "response method {} to a {} request",
                msg.method(),
                out.method
            )));
        }
        if let Ok(r) = msg.attribute::<Realm>() {
            self.realm = Some(r.realm().to_owned());
        }
        if let Ok(n) = msg.attribute::<Nonce>() {
            self.nonce = Some(n.nonce().to_owned());
        }
        let integrity_ok = msg.has_attribute(MessageIntegrity::TYPE).then(|| {
            self.key()
                .is_some_and(|k| msg.validate_integrity(&k).is_ok())
        });
        Ok(Received::Reply(Reply::new(bytes.to_vec(), integrity_ok)))
    }

    /// What to do after `reply` to a request sent as `sent`, `retries` retries in: retry
    /// signed after the 401 of first contact (once the realm and nonce are known) and
    /// after 438 Stale Nonce (once); else the exchange is over.
    pub fn after(&self, sent: Auth, reply: Reply, retries: u32) -> Step {
        let Some(err) = reply.error() else {
            return Step::Done(reply);
        };
        let retry = match err.code {
            401 => sent == Auth::None && self.can_sign(),
            438 => retries <= STALE_NONCE_RETRIES && self.can_sign(),
            _ => false,
        };
        if retry {
            Step::Retry
        } else if err.code == 401 && sent == Auth::None && self.username.is_none() {
            Step::Failed(protocol(
                "the server asks for credentials and none were given",
            ))
        } else {
            Step::Failed(err.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::Framer;
    use stun_types::attribute::ErrorCode;
    use turn_types::message::{ALLOCATE, REFRESH};

    /// A server's error response to `out`, with REALM and NONCE.
    fn error_reply(out: &Outgoing, code: u16, nonce: &str) -> Vec<u8> {
        let req = Message::from_bytes(&out.bytes).expect("own request parses");
        let mut m = Message::builder_error(&req, MessageWriteVec::new());
        m.add_attribute(&ErrorCode::builder(code).build().expect("code"))
            .expect("error code");
        m.add_attribute(&Realm::new("gateway").expect("realm"))
            .expect("realm");
        m.add_attribute(&Nonce::new(nonce).expect("nonce"))
            .expect("nonce");
        m.finish()
    }

    fn digest(s: &mut Session, bytes: &[u8], out: &Outgoing) -> Received {
        let mut f = Framer::new();
        f.feed(bytes);
        let frame = f.next_frame().expect("frames").expect("one frame");
        s.receive(frame, Some(out)).expect("digests")
    }

    #[test]
    fn first_contact_401_then_signed_retry_then_one_stale_nonce_retry() {
        let mut s = Session::with_credentials("1700000000:alice", "secret");
        assert_eq!(s.auth(), Auth::None);
        let out = s.request(ALLOCATE, &[], Auth::None).expect("builds");
        let Received::Reply(r) = digest(&mut s, &error_reply(&out, 401, "n1"), &out) else {
            panic!("a reply")
        };
        assert_eq!(s.nonce(), Some("n1"));
        assert_eq!(s.realm(), Some("gateway"));
        assert!(matches!(s.after(Auth::None, r, 0), Step::Retry));
        assert_eq!(s.auth(), Auth::LongTerm);

        let signed = s.request(ALLOCATE, &[], Auth::LongTerm).expect("signs");
        let msg = Message::from_bytes(&signed.bytes).expect("parses");
        assert!(msg.has_attribute(MessageIntegrity::TYPE));
        let Received::Reply(r) = digest(&mut s, &error_reply(&signed, 438, "n2"), &signed) else {
            panic!("a reply")
        };
        assert_eq!(s.nonce(), Some("n2"));
        assert!(matches!(s.after(Auth::LongTerm, r.clone(), 1), Step::Retry));
        // A server that keeps calling every nonce stale is not followed forever.
        assert!(matches!(s.after(Auth::LongTerm, r, 2), Step::Failed(_)));
    }

    #[test]
    fn a_signed_401_or_another_error_ends_the_exchange_with_its_code() {
        let mut s = Session::with_credentials("u", "p");
        let out = s.request(REFRESH, &[], Auth::None).expect("builds");
        let Received::Reply(r) = digest(&mut s, &error_reply(&out, 401, "n"), &out) else {
            panic!("a reply")
        };
        match s.after(Auth::LongTerm, r, 0) {
            Step::Failed(e) => assert_eq!(e.code(), Some(401)),
            other => panic!("{other:?}"),
        }
        let out = s.request(REFRESH, &[], Auth::LongTerm).expect("builds");
        let Received::Reply(r) = digest(&mut s, &error_reply(&out, 437, "n"), &out) else {
            panic!("a reply")
        };
        match s.after(Auth::LongTerm, r, 0) {
            Step::Failed(e) => assert_eq!(e.code(), Some(437)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_credentials_no_signing() {
        let mut s = Session::new();
        assert!(s.request(ALLOCATE, &[], Auth::LongTerm).is_err());
        let out = s.request(ALLOCATE, &[], Auth::None).expect("builds");
        let Received::Reply(r) = digest(&mut s, &error_reply(&out, 401, "n"), &out) else {
            panic!("a reply")
        };
        assert!(matches!(
            s.after(Auth::None, r, 0),
            Step::Failed(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn responses_to_other_transactions_and_channel_data_are_told_apart() {
        let mut s = Session::with_credentials("u", "p");
        let mine = s.request(ALLOCATE, &[], Auth::None).expect("builds");
        let other = s.request(ALLOCATE, &[], Auth::None).expect("builds");
        assert!(matches!(
            digest(&mut s, &error_reply(&other, 401, "n"), &mine),
            Received::Other
        ));
        assert_eq!(s.nonce(), None, "a stray response teaches nothing");
        let mut cd = Vec::new();
        Session::channel_data(0x4001, b"hello", &mut cd);
        match digest(&mut s, &cd, &mine) {
            Received::Data(Origin::Channel(0x4001), d) => assert_eq!(d, b"hello"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_from_the_server_is_a_protocol_error() {
        let mut s = Session::new();
        let req = s.request(ALLOCATE, &[], Auth::None).expect("builds");
        let mut f = Framer::new();
        f.feed(&req.bytes);
        let frame = f.next_frame().expect("frames").expect("one frame");
        assert!(s.receive(frame, None).is_err());
    }
}
