//! Handshake admission: which incoming QUIC connection attempts a manager
//! accepts, answers with a stateless Retry (QUIC address validation), or
//! refuses, and the deadline of an accepted handshake.
//!
//! Owns the counts of handshakes in progress (in all, from addresses not
//! yet validated, and per source IP) and the rule over them. Must never
//! let senders that do not answer hold more than
//! [`MAX_UNVALIDATED_HANDSHAKES`] slots (spoofed or half-open first
//! flights get a Retry, which costs the manager no state), never let one
//! source IP hold more than [`MAX_HANDSHAKES_PER_SOURCE`], and never log
//! more than one line per [`REFUSAL_LOG_INTERVAL_MS`] however fast
//! attempts come (each one is still counted).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{DropReason, Metrics};

/// Handshakes in progress at once; a validated attempt past it is refused
/// (an unvalidated one is sent a Retry).
pub const MAX_HANDSHAKES: usize = 64;
/// Handshakes in progress from addresses not validated yet; past it every
/// unvalidated attempt is sent a Retry, and only a client that answers it
/// (a real one: quinn does so by itself) takes a slot.
pub const MAX_UNVALIDATED_HANDSHAKES: usize = 8;
/// Handshakes in progress from one source IP (validated or not); past it a
/// validated attempt from that IP is refused, an unvalidated one retried.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 24;
/// An accepted handshake must complete within this, or its slot is freed.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
/// Connection attempts quinn holds for the accept loop; past it quinn
/// refuses them itself (the loop handles each one at once, so this is only
/// reached when the loop is starved of CPU).
pub const MAX_INCOMING: usize = 1_024;
/// Bytes quinn buffers for one connection attempt beyond its first packet,
/// and for all of them together.
pub const INCOMING_BUFFER_BYTES: u64 = 64 << 10;
pub const INCOMING_BUFFER_TOTAL_BYTES: u64 = 8 << 20;
/// At most one log line about refused or retried attempts per interval.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;

/// What to do with one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Send a stateless Retry: the client must prove its address.
    Retry(DropReason),
    /// Refuse (CONNECTION_REFUSED); the reason is the drop metric's.
    Refuse(DropReason),
}

#[derive(Default)]
struct Counts {
    total: usize,
    unvalidated: usize,
    per_source: BTreeMap<IpAddr, usize>,
}

/// The rule, over the counts before this attempt.
fn verdict(c: &Counts, ip: IpAddr, validated: bool) -> Verdict {
    let from_ip = c.per_source.get(&ip).copied().unwrap_or(0);
    if !validated {
        if c.unvalidated >= MAX_UNVALIDATED_HANDSHAKES {
            return Verdict::Retry(DropReason::HandshakeRetry);
        }
        if c.total >= MAX_HANDSHAKES || from_ip >= MAX_HANDSHAKES_PER_SOURCE {
            return Verdict::Retry(DropReason::HandshakeRetry);
        }
        return Verdict::Accept;
    }
    if c.total >= MAX_HANDSHAKES {
        return Verdict::Refuse(DropReason::HandshakeLimit);
    }
    if from_ip >= MAX_HANDSHAKES_PER_SOURCE {
        return Verdict::Refuse(DropReason::HandshakePerSource);
    }
    Verdict::Accept
}

/// The handshakes in progress, shared by the accept loop and the tasks
/// running each handshake.
pub struct Handshakes {
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
    log: Mutex<RefusalLog>,
}

#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    retried: u64,
    refused: u64,
}

/// A slot held while one handshake runs; dropping it frees the slot.
pub struct Slot {
    owner: Arc<Handshakes>,
    ip: IpAddr,
    validated: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().expect("handshake counts poisoned");
        c.total -= 1;
        if !self.validated {
            c.unvalidated -= 1;
        }
        if let Some(n) = c.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.ip);
            }
        }
    }
}

impl Handshakes {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Handshakes> {
        Arc::new(Handshakes { counts: Mutex::default(), metrics, log: Mutex::default() })
    }

    /// Decides on an attempt from `ip`; on [`Verdict::Accept`] the slot is
    /// taken and returned with it. Retries and refusals are counted (drop
    /// metric by reason) and logged at most once per interval.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, validated: bool) -> (Verdict, Option<Slot>) {
        let v = {
            let mut c = self.counts.lock().expect("handshake counts poisoned");
            let v = verdict(&c, ip, validated);
            if v == Verdict::Accept {
                c.total += 1;
                c.unvalidated += usize::from(!validated);
                *c.per_source.entry(ip).or_insert(0) += 1;
            }
            v
        };
        match v {
            Verdict::Accept => return (v, Some(Slot { owner: self.clone(), ip, validated })),
            Verdict::Retry(reason) | Verdict::Refuse(reason) => self.metrics.count_drop(reason),
        }
        self.note(v, ip);
        (v, None)
    }

    /// Answers `incoming` here and now unless the rule accepts it: a Retry
    /// (when allowed) or a refusal. Returns it with its slot when accepted.
    pub fn screen(self: &Arc<Self>, incoming: quinn::Incoming) -> Option<(quinn::Incoming, Slot)> {
        let (ip, validated) = (incoming.remote_address().ip(), incoming.remote_address_validated());
        match self.admit(ip, validated) {
            (Verdict::Accept, Some(slot)) => return Some((incoming, slot)),
            (Verdict::Retry(_), _) if incoming.may_retry() => {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
            }
            _ => incoming.refuse(),
        }
        None
    }

    /// In progress now: (all, unvalidated).
    pub fn in_progress(&self) -> (usize, usize) {
        let c = self.counts.lock().expect("handshake counts poisoned");
        (c.total, c.unvalidated)
    }

    fn note(&self, v: Verdict, ip: IpAddr) {
        let mut log = self.log.lock().expect("refusal log poisoned");
        match v {
            Verdict::Retry(_) => log.retried += 1,
            _ => log.refused += 1,
        }
        let due =
            log.last.is_none_or(|t| t.elapsed() >= Duration::from_millis(REFUSAL_LOG_INTERVAL_MS));
        if due {
            let (total, unvalidated) = self.in_progress();
            tracing::warn!(retried = log.retried, refused = log.refused, last_source = %ip, in_progress = total,
                unvalidated, "{}", crate::events::HANDSHAKES_PILE_UP);
            *log = RefusalLog { last: Some(Instant::now()), retried: 0, refused: 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn senders_that_do_not_answer_hold_a_few_slots_and_the_rest_are_retried() {
        let h = Handshakes::new(Arc::new(Metrics::new()));
        let mut held = Vec::new();
        for _ in 0..MAX_UNVALIDATED_HANDSHAKES {
            let (v, slot) = h.admit(ip(1), false);
            assert_eq!(v, Verdict::Accept);
            held.push(slot.unwrap());
        }
        for n in 0..100 {
            assert_eq!(h.admit(ip(n), false).0, Verdict::Retry(DropReason::HandshakeRetry));
        }
        // A client that answered the Retry gets in from the flooding IP too.
        let (v, slot) = h.admit(ip(1), true);
        assert_eq!(v, Verdict::Accept);
        drop(slot);
        held.pop();
        let (v, slot) = h.admit(ip(2), false);
        assert_eq!(v, Verdict::Accept, "a freed slot is reused");
        held.push(slot.unwrap());
        assert_eq!(h.in_progress(), (MAX_UNVALIDATED_HANDSHAKES, MAX_UNVALIDATED_HANDSHAKES));
    }

    #[test]
    fn one_source_and_the_whole_table_are_capped_for_validated_attempts() {
        let h = Handshakes::new(Arc::new(Metrics::new()));
        let mut held = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            held.push(h.admit(ip(1), true).1.unwrap());
        }
        assert_eq!(h.admit(ip(1), true).0, Verdict::Refuse(DropReason::HandshakePerSource));
        assert_eq!(h.admit(ip(1), false).0, Verdict::Retry(DropReason::HandshakeRetry));
        let mut n = 2;
        while h.in_progress().0 < MAX_HANDSHAKES {
            held.push(h.admit(ip(n), true).1.unwrap());
            n += 1;
        }
        assert_eq!(h.admit(ip(200), true).0, Verdict::Refuse(DropReason::HandshakeLimit));
        assert_eq!(h.admit(ip(200), false).0, Verdict::Retry(DropReason::HandshakeRetry));
        held.clear();
        assert_eq!(h.in_progress(), (0, 0));
    }
}
