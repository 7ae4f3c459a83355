//! The dashboard's two credential tables, both in this manager's memory
//! only: single-use login links (what `juju dashboard` hands out) and the
//! session cookies they turn into.
//!
//! Owns minting, checking, expiry and the bounds of both tables. Must
//! never keep a secret itself (only its SHA-256, so a lookup compares
//! digests, never the secret byte by byte), never let a link work twice or
//! after its expiry, and never grow a table past its bound.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long a login link works after it was minted.
pub const LOGIN_LINK_TTL_MS: u64 = 60_000;
/// Login links open at once. At the bound, expired ones are swept; if the
/// table is still full, a new link is refused ("try again in a minute").
pub const MAX_LOGIN_LINKS: usize = 32;
/// How long a session cookie works after its login.
pub const SESSION_TTL_MS: u64 = 8 * 3_600_000;
/// Sessions held at once. At the bound, expired ones are swept, then the
/// session closest to its expiry is dropped for the new one.
pub const MAX_SESSIONS: usize = 64;
/// Random bytes in a link's or a cookie's secret (256 bits).
pub const SECRET_BYTES: usize = 32;

/// Why a login link could not be minted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "{MAX_LOGIN_LINKS} dashboard login links are already open on this manager; try again in a minute"
    )]
    TooManyLinks,
    #[error("no OS randomness for a login secret")]
    NoRandomness,
}

/// Both tables; every method takes `now`, so tests need no clock.
#[derive(Default)]
pub struct Auth {
    /// SHA-256 of a link's secret -> when it stops working.
    links: Mutex<BTreeMap<[u8; 32], Instant>>,
    /// SHA-256 of a cookie's secret -> when it stops working.
    sessions: Mutex<BTreeMap<[u8; 32], Instant>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> Result<String, AuthError> {
    let mut b = [0u8; SECRET_BYTES];
    getrandom::fill(&mut b).map_err(|_| AuthError::NoRandomness)?;
    Ok(hex::encode(b))
}

fn sweep(table: &mut BTreeMap<[u8; 32], Instant>, now: Instant) {
    table.retain(|_, expires| *expires > now);
}

impl Auth {
    /// Mints a login link's secret, valid once within [`LOGIN_LINK_TTL_MS`].
    pub fn mint_link(&self, now: Instant) -> Result<String, AuthError> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.len() >= MAX_LOGIN_LINKS {
            sweep(&mut links, now);
        }
        if links.len() >= MAX_LOGIN_LINKS {
            return Err(AuthError::TooManyLinks);
        }
        let secret = new_secret()?;
        links.insert(digest(&secret), now + Duration::from_millis(LOGIN_LINK_TTL_MS));
        Ok(secret)
    }

    /// Uses a login link: if it is known and unexpired, it is spent and a
    /// session cookie's secret is returned; otherwise `None` (an expired
    /// link is removed too).
    pub fn redeem(&self, link_secret: &str, now: Instant) -> Option<String> {
        let expires =
            self.links.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest(link_secret))?;
        if expires <= now {
            return None;
        }
        let cookie = new_secret().ok()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sweep(&mut sessions, now);
        }
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
                break;
            };
            sessions.remove(&oldest);
            tracing::info!(
                "dashboard session table full ({MAX_SESSIONS}); the session closest to expiry was ended"
            );
        }
        sessions.insert(digest(&cookie), now + Duration::from_millis(SESSION_TTL_MS));
        Some(cookie)
    }

    /// Whether a cookie's secret is a live session.
    pub fn session_ok(&self, cookie_secret: &str, now: Instant) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&digest(cookie_secret)).is_some_and(|e| *e > now)
    }

    /// Links and sessions held (for tests and the metrics of the bound).
    pub fn sizes(&self) -> (usize, usize) {
        let l = self.links.lock().unwrap_or_else(|e| e.into_inner()).len();
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len();
        (l, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once_and_only_before_it_expires() {
        let auth = Auth::default();
        let t0 = Instant::now();
        let link = auth.mint_link(t0).unwrap();
        assert_eq!(link.len(), 2 * SECRET_BYTES, "256 random bits, hex");
        let cookie = auth.redeem(&link, t0).expect("a fresh link logs in");
        assert!(auth.session_ok(&cookie, t0));
        assert_eq!(auth.redeem(&link, t0), None, "reused");
        let late = auth.mint_link(t0).unwrap();
        assert_eq!(
            auth.redeem(&late, t0 + Duration::from_millis(LOGIN_LINK_TTL_MS)),
            None,
            "expired"
        );
        assert!(!auth.session_ok("00", t0), "forged");
        assert!(!auth.session_ok(&link, t0), "a link is not a cookie");
        assert!(
            !auth.session_ok(&cookie, t0 + Duration::from_millis(SESSION_TTL_MS)),
            "session expired"
        );
    }

    #[test]
    fn both_tables_stay_bounded() {
        let auth = Auth::default();
        let t0 = Instant::now();
        let links: Vec<String> =
            (0..MAX_LOGIN_LINKS).map(|_| auth.mint_link(t0).unwrap()).collect();
        assert_eq!(auth.mint_link(t0), Err(AuthError::TooManyLinks));
        let later = t0 + Duration::from_millis(LOGIN_LINK_TTL_MS + 1);
        assert!(auth.mint_link(later).is_ok(), "expired links are swept at the bound");
        assert_eq!(auth.sizes().0, 1);
        drop(links);
        let first = {
            let l = auth.mint_link(later).unwrap();
            auth.redeem(&l, later).unwrap()
        };
        for i in 0..MAX_SESSIONS {
            let at = later + Duration::from_millis(1 + i as u64);
            let l = auth.mint_link(at).unwrap();
            auth.redeem(&l, at).unwrap();
        }
        assert_eq!(auth.sizes().1, MAX_SESSIONS);
        assert!(!auth.session_ok(&first, later), "the oldest session made room");
    }
}
