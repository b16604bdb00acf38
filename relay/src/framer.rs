//! RFC 8656 stream framer: cuts a TCP/TLS byte stream from a TURN client into whole messages.
//!
//! On a stream, a TURN client sends two kinds of messages back to back (RFC 8656 §11.5,
//! §12.5):
//!
//! * **STUN** messages: the first two bits are `00` (first byte `0x00..=0x3F`); the 16-bit
//!   length field at offset 2 counts the attributes after the 20-byte header and is always a
//!   multiple of 4. Whole message: `20 + length` bytes.
//! * **ChannelData** messages: the first byte is `0x40..=0x7F` (channel numbers
//!   `0x4000..=0x7FFF`: RFC 8656 narrowed the range to `0x4FFF`, but RFC 5766 clients such as
//!   coturn's pick numbers up to `0x7FFF`, and accepting them costs nothing); a 4-byte header (channel number, 16-bit data length) is followed by
//!   the data and, on streams, by zero to three padding bytes up to a multiple of 4.
//!
//! Anything else is a framing error: the stream cannot be resynchronised and the connection
//! must be closed. So is a frame longer than the configured limit, which is checked as soon
//! as the 4 bytes holding the length have arrived, before any memory is reserved for it.
//!
//! [`Framer`] owns one bounded buffer. The shell reads into [`Framer::read_buf`], reports
//! the count with [`Framer::commit`] (or copies bytes in with [`Framer::feed`]), then calls
//! [`Framer::next_frame`] until it returns `Ok(None)`. Frames borrow the buffer (no copy);
//! ChannelData padding is stripped from the yielded frame. The buffer starts small, grows
//! only to fit the largest frame actually seen (never past the limit plus padding) and is
//! reused, so the steady state allocates nothing.
//!
//! ```
//! use relay::framer::{write_channel_data, Frame, Framer};
//!
//! let mut wire = Vec::new();
//! write_channel_data(&mut wire, 0x4001, b"hello", true); // 4 + 5 + 3 padding bytes
//! let mut framer = Framer::new();
//! assert_eq!(framer.feed(&wire), wire.len());
//! match framer.next_frame().unwrap() {
//!     Some(Frame::ChannelData(frame)) => assert_eq!(frame.len(), 9),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert!(framer.next_frame().unwrap().is_none());
//! ```

/// Size of a STUN message header.
pub const STUN_HEADER_LEN: usize = 20;

/// Size of a ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Default limit on a frame's length (header included, ChannelData padding excluded):
/// 64 KiB plus a STUN header, which admits every frame a 16-bit length field can describe.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 + STUN_HEADER_LEN;

/// Default initial buffer size; the buffer grows past it only for larger frames.
pub const DEFAULT_INITIAL_CAPACITY: usize = 4096;

/// Smallest buffer the framer works with (enough for several small messages).
const MIN_CAPACITY: usize = 64;
/// Largest buffer [`Framer::grow`] asks for.
pub const MAX_READ_CAPACITY: usize = 64 * 1024;

/// Bytes needed to know a frame's length (both kinds keep it at offset 2..4).
const LENGTH_PREFIX_LEN: usize = 4;

/// One whole message cut from the stream, borrowed from the [`Framer`]'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole STUN message (header and attributes).
    Stun(&'a [u8]),
    /// A whole ChannelData message: 4-byte header and data, without the stream padding.
    ChannelData(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The whole message (for ChannelData: header + data, padding stripped).
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Frame::Stun(bytes) | Frame::ChannelData(bytes) => bytes,
        }
    }

    /// Which kind of message this is.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Stun(_) => FrameKind::Stun,
            Frame::ChannelData(_) => FrameKind::ChannelData,
        }
    }

    /// The channel number of a ChannelData message.
    pub fn channel(&self) -> Option<u16> {
        match *self {
            Frame::ChannelData(&[hi, lo, ..]) => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        }
    }

    /// The data of a ChannelData message (after the 4-byte header).
    pub fn channel_payload(&self) -> Option<&'a [u8]> {
        match *self {
            Frame::ChannelData(bytes) => bytes.get(CHANNEL_DATA_HEADER_LEN..),
            Frame::Stun(_) => None,
        }
    }
}

/// The two kinds of messages on a TURN stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A STUN message.
    Stun,
    /// A ChannelData message.
    ChannelData,
}

impl FrameKind {
    /// Classifies a frame by its first byte; `None` when it starts neither kind.
    pub fn from_first_byte(byte: u8) -> Option<Self> {
        match byte {
            0x00..=0x3F => Some(FrameKind::Stun),
            0x40..=0x7F => Some(FrameKind::ChannelData),
            _ => None,
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameKind::Stun => "STUN message",
            FrameKind::ChannelData => "ChannelData message",
        })
    }
}

/// What a frame's first 4 bytes say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// STUN or ChannelData.
    pub kind: FrameKind,
    /// Length of the frame as yielded: header plus body, padding excluded.
    pub len: usize,
    /// Bytes the frame occupies on the stream: `len` plus ChannelData padding.
    pub wire_len: usize,
}

/// A byte stream that cannot be cut into TURN messages; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte of a message is neither STUN (`0x00..=0x3F`) nor ChannelData
    /// (`0x40..=0x7F`).
    #[error(
        "invalid first byte {0:#04x}: neither a STUN message (0x00-0x3f) nor ChannelData (0x40-0x7f)"
    )]
    InvalidFirstByte(u8),
    /// A STUN length field that is not a multiple of 4.
    #[error("STUN message length {0} is not a multiple of 4")]
    UnalignedStunLength(u16),
    /// A length field announcing a frame larger than the configured limit.
    #[error("{kind} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Kind of the oversized frame.
        kind: FrameKind,
        /// Its announced length (header included, padding excluded).
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

/// Reads a frame's header from the start of `bytes`.
///
/// Returns `Ok(None)` while fewer than 4 bytes are present and no error can be told yet
/// (an invalid first byte is reported from a single byte on). Useful on its own to classify
/// the first bytes of a connection.
pub fn peek_header(bytes: &[u8], max_frame_len: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let kind = FrameKind::from_first_byte(first).ok_or(FrameError::InvalidFirstByte(first))?;
    let Some(&[_, _, hi, lo]) = bytes.get(..LENGTH_PREFIX_LEN) else {
        return Ok(None);
    };
    let field = u16::from_be_bytes([hi, lo]);
    let body = usize::from(field);
    let (len, wire_len) = match kind {
        FrameKind::Stun => {
            if field % 4 != 0 {
                return Err(FrameError::UnalignedStunLength(field));
            }
            let len = STUN_HEADER_LEN + body;
            (len, len)
        }
        FrameKind::ChannelData => {
            let len = CHANNEL_DATA_HEADER_LEN + body;
            (len, padded_len(len))
        }
    };
    if len > max_frame_len {
        return Err(FrameError::TooLong {
            kind,
            len,
            max: max_frame_len,
        });
    }
    Ok(Some(FrameHeader {
        kind,
        len,
        wire_len,
    }))
}

/// `len` rounded up to a multiple of 4 (cannot overflow for the lengths a 16-bit field
/// allows; saturates otherwise).
fn padded_len(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// Cuts a TURN client's byte stream into whole messages. See the [module docs](self).
///
/// Usage from an async shell:
///
/// ```ignore
/// loop {
///     let n = stream.read(framer.read_buf()).await?;
///     if n == 0 { break; } // EOF
///     framer.commit(n);
///     while let Some(frame) = framer.next_frame()? {
///         client.on_client(frame.as_bytes(), now, ports, &mut out);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Framer {
    /// Working memory; its length is the usable size (bytes past `end` are scratch).
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// End of the received bytes.
    end: usize,
    /// Bytes of the last yielded frame (padding included) still to drop from `start`.
    pending: usize,
    /// Size the buffer is allocated with, once first used.
    initial: usize,
    /// Limit on a frame's length, header included, padding excluded.
    max_frame_len: usize,
    /// A framing error is final: the stream cannot be resynchronised.
    failed: Option<FrameError>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer with the default limit ([`DEFAULT_MAX_FRAME_LEN`]) and initial buffer size
    /// ([`DEFAULT_INITIAL_CAPACITY`]). Allocates nothing until the first read.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_FRAME_LEN, DEFAULT_INITIAL_CAPACITY)
    }

    /// A framer that rejects frames longer than `max_frame_len` bytes (header included,
    /// ChannelData padding excluded; values below 20 would reject every STUN message) and
    /// starts with a buffer of `initial_capacity` bytes (at least 64).
    pub fn with_limits(max_frame_len: usize, initial_capacity: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            pending: 0,
            initial: initial_capacity.max(MIN_CAPACITY),
            max_frame_len,
            failed: None,
        }
    }

    /// The configured frame length limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Lets the buffer grow to `size` bytes (at most [`MAX_READ_CAPACITY`]) on the next
    /// [`Framer::read_buf`]. For a stream that fills every read: one read then takes many
    /// frames at once, while quiet streams keep the small initial buffer.
    pub fn grow(&mut self, size: usize) {
        self.initial = self.initial.max(size.min(MAX_READ_CAPACITY));
    }

    /// Current size of the internal buffer in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Received bytes not yet yielded as frames (a partial frame, or frames not yet taken
    /// with [`Framer::next_frame`]).
    pub fn buffered(&self) -> &[u8] {
        let start = self.start.saturating_add(self.pending).min(self.end);
        self.buf.get(start..self.end).unwrap_or_default()
    }

    /// True when no partial or unread frame is buffered (a clean place for the peer to stop).
    pub fn is_empty(&self) -> bool {
        self.buffered().is_empty()
    }

    /// Free space to read into; report the bytes written with [`Framer::commit`].
    ///
    /// Never empty after [`Framer::next_frame`] has returned `Ok(None)` (so a zero-byte read
    /// into it really means end of stream). When the header of a partial frame is known, the
    /// buffer is grown (once, up to the limit) so that the whole frame fits.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.drop_pending();
        let needed = match self.failed {
            Some(_) => 0,
            None => match peek_header(self.unread(), self.max_frame_len) {
                Ok(Some(header)) => header.wire_len,
                // Errors surface from next_frame; reserve nothing for them.
                Ok(None) | Err(_) => 0,
            },
        };
        let size = self.buf.len().max(self.initial).max(needed);
        if self.start.saturating_add(needed) > self.buf.len() || self.end >= self.buf.len() {
            self.compact();
        }
        if self.buf.len() < size {
            self.buf.reserve_exact(size - self.buf.len());
            self.buf.resize(size, 0);
        }
        let end = self.end;
        self.buf.get_mut(end..).unwrap_or_default()
    }

    /// Records that `n` bytes were written at the start of [`Framer::read_buf`]. Values
    /// larger than that slice are clamped to it.
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Same as [`Framer::read_buf`].
    pub fn spare(&mut self) -> &mut [u8] {
        self.read_buf()
    }

    /// Same as [`Framer::commit`].
    pub fn advance(&mut self, n: usize) {
        self.commit(n);
    }

    /// Copies as much of `data` as fits into the buffer and returns how many bytes it took.
    /// Take frames with [`Framer::next_frame`] until `Ok(None)` before feeding the rest; a
    /// partial frame always leaves room, so alternating the two always makes progress.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let space = self.read_buf();
        let n = space.len().min(data.len());
        if let (Some(dst), Some(src)) = (space.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.commit(n);
        n
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the framing error
    /// that must close the connection (every later call returns it again).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.drop_pending();
        let header = match peek_header(self.unread(), self.max_frame_len) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(err) => {
                self.failed = Some(err.clone());
                return Err(err);
            }
        };
        if self.end - self.start < header.wire_len {
            return Ok(None);
        }
        self.pending = header.wire_len;
        let Some(bytes) = self.buf.get(self.start..self.start + header.len) else {
            // Unreachable: `start + wire_len <= end <= buf.len()` and `len <= wire_len`.
            return Ok(None);
        };
        Ok(Some(match header.kind {
            FrameKind::Stun => Frame::Stun(bytes),
            FrameKind::ChannelData => Frame::ChannelData(bytes),
        }))
    }

    /// The received bytes not yet consumed (`pending` must have been dropped).
    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Drops the frame yielded last; rewinds to the buffer start when nothing is left.
    fn drop_pending(&mut self) {
        self.start = self.start.saturating_add(self.pending).min(self.end);
        self.pending = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Moves the unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Why [`try_write_channel_data`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Channel numbers are `0x4000..=0x7FFF` (RFC 5766; RFC 8656 uses the lower part).
    #[error("channel number {0:#06x} is outside 0x4000-0x7fff")]
    InvalidChannel(u16),
    /// The length field has 16 bits.
    #[error("ChannelData payload of {0} bytes exceeds 65535 bytes")]
    PayloadTooLong(usize),
}

/// Appends a ChannelData message (header + `data`) to `out`, padded to a multiple of 4 with
/// zero bytes when `stream` is true (TCP/TLS, RFC 8656 §12.5); no padding on UDP.
///
/// # Panics
///
/// If `data` is longer than 65535 bytes, which no UDP datagram can be. Use
/// [`try_write_channel_data`] when the length is not bounded that way.
// The documented panic above is this function's contract (callers hand it UDP-sized
// payloads); `try_write_channel_data` is the checked form.
#[allow(clippy::expect_used)]
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, data: &[u8], stream: bool) {
    let len = u16::try_from(data.len()).expect("ChannelData payload longer than 65535 bytes");
    put_channel_data(out, channel, len, data, stream);
}

/// Like [`write_channel_data`], but checks the channel number and the payload length
/// instead of trusting the caller, and appends nothing on error.
pub fn try_write_channel_data(
    out: &mut Vec<u8>,
    channel: u16,
    data: &[u8],
    stream: bool,
) -> Result<(), WriteError> {
    if !(0x4000..=0x7FFF).contains(&channel) {
        return Err(WriteError::InvalidChannel(channel));
    }
    let len = u16::try_from(data.len()).map_err(|_| WriteError::PayloadTooLong(data.len()))?;
    put_channel_data(out, channel, len, data, stream);
    Ok(())
}

fn put_channel_data(out: &mut Vec<u8>, channel: u16, len: u16, data: &[u8], stream: bool) {
    let frame_len = CHANNEL_DATA_HEADER_LEN + data.len();
    let padding = if stream {
        padded_len(frame_len) - frame_len
    } else {
        0
    };
    out.reserve(frame_len + padding);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + padding, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_widens_reads_up_to_the_cap() {
        let mut f = Framer::new();
        assert_eq!(f.read_buf().len(), DEFAULT_INITIAL_CAPACITY);
        f.grow(16 * 1024);
        assert_eq!(f.read_buf().len(), 16 * 1024);
        f.grow(usize::MAX);
        assert_eq!(f.read_buf().len(), MAX_READ_CAPACITY);
        f.grow(1);
        assert_eq!(f.read_buf().len(), MAX_READ_CAPACITY, "never shrinks");
    }
    use stun_types::message::{
        Message, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId, BINDING,
    };
    use turn_types::channel::ChannelData;

    /// Owned copy of a frame, for comparing decode runs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Stun(Vec<u8>),
        ChannelData(Vec<u8>),
    }

    fn own(frame: Frame<'_>) -> Owned {
        match frame {
            Frame::Stun(b) => Owned::Stun(b.to_vec()),
            Frame::ChannelData(b) => Owned::ChannelData(b.to_vec()),
        }
    }

    /// Takes every available frame.
    fn drain(framer: &mut Framer, frames: &mut Vec<Owned>) -> Result<(), FrameError> {
        while let Some(frame) = framer.next_frame()? {
            frames.push(own(frame));
        }
        Ok(())
    }

    /// Feeds `chunks` in order, draining after each, and returns the frames.
    fn decode_chunks<'a>(
        framer: &mut Framer,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Owned>, FrameError> {
        let mut frames = Vec::new();
        for chunk in chunks {
            let mut rest = chunk;
            loop {
                let n = framer.feed(rest);
                rest = &rest[n..];
                drain(framer, &mut frames)?;
                if rest.is_empty() {
                    break;
                }
                assert!(n > 0, "no progress");
            }
        }
        Ok(frames)
    }

    fn stun_message(attrs: usize) -> Vec<u8> {
        let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
        // SOFTWARE attributes of varying length exercise attribute padding.
        for i in 0..attrs {
            let text = "x".repeat(i + 1);
            let sw = stun_types::attribute::Software::new(&text).unwrap();
            msg.add_attribute(&sw).unwrap();
        }
        msg.add_fingerprint().unwrap();
        let bytes = msg.finish();
        assert!(Message::from_bytes(&bytes).is_ok());
        bytes
    }

    fn channel_data(channel: u16, len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0xA5).collect();
        let mut out = Vec::new();
        write_channel_data(&mut out, channel, &payload, true);
        out
    }

    /// A mixed stream and the frames it must decode to.
    fn mixed_stream() -> (Vec<u8>, Vec<Owned>) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let push_stun = |wire: &mut Vec<u8>, expected: &mut Vec<Owned>, msg: Vec<u8>| {
            wire.extend_from_slice(&msg);
            expected.push(Owned::Stun(msg));
        };
        let push_cd = |wire: &mut Vec<u8>, expected: &mut Vec<Owned>, ch: u16, len: usize| {
            let bytes = channel_data(ch, len);
            expected.push(Owned::ChannelData(bytes[..4 + len].to_vec()));
            wire.extend_from_slice(&bytes);
        };
        push_stun(&mut wire, &mut expected, stun_message(0));
        push_cd(&mut wire, &mut expected, 0x4000, 1);
        push_cd(&mut wire, &mut expected, 0x4FFF, 0);
        push_stun(&mut wire, &mut expected, stun_message(3));
        push_cd(&mut wire, &mut expected, 0x4123, 7);
        push_cd(&mut wire, &mut expected, 0x4001, 100);
        push_stun(&mut wire, &mut expected, stun_message(1));
        push_cd(&mut wire, &mut expected, 0x4002, 2);
        (wire, expected)
    }

    #[test]
    fn channel_data_round_trips_every_small_length() {
        for len in 0..=16usize {
            let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7)).collect();
            let mut wire = Vec::new();
            write_channel_data(&mut wire, 0x4abc, &payload, true);
            assert_eq!(wire.len() % 4, 0, "len {len}: not padded");
            assert_eq!(wire.len(), (4 + len).div_ceil(4) * 4);
            assert!(wire[4 + len..].iter().all(|&b| b == 0), "padding not zero");

            let mut framer = Framer::new();
            assert_eq!(framer.feed(&wire), wire.len());
            let frame = framer.next_frame().unwrap().expect("a whole frame");
            assert_eq!(frame.kind(), FrameKind::ChannelData);
            assert_eq!(frame.as_bytes().len(), 4 + len, "padding must be stripped");
            assert_eq!(frame.channel(), Some(0x4abc));
            assert_eq!(frame.channel_payload(), Some(&payload[..]));
            let parsed = ChannelData::parse(frame.as_bytes()).unwrap();
            assert_eq!(parsed.id(), 0x4abc);
            assert_eq!(parsed.data(), &payload[..]);
            assert!(framer.next_frame().unwrap().is_none());
            assert!(framer.is_empty());

            // Without padding (UDP) the message is exactly header + payload.
            let mut dgram = Vec::new();
            write_channel_data(&mut dgram, 0x4abc, &payload, false);
            assert_eq!(dgram, wire[..4 + len]);
        }
    }

    #[test]
    fn try_write_checks_channel_and_length() {
        let mut out = Vec::new();
        assert_eq!(
            try_write_channel_data(&mut out, 0x3FFF, b"x", true),
            Err(WriteError::InvalidChannel(0x3FFF))
        );
        assert_eq!(
            try_write_channel_data(&mut out, 0x8000, b"x", true),
            Err(WriteError::InvalidChannel(0x8000))
        );
        let big = vec![0; 65536];
        assert_eq!(
            try_write_channel_data(&mut out, 0x4000, &big, true),
            Err(WriteError::PayloadTooLong(65536))
        );
        assert!(out.is_empty());
        try_write_channel_data(&mut out, 0x4000, &big[..65535], true).unwrap();
        assert_eq!(out.len(), 4 + 65535 + 1);
    }

    #[test]
    fn several_messages_in_one_read() {
        let (wire, expected) = mixed_stream();
        let mut framer = Framer::new();
        let buf = framer.read_buf();
        assert!(buf.len() >= wire.len());
        buf[..wire.len()].copy_from_slice(&wire);
        framer.commit(wire.len());
        let mut frames = Vec::new();
        drain(&mut framer, &mut frames).unwrap();
        assert_eq!(frames, expected);
        assert!(framer.is_empty());
    }

    #[test]
    fn every_cut_point_decodes_identically() {
        let (wire, expected) = mixed_stream();
        let whole = decode_chunks(&mut Framer::new(), [&wire[..]]).unwrap();
        assert_eq!(whole, expected);

        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            let got = decode_chunks(&mut Framer::new(), [a, b]).unwrap();
            assert_eq!(got, expected, "cut at {cut}");
        }

        let mut framer = Framer::new();
        let got = decode_chunks(&mut framer, wire.chunks(1)).unwrap();
        assert_eq!(got, expected, "byte by byte");
        assert!(framer.is_empty());
    }

    #[test]
    fn small_buffer_grows_only_to_the_frame_and_is_reused() {
        let (wire, expected) = mixed_stream();
        // A tiny initial buffer forces compaction and growth for the larger frames.
        let mut framer = Framer::with_limits(DEFAULT_MAX_FRAME_LEN, 1);
        for round in 0..3 {
            let got = decode_chunks(&mut framer, wire.chunks(13)).unwrap();
            assert_eq!(got, expected, "round {round}");
        }
        let largest = expected
            .iter()
            .map(|f| match f {
                Owned::Stun(b) | Owned::ChannelData(b) => padded_len(b.len()),
            })
            .max()
            .unwrap();
        assert!(framer.capacity() <= largest.max(MIN_CAPACITY));
    }

    #[test]
    fn largest_frames_fit_the_default_limit() {
        let mut wire = Vec::new();
        write_channel_data(&mut wire, 0x4000, &vec![1; 65535], true);
        let mut stun = vec![0u8; 20 + 65532];
        stun[0] = 0x00;
        stun[1] = 0x01;
        stun[2..4].copy_from_slice(&65532u16.to_be_bytes());
        wire.extend_from_slice(&stun);
        let frames = decode_chunks(&mut Framer::new(), wire.chunks(1000)).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(matches!(&frames[0], Owned::ChannelData(b) if b.len() == 65539));
        assert_eq!(frames[1], Owned::Stun(stun));
    }

    #[test]
    fn oversized_length_fails_after_header_without_reserving() {
        let max = 1500;
        for header in [[0x40, 0x01, 0xFF, 0xFF], [0x00, 0x03, 0x05, 0xDC]] {
            let mut framer = Framer::with_limits(max, 256);
            // Three bytes: the length is not known yet.
            assert_eq!(framer.feed(&header[..3]), 3);
            assert_eq!(framer.next_frame(), Ok(None));
            assert_eq!(framer.feed(&header[3..]), 1);
            let err = framer.next_frame().unwrap_err();
            assert!(
                matches!(err, FrameError::TooLong { max: 1500, .. }),
                "{err}"
            );
            // Reading on does not reserve the announced size either.
            let _ = framer.read_buf();
            assert!(framer.capacity() < 1500, "capacity {}", framer.capacity());
            // The error is final.
            framer.feed(&[0; 16]);
            assert_eq!(framer.next_frame().unwrap_err(), err);
        }
        // The exact limit is accepted.
        let mut framer = Framer::with_limits(24, 64);
        let mut wire = Vec::new();
        write_channel_data(&mut wire, 0x4000, &[9; 20], true);
        framer.feed(&wire);
        assert_eq!(framer.next_frame().unwrap().unwrap().as_bytes().len(), 24);
        let mut framer = Framer::with_limits(23, 64);
        framer.feed(&wire);
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::TooLong {
                kind: FrameKind::ChannelData,
                len: 24,
                max: 23
            })
        );
    }

    #[test]
    fn garbage_first_byte_fails_immediately() {
        for first in [0x80u8, 0x16 + 0x40 * 2, 0xFF, 0xC0] {
            let mut framer = Framer::new();
            framer.feed(&[first]);
            assert_eq!(
                framer.next_frame(),
                Err(FrameError::InvalidFirstByte(first))
            );
        }
        // After a valid frame, too.
        let mut framer = Framer::new();
        let mut wire = stun_message(0);
        wire.push(0x90);
        framer.feed(&wire);
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stun(_)))));
        assert_eq!(framer.next_frame(), Err(FrameError::InvalidFirstByte(0x90)));
        assert_eq!(
            FrameError::InvalidFirstByte(0x80).to_string(),
            "invalid first byte 0x80: neither a STUN message (0x00-0x3f) nor ChannelData (0x40-0x7f)"
        );
    }

    #[test]
    fn unaligned_stun_length_fails() {
        let mut framer = Framer::new();
        framer.feed(&[0x00, 0x01, 0x00, 0x05]);
        assert_eq!(framer.next_frame(), Err(FrameError::UnalignedStunLength(5)));
    }

    #[test]
    fn stun_frames_parse_with_stun_types() {
        let msg = stun_message(2);
        let id = Message::from_bytes(&msg).unwrap().transaction_id();
        let mut framer = Framer::new();
        framer.feed(&msg);
        let frame = framer.next_frame().unwrap().unwrap();
        let parsed = Message::from_bytes(frame.as_bytes()).unwrap();
        assert_eq!(parsed.transaction_id(), id);
        assert_ne!(id, TransactionId::generate());
    }

    #[test]
    fn read_buf_is_never_empty_after_none() {
        let (wire, _) = mixed_stream();
        let mut framer = Framer::with_limits(DEFAULT_MAX_FRAME_LEN, 64);
        for &byte in &wire {
            let buf = framer.read_buf();
            assert!(!buf.is_empty());
            buf[0] = byte;
            framer.commit(1);
            while framer.next_frame().unwrap().is_some() {}
        }
        assert!(framer.is_empty());
        // Over-committing is clamped, not a panic.
        let len = framer.read_buf().len();
        framer.commit(usize::MAX);
        assert_eq!(framer.buffered().len(), len);
    }

    #[test]
    fn peek_header_reports_lengths() {
        assert_eq!(peek_header(&[], 100), Ok(None));
        assert_eq!(peek_header(&[0x41, 0x00], 100), Ok(None));
        assert_eq!(
            peek_header(&[0x41, 0x00, 0x00, 0x05], 100),
            Ok(Some(FrameHeader {
                kind: FrameKind::ChannelData,
                len: 9,
                wire_len: 12
            }))
        );
        assert_eq!(
            peek_header(&[0x01, 0x01, 0x00, 0x08], 100),
            Ok(Some(FrameHeader {
                kind: FrameKind::Stun,
                len: 28,
                wire_len: 28
            }))
        );
    }
}
