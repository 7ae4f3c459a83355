//! Join tokens and their revocations as replicated state: the key layout,
//! the commands that issue, revoke, use and sweep tokens, and the reads
//! admission and `juju tokens list` make.
//!
//! Owns the `t/` keys. Must never read a clock (the runtime passes unix
//! time in), never hold a token's secret (only its id, role, subject and
//! expiry), and never refuse a create, a revoke or a use because of how
//! many tokens exist: what is kept is bounded by what is live, since the
//! sweep removes every key of a token once it has expired everywhere
//! (its expiry plus [`CLOCK_SKEW_MARGIN_SECS`]).
//!
//! Keys (every value carries the token's expiry so the sweep can remove
//! any of them alone, e.g. a revocation that arrived before its issue):
//! `t/<id>/issue` = `<role> <expires> <reusable 0|1> <subject or ->`,
//! `t/<id>/revoked` = `<expires>`, `t/<id>/used` = `<node> <expires>`
//! (concurrent uses at two managers show as two siblings).

use serde::{Deserialize, Serialize};

use super::model::CommandError;
use super::replica::{Change, Replica};

/// The prefix of every token key.
pub const KEY_PREFIX: &str = "t/";
/// How long after its expiry a token's keys are kept: clocks of managers
/// may disagree by this much, and a token is refused by the expiry in its
/// own text (MAC'd) anyway, so the record only has to outlive the latest
/// clock that could still accept it.
pub const CLOCK_SKEW_MARGIN_SECS: u64 = 300;
/// Most tokens one issue command records (`add-machine -n 1000` mints
/// 1,000); a larger batch is refused as invalid, the caller splits it.
pub const MAX_TOKENS_PER_COMMAND: usize = 1_000;
/// Most keys one sweep removes (one write of that many operations); the
/// rest go at the next sweep, which the runtime then runs a second later.
pub const MAX_SWEEP_KEYS: usize = 5_000;
/// Longest token id, subject and node id accepted in a record.
pub const MAX_TOKEN_FIELD_BYTES: usize = 128;

/// A token as it is recorded when minted (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub token_id: String,
    /// `manager` or `agent`.
    pub role: String,
    /// The machine an agent (or provider-started manager) token is bound to.
    pub subject: Option<String>,
    pub expires_unix_secs: u64,
    /// Whether more than one node may join with it.
    pub reusable: bool,
}

/// Everything this replica holds about one token id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_id: String,
    /// The issue record; `None` when only a revocation or a use is here.
    pub issue: Option<TokenSpec>,
    pub revoked: bool,
    /// The nodes that used it (more than one only for a reusable token, or
    /// for concurrent uses at two managers inside the replication window).
    pub used_by: Vec<String>,
}

/// What `juju tokens list` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenQuery {
    /// `manager` or `agent`.
    pub role: Option<String>,
    /// `active`, `revoked`, `expired` or `used`.
    pub state: Option<String>,
    /// Start after this token id (paging).
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of tokens, with the totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPage {
    pub rows: Vec<TokenRecord>,
    /// Tokens matching the query (all pages).
    pub matched: usize,
    /// Bytes of keys and values kept under `t/` on this replica.
    pub bytes_kept: u64,
}

fn key(id: &str, field: &str) -> String {
    format!("{KEY_PREFIX}{id}/{field}")
}

fn invalid(what: &str, value: &str, rule: &str) -> CommandError {
    CommandError::Invalid {
        what: what.into(),
        value: value.chars().take(64).collect(),
        rule: rule.into(),
    }
}

fn check_field(what: &str, v: &str) -> Result<(), CommandError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_TOKEN_FIELD_BYTES
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then_some(()).ok_or_else(|| invalid(what, v, "letters, digits, '-', '_', '.', at most 128"))
}

fn issue_value(s: &TokenSpec) -> String {
    format!(
        "{} {} {} {}",
        s.role,
        s.expires_unix_secs,
        u8::from(s.reusable),
        s.subject.as_deref().unwrap_or("-")
    )
}

fn parse_issue(id: &str, v: &str) -> Option<TokenSpec> {
    let mut it = v.split(' ');
    let role = it.next()?.to_string();
    let expires_unix_secs = it.next()?.parse().ok()?;
    let reusable = it.next()? == "1";
    let subject = it.next().filter(|s| *s != "-").map(str::to_string);
    Some(TokenSpec { token_id: id.into(), role, subject, expires_unix_secs, reusable })
}

/// The expiry a token key's value carries (the last field but for `issue`).
fn expiry_of(field: &str, v: &str) -> Option<u64> {
    match field {
        "issue" => v.split(' ').nth(1)?.parse().ok(),
        "revoked" => v.parse().ok(),
        "used" => v.split(' ').nth(1)?.parse().ok(),
        _ => None,
    }
}

/// Everything held about `id` (`None` when nothing is).
pub fn record(r: &Replica, id: &str) -> Option<TokenRecord> {
    let issue = r.get(&key(id, "issue"));
    let revoked = !r.get(&key(id, "revoked")).is_empty();
    let used_by: Vec<String> = r
        .get(&key(id, "used"))
        .iter()
        .filter_map(|v| v.split(' ').next().map(str::to_string))
        .collect();
    if issue.is_empty() && !revoked && used_by.is_empty() {
        return None;
    }
    // Siblings of an issue record only arise from a token id minted twice
    // at once; the earliest expiry is the safe reading.
    let issue = issue.iter().filter_map(|v| parse_issue(id, v)).min_by_key(|s| s.expires_unix_secs);
    Some(TokenRecord { token_id: id.into(), issue, revoked, used_by })
}

/// Records newly minted tokens. A token id already recorded with another
/// value is refused (`TokenIdInUse`): the caller mints that one again.
pub fn plan_issue(r: &Replica, specs: &[TokenSpec]) -> Result<Vec<Change>, CommandError> {
    if specs.is_empty() || specs.len() > MAX_TOKENS_PER_COMMAND {
        return Err(invalid("token count", &specs.len().to_string(), "must be 1..=1000"));
    }
    let mut changes = Vec::with_capacity(specs.len());
    for s in specs {
        check_field("token id", &s.token_id)?;
        if let Some(m) = &s.subject {
            check_field("token subject", m)?;
        }
        if s.role != "manager" && s.role != "agent" {
            return Err(invalid("token role", &s.role, "manager or agent"));
        }
        let k = key(&s.token_id, "issue");
        let value = issue_value(s);
        let held = r.get(&k);
        if !held.is_empty() && held != [value.clone()]
            || changes.iter().any(|c| matches!(c, Change::Set { key, .. } if *key == k))
        {
            return Err(CommandError::TokenIdInUse(s.token_id.clone()));
        }
        changes.push(Change::Set { key: k, value });
    }
    Ok(changes)
}

/// Revokes `id`: refused when no issue record is here; revoking twice
/// changes nothing.
pub fn plan_revoke(r: &Replica, id: &str) -> Result<Vec<Change>, CommandError> {
    let rec = record(r, id).ok_or_else(|| CommandError::UnknownToken(id.into()))?;
    let Some(issue) = rec.issue else { return Err(CommandError::UnknownToken(id.into())) };
    if rec.revoked {
        return Ok(Vec::new());
    }
    Ok(vec![Change::Set { key: key(id, "revoked"), value: issue.expires_unix_secs.to_string() }])
}

/// The issue record of `rec` (what [`record`] found for `id`), if the token
/// is known here and not revoked. Admission's check before it issues a
/// certificate and [`plan_use`] both ask this.
pub fn issued<'a>(rec: Option<&'a TokenRecord>, id: &str) -> Result<&'a TokenSpec, CommandError> {
    let rec = rec.ok_or_else(|| CommandError::UnknownToken(id.into()))?;
    if rec.revoked {
        return Err(CommandError::TokenRevoked(id.into()));
    }
    rec.issue.as_ref().ok_or_else(|| CommandError::UnknownToken(id.into()))
}

/// Refuses a single-use token used by a node other than `node` (the same
/// node again is a retry of a join whose answer was lost).
pub fn check_single_use(
    id: &str,
    used_by: &[String],
    issue: &TokenSpec,
    node: &str,
) -> Result<(), CommandError> {
    if !issue.reusable && used_by.iter().any(|n| n != node) {
        return Err(CommandError::TokenUsed { token_id: id.into(), by: used_by.join(", ") });
    }
    Ok(())
}

/// Records that `node` joined with `id` (the runtime checked its MAC and
/// expiry). Refused when the token is unknown here, revoked, or single-use
/// and used by another node; the same node again changes nothing (a retry
/// of a join whose answer was lost). An agent token also claims its
/// machine for `node`, in the same write.
pub fn plan_use(
    r: &Replica,
    id: &str,
    node: &str,
) -> Result<(Vec<Change>, Option<String>), CommandError> {
    check_field("node id", node)?;
    let rec = record(r, id);
    let issue = issued(rec.as_ref(), id)?;
    let used_by = rec.as_ref().map_or(&[][..], |rec| &rec.used_by[..]);
    check_single_use(id, used_by, issue, node)?;
    let mut changes = Vec::new();
    if !issue.reusable && used_by.is_empty() {
        changes.push(Change::Set {
            key: key(id, "used"),
            value: format!("{node} {}", issue.expires_unix_secs),
        });
    }
    let machine = (issue.role == "agent").then(|| issue.subject.clone()).flatten();
    Ok((changes, machine))
}

/// Removes every token key whose expiry (plus the skew margin) is before
/// `now_unix_secs`, at most [`MAX_SWEEP_KEYS`]. Refused as
/// `NothingExpired` when there is nothing to remove (so an idle sweep
/// writes nothing, not even a request record).
pub fn plan_sweep(r: &Replica, now_unix_secs: u64) -> Result<Vec<Change>, CommandError> {
    let changes: Vec<Change> = expired_keys(r, now_unix_secs)
        .take(MAX_SWEEP_KEYS)
        .map(|key| Change::Remove { key })
        .collect();
    if changes.is_empty() {
        return Err(CommandError::NothingExpired);
    }
    Ok(changes)
}

/// The token keys expired everywhere by `now_unix_secs`.
pub fn expired_keys(r: &Replica, now_unix_secs: u64) -> impl Iterator<Item = String> + '_ {
    r.entries_with_prefix(KEY_PREFIX).filter_map(move |(k, vals)| {
        let field = k.rsplit('/').next()?;
        let latest = vals
            .iter()
            .map(|v| expiry_of(field, v))
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()?;
        (latest.saturating_add(CLOCK_SKEW_MARGIN_SECS) < now_unix_secs).then(|| k.clone())
    })
}

/// Whether this replica can judge tokens: it holds state (a fresh joiner
/// before its first sync holds none, and would call every token unknown).
pub fn ready(r: &Replica) -> bool {
    !r.is_empty()
}

/// Bytes of keys and values kept under `t/`.
pub fn bytes_kept(r: &Replica) -> u64 {
    r.entries_with_prefix(KEY_PREFIX)
        .map(|(k, vals)| (k.len() + vals.iter().map(String::len).sum::<usize>()) as u64)
        .sum()
}

/// A record's state at `now_unix_secs`: revoked, expired, used (single-use,
/// taken) or active.
pub fn state_of(rec: &TokenRecord, now_unix_secs: u64) -> &'static str {
    match &rec.issue {
        _ if rec.revoked => "revoked",
        Some(i) if i.expires_unix_secs <= now_unix_secs => "expired",
        None => "expired",
        Some(i) if !i.reusable && !rec.used_by.is_empty() => "used",
        Some(_) => "active",
    }
}

/// One page of the tokens matching `q`, by id.
pub fn list(r: &Replica, q: &TokenQuery, now_unix_secs: u64) -> TokenPage {
    let mut page = TokenPage { bytes_kept: bytes_kept(r), ..Default::default() };
    let mut last: Option<&str> = None;
    for (k, _) in r.entries_with_prefix(KEY_PREFIX) {
        let Some(id) = k[KEY_PREFIX.len()..].split('/').next() else { continue };
        if last == Some(id) {
            continue;
        }
        last = Some(id);
        let Some(rec) = record(r, id) else { continue };
        let role_ok =
            q.role.as_ref().is_none_or(|want| rec.issue.as_ref().is_some_and(|i| i.role == *want));
        if !role_ok || q.state.as_deref().is_some_and(|s| s != state_of(&rec, now_unix_secs)) {
            continue;
        }
        page.matched += 1;
        if q.after.as_deref().is_none_or(|a| id > a) && page.rows.len() < q.limit {
            page.rows.push(rec);
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::replica::Actor;

    fn spec(id: &str, role: &str, subject: Option<&str>, exp: u64, reusable: bool) -> TokenSpec {
        TokenSpec {
            token_id: id.into(),
            role: role.into(),
            subject: subject.map(Into::into),
            expires_unix_secs: exp,
            reusable,
        }
    }

    fn replica() -> Replica {
        let mut r = Replica::new(Actor { node: 1, generation: 0 });
        r.write(&[Change::Set { key: "c/x".into(), value: "1".into() }]);
        r
    }

    #[test]
    fn a_single_use_token_admits_one_node_and_again_the_same_one() {
        let mut r = replica();
        r.write(&plan_issue(&r, &[spec("aa", "manager", None, 100, false)]).unwrap());
        let (c, m) = plan_use(&r, "aa", "n1").unwrap();
        assert_eq!(m, None);
        r.write(&c);
        assert!(
            plan_use(&r, "aa", "n1").unwrap().0.is_empty(),
            "a retry by the same node is idempotent"
        );
        assert!(matches!(plan_use(&r, "aa", "n2"), Err(CommandError::TokenUsed { .. })));
        r.write(&plan_revoke(&r, "aa").unwrap());
        assert!(matches!(plan_use(&r, "aa", "n1"), Err(CommandError::TokenRevoked(_))));
        assert!(matches!(plan_use(&r, "zz", "n1"), Err(CommandError::UnknownToken(_))));
    }

    #[test]
    fn reusable_tokens_admit_many_and_agent_tokens_name_their_machine() {
        let mut r = replica();
        r.write(
            &plan_issue(
                &r,
                &[
                    spec("aa", "manager", None, 100, true),
                    spec("bb", "agent", Some("m-1"), 100, false),
                ],
            )
            .unwrap(),
        );
        assert!(plan_use(&r, "aa", "n1").unwrap().0.is_empty());
        assert!(plan_use(&r, "aa", "n2").is_ok());
        assert_eq!(plan_use(&r, "bb", "n3").unwrap().1.as_deref(), Some("m-1"));
    }

    /// Finding 18.2: the notice book refused new entries past 8,192, so a
    /// token created after ~8,200 machines could not be revoked.
    #[test]
    fn no_count_limit_stops_a_create_or_a_revoke() {
        let mut r = replica();
        for batch in 0..12 {
            let specs: Vec<TokenSpec> = (0..1_000)
                .map(|i| spec(&format!("{batch:02}{i:06}"), "agent", Some("m"), 100, false))
                .collect();
            r.write(&plan_issue(&r, &specs).unwrap());
        }
        r.write(&plan_issue(&r, &[spec("late", "manager", None, 100, false)]).unwrap());
        r.write(&plan_revoke(&r, "late").unwrap());
        assert!(record(&r, "late").unwrap().revoked);
        let page = list(
            &r,
            &TokenQuery { state: Some("revoked".into()), limit: 10, ..Default::default() },
            50,
        );
        assert_eq!((page.matched, page.rows.len()), (1, 1));
    }

    #[test]
    fn a_colliding_token_id_is_refused_so_the_caller_mints_again() {
        let mut r = replica();
        r.write(&plan_issue(&r, &[spec("aa", "manager", None, 100, false)]).unwrap());
        assert!(
            plan_issue(&r, &[spec("aa", "manager", None, 100, false)]).is_ok(),
            "the same record again is a retry"
        );
        assert!(matches!(
            plan_issue(&r, &[spec("aa", "agent", Some("m"), 100, false)]),
            Err(CommandError::TokenIdInUse(_))
        ));
        assert!(matches!(
            plan_issue(
                &r,
                &[spec("bb", "agent", None, 1, false), spec("bb", "agent", None, 2, false)]
            ),
            Err(CommandError::TokenIdInUse(_))
        ));
    }

    #[test]
    fn the_sweep_removes_what_expired_everywhere_and_nothing_else() {
        let mut r = replica();
        let before = bytes_kept(&r);
        r.write(
            &plan_issue(
                &r,
                &[
                    spec("aa", "manager", None, 100, false),
                    spec("bb", "manager", None, 10_000, false),
                ],
            )
            .unwrap(),
        );
        r.write(&plan_revoke(&r, "aa").unwrap());
        r.write(&plan_use(&r, "bb", "n1").unwrap().0);
        assert!(
            matches!(
                plan_sweep(&r, 100 + CLOCK_SKEW_MARGIN_SECS),
                Err(CommandError::NothingExpired)
            ),
            "kept through the skew margin"
        );
        r.write(&plan_sweep(&r, 101 + CLOCK_SKEW_MARGIN_SECS).unwrap());
        assert_eq!(record(&r, "aa"), None);
        assert!(record(&r, "bb").is_some());
        r.write(&plan_sweep(&r, 20_000).unwrap());
        assert_eq!(bytes_kept(&r), before);
        assert_eq!(r.get("c/x"), ["1"], "other keys untouched");
    }

    #[test]
    fn list_filters_by_role_and_state_and_pages() {
        let mut r = replica();
        r.write(
            &plan_issue(
                &r,
                &[
                    spec("a1", "manager", None, 100, false),
                    spec("a2", "agent", Some("m"), 100, false),
                    spec("a3", "agent", Some("m"), 10, false),
                ],
            )
            .unwrap(),
        );
        let q = |role: Option<&str>, state: Option<&str>, after: Option<&str>| TokenQuery {
            role: role.map(Into::into),
            state: state.map(Into::into),
            after: after.map(Into::into),
            limit: 1,
        };
        let p = list(&r, &q(Some("agent"), None, None), 50);
        assert_eq!((p.matched, p.rows[0].token_id.as_str()), (2, "a2"));
        assert_eq!(list(&r, &q(Some("agent"), None, Some("a2")), 50).rows[0].token_id, "a3");
        assert_eq!(list(&r, &q(None, Some("expired"), None), 50).rows[0].token_id, "a3");
        assert!(list(&r, &q(None, None, None), 50).bytes_kept > 0);
    }
}
