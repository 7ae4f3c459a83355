//! An attacker's tools against real managers, shared by
//! `tests/adversarial.rs` and `cargo bench --bench attack`: a real quinn
//! client on each ALPN (join without a certificate; peer with an agent
//! certificate minted from the test cluster's CA, read from a manager's
//! data dir), hostile frames, and a half-open handshake flood made of
//! captured client first flights replayed from fresh UDP sockets and never
//! answered.
//!
//! Owns no process: callers start and judge the managers. Must never run
//! unbounded: every loop here has a count and a time cap, and every
//! socket is on loopback.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jujud::pki::{self, ClusterCa};

/// First byte of a uni stream carrying a state message (see transport.rs).
pub const STREAM_STATE: u8 = 0x02;
/// How long [`first_flights`] waits for the client to emit them all.
pub const CAPTURE_CAP_MS: u64 = 20_000;
/// UDP sockets a flood's datagrams are spread over (each a source port).
pub const FLOOD_SOCKETS: usize = 16;

/// The cluster's CA, read from a manager's data dir (tests can: they made it).
pub fn cluster_ca(data_dir: &Path) -> ClusterCa {
    let read =
        |f: &str| std::fs::read_to_string(data_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    ClusterCa::from_pem(read("ca.pem"), read("ca.key")).expect("the cluster CA")
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal")).expect("a client endpoint")
}

/// A connection on the peer ALPN with a fresh agent certificate for
/// `machine`, as a compromised agent would have.
pub async fn agent_conn(
    ca: &ClusterCa,
    target: SocketAddr,
    node_id: u64,
    machine: &str,
) -> Result<quinn::Connection, String> {
    agent_conn_with(ca, target, node_id, machine, quinn::TransportConfig::default()).await
}

/// A transport whose receive windows are `bytes`: a reader that slow, the
/// writer at the other end waits on flow control past that many bytes.
pub fn slow_reader(bytes: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(bytes.into()).receive_window(bytes.into());
    t
}

/// [`agent_conn`] with the given transport parameters.
pub async fn agent_conn_with(
    ca: &ClusterCa,
    target: SocketAddr,
    node_id: u64,
    machine: &str,
    transport: quinn::TransportConfig,
) -> Result<quinn::Connection, String> {
    install_crypto();
    let cert = ca.issue_agent(node_id, machine, 1).map_err(|e| e.to_string())?;
    let tls = pki::client_config(ca, &cert).map_err(|e| e.to_string())?;
    let cfg = pki::quinn_client_config(tls, Arc::new(transport)).map_err(|e| e.to_string())?;
    let conn =
        client_endpoint().connect_with(cfg, target, pki::SERVER_NAME).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// The join ALPN's client config (no certificate), pinned to `ca`.
pub fn join_config(ca: &ClusterCa) -> quinn::ClientConfig {
    install_crypto();
    let tls = pki::join_client_config(&ca.fingerprint()).expect("join config");
    pki::quinn_client_config(tls, Arc::new(quinn::TransportConfig::default()))
        .expect("quinn join config")
}

/// A connection on the join ALPN, as anyone on the network can make.
pub async fn join_conn(ca: &ClusterCa, target: SocketAddr) -> Result<quinn::Connection, String> {
    let conn = client_endpoint()
        .connect_with(join_config(ca), target, pki::SERVER_NAME)
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// A varint length claim of 2^60 bytes (bincode: 0xfd, then a u64).
pub fn claim_2_pow_60() -> Vec<u8> {
    let mut v = vec![0xfd];
    v.extend_from_slice(&(1u64 << 60).to_le_bytes());
    v
}

/// A frame (u32 big-endian length, then `body`).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Opens a bidirectional stream, sends `bytes` (and finishes unless
/// `stall`), and returns the stream's ends.
pub async fn send_bi(
    conn: &quinn::Connection,
    bytes: &[u8],
    stall: bool,
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    if !stall {
        let _ = send.finish();
    }
    Ok((send, recv))
}

/// Reads what comes back on `recv` until it ends, within `cap`; returns the
/// bytes, or None if it did not end in time.
pub async fn read_all_within(recv: &mut quinn::RecvStream, cap: Duration) -> Option<Vec<u8>> {
    match tokio::time::timeout(cap, recv.read_to_end(1 << 20)).await {
        Ok(Ok(b)) => Some(b),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Opens a uni stream announcing a state message of `claim` bytes, sends
/// `sent` bytes of it and leaves it open.
pub async fn announce_state(
    conn: &quinn::Connection,
    claim: u32,
    sent: usize,
) -> Result<quinn::SendStream, String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let mut head = vec![STREAM_STATE];
    head.extend_from_slice(&claim.to_be_bytes());
    head.resize(head.len() + sent, 0xab);
    send.write_all(&head).await.map_err(|e| e.to_string())?;
    Ok(send)
}

/// The destination connection id of a QUIC long-header packet.
fn initial_dcid(pkt: &[u8]) -> Option<&[u8]> {
    if pkt.len() < 6 || pkt[0] & 0x80 == 0 {
        return None;
    }
    let len = pkt[5] as usize;
    pkt.get(6..6 + len)
}

/// Captures `n` distinct client first flights (each a padded Initial with
/// its own connection id and TLS ClientHello): a real quinn client dials a
/// UDP socket this function owns, which never answers.
pub async fn first_flights(n: usize, cfg: quinn::ClientConfig) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("sink socket");
    let sink_addr = sink.local_addr().expect("sink address");
    let endpoint = client_endpoint();
    // Every dialed connection is held until the end: one dropped early
    // would send a close instead of its ClientHello.
    let (mut seen, mut out, mut held) =
        (BTreeSet::new(), Vec::with_capacity(n), Vec::with_capacity(n));
    let deadline = Instant::now() + Duration::from_millis(CAPTURE_CAP_MS);
    let mut buf = vec![0u8; 65_536];
    while out.len() < n && Instant::now() < deadline {
        // Dial in batches so the capture keeps up with what is emitted.
        while held.len() < out.len() + 64 && held.len() < n {
            held.push(
                endpoint.connect_with(cfg.clone(), sink_addr, pki::SERVER_NAME).expect("connect"),
            );
        }
        let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(500), sink.recv(&mut buf)).await
        else {
            continue;
        };
        let pkt = &buf[..len];
        if let Some(dcid) = initial_dcid(pkt)
            && seen.insert(dcid.to_vec())
        {
            out.push(pkt.to_vec());
        }
    }
    drop(held);
    endpoint.close(0u32.into(), b"captured");
    out
}

/// What a flood did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    pub sent: usize,
    pub secs: f64,
}

/// Replays `flights` at `target`, `per_sec` a second, from
/// [`FLOOD_SOCKETS`] fresh sockets, never reading an answer, until `stop`
/// is set, `max_secs` have passed or `max_sent` datagrams went out
/// (`progress` says how many so far); the
/// flights are reused in a cycle (a replay of one whose first try was
/// answered with a Retry is a new attempt to a stateless server). Blocking:
/// run it on a thread of its own.
pub fn flood(
    target: SocketAddr,
    flights: &[Vec<u8>],
    per_sec: u64,
    max_secs: u64,
    max_sent: usize,
    stop: &std::sync::atomic::AtomicBool,
    progress: &std::sync::atomic::AtomicUsize,
) -> FloodReport {
    let socks: Vec<UdpSocket> =
        (0..FLOOD_SOCKETS).map(|_| UdpSocket::bind("127.0.0.1:0").expect("flood socket")).collect();
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let mut sent = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && start.elapsed() < Duration::from_secs(max_secs)
        && sent < max_sent
    {
        let due = (start.elapsed().as_millis() as u64 * per_sec / 1000) as usize;
        while sent < due.min(max_sent) {
            let pkt = &flights[sent % flights.len()];
            let _ = socks[sent % socks.len()].send_to(pkt, target);
            sent += 1;
        }
        progress.store(sent, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(tick); // pacing of the generator, not a wait for an event
    }
    FloodReport { sent, secs: start.elapsed().as_secs_f64() }
}

/// Resident set size of `pid` in KiB (Linux /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
