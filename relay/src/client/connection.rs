//! The tokio shell of the client: one [`Session`] over one byte stream (TCP or TLS; the
//! caller connects). Every wait is bounded by [`Connection::timeout`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use stun_types::message::Method;
use stun_types::AddressFamily;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

use super::request::allocate_attrs;
use super::{
    protocol, AllocateOk, Attr, Auth, ClientError, Origin, Outgoing, Received, Reply, Session, Step,
};
use crate::framer::Framer;

/// Default bound on every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Relayed data kept while a transaction is pending, at most; older data is dropped
/// first (a peer flooding the allocation cannot grow the client without bound).
pub const MAX_QUEUED: usize = 4096;

/// LIFETIME asked for in an Allocate, in seconds (the server may grant less).
const ALLOCATE_LIFETIME: u32 = 600;

/// A TURN client over one connection.
pub struct Connection<S> {
    stream: S,
    framer: Framer,
    session: Session,
    /// Data that arrived while a transaction was pending.
    queued: VecDeque<(Origin, Vec<u8>)>,
    /// Bound on every wait.
    pub timeout: Duration,
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session)
            .field("queued", &self.queued.len())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A client over a connected `stream`, without credentials yet.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            framer: Framer::new(),
            session: Session::new(),
            queued: VecDeque::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client over `stream` signing with `username` / `password`, each wait bounded by
    /// `timeout`.
    pub fn with_credentials(stream: S, username: &str, password: &str, timeout: Duration) -> Self {
        let mut c = Self::new(stream);
        c.session.set_credentials(username, password);
        c.timeout = timeout;
        c
    }

    /// Sets the credentials used by [`Auth::LongTerm`].
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.session.set_credentials(username, password);
    }

    /// The nonce last received from the server.
    pub fn nonce(&self) -> Option<&str> {
        self.session.nonce()
    }

    /// Replaces the stored nonce (to send a stale or forged one).
    pub fn set_nonce(&mut self, nonce: &str) {
        self.session.set_nonce(nonce);
    }

    /// The realm last received from the server.
    pub fn realm(&self) -> Option<&str> {
        self.session.realm()
    }

    /// The stream and the framer with whatever it buffered, for a caller that moves relayed
    /// data itself once the control exchanges are done (the benchmark's load generators).
    /// Take the data that arrived during those exchanges first ([`Connection::take_received`]).
    pub fn into_parts(self) -> (S, Framer) {
        (self.stream, self.framer)
    }

    /// The relayed data that arrived while requests were waiting for their responses, oldest
    /// first (a peer may start sending the moment its permission exists: a WebRTC peer's
    /// first DTLS flight often comes during the ChannelBind that follows).
    pub fn take_received(&mut self) -> Vec<(Origin, Vec<u8>)> {
        self.queued.drain(..).collect()
    }

    /// Builds a request without sending it (see [`Session::request`]).
    pub fn build_request(
        &self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Auth,
    ) -> Result<Outgoing, ClientError> {
        self.session.request(method, attrs, auth)
    }

    /// Writes raw bytes to the server.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let fut = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout("a write to the server".into()))??;
        Ok(())
    }

    /// Sends one request and waits for its response, without any retry. Error responses
    /// come back as a [`Reply`] too; REALM and NONCE in any response are remembered.
    pub async fn transact(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
        auth: Auth,
    ) -> Result<Reply, ClientError> {
        let out = self.session.request(method, attrs, auth)?;
        self.send_raw(&out.bytes).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let what = format!("a response to {method}");
        loop {
            match self.receive_until(deadline, &what, Some(&out)).await? {
                Received::Reply(r) => return Ok(r),
                Received::Data(origin, data) => self.queue(origin, data),
                Received::Other => {}
            }
        }
    }

    /// A request as a client sends it: unsigned at first contact, then signed; retried
    /// after the 401 of first contact and once after 438 Stale Nonce. Error responses
    /// become [`ClientError::Turn`].
    pub async fn request(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
    ) -> Result<Reply, ClientError> {
        self.exchange(method, attrs).await.map(|(reply, _)| reply)
    }

    /// [`Connection::request`], also telling how the request that succeeded was sent.
    async fn exchange(
        &mut self,
        method: Method,
        attrs: &[Attr<'_>],
    ) -> Result<(Reply, Auth), ClientError> {
        let mut auth = self.session.auth();
        let mut retries = 0;
        loop {
            let reply = self.transact(method, attrs, auth).await?;
            match self.session.after(auth, reply, retries) {
                Step::Done(r) => return Ok((r, auth)),
                Step::Failed(e) => return Err(e),
                Step::Retry => {
                    auth = Auth::LongTerm;
                    retries += 1;
                }
            }
        }
    }

    /// An unauthenticated Allocate for a UDP relay of `family`. Normally answered with 401
    /// carrying REALM and NONCE (remembered for signing).
    pub async fn allocate_unauthenticated(
        &mut self,
        family: AddressFamily,
    ) -> Result<Reply, ClientError> {
        self.transact(
            ALLOCATE,
            &allocate_attrs(family, ALLOCATE_LIFETIME),
            Auth::None,
        )
        .await
    }

    /// One signed Allocate with the stored credentials and nonce, no retry.
    pub async fn allocate_signed(
        &mut self,
        family: AddressFamily,
    ) -> Result<AllocateOk, ClientError> {
        let attrs = allocate_attrs(family, ALLOCATE_LIFETIME);
        let reply = self
            .transact(ALLOCATE, &attrs, Auth::LongTerm)
            .await?
            .into_result()?;
        AllocateOk::from_reply(&reply)
    }

    /// Allocates an IPv4 UDP relay with the stored credentials.
    pub async fn allocate(&mut self) -> Result<AllocateOk, ClientError> {
        self.allocate_family(AddressFamily::IPV4).await
    }

    /// Allocates a UDP relay of `family`: unsigned (401) → signed (→ once more on 438). A
    /// server that grants an Allocate without credentials is an error: it relays for
    /// anyone.
    pub async fn allocate_family(
        &mut self,
        family: AddressFamily,
    ) -> Result<AllocateOk, ClientError> {
        let attrs = allocate_attrs(family, ALLOCATE_LIFETIME);
        let (reply, auth) = self.exchange(ALLOCATE, &attrs).await?;
        if auth == Auth::None {
            return Err(protocol(
                "the server granted an Allocate without credentials",
            ));
        }
        AllocateOk::from_reply(&reply)
    }

    /// Refreshes the allocation for `lifetime` seconds (0 deletes it); returns the
    /// granted LIFETIME.
    pub async fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let reply = self.request(REFRESH, &[Attr::Lifetime(lifetime)]).await?;
        reply
            .lifetime()
            .ok_or_else(|| protocol("Refresh success without LIFETIME"))
    }

    /// Deletes the allocation (Refresh with LIFETIME 0), ignoring any error: for a client
    /// on its way out.
    pub async fn release(&mut self) {
        let _ = self.refresh(0).await;
    }

    /// Installs a permission for `peer`'s IP.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), ClientError> {
        self.request(CREATE_PERMISSION, &[Attr::Peer(peer)])
            .await
            .map(drop)
    }

    /// Binds `channel` (0x4000..=0x4FFF) to `peer`.
    pub async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        self.request(CHANNEL_BIND, &[Attr::Channel(channel), Attr::Peer(peer)])
            .await
            .map(drop)
    }

    /// Sends `data` to `peer` in a Send indication.
    pub async fn send_indication(
        &mut self,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let bytes = self.session.send_indication(peer, data)?;
        self.send_raw(&bytes).await
    }

    /// Sends `data` on `channel` as ChannelData.
    pub async fn send_channel_data(
        &mut self,
        channel: u16,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(data.len() + 8);
        Session::channel_data(channel, data, &mut out);
        self.send_raw(&out).await
    }

    /// The next relayed data (Data indication or ChannelData), waiting at most `timeout`.
    pub async fn recv_data(&mut self, timeout: Duration) -> Result<(Origin, Vec<u8>), ClientError> {
        if let Some(d) = self.queued.pop_front() {
            return Ok(d);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Received::Data(origin, data) =
                self.receive_until(deadline, "relayed data", None).await?
            {
                return Ok((origin, data));
            }
        }
    }

    /// Waits until the server closes the connection (EOF or reset), discarding whatever
    /// arrives meanwhile. `Ok` once closed; `Timeout` if still open after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self
                .receive_until(deadline, "the server to close", None)
                .await
            {
                Ok(_) => continue,
                Err(e) if e.is_disconnect() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Shuts down our side of the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }

    fn queue(&mut self, origin: Origin, data: Vec<u8>) {
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back((origin, data));
    }

    /// Reads until one whole frame is digested, waiting until `deadline`.
    async fn receive_until(
        &mut self,
        deadline: tokio::time::Instant,
        what: &str,
        waiting: Option<&Outgoing>,
    ) -> Result<Received, ClientError> {
        loop {
            if let Some(frame) = self.framer.next_frame()? {
                return self.session.receive(frame, waiting);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(self.framer.read_buf()))
                .await
                .map_err(|_| ClientError::Timeout(what.to_owned()))?;
            match read {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.framer.commit(n),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
