//! Tests of replication between `StateSync`s, messages carried by hand:
//! `Have` only once a push is durable on the receiver's disk (finding F),
//! `--wait-replicated` counting only such copies, and request ids answered
//! from their record on one manager and on another once the first one's
//! operations arrived.

use std::time::Duration;

use crate::core::identity::NodeId;
use crate::core::state::model::Command;
use crate::core::state::replica::{Actor, Replica, VersionVector};
use crate::core::state::sync::{StateMsg, StateSync, SyncOut, WriteResult};

const T: Duration = Duration::from_secs(10);

fn manager(node: u64) -> (NodeId, StateSync) {
    let id = NodeId(node << 48);
    (id, StateSync::new(Replica::new(Actor { node: id.0, generation: 1 })))
}

fn set_ctl(v: &str) -> Command {
    Command::SetController { key: "k".into(), value: v.into() }
}

/// Sends `req` to `st` and makes its operations durable at once (the
/// driver's fsync); returns the outputs, with the pushes to `peers`.
fn write(
    st: &mut StateSync,
    req: u64,
    id: u64,
    cmd: &Command,
    replicas: u32,
    peers: &[NodeId],
) -> SyncOut {
    let mut out = SyncOut::default();
    st.command(Duration::ZERO, req, Some(id), cmd, replicas, T, &mut out);
    if let Some(last) = out.persist_own.last().map(|s| s.seq) {
        st.durable(Duration::ZERO, last, peers, &mut out);
    }
    out
}

fn done(out: &SyncOut, req: u64) -> Option<&WriteResult> {
    out.replies.iter().find(|(r, _)| *r == req).map(|(_, w)| w)
}

fn pushes(out: &SyncOut) -> Vec<(NodeId, StateMsg)> {
    let sent = out.send.iter().filter(|(_, m)| matches!(m, StateMsg::Push(_))).cloned();
    let broadcast = out.broadcast.iter().flat_map(|(tos, m)| tos.iter().map(|t| (*t, m.clone())));
    sent.chain(broadcast).collect()
}

/// The highest seq per author in `out`'s remote persists (what the driver
/// reports once they are synced).
fn synced(out: &SyncOut) -> VersionVector {
    let mut vv = VersionVector::new();
    for s in &out.persist_remote {
        vv.insert(s.actor, s.seq);
    }
    vv
}

#[test]
fn have_waits_for_the_receivers_own_fsync_of_the_push() {
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let out = write(&mut a, 1, 100, &set_ctl("v"), 1, &[b_id]);
    assert!(done(&out, 1).is_none(), "waits for one other manager");
    let (_, push) = pushes(&out).pop().expect("pushed to b");
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::ZERO, a_id, push, &mut at_b);
    assert!(!at_b.persist_remote.is_empty(), "b persists a's operations");
    assert!(
        at_b.send.iter().all(|(_, m)| !matches!(m, StateMsg::Have(_))),
        "no Have while only in b's memory"
    );
    // b crashes here: a never hears a Have, so the write is never counted.
    let mut later = SyncOut::default();
    b.durable_remote(Duration::ZERO, &synced(&at_b), &[a_id], &mut later);
    let have = later
        .send
        .iter()
        .find(|(to, m)| *to == a_id && matches!(m, StateMsg::Have(_)))
        .cloned()
        .expect("Have once synced");
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, have.1, &mut at_a);
    assert!(matches!(done(&at_a, 1), Some(WriteResult::Done(_))), "{:?}", at_a.replies);
}

#[test]
fn a_probe_is_always_answered_with_its_own_send_time() {
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let mut probe = SyncOut::default();
    a.probe(4_321, &[b_id], &mut probe);
    let (to, msg) = probe.send.pop().expect("a probe");
    assert_eq!(to, b_id);
    // A probe always gets an answer, and nothing else (no state work).
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::from_secs(99), a_id, msg, &mut at_b);
    assert_eq!(at_b.send.len(), 1, "{:?}", at_b.send);
    let ack = at_b
        .send
        .iter()
        .find(|(to, m)| *to == a_id && matches!(m, StateMsg::ProbeAck { .. }))
        .cloned()
        .expect("a probe ack");
    assert!(
        matches!(ack.1, StateMsg::ProbeAck { sent_ms: 4_321, .. }),
        "the prober's clock, not the answerer's: {:?}",
        ack.1
    );
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::from_secs(5), b_id, ack.1, &mut at_a);
    assert_eq!(at_a.probe_acks, vec![(b_id, 4_321)]);
}

/// A write waiting for replicas that times out names the managers that
/// reported what they hold without it (`juju tokens revoke` says which
/// did not confirm, rather than claiming success).
#[test]
fn a_replication_timeout_names_the_managers_that_did_not_confirm() {
    let ((a_id, mut a), (b_id, b)) = (manager(1), manager(2));
    write(&mut a, 1, 100, &set_ctl("v"), 1, &[b_id]);
    // b reports what it holds (nothing of a's write) and never more.
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, StateMsg::Have(b.replica.durable_version()), &mut at_a);
    let mut tick = SyncOut::default();
    a.tick(T, None, &[b_id], &mut tick);
    match done(&tick, 1) {
        Some(WriteResult::Refused(r)) => {
            assert!(r.contains("0 of 1") && r.contains(&format!("not confirmed by {b_id}")), "{r}")
        }
        other => panic!("{other:?}"),
    }
    let _ = a_id;
}

#[test]
fn a_digest_counts_only_what_the_sender_holds_durably() {
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let out = write(&mut a, 1, 100, &set_ctl("v"), 1, &[b_id]);
    let (_, push) = pushes(&out).pop().expect("pushed");
    b.on_msg(Duration::ZERO, a_id, push, &mut SyncOut::default());
    let mut tick = SyncOut::default();
    b.tick(Duration::ZERO, Some(a_id), &[a_id], &mut tick);
    let (_, digest) = tick.send.pop().expect("a digest");
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, digest, &mut at_a);
    assert!(done(&at_a, 1).is_none(), "b's digest must not count a copy b has not synced");
}

#[test]
fn the_same_request_twice_on_one_manager_is_applied_once() {
    let (_, mut a) = manager(1);
    let first = write(&mut a, 1, 7, &Command::AddMachine { n: 2 }, 0, &[]);
    let Some(WriteResult::Done(o1)) = done(&first, 1).cloned() else {
        panic!("{:?}", first.replies)
    };
    let seq = a.replica.own_seq();
    let again = write(&mut a, 2, 7, &Command::AddMachine { n: 2 }, 0, &[]);
    assert_eq!(done(&again, 2), Some(&WriteResult::Done(o1.clone())), "the recorded outcome");
    assert!(again.persist_own.is_empty() && a.replica.own_seq() == seq, "nothing applied again");
    assert_eq!(a.view().machines.len(), 2);
    assert_eq!(a.deduplicated, 1);
    // A removal retried after it succeeded answers success, not "does not exist".
    let rm = Command::RemoveMachine { id: o1.ids[0].clone() };
    assert!(matches!(done(&write(&mut a, 3, 8, &rm, 0, &[]), 3), Some(WriteResult::Done(_))));
    assert!(matches!(done(&write(&mut a, 4, 8, &rm, 0, &[]), 4), Some(WriteResult::Done(_))));
    assert!(
        matches!(done(&write(&mut a, 5, 9, &rm, 0, &[]), 5), Some(WriteResult::Refused(_))),
        "a new request is refused"
    );
}

#[test]
fn a_retry_on_another_manager_after_the_first_ones_ops_arrived_is_answered_from_the_record() {
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let first = write(&mut a, 1, 99, &Command::AddMachine { n: 3 }, 0, &[b_id]);
    let Some(WriteResult::Done(o1)) = done(&first, 1).cloned() else { panic!() };
    // b has a's operations in memory, not yet on its disk.
    let (_, push) = pushes(&first).pop().expect("pushed");
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::ZERO, a_id, push, &mut at_b);
    let mut retry = SyncOut::default();
    b.command(Duration::ZERO, 5, Some(99), &Command::AddMachine { n: 3 }, 1, T, &mut retry);
    assert!(retry.persist_own.is_empty(), "not applied again");
    assert!(retry.replies.is_empty(), "not answered before a's write is durable here");
    let mut synced_out = SyncOut::default();
    b.durable_remote(Duration::ZERO, &synced(&at_b), &[a_id], &mut synced_out);
    // Durable on b, and a (the author) holds it: one other manager.
    assert_eq!(done(&synced_out, 5), Some(&WriteResult::Done(o1)));
    assert_eq!(b.view().machines.len(), 3);
    assert_eq!(b.view(), a.view());
}

#[test]
fn a_full_merge_is_durable_only_once_its_snapshot_is() {
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let out = write(&mut a, 1, 1, &set_ctl("v"), 0, &[]);
    assert!(done(&out, 1).is_some());
    let snap = a.replica.snapshot();
    let vv = snap.vv.clone();
    let mut at_b = SyncOut::default();
    b.on_msg(
        Duration::ZERO,
        a_id,
        StateMsg::Delta(crate::core::state::Delta::Full(Box::new(snap))),
        &mut at_b,
    );
    assert!(at_b.snapshot_needed);
    assert!(b.replica.durable_version().is_empty(), "merged, not yet durable");
    b.durable_remote(Duration::ZERO, &vv, &[a_id], &mut SyncOut::default());
    assert_eq!(b.replica.durable_version(), vv);
    let _ = b_id;
}

/// The digests a tick of `m` sends (to `to`, the round's target).
fn tick_digests(m: &mut StateSync, to: NodeId) -> usize {
    let mut out = SyncOut::default();
    m.tick(Duration::ZERO, Some(to), &[to], &mut out);
    out.send.iter().filter(|(_, msg)| matches!(msg, StateMsg::Digest(_))).count()
}

fn full(snap: crate::core::state::replica::Snapshot) -> StateMsg {
    StateMsg::Delta(crate::core::state::Delta::Full(Box::new(snap)))
}

/// After a full merge a manager sends no digest until the merge is
/// durable (each would draw another full state from every peer it
/// reached), and a second full state that holds nothing new is not merged.
/// Without the hold, a restarted manager at 100,000 entities drew dozens
/// of 22 MiB full states in 20 s.
#[test]
fn after_a_full_merge_digests_wait_for_its_snapshot_and_a_second_full_state_is_not_merged() {
    let ((a_id, mut a), (c_id, mut c), (_, mut b)) = (manager(1), manager(3), manager(2));
    assert!(done(&write(&mut a, 1, 1, &set_ctl("v"), 0, &[]), 1).is_some());
    let snap = a.replica.snapshot();
    let vv = snap.vv.clone();
    b.on_msg(Duration::ZERO, a_id, full(snap.clone()), &mut SyncOut::default());
    assert_eq!((b.full_merges, b.holds_digests()), (1, true));
    assert_eq!(tick_digests(&mut b, a_id), 0, "no digest while the merge is not durable");
    // A's digest shows b lacks nothing from a; c's shows b lacks c's write:
    // b would answer with its own digest, and holds it too.
    assert!(done(&write(&mut c, 1, 2, &set_ctl("w"), 0, &[]), 1).is_some());
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::ZERO, c_id, StateMsg::Digest(c.replica.durable_version()), &mut at_b);
    assert!(!at_b.send.iter().any(|(_, m)| matches!(m, StateMsg::Digest(_))), "{:?}", at_b.send);
    b.on_msg(Duration::ZERO, a_id, full(snap), &mut SyncOut::default());
    assert_eq!((b.full_merges, b.full_skipped), (1, 1), "the same state again is not merged");
    b.durable_remote(Duration::ZERO, &vv, &[a_id], &mut SyncOut::default());
    assert_eq!(tick_digests(&mut b, a_id), 1, "durable: digests resume");
    assert!(!b.holds_digests());
}

/// A merge whose snapshot never becomes durable holds digests for
/// `FULL_MERGE_DIGEST_HOLD_ROUNDS` rounds at most, then they resume.
#[test]
fn digests_held_after_a_full_merge_resume_at_the_bound_without_a_snapshot() {
    use crate::core::state::sync::FULL_MERGE_DIGEST_HOLD_ROUNDS;
    let ((a_id, mut a), (_, mut b)) = (manager(1), manager(2));
    assert!(done(&write(&mut a, 1, 1, &set_ctl("v"), 0, &[]), 1).is_some());
    b.on_msg(Duration::ZERO, a_id, full(a.replica.snapshot()), &mut SyncOut::default());
    let sent: Vec<usize> =
        (0..=FULL_MERGE_DIGEST_HOLD_ROUNDS).map(|_| tick_digests(&mut b, a_id)).collect();
    let first = sent.iter().position(|&n| n > 0).expect("digests resumed");
    assert_eq!(first as u32, FULL_MERGE_DIGEST_HOLD_ROUNDS - 1, "{sent:?}");
}

/// A peer that lacks operations compacted away gets the full state, and
/// both sides count it (`jujud_state_full_sent_total` on the sender,
/// `jujud_state_full_merged_total` on the receiver).
#[test]
fn a_full_state_sent_for_compacted_operations_is_counted_on_both_sides() {
    use crate::core::state::replica::MAX_RETAINED_OPS_BYTES;
    let ((a_id, mut a), (b_id, mut b)) = (manager(1), manager(2));
    let big = "v".repeat(crate::core::state::model::MAX_VALUE_BYTES - 8);
    let n = MAX_RETAINED_OPS_BYTES / big.len() + 100;
    for i in 0..n {
        let out = write(&mut a, i as u64, i as u64 + 1, &set_ctl(&format!("{i}{big}")), 0, &[]);
        assert!(done(&out, i as u64).is_some(), "write {i}");
    }
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, StateMsg::Digest(b.replica.durable_version()), &mut at_a);
    let mut sent: Vec<StateMsg> = at_a.send.into_iter().map(|(_, m)| m).collect();
    assert!(matches!(sent.as_slice(), [StateMsg::Delta(crate::core::state::Delta::Full(_))]));
    assert_eq!((a.full_sent, a.full_merges), (1, 0));
    let msg = sent.pop().expect("one message");
    b.on_msg(Duration::ZERO, a_id, msg, &mut SyncOut::default());
    assert_eq!((b.full_sent, b.full_merges), (0, 1));
    assert_eq!(a.view(), b.view());
}

/// A `Have` names only the authors of the push it answers, not every
/// actor the receiver ever saw (that cost each peer a whole vector's
/// encoding, decoding and allocation per write).
#[test]
fn a_have_names_only_the_authors_of_the_push_it_answers() {
    let ((a_id, mut a), (b_id, mut b), (d_id, mut d)) = (manager(1), manager(2), manager(4));
    // b first holds one of d's operations durably.
    let out = write(&mut d, 1, 100, &set_ctl("d"), 0, &[b_id]);
    let (_, push) = pushes(&out).pop().expect("d pushed");
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::ZERO, d_id, push, &mut at_b);
    b.durable_remote(Duration::ZERO, &synced(&at_b), &[a_id, d_id], &mut SyncOut::default());
    // Then a pushes; b's answer names a alone.
    let out = write(&mut a, 1, 200, &set_ctl("a"), 1, &[b_id]);
    let (_, push) = pushes(&out).pop().expect("a pushed");
    let mut at_b = SyncOut::default();
    b.on_msg(Duration::ZERO, a_id, push, &mut at_b);
    let mut later = SyncOut::default();
    b.durable_remote(Duration::ZERO, &synced(&at_b), &[a_id, d_id], &mut later);
    let have = later.send.iter().find(|(to, _)| *to == a_id).cloned().expect("a Have");
    match &have.1 {
        StateMsg::Have(vv) => {
            assert_eq!(vv.keys().copied().collect::<Vec<_>>(), vec![a.replica.actor()], "{vv:?}")
        }
        other => panic!("{other:?}"),
    }
    let mut at_a = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, have.1, &mut at_a);
    assert!(matches!(done(&at_a, 1), Some(WriteResult::Done(_))), "{:?}", at_a.replies);
}

/// A peer's reports are merged: a `Have` naming other authors does not
/// erase what the same peer reported before about this write.
#[test]
fn a_peers_reports_are_merged_not_replaced() {
    let ((_, mut a), (b_id, _), (c_id, _)) = (manager(1), manager(2), manager(3));
    write(&mut a, 1, 100, &set_ctl("v"), 2, &[b_id, c_id]);
    let (mine, seq) = (a.replica.actor(), a.replica.own_seq());
    let other = Actor { node: 9 << 48, generation: 1 };
    let mut out = SyncOut::default();
    a.on_msg(Duration::ZERO, b_id, StateMsg::Have([(mine, seq)].into()), &mut out);
    a.on_msg(Duration::ZERO, b_id, StateMsg::Have([(other, 5)].into()), &mut out);
    assert!(done(&out, 1).is_none(), "one of two replicas so far");
    a.on_msg(Duration::ZERO, c_id, StateMsg::Have([(mine, seq)].into()), &mut out);
    assert!(matches!(done(&out, 1), Some(WriteResult::Done(_))), "{:?}", out.replies);
}
