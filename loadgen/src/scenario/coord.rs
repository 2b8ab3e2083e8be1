//! The threads of one process: [`run`] spawns one [`Runner`] per `--threads`, gives them their
//! common start once every one is set up ([`Coord`], decided here or by a parent process through
//! the [`Gate`]), shows the per-second samples as they come, and merges the threads' parts into
//! one [`RunSummary`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::error::RunError;
use crate::hist;
use crate::net::{drive, Net};
use crate::plan::Plan;
use crate::report::{RunSummary, Sample};
use crate::sys::monotonic_ns;

use super::tally::Tally;
use super::{workload, Runner};

/// Shared by the threads of one process: how many parts are ready, and the common start time.
#[derive(Debug, Default)]
pub struct Coord {
    pub(super) ready: AtomicUsize,
    pub(super) start_ns: AtomicU64,
}

/// How the common start time is decided once every thread of this process is ready.
pub enum Gate {
    /// This process decides: start shortly after now.
    Local,
    /// A parent process decides: print `READY` on stdout, read `GO <start_ns>` from stdin.
    Stdio,
}

/// Delay between "everyone is ready" and the start, so every thread sees the start time before
/// it passes and the first scheduled sends are not all late.
const START_DELAY_NS: u64 = 50_000_000;

/// Runs a plan in this process (with `plan.threads` threads) and returns the merged summary.
pub fn run(plan: &Plan, gate: Gate) -> Result<RunSummary, RunError> {
    plan.validate()?;
    // Best effort: without it the run may still fit the soft limit, and failures will say
    // `too_many_files` if not.
    let _ = crate::sys::raise_nofile_limit();
    let origin = plan.origin_ns.unwrap_or_else(monotonic_ns);
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let deadline = monotonic_ns() + plan.timeout.as_nanos() as u64;
    let coord = Arc::new(Coord::default());
    let (tx, rx) = mpsc::channel::<Sample>();
    let mut handles = Vec::new();
    for t in 0..plan.threads {
        let share = plan.thread_share(t);
        let (plan, coord, tx) = (plan.clone(), coord.clone(), tx.clone());
        let seed = monotonic_ns() ^ ((t as u64 + 1) << 48) ^ ((plan.part.0 as u64) << 40);
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || -> Result<RunSummary, RunError> {
                let mut net = Net::new(
                    plan.targets.all().to_vec(),
                    plan.sources.clone(),
                    plan.connect_timeout,
                    seed,
                )?;
                let now = monotonic_ns();
                let work = workload(&plan, &share, origin);
                let mut tally = Tally::new(tx, origin, now);
                if plan.targets.is_multi() {
                    tally.track_urls(plan.targets.spread().len());
                }
                let mut runner = Runner::new(&plan, share.connect_rate, coord, tally, work, now);
                drive(&mut net, &mut runner, deadline)?;
                Ok(runner.into_summary(&plan, &net))
            })?;
        handles.push(h);
    }
    drop(tx);
    let mut timeline: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
    let mut gate_done = false;
    let progress = Progress::new(plan.progress);
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(s) => {
                let t = s.t_s;
                timeline.entry(t).or_default().push(s);
                if timeline.get(&t).is_some_and(|v| v.len() == plan.threads) {
                    progress.show(t, &timeline[&t]);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !gate_done && coord.ready.load(Ordering::Acquire) == plan.threads {
            gate_done = true;
            let start = match gate {
                Gate::Local => monotonic_ns() + START_DELAY_NS,
                Gate::Stdio => stdio_gate()?,
            };
            coord.start_ns.store(start, Ordering::Release);
        }
    }
    progress.finish();
    let mut parts = Vec::new();
    for h in handles {
        match h.join() {
            Ok(r) => parts.push(r?),
            Err(_) => return Err(RunError::Worker("a worker thread panicked".into())),
        }
    }
    // Per-second samples become part of the first thread's summary so that the merge combines
    // them like any other part.
    if let Some(first) = parts.first_mut() {
        first.timeline = timeline.into_values().flatten().collect();
    }
    let mut out = RunSummary::merge(parts)?;
    out.started_unix_ms = started_unix_ms;
    out.connections.target = plan.total_conns() as u64 / plan.part.1 as u64;
    if plan.part.1 == 1 {
        out.connections.target = plan.total_conns() as u64;
    }
    Ok(out)
}
/// Worker-process side of the start barrier.
fn stdio_gate() -> Result<u64, RunError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    // A parent that went away (EOF) or sent garbage: start now rather than hang.
    Ok(line
        .trim()
        .strip_prefix("GO ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| monotonic_ns() + START_DELAY_NS))
}

/// The live progress line on stderr (only when asked, i.e. when stderr is a terminal).
struct Progress {
    on: bool,
    last_conns: std::cell::Cell<u64>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Self {
            on,
            last_conns: std::cell::Cell::new(0),
        }
    }

    fn show(&self, t: u64, samples: &[Sample]) {
        if !self.on {
            return;
        }
        let conns: u64 = samples.iter().map(|s| s.conns).sum();
        let new_conns = conns as i64 - self.last_conns.replace(conns) as i64;
        let sent: u64 = samples.iter().map(|s| s.sent).sum();
        let recv: u64 = samples.iter().map(|s| s.received).sum();
        let mut h = hist::new_hist();
        for s in samples {
            if let Ok(x) = hist::decode(&s.hist) {
                hist::merge(&mut h, &x);
            }
        }
        let p99 = if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(0.99) as f64 / 1_000.0
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{t:>4}s] conns {conns} ({new_conns:+}/s)  sent {sent}/s  recv {recv}/s  p99 {p99:.3} ms"
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.on {
            let _ = writeln!(std::io::stderr());
        }
    }
}
