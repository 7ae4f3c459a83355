//! The replicated document's vocabulary: who writes (an [`Actor`]), the
//! document, its operations and version vectors. Shared by the replica and
//! the request records, so neither imports the other for it.
//!
//! Owns only types. Must never hold state or logic.

use std::collections::BTreeMap;

use crdts::MVReg;
use serde::{Deserialize, Serialize};

/// A writer: one node at one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub node: u64,
    pub generation: u64,
}

/// The document: every key holds a multi-value register of text.
pub type Doc = crdts::Map<String, MVReg<String, Actor>, Actor>;
/// One operation on the document.
pub type DocOp = crdts::map::Op<String, MVReg<String, Actor>, Actor>;
/// Highest operation number applied, per actor.
pub type VersionVector = BTreeMap<Actor, u64>;
