//! The ssh provider's test bed: N network-namespace "hosts" on a bridge in
//! the test's own namespace (so the test, as the operator's machine, reaches
//! every host, and hosts reach each other), each with its own address
//! (10.77.S.10+i), its own real sshd (its own host key, ListenAddress and
//! directory), one client key per bed, the hosts' pinned fingerprints and a
//! cloud file writer. "A host dies": [`Hosts::kill_host`] SIGKILLs every
//! process in its namespace and cuts its link; "a host stops responding":
//! [`Hosts::cut_link`], then [`Hosts::restore_link`].
//!
//! Owns the bed's namespaces, bridge, processes and files: [`Drop`] removes
//! them all, on failure too. Needs root; [`Hosts::unavailable`] says why a
//! test must skip. Plain functions only (usable from a bench).
#![allow(dead_code)]

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The machine-wide lock under which a bed picks its subnet.
const LOCK_FILE: &str = "/tmp/jujud-hosts-bed.lock";
/// Subnets 10.77.S.0/24, S in 1..=MAX_SUBNET.
const MAX_SUBNET: u8 = 250;
/// Longest wait for a host's sshd to listen.
const SSHD_START_MS: u64 = 10_000;
/// The first host's last address byte.
const FIRST_HOST: usize = 10;

pub struct Hosts {
    pub n: usize,
    subnet: u8,
    /// The bed's files: keys, sshd configs, each host's directories.
    pub root: PathBuf,
    pub client_key: PathBuf,
    /// Each host's pinned host key fingerprint (`SHA256:...`).
    pub fingerprints: Vec<String>,
    built: usize,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

impl Hosts {
    /// Why the bed cannot run here (not root, no sshd), if it cannot.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: network namespaces need root".into());
        }
        for bin in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keyscan", "/usr/bin/ssh-keygen"] {
            if !Path::new(bin).exists() {
                return Some(format!("{bin} is missing (apt-get install openssh-server openssh-client)"));
            }
        }
        None
    }

    /// Builds `n` hosts, each with a running sshd.
    pub fn build(n: usize) -> Result<Hosts, String> {
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_FILE).map_err(|e| e.to_string())?;
        // SAFETY: flock on a file we opened; released when `lock` drops.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let links = ip(&["-o", "link", "show"])?;
        let subnet = (1..=MAX_SUBNET).find(|s| !links.contains(&format!("jhb{s}:"))).ok_or("no free bed subnet")?;
        let root = PathBuf::from(format!("/tmp/jhb{subnet}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let mut bed = Hosts { n, subnet, root: root.clone(), client_key: root.join("client_key"), fingerprints: Vec::new(), built: 0 };
        let br = bed.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        drop(lock);
        ip(&["addr", "add", &format!("10.77.{subnet}.1/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        let key = bed.client_key.display().to_string();
        run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "bed-client", "-f", &key])?;
        std::fs::copy(format!("{key}.pub"), root.join("authorized_keys")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
        for i in 0..n {
            bed.add_host(i)?;
            bed.built = i + 1;
        }
        for i in 0..n {
            bed.wait_sshd(i)?;
        }
        Ok(bed)
    }

    pub fn bridge(&self) -> String {
        format!("jhb{}", self.subnet)
    }
    pub fn ns(&self, i: usize) -> String {
        format!("jhb{}h{i}", self.subnet)
    }
    /// The test-side end of host `i`'s link.
    fn veth(&self, i: usize) -> String {
        format!("jhb{}v{i}", self.subnet)
    }
    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, FIRST_HOST + i)
    }
    /// Host `i`'s files (sshd's and its jujud dir).
    pub fn host_root(&self, i: usize) -> PathBuf {
        self.root.join(format!("h{i}"))
    }
    /// The directory jujud may use on host `i`.
    pub fn dir(&self, i: usize) -> PathBuf {
        self.host_root(i).join("jujud")
    }

    fn add_host(&mut self, i: usize) -> Result<(), String> {
        let (ns, v, hroot) = (self.ns(i), self.veth(i), self.host_root(i));
        std::fs::create_dir_all(&hroot).map_err(|e| e.to_string())?;
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        ip(&["link", "set", &v, "master", &self.bridge()])?;
        ip(&["link", "set", &v, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.addr(i)), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let hk = hroot.join("ssh_host_ed25519_key");
        run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", &format!("host{i}"), "-f", &hk.display().to_string()])?;
        let fp = run("ssh-keygen", &["-l", "-E", "sha256", "-f", &format!("{}.pub", hk.display())])?;
        self.fingerprints.push(fp.split_whitespace().nth(1).ok_or("no fingerprint")?.to_string());
        let cfg = hroot.join("sshd_config");
        let body = format!(
            "ListenAddress {addr}:22\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPidFile {pid}\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
            addr = self.addr(i),
            hk = hk.display(),
            ak = self.root.join("authorized_keys").display(),
            pid = hroot.join("sshd.pid").display()
        );
        std::fs::write(&cfg, body).map_err(|e| e.to_string())?;
        ip(&["netns", "exec", &ns, "/usr/sbin/sshd", "-f", &cfg.display().to_string()])?;
        Ok(())
    }

    fn wait_sshd(&self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_millis(SSHD_START_MS);
        let pidfile = self.host_root(i).join("sshd.pid");
        while !pidfile.exists() {
            if Instant::now() > deadline {
                return Err(format!("sshd of host {i} did not start within {SSHD_START_MS} ms"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// One host's cloud file entry (YAML), with its pinned fingerprint.
    pub fn entry_yaml(&self, i: usize) -> String {
        format!(
            "  - address: {}\n    user: root\n    port: 22\n    key: {}\n    host-key: {}\n    dir: {}\n",
            self.addr(i),
            self.client_key.display(),
            self.fingerprints[i],
            self.dir(i).display()
        )
    }

    /// Writes a cloud file holding `hosts`; returns its path.
    pub fn write_cloud(&self, name: &str, hosts: &[usize]) -> PathBuf {
        let path = self.root.join(name);
        let body: String = hosts.iter().map(|i| self.entry_yaml(*i)).collect();
        std::fs::write(&path, format!("hosts:\n{body}")).expect("write the cloud file");
        path
    }

    /// Every process in host `i`'s namespace.
    pub fn pids(&self, i: usize) -> Vec<i32> {
        ip(&["netns", "pids", &self.ns(i)]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// The processes in host `i`'s namespace other than its sshd.
    pub fn jujud_pids(&self, i: usize) -> Vec<i32> {
        self.pids(i)
            .into_iter()
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&cmd).contains("sshd")
            })
            .collect()
    }

    /// The command lines of host `i`'s processes other than its sshd.
    pub fn processes(&self, i: usize) -> Vec<String> {
        self.jujud_pids(i).iter().map(|p| String::from_utf8_lossy(&std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default()).replace('\0', " ")).collect()
    }

    /// "The host dies": every process in its namespace SIGKILLed, and its
    /// link cut.
    pub fn kill_host(&self, i: usize) {
        self.cut_link(i);
        for p in self.pids(i) {
            // SAFETY: kill(2) of a process of the bed's own namespace.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }

    pub fn cut_link(&self, i: usize) {
        let _ = ip(&["link", "set", &self.veth(i), "down"]);
    }

    pub fn restore_link(&self, i: usize) {
        let _ = ip(&["link", "set", &self.veth(i), "up"]);
    }

    /// Runs `args` inside host `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec"];
        let ns = self.ns(i);
        all.push(&ns);
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.built {
            // Twice: a process forked while the first pass ran.
            for _ in 0..2 {
                for p in self.pids(i) {
                    // SAFETY: kill(2) of a process of the bed's own namespace.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            let _ = Command::new("umount").arg("-l").arg(self.dir(i)).stderr(Stdio::null()).status();
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
