//! The certificate (TLS_CERT/TLS_KEY): it loads, its key matches, it covers TURN_HOST, and
//! it does not expire within 14 days.

use super::{Report, Status};
use crate::config::TlsFiles;
use crate::tls;

/// A certificate expiring sooner than this is reported.
pub const EXPIRY_MARGIN_SECS: i64 = 14 * 24 * 3600;

/// Checks `files` for `host` at `now` (unix seconds). Reads the two files only.
pub(crate) fn check(files: Option<&TlsFiles>, host: &str, now: i64, r: &mut Report<'_>) {
    let Some(files) = files else {
        r.add(
            Status::Warn,
            "TLS_CERT",
            format!(
                "unset: a self-signed certificate for {host} is served; browsers refuse \
                 turns: and HTTPS with it. Set TLS_CERT/TLS_KEY to a certificate for {host}"
            ),
        );
        return;
    };
    let what = format!("TLS_CERT {}", files.cert.display());
    let (certs, key) = match tls::load_pem(&files.cert, &files.key) {
        Ok(x) => x,
        Err(e) => {
            r.add(Status::Fail, what, format!("{e:#}"));
            return;
        }
    };
    let leaf = certs.first().cloned();
    if let Err(e) = tls::server_config(certs, key) {
        r.add(Status::Fail, what, format!("{e:#}"));
        return;
    }
    let info = match leaf.as_ref().map(|c| tls::CertInfo::parse(c)) {
        Some(Ok(i)) => i,
        Some(Err(e)) => {
            r.add(Status::Fail, what, format!("{e:#}"));
            return;
        }
        None => {
            r.add(Status::Fail, what, "holds no certificate");
            return;
        }
    };
    if info.covers(host) {
        r.add(Status::Ok, what.clone(), format!("covers TURN_HOST {host}"));
    } else {
        r.add(
            Status::Fail,
            what.clone(),
            format!(
                "certificate for {} does not cover TURN_HOST {host}: browsers refuse \
                 turns:{host}; get a certificate for {host} or set TURN_HOST to a name it \
                 covers",
                info.names()
            ),
        );
    }
    let left = info.not_after.saturating_sub(now);
    let days = left / 86_400;
    if info.not_after <= now {
        r.add(
            Status::Fail,
            what,
            "certificate has expired: renew it (the gateway reloads changed files)",
        );
    } else if info.not_before > now {
        r.add(
            Status::Fail,
            what,
            "certificate is not valid yet: check the clock or the certificate",
        );
    } else if left < EXPIRY_MARGIN_SECS {
        r.add(
            Status::Warn,
            what,
            format!("expires in {days} days: renew it soon (the gateway reloads changed files)"),
        );
    } else {
        r.add(Status::Ok, what, format!("valid for {days} more days"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A self-signed certificate for `names` in PEM files, removed on drop.
    struct Files {
        dir: PathBuf,
        tls: TlsFiles,
        info: tls::CertInfo,
    }

    impl Files {
        fn new(tag: &str, names: &[&str]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "doctor-cert-{}-{tag}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
            let ck = rcgen::generate_simple_self_signed(names).unwrap();
            let tls = TlsFiles {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            };
            std::fs::write(&tls.cert, ck.cert.pem()).unwrap();
            std::fs::write(&tls.key, ck.signing_key.serialize_pem()).unwrap();
            let info = tls::CertInfo::parse(ck.cert.der()).unwrap();
            Self { dir, tls, info }
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn run(files: Option<&TlsFiles>, host: &str, now: i64) -> Vec<super::super::Check> {
        let mut r = Report::collecting();
        check(files, host, now, &mut r);
        r.checks().to_vec()
    }

    #[test]
    fn a_valid_certificate_for_the_host_passes() {
        let f = Files::new("ok", &["turn.example.test"]);
        let now = f.info.not_before + 86_400;
        let c = run(Some(&f.tls), "turn.example.test", now);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        assert!(c[0].detail.contains("covers TURN_HOST turn.example.test"));
        assert!(c[1].detail.starts_with("valid for "), "{}", c[1]);
    }

    #[test]
    fn another_name_fails() {
        let f = Files::new("name", &["other.example.test"]);
        let c = run(Some(&f.tls), "turn.example.test", f.info.not_before + 1);
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].detail.contains("does not cover TURN_HOST"), "{}", c[0]);
        assert!(c[0].detail.contains("other.example.test"), "{}", c[0]);
    }

    #[test]
    fn expiry_is_reported_before_and_after() {
        let f = Files::new("time", &["h.test"]);
        let (nb, na) = (f.info.not_before, f.info.not_after);
        let c = run(Some(&f.tls), "h.test", na - 3 * 86_400);
        assert_eq!(c[1].status, Status::Warn, "{}", c[1]);
        assert!(c[1].detail.contains("expires in 3 days"), "{}", c[1]);
        let c = run(Some(&f.tls), "h.test", na + 1);
        assert_eq!(c[1].status, Status::Fail);
        assert!(c[1].detail.contains("expired"), "{}", c[1]);
        let c = run(Some(&f.tls), "h.test", nb - 1);
        assert_eq!(c[1].status, Status::Fail);
        assert!(c[1].detail.contains("not valid yet"), "{}", c[1]);
    }

    #[test]
    fn unset_warns_and_unreadable_or_mismatched_files_fail() {
        let c = run(None, "h.test", 0);
        assert_eq!(c[0].status, Status::Warn);
        assert!(c[0].detail.contains("self-signed certificate for h.test"));
        let a = Files::new("a", &["h.test"]);
        let b = Files::new("b", &["h.test"]);
        // A key that is not the certificate's.
        let mixed = TlsFiles {
            cert: a.tls.cert.clone(),
            key: b.tls.key.clone(),
        };
        let c = run(Some(&mixed), "h.test", a.info.not_before + 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Fail, "{}", c[0]);
        let missing = TlsFiles {
            cert: a.dir.join("missing.pem"),
            key: a.tls.key.clone(),
        };
        let c = run(Some(&missing), "h.test", 0);
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].detail.contains("TLS_CERT"), "{}", c[0]);
    }
}
