//! A forced-relay loop through the embedded relay: Allocate, CreatePermission to a local UDP
//! peer, Send indication, the peer's answer back as a Data indication. Against the gateway
//! already running on TURN_LISTEN, else against a relay the doctor starts there itself with
//! these settings' realm, secret and peer policy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use auth::{Credential, SecretRing};
use tokio::net::TcpStream;

use super::{reachable, turn, Report, Status, System, WAIT};
use crate::config::Plan;

/// Where the loop ran and how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoopOutcome {
    /// The relay's TCP address.
    pub target: SocketAddr,
    /// The relayed address, when data went both ways; `None` when only Allocate was tried
    /// (the running gateway's policy refuses loopback peers).
    pub relayed: Option<SocketAddr>,
}

/// Running the loop (a real relay, or a fake in tests).
pub(crate) trait LoopRunner {
    /// Runs the loop with `cred` against the running gateway (`live`) or a relay started
    /// for it from `plan` with `ring`.
    async fn run_loop(
        &self,
        plan: &Plan,
        ring: &SecretRing,
        live: bool,
        cred: &Credential,
    ) -> Result<LoopOutcome, String>;
}

/// Decides the credential and reports the loop's outcome.
pub(crate) async fn check(
    plan: &Plan,
    live: bool,
    now: u64,
    runner: &impl LoopRunner,
    r: &mut Report<'_>,
) {
    let what = "embedded relay loop";
    let ring = match &plan.secrets {
        Some(ring) => ring.clone(),
        None if live => {
            r.add(
                Status::Warn,
                what,
                "not checked against the running gateway: TURN_SECRET is unset (random per \
                 start), so doctor cannot mint a credential it accepts",
            );
            return;
        }
        None => match SecretRing::parse(&format!("doctor-{:032x}", rand::random::<u128>())) {
            Ok(r) => r,
            Err(e) => {
                r.add(Status::Fail, what, e.to_string());
                return;
            }
        },
    };
    let cred = match ring.mint("doctor", now, 300) {
        Ok(c) => c,
        Err(e) => {
            r.add(Status::Fail, what, e.to_string());
            return;
        }
    };
    match runner.run_loop(plan, &ring, live, &cred).await {
        Ok(LoopOutcome {
            target,
            relayed: None,
        }) => r.add(
            Status::Ok,
            what,
            format!(
                "Allocate over TCP on {target} works; data path not checked against the \
                 running gateway because its peer policy (rightly) refuses loopback peers"
            ),
        ),
        Ok(LoopOutcome {
            target,
            relayed: Some(relayed),
        }) => r.add(
            Status::Ok,
            what,
            format!(
                "Allocate, CreatePermission, Send and Data through relay {relayed} on \
                 {target}: relayed both ways"
            ),
        ),
        Err(e) => r.add(Status::Fail, what, e),
    }
}

impl LoopRunner for System {
    async fn run_loop(
        &self,
        plan: &Plan,
        ring: &SecretRing,
        live: bool,
        cred: &Credential,
    ) -> Result<LoopOutcome, String> {
        let peer = tokio::net::UdpSocket::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot bind a local UDP peer: {e}"))?;
        let peer_addr = peer
            .local_addr()
            .map_err(|e| format!("cannot bind a local UDP peer: {e}"))?;
        // Without a running gateway: our own relay on TURN_LISTEN, with these settings' realm,
        // secret and policy.
        let mut own = None;
        let target = if live {
            reachable(plan.io.listen)
        } else {
            // The peer stands in for the gateway's own media address, which the policy admits.
            let server = own_relay(plan, ring, vec![peer_addr]).await?;
            let a = reachable(server.local_tcp());
            own = Some(server);
            a
        };
        // A running gateway also refuses its own addresses (except its media ports) unless
        // named: predict its answer the way it decides.
        let own_addrs = crate::own_addrs::interface_addrs();
        let data_path = !live
            || plan.policy.check_with_own(peer_addr, &[], &own_addrs)
                == relay::core::PolicyVerdict::Allow;
        let result = exchange(
            target,
            &cred.username,
            &cred.password,
            &peer,
            peer_addr,
            data_path,
        )
        .await;
        if let Some(mut server) = own {
            server.begin_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), server.drained()).await;
        }
        result
            .map(|relayed| LoopOutcome { target, relayed })
            .map_err(|e| format!("{e} (relay at {target})"))
    }
}

/// A relay on TURN_LISTEN with these settings' realm, secret, peer policy and static users,
/// for checks run while no gateway is.
async fn own_relay(
    plan: &Plan,
    ring: &SecretRing,
    internal_peers: Vec<SocketAddr>,
) -> Result<relay::io::RelayServer, String> {
    let shared = relay::core::Shared::new(
        relay::core::Config {
            realm: plan.relay.realm.clone(),
            ..Default::default()
        },
        ring.clone(),
        plan.policy.clone(),
        relay::core::NonceKey::random(),
    );
    shared.set_internal_peers(internal_peers);
    shared.set_static_users(plan.static_users.clone());
    let io = relay::io::IoConfig {
        listen: plan.io.listen,
        relay_ipv4: Some(IpAddr::from([127, 0, 0, 1])),
        ..Default::default()
    };
    relay::io::RelayServer::start(shared, io, None, None)
        .await
        .map_err(|e| format!("cannot start the relay on TURN_LISTEN: {e}"))
}

/// Allocate (then Release) over TCP with `user` and `password` (a static user) on the
/// running gateway (`live`) or on a relay started here from `plan`; the relayed address.
pub(crate) async fn allocate_only(
    plan: &Plan,
    live: bool,
    user: &str,
    password: &str,
) -> Result<SocketAddr, String> {
    let mut own = None;
    let target = if live {
        reachable(plan.io.listen)
    } else {
        let ring = plan.secrets.clone().map_or_else(
            || SecretRing::parse(&format!("doctor-{:032x}", rand::random::<u128>())),
            Ok,
        );
        let server = own_relay(plan, &ring.map_err(|e| e.to_string())?, Vec::new()).await?;
        let a = reachable(server.local_tcp());
        own = Some(server);
        a
    };
    let run = async {
        let mut c = connect(target, user, password).await?;
        let a = c.allocate().await.map_err(|e| e.to_string())?;
        c.release().await;
        c.close().await;
        Ok::<_, String>(a.relayed)
    };
    let result = run.await;
    if let Some(mut server) = own {
        server.begin_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(2), server.drained()).await;
    }
    result.map_err(|e| format!("{e} (relay at {target})"))
}

/// A TURN client over TCP to `target` with these credentials, connected within [`WAIT`].
async fn connect(
    target: SocketAddr,
    user: &str,
    password: &str,
) -> Result<turn::Client<TcpStream>, String> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(target))
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))?;
    Ok(turn::Client::with_credentials(tcp, user, password, WAIT))
}

async fn exchange(
    target: SocketAddr,
    user: &str,
    pass: &str,
    peer: &tokio::net::UdpSocket,
    peer_addr: SocketAddr,
    data_path: bool,
) -> Result<Option<SocketAddr>, String> {
    let mut c = connect(target, user, pass).await?;
    let a = c
        .allocate()
        .await
        .map_err(|e| format!("Allocate failed: {e}"))?;
    if !data_path {
        c.release().await;
        c.close().await;
        return Ok(None);
    }
    c.create_permission(peer_addr)
        .await
        .map_err(|e| format!("CreatePermission to {peer_addr} failed: {e}"))?;
    let probe = b"gateway doctor probe";
    c.send_indication(peer_addr, probe)
        .await
        .map_err(|e| format!("Send failed: {e}"))?;
    let mut buf = [0u8; 256];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .map_err(|_| "the Send indication never reached the peer".to_owned())?
        .map_err(|e| e.to_string())?;
    if buf.get(..n) != Some(&probe[..]) {
        return Err("the peer received something else than was sent".to_owned());
    }
    peer.send_to(b"pong", from)
        .await
        .map_err(|e| e.to_string())?;
    let (p, data) = c
        .recv_data(WAIT)
        .await
        .map_err(|e| format!("no Data indication back from the relay: {e}"))?;
    if p != relay::client::Origin::Peer(peer_addr) || data != b"pong" {
        return Err(format!("unexpected relayed data ({p:?})"));
    }
    c.release().await;
    c.close().await;
    Ok(Some(a.relayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;

    const SECRET: &str = "loop-secret-0123456789";

    /// A relay that accepts credentials of `accepts` and relays (or not), recording the
    /// credential and mode it was run with.
    struct FakeLoop {
        accepts: Option<SecretRing>,
        relayed: Option<SocketAddr>,
        runs: Mutex<Vec<(bool, String)>>,
    }

    impl LoopRunner for FakeLoop {
        async fn run_loop(
            &self,
            _: &Plan,
            ring: &SecretRing,
            live: bool,
            cred: &Credential,
        ) -> Result<LoopOutcome, String> {
            self.runs
                .lock()
                .unwrap()
                .push((live, cred.username.clone()));
            let accepts = self.accepts.as_ref().unwrap_or(ring);
            accepts
                .verify(&cred.username, &cred.password, 1_000_001)
                .map_err(|e| format!("Allocate failed: the server answered 401 ({e:?})"))?;
            Ok(LoopOutcome {
                target: "127.0.0.1:3478".parse().unwrap(),
                relayed: self.relayed,
            })
        }
    }

    fn plan(args: &[&str]) -> Plan {
        let mut v = vec!["gateway"];
        v.extend_from_slice(args);
        crate::config::Cli::try_parse_from(v)
            .unwrap()
            .settings
            .plan()
            .unwrap()
    }

    fn fake(accepts: Option<&str>, relayed: Option<&str>) -> FakeLoop {
        FakeLoop {
            accepts: accepts.map(|s| SecretRing::parse(s).unwrap()),
            relayed: relayed.map(|a| a.parse().unwrap()),
            runs: Mutex::new(Vec::new()),
        }
    }

    async fn run(p: &Plan, live: bool, runner: &FakeLoop) -> Vec<super::super::Check> {
        let mut r = Report::collecting();
        check(p, live, 1_000_000, runner, &mut r).await;
        r.checks().to_vec()
    }

    #[tokio::test]
    async fn a_loop_that_relays_passes() {
        let runner = fake(None, Some("127.0.0.1:61000"));
        let c = run(&plan(&[]), false, &runner).await;
        assert_eq!(c[0].status, Status::Ok, "{}", c[0]);
        assert!(c[0].detail.contains("relayed both ways"), "{}", c[0]);
        // Without TURN_SECRET and no running gateway, a throwaway secret is used.
        assert!(!runner.runs.lock().unwrap()[0].0);
        // Against the running gateway with TURN_SECRET: Allocate only is still a pass.
        let runner = fake(Some(SECRET), None);
        let c = run(&plan(&["--turn-secret", SECRET]), true, &runner).await;
        assert_eq!(c[0].status, Status::Ok, "{}", c[0]);
        assert!(c[0].detail.contains("data path not checked"), "{}", c[0]);
    }

    #[tokio::test]
    async fn a_running_gateway_with_another_secret_fails() {
        let runner = fake(Some("the-gateways-real-secret-0123"), None);
        let c = run(&plan(&["--turn-secret", SECRET]), true, &runner).await;
        assert_eq!(c[0].status, Status::Fail);
        assert!(c[0].detail.contains("401"), "{}", c[0]);
    }

    #[tokio::test]
    async fn a_running_gateway_without_turn_secret_is_not_checked() {
        let runner = fake(None, None);
        let c = run(&plan(&[]), true, &runner).await;
        assert_eq!(c[0].status, Status::Warn);
        assert!(c[0].detail.contains("TURN_SECRET is unset"), "{}", c[0]);
        assert!(runner.runs.lock().unwrap().is_empty());
    }
}
