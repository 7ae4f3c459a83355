//! The manager's durable state store: recovers the replica from the last
//! snapshot and the log at start, persists operations in the order the node
//! produced them (group commit batches concurrent ones into one fsync), and
//! writes snapshots so the log stays bounded.
//!
//! Reports durability to the driver on its own channel: own batches as
//! `Own(last seq)`, foreign batches as `Remote(highest seq per author)`,
//! and synced snapshots as `Remote(the snapshot's version)`. A batch that
//! could not be queued (a bound) or written leaves a gap: no report claims
//! anything past it until a snapshot queued after the gap is synced (one is
//! forced at the next persistence tick).
//!
//! Owns the record format (bincode `Vec<Stamped>`) and the snapshot policy.
//! Must never report operations durable before their fsync returned, and
//! never start serving from a log it could not fully read.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::wal::{self, Expect, LogIdentity, SnapshotBytes, Wal, WalError, WalWriter};
use crate::core::state::{Actor, Recorded, Replica, Snapshot, Stamped, VersionVector};

/// Write a snapshot after this many operations since the last one (a
/// record may hold thousands, so records alone would let replay grow).
pub const SNAPSHOT_EVERY_OPS: u64 = 100_000;
/// Foreign-operation records queued but not yet written; past it they are
/// dropped from the log (they stay applied in memory, and anti-entropy
/// brings them back after a restart).
pub const MAX_REMOTE_RECORDS_IN_FLIGHT: u64 = 10_000;
/// Durability reports queued for the driver; at the bound a report's task
/// waits (reports are never dropped: a lost one would stall acknowledgements).
pub const MAX_QUEUED_REPORTS: usize = 4_096;

/// Gives the heap's free pages back to the kernel once a snapshot is
/// written: its copy of the whole state and its encoding (together about
/// the state's own size again) were just freed, and glibc keeps freed
/// pages mapped, so the resident size would otherwise stay at the
/// snapshot's peak for the rest of the process's life.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only hands free pages back; it touches no live
    // allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What became durable, for the driver to tell the node.
#[derive(Debug)]
pub enum StoreReport {
    /// Own operations up to this seq.
    Own(u64),
    /// Operations up to this version vector (any author).
    Remote(VersionVector),
}

/// The snapshot format before request records were added (read only).
#[derive(serde::Deserialize)]
struct SnapshotV1 {
    doc: crate::core::state::replica::Doc,
    vv: VersionVector,
}

/// Decodes a whole snapshot file (`DIR/state/snapshot-<lsn>.bin`) owned
/// by `expected` and named for `lsn`: the WAL's header and checksum, then
/// the payload. Pure, for the fuzz harness.
pub fn decode_snapshot(
    file: &[u8],
    expected: &LogIdentity,
    lsn: u64,
) -> Result<Snapshot, StoreError> {
    let payload = wal::decode_snapshot(file, expected, lsn)
        .map_err(|e| StoreError::Record { lsn, reason: format!("snapshot file: {e:?}") })?;
    decode_snapshot_payload(payload, lsn)
}

/// Decodes one log record's payload (a batch of operations). Pure.
pub fn decode_record(bytes: &[u8], lsn: u64) -> Result<Vec<Stamped>, StoreError> {
    crate::core::codec::decode_exact_bounded(bytes, MAX_RECORD_DECODE_BYTES)
        .map_err(|e| StoreError::Record { lsn, reason: e.to_string() })
}

/// Decodes a snapshot's payload, in the current format or the one before it.
pub fn decode_snapshot_payload(bytes: &[u8], lsn: u64) -> Result<Snapshot, StoreError> {
    use crate::core::codec::decode_exact_bounded;
    if let Ok(snap) = decode_exact_bounded::<Snapshot>(bytes, super::wal::MAX_SNAPSHOT_BYTES) {
        return Ok(snap);
    }
    let old: SnapshotV1 = decode_exact_bounded(bytes, super::wal::MAX_SNAPSHOT_BYTES)
        .map_err(|e| StoreError::Record { lsn, reason: format!("snapshot: {e}") })?;
    Ok(Snapshot { doc: old.doc, vv: old.vv, requests: Vec::<(u64, Recorded)>::new() })
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(
        "state record {lsn} does not decode: {reason}; the log is corrupt (remove DIR/state to recover it from the other managers)"
    )]
    Record { lsn: u64, reason: String },
}

/// A record's decode bound (bincode counts in-memory sizes: a clock entry
/// of about 12 bytes on disk claims 24): four times the largest record ever
/// written (`wal::MAX_RECORD_BYTES`, 4 MiB), so a legitimate record always
/// decodes and a forged length prefix inside one cannot make its decode
/// allocate more than 16 MiB (it was 256 MiB, the state-message bound).
pub const MAX_RECORD_DECODE_BYTES: usize = 4 * super::wal::MAX_RECORD_BYTES;

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_DECODE_BYTES>()
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
    /// Batches not made durable (dropped or failed), counted; and how many
    /// of them a synced snapshot has since covered. Reports wait while
    /// the first is ahead.
    gaps: Arc<AtomicU64>,
    gaps_covered: Arc<AtomicU64>,
    /// One snapshot at a time: each holds a copy of the whole state until
    /// it is written. A snapshot asked for meanwhile is `wanted`, and taken
    /// at the first persistence tick after the current one is done.
    snapshot_busy: Arc<AtomicBool>,
    snapshot_wanted: Arc<AtomicBool>,
    reports: mpsc::Sender<StoreReport>,
    /// The receiving end, taken once by the driver.
    reports_rx: Arc<Mutex<Option<mpsc::Receiver<StoreReport>>>>,
}

impl Store {
    /// Opens `dir/state`, owned by `id`, rebuilding the replica for a new
    /// actor `me`; `expect` says whether `node.json` records a log.
    pub fn open(
        dir: &Path,
        me: Actor,
        id: &LogIdentity,
        expect: Expect,
    ) -> Result<(Store, Replica, Recovery), StoreError> {
        let (wal, recovered) = Wal::open(dir, id, expect)?;
        let mut rec = Recovery {
            torn_tail_bytes: recovered.truncated_torn_tail.as_ref().map(|t| t.bytes_dropped),
            ..Default::default()
        };
        let mut replica = match recovered.snapshot {
            Some((lsn, bytes)) => {
                rec.snapshot_lsn = Some(lsn);
                Replica::from_snapshot(me, decode_snapshot_payload(&bytes, lsn)?)
            }
            None => Replica::new(me),
        };
        for (lsn, bytes) in recovered.records {
            let ops = decode_record(&bytes, lsn)?;
            rec.records += 1;
            rec.ops += ops.len();
            replica.apply_remote(ops);
        }
        // The snapshot's and the records' bytes, read whole, are freed now.
        release_freed_memory();
        let (reports, reports_rx) = mpsc::channel(MAX_QUEUED_REPORTS);
        let store = Store {
            writer: WalWriter::spawn(wal),
            since_snapshot: Arc::new(AtomicU64::new(rec.ops as u64)),
            remote_in_flight: Arc::new(AtomicU64::new(0)),
            dropped_remote: Arc::new(AtomicU64::new(0)),
            gaps: Arc::new(AtomicU64::new(0)),
            gaps_covered: Arc::new(AtomicU64::new(0)),
            snapshot_busy: Arc::new(AtomicBool::new(false)),
            snapshot_wanted: Arc::new(AtomicBool::new(false)),
            reports,
            reports_rx: Arc::new(Mutex::new(Some(reports_rx))),
        };
        Ok((store, replica, rec))
    }

    /// The durability reports; `None` after the first call.
    pub fn take_reports(&self) -> Option<mpsc::Receiver<StoreReport>> {
        self.reports_rx.lock().ok()?.take()
    }

    fn gap(&self) {
        self.gaps.fetch_add(1, Ordering::AcqRel);
    }

    /// Persists `ops` (submission order is the node's order) and reports
    /// them durable once synced: `Own(last seq)` or `Remote(per author)`.
    pub fn persist(&self, ops: &[Stamped], own: bool) {
        let Some(last) = ops.last().map(|s| s.seq) else { return };
        if !own && self.remote_in_flight.load(Ordering::Relaxed) >= MAX_REMOTE_RECORDS_IN_FLIGHT {
            self.dropped_remote.fetch_add(1, Ordering::Relaxed);
            self.gap();
            return;
        }
        let report = if own {
            StoreReport::Own(last)
        } else {
            let mut vv = VersionVector::new();
            for s in ops {
                vv.insert(s.actor, s.seq);
            }
            StoreReport::Remote(vv)
        };
        let bytes = bincode::serde::encode_to_vec(ops, cfg()).expect("operations always encode");
        let done = self.writer.submit(bytes);
        self.since_snapshot.fetch_add(ops.len() as u64, Ordering::Relaxed);
        let in_flight = self.remote_in_flight.clone();
        if !own {
            in_flight.fetch_add(1, Ordering::Relaxed);
        }
        let this = self.clone();
        // Read now, in submission order: a gap from an earlier batch holds this report.
        let gaps_before = self.gaps.load(Ordering::Acquire);
        tokio::spawn(async move {
            let result = done.await;
            if !own {
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            match result {
                Ok(Ok(_)) => this.report(report, gaps_before).await,
                Ok(Err(e)) => {
                    this.gap();
                    tracing::error!(error = %e, own, "state log write failed; those operations are not durable here until a snapshot is");
                }
                Err(_) => {
                    this.gap();
                    tracing::error!("state log writer stopped; writes will not be acknowledged");
                }
            }
        });
    }

    /// Sends `report` unless a gap before it is not yet covered.
    async fn report(&self, report: StoreReport, gaps_before: u64) {
        if gaps_before > self.gaps_covered.load(Ordering::Acquire) {
            return; // the snapshot that covers the gap will report it
        }
        let _ = self.reports.send(report).await;
    }

    /// Whether a snapshot is due by the operation count.
    pub fn snapshot_due(&self) -> bool {
        self.since_snapshot.load(Ordering::Relaxed) >= SNAPSHOT_EVERY_OPS
            || self.gaps.load(Ordering::Acquire) > self.gaps_covered.load(Ordering::Acquire)
            || self.snapshot_wanted.load(Ordering::Acquire)
    }

    /// Writes `snap` as covering everything submitted so far. The request
    /// is queued now, in order with persists, so it covers exactly those.
    /// Once synced it reports `Remote(snap.vv)`: everything in it is
    /// durable, and so are the gaps before it. The encoding (tens of MB at
    /// 100,000 entities) happens on the WAL's snapshot thread, not here.
    ///
    /// `capture` runs now (in the caller's synchronous step) unless a
    /// snapshot is still being written; then this one is only noted as
    /// wanted (see [`Store::snapshot_due`]). A capture of `None` (no state
    /// to write) writes nothing.
    pub fn snapshot(&self, capture: impl FnOnce() -> Option<Snapshot>) {
        if self.snapshot_busy.swap(true, Ordering::AcqRel) {
            self.snapshot_wanted.store(true, Ordering::Release);
            return;
        }
        self.snapshot_wanted.store(false, Ordering::Release);
        let Some(snap) = capture() else {
            self.snapshot_busy.store(false, Ordering::Release);
            return;
        };
        self.since_snapshot.store(0, Ordering::Relaxed);
        let vv = snap.vv.clone();
        let gaps = self.gaps.load(Ordering::Acquire);
        // Unbounded here (it cannot fail); the WAL refuses one over MAX_SNAPSHOT_BYTES.
        let encode = move || {
            bincode::serde::encode_to_vec(&snap, bincode::config::standard())
                .map_err(|e| e.to_string())
        };
        let done = self.writer.snapshot_after_queued_with(SnapshotBytes::Later(Box::new(encode)));
        let this = self.clone();
        tokio::spawn(async move {
            let result = done.await;
            this.snapshot_busy.store(false, Ordering::Release);
            match result {
                Ok(()) => {
                    release_freed_memory();
                    tracing::info!("state snapshot written");
                    this.gaps_covered.fetch_max(gaps, Ordering::AcqRel);
                    let _ = this.reports.send(StoreReport::Remote(vv)).await;
                }
                Err(e) => tracing::error!(error = %e, "state snapshot failed"),
            }
        });
    }
}
