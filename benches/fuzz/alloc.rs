//! The counting global allocator of the fuzz harness: the largest single
//! allocation, and the peak of live bytes during one decode, per target.
//!
//! Owns the allocation cap. While a decode runs ("armed"), an allocation
//! above the target's cap (twice its frame limit) is never made: the
//! allocator writes the input being decoded to the failure file, prints one
//! result line for the parent and ends the process with
//! [`EXIT_OVER_CAP`], so a forged 2^60 length prefix is reported instead
//! of aborting the run. It must never allocate itself (everything it
//! prints is formatted on the stack) and never unwind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Exit status of a child that refused an allocation above its cap.
pub const EXIT_OVER_CAP: i32 = 3;
/// Longest failure-file path the allocator can hold (it may not allocate).
const MAX_FAIL_PATH_BYTES: usize = 512;

pub struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static CAP_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);
static BASE_BYTES: AtomicUsize = AtomicUsize::new(0);
static INPUT_PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_DECODE_BYTES: AtomicUsize = AtomicUsize::new(0);
static INPUTS_DONE: AtomicU64 = AtomicU64::new(0);
static CRASHES: AtomicU64 = AtomicU64::new(0);
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
static FAIL_PATH: [AtomicU64; MAX_FAIL_PATH_BYTES / 8] =
    [const { AtomicU64::new(0) }; MAX_FAIL_PATH_BYTES / 8];

/// Sets where the allocator writes an input that asked for too much.
pub fn set_fail_path(path: &str) {
    let bytes = path.as_bytes();
    assert!(bytes.len() < MAX_FAIL_PATH_BYTES, "failure path too long");
    for (i, word) in FAIL_PATH.iter().enumerate() {
        let mut w = [0u8; 8];
        for (j, b) in w.iter_mut().enumerate() {
            *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
        }
        word.store(u64::from_le_bytes(w), Relaxed);
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts the clock of the target's run (read again only by [`elapsed_secs`]).
pub fn start_clock() {
    START_NS.store(monotonic_ns(), Relaxed);
}

/// Seconds since [`start_clock`], read without allocating.
pub fn elapsed_secs() -> f64 {
    monotonic_ns().saturating_sub(START_NS.load(Relaxed)) as f64 / 1e9
}

/// Arms the cap for one decode of `input` (kept for the failure file).
pub fn arm(input: &[u8], cap_bytes: usize) {
    INPUT_PTR.store(input.as_ptr() as *mut u8, Relaxed);
    INPUT_LEN.store(input.len(), Relaxed);
    CAP_BYTES.store(cap_bytes, Relaxed);
    let live = LIVE_BYTES.load(Relaxed);
    BASE_BYTES.store(live, Relaxed);
    INPUT_PEAK_BYTES.store(live, Relaxed);
    ARMED.store(true, Relaxed);
}

/// Ends one decode: folds its peak into the target's.
pub fn disarm() {
    ARMED.store(false, Relaxed);
    let grew = INPUT_PEAK_BYTES.load(Relaxed).saturating_sub(BASE_BYTES.load(Relaxed));
    PEAK_DECODE_BYTES.fetch_max(grew, Relaxed);
    INPUTS_DONE.fetch_add(1, Relaxed);
}

pub fn count_crash() {
    CRASHES.fetch_add(1, Relaxed);
}

/// (inputs, crashes, largest allocation, peak live bytes during one decode).
pub fn stats() -> (u64, u64, usize, usize) {
    (
        INPUTS_DONE.load(Relaxed),
        CRASHES.load(Relaxed),
        LARGEST_BYTES.load(Relaxed),
        PEAK_DECODE_BYTES.load(Relaxed),
    )
}

/// The line the parent parses; `status` is `ok`, `crash` or `over-cap`.
pub fn result_line(
    out: &mut impl std::fmt::Write,
    status: &str,
    secs: f64,
    over: usize,
) -> std::fmt::Result {
    let (inputs, crashes, largest, peak) = stats();
    writeln!(out, "RESULT {status} {inputs} {secs:.6} {crashes} {largest} {peak} {over}")
}

/// A fixed buffer that formats without allocating.
struct StackBuf {
    buf: [u8; 1024],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn write_all(fd: i32, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: writing from a valid slice to an open descriptor.
        let n = unsafe { libc::write(fd, bytes[at..].as_ptr().cast(), bytes.len() - at) };
        if n <= 0 {
            return;
        }
        at += n as usize;
    }
}

/// Saves the input, reports, and exits: the allocation is never made.
#[cold]
fn over_cap(size: usize) -> ! {
    ARMED.store(false, Relaxed);
    let mut path = [0u8; MAX_FAIL_PATH_BYTES];
    for (i, word) in FAIL_PATH.iter().enumerate() {
        path[i * 8..i * 8 + 8].copy_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    let ptr = INPUT_PTR.load(Relaxed);
    let len = INPUT_LEN.load(Relaxed);
    // SAFETY: the path is NUL-terminated (set_fail_path keeps a zero byte);
    // the input slice outlives the armed decode that is running now.
    unsafe {
        let fd =
            libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
        if fd >= 0 {
            write_all(fd, std::slice::from_raw_parts(ptr, len));
            libc::close(fd);
        }
    }
    let cap = CAP_BYTES.load(Relaxed);
    let mut msg = StackBuf { buf: [0; 1024], len: 0 };
    let _ = writeln!(
        msg,
        "fuzz: refused an allocation of {size} bytes (cap {cap}) for a {len}-byte input"
    );
    write_all(2, &msg.buf[..msg.len]);
    let mut line = StackBuf { buf: [0; 1024], len: 0 };
    let _ = result_line(&mut line, "over-cap", elapsed_secs(), size);
    write_all(1, &line.buf[..line.len]);
    // SAFETY: ends the process without running destructors (we are inside the allocator).
    unsafe { libc::_exit(EXIT_OVER_CAP) }
}

#[inline]
fn note_alloc(size: usize) {
    if ARMED.load(Relaxed) {
        if size > CAP_BYTES.load(Relaxed) {
            over_cap(size);
        }
        LARGEST_BYTES.fetch_max(size, Relaxed);
        let live = LIVE_BYTES.fetch_add(size, Relaxed) + size;
        INPUT_PEAK_BYTES.fetch_max(live, Relaxed);
    } else {
        LIVE_BYTES.fetch_add(size, Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
