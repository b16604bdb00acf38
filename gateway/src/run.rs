//! Start-up: validate settings, bind, serve, until a signal.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use auth::SecretRing;

use crate::app::App;
use crate::config::Settings;
use crate::{http, tls};

/// A started gateway (used by `main` and by tests).
pub struct Running {
    /// The relay listener.
    pub relay: relay::io::RelayServer,
    /// The plain-HTTP address actually bound.
    pub http_addr: std::net::SocketAddr,
    /// Shared application state.
    pub app: Arc<App>,
}

/// Validates `settings`, binds every port and starts serving.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let secrets = match settings.secrets()? {
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
    };
    let policy = settings.policy()?;
    let host = settings.turn_host();
    let (certs, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(c), Some(k)) => tls::load_pem(c, k)?,
        _ => {
            tracing::warn!(
                host = %host,
                "TLS_CERT/TLS_KEY not set: serving a self-signed certificate; browsers will \
                 refuse TURNS and HTTPS until you configure a real one"
            );
            tls::self_signed(&host)?
        }
    };
    let tls_config = Arc::new(ArcSwap::new(tls::server_config(certs, key)?));

    let relay_config = relay::core::Config {
        realm: settings.turn_realm.clone(),
        max_allocations_per_user: settings.turn_user_quota,
        max_allocations_total: settings.turn_total_quota,
        ..Default::default()
    };
    let shared = relay::core::Shared::new(
        relay_config,
        secrets.clone(),
        policy,
        relay::core::NonceKey::random(),
    );
    let app = Arc::new(App::new(settings.clone(), secrets, shared.clone()));
    let router = http::router(app.clone());

    let io = relay::io::IoConfig {
        listen: settings.turn_listen,
        udp_listen: settings.turn_udp_listen,
        relay_ipv4: Some(settings.turn_relay_ip),
        relay_ipv6: None,
        relay_ports: settings.turn_relay_ports,
        handshake_timeout: settings.handshake_timeout(),
        max_connections_per_ip: settings.turn_max_connections_per_ip,
        ..Default::default()
    };
    let handoff: Arc<dyn relay::io::Handoff> = Arc::new(http::HttpHandoff {
        router: router.clone(),
    });
    let relay = relay::io::RelayServer::start(shared, io, Some(tls_config), Some(handoff))
        .await
        .context("TURN_LISTEN")?;

    let listener = tokio::net::TcpListener::bind(settings.gateway_http_addr)
        .await
        .with_context(|| {
            format!(
                "GATEWAY_HTTP_ADDR: cannot listen on {}",
                settings.gateway_http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, remote)) => http::serve_connection(s, remote, router.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    tracing::info!(%http_addr, uris = ?settings.turn_uris(), "gateway ready");
    Ok(Running {
        relay,
        http_addr,
        app,
    })
}
