//! The sans-IO core: everything a manager decides, with no I/O at all.
//! The simulator and the tokio runtime drive exactly this code.

pub mod agent;
pub mod codec;
pub mod control;
pub mod health;
pub mod identity;
pub mod io;
pub mod node;
pub mod notices;
pub mod rejoin;
pub mod time;
pub mod timing;

pub use identity::{Identity, NodeId, Role};
pub use io::{
    Event, Input, MemberInfo, MemberState, Output, PeerCert, Stats, Time, Timer, TimerLine,
};
pub use node::{Node, NodeConfig};
pub use notices::Notice;
pub use timing::Timing;
pub mod state;
