//! Start-up: validate settings, bind, serve, until a signal.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use auth::SecretRing;

use crate::app::App;
use crate::bind_hint::Proto;
use crate::config::{Plan, Settings};
use crate::{http, tls};

/// A started gateway (used by `main` and by tests).
pub struct Running {
    /// The relay listener.
    pub relay: relay::io::RelayServer,
    /// The plain-HTTP address actually bound.
    pub http_addr: std::net::SocketAddr,
    /// Shared application state.
    pub app: Arc<App>,
    /// The media engine; `None` in relay-only mode (GATEWAY_MODE=relay).
    pub media: Option<crate::media::MediaHandle>,
    /// Keeps the video producers (MEDIA_SOURCE, STREAMS) running.
    pub(crate) _sources: Vec<crate::media_source::SourceGuard>,
    /// The TLS configuration served on TURN_LISTEN (swapped by certificate reloads).
    pub tls: relay::io::TlsConfig,
    /// Reloads TLS_CERT/TLS_KEY (SIGHUP, file changes); `None` with a self-signed certificate.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// The plain-HTTP accept loop (aborted on shutdown).
    pub http_accept: tokio::task::JoinHandle<()>,
    /// Cluster mode: this node's part (it leaves the cluster on shutdown).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Validates `settings` ([`Settings::plan`]), binds every port and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    start_plan(settings.plan()?).await
}

/// Binds every port of a validated plan and starts serving.
pub async fn start_plan(plan: Plan) -> anyhow::Result<Running> {
    let Plan {
        settings,
        secrets,
        api_token,
        policy,
        relay: relay_config,
        io,
        http_limits,
        media: media_plan,
        sessions,
        ice: ice_plan,
        cors,
        tls: tls_files,
        modes,
        static_users,
        cluster: cluster_plan,
    } = plan;
    if modes.relay_only {
        return crate::relay_mode::start(
            settings,
            secrets,
            api_token,
            policy,
            relay_config,
            io,
            http_limits,
            tls_files,
            static_users,
        )
        .await;
    }
    let secrets = secrets_or_random(secrets)?;
    let (advertised, origin) = crate::advertise::advertised_ip(&media_plan)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e:#}: set WEBRTC_ADVERTISE_IP to this machine's public IP address or to a \
                 DNS name that resolves here, or unset it to advertise the local address"
            )
        })?;
    // TURN_HOST, else WEBRTC_ADVERTISE_IP as written (a DNS name stays a name), else the
    // address the media engine advertises.
    let host = settings
        .turn_host
        .clone()
        .or_else(|| media_plan.advertise.clone())
        .unwrap_or_else(|| advertised.to_string());
    let pull = crate::media::pull::PullOptions::new(
        media_plan.pull_idle,
        media_plan.pull_ca_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("PULL_CA_FILE: {e}"))?;
    let (video, source_guard) = crate::media_source::start_with(&media_plan.source, &pull)?;
    // Every stream: `default` from MEDIA_SOURCE, then the named ones.
    let mut entries = vec![crate::streams::StreamEntry::new(
        crate::media::DEFAULT_STREAM,
        &media_plan.source,
        &video,
        source_guard.pull_demand(),
    )
    .with_whip(source_guard.whip())
    .with_rtp_stats(source_guard.rtp_stats())];
    let mut source_guards = vec![source_guard];
    for named in &media_plan.streams {
        let (feeds, guard) = crate::media_source::start_with(&named.source, &pull)
            .map_err(|e| anyhow::anyhow!("STREAMS: stream {:?}: {e:#}", named.name))?;
        entries.push(
            crate::streams::StreamEntry::new(
                named.name.clone(),
                &named.source,
                &feeds,
                guard.pull_demand(),
            )
            .with_whip(guard.whip())
            .with_rtp_stats(guard.rtp_stats()),
        );
        source_guards.push(guard);
        tracing::info!(stream = %named.name, source = %named.source.redacted(), "stream configured");
    }
    // The engine's streams are the directory's.
    let mut stream_set = crate::media::StreamSet::new();
    for e in &entries {
        stream_set.insert(e.name.clone(), e.feeds.clone());
    }
    let mut directory = crate::streams::StreamDirectory::new(entries, media_plan.stream_fallback);
    // Proxy mode: each project id of the upstream is a stream pulled on first use.
    let proxy = media_plan.upstream.clone().map(crate::proxy::Proxy::new);
    if let Some(base) = &media_plan.upstream {
        let projects = Arc::new(crate::project_streams::ProjectStreams::new(
            base.clone(),
            pull.clone(),
            crate::project_streams::MAX_PROJECT_STREAMS,
        ));
        for (name, feeds) in projects.engine_streams() {
            stream_set.insert(name, feeds.clone());
        }
        directory = directory.with_projects(projects);
        tracing::info!(upstream = %base, "proxy mode: requests the gateway does not answer go to the upstream; its viewer page is at /gateway/");
    }
    // Cluster mode: streams whose origin is another node are pulled from it.
    let cluster = match cluster_plan {
        Some(plan) => {
            let cluster = crate::cluster::Cluster::new(plan)?;
            let pulls = Arc::new(crate::cluster::pulls::ClusterPulls::new(
                cluster.clone(),
                pull.clone(),
                crate::cluster::pulls::MAX_CLUSTER_PULLS,
            ));
            for (name, feeds) in pulls.engine_streams() {
                stream_set.insert(name, feeds.clone());
            }
            directory = directory.with_cluster(pulls);
            Some(cluster)
        }
        None => None,
    };
    let streams = Arc::new(directory);
    let media = crate::media::MediaEngine::start(media_plan.config(advertised), stream_set.clone())
        .map_err(|e| {
            anyhow::anyhow!(
                "WEBRTC_BIND_IP/WEBRTC_PORT_RANGE: {e}: the media engine needs free UDP ports in \
                 WEBRTC_PORT_RANGE ({}-{}) on WEBRTC_BIND_IP ({}): stop what holds them (another \
                 gateway?), or set WEBRTC_PORT_RANGE to a free range and WEBRTC_BIND_IP to an \
                 address of this machine",
                media_plan.ports.min,
                media_plan.ports.max,
                media_plan.bind_ip
            )
        })?;
    tracing::info!(%advertised, ?origin, media = ?media.candidate_addrs(), "media engine ready");
    let self_signed = tls_files.is_none();
    let tls_config = tls_config(tls_files.as_ref(), &host)?;

    // The registry owns every session; the relay asks it whether a TURN user is a live
    // session (its allocations then outlive the credential's expiry).
    let registry = crate::session::Registry::new(sessions, media.clone(), |directory| {
        relay::core::Shared::with_directory(
            relay_config,
            secrets.clone(),
            policy,
            relay::core::NonceKey::random(),
            Some(directory),
        )
    });
    registry.spawn_tasks();
    let shared = registry.relay().clone();
    let embedded_urls = |settings: &Settings| {
        if modes.turn_embedded {
            settings.turn_uris_for(&host)
        } else {
            Vec::new()
        }
    };
    let embedded_uris = embedded_urls(&settings);
    let signaling = crate::signaling::Signaling::new(
        registry.clone(),
        ice_plan,
        embedded_uris,
        settings.turn_credential_ttl,
        streams.clone(),
    );
    let app = Arc::new(
        App::new(settings.clone(), shared.clone(), Some(signaling.clone())).with_proxy(proxy),
    );
    {
        let r = registry.clone();
        app.metrics.set_gauge(
            "gateway_sessions_active",
            "WebRTC sessions alive (pending and offered).",
            move || r.counts().0 as u64,
        );
        let r = registry.clone();
        app.metrics.set_gauge(
            "gateway_sessions_pending",
            "Sessions handed ICE servers that have not offered yet (no viewer slot).",
            move || r.counts().1 as u64,
        );
        let r = registry.clone();
        app.metrics.set_gauge(
            "gateway_viewer_slots_used",
            "Viewer slots taken (sessions that offered), at most MAX_VIEWERS.",
            move || r.counts().2 as u64,
        );
        let all = stream_set.clone();
        app.metrics
            .set_gauge("gateway_viewers", "Viewers receiving video.", move || {
                all.iter().map(|(_, f)| f.viewers() as u64).sum()
            });
        crate::streams::StreamDirectory::export_metrics(&streams, &app.metrics);
    }
    let router = http::router(app.clone(), cors, api_token);

    let http_limits = http_limits_for(&app, http_limits);
    let relay = start_relay(
        &settings,
        shared,
        io,
        &tls_config,
        router.clone(),
        &http_limits,
    )
    .await?;
    // Allocations whose peer is our own media go to the engine in-process (no relay socket).
    crate::shortcut::connect(&relay, &media)
        .await
        .context("connecting the TURN relay to the media engine")?;
    // The gateway's other ports on its own addresses are no peers (see own_addrs).
    crate::own_addrs::install(relay.shared(), &settings, advertised);
    relay_metrics(&app, &relay);
    let whip: Vec<_> = source_guards.iter().filter_map(|g| g.whip()).collect();
    if !whip.is_empty() {
        let w = whip.clone();
        app.metrics.set_gauge(
            "gateway_whip_publishers",
            "WHIP streams a publisher holds now.",
            move || w.iter().filter(|w| w.has_publisher()).count() as u64,
        );
        let w = whip.clone();
        app.metrics.set_counter(
            "gateway_whip_keyframe_requests",
            "Keyframe requests (PLI) sent to WHIP publishers, over every WHIP stream.",
            move || w.iter().map(|w| w.keyframe_requests()).sum(),
        );
        app.metrics.set_counter(
            "gateway_whip_frames",
            "Frames received from WHIP publishers, over every WHIP stream.",
            move || whip.iter().map(|w| w.frames()).sum(),
        );
    }
    let rtp: Vec<_> = source_guards.iter().filter_map(|g| g.rtp_stats()).collect();
    if !rtp.is_empty() {
        app.metrics.set_counter(
            "gateway_rtp_other_sender_packets",
            "RTP ingest datagrams dropped because another sender holds the source, over every \
             RTP stream.",
            move || {
                rtp.iter()
                    .map(|r| r.other_senders.load(std::sync::atomic::Ordering::Relaxed))
                    .sum()
            },
        );
    }
    let reloader = crate::reload::start(&settings, &tls_config, &app);
    let bound = Settings {
        turn_listen: relay.local_tcp(),
        turn_udp_listen: relay.local_udp(),
        ..settings.clone()
    };
    signaling.set_embedded_uris(embedded_urls(&bound));

    let (http_addr, http_accept) =
        serve_http(settings.gateway_http_addr, router, http_limits).await?;
    if let Some(c) = &cluster {
        let peer_url = c.plan().peer_url_for(http_addr, advertised);
        tracing::info!(node = %c.node_id(), %peer_url, turn_host = %host, "cluster node: siblings pull this node's streams at its peer URL");
        c.export_metrics(&app.metrics);
        registry.join(c.clone());
        c.start(cluster_local(
            crate::cluster::NodeRecord {
                id: c.node_id().to_owned(),
                peer_url,
                media_ip: advertised,
                media_ports: (media_plan.ports.min, media_plan.ports.max),
                turn_host: host.clone(),
                viewers: 0,
                allocations: 0,
                cpu_percent: 0.0,
                started_unix: relay::io::unix_now(),
            },
            &streams,
            &stream_set,
            &registry,
        ));
    }
    tracing::info!(%http_addr, uris = ?app.turn_uris(), "gateway ready");
    let ways = WaysIn::new(http_addr, advertised, &host, relay.local_tcp().port());
    let proxied = app.proxy().is_some();
    let ways = if proxied {
        ways.under(crate::web::PROXY_PAGE_PREFIX)
    } else {
        ways
    };
    tracing::info!(url = %ways.viewer, "viewer page: open it in a browser (it shows the path, protocol, bitrate, frame rate and loss)");
    if self_signed {
        tracing::warn!(url = %ways.https, "HTTPS on TURN_LISTEN: the certificate is self-signed, browsers warn (set TLS_CERT/TLS_KEY to a real one)");
    } else {
        tracing::info!(url = %ways.https, "HTTPS on TURN_LISTEN: the same page and API over TLS");
    }
    tracing::info!(url = %ways.whep, "WHEP endpoint: POST an SDP offer (application/sdp) here");
    for name in streams_whip(&app) {
        tracing::info!(url = %format!("{}/whip/{name}", ways.viewer.trim_end_matches('/')), "WHIP endpoint: publishers POST their offer here with the stream's bearer token");
    }
    Ok(Running {
        relay,
        http_addr,
        app,
        media: Some(media),
        _sources: source_guards,
        tls: tls_config,
        reloader,
        http_accept,
        cluster,
    })
}

fn sibling_list(relay: &relay::core::Shared) -> Vec<String> {
    relay
        .sibling_peers()
        .iter()
        .map(|s| format!("{}:{}-{}", s.ip, s.first, s.last))
        .collect()
}

/// What the cluster heartbeat reads of this node: its load, the streams it is the origin
/// of, whether a session lives.
fn cluster_local(
    record: crate::cluster::NodeRecord,
    streams: &Arc<crate::streams::StreamDirectory>,
    all: &crate::media::StreamSet,
    registry: &Arc<crate::session::Registry>,
) -> crate::cluster::Local {
    let (all, relay) = (all.clone(), registry.relay().clone());
    let cpu = std::sync::Mutex::new((std::time::Instant::now(), crate::cluster::cpu_time()));
    let (s, r, w, p) = (
        streams.clone(),
        registry.clone(),
        registry.relay().clone(),
        registry.relay().clone(),
    );
    crate::cluster::Local {
        record: Box::new(move || {
            let mut last = cpu.lock().unwrap_or_else(|p| p.into_inner());
            let (now, used) = (std::time::Instant::now(), crate::cluster::cpu_time());
            let wall = now.saturating_duration_since(last.0).as_secs_f64();
            let busy = used.saturating_sub(last.1).as_secs_f64();
            *last = (now, used);
            crate::cluster::NodeRecord {
                viewers: all.iter().map(|(_, f)| f.viewers() as u64).sum(),
                allocations: u64::from(relay.allocations()),
                cpu_percent: if wall > 0.0 {
                    (busy / wall * 1000.0).round() / 10.0
                } else {
                    0.0
                },
                ..record.clone()
            }
        }),
        origins: Box::new(move || s.origins(std::time::Instant::now())),
        session_live: Box::new(move |id| r.contains(id)),
        wake: Box::new(move |id| {
            if w.wake_user(id) {
                tracing::info!(session = %id, "cluster: a sibling ended this session; closing its allocations here");
            }
        }),
        set_siblings: Box::new(move |siblings| {
            if p.set_sibling_peers(siblings) {
                tracing::info!(siblings = ?sibling_list(&p), "cluster: the relay admits the sibling nodes' media as peers");
            }
        }),
    }
}

/// TURN_SECRET's ring, or a random secret for this run (with a warning) when unset.
pub(crate) fn secrets_or_random(secrets: Option<SecretRing>) -> anyhow::Result<SecretRing> {
    Ok(match secrets {
        Some(ring) => {
            tracing::info!(fingerprints = ?ring.fingerprints(), "TURN secrets loaded (first mints)");
            ring
        }
        None => {
            let random: [u8; 32] = rand::random();
            let s = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, random);
            let ring = SecretRing::parse(&s).context("random secret")?;
            tracing::warn!(
                fingerprint = %ring.minting().fingerprint(),
                "TURN_SECRET is not set: using a random secret for this run; credentials \
                 minted elsewhere (coturn, another gateway) will not verify"
            );
            ring
        }
    })
}

/// The TLS configuration for TURN_LISTEN: TLS_CERT/TLS_KEY, else a self-signed certificate
/// for `host` (with a warning).
pub(crate) fn tls_config(
    tls_files: Option<&crate::config::TlsFiles>,
    host: &str,
) -> anyhow::Result<relay::io::TlsConfig> {
    let (certs, key) = match tls_files {
        Some(f) => tls::load_pem(&f.cert, &f.key)?,
        None => {
            tracing::warn!(
                host = %host,
                "TLS_CERT/TLS_KEY not set: serving a self-signed certificate; browsers will \
                 refuse TURNS and HTTPS until you configure a real one"
            );
            tls::self_signed(host)?
        }
    };
    Ok(Arc::new(ArcSwap::new(tls::server_config(certs, key)?)))
}

/// HTTP_MAX_CONNECTIONS / _PER_IP as shedding limits, exported in `/metrics`.
pub(crate) fn http_limits_for(
    app: &App,
    (total, per_ip): (u32, u32),
) -> Arc<relay::io::ConnectionLimits> {
    let limits = relay::io::ConnectionLimits::shedding(total, per_ip);
    let l = limits.clone();
    app.metrics.set_gauge(
        "gateway_http_connections",
        "HTTP connections open (GATEWAY_HTTP_ADDR and HTTPS on the TURN port).",
        move || u64::from(l.open()),
    );
    let l = limits.clone();
    app.metrics.set_counter(
        "gateway_http_connections_shed_total",
        "HTTP connections closed to make room for a client of a less busy address while \
         HTTP_MAX_CONNECTIONS were open.",
        move || l.shed_total(),
    );
    limits
}

/// Starts the TURN relay on TURN_LISTEN (and TURN_UDP_LISTEN), HTTP(S) on its port handed to
/// `router`; a bind error names the setting and the fixes.
pub(crate) async fn start_relay(
    settings: &Settings,
    shared: Arc<relay::core::Shared>,
    io: relay::io::IoConfig,
    tls_config: &relay::io::TlsConfig,
    router: axum::Router,
    http_limits: &Arc<relay::io::ConnectionLimits>,
) -> anyhow::Result<relay::io::RelayServer> {
    let handoff: Arc<dyn relay::io::Handoff> = Arc::new(http::HttpHandoff {
        router,
        limits: http_limits.clone(),
    });
    relay::io::RelayServer::start(shared, io, Some(tls_config.clone()), Some(handoff))
        .await
        .map_err(|e| {
            // The relay says which socket failed ("cannot listen on UDP ..." for TURN_UDP_LISTEN).
            let (setting, proto, addr) = match settings.turn_udp_listen {
                Some(udp) if e.to_string().starts_with("cannot listen on UDP") => {
                    ("TURN_UDP_LISTEN", Proto::Udp, udp)
                }
                _ => ("TURN_LISTEN", Proto::Tcp, settings.turn_listen),
            };
            anyhow::anyhow!(crate::bind_hint::explain(setting, proto, addr, &e))
        })
}

/// The relay's connection gauges in `/metrics`.
pub(crate) fn relay_metrics(app: &App, relay: &relay::io::RelayServer) {
    app.metrics.set_io_stats(relay.io_stats().clone());
    let handshakes = relay.tls_handshakes().clone();
    app.metrics.set_gauge(
        "turn_tls_handshakes_in_flight",
        "TLS handshakes in flight on TURN_LISTEN (TURN_MAX_TLS_HANDSHAKES bounds them).",
        move || u64::from(handshakes.open()),
    );
    let io = relay.io_stats().clone();
    app.metrics.set_gauge(
        "turn_udp_clients",
        "UDP client states (source addresses the TURN UDP listener keeps a task for).",
        move || io.udp_clients.load(std::sync::atomic::Ordering::Relaxed),
    );
}

/// Binds GATEWAY_HTTP_ADDR and serves `router` on it; the bound address and the accept loop.
pub(crate) async fn serve_http(
    addr: std::net::SocketAddr,
    router: axum::Router,
    http_limits: Arc<relay::io::ConnectionLimits>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = relay::io::bind_tcp(addr).map_err(|e| {
        anyhow::anyhow!(crate::bind_hint::explain(
            "GATEWAY_HTTP_ADDR",
            Proto::Tcp,
            addr,
            &e
        ))
    })?;
    let http_addr = listener.local_addr()?;
    let http_accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, remote)) => {
                    http::serve_connection(s, remote, false, router.clone(), &http_limits)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok((http_addr, http_accept))
}

/// The names of the streams fed by WHIP.
fn streams_whip(app: &App) -> Vec<String> {
    let Some(sig) = app.signaling() else {
        return Vec::new();
    };
    let d = sig.streams();
    d.names()
        .filter(|n| d.whip(Some(n)).is_ok())
        .map(str::to_owned)
        .collect()
}

/// The URLs a person uses to reach a started gateway, logged once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaysIn {
    /// The viewer page on GATEWAY_HTTP_ADDR.
    pub viewer: String,
    /// The same page over HTTPS on TURN_LISTEN.
    pub https: String,
    /// The WHEP endpoint on GATEWAY_HTTP_ADDR.
    pub whep: String,
}

impl WaysIn {
    /// The page's URLs with the page under `prefix` (proxy mode).
    fn under(self, prefix: &str) -> Self {
        WaysIn {
            viewer: format!("{}{prefix}/", self.viewer.trim_end_matches('/')),
            https: format!("{}{prefix}/", self.https.trim_end_matches('/')),
            whep: self.whep,
        }
    }

    /// `http_addr` is the bound HTTP address; when it is a wildcard (0.0.0.0, ::) the
    /// advertised address stands in for it, since a wildcard is not something to browse to.
    /// `host` is the name in the certificate and TURN URLs; `tls_port` the bound TURN_LISTEN port.
    pub fn new(
        http_addr: std::net::SocketAddr,
        advertised: std::net::IpAddr,
        host: &str,
        tls_port: u16,
    ) -> Self {
        let ip = if http_addr.ip().is_unspecified() {
            advertised
        } else {
            http_addr.ip()
        };
        let http_base = format!("http://{}", std::net::SocketAddr::new(ip, http_addr.port()));
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let https = if tls_port == 443 {
            format!("https://{host}/")
        } else {
            format!("https://{host}:{tls_port}/")
        };
        WaysIn {
            viewer: format!("{http_base}/"),
            https,
            whep: format!("{http_base}/whep"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WaysIn;

    #[test]
    fn ways_in_use_the_advertised_address_for_a_wildcard_bind() {
        let w = WaysIn::new(
            "0.0.0.0:9100".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "turn.example.com",
            443,
        );
        assert_eq!(w.viewer, "http://192.0.2.7:9100/");
        assert_eq!(w.https, "https://turn.example.com/");
        assert_eq!(w.whep, "http://192.0.2.7:9100/whep");
    }

    #[test]
    fn ways_in_keep_a_specific_bind_and_bracket_ipv6() {
        let w = WaysIn::new(
            "[::1]:8080".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
            "2001:db8::1",
            8443,
        );
        assert_eq!(w.viewer, "http://[::1]:8080/");
        assert_eq!(w.https, "https://[2001:db8::1]:8443/");
        assert_eq!(w.whep, "http://[::1]:8080/whep");
        let w = WaysIn::new(
            "[::]:9100".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            "media.example.org",
            443,
        );
        assert_eq!(w.viewer, "http://[2001:db8::2]:9100/");
    }
}
