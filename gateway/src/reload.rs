//! Certificate reload without a restart: on SIGHUP (`systemctl reload gateway`) and when
//! TLS_CERT or TLS_KEY change on disk (checked every few seconds by modification time,
//! size and inode, which also catches certbot's symlink swaps).
//!
//! The TLS configuration is an `ArcSwap`: a reload builds a whole new configuration and
//! swaps it in. Handshakes that start afterwards get the new certificate; connections
//! already established keep the session they negotiated (TURN/TLS allocations and HTTPS
//! keep going). A file that does not load (unreadable, not PEM, key not matching the
//! certificate, half-written) is logged as an error and the old certificate stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::metrics::Registry;
use crate::tls;

/// How often TLS_CERT and TLS_KEY are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies a file's content cheaply: (mtime, size, inode).
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Counts a reload: (succeeded, new certificate's expiry).
type CountReload = Arc<dyn Fn(bool, Option<u64>) + Send + Sync>;

/// Reloads the certificate of a running gateway.
pub struct Reloader {
    cert: PathBuf,
    key: PathBuf,
    tls: relay::io::TlsConfig,
    metrics: Option<CountReload>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Names the new certificate covers.
    pub names: String,
    /// Its expiry, unix seconds.
    pub not_after: i64,
}

impl Reloader {
    /// A reloader for the PEM files `cert` and `key` that swaps `tls`.
    pub fn new(cert: &Path, key: &Path, tls: relay::io::TlsConfig) -> Self {
        Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            tls,
            metrics: None,
            seen: Mutex::new((stamp(cert), stamp(key))),
        }
    }

    /// Counts reloads in `registry` (`gateway_tls_reloads_total`) and exports the served
    /// certificate's expiry.
    /// `owner` holds the registry; `get` finds it there.
    pub fn with_metrics<T: Send + Sync + 'static>(
        mut self,
        owner: Arc<T>,
        get: fn(&T) -> &Registry,
    ) -> Self {
        if let Ok((certs, _)) = tls::load_pem(&self.cert, &self.key) {
            if let Some(info) = certs.first().and_then(|c| tls::CertInfo::parse(c).ok()) {
                get(&owner).set_tls_not_after(u64::try_from(info.not_after).unwrap_or(0));
            }
        }
        self.metrics = Some(Arc::new(move |ok, not_after| {
            get(&owner).tls_reloaded(ok, not_after)
        }));
        self
    }

    /// Loads the files and swaps the configuration in; on error the old one stays.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let r = self.try_load();
        match &r {
            Ok(done) => {
                tracing::info!(
                    cert = %self.cert.display(),
                    names = %done.names,
                    not_after = done.not_after,
                    "TLS certificate reloaded; new handshakes use it, live connections keep theirs"
                );
            }
            Err(e) => tracing::error!(
                cert = %self.cert.display(),
                key = %self.key.display(),
                "TLS certificate reload failed, still serving the previous certificate: {e:#}"
            ),
        }
        if let Some(m) = &self.metrics {
            m(
                r.is_ok(),
                r.as_ref()
                    .ok()
                    .and_then(|d| u64::try_from(d.not_after).ok()),
            );
        }
        r
    }

    fn try_load(&self) -> anyhow::Result<Reloaded> {
        let (certs, key) = tls::load_pem(&self.cert, &self.key)?;
        let info = certs
            .first()
            .map(|c| tls::CertInfo::parse(c))
            .transpose()
            .context("TLS_CERT")?;
        let config = tls::server_config(certs, key)?;
        self.tls.store(config);
        Ok(Reloaded {
            names: info.as_ref().map(|i| i.names()).unwrap_or_default(),
            not_after: info.map_or(0, |i| i.not_after),
        })
    }

    /// Reloads if either file changed since the last check (or the last reload attempt).
    /// Returns whether it tried.
    pub fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        // A missing file is a rename in progress or a mistake: log it once, keep serving.
        tracing::info!(cert = %self.cert.display(), "TLS_CERT or TLS_KEY changed on disk");
        let _ = self.reload();
        true
    }

    /// Watches the files every `interval`, until the reloader is dropped or the returned
    /// task is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                // Small file reads, kept off the async workers anyway.
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        })
    }
}

/// Sets up reloading for a starting gateway: `None` when TLS_CERT/TLS_KEY are unset (the
/// self-signed certificate has nothing to reload); otherwise a reloader that counts into
/// `app`'s metrics and already watches the files every [`POLL_INTERVAL`].
pub fn start(
    settings: &crate::config::Settings,
    tls: &relay::io::TlsConfig,
    app: &Arc<crate::app::App>,
) -> Option<Arc<Reloader>> {
    let (cert, key) = (settings.tls_cert.as_ref()?, settings.tls_key.as_ref()?);
    let r =
        Arc::new(Reloader::new(cert, key, tls.clone()).with_metrics(app.clone(), |a| &a.metrics));
    r.watch(POLL_INTERVAL);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;

    fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Write to temporary names and rename, as certbot and kubelet do.
        std::fs::write(dir.join("cert.tmp"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.tmp"), ck.signing_key.serialize_pem()).unwrap();
        std::fs::rename(dir.join("cert.tmp"), &c).unwrap();
        std::fs::rename(dir.join("key.tmp"), &k).unwrap();
        (c, k)
    }

    fn served_name(tls: &relay::io::TlsConfig) -> String {
        // The resolver of a single-cert config returns the same certificate for any hello;
        // compare by its DER through a fresh parse of what we wrote instead: the config's
        // Arc pointer changes on every swap.
        format!("{:p}", Arc::as_ptr(&tls.load_full()))
    }

    #[test]
    fn reloads_on_change_and_keeps_old_on_bad_file() {
        let dir = std::env::temp_dir().join(format!("gateway-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = write_cert(&dir, "one.test");
        let (certs, key) = tls::load_pem(&c, &k).unwrap();
        let cfg: relay::io::TlsConfig =
            Arc::new(ArcSwap::new(tls::server_config(certs, key).unwrap()));
        let registry = Arc::new(Registry::default());
        let r = Reloader::new(&c, &k, cfg.clone()).with_metrics(registry.clone(), |r| r);
        assert!(!r.reload_if_changed(), "nothing changed yet");
        let before = served_name(&cfg);

        write_cert(&dir, "two.test");
        assert!(r.reload_if_changed());
        let after = served_name(&cfg);
        assert_ne!(before, after, "config swapped");

        // A broken certificate: error, old config kept.
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(after, served_name(&cfg), "old config kept");
        let text = crate::metrics::render(&registry.samples(&relay::core::Stats::default()));
        assert!(
            text.contains("gateway_tls_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_tls_reloads_total{result=\"failed\"} 1"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
