//! Several gateways as one service: a real `redis-server` and three `gateway` processes on
//! loopback (127.0.0.2, 127.0.0.3, 127.0.0.4), each its own node with its own TURN host
//! name. An aiortc publisher pushes `cam` by WHIP to node 1; a second publisher on node 2 is
//! refused; viewers on nodes 2 and 3 (one relay-only over TURN/TLS on node 3) decode the
//! publisher's picture; node 1 serves exactly one pull per edge node. Then node 2 is killed
//! (node 3's viewers keep video, node 2's viewers reconnect to node 3, the directory forgets
//! node 2 within its TTL), Redis is stopped for 30 s (every viewer keeps video), and when the
//! viewers leave the pulls stop.
// An integration test: a panic here is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::coturn::{free_udp_range, gateway_bin};
use gateway_tests::http::request;
use gateway_tests::peer::{decoded_size, relayed_viewer, relayed_viewer_as, wait_for, Viewer};
use gateway_tests::publisher::Publisher;
use gateway_tests::{free_tcp_port, TestCert};
use serde_json::Value;

const SECRET: &str = "cluster-test-secret-0123456789";
const WHIP_TOKEN: &str = "cluster-whip-token-0123456789";
const API_TOKEN: &str = "cluster-api-token-0123456789";
const SIZE: (usize, usize) = (320, 240);
const MEDIA_LIMIT: Duration = Duration::from_secs(20);
/// A node's record lives this long without a heartbeat (gateway::cluster::store).
const NODE_TTL: Duration = gateway::cluster::store::NODE_TTL;
const HEARTBEAT: Duration = gateway::cluster::store::HEARTBEAT;

/// A `redis-server` on loopback, no persistence; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let port = free_tcp_port();
        let dir =
            std::env::temp_dir().join(format!("gw-cluster-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir,
        };
        r.run();
        r
    }

    /// Starts (again) on the same port, and waits until it answers PING.
    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (Debian package redis-server; ./tests/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One gateway node: a `gateway` process on 127.0.0.{n+1}, killed on drop. Its log goes to
/// a file, shown when the test fails.
struct Node {
    id: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    http: SocketAddr,
    turn: SocketAddr,
    log: std::path::PathBuf,
}

impl Node {
    /// Node `n`, its sessions' TURN URLs naming `n{n}.turn.test`.
    fn start(n: u8, redis: &Redis, cert: &TestCert) -> Node {
        Node::start_named(n, redis, cert, &format!("n{n}.turn.test"))
    }

    /// Node `n`, its sessions' TURN URLs naming `turn_host`.
    fn start_named(n: u8, redis: &Redis, cert: &TestCert, turn_host: &str) -> Node {
        let ip = format!("127.0.0.{}", n + 1);
        let id = format!("n{n}");
        let (cert_path, key_path) = cert.write_pem_files();
        let http: SocketAddr = format!("{ip}:{}", free_tcp_port()).parse().unwrap();
        let turn: SocketAddr = format!("{ip}:{}", free_tcp_port()).parse().unwrap();
        // Unique per node process: the tests of this file run side by side.
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "gw-cluster-{}-{serial}-{id}.log",
            std::process::id()
        ));
        let env: Vec<(String, String)> = [
            ("GATEWAY_HTTP_ADDR", http.to_string()),
            ("TURN_LISTEN", turn.to_string()),
            ("TURN_SECRET", SECRET.to_owned()),
            ("TURN_HOST", turn_host.to_owned()),
            // Each node's relay sockets on its own address (the ports of one range).
            ("TURN_RELAY_IP", ip.clone()),
            ("TLS_CERT", cert_path.to_string_lossy().into_owned()),
            ("TLS_KEY", key_path.to_string_lossy().into_owned()),
            ("WEBRTC_BIND_IP", ip.clone()),
            ("WEBRTC_ADVERTISE_IP", ip.clone()),
            ("WEBRTC_PORT_RANGE", free_udp_range()),
            ("STREAMS", "cam=whip".to_owned()),
            ("WHIP_TOKEN", WHIP_TOKEN.to_owned()),
            ("API_TOKEN", API_TOKEN.to_owned()),
            ("PULL_IDLE_TIMEOUT", "2".to_owned()),
            ("CLUSTER_REDIS_URL", redis.url()),
            ("CLUSTER_NODE_ID", id.clone()),
            ("RUST_LOG", "gateway=info,str0m=warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let child = Command::new(gateway_bin())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("STUN_SERVER")
            .env_remove("ICE_SERVERS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn gateway");
        Node {
            id,
            env,
            child: Some(child),
            http,
            turn,
            log,
        }
    }

    async fn ready(&self) {
        let http = self.http;
        wait_for(&format!("{} answers /health", self.id), || async move {
            tokio::net::TcpStream::connect(http).await.is_ok()
                && request(http, "GET", "/health", &[], b"").await.status == 200
        })
        .await;
    }

    /// `GET /api/v1/cluster` on this node.
    async fn cluster(&self) -> Value {
        let bearer = format!("Bearer {API_TOKEN}");
        let r = request(
            self.http,
            "GET",
            "/api/v1/cluster",
            &[("Authorization", &bearer)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{}: {r:?}", self.id);
        r.json()
    }

    /// SIGTERM: a graceful shutdown begins (the process is reaped on drop).
    fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// SIGKILL: no goodbye to Redis, no DELETE to anyone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `gateway doctor` with this node's settings: (passed, report).
    fn doctor(&self) -> (bool, String) {
        let out = Command::new(gateway_bin())
            .arg("doctor")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "error")
            .env_remove("STUN_SERVER")
            .env_remove("ICE_SERVERS")
            .output()
            .expect("run gateway doctor");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// A counter or gauge of this node's `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let text = request(self.http, "GET", "/metrics", &[], b"").await.body;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no {name} in /metrics", self.id))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.id, self.log_tail());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Until the three nodes answer `/health` and each one's directory lists all three (as in a
/// cluster that has run for a while: a node learns of its siblings at its next heartbeat).
async fn all_know_each_other(nodes: [&Node; 3]) {
    for n in nodes {
        n.ready().await;
    }
    wait_for("every node sees three nodes", || async {
        let mut all = true;
        for n in nodes {
            all &= node_ids(&n.cluster().await) == ["n1", "n2", "n3"];
        }
        all
    })
    .await;
}

/// Node ids in a `/api/v1/cluster` answer.
fn node_ids(c: &Value) -> Vec<String> {
    let mut ids: Vec<String> = c["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// How many pulls of `cam` the answer says this node serves to `node`.
fn serving(c: &Value, node: &str) -> usize {
    c["serving"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["node"] == node && s["stream"] == "cam")
                .count()
        })
        .unwrap_or(0)
}

/// The origin of `cam` in the answer.
fn origin(c: &Value) -> Option<String> {
    c["streams"]
        .as_array()?
        .iter()
        .find(|s| s["stream"] == "cam")
        .and_then(|s| s["origin"].as_str().map(str::to_owned))
}

fn assert_picture(who: &str, frames: &[(bool, Vec<u8>)]) {
    assert!(frames.len() >= 20, "{who} got {} frames", frames.len());
    assert_eq!(
        decoded_size(frames),
        Some(SIZE),
        "{who}: the publisher's picture"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_one_published_stream_and_survive_a_node_and_redis() {
    let cert = TestCert::new(&["n1.turn.test", "n2.turn.test", "n3.turn.test"]);
    let mut redis = Redis::start();
    let n1 = Node::start(1, &redis, &cert);
    let mut n2 = Node::start(2, &redis, &cert);
    let n3 = Node::start(3, &redis, &cert);
    all_know_each_other([&n1, &n2, &n3]).await;
    let c1 = n1.cluster().await;
    assert_eq!(c1["node"], "n1");
    assert_eq!(c1["redis"], "up");
    let me = c1["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n1")
        .unwrap()
        .clone();
    assert_eq!(me["turn_host"], "n1.turn.test", "{me}");
    assert_eq!(me["peer_url"], format!("http://{}", n1.http), "{me}");

    // The doctor of node 3: Redis answers, node 1 reaches node 3's peer URL.
    let (passed, report) = n3.doctor();
    assert!(passed, "{report}");
    assert!(
        report.contains("OK    CLUSTER_REDIS_URL: Redis answers; 3 live node(s)"),
        "{report}"
    );
    assert!(
        report.contains("OK    reachable from node n1: it reaches the peer URL"),
        "{report}"
    );

    // Operators' and siblings' doors are shut to others.
    let r = request(n1.http, "GET", "/api/v1/cluster", &[], b"").await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(
        n1.http,
        "POST",
        "/api/v1/cluster/probe",
        &[("X-Gateway-Node", "n9")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(
        n1.http,
        "POST",
        "/whep/cam",
        &[
            ("Content-Type", "application/sdp"),
            ("X-Gateway-Node", "n9"),
            ("Authorization", "Bearer guess"),
        ],
        gateway_tests::video_offer().as_bytes(),
    )
    .await;
    r.expect_error(401, "unauthorized");

    // Each node's sessions name its own TURN host.
    for n in [&n1, &n2, &n3] {
        let cfg = request(n.http, "GET", "/api/v1/webrtc/config", &[], b"")
            .await
            .json();
        assert!(
            cfg.to_string()
                .contains(&format!("turns:{}.turn.test:", n.id)),
            "{}: {cfg}",
            n.id
        );
    }

    // The publisher on node 1; a second one on node 2 is refused like a second publisher.
    let publisher = Publisher::start(n1.http, "/whip/cam", WHIP_TOKEN, "h264", "320x240", 400);
    assert_eq!(publisher.line("STATUS").await.trim(), "STATUS 201");
    publisher.line("CONNECTED").await;
    wait_for("node 2 knows node 1 is cam's origin", || async {
        origin(&n2.cluster().await).as_deref() == Some("n1")
    })
    .await;
    let second = Publisher::start(n2.http, "/whip/cam", WHIP_TOKEN, "h264", "320x240", 400);
    let status = second.line("STATUS").await;
    assert!(
        status.starts_with("STATUS 409") && status.contains("stream_has_publisher"),
        "{status}"
    );
    assert!(status.contains("n1"), "names the origin node: {status}");
    drop(second);

    // Viewers: two over UDP on node 2 (one pull for both), one over UDP and one relay-only
    // over TURN/TLS on node 3.
    let mut v2a = Viewer::join_with(n2.http, "cam", "geti-2a", true, true).await;
    let mut v2b = Viewer::join_with(n2.http, "cam", "geti-2b", true, true).await;
    let mut v3 = Viewer::join_with(n3.http, "cam", "geti-3", true, true).await;
    let mut v3r = relayed_viewer(n3.http, n3.turn, &cert.cert_der, "cam", true).await;
    let (f2a, f2b, f3, got3r) = tokio::join!(
        v2a.frames(30, MEDIA_LIMIT),
        v2b.frames(30, MEDIA_LIMIT),
        v3.frames(30, MEDIA_LIMIT),
        v3r.pump(MEDIA_LIMIT, |p| p.frames.len() >= 30),
    );
    assert_picture("node 2 viewer a", &f2a);
    assert_picture("node 2 viewer b", &f2b);
    assert_picture("node 3 UDP viewer", &f3);
    assert!(
        got3r,
        "node 3 relayed viewer got {} frames",
        v3r.frames.len()
    );
    assert_picture("node 3 relayed viewer", &v3r.frames);
    assert!(v3r.dtls_connected, "through the relay");
    let c1 = n1.cluster().await;
    assert_eq!(
        serving(&c1, "n2"),
        1,
        "one pull for node 2's two viewers: {c1}"
    );
    assert_eq!(
        serving(&c1, "n3"),
        1,
        "one pull for node 3's two viewers: {c1}"
    );
    let metrics = request(n1.http, "GET", "/metrics", &[], b"").await.body;
    for line in [
        "gateway_cluster_redis_up 1",
        "gateway_cluster_pulls_served{node=\"n2\"} 1",
        "gateway_cluster_pulls_served{node=\"n3\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(
        metrics.contains("gateway_cluster_node_viewers{node=\"n2\"}"),
        "{metrics}"
    );
    let pulling = n2.cluster().await["pulling"].clone();
    assert_eq!(pulling.as_array().map(Vec::len), Some(1), "{pulling}");
    assert_eq!(pulling[0]["origin"], "n1", "{pulling}");
    assert_eq!(pulling[0]["viewers"], 2, "{pulling}");

    // Node 2 dies. Node 3's viewers keep video; node 2's viewers come back on node 3.
    n2.kill();
    let killed = Instant::now();
    // When the directory forgets node 2, watched from now on (beside the viewers' checks,
    // whose own time must not count).
    let forgetting = {
        let (h1, h3) = (n1.http, n3.http);
        tokio::spawn(async move {
            let bearer = format!("Bearer {API_TOKEN}");
            let ids = |http| {
                let bearer = bearer.clone();
                async move {
                    let r = request(
                        http,
                        "GET",
                        "/api/v1/cluster",
                        &[("Authorization", &bearer)],
                        b"",
                    )
                    .await;
                    node_ids(&r.json())
                }
            };
            let deadline = killed + Duration::from_secs(30);
            while Instant::now() < deadline {
                if ids(h1).await == ["n1", "n3"] && ids(h3).await == ["n1", "n3"] {
                    return Some(killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    };
    drop((v2a, v2b));
    let (f3, got3r) = tokio::join!(
        v3.frames(30, MEDIA_LIMIT),
        v3r.pump(MEDIA_LIMIT, |p| p.frames.len() >= 60),
    );
    assert!(
        f3.len() >= 30,
        "node 3's UDP viewer after node 2 died: {} frames",
        f3.len()
    );
    assert!(
        got3r,
        "node 3's relayed viewer after node 2 died: {} frames",
        v3r.frames.len()
    );
    let mut back_a = Viewer::join_with(n3.http, "cam", "geti-2a", true, true).await;
    let mut back_b = Viewer::join_with(n3.http, "cam", "geti-2b", true, true).await;
    let (fa, fb) = tokio::join!(
        back_a.frames(30, MEDIA_LIMIT),
        back_b.frames(30, MEDIA_LIMIT)
    );
    assert_picture("node 2's viewer a, reconnected to node 3", &fa);
    assert_picture("node 2's viewer b, reconnected to node 3", &fb);
    let forgot = forgetting
        .await
        .unwrap()
        .expect("the directory forgets node 2 within 30 s");
    assert!(
        forgot <= NODE_TTL + HEARTBEAT + Duration::from_secs(2),
        "node 2 forgotten {forgot:?} after it died (TTL {NODE_TTL:?})"
    );
    let c1 = n1.cluster().await;
    assert_eq!(
        serving(&c1, "n3"),
        1,
        "still one pull for node 3's four viewers: {c1}"
    );

    // Redis stops for 30 s: every viewer keeps video all along (5 s windows).
    redis.stop();
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(30) {
        let window = Duration::from_secs(5);
        let before = v3r.frames.len();
        let (f3, fa, fb, _) = tokio::join!(
            v3.frames(usize::MAX, window),
            back_a.frames(usize::MAX, window),
            back_b.frames(usize::MAX, window),
            v3r.pump(window, |_| false),
        );
        let at = stopped.elapsed().as_secs();
        for (who, n) in [
            ("UDP", f3.len()),
            ("a", fa.len()),
            ("b", fb.len()),
            ("relayed", v3r.frames.len() - before),
        ] {
            assert!(
                n >= 20,
                "Redis down {at} s: node 3 viewer {who} got {n} frames in 5 s"
            );
        }
    }
    let c1 = n1.cluster().await;
    assert_eq!(c1["redis"], "unreachable", "{c1}");
    redis.run();
    wait_for("the nodes register again once Redis is back", || async {
        let c = n1.cluster().await;
        c["redis"] == "up" && node_ids(&c) == ["n1", "n3"] && origin(&c).as_deref() == Some("n1")
    })
    .await;

    // The viewers leave: the edge ends their sessions (ICE consent), the pull closes after
    // PULL_IDLE_TIMEOUT and the origin serves no pull.
    drop((v3, v3r, back_a, back_b));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (c1, c3) = (n1.cluster().await, n3.cluster().await);
        let running = c3["pulling"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["running"] == true).count())
            .unwrap_or(0);
        if serving(&c1, "n3") == 0 && serving(&c1, "n2") == 0 && running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pulls still up 90 s after the viewers left: {c1} {c3}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(publisher);

    // Node 3 stops gracefully: it leaves the registry at once, not at its TTL.
    let stopping = Instant::now();
    n3.sigterm();
    wait_for("node 1 forgets node 3 after its SIGTERM", || async {
        node_ids(&n1.cluster().await) == ["n1"]
    })
    .await;
    assert!(
        stopping.elapsed() < NODE_TTL,
        "node 3 left {:?} after SIGTERM: it should not wait for its TTL ({NODE_TTL:?})",
        stopping.elapsed()
    );
}

/// An L4 load balancer in front of the nodes' TURN ports: one address (one TURNS name),
/// each new TCP connection forwarded to the next node in turn.
struct Forwarder {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(targets: Vec<SocketAddr>) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.5:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut down, _)) = listener.accept().await {
                let target = targets[next % targets.len()];
                next += 1;
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Forwarder { addr, task }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_one_turn_name_an_allocation_on_another_node_reaches_its_session() {
    let cert = TestCert::new(&["turn.test"]);
    let redis = Redis::start();
    let n1 = Node::start_named(1, &redis, &cert, "turn.test");
    let n2 = Node::start_named(2, &redis, &cert, "turn.test");
    let n3 = Node::start_named(3, &redis, &cert, "turn.test");
    all_know_each_other([&n1, &n2, &n3]).await;
    // One TURNS name for the three nodes; the first connection goes to node 2.
    let lb = Forwarder::start(vec![n2.turn, n3.turn, n1.turn]).await;

    // A viewer of node 1 (its session there) whose allocation lands on node 2; it offers
    // as Geti's UI does, with its own id: node 1 binds the offer to the session by the
    // relay candidate, which node 2 told it of.
    let (mut viewer, session) = relayed_viewer_as(
        n1.http,
        lb.addr,
        &cert.cert_der,
        "default",
        true,
        Some("6f1c0e1a-2b7d-4c1e-9a43-1f0a6b2c3d4e"),
    )
    .await;
    let got = viewer.pump(MEDIA_LIMIT, |p| p.frames.len() >= 30).await;
    assert!(
        got,
        "the viewer got {} frames through node 2",
        viewer.frames.len()
    );
    assert!(viewer.dtls_connected);
    assert_eq!(
        n2.metric("turn_allocations_active").await,
        1,
        "the allocation is on node 2"
    );
    assert_eq!(n1.metric("turn_allocations_active").await, 0);
    // The relay on node 2 admits node 1's media, and only that: not node 1's HTTP API.
    assert!(
        viewer.turn.create_permission(n1.http).await.is_err(),
        "a sibling's other ports are no peers"
    );

    // The session ends on its node: the allocation on node 2 closes within a second.
    let bye = request(n1.http, "DELETE", &format!("/whep/{session}"), &[], b"").await;
    assert_eq!(bye.status, 200, "{bye:?}");
    let ended = Instant::now();
    while n2.metric("turn_allocations_active").await > 0 {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "node 2 still holds the allocation {:?} after the session ended on node 1",
            ended.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(lb);
}
