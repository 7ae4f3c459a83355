//! The log messages that tests and benchmarks read back: one constant per
//! message, used by the log call and by every parser, so a reworded message
//! breaks the build of its readers instead of silently timing them out.
//!
//! Owns only these names. Must never hold a message nobody parses (plain
//! log lines stay literals at their call), and never change a message's
//! text without its fields: readers match the whole message, then read
//! fields (`member`, `generation`, `to`, `session`, ...).

/// A member came up (`member`, `addr`, `generation`, `role`).
pub const MEMBER_UP: &str = "member up";
/// A member was declared down (`member`, `addr`, `generation`, `left`).
pub const MEMBER_DOWN: &str = "member down";
/// A member came back as a new generation (`member`, `from`, `to`).
pub const MEMBER_RENAMED: &str = "member renamed";
/// This node was declared down and renamed itself (`generation`).
pub const REJOINED: &str = "was declared down; rejoined as a new generation";
/// `jujud peer` is about to serve (`id`, `advertise`, `generation`, `cluster`).
pub const MANAGER_STARTING: &str = "manager starting";
/// `jujud agent` is about to serve (`id`, `machine`, `generation`, `seeds`).
pub const AGENT_STARTING: &str = "agent starting";
/// `jujud` stops on an error (`error`).
pub const JUJUD_FAILED: &str = "jujud failed";
/// A joiner the cluster cannot admit yet backs off and asks again.
pub const JOIN_RETRY: &str = "the cluster cannot admit this node yet; asking again";
/// A shutdown signal came while joining.
pub const STOPPED_WHILE_JOINING: &str = "asked to stop while joining; stopping";
/// A manager recovered its replica from disk (`ops`, `torn_tail_bytes`, ...).
pub const STATE_RECOVERED: &str = "state recovered";
/// An agent's session to a manager opened (`session`, `manager`).
pub const AGENT_SESSION_OPENED: &str = "agent session opened";
/// A manager let an agent's session open past its login limit and serves
/// it (`session`: the manager's own number for it, `agent`, `machine`).
pub const AGENT_SESSION_SERVING: &str = "serving an agent session";
/// A manager refused agent session opens past its login rate limit
/// (`agent`, `retry_after_ms`, `refused` since the last such line).
pub const AGENT_LOGIN_RATE_LIMITED: &str =
    "agent login rate limit: session open refused with a retry-after";
/// An agent wrote the live managers to agent.conf (`managers`).
pub const AGENT_CONF_UPDATED: &str = "live managers changed; agent.conf updated";
/// A session's peer sent a frame that does not decode (`session`, `error`).
pub const SESSION_BAD_FRAME: &str = "closing a session whose peer sent a bad frame";
/// A workload process started (`unit`, `run`, `pid`).
pub const WORKLOAD_STARTED: &str = "workload started";
/// A workload process exited (`unit`, `run`, `code`, `signal`).
pub const WORKLOAD_EXITED: &str = "workload exited";
/// The core dropped a datagram whose header names another member than its
/// certificate (`claimed`, `proven`).
pub const SPOOFED_DATAGRAM: &str = "dropped datagram speaking for another member";
/// A membership exchange (push-pull) was refused, changing nothing
/// (`peer`, `error`): oversized, undecodable, from a revoked member or
/// speaking for another member than its certificate.
pub const EXCHANGE_REFUSED: &str = "refused a membership exchange";
/// This manager now runs a singleton worker (`singleton`).
pub const SINGLETON_ACQUIRED: &str = "singleton acquired";
/// The provider started an instance (`instance`, `machine`, `address`, `existed`).
pub const INSTANCE_STARTED: &str = "instance started";
/// The HA keeper replaces a manager down past the grace period (`machine`).
pub const MANAGER_REPLACED: &str = "a manager was down past the grace period; replacing it";
/// A fencing stop found the host unreachable (`instance`, `host`, `reason`).
pub const FENCED_UNREACHABLE: &str = "host unreachable on a fencing stop: the instance is fenced";
/// Handshakes past the admission limits were sent a Retry or refused.
pub const HANDSHAKES_PILE_UP: &str =
    "connection attempts sent a Retry or refused: handshakes pile up";
