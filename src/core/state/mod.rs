//! Replicated control-plane state: a CRDT replica per manager and the
//! environment model on top of it. Sans-IO like the rest of the core.

pub mod agents;
pub mod controllers;
pub mod doc;
pub mod error;
pub mod ids;
pub mod model;
pub mod oplog;
pub mod replica;
pub mod requests;
pub mod sync;
pub mod tokens;

#[cfg(test)]
mod tests;

pub use model::{Command, CommandError, Outcome, StatusView};
pub use replica::{
    Actor, Change, Delta, Replica, Snapshot, Stamped, VersionVector, merge_highest,
    writer_after_start,
};
pub use requests::{Recorded, RequestId};
pub use sync::{StateMsg, StateSync, SyncOut, WriteResult};
