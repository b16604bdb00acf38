//! An aiortc WHIP publisher (`tests/standins/whip_publisher.py`) as a child process, killed
//! on drop, whose report lines (`STATUS`, `LOCATION`, `CONNECTED`, `PLI n`, `CLOSED`) are
//! collected. Loopback only.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt;

use crate::peer::wait_for;

/// See the module docs.
pub struct Publisher {
    _child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Publisher {
    /// Starts a publisher of `codec` (`h264`, `vp8`) at `size` (`WxH`) to `path` of the
    /// gateway at `http`, presenting `token`, for at most `lifetime_s` seconds.
    pub fn start(
        http: SocketAddr,
        path: &str,
        token: &str,
        codec: &str,
        size: &str,
        lifetime_s: u32,
    ) -> Publisher {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv-aiortc/bin/python");
        assert!(
            python.exists(),
            "{} is missing: ./tests/run creates the aiortc virtualenv",
            python.display()
        );
        let mut child = tokio::process::Command::new(python)
            .arg(root.join("standins/whip_publisher.py"))
            .args(["--url", &format!("http://{http}{path}")])
            .args(["--token", token, "--codec", codec, "--size", size])
            .args(["--lifetime", &lifetime_s.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("publisher starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = out.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Publisher {
            _child: child,
            lines,
        }
    }

    /// The first report line starting with `prefix`, waited for (30 s at most).
    pub async fn line(&self, prefix: &str) -> String {
        let mut found = None;
        wait_for(&format!("publisher reports {prefix:?}"), || {
            found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap()
    }

    /// Keyframe requests (PLI/FIR) the publisher received so far.
    pub fn plis(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("PLI "))
            .count()
    }
}
