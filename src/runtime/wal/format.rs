//! The byte format of the log's files and its pure decoders: file headers
//! (magic, format version, owner identity), record framing, the torn-tail
//! rules, and the format-1 framing read once to upgrade a data dir written
//! by an older jujud.
//!
//! Owns only bytes in, values out: no I/O, no paths (the caller names the
//! file in its error), no allocation beyond the bytes given. Must never
//! accept a file whose header names another cluster or node, nor a record
//! it could not verify. [`decode_log`] and [`decode_snapshot`] are the
//! entry points for the fuzz harness.

use super::{MAX_RECORD_BYTES, MAX_SNAPSHOT_BYTES};

/// The format these files are written in. Format 1 had no file header and
/// an 8-byte record header; it is read only by the upgrade.
pub const LOG_FORMAT_VERSION: u32 = 2;
/// First bytes of every segment (`log-*.wal`).
pub const SEGMENT_MAGIC: &[u8; 8] = b"JJWALOG\0";
/// First bytes of every format-2 snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"JJSNAP2\0";
/// First bytes of a format-1 snapshot (upgrade only).
pub(super) const LEGACY_SNAPSHOT_MAGIC: &[u8; 8] = b"JJSNAP1\0";
/// Longest cluster id or node id a header may hold (a CA fingerprint is
/// 64 hex characters, a node id 16).
pub const MAX_IDENTITY_FIELD_BYTES: usize = 128;
/// Record header: u32 LE payload length, u32 LE crc32 of those 4 bytes,
/// u32 LE crc32 of the 4 length bytes and the payload.
pub const RECORD_HEADER_BYTES: usize = 12;
/// Format-1 record header: u32 LE length, u32 LE crc32(length ‖ payload).
pub(super) const LEGACY_RECORD_HEADER_BYTES: usize = 8;
/// Bytes of a snapshot after its file header: u64 LE payload length, u32
/// LE crc32 of the payload.
const SNAPSHOT_TRAILER_BYTES: usize = 12;
/// Format-1 snapshot header: magic, u64 lsn, u32 crc, u64 length.
pub(super) const LEGACY_SNAPSHOT_HEADER_BYTES: usize = 28;

/// Who a log belongs to: written into every file header, compared on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The cluster: its CA fingerprint (lowercase hex), from `node.json`.
    pub cluster: String,
    /// This node's id (16 lowercase hex), from `node.json`.
    pub node: String,
}

/// Why a file's bytes were refused. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Damage at `offset`.
    Corrupt { offset: u64, reason: String },
    /// A well-formed header naming another owner.
    Foreign { found: LogIdentity },
    /// A format this jujud does not know.
    Version { found: u32 },
}

fn corrupt(offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt { offset: offset as u64, reason: reason.into() }
}

/// A checked file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub identity: LogIdentity,
    /// A segment's first LSN, or the LSN a snapshot covers.
    pub lsn: u64,
    /// Bytes the header takes at the start of the file.
    pub len: usize,
}

/// `magic ‖ u32 version ‖ u8 len ‖ cluster ‖ u8 len ‖ node ‖ u64 lsn ‖ u32
/// crc32 of all before`.
pub fn encode_header(magic: &[u8; 8], id: &LogIdentity, lsn: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + 2 + id.cluster.len() + id.node.len() + 12);
    out.extend_from_slice(magic);
    out.extend_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    for field in [&id.cluster, &id.node] {
        let bytes = &field.as_bytes()[..field.len().min(MAX_IDENTITY_FIELD_BYTES)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A cursor over a header that refuses to read past the end.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            let reason = format!(
                "the file header is cut short ({what} at byte {} missing); file is {} bytes",
                self.at,
                self.buf.len()
            );
            return Err(corrupt(self.at, reason));
        };
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn text(&mut self, what: &str) -> Result<String, DecodeError> {
        let len = self.take(1, what)?[0] as usize;
        let at = self.at;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(at, format!("{what} in the header is not UTF-8")))
    }
}

/// Checks the header at the start of `buf`: magic, version, checksum, then
/// owner and LSN against what the caller expects.
pub fn decode_header(
    buf: &[u8],
    magic: &[u8; 8],
    expected: &LogIdentity,
    name_lsn: u64,
) -> Result<FileHeader, DecodeError> {
    if buf.is_empty() {
        return Err(corrupt(0, "the file is empty (0 bytes): it was emptied or never written"));
    }
    let mut c = Cursor { buf, at: 0 };
    if c.take(8, "magic")? != magic {
        return Err(corrupt(0, "no jujud header at the start of the file (bad magic)"));
    }
    let version = c.u32("format version")?;
    if version != LOG_FORMAT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let cluster = c.text("cluster id")?;
    let node = c.text("node id")?;
    let lsn = c.u64("lsn")?;
    let body_end = c.at;
    let crc = c.u32("header checksum")?;
    if crc32fast::hash(&buf[..body_end]) != crc {
        return Err(corrupt(0, "file header checksum mismatch"));
    }
    let identity = LogIdentity { cluster, node };
    if &identity != expected {
        return Err(DecodeError::Foreign { found: identity });
    }
    if lsn != name_lsn {
        return Err(corrupt(
            body_end - 8,
            format!("header says lsn {lsn} but the file name says {name_lsn}"),
        ));
    }
    Ok(FileHeader { identity, lsn, len: c.at })
}

/// The record framing of format 2.
pub fn record_header(payload: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
    let len_bytes = (payload.len() as u32).to_le_bytes();
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[..4].copy_from_slice(&len_bytes);
    h[4..8].copy_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    h[8..].copy_from_slice(&crc_of_record(&len_bytes, payload).to_le_bytes());
    h
}

pub(super) fn crc_of_record(len_bytes: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// One segment file, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogScan {
    /// Bytes of the file header.
    pub header_len: usize,
    /// Byte offset of each good record, in order.
    pub offsets: Vec<u64>,
    /// The payload of each good record, in order.
    pub records: Vec<Vec<u8>>,
    /// Where the good records end; less than the file's length only when a
    /// torn tail follows.
    pub valid_len: u64,
}

/// Why the record at an offset is not valid.
#[derive(Debug)]
enum BadRecord {
    ShortHeader,
    HeaderChecksum,
    TooLong { len: usize },
    PastEnd { len: usize },
    Checksum { len: usize },
}

/// Checks the record at `at`; returns where it ends.
fn check_record(buf: &[u8], at: usize) -> Result<usize, BadRecord> {
    let Some(h) = buf.get(at..at + RECORD_HEADER_BYTES) else {
        return Err(BadRecord::ShortHeader);
    };
    let len_bytes = [h[0], h[1], h[2], h[3]];
    if crc32fast::hash(&len_bytes).to_le_bytes() != h[4..8] {
        return Err(BadRecord::HeaderChecksum);
    }
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(BadRecord::TooLong { len });
    }
    let start = at + RECORD_HEADER_BYTES;
    let Some(payload) = buf.get(start..start + len) else {
        return Err(BadRecord::PastEnd { len });
    };
    if crc_of_record(&len_bytes, payload).to_le_bytes() != h[8..12] {
        return Err(BadRecord::Checksum { len });
    }
    Ok(start + len)
}

/// The torn-tail rules (see the module doc of `wal`): whether a bad record
/// at `at` in the last segment is an append cut by a crash.
fn is_torn_tail(buf: &[u8], at: usize, bad: &BadRecord) -> bool {
    let zero_from = |from: usize| buf.get(from..).is_none_or(|rest| rest.iter().all(|&b| b == 0));
    match *bad {
        BadRecord::ShortHeader | BadRecord::PastEnd { .. } => true,
        BadRecord::HeaderChecksum => zero_from(at),
        BadRecord::Checksum { len } => zero_from(at + RECORD_HEADER_BYTES + len),
        BadRecord::TooLong { .. } => false,
    }
}

fn describe_bad(bad: &BadRecord, is_last: bool) -> String {
    let place = if is_last {
        "and non-zero data follows it, so it is damage, not a torn tail"
    } else {
        "in a segment that was complete and fsync'd before the next one began"
    };
    match bad {
        BadRecord::ShortHeader => format!("record header is cut short {place}"),
        BadRecord::HeaderChecksum => format!("record header (length) checksum mismatch {place}"),
        BadRecord::TooLong { len } => {
            format!("record length {len} exceeds {MAX_RECORD_BYTES}, which is never written")
        }
        BadRecord::PastEnd { len } => {
            format!("record length {len} runs past the end of the file {place}")
        }
        BadRecord::Checksum { len } => format!("checksum mismatch on a {len}-byte record {place}"),
    }
}

/// Decodes a whole segment file: its header (owner `expected`, first LSN
/// `first_lsn`) and its records. In the last segment (`is_last`) a torn
/// tail ends the scan at [`LogScan::valid_len`]; any other bad byte is
/// [`DecodeError::Corrupt`] at its offset.
pub fn decode_log(
    buf: &[u8],
    expected: &LogIdentity,
    first_lsn: u64,
    is_last: bool,
) -> Result<LogScan, DecodeError> {
    let header = decode_header(buf, SEGMENT_MAGIC, expected, first_lsn)?;
    let mut scan = LogScan { header_len: header.len, ..LogScan::default() };
    let mut at = header.len;
    while at < buf.len() {
        match check_record(buf, at) {
            Ok(end) => {
                scan.offsets.push(at as u64);
                scan.records.push(buf[at + RECORD_HEADER_BYTES..end].to_vec());
                at = end;
            }
            Err(bad) if is_last && is_torn_tail(buf, at, &bad) => break,
            Err(bad) => return Err(corrupt(at, describe_bad(&bad, is_last))),
        }
    }
    scan.valid_len = at as u64;
    Ok(scan)
}

/// Decodes a whole snapshot file: header (owner `expected`, covering
/// `name_lsn`), payload length and checksum. Returns the payload.
pub fn decode_snapshot<'a>(
    buf: &'a [u8],
    expected: &LogIdentity,
    name_lsn: u64,
) -> Result<&'a [u8], DecodeError> {
    let header = decode_header(buf, SNAPSHOT_MAGIC, expected, name_lsn)?;
    let mut c = Cursor { buf, at: header.len };
    let len = c.u64("payload length")?;
    let crc = c.u32("payload checksum")?;
    let in_file = (buf.len() - c.at) as u64;
    if len > MAX_SNAPSHOT_BYTES as u64 || len != in_file {
        let reason = format!(
            "header says {len} payload bytes, the file holds {in_file} (limit {MAX_SNAPSHOT_BYTES})"
        );
        return Err(corrupt(header.len, reason));
    }
    let payload = &buf[c.at..];
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(c.at, "snapshot checksum mismatch"));
    }
    Ok(payload)
}

/// A snapshot file's bytes: header, then length and checksum, then payload
/// (for tests and the fuzz corpus; the WAL writes the payload straight
/// from the caller's buffer after [`snapshot_prefix`]).
pub fn encode_snapshot(id: &LogIdentity, lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = snapshot_prefix(id, lsn, payload);
    out.extend_from_slice(payload);
    out
}

/// The file-header prefix of a snapshot: header, u64 LE payload length,
/// u32 LE crc32 of the payload ([`SNAPSHOT_TRAILER_BYTES`]).
pub(super) fn snapshot_prefix(id: &LogIdentity, lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = encode_header(SNAPSHOT_MAGIC, id, lsn);
    out.reserve(SNAPSHOT_TRAILER_BYTES);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out
}

/// Decodes a format-1 segment strictly (every record valid, no torn tail):
/// used only to upgrade a data dir written by an older jujud, which was
/// stopped before the upgrade.
pub fn decode_legacy_log(buf: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let Some(h) = buf.get(at..at + LEGACY_RECORD_HEADER_BYTES) else {
            return Err(corrupt(at, "format-1 record header cut short"));
        };
        let len_bytes = [h[0], h[1], h[2], h[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let start = at + LEGACY_RECORD_HEADER_BYTES;
        let payload = (len <= MAX_RECORD_BYTES).then(|| buf.get(start..start + len)).flatten();
        let Some(payload) = payload else {
            return Err(corrupt(at, format!("format-1 record length {len} does not fit the file")));
        };
        if crc_of_record(&len_bytes, payload).to_le_bytes() != h[4..8] {
            return Err(corrupt(at, "format-1 record checksum mismatch"));
        }
        records.push(payload);
        at = start + len;
    }
    Ok(records)
}

/// Decodes a format-1 snapshot covering `name_lsn`; returns its payload.
pub fn decode_legacy_snapshot(buf: &[u8], name_lsn: u64) -> Result<&[u8], DecodeError> {
    let Some(h) = buf.get(..LEGACY_SNAPSHOT_HEADER_BYTES) else {
        return Err(corrupt(buf.len(), "format-1 snapshot shorter than its header"));
    };
    if &h[..8] != LEGACY_SNAPSHOT_MAGIC {
        return Err(corrupt(0, "bad snapshot magic (not a jujud snapshot)"));
    }
    let mut c = Cursor { buf: h, at: 8 };
    let lsn = c.u64("lsn")?;
    let crc = c.u32("checksum")?;
    let len = c.u64("length")?;
    if lsn != name_lsn {
        return Err(corrupt(
            8,
            format!("snapshot header covers lsn {lsn} but its name says {name_lsn}"),
        ));
    }
    let payload = &buf[LEGACY_SNAPSHOT_HEADER_BYTES..];
    if len != payload.len() as u64 || crc32fast::hash(payload) != crc {
        return Err(corrupt(
            LEGACY_SNAPSHOT_HEADER_BYTES,
            "format-1 snapshot length or checksum mismatch",
        ));
    }
    Ok(payload)
}
