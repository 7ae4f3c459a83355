//! A test bed of separate hosts on one machine: each host is a network
//! namespace with its own address on a bridge in the root namespace (so
//! the test itself, as the operator's workstation, reaches every host), and
//! its own real `sshd` (Debian's openssh-server) with its own host key. One
//! client key per bed. Hosts share the filesystem, so each gets its own
//! directory for jujud.
//!
//! "A host dies": every process in its namespace SIGKILLed and its link
//! cut. "A host stops responding": its link cut while its processes keep
//! running (the zombie case), then restored.
//!
//! A host built with [`Hosts::for_test_systemd`] runs systemd as PID 1 of
//! its own PID and mount namespaces, on an overlay of the machine's root
//! whose writes land in a tmpfs of its own (so nothing systemd does at boot
//! reaches the real filesystem: a first trial without the overlay let
//! systemd-tmpfiles empty the machine's /tmp). Its units are only the four
//! empty targets the bed writes (no distribution unit runs), which is all
//! `systemd-run` needs. sshd runs inside, started before systemd.
//!
//! Owns the namespaces, the bridge, the sshd processes and the keys it
//! makes. Must never leave any of them behind: Drop kills every process in
//! every namespace and deletes them, even after a failed assertion. Needs
//! root (CI runs as root); [`Hosts::available`] says when a test must skip.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The port every host's sshd listens on (each namespace has its own).
pub const SSH_PORT: u16 = 22;
/// Longest wait for a host's sshd to accept connections.
pub const SSHD_READY_MS: u64 = 10_000;
/// Longest wait for a killed host's processes to be gone.
pub const KILL_WAIT_MS: u64 = 5_000;

// `SetEnv PYENV_REHASH_TIMEOUT=1` in every sshd config: this machine's
// root runs `pyenv init -` in every ssh session's bashrc, and a host killed
// while it rehashed leaves pyenv's lock behind, after which every session
// waited 60 s for it (seen: every ssh test failing with "no answer within
// 30000 ms" for 25 minutes). With it, a stale lock costs 1 s.

/// Beds made by this process (keeps concurrent tests' names apart).
static BEDS: AtomicU32 = AtomicU32::new(0);

/// One host.
pub struct Host {
    pub name: String,
    /// The network namespace.
    pub ns: String,
    pub addr: Ipv4Addr,
    /// The directory jujud may use there (the cloud file's `dir`).
    pub dir: PathBuf,
    /// The pinned host-key fingerprint (`SHA256:...`).
    pub host_key: String,
    /// The root-side end of its veth (cut to cut the host off).
    link: String,
    sshd_config: PathBuf,
    sshd: Option<Child>,
    /// Runs systemd as PID 1 of its own namespaces (see the module doc).
    pub systemd: bool,
}

/// The bed: hosts on a bridge, and the client key that logs into them.
pub struct Hosts {
    pub hosts: Vec<Host>,
    bridge: String,
    /// The client's private key (a path a cloud file can name).
    pub key: PathBuf,
    pub root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    must(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "jujud-test", "-f", path.to_str().unwrap()],
    );
}

/// Writes, under a systemd host's `home`, the units it runs (four empty
/// targets: the one it boots to, and the three a service's default
/// dependencies name) and the script that boots it: in new PID and mount
/// namespaces, an overlay of `/` with its writes in a tmpfs, `/dev`,
/// `/sys`, a new `/proc` (`/proc/sys` read-only, so no sysctl reaches the
/// machine), an empty `/run`; sshd; then systemd as PID 1.
fn write_systemd_boot(home: &Path, sshd_config: &str) -> PathBuf {
    let units = home.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for t in ["bed", "sysinit", "basic", "shutdown"] {
        std::fs::write(units.join(format!("{t}.target")), "[Unit]\nDescription=test host\n")
            .unwrap();
    }
    let rt = home.join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let script = home.join("boot.sh");
    let text = format!(
        "set -e\nB={rt}\nmount -t tmpfs -o mode=755 tmpfs $B\nmkdir -p $B/upper $B/work $B/root\n\
         mount -t overlay overlay -o lowerdir=/,upperdir=$B/upper,workdir=$B/work $B/root\nR=$B/root\n\
         mount --rbind /dev $R/dev\nmount -t proc proc $R/proc\nmount --rbind /sys $R/sys\n\
         mount -o bind,ro /proc/sys $R/proc/sys\nmount -t tmpfs -o mode=755 tmpfs $R/run\n\
         mkdir -p $R/run/sshd $R/old\ncd $R\npivot_root . old\numount -l /old\n\
         /usr/sbin/sshd -e -f {sshd_config}\n\
         exec env container=jujud-test SYSTEMD_UNIT_PATH={units} /lib/systemd/systemd --system --unit=bed.target --log-target=console\n",
        rt = rt.display(),
        units = units.display()
    );
    std::fs::write(&script, text).unwrap();
    script
}

/// `SHA256:...` of a public key file.
pub fn fingerprint(pubkey: &Path) -> String {
    let out = must("ssh-keygen", &["-l", "-E", "sha256", "-f", pubkey.to_str().unwrap()]);
    out.split_whitespace().nth(1).expect("ssh-keygen -l prints the fingerprint second").to_string()
}

impl Hosts {
    /// Whether this machine can run the bed (root, `ip`, `sshd`); if not,
    /// says why. CI runs as root, where a missing part is a failure.
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces need root".into());
        }
        for tool in
            ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/ssh-keyscan"]
        {
            if !Path::new(tool).exists() {
                return Err(format!(
                    "{tool} is missing (apt-get install openssh-server openssh-client)"
                ));
            }
        }
        Ok(())
    }

    /// Whether this machine can run hosts with systemd: [`Hosts::available`]
    /// and systemd, `unshare` and overlayfs.
    pub fn available_systemd() -> Result<(), String> {
        Hosts::available()?;
        for tool in ["/lib/systemd/systemd", "/usr/bin/systemd-run", "/usr/bin/unshare"] {
            if !Path::new(tool).exists() {
                return Err(format!("{tool} is missing (apt-get install systemd util-linux)"));
            }
        }
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.contains("overlay") {
            return Err("the kernel has no overlayfs".into());
        }
        Ok(())
    }

    /// [`Hosts::for_test`] with every host running systemd.
    pub fn for_test_systemd(n: usize) -> Option<Hosts> {
        if let Err(why) = Hosts::available_systemd() {
            assert!(std::env::var_os("CI").is_none(), "CI must run the systemd hosts: {why}");
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Hosts::build_with(n, true))
    }

    /// The bed for a test: `n` hosts, or `None` (printing why) on a machine
    /// that cannot run it. Under CI (`CI` set) a missing part fails the test
    /// instead of skipping it.
    pub fn for_test(n: usize) -> Option<Hosts> {
        if let Err(why) = Hosts::available() {
            assert!(std::env::var_os("CI").is_none(), "CI must run the hosts bed: {why}");
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Hosts::build(n))
    }

    /// Builds `n` hosts, each with a running sshd that accepts the bed's key.
    pub fn build(n: usize) -> Hosts {
        Hosts::build_with(n, false)
    }

    /// [`Hosts::build`], every host running systemd when `systemd`.
    pub fn build_with(n: usize, systemd: bool) -> Hosts {
        assert!((1..=200).contains(&n), "1 to 200 hosts");
        let bed = BEDS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /24 per bed: 10.<100 + pid % 100>.<bed and pid mix>.0/24.
        let (b, c) = (100 + (pid % 100) as u8, ((pid / 100) % 200 + bed * 37) as u8 % 250 + 1);
        let tag = format!("jh{}x{bed}", pid % 100_000);
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let key = root.join("client_key");
        keygen(&key);
        let bridge = format!("{tag}br");
        let mut bed = Hosts { hosts: Vec::new(), bridge: bridge.clone(), key, root, _tmp: tmp };
        must("ip", &["link", "add", &bridge, "type", "bridge"]);
        must("ip", &["addr", "add", &format!("10.{b}.{c}.254/24"), "dev", &bridge]);
        must("ip", &["link", "set", &bridge, "up"]);
        for i in 0..n {
            let mut host = bed.make_host(&tag, i, Ipv4Addr::new(10, b, c, i as u8 + 1));
            host.systemd = systemd;
            bed.hosts.push(host);
        }
        for i in 0..n {
            bed.start_sshd(i);
        }
        bed
    }

    fn make_host(&self, tag: &str, i: usize, addr: Ipv4Addr) -> Host {
        let (ns, inner, link) = (format!("{tag}h{i}"), format!("{tag}i{i}"), format!("{tag}l{i}"));
        must("ip", &["netns", "add", &ns]);
        must("ip", &["link", "add", &link, "type", "veth", "peer", "name", &inner]);
        must("ip", &["link", "set", &inner, "netns", &ns]);
        must("ip", &["link", "set", &link, "master", &self.bridge]);
        must("ip", &["link", "set", &link, "up"]);
        must("ip", &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner]);
        must("ip", &["-n", &ns, "link", "set", &inner, "up"]);
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let home = self.root.join(format!("host{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let host_key = home.join("ssh_host_ed25519_key");
        keygen(&host_key);
        let authorized = home.join("authorized_keys");
        std::fs::copy(self.key.with_extension("pub"), &authorized).unwrap();
        let sshd_config = home.join("sshd_config");
        let config = format!(
            "ListenAddress {addr}:{SSH_PORT}\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPidFile {}\nMaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n\
             SetEnv PYENV_REHASH_TIMEOUT=1\n",
            host_key.display(),
            authorized.display(),
            home.join("sshd.pid").display()
        );
        std::fs::write(&sshd_config, config).unwrap();
        let fp = fingerprint(&host_key.with_extension("pub"));
        Host {
            name: format!("host{i}"),
            ns,
            addr,
            dir: home.join("jujud"),
            host_key: fp,
            link,
            sshd_config,
            sshd: None,
            systemd: false,
        }
    }

    /// (Re)starts host `i`'s sshd (and systemd, on a systemd host) and waits
    /// until it accepts connections (and systemd has booted).
    pub fn start_sshd(&mut self, i: usize) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let h = &mut self.hosts[i];
        let config = h.sshd_config.to_str().unwrap().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns]);
        if h.systemd {
            let home = h.sshd_config.parent().unwrap().to_path_buf();
            let script = write_systemd_boot(&home, &config);
            let log = std::fs::File::create(home.join("systemd.log")).unwrap();
            cmd.args(["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "sh"])
                .arg(script)
                .stdout(log.try_clone().unwrap())
                .stderr(log);
        } else {
            cmd.args(["/usr/sbin/sshd", "-D", "-e", "-f", &config])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        let child = cmd.stdin(Stdio::null()).spawn().expect("start sshd");
        h.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_millis(SSHD_READY_MS);
        // A systemd host is ready once systemd has booted too (sshd starts
        // first: a start before that found /run/systemd/system but no bus).
        let ready = if self.hosts[i].systemd {
            "case $(systemctl is-system-running 2>/dev/null) in running|degraded) ;; *) exit 1;; esac"
        } else {
            "true"
        };
        loop {
            if self.ssh(i, ready).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd of {} did not answer within {SSHD_READY_MS} ms",
                self.hosts[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `cmd` on host `i` over ssh as root, with the bed's key.
    pub fn ssh(&self, i: usize, cmd: &str) -> Output {
        let h = &self.hosts[i];
        let known = self.root.join(format!("known_hosts_{i}"));
        let line = format!(
            "{} {}",
            h.addr,
            std::fs::read_to_string(h.sshd_config.with_file_name("ssh_host_ed25519_key.pub"))
                .unwrap()
        );
        std::fs::write(&known, line).unwrap();
        Command::new("ssh")
            .args(["-n", "-i", self.key.to_str().unwrap(), "-p", &SSH_PORT.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .args(["-o", &format!("UserKnownHostsFile={}", known.display())])
            .arg(format!("root@{}", h.addr))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// The cloud file (YAML) for hosts `which`, every host allowed every
    /// role unless `roles` says otherwise for it.
    pub fn cloud_yaml(
        &self,
        which: &[usize],
        roles: impl Fn(usize) -> Option<&'static str>,
    ) -> String {
        let mut s = String::from("hosts:\n");
        for &i in which {
            let h = &self.hosts[i];
            s.push_str(&format!(
                "  - address: {}\n    user: root\n    port: {SSH_PORT}\n    key: {}\n    host-key: \"{}\"\n    dir: {}\n",
                h.addr,
                self.key.display(),
                h.host_key,
                h.dir.display()
            ));
            if let Some(r) = roles(i) {
                s.push_str(&format!("    roles: [{r}]\n"));
            }
        }
        s
    }

    /// Writes the cloud file for every host to `name` under the bed's dir.
    pub fn write_cloud(&self, name: &str, which: &[usize]) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, self.cloud_yaml(which, |_| None)).unwrap();
        path
    }

    /// Every process in host `i`'s namespace.
    pub fn pids(&self, i: usize) -> Vec<i32> {
        let out = run("ip", &["netns", "pids", &self.hosts[i].ns]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The jujud processes on host `i` (by their executable's name).
    pub fn jujud_pids(&self, i: usize) -> Vec<i32> {
        self.pids(i)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                    c.split(|b| *b == 0).next().is_some_and(|a| a.ends_with(b"jujud"))
                })
            })
            .collect()
    }

    /// Cuts (`false`) or restores (`true`) host `i`'s link.
    pub fn link(&self, i: usize, up: bool) {
        must("ip", &["link", "set", &self.hosts[i].link, if up { "up" } else { "down" }]);
    }

    /// Host `i` dies: every process in it SIGKILLed, its link cut.
    pub fn kill_host(&mut self, i: usize) {
        self.link(i, false);
        self.kill_all(i);
        if let Some(mut c) = self.hosts[i].sshd.take() {
            let _ = c.wait();
        }
    }

    fn kill_all(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_millis(KILL_WAIT_MS);
        loop {
            let pids = self.pids(i);
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for p in pids {
                // SAFETY: kill(2) of a process in a namespace this bed made.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_all(i);
            if let Some(mut c) = self.hosts[i].sshd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = run("ip", &["link", "del", &self.hosts[i].link]);
            let _ = run("ip", &["netns", "del", &self.hosts[i].ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
