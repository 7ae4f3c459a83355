//! Who a member is: a stable node id, the address it listens on, its role and
//! a generation that goes up on every restart or forced rejoin.
//!
//! Owns the `foca::Identity` implementation. Must never touch I/O, and must
//! never decide trust: the runtime proves a node id from its TLS certificate,
//! this module only carries it.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A node's stable id: random at first start, kept in its data dir and in
/// its certificate. Shown to people as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(NodeId)
    }
}

/// What a member does. The role is also bound into its certificate, so a
/// member can never claim another role than the one it was issued.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Role {
    /// A controller: holds state, runs singleton workers, admits members.
    Manager,
    /// A machine agent (joins the gossip pool; see the agents issue).
    Agent,
}

impl Role {
    /// The lower-case name used in certificates, logs and `juju members`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Agent => "agent",
        }
    }

    /// Parses the name written by [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "manager" => Some(Role::Manager),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// The identity foca gossips about. Two identities with the same `id` are
/// the same node; the higher `generation` wins.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// Stable id, proven by the member's certificate.
    pub id: NodeId,
    /// Where the member accepts QUIC connections.
    pub addr: SocketAddr,
    /// What the member is; bound into its certificate.
    pub role: Role,
    /// Bumped on each start and on each forced rejoin, so a restarted or
    /// wrongly-downed node comes back as a new, winning identity.
    pub generation: u64,
}

impl foca::Identity for Identity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Identity { generation: self.generation + 1, ..self.clone() })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Higher generation wins; the address breaks a tie so that every
        // node picks the same winner.
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

/// A test member: id `n`, address 127.0.0.1:(7000 + n mod 1000), `role`,
/// generation 1 (the core's tests build their members with it).
#[cfg(test)]
pub(crate) fn test_member(n: u64, role: Role) -> Identity {
    Identity {
        id: NodeId(n),
        addr: format!("127.0.0.1:{}", 7000 + n % 1000).parse().expect("a loopback address"),
        role,
        generation: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    fn ident(generation: u64) -> Identity {
        Identity {
            id: NodeId(7),
            addr: "127.0.0.1:1".parse().unwrap(),
            role: Role::Manager,
            generation,
        }
    }

    #[test]
    fn renew_bumps_generation_and_wins() {
        let old = ident(3);
        let new = old.renew().unwrap();
        assert_eq!(new.generation, 4);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn node_id_round_trips_through_text() {
        let id = NodeId(0xdead_beef_0000_0001);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.to_string().len(), 16);
    }
}
