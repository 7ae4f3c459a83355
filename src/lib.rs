//! jujud: a peer-to-peer, highly available control plane for Juju.
//!
//! [`core`] is the sans-IO node logic (it builds with `--no-default-features`
//! and is what the simulator runs). Everything under the `runtime` feature
//! touches the world: QUIC, TLS, disk, clock and the command line.

#[cfg(feature = "runtime")]
pub mod config;
pub mod core;
pub mod events;
#[cfg(feature = "runtime")]
pub mod logging;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod pki;
#[cfg(feature = "runtime")]
pub mod runtime;
