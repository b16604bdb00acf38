//! A network namespace of the bench's own, joined to this one by a veth pair, for servers
//! that will not put a loopback address in their ICE candidates (Janus skips loopback
//! interfaces whatever its settings say). The server runs inside with `SERVER_IP`; the
//! bench's viewers stay outside on `CLIENT_IP` and reach it through the veth pair, as over
//! a real network. Both servers of a comparison run in it, so both pay the same path.
//!
//! Needs root (`ip netns add`). The namespace (and with it the pair) is deleted on drop;
//! its name carries the bench's PID, so parallel runs do not collide.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// The server's address, inside the namespace.
pub const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 2));
/// The bench's address, outside.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 213, 0, 1));

/// The namespace; deleted on drop.
pub struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates the namespace and the veth pair with both addresses, links up.
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let ns = Self {
            name: format!("gwbench-{pid}"),
        };
        let (outer, inner) = (format!("gwb{pid}o"), format!("gwb{pid}i"));
        let (client, server) = (format!("{CLIENT_IP}/30"), format!("{SERVER_IP}/30"));
        ip(&["netns", "add", &ns.name]).context("creating a network namespace (needs root)")?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        // The pair of an earlier namespace of this process may outlive it for a moment
        // (the kernel tears a deleted namespace's links down asynchronously): delete it.
        let _ = ip(&["link", "del", &outer]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns.name,
        ])?;
        ip(&["addr", "add", &client, "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &server, "dev", &inner])?;
        ip(&["-n", &ns.name, "link", "set", &inner, "up"])?;
        Ok(ns)
    }

    /// The interface inside the namespace (Janus's `ice_enforce_list`).
    pub fn inner_interface(&self) -> String {
        format!("gwb{}i", std::process::id())
    }

    /// `program` run inside the namespace, on `core` when given. `ip netns exec` and
    /// `taskset` both exec, so the child's PID is the program's.
    pub fn command(&self, core: Option<usize>, program: &OsStr) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        if let Some(c) = core {
            cmd.arg("taskset").arg("-c").arg(c.to_string());
        }
        cmd.arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the inner end, and with it the pair.
        let _ = ip(&["netns", "del", &self.name]);
    }
}
