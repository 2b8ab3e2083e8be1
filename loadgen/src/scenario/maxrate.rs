//! `max-rate`: the highest publish rate a server sustains with p99 delivery latency under a bound
//! and nothing lost, found by short fanout runs: double the rate while runs pass, then bisect
//! between the last pass and the first failure. Each step is a complete run (fresh connections),
//! so one step's backlog cannot leak into the next.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::plan::Plan;
use crate::report::RunSummary;

/// Stop bisecting when the failing rate is within this factor of the passing one.
const RESOLUTION: f64 = 1.05;

/// One fanout run of the search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Intended publishes per second.
    pub rate: f64,
    /// Achieved publishes per second.
    pub sent_per_s: f64,
    /// Deliveries per second.
    pub received_per_s: f64,
    /// p99 delivery latency (ms).
    pub p99_ms: f64,
    /// Lost deliveries.
    pub lost: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Connections that failed.
    pub failed_conns: u64,
    /// Whether the step met every condition.
    pub pass: bool,
}

/// Outcome of the search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MaxRate {
    /// The p99 bound (ms).
    pub p99_bound_ms: f64,
    /// Highest passing rate, if any step passed.
    pub best_rate: Option<f64>,
    /// Every step in order.
    pub steps: Vec<Step>,
    /// The full summary of the best passing step.
    pub best_run: Option<RunSummary>,
}

/// Whether a run meets the bound: p99 under it, no loss or duplicate, no failed connection, and
/// at least 95% of the intended rate actually sent (so a stalled generator cannot pass).
pub fn judge(s: &RunSummary, rate: f64, p99_bound_ms: f64) -> Step {
    let t = s.traffic.clone().unwrap_or_default();
    let p99 = s.latency.as_ref().map_or(f64::INFINITY, |l| l.p99_ms);
    let pass = p99 <= p99_bound_ms
        && t.lost == 0
        && t.duplicates == 0
        && s.connections.failed == 0
        && t.sent_per_s >= 0.95 * rate
        && t.received > 0;
    Step {
        rate,
        sent_per_s: t.sent_per_s,
        received_per_s: t.received_per_s,
        p99_ms: p99,
        lost: t.lost,
        duplicates: t.duplicates,
        failed_conns: s.connections.failed,
        pass,
    }
}

/// Runs the search with `run` executing one fanout plan (so tests can substitute a model).
pub fn search(
    base: &Plan,
    p99_bound_ms: f64,
    max_steps: usize,
    mut run: impl FnMut(&Plan) -> Result<RunSummary, RunError>,
) -> Result<MaxRate, RunError> {
    let mut out = MaxRate {
        p99_bound_ms,
        best_rate: None,
        steps: Vec::new(),
        best_run: None,
    };
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = base.rate;
    for _ in 0..max_steps.max(1) {
        let mut plan = base.clone();
        plan.rate = rate;
        let summary = run(&plan)?;
        let step = judge(&summary, rate, p99_bound_ms);
        let pass = step.pass;
        out.steps.push(step);
        if pass {
            lo = Some(rate);
            out.best_rate = Some(rate);
            out.best_run = Some(summary);
        } else {
            hi = Some(rate);
        }
        rate = match (lo, hi) {
            (Some(l), None) => l * 2.0,
            (None, Some(h)) if h / 2.0 >= 1.0 => h / 2.0,
            (None, Some(_)) => break,
            (Some(l), Some(h)) if h / l <= RESOLUTION => break,
            (Some(l), Some(h)) => (l + h) / 2.0,
            (None, None) => break,
        };
    }
    Ok(out)
}

impl MaxRate {
    /// Human summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "max-rate search, p99 bound {} ms, no loss:",
            self.p99_bound_ms
        );
        let _ = writeln!(
            s,
            "  {:>10} {:>10} {:>12} {:>10} {:>8} {:>6}  result",
            "rate/s", "sent/s", "deliveries/s", "p99 ms", "lost", "dups"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:>10.1} {:>10.1} {:>12.1} {:>10.3} {:>8} {:>6}  {}",
                st.rate,
                st.sent_per_s,
                st.received_per_s,
                st.p99_ms,
                st.lost,
                st.duplicates,
                if st.pass { "pass" } else { "FAIL" }
            );
        }
        match self.best_rate {
            Some(r) => {
                let _ = writeln!(s, "highest passing rate: {r:.1} publishes/s");
            }
            None => {
                let _ = writeln!(s, "no step passed");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{self, Latency};
    use crate::plan::Scenario;
    use crate::report::Traffic;
    use crate::scenario::testbed::plan;

    /// A model server whose p99 is fine below 1000 publishes/s and not above.
    fn model(plan: &Plan) -> Result<RunSummary, RunError> {
        let mut h = hist::new_hist();
        h.record(if plan.rate <= 1000.0 { 1_000 } else { 100_000 })
            .unwrap();
        Ok(RunSummary {
            latency: Some(Latency::from_hist(&h)),
            traffic: Some(Traffic {
                sent_per_s: plan.rate,
                received: 1,
                ..Traffic::default()
            }),
            ..RunSummary::default()
        })
    }

    #[test]
    fn doubles_then_bisects() {
        let mut plan = plan(Scenario::Fanout);
        plan.rate = 100.0;
        let r = search(&plan, 10.0, 30, model).unwrap();
        let best = r.best_rate.unwrap();
        assert!((1000.0 / RESOLUTION..=1000.0).contains(&best), "{best}");
        assert_eq!(
            r.steps[..5].iter().map(|s| s.rate).collect::<Vec<_>>(),
            [100.0, 200.0, 400.0, 800.0, 1600.0]
        );
        assert!(r.steps.len() < 30);
    }
}
