//! Why a command was refused: the one error type of the state's command
//! boundary, shared by the model and the controllers' part of it.
//!
//! Owns only the type. Must never hold state or logic.

use serde::{Deserialize, Serialize};

/// Why a command was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("machine {0} does not exist")]
    UnknownMachine(String),
    #[error("application {0} does not exist")]
    UnknownApplication(String),
    #[error("unit {0} does not exist")]
    UnknownUnit(String),
    #[error("machine {id} still hosts units {units}; remove them first")]
    MachineInUse { id: String, units: String },
    #[error("application {0} already exists")]
    AlreadyExists(String),
    #[error("machine {machine} already has an agent ({agent}): its token was used")]
    AlreadyClaimed { machine: String, agent: String },
    #[error("invalid {what} {value:?}: {rule}")]
    Invalid { what: String, value: String, rule: String },
    #[error("no token with id {0:?} is known here")]
    UnknownToken(String),
    #[error("token {0} has been revoked")]
    TokenRevoked(String),
    #[error("token {token_id} is single-use and was used by {by}")]
    TokenUsed { token_id: String, by: String },
    #[error("token id {0} is in use; mint another")]
    TokenIdInUse(String),
    #[error("no token has expired")]
    NothingExpired,
}
