//! The client side of the API, used by `juju`: dials the endpoints in the
//! client file (all in parallel) or exactly one given endpoint, and sends
//! one request to the first manager that comes up.
//!
//! Failover: while it waits for an answer, the client watches the
//! connection, which QUIC keep-alives keep busy every
//! [`CLIENT_KEEPALIVE_MS`]. A manager silent for [`CLIENT_DEAD_AFTER_MS`]
//! is taken for dead (or frozen, which looks the same) if there is another
//! manager to try; the last one (or the only one, with `--endpoint`) gets
//! the full timeout instead. A read then goes to the next manager. So does a write that carries a request id
//! ([`Request::Write`]): the next manager answers it from its record if the
//! first one's operations reached it, and applies it otherwise (see
//! docs/GUARANTEES.md, "Retried writes"). A write without an id, or a token
//! request, is never sent twice: its fate is reported as unknown.
//!
//! Rounds ([`request_with_retries`], what `juju` uses): when every endpoint
//! of a round failed for a reason time may cure (a timeout, an overloaded
//! or frozen manager), another round starts after a doubling backoff, until
//! the request's retry window is spent; then the client says it gave up,
//! after how many rounds, and why the last round failed. A refused
//! certificate ends it at once.
//!
//! Owns endpoint selection, failure detection and retries, and the
//! client's error messages. Must never report success without an answer
//! from a manager that proved itself with the cluster's CA, and never send
//! a request without an id to a second manager.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::clientfile::ClientFile;
use super::wire::{self, Request, Response};
use crate::pki::{self, ClusterCa, IssuedCert};

/// How long one endpoint may take to accept a connection, and to answer
/// beyond a write's own deadline.
pub const CLIENT_TIMEOUT_MS: u64 = 5_000;
/// Keep-alive interval on client connections: every ping is acknowledged
/// by the server's QUIC stack (within its 25 ms ack delay), even while the
/// manager itself is busy, so a live manager is never silent for long.
pub const CLIENT_KEEPALIVE_MS: u64 = 25;
/// A manager that has sent nothing for this long while a request waits is
/// taken for dead, and the request goes to the next manager if it may. A
/// false alarm (a server stalled this long) costs a retry, which a
/// request id makes safe.
pub const CLIENT_DEAD_AFTER_MS: u64 = 150;
/// How often the watchdog looks at the connection.
const WATCH_EVERY_MS: u64 = 10;
/// QUIC's own idle timeout on client connections: a backstop well above
/// the watchdog (QUIC stretches it to three probe timeouts anyway).
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 1_000;
/// No retry of a write starts later than this after its first attempt, so
/// every manager still holds the request's record if it has one (records
/// are kept for far longer at any load: `state::requests::MAX_REQUEST_RECORDS`).
pub const WRITE_RETRY_WINDOW_MS: u64 = 30_000;
/// How long a read (status, members, token list) keeps starting new rounds
/// over the endpoints: a person is waiting, and a read is cheap to repeat.
pub const READ_RETRY_WINDOW_MS: u64 = 10_000;
/// First pause between two rounds; it doubles up to [`RETRY_BACKOFF_MAX_MS`].
pub const RETRY_BACKOFF_MIN_MS: u64 = 100;
/// Longest pause between two rounds.
pub const RETRY_BACKOFF_MAX_MS: u64 = 2_000;
/// How long the client waits for its connection-close to go out.
const CLOSE_WAIT_MS: u64 = 10;

pub(crate) fn client_transport() -> std::sync::Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS))
        .expect("fits a VarInt");
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(Duration::from_millis(CLIENT_KEEPALIVE_MS)));
    super::transport::ask_for_fewer_acks(&mut t);
    std::sync::Arc::new(t)
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client config: {0}")]
    Config(String),
    #[error("endpoint {addr} did not answer: {reason}")]
    Endpoint { addr: SocketAddr, reason: String },
    #[error("no endpoint answered:\n{}", .0.iter().map(|(a, r)| format!("  {a}: {r}")).collect::<Vec<_>>().join("\n"))]
    NoneAnswered(Vec<(SocketAddr, String)>),
    /// Rounds of retries spent the request's retry window.
    #[error(
        "gave up after {rounds} round(s) in {spent_ms} ms (retry window {window_ms} ms); last round: {last}"
    )]
    GaveUp { rounds: u32, spent_ms: u128, window_ms: u128, last: Box<ClientError> },
}

/// Whether `req` may go to another manager after it was sent to one: reads,
/// writes with a request id, and dashboard logins (an unused link expires).
pub fn retryable(req: &Request) -> bool {
    matches!(
        req,
        Request::Members
            | Request::Status
            | Request::StatusStream
            | Request::TokenList(_)
            | Request::Write { .. }
            | Request::DashboardLogin
            | Request::Hosts
            | Request::StatusLog { .. }
    )
}

/// How long [`request_with_retries`] keeps starting rounds for `req`: a
/// write with a request id gets [`WRITE_RETRY_WINDOW_MS`] (every manager
/// still holds its record then); a read [`READ_RETRY_WINDOW_MS`]. Others
/// are retried only while they never left, within the read window.
pub fn retry_window_ms(req: &Request) -> u64 {
    match req {
        Request::Write { .. } => WRITE_RETRY_WINDOW_MS,
        _ => READ_RETRY_WINDOW_MS,
    }
}

/// A fresh random request id for a write (never 0).
pub fn new_request_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the clock's nanoseconds, mixed, still differ per call.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

/// Why one attempt failed: before the request left (safe to try elsewhere),
/// or after (only a retryable request may go elsewhere). `transient`: a
/// timeout, a reset or an unavailable manager, which waiting may cure; a
/// refused certificate or a broken configuration is not.
enum Attempt {
    NotSent { reason: String, transient: bool },
    Sent(String),
}

/// How one round over the endpoints ended without an answer.
enum RoundFailure {
    /// Nothing more may be tried (a non-retryable request was sent).
    Final(ClientError),
    /// Every endpoint failed; `transient` if another round may succeed.
    All { failures: Vec<(SocketAddr, String)>, transient: bool },
}

/// Dials `only` if given, else every endpoint in parallel; sends `req` on
/// the first connection that comes up. If that manager fails before
/// answering, a retryable request goes to the next connection that is up;
/// any other is reported as possibly applied. One round: no endpoint is
/// asked twice (see [`request_with_retries`] for rounds).
pub async fn request(
    file: &ClientFile,
    only: Option<SocketAddr>,
    req: Request,
) -> Result<(SocketAddr, Response), ClientError> {
    let cfg = client_config(file)?;
    let targets = targets(file, only);
    match round(&cfg, &targets, &req, &mut None).await {
        Ok(answer) => Ok(answer),
        Err(RoundFailure::Final(e)) => Err(e),
        Err(RoundFailure::All { failures, .. }) => Err(none_answered(only, failures)),
    }
}

/// Like [`request`], in rounds: when every endpoint failed for a reason
/// that waiting may cure (a timeout, a frozen or overloaded manager, one
/// that is starting), another round starts after a backoff
/// ([`RETRY_BACKOFF_MIN_MS`] doubling to [`RETRY_BACKOFF_MAX_MS`]), until
/// the request's retry window ([`retry_window_ms`]) is spent. A request
/// that may not be sent twice is retried only while it never left.
/// `on_retry` hears why each new round starts.
pub async fn request_with_retries(
    file: &ClientFile,
    only: Option<SocketAddr>,
    req: Request,
    on_retry: &(dyn Fn(&str) + Sync),
) -> Result<(SocketAddr, Response), ClientError> {
    let cfg = client_config(file)?;
    let targets = targets(file, only);
    let window = Duration::from_millis(retry_window_ms(&req));
    let started = Instant::now();
    let mut backoff = Duration::from_millis(RETRY_BACKOFF_MIN_MS);
    // Across rounds: no endpoint is asked later than the window after the
    // request first left.
    let mut first_sent = None;
    for rounds in 1u32.. {
        let failures = match round(&cfg, &targets, &req, &mut first_sent).await {
            Ok(answer) => return Ok(answer),
            Err(RoundFailure::Final(e)) => return Err(e),
            Err(RoundFailure::All { failures, transient: false }) => {
                return Err(none_answered(only, failures));
            }
            Err(RoundFailure::All { failures, transient: true }) => failures,
        };
        if started.elapsed() + backoff > window {
            let why = none_answered(only, failures);
            let spent = started.elapsed().as_millis();
            return Err(ClientError::GaveUp {
                rounds,
                spent_ms: spent,
                window_ms: window.as_millis(),
                last: Box::new(why),
            });
        }
        let last = failures.iter().map(|(a, r)| format!("{a}: {r}")).collect::<Vec<_>>().join("; ");
        on_retry(&format!(
            "round {rounds} got no answer ({last}); trying again in {} ms",
            backoff.as_millis()
        ));
        tokio::time::sleep(backoff).await; // the backoff itself: nothing to await but time
        backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MAX_MS));
    }
    unreachable!("the window ends the loop")
}

fn client_config(file: &ClientFile) -> Result<quinn::ClientConfig, ClientError> {
    let ca = ClusterCa { cert_pem: file.ca_cert.clone(), key_pem: String::new() };
    let cert = IssuedCert { cert_pem: file.client_cert.clone(), key_pem: file.client_key.clone() };
    let rustls_cfg =
        pki::client_config(&ca, &cert).map_err(|e| ClientError::Config(e.to_string()))?;
    pki::quinn_client_config(rustls_cfg, client_transport())
        .map_err(|e| ClientError::Config(e.to_string()))
}

fn targets(file: &ClientFile, only: Option<SocketAddr>) -> Vec<SocketAddr> {
    match only {
        Some(addr) => vec![addr],
        None => file.endpoints.clone(),
    }
}

fn none_answered(only: Option<SocketAddr>, mut failures: Vec<(SocketAddr, String)>) -> ClientError {
    match (only, failures.pop()) {
        (Some(addr), Some((_, reason))) => ClientError::Endpoint { addr, reason },
        (_, last) => {
            failures.extend(last);
            failures.sort();
            ClientError::NoneAnswered(failures)
        }
    }
}

/// One round: every target dialled in parallel, asked in the order they
/// come up, each at most once.
async fn round(
    cfg: &quinn::ClientConfig,
    targets: &[SocketAddr],
    req: &Request,
    first_sent: &mut Option<Instant>,
) -> Result<(SocketAddr, Response), RoundFailure> {
    let mut dials = tokio::task::JoinSet::new();
    for addr in targets.iter().copied() {
        let cfg = cfg.clone();
        dials.spawn(async move { (addr, connect(addr, cfg).await) });
    }
    let mut failures = Vec::new();
    let mut transient = false;
    while let Some(done) = dials.join_next().await {
        let Ok((addr, dialed)) = done else { continue };
        let (endpoint, conn) = match dialed {
            Ok(c) => c,
            Err((reason, t)) => {
                transient |= t;
                failures.push((addr, reason));
                continue;
            }
        };
        if first_sent.is_some_and(|t| t.elapsed() > Duration::from_millis(WRITE_RETRY_WINDOW_MS)) {
            failures.push((
                addr,
                format!("not tried: past the {WRITE_RETRY_WINDOW_MS} ms retry window"),
            ));
            continue;
        }
        // The watchdog only where there is another manager to go to: the
        // last candidate (or the one `--endpoint`) gets the full timeout.
        let watchdog = retryable(req) && !dials.is_empty();
        let result = ask(&conn, req, first_sent, watchdog).await;
        conn.close(0u32.into(), b"done");
        let _ =
            tokio::time::timeout(Duration::from_millis(CLOSE_WAIT_MS), endpoint.wait_idle()).await;
        match result {
            // Nothing was applied there: another manager (or round) is asked.
            Ok(Response::Unavailable(reason)) => {
                transient = true;
                failures.push((addr, reason));
            }
            Ok(resp) => return Ok((addr, resp)),
            Err(Attempt::NotSent { reason, transient: t }) => {
                transient |= t;
                failures.push((addr, reason));
            }
            Err(Attempt::Sent(reason)) if retryable(req) => {
                transient = true;
                failures.push((addr, format!("after sending: {reason}")));
            }
            Err(Attempt::Sent(reason)) => {
                let reason =
                    format!("after sending: {reason}; the change may or may not have been applied");
                return Err(RoundFailure::Final(ClientError::Endpoint { addr, reason }));
            }
        }
    }
    Err(RoundFailure::All { failures, transient })
}

/// Whether a connection error may pass with time (a timeout, a reset, a
/// manager going away) rather than being a refusal (a certificate the
/// other side rejects, a protocol mismatch).
fn transient(e: &quinn::ConnectionError) -> bool {
    use quinn::ConnectionError as E;
    matches!(
        e,
        E::TimedOut | E::Reset | E::ApplicationClosed(_) | E::LocallyClosed | E::CidsExhausted
    )
}

/// A connection to manager `addr` with the client file's certificate, for
/// a long-lived stream (`juju debug-log`); the endpoint must be kept with it.
pub async fn open_connection(
    file: &ClientFile,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), ClientError> {
    let cfg = client_config(file)?;
    connect(addr, cfg).await.map_err(|(reason, _)| ClientError::Endpoint { addr, reason })
}

async fn connect(
    addr: SocketAddr,
    cfg: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), (String, bool)> {
    let bind: SocketAddr =
        if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    // No local socket (out of descriptors) or a bad address: waiting may help the first.
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| (e.to_string(), true))?;
    let connecting =
        endpoint.connect_with(cfg, addr, pki::SERVER_NAME).map_err(|e| (e.to_string(), false))?;
    let conn = tokio::time::timeout(Duration::from_millis(CLIENT_TIMEOUT_MS), connecting)
        .await
        .map_err(|_| (format!("no answer within {CLIENT_TIMEOUT_MS} ms"), true))?
        .map_err(|e| (e.to_string(), transient(&e)))?;
    Ok((endpoint, conn))
}

async fn ask(
    conn: &quinn::Connection,
    req: &Request,
    first_sent: &mut Option<Instant>,
    watchdog: bool,
) -> Result<Response, Attempt> {
    // With mTLS the dialer's connect can succeed before the server has
    // checked our certificate; only an answer proves we were accepted.
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Attempt::NotSent { reason: e.to_string(), transient: transient(&e) })?;
    first_sent.get_or_insert_with(Instant::now);
    let exchange = async {
        wire::write_frame(&mut send, req, wire::MAX_API_FRAME_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let limit = wire::answer_limit(req);
        let answer = match req {
            Request::StatusStream => wire::read_chunked(&mut recv, limit).await,
            _ => wire::read_frame(&mut recv, limit).await,
        }
        .map_err(|e| e.to_string())?;
        match answer {
            // A manager from before streamed status: ask it the old way.
            Response::Error(e)
                if matches!(req, Request::StatusStream) && e.starts_with("bad request") =>
            {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                wire::write_frame(&mut send, &Request::Status, wire::MAX_API_FRAME_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = send.finish();
                wire::read_frame(&mut recv, wire::MAX_STATUS_FRAME_BYTES)
                    .await
                    .map_err(|e| e.to_string())
            }
            answer => Ok(answer),
        }
    };
    let wait = Duration::from_millis(CLIENT_TIMEOUT_MS + request_timeout_ms(req));
    tokio::select! {
        answer = tokio::time::timeout(wait, exchange) => match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(Attempt::Sent(e)),
            Err(_) => Err(Attempt::Sent(format!("no answer within {} ms", wait.as_millis()))),
        },
        silent = watch(conn), if watchdog => Err(Attempt::Sent(format!("the manager went silent for {} ms (dead or frozen)", silent.as_millis()))),
    }
}

/// Resolves once `conn` has received nothing for [`CLIENT_DEAD_AFTER_MS`]
/// (keep-alives make a live server answer far more often), with the silence.
async fn watch(conn: &quinn::Connection) -> Duration {
    let mut seen = conn.stats().udp_rx.datagrams;
    let mut since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(WATCH_EVERY_MS));
    loop {
        tick.tick().await;
        let now = conn.stats().udp_rx.datagrams;
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(CLIENT_DEAD_AFTER_MS) {
            return since.elapsed();
        }
    }
}

/// How long a streamed status may take beyond [`CLIENT_TIMEOUT_MS`]: at a
/// million entities the manager builds and encodes about 150 MB. A dead or
/// frozen manager is still caught by the watchdog within
/// [`CLIENT_DEAD_AFTER_MS`].
pub const STATUS_STREAM_TIMEOUT_MS: u64 = 60_000;

fn request_timeout_ms(req: &Request) -> u64 {
    match req {
        Request::StatusStream => STATUS_STREAM_TIMEOUT_MS,
        Request::Command { timeout_ms, .. } | Request::Write { timeout_ms, .. } => *timeout_ms,
        _ => 0,
    }
}
