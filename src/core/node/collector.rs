//! The foca runtime the membership part hands to foca on every call: it
//! collects what foca asks for (datagrams, timers, notifications) for the
//! membership part to turn into outputs.
//!
//! Owns only those buffers and the highest incarnation foca sent. Must
//! never do anything with what it collects.

use std::time::Duration;

use foca::{Notification, Runtime};

use super::SWIM_TAG;
use crate::core::identity::Identity;

/// Most entries each of the collector's buffers keeps allocated between
/// calls. A burst (a join's exchange applies every member at once) grows
/// a buffer to its size; past this, the buffer is given back once drained,
/// since every node of a large cluster would otherwise hold a burst's worth
/// of memory for ever (a simulator of N nodes holds N of them).
pub(super) const KEPT_BUFFER_ENTRIES: usize = 256;

/// Collects what foca asks for during one call.
#[derive(Default)]
pub(super) struct Collector {
    pub sends: Vec<(Identity, Vec<u8>)>,
    pub timers: Vec<(foca::Timer<Identity>, Duration)>,
    pub notes: Vec<foca::OwnedNotification<Identity>>,
    pub highest_sent_incarnation: u16,
}

impl Collector {
    /// Gives back what a burst grew each drained buffer to, past
    /// [`KEPT_BUFFER_ENTRIES`] (never below what a buffer holds). Called
    /// once the buffers are drained.
    pub fn trim(&mut self) {
        self.sends.shrink_to(KEPT_BUFFER_ENTRIES);
        self.timers.shrink_to(KEPT_BUFFER_ENTRIES);
        self.notes.shrink_to(KEPT_BUFFER_ENTRIES);
    }
}

#[cfg(test)]
impl Collector {
    /// Entries the three buffers have room for.
    pub fn capacity(&self) -> usize {
        self.sends.capacity() + self.timers.capacity() + self.notes.capacity()
    }
}

impl Runtime<Identity> for Collector {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        match notification {
            Notification::DataSent(header) => {
                self.highest_sent_incarnation =
                    self.highest_sent_incarnation.max(header.src_incarnation);
            }
            Notification::DataReceived(_) => {}
            other => self.notes.push(other.to_owned()),
        }
    }

    fn send_to(&mut self, to: Identity, data: &[u8]) {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(SWIM_TAG);
        bytes.extend_from_slice(data);
        self.sends.push((to, bytes));
    }

    fn submit_after(&mut self, event: foca::Timer<Identity>, after: Duration) {
        self.timers.push((event, after));
    }
}
