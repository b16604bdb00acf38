//! The two servers under test, as child processes on loopback: our `gateway` binary and
//! coturn's `turnserver`, configured alike (REST secret, realm, TCP + TLS, no UDP/DTLS,
//! loopback peers allowed, relay address 127.0.0.1, quotas out of the way).
//!
//! Every child is killed when its guard drops (also on panic), when the bench gets
//! SIGINT/SIGTERM (see [`kill_registered`]), and by the kernel if the bench dies
//! (`PR_SET_PDEATHSIG`).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::conn::{self, Target, Transport};

/// PIDs of live children, for the signal handler and the panic hook.
static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every registered child (SIGKILL, by PID).
#[allow(unsafe_code)] // kill(2), see the SAFETY note
pub fn kill_registered() {
    let pids = PIDS.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) on a PID we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Owns a child process; kills and reaps it when dropped.
pub struct ChildGuard {
    child: Child,
    name: &'static str,
}

impl ChildGuard {
    /// Spawns `cmd`, asking the kernel to kill it if the bench's thread dies.
    #[allow(unsafe_code)] // pre_exec + prctl(2), see the SAFETY note
    pub fn spawn(mut cmd: Command, name: &'static str) -> anyhow::Result<Self> {
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        if let Ok(mut p) = PIDS.lock() {
            p.push(child.id());
        }
        Ok(Self { child, name })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<String> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| format!("{} exited: {s}", self.name))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(mut p) = PIDS.lock() {
            p.retain(|x| *x != pid);
        }
    }
}

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gateway,
    Coturn,
}

impl Kind {
    /// `gateway` or `coturn`, as the command line names them.
    pub fn from_arg(arg: &str) -> anyhow::Result<Self> {
        match arg {
            "gateway" => Ok(Kind::Gateway),
            "coturn" => Ok(Kind::Coturn),
            o => bail!("unknown server {o:?} (gateway or coturn)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Coturn => "coturn",
        }
    }
}

/// Files both servers share: the self-signed certificate, the secret.
pub struct Common {
    pub dir: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
    pub secret: String,
    pub gateway_bin: PathBuf,
    /// The core both servers are confined to (see [`crate::cpu`]); `None`: unconfined.
    pub server_core: Option<usize>,
}

impl Common {
    pub fn new(gateway_bin: PathBuf, server_core: Option<usize>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("gateway-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ck = rcgen::generate_simple_self_signed(vec![conn::SERVER_NAME.to_owned()])?;
        let cert_pem = dir.join("cert.pem");
        let key_pem = dir.join("key.pem");
        std::fs::write(&cert_pem, ck.cert.pem())?;
        std::fs::write(&key_pem, ck.signing_key.serialize_pem())?;
        let mut random = [0u8; 16];
        {
            use std::io::Read as _;
            std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        }
        let secret = random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Self {
            dir,
            cert_pem,
            key_pem,
            cert_der: ck.cert.der().clone(),
            secret: format!("bench{secret}"),
            gateway_bin,
            server_core,
        })
    }

    /// The gateway as a child process listening for TURN on `turn` and HTTP on `http`:
    /// confined to the server core, with the bench's secret, realm and certificate, quotas
    /// out of the way, relay address 127.0.0.1, and output to `log`. Its environment is
    /// only what is set here and by the caller: nothing inherited (`STUN_SERVER`,
    /// `ICE_SERVERS`, ...) can send traffic off loopback.
    pub fn gateway_command(
        &self,
        turn: SocketAddr,
        http: &str,
        log: &Path,
    ) -> anyhow::Result<Command> {
        self.gateway_command_in(None, turn, http, log)
    }

    /// [`Common::gateway_command`], run inside `ns` when given.
    pub fn gateway_command_in(
        &self,
        ns: Option<&crate::netns::Netns>,
        turn: SocketAddr,
        http: &str,
        log: &Path,
    ) -> anyhow::Result<Command> {
        self.gateway_command_core(ns, self.server_core, turn, http, log)
    }

    /// [`Common::gateway_command_in`], on `core` (`None`: beside the load generator).
    pub fn gateway_command_core(
        &self,
        ns: Option<&crate::netns::Netns>,
        core: Option<usize>,
        turn: SocketAddr,
        http: &str,
        log: &Path,
    ) -> anyhow::Result<Command> {
        let logf = std::fs::File::create(log)?;
        let mut cmd = match ns {
            Some(ns) => ns.command(core, self.gateway_bin.as_os_str()),
            None => crate::cpu::command_on(core, self.gateway_bin.as_os_str()),
        };
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("TURN_LISTEN", turn.to_string())
            .env("GATEWAY_HTTP_ADDR", http)
            .env("TURN_SECRET", &self.secret)
            .env("TURN_REALM", REALM)
            .env("TURN_HOST", conn::SERVER_NAME)
            .env("TLS_CERT", &self.cert_pem)
            .env("TLS_KEY", &self.key_pem)
            .env("TURN_RELAY_IP", "127.0.0.1")
            .env("TURN_USER_QUOTA", "1000000")
            .env("TURN_TOTAL_QUOTA", "1000000")
            .env("TURN_MAX_CONNECTIONS_PER_IP", "1000000")
            // Every bench client connects from 127.0.0.1, many handshakes at once.
            .env("TURN_MAX_TLS_HANDSHAKES_PER_IP", "1000000")
            .env("TURN_MAX_TLS_HANDSHAKES", "1000000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        Ok(cmd)
    }

    pub fn target(&self, tcp: SocketAddr, tls: SocketAddr) -> anyhow::Result<Target> {
        Ok(Target {
            tcp,
            tls,
            tls_config: conn::tls_client_config(&self.cert_der)?,
            secret: auth::SecretRing::parse(&self.secret)?,
        })
    }
}

impl Drop for Common {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    pub target: Target,
    guard: ChildGuard,
    log: PathBuf,
}

pub const REALM: &str = "bench";

/// The last `lines` lines of a child's log file, for an error message ("" if unreadable).
pub fn tail(log: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Starts `kind` and waits until it answers an Allocate over TCP and over TLS.
    pub async fn start(kind: Kind, common: &Common, serial: u32) -> anyhow::Result<Self> {
        let log = common.dir.join(format!("{}-{serial}.log", kind.name()));
        let (guard, target) = match kind {
            Kind::Gateway => {
                let port = free_port()?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let mut cmd = common.gateway_command(addr, "127.0.0.1:0", &log)?;
                cmd.env("TURN_ALLOWED_PEERS", "127.0.0.1")
                    // As many relay ports as coturn gets (its range is 10000-30000), so
                    // neither runs out in the idle-memory test.
                    .env("TURN_RELAY_PORTS", "30001-49999");
                (
                    ChildGuard::spawn(cmd, "gateway")?,
                    common.target(addr, addr)?,
                )
            }
            Kind::Coturn => {
                let tcp = free_port()?;
                let tls = free_port()?;
                let conf = common.dir.join(format!("turnserver-{serial}.conf"));
                write_coturn_conf(&conf, common, tcp, tls, serial)?;
                let logf = std::fs::File::create(&log)?;
                let mut cmd = crate::cpu::command_on(common.server_core, "turnserver".as_ref());
                cmd.arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(logf.try_clone()?)
                    .stderr(logf);
                (
                    ChildGuard::spawn(cmd, "turnserver")?,
                    common.target(
                        SocketAddr::from(([127, 0, 0, 1], tcp)),
                        SocketAddr::from(([127, 0, 0, 1], tls)),
                    )?,
                )
            }
        };
        let mut server = Self {
            kind,
            target,
            guard,
            log,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Polls (bounded) until a TCP and a TLS Allocate are answered with 401.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for transport in [Transport::Tcp, Transport::Tls] {
            loop {
                if let Some(why) = self.guard.exited() {
                    bail!("{why}; log:\n{}", self.log_tail());
                }
                let probe = async {
                    let s = conn::connect(&self.target, transport).await?;
                    let mut c = conn::Conn::new(s, &self.target.secret, "ready")?;
                    match c.first_contact().await? {
                        Some(401) => Ok(()),
                        a => Err(anyhow!("unexpected answer {a:?} to an unsigned Allocate")),
                    }
                };
                match tokio::time::timeout(Duration::from_secs(2), probe).await {
                    Ok(Ok(())) => break,
                    _ if Instant::now() > deadline => bail!(
                        "{} did not answer over {} within 20 s; log:\n{}",
                        self.kind.name(),
                        transport.name(),
                        self.log_tail()
                    ),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }

    /// User + system CPU seconds of the whole process (all threads).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid()).unwrap_or(0)
    }
}

fn write_coturn_conf(
    path: &Path,
    common: &Common,
    tcp: u16,
    tls: u16,
    serial: u32,
) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let dir = common.dir.display();
    // Relay ports: a range of its own (the gateway gets 30001-49999, below the media
    // ports), large enough for the 10,000-allocation memory test.
    writeln!(
        f,
        "listening-ip=127.0.0.1\n\
         relay-ip=127.0.0.1\n\
         listening-port={tcp}\n\
         tls-listening-port={tls}\n\
         use-auth-secret\n\
         static-auth-secret={secret}\n\
         realm={REALM}\n\
         cert={cert}\n\
         pkey={key}\n\
         no-udp\n\
         no-dtls\n\
         no-rfc5780\n\
         allow-loopback-peers\n\
         no-multicast-peers\n\
         no-cli\n\
         min-port=10000\n\
         max-port=30000\n\
         total-quota=0\n\
         user-quota=0\n\
         max-bps=0\n\
         pidfile={dir}/turnserver-{serial}.pid\n\
         userdb={dir}/turndb-{serial}\n\
         log-file=stdout\n\
         simple-log",
        secret = common.secret,
        cert = common.cert_pem.display(),
        key = common.key_pem.display(),
    )?;
    Ok(())
}

#[allow(unsafe_code)] // sysconf(3), see the SAFETY note
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` from /proc/PID/stat, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// VmRSS of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises RLIMIT_NOFILE (soft and hard) to `want` if allowed, else the soft limit to the
/// hard one. Children inherit it. Returns the soft limit in force.
#[allow(unsafe_code)] // getrlimit/setrlimit(2), see the SAFETY note
pub fn raise_nofile(want: u64) -> u64 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(cur.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            let soft = libc::rlimit {
                rlim_cur: cur.rlim_max,
                rlim_max: cur.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
    }
    cur.rlim_cur
}
