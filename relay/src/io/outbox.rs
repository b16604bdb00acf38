//! What a TURN connection writes to its client, and how: plain TCP takes the queued bytes
//! as one stream; TLS gets each message in a TLS record of its own.
//!
//! Why records per message: a TLS stream has no message boundaries, and clients that frame
//! the decrypted stream (browsers, str0m) do not care how messages sit in records. But
//! coturn's own client (`turnutils_uclient`, which operators use to check a TURN server)
//! takes one `SSL_read` as one message: when two Data indications shared a record, it
//! parsed the first and lost the second (1-3 of 24,000 packets under load, never over
//! plain TCP). coturn writes one record per message; so does this relay. Encryption stays
//! batched: messages are handed to rustls without I/O and the records leave in one
//! vectored write on flush.

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::listener::IoStream;
use super::Prefixed;

/// Most bytes queued for the client. While the client does not take them (its TCP window
/// is closed), its own reads pause and the relay socket is not read (the kernel drops what
/// peers send meanwhile: UDP semantics); below it the connection keeps relaying both ways.
pub(crate) const OUTBOX_LIMIT: usize = 256 * 1024;

/// Most plaintext handed to rustls before its records are written out. rustls holds
/// encrypted records up to its buffer limit (64 KiB by default) and takes less than asked
/// beyond it; staying below means every message fits whole and gets its own record.
const TLS_BATCH: usize = 32 * 1024;

/// A TURN client's byte stream.
pub(crate) enum ClientStream {
    /// Plain TCP (or anything without records).
    Plain(Box<dyn IoStream>),
    /// TLS, with the plaintext bytes the demultiplexer read put back in front.
    Tls(Box<Prefixed<TlsStream<TcpStream>>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl ClientStream {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Closes the stream (a TLS close_notify first).
    pub async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(s) => s.shutdown().await,
        };
    }
}

/// Bytes for the client, written as the stream takes them. Writing is one branch of the
/// connection's `select!` rather than a wait after each event, so a client that reads
/// slowly does not stop the allocation from draining its relay socket: datagrams queue
/// here (up to [`OUTBOX_LIMIT`]) instead of overflowing the socket's receive buffer.
#[derive(Default)]
pub(crate) struct Outbox {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// The unwritten length of each message not yet fully written, oldest first (the
    /// first may be partly written). Kept only for TLS ([`Outbox::for_records`]).
    messages: Option<VecDeque<usize>>,
    /// Written since the last flush (TLS may hold records until flushed).
    unflushed: bool,
}

impl Outbox {
    /// An outbox that keeps message boundaries, for a stream with records.
    pub fn for_records() -> Self {
        Self {
            messages: Some(VecDeque::new()),
            ..Self::default()
        }
    }

    /// An outbox for `s`.
    pub fn for_stream(s: &ClientStream) -> Self {
        match s {
            ClientStream::Plain(_) => Self::default(),
            ClientStream::Tls(_) => Self::for_records(),
        }
    }

    /// Queues one whole message.
    pub fn push(&mut self, message: &[u8]) {
        if message.is_empty() {
            return;
        }
        self.buf.extend_from_slice(message);
        if let Some(m) = &mut self.messages {
            m.push_back(message.len());
        }
    }

    fn unsent(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The unwritten part of the oldest message (all unsent bytes without boundaries).
    fn next_message(&self) -> &[u8] {
        let unsent = self.unsent();
        match self.messages.as_ref().and_then(|m| m.front()) {
            Some(&len) => unsent.get(..len).unwrap_or(unsent),
            None => unsent,
        }
    }

    fn has_unsent(&self) -> bool {
        self.pos < self.buf.len()
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() - self.pos >= OUTBOX_LIMIT
    }

    fn sent(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        self.unflushed = true;
        if let Some(m) = &mut self.messages {
            let mut left = n;
            while left > 0 {
                let Some(front) = m.front_mut() else { break };
                let take = left.min(*front);
                *front -= take;
                left -= take;
                if *front == 0 {
                    m.pop_front();
                }
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= OUTBOX_LIMIT {
            // Keep the buffer from creeping: move the unsent tail to the front.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Writes and flushes as far as the stream takes it now, without waiting (the stream
    /// wakes the task when it can take more). `Err`: the stream failed.
    pub fn drive(&mut self, s: &mut ClientStream, cx: &mut Context<'_>) -> Result<(), ()> {
        match s {
            ClientStream::Tls(tls) => self.drive_records(tls, cx),
            ClientStream::Plain(_) => {
                while self.has_unsent() {
                    match s.poll_write(cx, self.unsent()) {
                        Poll::Ready(Ok(n)) if n > 0 => self.sent(n),
                        Poll::Ready(_) => return Err(()),
                        Poll::Pending => return Ok(()),
                    }
                }
                if self.needs_flush() {
                    match s.poll_flush(cx) {
                        Poll::Ready(Ok(())) => self.flushed(),
                        Poll::Ready(Err(_)) => return Err(()),
                        Poll::Pending => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// TLS: hands messages to rustls one `write` each (one record each; no I/O), then
    /// writes the records out with a flush; repeats while the socket takes them.
    fn drive_records(
        &mut self,
        tls: &mut Prefixed<TlsStream<TcpStream>>,
        cx: &mut Context<'_>,
    ) -> Result<(), ()> {
        let mut stalled = false;
        loop {
            if self.unflushed {
                // Out first what rustls holds; Ready only once all of it is written.
                match Pin::new(&mut *tls).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushed(),
                    Poll::Ready(Err(_)) => return Err(()),
                    Poll::Pending => return Ok(()),
                }
            }
            if !self.has_unsent() {
                return Ok(());
            }
            let conn = tls.get_mut().get_mut().1;
            let mut handed = 0;
            while handed < TLS_BATCH && self.has_unsent() {
                let n = conn.writer().write(self.next_message()).map_err(|_| ())?;
                if n == 0 {
                    break;
                }
                self.sent(n);
                handed += n;
            }
            if handed == 0 {
                // rustls holds a full buffer: flush it first. Twice in a row means it
                // takes nothing even when empty (the connection is closing).
                if stalled {
                    return Err(());
                }
                stalled = true;
            } else {
                stalled = false;
            }
            self.unflushed = true;
        }
    }

    /// [`Outbox::drive`] once, from async code.
    pub async fn write_now(&mut self, s: &mut ClientStream) -> Result<(), ()> {
        std::future::poll_fn(|cx| Poll::Ready(self.drive(s, cx))).await
    }

    fn needs_flush(&self) -> bool {
        self.unflushed && !self.has_unsent()
    }

    fn flushed(&mut self) {
        self.unflushed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_tracks_partial_writes_and_flushes() {
        let mut o = Outbox::default();
        assert!(!o.has_unsent() && !o.needs_flush() && !o.is_full());
        o.push(b"hello ");
        o.push(b"world");
        assert_eq!(o.unsent(), b"hello world");
        assert_eq!(
            o.next_message(),
            b"hello world",
            "no boundaries on plain TCP"
        );
        o.sent(6);
        assert_eq!(o.unsent(), b"world");
        assert!(!o.needs_flush(), "no flush while bytes are unsent");
        o.sent(5);
        assert!(!o.has_unsent() && o.needs_flush());
        assert!(o.buf.is_empty(), "a drained outbox starts over");
        o.flushed();
        assert!(!o.needs_flush());
        // A write longer than what is left cannot push the position past the end.
        o.push(b"x");
        o.sent(10);
        assert!(!o.has_unsent());
    }

    #[test]
    fn outbox_for_records_hands_out_one_message_at_a_time() {
        let mut o = Outbox::for_records();
        o.push(b"first");
        o.push(b"");
        o.push(b"second");
        assert_eq!(o.next_message(), b"first");
        o.sent(2);
        assert_eq!(
            o.next_message(),
            b"rst",
            "a partly written message goes on alone"
        );
        o.sent(3);
        assert_eq!(o.next_message(), b"second");
        o.sent(6);
        assert!(!o.has_unsent());
        assert_eq!(o.messages.as_ref().map(VecDeque::len), Some(0));
        // Boundaries survive the compaction past the limit.
        let chunk = vec![1u8; 1000];
        while !o.is_full() {
            o.push(&chunk);
        }
        o.push(b"tail");
        o.sent(OUTBOX_LIMIT);
        assert_eq!(o.pos, 0, "compacted");
        let first = o.next_message().len();
        assert!(first <= 1000 && first > 0, "{first}");
        let before = o.unsent().len();
        o.sent(before - 4);
        assert_eq!(o.next_message(), b"tail");
    }

    #[test]
    fn outbox_is_full_at_the_limit_and_compacts() {
        let mut o = Outbox::default();
        let chunk = vec![7u8; 1024];
        while !o.is_full() {
            o.push(&chunk);
        }
        assert_eq!(o.unsent().len(), OUTBOX_LIMIT);
        // Half written: room again, and the written half is kept until the limit.
        o.sent(OUTBOX_LIMIT / 2);
        assert!(!o.is_full());
        assert_eq!(o.unsent().len(), OUTBOX_LIMIT / 2);
        o.push(&chunk);
        o.sent(OUTBOX_LIMIT / 2);
        assert_eq!(
            o.pos, 0,
            "written bytes past the limit are dropped from the front"
        );
        assert_eq!(o.unsent(), &chunk[..]);
    }
}
