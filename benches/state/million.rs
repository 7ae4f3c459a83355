//! The one-manager size scenario (`--only million --entities 1000000`):
//! that many entities (applications of 1,000 units, each unit on its own
//! machine, as the scale scenario makes them) created on a single manager;
//! its RSS and state on disk; `juju status --format json` answering in full
//! (the real `juju` binary, whose answer is streamed in chunks); then
//! SIGKILL, restart to serving, and the same status again. Opt-in: not in
//! the default run.
//!
//! Owns nothing but its report rows; it reuses the scale scenario's loader
//! and serving probe.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tokio::runtime::Runtime;

use crate::api::{self, Conn};
use crate::cluster::{Cluster, Res, loopback_addrs, rss_kib, state_bytes};
use crate::scale::{first_served, load};
use crate::stats::{Report, ms};
use crate::{APP, Args};

/// `juju status --format json` against the one manager: (milliseconds,
/// bytes of JSON, machines, units), or why it failed.
fn juju_status(c: &Cluster) -> Res<(f64, usize, usize, usize)> {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_juju"))
        .arg("--client-config")
        .arg(c.client_file())
        .args(["--endpoint", &c.addrs()[0].to_string(), "status", "--format", "json"])
        .output()
        .map_err(|e| format!("run juju: {e}"))?;
    let took = ms(t0.elapsed());
    if !out.status.success() {
        return Err(format!("juju status failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status is not JSON: {e}"))?;
    let count = |k: &str| v["status"][k].as_array().map_or(0, Vec::len);
    Ok((took, out.stdout.len(), count("machines"), count("units")))
}

fn rss_mib(c: &Cluster) -> Res<f64> {
    Ok(rss_kib(c.pid(0)?).ok_or("no VmRSS")? as f64 / 1024.0)
}

fn status_row(report: &mut Report, what: &str, entities: u64, c: &Cluster) {
    let (value, ok) = match juju_status(c) {
        Ok((took, bytes, machines, units)) => (
            format!(
                "answers in {took:.0} ms: {:.1} MiB of JSON, {machines} machines, {units} units",
                bytes as f64 / 1048576.0
            ),
            // Every unit has its own machine (the controller's and the first app's are extra).
            units as u64 * 2 + 1 >= entities.saturating_sub(1_000),
        ),
        Err(e) => (e, false),
    };
    report.row(
        &format!("`juju status --format json`, {entities} entities, one manager{what}"),
        "answers in full",
        value,
        Some(ok),
    );
}

pub fn million(rt: &Runtime, dir: &Path, a: &Args, report: &mut Report) -> Res<()> {
    let mut c = Cluster::start(dir, &loopback_addrs(1)?, &[])?;
    let (_, cfg) = api::client_config(&c.client_file())?;
    let conn = rt.block_on(Conn::open(&cfg, c.addrs()[0], None))?;
    rt.block_on(conn.write(&api::deploy(APP, 1, 0)))?;
    let (entities, took) = rt.block_on(load(&conn, a.entities, 0))?;
    conn.close();
    report.note(format!(
        "million: {entities} entities created on one manager in {:.1} s",
        took.as_secs_f64()
    ));
    let (log, snap) = state_bytes(&c.managers[0].dir);
    report.row(
        &format!("one manager, {entities} entities: RSS; state on disk"),
        "reported",
        format!(
            "RSS {:.0} MiB; snapshot {:.1} MiB, log {:.1} MiB",
            rss_mib(&c)?,
            snap as f64 / 1048576.0,
            log as f64 / 1048576.0
        ),
        None,
    );
    status_row(report, "", entities, &c);
    let t0 = c.kill_and_restart(0)?;
    let served = rt.block_on(first_served(cfg.clone(), c.addrs()[0], t0, 0))?;
    c.wait_started(0)?;
    let ops =
        c.last_event(0, jujud::events::STATE_RECOVERED).map(|e| e.text("ops")).unwrap_or_default();
    report.row(
        &format!("restart (SIGKILL) -> serving, {entities} entities, one manager"),
        "reported",
        format!(
            "first write acked at {:.0} ms ({ops} ops replayed after the snapshot), RSS after {:.0} MiB",
            ms(served),
            rss_mib(&c)?
        ),
        None,
    );
    status_row(report, ", after the restart", entities, &c);
    Ok(())
}
