//! Tests of the agent core: supervision decisions, session choice and
//! movement, reports, and the manager's side of sessions.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::role::{
    AgentOut, AgentRole, MOVE_CATCH_UP_MS, PARALLEL_AFTER_FAILURES, SESSION_AVOID_MS,
    SESSION_STABLE_MS, Session,
};
use super::serve::{ASSIGN_REFRESH_MS, AgentSessions, FIRST_ASSIGN_DELAY_MS, ServeOut};
use super::supervisor::{RESTART_BACKOFF_MIN_MS, Supervisor};
use super::*;
use crate::core::identity::{Identity, NodeId, Role};
use crate::core::state::model::{self, Command};
use crate::core::state::{Actor, Replica};

const MS: Duration = Duration::from_millis(1);

fn spec(unit: &str, cmd: &str, cfg: &[(&str, &str)]) -> UnitSpec {
    UnitSpec {
        unit: unit.into(),
        app: unit.split('/').next().unwrap().into(),
        command: cmd.into(),
        config: cfg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn starts(cmds: &[WorkloadCmd]) -> Vec<(String, u64)> {
    cmds.iter()
        .filter_map(|c| {
            if let WorkloadCmd::Start { unit, run, .. } = c {
                Some((unit.clone(), *run))
            } else {
                None
            }
        })
        .collect()
}

/// An assignment of `units` to the test agent's machine, encoded.
fn assign(units: &[UnitSpec]) -> Vec<u8> {
    encode_msg(&SessionMsg::Assign(Assignments { machine: "1-aaaa".into(), units: units.to_vec() }))
}

#[test]
fn same_assignments_change_nothing_and_a_config_change_restarts_once() {
    let mut s = Supervisor::default();
    let a = vec![spec("web/1", "serve", &[("port", "80")])];
    s.assign(Duration::ZERO, &a);
    let first = s.take_cmds();
    assert_eq!(starts(&first), vec![("web/1".into(), 1)]);
    let WorkloadCmd::Start { env, .. } = &first[0] else { unreachable!() };
    assert!(env.contains(&("JUJU_CONFIG_PORT".into(), "80".into())), "{env:?}");
    s.on_event(MS, &WorkloadEvent::Started { unit: "web/1".into(), run: 1, pid: 42 });
    for _ in 0..3 {
        s.assign(2 * MS, &a);
        assert!(s.take_cmds().is_empty(), "re-sent assignments must not touch a running workload");
    }
    let b = vec![spec("web/1", "serve", &[("port", "81")])];
    s.assign(3 * MS, &b);
    assert_eq!(s.take_cmds(), vec![WorkloadCmd::Stop { unit: "web/1".into(), run: 1 }]);
    assert!(s.statuses()["web/1"].starts_with("maintenance"));
    s.on_event(
        4 * MS,
        &WorkloadEvent::Exited { unit: "web/1".into(), run: 1, code: None, signal: Some(15) },
    );
    assert_eq!(starts(&s.take_cmds()), vec![("web/1".into(), 2)]);
    assert_eq!(s.stats.restarts_for_change, 1);
    assert_eq!(s.stats.restarts_after_exit, 0);
}

#[test]
fn exits_back_off_and_stale_runs_are_ignored() {
    let mut s = Supervisor::default();
    s.assign(Duration::ZERO, &[spec("db/1", "nosuchcmd", &[])]);
    s.take_cmds();
    s.on_event(
        MS,
        &WorkloadEvent::Exited { unit: "db/1".into(), run: 1, code: Some(127), signal: None },
    );
    let st = s.statuses()["db/1"].clone();
    assert!(st.starts_with("error: command not found"), "{st}");
    assert_eq!(s.next_due(), Some(MS + Duration::from_millis(RESTART_BACKOFF_MIN_MS)));
    s.tick(MS + 10 * MS);
    assert!(s.take_cmds().is_empty(), "no restart before the backoff");
    s.tick(MS + Duration::from_millis(RESTART_BACKOFF_MIN_MS));
    assert_eq!(starts(&s.take_cmds()), vec![("db/1".into(), 2)]);
    // A late event of run 1 changes nothing.
    s.on_event(
        MS * 600,
        &WorkloadEvent::Exited { unit: "db/1".into(), run: 1, code: Some(1), signal: None },
    );
    assert!(s.statuses()["db/1"].starts_with("waiting"));
    s.on_event(
        MS * 601,
        &WorkloadEvent::SpawnFailed { unit: "db/1".into(), run: 2, error: "no sh".into() },
    );
    let due = s.next_due().unwrap();
    assert_eq!(
        due,
        MS * 601 + 2 * Duration::from_millis(RESTART_BACKOFF_MIN_MS),
        "the second quick failure waits twice as long"
    );
}

#[test]
fn removed_units_stop_and_are_forgotten_and_messages_show() {
    let mut s = Supervisor::default();
    s.assign(Duration::ZERO, &[spec("a/1", "x", &[]), spec("a/2", "y", &[])]);
    s.take_cmds();
    s.on_event(MS, &WorkloadEvent::Started { unit: "a/1".into(), run: 1, pid: 1 });
    s.on_event(
        MS,
        &WorkloadEvent::Message { unit: "a/1".into(), run: 1, text: "serving 3 users\n".into() },
    );
    assert_eq!(s.statuses()["a/1"], "active: serving 3 users");
    s.assign(2 * MS, &[spec("a/2", "y", &[])]);
    assert_eq!(s.take_cmds(), vec![WorkloadCmd::Stop { unit: "a/1".into(), run: 1 }]);
    s.on_event(
        3 * MS,
        &WorkloadEvent::Exited { unit: "a/1".into(), run: 1, code: Some(0), signal: None },
    );
    assert!(s.take_cmds().is_empty(), "a removed unit is not restarted");
    assert_eq!(s.units().collect::<Vec<_>>(), vec!["a/2"]);
}

fn manager(n: u64) -> Identity {
    crate::core::identity::test_member(n, Role::Manager)
}

fn agent_role() -> AgentRole {
    AgentRole::new(
        NodeId(0xa9e7),
        "1-aaaa".into(),
        "127.0.0.9".into(),
        vec!["127.0.0.1:7001".parse().unwrap()],
    )
}

fn opened(out: &AgentOut) -> (u64, Vec<(std::net::SocketAddr, Option<NodeId>)>) {
    out.open.last().cloned().expect("a session was opened")
}

#[test]
fn the_session_follows_the_rendezvous_choice_and_moves_at_once_when_it_dies() {
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut out = AgentOut::default();
    a.start(Duration::ZERO, &mut out);
    assert_eq!(
        opened(&out).1,
        vec![("127.0.0.1:7001".parse().unwrap(), None)],
        "first through the seeds"
    );
    let ms: Vec<Identity> = (1..=3).map(manager).collect();
    let mut out = AgentOut::default();
    a.set_live_managers(MS, ms.clone(), &mut out);
    assert_eq!(out.save_managers.as_ref().map(Vec::len), Some(3));
    let first = opened_id(&a);
    let best = a.ranked()[0].clone();
    a.on_session_opened(2 * MS, first, best.id, &mut out);
    assert_eq!(a.session_manager(), Some(best.id));
    a.on_session_data(3 * MS, first, &assign(&[spec("w/1", "run", &[])]), &mut out);
    assert_eq!(a.supervisor.take_cmds().len(), 1);
    // The session's manager is declared down: the next choice at once.
    let rest: Vec<Identity> = ms.iter().filter(|m| m.id != best.id).cloned().collect();
    let mut out = AgentOut::default();
    a.set_live_managers(4 * MS, rest.clone(), &mut out);
    assert_eq!(out.close, vec![first]);
    let (second, candidates) = opened(&out);
    let next = choice::rank(0xa9e7, &rest, |m| m.id)[0].clone();
    assert_eq!(candidates, vec![(next.addr, Some(next.id))]);
    a.on_session_opened(5 * MS, second, next.id, &mut out);
    a.on_session_data(6 * MS, second, &assign(&[spec("w/1", "run", &[])]), &mut out);
    assert!(a.supervisor.take_cmds().is_empty(), "moving the session restarts no workload");
    let _ = &mut rng;
}

fn opened_id(a: &AgentRole) -> u64 {
    match a.session() {
        Session::Opening { id, .. } => *id,
        other => panic!("not opening: {other:?}"),
    }
}

#[test]
fn a_session_broken_under_a_live_best_manager_moves_once_and_returns_after_the_avoid_time() {
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut out);
    let (best, next) = (a.ranked()[0].clone(), a.ranked()[1].clone());
    let first = opened_id(&a);
    a.on_session_opened(MS, first, best.id, &mut out);
    // Long after the settle time the session breaks while SWIM still shows
    // its manager live (restarted faster than detection, connection lost).
    let broken = Duration::from_secs(60);
    let mut out = AgentOut::default();
    a.on_session_closed(broken, first, &mut rng, &mut out);
    let (second, candidates) = opened(&out);
    assert_eq!(candidates, vec![(next.addr, Some(next.id))], "the broken manager is passed over");
    a.on_session_opened(broken + MS, second, next.id, &mut AgentOut::default());
    let avoid_end = broken + Duration::from_millis(SESSION_AVOID_MS);
    let (mut opens, mut now) = (0, broken + MS);
    // The driver's loop: each wake is delivered at the earliest now.
    while let Some(wake) = a.next_wake().filter(|w| *w < avoid_end) {
        now = now.max(wake);
        let mut out = AgentOut::default();
        a.tick(now, &mut rng, &mut out);
        for (id, _) in &out.open {
            a.on_session_opened(now, *id, next.id, &mut AgentOut::default());
        }
        opens += out.open.len();
        assert!(
            opens < 5,
            "sessions churn while the best manager is avoided: {opens} opens by {now:?}"
        );
    }
    assert_eq!(
        (opens, a.session_manager()),
        (0, Some(next.id)),
        "it stays put while the best is avoided"
    );
    let wake = a.next_wake().expect("the move back is planned");
    assert!(wake >= avoid_end, "{wake:?}");
    let mut out = AgentOut::default();
    a.tick(wake, &mut rng, &mut out);
    assert_eq!(
        opened(&out).1,
        vec![(best.addr, Some(best.id))],
        "then it moves back to the best, once"
    );
}

#[test]
fn a_best_manager_that_does_not_answer_is_avoided_longer_each_time() {
    // Found by the simulator (seed 4, `--faults harsh`): a manager SWIM
    // still showed live but that the agent could not reach was ranked best;
    // every open to it timed out, and each time the agent got a session
    // elsewhere it moved back to it at once, so it held a session only for
    // milliseconds at a time, for 12 s.
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut AgentOut::default());
    let (best, next) = (a.ranked()[0].clone(), a.ranked()[1].clone());
    // The open to the best times out at its deadline...
    let deadline = a.next_wake().expect("the open's deadline");
    a.tick(deadline, &mut rng, &mut AgentOut::default());
    // ...the retry goes elsewhere and opens.
    let wake = a.next_wake().expect("a retry");
    let mut out = AgentOut::default();
    a.tick(wake, &mut rng, &mut out);
    let (second, candidates) = opened(&out);
    assert_eq!(candidates, vec![(next.addr, Some(next.id))], "the silent best is passed over");
    a.on_session_opened(wake, second, next.id, &mut AgentOut::default());
    let mut gaps = Vec::new();
    let mut since = wake;
    for _ in 0..3 {
        // The move back to the best waits longer each time...
        let back = a.next_wake().expect("a move back is planned");
        gaps.push(back - since);
        let mut out = AgentOut::default();
        a.tick(back, &mut rng, &mut out);
        assert_eq!(opened(&out).1, vec![(best.addr, Some(best.id))], "the move goes to the best");
        assert!(out.close.is_empty(), "the open session stays while the move is tried");
        // ...and its open times out too: the session with `next` never broke.
        let deadline = a.next_wake().expect("the move's deadline");
        let mut out = AgentOut::default();
        a.tick(deadline, &mut rng, &mut out);
        assert_eq!(out.close, vec![opened_id_of_move(&out, &a)], "only the failed move is closed");
        assert_eq!(a.session_manager(), Some(next.id), "still in session with the next choice");
        since = deadline;
    }
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "the avoidance grows: {gaps:?}");
    assert_eq!((a.stats.moves_failed, a.stats.moves_for_balance), (3, 0));
}

/// The id of the move `out` closed (the agent has no move in progress now).
fn opened_id_of_move(out: &AgentOut, a: &AgentRole) -> u64 {
    assert!(a.moving().is_none(), "the move is over");
    out.close[0]
}

#[test]
fn a_move_for_balance_opens_the_new_session_before_closing_the_old() {
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ms: Vec<Identity> = (1..=3).map(manager).collect();
    let best = choice::rank(0xa9e7, &ms, |m| m.id)[0].clone();
    // Only the others are live at first: the session goes to one of them.
    let others: Vec<Identity> = ms.iter().filter(|m| m.id != best.id).cloned().collect();
    a.set_live_managers(Duration::ZERO, others.clone(), &mut AgentOut::default());
    let first = opened_id(&a);
    let first_manager = a.ranked()[0].id;
    a.on_session_opened(MS, first, first_manager, &mut AgentOut::default());
    // The best comes up: after the settle time the agent opens to it,
    // keeping the open session until the new one is open.
    a.set_live_managers(2 * MS, ms.clone(), &mut AgentOut::default());
    let at = a.next_wake().expect("a move is planned");
    let mut out = AgentOut::default();
    a.tick(at, &mut rng, &mut out);
    let (moving, candidates) = opened(&out);
    assert_eq!(candidates, vec![(best.addr, Some(best.id))]);
    assert!(out.close.is_empty());
    assert_eq!(a.session_manager(), Some(first_manager), "the old session serves meanwhile");
    let mut out = AgentOut::default();
    a.on_session_opened(at + MS, moving, best.id, &mut out);
    assert!(out.close.is_empty(), "open, but its manager's assignment has not come yet");
    a.on_session_data(at + MS, moving, &assign(&[spec("w/1", "run", &[])]), &mut out);
    assert_eq!(out.close, vec![first], "the old session closes once the new one is open");
    assert_eq!(a.session_manager(), Some(best.id));
    assert!(!out.send.is_empty(), "the new manager gets a full report");
    assert_eq!(a.stats.moves_for_balance, 1);
    // The old one's close, reported later, changes nothing.
    let mut out = AgentOut::default();
    a.on_session_closed(at + 2 * MS, first, &mut rng, &mut out);
    assert!(out.open.is_empty() && out.close.is_empty());
    assert_eq!(a.session_manager(), Some(best.id));
}

/// An agent in session with its second choice, running `w/1` as `spec`
/// says, with a move to its best choice open beside it. Returns the agent,
/// the old session, the move's session and the best manager's id.
fn agent_moving_to_best(spec: &UnitSpec, rng: &mut ChaCha8Rng) -> (AgentRole, u64, u64, NodeId) {
    let mut a = agent_role();
    let ms: Vec<Identity> = (1..=3).map(manager).collect();
    let best = choice::rank(0xa9e7, &ms, |m| m.id)[0].clone();
    let others: Vec<Identity> = ms.iter().filter(|m| m.id != best.id).cloned().collect();
    a.set_live_managers(Duration::ZERO, others, &mut AgentOut::default());
    let first = opened_id(&a);
    let first_manager = a.ranked()[0].id;
    a.on_session_opened(MS, first, first_manager, &mut AgentOut::default());
    a.on_session_data(MS, first, &assign(std::slice::from_ref(spec)), &mut AgentOut::default());
    let started = a.supervisor.take_cmds();
    assert_eq!(starts(&started).len(), 1);
    a.on_workload(2 * MS, &WorkloadEvent::Started { unit: "w/1".into(), run: 1, pid: 7 });
    a.set_live_managers(2 * MS, ms, &mut AgentOut::default());
    // The driver's loop until the move opens (reports are due first).
    let mut out = AgentOut::default();
    let mut at = 2 * MS;
    for _ in 0..10 {
        at = a.next_wake().expect("a move is planned");
        a.tick(at, rng, &mut out);
        if !out.open.is_empty() {
            break;
        }
    }
    let (moving, candidates) = opened(&out);
    assert_eq!(candidates, vec![(best.addr, Some(best.id))]);
    a.on_session_opened(at + MS, moving, best.id, &mut AgentOut::default());
    (a, first, moving, best.id)
}

#[test]
fn a_move_for_balance_never_hands_the_supervisor_an_older_assignment() {
    // Found by the simulator (seed 20261758, `--managers 4 --agents 8
    // --faults random`): the old manager sent a config change; the move's
    // new manager, which did not hold it yet, answered with the previous
    // config, and the agent took that as its new session's assignment: the
    // workload restarted for the change, back, and for it again.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let newer = spec("w/1", "run", &[("k", "2")]);
    let (mut a, first, moving, best) = agent_moving_to_best(&newer, &mut rng);
    let older = spec("w/1", "run", &[("k", "1")]);
    let mut out = AgentOut::default();
    a.on_session_data(a.next_wake().unwrap_or(MS), moving, &assign(&[older]), &mut out);
    assert!(
        a.supervisor.take_cmds().is_empty(),
        "the new manager's older assignment is not applied"
    );
    assert!(out.close.is_empty(), "the old session stays while the new manager catches up");
    assert_ne!(a.session_manager(), Some(best));
    assert_eq!(a.stats.moves_waited, 1);
    // The new manager catches up: the move is made, nothing restarts.
    let mut out = AgentOut::default();
    a.on_session_data(
        Duration::from_secs(1),
        moving,
        &assign(std::slice::from_ref(&newer)),
        &mut out,
    );
    assert_eq!(out.close, vec![first]);
    assert_eq!(a.session_manager(), Some(best));
    assert!(a.supervisor.take_cmds().is_empty(), "the move restarted a workload");
    assert_eq!(a.stats.moves_for_balance, 1);
}

#[test]
fn a_move_whose_manager_does_not_catch_up_fails_and_the_old_session_stays() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let newer = spec("w/1", "run", &[("k", "2")]);
    let (mut a, first, moving, best) = agent_moving_to_best(&newer, &mut rng);
    let opened_at = a.moving().and_then(|m| m.opened).expect("the move is open");
    a.on_session_data(
        opened_at,
        moving,
        &assign(&[spec("w/1", "run", &[])]),
        &mut AgentOut::default(),
    );
    let deadline = a.next_wake().expect("the catch-up deadline");
    assert_eq!(deadline, opened_at + Duration::from_millis(MOVE_CATCH_UP_MS));
    let mut out = AgentOut::default();
    a.tick(deadline, &mut rng, &mut out);
    assert_eq!(out.close, vec![moving], "only the move's session closes");
    assert!(a.moving().is_none());
    assert!(
        !matches!(a.session(), Session::Open { id, manager, .. } if *id != first || *manager == best)
    );
    assert_eq!((a.stats.moves_failed, a.stats.moves_for_balance), (1, 0));
    assert!(a.supervisor.take_cmds().is_empty());
}

#[test]
fn the_old_session_breaking_during_a_move_hands_over_to_the_open_new_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let running = spec("w/1", "run", &[("k", "1")]);
    let (mut a, first, moving, best) = agent_moving_to_best(&running, &mut rng);
    let changed = spec("w/1", "run", &[("k", "3")]);
    a.on_session_data(
        Duration::from_secs(1),
        moving,
        &assign(std::slice::from_ref(&changed)),
        &mut AgentOut::default(),
    );
    assert!(a.supervisor.take_cmds().is_empty(), "not applied while the old session serves");
    let mut out = AgentOut::default();
    a.on_session_closed(Duration::from_secs(2), first, &mut rng, &mut out);
    assert!(out.open.is_empty(), "no new dial: the open move takes over");
    assert_eq!(a.session_manager(), Some(best));
    assert_eq!(
        a.supervisor.take_cmds(),
        vec![WorkloadCmd::Stop { unit: "w/1".into(), run: 1 }],
        "its assignment is applied (the change restarts the workload once)"
    );
}

#[test]
fn failed_opens_back_off_with_jitter_then_dial_everyone_and_never_save_an_empty_list() {
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut out);
    let mut waits = Vec::new();
    for i in 0..PARALLEL_AFTER_FAILURES + 1 {
        let id = opened_id(&a);
        let mut out = AgentOut::default();
        let now = Duration::from_secs(u64::from(i) * 10);
        a.on_session_closed(now, id, &mut rng, &mut out);
        let wake = a.next_wake().expect("a retry is scheduled");
        waits.push(wake - now);
        a.tick(wake, &mut rng, &mut out);
        if i + 1 >= PARALLEL_AFTER_FAILURES {
            assert!(
                opened(&out).1.len() >= 3,
                "after repeated failures every known manager is dialed: {:?}",
                out.open
            );
        }
    }
    assert!(waits[1] > waits[0] / 2 && waits[1] <= waits[0] * 4, "backoff grows: {waits:?}");
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::from_secs(99), vec![], &mut out);
    assert_eq!(out.save_managers, None, "an empty set never replaces a good one");
}

/// Fails `a`'s opens `PARALLEL_AFTER_FAILURES` times in a row (each retried
/// when due); returns the time of the open now in progress.
fn fail_opens_in_a_row(a: &mut AgentRole, rng: &mut ChaCha8Rng) -> Duration {
    let mut now = Duration::ZERO;
    for _ in 0..PARALLEL_AFTER_FAILURES {
        let id = opened_id(a);
        a.on_session_closed(now, id, rng, &mut AgentOut::default());
        now = a.next_wake().expect("a retry is scheduled");
        a.tick(now, rng, &mut AgentOut::default());
    }
    now
}

/// A session that breaks soon after it opened does not start the row of
/// failures over: on a flapping network the agent keeps dialing every
/// manager at once. One that lasted `SESSION_STABLE_MS` does.
#[test]
fn a_session_that_breaks_at_once_keeps_the_agent_dialing_everyone() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for (lasted_ms, dials_everyone) in [(SESSION_STABLE_MS - 1, true), (SESSION_STABLE_MS, false)] {
        let mut a = agent_role();
        let mut out = AgentOut::default();
        a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut out);
        let now = fail_opens_in_a_row(&mut a, &mut rng);
        let id = opened_id(&a);
        let mut out = AgentOut::default();
        a.on_session_opened(now, id, manager(1).id, &mut out);
        assert!(matches!(a.session(), Session::Open { .. }));
        let mut out = AgentOut::default();
        a.on_session_closed(now + Duration::from_millis(lasted_ms), id, &mut rng, &mut out);
        let (_, candidates) = opened(&out);
        assert_eq!(
            candidates.len() > 1,
            dials_everyone,
            "a session that lasted {lasted_ms} ms, then the next open dials {candidates:?}"
        );
    }
}

/// The same rule when the session ends because SWIM declared its manager
/// down (the usual way a manager's death reaches an agent): a session that
/// lasted `SESSION_STABLE_MS` makes the next open dial the best live
/// manager alone. Before, the row of failures from long ago still stood,
/// so every agent of a dead manager dialed every manager at once (a login
/// spent on each, and the open held until the dead one's dial timed out).
#[test]
fn a_stable_session_whose_manager_is_declared_down_dials_one_manager_next() {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    for (lasted_ms, dials_everyone) in [(SESSION_STABLE_MS - 1, true), (SESSION_STABLE_MS, false)] {
        let mut a = agent_role();
        let managers: Vec<Identity> = (1..=3).map(manager).collect();
        a.set_live_managers(Duration::ZERO, managers.clone(), &mut AgentOut::default());
        let now = fail_opens_in_a_row(&mut a, &mut rng);
        let id = opened_id(&a);
        let dead = managers[0].id;
        a.on_session_opened(now, id, dead, &mut AgentOut::default());
        assert!(matches!(a.session(), Session::Open { .. }));
        let live: Vec<Identity> = managers[1..].to_vec();
        let mut out = AgentOut::default();
        a.set_live_managers(now + Duration::from_millis(lasted_ms), live, &mut out);
        assert_eq!(out.close, vec![id], "the dead manager's session is closed");
        let (_, candidates) = opened(&out);
        assert!(candidates.iter().all(|(_, m)| *m != Some(dead)) || dials_everyone);
        assert_eq!(
            candidates.len() > 1,
            dials_everyone,
            "a session that lasted {lasted_ms} ms, its manager declared down, then the next open dials {candidates:?}"
        );
    }
}

#[test]
fn reports_carry_only_changes_and_a_new_session_gets_everything() {
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, vec![manager(1)], &mut out);
    let id = opened_id(&a);
    let mut out = AgentOut::default();
    a.on_session_opened(MS, id, NodeId(1), &mut out);
    let first = decode_msg(&out.send[0].1).unwrap();
    assert!(
        matches!(&first, SessionMsg::Report(r) if r.machine_status.as_deref() == Some("started")),
        "{first:?}"
    );
    a.on_session_data(2 * MS, id, &assign(&[spec("w/1", "run", &[])]), &mut out);
    a.supervisor.take_cmds();
    a.on_workload(3 * MS, &WorkloadEvent::Started { unit: "w/1".into(), run: 1, pid: 9 });
    let mut out = AgentOut::default();
    let wake = a.next_wake().unwrap();
    a.tick(wake, &mut rng, &mut out);
    let SessionMsg::Report(r) = decode_msg(&out.send[0].1).unwrap() else { panic!() };
    assert_eq!(r.units, vec![("w/1".to_string(), "active: running".to_string())]);
    assert_eq!(r.machine_status, None, "only changes");
    let mut out = AgentOut::default();
    a.tick(wake + Duration::from_secs(1), &mut rng, &mut out);
    assert!(out.send.is_empty(), "nothing changed, nothing sent");
}

#[test]
fn a_removed_machine_stops_its_workloads_and_stays_gone() {
    let mut a = agent_role();
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, vec![manager(1)], &mut out);
    let id = opened_id(&a);
    a.on_session_opened(MS, id, NodeId(1), &mut out);
    a.on_session_data(2 * MS, id, &assign(&[spec("w/1", "run", &[])]), &mut out);
    a.supervisor.take_cmds();
    a.on_workload(3 * MS, &WorkloadEvent::Started { unit: "w/1".into(), run: 1, pid: 9 });
    let mut out = AgentOut::default();
    a.on_session_data(
        4 * MS,
        id,
        &encode_msg(&SessionMsg::Refused { reason: "removed".into(), gone: true }),
        &mut out,
    );
    assert!(a.is_gone());
    assert_eq!(a.supervisor.take_cmds(), vec![WorkloadCmd::Stop { unit: "w/1".into(), run: 1 }]);
    let mut out = AgentOut::default();
    a.set_live_managers(5 * MS, vec![manager(1), manager(2)], &mut out);
    assert!(out.open.is_empty(), "a gone agent opens no new session");
}

fn manager_replica() -> Replica {
    Replica::new(Actor { node: 0x1111 << 48, generation: 1 })
}

fn run_cmd(r: &mut Replica, cmd: Command) -> model::Outcome {
    let id = r.own_seq() + 1_000;
    let (changes, outcome) = model::plan(r, id, &cmd).expect("accepted");
    r.write(&changes);
    outcome
}

#[test]
fn managers_refuse_unknown_and_removed_machines_and_serve_assignments() {
    let mut r = manager_replica();
    let mut s = AgentSessions::default();
    let mut out = ServeOut::default();
    s.opened(&r, 1, NodeId(7), Some("9-ffff".into()), &mut out);
    assert!(matches!(decode_msg(&out.send[0].1), Ok(SessionMsg::Refused { gone: false, .. })));
    assert_eq!(out.close, vec![1]);
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 1 });
    let machine = o.machines[0].clone();
    let mut out = ServeOut::default();
    s.opened(&r, 2, NodeId(7), Some(machine.clone()), &mut out);
    assert!(out.send.is_empty(), "the first assignment waits for the next refresh");
    assert_eq!(s.refresh_delay_ms(), Some(super::serve::FIRST_ASSIGN_DELAY_MS));
    s.refresh(&r, &mut out);
    let Ok(SessionMsg::Assign(a)) = decode_msg(&out.send[0].1) else { panic!("{:?}", out.send) };
    assert_eq!(a.units.len(), 1);
    assert_eq!(a.units[0].command, "serve");
    assert!(out.changes.iter().any(
        |c| matches!(c, crate::core::state::Change::Set { key, .. } if key.ends_with("/agent"))
    ));
    r.write(&out.changes);
    // Another agent for the same machine is refused.
    let mut out = ServeOut::default();
    s.opened(&r, 3, NodeId(8), Some(machine.clone()), &mut out);
    assert!(matches!(decode_msg(&out.send[0].1), Ok(SessionMsg::Refused { gone: false, .. })));
    // A config change reaches the session once; a second refresh sends nothing.
    run_cmd(
        &mut r,
        Command::SetConfig { app: "web".into(), pairs: vec![("port".into(), "8080".into())] },
    );
    s.mark_dirty();
    let mut out = ServeOut::default();
    s.refresh(&r, &mut out);
    let Ok(SessionMsg::Assign(a)) = decode_msg(&out.send[0].1) else { panic!() };
    assert_eq!(a.units[0].config, BTreeMap::from([("port".to_string(), "8080".to_string())]));
    s.mark_dirty();
    let mut out = ServeOut::default();
    s.refresh(&r, &mut out);
    assert!(out.send.is_empty());
}

/// A failover sends a manager many session opens at once. Each used to
/// compute its machine's assignment on its own, a pass over every unit
/// (70.7 ms at 100,050 entities, `--only memory`): 1,000 agents, 70 s of
/// the node's time. Now the opens queued together share one pass.
#[test]
fn a_burst_of_session_opens_shares_one_assignment_pass() {
    let mut r = manager_replica();
    let mut s = AgentSessions::default();
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 50 });
    let mut out = ServeOut::default();
    for (i, m) in o.machines.iter().enumerate() {
        s.opened(&r, i as u64 + 1, NodeId(100 + i as u64), Some(m.clone()), &mut out);
    }
    assert_eq!(s.stats.sessions_accepted, 50);
    assert!(out.send.is_empty());
    s.refresh(&r, &mut out);
    assert_eq!(s.stats.assignment_passes, 1, "one pass for the whole burst");
    assert_eq!(out.send.len(), 50, "every session got its assignment");
    for (session, bytes) in &out.send {
        let Ok(SessionMsg::Assign(a)) = decode_msg(bytes) else { panic!("{bytes:?}") };
        assert_eq!(a.machine, o.machines[*session as usize - 1]);
        assert_eq!(a.units.len(), 1);
    }
    assert_eq!(s.refresh_delay_ms(), None, "nothing left to send");
}

/// An open used to mark every session dirty: a pass over all of a
/// manager's sessions per agent joining, O(N^2) over its agents. Now an
/// open alone computes the waiting session's assignment only.
#[test]
fn a_session_open_alone_computes_only_its_own_assignment() {
    let mut r = manager_replica();
    let mut s = AgentSessions::default();
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 2 });
    let mut out = ServeOut::default();
    s.opened(&r, 1, NodeId(100), Some(o.machines[0].clone()), &mut out);
    s.refresh(&r, &mut out);
    assert_eq!(out.send.len(), 1);
    // The config changes (the node would mark the sessions dirty; not yet),
    // and a second agent opens: only its assignment is computed and sent.
    run_cmd(
        &mut r,
        Command::SetConfig { app: "web".into(), pairs: vec![("k".into(), "v".into())] },
    );
    let mut out = ServeOut::default();
    s.opened(&r, 2, NodeId(101), Some(o.machines[1].clone()), &mut out);
    assert_eq!(s.refresh_delay_ms(), Some(FIRST_ASSIGN_DELAY_MS));
    s.refresh(&r, &mut out);
    assert_eq!(out.send.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2]);
    assert_eq!(s.refresh_delay_ms(), None);
    // The state change's own pass reaches the first session.
    s.mark_dirty();
    assert_eq!(s.refresh_delay_ms(), Some(ASSIGN_REFRESH_MS));
    let mut out = ServeOut::default();
    s.refresh(&r, &mut out);
    assert_eq!(out.send.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s.stats.assignment_passes, 3);
}

#[test]
fn reports_about_other_machines_units_are_skipped() {
    let mut r = manager_replica();
    let mut s = AgentSessions::default();
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 2 });
    let (m1, units) = (o.machines[0].clone(), o.ids.clone());
    let mut out = ServeOut::default();
    s.opened(&r, 1, NodeId(7), Some(m1.clone()), &mut out);
    r.write(&out.changes);
    let report = Report {
        machine_status: None,
        address: None,
        units: vec![
            (units[0].clone(), "active: ok".into()),
            (units[1].clone(), "active: forged".into()),
        ],
    };
    let mut out = ServeOut::default();
    s.data(&r, 1, &encode_msg(&SessionMsg::Report(report)), &mut out);
    r.write(&out.changes);
    assert_eq!(r.get(&format!("u/{}/status", units[0])), vec!["active: ok"]);
    assert_eq!(r.get(&format!("u/{}/status", units[1])), vec!["pending"], "not this agent's unit");
    assert_eq!(s.stats.report_units_skipped, 1);
    s.data(&r, 1, b"\xff\xff garbage", &mut out);
    assert_eq!(s.stats.bad_messages, 1);
}

#[test]
fn only_changes_that_can_move_assignments_make_them_recomputed() {
    // Found by profiling the simulator: every state change (agents' status
    // reports included) made every manager with a session re-read every key
    // 50 ms later, over half of a 600 s run's time.
    use crate::core::state::agents::ops_affect_assignments;
    let mut r = manager_replica();
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 1 });
    let unit = o.ids[0].clone();
    let report = Report {
        machine_status: Some("started".into()),
        address: Some("10.0.0.9".into()),
        units: vec![(unit, "active: ok".into())],
    };
    let (changes, _) =
        crate::core::state::agents::plan_report(&r, &o.machines[0], "00000000000000aa", &report);
    assert!(!ops_affect_assignments(&r.write(&changes)), "a report changes no assignment");
    let (changes, _) =
        model::plan(&r, 991, &Command::SetController { key: "k".into(), value: "v".into() })
            .unwrap();
    assert!(!ops_affect_assignments(&r.write(&changes)));
    let (changes, _) = model::plan(
        &r,
        992,
        &Command::SetConfig { app: "web".into(), pairs: vec![("p".into(), "1".into())] },
    )
    .unwrap();
    assert!(ops_affect_assignments(&r.write(&changes)), "a config change restarts workloads");
    let (changes, _) = model::plan(&r, 993, &Command::AddUnit { app: "web".into(), n: 1 }).unwrap();
    assert!(ops_affect_assignments(&r.write(&changes)));
    let id = run_cmd(&mut r, Command::AddMachine { n: 1 }).ids[0].clone();
    let (changes, _) = model::plan(&r, 994, &Command::RemoveMachine { id }).unwrap();
    assert!(ops_affect_assignments(&r.write(&changes)), "a removed machine's agent is told");
}

#[test]
fn a_busy_refusal_waits_the_retry_after_plus_bounded_jitter_and_does_not_avoid_the_manager() {
    use super::role::MAX_HONOURED_RETRY_AFTER_MS;
    let mut a = agent_role();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut out);
    let id = opened_id(&a);
    let now = Duration::from_secs(5);
    a.on_session_busy(now, id, 800, &mut rng);
    assert_eq!(a.session(), &Session::Idle);
    let wake = a.next_wake().expect("a retry is scheduled");
    assert!(
        wake - now >= 800 * MS && wake - now <= 1_000 * MS,
        "waits the retry-after plus at most a quarter: {:?}",
        wake - now
    );
    let mut out = AgentOut::default();
    a.tick(wake - MS, &mut rng, &mut out);
    assert!(out.open.is_empty(), "nothing is dialled before the retry-after: {:?}", out.open);
    a.tick(wake, &mut rng, &mut out);
    assert!(!out.open.is_empty(), "the open is retried once the retry-after passed");
    assert_eq!(a.stats.sessions_busy, 1);

    // A retry-after past the honoured bound is cut to it.
    let id = opened_id(&a);
    let now = Duration::from_secs(60);
    a.on_session_busy(now, id, u64::MAX, &mut rng);
    let wait = a.next_wake().expect("a retry is scheduled") - now;
    let bound = Duration::from_millis(MAX_HONOURED_RETRY_AFTER_MS);
    assert!(wait >= bound && wait <= bound + bound / 4, "bounded: {wait:?}");
}

#[test]
fn assignments_read_only_their_fields_and_skip_nested_config_keys() {
    // The walk reads application and unit keys only, and builds values
    // only for life, command, config/<k> and machine (a config key with a
    // `/` is not one, as before the walk was narrowed).
    use crate::core::state::{Change, agents};
    let mut r = manager_replica();
    let o = run_cmd(&mut r, Command::Deploy { name: "web".into(), command: "serve".into(), n: 1 });
    let (machine, unit) = (o.machines[0].clone(), o.ids[0].clone());
    let set = |key: &str, value: &str| Change::Set { key: key.into(), value: value.into() };
    r.write(&[
        set("a/web/config/port", "80"),
        set("a/web/config/x/y", "nested"),
        set(&format!("u/{unit}/status"), "active: ok"),
    ]);
    let all = agents::assignments(&r, &[machine.clone()].into());
    let units = &all[&machine].units;
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].unit, unit);
    assert_eq!(units[0].config, BTreeMap::from([("port".to_string(), "80".to_string())]));
    // A unit placed on another machine is not assigned to this one.
    r.write(&[set(&format!("u/{unit}/machine"), "elsewhere")]);
    assert!(agents::assignments(&r, &[machine.clone()].into())[&machine].units.is_empty());
}

/// An open in progress to a manager that SWIM then declares down is given
/// up at once and a live manager dialed, instead of waiting out the open
/// timeout (seconds) for a dial to a dead process.
#[test]
fn an_open_to_a_manager_declared_down_is_given_up_for_a_live_one() {
    let mut a = agent_role();
    let mut out = AgentOut::default();
    a.set_live_managers(Duration::ZERO, (1..=3).map(manager).collect(), &mut out);
    let (first, candidates) = opened(&out);
    assert_eq!(candidates.len(), 1, "a first open dials one manager");
    let target = candidates[0].1.expect("a live manager's id");
    let rest: Vec<_> = (1..=3).map(manager).filter(|m| m.id != target).collect();
    let mut out = AgentOut::default();
    a.set_live_managers(MS, rest.clone(), &mut out);
    assert_eq!(out.close, vec![first], "the open to the dead manager is closed");
    let (second, candidates) = opened(&out);
    assert_ne!(second, first);
    assert!(candidates.iter().all(|(_, id)| *id != Some(target)), "{candidates:?}");
    assert!(matches!(a.session(), Session::Opening { id, .. } if *id == second));
    assert_eq!(a.stats.opens_abandoned, 1);
    assert_eq!(a.stats.sessions_failed, 0, "not a failure: nothing refused it");
    // A change that leaves the open's target live keeps the open.
    let mut out = AgentOut::default();
    a.set_live_managers(2 * MS, rest[..1].to_vec(), &mut out);
    let still = matches!(a.session(), Session::Opening { id, .. } if *id == second);
    let kept = candidates.iter().any(|(_, id)| *id == Some(rest[0].id));
    assert_eq!(still, kept, "kept exactly when its target is still live");
}
