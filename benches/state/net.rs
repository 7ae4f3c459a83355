//! Network namespaces for a real partition (root only): one namespace per
//! manager, joined by veth pairs to bridges in a switch namespace. All
//! ports start on `br0`; a partition moves some ports to `br1`, so each
//! side still talks within itself; healing moves them back.
//!
//! Owns the namespaces it creates (named after this process) and deletes
//! them on drop.

use std::net::SocketAddr;
use std::process::Command;

use crate::cluster::Res;

/// The managers' port inside their namespaces.
pub const PORT: u16 = 7070;

pub struct Net {
    prefix: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    pub fn build(nodes: usize) -> Res<Net> {
        let net = Net { prefix: format!("jb{}", std::process::id() % 100_000), nodes };
        let sw = net.switch();
        ip(&["netns", "add", &sw])?;
        for br in ["br0", "br1"] {
            ip(&["-n", &sw, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", br, "up"])?;
        }
        for i in 0..nodes {
            let (ns, v, p) = (net.ns(i), format!("{}v{i}", net.prefix), net.port(i));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p])?;
            ip(&["link", "set", &v, "netns", &ns])?;
            ip(&["link", "set", &p, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &p, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &p, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("10.214.0.{}/24", i + 1), "dev", &v])?;
            ip(&["-n", &ns, "link", "set", &v, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn port(&self, i: usize) -> String {
        format!("{}p{i}", self.prefix)
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([10, 214, 0, i as u8 + 1], PORT))
    }

    /// Moves the ports of `nodes` to bridge `br` ("br0" joins everyone).
    pub fn attach(&self, nodes: &[usize], br: &str) -> Res<()> {
        for &i in nodes {
            ip(&["-n", &self.switch(), "link", "set", &self.port(i), "master", br])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(i)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.switch()]).status();
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
