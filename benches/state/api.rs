//! The benchmark's in-process client: persistent admin QUIC connections to
//! managers (one request per bidirectional stream, many in flight), the
//! requests the scenarios send, and UDP sockets opened inside a network
//! namespace so the same client reaches managers that live in one.
//!
//! Owns nothing on the server side; it speaks the public wire format of
//! `jujud::runtime::wire` exactly as `juju` does, minus the per-request
//! dialing of `jujud::runtime::client`.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jujud::core::state::model::{Command as StateCommand, StatusView};
use jujud::pki::{self, ClusterCa, IssuedCert};
use jujud::runtime::client::new_request_id;
use jujud::runtime::clientfile::ClientFile;
use jujud::runtime::wire::{self, MAX_API_FRAME_BYTES, Request, Response};

use crate::cluster::Res;

/// Longest a handshake may take.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Longest one request may wait for its answer (a write's own deadline is
/// [`WRITE_DEADLINE_MS`]; this bounds the stream).
pub const CALL_TIMEOUT_MS: u64 = 15_000;
/// Server-side deadline given to every write.
pub const WRITE_DEADLINE_MS: u64 = 10_000;

/// The admin client config for a cluster's client file.
pub fn client_config(file: &Path) -> Res<(ClientFile, quinn::ClientConfig)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let f = ClientFile::load(file).map_err(|e| e.to_string())?;
    let ca = ClusterCa { cert_pem: f.ca_cert.clone(), key_pem: String::new() };
    let cert = IssuedCert { cert_pem: f.client_cert.clone(), key_pem: f.client_key.clone() };
    let tls = pki::client_config(&ca, &cert).map_err(|e| e.to_string())?;
    let cfg =
        pki::quinn_client_config(tls, jujud::runtime::transport::api_client_transport_config())
            .map_err(|e| e.to_string())?;
    Ok((f, cfg))
}

/// One open connection to one manager.
#[derive(Clone)]
pub struct Conn {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    pub addr: SocketAddr,
}

impl Conn {
    /// Dials `addr` from `socket` (a namespace's socket) or a fresh one.
    pub async fn open(
        cfg: &quinn::ClientConfig,
        addr: SocketAddr,
        socket: Option<UdpSocket>,
    ) -> Res<Conn> {
        let socket = match socket {
            Some(s) => s,
            None => UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?,
        };
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(|e| e.to_string())?;
        let connecting = endpoint
            .connect_with(cfg.clone(), addr, pki::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connecting)
            .await
            .map_err(|_| format!("{addr}: no handshake within {CONNECT_TIMEOUT_MS} ms"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(Conn { _endpoint: endpoint, conn, addr })
    }

    /// Sends one request on a new stream and reads its answer.
    pub async fn call(&self, req: &Request) -> Res<Response> {
        let ask = async {
            let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
            wire::write_frame(&mut send, req, MAX_API_FRAME_BYTES)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            wire::read_frame::<Response>(&mut recv, wire::answer_limit(req))
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), ask)
            .await
            .map_err(|_| format!("{}: no answer within {CALL_TIMEOUT_MS} ms", self.addr))?
    }

    /// A write that must be applied; the refusal text otherwise.
    pub async fn write(&self, req: &Request) -> Res<()> {
        match self.call(req).await? {
            Response::Applied(_) => Ok(()),
            Response::Error(e) => Err(format!("refused: {e}")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    pub async fn status(&self) -> Res<StatusView> {
        match self.call(&Request::Status).await? {
            Response::Status { status, .. } => Ok(status),
            Response::Error(e) => Err(format!("status refused: {e}")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }
}

/// `config APP key=value` as a request, with a fresh request id (as
/// `juju` sends it).
pub fn set_config(app: &str, key: &str, value: &str, wait_replicated: u32) -> Request {
    let cmd = StateCommand::SetConfig { app: app.into(), pairs: vec![(key.into(), value.into())] };
    Request::Write {
        request_id: new_request_id(),
        cmd,
        wait_replicated,
        timeout_ms: WRITE_DEADLINE_MS,
    }
}

pub fn deploy(name: &str, units: u32, wait_replicated: u32) -> Request {
    let cmd = StateCommand::Deploy { name: name.into(), command: "sleep 3600".into(), n: units };
    Request::Write {
        request_id: new_request_id(),
        cmd,
        wait_replicated,
        timeout_ms: WRITE_DEADLINE_MS,
    }
}

/// `add-machine` as a request, with a fresh request id.
pub fn add_machine(wait_replicated: u32) -> Request {
    Request::Write {
        request_id: new_request_id(),
        cmd: StateCommand::AddMachine { n: 1 },
        wait_replicated,
        timeout_ms: WRITE_DEADLINE_MS,
    }
}

/// The config values of `app`, key to sibling values.
pub fn config_of<'a>(
    st: &'a StatusView,
    app: &str,
) -> Option<&'a std::collections::BTreeMap<String, jujud::core::state::model::Shown>> {
    st.applications.iter().find(|a| a.name == app).map(|a| &a.config)
}

/// A UDP socket bound inside network namespace `ns` (by a short-lived
/// thread that enters it; the socket stays in that namespace).
pub fn socket_in(ns: &str) -> Res<UdpSocket> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || -> Res<UdpSocket> {
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind in {path}: {e}"))
    })
    .join()
    .map_err(|_| "setns thread panicked".to_string())?
}
