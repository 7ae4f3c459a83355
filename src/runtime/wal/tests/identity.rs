//! Tests of the files' headers and owners, missing and emptied logs, the
//! upgrade of headerless logs, modes, and the pure decoders.

use super::*;

/// Finding 9: another node's (or cluster's) log is refused by its header.
#[test]
fn foreign_log_is_refused_naming_the_file_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let seg = six_records(dir.path());
    let before = fs::read(&seg).unwrap();
    for other in [
        LogIdentity { cluster: "cd".repeat(32), node: id().node },
        LogIdentity { cluster: id().cluster, node: "0000000000000002".into() },
    ] {
        let err = Wal::open(dir.path(), &other, Expect::Present).err().expect("refused");
        assert!(matches!(err, WalError::Foreign { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&seg.display().to_string()) && msg.contains(&id().cluster), "{msg}");
    }
    assert_eq!(fs::read(&seg).unwrap(), before);
}

/// A log that `node.json` says exists must be there: a deleted state dir,
/// a state dir without segments and an emptied segment are refused.
#[test]
fn missing_or_emptied_log_is_refused_when_one_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open(dir.path(), &id(), Expect::Present).err().expect("refused");
    assert!(matches!(err, WalError::Missing { .. }), "{err}");
    assert!(!dir.path().join(STATE_DIR).exists(), "nothing created");

    let seg = six_records(dir.path());
    fs::write(&seg, b"").unwrap();
    let err = Wal::open(dir.path(), &id(), Expect::Present).err().expect("refused");
    assert!(err.to_string().contains("empty") && err.to_string().contains(RESTORE_MARKER), "{err}");
    assert_eq!(fs::metadata(&seg).unwrap().len(), 0);

    fs::remove_file(&seg).unwrap();
    let err = Wal::open(dir.path(), &id(), Expect::Present).err().expect("refused");
    assert!(matches!(err, WalError::Missing { .. }), "{err}");
}

/// Format-1 files (no header, 8-byte record headers) are upgraded in place
/// when the caller allows it; a damaged one is refused and left as it was.
#[test]
fn format_1_files_are_upgraded_and_damaged_ones_refused_untouched() {
    let legacy_segment = |from: u64, to: u64| {
        let mut out = Vec::new();
        for i in from..=to {
            let p = payload(i);
            let len = (p.len() as u32).to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(&format::crc_of_record(&len, &p).to_le_bytes());
            out.extend_from_slice(&p);
        }
        out
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(STATE_DIR);
    fs::create_dir(&state).unwrap();
    let snap_payload = b"legacy state".to_vec();
    let mut snap = format::LEGACY_SNAPSHOT_MAGIC.to_vec();
    snap.extend_from_slice(&2u64.to_le_bytes());
    snap.extend_from_slice(&crc32fast::hash(&snap_payload).to_le_bytes());
    snap.extend_from_slice(&(snap_payload.len() as u64).to_le_bytes());
    snap.extend_from_slice(&snap_payload);
    fs::write(state.join(numbered_name(SNAPSHOT_PREFIX, 2, SNAPSHOT_SUFFIX)), &snap).unwrap();
    fs::write(state.join(numbered_name(SEGMENT_PREFIX, 1, SEGMENT_SUFFIX)), legacy_segment(1, 4))
        .unwrap();
    assert!(
        Wal::open(dir.path(), &id(), Expect::Present).is_err(),
        "no upgrade once node.json records a log"
    );
    let (mut wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    assert_eq!(rec.snapshot, Some((2, snap_payload.clone())));
    assert_eq!(lsns(&rec), vec![3, 4]);
    append_range(&mut wal, 5, 6);
    drop(wal);
    let rec = Wal::open(dir.path(), &id(), Expect::Present).unwrap().1;
    assert_eq!(lsns(&rec), vec![3, 4, 5, 6]);

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(STATE_DIR);
    fs::create_dir(&state).unwrap();
    let mut bytes = legacy_segment(1, 4);
    bytes[0] ^= 0xff;
    let seg = state.join(numbered_name(SEGMENT_PREFIX, 1, SEGMENT_SUFFIX));
    fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{err}");
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

/// Every file and the state dir are owner-only.
#[test]
fn log_files_are_0600_and_the_state_dir_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 3);
    wal.write_snapshot(2, b"s").unwrap();
    drop(wal);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(STATE_DIR)), 0o700);
    let all = fs::read_dir(dir.path().join(STATE_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert!(all.len() >= 2);
    for p in all {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// The pure decoder agrees with recovery on a real file.
#[test]
fn decode_log_reads_a_written_segment() {
    let dir = tempfile::tempdir().unwrap();
    let seg = six_records(dir.path());
    let bytes = fs::read(&seg).unwrap();
    let scan = decode_log(&bytes, &id(), 1, true).unwrap();
    assert_eq!(scan.records, (1..=6).map(payload).collect::<Vec<_>>());
    assert_eq!(scan.offsets, record_offsets(1, 6));
    assert_eq!(scan.valid_len, bytes.len() as u64);
    assert!(
        matches!(decode_log(&bytes, &id(), 2, true), Err(DecodeError::Corrupt { .. })),
        "name lsn checked"
    );
}

/// Every single-byte change anywhere in a segment, before its last record,
/// is refused; one inside the last record at most drops that record (a
/// torn tail). No change ever yields records that were not written.
#[test]
fn any_flipped_byte_is_refused_unless_it_is_in_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let seg = six_records(dir.path());
    let pristine = fs::read(&seg).unwrap();
    let written: Vec<Vec<u8>> = (1..=6).map(payload).collect();
    let last_start = record_offsets(1, 6)[5] as usize;
    for at in 0..pristine.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = pristine.clone();
            bytes[at] ^= flip;
            for is_last in [true, false] {
                match decode_log(&bytes, &id(), 1, is_last) {
                    Err(_) => {}
                    Ok(scan) => {
                        assert!(
                            is_last && at >= last_start,
                            "byte {at} ^ {flip:#x} accepted (is_last {is_last})"
                        );
                        assert_eq!(scan.records[..], written[..5], "byte {at} ^ {flip:#x}");
                    }
                }
            }
        }
    }
    let snap = format::encode_snapshot(&id(), 3, b"the whole state");
    for at in 0..snap.len() {
        let mut bytes = snap.clone();
        bytes[at] ^= 0x10;
        assert!(
            decode_snapshot(&bytes, &id(), 3).is_err(),
            "snapshot byte {at} flipped was accepted"
        );
    }
    assert_eq!(decode_snapshot(&snap, &id(), 3).unwrap(), b"the whole state");
}

/// Prints the time to open (decode and verify) a log of 200,000 records of
/// 200 bytes, 5 times. `cargo test --lib bench_recovery_open -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn bench_recovery_open() {
    const RECORDS: u64 = 200_000;
    const RUNS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    for _ in 0..RECORDS {
        wal.append(&[0xab; 200]).unwrap();
    }
    wal.sync().unwrap();
    let bytes = wal.bytes_on_disk();
    drop(wal);
    let mut times: Vec<std::time::Duration> = (0..RUNS)
        .map(|_| {
            let t = std::time::Instant::now();
            let (_, rec) = Wal::open(dir.path(), &id(), Expect::Present).unwrap();
            assert_eq!(rec.records.len() as u64, RECORDS);
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    println!(
        "wal open: {RECORDS} records, {bytes} bytes, n={RUNS}: median {:?}, worst {:?}",
        times[RUNS / 2],
        times[RUNS - 1]
    );
}
