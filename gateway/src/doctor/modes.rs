//! The checks of the two modes that front another WebRTC backend.
//!
//! - Proxy mode (UPSTREAM_URL): the upstream answers at all, and its offer endpoint
//!   (`POST /api/v1/projects/{id}/offer`, which the gateway pulls each project's video
//!   from) exists. The probe offers nothing real: an empty SDP for a project id no backend
//!   has, which a backend refuses (Geti: 422), while a missing endpoint is a 404/405.
//! - Relay-only mode (GATEWAY_MODE=relay): each static user (TURN_STATIC_USERS) allocates,
//!   against the running gateway or a relay started here with these settings; and what
//!   TURN_ALLOWED_PEERS lets the relay reach, which must cover the backend's media
//!   addresses and ports (the doctor cannot know them: it lists the ranges).

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Report, Status, System, WAIT};
use crate::config::{GatewayMode, Plan};

/// The offer path the gateway pulls a project from, for the probe's project id.
const PROBE_OFFER_PATH: &str = "/api/v1/projects/gateway-doctor-probe/offer";

/// Talking to the upstream and to the relay (real, or a fake in tests).
pub(crate) trait ModeProbe {
    /// `method` `url` with `body` (JSON when given); the answer's status.
    async fn http(&self, method: Method, url: &str, body: Option<&str>) -> Result<u16, String>;
    /// Allocate (then Release) with a static user's name and password, against the running
    /// gateway (`live`) or a relay started from `plan`; the relayed address.
    async fn static_allocate(
        &self,
        plan: &Plan,
        live: bool,
        user: &str,
        password: &str,
    ) -> Result<SocketAddr, String>;
}

/// The checks of the mode `plan` runs in (none in plain media mode).
pub(crate) async fn check(plan: &Plan, live: bool, net: &impl ModeProbe, r: &mut Report<'_>) {
    if let Ok(Some(upstream)) = plan.settings.upstream() {
        check_upstream(&upstream.to_string(), net, r).await;
    }
    if plan.settings.gateway_mode == GatewayMode::Relay {
        check_static_users(plan, live, net, r).await;
        check_allowed_peers(plan, r);
    }
}

async fn check_upstream(base: &str, net: &impl ModeProbe, r: &mut Report<'_>) {
    let base = base.trim_end_matches('/');
    let name = format!("UPSTREAM_URL {base}");
    match net.http(Method::GET, &format!("{base}/health"), None).await {
        Err(e) => {
            r.add(
                Status::Fail,
                name,
                format!(
                    "cannot reach the upstream: {e}. Start the backend (e.g. Geti on port \
                     9100) or fix UPSTREAM_URL; until then every proxied request gets 502"
                ),
            );
            return;
        }
        Ok(s) if (200..300).contains(&s) => r.add(Status::Ok, name, format!("GET /health: {s}")),
        Ok(s) => r.add(
            Status::Ok,
            name,
            format!("reachable (GET /health: {s}; the gateway's /health reports it as is)"),
        ),
    }
    let probe = r#"{"webrtc_id":"gateway-doctor","type":"offer","sdp":""}"#;
    let name = format!("upstream offer endpoint {base}/api/v1/projects/{{id}}/offer");
    match net
        .http(
            Method::POST,
            &format!("{base}{PROBE_OFFER_PATH}"),
            Some(probe),
        )
        .await
    {
        Err(e) => r.add(Status::Fail, name, format!("no answer: {e}")),
        Ok(s @ (404 | 405)) => r.add(
            Status::Fail,
            name,
            format!(
                "{s}: the upstream has no such endpoint, and proxy mode serves each project's \
                 viewers by pulling from it. Is UPSTREAM_URL the WebRTC backend (Geti's)?"
            ),
        ),
        Ok(s) if s >= 500 => r.add(
            Status::Warn,
            name,
            format!("answers {s} to an empty offer for an unknown project: check its log"),
        ),
        Ok(s) => r.add(
            Status::Ok,
            name,
            format!(
                "answers ({s} to the doctor's empty offer for an unknown project, as it should)"
            ),
        ),
    }
}

async fn check_static_users(plan: &Plan, live: bool, net: &impl ModeProbe, r: &mut Report<'_>) {
    let list = plan.settings.turn_static_users.as_deref().unwrap_or("");
    let pairs: Vec<(&str, &str)> = relay::core::StaticUsers::entries(list)
        .filter_map(|(_, e)| e)
        .collect();
    if pairs.is_empty() {
        r.add(
            Status::Ok,
            "TURN_STATIC_USERS",
            "none: clients authenticate with REST credentials minted with TURN_SECRET",
        );
        return;
    }
    for (user, password) in pairs {
        let name = format!("static user {user:?}");
        let against = if live {
            "the running gateway"
        } else {
            "a relay started with these settings"
        };
        match net.static_allocate(plan, live, user, password).await {
            Ok(relayed) => r.add(
                Status::Ok,
                name,
                format!("Allocate on {against} works (relayed address {relayed})"),
            ),
            Err(e) => r.add(
                Status::Fail,
                name,
                format!(
                    "Allocate on {against} failed: {e}. Clients configured with this user \
                     (Geti's COTURN_USERNAME/COTURN_PASSWORD) get no relay"
                ),
            ),
        }
    }
}

fn check_allowed_peers(plan: &Plan, r: &mut Report<'_>) {
    let list = plan.settings.turn_allowed_peers.trim();
    let name = "TURN_ALLOWED_PEERS";
    if list.is_empty() {
        r.add(
            Status::Warn,
            name,
            "empty: the relay reaches only public addresses, so a backend on this host or a \
             private network is unreachable; name its media addresses (and ports), e.g. \
             127.0.0.1/32 or 10.0.0.5/32:40000-40100",
        );
        return;
    }
    let everything = list
        .split(',')
        .map(str::trim)
        .any(|e| e.starts_with("0.0.0.0/0") || e.starts_with("[::/0]") || e.starts_with("::/0"));
    if everything {
        r.add(
            Status::Warn,
            name,
            format!(
                "{list}: an entry allows every address; the relay (and anyone holding a \
                 static password) can reach anything. Name the backend's media addresses"
            ),
        );
    } else {
        r.add(
            Status::Ok,
            name,
            format!(
                "the relay reaches only {list} (and public addresses); the backend's media \
                 addresses and ports must be inside"
            ),
        );
    }
}

impl ModeProbe for System {
    async fn http(&self, method: Method, url: &str, body: Option<&str>) -> Result<u16, String> {
        let mut req = Request::builder().method(method).uri(url);
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .map_err(|e| e.to_string())?;
        let run = async {
            let resp = Client::builder(TokioExecutor::new())
                .build_http::<Full<Bytes>>()
                .request(req)
                .await
                .map_err(|e| {
                    // hyper's error says "client error (Connect)"; the cause is below it.
                    let mut text = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        text = format!("{text}: {c}");
                        cause = c.source();
                    }
                    text
                })?;
            let status = resp.status().as_u16();
            // Drain a little of the body, bounded; its content does not matter.
            let _ = Limited::new(resp.into_body(), 4096).collect().await;
            Ok(status)
        };
        tokio::time::timeout(WAIT, run)
            .await
            .map_err(|_| format!("no answer within {} s", WAIT.as_secs()))?
    }

    async fn static_allocate(
        &self,
        plan: &Plan,
        live: bool,
        user: &str,
        password: &str,
    ) -> Result<SocketAddr, String> {
        super::self_loop::allocate_only(plan, live, user, password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;

    /// An upstream answering fixed statuses, and a relay accepting one password.
    struct Fake {
        health: Result<u16, String>,
        offer: Result<u16, String>,
        password: &'static str,
        seen: Mutex<Vec<String>>,
    }

    impl ModeProbe for Fake {
        async fn http(&self, m: Method, url: &str, body: Option<&str>) -> Result<u16, String> {
            self.seen
                .lock()
                .unwrap()
                .push(format!("{m} {url} {}", body.unwrap_or("")));
            if url.ends_with("/health") {
                self.health.clone()
            } else {
                self.offer.clone()
            }
        }
        async fn static_allocate(
            &self,
            _: &Plan,
            _: bool,
            user: &str,
            password: &str,
        ) -> Result<SocketAddr, String> {
            self.seen.lock().unwrap().push(format!("allocate {user}"));
            if password == self.password {
                Ok("127.0.0.1:50000".parse().unwrap())
            } else {
                Err("401 Unauthorized".into())
            }
        }
    }

    fn fake(health: Result<u16, String>, offer: Result<u16, String>) -> Fake {
        Fake {
            health,
            offer,
            password: "password",
            seen: Mutex::new(Vec::new()),
        }
    }

    fn plan(args: &[&str]) -> Plan {
        let mut all = vec!["gateway"];
        all.extend_from_slice(args);
        crate::config::Cli::try_parse_from(all)
            .unwrap()
            .settings
            .plan()
            .unwrap()
    }

    async fn run(p: &Plan, f: &Fake) -> Vec<super::super::Check> {
        let mut r = Report::collecting();
        check(p, false, f, &mut r).await;
        r.checks().to_vec()
    }

    #[tokio::test]
    async fn proxy_mode_checks_the_upstream_and_its_offer_endpoint() {
        let p = plan(&["--upstream-url", "http://127.0.0.1:9100"]);
        let f = fake(Ok(200), Ok(422));
        let c = run(&p, &f).await;
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        let seen = f.seen.lock().unwrap().clone();
        assert_eq!(seen[0], "GET http://127.0.0.1:9100/health ");
        assert!(
            seen[1].starts_with(
                "POST http://127.0.0.1:9100/api/v1/projects/gateway-doctor-probe/offer {"
            ),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_fails_and_names_the_setting() {
        let p = plan(&["--upstream-url", "http://127.0.0.1:9100"]);
        let c = run(&p, &fake(Err("connection refused".into()), Ok(422))).await;
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].name.contains("UPSTREAM_URL"), "{c:?}");
        assert!(c[0].detail.contains("connection refused"), "{c:?}");
    }

    #[tokio::test]
    async fn an_upstream_without_the_offer_endpoint_fails() {
        let p = plan(&["--upstream-url", "http://127.0.0.1:9100"]);
        let c = run(&p, &fake(Ok(404), Ok(404))).await;
        assert_eq!(c[0].status, Status::Ok, "reachable: {c:?}");
        assert_eq!(c[1].status, Status::Fail, "{c:?}");
        assert!(c[1].detail.contains("no such endpoint"), "{c:?}");
    }

    #[tokio::test]
    async fn relay_mode_allocates_with_each_static_user_and_lists_the_peers() {
        let p = plan(&[
            "--gateway-mode",
            "relay",
            "--turn-static-users",
            "user:password,other:wrong",
            "--turn-allowed-peers",
            "127.0.0.1/32",
        ]);
        let c = run(&p, &fake(Ok(200), Ok(200))).await;
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            (c[0].status, c[0].name.as_str()),
            (Status::Ok, "static user \"user\"")
        );
        assert_eq!(c[1].status, Status::Fail, "{c:?}");
        assert!(c[1].detail.contains("401"), "{c:?}");
        assert_eq!(c[2].status, Status::Ok, "{c:?}");
        assert!(c[2].detail.contains("127.0.0.1/32"), "{c:?}");
    }

    #[tokio::test]
    async fn an_allow_everything_entry_is_a_warning() {
        let p = plan(&[
            "--gateway-mode",
            "relay",
            "--turn-allowed-peers",
            "0.0.0.0/0",
        ]);
        let c = run(&p, &fake(Ok(200), Ok(200))).await;
        let peers = c.iter().find(|c| c.name == "TURN_ALLOWED_PEERS").unwrap();
        assert_eq!(peers.status, Status::Warn, "{c:?}");
    }

    #[tokio::test]
    async fn media_mode_has_no_mode_checks() {
        let c = run(&plan(&[]), &fake(Ok(200), Ok(200))).await;
        assert!(c.is_empty(), "{c:?}");
    }
}
