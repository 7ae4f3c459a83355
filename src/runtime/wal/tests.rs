//! Tests of the log: round trips, torn tails, corruption, group commit.

use super::*;

mod identity;

fn id() -> LogIdentity {
    LogIdentity { cluster: "ab".repeat(32), node: "0000000000000001".into() }
}

/// Bytes of a segment's header for [`id`] and a first LSN.
fn header_len(first: u64) -> u64 {
    format::encode_header(format::SEGMENT_MAGIC, &id(), first).len() as u64
}

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
    Wal::open(dir, &id(), Expect::CreateOrUpgrade).unwrap().1
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
    let mut at = header_len(first);
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
    match Wal::open(dir, &id(), Expect::CreateOrUpgrade) {
        Err(e @ WalError::Corrupt { .. }) => {
            let msg = e.to_string();
            let WalError::Corrupt { file, offset, .. } = e else { unreachable!() };
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
    let (wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    assert_eq!(wal.last_lsn(), 0);
    assert!(rec.snapshot.is_none() && rec.records.is_empty());
    assert!(rec.truncated_torn_tail.is_none());
    assert!(dir.path().join(STATE_DIR).is_dir());
}

#[test]
fn round_trip_and_lsns_continue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 50);
    let on_disk = wal.bytes_on_disk();
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 30);
    wal.write_snapshot(30, b"state@30").unwrap();
    assert_eq!(files(dir.path(), SEGMENT_PREFIX).len(), 1, "covered segment deleted");
    append_range(&mut wal, 31, 40);
    wal.write_snapshot(35, b"state@35").unwrap();
    append_range(&mut wal, 41, 45);
    drop(wal);
    let (wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    assert_eq!(rec.snapshot, Some((35, b"state@35".to_vec())));
    assert_eq!(lsns(&rec), (36..=45).collect::<Vec<_>>());
    assert_eq!(wal.last_lsn(), 45);
    let snaps = files(dir.path(), SNAPSHOT_PREFIX);
    assert_eq!(snaps.len(), 1, "old snapshot deleted: {snaps:?}");
    // log-31 holds 31..=40 and is only partly covered by 35, so it stays.
    let segs = files(dir.path(), SEGMENT_PREFIX);
    let names: Vec<String> =
        segs.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["log-00000000000000000031.wal", "log-00000000000000000041.wal"]);
}

#[test]
fn snapshot_of_everything_then_reopen_continues_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 10);
    wal.write_snapshot(10, b"s").unwrap();
    wal.write_snapshot(10, b"s2").unwrap();
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    assert_eq!(rec.snapshot, Some((10, b"s2".to_vec())));
    assert!(rec.records.is_empty());
    assert_eq!(wal.append(b"x").unwrap(), 11);
}

#[test]
fn snapshot_range_and_size_limits_are_refused_without_failing_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 5);
    assert!(matches!(wal.write_snapshot(6, b"x"), Err(WalError::SnapshotOutOfRange { .. })));
    wal.write_snapshot(4, b"x").unwrap();
    assert!(matches!(wal.write_snapshot(3, b"x"), Err(WalError::SnapshotOutOfRange { .. })));
    let big = vec![0u8; MAX_RECORD_BYTES + 1];
    assert!(matches!(wal.append(&big), Err(WalError::RecordTooLarge { .. })));
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
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (mut wal, _) =
        Wal::open_with_roll(dir.path(), &id(), Expect::CreateOrUpgrade, 500).unwrap();
    append_range(&mut wal, 1, 40);
    drop(wal);
    assert!(files(dir.path(), SEGMENT_PREFIX).len() > 3);
    let rec = reopen(dir.path());
    assert_eq!(lsns(&rec), (1..=40).collect::<Vec<_>>());
}

#[test]
fn leftover_snapshot_temp_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap());
    let tmp = dir.path().join(STATE_DIR).join("snapshot-00000000000000000009.bin.tmp");
    fs::write(&tmp, b"half").unwrap();
    let rec = reopen(dir.path());
    assert!(rec.snapshot.is_none());
    assert!(!tmp.exists());
}

/// Builds a log with LSNs 1..=6 in one segment; returns the segment.
fn six_records(dir: &Path) -> PathBuf {
    let (mut wal, _) = Wal::open(dir, &id(), Expect::CreateOrUpgrade).unwrap();
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
        let (mut wal, rec) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
        assert_eq!(lsns(&rec), (1..=5).collect::<Vec<_>>(), "cut at {cut}");
        assert_eq!(rec.records[4].1, payload(5));
        let expected = (cut > last_start).then(|| TornTail {
            file: copy.clone(),
            offset: last_start as u64,
            bytes_dropped: (cut - last_start) as u64,
        });
        assert_eq!(rec.truncated_torn_tail, expected, "cut at {cut}");
        assert_eq!(fs::metadata(&copy).unwrap().len(), last_start as u64);
        assert_eq!(wal.append(b"after").unwrap(), 6, "the dropped LSN is reused");
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
    flip_byte(&seg, last_start + RECORD_HEADER_BYTES as u64 + 1);
    let rec = reopen(dir.path());
    assert_eq!(lsns(&rec), (1..=5).collect::<Vec<_>>());
    assert_eq!(rec.truncated_torn_tail.unwrap().offset, last_start);
}

/// A length whose own checksum fails, with the payload after it, is
/// damage (an acknowledged record), not a torn append: refused, and the
/// file is left as it was.
#[test]
fn damaged_length_on_the_last_record_is_corrupt_and_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let seg = six_records(dir.path());
    let last_start = record_offsets(1, 6)[5] as usize;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[last_start..last_start + 4].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
    fs::write(&seg, &bytes).unwrap();
    let (file, offset, _) = expect_corrupt(dir.path());
    assert_eq!((file, offset), (seg.clone(), last_start as u64));
    assert_eq!(fs::read(&seg).unwrap(), bytes, "a log that could not be read is never changed");
}

/// Finding 8: the first record's length byte flipped (so that the length
/// runs past the end of the file) was taken for a torn tail, and the whole
/// log was dropped. It is refused at its offset, and nothing is written.
#[test]
fn flipped_length_byte_in_the_first_record_is_refused_and_the_file_untouched() {
    for flip in [0xffu8, 0x01, 0x80] {
        for byte in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let seg = six_records(dir.path());
            let first = record_offsets(1, 6)[0] as usize;
            let mut bytes = fs::read(&seg).unwrap();
            bytes[first + byte] ^= flip;
            fs::write(&seg, &bytes).unwrap();
            let (file, offset, msg) = expect_corrupt(dir.path());
            assert_eq!((file, offset), (seg.clone(), first as u64), "{msg}");
            assert_eq!(fs::read(&seg).unwrap(), bytes, "byte {byte} ^ {flip:#x}: file changed");
            let again = expect_corrupt(dir.path());
            assert_eq!(again.1, first as u64, "refused again, not repaired");
        }
    }
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
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
        let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
        append_range(&mut wal, 1, 3);
        wal.write_snapshot(3, b"the whole state").unwrap();
        drop(wal);
        let snap = files(dir.path(), SNAPSHOT_PREFIX).pop().unwrap();
        let mut bytes = fs::read(&snap).unwrap();
        let h = format::encode_header(format::SNAPSHOT_MAGIC, &id(), 3).len();
        match damage {
            "payload" => bytes[h + 12 + 3] ^= 1,
            "magic" => bytes[0] = b'X',
            "truncate" => bytes.truncate(bytes.len() - 1),
            _ => bytes[h..h + 8].copy_from_slice(&u64::MAX.to_le_bytes()),
        }
        fs::write(&snap, bytes).unwrap();
        let (file, _, _) = expect_corrupt(dir.path());
        assert_eq!(file, snap, "{damage}");
    }
}

#[test]
fn missing_middle_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    append_range(&mut wal, 1, 10);
    wal.write_snapshot(5, b"a").unwrap(); // keeps log-1 (6..=10 needed)
    drop(wal);
    fs::remove_file(&files(dir.path(), SEGMENT_PREFIX)[0]).unwrap();
    let (_, _, msg) = expect_corrupt(dir.path());
    assert!(msg.contains("lsns 6..11 are missing"), "{msg}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap()
}

#[test]
fn group_commit_batches_concurrent_appends() {
    const N: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    let writer = WalWriter::spawn(wal);
    runtime().block_on(async {
        for i in 1..=5 {
            writer.append_nowait(payload(i)).await.unwrap();
        }
        assert_eq!(writer.append(payload(6)).await.unwrap(), 6);
        writer.snapshot(4, b"s4".to_vec()).await.unwrap();
        assert_eq!(writer.append(payload(7)).await.unwrap(), 7);
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        assert!(matches!(writer.append(big).await, Err(WalError::RecordTooLarge { .. })));
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
    let (mut wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    let (open_gate, gate) = std::sync::mpsc::channel();
    let writer = WalWriter::spawn_gated(wal, Some(gate));
    let queued: Vec<_> =
        (0..WRITER_QUEUE_CAPACITY_REQUESTS).map(|_| writer.submit(Vec::new())).collect();
    let mut refused = writer.submit(Vec::new());
    let overloaded = refused.try_recv().unwrap().unwrap_err();
    assert!(matches!(overloaded, WalError::Overloaded { .. }), "{overloaded}");
    let snap_refused = writer.snapshot_after_queued(Vec::new());
    open_gate.send(()).unwrap();
    runtime().block_on(async {
        assert!(matches!(snap_refused.await, Err(WalError::Overloaded { .. })));
        for (i, r) in (1..).zip(queued) {
            assert_eq!(r.await.unwrap().unwrap(), i);
        }
    });
}

#[test]
fn submit_at_the_byte_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    let (_open_gate, gate) = std::sync::mpsc::channel::<()>();
    let writer = WalWriter::spawn_gated(wal, Some(gate));
    let fit = WRITER_QUEUE_MAX_BYTES / (MAX_RECORD_BYTES + RECORD_HEADER_BYTES);
    let mut receivers: Vec<_> =
        (0..=fit).map(|_| writer.submit(vec![0u8; MAX_RECORD_BYTES])).collect();
    let mut last = receivers.pop().unwrap();
    assert!(matches!(last.try_recv(), Ok(Err(WalError::Overloaded { .. }))));
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
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
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

#[test]
fn snapshots_queued_back_to_back_are_written_in_turn_while_appends_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), &id(), Expect::CreateOrUpgrade).unwrap();
    let writer = WalWriter::spawn(wal);
    let a: Vec<_> = (1..=50).map(|i| writer.submit(payload(i))).collect();
    let s1 = writer.snapshot_after_queued(b"state@50".to_vec());
    let b: Vec<_> = (51..=60).map(|i| writer.submit(payload(i))).collect();
    // Asked while the first may still be written: it waits its turn.
    let s2 = writer.snapshot_after_queued(b"state@60".to_vec());
    let c: Vec<_> = (61..=70).map(|i| writer.submit(payload(i))).collect();
    runtime().block_on(async {
        for (i, r) in (1..).zip(a.into_iter().chain(b).chain(c)) {
            assert_eq!(r.await.unwrap().unwrap(), i);
        }
        s1.await.unwrap();
        s2.await.unwrap();
    });
    assert_eq!(writer.stats().snapshots, 2);
    drop(writer);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, Some((60, b"state@60".to_vec())));
    assert_eq!(lsns(&rec), (61..=70).collect::<Vec<_>>());
}
