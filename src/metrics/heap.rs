//! The heap as jemalloc counts it (`stats.allocated`, `active`, `resident`,
//! `metadata`, `mapped`, `retained`), for `/metrics` and the benchmarks:
//! what a manager's resident memory is made of (live objects, pages that
//! hold some, the allocator's own).
//!
//! Owns reading jemalloc's statistics. Must never report anything unless
//! the process said jemalloc is its global allocator ([`enable`], called by
//! the `jujud` binary): in tests and benchmarks jemalloc is linked but
//! unused, and its counts would read as an empty heap.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called once by a binary whose global allocator is jemalloc.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// jemalloc's counts, in bytes, as of the read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the program holds in live allocations.
    pub allocated: u64,
    /// Bytes in pages holding at least one live allocation (allocated plus
    /// the free space inside those pages: fragmentation).
    pub active: u64,
    /// Bytes in pages the allocator has resident (active, its metadata,
    /// and freed pages not yet handed back).
    pub resident: u64,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: u64,
    /// Bytes mapped in active extents.
    pub mapped: u64,
    /// Bytes of virtual memory kept mapped but handed back to the kernel.
    pub retained: u64,
}

impl HeapStats {
    /// The series `jujud_heap_bytes{kind}` exports, in this order.
    pub const KINDS: [&'static str; 6] =
        ["allocated", "active", "resident", "metadata", "mapped", "retained"];

    /// The counts in [`HeapStats::KINDS`] order.
    pub fn values(&self) -> [u64; 6] {
        [self.allocated, self.active, self.resident, self.metadata, self.mapped, self.retained]
    }
}

/// jemalloc's counts now, or `None` when jemalloc is not this process's
/// allocator or its statistics cannot be read (logged at debug).
pub fn read() -> Option<HeapStats> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    match read_jemalloc() {
        Ok(stats) => Some(stats),
        Err(error) => {
            tracing::debug!(%error, "jemalloc statistics unreadable");
            None
        }
    }
}

fn read_jemalloc() -> Result<HeapStats, tikv_jemalloc_ctl::Error> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The counts are cached per epoch: advance it to read current ones.
    epoch::advance()?;
    Ok(HeapStats {
        allocated: stats::allocated::read()? as u64,
        active: stats::active::read()? as u64,
        resident: stats::resident::read()? as u64,
        metadata: stats::metadata::read()? as u64,
        mapped: stats::mapped::read()? as u64,
        retained: stats::retained::read()? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_reported_unless_enabled_and_kinds_match_values() {
        // The test binary's allocator is the system one: never enabled here.
        assert_eq!(read(), None);
        let h =
            HeapStats { allocated: 1, active: 2, resident: 3, metadata: 4, mapped: 5, retained: 6 };
        assert_eq!(h.values(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(HeapStats::KINDS.len(), h.values().len());
    }
}
