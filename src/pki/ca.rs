//! The cluster CA and the certificates it issues.
//!
//! Owns the certificate layout: every node certificate carries the shared
//! SAN [`SERVER_NAME`] plus an identity SAN `<node id as 16 hex>.<role>.jujud`,
//! which is the *only* place a peer's role and id are read from
//! ([`peer_from_der`]). The CN repeats it for people reading `openssl x509`.
//!
//! Must never trust a certificate by parsing it: [`peer_from_der`] only
//! reads what a certificate claims, and is meaningful only for a chain that
//! rustls has already verified against the cluster CA. Must never log or
//! print private keys (the `Debug` impls elide them).

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::{PkiError, SERVER_NAME, fingerprint_of_der};
use crate::core::identity::Role;

/// Lifetime of a cluster CA: 10 years. Rotating a CA is a cluster-wide
/// event, so it must be rare.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// Longest node certificate we issue. A leaf is also never valid past its CA.
pub const MAX_CERT_VALIDITY_DAYS: u32 = 3650;

/// How far `not_before` is set in the past, so a peer whose clock is a bit
/// behind ours still accepts a certificate issued a moment ago.
pub const CERT_BACKDATE_SECS: i64 = 3600;

/// Longest cluster name accepted into the CA's CN (RFC 5280 caps a CN at 64
/// characters, and the CN also holds a "jujud CA " prefix).
pub const MAX_CLUSTER_NAME_CHARS: usize = 48;

/// Last DNS label of every identity SAN.
const IDENTITY_SAN_SUFFIX: &str = "jujud";

/// A node id is written as exactly this many lowercase hex digits.
const NODE_ID_HEX_CHARS: usize = 16;

/// Random serial number size. RFC 5280 allows up to 20 octets; 16 random
/// bytes make collisions irrelevant.
const SERIAL_BYTES: usize = 16;

const SECS_PER_DAY: i64 = 86_400;

/// What a certificate lets its holder be. Bound into the identity SAN, so a
/// holder can never claim another role than the one it was issued.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CertRole {
    /// A controller: gossips, holds state, accepts joins.
    Manager,
    /// A machine agent.
    Agent,
    /// A person or tool using the admin API (never a cluster member).
    Admin,
}

impl CertRole {
    /// The lower-case name used in SANs, CNs and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Manager => "manager",
            CertRole::Agent => "agent",
            CertRole::Admin => "admin",
        }
    }

    /// Parses exactly what [`CertRole::as_str`] writes (case-sensitive).
    pub fn parse(s: &str) -> Option<CertRole> {
        match s {
            "manager" => Some(CertRole::Manager),
            "agent" => Some(CertRole::Agent),
            "admin" => Some(CertRole::Admin),
            _ => None,
        }
    }

    /// The membership role this certificate stands for; admins are not members.
    pub fn member_role(self) -> Option<Role> {
        match self {
            CertRole::Manager => Some(Role::Manager),
            CertRole::Agent => Some(Role::Agent),
            CertRole::Admin => None,
        }
    }
}

impl From<Role> for CertRole {
    fn from(role: Role) -> CertRole {
        match role {
            Role::Manager => CertRole::Manager,
            Role::Agent => CertRole::Agent,
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cluster CA: a self-signed certificate and its private key, both PEM.
/// Whoever holds `key_pem` can mint members, so only managers keep it.
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A node certificate (PEM) and its private key (PEM, PKCS#8).
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = self.cert_der().ok().and_then(|d| peer_from_der(&d).ok());
        f.debug_struct("IssuedCert")
            .field("identity", &identity)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl ClusterCa {
    /// Creates a new CA for `cluster_name`, valid for [`CA_VALIDITY_DAYS`].
    pub fn generate(cluster_name: &str) -> Result<ClusterCa, PkiError> {
        generate_with_validity_days(cluster_name, CA_VALIDITY_DAYS)
    }

    /// Wraps a CA loaded from disk, checking that the certificate is one CA
    /// certificate and that the key belongs to it.
    pub fn from_pem(cert_pem: String, key_pem: String) -> Result<ClusterCa, PkiError> {
        let ca = ClusterCa { cert_pem, key_pem };
        ca.issuer()?;
        Ok(ca)
    }

    /// Lowercase hex SHA-256 of the CA certificate DER (64 chars): what join
    /// tokens carry and joiners pin. Empty if `cert_pem` is unreadable (an
    /// empty string never equals a well-formed fingerprint); use
    /// [`ClusterCa::cert_fingerprint_from_pem`] to see the error.
    pub fn fingerprint(&self) -> String {
        Self::cert_fingerprint_from_pem(&self.cert_pem).unwrap_or_default()
    }

    /// Fingerprint of the single certificate in `pem`, e.g. the CA PEM a
    /// join response carries, to compare with the token's fingerprint.
    /// Fails unless the PEM holds exactly one parseable X.509 certificate.
    pub fn cert_fingerprint_from_pem(pem: &str) -> Result<String, PkiError> {
        let der = single_cert_der(pem).map_err(PkiError::BadCaCert)?;
        parse_one_cert(&der).map_err(PkiError::BadCaCert)?;
        Ok(fingerprint_of_der(&der))
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        single_cert_der(&self.cert_pem).map_err(PkiError::BadCaCert)
    }

    /// Issues a certificate for node `node_id` in `role`, usable both as a
    /// TLS server and a TLS client (managers dial and accept). Valid from
    /// [`CERT_BACKDATE_SECS`] ago for `validity_days`, but never past the CA.
    pub fn issue(
        &self,
        role: CertRole,
        node_id: u64,
        validity_days: u32,
    ) -> Result<IssuedCert, PkiError> {
        self.issue_with(role, node_id, None, validity_days)
    }

    /// Issues a machine agent's certificate: role agent, bound to `machine`
    /// by a second SAN `<machine>.machine.jujud`, so a manager learns which
    /// machine an agent may speak for from the certificate alone.
    pub fn issue_agent(
        &self,
        node_id: u64,
        machine: &str,
        validity_days: u32,
    ) -> Result<IssuedCert, PkiError> {
        if !valid_machine_label(machine) {
            return Err(PkiError::BadPeerCert(format!(
                "machine id {machine:?} is not a DNS label"
            )));
        }
        self.issue_with(CertRole::Agent, node_id, Some(machine), validity_days)
    }

    fn issue_with(
        &self,
        role: CertRole,
        node_id: u64,
        machine: Option<&str>,
        validity_days: u32,
    ) -> Result<IssuedCert, PkiError> {
        if validity_days == 0 || validity_days > MAX_CERT_VALIDITY_DAYS {
            return Err(PkiError::BadValidity { days: validity_days, max: MAX_CERT_VALIDITY_DAYS });
        }
        let (issuer, ca_not_after) = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let wanted_not_after = now + Duration::days(i64::from(validity_days));

        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::DnsName(SERVER_NAME.try_into()?),
            SanType::DnsName(identity_dns_name(role, node_id).try_into()?),
        ];
        if let Some(m) = machine {
            params.subject_alt_names.push(SanType::DnsName(machine_dns_name(m).try_into()?));
        }
        params.distinguished_name = DistinguishedName::new();
        let cn = format!("{}:{node_id:016x}", role.as_str());
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::seconds(CERT_BACKDATE_SECS);
        params.not_after = wanted_not_after.min(ca_not_after);
        params.serial_number = Some(random_serial()?);

        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Parses and cross-checks the CA, returning an rcgen issuer and the
    /// CA's `not_after`. Guards rcgen's parser against inputs it would
    /// panic on (an empty RDN), since the PEM comes from disk.
    fn issuer(&self) -> Result<(Issuer<'static, KeyPair>, OffsetDateTime), PkiError> {
        let der = self.cert_der()?;
        let x509 = parse_one_cert(&der).map_err(PkiError::BadCaCert)?;
        if !x509.is_ca() {
            return Err(PkiError::BadCaCert("certificate is not a CA".into()));
        }
        if x509.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(PkiError::BadCaCert("unsupported subject name".into()));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .map_err(|_| PkiError::BadCaCert("expiry date out of range".into()))?;
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::BadCaKey(e.to_string()))?;
        if key.public_key_raw() != x509.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::CaKeyMismatch);
        }
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| PkiError::BadCaCert(e.to_string()))?;
        Ok((issuer, not_after))
    }
}

impl IssuedCert {
    /// The node certificate as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        single_cert_der(&self.cert_pem).map_err(PkiError::BadNodeCert)
    }

    /// The node's private key as DER (for rustls).
    pub fn key_der(&self) -> Result<rustls::pki_types::PrivateKeyDer<'static>, PkiError> {
        rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| PkiError::BadNodeCert(format!("private key: {e}")))
    }
}

/// The identity SAN of a node: `<node id as 16 lowercase hex>.<role>.jujud`.
pub fn identity_dns_name(role: CertRole, node_id: u64) -> String {
    format!("{node_id:016x}.{}.{IDENTITY_SAN_SUFFIX}", role.as_str())
}

/// Last two labels of a machine SAN.
const MACHINE_SAN_SUFFIX: &str = "machine.jujud";
/// Longest machine id in a SAN (one DNS label).
pub const MAX_MACHINE_LABEL_CHARS: usize = 63;

/// Whether `m` can be a machine id in a SAN: 1 to 63 of `[a-z0-9-]`.
pub fn valid_machine_label(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MACHINE_LABEL_CHARS
        && m.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The machine SAN of an agent: `<machine>.machine.jujud`.
pub fn machine_dns_name(machine: &str) -> String {
    format!("{machine}.{MACHINE_SAN_SUFFIX}")
}

/// The machine an agent's certificate is bound to, if it names exactly one.
/// Parsing only, like [`peer_from_der`]: call it on a verified certificate.
pub fn machine_from_der(der: &[u8]) -> Result<Option<String>, PkiError> {
    let x509 = parse_one_cert(der).map_err(PkiError::BadPeerCert)?;
    let Some(san) = x509
        .subject_alternative_name()
        .map_err(|e| PkiError::BadPeerCert(format!("subject alternative names: {e}")))?
    else {
        return Ok(None);
    };
    let mut found: Option<String> = None;
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else { continue };
        let Some(m) = dns.strip_suffix(MACHINE_SAN_SUFFIX).and_then(|p| p.strip_suffix('.')) else {
            continue;
        };
        if !valid_machine_label(m) {
            continue;
        }
        match &found {
            Some(prev) if prev != m => return Err(PkiError::AmbiguousPeerIdentity),
            _ => found = Some(m.to_string()),
        }
    }
    Ok(found)
}

/// Reads the role and node id a certificate claims, from its identity SAN.
///
/// Parsing only: call it on a certificate rustls has already verified
/// against the cluster CA (e.g. from `quinn::Connection::peer_identity`).
/// Fails on anything that is not exactly one DER certificate carrying
/// exactly one identity (the same SAN repeated is tolerated).
pub fn peer_from_der(der: &[u8]) -> Result<(CertRole, u64), PkiError> {
    let x509 = parse_one_cert(der).map_err(PkiError::BadPeerCert)?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| PkiError::BadPeerCert(format!("subject alternative names: {e}")))?
        .ok_or(PkiError::NoPeerIdentity)?;
    let mut found: Option<(CertRole, u64)> = None;
    for name in &san.value.general_names {
        let GeneralName::DNSName(dns) = name else {
            continue;
        };
        let Some(identity) = parse_identity_dns_name(dns) else {
            continue;
        };
        match found {
            Some(previous) if previous != identity => {
                return Err(PkiError::AmbiguousPeerIdentity);
            }
            _ => found = Some(identity),
        }
    }
    found.ok_or(PkiError::NoPeerIdentity)
}

/// Parses `<16 lowercase hex>.<role>.jujud`; anything else is `None`.
pub fn parse_identity_dns_name(dns: &str) -> Option<(CertRole, u64)> {
    let mut labels = dns.split('.');
    let (hex_id, role, suffix) = (labels.next()?, labels.next()?, labels.next()?);
    if labels.next().is_some() || suffix != IDENTITY_SAN_SUFFIX {
        return None;
    }
    let is_lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hex_id.len() != NODE_ID_HEX_CHARS || !hex_id.bytes().all(is_lower_hex) {
        return None;
    }
    let node_id = u64::from_str_radix(hex_id, 16).ok()?;
    Some((CertRole::parse(role)?, node_id))
}

fn generate_with_validity_days(
    cluster_name: &str,
    validity_days: u32,
) -> Result<ClusterCa, PkiError> {
    let len = cluster_name.chars().count();
    if len == 0 || len > MAX_CLUSTER_NAME_CHARS || cluster_name.chars().any(char::is_control) {
        return Err(PkiError::BadClusterName { len, max: MAX_CLUSTER_NAME_CHARS });
    }
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("jujud CA {cluster_name}"));
    params.distinguished_name.push(DnType::OrganizationName, "jujud");
    // Path length 0: this CA signs node certificates, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::seconds(CERT_BACKDATE_SECS);
    params.not_after = now + Duration::seconds(i64::from(validity_days) * SECS_PER_DAY);
    params.serial_number = Some(random_serial()?);

    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(ClusterCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Exactly one CERTIFICATE block from `pem`, as DER. Other block types
/// (e.g. a key pasted into the same file) are ignored.
fn single_cert_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes());
    let first = match certs.next() {
        Some(Ok(der)) => der,
        Some(Err(e)) => return Err(format!("bad PEM: {e}")),
        None => return Err("no CERTIFICATE block in PEM".into()),
    };
    if certs.next().is_some() {
        return Err("more than one CERTIFICATE block in PEM".into());
    }
    Ok(first)
}

/// Parses exactly one DER certificate, refusing trailing bytes.
fn parse_one_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the certificate", rest.len()));
    }
    Ok(x509)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Random(e.to_string()))?;
    // Keep the serial positive: DER INTEGERs are signed.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ROLES: [CertRole; 3] = [CertRole::Manager, CertRole::Agent, CertRole::Admin];

    fn dns_names(der: &[u8]) -> Vec<String> {
        let x509 = parse_one_cert(der).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn role_names_round_trip_and_are_strict() {
        for role in ALL_ROLES {
            assert_eq!(CertRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(CertRole::parse("Manager"), None);
        assert_eq!(CertRole::parse(""), None);
        assert_eq!(CertRole::from(Role::Agent).member_role(), Some(Role::Agent));
        assert_eq!(CertRole::Admin.member_role(), None);
    }

    #[test]
    fn generated_ca_is_a_ten_year_ca_with_a_stable_fingerprint() {
        let ca = ClusterCa::generate("prod-east").unwrap();
        let der = ca.cert_der().unwrap();
        let x509 = parse_one_cert(&der).unwrap();
        assert!(x509.is_ca());
        let validity = x509.validity();
        let secs = validity.not_after.timestamp() - validity.not_before.timestamp();
        let expected = i64::from(CA_VALIDITY_DAYS) * SECS_PER_DAY + CERT_BACKDATE_SECS;
        assert!((secs - expected).abs() <= 2, "validity was {secs}s");

        let fp = ca.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(fp, fingerprint_of_der(&der));
        assert_eq!(ClusterCa::cert_fingerprint_from_pem(&ca.cert_pem).unwrap(), fp);
        // Two CAs never share a fingerprint.
        assert_ne!(ClusterCa::generate("prod-east").unwrap().fingerprint(), fp);
        // The key never shows up in Debug output.
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn bad_cluster_names_are_refused() {
        assert!(ClusterCa::generate("").is_err());
        assert!(ClusterCa::generate("a\nb").is_err());
        let long = "x".repeat(MAX_CLUSTER_NAME_CHARS + 1);
        assert!(ClusterCa::generate(&long).is_err());
        assert!(ClusterCa::generate(&long[1..]).is_ok());
    }

    #[test]
    fn issued_certs_round_trip_for_every_role() {
        let ca = ClusterCa::generate("t").unwrap();
        for role in ALL_ROLES {
            for id in [0, 1, 0xdead_beef, u64::MAX] {
                let cert = ca.issue(role, id, 30).unwrap();
                let der = cert.cert_der().unwrap();
                assert_eq!(peer_from_der(&der).unwrap(), (role, id));
                let names = dns_names(&der);
                assert!(names.contains(&SERVER_NAME.to_owned()));
                assert!(names.contains(&format!("{id:016x}.{}.jujud", role.as_str())));
                let x509 = parse_one_cert(&der).unwrap();
                let cn = x509.subject().iter_common_name().next().unwrap();
                assert_eq!(cn.as_str().unwrap(), format!("{}:{id:016x}", role.as_str()));
            }
        }
    }

    #[test]
    fn issued_cert_is_a_leaf_for_server_and_client_auth() {
        let ca = ClusterCa::generate("t").unwrap();
        let der = ca.issue(CertRole::Manager, 9, 30).unwrap().cert_der().unwrap();
        let x509 = parse_one_cert(&der).unwrap();
        assert!(!x509.is_ca());
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ca_der = ca.cert_der().unwrap();
        let ca_x509 = parse_one_cert(&ca_der).unwrap();
        assert_eq!(x509.issuer().as_raw(), ca_x509.subject().as_raw());
        let days = (x509.validity().not_after.timestamp()
            - OffsetDateTime::now_utc().unix_timestamp())
            / SECS_PER_DAY;
        assert!((29..=30).contains(&days), "leaf valid for {days} days");
    }

    #[test]
    fn leaf_never_outlives_its_ca() {
        let ca = generate_with_validity_days("short", 2).unwrap();
        let der = ca.issue(CertRole::Agent, 1, 365).unwrap().cert_der().unwrap();
        let leaf_end = parse_one_cert(&der).unwrap().validity().not_after.timestamp();
        let ca_der = ca.cert_der().unwrap();
        let ca_end = parse_one_cert(&ca_der).unwrap().validity().not_after.timestamp();
        assert_eq!(leaf_end, ca_end);
    }

    #[test]
    fn validity_out_of_range_is_refused() {
        let ca = ClusterCa::generate("t").unwrap();
        assert!(matches!(
            ca.issue(CertRole::Agent, 1, 0),
            Err(PkiError::BadValidity { days: 0, .. })
        ));
        assert!(matches!(
            ca.issue(CertRole::Agent, 1, MAX_CERT_VALIDITY_DAYS + 1),
            Err(PkiError::BadValidity { .. })
        ));
    }

    #[test]
    fn ca_from_disk_is_cross_checked() {
        let ca = ClusterCa::generate("t").unwrap();
        let other = ClusterCa::generate("u").unwrap();
        assert!(ClusterCa::from_pem(ca.cert_pem.clone(), ca.key_pem.clone()).is_ok());
        let mixed = ClusterCa { cert_pem: ca.cert_pem.clone(), key_pem: other.key_pem.clone() };
        assert!(matches!(mixed.issue(CertRole::Agent, 1, 1), Err(PkiError::CaKeyMismatch)));
        let garbage = ClusterCa {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "nope".into(),
        };
        assert!(matches!(garbage.issue(CertRole::Agent, 1, 1), Err(PkiError::BadCaCert(_))));
        assert_eq!(garbage.fingerprint(), "");
        let no_key = ClusterCa { cert_pem: ca.cert_pem.clone(), key_pem: "nope".into() };
        assert!(matches!(no_key.issue(CertRole::Agent, 1, 1), Err(PkiError::BadCaKey(_))));
        // A leaf is not a CA, even with its own key.
        let leaf = ca.issue(CertRole::Manager, 1, 1).unwrap();
        let fake = ClusterCa { cert_pem: leaf.cert_pem, key_pem: leaf.key_pem };
        assert!(matches!(fake.issue(CertRole::Agent, 1, 1), Err(PkiError::BadCaCert(_))));
        // Two certificates in one PEM are ambiguous.
        let doubled = format!("{}{}", ca.cert_pem, other.cert_pem);
        assert!(ClusterCa::cert_fingerprint_from_pem(&doubled).is_err());
        assert!(ClusterCa::cert_fingerprint_from_pem("").is_err());
    }

    #[test]
    fn peer_from_der_parses_certs_of_any_ca() {
        // Parsing is not trusting: a cert from another CA still parses.
        let other = ClusterCa::generate("other").unwrap();
        let der = other.issue(CertRole::Agent, 42, 1).unwrap().cert_der().unwrap();
        assert_eq!(peer_from_der(&der).unwrap(), (CertRole::Agent, 42));
    }

    #[test]
    fn peer_from_der_refuses_certs_without_our_san() {
        let plain = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
        assert!(matches!(peer_from_der(plain.cert.der()), Err(PkiError::NoPeerIdentity)));
        let shared_only = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).unwrap();
        assert!(matches!(peer_from_der(shared_only.cert.der()), Err(PkiError::NoPeerIdentity)));
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![];
        let key = KeyPair::generate().unwrap();
        let no_san = params.self_signed(&key).unwrap();
        assert!(matches!(peer_from_der(no_san.der()), Err(PkiError::NoPeerIdentity)));
    }

    #[test]
    fn peer_from_der_refuses_two_identities() {
        let names =
            vec![identity_dns_name(CertRole::Agent, 1), identity_dns_name(CertRole::Manager, 1)];
        let two = rcgen::generate_simple_self_signed(names).unwrap();
        assert!(matches!(peer_from_der(two.cert.der()), Err(PkiError::AmbiguousPeerIdentity)));
        let same = vec![identity_dns_name(CertRole::Agent, 1); 2];
        let repeated = rcgen::generate_simple_self_signed(same).unwrap();
        assert_eq!(peer_from_der(repeated.cert.der()).unwrap(), (CertRole::Agent, 1));
    }

    #[test]
    fn peer_from_der_refuses_non_certificates() {
        assert!(matches!(peer_from_der(&[]), Err(PkiError::BadPeerCert(_))));
        assert!(matches!(peer_from_der(b"\x30\x82\xff\xff"), Err(PkiError::BadPeerCert(_))));
        let ca = ClusterCa::generate("t").unwrap();
        let mut der = ca.issue(CertRole::Agent, 1, 1).unwrap().cert_der().unwrap().to_vec();
        der.push(0);
        assert!(matches!(peer_from_der(&der), Err(PkiError::BadPeerCert(_))));
        // Every truncation fails cleanly, never panics.
        der.pop();
        for len in 0..der.len() {
            assert!(peer_from_der(&der[..len]).is_err());
        }
    }

    #[test]
    fn agent_certificates_name_their_machine_and_others_name_none() {
        let ca = ClusterCa::generate("t").unwrap();
        let agent = ca.issue_agent(0xab, "3-beef", 30).unwrap();
        let der = agent.cert_der().unwrap();
        assert_eq!(peer_from_der(&der).unwrap(), (CertRole::Agent, 0xab));
        assert_eq!(machine_from_der(&der).unwrap().as_deref(), Some("3-beef"));
        let manager = ca.issue(CertRole::Manager, 0xcd, 30).unwrap();
        assert_eq!(machine_from_der(&manager.cert_der().unwrap()).unwrap(), None);
        for bad in ["", "Upper", "has.dot", "under_score", &"x".repeat(64)] {
            assert!(ca.issue_agent(1, bad, 30).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identity_dns_name_parser_is_strict() {
        let ok = "00000000000000ff.agent.jujud";
        assert_eq!(parse_identity_dns_name(ok), Some((CertRole::Agent, 0xff)));
        for bad in [
            "00000000000000FF.agent.jujud",
            "0000000000000ff.agent.jujud",
            "000000000000000ff.agent.jujud",
            "+0000000000000ff.agent.jujud",
            "00000000000000ff.robot.jujud",
            "00000000000000ff.agent.jujud.evil.com",
            "00000000000000ff.agent.juju",
            "x.00000000000000ff.agent.jujud",
            "",
            "..",
        ] {
            assert_eq!(parse_identity_dns_name(bad), None, "{bad}");
        }
    }
}
