//! The manager's durable state store: recovers the replica from the last
//! snapshot and the log at start, persists operations in the order the node
//! produced them (group commit batches concurrent ones into one fsync), and
//! writes snapshots so the log stays bounded.
//!
//! Owns the record format (bincode `Vec<Stamped>`) and the snapshot policy.
//! Must never report own operations durable before their fsync returned,
//! and never start serving from a log it could not fully read.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::transport::Inbound;
use super::wal::{Wal, WalError, WalWriter};
use crate::core::state::{Actor, Replica, Snapshot, Stamped};

/// Write a snapshot after this many operations since the last one (a
/// record may hold thousands, so records alone would let replay grow).
pub const SNAPSHOT_EVERY_OPS: u64 = 100_000;
/// Foreign-operation records queued but not yet written; past it they are
/// dropped from the log (they stay applied in memory, and anti-entropy
/// brings them back after a restart).
pub const MAX_REMOTE_RECORDS_IN_FLIGHT: u64 = 10_000;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("state record {lsn} does not decode: {reason}; the log is corrupt (remove DIR/state to recover it from the other managers)")]
    Record { lsn: u64, reason: String },
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ crate::core::state::sync::MAX_STATE_MSG_BYTES }>()
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct Recovery {
    pub snapshot_lsn: Option<u64>,
    pub records: usize,
    pub ops: usize,
    pub torn_tail_bytes: Option<u64>,
}

/// The durable store of one manager.
#[derive(Clone)]
pub struct Store {
    writer: WalWriter,
    since_snapshot: Arc<AtomicU64>,
    remote_in_flight: Arc<AtomicU64>,
    /// Foreign-operation records dropped at the in-flight bound.
    pub dropped_remote: Arc<AtomicU64>,
}

impl Store {
    /// Opens `dir/state`, rebuilding the replica for a new actor `me`.
    pub fn open(dir: &Path, me: Actor) -> Result<(Store, Replica, Recovery), StoreError> {
        let (wal, recovered) = Wal::open(dir)?;
        let mut rec = Recovery { torn_tail_bytes: recovered.truncated_torn_tail.as_ref().map(|t| t.bytes_dropped), ..Default::default() };
        let mut replica = match recovered.snapshot {
            Some((lsn, bytes)) => {
                rec.snapshot_lsn = Some(lsn);
                let (snap, _): (Snapshot, usize) = bincode::serde::decode_from_slice(&bytes, cfg())
                    .map_err(|e| StoreError::Record { lsn, reason: e.to_string() })?;
                Replica::from_snapshot(me, snap)
            }
            None => Replica::new(me),
        };
        for (lsn, bytes) in recovered.records {
            let (ops, used): (Vec<Stamped>, usize) =
                bincode::serde::decode_from_slice(&bytes, cfg()).map_err(|e| StoreError::Record { lsn, reason: e.to_string() })?;
            if used != bytes.len() {
                return Err(StoreError::Record { lsn, reason: "trailing bytes".into() });
            }
            rec.records += 1;
            rec.ops += ops.len();
            replica.apply_remote(ops);
        }
        let store = Store {
            writer: WalWriter::spawn(wal),
            since_snapshot: Arc::new(AtomicU64::new(rec.ops as u64)),
            remote_in_flight: Arc::new(AtomicU64::new(0)),
            dropped_remote: Arc::new(AtomicU64::new(0)),
        };
        Ok((store, replica, rec))
    }

    /// Persists `ops`. For own operations, reports `Durable(last seq)` to
    /// the driver once synced. Submission order is the node's order.
    pub fn persist(&self, ops: &[Stamped], own: bool, inbox: &mpsc::Sender<Inbound>) {
        let Some(last) = ops.last().map(|s| s.seq) else { return };
        let bytes = bincode::serde::encode_to_vec(ops, cfg()).expect("operations always encode");
        if !own && self.remote_in_flight.load(Ordering::Relaxed) >= MAX_REMOTE_RECORDS_IN_FLIGHT {
            self.dropped_remote.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let done = self.writer.submit(bytes);
        self.since_snapshot.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let inbox = inbox.clone();
        let in_flight = self.remote_in_flight.clone();
        if !own {
            in_flight.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            let result = done.await;
            if !own {
                in_flight.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            match result {
                Ok(Ok(_)) => {
                    let _ = inbox.send(Inbound::Durable { seq: last }).await;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "state log write failed; writes will not be acknowledged"),
                Err(_) => tracing::error!("state log writer stopped; writes will not be acknowledged"),
            }
        });
    }

    /// Whether a snapshot is due by the operation count.
    pub fn snapshot_due(&self) -> bool {
        self.since_snapshot.load(Ordering::Relaxed) >= SNAPSHOT_EVERY_OPS
    }

    /// Writes `snap` as covering everything submitted so far. The request
    /// is queued now, in order with persists, so it covers exactly those.
    pub fn snapshot(&self, snap: &Snapshot) {
        let bytes = bincode::serde::encode_to_vec(snap, cfg()).expect("snapshots always encode");
        self.since_snapshot.store(0, Ordering::Relaxed);
        let done = self.writer.snapshot_after_queued(bytes);
        tokio::spawn(async move {
            if let Err(e) = done.await {
                tracing::error!(error = %e, "state snapshot failed");
            }
        });
    }
}
