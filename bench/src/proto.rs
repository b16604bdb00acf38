//! A sans-I/O TURN client session: builds requests (long-term credentials with a TURN REST
//! username/password) and digests responses. No sockets here: [`crate::conn`] moves the
//! bytes, cut into messages by the relay's own [`relay::framer::Framer`].

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context as _};
use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    ChannelNumber, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Allocate a UDP relay for 600 s.
    Allocate,
    /// Install a permission for the peer's IP.
    CreatePermission(SocketAddr),
    /// Bind a channel to the peer.
    ChannelBind(u16, SocketAddr),
}

impl Request {
    fn method(self) -> Method {
        match self {
            Request::Allocate => ALLOCATE,
            Request::CreatePermission(_) => CREATE_PERMISSION,
            Request::ChannelBind(..) => CHANNEL_BIND,
        }
    }
}

/// The answer to a request.
#[derive(Debug)]
pub enum Answer {
    /// Success; the relayed address for an Allocate.
    Ok(Option<SocketAddr>),
    /// Error response with its code (401 and 438 carry a nonce we remembered).
    Error(u16),
}

/// One client's protocol state: credentials, realm, nonce, the pending transaction.
pub struct Session {
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<MessageIntegrityCredentials>,
    pending: Option<(TransactionId, Method)>,
}

impl Session {
    /// A session that will sign with `username` / `password` once it knows the realm.
    pub fn new(username: String, password: String) -> Self {
        Self {
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            pending: None,
        }
    }

    /// Whether the 401 exchange has happened (requests will be signed).
    pub fn can_sign(&self) -> bool {
        self.key.is_some() && self.nonce.is_some()
    }

    /// The bytes of `req`, signed when the realm and nonce are known.
    pub fn request(&mut self, req: Request) -> anyhow::Result<Vec<u8>> {
        let method = req.method();
        let mut msg = Message::builder_request(method, MessageWriteVec::new());
        let tid = msg.transaction_id();
        let e = |e: stun_types::message::StunWriteError| anyhow!("{e}");
        match req {
            Request::Allocate => {
                msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .map_err(e)?;
                msg.add_attribute(&Lifetime::new(600)).map_err(e)?;
            }
            Request::CreatePermission(peer) => {
                msg.add_attribute(&XorPeerAddress::new(peer, tid))
                    .map_err(e)?;
            }
            Request::ChannelBind(ch, peer) => {
                msg.add_attribute(&ChannelNumber::new(ch)).map_err(e)?;
                msg.add_attribute(&XorPeerAddress::new(peer, tid))
                    .map_err(e)?;
            }
        }
        if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) {
            msg.add_attribute(&Username::new(&self.username).map_err(|e| anyhow!("{e}"))?)
                .map_err(e)?;
            msg.add_attribute(&Realm::new(realm).map_err(|e| anyhow!("{e}"))?)
                .map_err(e)?;
            msg.add_attribute(&Nonce::new(nonce).map_err(|e| anyhow!("{e}"))?)
                .map_err(e)?;
            msg.add_message_integrity(key, IntegrityAlgorithm::Sha1)
                .map_err(e)?;
        }
        msg.add_fingerprint().map_err(e)?;
        self.pending = Some((tid, method));
        Ok(msg.finish())
    }

    /// Digests a STUN message from the server. `Ok(None)`: not the answer we wait for
    /// (an indication, a stray response).
    pub fn on_stun(&mut self, bytes: &[u8]) -> anyhow::Result<Option<Answer>> {
        let msg = Message::from_bytes(bytes).context("unparsable STUN message")?;
        let Some((tid, method)) = self.pending else {
            return Ok(None);
        };
        if !matches!(msg.class(), MessageClass::Success | MessageClass::Error)
            || msg.transaction_id() != tid
        {
            return Ok(None);
        }
        if msg.method() != method {
            bail!("response method {} to a {method} request", msg.method());
        }
        self.pending = None;
        if let Ok(r) = msg.attribute::<Realm>() {
            let realm = r.realm().to_owned();
            self.key = Some(
                LongTermKeyCredentials::new(
                    self.username.clone(),
                    self.password.clone(),
                    realm.clone(),
                )
                .into(),
            );
            self.realm = Some(realm);
        }
        if let Ok(n) = msg.attribute::<Nonce>() {
            self.nonce = Some(n.nonce().to_owned());
        }
        if msg.class() == MessageClass::Error {
            let code = msg.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
            return Ok(Some(Answer::Error(code)));
        }
        let relayed = msg
            .attribute::<XorRelayedAddress>()
            .ok()
            .map(|a| a.addr(tid));
        Ok(Some(Answer::Ok(relayed)))
    }
}
