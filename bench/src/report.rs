//! Turning measured rounds into the tables people read: medians with min–max, ratios
//! to the baselines measured in the same run, and the goals as met/missed.

use std::fmt::Write as _;

/// One measured phase of one case.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Envoy CPU microseconds per connection (TCP) or per request (HTTP).
    pub cpu_us: f64,
    /// Connections (or requests) Envoy completed in the phase.
    pub units: u64,
    /// Connections (or requests) per second Envoy completed in the phase.
    pub rate: f64,
    /// Envoy CPU time over wall time (1.0 = one core busy).
    pub util: f64,
    /// The load generator's (and backend's) CPU time over wall time.
    pub client_util: f64,
    /// Failed connections or requests seen by the client.
    pub errors: u64,
    /// The first client failure, if any.
    pub first_error: Option<String>,
}

/// Every round of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Short key: `a`, `w`, `wd`, `r1`, `r2`, `c`, `d`, `e`, `h0`, `hw`, `hc`, `hn`.
    pub key: &'static str,
    /// What it is.
    pub label: &'static str,
    /// One sample per round.
    pub samples: Vec<Sample>,
}

/// Median, min and max.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// The statistics of `values` (NaN-free).
pub fn stat(values: impl IntoIterator<Item = f64>) -> Stat {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Stat {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

impl CaseResult {
    /// CPU µs per connection or request.
    pub fn cpu(&self) -> Stat {
        stat(self.samples.iter().map(|s| s.cpu_us))
    }
    /// Connections or requests per second.
    pub fn rate(&self) -> Stat {
        stat(self.samples.iter().map(|s| s.rate))
    }
    /// Envoy core utilisation.
    pub fn util(&self) -> Stat {
        stat(self.samples.iter().map(|s| s.util))
    }
    /// Load generator core utilisation.
    pub fn client_util(&self) -> Stat {
        stat(self.samples.iter().map(|s| s.client_util))
    }
    /// Client-side failures over all rounds.
    pub fn errors(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }
    /// Connections (requests) per second one Envoy core sustains at this CPU cost.
    pub fn capacity(&self) -> f64 {
        1e6 / self.cpu().median
    }
}

/// One goal of the issue.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is compared.
    pub what: String,
    /// The measured figure.
    pub measured: String,
    /// The goal.
    pub goal: String,
    /// Met or missed; `None` when it could not be measured.
    pub met: Option<bool>,
}

impl Goal {
    /// `met`, `MISSED` or `not measured`.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        }
    }
}

fn ratio(x: f64, base: Option<&CaseResult>, f: impl Fn(&CaseResult) -> f64) -> String {
    match base {
        Some(b) => format!("{:.2}", x / f(b)),
        None => "–".to_string(),
    }
}

/// The markdown tables: connections (TCP cases), HTTP requests, goals.
pub fn markdown(results: &[CaseResult], goals: &[Goal]) -> String {
    let find = |k: &str| results.iter().find(|r| r.key == k);
    let (a, w, r2) = (find("a"), find("w"), find("r2"));
    let mut out = String::new();
    let tcp: Vec<&CaseResult> = results.iter().filter(|r| !r.key.starts_with('h')).collect();
    if !tcp.is_empty() {
        let _ = writeln!(
            out,
            "| case | Envoy CPU µs/conn, median (min–max) | ×(a) | ×(w) | ×(r2) | conn/s, median (min–max) | ×(a) | ×(w) | ×(r2) | Envoy / client core busy | client errors |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for r in tcp {
        let (c, s) = (r.cpu(), r.rate());
        let cpu = |b: &CaseResult| b.cpu().median;
        let rate = |b: &CaseResult| b.rate().median;
        let _ = writeln!(
            out,
            "| ({}) {} | {:.1} ({:.1}–{:.1}) | {} | {} | {} | {:.0} ({:.0}–{:.0}) | {} | {} | {} | {:.0}% / {:.0}% | {} |",
            r.key,
            r.label,
            c.median,
            c.min,
            c.max,
            ratio(c.median, a, cpu),
            ratio(c.median, w, cpu),
            ratio(c.median, r2, cpu),
            s.median,
            s.min,
            s.max,
            ratio(s.median, a, rate),
            ratio(s.median, w, rate),
            ratio(s.median, r2, rate),
            r.util().median * 100.0,
            r.client_util().median * 100.0,
            r.errors()
        );
    }
    let http: Vec<&CaseResult> = results.iter().filter(|r| r.key.starts_with('h')).collect();
    if !http.is_empty() {
        let h0 = find("h0");
        let hw = find("hw");
        if !out.is_empty() {
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "| HTTP, kept-alive mTLS | Envoy CPU µs/request, median (min–max) | ×(h0) | ×(hw) | requests/s, median (min–max) | ×(h0) | ×(hw) | Envoy / client core busy | client errors |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for r in http {
            let (c, s) = (r.cpu(), r.rate());
            let _ = writeln!(
                out,
                "| ({}) {} | {:.1} ({:.1}–{:.1}) | {} | {} | {:.0} ({:.0}–{:.0}) | {} | {} | {:.0}% / {:.0}% | {} |",
                r.key,
                r.label,
                c.median,
                c.min,
                c.max,
                ratio(c.median, h0, |b| b.cpu().median),
                ratio(c.median, hw, |b| b.cpu().median),
                s.median,
                s.min,
                s.max,
                ratio(s.median, h0, |b| b.rate().median),
                ratio(s.median, hw, |b| b.rate().median),
                r.util().median * 100.0,
                r.client_util().median * 100.0,
                r.errors()
            );
        }
    }
    if !goals.is_empty() {
        if !out.is_empty() {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "| goal | measured | target | |");
        let _ = writeln!(out, "|---|---|---|---|");
        for g in goals {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                g.what,
                g.measured,
                g.goal,
                g.verdict()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(stat([3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(stat([4.0, 1.0, 2.0, 3.0]).median, 2.5);
        let s = stat([5.0, 1.0, 9.0]);
        assert_eq!((s.min, s.max), (1.0, 9.0));
    }
}
