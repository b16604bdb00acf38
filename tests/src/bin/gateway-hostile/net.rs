//! Raw network helpers of the attacker: HTTP/1.1 from a chosen loopback source, STUN
//! messages built by hand (valid, malformed, oversized), a small PRNG.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use gateway_tests::http::Resp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bound on one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request (`Connection: close`).
pub struct HttpReq {
    pub addr: SocketAddr,
    pub src: Option<Ipv4Addr>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReq {
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self {
            addr,
            src: None,
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }
    pub fn from(mut self, src: Ipv4Addr) -> Self {
        self.src = Some(src);
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: Vec<u8>) -> Self {
        self.body = b;
        self
    }
}

/// A TCP connection to `addr` from `src` (port chosen by the OS).
pub async fn connect_from(src: Option<Ipv4Addr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    match src {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
            sock.connect(addr).await
        }
    }
}

/// Sends `req`, reads the response to EOF; bounded by [`HTTP_TIMEOUT`].
pub async fn http(req: HttpReq) -> Result<Resp, String> {
    let run = async {
        let mut s = connect_from(req.src, req.addr).await?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            req.method,
            req.path,
            req.addr,
            req.body.len()
        );
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        // A server may answer (400, 413) before reading the whole body.
        let _ = s.write_all(&req.body).await;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "{} {}: no response in {HTTP_TIMEOUT:?}",
                req.method, req.path
            )
        })?
        .map_err(|e| format!("{} {}: {e}", req.method, req.path))?;
    Resp::parse(&raw).ok_or_else(|| {
        format!(
            "{} {}: no HTTP response ({} bytes)",
            req.method,
            req.path,
            raw.len()
        )
    })
}

/// Whether an error body shows internal state: a parser's pointer offsets or any hex
/// address.
pub fn leaks_internal_state(text: &str) -> bool {
    text.contains("PointerOffset")
        || text
            .match_indices("0x")
            .any(|(i, _)| text[i + 2..].starts_with(|c: char| c.is_ascii_hexdigit()))
}

/// xorshift64*: test traffic, not cryptography.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self((seed ^ t) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// A STUN header of `msg_type` announcing `len` bytes of attributes, random transaction id.
fn header(rng: &mut Rng, msg_type: u16, len: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + len as usize);
    m.extend_from_slice(&msg_type.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&MAGIC);
    let mut tid = [0u8; 12];
    rng.fill(&mut tid);
    m.extend_from_slice(&tid);
    m
}

/// A valid Binding request without attributes.
pub fn binding(rng: &mut Rng) -> Vec<u8> {
    header(rng, 0x0001, 0)
}

/// A Binding request carrying `n` distinct unknown comprehension-required attributes
/// (types 0x2000.., empty values): 20 + 4n bytes.
pub fn binding_with_unknown_attrs(rng: &mut Rng, n: u16) -> Vec<u8> {
    let mut m = header(rng, 0x0001, n * 4);
    for i in 0..n {
        m.extend_from_slice(&(0x2000 + i).to_be_bytes());
        m.extend_from_slice(&0u16.to_be_bytes());
    }
    m
}

/// The `i`-th of several malformed STUN messages (each a whole frame by its header's length
/// field, so a stream parser stays in step): an attribute overrunning the message, a
/// length that is not a multiple of 4, a truncated XOR-MAPPED-ADDRESS, a bad FINGERPRINT.
pub fn malformed(rng: &mut Rng, i: usize) -> Vec<u8> {
    match i % 4 {
        0 => {
            // USERNAME claiming 200 bytes in an 8-byte body.
            let mut m = header(rng, 0x0003, 8);
            m.extend_from_slice(&[0x00, 0x06, 0x00, 0xC8, b'a', b'b', b'c', b'd']);
            m
        }
        1 => {
            let mut m = header(rng, 0x0001, 6);
            m.extend_from_slice(&[0x80, 0x22, 0x00, 0x02, b'x', b'y']);
            m
        }
        2 => {
            // XOR-PEER-ADDRESS with family 7 and a 3-byte value (padded).
            let mut m = header(rng, 0x0008, 8);
            m.extend_from_slice(&[0x00, 0x12, 0x00, 0x03, 0x00, 0x07, 0x12, 0x00]);
            m
        }
        _ => {
            // FINGERPRINT that does not match, then another attribute after it.
            let mut m = header(rng, 0x0001, 16);
            m.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]);
            m.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'a', b'b', b'c', b'd']);
            m
        }
    }
}
