//! Samples and the report table of the state benchmark.
//!
//! Owns how figures are summarised (median, p99, worst over all samples,
//! nearest-rank quantiles) and printed. A row's verdict compares one
//! summary number with its target; rows without a target are "info".

/// Values of one figure, in the unit the caller chose.
#[derive(Default, Clone)]
pub struct Samples {
    v: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, x: f64) {
        self.v.push(x);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.v.extend_from_slice(&other.v);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.v.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The nearest-rank `q` quantile (0 < q <= 1); NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> f64 {
        self.quantile(0.99)
    }

    pub fn worst(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// "median X / p99 Y / worst Z unit (n=N)".
    pub fn summary(&self, unit: &str) -> String {
        format!(
            "median {:.1} / p99 {:.1} / worst {:.1} {unit} (n={})",
            self.median(),
            self.p99(),
            self.worst(),
            self.len()
        )
    }
}

/// One line of the final table.
pub struct Row {
    pub figure: String,
    pub target: String,
    pub measured: String,
    pub verdict: &'static str,
}

/// What the scenarios produced.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a row; `ok` is `None` for information without a target.
    pub fn row(&mut self, figure: &str, target: &str, measured: String, ok: Option<bool>) {
        let verdict = match ok {
            None => "info",
            Some(true) => "meets",
            Some(false) => "MISSES",
        };
        self.rows.push(Row { figure: figure.into(), target: target.into(), measured, verdict });
    }

    pub fn note(&mut self, text: String) {
        eprintln!("   note: {text}");
        self.notes.push(text);
    }

    pub fn print(&self) {
        let w = self.rows.iter().map(|r| r.figure.len()).max().unwrap_or(6).max(6);
        let t = self.rows.iter().map(|r| r.target.len()).max().unwrap_or(6).max(6);
        let m = self.rows.iter().map(|r| r.measured.len()).max().unwrap_or(8).max(8);
        println!();
        println!("{:<w$}  {:<t$}  {:<m$}  verdict", "figure", "target", "measured");
        println!("{}", "-".repeat(w + t + m + 13));
        for r in &self.rows {
            println!("{:<w$}  {:<t$}  {:<m$}  {}", r.figure, r.target, r.measured, r.verdict);
        }
        if !self.notes.is_empty() {
            println!("\nnotes:");
            for n in &self.notes {
                println!("  - {n}");
            }
        }
    }
}

/// Milliseconds in a duration, as a float.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
