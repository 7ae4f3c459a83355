//! `jujud agent`: a machine agent. It joins with its machine's token (once;
//! afterwards it rejoins with the identity in its data dir), becomes a SWIM
//! member with the agent role, keeps the live managers in agent.conf, holds
//! a session with the manager the core picks, and runs its units'
//! workloads.
//!
//! Owns the agent's start-up order: the data dir is checked, the token and
//! seeds are checked, the port is bound, and only then is anything written.
//! Must never start as an agent on a manager's data dir, never use a token
//! of another role, and never serve the admin API or admit anyone.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::agentconf::{AGENT_CONF_FILE, AgentConf, ConfWriter};
use super::datadir::{self, Credentials, DataDir, DataDirError, NodeFile};
use super::driver::{self, AgentParts, DriverParts};
use super::join::{self, JoinError};
use super::server::INBOX_CAPACITY;
use super::session::SessionTable;
use super::transport::{self, PeerConn, Transport, member_role, peer_of};
use super::workload::Workloads;
use crate::config::PeerConfig;
use crate::core::node::AgentSpec;
use crate::core::{Identity, Node, NodeConfig, NodeId, Role};
use crate::metrics::Metrics;
use crate::pki::{self, CertRole, ClusterCa, IssuedCert};

/// The file holding the node id a joining agent picked, so that a join
/// retried after a crash asks for the same identity (its token's claim).
pub const JOIN_ID_FILE: &str = "join-id";

/// Why `jujud agent` could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("data dir {0} holds a manager, not an agent; use `jujud peer` with it")]
    NotAnAgent(String),
    #[error(
        "data dir {0} is empty and no token was given (--token-file FILE, --token-file -, or JUJUD_TOKEN): an agent joins once with its machine's token"
    )]
    TokenNeeded(String),
    #[error("no manager to find the cluster through: {0}; pass --seeds ADDR[,ADDR...]")]
    NoSeeds(String),
    #[error("certificates: {0}")]
    Pki(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(String),
}

/// The id to join with: the one a crashed earlier attempt picked, or a new
/// one, written down before it is used.
fn join_id(dir: &DataDir) -> Result<u64, AgentError> {
    let path = dir.path().join(JOIN_ID_FILE);
    if let Some(id) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
        .filter(|id| *id != 0)
    {
        return Ok(id);
    }
    let id = super::random_u64();
    dir.write_private(JOIN_ID_FILE, format!("{id:016x}\n").as_bytes())?;
    Ok(id)
}

/// Joins with the machine's token and writes the data dir.
async fn join_as_agent(
    cfg: &PeerConfig,
    dir: &DataDir,
    token: &str,
    advertise: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(NodeFile, Credentials), AgentError> {
    let parsed = join::check_token_role(token, CertRole::Agent)?;
    let machine = parsed.subject.clone().unwrap_or_default();
    let node_id = join_id(dir)?;
    let adm = join::join(&cfg.join, token, node_id, advertise, CertRole::Agent, shutdown).await?;
    let fp = ClusterCa::cert_fingerprint_from_pem(&adm.ca_cert_pem)
        .map_err(|e| AgentError::Pki(e.to_string()))?;
    let mut reset = [0u8; 32];
    getrandom::fill(&mut reset).expect("OS randomness");
    let node = NodeFile {
        format: datadir::FORMAT_VERSION,
        cluster_name: adm.cluster_name,
        ca_fingerprint: fp,
        node_id: NodeId(node_id).to_string(),
        role: "agent".into(),
        generation: 0,
        advertise,
        seeds: cfg.join.clone(),
        machine: Some(machine.clone()),
        state_log: false,
        state_writer: None,
    };
    let creds = Credentials {
        ca_cert_pem: adm.ca_cert_pem,
        ca_key_pem: String::new(),
        cert_pem: adm.cert_pem,
        key_pem: adm.key_pem,
        cluster_secret: Vec::new(),
        reset_key: reset.to_vec(),
    };
    dir.initialise(&node, &creds)?;
    if let Err(e) = AgentConf::new(cfg.join.clone()).save(&dir.path().join(AGENT_CONF_FILE)) {
        tracing::warn!(error = %e, "could not write the first agent.conf");
    }
    tracing::info!(%machine, node = %NodeId(node_id), "joined the cluster as this machine's agent");
    Ok((node, creds))
}

/// The seeds: what agent.conf remembers, then `--seeds`, then the seeds
/// stored at join. A bad agent.conf is reported and passed over.
fn seeds_for(dir: &Path, cfg: &PeerConfig, node: &NodeFile) -> Result<Vec<SocketAddr>, AgentError> {
    let mut seeds = Vec::new();
    let conf = AgentConf::load(&dir.join(AGENT_CONF_FILE));
    match &conf {
        Ok(c) => seeds.extend(c.managers.iter().copied()),
        Err(e) => {
            tracing::warn!(error = %e, "agent.conf is not usable; using the given and stored seeds")
        }
    }
    for s in cfg.join.iter().chain(&node.seeds) {
        if !seeds.contains(s) {
            seeds.push(*s);
        }
    }
    if seeds.is_empty() {
        let why = conf.err().map_or_else(|| "agent.conf names none".to_string(), |e| e.to_string());
        return Err(AgentError::NoSeeds(why));
    }
    Ok(seeds)
}

/// Runs `jujud agent` until `shutdown` turns true or its machine is removed.
pub async fn run_agent(cfg: PeerConfig, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let (dir, stored) = DataDir::open(&cfg.data_dir)?;
    let socket = UdpSocket::bind(cfg.listen)
        .map_err(|source| AgentError::Bind { addr: cfg.listen, source })?;
    let local = socket.local_addr().map_err(|e| AgentError::Io(e.to_string()))?;
    let advertise = if cfg.advertise.port() == 0 {
        SocketAddr::new(cfg.advertise.ip(), local.port())
    } else {
        cfg.advertise
    };
    let shown = dir.path().display().to_string();
    let (mut node_file, creds, peers, notices) = match stored {
        Some(s) if !s.node.is_agent() => return Err(AgentError::NotAnAgent(shown)),
        Some(s) => {
            if let Some(t) = cfg.token.as_deref() {
                join::check_token_role(t, CertRole::Agent)?;
                tracing::info!(
                    "data dir already holds this machine's agent; the token is not needed"
                );
            }
            (s.node, s.creds, s.peers, s.notices)
        }
        None => {
            let token = cfg.token.clone().ok_or_else(|| AgentError::TokenNeeded(shown.clone()))?;
            if cfg.join.is_empty() {
                return Err(AgentError::NoSeeds(
                    "an agent joins through --seeds the first time".into(),
                ));
            }
            let (node, creds) =
                match join_as_agent(&cfg, &dir, &token, advertise, shutdown.clone()).await {
                    Err(AgentError::Join(JoinError::ShuttingDown)) => {
                        tracing::info!("{}", crate::events::STOPPED_WHILE_JOINING);
                        return Ok(());
                    }
                    joined => joined?,
                };
            (node, creds, Vec::new(), Vec::new())
        }
    };
    let seeds = seeds_for(dir.path(), &cfg, &node_file)?;
    node_file.generation += 1;
    node_file.advertise = advertise;
    dir.write_node(&node_file)?;
    serve(cfg, dir, node_file, creds, peers, notices, seeds, socket, advertise, shutdown).await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: PeerConfig,
    dir: DataDir,
    node_file: NodeFile,
    creds: Credentials,
    peers: Vec<Identity>,
    notices: Vec<crate::core::Notice>,
    seeds: Vec<SocketAddr>,
    socket: UdpSocket,
    advertise: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let pki_err = |e: pki::PkiError| AgentError::Pki(e.to_string());
    let node_id: NodeId =
        node_file.node_id.parse().map_err(|_| AgentError::Pki("node id in node.json".into()))?;
    let machine = node_file
        .machine
        .clone()
        .ok_or_else(|| AgentError::Pki("node.json names no machine".into()))?;
    let ca = ClusterCa { cert_pem: creds.ca_cert_pem.clone(), key_pem: String::new() };
    let cert = IssuedCert { cert_pem: creds.cert_pem.clone(), key_pem: creds.key_pem.clone() };
    let tcfg = transport::agent_transport_config();
    let server_cfg =
        pki::quinn_server_config(pki::server_config(&ca, &cert).map_err(pki_err)?, tcfg.clone())
            .map_err(pki_err)?;
    let client_cfg =
        pki::quinn_client_config(pki::client_config(&ca, &cert).map_err(pki_err)?, tcfg)
            .map_err(pki_err)?;
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &creds.reset_key);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::new(Arc::new(hmac)),
        Some(server_cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| AgentError::Io(e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let transport =
        Transport::new(endpoint.clone(), client_cfg, inbox_tx.clone(), metrics.clone(), node_id);
    if let Some(addr) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Bind { addr, source })?;
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), || {}));
    }
    let identity = Identity {
        id: node_id,
        addr: advertise,
        role: Role::Agent,
        generation: node_file.generation,
    };
    super::logs::capture::set_name(format!("machine-{machine}"), Some(machine.clone()));
    tracing::info!(id = %node_id, %advertise, %machine, generation = identity.generation, seeds = ?seeds, "{}", crate::events::AGENT_STARTING);
    let mut node = Node::new(NodeConfig {
        identity,
        timing: cfg.timing.clone(),
        rng_seed: super::random_u64(),
        seeds,
        known_peers: peers,
        state: None,
        agent: Some(AgentSpec { machine, address: advertise.ip().to_string() }),
        controller_machine: None,
    });
    for n in notices {
        node.handle(std::time::Duration::ZERO, crate::core::Input::Publish(n));
    }
    tokio::spawn(accept_loop(endpoint.clone(), transport.clone(), metrics.clone()));
    let trimmer = tokio::spawn(super::trim::run(metrics.clone()));
    if let Some(hub) = super::logs::capture::hub() {
        super::logs::sink::spawn(transport.clone(), hub, shutdown.clone());
    }
    let workloads = Workloads::open(dir.path(), inbox_tx.clone());
    let conf = Arc::new(ConfWriter::new(dir.path().join(AGENT_CONF_FILE)));
    let (_commands_tx, commands_rx) = mpsc::channel(1);
    let parts = DriverParts {
        transport,
        inbox: inbox_rx,
        commands: commands_rx,
        dir: Arc::new(dir),
        node_file,
        metrics: metrics.clone(),
        shutdown,
        store: None,
        inbox_tx,
        sessions: SessionTable::new(metrics),
        agent: Some(AgentParts { workloads, conf }),
        provider: None,
    };
    driver::run(node, parts).await;
    trimmer.abort();
    endpoint.close(0u32.into(), b"leaving");
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), endpoint.wait_idle()).await;
    Ok(())
}

/// Accepts members' connections (for SWIM); anything else is refused: an
/// agent admits nobody and serves no API.
async fn accept_loop(endpoint: quinn::Endpoint, transport: Arc<Transport>, metrics: Arc<Metrics>) {
    let handshakes = super::handshake::Handshakes::new(metrics.clone());
    while let Some(incoming) = endpoint.accept().await {
        let Some((incoming, slot)) = handshakes.screen(incoming) else { continue };
        let (transport, metrics) = (transport.clone(), metrics.clone());
        tokio::spawn(async move {
            let timeout = std::time::Duration::from_millis(super::handshake::HANDSHAKE_TIMEOUT_MS);
            let Ok(Ok(conn)) = tokio::time::timeout(timeout, incoming).await else {
                metrics.count_drop(crate::metrics::DropReason::HandshakeFailed);
                return;
            };
            drop(slot);
            match peer_of(&conn) {
                Some((role, id)) if member_role(role).is_some() => {
                    transport.register(PeerConn { conn, role, id })
                }
                _ => {
                    metrics.count_drop(crate::metrics::DropReason::Unauthenticated);
                    conn.close(2u32.into(), b"an agent serves members only");
                }
            }
        });
    }
}
