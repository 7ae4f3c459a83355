//! The client workload of the safety phase: random state commands on random
//! live managers, at a configured mean rate, while faults run; and the
//! vocabulary of what became of each write (issued, acknowledged, refused),
//! which the cluster reports and the checkers read.
//!
//! Every name, config key and value a command creates is unique in the run,
//! so no later write legitimately overwrites an earlier write's effect: an
//! acknowledged write's effect must still be visible at the end, unless the
//! workload itself removed that entity.
//!
//! Owns the choice of commands and their unique names. Must never look at
//! a node's state to choose (it only learns from acknowledgements, like a
//! client), and must draw only from its own rng stream.

use std::time::Duration;

use jujud::core::state::tokens::TokenSpec;
use jujud::core::state::{Actor, Command, Outcome};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::queue::VTime;

/// Writes per virtual second, on average, unless `--writes-per-sec` says.
pub const DEFAULT_WRITES_PER_SEC: u32 = 1;

/// How long a write may wait for durability and replication before the
/// manager refuses it (the client's timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most created entities remembered as targets of later commands; past it,
/// new ones are not remembered (removals free room).
pub const MAX_KNOWN_ENTITIES: usize = 4_096;

/// Relative weights of the commands (percent). The cheap writes dominate:
/// the model allocates ids by scanning every key with O(writers) work per
/// key, so a create (and `RemoveMachine`) costs O(keys x writers) in the
/// core (finding E in docs/SIMULATOR.md), and dominates the run time.
const MIX: [(Kind, u32); 7] = [
    (Kind::SetController, 45),
    (Kind::SetConfig, 32),
    (Kind::AddMachine, 3),
    (Kind::Deploy, 3),
    (Kind::AddUnit, 3),
    (Kind::RemoveUnit, 12),
    (Kind::RemoveMachine, 2),
];

/// Chances, in percent, that a write asks for 1 or 2 other managers to hold
/// it before the acknowledgement (`--wait-replicated`); otherwise 0.
const REPLICAS_1_PERCENT: u32 = 20;
const REPLICAS_2_PERCENT: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SetController,
    SetConfig,
    AddMachine,
    Deploy,
    AddUnit,
    RemoveUnit,
    RemoveMachine,
}

/// A write a manager acknowledged (`WriteResult::Done`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedWrite {
    pub slot: usize,
    pub req: u64,
    /// When the acknowledgement came out.
    pub at: VTime,
    /// The author of the write's operations, and its last one.
    pub actor: Actor,
    pub seq: u64,
    /// Other managers that had to hold it first.
    pub replicas: u32,
    pub cmd: Command,
    pub outcome: Outcome,
}

/// What became of a client write, as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateNote {
    /// A command was handed to the manager in `slot`.
    Issued {
        slot: usize,
        req: u64,
        cmd: Command,
    },
    Acked(AckedWrite),
    /// Refused: invalid here, or not durable or replicated in time. A write
    /// refused for time may still take effect.
    Refused {
        slot: usize,
        req: u64,
        reason: String,
    },
}

/// The workload generator of one run.
pub struct Workload {
    rng: ChaCha8Rng,
    /// Mean gap between writes, in microseconds; `None` writes nothing.
    mean_gap_us: Option<u64>,
    next_name: u64,
    apps: Vec<String>,
    units: Vec<String>,
    /// Machines made by `AddMachine` (they host no unit, so may be removed).
    machines: Vec<String>,
    /// Whether join-token commands are in the mix (see `RunConfig::tokens`).
    tokens: bool,
    /// Tokens whose issue was acknowledged.
    token_ids: Vec<String>,
}

/// With tokens on, the chances (percent) that a write is a token issue, a
/// revocation, or a use (a join's admission); the rest is the usual mix.
const TOKEN_ISSUE_PERCENT: u32 = 10;
const TOKEN_REVOKE_PERCENT: u32 = 15;
const TOKEN_USE_PERCENT: u32 = 35;

impl Workload {
    pub fn new(rng: ChaCha8Rng, writes_per_sec: u32) -> Workload {
        let mean_gap_us = (writes_per_sec > 0).then(|| 1_000_000 / u64::from(writes_per_sec));
        Workload {
            rng,
            mean_gap_us,
            next_name: 0,
            apps: Vec::new(),
            units: Vec::new(),
            machines: Vec::new(),
            tokens: false,
            token_ids: Vec::new(),
        }
    }

    /// Puts join-token commands in the mix.
    pub fn with_tokens(mut self, on: bool) -> Workload {
        self.tokens = on;
        self
    }

    /// A token command, when tokens are on and the roll says so (draws
    /// from the rng only when tokens are on).
    fn token_command(&mut self) -> Option<Command> {
        if !self.tokens {
            return None;
        }
        let roll = self.rng.random_range(0..100);
        let n = self.unique();
        let known = (!self.token_ids.is_empty())
            .then(|| self.token_ids[self.rng.random_range(0..self.token_ids.len())].clone());
        if roll < TOKEN_ISSUE_PERCENT
            || (known.is_none() && roll < TOKEN_ISSUE_PERCENT + TOKEN_REVOKE_PERCENT + TOKEN_USE_PERCENT)
        {
            let spec = TokenSpec {
                token_id: format!("tok{n}"),
                role: "manager".into(),
                subject: None,
                expires_unix_secs: u64::MAX / 2,
                reusable: true,
            };
            return Some(Command::IssueTokens(vec![spec]));
        }
        let token_id = known?;
        if roll < TOKEN_ISSUE_PERCENT + TOKEN_REVOKE_PERCENT {
            return Some(Command::RevokeToken { token_id });
        }
        (roll < TOKEN_ISSUE_PERCENT + TOKEN_REVOKE_PERCENT + TOKEN_USE_PERCENT)
            .then(|| Command::UseToken { token_id, node: format!("n{n}") })
    }

    /// The wait before the next write (uniform, 0 to twice the mean), or
    /// `None` when the workload is off.
    pub fn next_gap(&mut self) -> Option<Duration> {
        let mean = self.mean_gap_us?;
        Some(Duration::from_micros(self.rng.random_range(0..=2 * mean)))
    }

    /// A random slot out of `live`.
    pub fn pick(&mut self, live: &[usize]) -> Option<usize> {
        (!live.is_empty()).then(|| live[self.rng.random_range(0..live.len())])
    }

    /// The next command, and how many other managers must hold it.
    pub fn next_command(&mut self) -> (Command, u32) {
        if let Some(cmd) = self.token_command() {
            return (cmd, 0);
        }
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.random_range(0..total);
        let mut kind = Kind::SetController;
        for (k, w) in MIX {
            if roll < w {
                kind = k;
                break;
            }
            roll -= w;
        }
        let cmd = self.command(kind);
        let roll = self.rng.random_range(0..100);
        let replicas = if roll < REPLICAS_2_PERCENT {
            2
        } else if roll < REPLICAS_2_PERCENT + REPLICAS_1_PERCENT {
            1
        } else {
            0
        };
        (cmd, replicas)
    }

    fn unique(&mut self) -> u64 {
        self.next_name += 1;
        self.next_name
    }

    fn command(&mut self, kind: Kind) -> Command {
        let n = self.unique();
        match kind {
            Kind::SetConfig if !self.apps.is_empty() => {
                let app = self.apps[self.rng.random_range(0..self.apps.len())].clone();
                let pairs =
                    (0..self.rng.random_range(1..=2)).map(|i| (format!("k{n}-{i}"), format!("v{n}-{i}"))).collect();
                Command::SetConfig { app, pairs }
            }
            Kind::AddMachine => Command::AddMachine { n: self.rng.random_range(1..=2) },
            Kind::Deploy => Command::Deploy { name: format!("app{n}"), command: format!("run {n}"), n: 1 },
            Kind::AddUnit if !self.apps.is_empty() => {
                Command::AddUnit { app: self.apps[self.rng.random_range(0..self.apps.len())].clone(), n: 1 }
            }
            Kind::RemoveUnit if !self.units.is_empty() => {
                Command::RemoveUnit { unit: self.units.swap_remove(self.rng.random_range(0..self.units.len())) }
            }
            Kind::RemoveMachine if !self.machines.is_empty() => {
                Command::RemoveMachine { id: self.machines.swap_remove(self.rng.random_range(0..self.machines.len())) }
            }
            _ => Command::SetController { key: format!("w{n}"), value: format!("v{n}") },
        }
    }

    /// Learns the entities an acknowledged write created.
    pub fn observe(&mut self, note: &StateNote) {
        let StateNote::Acked(w) = note else { return };
        let list = match &w.cmd {
            Command::Deploy { name, .. } => {
                remember(&mut self.apps, name.clone());
                &mut self.units
            }
            Command::AddUnit { .. } => &mut self.units,
            Command::AddMachine { .. } => &mut self.machines,
            Command::IssueTokens(specs) => {
                for s in specs {
                    remember(&mut self.token_ids, s.token_id.clone());
                }
                return;
            }
            _ => return,
        };
        for id in &w.outcome.ids {
            remember(list, id.clone());
        }
    }
}

fn remember(list: &mut Vec<String>, id: String) {
    if list.len() < MAX_KNOWN_ENTITIES {
        list.push(id);
    }
}

/// The effects an acknowledged write must leave, as (key, expectation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key holds this value (among siblings, if any).
    Value(String),
    /// The entity's life key is set; "dead" only if the workload issued a
    /// removal of the entity (named here).
    Alive(String),
}

/// What `w` must have left in the state, as keys of the model's layout.
pub fn effects(w: &AckedWrite) -> Vec<(String, Expect)> {
    let val = |v: &str| Expect::Value(v.to_string());
    let unit = |u: &String| (format!("u/{u}/life"), Expect::Alive(u.clone()));
    match &w.cmd {
        Command::AddMachine { .. } => w
            .outcome
            .ids
            .iter()
            .flat_map(|id| {
                [(format!("m/{id}/jobs"), val("host-units")), (format!("m/{id}/life"), Expect::Alive(id.clone()))]
            })
            .collect(),
        Command::RemoveMachine { id } => vec![(format!("m/{id}/life"), val("dead"))],
        Command::Deploy { name, command, .. } => {
            let mut e = vec![(format!("a/{name}/life"), val("alive")), (format!("a/{name}/command"), val(command))];
            e.extend(w.outcome.ids.iter().map(unit));
            e
        }
        Command::AddUnit { .. } => w.outcome.ids.iter().map(unit).collect(),
        Command::RemoveUnit { unit } => vec![(format!("u/{unit}/life"), val("dead"))],
        Command::SetConfig { app, pairs } => {
            pairs.iter().map(|(k, v)| (format!("a/{app}/config/{k}"), val(v))).collect()
        }
        Command::SetController { key, value } => vec![(format!("c/{key}"), val(value))],
        Command::ClaimMachine { machine, agent } => vec![(format!("m/{machine}/agent"), val(agent))],
        Command::EnableHa { n } => vec![("c/ha-desired".to_string(), val(&n.to_string()))],
        Command::DeployTo { name, command, .. } => {
            let mut e = vec![(format!("a/{name}/life"), val("alive")), (format!("a/{name}/command"), val(command))];
            e.extend(w.outcome.ids.iter().map(unit));
            e
        }
        Command::AddUnitTo { .. } => w.outcome.ids.iter().map(unit).collect(),
        Command::AddHost { address, entry } => vec![(format!("h/{address}"), val(entry))],
        Command::RemoveHost { address } => vec![(format!("h/{address}"), val("removed"))],
        Command::EnlistMachine { host } => w
            .outcome
            .ids
            .iter()
            .flat_map(|id| [(format!("m/{id}/host"), val(host)), (format!("m/{id}/life"), Expect::Alive(id.clone()))])
            .collect(),
        // The workload never bootstraps (the first manager does, once).
        Command::Bootstrap(_) => Vec::new(),
        // Nor handles join tokens (the runtime's admission does).
        Command::IssueTokens(_)
        | Command::RevokeToken { .. }
        | Command::UseToken { .. }
        | Command::SweepTokens { .. } => Vec::new(),
    }
}

/// The entity a command removes, if it is a removal.
pub fn removal_target(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::RemoveUnit { unit } => Some(unit),
        Command::RemoveMachine { id } => Some(id),
        _ => None,
    }
}
