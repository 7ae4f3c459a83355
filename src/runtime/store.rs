//! The manager's durable state store: recovers the replica from the last
//! snapshot and the log at start, persists operations in the order the node
//! produced them (group commit batches concurrent ones into one fsync), and
//! writes snapshots so the log stays bounded.
//!
//! Reports durability to the driver on its own channel: own batches as
//! `Own(last seq)`, foreign batches as `Remote(highest seq per author)`,
//! and synced snapshots as `Remote(the snapshot's version)`. One reporter
//! task takes the batches in submission order and merges those one fsync
//! made durable into one report of each kind. A batch that
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

use tokio::sync::{mpsc, oneshot};

use super::wal::{self, Expect, LogIdentity, SnapshotBytes, Wal, WalError, WalWriter};
use crate::core::state::{Actor, Recorded, Replica, Snapshot, Stamped, VersionVector};

/// Write a snapshot after this many operations since the last one (a
/// record may hold thousands, so records alone would let replay grow)...
pub const SNAPSHOT_EVERY_OPS: u64 = 100_000;
/// ...and once the log written since the last snapshot is at least that
/// snapshot's size, or this many bytes, whichever is less. A snapshot
/// writes the whole state: taking one before the log it replaces is as
/// large as itself made a small state under heavy writes (about 18 MB of
/// request records and documents, at 20,000 writes a second) snapshot
/// every 2 s on every manager, writing more bytes than the log. The same
/// rule as Redis's log rewrite (at 100 % growth), bounded: replay on
/// restart reads at most this many log bytes past the operation count.
pub const SNAPSHOT_MAX_LOG_BYTES: u64 = 32 << 20;
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

/// Most synced batches merged into one report.
pub const MAX_REPORTS_MERGED: usize = 4_096;

/// A persisted batch awaiting its sync.
#[derive(Debug)]
struct Waiting {
    done: oneshot::Receiver<Result<u64, WalError>>,
    report: StoreReport,
    gaps_before: u64,
}

/// What became durable, for the driver to tell the node.
#[derive(Debug)]
pub enum StoreReport {
    /// Own operations up to this seq.
    Own(u64),
    /// Operations up to this version vector (any author).
    Remote(VersionVector),
}

/// Several durability reports told to the node as one: the highest own
/// operation, and per author the highest foreign one. Every report says
/// what is durable now, and durable stays durable, so the merge of
/// reports taken together is as true as each of them. One fsync wakes
/// one report per write it made durable; told one by one, each made its
/// own push to every other manager (a QUIC stream per write per peer:
/// most of a loaded manager's packets).
#[derive(Debug, Default)]
pub struct MergedReports {
    pub own: Option<u64>,
    pub remote: Option<VersionVector>,
    /// Reports merged in.
    pub count: usize,
}

impl MergedReports {
    pub fn add(&mut self, report: StoreReport) {
        self.count += 1;
        match report {
            StoreReport::Own(seq) => self.own = Some(self.own.map_or(seq, |s| s.max(seq))),
            StoreReport::Remote(vv) => match &mut self.remote {
                Some(into) => crate::core::state::merge_highest(into, vv),
                None => self.remote = Some(vv),
            },
        }
    }
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
    /// Log bytes written since the last snapshot, and that snapshot's
    /// encoded size (0 before the first): see [`SNAPSHOT_MAX_LOG_BYTES`].
    log_bytes_since: Arc<AtomicU64>,
    last_snapshot_bytes: Arc<AtomicU64>,
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
    /// Persisted batches awaiting their sync, in submission order, for the
    /// reporter (see [`Reporter::run`]). Unbounded in count, bounded by
    /// what the node keeps in flight: its pending writes
    /// (`sync::MAX_PENDING_WRITES`) and [`MAX_REMOTE_RECORDS_IN_FLIGHT`].
    waiting: mpsc::UnboundedSender<Waiting>,
    /// The reporter's end, taken when it starts.
    waiting_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Waiting>>>>,
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
        let mut log_bytes = 0u64;
        let mut snapshot_bytes = 0u64;
        let mut replica = match recovered.snapshot {
            Some((lsn, bytes)) => {
                rec.snapshot_lsn = Some(lsn);
                snapshot_bytes = bytes.len() as u64;
                Replica::from_snapshot(me, decode_snapshot_payload(&bytes, lsn)?)
            }
            None => Replica::new(me),
        };
        for (lsn, bytes) in recovered.records {
            let ops = decode_record(&bytes, lsn)?;
            log_bytes += bytes.len() as u64;
            rec.records += 1;
            rec.ops += ops.len();
            replica.apply_remote(ops);
        }
        // The snapshot's and the records' bytes, read whole, are freed now.
        release_freed_memory();
        let (reports, reports_rx) = mpsc::channel(MAX_QUEUED_REPORTS);
        let (waiting, waiting_rx) = mpsc::unbounded_channel();
        let store = Store {
            writer: WalWriter::spawn(wal),
            since_snapshot: Arc::new(AtomicU64::new(rec.ops as u64)),
            log_bytes_since: Arc::new(AtomicU64::new(log_bytes)),
            last_snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
            remote_in_flight: Arc::new(AtomicU64::new(0)),
            dropped_remote: Arc::new(AtomicU64::new(0)),
            gaps: Arc::new(AtomicU64::new(0)),
            gaps_covered: Arc::new(AtomicU64::new(0)),
            snapshot_busy: Arc::new(AtomicBool::new(false)),
            snapshot_wanted: Arc::new(AtomicBool::new(false)),
            reports,
            waiting,
            waiting_rx: Arc::new(Mutex::new(Some(waiting_rx))),
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
        self.log_bytes_since.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let done = self.writer.submit(bytes);
        self.since_snapshot.fetch_add(ops.len() as u64, Ordering::Relaxed);
        if !own {
            self.remote_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        self.start_reporter();
        // Read now, in submission order: a gap from an earlier batch holds this report.
        let gaps_before = self.gaps.load(Ordering::Acquire);
        // Fails only once the reporter is gone (the runtime shutting down).
        let _ = self.waiting.send(Waiting { done, report, gaps_before });
    }

    /// Spawns the reporter on the first persist (in the runtime, which
    /// [`Store::open`] may not run in). It holds no handle of the WAL: once
    /// every `Store` handle is gone its queue closes and it ends, and so
    /// does the WAL's thread.
    fn start_reporter(&self) {
        let Ok(mut slot) = self.waiting_rx.lock() else { return };
        if let Some(queue) = slot.take() {
            let reporter = Reporter {
                reports: self.reports.clone(),
                gaps: self.gaps.clone(),
                gaps_covered: self.gaps_covered.clone(),
                remote_in_flight: self.remote_in_flight.clone(),
            };
            tokio::spawn(reporter.run(queue));
        }
    }

    /// Whether a snapshot is due: by the operations and log bytes since the
    /// last one (both bounds, see [`SNAPSHOT_MAX_LOG_BYTES`]), an uncovered
    /// gap, or one asked for while another was written.
    pub fn snapshot_due(&self) -> bool {
        let log = self.log_bytes_since.load(Ordering::Relaxed);
        let last = self.last_snapshot_bytes.load(Ordering::Relaxed);
        (self.since_snapshot.load(Ordering::Relaxed) >= SNAPSHOT_EVERY_OPS
            && log >= last.min(SNAPSHOT_MAX_LOG_BYTES))
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
        self.log_bytes_since.store(0, Ordering::Relaxed);
        let vv = snap.vv.clone();
        let gaps = self.gaps.load(Ordering::Acquire);
        let last_bytes = self.last_snapshot_bytes.clone();
        // Unbounded here (it cannot fail); the WAL refuses one over MAX_SNAPSHOT_BYTES.
        let encode = move || {
            let bytes = bincode::serde::encode_to_vec(&snap, bincode::config::standard())
                .map_err(|e| e.to_string())?;
            last_bytes.store(bytes.len() as u64, Ordering::Relaxed);
            Ok(bytes)
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

/// What the reporter task needs of the store (not the WAL's handle).
struct Reporter {
    reports: mpsc::Sender<StoreReport>,
    gaps: Arc<AtomicU64>,
    gaps_covered: Arc<AtomicU64>,
    remote_in_flight: Arc<AtomicU64>,
}

impl Reporter {
    /// Reports persisted batches in submission order: waits for the oldest
    /// batch's sync, then takes every batch behind it that is already
    /// synced (one fsync makes many durable at once), and sends them as one
    /// report of each kind ([`MergedReports`]).
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Waiting>) {
        let mut next: Option<Waiting> = None;
        loop {
            let first = match next.take() {
                Some(w) => w,
                None => match queue.recv().await {
                    Some(w) => w,
                    None => return,
                },
            };
            let mut merged = MergedReports::default();
            let Waiting { done, report, gaps_before } = first;
            self.settle(done.await.map_err(|_| ()), report, gaps_before, &mut merged);
            while merged.count < MAX_REPORTS_MERGED {
                let Ok(mut w) = queue.try_recv() else { break };
                match w.done.try_recv() {
                    Ok(result) => self.settle(Ok(result), w.report, w.gaps_before, &mut merged),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        next = Some(w);
                        break;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {
                        self.settle(Err(()), w.report, w.gaps_before, &mut merged)
                    }
                }
            }
            if let Some(seq) = merged.own {
                let _ = self.reports.send(StoreReport::Own(seq)).await;
            }
            if let Some(vv) = merged.remote {
                let _ = self.reports.send(StoreReport::Remote(vv)).await;
            }
        }
    }

    /// One batch's sync result: merged into `into` if it synced and no gap
    /// before it is uncovered (the snapshot that covers the gap reports it);
    /// a failed batch is a gap.
    fn settle(
        &self,
        result: Result<Result<u64, WalError>, ()>,
        report: StoreReport,
        gaps_before: u64,
        into: &mut MergedReports,
    ) {
        if matches!(report, StoreReport::Remote(_)) {
            self.remote_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(Ok(_)) => {
                if gaps_before <= self.gaps_covered.load(Ordering::Acquire) {
                    into.add(report);
                }
            }
            Ok(Err(e)) => {
                self.gaps.fetch_add(1, Ordering::AcqRel);
                tracing::error!(error = %e, "state log write failed; those operations are not durable here until a snapshot is");
            }
            Err(_) => {
                self.gaps.fetch_add(1, Ordering::AcqRel);
                tracing::error!("state log writer stopped; writes will not be acknowledged");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::Change;

    fn open(dir: &Path, me: Actor) -> (Store, Replica) {
        let id = LogIdentity { cluster: "ab".repeat(32), node: format!("{:016x}", me.node) };
        let (store, replica, _) = Store::open(dir, me, &id, Expect::CreateOrUpgrade).unwrap();
        (store, replica)
    }

    /// A reporter, its queue, its reports, and the senders of the batches
    /// not yet synced.
    type Fed = (
        Reporter,
        mpsc::UnboundedReceiver<Waiting>,
        mpsc::Receiver<StoreReport>,
        Vec<oneshot::Sender<Result<u64, WalError>>>,
    );

    /// A reporter fed `batches` own batches, `synced` of them already
    /// synced and the rest still waiting, then every remote batch of
    /// `remote` (synced); its queue closes after them.
    fn reporter_with(batches: u64, synced: u64, remote: &[(Actor, u64)]) -> Fed {
        let (reports, reports_rx) = mpsc::channel(MAX_QUEUED_REPORTS);
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let mut pending = Vec::new();
        let mut push = |report, sync_now: bool| {
            let (tx, done) = oneshot::channel();
            if sync_now {
                tx.send(Ok(1)).unwrap();
            } else {
                pending.push(tx);
            }
            queue.send(Waiting { done, report, gaps_before: 0 }).unwrap();
        };
        for seq in 1..=batches {
            push(StoreReport::Own(seq), seq <= synced);
        }
        for &(actor, seq) in remote {
            push(StoreReport::Remote([(actor, seq)].into_iter().collect()), true);
        }
        let reporter = Reporter {
            reports,
            gaps: Arc::new(AtomicU64::new(0)),
            gaps_covered: Arc::new(AtomicU64::new(0)),
            remote_in_flight: Arc::new(AtomicU64::new(remote.len() as u64)),
        };
        (reporter, queue_rx, reports_rx, pending)
    }

    /// Batches that one fsync made durable come back as one report of each
    /// kind, the highest of what they cover: before, every batch came back
    /// as its own report, and each made its own push to every other
    /// manager. A batch not yet synced ends the merge; the batches behind
    /// it are reported once it is, never before.
    #[tokio::test]
    async fn batches_synced_together_are_reported_together() {
        let other = Actor { node: 8, generation: 3 };
        let remote: Vec<(Actor, u64)> = (1..=5).map(|seq| (other, seq)).collect();
        let (reporter, queue, mut reports, pending) = reporter_with(200, 200, &remote);
        assert!(pending.is_empty());
        reporter.run(queue).await;
        assert!(matches!(reports.recv().await, Some(StoreReport::Own(200))));
        match reports.recv().await {
            Some(StoreReport::Remote(vv)) => assert_eq!(vv.get(&other), Some(&5)),
            r => panic!("expected one remote report, got {r:?}"),
        }
        assert!(
            reports.try_recv().is_err(),
            "200 synced batches gave more than one report of each kind"
        );

        let (reporter, queue, mut reports, mut pending) = reporter_with(200, 120, &[]);
        let run = tokio::spawn(reporter.run(queue));
        assert!(matches!(reports.recv().await, Some(StoreReport::Own(120))));
        assert!(reports.try_recv().is_err(), "reported past a batch not yet synced");
        for tx in pending.drain(..) {
            tx.send(Ok(2)).unwrap();
        }
        run.await.unwrap();
        let mut last = 0;
        while let Ok(StoreReport::Own(seq)) = reports.try_recv() {
            assert!(seq > last, "own reports only grow: {seq} after {last}");
            last = seq;
        }
        assert_eq!(last, 200);
    }

    /// Waits for the next `Remote` report (what a written snapshot sends
    /// when nothing foreign is persisted).
    async fn snapshot_written(reports: &mut mpsc::Receiver<StoreReport>) {
        loop {
            let wait = std::time::Duration::from_secs(30);
            match tokio::time::timeout(wait, reports.recv()).await.expect("reported within 30 s") {
                Some(StoreReport::Remote(_)) => return,
                Some(StoreReport::Own(_)) => {}
                None => panic!("the reporter ended"),
            }
        }
    }

    /// Past the operation count, a snapshot still waits until the log
    /// written since the last one is as large as it (a large state under
    /// many small writes snapshotted far more bytes than it logged), also
    /// after a restart; then it is due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_waits_for_as_many_log_bytes_as_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let me = Actor { node: 7, generation: 1 };
        let (store, mut replica) = open(dir.path(), me);
        let mut reports = store.take_reports().unwrap();
        let big = "x".repeat(4_096);
        for i in 0..2_000 {
            store.persist(
                &replica.write(&[Change::Set { key: format!("b{i}"), value: big.clone() }]),
                true,
            );
        }
        store.snapshot(|| Some(replica.snapshot_all_compacting()));
        snapshot_written(&mut reports).await;
        let snapshot_bytes = store.last_snapshot_bytes.load(Ordering::Relaxed);
        assert!(snapshot_bytes > 8_000_000, "{snapshot_bytes} bytes");
        let mut ops = 0;
        let mut batch = 0;
        while ops < SNAPSHOT_EVERY_OPS {
            let changes: Vec<Change> = (0..1_000)
                .map(|i| Change::Set { key: format!("s{i}"), value: format!("{batch}") })
                .collect();
            let written = replica.write(&changes);
            ops += written.len() as u64;
            store.persist(&written, true);
            batch += 1;
        }
        let logged = store.log_bytes_since.load(Ordering::Relaxed);
        assert!(
            logged < snapshot_bytes,
            "the test needs a log smaller than the snapshot: {logged}"
        );
        assert!(
            !store.snapshot_due(),
            "due at {ops} ops but only {logged} of {snapshot_bytes} bytes"
        );
        drop(store);
        drop(reports);
        let (store, mut replica) = open(dir.path(), Actor { node: 7, generation: 2 });
        assert_eq!(store.last_snapshot_bytes.load(Ordering::Relaxed), snapshot_bytes);
        assert!(!store.snapshot_due(), "after a restart the same log is not due either");
        while store.log_bytes_since.load(Ordering::Relaxed) < snapshot_bytes {
            store.persist(
                &replica.write(&[Change::Set { key: "b0".into(), value: big.clone() }]),
                true,
            );
        }
        assert!(store.snapshot_due(), "due once the log is as large as the snapshot");
    }

    /// The reporter ends with the last `Store` handle (it holds none of
    /// its own), so the WAL's thread ends too and the log can be opened
    /// again; the report channel closes to say so.
    #[tokio::test]
    async fn the_reporter_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let me = Actor { node: 7, generation: 1 };
        let (store, mut replica) = open(dir.path(), me);
        let mut reports = store.take_reports().unwrap();
        let ops = replica.write(&[Change::Set { key: "k".into(), value: "v".into() }]);
        store.persist(&ops, true);
        let wait = std::time::Duration::from_secs(30);
        let first = tokio::time::timeout(wait, reports.recv()).await.expect("reported");
        assert!(matches!(first, Some(StoreReport::Own(_))), "{first:?}");
        drop(store);
        let end = tokio::time::timeout(wait, reports.recv()).await;
        assert!(matches!(end, Ok(None)), "the reporter outlived its store: {end:?}");
    }

    #[test]
    fn merged_reports_keep_the_highest_of_each() {
        let (a, b) = (Actor { node: 1, generation: 1 }, Actor { node: 2, generation: 1 });
        let mut m = MergedReports::default();
        m.add(StoreReport::Own(3));
        m.add(StoreReport::Remote([(a, 4), (b, 1)].into_iter().collect()));
        m.add(StoreReport::Own(2));
        m.add(StoreReport::Remote([(a, 2), (b, 6)].into_iter().collect()));
        assert_eq!(m.own, Some(3));
        assert_eq!(m.remote, Some([(a, 4), (b, 6)].into_iter().collect()));
        assert_eq!(m.count, 4);
    }
}
