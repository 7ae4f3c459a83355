//! The start-up consistency check of a data dir's identity files: that
//! `ca.pem`, `node.pem`, `node.key` and `node.json` belong to one node of
//! one cluster (the node certificate is signed by the CA, names this node
//! id, role and machine, and its key is `node.key`; the CA's fingerprint is
//! the one in `node.json`).
//!
//! Owns only this check; reads nothing from disk itself (the data dir hands
//! it the files' text) and never repairs: a mismatch is refused with the
//! file to look at. Certificate dates are not checked here (every TLS
//! handshake checks them); only who signed what and who is named.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::pki::{self, CertRole, ClusterCa, IssuedCert};

/// Why the identity files do not belong together. Names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct Mismatch {
    /// The data dir file that disagrees (`ca.pem`, `node.pem`, `node.key`).
    pub file: &'static str,
    pub reason: String,
}

fn mismatch(file: &'static str, reason: impl Into<String>) -> Mismatch {
    Mismatch { file, reason: reason.into() }
}

/// What `node.json` claims about this node.
#[derive(Debug, Clone, Copy)]
pub struct Claimed<'a> {
    pub ca_fingerprint: &'a str,
    pub node_id: &'a str,
    pub role: &'a str,
    pub machine: Option<&'a str>,
}

/// Checks the CA, node certificate and key against `node.json`'s claims.
pub fn check(
    claimed: Claimed<'_>,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), Mismatch> {
    let fp = ClusterCa::cert_fingerprint_from_pem(ca_pem)
        .map_err(|e| mismatch("ca.pem", e.to_string()))?;
    if fp != claimed.ca_fingerprint {
        return Err(mismatch(
            "ca.pem",
            format!(
                "CA fingerprint {fp} is not node.json's {}: the CA of another cluster",
                claimed.ca_fingerprint
            ),
        ));
    }
    let ca = ClusterCa { cert_pem: ca_pem.to_owned(), key_pem: String::new() };
    let ca_der = ca.cert_der().map_err(|e| mismatch("ca.pem", e.to_string()))?;
    let node = IssuedCert { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
    let der = node.cert_der().map_err(|e| mismatch("node.pem", e.to_string()))?;
    check_signed_by(&ca_der, &der)?;
    let (role, id) = pki::peer_from_der(&der).map_err(|e| mismatch("node.pem", e.to_string()))?;
    let want_id = u64::from_str_radix(claimed.node_id, 16).map_err(|_| {
        mismatch("node.pem", format!("node.json's node id {:?} is not hex", claimed.node_id))
    })?;
    if id != want_id || Some(role) != CertRole::parse(claimed.role) {
        return Err(mismatch(
            "node.pem",
            format!(
                "certificate names {} {id:016x}, node.json says {} {}",
                role.as_str(),
                claimed.role,
                claimed.node_id
            ),
        ));
    }
    let machine = pki::machine_from_der(&der).map_err(|e| mismatch("node.pem", e.to_string()))?;
    if machine.as_deref() != claimed.machine {
        return Err(mismatch(
            "node.pem",
            format!("certificate names machine {machine:?}, node.json says {:?}", claimed.machine),
        ));
    }
    check_key(&der, key_pem)
}

/// The leaf's signature chains to the CA (dates set aside: `now` is taken
/// inside the leaf's own validity).
fn check_signed_by(
    ca_der: &CertificateDer<'static>,
    der: &CertificateDer<'static>,
) -> Result<(), Mismatch> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|e| mismatch("ca.pem", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| mismatch("ca.pem", e.to_string()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| mismatch("node.pem", e.to_string()))?;
    let not_before = x509.validity().not_before.timestamp().max(0) as u64;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before + 1));
    let name =
        ServerName::try_from(pki::SERVER_NAME).map_err(|e| mismatch("node.pem", e.to_string()))?;
    verifier.verify_server_cert(der, &[], &name, &[], now).map(|_| ()).map_err(|e| {
        mismatch("node.pem", format!("not a certificate of this cluster's CA (ca.pem): {e}"))
    })
}

/// `node.key` is the key of `node.pem`.
fn check_key(der: &CertificateDer<'static>, key_pem: &str) -> Result<(), Mismatch> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| mismatch("node.key", e.to_string()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| mismatch("node.pem", e.to_string()))?;
    if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
        return Err(mismatch("node.key", "the key is not the one node.pem certifies"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed<'a>(fp: &'a str, id: &'a str) -> Claimed<'a> {
        Claimed { ca_fingerprint: fp, node_id: id, role: "manager", machine: None }
    }

    #[test]
    fn matching_files_pass_and_each_foreign_file_is_refused_by_name() {
        let ca = ClusterCa::generate("a").unwrap();
        let other = ClusterCa::generate("b").unwrap();
        let fp = ca.fingerprint();
        let cert = ca.issue(CertRole::Manager, 7, 30).unwrap();
        let id = format!("{:016x}", 7);
        check(claimed(&fp, &id), &ca.cert_pem, &cert.cert_pem, &cert.key_pem).unwrap();

        // Another cluster's CA (node.json still names ours).
        let e =
            check(claimed(&fp, &id), &other.cert_pem, &cert.cert_pem, &cert.key_pem).unwrap_err();
        assert_eq!(e.file, "ca.pem", "{e}");
        // Another cluster's node.json (its fingerprint) with our CA.
        let e =
            check(claimed(&other.fingerprint(), &id), &ca.cert_pem, &cert.cert_pem, &cert.key_pem)
                .unwrap_err();
        assert_eq!(e.file, "ca.pem", "{e}");
        // A certificate of another CA, the same id: the signature fails.
        let foreign = other.issue(CertRole::Manager, 7, 30).unwrap();
        let e = check(claimed(&fp, &id), &ca.cert_pem, &foreign.cert_pem, &foreign.key_pem)
            .unwrap_err();
        assert!(e.file == "node.pem" && e.reason.contains("CA"), "{e}");
        // Another node's certificate of our CA.
        let eight = ca.issue(CertRole::Manager, 8, 30).unwrap();
        let e =
            check(claimed(&fp, &id), &ca.cert_pem, &eight.cert_pem, &eight.key_pem).unwrap_err();
        assert_eq!(e.file, "node.pem", "{e}");
        // The right certificate with another role claimed.
        let agent = Claimed { role: "agent", ..claimed(&fp, &id) };
        assert_eq!(
            check(agent, &ca.cert_pem, &cert.cert_pem, &cert.key_pem).unwrap_err().file,
            "node.pem"
        );
        // The right certificate with another node's key.
        let e = check(claimed(&fp, &id), &ca.cert_pem, &cert.cert_pem, &eight.key_pem).unwrap_err();
        assert_eq!(e.file, "node.key", "{e}");
    }
}
