//! A log file bounded in bytes: past [`RotatingFile::max_bytes`] the file
//! is moved aside to `NAME.1` (the older `.1` to `.2`, and so on, the
//! oldest beyond `keep` deleted) and a new one started. A machine's logs
//! (`jujud.log`, each unit's `workload.log`) thus never hold more than
//! `(keep + 1) * max_bytes`.
//!
//! Owns the files' names and rotation. Must never fail a write because
//! rotation failed (it keeps writing to the current file and says so
//! once on stderr), and never create a file others can read.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A process's own log file (`jujud.log`) is rotated past this.
pub const MAX_JUJUD_LOG_BYTES: u64 = 16 << 20;
/// A unit's workload output (`workload.log`) is rotated past this.
pub const MAX_WORKLOAD_LOG_BYTES: u64 = 8 << 20;
/// Rotated files kept beside the current one.
pub const LOG_FILES_KEPT: u32 = 2;

/// An append-only file rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    written: u64,
    warned: bool,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// `path` with `.n` appended.
pub fn rotated_name(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    /// Opens (or creates, 0600) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        assert!(max_bytes > 0, "a rotated file needs room");
        let file = open_append(path)?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(RotatingFile { path: path.to_owned(), max_bytes, keep, file, written, warned: false })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(rotated_name(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let _ =
                    std::fs::rename(rotated_name(&self.path, n), rotated_name(&self.path, n + 1));
            }
            std::fs::rename(&self.path, rotated_name(&self.path, 1))?;
            self.file = open_append(&self.path)?;
        }
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = self.written > 0 && self.written + buf.len() as u64 > self.max_bytes;
        if full
            && let Err(e) = self.rotate()
            && !self.warned
        {
            self.warned = true;
            eprintln!("jujud: cannot rotate {}: {e}; writing on", self.path.display());
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_bound_is_moved_aside_and_only_keep_old_files_remain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..50 {
            writeln!(f, "line {i:04} of some length").unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        assert!(size(&path).unwrap() <= 100);
        assert!(size(&rotated_name(&path, 1)).unwrap() <= 100);
        assert!(size(&rotated_name(&path, 2)).unwrap() <= 100);
        assert_eq!(size(&rotated_name(&path, 3)), None, "only two old files are kept");
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line 0049 of some length\n"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "nobody else reads a log");
        // Reopening continues the count from the file's size.
        let again = RotatingFile::open(&path, 100, 2).unwrap();
        assert_eq!(again.written, size(&path).unwrap());
    }
}
