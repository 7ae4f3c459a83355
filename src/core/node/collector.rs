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

/// Collects what foca asks for during one call.
#[derive(Default)]
pub(super) struct Collector {
    pub sends: Vec<(Identity, Vec<u8>)>,
    pub timers: Vec<(foca::Timer<Identity>, Duration)>,
    pub notes: Vec<foca::OwnedNotification<Identity>>,
    pub highest_sent_incarnation: u16,
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
