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
//! - `snapshot-<lsn, 20 digits>.bin`: `[magic "JJSNAP1\0"][u64 LE lsn
//!   covered][u32 LE crc32 of payload][u64 LE payload length][payload]`.
//!   Written to `<name>.tmp`, fsync'd, renamed, directory fsync'd.
//! - `log-<first lsn, 20 digits>.wal`: records, each `[u32 LE payload
//!   length][u32 LE crc32 of the 4 length bytes and the payload][payload]`.
//!   A record's LSN is its 1-based sequence number across the whole log:
//!   the segment's first LSN plus its index in the segment. A segment is
//!   fsync'd before the next one is created, so only the last segment can
//!   hold unsynced bytes.
//!
//! # Recovery rules
//!
//! 1. A missing `DIR/state` is a fresh, empty log. Leftover `*.tmp` files
//!    are unfinished snapshots and are deleted.
//! 2. The newest snapshot is used. Bad magic, a length that disagrees with
//!    the file size or exceeds [`MAX_SNAPSHOT_BYTES`], an LSN that disagrees
//!    with the file name, or a bad checksum is `Corrupt`.
//! 3. Segments must chain without gaps: the first must start at or before
//!    `snapshot lsn + 1` (at 1 without a snapshot), each next one exactly
//!    after the previous one's last record, and the log must reach the
//!    snapshot's LSN. Anything else is `Corrupt`.
//! 4. A torn tail is a crash during an append that was never acknowledged
//!    (acknowledgement comes only after fsync). It is truncated, reported in
//!    [`Recovered::truncated_torn_tail`], and recovery goes on. Only the
//!    last segment can have one. It is:
//!    - a header cut short, or a record with fewer bytes than its header
//!      says, at the end of the file;
//!    - a record whose checksum fails with nothing after it, or only zero
//!      bytes after it (an all-zero tail, e.g. a zeroed block, is a torn
//!      tail too);
//!    - a length above [`MAX_RECORD_BYTES`] with no more than one maximal
//!      record's bytes after the header.
//!
//!    A length that runs past the end of file (or above the maximum) is
//!    *not* torn if flipping one of its 32 bits would make the record
//!    valid: that is bit rot in an acknowledged record, so it is `Corrupt`.
//! 5. Everything else is `Corrupt`: a bad record in a non-last segment, or
//!    a bad record followed by any non-zero byte. The node must not serve
//!    its state; the operator moves `DIR/state` aside and restarts so the
//!    node restores from a peer. Known limit of the framing: a crash in the
//!    middle of a group commit on a filesystem that persists pages out of
//!    order can leave a hole followed by valid records; that is reported as
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

mod recovery;
mod writer;
#[cfg(test)]
mod tests;

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

const RECORD_HEADER_BYTES: usize = 8;
const SNAPSHOT_MAGIC: &[u8; 8] = b"JJSNAP1\0";
/// magic (8) + lsn (8) + crc (4) + length (8).
const SNAPSHOT_HEADER_BYTES: usize = 28;
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
         replicated state cannot be trusted and will not be served: stop jujud, move \
         {dir} aside (or remove it), and restart so the node restores its state from a peer",
        dir = state_dir_of(.file).display()
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
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

/// The directory an operator should move aside for a corrupt file.
fn state_dir_of(file: &Path) -> &Path {
    file.parent().unwrap_or(file)
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
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
    /// Opens (creating `dir/state` if missing) and recovers the log.
    pub fn open(dir: &Path) -> Result<(Wal, Recovered), WalError> {
        Self::open_with_roll(dir, SEGMENT_ROLL_BYTES)
    }

    fn open_with_roll(dir: &Path, segment_roll_bytes: u64) -> Result<(Wal, Recovered), WalError> {
        let state_dir = dir.join(STATE_DIR);
        if !state_dir.is_dir() {
            fs::create_dir_all(&state_dir).map_err(|e| io_err("create", &state_dir, e))?;
            sync_dir(dir)?;
        }
        let listing = list_state_dir(&state_dir)?;
        for tmp in &listing.temps {
            fs::remove_file(tmp).map_err(|e| io_err("remove unfinished snapshot", tmp, e))?;
        }
        let (snap_meta, snap_bytes) = match listing.snapshots.last() {
            Some((lsn, path)) => {
                let (meta, bytes) = read_snapshot(path, *lsn)?;
                (Some(meta), Some(bytes))
            }
            None => (None, None),
        };
        let snap_lsn = snap_meta.as_ref().map_or(0, |s| s.lsn);
        let chain = recover_segments(&listing.segments, snap_lsn)?;
        if let Some(torn) = &chain.torn {
            truncate_file(&torn.file, torn.offset)?;
        }
        let stale: Vec<&PathBuf> = listing
            .snapshots
            .iter()
            .rev()
            .skip(1)
            .map(|s| &s.1)
            .collect();
        let mut wal = Wal::assemble(
            state_dir,
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
        mut segments: Vec<Segment>,
        next_lsn: u64,
        segment_roll_bytes: u64,
    ) -> Result<Wal, WalError> {
        if segments.is_empty() {
            segments.push(create_segment(&state_dir, next_lsn)?);
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
        let written = self
            .active
            .write_all(&header)
            .and_then(|()| self.active.write_all(payload));
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
        let segment = match create_segment(&self.state_dir, self.next_lsn) {
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
        let written = write_snapshot_file(&self.state_dir, covered_lsn, bytes)?;
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
        let stale: Vec<&PathBuf> = old
            .as_ref()
            .filter(|o| o.lsn != covered_lsn)
            .map(|o| &o.path)
            .into_iter()
            .collect();
        self.remove_stale(&stale, covered_lsn);
    }

    /// The state dir, for a thread writing a snapshot file.
    pub(super) fn state_dir(&self) -> &Path {
        &self.state_dir
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
            Some(first) => Err(WalError::Failed {
                first: Box::new(first.clone()),
            }),
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
        self.segments
            .last()
            .is_some_and(|s| self.next_lsn > s.first_lsn)
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

fn crc_of_record(len_bytes: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

fn record_header(payload: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
    let len_bytes = (payload.len() as u32).to_le_bytes();
    let crc = crc_of_record(&len_bytes, payload);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[..4].copy_from_slice(&len_bytes);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    header
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, e))
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

fn create_segment(state_dir: &Path, first_lsn: u64) -> Result<Segment, WalError> {
    let path = state_dir.join(numbered_name(SEGMENT_PREFIX, first_lsn, SEGMENT_SUFFIX));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create segment", &path, e))?;
    Ok(Segment {
        first_lsn,
        path,
        bytes: 0,
    })
}

fn truncate_file(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err("open to truncate the torn tail of", path, e))?;
    file.set_len(len)
        .map_err(|e| io_err("truncate the torn tail of", path, e))?;
    file.sync_all().map_err(|e| io_err("fsync", path, e))
}

