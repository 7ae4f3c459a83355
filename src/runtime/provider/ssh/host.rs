//! What the ssh provider does on one pool host, each step one remote shell
//! script. Layout under the host's `dir`:
//!
//! - `environment`: the id of the environment using the host (its CA
//!   fingerprint; `bootstrap:<random>` until the first manager made it),
//!   written once: a host marked by another environment is refused;
//! - `slot/` (`slot/name`): the host's one instance slot, claimed by an
//!   atomic `mkdir` and holding the instance's name;
//! - `instances/<name>/` (0700): `data/` (the data dir), `token` (0600),
//!   `jujud.log`, `pid`;
//! - `tombstones/<name>`: names stopped here, never started again;
//! - `bin/jujud`: the installed binary (see `install.rs`).
//!
//! Owns that layout and the scripts. Must never signal a process whose
//! command line does not hold the instance's data dir, and never leave a
//! claimed slot behind a start that failed. Scripts name the instance's
//! paths only through variables, so the script's own shell never matches
//! the process pattern it kills by.

use std::io::Read;

use super::client::{Client, quote};
use crate::runtime::provider::ProviderError;

/// Least free space a host's dir needs to take an instance (the binary,
/// the data dir and logs).
pub const MIN_FREE_DISK_BYTES: u64 = 256 * 1024 * 1024;
/// A graceful stop waits this long for the process to leave, then kills it.
pub const GRACEFUL_STOP_MS: u64 = 5_000;
/// How long a stop waits for a killed process to be gone.
pub const KILL_WAIT_MS: u64 = 2_000;
/// A stop's deadline: the grace, the kill wait and a margin for the link.
pub const STOP_TIMEOUT_MS: u64 = GRACEFUL_STOP_MS + KILL_WAIT_MS + 10_000;

/// What claiming the slot found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// The name was claimed here before (by another owner's start, or it
    /// ran and was stopped): nothing may start under it again.
    Existed,
    /// Another instance holds the slot.
    Busy(String),
}

/// The instance dir of `name` under `dir`.
pub fn instance_dir(dir: &str, name: &str) -> String {
    format!("{dir}/instances/{name}")
}

/// Names the provider accepts (they go into paths and unit names).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['-', '.'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn vars(c: &Client, name: &str) -> String {
    format!("D={}; N={}; I=\"$D/instances/$N\"; umask 077; ", quote(&c.entry().dir), quote(name))
}

fn fail(c: &Client, reason: String) -> ProviderError {
    ProviderError::Host { host: c.entry().address.clone(), reason }
}

/// Claims the host's slot for `name` in environment `env`, after checking
/// the dir is writable, the host unused by another environment, and the
/// disk has room.
pub fn claim(c: &Client, name: &str, env: &str) -> Result<Claim, ProviderError> {
    let script = format!(
        "{v}E={e}; MIN={min}; \
         mkdir -p \"$D\" 2>/dev/null && [ -w \"$D\" ] && touch \"$D/.w\" 2>/dev/null && rm -f \"$D/.w\" || {{ echo \"ERR notwritable\"; exit 0; }}; \
         if ! (set -C; echo \"$E\" > \"$D/environment\") 2>/dev/null; then cur=$(cat \"$D/environment\" 2>/dev/null); \
           [ \"$cur\" = \"$E\" ] || {{ echo \"ERR otherenv $cur\"; exit 0; }}; fi; \
         [ -e \"$D/tombstones/$N\" ] && {{ echo EXISTED; exit 0; }}; \
         free=$(df -Pk \"$D\" | awk 'NR==2 {{print $4}}'); \
         if mkdir \"$D/slot\" 2>/dev/null; then echo \"$N\" > \"$D/slot/name\"; \
           if [ \"${{free:-0}}\" -lt \"$MIN\" ]; then rm -rf \"$D/slot\"; echo \"ERR nospace $free\"; exit 0; fi; echo CLAIMED; exit 0; fi; \
         cur=$(cat \"$D/slot/name\" 2>/dev/null); [ \"$cur\" = \"$N\" ] && {{ echo EXISTED; exit 0; }}; echo \"BUSY $cur\"",
        v = vars(c, name),
        e = quote(env),
        min = MIN_FREE_DISK_BYTES / 1024
    );
    let out = c.run(&script, None, super::client::CALL_TIMEOUT_MS)?;
    let dir = &c.entry().dir;
    let line = out.stdout.lines().last().unwrap_or("").trim().to_string();
    match line.split_once(' ').map_or((line.as_str(), ""), |(a, b)| (a, b)) {
        ("CLAIMED", _) => Ok(Claim::Claimed),
        ("EXISTED", _) => Ok(Claim::Existed),
        ("BUSY", who) => Ok(Claim::Busy(who.to_string())),
        ("ERR", "notwritable") => Err(fail(c, format!("directory {dir} is not writable"))),
        ("ERR", rest) if rest.starts_with("otherenv") => Err(fail(
            c,
            format!(
                "host {} is used by environment {}",
                c.entry().address,
                rest.trim_start_matches("otherenv").trim()
            ),
        )),
        ("ERR", rest) if rest.starts_with("nospace") => Err(fail(
            c,
            format!(
                "no room on disk in {dir}: {} KiB free, {} KiB needed",
                rest.trim_start_matches("nospace").trim(),
                MIN_FREE_DISK_BYTES / 1024
            ),
        )),
        _ => Err(fail(
            c,
            format!("claiming the host failed (exit {}): {}", out.code, out.stderr.trim()),
        )),
    }
}

/// Frees the slot of a start that failed, and removes what it made (no
/// tombstone: nothing ran).
pub fn release(c: &Client, name: &str) {
    let script = format!(
        "{}rm -rf \"$I\"; [ \"$(cat \"$D/slot/name\" 2>/dev/null)\" = \"$N\" ] && rm -rf \"$D/slot\"; true",
        vars(c, name)
    );
    if let Err(e) = c.run(&script, None, super::client::CALL_TIMEOUT_MS) {
        tracing::warn!(host = %c.entry().address, instance = %name, error = %e, "could not free the slot of a failed start");
    }
}

/// Creates the instance dir (0700, with `data/`) and writes `file` into
/// it, mode 0600, from `content` over stdin (never on a command line).
pub fn make_instance_dir(c: &Client, name: &str) -> Result<(), ProviderError> {
    let script = format!(
        "{}mkdir -p \"$D/instances\" && mkdir -m 700 \"$I\" && mkdir -m 700 \"$I/data\"",
        vars(c, name)
    );
    let out = c.run(&script, None, super::client::CALL_TIMEOUT_MS)?;
    if out.code != 0 {
        return Err(fail(
            c,
            format!(
                "cannot create the instance dir {}: {}",
                instance_dir(&c.entry().dir, name),
                out.stderr.trim()
            ),
        ));
    }
    Ok(())
}

/// Writes `file` (a plain name) into the instance dir, mode 0600, from
/// `content` over stdin.
pub fn write_secret(
    c: &Client,
    name: &str,
    file: &str,
    content: Vec<u8>,
) -> Result<(), ProviderError> {
    let script =
        format!("{}F={}; cat > \"$I/$F\" && chmod 600 \"$I/$F\"", vars(c, name), quote(file));
    let src: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(content));
    let out = c.run(&script, Some(src), super::client::CALL_TIMEOUT_MS)?;
    if out.code != 0 {
        return Err(fail(
            c,
            format!("cannot write {file} into the instance dir: {}", out.stderr.trim()),
        ));
    }
    Ok(())
}

/// Starts the installed jujud with `args` (already holding the data dir,
/// listen address and token file), writing its log to the instance's
/// `jujud.log` (rotated by jujud; early failures land there too, through
/// stderr): a systemd unit without a restart
/// policy where systemd runs, else a detached process with a pid file.
pub fn launch(c: &Client, name: &str, args: &[String]) -> Result<(), ProviderError> {
    let argv: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let script = format!(
        "{v}B=\"$D/bin/jujud\"; cd \"$I\" || exit 3; : > \"$I/jujud.log\"; chmod 600 \"$I/jujud.log\"; \
         if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then \
           systemd-run --quiet --collect --unit=\"jujud-$N\" -p Restart=no -p StandardOutput=\"append:$I/jujud.log\" -p StandardError=\"append:$I/jujud.log\" \"$B\" {a} --log-file \"$I/jujud.log\" || exit 5; \
           systemctl show -p MainPID --value \"jujud-$N\" > \"$I/pid\"; \
         else nohup setsid \"$B\" {a} --log-file \"$I/jujud.log\" </dev/null >>\"$I/jujud.log\" 2>&1 & echo $! > \"$I/pid\"; fi; echo STARTED",
        v = vars(c, name),
        a = argv.join(" ")
    );
    let out = c.run(&script, None, super::client::CALL_TIMEOUT_MS)?;
    if out.code != 0 || !out.stdout.contains("STARTED") {
        return Err(fail(
            c,
            format!("cannot start jujud (exit {}): {}", out.code, out.stderr.trim()),
        ));
    }
    Ok(())
}

/// The pids whose command line holds `$I/data` (the instance's data dir:
/// its jujud, and the shared ssh connections it opened), as a shell
/// function.
const PIDS_FN: &str = "pids() { for p in /proc/[0-9]*; do q=${p#/proc/}; [ \"$q\" = \"$$\" ] && continue; \
     c=$(tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null) || continue; case \"$c\" in *\"$PAT\"*) echo \"$q\";; esac; done; }; ";

/// Stops instance `name` here (SIGTERM and up to [`GRACEFUL_STOP_MS`] to
/// leave, then SIGKILL), keeps a tombstone of its name, removes its dir
/// and frees the slot. `Ok(false)`: the name is unknown on this host.
pub fn stop(c: &Client, name: &str, graceful: bool) -> Result<bool, ProviderError> {
    let grace_tenths = if graceful { GRACEFUL_STOP_MS / 100 } else { 0 };
    let script = format!(
        "{v}PAT=\"$I/data\"; {pids}\
         if [ ! -d \"$I\" ] && [ ! -e \"$D/tombstones/$N\" ]; then echo NOSUCH; exit 0; fi; \
         P=$(pids); if [ -n \"$P\" ] && [ {g} -gt 0 ]; then kill -TERM $P 2>/dev/null; n=0; \
           while [ $n -lt {g} ] && [ -n \"$(pids)\" ]; do sleep 0.1; n=$((n+1)); done; fi; \
         n=0; while [ -n \"$(pids)\" ] && [ $n -lt {k} ]; do kill -KILL $(pids) 2>/dev/null; sleep 0.1; n=$((n+1)); done; \
         [ -n \"$(pids)\" ] && {{ echo 'still running after SIGKILL' >&2; exit 6; }}; \
         command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && systemctl reset-failed \"jujud-$N\" >/dev/null 2>&1; \
         mkdir -p \"$D/tombstones\" && : > \"$D/tombstones/$N\" && rm -rf \"$I\" || exit 3; \
         [ \"$(cat \"$D/slot/name\" 2>/dev/null)\" = \"$N\" ] && rm -rf \"$D/slot\"; echo STOPPED",
        v = vars(c, name),
        pids = PIDS_FN,
        g = grace_tenths,
        k = KILL_WAIT_MS / 100
    );
    let out = c.run(&script, None, STOP_TIMEOUT_MS)?;
    if out.stdout.contains("NOSUCH") {
        return Ok(false);
    }
    if out.code != 0 || !out.stdout.contains("STOPPED") {
        return Err(fail(
            c,
            format!("stopping {name} failed (exit {}): {}", out.code, out.stderr.trim()),
        ));
    }
    Ok(true)
}

/// Kills every process started from the host's `instances/` dir and
/// removes everything jujud put under `dir`, if the host is unmarked or
/// marked by one of `envs`; returns how many processes it killed, or
/// `None` when another environment marked the host (left alone).
/// Longest a sweep waits for the processes it killed to be gone.
pub const SWEEP_WAIT_MS: u64 = 3_000;

/// The second pass of a destroy, once every host's instances are gone:
/// kills what still holds a file under `dir/bin/` (a binary copy that a
/// manager killed in the first pass had under way here: warming, or a
/// start) and removes `bin/` and the dir again. Returns how many it killed.
pub fn sweep(c: &Client) -> Result<usize, ProviderError> {
    let script = format!(
        "D={d}; holders() {{ for p in /proc/[0-9]*; do q=${{p#/proc/}}; [ \"$q\" = \"$$\" ] && continue; \
           for f in \"$p\"/fd/*; do case \"$(readlink \"$f\" 2>/dev/null)\" in \"$D/bin/\"*) echo \"$q\"; break;; esac; done; done; }}; \
         k=0; n=0; while [ -n \"$(holders)\" ] && [ $n -lt {w} ]; do for p in $(holders); do kill -KILL $p 2>/dev/null && k=$((k+1)); done; sleep 0.1; n=$((n+1)); done; \
         rm -rf \"$D/bin\"; rmdir \"$D\" 2>/dev/null; echo \"SWEPT $k\"",
        d = quote(&c.entry().dir),
        w = SWEEP_WAIT_MS / 100
    );
    let out = c.run(&script, None, STOP_TIMEOUT_MS)?;
    let line = out.stdout.lines().last().unwrap_or("").trim().to_string();
    match line.strip_prefix("SWEPT ") {
        Some(n) => Ok(n.parse().unwrap_or(0)),
        None => Err(fail(c, format!("sweep failed (exit {}): {}", out.code, out.stderr.trim()))),
    }
}

pub fn destroy(c: &Client, envs: &[String]) -> Result<Option<usize>, ProviderError> {
    let ok: Vec<String> = envs.iter().map(|e| quote(e)).collect();
    let script = format!(
        "D={d}; PAT=\"$D/instances/\"; {pids}cur=$(cat \"$D/environment\" 2>/dev/null); \
         if [ -n \"$cur\" ]; then m=0; for e in {ok}; do [ \"$cur\" = \"$e\" ] && m=1; done; [ $m = 1 ] || {{ echo \"OTHER $cur\"; exit 0; }}; fi; \
         k=0; n=0; while [ -n \"$(pids)\" ] && [ $n -lt 30 ]; do for p in $(pids); do kill -KILL $p 2>/dev/null && k=$((k+1)); done; sleep 0.1; n=$((n+1)); done; \
         [ -n \"$(pids)\" ] && {{ echo 'processes survived SIGKILL' >&2; exit 6; }}; \
         rm -rf \"$D/instances\" \"$D/slot\" \"$D/bin\" \"$D/tombstones\" \"$D/environment\"; rmdir \"$D\" 2>/dev/null; echo \"DESTROYED $k\"",
        d = quote(&c.entry().dir),
        pids = PIDS_FN,
        ok = ok.join(" ")
    );
    let out = c.run(&script, None, STOP_TIMEOUT_MS)?;
    let line = out.stdout.lines().last().unwrap_or("").trim().to_string();
    if let Some(other) = line.strip_prefix("OTHER ") {
        tracing::warn!(host = %c.entry().address, environment = %other, "host used by another environment: left alone");
        return Ok(None);
    }
    match line.strip_prefix("DESTROYED ") {
        Some(n) => Ok(Some(n.parse().unwrap_or(0))),
        None => Err(fail(c, format!("destroy failed (exit {}): {}", out.code, out.stderr.trim()))),
    }
}

/// Reads a file of the instance (e.g. `data/client.yaml`); `None` while
/// it is absent.
pub fn read_instance_file(
    c: &Client,
    name: &str,
    file: &str,
) -> Result<Option<String>, ProviderError> {
    let script = format!(
        "{}F={}; [ -f \"$I/$F\" ] && cat \"$I/$F\" || echo '#ABSENT'",
        vars(c, name),
        quote(file)
    );
    let out = c.run(&script, None, super::client::CALL_TIMEOUT_MS)?;
    Ok((out.stdout.trim() != "#ABSENT").then_some(out.stdout))
}

/// Rewrites the host's environment mark from `from` to `to` (bootstrap,
/// once the first manager has made the CA).
pub fn remark(c: &Client, from: &str, to: &str) -> Result<(), ProviderError> {
    let script = format!(
        "D={}; F={}; T={}; [ \"$(cat \"$D/environment\" 2>/dev/null)\" = \"$F\" ] && echo \"$T\" > \"$D/environment.new\" && mv -f \"$D/environment.new\" \"$D/environment\" && echo OK",
        quote(&c.entry().dir),
        quote(from),
        quote(to)
    );
    let out = c.run(&script, None, super::client::CALL_TIMEOUT_MS)?;
    if !out.stdout.contains("OK") {
        return Err(fail(c, "the host's environment mark changed during bootstrap".into()));
    }
    Ok(())
}
