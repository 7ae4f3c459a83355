//! The join exchange: a new manager with a token (a secret plus the CA
//! fingerprint) dials a seed on the join ALPN, pins the CA by fingerprint,
//! and receives its certificate and the cluster's keys.
//!
//! Owns both sides of that exchange. Must never admit without a valid,
//! unexpired, unrevoked token of the right role, and never give anything
//! but a refusal to a peer without one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use tokio::sync::watch;

use super::wire::{
    self, Admission, JoinRequest, JoinResponse, MAX_ADMISSION_NOTICES_BYTES, MAX_JOIN_FRAME_BYTES,
    Refusal,
};
use crate::core::Notice;
use crate::core::state::{Command as StateCommand, WriteResult};
use crate::pki::{self, CertRole, ClusterCa, JoinToken};

/// How long each step of a join may take.
pub const JOIN_STEP_TIMEOUT_MS: u64 = 5_000;
/// Validity of node certificates issued at join or bootstrap.
pub const NODE_CERT_VALIDITY_DAYS: u32 = 365;

/// The start of the refusal for a node id whose tag is taken; the joiner
/// picks another id and asks again.
pub const TAG_IN_USE: &str = "node id tag already in use";
/// Times a joiner picks a new id after a tag refusal.
pub const MAX_TAG_RETRIES: usize = 5;
/// How long a joiner keeps asking while the cluster cannot admit it yet
/// (see [`join`]), and its backoff.
pub const RETRY_FOR_MS: u64 = 120_000;
pub const RETRY_BACKOFF_MIN_MS: u64 = 250;
pub const RETRY_BACKOFF_MAX_MS: u64 = 4_000;
/// Admissions one manager works on at once (token checks, a certificate,
/// the token's use written durably and replicated). A request past it is
/// answered `Busy` at once, which the joiner asks again after its jittered
/// backoff: a burst of new machines is admitted as fast as this manager
/// can answer, instead of every joiner timing out at `JOIN_STEP_TIMEOUT_MS`
/// behind the rest and asking again while its abandoned admission still
/// runs.
pub const MAX_CONCURRENT_JOINS: usize = 8;

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("join token is malformed: {0}")]
    BadToken(String),
    #[error("the cluster refused to admit this node ({}): {reason}", refusal_text(*.refusal))]
    Refused { refusal: Refusal, reason: String },
    #[error("no seed could be reached: {0}")]
    Unreachable(String),
    #[error("seed {0} sent credentials of another cluster than the token names")]
    WrongCluster(SocketAddr),
    #[error("asked to stop while joining")]
    ShuttingDown,
}

/// A refusal's kind in words, for the joiner's error.
pub fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::Invalid => "invalid",
        Refusal::Revoked => "token revoked",
        Refusal::Expired => "token expired",
        Refusal::AlreadyUsed => "token already used",
        Refusal::NotReady => "not ready; asking again would help",
        Refusal::TagInUse => "node id tag in use",
        Refusal::AnswerTooLarge => "answer too large",
        Refusal::Busy => "busy",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks, before dialing anyone, that `token` is for what is joining, and
/// says plainly which command the token is for when it is not.
pub fn check_token_role(token: &str, joining: CertRole) -> Result<JoinToken, JoinError> {
    let parsed: JoinToken =
        token.parse().map_err(|e: pki::TokenError| JoinError::BadToken(e.to_string()))?;
    match (joining, parsed.role, parsed.subject.as_deref()) {
        (CertRole::Agent, CertRole::Agent, Some(_)) | (CertRole::Manager, CertRole::Manager, _) => Ok(parsed),
        (CertRole::Agent, CertRole::Agent, None) => Err(JoinError::BadToken("this agent token names no machine".into())),
        (CertRole::Agent, _, _) => Err(JoinError::BadToken(
            "this is a manager's join token; an agent needs the token `juju add-machine` printed for its machine".into(),
        )),
        (_, _, subject) => Err(JoinError::BadToken(format!(
            "this token is for the agent of machine {}; run `jujud agent` with it, not `jujud peer`",
            subject.unwrap_or("?")
        ))),
    }
}

/// Asks the seeds, in parallel, to admit this node. The first admission
/// wins; a refusal counts only once every seed has answered, and a final
/// one (revoked, expired, used, invalid) outweighs one that waiting may
/// cure. While the cluster cannot admit it yet, asks again with backoff
/// for up to `RETRY_FOR_MS`: when the refusal was "not ready" (a manager
/// without state, or one that has not yet heard of the token or the
/// machine), when no seed answered but one was reached (it shed or lost
/// the connection: busy), and, for an agent, when no seed answered at all
/// (the provider starts an agent once, and nothing would start it again; a
/// manager given a silent seed fails at once, as an operator wants).
/// Returns `ShuttingDown` as soon as `shutdown` turns true.
pub async fn join(
    seeds: &[SocketAddr],
    token: &str,
    node_id: u64,
    advertise: SocketAddr,
    role: CertRole,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Admission, JoinError> {
    let deadline = std::time::Instant::now() + Duration::from_millis(RETRY_FOR_MS);
    check_token_role(token, role)?;
    let (mut backoff, mut reached) = (RETRY_BACKOFF_MIN_MS, role == CertRole::Agent);
    loop {
        let result = tokio::select! {
            r = join_once(seeds, token, node_id, advertise, role, &mut reached) => r,
            _ = stopped(&mut shutdown) => return Err(JoinError::ShuttingDown),
        };
        let again = match &result {
            Err(JoinError::Unreachable(_)) => reached,
            Err(JoinError::Refused { refusal, .. }) => refusal.retryable(),
            _ => false,
        };
        if !again || std::time::Instant::now() >= deadline {
            return result;
        }
        tracing::warn!(error = %result.err().map(|e| e.to_string()).unwrap_or_default(), backoff_ms = backoff, "{}", crate::events::JOIN_RETRY);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(jittered(backoff, super::random_u64()))) => {}
            _ = stopped(&mut shutdown) => return Err(JoinError::ShuttingDown),
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX_MS);
    }
}

/// A retry wait drawn over the upper half of `backoff` (ms) from `r`, so
/// joiners refused together (a burst, a busy seed) do not ask again
/// together.
fn jittered(backoff: u64, r: u64) -> u64 {
    backoff / 2 + r % (backoff / 2 + 1)
}

/// Resolves once `shutdown` is true; never if its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One round of asking every seed; `reached` when one of them was there
/// (it shed the connection, or lost it after the handshake). Public for
/// the tokens bench, which asks once every 10 ms itself.
pub async fn join_once(
    seeds: &[SocketAddr],
    token: &str,
    node_id: u64,
    advertise: SocketAddr,
    role: CertRole,
    reached: &mut bool,
) -> Result<Admission, JoinError> {
    let parsed = check_token_role(token, role)?;
    let rustls_cfg = pki::join_client_config(&parsed.ca_fingerprint)
        .map_err(|e| JoinError::BadToken(e.to_string()))?;
    let client_cfg = pki::quinn_client_config(rustls_cfg, super::transport::transport_config())
        .map_err(|e| JoinError::BadToken(e.to_string()))?;
    let request =
        JoinRequest { token: token.to_string(), node_id, advertise, role: role.as_str().into() };
    let mut tasks = tokio::task::JoinSet::new();
    for &seed in seeds {
        let (cfg, req) = (client_cfg.clone(), request.clone());
        tasks.spawn(async move { (seed, ask_seed(seed, cfg, req).await) });
    }
    let mut failures = Vec::new();
    let mut refusals: Vec<(Refusal, String)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let Ok((seed, result)) = done else { continue };
        match result {
            Ok(JoinResponse::Admitted(adm)) => {
                let fp = ClusterCa::cert_fingerprint_from_pem(&adm.ca_cert_pem)
                    .map_err(|_| JoinError::WrongCluster(seed))?;
                if fp != parsed.ca_fingerprint {
                    return Err(JoinError::WrongCluster(seed));
                }
                return Ok(*adm);
            }
            Ok(JoinResponse::Refused { refusal, reason }) => {
                refusals.push((refusal, format!("{seed}: {reason}")))
            }
            Err((there, e)) => {
                *reached |= there;
                failures.push(format!("{seed}: {e}"));
            }
        }
    }
    let final_one = refusals.iter().position(|(r, _)| !r.retryable()).unwrap_or(0);
    match refusals.into_iter().nth(final_one) {
        Some((refusal, reason)) => Err(JoinError::Refused { refusal, reason }),
        None => Err(JoinError::Unreachable(failures.join("; "))),
    }
}

/// One seed's answer, or why not (true when the seed was there: it shed
/// the connection, or lost it after the handshake).
async fn ask_seed(
    seed: SocketAddr,
    cfg: quinn::ClientConfig,
    req: JoinRequest,
) -> Result<JoinResponse, (bool, String)> {
    let bind: SocketAddr =
        if seed.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("literal");
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| (false, e.to_string()))?;
    let step = Duration::from_millis(JOIN_STEP_TIMEOUT_MS);
    let shed = |e: &quinn::ConnectionError| matches!(e, quinn::ConnectionError::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED);
    let connected = async {
        let connecting = endpoint
            .connect_with(cfg, seed, pki::SERVER_NAME)
            .map_err(|e| (false, e.to_string()))?;
        tokio::time::timeout(step, connecting)
            .await
            .map_err(|_| (false, "timed out".to_string()))?
            .map_err(|e| (shed(&e), e.to_string()))
    };
    let conn = match connected.await {
        Ok(c) => c,
        Err(e) => {
            endpoint.close(0u32.into(), b"done");
            return Err(e);
        }
    };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        wire::write_frame(&mut send, &req, MAX_JOIN_FRAME_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let resp = tokio::time::timeout(step, wire::read_frame(&mut recv, MAX_JOIN_FRAME_BYTES))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"done");
        Ok(resp)
    }
    .await;
    endpoint.close(0u32.into(), b"done");
    exchange.map_err(|e: String| (true, e))
}

/// Serves one joiner's connection on the join ALPN.
pub async fn serve(conn: quinn::Connection, shared: Arc<Shared>) {
    let step = Duration::from_millis(JOIN_STEP_TIMEOUT_MS);
    let remote = conn.remote_address();
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(step, conn.accept_bi()).await else {
        conn.close(1u32.into(), b"join request expected");
        return;
    };
    let mut shed = false;
    let response = match tokio::time::timeout(
        step,
        wire::read_frame::<JoinRequest>(&mut recv, MAX_JOIN_FRAME_BYTES),
    )
    .await
    {
        Ok(Ok(req)) => match admission_slot(&shared.joins) {
            Ok(_slot) => admit(&shared, req).await,
            Err(busy) => {
                // Counted and logged at debug: a burst of machines sheds
                // by the hundred, and each asks again.
                shed = true;
                shared.metrics.count_drop(crate::metrics::DropReason::JoinBusy);
                tracing::debug!(%remote, "every admission slot taken; asked the joiner to come back");
                busy
            }
        },
        Ok(Err(e)) => refuse(Refusal::Invalid, format!("bad join request: {e}")),
        Err(_) => refuse(Refusal::Invalid, "join request timed out".into()),
    };
    if let (false, JoinResponse::Refused { refusal, reason }) = (shed, &response) {
        tracing::warn!(%remote, refusal = refusal_text(*refusal), %reason, "refused a join");
        shared.metrics.count_drop(crate::metrics::DropReason::JoinRefused);
    }
    if let Err(e) = wire::write_frame(&mut send, &response, MAX_JOIN_FRAME_BYTES).await {
        // Say why instead of leaving the joiner an early end of stream. What
        // the admission wrote stays: the same joiner asking again (same node
        // id) is admitted again, idempotently.
        tracing::error!(%remote, error = %e, "the join answer could not be sent");
        shared.metrics.count_drop(crate::metrics::DropReason::JoinAnswerFailed);
        let why = refuse(Refusal::AnswerTooLarge, format!("the answer could not be sent: {e}"));
        let _ = wire::write_frame(&mut send, &why, MAX_JOIN_FRAME_BYTES).await;
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(step, conn.closed()).await;
}

/// One of the `MAX_CONCURRENT_JOINS` admission slots, held while the
/// admission runs, or the `Busy` answer when all are taken.
fn admission_slot(
    joins: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, JoinResponse> {
    joins.clone().try_acquire_owned().map_err(|_| {
        refuse(
            Refusal::Busy,
            format!("{MAX_CONCURRENT_JOINS} admissions in progress on this manager; ask again"),
        )
    })
}

fn refuse(refusal: Refusal, reason: String) -> JoinResponse {
    JoinResponse::Refused { refusal, reason }
}

/// Notices for an admission, at most `MAX_ADMISSION_NOTICES_BYTES` of them.
fn bounded_notices(notices: Vec<Notice>) -> Vec<Notice> {
    let mut used = 0usize;
    notices
        .into_iter()
        .take_while(|n| {
            used =
                used.saturating_add(crate::core::codec::encode(n).map_or(usize::MAX, |b| b.len()));
            used <= MAX_ADMISSION_NOTICES_BYTES
        })
        .collect()
}

/// Checks `token` against this manager's replica (`tokens::issued` and
/// `tokens::check_single_use`, the checks the use's write makes again):
/// the issue record must be here and match the token, with no revocation
/// and, for a single-use token, no use by another node.
async fn check_record(
    shared: &Shared,
    token: &JoinToken,
    joining: CertRole,
    node: &str,
) -> Result<(), JoinResponse> {
    use crate::core::state::model::CommandError;
    use crate::core::state::tokens;
    let id = &token.token_id;
    let rec = match shared.token_record(id).await {
        Err(e) => {
            return Err(refuse(
                Refusal::NotReady,
                format!("this manager cannot judge tokens yet ({e}); ask again"),
            ));
        }
        Ok(rec) => rec,
    };
    let refused = |e: CommandError| match e {
        CommandError::TokenRevoked(_) => {
            refuse(Refusal::Revoked, format!("token {id} has been revoked; ask for a new token"))
        }
        CommandError::TokenUsed { .. } => refuse(Refusal::AlreadyUsed, e.to_string()),
        _ => refuse(Refusal::NotReady, format!("token {id} is not known here yet; ask again")),
    };
    let issue = tokens::issued(rec.as_ref(), id).map_err(refused)?;
    if issue.role != joining.as_str()
        || issue.subject != token.subject
        || issue.expires_unix_secs != token.expires_unix_secs
    {
        return Err(refuse(Refusal::Invalid, format!("token {id} does not match its record")));
    }
    let used_by = rec.as_ref().map_or(&[][..], |rec| &rec.used_by[..]);
    tokens::check_single_use(id, used_by, issue, node).map_err(refused)
}

/// Records the token's use (and an agent's machine claim) durably here
/// before the answer; a refusal there (a revocation or another use that
/// arrived meanwhile) is the joiner's refusal.
async fn record_use(shared: &Shared, token: &JoinToken, node: &str) -> Result<(), JoinResponse> {
    let cmd = StateCommand::UseToken { token_id: token.token_id.clone(), node: node.to_string() };
    match shared.write(cmd, 0, Duration::from_millis(JOIN_STEP_TIMEOUT_MS)).await {
        WriteResult::Done(_) => Ok(()),
        WriteResult::Refused(reason) => {
            let refusal = if reason.contains("has been revoked") {
                Refusal::Revoked
            } else if reason.contains("single-use") || reason.contains("already has an agent") {
                Refusal::AlreadyUsed
            } else if reason.contains("does not exist") || reason.contains("is known here") {
                Refusal::NotReady
            } else {
                Refusal::Busy
            };
            Err(refuse(refusal, reason))
        }
    }
}

async fn admit(shared: &Shared, req: JoinRequest) -> JoinResponse {
    let Some(joining) = CertRole::parse(&req.role).filter(|r| *r != CertRole::Admin) else {
        return refuse(Refusal::Invalid, format!("cannot join as {:?}", req.role));
    };
    let token = match check_token_role(&req.token, joining) {
        Ok(t) => t,
        Err(e) => return refuse(Refusal::Invalid, e.to_string()),
    };
    match pki::verify_token(
        &token,
        &shared.creds.cluster_secret,
        joining,
        unix_now(),
        &shared.ca_fingerprint,
    ) {
        Ok(()) => {}
        Err(e @ pki::TokenError::Expired { .. }) => return refuse(Refusal::Expired, e.to_string()),
        Err(e) => return refuse(Refusal::Invalid, e.to_string()),
    }
    if req.node_id == 0 || req.node_id == shared.self_id.0 {
        return refuse(Refusal::Invalid, "node id is reserved or in use".into());
    }
    let node = crate::core::NodeId(req.node_id).to_string();
    if let Err(refusal) = check_record(shared, &token, joining, &node).await {
        return refusal;
    }
    let notices = bounded_notices(shared.notices().await);
    if joining == CertRole::Agent {
        return admit_agent(shared, &req, &token, notices).await;
    }
    // Entity ids carry four hex digits of the creating manager's id; two
    // managers sharing them could create the same id.
    let tag = crate::core::state::model::tag_of(req.node_id);
    let members = shared.members().await.map(|(_, m)| m).unwrap_or_default();
    if members.iter().any(|m| crate::core::state::model::tag_of(m.identity.id.0) == tag) {
        return refuse(Refusal::TagInUse, format!("{TAG_IN_USE}: {tag}"));
    }
    let cert = match shared.ca.issue(CertRole::Manager, req.node_id, NODE_CERT_VALIDITY_DAYS) {
        Ok(c) => c,
        Err(e) => return refuse(Refusal::Busy, format!("could not issue a certificate: {e}")),
    };
    if let Err(refusal) = record_use(shared, &token, &node).await {
        return refusal;
    }
    // A manager the provider started for a controller machine (its token
    // names it) is recorded as that machine's node before it runs, as an
    // agent is: otherwise, killed before its own first claim, it would look
    // never joined to the HA keeper and wait out the 30 s start grace.
    if let Some(machine) = token.subject.clone() {
        let claim = StateCommand::ClaimMachine { machine: machine.clone(), agent: node.clone() };
        if let WriteResult::Refused(reason) =
            shared.write(claim, 0, Duration::from_millis(JOIN_STEP_TIMEOUT_MS)).await
        {
            tracing::warn!(%machine, %reason, "could not record a joining manager as its machine's node; it will claim the machine itself");
        }
    }
    tracing::info!(node = %node, advertise = %req.advertise, token = %token.token_id, "admitted a manager");
    JoinResponse::Admitted(Box::new(Admission {
        cluster_name: shared.cluster_name.clone(),
        ca_cert_pem: shared.creds.ca_cert_pem.clone(),
        ca_key_pem: shared.creds.ca_key_pem.clone(),
        cluster_secret: shared.creds.cluster_secret.clone(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        notices,
    }))
}

/// Admits a machine agent: the token names its machine, which must exist
/// and have no other agent; the token's use and the claim are made durable
/// in one write before the answer, and the agent gets its certificate and
/// the CA certificate, no keys.
async fn admit_agent(
    shared: &Shared,
    req: &JoinRequest,
    token: &JoinToken,
    notices: Vec<Notice>,
) -> JoinResponse {
    let Some(machine) = token.subject.clone() else {
        return refuse(Refusal::Invalid, "this agent token names no machine".into());
    };
    let node = crate::core::NodeId(req.node_id).to_string();
    let cert = match shared.ca.issue_agent(req.node_id, &machine, NODE_CERT_VALIDITY_DAYS) {
        Ok(c) => c,
        Err(e) => return refuse(Refusal::Busy, format!("could not issue a certificate: {e}")),
    };
    if let Err(refusal) = record_use(shared, token, &node).await {
        return refusal;
    }
    tracing::info!(node = %node, %machine, token = %token.token_id, "admitted a machine agent");
    JoinResponse::Admitted(Box::new(Admission {
        cluster_name: shared.cluster_name.clone(),
        ca_cert_pem: shared.creds.ca_cert_pem.clone(),
        ca_key_pem: String::new(),
        cluster_secret: Vec::new(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
        notices,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed at its handshake limit sheds the connection: the joiner asks
    /// again instead of failing (a machine started in a burst would die of
    /// its first try otherwise).
    #[tokio::test]
    async fn a_joiner_asks_again_when_a_seed_sheds_its_connection() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = ClusterCa::generate("busy").unwrap();
        let cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
        let cfg = pki::quinn_server_config(
            pki::server_config(&ca, &cert).unwrap(),
            super::super::transport::transport_config(),
        )
        .unwrap();
        let seed = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = seed.local_addr().unwrap();
        let token =
            pki::issue_token(&[7; 32], CertRole::Manager, None, 600, unix_now(), &ca.fingerprint())
                .unwrap()
                .to_string();
        let (_stop, stop_rx) = watch::channel(false);
        let joiner = tokio::spawn(async move {
            join(&[addr], &token, 42, "127.0.0.1:1".parse().unwrap(), CertRole::Manager, stop_rx)
                .await
        });
        let cap = Duration::from_millis(JOIN_STEP_TIMEOUT_MS);
        for attempt in 1..=2 {
            let incoming = tokio::time::timeout(cap, seed.accept())
                .await
                .unwrap_or_else(|_| panic!("no attempt {attempt}"))
                .unwrap();
            incoming.refuse();
        }
        assert!(!joiner.is_finished(), "still asking after two shed connections");
        joiner.abort();
    }

    /// Past `MAX_CONCURRENT_JOINS` admissions in progress a request is
    /// answered `Busy` (which the joiner asks again after), and a slot
    /// given back admits the next one.
    #[test]
    fn admissions_past_the_bound_are_asked_to_come_back() {
        let joins = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_JOINS));
        let held: Vec<_> = (0..MAX_CONCURRENT_JOINS)
            .map(|_| admission_slot(&joins).expect("a free slot"))
            .collect();
        match admission_slot(&joins) {
            Err(JoinResponse::Refused { refusal, .. }) => {
                assert_eq!(refusal, Refusal::Busy);
                assert!(refusal.retryable(), "the joiner must ask again");
            }
            other => panic!("admitted past the bound: {:?}", other.is_ok()),
        }
        drop(held);
        assert!(admission_slot(&joins).is_ok(), "slots come back");
    }

    /// Retry waits cover the upper half of the backoff, so joiners refused
    /// together spread out, and never exceed it.
    #[test]
    fn retry_waits_are_jittered_over_the_upper_half() {
        for backoff in [RETRY_BACKOFF_MIN_MS, 1_000, RETRY_BACKOFF_MAX_MS] {
            let waits: std::collections::BTreeSet<u64> =
                [0, 1, 7, backoff / 3, u64::MAX].iter().map(|&r| jittered(backoff, r)).collect();
            assert!(
                waits.iter().all(|w| (backoff / 2..=backoff).contains(w)),
                "{backoff}: {waits:?}"
            );
            assert!(waits.len() > 2, "{backoff}: not spread: {waits:?}");
        }
    }
}
