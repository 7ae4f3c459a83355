//! Recovery of the log from disk: listing the state dir, reading and
//! checking snapshots and segments with the pure decoders of `format`, and
//! upgrading format-1 files (no header) in place. Must never accept a
//! record it could not verify, nor a file of another owner, and never
//! truncate or rewrite a file it could not read.

use super::format::{self, DecodeError};
use super::*;

/// The files of `DIR/state`, each list sorted by LSN.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) snapshots: Vec<(u64, PathBuf)>,
    pub(super) segments: Vec<(u64, PathBuf)>,
    pub(super) temps: Vec<PathBuf>,
}

pub(super) fn list_state_dir(state_dir: &Path) -> Result<Listing, WalError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(state_dir).map_err(|e| io_err("list", state_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", state_dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(SNAPSHOT_PREFIX) || name.starts_with(SEGMENT_PREFIX);
        if ours && name.ends_with(TMP_SUFFIX) {
            listing.temps.push(path);
        } else if let Some(lsn) = parse_numbered(&name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((lsn, path));
        } else if let Some(lsn) = parse_numbered(&name, SEGMENT_PREFIX, SEGMENT_SUFFIX) {
            if lsn == 0 {
                return Err(corrupt(&path, 0, "segment names LSN 0, but LSNs start at 1"));
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

/// Turns a pure decoder's refusal into a [`WalError`] naming `path`.
pub(super) fn refused(path: &Path, id: &LogIdentity, e: DecodeError) -> WalError {
    match e {
        DecodeError::Corrupt { offset, reason } => corrupt(path, offset, reason),
        DecodeError::Foreign { found } => WalError::Foreign {
            file: path.to_path_buf(),
            owners: Box::new(Owners { found, ours: id.clone() }),
        },
        DecodeError::Version { found } => WalError::Version { file: path.to_path_buf(), found },
    }
}

/// Reads a whole file of at most `limit` bytes (a bigger one is `Corrupt`:
/// this WAL never writes one).
fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, WalError> {
    let len = fs::metadata(path).map_err(|e| io_err(what, path, e))?.len();
    if len > limit {
        return Err(corrupt(
            path,
            limit,
            format!("file is {len} bytes, over the {limit}-byte limit"),
        ));
    }
    fs::read(path).map_err(|e| io_err(what, path, e))
}

const MAX_SNAPSHOT_FILE_BYTES: u64 = MAX_SNAPSHOT_BYTES as u64 + 4096;

/// Reads and checks a snapshot file named for `name_lsn`.
pub(super) fn read_snapshot(
    path: &Path,
    id: &LogIdentity,
    name_lsn: u64,
) -> Result<(SnapshotFile, Vec<u8>), WalError> {
    let mut buf: Vec<u8> = read_bounded(path, MAX_SNAPSHOT_FILE_BYTES, "read snapshot")?;
    let file_len = buf.len() as u64;
    let payload_len =
        format::decode_snapshot(&buf, id, name_lsn).map_err(|e| refused(path, id, e))?.len();
    buf.drain(..buf.len() - payload_len); // in place: no second copy of the payload
    Ok((SnapshotFile { lsn: name_lsn, path: path.to_path_buf(), bytes: file_len }, buf))
}

/// Writes `snapshot-<lsn>.bin` (mode 0600) via a fsync'd temp file and a
/// rename. The caller fsyncs the directory. On failure the temp file is
/// removed.
pub(super) fn write_snapshot_file(
    state_dir: &Path,
    id: &LogIdentity,
    lsn: u64,
    bytes: &[u8],
) -> Result<SnapshotFile, WalError> {
    let name = numbered_name(SNAPSHOT_PREFIX, lsn, SNAPSHOT_SUFFIX);
    let path = state_dir.join(&name);
    let prefix = format::snapshot_prefix(id, lsn, bytes);
    write_new_file(&path, &[&prefix, bytes], "write snapshot")?;
    Ok(SnapshotFile { lsn, path, bytes: (prefix.len() + bytes.len()) as u64 })
}

/// Writes `parts` to `<path>.tmp` (mode 0600), fsyncs, renames onto
/// `path`. The caller fsyncs the directory.
pub(super) fn write_new_file(
    path: &Path,
    parts: &[&[u8]],
    op: &'static str,
) -> Result<(), WalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let result = private_file(&tmp)
        .and_then(|mut f| {
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        })
        .map_err(|e| io_err(op, &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| io_err("rename", &tmp, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates (truncating) a file readable by its owner only.
fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)
}

/// The log as recovered from its segments.
pub(super) struct Chain {
    pub(super) segments: Vec<Segment>,
    pub(super) records: Vec<(u64, Vec<u8>)>,
    pub(super) torn: Option<TornTail>,
    pub(super) next_lsn: u64,
}

fn check_link(
    i: usize,
    first_lsn: u64,
    path: &Path,
    chain: &Chain,
    snap_lsn: u64,
) -> Result<(), WalError> {
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
    Ok(())
}

/// Reads every segment in order, checking that they chain without gaps
/// from the snapshot on.
pub(super) fn recover_segments(
    found: &[(u64, PathBuf)],
    id: &LogIdentity,
    snap_lsn: u64,
) -> Result<Chain, WalError> {
    let mut chain = Chain {
        segments: Vec::with_capacity(found.len()),
        records: Vec::new(),
        torn: None,
        next_lsn: snap_lsn + 1,
    };
    for (i, (first_lsn, path)) in found.iter().enumerate() {
        let first_lsn = *first_lsn;
        check_link(i, first_lsn, path, &chain, snap_lsn)?;
        let buf = read_bounded(path, MAX_SEGMENT_FILE_BYTES, "read segment")?;
        let is_last = i + 1 == found.len();
        let scan =
            format::decode_log(&buf, id, first_lsn, is_last).map_err(|e| refused(path, id, e))?;
        let count = scan.records.len() as u64;
        for (lsn, record) in (first_lsn..).zip(scan.records) {
            if lsn > snap_lsn {
                chain.records.push((lsn, record));
            }
        }
        chain.next_lsn = first_lsn + count;
        if scan.valid_len < buf.len() as u64 {
            let bytes_dropped = buf.len() as u64 - scan.valid_len;
            chain.torn =
                Some(TornTail { file: path.clone(), offset: scan.valid_len, bytes_dropped });
        }
        chain.segments.push(Segment { first_lsn, path: path.clone(), bytes: scan.valid_len });
    }
    check_reaches_snapshot(&chain, snap_lsn)?;
    Ok(chain)
}

pub(super) fn check_reaches_snapshot(chain: &Chain, snap_lsn: u64) -> Result<(), WalError> {
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

/// Whether `path` starts with `magic` (a format-2 file).
fn has_magic(path: &Path, magic: &[u8; 8]) -> Result<bool, WalError> {
    let mut head = [0u8; 8];
    let mut f = File::open(path).map_err(|e| io_err("open", path, e))?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(io_err("read", path, e)),
        }
    }
    Ok(got == head.len() && &head == magic)
}

/// Rewrites every format-1 file of the listing (no header) as format 2,
/// each atomically (temp file, fsync, rename), then fsyncs the dir. A
/// format-1 file that does not decode whole is `Corrupt` and nothing is
/// rewritten from it. Returns how many files were upgraded.
pub(super) fn upgrade_legacy(
    state_dir: &Path,
    listing: &Listing,
    id: &LogIdentity,
) -> Result<usize, WalError> {
    let mut upgraded = 0;
    for (lsn, path) in &listing.snapshots {
        if has_magic(path, format::SNAPSHOT_MAGIC)? {
            continue;
        }
        let buf = read_bounded(path, MAX_SNAPSHOT_FILE_BYTES, "read snapshot")?;
        let payload =
            format::decode_legacy_snapshot(&buf, *lsn).map_err(|e| legacy_refused(path, e))?;
        write_snapshot_file(state_dir, id, *lsn, payload)?;
        upgraded += 1;
    }
    for (lsn, path) in &listing.segments {
        if has_magic(path, format::SEGMENT_MAGIC)? {
            continue;
        }
        let buf = read_bounded(path, MAX_SEGMENT_FILE_BYTES, "read segment")?;
        let records = format::decode_legacy_log(&buf).map_err(|e| legacy_refused(path, e))?;
        let mut out = format::encode_header(format::SEGMENT_MAGIC, id, *lsn);
        out.reserve(buf.len() + records.len() * 4);
        for r in records {
            out.extend_from_slice(&format::record_header(r));
            out.extend_from_slice(r);
        }
        write_new_file(path, &[&out], "upgrade segment")?;
        upgraded += 1;
    }
    if upgraded > 0 {
        sync_dir(state_dir)?;
        tracing::warn!(dir = %state_dir.display(), files = upgraded, "WAL: upgraded a state log written by an older jujud (no header) to format {}", format::LOG_FORMAT_VERSION);
    }
    Ok(upgraded)
}

fn legacy_refused(path: &Path, e: DecodeError) -> WalError {
    match e {
        DecodeError::Corrupt { offset, reason } => corrupt(
            path,
            offset,
            format!(
                "{reason}; this format-1 file (written by an older jujud) must be whole to be upgraded"
            ),
        ),
        other => refused(path, &LogIdentity { cluster: String::new(), node: String::new() }, other),
    }
}
