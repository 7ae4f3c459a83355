//! The HA benchmark's report: one table row per figure (samples, median,
//! worst, target, verdict) and free-form notes, one per round.
//!
//! Owns formatting and verdicts. Must never round a figure into its goal:
//! times are printed rounded up to the next millisecond, and a verdict
//! compares the unrounded value with its target.

use crate::stats::Samples;

/// Milliseconds, rounded up, with the unit.
pub fn ms(v: f64) -> String {
    // Adding 0.0 turns a -0 (a margin just under zero) into 0.
    if v.is_nan() { "n/a".into() } else { format!("{:.0} ms", v.ceil() + 0.0) }
}

/// Which summary a target is judged on.
#[derive(Clone, Copy)]
pub enum On {
    Median,
    Worst,
}

pub struct Table {
    rows: Vec<[String; 6]>,
    /// Targets missed (figure names).
    pub missed: Vec<String>,
}

impl Table {
    pub fn new() -> Table {
        Table { rows: Vec::new(), missed: Vec::new() }
    }

    /// A row without a target.
    pub fn info(&mut self, figure: &str, s: &Samples) {
        self.rows.push([
            figure.into(),
            s.len().to_string(),
            ms(s.median()),
            ms(s.worst()),
            "-".into(),
            "info".into(),
        ]);
    }

    /// A row whose `on` summary must be at most `limit_ms` (and that has
    /// all `want` samples).
    pub fn upto(&mut self, figure: &str, s: &Samples, limit_ms: f64, on: On, want: usize) {
        let (name, v) = match on {
            On::Median => ("median", s.median()),
            On::Worst => ("worst", s.worst()),
        };
        let complete = s.len() == want;
        let ok = complete && v <= limit_ms;
        let mut verdict = if ok { "meets".to_string() } else { "MISSES".to_string() };
        if !complete {
            verdict.push_str(&format!(" ({} of {want} rounds measured)", s.len()));
        } else if matches!(on, On::Median) && s.worst() > limit_ms {
            verdict.push_str(" (worst over)");
        }
        if !ok {
            self.missed.push(figure.into());
        }
        self.rows.push([
            figure.into(),
            s.len().to_string(),
            ms(s.median()),
            ms(s.worst()),
            format!("{name} <= {}", ms(limit_ms)),
            verdict,
        ]);
    }

    /// A row of counts that must equal `want`.
    pub fn count(&mut self, figure: &str, got: usize, want: usize) {
        let ok = got == want;
        if !ok {
            self.missed.push(figure.into());
        }
        let verdict = if ok { "meets" } else { "MISSES" };
        self.rows.push([
            figure.into(),
            "1".into(),
            got.to_string(),
            got.to_string(),
            format!("= {want}"),
            verdict.into(),
        ]);
    }

    /// A single value in `unit` that must be at most `limit` (or, with no
    /// limit, shown for information).
    pub fn value(&mut self, figure: &str, v: f64, unit: &str, limit: Option<f64>) {
        let shown = format!("{v:.2} {unit}");
        let (target, verdict) = match limit {
            Some(l) if v <= l => (format!("<= {l} {unit}"), "meets"),
            Some(l) => {
                self.missed.push(figure.into());
                (format!("<= {l} {unit}"), "MISSES")
            }
            None => ("-".into(), "info"),
        };
        self.rows.push([figure.into(), "1".into(), shown.clone(), shown, target, verdict.into()]);
    }

    /// A row of counts with no target.
    pub fn tally(&mut self, figure: &str, got: usize) {
        self.rows.push([
            figure.into(),
            "1".into(),
            got.to_string(),
            got.to_string(),
            "-".into(),
            "info".into(),
        ]);
    }

    pub fn print(&self) {
        println!(
            "{:<64} {:>3} {:>10} {:>10}  {:<18} verdict",
            "figure", "n", "median", "worst", "target"
        );
        for r in &self.rows {
            println!("{:<64} {:>3} {:>10} {:>10}  {:<18} {}", r[0], r[1], r[2], r[3], r[4], r[5]);
        }
    }
}
