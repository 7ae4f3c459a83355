//! Samples of one figure and their summary (median and worst), for the
//! agents and ssh benchmarks' reports.
//!
//! Owns only arithmetic. Must never drop a sample or round one: a figure is
//! printed as measured, and a verdict compares it with its target as is.

/// Values of one figure, in the unit the caller chose.
#[derive(Default, Clone)]
pub struct Samples {
    v: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, x: f64) {
        self.v.push(x);
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// Every sample, in the order pushed.
    pub fn values(&self) -> &[f64] {
        &self.v
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.v.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (the mean of the middle two for an even count); NaN when
    /// empty.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The largest sample; NaN when empty.
    pub fn worst(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}
