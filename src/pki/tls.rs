//! rustls configs for peers and joiners, their quinn wrappers, and the
//! admission rule that turns a finished handshake into an identity.
//!
//! Owns three configs: [`server_config`] (every node's listener, serving
//! both [`ALPN_PEER`] and [`ALPN_JOIN`]), [`client_config`] (a member
//! dialing a member, mutual TLS) and [`join_client_config`] (a node with no
//! certificate yet, pinning the CA by the fingerprint in its join token).
//!
//! **Security invariant.** The listener must accept joiners, who have no
//! certificate, on the same port as members, so its client verifier is
//! built with `allow_unauthenticated()`: a client *may* skip its
//! certificate on either ALPN. A certificate that *is* presented must chain
//! to the cluster CA, or the handshake fails. It is therefore the
//! application's job to refuse a certificate-less client on
//! [`ALPN_PEER`]; [`admit`] / [`admit_quinn`] implement exactly that rule,
//! and the runtime must route every accepted connection through one of them.
//!
//! Must never install a process-wide crypto provider (every builder gets an
//! explicit *ring* provider) and never accept a server on a join connection
//! that does not chain to the pinned CA.

use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ca::{CertRole, ClusterCa, IssuedCert, peer_from_der};
use super::{
    ALPN_JOIN, ALPN_PEER, PkiError, crypto_provider, fingerprint_of_der, normalize_fingerprint,
};

/// QUIC requires TLS 1.3, so nothing else is offered.
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Who is on the other end of an accepted connection, once [`admit`] agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A holder of a cluster certificate on [`ALPN_PEER`].
    Peer { role: CertRole, node_id: u64 },
    /// A joiner on [`ALPN_JOIN`]; it must still present a join token. Any
    /// certificate it presented is ignored.
    Joiner,
}

/// The listener config: presents `[node cert, CA cert]` (the CA is in the
/// chain so a joiner can pin it by fingerprint), verifies any client
/// certificate against the cluster CA but does not require one (see the
/// module doc), and offers [`ALPN_PEER`] and [`ALPN_JOIN`].
pub fn server_config(ca: &ClusterCa, cert: &IssuedCert) -> Result<rustls::ServerConfig, PkiError> {
    let provider = crypto_provider();
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(ca_roots(ca)?, provider.clone())
            .allow_unauthenticated()
            .build()?;
    let chain = vec![cert.cert_der()?, ca.cert_der()?];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS13_ONLY)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, cert.key_der()?)?;
    config.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_JOIN.to_vec()];
    Ok(config)
}

/// The member-to-member dialer config: trusts only the cluster CA (the
/// server must present [`super::SERVER_NAME`]), presents `cert`, speaks
/// [`ALPN_PEER`].
pub fn client_config(ca: &ClusterCa, cert: &IssuedCert) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(TLS13_ONLY)?
        .with_root_certificates(ca_roots(ca)?)
        .with_client_auth_cert(vec![cert.cert_der()?], cert.key_der()?)?;
    config.alpn_protocols = vec![ALPN_PEER.to_vec()];
    Ok(config)
}

/// The joiner's config: no client certificate; the server is accepted only
/// if its chain contains a certificate whose SHA-256 is `ca_fingerprint`
/// and its end-entity certificate verifies against that CA for
/// [`super::SERVER_NAME`]. Speaks [`ALPN_JOIN`].
pub fn join_client_config(ca_fingerprint: &str) -> Result<rustls::ClientConfig, PkiError> {
    let provider = crypto_provider();
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: normalize_fingerprint(ca_fingerprint)?,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS13_ONLY)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    Ok(config)
}

/// Wraps a rustls server config for quinn with the given transport.
pub fn quinn_server_config(
    config: rustls::ServerConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, PkiError> {
    let crypto = QuicServerConfig::try_from(config)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport);
    Ok(server)
}

/// Wraps a rustls client config for quinn with the given transport.
pub fn quinn_client_config(
    config: rustls::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, PkiError> {
    let crypto = QuicClientConfig::try_from(config)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport);
    Ok(client)
}

/// The admission rule for an accepted connection, given its negotiated
/// ALPN and the client's verified certificate chain (leaf first):
/// - [`ALPN_PEER`] requires a certificate and yields its identity;
/// - [`ALPN_JOIN`] yields [`Admission::Joiner`];
/// - anything else is refused.
pub fn admit(
    alpn: Option<&[u8]>,
    client_chain: Option<&[CertificateDer<'_>]>,
) -> Result<Admission, PkiError> {
    match alpn {
        Some(p) if p == ALPN_PEER => {
            let leaf =
                client_chain.and_then(|chain| chain.first()).ok_or(PkiError::ClientCertRequired)?;
            let (role, node_id) = peer_from_der(leaf)?;
            Ok(Admission::Peer { role, node_id })
        }
        Some(p) if p == ALPN_JOIN => Ok(Admission::Joiner),
        _ => Err(PkiError::UnknownAlpn),
    }
}

/// [`admit`] for an established quinn connection (server side).
pub fn admit_quinn(conn: &quinn::Connection) -> Result<Admission, PkiError> {
    let alpn = conn
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let chain =
        conn.peer_identity().and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
    admit(alpn.as_deref(), chain.as_deref().map(Vec::as_slice))
}

/// A trust store holding only the cluster CA.
fn ca_roots(ca: &ClusterCa) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()?)?;
    Ok(Arc::new(roots))
}

/// Accepts a server only through a CA it sent itself whose SHA-256 is the
/// pinned fingerprint, then verifies the leaf against that CA with webpki
/// (signature, validity dates, EKU, server name).
#[derive(Debug)]
struct PinnedCaVerifier {
    /// Lowercase hex SHA-256 of the cluster CA certificate DER.
    fingerprint: String,
    /// Algorithms used for the chain and the handshake signature.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_of_der(c) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| *c != ca).cloned().collect();
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SERVER_NAME;

    fn node(ca: &ClusterCa, role: CertRole, id: u64) -> IssuedCert {
        ca.issue(role, id, 30).expect("issue")
    }

    #[test]
    fn configs_build_without_a_global_provider_and_carry_alpn() {
        let ca = ClusterCa::generate("t").unwrap();
        let cert = node(&ca, CertRole::Manager, 1);
        let server = server_config(&ca, &cert).unwrap();
        assert_eq!(server.alpn_protocols, vec![ALPN_PEER.to_vec(), ALPN_JOIN.to_vec()]);
        let client = client_config(&ca, &cert).unwrap();
        assert_eq!(client.alpn_protocols, vec![ALPN_PEER.to_vec()]);
        let join = join_client_config(&ca.fingerprint()).unwrap();
        assert_eq!(join.alpn_protocols, vec![ALPN_JOIN.to_vec()]);
        // QUIC wrapping must accept them (TLS 1.3 initial suite present).
        let transport = Arc::new(quinn::TransportConfig::default());
        quinn_server_config(server, transport.clone()).unwrap();
        quinn_client_config(client, transport.clone()).unwrap();
        quinn_client_config(join, transport).unwrap();
    }

    #[test]
    fn join_config_rejects_malformed_fingerprint() {
        assert!(matches!(join_client_config("abc"), Err(PkiError::BadFingerprint)));
    }

    #[test]
    fn server_config_rejects_key_of_another_cert() {
        let ca = ClusterCa::generate("t").unwrap();
        let a = node(&ca, CertRole::Manager, 1);
        let b = node(&ca, CertRole::Manager, 2);
        let mixed = IssuedCert { cert_pem: a.cert_pem, key_pem: b.key_pem };
        assert!(server_config(&ca, &mixed).is_err());
        assert!(client_config(&ca, &mixed).is_err());
    }

    #[test]
    fn admit_requires_a_certificate_on_the_peer_alpn() {
        let ca = ClusterCa::generate("t").unwrap();
        let der = node(&ca, CertRole::Agent, 0xabc).cert_der().unwrap();
        let chain = [der];
        assert_eq!(
            admit(Some(ALPN_PEER), Some(&chain)).unwrap(),
            Admission::Peer { role: CertRole::Agent, node_id: 0xabc }
        );
        assert!(matches!(admit(Some(ALPN_PEER), None), Err(PkiError::ClientCertRequired)));
        assert!(matches!(admit(Some(ALPN_PEER), Some(&[])), Err(PkiError::ClientCertRequired)));
        assert_eq!(admit(Some(ALPN_JOIN), None).unwrap(), Admission::Joiner);
        assert_eq!(admit(Some(ALPN_JOIN), Some(&chain)).unwrap(), Admission::Joiner);
        assert!(matches!(admit(Some(b"h3"), Some(&chain)), Err(PkiError::UnknownAlpn)));
        assert!(matches!(admit(None, Some(&chain)), Err(PkiError::UnknownAlpn)));
    }

    #[test]
    fn pinned_verifier_needs_the_pinned_ca_in_the_chain() {
        let ca = ClusterCa::generate("t").unwrap();
        let other = ClusterCa::generate("other").unwrap();
        let leaf = node(&ca, CertRole::Manager, 7).cert_der().unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let now = UnixTime::now();
        let verifier =
            PinnedCaVerifier { fingerprint: ca.fingerprint(), provider: crypto_provider() };
        let good = [ca.cert_der().unwrap()];
        assert!(verifier.verify_server_cert(&leaf, &good, &name, &[], now).is_ok());
        // No CA in the chain: nothing to pin.
        assert!(verifier.verify_server_cert(&leaf, &[], &name, &[], now).is_err());
        // The pinned CA is present but did not sign the leaf.
        let foreign_leaf = node(&other, CertRole::Manager, 7).cert_der().unwrap();
        let mixed = [other.cert_der().unwrap(), ca.cert_der().unwrap()];
        assert!(verifier.verify_server_cert(&foreign_leaf, &mixed, &name, &[], now).is_err());
        // Right chain, wrong name.
        let wrong_name = ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &good, &wrong_name, &[], now).is_err());
    }
}
