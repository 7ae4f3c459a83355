//! Trims an idle agent's resident code. An agent touches most of the
//! binary's code once, at start (argument parsing, key generation, the
//! join, TLS handshakes), and little of it afterwards (timers, SWIM, its
//! session). Those pages stay in its resident set: about 6 MiB of an idle
//! agent's 10. Every `TRIM_EVERY_MS` (first `TRIM_FIRST_AFTER_MS` after the
//! start) the agent drops its own mappings of executable file pages with
//! `madvise(MADV_DONTNEED)`, so its RSS is its working set; pages it still
//! runs fault back in from the page cache (the file is not read again).
//!
//! Owns the trim schedule and the /proc/self/maps walk. Must never touch a
//! mapping that is writable, anonymous or private-dirty (only `r-xp` file
//! mappings, which nothing writes), nor the vDSO; a failure is logged and
//! counted, never fatal.

use std::time::Duration;

/// First trim after the agent starts (its start-up is over by then).
pub const TRIM_FIRST_AFTER_MS: u64 = 20_000;
/// Then one trim this often (pages touched by a rare event, such as a
/// session moving, go again).
pub const TRIM_EVERY_MS: u64 = 60_000;

/// Why a trim failed.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    #[error("reading /proc/self/maps: {0}")]
    Maps(std::io::Error),
    #[error("madvise on {range}: {source}")]
    Madvise { range: String, source: std::io::Error },
}

/// `(start, len)` of every executable file mapping (`r-xp`, named by a
/// path) in a `/proc/PID/maps` text.
pub fn code_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let (range, perms) = (cols.next()?, cols.next()?);
            let path = cols.nth(3)?;
            if perms != "r-xp" || !path.starts_with('/') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let (a, b) = (usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?);
            (b > a).then_some((a, b - a))
        })
        .collect()
}

/// Drops this process's resident executable file pages; returns the bytes
/// of the mappings advised.
pub fn trim_resident_code() -> Result<usize, TrimError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(TrimError::Maps)?;
    let mut advised = 0;
    for (start, len) in code_mappings(&maps) {
        // SAFETY: an `r-xp` file mapping of this process, whole; nothing
        // writes such pages, so dropping them loses nothing: the next
        // access faults them in again from the file.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc != 0 {
            let range = format!("{start:#x}+{len:#x}");
            return Err(TrimError::Madvise { range, source: std::io::Error::last_os_error() });
        }
        advised += len;
    }
    Ok(advised)
}

/// Trims on the schedule until the task is dropped.
pub async fn run(metrics: std::sync::Arc<crate::metrics::Metrics>) {
    tokio::time::sleep(Duration::from_millis(TRIM_FIRST_AFTER_MS)).await;
    loop {
        match trim_resident_code() {
            Ok(bytes) => {
                metrics.code_trims.inc();
                tracing::debug!(bytes, "trimmed resident code");
            }
            Err(e) => {
                metrics.code_trim_failures.inc();
                tracing::warn!(error = %e, "could not trim resident code");
            }
        }
        tokio::time::sleep(Duration::from_millis(TRIM_EVERY_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executable_file_mappings_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 123 /usr/bin/jujud
55d0c0100000-55d0c0900000 r-xp 00100000 08:01 123 /usr/bin/jujud
55d0c0900000-55d0c0a00000 r--p 00900000 08:01 123 /usr/bin/jujud
55d0c0a00000-55d0c0a10000 rw-p 00a00000 08:01 123 /usr/bin/jujud
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000200000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000300000-7f0000301000 r-xp 00000000 00:00 0
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            code_mappings(maps),
            vec![(0x55d0c0100000, 0x800000), (0x7f0000000000, 0x200000)]
        );
    }

    #[test]
    fn a_trim_keeps_the_process_running_and_lowers_its_file_rss() {
        let rss_file = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap().to_string();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
        };
        let before = rss_file();
        let advised = trim_resident_code().expect("a trim of our own code");
        assert!(advised > 0, "this test binary has code mappings");
        let after = rss_file();
        // Reaching this line at all shows the code faulted back in.
        assert!(after < before, "RssFile {after} kB after, {before} kB before");
    }
}
