//! Agent sessions on QUIC: one bidirectional stream per session, on the
//! member connection between an agent and a manager. The stream opens with
//! a `Request::AgentSession` frame; after it, each frame is one session
//! message (bincode, bounded), in either direction.
//!
//! Owns both ends' stream tasks and the table of open sessions' writers.
//! Must never let a slow peer hold unbounded data: each session's outgoing
//! queue is bounded, and a session whose queue is full is closed (the agent
//! reconnects and is sent its whole assignment again). Never decides which
//! manager to use: the core does, and this module only dials what it names.
//!
//! Also owns the manager's agent login rate limit (a token bucket on
//! session opens): past it an open is answered with one
//! `SessionMsg::Busy { retry_after_ms }` and closed, so a fleet that comes
//! back at once is let in at a bounded rate instead of all together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::transport::{Transport, member_role};
use super::wire::{self, MAX_API_FRAME_BYTES, Request};
use crate::core::agent::role::MAX_HONOURED_RETRY_AFTER_MS;
use crate::core::agent::{MAX_SESSION_MSG_BYTES, SessionMsg, decode_msg, encode_msg};
use crate::core::{Input, NodeId, PeerCert, Role};
use crate::metrics::Metrics;
use crate::pki::CertRole;

/// Messages waiting to go out on one session; at the bound the session is
/// closed.
pub const MAX_SESSION_QUEUE: usize = 64;
/// How long an agent waits for a manager's first message on a new session.
pub const SESSION_OPEN_TIMEOUT_MS: u64 = 2_000;
/// Once a session frame has begun, the rest of it (at most
/// `MAX_SESSION_MSG_BYTES`) must arrive within this; past it the session is
/// closed (a peer that sends one byte and stalls holds nothing for long).
/// Between frames a session may idle: its connection's idle timeout and
/// keep-alives decide whether the peer is there.
pub const SESSION_FRAME_DEADLINE_MS: u64 = 10_000;

/// Agent session opens a manager lets in per second, sustained (the token
/// bucket's refill rate). Past it (and past the burst) an open is refused
/// with a retry-after; the agent waits that long plus jitter.
pub const AGENT_LOGIN_RATE_PER_SEC: u32 = 50;
/// Agent session opens a manager lets in at once after a quiet spell (the
/// bucket's size).
pub const AGENT_LOGIN_BURST: u32 = 64;
/// The longest retry-after a refusal carries: refused agents are spread
/// over at most this much time ahead.
pub const MAX_LOGIN_RETRY_AFTER_MS: u64 = 10_000;
/// At most one "rate limited" log line per this long (with the count of
/// refusals since the last line).
pub const LOGIN_LIMIT_LOG_EVERY_MS: u64 = 1_000;

/// A token bucket on agent logins, with the retry-after to give a refused
/// agent: each refusal is promised the next free slot (1/rate apart, up to
/// `MAX_LOGIN_RETRY_AFTER_MS` ahead), so refused agents come back spread
/// out rather than together.
#[derive(Debug)]
pub struct LoginBucket {
    rate_per_sec: u32,
    burst: u32,
    /// Tokens, in thousandths (refill is per millisecond).
    milli_tokens: u64,
    last: Instant,
    /// The latest slot promised to a refused agent.
    promised: Instant,
}

impl LoginBucket {
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> LoginBucket {
        let rate_per_sec = rate_per_sec.max(1);
        LoginBucket {
            rate_per_sec,
            burst,
            milli_tokens: u64::from(burst) * 1_000,
            last: now,
            promised: now,
        }
    }

    /// Takes a token (`Ok`), or refuses with the retry-after in ms.
    pub fn admit(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed_ms = now.saturating_duration_since(self.last).as_millis();
        let elapsed_ms = u64::try_from(elapsed_ms).unwrap_or(u64::MAX);
        self.last = self.last.max(now);
        let refill = elapsed_ms.saturating_mul(u64::from(self.rate_per_sec));
        let cap = u64::from(self.burst) * 1_000;
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(cap);
        if self.milli_tokens >= 1_000 {
            self.milli_tokens -= 1_000;
            return Ok(());
        }
        let slot = Duration::from_millis(1_000 / u64::from(self.rate_per_sec))
            .max(Duration::from_millis(1));
        let horizon = now + Duration::from_millis(MAX_LOGIN_RETRY_AFTER_MS);
        let next = (self.promised.max(now) + slot).min(horizon);
        self.promised = next;
        let wait = next.saturating_duration_since(now).as_millis();
        Err(u64::try_from(wait).unwrap_or(MAX_LOGIN_RETRY_AFTER_MS).max(1))
    }
}

/// The manager's login limit with its rate-limited log line.
struct LoginLimit {
    bucket: LoginBucket,
    refused_since_log: u64,
    last_log: Option<Instant>,
}

/// The writers of every open session, by session id.
pub struct SessionTable {
    writers: Mutex<BTreeMap<u64, mpsc::Sender<Vec<u8>>>>,
    /// Ids for sessions accepted from agents (managers); agents use the
    /// core's ids.
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    login: Mutex<LoginLimit>,
}

impl SessionTable {
    pub fn new(metrics: Arc<Metrics>) -> Arc<SessionTable> {
        Arc::new(SessionTable {
            writers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
            login: Mutex::new(LoginLimit {
                bucket: LoginBucket::new(
                    AGENT_LOGIN_RATE_PER_SEC,
                    AGENT_LOGIN_BURST,
                    Instant::now(),
                ),
                refused_since_log: 0,
                last_log: None,
            }),
        })
    }

    /// Manager side: lets an agent's session open in, or refuses it with a
    /// retry-after (ms), counted and logged (at most one line per
    /// `LOGIN_LIMIT_LOG_EVERY_MS`).
    fn admit_login(&self, agent: NodeId) -> Result<(), u64> {
        let now = Instant::now();
        let mut login = self.login.lock().expect("login limit poisoned");
        let Err(retry_after_ms) = login.bucket.admit(now) else {
            return Ok(());
        };
        self.metrics.count_drop(crate::metrics::DropReason::SessionLoginRateLimited);
        login.refused_since_log += 1;
        let every = Duration::from_millis(LOGIN_LIMIT_LOG_EVERY_MS);
        if login.last_log.is_none_or(|t| now.saturating_duration_since(t) >= every) {
            tracing::warn!(
                %agent,
                retry_after_ms,
                refused = login.refused_since_log,
                rate_per_sec = AGENT_LOGIN_RATE_PER_SEC,
                burst = AGENT_LOGIN_BURST,
                "{}",
                crate::events::AGENT_LOGIN_RATE_LIMITED
            );
            login.refused_since_log = 0;
            login.last_log = Some(now);
        }
        Err(retry_after_ms)
    }

    fn register(&self, id: u64) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(MAX_SESSION_QUEUE);
        self.writers.lock().expect("session table poisoned").insert(id, tx);
        rx
    }

    /// Queues one message on `session`; a full queue closes the session.
    pub fn send(&self, session: u64, bytes: Vec<u8>) {
        let mut writers = self.writers.lock().expect("session table poisoned");
        let Some(tx) = writers.get(&session) else { return };
        if tx.try_send(bytes).is_err() {
            tracing::warn!(session, "session queue full or closed; closing the session");
            self.metrics.count_drop(crate::metrics::DropReason::SessionQueueFull);
            writers.remove(&session);
        }
    }

    /// Closes `session` once what was queued on it has been written.
    pub fn close(&self, session: u64) {
        self.writers.lock().expect("session table poisoned").remove(&session);
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.writers.lock().expect("session table poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes queued messages until the queue closes, then finishes the stream.
/// A peer that does not take a frame within `SESSION_FRAME_DEADLINE_MS`
/// (flow control holds the writer) has the stream reset: the queue closes
/// with it, and so does the session, instead of holding what was queued
/// for as long as the connection lives.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    table: Arc<SessionTable>,
) {
    let deadline = Duration::from_millis(SESSION_FRAME_DEADLINE_MS);
    while let Some(bytes) = rx.recv().await {
        match tokio::time::timeout(
            deadline,
            wire::write_raw_frame(&mut send, &bytes, MAX_SESSION_MSG_BYTES),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    deadline_ms = SESSION_FRAME_DEADLINE_MS,
                    "session peer did not take a frame in time; resetting the session"
                );
                table.metrics.count_drop(crate::metrics::DropReason::SessionWriteTimeout);
                let _ = send.reset(super::transport::STREAM_REFUSED.into());
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Reads frames into the driver until the stream ends (or a frame is bad,
/// too large or stalls), then reports the session closed.
async fn read_loop(
    mut recv: quinn::RecvStream,
    session: u64,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
) {
    loop {
        match wire::read_raw_frame_started(
            &mut recv,
            MAX_SESSION_MSG_BYTES,
            SESSION_FRAME_DEADLINE_MS,
        )
        .await
        {
            Ok(bytes) => {
                if inbox.send(Input::SessionData { session, bytes }).await.is_err() {
                    break;
                }
            }
            Err(e @ (wire::FrameError::TooLarge { .. } | wire::FrameError::TimedOut { .. })) => {
                tracing::warn!(session, error = %e, "{}", crate::events::SESSION_BAD_FRAME);
                table.metrics.count_drop(crate::metrics::DropReason::SessionBadFrame);
                let _ = recv.stop(super::transport::STREAM_REFUSED.into());
                break;
            }
            Err(_) => break,
        }
    }
    table.close(session);
    let _ = inbox.send(Input::SessionClosed { session }).await;
}

/// Manager side: an agent opened a session stream (its first frame has
/// been read). Runs it until either side ends it.
pub async fn serve(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    agent: NodeId,
    machine: Option<String>,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
) {
    if let Err(retry_after_ms) = table.admit_login(agent) {
        let busy = encode_msg(&SessionMsg::Busy { retry_after_ms });
        let write = wire::write_raw_frame(&mut send, &busy, MAX_SESSION_MSG_BYTES);
        let deadline = Duration::from_millis(SESSION_FRAME_DEADLINE_MS);
        if let Ok(Ok(())) = tokio::time::timeout(deadline, write).await {
            let _ = send.finish();
        }
        drop(recv);
        return;
    }
    let session = table.next_id.fetch_add(1, Ordering::Relaxed);
    let rx = table.register(session);
    let peer = PeerCert { id: agent, role: Role::Agent };
    if inbox.send(Input::SessionOpened { session, peer, machine }).await.is_err() {
        return;
    }
    tokio::spawn(write_loop(send, rx, table.clone()));
    read_loop(recv, session, table, inbox).await;
}

/// Why one candidate did not open the session.
enum OpenFailure {
    /// The manager's login rate limit: try again after this many ms.
    Busy(u64),
    Failed(String),
}

impl From<&str> for OpenFailure {
    fn from(e: &str) -> OpenFailure {
        OpenFailure::Failed(e.to_owned())
    }
}

impl From<String> for OpenFailure {
    fn from(e: String) -> OpenFailure {
        OpenFailure::Failed(e)
    }
}

/// One candidate's attempt: a connection to a manager (with the expected
/// id, if given), the session frame, and the manager's first message.
async fn try_open(
    transport: Arc<Transport>,
    addr: SocketAddr,
    want: Option<NodeId>,
) -> Result<(NodeId, quinn::SendStream, quinn::RecvStream, Vec<u8>), OpenFailure> {
    let conn =
        match want.and_then(|id| transport.connection(id)).filter(|c| c.close_reason().is_none()) {
            Some(c) => c,
            None => {
                let pc = transport.dial(addr).await.map_err(|e| format!("{addr}: {e}"))?;
                if pc.role != CertRole::Manager || want.is_some_and(|w| w != pc.id) {
                    return Err(format!("{addr} is not the manager expected there").into());
                }
                let c = pc.conn.clone();
                transport.register(pc);
                c
            }
        };
    let id = super::transport::peer_of(&conn).map(|(_, id)| id).ok_or("no peer identity")?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame(&mut send, &Request::AgentSession, MAX_API_FRAME_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(
        Duration::from_millis(SESSION_OPEN_TIMEOUT_MS),
        wire::read_raw_frame(&mut recv, MAX_SESSION_MSG_BYTES),
    )
    .await
    .map_err(|_| format!("{addr} sent nothing within {SESSION_OPEN_TIMEOUT_MS} ms"))?
    .map_err(|e| e.to_string())?;
    if let Ok(SessionMsg::Busy { retry_after_ms }) = decode_msg(&first) {
        return Err(OpenFailure::Busy(retry_after_ms));
    }
    Ok((id, send, recv, first))
}

/// How one open's race over its candidates ended.
#[derive(Debug, PartialEq, Eq)]
enum RaceEnd<T> {
    /// This candidate answered first (the others were aborted).
    Opened(T),
    /// None opened; a manager refused for load: retry after this many ms
    /// (what is left of the shortest retry-after when the race ended).
    Busy(u64),
    /// None opened, and none was busy.
    Failed,
}

/// Runs every attempt at once; the first that opens wins and the rest are
/// aborted. A busy answer (a manager's login rate limit) bounds how long
/// the race waits for the others: to its retry-after, the time the agent
/// would try again anyway. Without that bound an attempt that hangs (a dial
/// to a manager that just died waits out `DIAL_TIMEOUT_MS`) held the busy
/// verdict, and the agent's retry, for seconds.
async fn race<T, F>(attempts: Vec<F>, session: u64) -> RaceEnd<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, OpenFailure>> + Send + 'static,
{
    let mut tries = tokio::task::JoinSet::new();
    for a in attempts {
        tries.spawn(a);
    }
    // The shortest retry-after heard so far, as a deadline.
    let mut busy_until: Option<tokio::time::Instant> = None;
    loop {
        let done = tokio::select! {
            done = tries.join_next() => match done {
                Some(done) => done,
                None => break,
            },
            _ = tokio::time::sleep_until(busy_until.unwrap_or_else(tokio::time::Instant::now)),
                if busy_until.is_some() => {
                tries.abort_all();
                break;
            }
        };
        match done {
            Ok(Ok(opened)) => {
                tries.abort_all();
                return RaceEnd::Opened(opened);
            }
            Ok(Err(OpenFailure::Busy(ms))) => {
                tracing::debug!(
                    session,
                    retry_after_ms = ms,
                    "a manager is busy (login rate limit)"
                );
                // A manager's number, so bounded as the core bounds it (a
                // forged huge one must not overflow the deadline).
                let ms = ms.min(MAX_HONOURED_RETRY_AFTER_MS);
                let until = tokio::time::Instant::now() + Duration::from_millis(ms);
                busy_until = Some(busy_until.map_or(until, |b| b.min(until)));
            }
            Ok(Err(OpenFailure::Failed(e))) => {
                tracing::debug!(session, error = %e, "session candidate failed")
            }
            Err(_) => {}
        }
    }
    match busy_until {
        Some(until) => RaceEnd::Busy(
            until.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64,
        ),
        None => RaceEnd::Failed,
    }
}

/// Agent side: opens `session` with the first candidate that answers, and
/// runs it; if none does, reports `SessionBusy` (what is left of the
/// shortest retry-after) when a manager refused it for load, else
/// `SessionClosed`.
pub fn open(
    transport: Arc<Transport>,
    table: Arc<SessionTable>,
    inbox: mpsc::Sender<Input>,
    session: u64,
    candidates: Vec<(SocketAddr, Option<NodeId>)>,
) {
    tokio::spawn(async move {
        let attempts: Vec<_> = candidates
            .into_iter()
            .map(|(addr, want)| try_open(transport.clone(), addr, want))
            .collect();
        let input = match race(attempts, session).await {
            RaceEnd::Opened((id, send, recv, first)) => {
                let rx = table.register(session);
                let peer = PeerCert {
                    id,
                    role: member_role(CertRole::Manager).expect("managers are members"),
                };
                let _ = inbox.send(Input::SessionOpened { session, peer, machine: None }).await;
                let _ = inbox.send(Input::SessionData { session, bytes: first }).await;
                tokio::spawn(write_loop(send, rx, table.clone()));
                return read_loop(recv, session, table, inbox).await;
            }
            RaceEnd::Busy(retry_after_ms) => Input::SessionBusy { session, retry_after_ms },
            RaceEnd::Failed => Input::SessionClosed { session },
        };
        let _ = inbox.send(input).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_in_then_refuses_with_spread_retry_afters_and_refills() {
        let t0 = Instant::now();
        let mut b = LoginBucket::new(10, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.admit(t0), Ok(()), "the burst is let in at once");
        }
        let waits: Vec<u64> = (0..4).map(|_| b.admit(t0).expect_err("past the burst")).collect();
        assert_eq!(waits, vec![100, 200, 300, 400], "each refused login gets the next slot");
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(later), Ok(()), "a token came back after 1/rate");
        assert!(b.admit(later).is_err());
    }

    type Attempt =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, OpenFailure>> + Send>>;

    /// An attempt that ends after `ms` of (paused) time with `end`.
    fn after(ms: u64, end: Result<u32, OpenFailure>) -> Attempt {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            end
        })
    }

    fn busy(ms: u64) -> Result<u32, OpenFailure> {
        Err(OpenFailure::Busy(ms))
    }

    fn failed() -> Result<u32, OpenFailure> {
        Err(OpenFailure::Failed("no answer".into()))
    }

    /// Two managers refuse for load and the third (just died) hangs in
    /// its dial: the race ends at the shortest retry-after, not when the
    /// dial times out (it waited 2,000 ms for it before).
    #[tokio::test(start_paused = true)]
    async fn a_busy_answer_bounds_the_wait_for_a_candidate_that_hangs() {
        let t0 = tokio::time::Instant::now();
        let hang = super::super::transport::DIAL_TIMEOUT_MS;
        let attempts = vec![after(50, busy(700)), after(300, busy(350)), after(hang, failed())];
        assert_eq!(race(attempts, 1).await, RaceEnd::Busy(0));
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(650),
            "300 ms + the shorter retry-after, 350"
        );
    }

    /// Hostile input: a retry-after the size of `u64::MAX` (a forged
    /// manager) neither overflows the deadline nor parks the open past the
    /// bound the core honours.
    #[tokio::test(start_paused = true)]
    async fn a_forged_huge_retry_after_is_cut_to_the_honoured_bound() {
        let t0 = tokio::time::Instant::now();
        let attempts = vec![after(10, busy(u64::MAX)), after(60_000, failed())];
        assert_eq!(race(attempts, 1).await, RaceEnd::Busy(0));
        assert_eq!(t0.elapsed(), Duration::from_millis(10 + MAX_HONOURED_RETRY_AFTER_MS));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_to_open_wins_even_after_a_busy_answer_and_the_rest_are_not_awaited() {
        let t0 = tokio::time::Instant::now();
        let attempts = vec![after(10, busy(500)), after(200, Ok(2)), after(5_000, Ok(3))];
        assert_eq!(race(attempts, 1).await, RaceEnd::Opened(2));
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_candidate_has_answered_the_race_ends_with_what_is_left_to_wait() {
        let t0 = tokio::time::Instant::now();
        let attempts = vec![after(10, busy(400)), after(100, failed())];
        assert_eq!(race(attempts, 1).await, RaceEnd::Busy(310));
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        let attempts = vec![after(100, failed())];
        assert_eq!(race(attempts, 1).await, RaceEnd::<u32>::Failed);
    }

    #[test]
    fn retry_afters_never_pass_the_bound() {
        let t0 = Instant::now();
        let mut b = LoginBucket::new(1, 0, t0);
        let worst = (0..100).map(|_| b.admit(t0).expect_err("no tokens")).max();
        assert_eq!(worst, Some(MAX_LOGIN_RETRY_AFTER_MS));
    }
}
