//! Dev-only helpers shared by the integration tests (`tests/`) and the
//! benchmarks (`benches/`): the benchmarks' plumbing ([`bench`]: log lines
//! as events, free ports, /proc probes), an attacker's tools against real
//! managers ([`attack`]), and samples with their median and worst
//! ([`stats`]), and the separate-hosts bed of namespace hosts with their
//! own sshd ([`hosts`]), and a counting global allocator ([`alloc`]).
//!
//! Owns no process and no policy. Must never be a dependency of the
//! product: only `[dev-dependencies]` name it.

pub mod alloc;
pub mod attack;
pub mod bench;
pub mod hosts;
pub mod stats;
