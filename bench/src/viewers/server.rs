//! The media server of one viewer step: a gateway child process, pinned when possible.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::net::TcpStream;

use super::LOOPBACK;
use crate::conn::Target;
use crate::http::http;
use crate::servers::{self, ChildGuard, Common};

/// Bound on a server's start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A gateway child process for one step, pinned when possible.
pub(super) struct Gateway {
    pub(super) guard: ChildGuard,
    pub(super) http: SocketAddr,
    pub(super) turn: SocketAddr,
    pub(super) target: Target,
    pub(super) log: PathBuf,
}

impl Gateway {
    pub(super) async fn start(common: &Common, serial: usize) -> anyhow::Result<Self> {
        let turn = SocketAddr::new(LOOPBACK, servers::free_port()?);
        let http = SocketAddr::new(LOOPBACK, servers::free_port()?);
        let log = common.dir.join(format!("viewers-{serial}.log"));
        let mut cmd = common.gateway_command(turn, &http.to_string(), &log)?;
        cmd.env("MEDIA_SOURCE", "testsrc")
            .env("WEBRTC_BIND_IP", "127.0.0.1")
            .env("WEBRTC_ADVERTISE_IP", "127.0.0.1")
            .env("MAX_VIEWERS", "100000");
        let guard = ChildGuard::spawn(cmd, "gateway (viewers)")?;
        let target = common.target(turn, turn)?;
        let mut gw = Self {
            guard,
            http,
            turn,
            target,
            log,
        };
        gw.wait_ready().await?;
        Ok(gw)
    }

    /// Polls (bounded) until `/health` answers 200 and the TURN port accepts.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(why) = self.guard.exited() {
                bail!("{why}; log:\n{}", self.log_tail());
            }
            let probe = async {
                let (status, _) = http(self.http, "GET", "/health", None).await?;
                if status != 200 {
                    bail!("/health answered {status}");
                }
                TcpStream::connect(self.turn).await?;
                Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(())) => return Ok(()),
                _ if Instant::now() > deadline => bail!(
                    "the gateway did not answer /health within {READY_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                ),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    pub(super) fn cpu_seconds(&self) -> f64 {
        servers::cpu_seconds(self.guard.pid()).unwrap_or(f64::NAN)
    }
}
