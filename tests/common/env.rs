//! A local-provider environment for tests: `juju bootstrap --ha N` under a
//! temporary root, the `juju` CLI run against it, its instances' records,
//! and `juju destroy` when dropped.
//!
//! Owns the environment's lifetime. Must never leave an instance running
//! after the test (the destroy in `Drop` runs even when the test fails).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// An environment under a temporary root, destroyed when dropped (its
/// instances are detached processes that would otherwise outlive the test).
pub struct Env {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn bootstrap(ha: u32) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("env");
        let env = Env { _tmp: tmp, root };
        let out =
            env.juju(&["bootstrap", "--ha", &ha.to_string(), "--root", env.root.to_str().unwrap()]);
        assert!(out.status.success(), "bootstrap: {}", String::from_utf8_lossy(&out.stderr));
        env
    }

    pub fn client(&self) -> PathBuf {
        self.root.join("client.yaml")
    }

    pub fn juju(&self, args: &[&str]) -> Output {
        Command::new(super::juju_bin())
            .env("JUJUD_ROOT", &self.root)
            .args(args)
            .output()
            .expect("run juju")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.juju(args);
        assert!(out.status.success(), "juju {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn instance(&self, name: &str) -> Value {
        let path = self.root.join("instances").join(name).join("instance.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub fn instances(&self) -> Vec<Value> {
        // An instance dir exists a moment before its record is written.
        let mut out: Vec<Value> = std::fs::read_dir(self.root.join("instances"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("instance.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by_key(|v| v["name"].as_str().unwrap().to_string());
        out
    }

    pub fn kill(&self, name: &str) {
        let pid = self.instance(name)["pid"].as_i64().unwrap() as i32;
        // SAFETY: a process this test's environment started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.juju(&["destroy", "--root", self.root.to_str().unwrap()]);
    }
}
