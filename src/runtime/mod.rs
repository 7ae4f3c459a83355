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
