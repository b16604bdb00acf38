//! ICE server lists: the settings that describe external servers (`ICE_SERVERS`,
//! `STUN_SERVER`, `COTURN_*`) and the per-session list built from them.
//!
//! Every list is minted for one session: the embedded relay's credential has the username
//! `<expiry>:<session-id>`, and so has every external server configured with a shared secret.
//! Order: embedded `turns:` (TCP/TLS), embedded `turn:` over TCP, embedded `turn:` over UDP
//! (when TURN_UDP_LISTEN is set), external TURN servers (`ICE_SERVERS`, then `COTURN_*`),
//! then STUN servers.

use std::str::FromStr;

use crate::ice_url::{host_port, split_scheme, strip_scheme, Scheme};

use auth::{Credential, MintError, SecretRing};
use serde::{Deserialize, Serialize};

/// One entry of `ICE_SERVERS`, as written by the operator (an `RTCIceServer`, optionally with
/// `secret` instead of `credential`).
#[derive(Debug, Clone, Deserialize)]
pub struct ExternalIceServerSpec {
    /// One URL or a list of URLs.
    pub urls: Urls,
    /// Static username.
    #[serde(default)]
    pub username: Option<String>,
    /// Static password.
    #[serde(default)]
    pub credential: Option<String>,
    /// TURN REST secret: the gateway mints `<expiry>:<session-id>` credentials for this server.
    #[serde(default)]
    pub secret: Option<String>,
    /// Accepted for compatibility with `RTCIceServer`; only `"password"` is meaningful.
    #[serde(default, rename = "credentialType")]
    pub credential_type: Option<String>,
}

/// `urls` of an `RTCIceServer`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// A single URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

impl Urls {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(v) => v.clone(),
        }
    }
}

/// The `ICE_SERVERS` setting: a JSON list of [`ExternalIceServerSpec`].
#[derive(Debug, Clone, Default)]
pub struct IceServersSetting(pub Vec<ExternalIceServerSpec>);

impl FromStr for IceServersSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let list: Vec<ExternalIceServerSpec> = serde_json::from_str(s).map_err(|e| {
            format!("not a JSON list of RTCIceServer ({{\"urls\", \"username\", \"credential\" | \"secret\"}}): {e}")
        })?;
        for (i, entry) in list.iter().enumerate() {
            validate_entry(entry).map_err(|e| format!("entry {i}: {e}"))?;
        }
        Ok(Self(list))
    }
}

fn url_scheme(url: &str) -> Option<Scheme> {
    split_scheme(url).map(|(s, _)| s)
}

fn is_turn(url: &str) -> bool {
    url_scheme(url).is_some_and(Scheme::is_turn)
}

/// The port of a URL without one: 5349 for `turns:`/`stuns:`, 3478 otherwise (RFC 7064/7065).
fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Turns | Scheme::Stuns => 5349,
        Scheme::Turn | Scheme::Stun => 3478,
    }
}

fn validate_entry(e: &ExternalIceServerSpec) -> Result<(), String> {
    let urls = e.urls.to_vec();
    if urls.is_empty() {
        return Err("\"urls\" is empty".into());
    }
    for u in &urls {
        let Some((scheme, rest)) = split_scheme(u) else {
            return Err(format!("{u:?} is not a stun:, stuns:, turn: or turns: URL"));
        };
        if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{u:?} is not a stun:, stuns:, turn: or turns: URL"));
        }
        if host_port(rest, default_port(scheme)).is_none() {
            return Err(format!("{u:?}: no HOST[:PORT] after {}", scheme.prefix()));
        }
    }
    if e.secret.is_some() && e.credential.is_some() {
        return Err("give either \"credential\" or \"secret\", not both".into());
    }
    if let Some(s) = &e.secret {
        SecretRing::parse(s).map_err(|err| format!("\"secret\": {err}"))?;
    }
    if urls.iter().any(|u| is_turn(u))
        && e.secret.is_none()
        && (e.username.is_none() || e.credential.is_none())
    {
        return Err(
            "a turn:/turns: server needs \"username\" and \"credential\", or \"secret\"".into(),
        );
    }
    Ok(())
}

/// `STUN_SERVER`: `stun:host:port`, `host:port` or `host` (port 3478).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunServerSetting {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl StunServerSetting {
    /// `stun:HOST:PORT`.
    pub fn url(&self) -> String {
        format!("stun:{}:{}", bracket(&self.host), self.port)
    }
}

impl FromStr for StunServerSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = strip_scheme(t, Scheme::Stun).unwrap_or(t);
        let (host, port) =
            host_port(t, 3478).ok_or_else(|| format!("{s:?}: want stun:HOST:PORT or HOST:PORT"))?;
        Ok(Self { host, port })
    }
}

/// `[v6]` for IPv6 literals, the host unchanged otherwise.
pub fn bracket(host: &str) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// How an external server's credential is obtained.
#[derive(Clone)]
enum ExternalAuth {
    None,
    Static {
        username: String,
        credential: String,
    },
    Minted(SecretRing),
}

/// One external server, validated.
#[derive(Clone)]
struct External {
    urls: Vec<String>,
    auth: ExternalAuth,
    origin: ServerOrigin,
}

/// The setting an external server comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOrigin {
    /// Entry `n` (from 0) of ICE_SERVERS.
    IceServers(usize),
    /// COTURN_HOST with COTURN_SECRET.
    CoturnSecret,
    /// COTURN_HOST with COTURN_USERNAME/COTURN_PASSWORD.
    CoturnStatic,
    /// STUN_SERVER.
    StunServer,
}

impl ServerOrigin {
    /// The setting that holds this server's credential, for messages.
    pub fn credential_setting(self) -> &'static str {
        match self {
            ServerOrigin::IceServers(_) => "its ICE_SERVERS secret or username/credential",
            ServerOrigin::CoturnSecret => "COTURN_SECRET",
            ServerOrigin::CoturnStatic => "COTURN_USERNAME/COTURN_PASSWORD",
            ServerOrigin::StunServer => "STUN_SERVER",
        }
    }
}

/// One `turn:`/`turns:` URL of the plan with a credential for it, for checks that talk to
/// the server (`gateway doctor`).
#[derive(Debug, Clone)]
pub struct TurnTarget {
    /// Where it is configured.
    pub origin: ServerOrigin,
    /// The URL as configured.
    pub url: String,
    /// `turns:` (TLS).
    pub tls: bool,
    /// `?transport=udp`.
    pub udp: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
    /// Username and password: static, or minted now with the configured secret.
    pub credential: Result<(String, String), String>,
}

/// An RTCIceServer as handed to browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// URLs.
    pub urls: Vec<String>,
    /// Username (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    /// Password (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

/// Everything needed to build a session's ICE server list, checked at start-up.
#[derive(Clone)]
pub struct IceServerPlan {
    external: Vec<External>,
    stun: Vec<External>,
    ttl: u64,
}

/// What [`IceServerPlan::new`] needs from the settings.
pub struct PlanInput<'a> {
    /// `ICE_SERVERS`.
    pub ice_servers: &'a [ExternalIceServerSpec],
    /// `COTURN_HOST`, `COTURN_PORT`.
    pub coturn: Option<(&'a str, u16)>,
    /// `COTURN_USERNAME`, `COTURN_PASSWORD`.
    pub coturn_static: Option<(&'a str, &'a str)>,
    /// `COTURN_SECRET`.
    pub coturn_secret: Option<&'a str>,
    /// `STUN_SERVER`.
    pub stun: Option<&'a StunServerSetting>,
    /// Credential lifetime.
    pub ttl: u64,
}

impl IceServerPlan {
    /// Validates and orders the configured servers. Errors name the setting.
    pub fn new(input: PlanInput<'_>) -> Result<Self, crate::config::SettingError> {
        use crate::config::SettingError;
        let mut external = Vec::new();
        let mut stun = Vec::new();
        for (i, e) in input.ice_servers.iter().enumerate() {
            validate_entry(e).map_err(|reason| SettingError {
                setting: "ICE_SERVERS",
                reason: format!("entry {i}: {reason}"),
            })?;
            let urls = e.urls.to_vec();
            let auth = match (&e.secret, &e.username, &e.credential) {
                (Some(s), _, _) => {
                    ExternalAuth::Minted(SecretRing::parse(s).map_err(|err| SettingError {
                        setting: "ICE_SERVERS",
                        reason: format!("entry {i}: \"secret\": {err}"),
                    })?)
                }
                (None, Some(u), Some(c)) => ExternalAuth::Static {
                    username: u.clone(),
                    credential: c.clone(),
                },
                _ => ExternalAuth::None,
            };
            let entry = External {
                urls,
                auth,
                origin: ServerOrigin::IceServers(i),
            };
            if entry.urls.iter().any(|u| is_turn(u)) {
                external.push(entry);
            } else {
                stun.push(entry);
            }
        }
        if let Some((host, port)) = input.coturn {
            let host = bracket(host);
            let urls = vec![
                format!("turn:{host}:{port}?transport=udp"),
                format!("turn:{host}:{port}?transport=tcp"),
            ];
            let auth = match (input.coturn_secret, input.coturn_static) {
                (Some(s), _) => {
                    ExternalAuth::Minted(SecretRing::parse(s).map_err(|err| SettingError {
                        setting: "COTURN_SECRET",
                        reason: err.to_string(),
                    })?)
                }
                (None, Some((u, p))) => ExternalAuth::Static {
                    username: u.to_owned(),
                    credential: p.to_owned(),
                },
                (None, None) => {
                    return Err(SettingError {
                        setting: "COTURN_HOST",
                        reason: "needs COTURN_SECRET, or COTURN_USERNAME and COTURN_PASSWORD"
                            .into(),
                    })
                }
            };
            let origin = match auth {
                ExternalAuth::Minted(_) => ServerOrigin::CoturnSecret,
                _ => ServerOrigin::CoturnStatic,
            };
            external.push(External { urls, auth, origin });
        }
        if let Some(s) = input.stun {
            stun.push(External {
                urls: vec![s.url()],
                auth: ExternalAuth::None,
                origin: ServerOrigin::StunServer,
            });
        }
        Ok(Self {
            external,
            stun,
            ttl: input.ttl,
        })
    }

    /// Every external `turn:`/`turns:` URL, in list order, with a credential for `user`
    /// (minted at `now_unix` when the server shares a secret with us).
    pub fn turn_targets(&self, user: &str, now_unix: u64) -> Vec<TurnTarget> {
        let mut out = Vec::new();
        for e in &self.external {
            let credential = match &e.auth {
                ExternalAuth::None => Err("no credential configured".to_owned()),
                ExternalAuth::Static {
                    username,
                    credential,
                } => Ok((username.clone(), credential.clone())),
                ExternalAuth::Minted(ring) => ring
                    .mint(user, now_unix, self.ttl)
                    .map(|c| (c.username, c.password))
                    .map_err(|err| err.to_string()),
            };
            for url in &e.urls {
                let Some((scheme, rest)) = split_scheme(url).filter(|(s, _)| s.is_turn()) else {
                    continue;
                };
                let Some((host, port)) = host_port(rest, default_port(scheme)) else {
                    continue;
                };
                out.push(TurnTarget {
                    origin: e.origin,
                    url: url.clone(),
                    tls: scheme == Scheme::Turns,
                    udp: rest.to_ascii_lowercase().contains("transport=udp"),
                    host,
                    port,
                    credential: credential.clone(),
                });
            }
        }
        out
    }

    /// The list for `session`: the embedded relay's `embedded_urls` with its credential
    /// `embedded`, then the external servers.
    pub fn for_session(
        &self,
        session: &str,
        embedded_urls: &[String],
        embedded: &Credential,
        now_unix: u64,
    ) -> Result<Vec<IceServer>, MintError> {
        // No embedded URLs (TURN_EMBEDDED=false): the list holds external servers only.
        let mut out = Vec::new();
        if !embedded_urls.is_empty() {
            out.push(IceServer {
                urls: embedded_urls.to_vec(),
                username: Some(embedded.username.clone()),
                credential: Some(embedded.password.clone()),
            });
        }
        for e in self.external.iter().chain(&self.stun) {
            let (username, credential) = match &e.auth {
                ExternalAuth::None => (None, None),
                ExternalAuth::Static {
                    username,
                    credential,
                } => (Some(username.clone()), Some(credential.clone())),
                ExternalAuth::Minted(ring) => {
                    let c = ring.mint(session, now_unix, self.ttl)?;
                    (Some(c.username), Some(c.password))
                }
            };
            out.push(IceServer {
                urls: e.urls.clone(),
                username,
                credential,
            });
        }
        Ok(out)
    }
}

/// RFC 9725 `Link` header values, one per URL:
/// `<turn:…>; rel="ice-server"; username="…"; credential="…"; credential-type="password"`.
pub fn link_headers(servers: &[IceServer]) -> Vec<String> {
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote(u),
                    quote(c)
                ));
            }
            out.push(v);
        }
    }
    out
}

/// Escapes `"` and `\` for a quoted-string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ice_servers() {
        let s: IceServersSetting = r#"[{"urls":"stun:stun.example.org:3478"},
            {"urls":["turn:t.example.org:3478"],"secret":"abc"},
            {"urls":"turns:u.example.org","username":"u","credential":"p"}]"#
            .parse()
            .unwrap();
        assert_eq!(s.0.len(), 3);
        assert!("[{\"urls\":\"turn:x\"}]"
            .parse::<IceServersSetting>()
            .unwrap_err()
            .contains("entry 0"));
        assert!("{".parse::<IceServersSetting>().is_err());
        assert!("[{\"urls\":\"http://x\"}]"
            .parse::<IceServersSetting>()
            .is_err());
        assert!("".parse::<IceServersSetting>().unwrap().0.is_empty());
    }

    #[test]
    fn parses_stun_server() {
        let s: StunServerSetting = "stun:stun.l.google.com:19302".parse().unwrap();
        assert_eq!((s.host.as_str(), s.port), ("stun.l.google.com", 19302));
        let s: StunServerSetting = "127.0.0.1:3478".parse().unwrap();
        assert_eq!(s.url(), "stun:127.0.0.1:3478");
        let s: StunServerSetting = "[::1]:5000".parse().unwrap();
        assert_eq!(s.url(), "stun:[::1]:5000");
        let s: StunServerSetting = "example.org".parse().unwrap();
        assert_eq!(s.port, 3478);
        assert!("stun:host:port".parse::<StunServerSetting>().is_err());
        assert!("".parse::<StunServerSetting>().is_err());
    }

    #[test]
    fn plan_orders_and_mints() {
        let ice: IceServersSetting = r#"[{"urls":"stun:s.example:3478"},
            {"urls":"turn:a.example:3478","secret":"sa"},
            {"urls":"turn:b.example:3478","username":"u","credential":"p"}]"#
            .parse()
            .unwrap();
        let stun: StunServerSetting = "stun:x.example:1".parse().unwrap();
        let plan = IceServerPlan::new(PlanInput {
            ice_servers: &ice.0,
            coturn: Some(("c.example", 3478)),
            coturn_static: None,
            coturn_secret: Some("sc"),
            stun: Some(&stun),
            ttl: 600,
        })
        .unwrap();
        let ring = SecretRing::parse("e").unwrap();
        let emb = ring.mint("sess", 1000, 600).unwrap();
        let list = plan
            .for_session("sess", &["turns:h:443?transport=tcp".into()], &emb, 1000)
            .unwrap();
        let urls: Vec<_> = list.iter().map(|s| s.urls[0].as_str()).collect();
        assert_eq!(
            urls,
            vec![
                "turns:h:443?transport=tcp",
                "turn:a.example:3478",
                "turn:b.example:3478",
                "turn:c.example:3478?transport=udp",
                "stun:s.example:3478",
                "stun:x.example:1"
            ]
        );
        let sa = SecretRing::parse("sa").unwrap();
        let u = list[1].username.as_deref().unwrap();
        assert!(u.ends_with(":sess"));
        sa.verify(u, list[1].credential.as_deref().unwrap(), 1001)
            .unwrap();
        assert_eq!(list[2].username.as_deref(), Some("u"));
        assert!(list[4].username.is_none());
        let links = link_headers(&list);
        assert!(
            links[0].starts_with("<turns:h:443?transport=tcp>; rel=\"ice-server\"; username=\"")
        );
        assert!(links[0].ends_with("credential-type=\"password\""));
        assert_eq!(
            links.last().unwrap(),
            "<stun:x.example:1>; rel=\"ice-server\""
        );
    }

    #[test]
    fn turn_targets_name_their_origin_and_carry_a_credential() {
        let ice: IceServersSetting = r#"[{"urls":"stun:s.example:3478"},
            {"urls":["turns:a.example","turn:a.example?transport=udp"],"secret":"sa"},
            {"urls":"turn:[2001:db8::1]:3479","username":"u","credential":"p"}]"#
            .parse()
            .unwrap();
        let plan = IceServerPlan::new(PlanInput {
            ice_servers: &ice.0,
            coturn: Some(("c.example", 3480)),
            coturn_static: Some(("cu", "cp")),
            coturn_secret: None,
            stun: None,
            ttl: 600,
        })
        .unwrap();
        let t = plan.turn_targets("doctor", 1000);
        let got: Vec<_> = t
            .iter()
            .map(|t| (t.origin, t.host.as_str(), t.port, t.tls, t.udp))
            .collect();
        assert_eq!(
            got,
            vec![
                (ServerOrigin::IceServers(1), "a.example", 5349, true, false),
                (ServerOrigin::IceServers(1), "a.example", 3478, false, true),
                (
                    ServerOrigin::IceServers(2),
                    "2001:db8::1",
                    3479,
                    false,
                    false
                ),
                (ServerOrigin::CoturnStatic, "c.example", 3480, false, true),
                (ServerOrigin::CoturnStatic, "c.example", 3480, false, false),
            ]
        );
        let (user, pass) = t[0].credential.clone().unwrap();
        SecretRing::parse("sa")
            .unwrap()
            .verify(&user, &pass, 1001)
            .unwrap();
        assert_eq!(t[2].credential, Ok(("u".into(), "p".into())));
        assert_eq!(t[4].credential, Ok(("cu".into(), "cp".into())));
        // A TURN URL without a readable host is refused when the settings are read.
        for bad in ["turn:é:99999", "turns:[::1", "turn:a b"] {
            let json = format!("[{{\"urls\":\"{bad}\",\"username\":\"u\",\"credential\":\"p\"}}]");
            let e = json.parse::<IceServersSetting>().unwrap_err();
            assert!(e.contains("entry 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn coturn_without_credentials_is_refused() {
        let e = IceServerPlan::new(PlanInput {
            ice_servers: &[],
            coturn: Some(("c", 3478)),
            coturn_static: None,
            coturn_secret: None,
            stun: None,
            ttl: 600,
        })
        .err()
        .unwrap();
        assert_eq!(e.setting, "COTURN_HOST");
    }
}
