//! Attacks on real `jujud peer` processes with a real QUIC client written
//! for the test (issue 11, findings 1-3): on the join ALPN without a
//! certificate, and on the peer ALPN with an agent certificate minted from
//! the cluster's CA, garbage frames, huge length claims, frames that start
//! and stall, state streams from an agent, and a half-open handshake flood.
//! After each, every manager is alive and `juju members` answers through
//! the attacked one.

mod common;
use testkit::attack;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use attack::frame;
use common::*;
use jujud::runtime::wire::{self, JoinResponse, Request, Response};

/// Starts a first manager and `n - 1` joiners, each joiner given the token
/// in `JUJUD_TOKEN` (never on its command line).
fn env_cluster(n: usize) -> (tempfile::TempDir, Vec<Peer>) {
    let tmp = tempfile::tempdir().unwrap();
    let first = Peer::start(&tmp.path().join("m0"), any_port(), &[]);
    let (token, seed) = (first.token(), first.addr.to_string());
    let mut peers = vec![first];
    for i in 1..n {
        let dir = tmp.path().join(format!("m{i}"));
        peers.push(Peer::start_with(None, &dir, any_port(), &["--join", &seed], Some(&token)));
    }
    for p in &peers {
        for q in peers.iter().filter(|q| q.id != p.id) {
            let (id, generation) = (q.id.clone(), q.generation);
            p.log
                .wait_for(&format!("{} to see {} up", p.id, id), |l| saw_up_at(l, &id, generation));
        }
    }
    (tmp, peers)
}

/// Every manager still runs, logged no panic, and answers `juju members`
/// (through `via`) with all of them.
async fn all_alive(peers: &mut [Peer], via: SocketAddr, after: &str) {
    for p in peers.iter_mut() {
        let exited = p.child.as_mut().unwrap().try_wait().unwrap();
        assert!(exited.is_none(), "{} exited after {after}: {exited:?}\n{}", p.id, p.log.raw());
        assert!(!p.log.raw().contains("panicked"), "{} panicked after {after}", p.id);
    }
    let client = peers[0].client_file();
    let rows = tokio::task::spawn_blocking(move || members(&client, Some(via))).await.unwrap();
    assert_eq!(rows.len(), peers.len(), "members through {via} after {after}: {rows:?}");
}

/// Reads one response frame of type `T` within the event cap.
async fn answer<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<T, String> {
    tokio::time::timeout(Duration::from_millis(EVENT_CAP_MS), wire::read_frame::<T>(recv, limit))
        .await
        .map_err(|_| "no answer within the cap".to_string())?
        .map_err(|e| e.to_string())
}

fn cap() -> Duration {
    Duration::from_millis(EVENT_CAP_MS)
}

/// The join ALPN, no certificate: a 13-byte frame claiming a 2^60-byte
/// token (on main: the manager aborted), garbage, an over-limit length and
/// a request that starts and stalls each get a refusal.
async fn join_alpn_attacks(peers: &mut [Peer]) {
    let (target, ca) = (peers[0].addr, attack::cluster_ca(&peers[0].dir));
    let conn = attack::join_conn(&ca, target).await.unwrap();
    let (_s, mut r) =
        attack::send_bi(&conn, &frame(&attack::claim_2_pow_60()), false).await.unwrap();
    let got = answer::<JoinResponse>(&mut r, wire::MAX_JOIN_FRAME_BYTES).await;
    assert!(
        matches!(&got, Ok(JoinResponse::Refused { reason, .. }) if reason.contains("bad join request")),
        "{got:?}"
    );
    all_alive(peers, target, "a huge length claim on the join ALPN").await;

    for bytes in [frame(&[0xff; 100]), u32::MAX.to_be_bytes().to_vec(), frame(&[])] {
        let conn = attack::join_conn(&ca, target).await.unwrap();
        let (_s, mut r) = attack::send_bi(&conn, &bytes, false).await.unwrap();
        let got = answer::<JoinResponse>(&mut r, wire::MAX_JOIN_FRAME_BYTES).await;
        assert!(matches!(&got, Ok(JoinResponse::Refused { .. })), "{got:?}");
    }
    // One byte of the length, then nothing: refused at the join step's deadline.
    let conn = attack::join_conn(&ca, target).await.unwrap();
    let (_s, mut r) = attack::send_bi(&conn, &[0], true).await.unwrap();
    let got = answer::<JoinResponse>(&mut r, wire::MAX_JOIN_FRAME_BYTES).await;
    assert!(
        matches!(&got, Ok(JoinResponse::Refused { reason, .. }) if reason.contains("timed out")),
        "{got:?}"
    );
    all_alive(peers, target, "garbage and stalls on the join ALPN").await;
}

/// The peer ALPN with an agent certificate, one connection per attack: a
/// state stream announcing the maximum size closes the connection before
/// any of it is read (on main: 256 MiB reserved, no deadline); a session
/// frame that starts and stalls closes the session; API requests with a
/// huge claim (on main: the manager aborted) and garbage are refused.
async fn agent_attacks(peers: &mut [Peer]) {
    let (target, ca) = (peers[1].addr, attack::cluster_ca(&peers[1].dir));
    let agent = |n: u64| attack::agent_conn(&ca, target, 0x0a11_ce00_0000_0000 + n, "m-attack");

    let conn = agent(1).await.unwrap();
    let _state = attack::announce_state(&conn, 256 << 20, 1_000).await.unwrap();
    let closed = tokio::time::timeout(cap(), conn.closed()).await;
    assert!(
        matches!(&closed, Ok(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == 4u32.into()),
        "the manager closed the agent's connection: {closed:?}"
    );
    all_alive(peers, target, "a state stream from an agent").await;

    // A session whose next frame starts (two bytes of its length) and stalls.
    let conn = agent(2).await.unwrap();
    let mut open = Vec::new();
    wire::write_frame(&mut open, &Request::AgentSession, wire::MAX_API_FRAME_BYTES).await.unwrap();
    open.extend_from_slice(&[0, 0]);
    let (_stalled_send, mut stalled_recv) = attack::send_bi(&conn, &open, true).await.unwrap();
    peers[1].log.wait_for("the stalled session closed", |l| {
        l.iter().any(|v| message(v) == jujud::events::SESSION_BAD_FRAME)
    });
    assert!(
        attack::read_all_within(&mut stalled_recv, cap()).await.is_some(),
        "the manager ended the session stream"
    );

    let conn = agent(3).await.unwrap();
    // Request::TokenRevoke (variant 3) whose token id claims 2^60 bytes.
    let body = [&[3u8][..], &attack::claim_2_pow_60()].concat();
    let (_s, mut r) = attack::send_bi(&conn, &frame(&body), false).await.unwrap();
    let got = answer::<Response>(&mut r, wire::MAX_API_FRAME_BYTES).await;
    assert!(matches!(&got, Ok(Response::Error(e)) if e.contains("bad request")), "{got:?}");
    let (_s, mut r) = attack::send_bi(&conn, &frame(&[0xee; 64]), false).await.unwrap();
    let got = answer::<Response>(&mut r, wire::MAX_API_FRAME_BYTES).await;
    assert!(matches!(&got, Ok(Response::Error(_))), "{got:?}");
    all_alive(peers, target, "huge claims and garbage on the API").await;
}

/// An agent that asks for status and never reads the answer (its receive
/// window is 64 bytes, so the manager's write waits on flow control): the
/// manager resets the stream at its write deadline instead of holding the
/// answer for as long as the connection lives (on main: forever); the
/// same for an agent session's messages.
async fn slow_reader_attack(peers: &mut [Peer]) {
    let (target, ca) = (peers[1].addr, attack::cluster_ca(&peers[1].dir));
    let conn = attack::agent_conn_with(
        &ca,
        target,
        0x0a11_ce00_0000_0010,
        "m-slow",
        attack::slow_reader(64),
    )
    .await
    .unwrap();
    let mut req = Vec::new();
    wire::write_frame(&mut req, &Request::Status, wire::MAX_API_FRAME_BYTES).await.unwrap();
    let (_s, mut r) = attack::send_bi(&conn, &req, false).await.unwrap();
    let reset = tokio::time::timeout(cap(), r.received_reset()).await;
    assert!(
        matches!(reset, Ok(Ok(Some(code))) if code == 4u32.into()),
        "the manager reset the unread answer: {reset:?}"
    );
    all_alive(peers, target, "an answer never read").await;

    // The same on an agent session: the manager's first message waits on
    // flow control; the session stream is reset at the frame deadline.
    let conn = attack::agent_conn_with(
        &ca,
        target,
        0x0a11_ce00_0000_0011,
        "m-slow-session",
        attack::slow_reader(8),
    )
    .await
    .unwrap();
    let mut open = Vec::new();
    wire::write_frame(&mut open, &Request::AgentSession, wire::MAX_API_FRAME_BYTES).await.unwrap();
    let (_s, mut r) = attack::send_bi(&conn, &open, true).await.unwrap();
    let reset = tokio::time::timeout(cap(), r.received_reset()).await;
    assert!(
        matches!(reset, Ok(Ok(Some(code))) if code == 4u32.into()),
        "the manager reset the unread session: {reset:?}"
    );
    all_alive(peers, target, "a session never read").await;
}

/// 2,000 first flights at 1,000 a second, never answered, at one manager;
/// meanwhile `juju members` through it answers, three times of three.
async fn handshake_flood(peers: &mut [Peer]) {
    let (target, ca) = (peers[2].addr, attack::cluster_ca(&peers[2].dir));
    let flights = attack::first_flights(1_000, attack::join_config(&ca)).await;
    assert!(flights.len() >= 500, "captured {} first flights", flights.len());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || attack::flood(target, &flights, 1_000, 10, 10_000, &stop, &sent))
    };
    // Let the flood fill whatever it can fill first: 64 slots (main's only
    // bound) take 64 first flights.
    let deadline = std::time::Instant::now() + cap();
    while sent.load(Ordering::Relaxed) < 200 {
        assert!(std::time::Instant::now() < deadline, "the flood did not start");
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
    let client = peers[0].client_file();
    for i in 0..3 {
        let client = client.clone();
        let out = tokio::task::spawn_blocking(move || {
            juju(&client, &["members", "--endpoint", &target.to_string()])
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "members #{i} during the flood: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let report = flooder.join().unwrap();
    assert!(report.sent >= 200);
    assert!(peers[2].log.raw().contains(jujud::events::HANDSHAKES_PILE_UP), "the flood was logged");
    all_alive(peers, target, "a handshake flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_alpn_refuses_huge_claims_garbage_and_stalls() {
    let (_tmp, mut peers) = env_cluster(3);
    join_alpn_attacks(&mut peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_cannot_crash_stall_or_hold_memory() {
    let (_tmp, mut peers) = env_cluster(3);
    agent_attacks(&mut peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_handshake_flood_does_not_lock_out_clients() {
    let (_tmp, mut peers) = env_cluster(3);
    handshake_flood(&mut peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_read_is_dropped_at_its_deadline() {
    let (_tmp, mut peers) = env_cluster(3);
    slow_reader_attack(&mut peers).await;
}
