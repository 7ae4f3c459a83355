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
struct SnapshotFile {
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
        self.check_failed()?;
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(WalError::SnapshotTooLarge { len: bytes.len() });
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
        let written = write_snapshot_file(&self.state_dir, covered_lsn, bytes)?;
        if let Err(e) = sync_dir(&self.state_dir) {
            return Err(self.fail(e));
        }
        let old = self.snapshot.replace(written);
        if self.active_has_records() {
            self.roll_segment()?;
        }
        let stale: Vec<&PathBuf> = old
            .as_ref()
            .filter(|o| o.lsn != covered_lsn)
            .map(|o| &o.path)
            .into_iter()
            .collect();
        self.remove_stale(&stale, covered_lsn);
        Ok(())
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

fn sync_dir(dir: &Path) -> Result<(), WalError> {
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

/// The files of `DIR/state`, each list sorted by LSN.
#[derive(Debug, Default)]
struct Listing {
    snapshots: Vec<(u64, PathBuf)>,
    segments: Vec<(u64, PathBuf)>,
    temps: Vec<PathBuf>,
}

fn list_state_dir(state_dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(state_dir).map_err(|e| io_err("list", state_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", state_dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(TMP_SUFFIX) {
            listing.temps.push(path);
        } else if let Some(lsn) = parse_numbered(&name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((lsn, path));
        } else if let Some(lsn) = parse_numbered(&name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            if lsn == 0 {
                return Err(corrupt(
                    &path,
                    0,
                    "segment names LSN 0, but LSNs start at 1",
                ));
            }
            listing.segments.push((lsn, path));
        } else {
            tracing::warn!(path = %path.display(), "WAL: ignoring unknown file in the state dir");
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// Reads and checks a snapshot file named for `name_lsn`.
fn read_snapshot(path: &Path, name_lsn: u64) -> Result<(SnapshotFile, Vec<u8>), WalError> {
    let mut file = File::open(path).map_err(|e| io_err("open snapshot", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| io_err("stat snapshot", path, e))?
        .len();
    if file_len < SNAPSHOT_HEADER_BYTES as u64 {
        let reason = format!("file is {file_len} bytes, shorter than the snapshot header");
        return Err(corrupt(path, file_len, reason));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    file.read_exact(&mut header)
        .map_err(|e| io_err("read snapshot", path, e))?;
    let (lsn, crc, len) = parse_snapshot_header(path, &header, name_lsn)?;
    let payload_in_file = file_len - SNAPSHOT_HEADER_BYTES as u64;
    if len > MAX_SNAPSHOT_BYTES as u64 || len != payload_in_file {
        let reason = format!(
            "header says {len} payload bytes, the file holds {payload_in_file} (limit {MAX_SNAPSHOT_BYTES})"
        );
        return Err(corrupt(path, 20, reason));
    }
    let mut payload = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut payload)
        .map_err(|e| io_err("read snapshot", path, e))?;
    if payload.len() as u64 != len || crc32fast::hash(&payload) != crc {
        return Err(corrupt(
            path,
            SNAPSHOT_HEADER_BYTES as u64,
            "snapshot checksum mismatch",
        ));
    }
    let meta = SnapshotFile {
        lsn,
        path: path.to_path_buf(),
        bytes: file_len,
    };
    Ok((meta, payload))
}

/// Returns (lsn, crc, payload length) from a snapshot header.
fn parse_snapshot_header(
    path: &Path,
    header: &[u8; SNAPSHOT_HEADER_BYTES],
    name_lsn: u64,
) -> Result<(u64, u32, u64), WalError> {
    let field = |at: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&header[at..at + n]);
        u64::from_le_bytes(b)
    };
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(
            path,
            0,
            "bad snapshot magic (not a jujud snapshot)",
        ));
    }
    let lsn = field(8, 8);
    if lsn != name_lsn {
        let reason = format!("snapshot header covers lsn {lsn} but its name says {name_lsn}");
        return Err(corrupt(path, 8, reason));
    }
    Ok((lsn, field(16, 4) as u32, field(20, 8)))
}

/// Writes `snapshot-<lsn>.bin` via a fsync'd temp file and a rename. The
/// caller fsyncs the directory. On failure the temp file is removed.
fn write_snapshot_file(state_dir: &Path, lsn: u64, bytes: &[u8]) -> Result<SnapshotFile, WalError> {
    let name = numbered_name(SNAPSHOT_PREFIX, lsn, SNAPSHOT_SUFFIX);
    let path = state_dir.join(&name);
    let tmp = state_dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..20].copy_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    header[20..28].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    let result = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| io_err("write snapshot", &tmp, e))
        .and_then(|()| fs::rename(&tmp, &path).map_err(|e| io_err("rename snapshot", &tmp, e)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(SnapshotFile {
        lsn,
        path,
        bytes: (SNAPSHOT_HEADER_BYTES + bytes.len()) as u64,
    })
}

/// The log as recovered from its segments.
struct Chain {
    segments: Vec<Segment>,
    records: Vec<(u64, Vec<u8>)>,
    torn: Option<TornTail>,
    next_lsn: u64,
}

/// Reads every segment in order, checking that they chain without gaps
/// from the snapshot on.
fn recover_segments(found: &[(u64, PathBuf)], snap_lsn: u64) -> Result<Chain, WalError> {
    let mut chain = Chain {
        segments: Vec::with_capacity(found.len()),
        records: Vec::new(),
        torn: None,
        next_lsn: snap_lsn + 1,
    };
    for (i, (first_lsn, path)) in found.iter().enumerate() {
        let first_lsn = *first_lsn;
        if i == 0 && first_lsn > snap_lsn + 1 {
            let reason = format!(
                "segment starts at lsn {first_lsn} but the snapshot covers only up to lsn \
                 {snap_lsn}: lsns {}..{first_lsn} are missing",
                snap_lsn + 1
            );
            return Err(corrupt(path, 0, reason));
        }
        if i > 0 && first_lsn != chain.next_lsn {
            let reason = format!(
                "segment starts at lsn {first_lsn} but the previous segment ends at lsn {}: \
                 a segment is missing",
                chain.next_lsn - 1
            );
            return Err(corrupt(path, 0, reason));
        }
        let buf = read_segment_file(path)?;
        let is_last = i + 1 == found.len();
        let scan = scan_segment(path, &buf, is_last)?;
        let count = scan.records.len() as u64;
        for (lsn, record) in (first_lsn..).zip(scan.records) {
            if lsn > snap_lsn {
                chain.records.push((lsn, record));
            }
        }
        chain.next_lsn = first_lsn + count;
        if scan.valid_len < buf.len() as u64 {
            chain.torn = Some(TornTail {
                file: path.clone(),
                offset: scan.valid_len,
                bytes_dropped: buf.len() as u64 - scan.valid_len,
            });
        }
        chain.segments.push(Segment {
            first_lsn,
            path: path.clone(),
            bytes: scan.valid_len,
        });
    }
    check_reaches_snapshot(&chain, snap_lsn)?;
    Ok(chain)
}

fn check_reaches_snapshot(chain: &Chain, snap_lsn: u64) -> Result<(), WalError> {
    match chain.segments.last() {
        Some(last) if chain.next_lsn <= snap_lsn => {
            let reason = format!(
                "the log ends at lsn {} but the snapshot covers lsn {snap_lsn}; records the \
                 snapshot relied on are missing",
                chain.next_lsn - 1
            );
            Err(corrupt(&last.path, last.bytes, reason))
        }
        _ => Ok(()),
    }
}

fn read_segment_file(path: &Path) -> Result<Vec<u8>, WalError> {
    let len = fs::metadata(path)
        .map_err(|e| io_err("stat segment", path, e))?
        .len();
    if len > MAX_SEGMENT_FILE_BYTES {
        let reason =
            format!("segment is {len} bytes, over the {MAX_SEGMENT_FILE_BYTES}-byte limit");
        return Err(corrupt(path, MAX_SEGMENT_FILE_BYTES, reason));
    }
    fs::read(path).map_err(|e| io_err("read segment", path, e))
}

/// The good records of a segment and where they end.
struct SegmentScan {
    records: Vec<Vec<u8>>,
    valid_len: u64,
}

/// Why the record at an offset is not valid.
#[derive(Debug)]
enum BadRecord {
    ShortHeader,
    TooLong { len: usize },
    PastEnd { len: usize },
    Checksum { len: usize },
}

/// Checks the record at `at`; returns where it ends.
fn check_record(buf: &[u8], at: usize) -> Result<usize, BadRecord> {
    let Some(header) = buf.get(at..at + RECORD_HEADER_BYTES) else {
        return Err(BadRecord::ShortHeader);
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(BadRecord::TooLong { len });
    }
    let start = at + RECORD_HEADER_BYTES;
    let Some(payload) = buf.get(start..start + len) else {
        return Err(BadRecord::PastEnd { len });
    };
    if crc_of_record(&len_bytes, payload) != crc {
        return Err(BadRecord::Checksum { len });
    }
    Ok(start + len)
}

/// Splits a segment into records, applying the torn-tail rules to a bad
/// record in the last segment.
fn scan_segment(path: &Path, buf: &[u8], is_last: bool) -> Result<SegmentScan, WalError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        match check_record(buf, at) {
            Ok(end) => {
                records.push(buf[at + RECORD_HEADER_BYTES..end].to_vec());
                at = end;
            }
            Err(bad) if is_last && is_torn_tail(buf, at, &bad) => break,
            Err(bad) => return Err(corrupt(path, at as u64, describe_bad(&bad, is_last))),
        }
    }
    Ok(SegmentScan {
        records,
        valid_len: at as u64,
    })
}

/// Whether a bad record at `at` in the last segment is a torn append.
fn is_torn_tail(buf: &[u8], at: usize, bad: &BadRecord) -> bool {
    match *bad {
        BadRecord::ShortHeader => true,
        BadRecord::Checksum { len } => {
            let end = at + RECORD_HEADER_BYTES + len;
            buf[end..].iter().all(|&b| b == 0)
        }
        BadRecord::TooLong { .. } | BadRecord::PastEnd { .. } => {
            let after_header = buf.len() - at - RECORD_HEADER_BYTES;
            after_header <= MAX_RECORD_BYTES && !one_bit_flip_explains(buf, at)
        }
    }
}

/// Whether flipping one bit of the length at `at` yields a valid record:
/// then the bad length is bit rot in a written record, not a torn append.
fn one_bit_flip_explains(buf: &[u8], at: usize) -> bool {
    let header = &buf[at..at + RECORD_HEADER_BYTES];
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let start = at + RECORD_HEADER_BYTES;
    (0..32).any(|bit| {
        let candidate = len ^ (1u32 << bit);
        let end = start + candidate as usize;
        candidate as usize <= MAX_RECORD_BYTES
            && end <= buf.len()
            && crc_of_record(&candidate.to_le_bytes(), &buf[start..end]) == crc
    })
}

fn describe_bad(bad: &BadRecord, is_last: bool) -> String {
    let place = if is_last {
        "and valid-looking data follows it, so it is not a torn tail"
    } else {
        "in a segment that was complete and fsync'd before the next one began"
    };
    match bad {
        BadRecord::ShortHeader => format!("record header is cut short {place}"),
        BadRecord::TooLong { len } => {
            format!("record length {len} exceeds {MAX_RECORD_BYTES} {place}")
        }
        BadRecord::PastEnd { len } => {
            format!("record length {len} runs past the end of the file {place}")
        }
        BadRecord::Checksum { len } => {
            format!("checksum mismatch on a {len}-byte record {place}")
        }
    }
}

/// Group-commit statistics of a [`WalWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written.
    pub appends: u64,
    /// fsyncs that made records durable.
    pub syncs: u64,
    /// Record bytes written, headers included.
    pub bytes: u64,
    /// The most records one fsync made durable.
    pub max_records_per_sync: u64,
    pub snapshots: u64,
    /// Requests waiting in the queue now.
    pub queued_requests: usize,
}

impl WalStats {
    /// Mean records per fsync: the group-commit factor.
    pub fn records_per_sync(&self) -> f64 {
        self.appends as f64 / self.syncs.max(1) as f64
    }
}

type Reply<T> = oneshot::Sender<Result<T, WalError>>;

/// A request to the writer thread.
enum Request {
    Append {
        payload: Vec<u8>,
        /// `None` for [`WalWriter::append_nowait`].
        done: Option<Reply<u64>>,
        /// Holds the payload's share of [`WRITER_QUEUE_MAX_BYTES`] until it
        /// is written.
        _permit: OwnedSemaphorePermit,
    },
    Snapshot {
        /// `None`: everything queued before this request.
        covered_lsn: Option<u64>,
        bytes: Vec<u8>,
        done: Reply<()>,
    },
}

/// State shared by the handles and the writer thread.
#[derive(Default)]
struct Shared {
    appends: AtomicU64,
    syncs: AtomicU64,
    bytes: AtomicU64,
    max_records_per_sync: AtomicU64,
    snapshots: AtomicU64,
    /// The error that failed the log, handed to every later request.
    failure: Mutex<Option<WalError>>,
}

impl Shared {
    fn failure(&self) -> Option<WalError> {
        self.failure.lock().map_or(None, |f| f.clone())
    }

    fn set_failure(&self, err: &WalError) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some(err.clone());
        }
    }

    /// The error for a request the writer thread can no longer serve.
    fn gone(&self) -> WalError {
        match self.failure() {
            Some(first) => WalError::Failed {
                first: Box::new(first),
            },
            None => WalError::WriterGone,
        }
    }

    fn check(&self) -> Result<(), WalError> {
        match self.failure() {
            Some(first) => Err(WalError::Failed {
                first: Box::new(first),
            }),
            None => Ok(()),
        }
    }
}

/// An async handle to a [`Wal`] owned by a dedicated thread that commits
/// in groups. Clone it freely; the thread exits when the last clone drops,
/// after committing what was queued.
#[derive(Clone)]
pub struct WalWriter {
    tx: mpsc::Sender<Request>,
    queued_bytes: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl WalWriter {
    /// Moves `wal` to a new thread. If the thread cannot start, every
    /// request fails with the error.
    pub fn spawn(wal: Wal) -> WalWriter {
        Self::spawn_gated(wal, None)
    }

    /// `gate`: for tests, the thread waits for a message before serving, so
    /// requests can be queued first; a hang-up drops the log unserved.
    fn spawn_gated(wal: Wal, gate: Option<std::sync::mpsc::Receiver<()>>) -> WalWriter {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_CAPACITY_REQUESTS);
        let shared = Arc::new(Shared::default());
        let state_dir = wal.state_dir.clone();
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("jujud-wal".into())
            .spawn(move || {
                if let Some(gate) = gate
                    && gate.recv().is_err()
                {
                    return;
                }
                writer_loop(wal, rx, &thread_shared);
            });
        if let Err(e) = spawned {
            shared.set_failure(&io_err("start the writer thread for", &state_dir, e));
        }
        WalWriter {
            tx,
            queued_bytes: Arc::new(Semaphore::new(WRITER_QUEUE_MAX_BYTES)),
            shared,
        }
    }

    /// Appends a record and resolves with its LSN once it is fsync'd.
    /// Dropping the future does not withdraw a queued record.
    pub async fn append(&self, payload: Vec<u8>) -> Result<u64, WalError> {
        let (done, reply) = oneshot::channel();
        self.enqueue(payload, Some(done)).await?;
        reply.await.map_err(|_| self.gone())?
    }

    /// Queues a record without waiting for it to be durable (it is at the
    /// writer's next fsync, which follows at once). For operations already
    /// durable elsewhere, such as replicated remote ones.
    pub async fn append_nowait(&self, payload: Vec<u8>) -> Result<(), WalError> {
        self.enqueue(payload, None).await
    }

    /// Durably writes a snapshot covering up to `covered_lsn`; see
    /// [`Wal::write_snapshot`]. Appends queued before it are committed
    /// first.
    pub async fn snapshot(&self, covered_lsn: u64, bytes: Vec<u8>) -> Result<(), WalError> {
        self.shared.check()?;
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(WalError::SnapshotTooLarge { len: bytes.len() });
        }
        let (done, reply) = oneshot::channel();
        let request = Request::Snapshot {
            covered_lsn: Some(covered_lsn),
            bytes,
            done,
        };
        self.tx.send(request).await.map_err(|_| self.gone())?;
        reply.await.map_err(|_| self.gone())?
    }

    /// Counters since spawn.
    pub fn stats(&self) -> WalStats {
        let s = &self.shared;
        WalStats {
            appends: s.appends.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            max_records_per_sync: s.max_records_per_sync.load(Ordering::Relaxed),
            snapshots: s.snapshots.load(Ordering::Relaxed),
            queued_requests: self.tx.max_capacity() - self.tx.capacity(),
        }
    }

    async fn enqueue(&self, payload: Vec<u8>, done: Option<Reply<u64>>) -> Result<(), WalError> {
        self.shared.check()?;
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::RecordTooLarge { len: payload.len() });
        }
        let charge = (payload.len() + RECORD_HEADER_BYTES) as u32;
        let permit = Arc::clone(&self.queued_bytes)
            .acquire_many_owned(charge)
            .await
            .map_err(|_| self.gone())?;
        let request = Request::Append {
            payload,
            done,
            _permit: permit,
        };
        self.tx.send(request).await.map_err(|_| self.gone())
    }

    /// The error for a request the writer thread can no longer serve.
    fn gone(&self) -> WalError {
        self.shared.gone()
    }

    fn overloaded(&self) -> WalError {
        WalError::Overloaded {
            queued_requests: self.tx.max_capacity() - self.tx.capacity(),
        }
    }

    /// Queues a record now, without waiting for room, and returns the
    /// receiver of its durable LSN. The order of calls is the LSN order, so
    /// a synchronous caller fixes the order itself. At a queue bound the
    /// record is not queued and the receiver yields [`WalError::Overloaded`].
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Result<u64, WalError>> {
        let (done, reply) = oneshot::channel();
        if let Err((e, done)) = self.try_enqueue(payload, done) {
            let _ = done.send(Err(e));
        }
        reply
    }

    fn try_enqueue(
        &self,
        payload: Vec<u8>,
        done: Reply<u64>,
    ) -> Result<(), (WalError, Reply<u64>)> {
        if let Err(e) = self.shared.check() {
            return Err((e, done));
        }
        if payload.len() > MAX_RECORD_BYTES {
            return Err((WalError::RecordTooLarge { len: payload.len() }, done));
        }
        let charge = (payload.len() + RECORD_HEADER_BYTES) as u32;
        let Ok(permit) = Arc::clone(&self.queued_bytes).try_acquire_many_owned(charge) else {
            return Err((self.overloaded(), done));
        };
        let request = Request::Append {
            payload,
            done: Some(done),
            _permit: permit,
        };
        match self.tx.try_send(request) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = match &e {
                    mpsc::error::TrySendError::Full(_) => self.overloaded(),
                    mpsc::error::TrySendError::Closed(_) => self.gone(),
                };
                match e.into_inner() {
                    Request::Append {
                        done: Some(done), ..
                    } => Err((err, done)),
                    _ => unreachable!("try_send returns the request it was given"),
                }
            }
        }
    }

    /// Queues, now and without waiting for room, a snapshot covering every
    /// record queued before this call; the future resolves once it is
    /// durable. Call it in the same synchronous step that captured the
    /// state, or records queued in between are claimed but not contained.
    /// At the request bound it yields [`WalError::Overloaded`].
    pub fn snapshot_after_queued(
        &self,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<(), WalError>> + Send + 'static {
        let (done, reply) = oneshot::channel();
        let queued = self.shared.check().and_then(|()| {
            if bytes.len() > MAX_SNAPSHOT_BYTES {
                return Err(WalError::SnapshotTooLarge { len: bytes.len() });
            }
            let request = Request::Snapshot {
                covered_lsn: None,
                bytes,
                done,
            };
            self.tx.try_send(request).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => self.overloaded(),
                mpsc::error::TrySendError::Closed(_) => self.gone(),
            })
        });
        let shared = Arc::clone(&self.shared);
        async move {
            queued?;
            reply.await.unwrap_or_else(|_| Err(shared.gone()))
        }
    }
}

/// Records appended in the current batch and their waiters.
#[derive(Default)]
struct Batch {
    waiters: Vec<(u64, Reply<u64>)>,
    records: u64,
    payload_bytes: usize,
}

impl Batch {
    fn is_full(&self) -> bool {
        self.records >= GROUP_COMMIT_MAX_BATCH_RECORDS as u64
            || self.payload_bytes >= GROUP_COMMIT_MAX_BATCH_BYTES
    }
}

/// The writer thread: take what is queued, write it, fsync once, answer.
fn writer_loop(mut wal: Wal, mut rx: mpsc::Receiver<Request>, shared: &Shared) {
    let mut batch = Batch::default();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            handle_request(&mut wal, request, &mut batch, shared);
            if !batch.is_full() {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut wal, &mut batch, shared);
    }
}

fn handle_request(wal: &mut Wal, request: Request, batch: &mut Batch, shared: &Shared) {
    match request {
        Request::Append { payload, done, .. } => match wal.append(&payload) {
            Ok(lsn) => {
                batch.records += 1;
                batch.payload_bytes += payload.len();
                let bytes = (payload.len() + RECORD_HEADER_BYTES) as u64;
                shared.appends.fetch_add(1, Ordering::Relaxed);
                shared.bytes.fetch_add(bytes, Ordering::Relaxed);
                if let Some(done) = done {
                    batch.waiters.push((lsn, done));
                }
            }
            Err(e) => {
                note_failure(wal, shared);
                if let Some(done) = done {
                    let _ = done.send(Err(e));
                }
            }
        },
        Request::Snapshot {
            covered_lsn,
            bytes,
            done,
        } => {
            commit(wal, batch, shared);
            let covered_lsn = covered_lsn.unwrap_or(wal.last_lsn());
            let result = wal.write_snapshot(covered_lsn, &bytes);
            if result.is_ok() {
                shared.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            note_failure(wal, shared);
            let _ = done.send(result);
        }
    }
}

/// Fsyncs the batch once and answers every waiter in it.
fn commit(wal: &mut Wal, batch: &mut Batch, shared: &Shared) {
    let batch = std::mem::take(batch);
    if batch.records == 0 && batch.waiters.is_empty() {
        return;
    }
    let result = wal.sync();
    match &result {
        Ok(_) => {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            shared
                .max_records_per_sync
                .fetch_max(batch.records, Ordering::Relaxed);
        }
        Err(_) => note_failure(wal, shared),
    }
    for (lsn, done) in batch.waiters {
        let _ = done.send(result.clone().map(|_| lsn));
    }
}

/// Publishes the log's failure, if it has failed, to every handle.
fn note_failure(wal: &Wal, shared: &Shared) {
    if let Some(err) = &wal.failed {
        shared.set_failure(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        let len = 20 + (i as usize * 7) % 90;
        (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
    }

    /// Appends records `from..=to` (their LSNs) and syncs.
    fn append_range(wal: &mut Wal, from: u64, to: u64) {
        for i in from..=to {
            assert_eq!(wal.append(&payload(i)).unwrap(), i);
        }
        assert_eq!(wal.sync().unwrap(), to);
    }

    fn reopen(dir: &Path) -> Recovered {
        Wal::open(dir).unwrap().1
    }

    fn lsns(rec: &Recovered) -> Vec<u64> {
        rec.records.iter().map(|r| r.0).collect()
    }

    fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir.join(STATE_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .collect();
        v.sort();
        v
    }

    /// Byte offset of each record in a segment holding LSNs `first..`.
    fn record_offsets(first: u64, count: u64) -> Vec<u64> {
        let mut at = 0;
        (first..first + count)
            .map(|i| {
                let start = at;
                at += (RECORD_HEADER_BYTES + payload(i).len()) as u64;
                start
            })
            .collect()
    }

    fn flip_byte(path: &Path, offset: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    fn expect_corrupt(dir: &Path) -> (PathBuf, u64, String) {
        match Wal::open(dir) {
            Err(e @ WalError::Corrupt { .. }) => {
                let msg = e.to_string();
                let WalError::Corrupt { file, offset, .. } = e else {
                    unreachable!()
                };
                assert!(msg.contains(&file.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("offset {offset}")), "{msg}");
                assert!(msg.contains("restores its state from a peer"), "{msg}");
                (file, offset, msg)
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, open succeeded"),
        }
    }

    #[test]
    fn missing_state_dir_is_a_fresh_log() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.last_lsn(), 0);
        assert!(rec.snapshot.is_none() && rec.records.is_empty());
        assert!(rec.truncated_torn_tail.is_none());
        assert!(dir.path().join(STATE_DIR).is_dir());
    }

    #[test]
    fn round_trip_and_lsns_continue_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 50);
        let on_disk = wal.bytes_on_disk();
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.bytes_on_disk(), on_disk);
        assert_eq!(lsns(&rec), (1..=50).collect::<Vec<_>>());
        for (lsn, bytes) in &rec.records {
            assert_eq!(bytes, &payload(*lsn));
        }
        append_range(&mut wal, 51, 60);
        drop(wal);
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), (1..=60).collect::<Vec<_>>());
        assert_eq!(rec.records[55].1, payload(56));
    }

    #[test]
    fn snapshot_then_appends_recovers_snapshot_and_later_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 30);
        wal.write_snapshot(30, b"state@30").unwrap();
        assert_eq!(
            files(dir.path(), SEGMENT_PREFIX).len(),
            1,
            "covered segment deleted"
        );
        append_range(&mut wal, 31, 40);
        wal.write_snapshot(35, b"state@35").unwrap();
        append_range(&mut wal, 41, 45);
        drop(wal);
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.snapshot, Some((35, b"state@35".to_vec())));
        assert_eq!(lsns(&rec), (36..=45).collect::<Vec<_>>());
        assert_eq!(wal.last_lsn(), 45);
        let snaps = files(dir.path(), SNAPSHOT_PREFIX);
        assert_eq!(snaps.len(), 1, "old snapshot deleted: {snaps:?}");
        // log-31 holds 31..=40 and is only partly covered by 35, so it stays.
        let segs = files(dir.path(), SEGMENT_PREFIX);
        let names: Vec<String> = segs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "log-00000000000000000031.wal",
                "log-00000000000000000041.wal"
            ]
        );
    }

    #[test]
    fn snapshot_of_everything_then_reopen_continues_lsns() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 10);
        wal.write_snapshot(10, b"s").unwrap();
        wal.write_snapshot(10, b"s2").unwrap();
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.snapshot, Some((10, b"s2".to_vec())));
        assert!(rec.records.is_empty());
        assert_eq!(wal.append(b"x").unwrap(), 11);
    }

    #[test]
    fn snapshot_range_and_size_limits_are_refused_without_failing_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 5);
        assert!(matches!(
            wal.write_snapshot(6, b"x"),
            Err(WalError::SnapshotOutOfRange { .. })
        ));
        wal.write_snapshot(4, b"x").unwrap();
        assert!(matches!(
            wal.write_snapshot(3, b"x"),
            Err(WalError::SnapshotOutOfRange { .. })
        ));
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            wal.append(&big),
            Err(WalError::RecordTooLarge { .. })
        ));
        assert_eq!(wal.append(&vec![7u8; MAX_RECORD_BYTES]).unwrap(), 6);
        wal.sync().unwrap();
        drop(wal);
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), vec![5, 6]);
        assert_eq!(rec.records[1].1.len(), MAX_RECORD_BYTES);
    }

    #[test]
    fn snapshot_is_not_written_when_the_records_it_covers_cannot_be_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        for i in 1..=5 {
            wal.append(&payload(i)).unwrap();
        }
        wal.fail_next_sync = true;
        let err = wal.write_snapshot(5, b"claims 1..=5").unwrap_err();
        assert!(err.to_string().contains("injected sync failure"), "{err}");
        assert!(files(dir.path(), SNAPSHOT_PREFIX).is_empty());
        assert!(matches!(wal.append(b"x"), Err(WalError::Failed { .. })));
    }

    #[test]
    fn segments_roll_by_size_and_recover_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open_with_roll(dir.path(), 500).unwrap();
        append_range(&mut wal, 1, 40);
        drop(wal);
        assert!(files(dir.path(), SEGMENT_PREFIX).len() > 3);
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn leftover_snapshot_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(Wal::open(dir.path()).unwrap());
        let tmp = dir
            .path()
            .join(STATE_DIR)
            .join("snapshot-00000000000000000009.bin.tmp");
        fs::write(&tmp, b"half").unwrap();
        let rec = reopen(dir.path());
        assert!(rec.snapshot.is_none());
        assert!(!tmp.exists());
    }

    /// Builds a log with LSNs 1..=6 in one segment; returns the segment.
    fn six_records(dir: &Path) -> PathBuf {
        let (mut wal, _) = Wal::open(dir).unwrap();
        append_range(&mut wal, 1, 6);
        drop(wal);
        files(dir, SEGMENT_PREFIX).pop().unwrap()
    }

    #[test]
    fn torn_tail_at_every_byte_of_the_last_record_is_truncated() {
        let pristine = tempfile::tempdir().unwrap();
        let seg = six_records(pristine.path());
        let bytes = fs::read(&seg).unwrap();
        let last_start = record_offsets(1, 6)[5] as usize;
        for cut in last_start..bytes.len() {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join(STATE_DIR)).unwrap();
            let copy = dir.path().join(STATE_DIR).join(seg.file_name().unwrap());
            fs::write(&copy, &bytes[..cut]).unwrap();
            let (mut wal, rec) = Wal::open(dir.path()).unwrap();
            assert_eq!(lsns(&rec), (1..=5).collect::<Vec<_>>(), "cut at {cut}");
            assert_eq!(rec.records[4].1, payload(5));
            let expected = (cut > last_start).then(|| TornTail {
                file: copy.clone(),
                offset: last_start as u64,
                bytes_dropped: (cut - last_start) as u64,
            });
            assert_eq!(rec.truncated_torn_tail, expected, "cut at {cut}");
            assert_eq!(fs::metadata(&copy).unwrap().len(), last_start as u64);
            assert_eq!(
                wal.append(b"after").unwrap(),
                6,
                "the dropped LSN is reused"
            );
            wal.sync().unwrap();
        }
    }

    #[test]
    fn all_zero_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let seg = six_records(dir.path());
        let len = fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), (1..=6).collect::<Vec<_>>());
        let torn = rec.truncated_torn_tail.unwrap();
        assert_eq!((torn.offset, torn.bytes_dropped), (len, 4096));
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    }

    #[test]
    fn bad_checksum_on_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let seg = six_records(dir.path());
        let last_start = record_offsets(1, 6)[5];
        flip_byte(&seg, last_start + 4);
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), (1..=5).collect::<Vec<_>>());
        assert_eq!(rec.truncated_torn_tail.unwrap().offset, last_start);
    }

    #[test]
    fn oversize_length_on_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let seg = six_records(dir.path());
        let last_start = record_offsets(1, 6)[5] as usize;
        let mut bytes = fs::read(&seg).unwrap();
        bytes[last_start..last_start + 4].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        fs::write(&seg, bytes).unwrap();
        let rec = reopen(dir.path());
        assert_eq!(lsns(&rec), (1..=5).collect::<Vec<_>>());
    }

    #[test]
    fn flipped_byte_in_a_middle_record_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let seg = six_records(dir.path());
        let third = record_offsets(1, 6)[2];
        flip_byte(&seg, third + 12);
        let (file, offset, msg) = expect_corrupt(dir.path());
        assert_eq!((file, offset), (seg, third));
        assert!(msg.contains("checksum"), "{msg}");
    }

    #[test]
    fn length_bit_flip_past_end_in_a_middle_record_is_corrupt_not_torn() {
        let dir = tempfile::tempdir().unwrap();
        let seg = six_records(dir.path());
        let second = record_offsets(1, 6)[1];
        // Bit 20 of the length: 1 MiB more than the file holds, under the max.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[second as usize + 2] ^= 0x10;
        fs::write(&seg, bytes).unwrap();
        let (file, offset, _) = expect_corrupt(dir.path());
        assert_eq!((file, offset), (seg, second));
    }

    #[test]
    fn bad_record_in_a_non_last_segment_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 10);
        wal.write_snapshot(2, b"s").unwrap(); // keeps log-1, starts log-11
        append_range(&mut wal, 11, 12);
        drop(wal);
        let first = files(dir.path(), SEGMENT_PREFIX)[0].clone();
        // Damage the *last* record of the non-last segment: still corrupt.
        let last_start = record_offsets(1, 10)[9];
        flip_byte(&first, last_start + 9);
        let (file, offset, _) = expect_corrupt(dir.path());
        assert_eq!((file, offset), (first, last_start));
    }

    #[test]
    fn corrupt_snapshot_is_refused() {
        for damage in ["payload", "magic", "truncate", "length"] {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            append_range(&mut wal, 1, 3);
            wal.write_snapshot(3, b"the whole state").unwrap();
            drop(wal);
            let snap = files(dir.path(), SNAPSHOT_PREFIX).pop().unwrap();
            let mut bytes = fs::read(&snap).unwrap();
            match damage {
                "payload" => bytes[SNAPSHOT_HEADER_BYTES + 3] ^= 1,
                "magic" => bytes[0] = b'X',
                "truncate" => bytes.truncate(bytes.len() - 1),
                _ => bytes[20..28].copy_from_slice(&u64::MAX.to_le_bytes()),
            }
            fs::write(&snap, bytes).unwrap();
            let (file, _, _) = expect_corrupt(dir.path());
            assert_eq!(file, snap, "{damage}");
        }
    }

    #[test]
    fn missing_middle_segment_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 10);
        wal.write_snapshot(1, b"a").unwrap(); // log-11
        append_range(&mut wal, 11, 20);
        wal.write_snapshot(2, b"b").unwrap(); // log-21
        append_range(&mut wal, 21, 22);
        drop(wal);
        let segs = files(dir.path(), SEGMENT_PREFIX);
        assert_eq!(segs.len(), 3);
        fs::remove_file(&segs[1]).unwrap();
        let (file, offset, msg) = expect_corrupt(dir.path());
        assert_eq!((file, offset), (segs[2].clone(), 0));
        assert!(msg.contains("missing"), "{msg}");
    }

    #[test]
    fn missing_first_segment_after_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        append_range(&mut wal, 1, 10);
        wal.write_snapshot(5, b"a").unwrap(); // keeps log-1 (6..=10 needed)
        drop(wal);
        fs::remove_file(&files(dir.path(), SEGMENT_PREFIX)[0]).unwrap();
        let (_, _, msg) = expect_corrupt(dir.path());
        assert!(msg.contains("lsns 6..11 are missing"), "{msg}");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn group_commit_batches_concurrent_appends() {
        const N: u64 = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel();
        let writer = WalWriter::spawn_gated(wal, Some(gate));
        let rt = runtime();
        let mut lsns: Vec<u64> = rt.block_on(async {
            let tasks: Vec<_> = (1..=N)
                .map(|i| {
                    let w = writer.clone();
                    tokio::spawn(async move { w.append(payload(i)).await })
                })
                .collect();
            // Every task has queued its record before the writer starts.
            while writer.stats().queued_requests < N as usize {
                tokio::task::yield_now().await;
            }
            open_gate.send(()).unwrap();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap().unwrap());
            }
            out
        });
        lsns.sort_unstable();
        assert_eq!(lsns, (1..=N).collect::<Vec<_>>());
        let stats = writer.stats();
        assert_eq!(stats.appends, N);
        assert!(stats.syncs < N / 10, "{stats:?}");
        assert!(stats.max_records_per_sync <= GROUP_COMMIT_MAX_BATCH_RECORDS as u64);
        drop(writer);
        drop(rt);
        let rec = reopen(dir.path());
        assert_eq!(rec.records.len() as u64, N);
    }

    #[test]
    fn writer_nowait_and_snapshot_are_ordered_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let writer = WalWriter::spawn(wal);
        runtime().block_on(async {
            for i in 1..=5 {
                writer.append_nowait(payload(i)).await.unwrap();
            }
            assert_eq!(writer.append(payload(6)).await.unwrap(), 6);
            writer.snapshot(4, b"s4".to_vec()).await.unwrap();
            assert_eq!(writer.append(payload(7)).await.unwrap(), 7);
            let big = vec![0u8; MAX_RECORD_BYTES + 1];
            assert!(matches!(
                writer.append(big).await,
                Err(WalError::RecordTooLarge { .. })
            ));
            assert!(writer.snapshot(99, vec![]).await.is_err());
            assert_eq!(writer.append(payload(8)).await.unwrap(), 8, "still usable");
        });
        assert_eq!(writer.stats().snapshots, 1);
        drop(writer);
        let rec = reopen(dir.path());
        assert_eq!(rec.snapshot, Some((4, b"s4".to_vec())));
        assert_eq!(lsns(&rec), vec![5, 6, 7, 8]);
    }

    #[test]
    fn writer_io_error_fails_every_pending_and_later_request() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.fail_next_sync = true;
        let (open_gate, gate) = std::sync::mpsc::channel();
        let writer = WalWriter::spawn_gated(wal, Some(gate));
        runtime().block_on(async {
            let tasks: Vec<_> = (1..=3)
                .map(|i| {
                    let w = writer.clone();
                    tokio::spawn(async move { w.append(payload(i)).await })
                })
                .collect();
            while writer.stats().queued_requests < 3 {
                tokio::task::yield_now().await;
            }
            open_gate.send(()).unwrap();
            for t in tasks {
                let err = t.await.unwrap().unwrap_err();
                assert!(err.to_string().contains("injected sync failure"), "{err}");
            }
            let later = writer.append(payload(4)).await.unwrap_err();
            assert!(matches!(later, WalError::Failed { .. }), "{later}");
            assert!(later.to_string().contains("must stop serving writes"));
            assert!(writer.append_nowait(payload(5)).await.is_err());
            assert!(writer.snapshot(0, vec![]).await.is_err());
        });
        assert_eq!(writer.stats().syncs, 0);
    }

    #[test]
    fn submit_fixes_order_synchronously_and_snapshot_covers_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let writer = WalWriter::spawn(wal);
        let first: Vec<_> = (1..=100).map(|i| writer.submit(payload(i))).collect();
        let snap = writer.snapshot_after_queued(b"state@100".to_vec());
        let later: Vec<_> = (101..=110).map(|i| writer.submit(payload(i))).collect();
        runtime().block_on(async {
            for (i, r) in (1..).zip(first.into_iter().chain(later)) {
                assert_eq!(r.await.unwrap().unwrap(), i);
            }
            snap.await.unwrap();
        });
        drop(writer);
        let rec = reopen(dir.path());
        assert_eq!(rec.snapshot, Some((100, b"state@100".to_vec())));
        assert_eq!(lsns(&rec), (101..=110).collect::<Vec<_>>());
        assert_eq!(rec.records[0].1, payload(101));
    }

    #[test]
    fn submit_at_the_request_bound_is_refused_and_the_rest_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let (open_gate, gate) = std::sync::mpsc::channel();
        let writer = WalWriter::spawn_gated(wal, Some(gate));
        let queued: Vec<_> = (0..WRITER_QUEUE_CAPACITY_REQUESTS)
            .map(|_| writer.submit(Vec::new()))
            .collect();
        let mut refused = writer.submit(Vec::new());
        let overloaded = refused.try_recv().unwrap().unwrap_err();
        assert!(
            matches!(overloaded, WalError::Overloaded { .. }),
            "{overloaded}"
        );
        let snap_refused = writer.snapshot_after_queued(Vec::new());
        open_gate.send(()).unwrap();
        runtime().block_on(async {
            assert!(matches!(
                snap_refused.await,
                Err(WalError::Overloaded { .. })
            ));
            for (i, r) in (1..).zip(queued) {
                assert_eq!(r.await.unwrap().unwrap(), i);
            }
        });
    }

    #[test]
    fn submit_at_the_byte_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let (_open_gate, gate) = std::sync::mpsc::channel::<()>();
        let writer = WalWriter::spawn_gated(wal, Some(gate));
        let fit = WRITER_QUEUE_MAX_BYTES / (MAX_RECORD_BYTES + RECORD_HEADER_BYTES);
        let mut receivers: Vec<_> = (0..=fit)
            .map(|_| writer.submit(vec![0u8; MAX_RECORD_BYTES]))
            .collect();
        let mut last = receivers.pop().unwrap();
        assert!(matches!(
            last.try_recv(),
            Ok(Err(WalError::Overloaded { .. }))
        ));
        assert_eq!(writer.stats().queued_requests, fit);
    }

    /// `cargo test --release --lib wal -- --ignored --nocapture`.
    /// `WAL_BENCH_DIR` picks the file system (default: a temp dir).
    #[test]
    #[ignore]
    fn bench_group_commit_throughput() {
        const RECORDS: usize = 200_000;
        const CONCURRENCY: usize = 64;
        const PAYLOAD_BYTES: usize = 200;
        let dir = match std::env::var_os("WAL_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let writer = WalWriter::spawn(wal);
        let started = std::time::Instant::now();
        let mut latencies: Vec<std::time::Duration> = runtime().block_on(async {
            let tasks: Vec<_> = (0..CONCURRENCY)
                .map(|_| {
                    let w = writer.clone();
                    tokio::spawn(async move {
                        let mut lat = Vec::with_capacity(RECORDS / CONCURRENCY);
                        for _ in 0..RECORDS / CONCURRENCY {
                            let t = std::time::Instant::now();
                            w.append(vec![0xab; PAYLOAD_BYTES]).await.unwrap();
                            lat.push(t.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        let stats = writer.stats();
        println!(
            "wal bench: {} records of {PAYLOAD_BYTES} B, concurrency {CONCURRENCY}, dir {}: \
             {:.0} records/s; ack latency p50 {:?} p99 {:?} max {:?}; {} fsyncs, {:.1} records/fsync \
             (max {})",
            latencies.len(),
            dir.path().display(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            stats.syncs,
            stats.records_per_sync(),
            stats.max_records_per_sync,
        );
    }
}
