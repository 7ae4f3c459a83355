//! Bad input never panics, never changes membership, and always gets a
//! clear error, a log line or a metric: forged and garbage datagrams over a
//! real authenticated QUIC connection, wrong tokens, foreign certificates,
//! corrupt data dirs, busy ports and silent seeds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::*;
use jujud::core::codec::BincodeCodec;
use jujud::core::{Identity, NodeId, Role};
use jujud::pki::{self, CertRole, ClusterCa};

fn metrics_text(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn swim_ping(src: &Identity, dst: &Identity) -> Vec<u8> {
    let header = foca::Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message: foca::Message::Ping(1),
    };
    let mut bytes = vec![0x01];
    foca::Codec::encode_header(&mut BincodeCodec, &header, &mut bytes).unwrap();
    bytes
}

/// A member-grade connection made with a certificate this test issues from
/// the cluster's own CA (as a compromised or buggy member would have).
async fn forged_member(
    dir: &std::path::Path,
    target: SocketAddr,
    fake_id: u64,
) -> quinn::Connection {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ClusterCa::from_pem(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let cert = ca.issue(CertRole::Manager, fake_id, 1).unwrap();
    let cfg = pki::quinn_client_config(
        pki::client_config(&ca, &cert).unwrap(),
        Arc::new(quinn::TransportConfig::default()),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.connect_with(cfg, target, pki::SERVER_NAME).unwrap().await.unwrap()
}

/// A first manager in `dir` serving `/metrics` on a TCP port of its own,
/// and that port. The metrics port is picked before `jujud` binds it, so
/// another process may take it first: then `jujud` refuses to start
/// ("cannot listen on"), and this tries again with a fresh dir and a new
/// port, a few times. The QUIC port is `jujud`'s own pick (port 0).
fn start_with_metrics(dir: &std::path::Path) -> (Peer, SocketAddr) {
    let mut failures = Vec::new();
    for _ in 0..PORT_TRIES {
        let metrics = local(free_tcp_port());
        let extra = ["--metrics-listen".to_string(), metrics.to_string()];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        match Peer::try_start_with(None, dir, any_port(), &extra, None) {
            Ok(p) => return (p, metrics),
            Err(log) if log.contains(&format!("cannot listen on {metrics}")) => {
                let _ = std::fs::remove_dir_all(dir);
                failures.push(log);
            }
            Err(log) => panic!("jujud peer exited before starting; log:\n{log}"),
        }
    }
    panic!("the metrics port was taken {PORT_TRIES} times:\n{}", failures.join("\n---\n"))
}

/// `p`'s `juju members` rows once no member is suspect (see
/// [`settled_members`]): what a comparison before and after bad input
/// reads, states included.
fn settled_rows(p: &Peer) -> Vec<(String, String, u64)> {
    settled_members(&p.client_file(), Some(p.addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_garbage_oversized_and_replayed_datagrams_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (m0, metrics_addr) = start_with_metrics(&tmp.path().join("m0"));
    let m1 = Peer::join(&tmp.path().join("m1"), any_port(), &m0.addr.to_string(), &m0.token());
    m0.log.wait_for("m1 up", |l| saw(l, jujud::events::MEMBER_UP, &m1.id));
    let before = settled_rows(&m0);

    let fake = 0x0bad_0bad_0bad_0badu64;
    let conn = forged_member(&m0.dir, m0.addr, fake).await;
    let m0_ident =
        Identity { id: m0.id.parse().unwrap(), addr: m0.addr, role: Role::Manager, generation: 1 };
    let m1_ident =
        Identity { id: m1.id.parse().unwrap(), addr: m1.addr, role: Role::Manager, generation: 1 };
    // Speaks for m1 over a connection whose certificate says `fake`.
    let spoofed = swim_ping(&m1_ident, &m0_ident);
    conn.send_datagram(spoofed.clone().into()).unwrap();
    conn.send_datagram(spoofed.into()).unwrap();
    // Garbage, a truncated header, a wrong tag, and an oversized datagram.
    let honest = swim_ping(&Identity { id: NodeId(fake), ..m1_ident.clone() }, &m0_ident);
    conn.send_datagram(vec![0xff; 40].into()).unwrap();
    conn.send_datagram(honest[..honest.len() / 2].to_vec().into()).unwrap();
    conn.send_datagram(vec![0x07; 10].into()).unwrap();
    conn.send_datagram(vec![0x01; 1_150].into()).unwrap();
    // The spoofed datagrams are logged as they are dropped; await that.
    m0.log.wait_for("spoof logged", |l| {
        l.iter().any(|v| message(v) == jujud::events::SPOOFED_DATAGRAM)
    });
    // The counters reach /metrics on the driver's 1 s refresh, so poll it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(EVENT_CAP_MS);
    let text = loop {
        let text = metrics_text(metrics_addr);
        let done = metric(&text, "jujud_datagram_drops_total{reason=\"spoofed\"}") >= 2.0
            && metric(&text, "jujud_datagram_drops_total{reason=\"malformed\"}") >= 3.0
            && metric(&text, "jujud_datagram_drops_total{reason=\"oversized\"}") >= 1.0;
        if done || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await; // a poll of a periodic export
    };
    assert!(metric(&text, "jujud_datagram_drops_total{reason=\"spoofed\"}") >= 2.0, "{text}");
    assert!(metric(&text, "jujud_datagram_drops_total{reason=\"malformed\"}") >= 3.0, "{text}");
    assert!(metric(&text, "jujud_datagram_drops_total{reason=\"oversized\"}") >= 1.0, "{text}");
    // The heap as the binary's allocator (jemalloc) counts it, read at the
    // scrape: a running manager holds more than a mebibyte live, and pages
    // holding objects (active) and resident pages hold at least that.
    let heap = |kind: &str| metric(&text, &format!("jujud_heap_bytes{{kind=\"{kind}\"}}"));
    assert!(heap("allocated") > f64::from(1 << 20), "{text}");
    assert!(heap("active") >= heap("allocated"), "{text}");
    assert!(heap("resident") >= heap("active"), "{text}");
    // Compared once settled: a member made suspect by a probe missed on a
    // starved machine refutes it; one the datagrams had added, removed,
    // renamed (a new generation) or had declared down stays so.
    assert_eq!(settled_rows(&m0), before, "membership unchanged by bad datagrams");
    assert!(!m0.log.raw().contains("panicked"));
    // A replayed, well-formed ping from the forged member is idempotent.
    conn.send_datagram(honest.clone().into()).unwrap();
    conn.send_datagram(honest.into()).unwrap();
    m0.log.wait_for("forged member up once", |l| {
        saw(l, jujud::events::MEMBER_UP, &NodeId(fake).to_string())
    });
    let ups = m0
        .log
        .snapshot()
        .iter()
        .filter(|v| {
            message(v) == jujud::events::MEMBER_UP && field(v, "member") == NodeId(fake).to_string()
        })
        .count();
    assert_eq!(ups, 1);
}

#[test]
fn client_with_a_certificate_from_another_cluster_gets_nothing() {
    let a = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let b = Peer::start(&tmp.path().join("b"), any_port(), &[]);
    let out = juju(&b.client_file(), &["members", "--endpoint", &a.peers[0].addr.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&a.peers[0].id),
        "no membership data leaked"
    );
}

#[test]
fn wrong_tokens_are_refused_with_a_reason() {
    let c = Cluster::start(1);
    let seed = c.peers[0].addr.to_string();
    let token = c.peers[0].token();
    let dir = c.tmp.path().join("j");
    let d = dir.to_str().unwrap();
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[4] = "0".repeat(32);
    let bad_secret = parts.join(".");
    let err = peer_fails_with_token(
        &["--data-dir", d, "--listen", "127.0.0.1:0", "--join", &seed],
        Some(&bad_secret),
    );
    assert!(err.contains("refused") && err.contains("secret"), "{err}");
    let err = peer_fails_with_token(
        &["--data-dir", d, "--listen", "127.0.0.1:0", "--join", &seed],
        Some("nonsense"),
    );
    assert!(err.contains("malformed"), "{err}");
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[5] = "ab".repeat(32);
    let other_ca = parts.join(".");
    let err = peer_fails_with_token(
        &["--data-dir", d, "--listen", "127.0.0.1:0", "--join", &seed],
        Some(&other_ca),
    );
    assert!(err.contains("no seed could be reached"), "a pinned CA that does not match: {err}");
    assert!(!dir.join("node.json").exists(), "nothing written for a refused join");
}

#[test]
fn data_dirs_that_are_corrupt_half_written_or_foreign_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let half = tmp.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("ca.pem"), "x").unwrap();
    let err = peer_fails(&["--data-dir", half.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(err.contains("half-initialised"), "{err}");

    let mut a = Peer::start(&tmp.path().join("a"), any_port(), &[]);
    let b = Peer::start(&tmp.path().join("b"), any_port(), &[]);
    a.leave();
    let a_dir = a.dir.to_str().unwrap().to_string();
    let err = peer_fails_with_token(
        &["--data-dir", &a_dir, "--listen", "127.0.0.1:0", "--join", &b.addr.to_string()],
        Some(&b.token()),
    );
    assert!(err.contains("belongs to cluster"), "{err}");
    std::fs::write(a.dir.join("node.json"), "{ torn").unwrap();
    let err = peer_fails(&["--data-dir", &a_dir, "--listen", "127.0.0.1:0"]);
    assert!(err.contains("node.json") && err.contains("corrupt"), "{err}");
}

#[test]
fn busy_port_and_silent_seed_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Peer::start(&tmp.path().join("a"), any_port(), &[]);
    let err = peer_fails(&[
        "--data-dir",
        tmp.path().join("b").to_str().unwrap(),
        "--listen",
        &a.addr.to_string(),
    ]);
    assert!(err.contains("cannot listen on") && err.contains(&a.addr.to_string()), "{err}");
    let silent = local(free_port()).to_string();
    let err = peer_fails_with_token(
        &[
            "--data-dir",
            tmp.path().join("c").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--join",
            &silent,
        ],
        Some(&a.token()),
    );
    assert!(err.contains("no seed could be reached") && err.contains(&silent), "{err}");
    let err = peer_fails(&[
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
        "--probe-period-ms",
        "5",
    ]);
    assert!(err.contains("probe_period_ms"), "{err}");
}

/// A membership exchange (push-pull, stream `0x03`) from a member-grade
/// certificate that announces more than `MAX_EXCHANGE_BYTES`, or speaks for
/// another member, or is garbage, is refused with a log line and a metric,
/// and changes nothing: `juju members` reads the same after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_spoofed_or_garbage_membership_exchange_is_refused_and_changes_nothing() {
    use jujud::core::node::pushpull::{self, MAX_EXCHANGE_BYTES};
    use jujud::runtime::transport::STREAM_MEMBERS;
    let tmp = tempfile::tempdir().unwrap();
    let (m0, metrics_addr) = start_with_metrics(&tmp.path().join("m0"));
    let m1 = Peer::join(&tmp.path().join("m1"), any_port(), &m0.addr.to_string(), &m0.token());
    m0.log.wait_for("m1 up", |l| saw(l, jujud::events::MEMBER_UP, &m1.id));
    let before = settled_rows(&m0);

    let fake = 0x0bad_0e8c_0bad_0e8cu64;
    let conn = forged_member(&m0.dir, m0.addr, fake).await;
    let uni = |body: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let mut send = conn.open_uni().await.unwrap();
            send.write_all(&body).await.unwrap();
            let _ = send.finish();
            send
        }
    };
    // 1. Announces one byte over the bound, and sends a little of it.
    let mut over = vec![STREAM_MEMBERS];
    over.extend_from_slice(&((MAX_EXCHANGE_BYTES + 1) as u32).to_be_bytes());
    over.extend_from_slice(&[0xab; 1_000]);
    let _over = uni(over).await;
    // 2. A well-formed exchange whose sender is m1 (and which names a
    //    member that does not exist), over the forged member's connection.
    let m1_ident =
        Identity { id: m1.id.parse().unwrap(), addr: m1.addr, role: Role::Manager, generation: 1 };
    let ghost = Identity { id: NodeId(0x6405_7000), addr: local(free_port()), ..m1_ident.clone() };
    let (msg, _) = pushpull::encode(
        true,
        vec![foca::Member::alive(m1_ident), foca::Member::alive(ghost.clone())],
    );
    let mut spoofed = vec![STREAM_MEMBERS];
    spoofed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    spoofed.extend_from_slice(&msg);
    let _spoofed = uni(spoofed).await;
    // 3. Garbage in a well-formed frame.
    let mut garbage = vec![STREAM_MEMBERS];
    garbage.extend_from_slice(&64u32.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 64]);
    let _garbage = uni(garbage).await;

    let refused = |l: &[serde_json::Value]| {
        l.iter().filter(|v| message(v) == jujud::events::EXCHANGE_REFUSED).count()
    };
    m0.log.wait_for("three exchanges refused", |l| refused(l) >= 3);
    // The counters reach /metrics on the driver's 1 s refresh, so poll it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(EVENT_CAP_MS);
    let text = loop {
        let text = metrics_text(metrics_addr);
        let done = metric(&text, "jujud_membership_exchanges_refused_total") >= 2.0
            && metric(&text, "jujud_datagram_drops_total{reason=\"oversized\"}") >= 1.0;
        if done || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await; // a poll of a periodic export
    };
    assert!(metric(&text, "jujud_membership_exchanges_refused_total") >= 2.0, "{text}");
    assert!(metric(&text, "jujud_datagram_drops_total{reason=\"oversized\"}") >= 1.0, "{text}");
    let after = settled_rows(&m0);
    assert!(
        !after.iter().any(|(id, _, _)| *id == ghost.id.to_string()),
        "the spoofed exchange's member was not merged: {after:?}"
    );
    assert_eq!(
        after.iter().filter(|(id, _, _)| *id != NodeId(fake).to_string()).collect::<Vec<_>>(),
        before.iter().collect::<Vec<_>>(),
        "membership unchanged by refused exchanges"
    );
    assert!(!m0.log.raw().contains("panicked"));
}
