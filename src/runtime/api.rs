//! The client API served on every authenticated connection: member lists,
//! join tokens, notice sync between managers, status, and state writes
//! (with the client's request id when it gives one). One request per
//! bidirectional stream, framed and bounded (status answers by
//! `wire::MAX_STATUS_FRAME_BYTES`, everything else by `MAX_API_FRAME_BYTES`).
//!
//! Owns authorisation by certificate role. Must never serve a request to a
//! role that may not make it, and never block the node task: it asks the
//! driver through its bounded command channel.

use std::sync::Arc;
use std::time::Duration;

use super::driver::Command;
use super::shared::Shared;
use super::wire::{self, MAX_API_FRAME_BYTES, MemberRow, Request, Response, TokenRow};
use crate::core::notices::MAX_NOTICES;
use crate::core::state::model::Command as StateCommand;
use crate::core::state::tokens::{
    self, MAX_TOKENS_PER_COMMAND, TokenQuery, TokenRecord, TokenSpec,
};
use crate::core::state::{RequestId, WriteResult};
use crate::core::{MemberState, Role};
use crate::pki::{self, CertRole};

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Longest a client may ask a write to wait for durability and replication.
pub const MAX_WRITE_TIMEOUT_MS: u64 = 120_000;
/// Longest token lifetime a client may ask for.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;
/// The controller setting for the lifetime of the agent token each new
/// machine gets, and its default: short, since the machine is started
/// right away (by hand or by the provider) and uses it once.
pub const AGENT_TOKEN_TTL_KEY: &str = "agent-token-ttl-secs";
pub const DEFAULT_AGENT_TOKEN_TTL_SECS: u64 = 3_600;
/// Most rows one `juju tokens list` answer carries (about 150 bytes each,
/// well under `MAX_API_FRAME_BYTES`); the client pages for more.
pub const MAX_TOKEN_LIST_ROWS: usize = 1_000;
/// Times a batch of minted tokens is re-minted after an id collision
/// (ids are 32 random bits; a collision is rare, two in a row rarer).
pub const MAX_MINT_ATTEMPTS: usize = 8;
/// How long a revoke waits, by default, for the other managers.
pub const DEFAULT_REVOKE_TIMEOUT_MS: u64 = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serves requests on `conn` until it closes. `machine` is the machine an
/// agent's certificate names (agents only).
pub async fn serve(
    conn: quinn::Connection,
    caller: CertRole,
    machine: Option<String>,
    shared: Arc<Shared>,
) {
    let caller_id = super::transport::peer_of(&conn).map(|(_, id)| id);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        let machine = machine.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            let mut streamed = false;
            let (response, limit) = match tokio::time::timeout(
                timeout,
                wire::read_frame::<Request>(&mut recv, MAX_API_FRAME_BYTES),
            )
            .await
            {
                Ok(Ok(Request::AgentSession)) => match (caller, caller_id) {
                    (CertRole::Agent, Some(agent)) => {
                        let (table, inbox) = (shared.sessions.clone(), shared.inbox.clone());
                        return super::session::serve(send, recv, agent, machine, table, inbox)
                            .await;
                    }
                    _ => (
                        Response::Error("only agents open agent sessions".into()),
                        MAX_API_FRAME_BYTES,
                    ),
                },
                Ok(Ok(Request::LogSink)) => match (caller, machine) {
                    (CertRole::Agent, Some(machine)) => {
                        match crate::runtime::logs::capture::hub() {
                            Some(hub) => {
                                let metrics = shared.metrics.clone();
                                return crate::runtime::logs::serve::serve_sink(
                                    recv, machine, hub, metrics,
                                )
                                .await;
                            }
                            None => (
                                Response::Error("this manager keeps no log ring".into()),
                                MAX_API_FRAME_BYTES,
                            ),
                        }
                    }
                    _ => (
                        Response::Error("only agents forward log lines".into()),
                        MAX_API_FRAME_BYTES,
                    ),
                },
                Ok(Ok(Request::DebugLog(query))) => {
                    if let Some(why) = refusal(caller, &Request::DebugLog(Default::default())) {
                        tracing::warn!(role = caller.as_str(), "api request refused: {why}");
                        return crate::runtime::logs::serve::refuse(send, why, &shared.metrics)
                            .await;
                    }
                    let hub = crate::runtime::logs::capture::hub();
                    let (followers, metrics) =
                        (shared.log_followers.clone(), shared.metrics.clone());
                    return crate::runtime::logs::serve::serve_query(
                        send, query, hub, followers, metrics,
                    )
                    .await;
                }
                Ok(Ok(req)) => {
                    let limit = wire::answer_limit(&req);
                    streamed = matches!(req, Request::StatusStream);
                    (answer(&shared, caller, req).await, limit)
                }
                Ok(Err(e)) => {
                    shared.metrics.count_drop(crate::metrics::DropReason::Malformed);
                    (Response::Error(format!("bad request: {e}")), MAX_API_FRAME_BYTES)
                }
                Err(_) => (Response::Error("request timed out".into()), MAX_API_FRAME_BYTES),
            };
            let deadline = wire::ANSWER_WRITE_DEADLINE_MS;
            // Every answer to a streamed request is streamed, a refusal
            // included: the client reads chunks until the empty one.
            let written = if streamed {
                wire::write_chunked_within(&mut send, &response, limit, deadline).await
            } else {
                wire::write_frame_within(
                    &mut send,
                    &response,
                    limit.min(wire::MAX_STATUS_FRAME_BYTES),
                    deadline,
                )
                .await
            };
            if let Err(e) = written {
                if matches!(e, wire::FrameError::TimedOut { .. }) {
                    shared.metrics.count_drop(crate::metrics::DropReason::AnswerTimeout);
                }
                // Say why instead of leaving the client an early end of stream.
                let why = Response::Error(format!("the answer could not be sent: {e}"));
                let _ = wire::write_frame_within(
                    &mut send,
                    &why,
                    MAX_API_FRAME_BYTES,
                    wire::ANSWER_WRITE_DEADLINE_MS,
                )
                .await;
            }
            let _ = send.finish();
        });
    }
}

/// What each certificate role may ask for outside its agent session, or
/// why not. An agent needs nothing here: its assignments and reports go
/// through its session (`Request::AgentSession`), so it reads neither
/// status (every application's config, other machines' included) nor the
/// member list.
fn refusal(caller: CertRole, req: &Request) -> Option<String> {
    match (caller, req) {
        (CertRole::Agent, Request::AgentSession) => None,
        (CertRole::Agent, _) => Some("an agent's certificate may only open its agent session; status, members and changes need an admin certificate".into()),
        _ => None,
    }
}

async fn answer(shared: &Shared, caller: CertRole, req: Request) -> Response {
    if let Some(why) = refusal(caller, &req) {
        tracing::warn!(role = caller.as_str(), "api request refused: {why}");
        shared.metrics.count_drop(crate::metrics::DropReason::Rejected);
        return Response::Error(why);
    }
    let admin_only = matches!(
        req,
        Request::TokenCreate { .. }
            | Request::TokenList(_)
            | Request::TokenRevoke { .. }
            | Request::DashboardLogin
            | Request::Hosts
    );
    if admin_only && caller != CertRole::Admin {
        return Response::Error(format!(
            "a {} may not manage tokens, dashboard logins or the host pool",
            caller.as_str()
        ));
    }
    match req {
        // Answered on their own streams before this (`serve`).
        Request::LogSink | Request::DebugLog(_) => {
            Response::Error("this request has a stream of its own".into())
        }
        Request::StatusLog { entity, n } => status_log(shared, entity, n),
        Request::Members => match shared.members().await {
            Some((me, members)) => Response::Members {
                answered_by: me.id.to_string(),
                members: members.iter().map(MemberRow::from).collect(),
            },
            None => Response::Unavailable("the node is shutting down".into()),
        },
        Request::TokenCreate { role, ttl_secs, reusable, machine } => {
            create_token(shared, &role, ttl_secs, reusable, machine).await
        }
        Request::TokenList(query) => token_list(shared, query).await,
        Request::TokenRevoke { token_id, wait_replicated, timeout_ms } => {
            revoke_token(shared, token_id, wait_replicated, timeout_ms).await
        }
        Request::Status | Request::StatusStream => match shared.status().await {
            Some((me, status, members, controller)) => Response::Status {
                answered_by: me,
                status,
                members: members.iter().map(MemberRow::from).collect(),
                controller,
            },
            None => Response::Unavailable("this member holds no state, or is shutting down".into()),
        },
        Request::Command { cmd, wait_replicated, timeout_ms } => {
            write(shared, caller, None, cmd, wait_replicated, timeout_ms).await
        }
        Request::Write { request_id, cmd, wait_replicated, timeout_ms } => {
            write(shared, caller, Some(request_id), cmd, wait_replicated, timeout_ms).await
        }
        Request::AgentSession => {
            Response::Error("an agent session must be the first frame of its stream".into())
        }
        Request::SyncNotices(notices) => {
            if caller != CertRole::Manager {
                return Response::Error("only managers sync notices".into());
            }
            for n in notices.into_iter().take(MAX_NOTICES) {
                shared.publish(n).await;
            }
            Response::Done
        }
        Request::Hosts => match shared.hosts().await {
            Some(rows) => Response::Hosts(rows),
            None => Response::Unavailable("this manager holds no state yet".into()),
        },
        Request::DashboardLogin => match shared.dashboard.get() {
            Some(dash) => dash.login_link(),
            None => Response::Error(
                "this manager serves no dashboard (start it with --dashboard-listen)".into(),
            ),
        },
    }
}

/// Mints a join token for the agent of each new machine (bound to it by
/// the token's subject, single-use, valid `agent-token-ttl-secs`) and
/// records each one durably in the state before handing it out, so it can
/// be listed, revoked and admitted by any manager.
pub async fn machine_tokens(shared: &Shared, machines: &[String]) -> Vec<(String, String)> {
    let ttl = shared
        .state_get(&format!("c/{AGENT_TOKEN_TTL_KEY}"))
        .await
        .iter()
        .filter_map(|v| v.parse().ok())
        .min();
    let ttl = ttl.unwrap_or(DEFAULT_AGENT_TOKEN_TTL_SECS).clamp(1, MAX_TOKEN_TTL_SECS);
    let mut out = Vec::with_capacity(machines.len());
    for chunk in machines.chunks(MAX_TOKENS_PER_COMMAND) {
        let mint = |m: &String| {
            pki::issue_token(
                &shared.creds.cluster_secret,
                CertRole::Agent,
                Some(m),
                ttl,
                unix_now(),
                &shared.ca_fingerprint,
            )
        };
        match record_minted(shared, chunk, mint, false).await {
            Ok(tokens) => {
                out.extend(chunk.iter().cloned().zip(tokens.iter().map(|t| t.to_string())))
            }
            Err(e) => {
                tracing::error!(machines = chunk.len(), error = %e, "could not record the machines' agent tokens; none is handed out")
            }
        }
    }
    out
}

/// Mints one token per subject with `mint` and records them in one write,
/// minting again any whose id collided with a recorded one.
async fn record_minted(
    shared: &Shared,
    subjects: &[String],
    mint: impl Fn(&String) -> Result<pki::JoinToken, pki::TokenError>,
    reusable: bool,
) -> Result<Vec<pki::JoinToken>, String> {
    let mut minted: Vec<pki::JoinToken> =
        subjects.iter().map(&mint).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    for _ in 0..MAX_MINT_ATTEMPTS {
        let specs = minted.iter().map(|t| spec_of(t, reusable)).collect();
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        match shared.write(StateCommand::IssueTokens(specs), 0, timeout).await {
            WriteResult::Done(_) => return Ok(minted),
            WriteResult::Refused(reason) => {
                let Some(id) = reason.strip_prefix("token id ").and_then(|r| r.split(' ').next())
                else {
                    return Err(reason);
                };
                for (i, t) in minted.iter_mut().enumerate().filter(|(_, t)| t.token_id == id) {
                    *t = mint(&subjects[i]).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Err("token ids kept colliding".into())
}

/// What a minted token is recorded as in the state (never its secret).
pub fn spec_of(t: &pki::JoinToken, reusable: bool) -> TokenSpec {
    TokenSpec {
        token_id: t.token_id.clone(),
        role: t.role.as_str().into(),
        subject: t.subject.clone(),
        expires_unix_secs: t.expires_unix_secs,
        reusable,
    }
}

/// A state command, with the client's request id if it gave one.
async fn write(
    shared: &Shared,
    caller: CertRole,
    id: Option<RequestId>,
    cmd: StateCommand,
    replicas: u32,
    timeout_ms: u64,
) -> Response {
    if caller != CertRole::Admin {
        return Response::Error(format!("a {} may not change the environment", caller.as_str()));
    }
    if cmd.is_internal() {
        return Response::Error("that command is issued by managers, not clients".into());
    }
    let timeout = Duration::from_millis(timeout_ms.clamp(1, MAX_WRITE_TIMEOUT_MS));
    let result = match id {
        None => shared.write(cmd, replicas, timeout).await,
        Some(id) => {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if shared
                .commands
                .send(Command::WriteWithId { id, cmd, replicas, timeout, reply })
                .await
                .is_err()
            {
                return Response::Unavailable("the node is shutting down".into());
            }
            rx.await.unwrap_or_else(|_| {
                WriteResult::Refused("the node stopped before answering".into())
            })
        }
    };
    match result {
        WriteResult::Done(mut outcome) => {
            // With a provider, the provisioner starts each new machine with
            // its own token: minting another here would only put a live
            // token on the client's screen.
            if !outcome.machines.is_empty() && !provider_configured(shared).await {
                outcome.tokens = machine_tokens(shared, &outcome.machines).await;
            }
            Response::Applied(outcome)
        }
        WriteResult::Refused(reason) => Response::Error(reason),
    }
}

/// Whether the environment has a provider (then it, not a person, starts
/// new machines); unknown (no state) counts as none. One key read, not a
/// status view: a view walks every entity, which at 100,000 machines costs
/// most of a second per write.
async fn provider_configured(shared: &Shared) -> bool {
    let key = format!("c/{}", crate::core::state::controllers::PROVIDER_KEY);
    !shared.state_get(&key).await.is_empty()
}

async fn create_token(
    shared: &Shared,
    role: &str,
    ttl_secs: u64,
    reusable: bool,
    machine: Option<String>,
) -> Response {
    let Some(role) = CertRole::parse(role).filter(|r| *r == CertRole::Manager) else {
        return Response::Error(format!(
            "cannot issue a token for role {role:?}; only \"manager\" for now"
        ));
    };
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        return Response::Error(format!("ttl must be 1..={MAX_TOKEN_TTL_SECS} seconds"));
    }
    if let Some(m) = &machine
        && shared.state_get(&format!("m/{m}/life")).await != ["alive"]
    {
        return Response::Error(format!("machine {m} does not exist"));
    }
    let mint = |_: &String| {
        pki::issue_token(
            &shared.creds.cluster_secret,
            role,
            machine.as_deref(),
            ttl_secs,
            unix_now(),
            &shared.ca_fingerprint,
        )
    };
    let token = match record_minted(shared, &[String::new()], mint, reusable).await {
        Ok(mut t) if !t.is_empty() => t.remove(0),
        Ok(_) => return Response::Error("no token was minted".into()),
        Err(e) => return Response::Error(format!("the token could not be recorded: {e}")),
    };
    let rec = TokenRecord {
        token_id: token.token_id.clone(),
        issue: Some(spec_of(&token, reusable)),
        revoked: false,
        used_by: Vec::new(),
    };
    Response::Token { token: token.to_string(), row: row_of(&rec, unix_now()) }
}

/// Revokes a token: acknowledged once durable here and held durably by
/// `wait_replicated` other managers (by default every live one), or
/// refused saying how far it got.
async fn revoke_token(
    shared: &Shared,
    token_id: String,
    wait_replicated: Option<u32>,
    timeout_ms: u64,
) -> Response {
    match shared.token_record(&token_id).await {
        Ok(Some(rec)) if rec.issue.is_some() => {}
        Ok(_) => return Response::Error(format!("no token with id {token_id:?} is known")),
        Err(e) => return Response::Unavailable(e),
    }
    let others: Vec<String> = shared
        .members()
        .await
        .map(|(me, ms)| {
            let live = |m: &&crate::core::MemberInfo| {
                m.identity.role == Role::Manager
                    && m.state == MemberState::Alive
                    && m.identity.id != me.id
            };
            ms.iter().filter(live).map(|m| m.identity.id.to_string()).collect()
        })
        .unwrap_or_default();
    let replicas = wait_replicated.unwrap_or(others.len() as u32);
    let timeout = Duration::from_millis(if timeout_ms == 0 {
        DEFAULT_REVOKE_TIMEOUT_MS
    } else {
        timeout_ms.min(MAX_WRITE_TIMEOUT_MS)
    });
    match shared
        .write(StateCommand::RevokeToken { token_id: token_id.clone() }, replicas, timeout)
        .await
    {
        WriteResult::Done(_) => Response::Done,
        WriteResult::Refused(reason) => Response::Error(format!(
            "token {token_id} not confirmed revoked as asked: {reason} (waited for {replicas} of the live managers {}; the revocation, once durable here, still spreads to them)",
            if others.is_empty() { "(none)".to_string() } else { others.join(", ") }
        )),
    }
}

/// One page of the tokens this manager holds.
async fn token_list(shared: &Shared, mut query: TokenQuery) -> Response {
    query.limit = query.limit.clamp(1, MAX_TOKEN_LIST_ROWS);
    let now = unix_now();
    match shared.token_list(query).await {
        Some(page) => Response::Tokens {
            rows: page.rows.iter().map(|r| row_of(r, now)).collect(),
            matched: page.matched as u64,
            bytes_kept: page.bytes_kept,
        },
        None => Response::Unavailable("this member holds no state, or is shutting down".into()),
    }
}

/// A token as listed.
pub fn row_of(rec: &TokenRecord, now_unix_secs: u64) -> TokenRow {
    let issue = rec.issue.as_ref();
    TokenRow {
        token_id: rec.token_id.clone(),
        role: issue.map(|i| i.role.clone()).unwrap_or_default(),
        expires_unix_secs: issue.map_or(0, |i| i.expires_unix_secs),
        revoked: rec.revoked,
        subject: issue.and_then(|i| i.subject.clone()),
        reusable: issue.is_some_and(|i| i.reusable),
        used_by: rec.used_by.clone(),
        state: tokens::state_of(rec, now_unix_secs).into(),
    }
}

/// The last `n` entries of `entity`'s status history on this manager.
fn status_log(shared: &Shared, entity: String, n: u32) -> Response {
    use super::history::{MAX_STATUS_LOG_ASKED, MAX_STATUS_LOG_PER_ENTITY};
    if n == 0 || n > MAX_STATUS_LOG_ASKED {
        return Response::Error(format!("-n must be 1 to {MAX_STATUS_LOG_ASKED}"));
    }
    if entity.len() > crate::runtime::logs::MAX_LOG_NAME_BYTES {
        return Response::Error("that is no machine or unit id".into());
    }
    match shared.history.of(&entity, (n as usize).min(MAX_STATUS_LOG_PER_ENTITY)) {
        Some(entries) => {
            Response::StatusLog { answered_by: shared.self_id.to_string(), entity, entries }
        }
        None => Response::Error(format!(
            "no status history for {entity:?} on this manager: no such machine or unit, or it was removed before this manager started"
        )),
    }
}
