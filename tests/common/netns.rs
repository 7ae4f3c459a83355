//! Real test networks: a switch namespace holding a bridge, and one
//! namespace per node joined to it by a veth pair; a link can be cut and
//! restored. Needs root. Every namespace is deleted on drop.

use std::net::SocketAddr;
use std::process::Command;

pub struct Net {
    prefix: String,
    pub nodes: usize,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Builds the switch namespace and one namespace per node; `tag` (two
    /// letters) keeps concurrent test binaries' names apart.
    pub fn build(tag: &str, nodes: usize) -> Net {
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let net = Net { prefix, nodes };
        let sw = net.switch();
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..nodes {
            let (ns, v, p) = (net.ns(i), format!("{}v{i}", net.prefix), net.port(i));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p]);
            ip(&["link", "set", &v, "netns", &ns]);
            ip(&["link", "set", &p, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &p, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &p, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("10.213.0.{}/24", i + 1), "dev", &v]);
            ip(&["-n", &ns, "link", "set", &v, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }
    pub fn port(&self, i: usize) -> String {
        format!("{}p{i}", self.prefix)
    }
    pub fn addr(&self, i: usize) -> SocketAddr {
        format!("10.213.0.{}:7070", i + 1).parse().unwrap()
    }
    pub fn link(&self, i: usize, up: bool) {
        ip(&["-n", &self.switch(), "link", "set", &self.port(i), if up { "up" } else { "down" }]);
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
