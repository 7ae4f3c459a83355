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

use super::server::Shared;
use super::driver::Command;
use super::wire::{self, MAX_API_FRAME_BYTES, MemberRow, Request, Response, TokenRow};
use crate::core::Notice;
use crate::core::state::model::Command as StateCommand;
use crate::core::state::{RequestId, WriteResult};
use crate::core::notices::MAX_NOTICES;
use crate::pki::{self, CertRole};

/// How long a client has to send its request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Longest a client may ask a write to wait for durability and replication.
pub const MAX_WRITE_TIMEOUT_MS: u64 = 120_000;
/// Longest token lifetime a client may ask for.
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Serves requests on `conn` until it closes. `machine` is the machine an
/// agent's certificate names (agents only).
pub async fn serve(conn: quinn::Connection, caller: CertRole, machine: Option<String>, shared: Arc<Shared>) {
    let caller_id = super::transport::peer_of(&conn).map(|(_, id)| id);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        let machine = machine.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            let (response, limit) = match tokio::time::timeout(timeout, wire::read_frame::<Request>(&mut recv, MAX_API_FRAME_BYTES)).await {
                Ok(Ok(Request::AgentSession)) => match (caller, caller_id) {
                    (CertRole::Agent, Some(agent)) => {
                        let (table, inbox) = (shared.sessions.clone(), shared.inbox.clone());
                        return super::session::serve(send, recv, agent, machine, table, inbox).await;
                    }
                    _ => (Response::Error("only agents open agent sessions".into()), MAX_API_FRAME_BYTES),
                },
                Ok(Ok(req)) => {
                    let limit = wire::answer_limit(&req);
                    (answer(&shared, caller, req).await, limit)
                }
                Ok(Err(e)) => {
                    shared.metrics.count_drop("malformed");
                    (Response::Error(format!("bad request: {e}")), MAX_API_FRAME_BYTES)
                }
                Err(_) => (Response::Error("request timed out".into()), MAX_API_FRAME_BYTES),
            };
            if let Err(e) = wire::write_frame_within(&mut send, &response, limit, wire::ANSWER_WRITE_DEADLINE_MS).await {
                if matches!(e, wire::FrameError::TimedOut { .. }) {
                    shared.metrics.count_drop("answer_timeout");
                }
                // Say why instead of leaving the client an early end of stream.
                let why = Response::Error(format!("the answer could not be sent: {e}"));
                let _ = wire::write_frame_within(&mut send, &why, MAX_API_FRAME_BYTES, wire::ANSWER_WRITE_DEADLINE_MS).await;
            }
            let _ = send.finish();
        });
    }
}

async fn answer(shared: &Shared, caller: CertRole, req: Request) -> Response {
    let admin_only = matches!(req, Request::TokenCreate { .. } | Request::TokenList | Request::TokenRevoke { .. });
    if admin_only && caller != CertRole::Admin {
        return Response::Error(format!("a {} may not manage tokens", caller.as_str()));
    }
    match req {
        Request::Members => match shared.members().await {
            Some((me, members)) => Response::Members {
                answered_by: me.id.to_string(),
                members: members.iter().map(MemberRow::from).collect(),
            },
            None => Response::Unavailable("the node is shutting down".into()),
        },
        Request::TokenCreate { role, ttl_secs } => create_token(shared, &role, ttl_secs).await,
        Request::TokenList => Response::Tokens(token_rows(&shared.notices().await)),
        Request::TokenRevoke { token_id } => revoke_token(shared, token_id).await,
        Request::Status => match shared.status().await {
            Some((me, status, members, controller)) => Response::Status {
                answered_by: me,
                status,
                members: members.iter().map(MemberRow::from).collect(),
                controller,
            },
            None => Response::Unavailable("this member holds no state, or is shutting down".into()),
        },
        Request::Command { cmd, wait_replicated, timeout_ms } => write(shared, caller, None, cmd, wait_replicated, timeout_ms).await,
        Request::Write { request_id, cmd, wait_replicated, timeout_ms } => {
            write(shared, caller, Some(request_id), cmd, wait_replicated, timeout_ms).await
        }
        Request::AgentSession => Response::Error("an agent session must be the first frame of its stream".into()),
        Request::SyncNotices(notices) => {
            if caller != CertRole::Manager {
                return Response::Error("only managers sync notices".into());
            }
            for n in notices.into_iter().take(MAX_NOTICES) {
                shared.publish(n).await;
            }
            Response::Done
        }
    }
}

/// Mints a join token for the agent of each new machine (bound to it by
/// the token's subject) and makes each one known, so it can be listed and
/// revoked like any other token.
pub async fn machine_tokens(shared: &Shared, machines: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(machines.len());
    for m in machines {
        let ttl = pki::DEFAULT_TOKEN_TTL_SECS;
        match pki::issue_token(&shared.creds.cluster_secret, CertRole::Agent, Some(m), ttl, unix_now(), &shared.ca_fingerprint) {
            Ok(t) => {
                let notice = Notice::TokenIssued { token_id: t.token_id.clone(), role: "agent".into(), expires_unix_secs: t.expires_unix_secs };
                shared.publish(notice).await;
                out.push((m.clone(), t.to_string()));
            }
            Err(e) => tracing::error!(machine = %m, error = %e, "could not mint the machine's agent token"),
        }
    }
    out
}

/// A state command, with the client's request id if it gave one.
async fn write(shared: &Shared, caller: CertRole, id: Option<RequestId>, cmd: StateCommand, replicas: u32, timeout_ms: u64) -> Response {
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
            if shared.commands.send(Command::WriteWithId { id, cmd, replicas, timeout, reply }).await.is_err() {
                return Response::Unavailable("the node is shutting down".into());
            }
            rx.await.unwrap_or_else(|_| WriteResult::Refused("the node stopped before answering".into()))
        }
    };
    match result {
        WriteResult::Done(mut outcome) => {
            outcome.tokens = machine_tokens(shared, &outcome.machines).await;
            Response::Applied(outcome)
        }
        WriteResult::Refused(reason) => Response::Error(reason),
    }
}

async fn create_token(shared: &Shared, role: &str, ttl_secs: u64) -> Response {
    let Some(role) = CertRole::parse(role).filter(|r| *r == CertRole::Manager) else {
        return Response::Error(format!("cannot issue a token for role {role:?}; only \"manager\" for now"));
    };
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        return Response::Error(format!("ttl must be 1..={MAX_TOKEN_TTL_SECS} seconds"));
    }
    let token = match pki::issue_token(&shared.creds.cluster_secret, role, None, ttl_secs, unix_now(), &shared.ca_fingerprint) {
        Ok(t) => t,
        Err(e) => return Response::Error(e.to_string()),
    };
    let row = TokenRow {
        token_id: token.token_id.clone(),
        role: role.as_str().into(),
        expires_unix_secs: token.expires_unix_secs,
        revoked: false,
    };
    shared
        .publish(Notice::TokenIssued {
            token_id: token.token_id.clone(),
            role: role.as_str().into(),
            expires_unix_secs: token.expires_unix_secs,
        })
        .await;
    Response::Token { token: token.to_string(), row }
}

async fn revoke_token(shared: &Shared, token_id: String) -> Response {
    let notices = shared.notices().await;
    let expiry = notices.iter().find_map(|n| match n {
        Notice::TokenIssued { token_id: t, expires_unix_secs, .. } if *t == token_id => Some(*expires_unix_secs),
        _ => None,
    });
    let Some(expires_unix_secs) = expiry else {
        return Response::Error(format!("no token with id {token_id:?} is known"));
    };
    shared.publish(Notice::TokenRevoked { token_id, expires_unix_secs }).await;
    Response::Done
}

/// Tokens known cluster-wide, with their revocation state.
pub fn token_rows(notices: &[Notice]) -> Vec<TokenRow> {
    let revoked = |id: &str| notices.iter().any(|n| matches!(n, Notice::TokenRevoked { token_id, .. } if token_id == id));
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::TokenIssued { token_id, role, expires_unix_secs } => Some(TokenRow {
                token_id: token_id.clone(),
                role: role.clone(),
                expires_unix_secs: *expires_unix_secs,
                revoked: revoked(token_id),
            }),
            _ => None,
        })
        .collect()
}
