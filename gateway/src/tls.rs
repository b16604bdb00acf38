//! The TLS identity on TURN_LISTEN: PEM files from TLS_CERT/TLS_KEY, or a self-signed
//! certificate for TURN_HOST (fine for trying things out; browsers refuse it for TURNS).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// ALPN ids we accept: TURN (RFC 7443) and HTTP/1.1. Clients that send no ALPN (browsers
/// on TURNS) are classified by their first bytes.
pub const ALPN: &[&[u8]] = &[b"stun.turn", b"http/1.1"];

/// Loads a certificate chain and key from PEM files.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS_CERT: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "TLS_CERT: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(anyhow!("TLS_CERT: {} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("TLS_KEY: {} holds no PEM private key", key.display()))?;
    Ok((certs, key))
}

/// Makes a self-signed certificate for `host` (and `localhost`).
pub fn self_signed(
    host: &str,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut names = vec![host.to_owned()];
    if host != "localhost" {
        names.push("localhost".to_owned());
    }
    let ck = rcgen::generate_simple_self_signed(names).context("self-signed certificate")?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| anyhow!("self-signed key: {e}"))?;
    Ok((vec![ck.cert.der().clone()], key))
}

/// Builds the server configuration.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS_CERT/TLS_KEY: the key does not match the certificate or is unsupported")?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_builds_a_config() {
        let (c, k) = self_signed("turn.example.test").unwrap();
        server_config(c, k).unwrap();
    }

    #[test]
    fn missing_files_name_the_setting() {
        let e = load_pem(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("TLS_CERT"), "{e:#}");
    }
}
