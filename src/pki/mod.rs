//! Cluster PKI: the cluster CA, node certificates, rustls/quinn configs and
//! join tokens.
//!
//! Owns every cryptographic decision about *who* a peer is: which CA a
//! cluster trusts, what a certificate says about its holder (role and node
//! id, bound into a SAN), how a joiner without a certificate pins the CA by
//! fingerprint, and how a join token is minted and checked.
//!
//! Must never do I/O (no files, no sockets, no clock: callers pass
//! `now_unix_secs` where a token needs time), never install a process-wide
//! rustls `CryptoProvider` (every config is built with an explicit *ring*
//! provider), and never decide policy beyond "is this credential genuine":
//! what a manager may do once authenticated belongs to the runtime.
//!
//! Code map:
//! - [`ca`]: [`ClusterCa`], [`CertRole`], [`IssuedCert`], [`peer_from_der`].
//! - [`tls`]: rustls server/client/join configs and their quinn wrappers.
//! - [`tokens`]: [`JoinToken`], [`issue_token`], [`verify_token`].

pub mod ca;
pub mod tls;
pub mod tokens;

#[cfg(test)]
mod tls_tests;

use sha2::{Digest, Sha256};

pub use ca::{
    CertRole, ClusterCa, IssuedCert, machine_from_der, peer_from_der, valid_machine_label,
};
pub use tls::{
    Admission, admit, admit_quinn, client_config, join_client_config, quinn_client_config,
    quinn_server_config, server_config,
};
pub use tokens::{
    DEFAULT_TOKEN_TTL_SECS, JoinToken, TokenError, issue_token, new_cluster_secret,
    try_new_cluster_secret, verify_token,
};

/// The one DNS name every node certificate carries and every dialer checks.
/// Peers are addressed by IP, so the name proves "a node of this cluster",
/// and the per-node SAN (see [`ca`]) says which one.
pub const SERVER_NAME: &str = "jujud.cluster";

/// ALPN for authenticated peer traffic (gossip, sync). Both ends present a
/// certificate issued by the cluster CA.
pub const ALPN_PEER: &[u8] = b"jujud/1";

/// ALPN for joining: the dialer has no certificate yet and authenticates
/// with a join token inside the connection.
pub const ALPN_JOIN: &[u8] = b"jujud-join/1";

/// Length of a CA fingerprint: SHA-256 as lowercase hex.
pub const FINGERPRINT_HEX_CHARS: usize = 64;

/// Everything that can go wrong with certificates and TLS configs.
///
/// Messages name the thing to fix; none of them echo private key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key or certificate generation failed inside rcgen.
    #[error("could not generate a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    /// The cluster name cannot go into a certificate.
    #[error("cluster name must be 1 to {max} printable characters, got {len}")]
    BadClusterName { len: usize, max: usize },

    /// The requested certificate lifetime is outside what we issue.
    #[error("certificate validity must be 1 to {max} days, got {days}")]
    BadValidity { days: u32, max: u32 },

    /// The CA certificate PEM (usually from disk) is not usable.
    #[error("cluster CA certificate is unusable: {0}")]
    BadCaCert(String),

    /// The CA private key PEM (usually from disk) is not usable.
    #[error("cluster CA private key is unusable: {0}")]
    BadCaKey(String),

    /// The CA key and certificate on disk are from two different CAs.
    #[error("cluster CA private key does not belong to the CA certificate")]
    CaKeyMismatch,

    /// A node certificate or key PEM is not usable.
    #[error("node certificate or key is unusable: {0}")]
    BadNodeCert(String),

    /// A peer presented bytes that are not one X.509 certificate.
    #[error("peer certificate is not a valid X.509 certificate: {0}")]
    BadPeerCert(String),

    /// A certificate carries no `<16 hex>.<role>.jujud` SAN.
    #[error("certificate carries no jujud identity (expected a SAN like <16 hex>.<role>.jujud)")]
    NoPeerIdentity,

    /// A certificate carries two different jujud identities.
    #[error("certificate carries more than one jujud identity")]
    AmbiguousPeerIdentity,

    /// A client reached the peer ALPN without a certificate (a joiner must
    /// use the join ALPN).
    #[error("peer connections require a client certificate issued by the cluster CA")]
    ClientCertRequired,

    /// A client negotiated no ALPN or one we do not serve.
    #[error("connection did not negotiate a jujud protocol (ALPN)")]
    UnknownAlpn,

    /// A CA fingerprint string is not 64 hex characters.
    #[error("CA fingerprint must be {FINGERPRINT_HEX_CHARS} hex characters (SHA-256)")]
    BadFingerprint,

    /// rustls refused a key, certificate or config.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),

    /// rustls refused to build a certificate verifier.
    #[error("TLS verifier could not be built: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),

    /// The rustls config cannot carry QUIC (no TLS 1.3 initial suite).
    #[error("TLS config cannot be used for QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Lowercase hex SHA-256 of a DER certificate: the form a CA is pinned by.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Checks that `fingerprint` is 64 hex chars and returns it in lowercase,
/// the only form ever compared.
pub fn normalize_fingerprint(fingerprint: &str) -> Result<String, PkiError> {
    let ok = fingerprint.len() == FINGERPRINT_HEX_CHARS
        && fingerprint.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(PkiError::BadFingerprint);
    }
    Ok(fingerprint.to_ascii_lowercase())
}

/// The *ring* crypto provider every config in this module is built with.
/// Built fresh (it is cheap) so no process-wide default is ever required.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        // SHA-256("abc"), a published test vector.
        assert_eq!(
            fingerprint_of_der(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn normalize_fingerprint_accepts_only_64_hex() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(normalize_fingerprint(upper).unwrap(), upper.to_lowercase());
        assert!(normalize_fingerprint(&upper[1..]).is_err());
        assert!(normalize_fingerprint(&format!("{}0", upper)).is_err());
        let non_hex = format!("g{}", &upper[1..]);
        assert!(normalize_fingerprint(&non_hex).is_err());
        // Multi-byte chars must not slip through a byte-length check.
        let multibyte = format!("é{}", &upper[2..]);
        assert!(normalize_fingerprint(&multibyte).is_err());
    }
}
