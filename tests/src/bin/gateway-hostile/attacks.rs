//! The attacks of issue 14, each bounded in count and time, from 127.0.0.0/8 only.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::net::{self, connect_from, http, leaks_internal_state, HttpReq, Rng};
use crate::{Ctx, Outcome, API_TOKEN};

type Attack = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// Every attack, in the order they run, with the RSS slack (MB) it may leave behind.
pub const ALL: &[(&str, f64, Attack)] = &[
    ("stalled-bodies", 120.0, |cx| Box::pin(stalled_bodies(cx))),
    // The same again: what the first round took must have gone back, and go back again.
    ("stalled-bodies-again", 120.0, |cx| {
        Box::pin(stalled_bodies(cx))
    }),
    ("udp-garbage", 24.0, |cx| Box::pin(udp_garbage(cx))),
    ("anonymous-minting", 24.0, |cx| {
        Box::pin(anonymous_minting(cx))
    }),
    ("unknown-attrs-64k", 24.0, |cx| Box::pin(unknown_attrs(cx))),
    ("malformed-stun", 24.0, |cx| Box::pin(malformed_stun(cx))),
    ("big-sdp-trickle", 24.0, |cx| {
        Box::pin(big_sdp_and_trickle(cx))
    }),
    ("sdp-parse-errors", 24.0, |cx| {
        Box::pin(sdp_parse_errors(cx))
    }),
    ("forged-rtp", 24.0, |cx| Box::pin(forged_rtp(cx))),
];

fn src(c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, c, d)
}

/// Bound on everything one attack waits for.
const WAIT: Duration = Duration::from_secs(25);

// --- 1. stalled HTTP bodies ---------------------------------------------------------------

/// Stalled connections per source address, to the HTTP port and to the TURN port (HTTP
/// handed off from it): together the per-address cap (`HTTP_MAX_CONNECTIONS_PER_IP`, 2,048),
/// and from four addresses the whole total (`HTTP_MAX_CONNECTIONS`, 8,192), the issue's scale.
const STALLED_HTTP: usize = 2000;
const STALLED_TURN: usize = 48;
const STALLED_SOURCES: u8 = 4;
/// Connections being opened at once.
const STALLED_IN_FLIGHT: usize = 256;
/// The gateway's default `HTTP_MAX_CONNECTIONS` (the suite does not change it).
const HTTP_MAX_CONNECTIONS: f64 = 8192.0;

async fn stalled_bodies(cx: &Ctx) -> Outcome {
    stalled_bodies_n(cx, STALLED_HTTP, STALLED_TURN).await
}

/// Heads announcing a body that never comes, from four addresses, on both ports, until the
/// HTTP connections are full; meanwhile /health and a config request from another address
/// must still be answered promptly (the gateway sheds the busiest address's oldest
/// connection to make room); every stalled connection must be closed by the gateway within
/// its request timeout (10 s) plus slack.
async fn stalled_bodies_n(cx: &Ctx, per_http: usize, per_turn: usize) -> Outcome {
    let mut out = Outcome::default();
    let shed0 = cx.metric("gateway_http_connections_shed_total", "").await;
    // Opened STALLED_IN_FLIGHT at a time: one by one, 8,192 connections took longer than
    // the gateway's 10 s request timeout on a slow machine, so the first were closed before
    // the last were open and the total never filled.
    let t0 = Instant::now();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(STALLED_IN_FLIGHT));
    let mut opening = JoinSet::new();
    for s in 0..STALLED_SOURCES {
        let from = src(0, 2 + s);
        for (addr, n) in [(cx.http, per_http), (cx.turn, per_turn)] {
            for i in 0..n {
                out.tried += 1;
                let (path, ctype) = if i % 2 == 0 {
                    ("/whep", "application/sdp")
                } else {
                    ("/api/v1/projects/x/offer", "application/json")
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: {ctype}\r\n\
                     Content-Length: 30000\r\n\r\nv=0\r\n"
                );
                let in_flight = in_flight.clone();
                opening.spawn(async move {
                    let _permit = in_flight.acquire_owned().await.ok()?;
                    tokio::time::timeout(Duration::from_secs(2), async {
                        let mut c = connect_from(Some(from), addr).await?;
                        c.write_all(head.as_bytes()).await?;
                        std::io::Result::Ok(c)
                    })
                    .await
                    .ok()?
                    .ok()
                });
            }
        }
    }
    let mut conns: Vec<TcpStream> = Vec::new();
    while let Some(r) = opening.join_next().await {
        match r {
            Ok(Some(c)) => conns.push(c),
            // Refused at accept (per-address or total cap) or reset: refused.
            _ => out.refused += 1,
        }
    }
    let opened_in = t0.elapsed();
    // The gateway accepts what the kernel queued: wait (bounded) until every place is taken,
    // so that what follows is answered from a full server.
    let mut open = 0.0;
    let full = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            open = cx.metric("gateway_http_connections", "").await;
            if open >= HTTP_MAX_CONNECTIONS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();
    out.check(full, || {
        format!("the stalled connections never filled HTTP_MAX_CONNECTIONS ({open} open)")
    });
    // Signaling still answers while they hang.
    let mut slowest = Duration::ZERO;
    for path in ["/health", "/api/v1/webrtc/config", "/health"] {
        let t0 = Instant::now();
        let r = http(HttpReq::get(cx.http, path)).await;
        let took = t0.elapsed();
        slowest = slowest.max(took);
        out.check(
            r.as_ref().is_ok_and(|r| r.status == 200) && took < Duration::from_secs(2),
            || format!("{path} during the stall: {r:?} in {took:?}"),
        );
    }
    // The total was full, so answering them took places from the attackers.
    let shed = cx.metric("gateway_http_connections_shed_total", "").await - shed0;
    out.check(shed >= 1.0, || {
        format!("no connection was shed for the signaling requests (shed {shed})")
    });
    // Every stalled connection is closed by the gateway (408 or EOF) within the bound.
    let held = conns.len();
    let mut set = JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            let mut buf = [0u8; 1024];
            tokio::time::timeout(WAIT, async {
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .is_ok()
        });
    }
    let mut closed = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap_or(false) {
            closed += 1;
        }
    }
    out.refused += closed;
    out.check(closed == held as u64, || {
        format!(
            "{} of {held} stalled connections still open after {WAIT:?}",
            held as u64 - closed
        )
    });
    out.note = format!(
        "({held} held open, opened in {opened_in:.1?}, {shed} shed to make room, all closed \
         by the gateway; slowest signaling answer meanwhile {slowest:.0?})"
    );
    out
}

// --- 2. UDP garbage from many sources -----------------------------------------------------

const UDP_SOURCES: u8 = 200;
const UDP_SOCKETS_PER_SOURCE: usize = 5;
const UDP_ROUNDS: usize = 40;

/// 8-byte garbage datagrams from 1,000 ports on 200 addresses to TURN_UDP_LISTEN, plus one
/// real Binding per port: garbage makes no client, Bindings are answered, the clients time
/// out.
async fn udp_garbage(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let bad0 = cx.metric("turn_bad_input_total", "").await;
    let mut socks = Vec::new();
    for a in 0..UDP_SOURCES {
        for _ in 0..UDP_SOCKETS_PER_SOURCE {
            match UdpSocket::bind(SocketAddr::from((src(1, 10 + a), 0))).await {
                Ok(s) => socks.push(s),
                Err(e) => {
                    out.failures.push(format!("bind a loopback source: {e}"));
                    return out;
                }
            }
        }
    }
    let drops0 = udp_rcvbuf_errors();
    let mut rng = Rng::new(2);
    let mut garbage = 0u64;
    // 40 rounds of one datagram per port, 100 datagrams every 20 ms (5,000/s).
    for _ in 0..UDP_ROUNDS {
        for chunk in socks.chunks(100) {
            let t0 = Instant::now();
            for s in chunk {
                let mut g = [0u8; 8];
                rng.fill(&mut g);
                g[0] |= 0x80; // never a STUN first byte
                if s.send_to(&g, cx.turn_udp).await.is_ok() {
                    garbage += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(20).saturating_sub(t0.elapsed())).await;
        }
    }
    let kernel_drops = udp_rcvbuf_errors().saturating_sub(drops0);
    // Then one real Binding per port, 100 at a time: each is answered.
    let bindings = socks.len() as u64;
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    for chunk in socks.chunks(100) {
        for s in chunk {
            let _ = s.send_to(&net::binding(&mut rng), cx.turn_udp).await;
        }
        for s in chunk {
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await
            {
                answered += 1;
            }
        }
    }
    let clients = cx.metric("turn_udp_clients", "").await;
    let bad = cx.metric("turn_bad_input_total", "").await - bad0;
    out.tried = garbage + bindings;
    out.refused = bad as u64;
    out.check(clients <= bindings as f64, || {
        format!("{clients} UDP clients for {bindings} Bindings: garbage made clients")
    });
    out.check(answered == bindings, || {
        format!("{answered} of {bindings} Bindings answered after the garbage")
    });
    // The clients the Bindings made time out (unauthenticated), none is left.
    let gone = crate::until(WAIT, || async {
        cx.metric("turn_udp_clients", "").await == 0.0
    })
    .await;
    out.check(gone, || {
        "UDP clients left after the unauthenticated timeout".into()
    });
    out.note = format!(
        "({garbage} garbage datagrams from {} ports, counted as bad input {bad}, dropped by the kernel (UDP RcvbufErrors) {kernel_drops}; \
         then {answered}/{bindings} Bindings answered, {clients} UDP clients, none left after the timeout)",
        socks.len()
    );
    out
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer (this network
/// namespace, all sockets).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

// --- 3. anonymous credential minting and config floods -----------------------------------

/// Source addresses of the config flood, and the gateway's SESSION_PENDING_PER_SOURCE.
const CONFIG_SOURCES: u32 = 20;
const PENDING_PER_SOURCE: u32 = 64;

async fn anonymous_minting(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    // (a) The REST endpoint without the token, from 20 addresses, for 11 names.
    let mut set = JoinSet::new();
    for i in 0..1000u32 {
        let addr = cx.http;
        set.spawn(async move {
            let mut req = HttpReq::get(
                addr,
                &format!(
                    "/api/v1/turn/credentials?service=turn&username=victim{}",
                    i % 11
                ),
            )
            .from(src(2, 10 + (i % 20) as u8));
            match i % 3 {
                0 => {}
                1 => req = req.header("Authorization", "Bearer guess-0123456789abcdef"),
                _ => req = req.header("Authorization", &format!("Basic {API_TOKEN}")),
            }
            http(req).await.map(|r| r.status)
        });
        if set.len() >= 16 {
            collect_status(&mut set, &mut out, &[401]).await;
        }
    }
    while !set.is_empty() {
        collect_status(&mut set, &mut out, &[401]).await;
    }
    let minted_anonymously = out.tried - out.refused;
    // (b) A config flood from 50 addresses: sessions (and their credentials) are bounded per
    // source and in total.
    let sessions0 = cx.metric("gateway_sessions_active", "").await;
    let mut configs = Vec::new();
    let mut flood = (0u64, 0u64);
    let mut set = JoinSet::new();
    for i in 0..2000u32 {
        let addr = cx.http;
        set.spawn(async move {
            http(
                HttpReq::get(addr, "/api/v1/webrtc/config")
                    .from(src(3, 10 + (i % CONFIG_SOURCES) as u8)),
            )
            .await
        });
        while set.len() >= 16 || (i == 1999 && !set.is_empty()) {
            if let Some(r) = set.join_next().await {
                flood.0 += 1;
                match r.ok().and_then(Result::ok) {
                    Some(r) if r.status == 200 => {
                        // The last ones are the sessions the flood left alive.
                        configs.push(r.json());
                        if configs.len() > 11 {
                            configs.remove(0);
                        }
                    }
                    _ => flood.1 += 1,
                }
            }
        }
    }
    out.tried += flood.0;
    out.refused += flood.1;
    let sessions = cx.metric("gateway_sessions_active", "").await;
    let cap = sessions0 + f64::from(CONFIG_SOURCES * PENDING_PER_SOURCE);
    out.check(sessions <= cap, || {
        format!(
            "config flood: {sessions} sessions (cap {cap}), {} refused",
            flood.1
        )
    });
    // (c) Eleven minted sessions try to take relay ports: each may hold its quota only.
    let mut held = Vec::new();
    let (mut allocs, mut alloc_refused) = (0u64, 0u64);
    for (k, cfg) in configs.iter().enumerate() {
        let Some(server) = cfg["iceServers"].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["username"].is_string() && s["credential"].is_string())
        }) else {
            out.failures.push(format!("no credential in {cfg}"));
            continue;
        };
        let user = server["username"].as_str().unwrap_or_default();
        let pass = server["credential"].as_str().unwrap_or_default();
        for _ in 0..12 {
            out.tried += 1;
            let c = async {
                let s = connect_from(Some(src(4, 10 + k as u8)), cx.turn)
                    .await
                    .map_err(|e| e.to_string())?;
                let (l, r) = (s.local_addr().map_err(|e| e.to_string())?, cx.turn);
                let mut c = gateway_tests::TurnClient::over(Box::new(s), l, r);
                c.allocate(user, pass).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            };
            match tokio::time::timeout(Duration::from_secs(5), c).await {
                Ok(Ok(c)) => {
                    allocs += 1;
                    held.push(c);
                }
                _ => {
                    alloc_refused += 1;
                    out.refused += 1;
                }
            }
        }
    }
    drop(held);
    out.check(minted_anonymously == 0, || {
        format!("{minted_anonymously} anonymous credential requests were not refused with 401")
    });
    out.check(allocs <= 10 * configs.len() as u64, || {
        format!(
            "{allocs} allocations for {} sessions: over the quota",
            configs.len()
        )
    });
    out.note = format!(
        "(REST without token: 1000 tried, {} minted; config flood: {} tried, {} refused, sessions {sessions0} -> {sessions} (cap {cap}: the oldest pending ones are evicted); \
         {} sessions tried 12 allocations each: {allocs} granted, {alloc_refused} refused)",
        minted_anonymously,
        flood.0,
        flood.1,
        configs.len()
    );
    out
}

async fn collect_status(
    set: &mut JoinSet<Result<u16, String>>,
    out: &mut Outcome,
    refusals: &[u16],
) {
    if let Some(r) = set.join_next().await {
        out.tried += 1;
        if let Ok(Ok(s)) = r {
            if refusals.contains(&s) {
                out.refused += 1;
            }
        }
    }
}

// --- 4. 64 KB Bindings with ~16K distinct unknown attributes -----------------------------

const BIG_STUN_CONNS: u8 = 8;
const BIG_STUN_PER_CONN: usize = 60;

/// ~26 Mbit/s of 64 KB Bindings with 16,383 distinct unknown comprehension-required
/// attributes over TCP (and 16,000 over UDP): each must be answered 420 cheaply.
async fn unknown_attrs(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let mut set = JoinSet::new();
    for k in 0..BIG_STUN_CONNS {
        let addr = cx.turn;
        set.spawn(async move {
            let mut rng = Rng::new(40 + k as u64);
            let s = connect_from(Some(src(5, 10 + k)), addr)
                .await
                .map_err(|e| e.to_string())?;
            let (mut rd, mut wr) = s.into_split();
            let reader = tokio::spawn(async move {
                let mut errors = 0u64;
                let mut hdr = [0u8; 20];
                let mut body = vec![0u8; 65_536];
                while tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut hdr))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
                    if rd.read_exact(&mut body[..len]).await.is_err() {
                        break;
                    }
                    // Error response class bits (0x0110).
                    if u16::from_be_bytes([hdr[0], hdr[1]]) & 0x0110 == 0x0110 {
                        errors += 1;
                    }
                    if errors as usize >= BIG_STUN_PER_CONN {
                        break;
                    }
                }
                errors
            });
            let mut sent = 0u64;
            for _ in 0..BIG_STUN_PER_CONN {
                let t0 = Instant::now();
                let m = net::binding_with_unknown_attrs(&mut rng, 16_383);
                if wr.write_all(&m).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(160).saturating_sub(t0.elapsed())).await;
            }
            let errors = reader.await.unwrap_or(0);
            Ok::<_, String>((sent, errors))
        });
    }
    // And over UDP (a datagram holds 16,000 of them).
    let udp = UdpSocket::bind((src(5, 100), 0)).await;
    let mut udp_sent = 0u64;
    let mut udp_answers = 0u64;
    if let Ok(u) = &udp {
        let mut rng = Rng::new(4);
        for _ in 0..40 {
            if u.send_to(
                &net::binding_with_unknown_attrs(&mut rng, 16_000),
                cx.turn_udp,
            )
            .await
            .is_ok()
            {
                udp_sent += 1;
            }
            let mut buf = [0u8; 1500];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(250), u.recv_from(&mut buf)).await
            {
                if u16::from_be_bytes([buf[0], buf[1]]) & 0x0110 == 0x0110 {
                    udp_answers += 1;
                }
            }
        }
    }
    let mut tcp = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((s, e))) => {
                tcp.0 += s;
                tcp.1 += e;
            }
            Ok(Err(e)) => out.failures.push(format!("attacker connection: {e}")),
            Err(e) => out.failures.push(format!("attacker task: {e}")),
        }
    }
    out.tried = tcp.0 + udp_sent;
    out.refused = tcp.1 + udp_answers;
    out.check(tcp.1 == tcp.0 && tcp.0 > 0, || {
        format!(
            "{} of {} oversized Bindings over TCP answered with an error",
            tcp.1, tcp.0
        )
    });
    out.note = format!(
        "(TCP: {} × 65,552 B, {} answered 420; UDP: {udp_sent} × 64,020 B, {udp_answers} answered 420)",
        tcp.0, tcp.1
    );
    out
}

// --- 5. malformed-STUN floods: log lines stay bounded -----------------------------------

const MALFORMED_UDP_SOURCES: u8 = 50;
const MALFORMED_PER_UDP_SOURCE: usize = 200;
const MALFORMED_TCP_SOURCES: u8 = 40;
const MALFORMED_TCP_CONNS: usize = 10;
/// New log lines allowed for the whole flood: the relay logs bad input at most once per
/// source address and reason per 10 s (90 sources here, a few reasons each).
const LOG_LINES_BOUND: usize = 400;

async fn malformed_stun(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let lines0 = cx.log_lines();
    let bad0 = cx.metric("turn_bad_input_total", "").await;
    let mut rng = Rng::new(5);
    let mut i = 0usize;
    for a in 0..MALFORMED_UDP_SOURCES {
        let Ok(s) = UdpSocket::bind((src(6, 10 + a), 0)).await else {
            out.failures.push("bind a loopback source".into());
            return out;
        };
        for _ in 0..MALFORMED_PER_UDP_SOURCE {
            if s.send_to(&net::malformed(&mut rng, i), cx.turn_udp)
                .await
                .is_ok()
            {
                out.tried += 1;
            }
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut set = JoinSet::new();
    for a in 0..MALFORMED_TCP_SOURCES {
        for c in 0..MALFORMED_TCP_CONNS {
            let addr = cx.turn;
            let msgs: Vec<Vec<u8>> = (0..5).map(|j| net::malformed(&mut rng, c + j)).collect();
            set.spawn(async move {
                let Ok(mut s) = connect_from(Some(src(7, 10 + a)), addr).await else {
                    return (0u64, false);
                };
                let mut sent = 0;
                for m in &msgs {
                    if s.write_all(m).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                // The gateway answers 400s or closes; either way it ends.
                let mut buf = [0u8; 2048];
                let closed = tokio::time::timeout(Duration::from_secs(20), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                (sent, closed)
            });
            if set.len() >= 32 {
                if let Some(Ok((n, _))) = set.join_next().await {
                    out.tried += n;
                }
            }
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok((n, _)) = r {
            out.tried += n;
        }
    }
    let bad = cx.metric("turn_bad_input_total", "").await - bad0;
    out.refused = bad as u64;
    let lines = cx.log_lines().saturating_sub(lines0);
    let tried = out.tried;
    out.check(lines <= LOG_LINES_BOUND, || {
        format!("{lines} log lines for {tried} malformed messages (bound {LOG_LINES_BOUND})")
    });
    out.check(bad > 0.0, || "no bad input counted".into());
    out.note = format!(
        "({} sources; {lines} new log lines, bound {LOG_LINES_BOUND}; counted as bad input {bad})",
        MALFORMED_UDP_SOURCES as usize + MALFORMED_TCP_SOURCES as usize
    );
    out
}

// --- 6. 60 KB offers and trickled-candidate floods ---------------------------------------

/// A browser-like offer: one recvonly H.264 video m-line, a host candidate.
fn video_offer() -> String {
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let local: SocketAddr = "127.0.0.1:9".parse().expect("address");
    if let Ok(c) = Candidate::host(local, "udp") {
        rtc.add_local_candidate(c);
    }
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.apply()
        .map(|(o, _)| o.to_sdp_string())
        .unwrap_or_default()
}

/// The heaviest offer within the gateway's bounds (32 KiB, 1,024 lines, 16 m-lines): as
/// many recvonly video m-lines as fit in 30 KB, padded with candidates to ~31 KB.
fn heavy_offer() -> String {
    let offer = |m: usize| {
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        let mut api = rtc.sdp_api();
        for _ in 0..m {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        api.apply()
            .map(|(o, _)| o.to_sdp_string())
            .unwrap_or_default()
    };
    let mut sdp = (1..=16)
        .rev()
        .map(offer)
        .find(|o| o.len() < 30_000)
        .unwrap_or_default();
    let mut i = 0;
    while sdp.len() < 31_000 && sdp.lines().count() < 1000 {
        sdp.push_str(&cand(i));
        i += 1;
    }
    sdp
}

fn cand(i: usize) -> String {
    format!(
        "a=candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host\r\n",
        20000 + i % 40000
    )
}

async fn big_sdp_and_trickle(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let good = video_offer();
    // 60 KB: padding attributes; and 60 KB of candidates.
    let mut padded = good.clone();
    while padded.len() < 60_000 {
        padded.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(90)));
    }
    let mut cands = good.clone();
    let mut i = 0;
    while cands.len() < 60_000 {
        cands.push_str(&cand(i));
        i += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut set = JoinSet::new();
    for k in 0..8u8 {
        let (addr, padded, cands) = (cx.http, padded.clone(), cands.clone());
        set.spawn(async move {
            let (mut tried, mut refused, mut bad) = (0u64, 0u64, Vec::new());
            let mut n = 0;
            while Instant::now() < deadline && n < 400 {
                let sdp = if n % 2 == 0 { &padded } else { &cands };
                let req = if n % 4 < 2 {
                    HttpReq::get(addr, "/whep")
                        .method("POST")
                        .header("Content-Type", "application/sdp")
                        .body(sdp.clone().into_bytes())
                } else {
                    let body = serde_json::json!({"webrtc_id": format!("big-{k}-{n}"), "sdp": sdp, "type": "offer"});
                    HttpReq::get(addr, "/api/v1/projects/x/offer")
                        .method("POST")
                        .header("Content-Type", "application/json")
                        .body(body.to_string().into_bytes())
                };
                tried += 1;
                match http(req.from(src(8, 10 + k))).await {
                    Ok(r) if (400..500).contains(&r.status) => refused += 1,
                    other => bad.push(format!("{other:?}")),
                }
                n += 1;
            }
            (tried, refused, bad)
        });
    }
    let mut big = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        if let Ok((t, r, bad)) = r {
            big.0 += t;
            big.1 += r;
            if let Some(b) = bad.first() {
                out.failures
                    .push(format!("a 60 KB offer was not refused: {b}"));
            }
        }
    }
    // The heaviest offers the bounds let through, from four addresses for 8 s: each is
    // parsed off the async workers (a bounded number at once); answered ones are ended.
    let heavy = heavy_offer();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut set = JoinSet::new();
    for k in 0..4u8 {
        let (addr, heavy) = (cx.http, heavy.clone());
        set.spawn(async move {
            let (mut tried, mut answered, mut refused, mut bad) = (0u64, 0u64, 0u64, Vec::new());
            while Instant::now() < deadline && tried < 200 {
                tried += 1;
                let r = http(
                    HttpReq::get(addr, "/whep")
                        .method("POST")
                        .header("Content-Type", "application/sdp")
                        .body(heavy.clone().into_bytes())
                        .from(src(8, 100 + k)),
                )
                .await;
                match r {
                    Ok(r) if r.status == 201 => {
                        answered += 1;
                        if let Some(loc) = r.header("location") {
                            let _ = http(HttpReq::get(addr, loc).method("DELETE")).await;
                        }
                    }
                    Ok(r) if (400..600).contains(&r.status) => refused += 1,
                    other => bad.push(format!("{other:?}")),
                }
            }
            (tried, answered, refused, bad)
        });
    }
    let mut heavy_fig = (0u64, 0u64, 0u64);
    while let Some(r) = set.join_next().await {
        if let Ok((t, a, r, bad)) = r {
            heavy_fig.0 += t;
            heavy_fig.1 += a;
            heavy_fig.2 += r;
            if let Some(b) = bad.first() {
                out.failures
                    .push(format!("a heavy offer got no answer: {b}"));
            }
        }
    }
    // Trickle floods on four real sessions: single candidates past the cap, and one PATCH of
    // 2,000 candidates.
    let (mut accepted_max, mut trickled, mut trickle_refused) = (0u64, 0u64, 0u64);
    for s in 0..4 {
        let r = http(
            HttpReq::get(cx.http, "/whep")
                .method("POST")
                .header("Content-Type", "application/sdp")
                .body(good.clone().into_bytes()),
        )
        .await;
        let Some(loc) = r
            .as_ref()
            .ok()
            .filter(|r| r.status == 201)
            .and_then(|r| r.header("location"))
            .map(str::to_owned)
        else {
            out.failures
                .push(format!("a valid WHEP offer was not answered: {r:?}"));
            continue;
        };
        let mut accepted = 0;
        let mut frags: Vec<String> = (0..100).map(|i| cand(s * 1000 + i)).collect();
        frags.push((0..2000).map(|i| cand(s * 1000 + 200 + i)).collect());
        for frag in frags {
            trickled += 1;
            let r = http(
                HttpReq::get(cx.http, &loc)
                    .method("PATCH")
                    .header("Content-Type", "application/trickle-ice-sdpfrag")
                    .body(frag.into_bytes()),
            )
            .await;
            match r {
                Ok(r) if r.status < 300 => accepted += 1,
                Ok(r) if (400..500).contains(&r.status) => trickle_refused += 1,
                other => out.failures.push(format!("trickle: {other:?}")),
            }
        }
        accepted_max = accepted_max.max(accepted);
        let _ = http(HttpReq::get(cx.http, &loc).method("DELETE")).await;
    }
    out.tried = big.0 + heavy_fig.0 + trickled;
    out.refused = big.1 + heavy_fig.2 + trickle_refused;
    out.check(accepted_max <= 64, || {
        format!("{accepted_max} trickled candidates accepted on one session (cap 64)")
    });
    out.note = format!(
        "(60 KB offers: {} tried, {} refused 4xx; {}-byte offers of {} m-lines: {} tried, {} answered, {} refused; trickle: {trickled} PATCHes, {trickle_refused} refused, at most {accepted_max} accepted per session)",
        big.0, big.1, heavy.len(), heavy.matches("\nm=").count(), heavy_fig.0, heavy_fig.1, heavy_fig.2
    );
    out
}

// --- 7. SDP parse errors: no internal state in error bodies ------------------------------

async fn sdp_parse_errors(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let good = video_offer();
    let without = |prefix: &str| -> String {
        good.lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let bad: Vec<String> = vec![
        "v=0\r\ngarbage\r\n".into(),
        "v=1\r\n".into(),
        String::new(),
        "\u{0}\u{1}\u{2}".into(),
        good.replace("m=video", "m=vid\u{e9}o"),
        good.replace("a=fingerprint:sha-256", "a=fingerprint:sha-256 zz"),
        good.replace("a=rtpmap:", "a=rtpmap:x"),
        good.replace("a=ice-ufrag:", "a=ice-ufrag"),
        without("a=fingerprint"),
        without("a=ice-pwd"),
        without("m="),
        format!("{good}m=video 9 UDP/TLS/RTP/SAVPF 300\r\n"),
        good.replace("\r\n", "\n").replace('\n', "\r"),
    ];
    let mut leaks = 0;
    let mut accepted = std::collections::BTreeSet::new();
    for round in 0..20u8 {
        let mut set = JoinSet::new();
        for (i, sdp) in bad.iter().enumerate() {
            let (addr, sdp) = (cx.http, sdp.clone());
            set.spawn(async move {
                let whep = HttpReq::get(addr, "/whep")
                    .method("POST")
                    .header("Content-Type", "application/sdp")
                    .body(sdp.clone().into_bytes());
                let body = serde_json::json!({"webrtc_id": format!("bad-{round}-{i}"), "sdp": sdp, "type": "offer"});
                let json = HttpReq::get(addr, "/api/v1/projects/x/offer")
                    .method("POST")
                    .header("Content-Type", "application/json")
                    .body(body.to_string().into_bytes());
                let from = src(9, 10 + round);
                (i, vec![http(whep.from(from)).await, http(json.from(from)).await])
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, rs) = r.unwrap_or_default();
            for r in rs {
                out.tried += 1;
                match r {
                    Ok(r) if (400..500).contains(&r.status) => {
                        out.refused += 1;
                        if leaks_internal_state(&r.body) {
                            leaks += 1;
                            if leaks == 1 {
                                out.failures.push(format!(
                                    "an error body shows internal state: {:?}",
                                    r.body
                                ));
                            }
                        }
                    }
                    // A malformed offer some str0m version accepts is a session: ended below
                    // by the idle timeout; it must still not leak.
                    Ok(r) if r.status < 300 => {
                        accepted.insert(i);
                    }
                    other => out
                        .failures
                        .push(format!("malformed offer #{i}: {other:?}")),
                }
            }
        }
    }
    out.check(accepted.is_empty(), || {
        format!("malformed offers #{accepted:?} were accepted")
    });
    out.note = format!(
        "({} error bodies, {leaks} with an address or parser offset)",
        out.refused
    );
    out
}

// --- 8. forged RTP to the ingest port ------------------------------------------------------

/// RTP packets of the same payload type as the real sender's, from 20 other addresses and
/// from another port of the real sender's address, while ffmpeg streams: the source stays
/// the first sender's (the viewer's frames go on without a gap).
async fn forged_rtp(cx: &Ctx) -> Outcome {
    let mut out = Outcome::default();
    let mut socks = Vec::new();
    for a in 0..20u8 {
        if let Ok(s) = UdpSocket::bind((src(10, 10 + a), 0)).await {
            socks.push(s);
        }
    }
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await {
        socks.push(s);
    }
    let dropped0 = cx.metric("gateway_rtp_other_sender_packets", "").await;
    let mut rng = Rng::new(8);
    let mut pkt = vec![0u8; 1012];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0u16;
    let mut ts = 0u32;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        for (k, s) in socks.iter().enumerate() {
            rng.fill(&mut pkt);
            pkt[0] = 0x80;
            pkt[1] = if k % 2 == 0 { 0x80 | 96 } else { 96 };
            pkt[2..4].copy_from_slice(&seq.wrapping_add(k as u16 * 1000).to_be_bytes());
            pkt[4..8].copy_from_slice(&ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&(0x1000_0000 + k as u32).to_be_bytes());
            // A NAL header that looks like an IDR slice.
            pkt[12] = 0x65;
            if s.send_to(&pkt, cx.rtp).await.is_ok() {
                out.tried += 1;
            }
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(3000);
        tokio::time::sleep(Duration::from_millis(10).saturating_sub(t0.elapsed())).await;
    }
    // The ingest task may still be reading the last ones: wait (bounded) for the count.
    let tried = out.tried as f64;
    crate::until(Duration::from_secs(5), || async {
        cx.metric("gateway_rtp_other_sender_packets", "").await - dropped0 >= tried
    })
    .await;
    let dropped = cx.metric("gateway_rtp_other_sender_packets", "").await - dropped0;
    out.refused = dropped as u64;
    // Loopback UDP on an idle socket loses nothing: every forged packet is counted as
    // another sender's, none reached the depacketizer.
    let tried = out.tried;
    out.check(out.refused == tried, || {
        format!("{dropped} of {tried} forged packets dropped as another sender's")
    });
    out.note = format!(
        "({} forged packets from {} senders, dropped as another sender's: {dropped}; the viewer's frames go on)",
        out.tried,
        socks.len()
    );
    out
}
