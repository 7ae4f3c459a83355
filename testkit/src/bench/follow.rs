//! Following the JSON log files of detached processes as events on one
//! channel: the local provider's instances each write
//! `ROOT/instances/<name>/jujud.log`, and nobody holds their stderr.
//!
//! Owns one reader thread and its inotify descriptor; new instance
//! directories are found as they appear. Must never sleep to synchronise:
//! the thread blocks in poll(2) on inotify (capped only so that it notices
//! being dropped), and callers wait on the events, each carrying the
//! process's own timestamp. Never signals or owns a process.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Ev, parse_json_line};

/// The log file in each instance directory.
pub const LOG_FILE: &str = "jujud.log";
/// Longest the reader blocks without an inotify event before it looks at
/// its stop flag (and every file) again.
const WAKE_CAP_MS: i32 = 200;
/// Bytes read from a file at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// An inotify descriptor, closed on drop.
struct Inotify(i32);

impl Inotify {
    fn new() -> Result<Inotify, String> {
        // SAFETY: inotify_init1 has no memory effects.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            Err(format!("inotify_init1: {}", std::io::Error::last_os_error()))
        } else {
            Ok(Inotify(fd))
        }
    }

    /// Watches `dir` for new entries and writes to them.
    fn watch(&self, dir: &Path) -> Result<(), String> {
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(self.0, c.as_ptr(), libc::IN_CREATE | libc::IN_MODIFY)
        };
        if wd < 0 {
            Err(format!("inotify_add_watch {}: {}", dir.display(), std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    }

    /// Blocks until an event or `cap_ms`, then drains the queue (the
    /// events themselves do not matter: every file is read again).
    fn wait(&self, cap_ms: i32) {
        let mut p = libc::pollfd { fd: self.0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, cap_ms) };
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer we own; the descriptor is non-blocking.
        while unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(self.0) };
    }
}

/// One followed file and the unfinished line at its end.
struct Tail {
    file: Option<File>,
    partial: Vec<u8>,
}

/// The reader thread's state.
struct Reader {
    dir: PathBuf,
    inotify: Inotify,
    names: Arc<Mutex<Vec<String>>>,
    index: HashMap<String, usize>,
    tails: Vec<Tail>,
    tx: Sender<Ev>,
}

impl Reader {
    /// Finds new instance directories and watches them.
    fn scan(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if self.index.contains_key(&name) || !e.path().is_dir() {
                continue;
            }
            let _ = self.inotify.watch(&e.path());
            self.index.insert(name.clone(), self.tails.len());
            self.names.lock().expect("names lock").push(name);
            self.tails.push(Tail { file: None, partial: Vec::new() });
        }
    }

    /// Reads every file to its end; false once nobody listens.
    fn read_all(&mut self) -> bool {
        let names = self.names.lock().expect("names lock").clone();
        for (who, tail) in self.tails.iter_mut().enumerate() {
            if tail.file.is_none() {
                tail.file = File::open(self.dir.join(&names[who]).join(LOG_FILE)).ok();
            }
            let Some(f) = tail.file.as_mut() else { continue };
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            while let Ok(n @ 1..) = f.read(&mut chunk) {
                tail.partial.extend_from_slice(&chunk[..n]);
            }
            let at = Instant::now();
            while let Some(end) = tail.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = tail.partial.drain(..=end).collect();
                let Some(ev) = parse_json_line(String::from_utf8_lossy(&line).trim_end(), who, at)
                else {
                    continue;
                };
                if self.tx.send(ev).is_err() {
                    return false;
                }
            }
        }
        true
    }
}

/// The events of every instance's log under one directory, as read so far.
pub struct Follower {
    rx: Receiver<Ev>,
    /// Instance names by event `who`.
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub log: Vec<Ev>,
}

impl Follower {
    /// Follows `dir/*/jujud.log` from the start of each file.
    pub fn start(dir: &Path) -> Result<Follower, String> {
        let inotify = Inotify::new()?;
        inotify.watch(dir)?;
        let (tx, rx) = mpsc::channel();
        let names = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = Reader {
            dir: dir.to_owned(),
            inotify,
            names: names.clone(),
            index: HashMap::new(),
            tails: Vec::new(),
            tx,
        };
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                r.scan();
                if !r.read_all() || stopping {
                    return;
                }
                r.inotify.wait(WAKE_CAP_MS);
            }
        });
        Ok(Follower { rx, names, stop, thread: Some(thread), log: Vec::new() })
    }

    /// The instance name of event `who`.
    pub fn name(&self, who: usize) -> String {
        self.names.lock().expect("names lock").get(who).cloned().unwrap_or_default()
    }

    /// Takes in what has arrived; waits until `done` holds or `cap_ms`
    /// passes; returns `done`.
    pub fn wait_until(&mut self, cap_ms: u64, mut done: impl FnMut(&Follower) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(cap_ms);
        loop {
            while let Ok(ev) = self.rx.try_recv() {
                self.log.push(ev);
            }
            if done(self) {
                return true;
            }
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(ev) => self.log.push(ev),
                Err(RecvTimeoutError::Timeout) => return done(self),
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Takes in what has arrived, without waiting.
    pub fn pump(&mut self) {
        self.wait_until(0, |_| true);
    }

    /// Events matching `want`, in arrival order.
    pub fn matching<'a>(
        &'a self,
        want: impl Fn(&Ev) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Ev> + 'a {
        self.log.iter().filter(move |e| want(e))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
