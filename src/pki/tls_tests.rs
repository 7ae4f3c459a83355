//! Real QUIC handshakes on 127.0.0.1 with the configs from [`super::tls`]:
//! proves the trust rules hold end to end, not just inside rustls.
//!
//! Test-only. Must never sleep: every wait is on a quinn event, bounded by
//! [`EVENT_TIMEOUT`] so a broken rule fails the test instead of hanging it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::*;

/// Upper bound on any single awaited network event on loopback.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest echo payload read back in the tests, in bytes.
const MAX_ECHO_BYTES: usize = 1024;

fn transport() -> Arc<quinn::TransportConfig> {
    Arc::new(quinn::TransportConfig::default())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn server_endpoint(ca: &ClusterCa, cert: &IssuedCert) -> (quinn::Endpoint, SocketAddr) {
    let cfg = quinn_server_config(server_config(ca, cert).unwrap(), transport()).unwrap();
    let ep = quinn::Endpoint::server(cfg, loopback()).unwrap();
    let addr = ep.local_addr().unwrap();
    (ep, addr)
}

async fn accept_one(ep: &quinn::Endpoint) -> Result<quinn::Connection, String> {
    let fut = async {
        let incoming = ep.accept().await.ok_or("endpoint closed")?;
        incoming.await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(EVENT_TIMEOUT, fut).await.map_err(|_| "accept timed out".to_string())?
}

async fn dial(cfg: quinn::ClientConfig, addr: SocketAddr) -> Result<quinn::Connection, String> {
    let ep = quinn::Endpoint::client(loopback()).map_err(|e| e.to_string())?;
    let connecting = ep.connect_with(cfg, addr, SERVER_NAME).map_err(|e| e.to_string())?;
    tokio::time::timeout(EVENT_TIMEOUT, connecting)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Opens a stream, sends `ping`, and reads the reply to the end.
async fn ping(conn: &quinn::Connection) -> Result<Vec<u8>, String> {
    let fut = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"ping").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(MAX_ECHO_BYTES).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(EVENT_TIMEOUT, fut).await.map_err(|_| "ping timed out".to_string())?
}

/// Answers one stream with `pong:` + what it read.
async fn pong(conn: &quinn::Connection) -> Result<(), String> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let got = recv.read_to_end(MAX_ECHO_BYTES).await.map_err(|e| e.to_string())?;
    send.write_all(&[b"pong:".as_slice(), &got].concat()).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())
}

fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
}

#[tokio::test]
async fn members_of_one_ca_connect_and_see_each_other() {
    let ca = ClusterCa::generate("one").unwrap();
    let server_cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
    let client_cert = ca.issue(CertRole::Manager, 2, 30).unwrap();
    let (server, addr) = server_endpoint(&ca, &server_cert);
    let client_cfg = quinn_client_config(client_config(&ca, &client_cert).unwrap(), transport());

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(client_cfg.unwrap(), addr));
    let (accepted, dialed) = (accepted.unwrap(), dialed.unwrap());

    // The server sees the client's certificate, and it names node 2.
    let chain = peer_chain(&accepted).expect("client presented a certificate");
    assert_eq!(peer_from_der(&chain[0]).unwrap(), (CertRole::Manager, 2));
    let expected = Admission::Peer { role: CertRole::Manager, node_id: 2 };
    assert_eq!(admit_quinn(&accepted).unwrap(), expected);
    // The client sees the server's leaf first, then the CA it can pin.
    let server_chain = peer_chain(&dialed).expect("server presented a certificate");
    assert_eq!(peer_from_der(&server_chain[0]).unwrap(), (CertRole::Manager, 1));
    assert_eq!(fingerprint_of_der(&server_chain[1]), ca.fingerprint());

    let (served, reply) = tokio::join!(pong(&accepted), ping(&dialed));
    served.unwrap();
    assert_eq!(reply.unwrap(), b"pong:ping");
}

#[tokio::test]
async fn client_cert_from_another_ca_is_rejected() {
    let ca = ClusterCa::generate("one").unwrap();
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let server_cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
    let rogue_cert = rogue_ca.issue(CertRole::Manager, 2, 30).unwrap();
    let (server, addr) = server_endpoint(&ca, &server_cert);
    // The rogue trusts our CA (it could copy the public cert), so it gets
    // as far as sending its own certificate.
    let rogue_cfg = quinn_client_config(client_config(&ca, &rogue_cert).unwrap(), transport());

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(rogue_cfg.unwrap(), addr));
    assert!(accepted.is_err(), "server accepted a foreign certificate");
    // quinn may report the dial as connected; it must not be usable.
    if let Ok(conn) = dialed {
        assert!(ping(&conn).await.is_err(), "rogue connection was usable");
    }
}

#[tokio::test]
async fn server_from_another_ca_is_rejected_by_members() {
    let ca = ClusterCa::generate("one").unwrap();
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let rogue_server = rogue_ca.issue(CertRole::Manager, 1, 30).unwrap();
    let member = ca.issue(CertRole::Manager, 2, 30).unwrap();
    let (server, addr) = server_endpoint(&rogue_ca, &rogue_server);
    let cfg = quinn_client_config(client_config(&ca, &member).unwrap(), transport());

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(cfg.unwrap(), addr));
    assert!(dialed.is_err(), "member trusted a foreign server");
    assert!(accepted.is_err());
}

#[tokio::test]
async fn certless_client_on_peer_alpn_is_refused_by_admission() {
    let ca = ClusterCa::generate("one").unwrap();
    let server_cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
    let (server, addr) = server_endpoint(&ca, &server_cert);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().unwrap()).unwrap();
    let mut certless = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    certless.alpn_protocols = vec![ALPN_PEER.to_vec()];
    let cfg = quinn_client_config(certless, transport()).unwrap();

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(cfg, addr));
    // TLS lets it in (joiners share the listener)...
    let accepted = accepted.expect("allow_unauthenticated admits the handshake");
    dialed.unwrap();
    assert!(peer_chain(&accepted).is_none());
    // ...and the admission rule is what refuses it.
    assert!(matches!(admit_quinn(&accepted), Err(PkiError::ClientCertRequired)));
}

#[tokio::test]
async fn joiner_with_right_fingerprint_connects() {
    let ca = ClusterCa::generate("one").unwrap();
    let server_cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
    let (server, addr) = server_endpoint(&ca, &server_cert);
    let cfg = quinn_client_config(join_client_config(&ca.fingerprint()).unwrap(), transport());

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(cfg.unwrap(), addr));
    let (accepted, dialed) = (accepted.unwrap(), dialed.unwrap());
    assert_eq!(admit_quinn(&accepted).unwrap(), Admission::Joiner);
    let (served, reply) = tokio::join!(pong(&accepted), ping(&dialed));
    served.unwrap();
    assert_eq!(reply.unwrap(), b"pong:ping");
}

#[tokio::test]
async fn joiner_with_wrong_fingerprint_refuses_the_server() {
    let ca = ClusterCa::generate("one").unwrap();
    let other_ca = ClusterCa::generate("other").unwrap();
    let server_cert = ca.issue(CertRole::Manager, 1, 30).unwrap();
    let (server, addr) = server_endpoint(&ca, &server_cert);
    let cfg =
        quinn_client_config(join_client_config(&other_ca.fingerprint()).unwrap(), transport());

    let (accepted, dialed) = tokio::join!(accept_one(&server), dial(cfg.unwrap(), addr));
    assert!(dialed.is_err(), "joiner accepted an unpinned CA");
    assert!(accepted.is_err());
}
