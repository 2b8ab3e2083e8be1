//! `--procs K`: the same run as K worker processes (this binary re-executed with a hidden
//! `--worker-part`), because one process is capped at 20,000 open files here. Protocol over the
//! children's pipes, one line each: the child prints `READY` when its setup is done; once all are
//! ready (or gone) the parent sends every child `GO <start_ns>` on stdin (a common start on the
//! system-wide monotonic clock); the child finally prints `RESULT <json>` and exits. The parent
//! merges the parts with [`RunSummary::merge`] (counts added, histograms `add`ed).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::RunError;
use crate::report::RunSummary;
use crate::sys::monotonic_ns;

/// Line prefix of a worker's result.
pub const RESULT_PREFIX: &str = "RESULT ";

enum Line {
    Ready(usize),
    Result(usize, String),
    Eof(usize),
}

/// Runs `procs` workers with `args` (this process's own arguments, minus the program name) plus
/// `--worker-part I --origin-ns T`, and merges their results. `timeout` bounds the whole run.
pub fn run_procs(procs: usize, args: &[String], timeout: Duration) -> Result<RunSummary, RunError> {
    let exe = std::env::current_exe()?;
    let origin = monotonic_ns();
    let deadline = std::time::Instant::now() + timeout + Duration::from_secs(5);
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for i in 0..procs {
        let mut child = Command::new(&exe)
            .args(args)
            .args([
                "--worker-part",
                &i.to_string(),
                "--origin-ns",
                &origin.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let Some(out) = child.stdout.take() else {
            return Err(RunError::Worker("worker stdout not captured".into()));
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let msg = if line.trim() == "READY" {
                    Line::Ready(i)
                } else if let Some(json) = line.strip_prefix(RESULT_PREFIX) {
                    Line::Result(i, json.to_string())
                } else {
                    continue;
                };
                if tx.send(msg).is_err() {
                    break;
                }
            }
            let _ = tx.send(Line::Eof(i));
        });
        children.push(child);
    }
    drop(tx);
    let mut ready = vec![false; procs];
    let mut done = vec![false; procs];
    let mut results: Vec<Option<String>> = vec![None; procs];
    let mut gone = false;
    while done.iter().any(|d| !d) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(Line::Ready(i)) => ready[i] = true,
            Ok(Line::Result(i, json)) => results[i] = Some(json),
            Ok(Line::Eof(i)) => {
                done[i] = true;
                ready[i] = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !gone && ready.iter().all(|r| *r) {
            gone = true;
            let start = monotonic_ns() + 100_000_000;
            for c in &mut children {
                if let Some(stdin) = c.stdin.as_mut() {
                    // A worker that already exited cannot be started; its EOF is handled above.
                    let _ = writeln!(stdin, "GO {start}");
                    let _ = stdin.flush();
                }
            }
        }
    }
    for mut c in children {
        // Workers stop by themselves within their own --timeout; past our deadline, end them.
        if matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() >= deadline {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    let mut parts = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let json = r.ok_or_else(|| RunError::Worker(format!("worker {i} returned no result")))?;
        let s: RunSummary = serde_json::from_str(&json)
            .map_err(|e| RunError::Worker(format!("worker {i} result: {e}")))?;
        parts.push(s);
    }
    let mut merged = RunSummary::merge(parts)?;
    merged.connections.target = 0;
    Ok(merged)
}
