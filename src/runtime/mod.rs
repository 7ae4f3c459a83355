//! The runtime layer: everything that touches the world (QUIC, TLS, disk,
//! clock, signals) around the sans-IO core.

pub mod agent;
pub mod agentconf;
pub mod api;
pub mod bootstrap;
pub mod client;
pub mod clientfile;
pub mod credcheck;
pub mod dashboard;
pub mod datadir;
pub mod driver;
pub mod handshake;
pub mod history;
pub mod idprefix;
pub mod join;
pub mod logs;
pub mod provider;
pub mod render;
pub mod server;
pub mod session;
pub mod shared;
pub mod sshenv;
pub mod store;
pub mod timers;
pub mod transport;
pub mod trim;
pub mod wal;
pub mod wire;
pub mod workload;

#[cfg(test)]
mod transport_tests;

/// A non-zero 64-bit number from the OS's randomness (node ids, cluster
/// names, seeds, jitter). The runtime cannot run without it: a host with
/// no randomness fails here, at the first id.
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS randomness");
    u64::from_le_bytes(b).max(1)
}
