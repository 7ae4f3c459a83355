//! A real partition: three managers in their own network namespaces, joined
//! through veth pairs to a bridge in a fourth namespace. One link is cut
//! until both sides declare each other down, then restored; the isolated
//! node must rejoin by itself (memberlist's bug 222 must not exist here).
//!
//! Needs root (CI runs as root). Without root it fails, unless
//! JUJUD_SKIP_NETNS=1 says to skip it on purpose.

mod common;

use common::netns::Net;
use common::*;

fn down_then_back(lines: &[serde_json::Value], member: &str) -> bool {
    let Some(down) = lines
        .iter()
        .position(|v| message(v) == jujud::events::MEMBER_DOWN && field(v, "member") == member)
    else {
        return false;
    };
    lines[down..].iter().any(|v| {
        field(v, "member") == member
            && matches!(message(v), jujud::events::MEMBER_UP | jujud::events::MEMBER_RENAMED)
    })
}

#[test]
fn isolated_manager_rejoins_by_itself_after_the_link_returns() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert_eq!(
            std::env::var("JUJUD_SKIP_NETNS").as_deref(),
            Ok("1"),
            "this test needs root (or JUJUD_SKIP_NETNS=1)"
        );
        eprintln!("skipped on purpose: not root");
        return;
    }
    let net = Net::build("jj", 3);
    let tmp = tempfile::tempdir().unwrap();
    let m0 = Peer::start_in(Some(&net.ns(0)), &tmp.path().join("m0"), net.addr(0), &[]);
    let seed = net.addr(0).to_string();
    let token = m0.token();
    let join = ["--join", seed.as_str()];
    let m1 = Peer::start_with(
        Some(&net.ns(1)),
        &tmp.path().join("m1"),
        net.addr(1),
        &join,
        Some(&token),
    );
    let m2 = Peer::start_with(
        Some(&net.ns(2)),
        &tmp.path().join("m2"),
        net.addr(2),
        &join,
        Some(&token),
    );
    let peers = [&m0, &m1, &m2];
    for p in peers {
        for q in peers.iter().filter(|q| q.id != p.id) {
            p.log.wait_for("all up", |l| saw(l, jujud::events::MEMBER_UP, &q.id));
        }
    }
    net.link(2, false);
    for p in [&m0, &m1] {
        p.log.wait_for("isolated node declared down", |l| {
            saw(l, jujud::events::MEMBER_DOWN, &m2.id)
        });
    }
    for q in [&m0, &m1] {
        m2.log.wait_for("isolated node loses the others", |l| {
            saw(l, jujud::events::MEMBER_DOWN, &q.id)
        });
    }
    net.link(2, true);
    for p in [&m0, &m1] {
        p.log.wait_for("isolated node back", |l| down_then_back(l, &m2.id));
    }
    for q in [&m0, &m1] {
        m2.log.wait_for("others back on the isolated node", |l| down_then_back(l, &q.id));
    }
}
