//! The client side of the API, used by `juju`: dials the endpoints in the
//! client file (all in parallel, first answer wins) or exactly one given
//! endpoint, and sends one request.
//!
//! Owns endpoint selection and the client's error messages. Must never
//! report success without an answer from a manager that proved itself with
//! the cluster's CA.

use std::net::SocketAddr;
use std::time::Duration;

use super::clientfile::ClientFile;
use super::wire::{self, MAX_API_FRAME_BYTES, Request, Response};
use crate::pki::{self, ClusterCa, IssuedCert};

/// How long one endpoint may take to answer.
pub const CLIENT_TIMEOUT_MS: u64 = 5_000;
/// A connection silent this long is dead. The server's QUIC stack answers
/// keep-alives even while the manager is busy, so only a dead (or frozen)
/// manager trips it; the client then learns within a second (shorter
/// risks false alarms on a saturated machine).
pub const CLIENT_IDLE_TIMEOUT_MS: u64 = 1_000;
/// Keep-alive interval on client connections (well inside the idle timeout).
pub const CLIENT_KEEPALIVE_MS: u64 = 200;

fn client_transport() -> std::sync::Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS)).expect("fits a VarInt");
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(Duration::from_millis(CLIENT_KEEPALIVE_MS)));
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
}

/// Whether a request only reads, so that it may be retried elsewhere.
fn read_only(req: &Request) -> bool {
    matches!(req, Request::Members | Request::Status | Request::TokenList)
}

/// Dials `only` if given, else every endpoint in parallel; sends `req` on
/// the first connection that comes up (never to several managers, so a
/// write is applied once). A read that fails there is retried on the next
/// connection; a write is not, since it may have been applied.
pub async fn request(file: &ClientFile, only: Option<SocketAddr>, req: Request) -> Result<(SocketAddr, Response), ClientError> {
    let ca = ClusterCa { cert_pem: file.ca_cert.clone(), key_pem: String::new() };
    let cert = IssuedCert { cert_pem: file.client_cert.clone(), key_pem: file.client_key.clone() };
    let rustls_cfg = pki::client_config(&ca, &cert).map_err(|e| ClientError::Config(e.to_string()))?;
    let cfg = pki::quinn_client_config(rustls_cfg, client_transport()).map_err(|e| ClientError::Config(e.to_string()))?;
    let targets = match only {
        Some(addr) => vec![addr],
        None => file.endpoints.clone(),
    };
    let mut dials = tokio::task::JoinSet::new();
    for addr in targets.iter().copied() {
        let cfg = cfg.clone();
        dials.spawn(async move { (addr, connect(addr, cfg).await) });
    }
    let mut failures = Vec::new();
    while let Some(done) = dials.join_next().await {
        let Ok((addr, dialed)) = done else { continue };
        let result = match dialed {
            Ok((endpoint, conn)) => {
                let r = ask(&conn, &req).await;
                conn.close(0u32.into(), b"done");
                endpoint.wait_idle().await;
                r
            }
            Err(reason) => Err(reason),
        };
        match result {
            Ok(resp) => return Ok((addr, resp)),
            Err(reason) if read_only(&req) || !reason.starts_with(SENT) => failures.push((addr, reason)),
            Err(reason) => return Err(ClientError::Endpoint { addr, reason: format!("{reason}; the change may or may not have been applied") }),
        }
    }
    match (only, failures.pop()) {
        (Some(addr), Some((_, reason))) => Err(ClientError::Endpoint { addr, reason }),
        (_, last) => {
            failures.extend(last);
            failures.sort();
            Err(ClientError::NoneAnswered(failures))
        }
    }
}

/// Prefix of errors that happen after the request was sent.
const SENT: &str = "after sending:";

async fn connect(addr: SocketAddr, cfg: quinn::ClientConfig) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let connecting = endpoint.connect_with(cfg, addr, pki::SERVER_NAME).map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_millis(CLIENT_TIMEOUT_MS), connecting)
        .await
        .map_err(|_| format!("no answer within {CLIENT_TIMEOUT_MS} ms"))?
        .map_err(|e| e.to_string())?;
    Ok((endpoint, conn))
}

async fn ask(conn: &quinn::Connection, req: &Request) -> Result<Response, String> {
    // With mTLS the dialer's connect can succeed before the server has
    // checked our certificate; only an answer proves we were accepted.
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    wire::write_frame(&mut send, req, MAX_API_FRAME_BYTES).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let wait = Duration::from_millis(CLIENT_TIMEOUT_MS + request_timeout_ms(req));
    tokio::time::timeout(wait, wire::read_frame(&mut recv, MAX_API_FRAME_BYTES))
        .await
        .map_err(|_| format!("{SENT} no answer within {} ms", wait.as_millis()))?
        .map_err(|e| format!("{SENT} {e}"))
}

fn request_timeout_ms(req: &Request) -> u64 {
    match req {
        Request::Command { timeout_ms, .. } => *timeout_ms,
        _ => 0,
    }
}
