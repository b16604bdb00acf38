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

/// Loads a certificate chain and key from PEM files. Errors are one line naming the
/// setting, the file and the fix.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    const CERT_FIX: &str = "set TLS_CERT to the PEM certificate chain (e.g. fullchain.pem), or \
                            unset TLS_CERT and TLS_KEY to serve a self-signed certificate";
    const KEY_FIX: &str = "set TLS_KEY to the PEM private key of TLS_CERT (e.g. privkey.pem)";
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error("TLS_CERT", cert, "certificate", &e, CERT_FIX))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("TLS_CERT", cert, "certificate", &e, CERT_FIX))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "TLS_CERT: {} holds no PEM certificate (no BEGIN CERTIFICATE section): {CERT_FIX}",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_error("TLS_KEY", key, "private key", &e, KEY_FIX))?;
    Ok((certs, key))
}

/// One line for a PEM file that could not be used.
fn pem_error(
    setting: &str,
    path: &Path,
    what: &str,
    e: &rustls::pki_types::pem::Error,
    fix: &str,
) -> anyhow::Error {
    use rustls::pki_types::pem::Error as Pem;
    let path = path.display();
    match e {
        Pem::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            anyhow!("{setting}: {path} does not exist: {fix}")
        }
        Pem::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => anyhow!(
            "{setting}: {path} is not readable by the user the gateway runs as: make it \
             readable (chown/chmod, or systemd LoadCredential=), or {fix}"
        ),
        Pem::Io(io) => anyhow!("{setting}: cannot read {path}: {io}: {fix}"),
        Pem::NoItemsFound => anyhow!("{setting}: {path} holds no PEM {what}: {fix}"),
        other => anyhow!("{setting}: {path} is not a valid PEM {what} ({other}): {fix}"),
    }
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
        .context(
            "TLS_CERT/TLS_KEY: the key does not match the certificate or is unsupported: set \
             TLS_KEY to the private key issued with TLS_CERT (RSA, ECDSA P-256/P-384 or Ed25519)",
        )?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// What the gateway needs to know about a certificate: its names and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject alternative names: DNS names (possibly `*.` wildcards).
    pub dns_names: Vec<String>,
    /// Subject alternative names: IP addresses.
    pub ip_addrs: Vec<std::net::IpAddr>,
    /// Subject common name, if any (not used for matching: browsers ignore it).
    pub common_name: Option<String>,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> anyhow::Result<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
        let mut dns_names = Vec::new();
        let mut ip_addrs = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            ip_addrs.push(std::net::IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            ip_addrs.push(std::net::IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(Self {
            dns_names,
            ip_addrs,
            common_name,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the certificate's subject alternative names cover `host` (a DNS name or
    /// an IP address), as a browser checks it: exact match, or a `*.` wildcard standing
    /// for exactly one leftmost label.
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return self
                .ip_addrs
                .iter()
                .any(|a| a.to_canonical() == ip.to_canonical());
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns_names.iter().any(|n| {
            let n = n.trim_end_matches('.');
            if let Some(suffix) = n.strip_prefix("*.") {
                host.split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
            } else {
                n == host
            }
        })
    }

    /// The names, for messages.
    pub fn names(&self) -> String {
        let mut v: Vec<String> = self.dns_names.clone();
        v.extend(self.ip_addrs.iter().map(|a| a.to_string()));
        if v.is_empty() {
            "no subject alternative names".to_owned()
        } else {
            v.join(", ")
        }
    }
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

    #[test]
    fn certificate_and_key_errors_name_the_setting_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("gateway-tls-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c1, _) = self_signed("a.example.test").unwrap();
        let pem = |der: &[u8], label: &str| {
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
        };
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, pem(c1[0].as_ref(), "CERTIFICATE")).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a pem file\n").unwrap();
        let other_key = dir.join("other-key.pem");
        let ck = rcgen::generate_simple_self_signed(vec!["b.example.test".to_owned()]).unwrap();
        std::fs::write(&other_key, ck.signing_key.serialize_pem()).unwrap();
        let missing = dir.join("missing.pem");

        let cases: Vec<(anyhow::Error, &[&str])> = vec![
            (
                load_pem(&missing, &other_key).unwrap_err(),
                &[
                    "TLS_CERT:",
                    "does not exist",
                    "set TLS_CERT to",
                    "unset TLS_CERT and TLS_KEY",
                ],
            ),
            (
                load_pem(&garbage, &other_key).unwrap_err(),
                &["TLS_CERT:", "holds no PEM certificate", "set TLS_CERT to"],
            ),
            (
                load_pem(&cert, &missing).unwrap_err(),
                &["TLS_KEY:", "does not exist", "set TLS_KEY to"],
            ),
            (
                // A certificate where the key should be: the key file is unusable.
                load_pem(&cert, &cert).unwrap_err(),
                &["TLS_KEY:", "holds no PEM private key", "set TLS_KEY to"],
            ),
            (
                load_pem(&cert, &dir).unwrap_err(),
                &["TLS_KEY:", "cannot read", "set TLS_KEY to"],
            ),
            (
                pem_error(
                    "TLS_KEY",
                    &other_key,
                    "private key",
                    &rustls::pki_types::pem::Error::Io(std::io::ErrorKind::PermissionDenied.into()),
                    "set TLS_KEY",
                ),
                &["TLS_KEY:", "not readable by the user", "chown/chmod"],
            ),
            (
                {
                    let (c, k) = load_pem(&cert, &other_key).unwrap();
                    server_config(c, k).unwrap_err()
                },
                &[
                    "TLS_CERT/TLS_KEY",
                    "does not match",
                    "set TLS_KEY to the private key",
                ],
            ),
        ];
        std::fs::remove_dir_all(&dir).unwrap();
        for (e, want) in cases {
            let m = format!("{e:#}");
            assert!(!m.contains('\n'), "{m}");
            for w in want {
                assert!(m.contains(w), "{w:?} missing in {m}");
            }
        }
    }

    #[test]
    fn cert_info_names_and_wildcards() {
        let ck = rcgen::generate_simple_self_signed(vec![
            "turn.example.test".to_owned(),
            "*.edge.example.test".to_owned(),
            "203.0.113.7".to_owned(),
        ])
        .unwrap();
        let info = CertInfo::parse(ck.cert.der()).unwrap();
        assert!(info.covers("turn.example.test"));
        assert!(info.covers("TURN.example.test."));
        assert!(info.covers("a.edge.example.test"));
        assert!(!info.covers("a.b.edge.example.test"));
        assert!(!info.covers("edge.example.test"));
        assert!(info.covers("203.0.113.7"));
        assert!(!info.covers("203.0.113.8"));
        assert!(!info.covers("other.example.test"));
        assert!(info.not_after > info.not_before);
    }
}
