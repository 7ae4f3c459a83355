//! `jujud peer`: opens the data dir, creates a cluster or joins one (or
//! rejoins with the stored identity), binds the QUIC endpoint, and runs the
//! node driver, the accept loop and the metrics endpoint until shutdown.
//!
//! Owns the start-up order: credentials are in hand and the port is bound
//! before anything is written, and `node.json` is written last. Must never
//! start serving with a data dir or token of another cluster.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::clientfile::ClientFile;
use super::datadir::{self, Credentials, DataDir, DataDirError, NodeFile, Stored};
use super::driver::{self, DriverParts};
use super::join::{self, JoinError, NODE_CERT_VALIDITY_DAYS};
use super::shared::Shared;
use super::transport::{self, PeerConn, Transport, member_role, peer_of};
use crate::config::PeerConfig;
use crate::core::state::model::Command as StateCommand;
use crate::core::state::{Actor, WriteResult};
use crate::core::{Identity, Node, NodeConfig, NodeId, Notice, Role};
use crate::metrics::Metrics;
use crate::pki::{self, CertRole, ClusterCa, IssuedCert};

/// Inbound datagrams waiting for the driver; past it they are dropped.
pub const INBOX_CAPACITY: usize = 4_096;
/// Commands waiting for the driver; callers wait for room.
pub const COMMAND_CAPACITY: usize = 256;
/// Handshakes in progress at once (see `handshake.rs` for the rule).
pub use super::handshake::MAX_HANDSHAKES;

/// Why `jujud peer` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("state: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("the first join token: {0}")]
    Token(#[from] crate::pki::TokenError),
    #[error("node.json holds an unreadable node id: {0}")]
    NodeId(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("data dir {dir} belongs to cluster {have} but the token is for cluster {want}")]
    OtherCluster { dir: String, have: String, want: String },
    #[error(
        "data dir {0} is empty and no token was given (--token-file FILE, --token-file -, or JUJUD_TOKEN), but --join was: a token is needed to join"
    )]
    TokenNeeded(String),
    #[error("{0}")]
    Io(String),
}

fn pki_err(e: crate::pki::PkiError) -> PeerError {
    PeerError::Pki(e)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_bytes32() -> Vec<u8> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS randomness");
    b.to_vec()
}

/// A brand-new cluster's first node: CA, keys, first token, admin client.
struct Fresh {
    node: NodeFile,
    creds: Credentials,
    first_token: Option<pki::JoinToken>,
    admin: Option<IssuedCert>,
    notices: Vec<Notice>,
}

fn new_cluster(advertise: SocketAddr) -> Result<Fresh, PeerError> {
    let node_id = super::random_u64();
    let cluster_name = format!("jujud-{:08x}", super::random_u64() as u32);
    let ca = ClusterCa::generate(&cluster_name).map_err(pki_err)?;
    let cert = ca.issue(CertRole::Manager, node_id, NODE_CERT_VALIDITY_DAYS).map_err(pki_err)?;
    let admin =
        ca.issue(CertRole::Admin, super::random_u64(), NODE_CERT_VALIDITY_DAYS).map_err(pki_err)?;
    let secret = pki::new_cluster_secret().to_vec();
    let fp = ca.fingerprint();
    let token = pki::issue_token(
        &secret,
        CertRole::Manager,
        None,
        pki::DEFAULT_TOKEN_TTL_SECS,
        unix_now(),
        &fp,
    )?;
    let notices = Vec::new();
    Ok(Fresh {
        node: node_file(cluster_name, fp, node_id, advertise),
        creds: Credentials {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            cluster_secret: secret,
            reset_key: random_bytes32(),
        },
        first_token: Some(token),
        admin: Some(admin),
        notices,
    })
}

fn node_file(
    cluster_name: String,
    ca_fingerprint: String,
    node_id: u64,
    advertise: SocketAddr,
) -> NodeFile {
    NodeFile {
        format: datadir::FORMAT_VERSION,
        cluster_name,
        ca_fingerprint,
        node_id: NodeId(node_id).to_string(),
        role: "manager".into(),
        generation: 0,
        advertise,
        seeds: Vec::new(),
        machine: None,
        state_log: false,
        state_writer: None,
    }
}

async fn joined(
    cfg: &PeerConfig,
    token: &str,
    advertise: SocketAddr,
    shutdown: &watch::Receiver<bool>,
) -> Result<Fresh, PeerError> {
    let mut attempt = 0;
    let (node_id, adm) = loop {
        let node_id = super::random_u64();
        match join::join(&cfg.join, token, node_id, advertise, CertRole::Manager, shutdown.clone())
            .await
        {
            Err(JoinError::Refused { refusal: super::wire::Refusal::TagInUse, .. })
                if attempt < join::MAX_TAG_RETRIES =>
            {
                attempt += 1
            }
            other => break (node_id, other?),
        }
    };
    let fp = ClusterCa::cert_fingerprint_from_pem(&adm.ca_cert_pem).map_err(pki_err)?;
    let mut node = node_file(adm.cluster_name, fp, node_id, advertise);
    // A token bound to a controller machine (a provider started us for it):
    // this manager is that machine.
    node.machine = token.parse::<pki::JoinToken>().ok().and_then(|t| t.subject);
    Ok(Fresh {
        node,
        creds: Credentials {
            ca_cert_pem: adm.ca_cert_pem,
            ca_key_pem: adm.ca_key_pem,
            cert_pem: adm.cert_pem,
            key_pem: adm.key_pem,
            cluster_secret: adm.cluster_secret,
            reset_key: random_bytes32(),
        },
        first_token: None,
        admin: None,
        notices: adm.notices,
    })
}

fn check_token_cluster(
    dir: &DataDir,
    stored: &Stored,
    token: Option<&str>,
) -> Result<(), PeerError> {
    let Some(token) = token else { return Ok(()) };
    let Ok(parsed) = token.parse::<pki::JoinToken>() else { return Ok(()) };
    if parsed.ca_fingerprint != stored.node.ca_fingerprint {
        return Err(PeerError::OtherCluster {
            dir: dir.path().display().to_string(),
            have: stored.node.ca_fingerprint.clone(),
            want: parsed.ca_fingerprint,
        });
    }
    tracing::info!("data dir already holds a member of this cluster; the token is not needed");
    Ok(())
}

/// Runs `jujud peer` until `shutdown` turns true.
pub async fn run_peer(cfg: PeerConfig, shutdown: watch::Receiver<bool>) -> Result<(), PeerError> {
    let (dir, stored) = DataDir::open(&cfg.data_dir)?;
    let socket = UdpSocket::bind(cfg.listen)
        .map_err(|source| PeerError::Bind { addr: cfg.listen, source })?;
    let local = socket.local_addr().map_err(|e| PeerError::Io(e.to_string()))?;
    let advertise = if cfg.advertise.port() == 0 {
        SocketAddr::new(cfg.advertise.ip(), local.port())
    } else {
        cfg.advertise
    };
    let (mut fresh, stored_peers) = match stored {
        Some(s) => {
            check_token_cluster(&dir, &s, cfg.token.as_deref())?;
            let peers = s.peers.clone();
            (
                Fresh {
                    node: s.node,
                    creds: s.creds,
                    first_token: None,
                    admin: None,
                    notices: s.notices,
                },
                peers,
            )
        }
        None => match (&cfg.token, cfg.join.is_empty()) {
            (Some(token), _) => match joined(&cfg, token, advertise, &shutdown).await {
                Err(PeerError::Join(JoinError::ShuttingDown)) => {
                    tracing::info!("{}", crate::events::STOPPED_WHILE_JOINING);
                    return Ok(());
                }
                fresh => (fresh?, Vec::new()),
            },
            (None, true) => (new_cluster(advertise)?, Vec::new()),
            (None, false) => {
                return Err(PeerError::TokenNeeded(cfg.data_dir.display().to_string()));
            }
        },
    };
    fresh.node.generation += 1;
    fresh.node.advertise = advertise;
    if !cfg.join.is_empty() {
        fresh.node.seeds = cfg.join.clone();
    }
    let created = fresh.first_token.is_some();
    if created || (stored_peers.is_empty() && !dir.path().join("node.json").exists()) {
        dir.initialise(&fresh.node, &fresh.creds)?;
    } else {
        dir.write_node(&fresh.node)?;
    }
    if let (Some(token), Some(admin)) = (&fresh.first_token, &fresh.admin) {
        write_first_node_files(&dir, &fresh, token, admin, advertise)?;
    }
    serve(cfg, dir, fresh, stored_peers, socket, advertise, shutdown).await
}

/// The first manager of a bootstrapped environment records the provider,
/// the desired number of managers and its own controller machine; the HA
/// keeper takes it from there.
async fn bootstrap(shared: Arc<Shared>, b: crate::config::BootstrapConfig) {
    let hosts = match &b.hosts_file {
        Some(path) => match super::provider::ssh::read_hosts_file(path) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "could not read the pool's hosts file; bootstrap not recorded");
                return;
            }
        },
        None => Vec::new(),
    };
    let spec = crate::core::state::controllers::Bootstrap {
        provider: b.kind.clone(),
        root: b.provider_root.display().to_string(),
        desired: b.desired,
        instance: b.instance.clone(),
        node: shared.self_id.to_string(),
        hosts,
        instance_at: b.instance_at.clone(),
    };
    let timeout = std::time::Duration::from_millis(super::join::JOIN_STEP_TIMEOUT_MS);
    match shared.write(StateCommand::Bootstrap(Box::new(spec)), 0, timeout).await {
        WriteResult::Done(o) => {
            tracing::info!(machine = ?o.ids, desired = b.desired, "bootstrapped: controller machine recorded")
        }
        WriteResult::Refused(reason) => {
            tracing::error!(%reason, "could not record the bootstrap settings")
        }
    }
}

/// Records the first manager's token (the one in `DIR/join-token`) in the
/// state, so joins with it are admitted. It is reusable for its lifetime:
/// the operator forms the first managers with it. Joiners asking before
/// the record is durable are told "not ready" and ask again.
async fn record_first_token(shared: Arc<Shared>, token: pki::JoinToken) {
    let spec = super::api::spec_of(&token, true);
    let timeout = std::time::Duration::from_millis(super::join::JOIN_STEP_TIMEOUT_MS);
    match shared.write(StateCommand::IssueTokens(vec![spec]), 0, timeout).await {
        WriteResult::Done(_) => {
            tracing::info!(token = %token.token_id, "first join token recorded")
        }
        WriteResult::Refused(reason) => {
            tracing::error!(%reason, "could not record the first join token; joins with it are refused")
        }
    }
}

fn write_first_node_files(
    dir: &DataDir,
    fresh: &Fresh,
    token: &pki::JoinToken,
    admin: &IssuedCert,
    advertise: SocketAddr,
) -> Result<(), PeerError> {
    dir.write_private(datadir::JOIN_TOKEN_FILE, format!("{token}\n").as_bytes())?;
    let client = ClientFile {
        cluster: fresh.node.cluster_name.clone(),
        endpoints: vec![advertise],
        ca_cert: fresh.creds.ca_cert_pem.clone(),
        client_cert: admin.cert_pem.clone(),
        client_key: admin.key_pem.clone(),
    };
    dir.write_private(datadir::CLIENT_FILE, client.to_yaml().as_bytes())?;
    tracing::info!(token_file = %dir.path().join(datadir::JOIN_TOKEN_FILE).display(),
        client_file = %dir.path().join(datadir::CLIENT_FILE).display(), "created a new cluster");
    Ok(())
}

fn reset_key_config(key: &[u8]) -> quinn::EndpointConfig {
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    quinn::EndpointConfig::new(Arc::new(hmac))
}

async fn serve(
    cfg: PeerConfig,
    dir: DataDir,
    mut fresh: Fresh,
    known_peers: Vec<Identity>,
    socket: UdpSocket,
    advertise: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(), PeerError> {
    let node_id: NodeId =
        fresh.node.node_id.parse().map_err(|_| PeerError::NodeId(fresh.node.node_id.clone()))?;
    let created = fresh.first_token.is_some();
    // The first manager records its token at every start while it is
    // valid (the same record again changes nothing): a crash between
    // writing `join-token` and recording it would otherwise leave a token
    // that every manager calls unknown.
    let first_token = fresh.first_token.clone().or_else(|| {
        let text = std::fs::read_to_string(dir.path().join(datadir::JOIN_TOKEN_FILE)).ok()?;
        text.trim().parse::<pki::JoinToken>().ok().filter(|t| {
            t.expires_unix_secs > unix_now() && t.ca_fingerprint == fresh.node.ca_fingerprint
        })
    });
    let ca = ClusterCa {
        cert_pem: fresh.creds.ca_cert_pem.clone(),
        key_pem: fresh.creds.ca_key_pem.clone(),
    };
    let cert =
        IssuedCert { cert_pem: fresh.creds.cert_pem.clone(), key_pem: fresh.creds.key_pem.clone() };
    let tcfg = transport::transport_config();
    let mut server_cfg =
        pki::quinn_server_config(pki::server_config(&ca, &cert).map_err(pki_err)?, tcfg.clone())
            .map_err(pki_err)?;
    server_cfg
        .max_incoming(super::handshake::MAX_INCOMING)
        .incoming_buffer_size(super::handshake::INCOMING_BUFFER_BYTES)
        .incoming_buffer_size_total(super::handshake::INCOMING_BUFFER_TOTAL_BYTES);
    let client_cfg =
        pki::quinn_client_config(pki::client_config(&ca, &cert).map_err(pki_err)?, tcfg)
            .map_err(pki_err)?;
    let endpoint = quinn::Endpoint::new(
        reset_key_config(&fresh.creds.reset_key),
        Some(server_cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| PeerError::Io(e.to_string()))?;

    let metrics = Arc::new(Metrics::new());
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let inbox_for_store = inbox_tx.clone();
    let transport =
        Transport::new(endpoint.clone(), client_cfg, inbox_tx, metrics.clone(), node_id);
    let sessions = super::session::SessionTable::new(metrics.clone());
    let shared = Arc::new(Shared {
        commands: cmd_tx.clone(),
        ca_fingerprint: fresh.node.ca_fingerprint.clone(),
        cluster_name: fresh.node.cluster_name.clone(),
        creds: fresh.creds.clone(),
        ca,
        metrics: metrics.clone(),
        self_id: node_id,
        sessions: sessions.clone(),
        inbox: inbox_for_store.clone(),
        dashboard: std::sync::OnceLock::new(),
        log_followers: Arc::new(tokio::sync::Semaphore::new(super::logs::serve::MAX_LOG_FOLLOWERS)),
        history: Arc::new(super::history::StatusHistory::default()),
        joins: Arc::new(tokio::sync::Semaphore::new(super::join::MAX_CONCURRENT_JOINS)),
    });
    tokio::spawn(super::history::poll(shared.clone(), shared.history.clone()));
    let api = shared.clone();
    transport.on_member_connection(Box::new(move |conn, role, machine| {
        tokio::spawn(super::api::serve(conn, role, machine, api.clone()));
    }));
    if let Some(addr) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| PeerError::Bind { addr, source })?;
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), || {}));
    }
    if let Some(addr) = cfg.dashboard_listen {
        let dash = super::dashboard::start(addr, advertise, shared.clone(), &cert)
            .await
            .map_err(|e| PeerError::Io(e.to_string()))?;
        let _ = shared.dashboard.set(dash);
    }
    let identity = Identity {
        id: node_id,
        addr: advertise,
        role: Role::Manager,
        generation: fresh.node.generation,
    };
    let actor = Actor { node: node_id.0, generation: identity.generation };
    let log_id = super::wal::LogIdentity {
        cluster: fresh.node.ca_fingerprint.clone(),
        node: fresh.node.node_id.clone(),
    };
    let expect = dir.state_expectation(&fresh.node);
    let (store, mut replica, rec) = super::store::Store::open(dir.path(), actor, &log_id, expect)?;
    let whole = rec.torn_tail_bytes.is_none();
    let mut writer = DataDir::state_writer(&fresh.node, identity.generation, expect, whole);
    if !replica.write_as(Actor { node: node_id.0, generation: writer }) {
        tracing::warn!(
            writer,
            "the state log holds the recorded writer's operations with a gap; writing as a new actor"
        );
        writer = identity.generation;
    }
    // Recorded before the writer writes anything (the node is not built yet).
    dir.note_state_log(&mut fresh.node, writer)?;
    tracing::info!(snapshot_lsn = ?rec.snapshot_lsn, records = rec.records, ops = rec.ops, keys = replica.len(),
        torn_tail_bytes = ?rec.torn_tail_bytes, writer, own_seq = replica.own_seq(), "{}", crate::events::STATE_RECOVERED);
    super::logs::capture::set_name(format!("manager-{node_id}"), fresh.node.machine.clone());
    tracing::info!(id = %node_id, %advertise, generation = identity.generation, cluster = %fresh.node.cluster_name, "{}", crate::events::MANAGER_STARTING);
    let node = Node::new(NodeConfig {
        identity,
        timing: cfg.timing.clone(),
        rng_seed: super::random_u64(),
        seeds: fresh.node.seeds.clone(),
        known_peers,
        state: Some(replica),
        agent: None,
        controller_machine: fresh.node.machine.clone(),
    });
    // Straight into the node: the driver is not running yet, and the
    // bounded command channel could not take an unbounded list.
    let mut node = node;
    for n in fresh.notices {
        node.handle(std::time::Duration::ZERO, crate::core::Input::Publish(n));
    }
    tokio::spawn(accept_loop(endpoint.clone(), transport.clone(), shared.clone()));
    // The ssh provider's client files (key, known_hosts, shared
    // connections) live in the data dir: private, and found by `destroy`.
    super::provider::ssh::client::set_state_dir(dir.path().join("ssh"));
    let parts = DriverParts {
        transport: transport.clone(),
        inbox: inbox_rx,
        commands: cmd_rx,
        dir: Arc::new(dir),
        node_file: fresh.node,
        metrics,
        shutdown,
        store: Some(store),
        inbox_tx: inbox_for_store,
        sessions,
        agent: None,
        provider: Some(Arc::new(super::provider::Runner {
            cluster_secret: shared.creds.cluster_secret.clone(),
            ca_fingerprint: shared.ca_fingerprint.clone(),
            inbox: shared.inbox.clone(),
            commands: shared.commands.clone(),
            preset: cfg.preset.name(),
        })),
    };
    if let (Some(b), true) = (cfg.bootstrap.clone(), created) {
        tokio::spawn(bootstrap(shared.clone(), b));
    }
    if let Some(token) = first_token {
        tokio::spawn(record_first_token(shared.clone(), token));
    }
    driver::run(node, parts).await;
    endpoint.close(0u32.into(), b"leaving");
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), endpoint.wait_idle()).await;
    Ok(())
}

/// Accepts connection attempts as `handshake.rs` rules: accepted ones run
/// their handshake in a task of their own, within `HANDSHAKE_TIMEOUT_MS`;
/// the rest are answered (Retry or refusal) here, at once, keeping no state.
async fn accept_loop(endpoint: quinn::Endpoint, transport: Arc<Transport>, shared: Arc<Shared>) {
    use super::handshake::{HANDSHAKE_TIMEOUT_MS, Handshakes};
    let handshakes = Handshakes::new(shared.metrics.clone());
    while let Some(incoming) = endpoint.accept().await {
        let Some((incoming, slot)) = handshakes.screen(incoming) else { continue };
        let ip = incoming.remote_address().ip();
        let (transport, shared) = (transport.clone(), shared.clone());
        tokio::spawn(async move {
            let timeout = std::time::Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
            let conn = match tokio::time::timeout(timeout, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "handshake failed");
                    shared.metrics.count_drop(crate::metrics::DropReason::HandshakeFailed);
                    return;
                }
                Err(_) => {
                    tracing::debug!(remote = %ip, "handshake not complete within {HANDSHAKE_TIMEOUT_MS} ms; dropped");
                    shared.metrics.count_drop(crate::metrics::DropReason::HandshakeTimeout);
                    return;
                }
            };
            drop(slot);
            on_connection(conn, transport, shared).await;
        });
    }
}

fn alpn_of(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

async fn on_connection(conn: quinn::Connection, transport: Arc<Transport>, shared: Arc<Shared>) {
    match alpn_of(&conn).as_deref() {
        Some(p) if p == pki::ALPN_JOIN => join::serve(conn, shared).await,
        Some(p) if p == pki::ALPN_PEER => {
            let Some((role, id)) = peer_of(&conn) else {
                tracing::warn!(remote = %conn.remote_address(), "refused a peer connection without a client certificate");
                shared.metrics.count_drop(crate::metrics::DropReason::Unauthenticated);
                conn.close(2u32.into(), b"client certificate required");
                return;
            };
            if member_role(role).is_some() {
                // Registering also serves the API on this connection.
                transport.register(PeerConn { conn, role, id });
            } else {
                super::api::serve(conn, role, None, shared).await;
            }
        }
        _ => conn.close(3u32.into(), b"unknown protocol"),
    }
}
