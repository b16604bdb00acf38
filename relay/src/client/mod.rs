//! A TURN client: the other end of the relay, for the gateway's doctor, the end-to-end tests
//! and the benchmark (one client, so the three cannot drift apart).
//!
//! Built like the relay itself:
//!
//! * [`Session`] is sans-I/O. It holds the credentials, the REALM and NONCE the server
//!   handed out, builds requests ([`Session::request`]: any method, any [`Attr`], signed or
//!   not), Send indications and ChannelData, digests what the server sends
//!   ([`Session::receive`]: a response to the pending transaction, relayed data, or
//!   nothing of interest) and says what to do after a response ([`Session::after`]: the
//!   401 → signed retry of first contact, one retry on 438 Stale Nonce, else done).
//! * [`Connection`] is the thin tokio shell over any byte stream (plain TCP or TLS: the
//!   caller connects), cut into messages with the relay's own [`crate::framer::Framer`].
//!   Every wait is bounded by [`Connection::timeout`]: nobody hangs on a silent server.
//!
//! Two levels, as tests need both: [`Connection::allocate`], [`Connection::refresh`],
//! [`Connection::create_permission`], [`Connection::channel_bind`] do what a normal client
//! does; [`Connection::transact`] sends exactly one request (signed or not, no retry) and
//! hands back the raw [`Reply`], so a test can assert 401/403/437/438/486/508 exactly.

mod connection;
mod reply;
mod request;
mod session;

pub use connection::{Connection, DEFAULT_TIMEOUT, MAX_QUEUED};
pub use reply::{AllocateOk, Origin, Reply};
pub use request::{Attr, Auth, Outgoing};
pub use session::{Received, Session, Step};

/// An error response from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server answered {code} {reason:?}")]
pub struct TurnError {
    /// ERROR-CODE value (e.g. 401, 403, 437, 438, 486, 508).
    pub code: u16,
    /// Its reason phrase.
    pub reason: String,
}

/// Anything that went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error response.
    #[error(transparent)]
    Turn(#[from] TurnError),
    /// No answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// Socket or TLS error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server's byte stream cannot be cut into messages.
    #[error("framing error: {0}")]
    Framing(#[from] crate::framer::FrameError),
    /// A message from the server that does not parse or lacks what it must carry, or a
    /// request this client cannot build.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The STUN error code, when the server answered with an error response.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Turn(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether the connection is gone (closed, reset, broken pipe).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

pub(crate) fn protocol(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(msg.to_string())
}
