//! Janus (Debian's `janus` package, its streaming plugin) as the media server the gateway
//! is compared with: one RTP mountpoint fed with the same H.264 RTP as the gateway's RTP
//! source, viewers over direct UDP.
//!
//! Janus runs as it ships, with only what the comparison needs loaded (the streaming plugin
//! and the HTTP transport, from a plugins folder holding just those two), full ICE, one
//! event loop (all handles share one thread, the setting Janus documents for many
//! viewers, and the one that fits the one core it gets), no session timeout (the bench's
//! viewers do not long-poll once they play). It runs in the bench's network namespace
//! ([`crate::netns`]): Janus never offers a loopback candidate.
//!
//! A viewer's signaling is Janus's HTTP API: `create` → `attach` the streaming plugin →
//! `watch` (answered `ack`; the offer comes as an event on the session's long poll) →
//! `start` with the viewer's answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

use crate::http::{http, snippet};
use crate::netns::{Netns, SERVER_IP};
use crate::servers::{self, ChildGuard, Common};

/// The mountpoint's id.
const MOUNTPOINT: u64 = 1;
/// Janus's HTTP API port and the mountpoint's RTP port, inside the namespace.
const API_PORT: u16 = 8188;
const RTP_PORT: u16 = 5004;
/// Bound on Janus's start and on its mountpoint receiving RTP.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on waiting for the offer on the long poll.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian (any architecture) puts Janus's plugins and transports.
fn lib_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("janus")))
        .collect();
    dirs.push(PathBuf::from("/usr/lib/janus"));
    dirs.into_iter()
        .find(|d| d.join("plugins/libjanus_streaming.so").is_file())
}

/// Janus's version (`janus --version`), or why it cannot run.
pub fn available() -> Result<String, String> {
    let out = std::process::Command::new("janus")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("janus is not installed (apt install janus): {e}"))?;
    if lib_dir().is_none() {
        return Err("janus is installed but its streaming plugin was not found".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find(|l| l.contains("Janus"))
        .unwrap_or("janus")
        .trim()
        .to_owned())
}

/// A Janus child process for one step.
pub struct Janus {
    guard: ChildGuard,
    /// Its HTTP API.
    pub api: SocketAddr,
    /// Where its mountpoint takes RTP.
    pub rtp: SocketAddr,
    log: PathBuf,
}

fn write_config(dir: &Path, ns: &Netns) -> anyhow::Result<()> {
    let lib = lib_dir().context("Janus's plugin folder not found")?;
    for (sub, file) in [
        ("plugins", "plugins/libjanus_streaming.so"),
        ("transports", "transports/libjanus_http.so"),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        let link = d.join(Path::new(file).file_name().context("file name")?);
        if !link.exists() {
            std::os::unix::fs::symlink(lib.join(file), &link)?;
        }
    }
    std::fs::create_dir_all(dir.join("empty"))?;
    let d = dir.display();
    let iface = ns.inner_interface();
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            "general: {{\n  configs_folder = \"{d}\"\n  plugins_folder = \"{d}/plugins\"\n  \
             transports_folder = \"{d}/transports\"\n  events_folder = \"{d}/empty\"\n  \
             loggers_folder = \"{d}/empty\"\n  debug_level = 3\n  debug_colors = false\n  \
             session_timeout = 0\n  event_loops = 1\n  interface = \"{SERVER_IP}\"\n}}\n\
             media: {{\n  rtp_port_range = \"20000-60000\"\n}}\n\
             nat: {{\n  full_trickle = false\n  ice_lite = false\n  \
             ice_enforce_list = \"{iface}\"\n}}\n\
             plugins: {{\n}}\ntransports: {{\n}}\nevents: {{\n  broadcast = false\n}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n  base_path = \"/janus\"\n  http = true\n  port = {API_PORT}\n  \
             ip = \"{SERVER_IP}\"\n  https = false\n}}\nadmin: {{\n  admin_http = false\n  \
             admin_https = false\n}}\n"
        ),
    )?;
    std::fs::write(
        dir.join("janus.plugin.streaming.jcfg"),
        format!(
            "bench: {{\n  type = \"rtp\"\n  id = {MOUNTPOINT}\n  description = \"bench\"\n  \
             media = (\n    {{\n      type = \"video\"\n      mid = \"v\"\n      port = \
             {RTP_PORT}\n      iface = \"{SERVER_IP}\"\n      pt = {pt}\n      codec = \
             \"h264\"\n      rtpmap = \"H264/90000\"\n      fmtp = \
             \"profile-level-id=42e01f;packetization-mode=1\"\n    }}\n  )\n}}\n",
            pt = crate::clip::PAYLOAD_TYPE
        ),
    )?;
    Ok(())
}

impl Janus {
    /// Starts Janus in `ns` (on the servers' core) and waits until its API answers.
    pub async fn start(common: &Common, ns: &Netns, serial: usize) -> anyhow::Result<Self> {
        let dir = common.dir.join(format!("janus-{serial}"));
        std::fs::create_dir_all(&dir)?;
        write_config(&dir, ns)?;
        let log = common.dir.join(format!("janus-{serial}.log"));
        let logf = std::fs::File::create(&log)?;
        let mut cmd = ns.command(common.server_core, "janus".as_ref());
        cmd.arg("-F")
            .arg(&dir)
            .arg("-o")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let mut janus = Self {
            guard: ChildGuard::spawn(cmd, "janus")?,
            api: SocketAddr::new(SERVER_IP, API_PORT),
            rtp: SocketAddr::new(SERVER_IP, RTP_PORT),
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(why) = janus.guard.exited() {
                bail!("{why}; log:\n{}", janus.log_tail());
            }
            if let Ok(Ok((200, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                http(janus.api, "GET", "/janus/info", None),
            )
            .await
            {
                return Ok(janus);
            }
            if Instant::now() > deadline {
                bail!(
                    "Janus did not answer /janus/info within {READY_TIMEOUT:?}; log:\n{}",
                    janus.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the mountpoint has received RTP lately.
    pub async fn wait_live(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let (session, handle) = attach(self.api).await?;
        let path = format!("/janus/{session}/{handle}");
        loop {
            if let Some(why) = self.guard.exited() {
                bail!("{why}; log:\n{}", self.log_tail());
            }
            let body = json!({
                "janus": "message", "transaction": "live",
                "body": {"request": "info", "id": MOUNTPOINT},
            });
            let (_, text) = http(self.api, "POST", &path, Some(&body.to_string())).await?;
            let doc: Value = serde_json::from_str(&text).unwrap_or_default();
            let age = doc
                .pointer("/plugindata/data/info/media/0/age_ms")
                .and_then(Value::as_u64);
            if age.is_some_and(|a| a < 500) {
                destroy(self.api, session).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Janus's mountpoint got no RTP within {READY_TIMEOUT:?} ({}); log:\n{}",
                    snippet(&text),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn cpu_seconds(&self) -> f64 {
        servers::cpu_seconds(self.guard.pid()).unwrap_or(f64::NAN)
    }

    fn log_tail(&self) -> String {
        servers::tail(&self.log, 10)
    }
}

/// POSTs a Janus request; returns the parsed reply, refusing a `janus: error`.
async fn call(api: SocketAddr, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, text) = http(api, "POST", path, Some(&body.to_string())).await?;
    if status != 200 {
        bail!("Janus {path} answered {status}: {}", snippet(&text));
    }
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("Janus {path}: not JSON"))?;
    if doc.get("janus").and_then(Value::as_str) == Some("error") {
        bail!("Janus {path}: {}", snippet(&text));
    }
    Ok(doc)
}

fn id_of(doc: &Value) -> anyhow::Result<u64> {
    doc.pointer("/data/id")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("no data.id in {}", snippet(&doc.to_string())))
}

/// A session with the streaming plugin attached: (session, handle).
async fn attach(api: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let session = id_of(
        &call(
            api,
            "/janus",
            json!({"janus": "create", "transaction": "c"}),
        )
        .await?,
    )?;
    let handle = id_of(
        &call(
            api,
            &format!("/janus/{session}"),
            json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}),
        )
        .await?,
    )?;
    Ok((session, handle))
}

async fn destroy(api: SocketAddr, session: u64) {
    let _ = call(
        api,
        &format!("/janus/{session}"),
        json!({"janus": "destroy", "transaction": "d"}),
    )
    .await;
}

/// One viewer's Janus session, watching the mountpoint.
pub struct Watch {
    api: SocketAddr,
    session: u64,
    handle: u64,
}

impl Watch {
    /// `create`, `attach`, `watch`; returns the session and Janus's offer (from the long
    /// poll).
    pub async fn begin(api: SocketAddr) -> anyhow::Result<(Self, String)> {
        let (session, handle) = attach(api).await?;
        let w = Self {
            api,
            session,
            handle,
        };
        call(
            api,
            &format!("/janus/{session}/{handle}"),
            json!({"janus": "message", "transaction": "w", "body": {"request": "watch", "id": MOUNTPOINT}}),
        )
        .await?;
        let deadline = Instant::now() + OFFER_TIMEOUT;
        while Instant::now() < deadline {
            let (status, text) =
                http(api, "GET", &format!("/janus/{session}?maxev=1"), None).await?;
            if status != 200 {
                bail!("Janus long poll answered {status}: {}", snippet(&text));
            }
            let doc: Value = serde_json::from_str(&text).context("Janus event: not JSON")?;
            if let Some(sdp) = doc.pointer("/jsep/sdp").and_then(Value::as_str) {
                return Ok((w, sdp.to_owned()));
            }
            if doc.get("janus").and_then(Value::as_str) == Some("error")
                || doc.pointer("/plugindata/data/error").is_some()
            {
                bail!("Janus refused to watch: {}", snippet(&text));
            }
        }
        bail!("no offer from Janus within {OFFER_TIMEOUT:?}")
    }

    /// `start` with the viewer's answer.
    pub async fn start(&self, answer: &str) -> anyhow::Result<()> {
        call(
            self.api,
            &format!("/janus/{}/{}", self.session, self.handle),
            json!({"janus": "message", "transaction": "s", "body": {"request": "start"},
                   "jsep": {"type": "answer", "sdp": answer}}),
        )
        .await
        .map(drop)
    }
}
