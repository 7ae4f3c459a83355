//! The core's notion of time, on its own so that every module can name it
//! without importing the node's whole input and output vocabulary.
//!
//! Owns only the type. Must never read a clock: the driver (or the
//! simulator) supplies every `Time`.

use std::time::Duration;

/// Time as the node sees it: the distance from an origin the driver picks
/// (process start in the runtime, zero in the simulator).
pub type Time = Duration;
