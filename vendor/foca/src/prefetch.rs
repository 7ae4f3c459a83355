//! jujud patch (PATCHED.md, 17): a hint that asks the CPU to start loading
//! the cache line holding a value, so that a batch of member updates can
//! overlap the cache misses of the lookups ahead of the one being applied.
//!
//! Owns the only `unsafe` of this crate. Must never read or write through
//! the pointer it hints: a prefetch is a hint, it never faults and never
//! changes memory or behaviour.

/// Starts loading the line that holds `value` into the nearest cache
/// (a no-op on other architectures than x86-64).
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn line<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it never dereferences
    // in a way that can fault or be observed, and `value` is a live
    // reference anyway. SSE is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
