//! Join tokens: a short string that lets a new node prove it was invited
//! and tells it which CA to pin (kubeadm's bootstrap token, in spirit).
//!
//! Text form (see [`JoinToken`]):
//! `jjd1.<role>.<token_id>.<expires_unix_secs>.<secret>.<ca_fingerprint>[.<subject>]`
//! where `secret` is the first 16 bytes of
//! HMAC-SHA256(cluster_secret, `jjd1|<role>|<token_id>|<expires>[|<subject>]`).
//! The subject, when present, is inside the MAC so it cannot be swapped.
//!
//! Owns minting and checking tokens. Must never read a clock (callers pass
//! `now_unix_secs`), never store or log a token's secret (the `Debug` impl
//! elides it), never compare secrets in variable time, and never panic on a
//! token string, however malformed.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use super::ca::CertRole;
use super::normalize_fingerprint;

/// How long a token is valid unless the operator says otherwise: one day.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 86_400;

/// Longest token lifetime we mint: one year. Long-lived join secrets are
/// how clusters get joined by strangers.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 86_400;

/// Longest token text accepted by the parser, in bytes.
pub const MAX_TOKEN_TEXT_BYTES: usize = 256;

/// Version prefix of the text form.
pub const TOKEN_PREFIX: &str = "jjd1";

/// Size of a freshly generated cluster secret, in bytes.
pub const CLUSTER_SECRET_BYTES: usize = 32;

/// Shortest cluster secret we accept as an HMAC key, in bytes.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;

/// Longest subject (e.g. a machine id), in characters of `[a-z0-9-]`.
pub const MAX_SUBJECT_CHARS: usize = 64;

/// Random token id size in bytes (written as 8 hex chars).
const TOKEN_ID_BYTES: usize = 4;

/// Truncated HMAC size in bytes (written as 32 hex chars).
const TOKEN_SECRET_BYTES: usize = 16;

/// CA fingerprint size in hex chars (SHA-256).
const FINGERPRINT_HEX_CHARS: usize = super::FINGERPRINT_HEX_CHARS;

/// Most digits of a `u64` in decimal.
const MAX_EXPIRY_DIGITS: usize = 20;

/// Dot-separated parts without and with a subject.
const PARTS_WITHOUT_SUBJECT: usize = 6;
const PARTS_WITH_SUBJECT: usize = 7;

type HmacSha256 = Hmac<Sha256>;

/// Everything that can be wrong with a join token, from parsing to checking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is {len} bytes long; a jujud join token is at most {max}")]
    TooLong { len: usize, max: usize },
    #[error(
        "token has {got} dot-separated parts; expected \
         jjd1.<role>.<id>.<expiry>.<secret>.<ca fingerprint>[.<subject>]"
    )]
    WrongPartCount { got: usize },
    #[error(
        "token does not start with {TOKEN_PREFIX} (not a jujud join token, or from a newer version)"
    )]
    BadPrefix,
    #[error("token role must be manager or agent")]
    BadRole,
    #[error("token id must be 8 lowercase hex characters")]
    BadTokenId,
    #[error("token expiry must be a unix time in seconds, without leading zeros")]
    BadExpiry,
    #[error("token secret must be 32 lowercase hex characters")]
    BadSecretFormat,
    #[error("token CA fingerprint must be 64 lowercase hex characters")]
    BadFingerprint,
    #[error("token subject must be 1 to {MAX_SUBJECT_CHARS} characters of a-z, 0-9 and -")]
    BadSubject,
    #[error("token is for role {got} but a {expected} is joining")]
    WrongRole { expected: CertRole, got: CertRole },
    #[error(
        "token has expired at {} (unix {expires_unix_secs}); ask for a new token",
        fmt_unix_utc(*expires_unix_secs)
    )]
    Expired { expires_unix_secs: u64 },
    #[error("token secret is wrong (not issued by this cluster, or altered)")]
    BadSecret,
    #[error("token is not for this cluster (CA fingerprint mismatch)")]
    WrongCluster,
    #[error("cluster secret must be at least {MIN_CLUSTER_SECRET_BYTES} bytes")]
    WeakClusterSecret,
    #[error(
        "token lifetime must be 1 to {MAX_TOKEN_TTL_SECS} seconds and end before year 2^64, got {ttl_secs}"
    )]
    BadTtl { ttl_secs: u64 },
    #[error("join tokens are only for manager or agent, not {role}")]
    RoleNotJoinable { role: CertRole },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// A parsed join token. Build one with [`issue_token`] or by parsing its
/// text form; check it with [`verify_token`].
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// What the joiner becomes: manager or agent.
    pub role: CertRole,
    /// 8 lowercase hex chars, random; what revocation lists name.
    pub token_id: String,
    /// The token is refused from this unix second on.
    pub expires_unix_secs: u64,
    /// 32 lowercase hex chars: truncated HMAC over the fields above (+ subject).
    pub secret: String,
    /// Lowercase hex SHA-256 of the cluster CA certificate the joiner pins.
    pub ca_fingerprint: String,
    /// Optional binding to one joiner (e.g. a machine id), `[a-z0-9-]{1,64}`.
    pub subject: Option<String>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("role", &self.role)
            .field("token_id", &self.token_id)
            .field("expires_unix_secs", &self.expires_unix_secs)
            .field("secret", &"[elided]")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("subject", &self.subject)
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}.{}.{}",
            self.role.as_str(),
            self.token_id,
            self.expires_unix_secs,
            self.secret,
            self.ca_fingerprint
        )?;
        if let Some(subject) = &self.subject {
            write!(f, ".{subject}")?;
        }
        Ok(())
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    /// Strict parse: every part must be in the exact form [`fmt::Display`]
    /// writes, so a token has one text form only.
    fn from_str(s: &str) -> Result<JoinToken, TokenError> {
        if s.len() > MAX_TOKEN_TEXT_BYTES {
            return Err(TokenError::TooLong { len: s.len(), max: MAX_TOKEN_TEXT_BYTES });
        }
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != PARTS_WITHOUT_SUBJECT && parts.len() != PARTS_WITH_SUBJECT {
            return Err(TokenError::WrongPartCount { got: parts.len() });
        }
        if parts[0] != TOKEN_PREFIX {
            return Err(TokenError::BadPrefix);
        }
        let token = JoinToken {
            role: parse_joinable_role(parts[1]).ok_or(TokenError::BadRole)?,
            token_id: parts[2].to_owned(),
            expires_unix_secs: parse_canonical_u64(parts[3]).ok_or(TokenError::BadExpiry)?,
            secret: parts[4].to_owned(),
            ca_fingerprint: parts[5].to_owned(),
            subject: parts.get(6).map(|s| (*s).to_owned()),
        };
        token.check_format()?;
        Ok(token)
    }
}

impl JoinToken {
    /// Checks every field's shape (not its authenticity).
    fn check_format(&self) -> Result<(), TokenError> {
        if parse_joinable_role(self.role.as_str()).is_none() {
            return Err(TokenError::BadRole);
        }
        if !is_lower_hex(&self.token_id, TOKEN_ID_BYTES * 2) {
            return Err(TokenError::BadTokenId);
        }
        if !is_lower_hex(&self.secret, TOKEN_SECRET_BYTES * 2) {
            return Err(TokenError::BadSecretFormat);
        }
        if !is_lower_hex(&self.ca_fingerprint, FINGERPRINT_HEX_CHARS) {
            return Err(TokenError::BadFingerprint);
        }
        match &self.subject {
            Some(subject) if !is_valid_subject(subject) => Err(TokenError::BadSubject),
            _ => Ok(()),
        }
    }
}

/// Mints a token for `role` (manager or agent), valid for `ttl_secs` from
/// `now_unix_secs`, optionally bound to `subject`, pinning `ca_fingerprint`.
pub fn issue_token(
    cluster_secret: &[u8],
    role: CertRole,
    subject: Option<&str>,
    ttl_secs: u64,
    now_unix_secs: u64,
    ca_fingerprint: &str,
) -> Result<JoinToken, TokenError> {
    if parse_joinable_role(role.as_str()).is_none() {
        return Err(TokenError::RoleNotJoinable { role });
    }
    if ttl_secs == 0 || ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(TokenError::BadTtl { ttl_secs });
    }
    let expires_unix_secs =
        now_unix_secs.checked_add(ttl_secs).ok_or(TokenError::BadTtl { ttl_secs })?;
    if subject.is_some_and(|s| !is_valid_subject(s)) {
        return Err(TokenError::BadSubject);
    }
    let ca_fingerprint =
        normalize_fingerprint(ca_fingerprint).map_err(|_| TokenError::BadFingerprint)?;
    let mut id_bytes = [0u8; TOKEN_ID_BYTES];
    getrandom::fill(&mut id_bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let token_id = hex::encode(id_bytes);
    let subject = subject.map(str::to_owned);
    let mac = token_mac(cluster_secret, role, &token_id, expires_unix_secs, subject.as_deref())?;
    let tag = mac.finalize().into_bytes();
    Ok(JoinToken {
        role,
        token_id,
        expires_unix_secs,
        secret: hex::encode(&tag[..TOKEN_SECRET_BYTES]),
        ca_fingerprint,
        subject,
    })
}

/// Checks a token, in this order: it pins our CA (`local_ca_fingerprint`),
/// it is for `expected_role`, its secret was minted with `cluster_secret`
/// (constant-time), and it has not expired at `now_unix_secs`.
/// Authenticity is checked before expiry, so that error only ever
/// describes a genuine token. Revocation and single use are not checked
/// here: they live in the replicated state (`core::state::tokens`), which
/// admission reads.
pub fn verify_token(
    token: &JoinToken,
    cluster_secret: &[u8],
    expected_role: CertRole,
    now_unix_secs: u64,
    local_ca_fingerprint: &str,
) -> Result<(), TokenError> {
    token.check_format()?;
    match normalize_fingerprint(local_ca_fingerprint) {
        Ok(local) if local == token.ca_fingerprint => {}
        _ => return Err(TokenError::WrongCluster),
    }
    if token.role != expected_role {
        return Err(TokenError::WrongRole { expected: expected_role, got: token.role });
    }
    let presented = hex::decode(&token.secret).map_err(|_| TokenError::BadSecretFormat)?;
    // Length is fixed by check_format; re-checked because a truncated-tag
    // compare would otherwise accept a shorter (weaker) secret.
    if presented.len() != TOKEN_SECRET_BYTES {
        return Err(TokenError::BadSecretFormat);
    }
    let mac = token_mac(
        cluster_secret,
        token.role,
        &token.token_id,
        token.expires_unix_secs,
        token.subject.as_deref(),
    )?;
    mac.verify_truncated_left(&presented).map_err(|_| TokenError::BadSecret)?;
    if now_unix_secs >= token.expires_unix_secs {
        return Err(TokenError::Expired { expires_unix_secs: token.expires_unix_secs });
    }
    Ok(())
}

/// A fresh random cluster secret (the HMAC key for join tokens).
pub fn try_new_cluster_secret() -> Result<[u8; CLUSTER_SECRET_BYTES], TokenError> {
    let mut secret = [0u8; CLUSTER_SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(secret)
}

/// [`try_new_cluster_secret`], panicking if the OS random source fails
/// (nothing secure can be done without one; this is not input-driven).
pub fn new_cluster_secret() -> [u8; CLUSTER_SECRET_BYTES] {
    match try_new_cluster_secret() {
        Ok(secret) => secret,
        Err(e) => panic!("cannot create a cluster secret: {e}"),
    }
}

/// HMAC over `jjd1|<role>|<token_id>|<expires>[|<subject>]`, ready to
/// finalize or verify. The fields are checked for `|`-free shapes before
/// this is reached, so the message is unambiguous.
fn token_mac(
    cluster_secret: &[u8],
    role: CertRole,
    token_id: &str,
    expires_unix_secs: u64,
    subject: Option<&str>,
) -> Result<HmacSha256, TokenError> {
    if cluster_secret.len() < MIN_CLUSTER_SECRET_BYTES {
        return Err(TokenError::WeakClusterSecret);
    }
    let mut mac =
        HmacSha256::new_from_slice(cluster_secret).map_err(|_| TokenError::WeakClusterSecret)?;
    let mut message = format!("{TOKEN_PREFIX}|{}|{token_id}|{expires_unix_secs}", role.as_str());
    if let Some(subject) = subject {
        message.push('|');
        message.push_str(subject);
    }
    mac.update(message.as_bytes());
    Ok(mac)
}

fn parse_joinable_role(s: &str) -> Option<CertRole> {
    CertRole::parse(s).filter(|role| *role != CertRole::Admin)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBJECT_CHARS
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Decimal `u64` with no sign, no leading zeros (except "0") and no overflow.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= MAX_EXPIRY_DIGITS
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for people; unix seconds past year 9999 print raw.
fn fmt_unix_utc(secs: u64) -> String {
    let Some(t) =
        i64::try_from(secs).ok().and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return format!("unix {secs}");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;
    const FP: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const OTHER_FP: &str = "ca7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn agent_token(subject: Option<&str>) -> JoinToken {
        issue_token(SECRET, CertRole::Agent, subject, 3600, NOW, FP).unwrap()
    }

    fn check(token: &JoinToken, role: CertRole) -> Result<(), TokenError> {
        verify_token(token, SECRET, role, NOW, FP)
    }

    #[test]
    fn text_form_round_trips_and_verifies() {
        for subject in [None, Some("machine-0")] {
            let token = agent_token(subject);
            let text = token.to_string();
            let parsed: JoinToken = text.parse().unwrap();
            assert_eq!(parsed, token);
            assert_eq!(parsed.to_string(), text);
            assert_eq!(text.split('.').count(), 6 + usize::from(subject.is_some()));
            assert!(text.starts_with("jjd1.agent."));
            assert!(text.contains(FP));
            assert_eq!(parsed.token_id.len(), 8);
            assert_eq!(parsed.secret.len(), 32);
            check(&parsed, CertRole::Agent).unwrap();
        }
    }

    #[test]
    fn secret_is_the_truncated_hmac_of_the_spec_message() {
        let token = agent_token(None);
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        let msg = format!("jjd1|agent|{}|{}", token.token_id, NOW + 3600);
        mac.update(msg.as_bytes());
        let tag = mac.finalize().into_bytes();
        assert_eq!(token.secret, hex::encode(&tag[..16]));
    }

    #[test]
    fn token_ids_are_random() {
        assert_ne!(agent_token(None).token_id, agent_token(None).token_id);
    }

    #[test]
    fn tampering_with_any_field_fails_with_the_right_error() {
        let good = agent_token(Some("m-1"));
        let mut t = good.clone();
        t.role = CertRole::Manager;
        assert_eq!(check(&t, CertRole::Manager), Err(TokenError::BadSecret));
        assert_eq!(
            check(&good, CertRole::Manager),
            Err(TokenError::WrongRole { expected: CertRole::Manager, got: CertRole::Agent })
        );
        let mut t = good.clone();
        t.token_id = if t.token_id == "00000000" { "00000001" } else { "00000000" }.into();
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecret));
        let mut t = good.clone();
        t.expires_unix_secs += 1;
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecret));
        let mut t = good.clone();
        let flipped = if t.secret.starts_with('0') { "1" } else { "0" };
        t.secret.replace_range(0..1, flipped);
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecret));
        let mut t = good.clone();
        t.ca_fingerprint = OTHER_FP.into();
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::WrongCluster));
        let mut t = good.clone();
        t.subject = Some("m-2".into());
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecret));
        let mut t = good.clone();
        t.subject = None;
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecret));
        // Another cluster's secret, or a short (truncated-tag) secret.
        let other_secret = [7u8; 32];
        let r = verify_token(&good, &other_secret, CertRole::Agent, NOW, FP);
        assert_eq!(r, Err(TokenError::BadSecret));
        let mut t = good.clone();
        t.secret.truncate(2);
        assert_eq!(check(&t, CertRole::Agent), Err(TokenError::BadSecretFormat));
        // The local fingerprint is compared case-insensitively.
        let r = verify_token(&good, SECRET, CertRole::Agent, NOW, &FP.to_uppercase());
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn every_single_character_edit_of_the_text_is_refused() {
        let text = agent_token(Some("m-1")).to_string();
        for i in 0..text.len() {
            for c in ['0', '1', 'a', 'f', 'z', '.', '-', 'A'] {
                if text.as_bytes()[i] == c as u8 {
                    continue;
                }
                let mut edited = text.clone();
                edited.replace_range(i..i + 1, c.encode_utf8(&mut [0; 4]));
                let accepted =
                    edited.parse::<JoinToken>().is_ok_and(|t| check(&t, CertRole::Agent).is_ok());
                assert!(!accepted, "edit {edited} was accepted");
            }
        }
    }

    #[test]
    fn expiry_is_exclusive_and_reported_with_a_date() {
        let token = agent_token(None);
        let at = token.expires_unix_secs;
        assert_eq!(verify_token(&token, SECRET, CertRole::Agent, at - 1, FP), Ok(()));
        let err = verify_token(&token, SECRET, CertRole::Agent, at, FP).unwrap_err();
        assert_eq!(err, TokenError::Expired { expires_unix_secs: at });
        // 1_700_003_600 is 2023-11-14T23:13:20Z.
        assert!(err.to_string().contains("expired at 2023-11-14T23:13:20Z"), "{err}");
        // A forged token gets BadSecret even when also expired.
        let mut forged = token.clone();
        forged.secret = "0".repeat(32);
        let r = verify_token(&forged, SECRET, CertRole::Agent, at + 10, FP);
        assert_eq!(r, Err(TokenError::BadSecret));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let token = agent_token(None);
        let e = check(&token, CertRole::Manager).unwrap_err().to_string();
        assert_eq!(e, "token is for role agent but a manager is joining");
        let e = verify_token(&token, SECRET, CertRole::Agent, NOW, OTHER_FP).unwrap_err();
        assert_eq!(e.to_string(), "token is not for this cluster (CA fingerprint mismatch)");
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn issue_refuses_bad_inputs() {
        let issue = |secret: &[u8], role, subject, ttl, now, fp: &str| {
            issue_token(secret, role, subject, ttl, now, fp)
        };
        assert_eq!(
            issue(&SECRET[..15], CertRole::Agent, None, 60, NOW, FP),
            Err(TokenError::WeakClusterSecret)
        );
        assert_eq!(
            issue(SECRET, CertRole::Admin, None, 60, NOW, FP),
            Err(TokenError::RoleNotJoinable { role: CertRole::Admin })
        );
        assert_eq!(
            issue(SECRET, CertRole::Agent, None, 0, NOW, FP),
            Err(TokenError::BadTtl { ttl_secs: 0 })
        );
        let too_long = MAX_TOKEN_TTL_SECS + 1;
        assert!(issue(SECRET, CertRole::Agent, None, too_long, NOW, FP).is_err());
        assert!(issue(SECRET, CertRole::Agent, None, 60, u64::MAX - 5, FP).is_err());
        let long = "a".repeat(MAX_SUBJECT_CHARS + 1);
        for subject in ["", "Machine", "a.b", "a|b", "é", &long] {
            let r = issue(SECRET, CertRole::Agent, Some(subject), 60, NOW, FP);
            assert_eq!(r, Err(TokenError::BadSubject), "{subject:?}");
        }
        assert_eq!(
            issue(SECRET, CertRole::Agent, None, 60, NOW, "abc"),
            Err(TokenError::BadFingerprint)
        );
        // An upper-case fingerprint is stored lower-case, so it parses back.
        let t = issue(SECRET, CertRole::Manager, None, 60, NOW, &FP.to_uppercase()).unwrap();
        assert_eq!(t.ca_fingerprint, FP);
    }

    #[test]
    fn longest_token_fits_the_limit() {
        let subject = "a".repeat(MAX_SUBJECT_CHARS);
        let mut token = agent_token(Some(&subject));
        token.expires_unix_secs = u64::MAX;
        let text = token.to_string();
        assert!(text.len() <= MAX_TOKEN_TEXT_BYTES, "{} bytes", text.len());
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
    }

    #[test]
    fn malformed_parts_are_named() {
        let good = agent_token(Some("m-1")).to_string();
        let parts: Vec<&str> = good.split('.').collect();
        let with = |i: usize, v: &str| {
            let mut p = parts.clone();
            p[i] = v;
            p.join(".").parse::<JoinToken>()
        };
        assert_eq!(with(0, "jjd2").unwrap_err(), TokenError::BadPrefix);
        assert_eq!(with(1, "admin").unwrap_err(), TokenError::BadRole);
        assert_eq!(with(1, "Agent").unwrap_err(), TokenError::BadRole);
        assert_eq!(with(2, "0123456").unwrap_err(), TokenError::BadTokenId);
        assert_eq!(with(2, "0123456G").unwrap_err(), TokenError::BadTokenId);
        for expiry in ["", "+1", "-1", "01", "1e9", "18446744073709551616", " 1"] {
            assert_eq!(with(3, expiry).unwrap_err(), TokenError::BadExpiry, "{expiry:?}");
        }
        assert!(with(3, "18446744073709551615").is_ok());
        assert_eq!(with(4, &"A".repeat(32)).unwrap_err(), TokenError::BadSecretFormat);
        assert_eq!(with(4, &"a".repeat(31)).unwrap_err(), TokenError::BadSecretFormat);
        assert_eq!(with(5, &FP.to_uppercase()).unwrap_err(), TokenError::BadFingerprint);
        assert_eq!(with(5, &FP[1..]).unwrap_err(), TokenError::BadFingerprint);
        assert_eq!(with(6, "").unwrap_err(), TokenError::BadSubject);
        assert_eq!(with(6, "M").unwrap_err(), TokenError::BadSubject);
    }

    #[test]
    fn garbage_parses_to_errors_without_panicking() {
        for s in ["", ".", "......", ".......", "jjd1", "jjd1.agent", "é.é.é.é.é.é", "\0"] {
            assert!(s.parse::<JoinToken>().is_err(), "{s:?}");
        }
        let too_long = "a".repeat(MAX_TOKEN_TEXT_BYTES + 1);
        assert_eq!(
            too_long.parse::<JoinToken>().unwrap_err(),
            TokenError::TooLong { len: 257, max: 256 }
        );
        let eight = format!("{}.extra.more", agent_token(None));
        assert_eq!(eight.parse::<JoinToken>().unwrap_err(), TokenError::WrongPartCount { got: 8 });
        // Deterministic random strings over an alphabet that hits every
        // branch: any string that parses must print back unchanged.
        let alphabet: Vec<char> = "jd1.agentmr0123456789abcdefABC-|+ é\u{0}".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 300) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(t) = s.parse::<JoinToken>() {
                assert_eq!(t.to_string(), s);
            }
        }
    }

    #[test]
    fn cluster_secrets_are_random() {
        let a = new_cluster_secret();
        assert_eq!(a.len(), CLUSTER_SECRET_BYTES);
        assert_ne!(a, new_cluster_secret());
        assert_ne!(a, [0u8; CLUSTER_SECRET_BYTES]);
    }

    #[test]
    fn far_future_expiry_still_formats() {
        assert_eq!(fmt_unix_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_unix_utc(u64::MAX), format!("unix {}", u64::MAX));
    }
}
