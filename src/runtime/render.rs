//! How `juju` shows answers to people: tables for members, tokens and
//! status. JSON output is serde's, straight from the wire types.
//!
//! Owns layout only. Must never hide a conflict: a value with concurrent
//! siblings is shown as `CONFLICT(a | b)`.

use std::fmt::Write;

use super::wire::{MemberRow, TokenRow};
use crate::core::control::ControllerInfo;
use crate::core::state::model::StatusView;

/// The member table.
pub fn members(answered_by: &str, members: &[MemberRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18} {:<22} {:<8} {:>10} {:<8}",
        "ID", "ADDRESS", "ROLE", "GENERATION", "STATE"
    );
    for m in members {
        let _ = writeln!(
            s,
            "{:<18} {:<22} {:<8} {:>10} {:<8}",
            m.id, m.addr, m.role, m.generation, m.state
        );
    }
    let _ = writeln!(s, "(as seen by {answered_by})");
    s
}

/// The token table, with how many matched and the bytes kept for tokens.
pub fn tokens(rows: &[TokenRow], matched: u64, bytes_kept: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<8} {:<8} {:>12} {:<8} {:<16} MACHINE",
        "ID", "ROLE", "STATE", "EXPIRES", "REUSABLE", "USED-BY"
    );
    for r in rows {
        let used = if r.used_by.is_empty() { "-".to_string() } else { r.used_by.join(",") };
        let machine = r.subject.as_deref().unwrap_or("-");
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:<8} {:>12} {:<8} {:<16} {machine}",
            r.token_id, r.role, r.state, r.expires_unix_secs, r.reusable, used
        );
    }
    let more = match rows.last() {
        Some(last) if (rows.len() as u64) < matched => {
            format!("; next page: --after {}", last.token_id)
        }
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "({} of {matched} shown; {bytes_kept} bytes kept for tokens{more})",
        rows.len()
    );
    s
}

/// `HA n/N`, and while fewer managers run than desired, why, when the
/// provider said so: `HA 2/3: no free host in cloud lab.yaml`.
pub fn ha_line(c: &ControllerInfo) -> String {
    match &c.short_because {
        Some(why) if c.alive < c.desired => format!("HA {}/{}: {why}", c.alive, c.desired),
        _ => format!("HA {}/{}", c.alive, c.desired),
    }
}

/// `juju show-controller`: HA n/N, the managers, who runs each singleton.
pub fn controller(answered_by: &str, c: &ControllerInfo, members: &[MemberRow]) -> String {
    let mut s = String::new();
    let managers: Vec<&MemberRow> = members.iter().filter(|m| m.role == "manager").collect();
    let _ = writeln!(s, "{} (answered by {answered_by})", ha_line(c));
    let _ = writeln!(
        s,
        "provider: {}   replace a manager down for {} ms",
        c.provider.as_deref().unwrap_or("none"),
        c.grace_ms
    );
    let _ = writeln!(
        s,
        "\n{:<18} {:<22} {:>10} {:<8} RUNS",
        "MANAGER", "ADDRESS", "GENERATION", "STATE"
    );
    for m in &managers {
        let runs: Vec<&str> =
            c.owners.iter().filter(|(_, o)| *o == m.id).map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(
            s,
            "{:<18} {:<22} {:>10} {:<8} {}",
            m.id,
            m.addr,
            m.generation,
            m.state,
            runs.join(", ")
        );
    }
    s
}

/// `juju status`: managers, then machines, applications and units.
pub fn status(
    answered_by: &str,
    st: &StatusView,
    members: &[MemberRow],
    c: &ControllerInfo,
) -> String {
    let mut s = String::new();
    let managers: Vec<&MemberRow> = members.iter().filter(|m| m.role == "manager").collect();
    let alive = managers.iter().filter(|m| m.state == "alive").count();
    let gone = managers.iter().filter(|m| m.state == "left" || m.state == "replaced").count();
    let _ = writeln!(
        s,
        "Managers: {alive}/{} alive, {} (answered by {answered_by})",
        managers.len() - gone,
        ha_line(c)
    );
    for m in &managers {
        let runs: Vec<&str> =
            c.owners.iter().filter(|(_, o)| *o == m.id).map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(
            s,
            "  {:<18} {:<22} gen {:<4} {:<8} {}",
            m.id,
            m.addr,
            m.generation,
            m.state,
            runs.join(", ")
        );
    }
    // Ids are `<13 base32 digits>-<n>`: 18 columns fit n up to 1,000.
    let _ = writeln!(
        s,
        "\n{:<18} {:<8} {:<14} {:<22} {:<20} STATUS",
        "MACHINE", "AGENT", "JOBS", "INSTANCE", "ADDRESSES"
    );
    let ids: Vec<&str> = st.machines.iter().map(|m| m.id.as_str()).collect();
    let machine = super::idprefix::shortest(&ids, 0);
    let short = |id: &str| machine.get(id).cloned().unwrap_or_else(|| id.to_string());
    for m in &st.machines {
        let _ = writeln!(
            s,
            "{:<18} {:<8} {:<14} {:<22} {:<20} {}",
            short(&m.id),
            m.presence,
            m.jobs.text(),
            m.instance.text(),
            m.addresses.text(),
            m.status.text()
        );
    }
    let _ = writeln!(s, "\n{:<20} {:>5} COMMAND", "APPLICATION", "SCALE");
    for a in &st.applications {
        let _ = writeln!(s, "{:<20} {:>5} {}", a.name, a.scale, a.command.text());
    }
    let _ = writeln!(s, "\n{:<32} {:<18} {:<8} STATUS", "UNIT", "MACHINE", "AGENT");
    let unit = short_units(st);
    for u in &st.units {
        let on = crate::core::state::model::Shown(u.machine.0.iter().map(|m| short(m)).collect());
        let _ = writeln!(
            s,
            "{:<32} {:<18} {:<8} {}",
            unit.get(&u.id).unwrap_or(&u.id),
            on.text(),
            u.agent,
            unit_status(&u.agent, &u.status.text())
        );
    }
    if !st.controller.is_empty() {
        let _ = writeln!(s, "\nCONTROLLER SETTINGS");
        for (k, v) in &st.controller {
            let _ = writeln!(s, "  {k} = {}", v.text());
        }
    }
    s
}

/// Each unit's shortest unique prefix among its application's units
/// (`NAME/` and at least four characters of the id).
fn short_units(st: &StatusView) -> std::collections::BTreeMap<String, String> {
    let mut by_app: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for u in &st.units {
        let app = u.id.split_once('/').map_or("", |(a, _)| a);
        by_app.entry(app).or_default().push(u.id.as_str());
    }
    by_app
        .into_iter()
        .flat_map(|(app, ids)| super::idprefix::shortest(&ids, app.len() + 1))
        .collect()
}

/// A unit's status as shown: what its agent last reported, marked lost
/// when that agent is not alive (the report may be stale).
pub fn unit_status(agent: &str, status: &str) -> String {
    match agent {
        "alive" | "suspect" | "" => status.to_string(),
        "pending" | "none" => format!("{status} (no agent has joined for its machine yet)"),
        other => format!("lost (machine agent {other}); last reported: {status}"),
    }
}

/// Where one new machine's agent token went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOut {
    /// Written to this file (mode 0600), with `--token-dir`.
    File(std::path::PathBuf),
    /// Shown once, on a line of its own (no `--token-dir`).
    Shown(String),
    /// `--token-dir` was given but the file could not be written.
    Failed(String),
}

/// One machine and where its token went.
pub type TokenFile = (String, TokenOut);

/// What `juju add-machine`, `deploy` and `add-unit` print for each new
/// machine: where its token is and the command that starts its agent,
/// reading the token from that file (never the token itself, and never on
/// a command line). Machines without a token are started by the provider.
pub fn agent_commands(
    machines: &[String],
    files: &[TokenFile],
    seeds: &[std::net::SocketAddr],
) -> String {
    let seeds: Vec<String> = seeds.iter().map(|a| a.to_string()).collect();
    let mut s = String::new();
    for machine in machines {
        match files.iter().find(|(m, _)| m == machine).map(|(_, f)| f) {
            None => {
                let _ = writeln!(
                    s,
                    "machine {machine}: no agent token was issued (the provider starts its instance)"
                );
            }
            Some(TokenOut::File(path)) => {
                let _ = writeln!(
                    s,
                    "machine {machine}: agent token in {} (mode 0600); start its agent with",
                    path.display()
                );
                let _ = writeln!(
                    s,
                    "  jujud agent --data-dir DIR --seeds {} --token-file {}",
                    seeds.join(","),
                    path.display()
                );
            }
            Some(TokenOut::Shown(token)) => {
                let _ = writeln!(
                    s,
                    "machine {machine}: agent token (keep it secret; save it to a file of mode 0600):"
                );
                let _ = writeln!(s, "{token}");
                let _ = writeln!(
                    s,
                    "  start its agent with: jujud agent --data-dir DIR --seeds {} --token-file FILE (or --token-file - and paste it)",
                    seeds.join(",")
                );
            }
            Some(TokenOut::Failed(e)) => {
                let _ = writeln!(
                    s,
                    "machine {machine}: its agent token could not be saved ({e}); `juju tokens revoke` it and add the machine again"
                );
            }
        }
    }
    s
}

/// `juju config NAME`: one line per key.
pub fn config(st: &StatusView, app: &str) -> Option<String> {
    let a = st.applications.iter().find(|a| a.name == app)?;
    let mut s = String::new();
    for (k, v) in &a.config {
        let _ = writeln!(s, "{k}={}", v.text());
    }
    Some(s)
}

/// Parses `key=value` pairs; the first malformed one is named.
pub fn parse_pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("malformed setting {a:?}: expected key=value")),
        })
        .collect()
}

/// `juju show-status-log`: one row per entry, oldest first, times in UTC.
pub fn status_log(
    answered_by: &str,
    entity: &str,
    entries: &[crate::runtime::history::StatusEntry],
) -> String {
    let mut out = format!("{:<24} {:<9} STATUS\n", "TIME (UTC)", "TYPE");
    for e in entries {
        let at =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_unix_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let (h, m, s) = at.time().as_hms();
        let when = format!("{} {h:02}:{m:02}:{s:02}.{:03}", at.date(), at.millisecond());
        let _ = writeln!(out, "{when:<24} {:<9} {}", e.kind, e.status);
    }
    let _ = writeln!(out, "({} entries for {entity}, as recorded by {answered_by})", entries.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_commands_name_the_token_file_never_the_token() {
        let seeds = ["127.0.0.1:7070".parse().unwrap()];
        let machines = vec!["1-a".to_string(), "2-b".to_string(), "3-c".to_string()];
        let files = vec![
            ("1-a".to_string(), TokenOut::File("/t/1-a.token".into())),
            ("2-b".to_string(), TokenOut::Failed("exists".to_string())),
        ];
        let text = agent_commands(&machines, &files, &seeds);
        assert!(text.contains("--seeds 127.0.0.1:7070 --token-file /t/1-a.token"), "{text}");
        assert!(!text.contains("--token "), "{text}");
        assert!(
            text.contains("machine 2-b: its agent token could not be saved (exists)"),
            "{text}"
        );
        assert!(
            text.contains(
                "machine 3-c: no agent token was issued (the provider starts its instance)"
            ),
            "{text}"
        );
        let shown = agent_commands(
            &machines[..1],
            &[("1-a".to_string(), TokenOut::Shown("jjd1.t".into()))],
            &seeds,
        );
        assert!(shown.lines().any(|l| l == "jjd1.t"), "the token on a line of its own: {shown}");
        assert!(shown.contains("--token-file FILE") && !shown.contains("--token jjd1"), "{shown}");
    }

    #[test]
    fn pairs_parse_and_malformed_ones_are_named() {
        let ok = parse_pairs(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(
            ok,
            vec![("a".into(), "1".into()), ("b".into(), "x=y".into()), ("c".into(), "".into())]
        );
        assert!(parse_pairs(&["novalue".into()]).unwrap_err().contains("novalue"));
        assert!(parse_pairs(&["=v".into()]).unwrap_err().contains("=v"));
    }
}
