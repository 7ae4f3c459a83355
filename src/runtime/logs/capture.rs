//! Capture of this process's `tracing` events into its log ring: a
//! `tracing_subscriber` layer that turns each event into a [`LogLine`]
//! named by this process (`manager-<id>` or `machine-<id>`, set once the
//! identity is known) and numbered from its start.
//!
//! Owns the process's line numbering and name. Must never block or log
//! (it runs inside every `tracing` call), and never hold a line past its
//! bounds (the ring cuts it).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::hub::LogHub;
use super::{Level, LogLine, MAX_LOG_LINE_BYTES};

struct Process {
    boot: u64,
    seq: AtomicU64,
    hub: Arc<LogHub>,
    name: OnceLock<(String, Option<String>)>,
}

static PROCESS: OnceLock<Process> = OnceLock::new();

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Makes this process's ring (`ring_bytes`), once; later calls return the
/// first one.
pub fn install(ring_bytes: usize) -> Arc<LogHub> {
    PROCESS
        .get_or_init(|| Process {
            boot: unix_ms(),
            seq: AtomicU64::new(0),
            hub: LogHub::new(ring_bytes),
            name: OnceLock::new(),
        })
        .hub
        .clone()
}

/// This process's ring, if logging set one up.
pub fn hub() -> Option<Arc<LogHub>> {
    PROCESS.get().map(|p| p.hub.clone())
}

/// Names this process's lines from now on (once; `source` such as
/// `manager-<id>`, and its machine if it has one).
pub fn set_name(source: String, machine: Option<String>) {
    if let Some(p) = PROCESS.get() {
        let _ = p.name.set((source, machine));
    }
}

/// A line written by this process now, numbered after the last.
pub fn new_line(level: Level, module: String, unit: Option<String>, message: String) -> LogLine {
    let (boot, seq, name) = match PROCESS.get() {
        Some(p) => (p.boot, p.seq.fetch_add(1, Ordering::Relaxed), p.name.get()),
        None => (0, 0, None),
    };
    let (mut source, machine) = match name {
        Some((s, m)) => (s.clone(), m.clone()),
        None => (format!("jujud-{}", std::process::id()), None),
    };
    if let Some(u) = &unit {
        source = format!("unit-{}", u.replace('/', "-"));
    }
    LogLine { source, boot, seq, at_unix_ms: unix_ms(), level, module, machine, unit, message }
        .bounded()
}

/// Keeps one line of a unit's workload output in this process's ring.
pub fn workload_line(unit: &str, text: String) {
    if let Some(p) = PROCESS.get() {
        p.hub.push(new_line(Level::Info, "workload".into(), Some(unit.to_owned()), text));
    }
}

/// The layer added to the subscriber by [`crate::logging`].
pub struct Capture;

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if self.rest.len() < MAX_LOG_LINE_BYTES {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if self.rest.len() < MAX_LOG_LINE_BYTES {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

fn level_of(l: &tracing::Level) -> Level {
    match *l {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::ERROR => Level::Error,
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let Some(p) = PROCESS.get() else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut message = fields.message;
        message.push_str(&fields.rest);
        p.hub.push(new_line(level_of(meta.level()), meta.target().to_owned(), None, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_numbered_lines_with_their_fields_and_this_process_name() {
        let hub = install(1 << 20);
        set_name("manager-0123456789abcdef".into(), None);
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(member = "abc", generation = 3, "member down");
            tracing::info!("second");
        });
        let mine: Vec<LogLine> = hub
            .backlog(&Default::default(), true, 0)
            .into_iter()
            .filter(|l| l.module.ends_with("capture::tests"))
            .collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert_eq!(mine[0].message, "member down member=abc generation=3");
        assert_eq!(mine[0].level, Level::Warn);
        assert_eq!(mine[0].source, "manager-0123456789abcdef");
        assert!(mine[1].seq > mine[0].seq);
        workload_line("web/0", "hello".into());
        let unit = hub.recent(1).pop().unwrap();
        assert_eq!((unit.source.as_str(), unit.unit.as_deref()), ("unit-web-0", Some("web/0")));
    }
}
