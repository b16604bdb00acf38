//! Relay-only mode (`GATEWAY_MODE=relay`): the TURN relay alone, in front of a WebRTC
//! backend that keeps its own signaling and ICE configuration (Geti with its coturn recipe).
//! No media engine, no media ports, no signaling API: HTTP serves `/health`, `/metrics` and,
//! with API_TOKEN, the TURN REST endpoint; HTTPS shares TURN_LISTEN as in media mode. Peers
//! are what TURN_ALLOWED_PEERS names; static users (TURN_STATIC_USERS) may authenticate
//! besides REST credentials.

use std::sync::Arc;

use relay::core::StaticUsers;

use crate::app::App;
use crate::config::{Settings, TlsFiles};
use crate::run::{self, Running};

/// Starts the relay-only gateway from the parts of a validated plan it uses.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    settings: Settings,
    secrets: Option<auth::SecretRing>,
    api_token: Option<String>,
    policy: relay::core::PeerPolicy,
    relay_config: relay::core::Config,
    io: relay::io::IoConfig,
    http_limits: (u32, u32),
    tls_files: Option<TlsFiles>,
    static_users: StaticUsers,
) -> anyhow::Result<Running> {
    let secrets = run::secrets_or_random(secrets)?;
    let host = settings
        .turn_host
        .clone()
        .or_else(|| settings.webrtc_advertise_ip.clone())
        .unwrap_or_else(|| "localhost".into());
    let self_signed = tls_files.is_none();
    let tls_config = run::tls_config(tls_files.as_ref(), &host)?;
    let shared = relay::core::Shared::new(
        relay_config,
        secrets,
        policy,
        relay::core::NonceKey::random(),
    );
    if !static_users.is_empty() {
        let names: Vec<&str> = static_users.names().collect();
        tracing::warn!(
            users = ?names,
            allowed_peers = %settings.turn_allowed_peers,
            "TURN_STATIC_USERS: static users accepted; their passwords never expire and anyone \
             who has one can relay to TURN_ALLOWED_PEERS (and only there). Prefer REST \
             credentials minted with TURN_SECRET"
        );
    }
    shared.set_static_users(static_users);
    let app = Arc::new(App::new(settings.clone(), shared.clone(), None));
    let router = crate::http::router(app.clone(), None, api_token);
    let http_limits = run::http_limits_for(&app, http_limits);
    let relay = run::start_relay(
        &settings,
        shared,
        io,
        &tls_config,
        router.clone(),
        &http_limits,
    )
    .await?;
    run::relay_metrics(&app, &relay);
    // The gateway's own addresses are no peers unless an allow entry names one as a host
    // (a backend on this machine: `TURN_ALLOWED_PEERS=10.0.0.5:50000-50050`).
    crate::own_addrs::install(relay.shared(), &settings, settings.turn_listen.ip());
    let reloader = crate::reload::start(&settings, &tls_config, &app);
    let (http_addr, http_accept) =
        run::serve_http(settings.gateway_http_addr, router, http_limits).await?;
    tracing::info!(
        %http_addr,
        turn = %relay.local_tcp(),
        uris = ?settings.turn_uris_for(&host),
        "gateway ready in relay-only mode (GATEWAY_MODE=relay): TURN only, no media or signaling"
    );
    if self_signed {
        tracing::warn!(
            "TURN over TLS uses a self-signed certificate: browsers refuse `turns:` until \
             TLS_CERT/TLS_KEY name a real one (TURN over TCP works regardless)"
        );
    }
    Ok(Running {
        relay,
        http_addr,
        app,
        media: None,
        _sources: Vec::new(),
        tls: tls_config,
        reloader,
        http_accept,
        cluster: None,
    })
}
