//! Real QUIC on 127.0.0.1 with the transport parameters of
//! [`super::transport`]: what an idle connection costs, end to end.
//!
//! Test-only. Must never assert on elapsed time: it waits for events
//! (a handshake, a manager's keep-alive counted by quinn), each bounded by
//! [`EVENT_TIMEOUT`], and checks what the other connections did meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::transport::{KEEPALIVE_MS, agent_transport_config, transport_config};
use crate::pki::{self, CertRole, ClusterCa, IssuedCert};

/// Upper bound on any single awaited network event on loopback.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the keep-alive count is looked at while waiting for it.
const POLL_MS: u64 = 20;
/// Keep-alives the manager's end must have sent before the agents' ends
/// are looked at: two intervals, so an agent end with the manager's
/// keep-alive would have sent one too.
const MANAGER_PINGS: u64 = 2;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An endpoint that accepts and dials with `cert` and `transport`.
fn endpoint(
    ca: &ClusterCa,
    cert: &IssuedCert,
    transport: Arc<quinn::TransportConfig>,
) -> quinn::Endpoint {
    let server = pki::server_config(ca, cert).unwrap();
    let server = pki::quinn_server_config(server, transport.clone()).unwrap();
    let client = pki::client_config(ca, cert).unwrap();
    let client = pki::quinn_client_config(client, transport).unwrap();
    let mut ep = quinn::Endpoint::server(server, loopback()).unwrap();
    ep.set_default_client_config(client);
    ep
}

/// `from` dials `to`; returns (dialer's end, acceptor's end).
async fn connect(
    from: &quinn::Endpoint,
    to: &quinn::Endpoint,
) -> (quinn::Connection, quinn::Connection) {
    let addr = to.local_addr().unwrap();
    let dial = async { from.connect(addr, pki::SERVER_NAME).unwrap().await.unwrap() };
    let accept = async { to.accept().await.unwrap().await.unwrap() };
    tokio::time::timeout(EVENT_TIMEOUT, async { tokio::join!(dial, accept) })
        .await
        .expect("handshake on loopback")
}

fn pings(conn: &quinn::Connection) -> u64 {
    conn.stats().frame_tx.ping
}

/// Waits for the first ping `conn` sends after a pause of half a keep-alive
/// interval (the handshake's pings come in one burst before it); returns
/// the count with it.
async fn first_keep_alive(conn: &quinn::Connection) -> u64 {
    let pause = Duration::from_millis(KEEPALIVE_MS / 2);
    let wait = async {
        let (mut last, mut since) = (pings(conn), std::time::Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            let now = pings(conn);
            if now != last {
                if since.elapsed() >= pause {
                    return now;
                }
                (last, since) = (now, std::time::Instant::now());
            }
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait).await.expect("a manager keep-alive")
}

/// Waits until `conn` has sent `count` pings in all.
async fn manager_keep_alives(conn: &quinn::Connection, count: u64) {
    let wait = async {
        while pings(conn) < count {
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait).await.unwrap_or_else(|_| {
        panic!("manager sent {} of {count} pings within {EVENT_TIMEOUT:?} ({KEEPALIVE_MS} ms keep-alive)", pings(conn))
    });
}

#[tokio::test]
async fn idle_agents_send_no_keep_alives_and_managers_keep_agent_connections_open() {
    let ca = ClusterCa::generate("idle").unwrap();
    let manager = endpoint(&ca, &ca.issue(CertRole::Manager, 1, 30).unwrap(), transport_config());
    let a = endpoint(&ca, &ca.issue_agent(2, "m2", 30).unwrap(), agent_transport_config());
    let b = endpoint(&ca, &ca.issue_agent(3, "m3", 30).unwrap(), agent_transport_config());

    let (a_to_b, b_from_a) = connect(&a, &b).await;
    let (a_to_manager, manager_from_a) = connect(&a, &manager).await;
    // The events waited for: the manager's end sends keep-alives, every
    // KEEPALIVE_MS, on its otherwise silent connection to agent a. The
    // handshake's own pings come first, in a burst; the first ping after a
    // pause is a keep-alive. Count the agents' ends from there, over the
    // next MANAGER_PINGS keep-alive intervals.
    let first = first_keep_alive(&manager_from_a).await;
    let before = [pings(&a_to_b), pings(&b_from_a), pings(&a_to_manager)];
    manager_keep_alives(&manager_from_a, first + MANAGER_PINGS).await;

    // Meanwhile the agents' ends, all as idle, sent none (the handshake's
    // own pings, if any, are counted in `before`), and every connection
    // is still open: the agent pair on its long idle timeout, the agent's
    // connection to the manager on the manager's keep-alives.
    let after = [pings(&a_to_b), pings(&b_from_a), pings(&a_to_manager)];
    assert_eq!(after, before, "agent ends sent keep-alives: before {before:?}, after {after:?}");
    for (name, conn) in [
        ("a->b", &a_to_b),
        ("b<-a", &b_from_a),
        ("a->manager", &a_to_manager),
        ("manager<-a", &manager_from_a),
    ] {
        assert!(conn.close_reason().is_none(), "{name} closed: {:?}", conn.close_reason());
    }
    // SWIM traffic still flows on the idle agent pair.
    a_to_b.send_datagram(bytes::Bytes::from_static(b"probe")).unwrap();
    let got = tokio::time::timeout(EVENT_TIMEOUT, b_from_a.read_datagram()).await.unwrap().unwrap();
    assert_eq!(&got[..], b"probe");
}

/// A client asks the manager to acknowledge only every
/// [`super::transport::ACK_ELICITING_THRESHOLD`] + 1 packets (an
/// ACK_FREQUENCY frame): without it, a manager under write load sent an
/// ACK-only packet for about every second request. Member connections
/// ask nothing: by the time the client's frame arrived, the manager's own
/// connection to another manager had carried as much traffic and got none.
#[tokio::test]
async fn clients_ask_managers_for_fewer_acks_and_members_do_not() {
    let ca = ClusterCa::generate("acks").unwrap();
    let a = endpoint(&ca, &ca.issue(CertRole::Manager, 1, 30).unwrap(), transport_config());
    let b = endpoint(&ca, &ca.issue(CertRole::Manager, 2, 30).unwrap(), transport_config());
    let client = endpoint(
        &ca,
        &ca.issue(CertRole::Manager, 3, 30).unwrap(),
        super::client::client_transport(),
    );
    let (a_to_b, b_from_a) = connect(&a, &b).await;
    let (client_to_a, a_from_client) = connect(&client, &a).await;
    let asked = |c: &quinn::Connection| c.stats().frame_rx.ack_frequency;
    let wait = async {
        while asked(&a_from_client) == 0 {
            for c in [&a_to_b, &b_from_a, &client_to_a, &a_from_client] {
                c.send_datagram(bytes::Bytes::from_static(b"x")).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("the manager got no ACK_FREQUENCY frame from the client"));
    assert_eq!(
        [asked(&a_to_b), asked(&b_from_a), asked(&client_to_a)],
        [0, 0, 0],
        "member connections and the manager's answers ask for nothing"
    );
}
