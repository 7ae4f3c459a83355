//! Entity ids: derived from the request that creates the entities, so
//! they never collide without coordination and cost O(entities created),
//! whatever the state's size (no key is scanned to allocate one); and the
//! changes that create a machine, shared by the model's commands and the
//! controllers' own machines.
//!
//! Owns the id format. Must never read the replica: an id depends only on
//! the request.

use super::replica::Change;
use super::requests::RequestId;

/// Most entities one command may create.
pub const MAX_PER_COMMAND: u32 = 1_000;
/// The four-hex-digit tag of a node id (joins refuse a node id whose tag
/// a member has; ids no longer depend on it).
pub fn tag_of(node: u64) -> String {
    format!("{:04x}", node >> 48)
}

/// Lower-case Crockford base32: no i, l, o, u.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A request id as 13 base32 digits (all 64 bits: ids from distinct
/// requests never share a prefix).
pub fn request_text(id: RequestId) -> String {
    (0..13).rev().map(|i| BASE32[((id >> (i * 5)) & 31) as usize] as char).collect()
}

/// The ids of the `n` entities of one kind that request `id` creates.
pub fn entity_ids(id: RequestId, n: u32) -> Vec<String> {
    let base = request_text(id);
    (1..=n).map(|i| format!("{base}-{i}")).collect()
}

fn set_key(key: String, value: &str) -> Change {
    Change::Set { key, value: value.into() }
}

/// The changes creating machine `id` (alive, hosting units, pending).
pub fn new_machine(id: &str) -> Vec<Change> {
    vec![
        set_key(format!("m/{id}/life"), "alive"),
        set_key(format!("m/{id}/jobs"), "host-units"),
        set_key(format!("m/{id}/status"), "pending"),
    ]
}
