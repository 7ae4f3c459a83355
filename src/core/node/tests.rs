//! Tests of the node state machine driven by hand: a tiny in-memory loop
//! that delivers outputs between nodes at a virtual time, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::identity::{Identity, NodeId, Role};
use crate::core::io::{Event, Input, MemberState, Output, PeerCert, Timer};
use crate::core::node::{Node, NodeConfig};
use crate::core::timing::Timing;

const MS: Duration = Duration::from_millis(1);

fn ident(n: u64) -> Identity {
    crate::core::identity::test_member(n, Role::Manager)
}

/// Nodes 1..=n, node 1 the seed; runs in virtual time.
struct Net {
    nodes: BTreeMap<u64, Node>,
    timers: Vec<(u64, Timer)>,
    events: Vec<(u64, Event)>,
    now: Duration,
    /// Timers of this node fire this much late (a stalled process).
    stall: BTreeMap<u64, Duration>,
    /// These nodes receive nothing (a starved or cut-off accuser).
    deaf: BTreeSet<u64>,
    timing: Timing,
}

impl Net {
    fn new(n: u64) -> Net {
        Net::with_timing(n, Timing::lan())
    }

    fn with_timing(n: u64, timing: Timing) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            timers: vec![],
            events: vec![],
            now: Duration::ZERO,
            stall: BTreeMap::new(),
            deaf: BTreeSet::new(),
            timing,
        };
        for i in 1..=n {
            net.add(i);
        }
        net
    }

    /// Starts node `i` now, joining through node 1 (unless it is node 1).
    fn add(&mut self, i: u64) {
        let seeds = if i == 1 { vec![] } else { vec![ident(1).addr] };
        self.add_with(i, seeds, vec![]);
    }

    /// Starts node `i` now with these seeds and peers known from an earlier
    /// run. Node `i + 1000` has node `i`'s address.
    fn add_with(&mut self, i: u64, seeds: Vec<std::net::SocketAddr>, known_peers: Vec<Identity>) {
        let mut node = Node::new(NodeConfig {
            identity: ident(i),
            timing: self.timing.clone(),
            rng_seed: i,
            seeds,
            known_peers,
            state: None,
            agent: None,
            controller_machine: None,
        });
        node.start(self.now);
        self.nodes.insert(i, node);
        self.pump(i);
    }

    fn pump(&mut self, i: u64) {
        let mut deliveries = vec![];
        while let Some(out) = self.nodes.get_mut(&i).and_then(|n| n.poll()) {
            match out {
                Output::Send { to, bytes } => deliveries.push((
                    to.id.0,
                    Input::Datagram {
                        from: PeerCert { id: NodeId(i), role: Role::Manager },
                        bytes,
                    },
                )),
                Output::Identify { addr } => {
                    let peer = self.nodes.keys().copied().find(|k| ident(*k).addr == addr);
                    if let Some(p) = peer {
                        deliveries.push((
                            i,
                            Input::Identified {
                                addr,
                                peer: PeerCert { id: NodeId(p), role: Role::Manager },
                            },
                        ));
                    }
                }
                Output::SendMembers { to, bytes } => deliveries.push((
                    to.id.0,
                    Input::Members { from: PeerCert { id: NodeId(i), role: Role::Manager }, bytes },
                )),
                Output::SetTimer(t) => self.timers.push((i, t)),
                Output::Event(e) => self.events.push((i, e)),
                // These nodes hold no state and are not agents.
                Output::Persist { .. }
                | Output::SendState { .. }
                | Output::Reply { .. }
                | Output::SnapshotNeeded => {}
                Output::OpenSession { .. }
                | Output::SessionSend { .. }
                | Output::CloseSession { .. } => {}
                Output::Workload(_) | Output::SaveManagers(_) | Output::Provider(_) => {}
            }
        }
        for (to, input) in deliveries {
            let heard = !matches!(input, Input::Datagram { .. } | Input::Members { .. });
            if !heard && self.deaf.contains(&to) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle(self.now, input);
                self.pump(to);
            }
        }
    }

    fn run_until(&mut self, end: Duration) {
        loop {
            let due = |(i, t): &(u64, Timer), stall: &BTreeMap<u64, Duration>| {
                t.at + stall.get(i).copied().unwrap_or_default()
            };
            let Some(pos) =
                (0..self.timers.len()).min_by_key(|&k| due(&self.timers[k], &self.stall))
            else {
                return;
            };
            let at = due(&self.timers[pos], &self.stall);
            if at > end {
                self.now = end;
                return;
            }
            let (i, t) = self.timers.swap_remove(pos);
            self.now = self.now.max(at);
            if let Some(node) = self.nodes.get_mut(&i) {
                node.handle(self.now, Input::Timer(t));
                self.pump(i);
            }
        }
    }

    fn state_of(&self, observer: u64, member: u64) -> Option<MemberState> {
        self.nodes[&observer]
            .members()
            .into_iter()
            .find(|m| m.identity.id == NodeId(member))
            .map(|m| m.state)
    }
}

#[test]
fn three_nodes_join_and_a_crash_is_detected_within_the_bound() {
    let mut net = Net::new(3);
    net.run_until(2_000 * MS);
    for o in 1..=3 {
        for m in 1..=3 {
            assert_eq!(net.state_of(o, m), Some(MemberState::Alive), "{o} sees {m}");
        }
    }
    net.nodes.remove(&3);
    let crash = net.now;
    net.run_until(crash + 4_000 * MS);
    for o in 1..=2 {
        let (_, _) = net
            .events
            .iter()
            .find(|(who, e)| *who == o && matches!(e, Event::MemberDown { identity, left: false } if identity.id == NodeId(3)))
            .expect("crash declared down");
        assert_eq!(net.state_of(o, 3), Some(MemberState::Down));
    }
}

#[test]
fn a_member_whose_managers_all_came_back_as_new_nodes_finds_them_at_their_addresses() {
    // Node 3's seed is gone for good (a manager since replaced); it knows
    // nodes 1 and 2 from an earlier run and joins through them.
    let mut net = Net::new(2);
    net.add_with(3, vec![ident(50).addr], vec![ident(1)]);
    net.run_until(2_000 * MS);
    assert_eq!(net.state_of(3, 2), Some(MemberState::Alive));
    // Both managers lose their disks at once and come back as new nodes at
    // their addresses: an announce to their old identities reaches nobody.
    net.nodes.remove(&1);
    net.nodes.remove(&2);
    net.add_with(1001, vec![], vec![]);
    net.add_with(1002, vec![ident(1001).addr], vec![]);
    net.run_until(net.now + 30_000 * MS);
    assert_eq!(net.state_of(3, 2), Some(MemberState::Down));
    for (o, m) in [(3, 1001), (3, 1002), (1001, 3), (1002, 3)] {
        assert_eq!(net.state_of(o, m), Some(MemberState::Alive), "{o} sees {m}");
    }
}

#[test]
fn a_datagram_speaking_for_another_member_is_dropped_and_counted() {
    let mut net = Net::new(2);
    net.run_until(1_000 * MS);
    // Capture a real datagram from node 2 to node 1 ...
    let node2 = net.nodes.get_mut(&2).unwrap();
    node2.handle(
        net.now,
        Input::Publish(crate::core::notices::Notice::MemberRevoked { id: NodeId(77) }),
    );
    let bytes = std::iter::from_fn(|| node2.poll())
        .find_map(|o| match o {
            Output::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .expect("a broadcast datagram");
    // ... and deliver it as if it came on node 9's connection.
    let before = net.nodes[&1].members();
    let node1 = net.nodes.get_mut(&1).unwrap();
    node1.handle(
        net.now,
        Input::Datagram {
            from: PeerCert { id: NodeId(9), role: Role::Manager },
            bytes: bytes.clone(),
        },
    );
    node1.handle(
        net.now,
        Input::Datagram { from: PeerCert { id: NodeId(2), role: Role::Agent }, bytes },
    );
    assert_eq!(node1.stats().dropped_spoofed, 2);
    assert_eq!(node1.members(), before);
    assert!(node1.notices().is_empty(), "nothing from a spoofed datagram was applied");
    node1.handle(
        net.now,
        Input::Datagram {
            from: PeerCert { id: NodeId(2), role: Role::Manager },
            bytes: vec![0x01, 0xff, 0xff],
        },
    );
    node1.handle(
        net.now,
        Input::Datagram { from: PeerCert { id: NodeId(2), role: Role::Manager }, bytes: vec![] },
    );
    node1.handle(
        net.now,
        Input::Datagram {
            from: PeerCert { id: NodeId(2), role: Role::Manager },
            bytes: vec![0x01; 2_000],
        },
    );
    assert_eq!(node1.stats().dropped_malformed, 2);
    assert_eq!(node1.stats().dropped_oversized, 1);
    assert_eq!(node1.members(), before);
}

#[test]
fn a_stalled_node_raises_its_health_score_and_stretches_its_timeouts() {
    let mut net = Net::new(3);
    net.run_until(2_000 * MS);
    assert_eq!(net.nodes[&2].health_score(), 0);
    net.stall.insert(2, 300 * MS);
    net.run_until(4_000 * MS);
    let score = net.nodes[&2].health_score();
    assert!(score > 0, "late timers raise the score");
    assert!(net.nodes[&2].stats().late_timers > 0);
    // While stalled, node 2 accused no one.
    let accused =
        net.events.iter().any(|(who, e)| *who == 2 && matches!(e, Event::MemberDown { .. }));
    assert!(!accused, "{:?}", net.events);
    net.stall.clear();
    net.run_until(20_000 * MS);
    assert_eq!(net.nodes[&2].health_score(), 0, "quiet periods bring the score back down");
}

/// Node 1 hears nothing for `deaf_ms` in a cluster of `n`: every probe it
/// sends fails, so it suspects each member it probes, while every other
/// member reaches them. Returns the healthy members (all but node 1, which
/// really was unreachable) declared down, by anyone.
fn downs_while_one_accuser_is_deaf(timing: Timing, n: u64, deaf_ms: u64) -> Vec<NodeId> {
    let mut net = Net::with_timing(n, timing);
    net.run_until(5_000 * MS);
    assert!((1..=n).all(|o| (1..=n).all(|m| net.state_of(o, m) == Some(MemberState::Alive))));
    net.deaf.insert(1);
    let start = net.now;
    net.run_until(start + Duration::from_millis(deaf_ms));
    net.deaf.clear();
    net.run_until(start + 10_000 * MS);
    let mut downs: Vec<NodeId> = net
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::MemberDown { identity, .. } if identity.id != NodeId(1) => Some(identity.id),
            _ => None,
        })
        .collect();
    downs.sort();
    downs.dedup();
    downs
}

#[test]
fn one_deaf_accuser_alone_declares_no_healthy_member_down_within_the_longest_suspicion() {
    // 1.5 s deaf: it suspects about two members, each down at 500 ms under
    // plain SWIM (and the downs it then gossips reach everyone, since it
    // can still send); with dynamic suspicion no one confirms, so each
    // waits 1.5 s, and the accuser hears the refutations first.
    let plain = Timing { suspicion_confirmations: 0, ..Timing::lan() };
    let downs = downs_while_one_accuser_is_deaf(plain, 6, 1_500);
    assert!(!downs.is_empty(), "plain SWIM: the deaf accuser declares healthy members down");
    let dynamic = Timing { suspicion_confirmations: 1, ..Timing::lan() };
    let downs = downs_while_one_accuser_is_deaf(dynamic, 6, 1_500);
    assert!(downs.is_empty(), "dynamic suspicion: nobody down, got {downs:?}");
}

#[test]
fn a_crash_is_confirmed_by_other_probers_and_declared_down() {
    let mut net = Net::with_timing(6, Timing { suspicion_confirmations: 1, ..Timing::lan() });
    net.run_until(5_000 * MS);
    net.nodes.remove(&6);
    let crash = net.now;
    net.run_until(crash + 10_000 * MS);
    let first_down = net.events.iter().find_map(|(_, e)| match e {
        Event::MemberDown { identity, left: false } if identity.id == NodeId(6) => Some(()),
        _ => None,
    });
    assert!(first_down.is_some(), "the crash is declared down");
    for o in 1..=5 {
        assert_eq!(net.state_of(o, 6), Some(MemberState::Down), "{o} sees 6 down");
    }
    let confirmed: u64 = (1..=5).map(|o| net.nodes[&o].stats().suspicion_confirmations).sum();
    assert!(confirmed > 0, "other probers' suspicions confirmed one");
}

#[test]
fn leaving_is_seen_as_left_and_the_leaver_is_not_re_announced_to() {
    let mut net = Net::new(3);
    net.run_until(2_000 * MS);
    net.nodes.get_mut(&3).unwrap().handle(net.now, Input::Leave);
    net.pump(3);
    assert!(net.nodes[&3].has_left());
    net.nodes.remove(&3);
    net.run_until(6_000 * MS);
    for o in 1..=2 {
        assert_eq!(net.state_of(o, 3), Some(MemberState::Left), "observer {o}");
        assert!(net.nodes[&o].known_peers().iter().all(|p| p.id != NodeId(3)));
    }
}

#[test]
fn the_output_queue_drops_sends_at_its_bound_and_keeps_timers_and_events() {
    use super::{MAX_PENDING_OUTPUTS, Outbox};
    use crate::core::io::{Stats, TimerKind};
    let mut out = Outbox::default();
    let mut stats = Stats::default();
    let send = || Output::Send { to: ident(2), bytes: vec![1] };
    for _ in 0..MAX_PENDING_OUTPUTS {
        out.push(&mut stats, send());
    }
    out.push(&mut stats, send());
    let timer = Timer { at: Duration::ZERO, kind: TimerKind::Housekeeping };
    out.push(&mut stats, Output::SetTimer(timer));
    out.push(&mut stats, Output::Event(Event::Idle));
    assert_eq!(stats.dropped_output_full, 1, "the send past the bound is dropped and counted");
    #[cfg(debug_assertions)]
    out.check_bound();
    let mut drained = Vec::new();
    while let Some(o) = out.pop() {
        drained.push(o);
    }
    assert_eq!(drained.len(), MAX_PENDING_OUTPUTS + 2, "the timer and the event are kept");
    assert!(matches!(drained[MAX_PENDING_OUTPUTS], Output::SetTimer(_)));
    assert!(matches!(drained[MAX_PENDING_OUTPUTS + 1], Output::Event(Event::Idle)));
}

#[test]
fn a_joiner_gets_the_whole_membership_from_the_member_it_joins_through() {
    // 150 members: more than one SWIM packet's feed holds, so without the
    // exchange the joiner starts with a part and learns the rest by gossip.
    let mut net = Net::new(150);
    net.run_until(Duration::from_secs(60));
    let at = net.now;
    net.add(151);
    // Delivery here is instant: everything the join brings has arrived
    // before the joiner's first timer.
    assert_eq!(net.now, at);
    let seen = net.nodes[&151].members();
    let alive = seen.iter().filter(|m| m.state == MemberState::Alive).count();
    assert_eq!(alive, 151, "the joiner sees every member at once (itself included)");
    assert!(net.nodes[&1].stats().exchanges_out >= 1, "the seed answered");
}

#[test]
fn an_exchange_speaking_for_another_member_or_undecodable_is_refused_and_changes_nothing() {
    let mut net = Net::new(3);
    net.run_until(Duration::from_secs(10));
    let before = net.nodes[&1].members();
    // A real exchange message from node 2, delivered as if node 3 sent it.
    let me = foca::Member::alive(ident(2));
    let other = foca::Member::alive(ident(9));
    let (bytes, _) = super::pushpull::encode(true, vec![me, other]);
    let now = net.now;
    let node = net.nodes.get_mut(&1).unwrap();
    let merged = node.stats().exchanges_in;
    let spoofed = PeerCert { id: NodeId(3), role: Role::Manager };
    node.handle(now, Input::Members { from: spoofed, bytes: bytes.clone() });
    node.handle(now, Input::Members { from: spoofed, bytes: vec![0xff; 64] });
    assert_eq!(node.stats().exchanges_refused, 2);
    assert_eq!(node.stats().exchanges_in, merged);
    assert_eq!(node.members(), before, "nothing changed");
    // The same bytes from their real sender are merged.
    let real = PeerCert { id: NodeId(2), role: Role::Manager };
    node.handle(now, Input::Members { from: real, bytes });
    assert_eq!(node.stats().exchanges_in, merged + 1);
    assert!(node.members().iter().any(|m| m.identity.id == NodeId(9)));
}

#[test]
fn an_exchange_gossips_on_its_sender_and_deaths_but_not_second_hand_alive_members() {
    // Rebroadcasting a whole membership put every member of a mass join
    // into every member's gossip backlog: full-rate gossip for minutes.
    let mut net = Net::new(2);
    net.run_until(Duration::from_secs(10));
    let now = net.now;
    let node = net.nodes.get_mut(&1).unwrap();
    while node.poll().is_some() {}
    assert_eq!(node.gossip_backlog(), 0, "a settled pair has nothing to gossip");
    let mut members = vec![foca::Member::alive(ident(2))];
    members.extend((100..150).map(|n| foca::Member::alive(ident(n))));
    let answer = |members| super::pushpull::encode(false, members).0;
    let from = PeerCert { id: NodeId(2), role: Role::Manager };
    node.handle(now, Input::Members { from, bytes: answer(members) });
    assert_eq!(node.members().len(), 52, "every member is merged");
    assert_eq!(node.gossip_backlog(), 0, "second-hand alive members are not gossiped on");
    // News about the sender itself, and a death, travel on by gossip.
    let sender = foca::Member::new(ident(2), 1, foca::State::Alive);
    let dead = foca::Member::new(ident(100), 0, foca::State::Down);
    node.handle(now, Input::Members { from, bytes: answer(vec![sender, dead]) });
    assert_eq!(node.gossip_backlog(), 2, "the sender's refutation and the death are gossiped");
}

#[test]
fn an_answer_leaves_out_what_the_request_listed_identically() {
    let mut net = Net::new(2);
    net.run_until(Duration::from_secs(10));
    let now = net.now;
    let from = PeerCert { id: NodeId(2), role: Role::Manager };
    let alive = |n| foca::Member::alive(ident(n));
    let node = net.nodes.get_mut(&1).unwrap();
    let mut members = vec![alive(2)];
    members.extend((100..=150).map(alive));
    let bytes = super::pushpull::encode(false, members).0;
    node.handle(now, Input::Members { from, bytes });
    while node.poll().is_some() {}
    // Node 2 asks, listing all but 150 as node 1 holds them, and 120 at a
    // newer incarnation; node 1 holds 130 as suspect.
    let suspect = foca::Member::new(ident(130), 0, foca::State::Suspect);
    let bytes = super::pushpull::encode(false, vec![alive(2), suspect]).0;
    node.handle(now, Input::Members { from, bytes });
    while node.poll().is_some() {}
    let mut request = vec![alive(2), alive(1)];
    request.extend((100..150).map(alive));
    request[22] = foca::Member::new(ident(120), 1, foca::State::Alive);
    let bytes = super::pushpull::encode(true, request).0;
    node.handle(now, Input::Members { from, bytes });
    let answer = std::iter::from_fn(|| node.poll())
        .find_map(|o| match o {
            Output::SendMembers { to, bytes } if to.id == NodeId(2) => Some(bytes),
            _ => None,
        })
        .expect("an answer");
    let answer = super::pushpull::decode(NodeId(1), &answer).expect("decodes");
    assert!(!answer.want_answer);
    let listed: Vec<(u64, foca::State)> =
        answer.members.iter().map(|m| (m.id().id.0, m.state())).collect();
    // Itself first, then what the request lacked or held otherwise (130
    // as alive: node 1 holds it suspect); 120 was merged at the newer
    // incarnation, so both hold it alike.
    assert_eq!(
        listed,
        vec![(1, foca::State::Alive), (150, foca::State::Alive), (130, foca::State::Suspect)]
    );
}

#[test]
fn a_mass_join_retires_echoed_joins_and_every_view_still_converges() {
    // Every member of a mass join relayed every join it learned by gossip
    // max_transmissions times: minutes of full-rate gossip at 10,000. Here
    // 100 nodes join through node 1 at once, whose backlog then holds 99
    // first-hand joins (over JOIN_ECHOES_OVER_BACKLOG).
    let n = 100;
    let mut net = Net::new(n);
    net.run_until(Duration::from_secs(20));
    let retired: u64 = net.nodes.values().map(|node| node.stats().joins_retired).sum();
    assert!(retired > 0, "echoed joins were dropped from backlogs");
    for (i, node) in &net.nodes {
        let alive = node.members().iter().filter(|m| m.state == MemberState::Alive).count();
        assert_eq!(alive as u64, n, "node {i} sees every member alive");
    }
}

#[test]
fn a_burst_leaves_no_burst_sized_buffers_behind() {
    // A join's exchange applies every member at once: foca's notifications
    // and the node's outputs for 2,000 members. Once they are drained, the
    // node keeps room for at most its kept bound, not the burst's (every
    // node of a large cluster would otherwise hold it for ever).
    let mut net = Net::new(2);
    net.run_until(Duration::from_secs(5));
    let mut members = vec![foca::Member::alive(ident(2))];
    members.extend((100..2_100).map(|n| foca::Member::alive(ident(n))));
    let (bytes, left_out) = super::pushpull::encode(false, members);
    assert_eq!(left_out, 0);
    let now = net.now;
    let node = net.nodes.get_mut(&1).unwrap();
    node.handle(
        now,
        Input::Members { from: PeerCert { id: NodeId(2), role: Role::Manager }, bytes },
    );
    let mut outputs = 0;
    while node.poll().is_some() {
        outputs += 1;
    }
    assert!(outputs >= 2_000, "one member-up event per new member at least: {outputs}");
    assert!(node.members().len() > 2_000);
    let (collector, queue) = node.buffer_capacities();
    assert!(collector <= 3 * super::collector::KEPT_BUFFER_ENTRIES, "collector kept {collector}");
    assert!(queue <= super::KEPT_OUTPUT_ENTRIES.next_power_of_two(), "queue kept {queue}");
}

#[test]
fn a_revoked_manager_leaves_the_live_list_at_once() {
    let mut net = Net::new(3);
    net.run_until(3_000 * MS);
    assert_eq!(net.nodes[&1].live_manager_ids(), vec![NodeId(1), NodeId(2), NodeId(3)]);
    let node1 = net.nodes.get_mut(&1).unwrap();
    node1.handle(
        net.now,
        Input::Publish(crate::core::notices::Notice::MemberRevoked { id: NodeId(3) }),
    );
    assert_eq!(net.state_of(1, 3), Some(MemberState::Alive), "foca still sees it alive");
    assert_eq!(
        net.nodes[&1].live_manager_ids(),
        vec![NodeId(1), NodeId(2)],
        "no session or worker may go to a revoked manager"
    );
}
