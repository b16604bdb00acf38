//! Fuzzes the shared port's demultiplexer and the gateway's HTTP handling behind it: the
//! first-bytes sniffing of relay/src/io/listener.rs (`relay::io::sniff`, applied to the
//! first byte of a connection and to the first plaintext byte inside TLS) and, for what it
//! calls HTTP, the gateway's HTTP server as it serves a connection handed off by the relay
//! (`gateway::http::serve_connection`: hyper with the gateway's settings, the request
//! deadline, CORS, the API token check, the web page, metrics and the signaling routes,
//! all with their extractors), over an in-memory stream.
//!
//! Input: the bytes a client sends on a fresh connection, then end of stream.
//!
//! Checks: nothing panics (a panic in a handler task aborts the fuzzer); `sniff` agrees with
//! an independent table of what may open a connection; the HTTP server answers within a
//! bounded time and bounded bytes, with well-formed status lines only; a response never
//! carries a heap address, and the credentials endpoint never answers 200 without the
//! token.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;
use relay::io::{sniff, Sniffed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest response read back (the web page is the largest body, ~30 KB).
const MAX_RESPONSE: usize = 4 << 20;
const TOKEN: &str = "fuzz-api-token-0123456789";

/// What may open a connection on the shared port, written from the RFCs rather than from
/// the listener: a TLS handshake record (content type 22), a STUN message (first two bits
/// zero; a TURN client's first message is a request, never ChannelData), an HTTP/1.1
/// request line (methods are upper-case tokens, RFC 9110 §9; the gateway serves only
/// registered upper-case methods).
fn reference(first: u8) -> Sniffed {
    if first == 22 {
        Sniffed::Tls
    } else if first >> 6 == 0 && first < 4 {
        Sniffed::Turn
    } else if first.is_ascii_uppercase() {
        Sniffed::Http
    } else {
        Sniffed::Unknown
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    limits: Arc<relay::io::ConnectionLimits>,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let cli = gateway::config::Cli::try_parse_from([
            "gateway",
            "--turn-secret",
            "fuzz-secret-0123456789abcdef",
        ])
        .expect("settings");
        let ring = auth::SecretRing::parse("fuzz-secret-0123456789abcdef").expect("secret");
        let shared = relay::core::Shared::new(
            relay::core::Config::default(),
            ring,
            relay::core::PeerPolicy::default(),
            relay::core::NonceKey::random(),
        );
        let app = Arc::new(gateway::app::App::new(cli.settings, shared, None));
        let cors =
            gateway::signaling::cors::layer(Some("https://viewer.example")).expect("cors setting");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let router = {
            let _guard = rt.enter();
            gateway::http::router(app, cors, Some(TOKEN.to_owned()))
        };
        Server {
            rt,
            router,
            limits: relay::io::ConnectionLimits::new(1024, 1024),
        }
    })
}

fn check_response(input: &[u8], out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.contains("PointerOffset") && !text.contains("0x7f"),
        "heap address in {text:?}"
    );
    // Every answer starts with a status line (HTTP/1.0 for a 1.0 request).
    if !out.is_empty() {
        assert!(
            out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "not a status line: {:?}",
            &text[..text.len().min(80)]
        );
    }
    // The first request asks for TURN credentials without the token: the first answer is no
    // 200 (pipelined requests after it may be anything).
    let first_line = input.split(|b| *b == b'\n').next().unwrap_or_default();
    let has_token = input.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
    if first_line.starts_with(b"GET /api/v1/turn/credentials") && !has_token {
        assert!(
            !out.starts_with(b"HTTP/1.1 200") && !out.starts_with(b"HTTP/1.0 200"),
            "credentials handed out without the token: {:?}",
            &text[..text.len().min(300)]
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(&first) = data.first() else {
        return;
    };
    let kind = sniff(first);
    assert_eq!(kind, reference(first), "byte 0x{first:02x}");
    if kind != Sniffed::Http {
        return;
    }
    let s = server();
    let remote = SocketAddr::from(([192, 0, 2, 1], 40000));
    let out = s.rt.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        gateway::http::serve_connection(server_side, remote, false, s.router.clone(), &s.limits);
        let io = async {
            client.write_all(data).await?;
            client.shutdown().await?;
            let mut out = Vec::new();
            (&mut client)
                .take(MAX_RESPONSE as u64)
                .read_to_end(&mut out)
                .await?;
            Ok::<_, std::io::Error>(out)
        };
        tokio::time::timeout(Duration::from_secs(15), io).await
    });
    let out = out.expect("the HTTP server did not finish within 15 s");
    // The server may reset a connection it gives up on; that is an answer too.
    if let Ok(out) = out {
        assert!(out.len() < MAX_RESPONSE, "unbounded response");
        check_response(data, &out);
    }
});
