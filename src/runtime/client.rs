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

/// Sends `req` to `only` if given, else to every endpoint in parallel;
/// returns the first answer and who gave it.
pub async fn request(file: &ClientFile, only: Option<SocketAddr>, req: Request) -> Result<(SocketAddr, Response), ClientError> {
    let ca = ClusterCa { cert_pem: file.ca_cert.clone(), key_pem: String::new() };
    let cert = IssuedCert { cert_pem: file.client_cert.clone(), key_pem: file.client_key.clone() };
    let rustls_cfg = pki::client_config(&ca, &cert).map_err(|e| ClientError::Config(e.to_string()))?;
    let cfg = pki::quinn_client_config(rustls_cfg, super::transport::transport_config())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let targets = match only {
        Some(addr) => vec![addr],
        None => file.endpoints.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for addr in targets.iter().copied() {
        let (cfg, req) = (cfg.clone(), req.clone());
        tasks.spawn(async move { (addr, ask(addr, cfg, req).await) });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let Ok((addr, result)) = done else { continue };
        match result {
            Ok(resp) => return Ok((addr, resp)),
            Err(reason) => failures.push((addr, reason)),
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

async fn ask(addr: SocketAddr, cfg: quinn::ClientConfig, req: Request) -> Result<Response, String> {
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let result = tokio::time::timeout(Duration::from_millis(CLIENT_TIMEOUT_MS), async {
        let conn = endpoint.connect_with(cfg, addr, pki::SERVER_NAME).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        // With mTLS the dialer's connect can succeed before the server has
        // checked our certificate; only an answer proves we were accepted.
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        wire::write_frame(&mut send, &req, MAX_API_FRAME_BYTES).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let resp = wire::read_frame(&mut recv, MAX_API_FRAME_BYTES).await.map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"done");
        Ok::<_, String>(resp)
    })
    .await
    .map_err(|_| format!("no answer within {CLIENT_TIMEOUT_MS} ms"))?;
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    result
}
