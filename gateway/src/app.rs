//! The running gateway's shared state, for request handlers: settings, the relay, the
//! signaling state (which owns the session registry) and the metrics registry. Signaling
//! holds nothing of `App`: dependencies point one way.

use std::sync::Arc;

use auth::{Credential, MintError};

use crate::config::Settings;
use relay::io::unix_now;

/// Everything request handlers need.
pub struct App {
    settings: Settings,
    relay: Arc<relay::core::Shared>,
    signaling: Option<Arc<crate::signaling::Signaling>>,
    /// Counters and gauges served at `/metrics`.
    pub metrics: crate::metrics::Registry,
    /// Proxy mode (UPSTREAM_URL): the upstream everything not the gateway's own goes to.
    proxy: Option<crate::proxy::Proxy>,
}

impl App {
    /// Wires the application state.
    pub fn new(
        settings: Settings,
        relay: Arc<relay::core::Shared>,
        signaling: Option<Arc<crate::signaling::Signaling>>,
    ) -> Self {
        Self {
            settings,
            relay,
            signaling,
            metrics: crate::metrics::Registry::default(),
            proxy: None,
        }
    }

    /// Proxy mode: requests the gateway does not answer go to `proxy`'s upstream.
    pub fn with_proxy(mut self, proxy: Option<crate::proxy::Proxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The upstream proxy, in proxy mode.
    pub fn proxy(&self) -> Option<&crate::proxy::Proxy> {
        self.proxy.as_ref()
    }

    /// The signaling state, when the media engine runs.
    pub fn signaling(&self) -> Option<&Arc<crate::signaling::Signaling>> {
        self.signaling.as_ref()
    }

    /// Lifetime of minted credentials, in seconds.
    pub fn credential_ttl(&self) -> u64 {
        self.settings.turn_credential_ttl
    }

    /// The relay's shared state.
    pub fn relay_shared(&self) -> &Arc<relay::core::Shared> {
        &self.relay
    }

    /// Mints a credential for `user` with the configured TTL, with the relay's secrets.
    pub fn mint(&self, user: &str) -> Result<Credential, MintError> {
        self.relay
            .secrets()
            .mint(user, unix_now(), self.settings.turn_credential_ttl)
    }

    /// URLs of the embedded relay.
    pub fn turn_uris(&self) -> Vec<String> {
        match &self.signaling {
            Some(s) => s.embedded_uris().to_vec(),
            None => self.settings.turn_uris(),
        }
    }
}

impl axum::extract::FromRef<Arc<App>> for crate::signaling::SignalingState {
    fn from_ref(app: &Arc<App>) -> Self {
        crate::signaling::SignalingState(app.signaling.clone())
    }
}
