//! Recovery of the log from disk: listing the state dir, reading and
//! checking snapshots and segments, and the torn-tail rules (see the parent
//! module for them). Must never accept a record it could not verify.

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
pub(super) fn read_snapshot(path: &Path, name_lsn: u64) -> Result<(SnapshotFile, Vec<u8>), WalError> {
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
pub(super) fn parse_snapshot_header(
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
pub(super) fn write_snapshot_file(state_dir: &Path, lsn: u64, bytes: &[u8]) -> Result<SnapshotFile, WalError> {
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
pub(super) struct Chain {
    pub(super) segments: Vec<Segment>,
    pub(super) records: Vec<(u64, Vec<u8>)>,
    pub(super) torn: Option<TornTail>,
    pub(super) next_lsn: u64,
}

/// Reads every segment in order, checking that they chain without gaps
/// from the snapshot on.
pub(super) fn recover_segments(found: &[(u64, PathBuf)], snap_lsn: u64) -> Result<Chain, WalError> {
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

pub(super) fn read_segment_file(path: &Path) -> Result<Vec<u8>, WalError> {
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
pub(super) struct SegmentScan {
    pub(super) records: Vec<Vec<u8>>,
    pub(super) valid_len: u64,
}

/// Why the record at an offset is not valid.
#[derive(Debug)]
pub(super) enum BadRecord {
    ShortHeader,
    TooLong { len: usize },
    PastEnd { len: usize },
    Checksum { len: usize },
}

/// Checks the record at `at`; returns where it ends.
pub(super) fn check_record(buf: &[u8], at: usize) -> Result<usize, BadRecord> {
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
pub(super) fn scan_segment(path: &Path, buf: &[u8], is_last: bool) -> Result<SegmentScan, WalError> {
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
pub(super) fn is_torn_tail(buf: &[u8], at: usize, bad: &BadRecord) -> bool {
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
pub(super) fn one_bit_flip_explains(buf: &[u8], at: usize) -> bool {
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

pub(super) fn describe_bad(bad: &BadRecord, is_last: bool) -> String {
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

