//! The media server of one viewer step, with the ffmpeg that feeds it the clip: a gateway
//! (on loopback for the TURN/TLS path, in the bench's network namespace for direct UDP) or
//! Janus (in the namespace). Pinned to the servers' core when possible.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::net::TcpStream;

use super::{Path, LOOPBACK};
use crate::clip::Clip;
use crate::conn::Target;
use crate::http::http;
use crate::janus::Janus;
use crate::netns::{Netns, SERVER_IP};
use crate::servers::{self, ChildGuard, Common};

/// Bound on a server's start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

enum Process {
    Gateway {
        guard: ChildGuard,
        log: PathBuf,
    },
    Janus(Janus),
    /// Redis, the origin and one edge node; the edge is the server measured.
    Cluster(crate::cluster::Cluster),
}

/// A media server child process for one step, and its feed.
pub(super) struct MediaServer {
    process: Process,
    /// ffmpeg streaming the clip to it; dropped (killed) with the server (the cluster
    /// holds its own).
    _feed: Option<ChildGuard>,
    /// The gateway's HTTP API, or Janus's.
    pub(super) http: SocketAddr,
    /// The gateway's TURN port (TURN/TLS path).
    pub(super) turn: SocketAddr,
    /// How to reach the relay over TLS (TURN/TLS path).
    pub(super) target: Option<Target>,
    /// Where the server's media comes from.
    pub(super) ip: IpAddr,
}

impl MediaServer {
    pub(super) async fn start(
        common: &Common,
        path: Path,
        clip: &Clip,
        ns: Option<&Netns>,
        serial: usize,
    ) -> anyhow::Result<Self> {
        if path == Path::JanusDirect {
            let ns = ns.ok_or_else(|| anyhow::anyhow!("Janus needs the network namespace"))?;
            let mut janus = Janus::start(common, ns, serial).await?;
            let feed = ChildGuard::spawn(clip.stream_command(janus.rtp), "ffmpeg (clip)")?;
            janus.wait_live().await?;
            return Ok(Self {
                http: janus.api,
                turn: janus.api,
                target: None,
                ip: SERVER_IP,
                process: Process::Janus(janus),
                _feed: Some(feed),
            });
        }
        if path == Path::ClusterEdge {
            let ns =
                ns.ok_or_else(|| anyhow::anyhow!("the cluster needs the network namespace"))?;
            let cluster = crate::cluster::Cluster::start(
                common,
                ns,
                clip,
                1,
                crate::cluster::Pinned::Edge,
                serial,
            )
            .await?;
            let edge = cluster
                .edges
                .first()
                .map(|e| e.http)
                .ok_or_else(|| anyhow::anyhow!("no edge node"))?;
            return Ok(Self {
                http: edge,
                turn: edge,
                target: None,
                ip: SERVER_IP,
                process: Process::Cluster(cluster),
                _feed: None,
            });
        }
        let ip = if ns.is_some() { SERVER_IP } else { LOOPBACK };
        let free = |fixed| -> anyhow::Result<u16> {
            // Inside the namespace every port is free; on loopback ask the kernel.
            Ok(if ns.is_some() {
                fixed
            } else {
                servers::free_port()?
            })
        };
        let turn = SocketAddr::new(ip, free(3478)?);
        let http_addr = SocketAddr::new(ip, free(8080)?);
        let rtp = SocketAddr::new(ip, free(5004)?);
        let log = common.dir.join(format!("viewers-{serial}.log"));
        let mut cmd = common.gateway_command_in(ns, turn, &http_addr.to_string(), &log)?;
        cmd.env("MEDIA_SOURCE", format!("rtp://{rtp}?codec=h264"))
            .env("WEBRTC_BIND_IP", ip.to_string())
            .env("WEBRTC_ADVERTISE_IP", ip.to_string())
            .env("MAX_VIEWERS", "100000");
        let guard = ChildGuard::spawn(cmd, "gateway (viewers)")?;
        let feed = ChildGuard::spawn(clip.stream_command(rtp), "ffmpeg (clip)")?;
        let target = (path == Path::GatewayTurnTls)
            .then(|| common.target(turn, turn))
            .transpose()?;
        let mut server = Self {
            process: Process::Gateway { guard, log },
            _feed: Some(feed),
            http: http_addr,
            turn,
            target,
            ip,
        };
        server.wait_ready().await?;
        if let Process::Gateway { guard, log } = &mut server.process {
            crate::rtp_join::wait_live(http_addr, guard, log).await?;
        }
        Ok(server)
    }

    /// Polls (bounded) until the gateway's `/health` answers 200 and its TURN port accepts.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Process::Gateway { guard, .. } = &mut self.process {
                if let Some(why) = guard.exited() {
                    bail!("{why}; log:\n{}", self.log_tail());
                }
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
        let Process::Gateway { log, .. } = &self.process else {
            return String::new();
        };
        servers::tail(log, 10)
    }

    pub(super) fn cpu_seconds(&self) -> f64 {
        match &self.process {
            Process::Gateway { guard, .. } => servers::cpu_seconds(guard.pid()).unwrap_or(f64::NAN),
            Process::Janus(j) => j.cpu_seconds(),
            Process::Cluster(c) => c.edges.first().map_or(f64::NAN, |e| e.cpu_seconds()),
        }
    }
}
