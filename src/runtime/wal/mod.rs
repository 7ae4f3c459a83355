//! A durable, append-only, checksummed write-ahead log with snapshots and
//! group commit, holding a manager's replicated control-plane state.
//!
//! Owns `DIR/state/` and its on-disk format. It stores opaque bytes: records
//! (bincode CRDT operations, at most [`MAX_RECORD_BYTES`] each) and
//! snapshots (the whole state, at most [`MAX_SNAPSHOT_BYTES`]). It knows
//! nothing about what the bytes mean.
//!
//! Architecture Invariant: it must never serve state it cannot vouch for.
//! Corruption is an error ([`WalError::Corrupt`]) that stops the node, never
//! a silent repair; input read from disk never panics and never causes an
//! allocation larger than the file that holds it. It must never acknowledge
//! a record ([`WalWriter::append`]) before that record is fsync'd. It does
//! not lock the directory: the data dir's lock (`datadir.rs`) guarantees one
//! process per directory.
//!
//! # Layout
//!
//! Every file starts with a header ([`format::encode_header`]): an 8-byte
//! magic, the format version ([`LOG_FORMAT_VERSION`]), the owner
//! ([`LogIdentity`]: the cluster's CA fingerprint and this node's id, from
//! `node.json`), the file's LSN, and a crc32 of the header. A file whose
//! header names another cluster or node is refused ([`WalError::Foreign`]),
//! one of another format too ([`WalError::Version`]). Files are created
//! mode 0600 and `DIR/state` mode 0700.
//!
//! - `snapshot-<lsn, 20 digits>.bin`: `[header, lsn covered][u64 LE payload
//!   length][u32 LE crc32 of payload][payload]`. Written to `<name>.tmp`,
//!   fsync'd, renamed, directory fsync'd.
//! - `log-<first lsn, 20 digits>.wal`: `[header, first lsn]` then records,
//!   each `[u32 LE payload length][u32 LE crc32 of the 4 length bytes][u32
//!   LE crc32 of the 4 length bytes and the payload][payload]`. A record's
//!   LSN is its 1-based sequence number across the whole log: the segment's
//!   first LSN plus its index in the segment. A segment is created whole
//!   (header written to a temp file, fsync'd, renamed), and fsync'd before
//!   the next one is created, so only the last segment can hold unsynced
//!   bytes, and never a short header.
//!
//! # Recovery rules
//!
//! 1. A missing `DIR/state` is a fresh, empty log only when the caller says
//!    none is expected ([`Expect::CreateOrUpgrade`]); with [`Expect::Present`]
//!    (`node.json` records that this node has a log) a missing state dir, a
//!    state dir without segments, or an empty segment is refused
//!    ([`WalError::Missing`] or `Corrupt`). Leftover `*.tmp` files are
//!    unfinished snapshots or segments and are deleted.
//! 2. With [`Expect::CreateOrUpgrade`], files without a header (format 1,
//!    written by an older jujud) are upgraded first: each is decoded whole
//!    (every record valid; no torn tail is accepted) and rewritten with a
//!    header through a temp file and a rename. One that does not decode is
//!    `Corrupt` and nothing is rewritten from it.
//! 3. The newest snapshot is used. A bad header, a length that disagrees
//!    with the file size or exceeds [`MAX_SNAPSHOT_BYTES`], an LSN that
//!    disagrees with the file name, or a bad checksum is `Corrupt`.
//! 4. Segments must chain without gaps: the first must start at or before
//!    `snapshot lsn + 1` (at 1 without a snapshot), each next one exactly
//!    after the previous one's last record, and the log must reach the
//!    snapshot's LSN. Anything else is `Corrupt`.
//! 5. A torn tail is a crash during an append that was never acknowledged
//!    (acknowledgement comes only after fsync). Only the last segment can
//!    have one, and it is exactly one of:
//!    - fewer than 12 bytes (a record header cut short) at the end of the
//!      file;
//!    - a record whose length checksum holds and whose payload runs past
//!      the end of the file (the length is vouched for by its own checksum,
//!      so the write was cut);
//!    - a record whose length checksum fails, with only zero bytes from its
//!      start to the end of the file (a zeroed block);
//!    - a record whose payload checksum fails, with only zero bytes (or
//!      none) after it.
//!
//!    It is truncated, reported in [`Recovered::truncated_torn_tail`], and
//!    recovery goes on.
//! 6. Everything else is `Corrupt`, naming the file and byte offset: a bad
//!    record in a non-last segment, a length checksum failure with any
//!    non-zero byte after it (a flipped length byte anywhere, the first
//!    record included), a length above [`MAX_RECORD_BYTES`], a bad record
//!    followed by any non-zero byte. The node stops, and no file is
//!    truncated or rewritten. The operator moves `DIR/state` aside, creates
//!    `DIR/restore-from-peers` and restarts, so the node restores its state
//!    from a peer. Known limit of the framing: a crash in the middle of a
//!    group commit on a filesystem that persists pages out of order can
//!    leave a hole followed by valid records; that is reported as
//!    `Corrupt` (the safe side), and bit rot confined to the payload of the
//!    very last record is indistinguishable from a torn write and drops it.
//!
//! # Group commit
//!
//! [`WalWriter`] owns the [`Wal`] on a dedicated thread. It takes whatever
//! is queued (up to [`GROUP_COMMIT_MAX_BATCH_RECORDS`] records or
//! [`GROUP_COMMIT_MAX_BATCH_BYTES`] bytes), writes it, fsyncs once, then
//! completes every waiter of the batch. The queue holds at most
//! [`WRITER_QUEUE_CAPACITY_REQUESTS`] requests and [`WRITER_QUEUE_MAX_BYTES`]
//! record bytes: async calls wait for room (backpressure); the synchronous
//! [`WalWriter::submit`] and [`WalWriter::snapshot_after_queued`] are
//! refused with [`WalError::Overloaded`]. After an I/O error the log is
//! failed for good: every pending and future request gets the error, and
//! the node must stop serving writes and restart.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

pub mod format;
mod recovery;
#[cfg(test)]
mod tests;
mod writer;

use format::record_header;
pub use format::{
    DecodeError, LOG_FORMAT_VERSION, LogIdentity, LogScan, RECORD_HEADER_BYTES, decode_log,
    decode_snapshot,
};
use recovery::*;
pub use writer::{SnapshotBytes, WalStats, WalWriter};

/// Largest record payload. Larger appends are refused, and a header that
/// claims more is never allocated for.
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// Largest snapshot payload.
pub const MAX_SNAPSHOT_BYTES: usize = 512 << 20;
/// A segment at or above this size is closed (fsync'd) and a new one is
/// started at the next append.
pub const SEGMENT_ROLL_BYTES: u64 = 64 << 20;
/// Largest segment file recovery will read; a bigger one was not written by
/// this WAL and is `Corrupt`.
pub const MAX_SEGMENT_FILE_BYTES: u64 = 1 << 30;
/// Most records the writer thread puts under one fsync.
pub const GROUP_COMMIT_MAX_BATCH_RECORDS: usize = 4096;
/// Most payload bytes the writer thread puts under one fsync (a batch is
/// closed once it reaches this; one record may take it over).
pub const GROUP_COMMIT_MAX_BATCH_BYTES: usize = 16 << 20;
/// Requests queued to the writer thread; at the bound, callers wait.
pub const WRITER_QUEUE_CAPACITY_REQUESTS: usize = 65_536;
/// Record bytes (header included) queued to the writer thread; at the
/// bound, callers wait. Snapshots are not counted: their bytes are the
/// caller's, and there is one at a time.
pub const WRITER_QUEUE_MAX_BYTES: usize = 64 << 20;

/// Mode of every file of the log (owner read/write only).
pub const FILE_MODE: u32 = 0o600;
/// Mode of `DIR/state` (owner only).
pub const DIR_MODE: u32 = 0o700;
/// The file whose presence tells a node that its local state is gone on
/// purpose and is to be restored from its peers (see [`WalError`]).
pub const RESTORE_MARKER: &str = "restore-from-peers";
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const STATE_DIR: &str = "state";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".bin";
const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".tmp";
const LSN_DIGITS: usize = 20;

const _: () = assert!(WRITER_QUEUE_MAX_BYTES >= MAX_RECORD_BYTES + RECORD_HEADER_BYTES);
const _: () = assert!(MAX_RECORD_BYTES <= u32::MAX as usize);

/// What [`Wal::open`] may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `node.json` records that this node has a log: it must be there, and
    /// every file must have a header.
    Present,
    /// No log recorded yet (a new node, a data dir from before headers, or
    /// a restore from peers): a missing log is created, and files without
    /// a header are upgraded.
    CreateOrUpgrade,
}

/// What went wrong with the log. Every variant names what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// The operating system refused an operation; the file is named.
    #[error("WAL: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// The state on disk is damaged; it is never served.
    #[error(
        "WAL file {file} is corrupt at byte offset {offset}: {reason}. This node's \
         replicated state cannot be trusted and will not be served, and the file was left \
         untouched: {RECOVERY}",
        RECOVERY = recovery_steps(state_dir_of(.file))
    )]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    /// A file of another cluster or node was found in this node's log.
    #[error(
        "WAL file {file} belongs to cluster {found_cluster} node {found_node}, but this node is \
         node {node} of cluster {cluster}: another node's state was copied here and will not be \
         served. Put this node's own state back, or: {RECOVERY}",
        found_cluster = .owners.found.cluster,
        found_node = .owners.found.node,
        cluster = .owners.ours.cluster,
        node = .owners.ours.node,
        RECOVERY = recovery_steps(state_dir_of(.file))
    )]
    Foreign { file: PathBuf, owners: Box<Owners> },
    /// A file in a format this jujud does not know (a newer one).
    #[error(
        "WAL file {file} has format version {found}; this jujud reads version {LOG_FORMAT_VERSION}: \
         run the jujud that wrote it"
    )]
    Version { file: PathBuf, found: u32 },
    /// `node.json` says this node has a log, but it is gone.
    #[error(
        "WAL: {what}, but node.json records that this node has a state log: it was deleted or \
         emptied, and starting empty would serve a state that lost acknowledged writes. \
         If that is known and wanted: {RECOVERY}",
        RECOVERY = recovery_steps(.dir)
    )]
    Missing { dir: PathBuf, what: String },
    /// The caller's record is too big; nothing was written.
    #[error(
        "WAL record of {len} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes; \
         split the operation into smaller ones"
    )]
    RecordTooLarge { len: usize },
    /// The caller's snapshot is too big; nothing was written.
    #[error(
        "WAL snapshot of {len} bytes exceeds the limit of {MAX_SNAPSHOT_BYTES} bytes; \
         the state has outgrown this WAL's format"
    )]
    SnapshotTooLarge { len: usize },
    /// The caller's deferred snapshot payload could not be made (its
    /// encoder failed); nothing was written, the log is fine.
    #[error("WAL snapshot not written: its payload could not be encoded ({0})")]
    SnapshotNotMade(String),
    /// A snapshot must cover between the current snapshot and the last LSN.
    #[error(
        "WAL snapshot covering lsn {covered} refused: it must cover at least lsn {floor} \
         (the current snapshot) and at most lsn {last} (the last record); this is a bug \
         in the caller"
    )]
    SnapshotOutOfRange { covered: u64, floor: u64, last: u64 },
    /// A synchronous submission found the writer's queue at its bound; the
    /// record or snapshot was not queued.
    #[error(
        "WAL writer queue is full ({queued_requests} requests waiting; bounds \
         {WRITER_QUEUE_CAPACITY_REQUESTS} requests and {WRITER_QUEUE_MAX_BYTES} bytes): \
         this write was not logged. The disk is slower than the write rate; shed load"
    )]
    Overloaded { queued_requests: usize },
    /// An earlier I/O error left the log in an unknown state.
    #[error(
        "WAL accepts no more writes after an earlier error ({first}); this node must stop \
         serving writes: fix the cause and restart jujud"
    )]
    Failed { first: Box<WalError> },
    /// The writer thread is gone (it panicked or could not start).
    #[error("WAL writer thread has stopped; this node must stop serving writes: restart jujud")]
    WriterGone,
}

/// The owner a foreign file names, and this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub found: LogIdentity,
    pub ours: LogIdentity,
}

/// The directory an operator should move aside for a corrupt file.
fn state_dir_of(file: &Path) -> &Path {
    file.parent().unwrap_or(file)
}

/// What the operator does to restore a node's state from its peers.
fn recovery_steps(state_dir: &Path) -> String {
    let data_dir = state_dir.parent().unwrap_or(state_dir);
    format!(
        "stop jujud, move {} aside, create the file {} and restart, so the node restores its \
         state from a peer (with no other manager, the moved files are the only copy: keep them)",
        state_dir.display(),
        data_dir.join(RESTORE_MARKER).display()
    )
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> WalError {
    WalError::Io { op, path: path.to_path_buf(), source: Arc::new(source) }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt { file: file.to_path_buf(), offset, reason: reason.into() }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest snapshot: (LSN covered, bytes).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records after the snapshot, in LSN order: (LSN, bytes).
    pub records: Vec<(u64, Vec<u8>)>,
    /// The unacknowledged tail that was cut off, if there was one.
    pub truncated_torn_tail: Option<TornTail>,
}

/// A torn tail removed during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the file now ends (the end of the last good record).
    pub offset: u64,
    pub bytes_dropped: u64,
}

/// One log segment.
#[derive(Debug)]
struct Segment {
    first_lsn: u64,
    path: PathBuf,
    /// Logical size, buffered appends included.
    bytes: u64,
}

/// The current snapshot file.
#[derive(Debug)]
pub(super) struct SnapshotFile {
    lsn: u64,
    path: PathBuf,
    bytes: u64,
}

/// The log. Synchronous; see [`WalWriter`] for async callers.
pub struct Wal {
    state_dir: PathBuf,
    /// The owner written into every new file's header.
    identity: LogIdentity,
    /// Sorted by first LSN; never empty; the last one is being appended to.
    segments: Vec<Segment>,
    /// The last segment, buffered.
    active: BufWriter<File>,
    next_lsn: u64,
    durable_lsn: u64,
    snapshot: Option<SnapshotFile>,
    segment_roll_bytes: u64,
    /// Set by the first I/O error that leaves the files in an unknown state.
    failed: Option<WalError>,
    /// Fault point for tests: the next sync fails.
    #[cfg(test)]
    fail_next_sync: bool,
}

impl Wal {
    /// Opens (creating `dir/state` if missing and allowed) and recovers
    /// the log owned by `id`; see the recovery rules.
    pub fn open(
        dir: &Path,
        id: &LogIdentity,
        expect: Expect,
    ) -> Result<(Wal, Recovered), WalError> {
        Self::open_with_roll(dir, id, expect, SEGMENT_ROLL_BYTES)
    }

    fn open_with_roll(
        dir: &Path,
        id: &LogIdentity,
        expect: Expect,
        segment_roll_bytes: u64,
    ) -> Result<(Wal, Recovered), WalError> {
        let state_dir = dir.join(STATE_DIR);
        let listing = open_state_dir(dir, &state_dir, id, expect)?;
        let (snap_meta, snap_bytes) = match listing.snapshots.last() {
            Some((lsn, path)) => {
                let (meta, bytes) = read_snapshot(path, id, *lsn)?;
                (Some(meta), Some(bytes))
            }
            None => (None, None),
        };
        let snap_lsn = snap_meta.as_ref().map_or(0, |s| s.lsn);
        let chain = recover_segments(&listing.segments, id, snap_lsn)?;
        if let Some(torn) = &chain.torn {
            truncate_file(&torn.file, torn.offset)?;
        }
        let stale: Vec<&PathBuf> = listing.snapshots.iter().rev().skip(1).map(|s| &s.1).collect();
        let mut wal = Wal::assemble(
            state_dir,
            id.clone(),
            chain.segments,
            chain.next_lsn,
            segment_roll_bytes,
        )?;
        wal.snapshot = snap_meta;
        wal.remove_stale(&stale, snap_lsn);
        let recovered = Recovered {
            snapshot: snap_bytes.map(|bytes| (snap_lsn, bytes)),
            records: chain.records,
            truncated_torn_tail: chain.torn,
        };
        Ok((wal, recovered))
    }

    /// Builds the handle: creates the first segment if there is none, opens
    /// the last one for appending and makes what was read back durable (a
    /// killed process may have left it only in the page cache).
    fn assemble(
        state_dir: PathBuf,
        identity: LogIdentity,
        mut segments: Vec<Segment>,
        next_lsn: u64,
        segment_roll_bytes: u64,
    ) -> Result<Wal, WalError> {
        if segments.is_empty() {
            segments.push(create_segment(&state_dir, &identity, next_lsn)?);
        }
        let last = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = OpenOptions::new()
            .append(true)
            .open(&last)
            .map_err(|e| io_err("open for append", &last, e))?;
        file.sync_all().map_err(|e| io_err("fsync", &last, e))?;
        sync_dir(&state_dir)?;
        Ok(Wal {
            state_dir,
            identity,
            segments,
            active: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            next_lsn,
            durable_lsn: next_lsn - 1,
            snapshot: None,
            segment_roll_bytes,
            failed: None,
            #[cfg(test)]
            fail_next_sync: false,
        })
    }

    /// Appends one record to the write buffer and returns its LSN. It is not
    /// durable until [`Wal::sync`] returns an LSN at or above it.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        self.check_failed()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge { len: payload.len() });
        }
        if self.active_bytes() >= self.segment_roll_bytes && self.active_has_records() {
            self.roll_segment()?;
        }
        let header = record_header(payload);
        let written = self.active.write_all(&header).and_then(|()| self.active.write_all(payload));
        if let Err(e) = written {
            let path = self.active_path().to_path_buf();
            return Err(self.fail(io_err("append to", &path, e)));
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.bytes += (RECORD_HEADER_BYTES + payload.len()) as u64;
        }
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Writes out and fsyncs everything appended; returns the highest
    /// durable LSN.
    pub fn sync(&mut self) -> Result<u64, WalError> {
        self.check_failed()?;
        if self.durable_lsn < self.last_lsn() {
            self.sync_active()?;
        }
        Ok(self.durable_lsn)
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        let path = self.active_path().to_path_buf();
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            let e = io::Error::other("injected sync failure");
            return Err(self.fail(io_err("fsync", &path, e)));
        }
        if let Err(e) = self.active.flush() {
            return Err(self.fail(io_err("write", &path, e)));
        }
        if let Err(e) = self.active.get_ref().sync_data() {
            return Err(self.fail(io_err("fsync", &path, e)));
        }
        self.durable_lsn = self.last_lsn();
        Ok(())
    }

    /// Makes the active segment durable and starts a new one at the next
    /// LSN.
    fn roll_segment(&mut self) -> Result<(), WalError> {
        self.sync_active()?;
        let segment = match create_segment(&self.state_dir, &self.identity, self.next_lsn) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e)),
        };
        let file = match OpenOptions::new().append(true).open(&segment.path) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(io_err("open for append", &segment.path, e))),
        };
        if let Err(e) = sync_dir(&self.state_dir) {
            return Err(self.fail(e));
        }
        self.active = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        self.segments.push(segment);
        Ok(())
    }

    /// Durably stores a snapshot covering every LSN up to `covered_lsn`,
    /// then starts a new segment and deletes the segments and snapshots it
    /// wholly covers. Records up to `last_lsn` are synced first, so the
    /// snapshot never claims records the log could still lose.
    pub fn write_snapshot(&mut self, covered_lsn: u64, bytes: &[u8]) -> Result<(), WalError> {
        self.begin_snapshot(covered_lsn, bytes.len())?;
        let written = write_snapshot_file(&self.state_dir, &self.identity, covered_lsn, bytes)?;
        if let Err(e) = sync_dir(&self.state_dir) {
            return Err(self.fail(e));
        }
        self.end_snapshot(written);
        Ok(())
    }

    /// The first half of [`Wal::write_snapshot`]: checks the range, syncs,
    /// and closes the active segment so that records appended while the
    /// file is written go to a segment after `covered_lsn`. The file may
    /// then be written on another thread while appends go on.
    pub(super) fn begin_snapshot(&mut self, covered_lsn: u64, len: usize) -> Result<(), WalError> {
        self.check_failed()?;
        if len > MAX_SNAPSHOT_BYTES {
            return Err(WalError::SnapshotTooLarge { len });
        }
        let floor = self.snapshot.as_ref().map_or(0, |s| s.lsn);
        if covered_lsn < floor || covered_lsn > self.last_lsn() {
            return Err(WalError::SnapshotOutOfRange {
                covered: covered_lsn,
                floor,
                last: self.last_lsn(),
            });
        }
        self.sync()?;
        if self.active_has_records() {
            self.roll_segment()?;
        }
        Ok(())
    }

    /// The second half: the snapshot file is durable (written, renamed,
    /// directory synced); it replaces the old one, whose covered segments go.
    pub(super) fn end_snapshot(&mut self, written: SnapshotFile) {
        let covered_lsn = written.lsn;
        let old = self.snapshot.replace(written);
        let stale: Vec<&PathBuf> =
            old.as_ref().filter(|o| o.lsn != covered_lsn).map(|o| &o.path).into_iter().collect();
        self.remove_stale(&stale, covered_lsn);
    }

    /// The state dir, for a thread writing a snapshot file.
    pub(super) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The owner, for a thread writing a snapshot file.
    pub(super) fn identity(&self) -> &LogIdentity {
        &self.identity
    }

    /// Deletes old snapshots and the segments wholly covered by
    /// `covered_lsn` (never the active one). A failure only leaves extra
    /// files, which the next open or snapshot removes, so it is logged.
    fn remove_stale(&mut self, snapshots: &[&PathBuf], covered_lsn: u64) {
        let mut removed = false;
        for path in snapshots {
            removed |= remove_logged(path);
        }
        while self.segments.len() > 1 && self.segments[1].first_lsn - 1 <= covered_lsn {
            if !remove_logged(&self.segments[0].path) {
                break;
            }
            removed = true;
            self.segments.remove(0);
        }
        if removed && let Err(e) = sync_dir(&self.state_dir) {
            tracing::warn!(error = %e, "WAL: fsync of the state dir after cleanup failed");
        }
    }

    /// The LSN of the last appended record (durable or not); 0 if none ever.
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// Bytes of the current snapshot and all segments, appends still in the
    /// write buffer included.
    pub fn bytes_on_disk(&self) -> u64 {
        let segments: u64 = self.segments.iter().map(|s| s.bytes).sum();
        segments + self.snapshot.as_ref().map_or(0, |s| s.bytes)
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(first) => Err(WalError::Failed { first: Box::new(first.clone()) }),
            None => Ok(()),
        }
    }

    /// Records the first error that leaves the files in an unknown state.
    fn fail(&mut self, err: WalError) -> WalError {
        if self.failed.is_none() {
            self.failed = Some(err.clone());
        }
        err
    }

    fn active_path(&self) -> &Path {
        self.segments.last().map_or(&self.state_dir, |s| &s.path)
    }

    fn active_bytes(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.bytes)
    }

    fn active_has_records(&self) -> bool {
        self.segments.last().is_some_and(|s| self.next_lsn > s.first_lsn)
    }
}

fn remove_logged(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "WAL: cannot remove covered file");
            false
        }
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))
}

fn numbered_name(prefix: &str, lsn: u64, suffix: &str) -> String {
    format!("{prefix}{lsn:0width$}{suffix}", width = LSN_DIGITS)
}

/// Parses `<prefix><20 digits><suffix>`.
fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Creates a segment whole: its header is written to a temp file, fsync'd
/// and renamed, so a segment never has a short header. The caller fsyncs
/// the directory.
fn create_segment(state_dir: &Path, id: &LogIdentity, first_lsn: u64) -> Result<Segment, WalError> {
    let path = state_dir.join(numbered_name(SEGMENT_PREFIX, first_lsn, SEGMENT_SUFFIX));
    if path.exists() {
        let e = io::Error::new(io::ErrorKind::AlreadyExists, "segment already exists");
        return Err(io_err("create segment", &path, e));
    }
    let header = format::encode_header(format::SEGMENT_MAGIC, id, first_lsn);
    write_new_file(&path, &[&header], "create segment")?;
    Ok(Segment { first_lsn, path, bytes: header.len() as u64 })
}

/// Creates `dir/state` (mode 0700) when allowed, tightens an older one,
/// checks that a log expected is there, removes temp files and upgrades
/// format-1 files when allowed; returns the listing.
fn open_state_dir(
    dir: &Path,
    state_dir: &Path,
    id: &LogIdentity,
    expect: Expect,
) -> Result<Listing, WalError> {
    if !state_dir.is_dir() {
        if expect == Expect::Present {
            let what = format!("the state dir {} is missing", state_dir.display());
            return Err(WalError::Missing { dir: state_dir.to_path_buf(), what });
        }
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(state_dir)
            .map_err(|e| io_err("create", state_dir, e))?;
        sync_dir(dir)?;
    }
    tighten_dir(state_dir)?;
    let mut listing = list_state_dir(state_dir)?;
    for tmp in &listing.temps {
        fs::remove_file(tmp).map_err(|e| io_err("remove unfinished file", tmp, e))?;
    }
    if expect == Expect::Present && listing.segments.is_empty() {
        let what = format!("the state dir {} holds no log segment", state_dir.display());
        return Err(WalError::Missing { dir: state_dir.to_path_buf(), what });
    }
    if expect == Expect::CreateOrUpgrade && upgrade_legacy(state_dir, &listing, id)? > 0 {
        listing = list_state_dir(state_dir)?;
    }
    Ok(listing)
}

/// Makes a directory created by an older jujud (0755) owner-only, with a
/// log line.
fn tighten_dir(path: &Path) -> Result<(), WalError> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        fs::metadata(path).map_err(|e| io_err("stat", path, e))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| io_err("set the mode of", path, e))?;
        tracing::warn!(path = %path.display(), old_mode = format!("{mode:o}"), "tightened the state dir to mode 0700");
    }
    Ok(())
}

fn truncate_file(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err("open to truncate the torn tail of", path, e))?;
    file.set_len(len).map_err(|e| io_err("truncate the torn tail of", path, e))?;
    file.sync_all().map_err(|e| io_err("fsync", path, e))
}
