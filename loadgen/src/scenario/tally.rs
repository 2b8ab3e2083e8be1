//! What every scenario counts on one thread: messages sent and received, the latency of what was
//! received (from intended send times), in total and by the URL of the connection that received
//! it, the generator's own send lag, sends skipped for want of a connection, named counters; and
//! the per-second [`Sample`] sent to the coordinating thread.
//!
//! Scenarios only add to it; the runner samples it and turns it into the summary.

use std::collections::BTreeMap;
use std::sync::mpsc;

use hdrhistogram::Histogram;

use crate::hist;
use crate::report::Sample;

/// Counters and histograms reported every second and at the end.
pub struct Tally {
    pub(super) total: Histogram<u64>,
    /// The same latencies by the index (in the plan's [`crate::target::Targets`]) of the URL of
    /// the connection that received them; empty when the run has one URL (it would repeat
    /// `total`).
    pub(super) by_url: Vec<Histogram<u64>>,
    /// How late each send left versus its intended time: the generator's own share of the
    /// latency (scheduling, its CPU), reported so it is not mistaken for the server's.
    pub(super) lag: Histogram<u64>,
    pub(super) sent: u64,
    pub(super) received: u64,
    /// Sends that were due but had no open connection to go out on.
    pub(super) skipped: u64,
    pub(super) counters: BTreeMap<String, u64>,
    /// Named distributions a scenario measures besides message latency (`recover`: time to the
    /// join ack, to the last replayed message), reported as the summary's `phases`.
    pub(super) phases: BTreeMap<&'static str, Histogram<u64>>,
    /// This second's latency histogram, and the totals at the start of the second.
    interval: Histogram<u64>,
    sec_sent: u64,
    sec_received: u64,
    sec: u64,
    origin: u64,
    tx: mpsc::Sender<Sample>,
}

impl Tally {
    /// A tally whose seconds count from `origin` (the run's monotonic origin), at `now`.
    pub fn new(tx: mpsc::Sender<Sample>, origin: u64, now: u64) -> Self {
        Self {
            total: hist::new_hist(),
            by_url: Vec::new(),
            lag: hist::new_hist(),
            sent: 0,
            received: 0,
            skipped: 0,
            counters: BTreeMap::new(),
            phases: BTreeMap::new(),
            interval: hist::new_hist(),
            sec_sent: 0,
            sec_received: 0,
            sec: now.saturating_sub(origin) / 1_000_000_000,
            origin,
            tx,
        }
    }

    /// From now on also keeps latencies by URL, for URLs `0..urls` (a run with several).
    pub fn track_urls(&mut self, urls: usize) {
        self.by_url = (0..urls).map(|_| hist::new_hist()).collect();
    }

    /// A message that counts was received with this latency, on a connection to URL `url` (its
    /// index in the plan's [`crate::target::Targets`]).
    pub fn received(&mut self, latency_ns: u64, url: usize) {
        self.received += 1;
        self.record(latency_ns);
        if let Some(h) = self.by_url.get_mut(url) {
            hist::record_ns(h, latency_ns);
        }
    }

    /// A message that counts was received but is not measured (a duplicate delivery).
    pub fn received_again(&mut self) {
        self.received += 1;
    }

    fn record(&mut self, ns: u64) {
        hist::record_ns(&mut self.total, ns);
        hist::record_ns(&mut self.interval, ns);
    }

    /// A message went out, `lag` after its intended time (`None`: not measured, as for a
    /// closed-loop request, which is sent when the previous answer arrives).
    pub fn sent(&mut self, lag_ns: Option<u64>) {
        self.sent += 1;
        if let Some(l) = lag_ns {
            hist::record_ns(&mut self.lag, l);
        }
    }

    /// A send was due but could not go out.
    pub fn skipped(&mut self) {
        self.skipped += 1;
    }

    /// Adds one to the counter `what`.
    pub fn count(&mut self, what: &str) {
        self.count_n(what, 1);
    }

    /// Records `ns` in the named distribution `phase`.
    pub fn phase(&mut self, phase: &'static str, ns: u64) {
        let h = self.phases.entry(phase).or_insert_with(hist::new_hist);
        hist::record_ns(h, ns);
    }

    /// Adds `n` to the counter `what`.
    pub fn count_n(&mut self, what: &str, n: u64) {
        *self.counters.entry(what.to_string()).or_default() += n;
    }

    /// Messages sent so far.
    pub fn sent_total(&self) -> u64 {
        self.sent
    }

    /// Messages received so far.
    pub fn received_total(&self) -> u64 {
        self.received
    }

    /// The start of the next second, when the next sample is due.
    pub fn next_sample_at(&self) -> u64 {
        self.origin + (self.sec + 1) * 1_000_000_000
    }

    /// Sends one sample per elapsed second, with `open` connections.
    pub fn sample(&mut self, now: u64, open: u64) {
        let sec = now.saturating_sub(self.origin) / 1_000_000_000;
        if sec == self.sec {
            return;
        }
        let s = Sample {
            t_s: self.sec,
            conns: open,
            sent: self.sent - self.sec_sent,
            received: self.received - self.sec_received,
            p99_ms: if self.interval.is_empty() {
                0.0
            } else {
                self.interval.value_at_quantile(0.99) as f64 / 1_000.0
            },
            hist: hist::encode(&self.interval),
        };
        // The receiver only goes away when the run is being torn down; samples are then moot.
        let _ = self.tx.send(s);
        self.interval.reset();
        self.sec_sent = self.sent;
        self.sec_received = self.received;
        self.sec = sec;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_per_elapsed_second() {
        let (tx, rx) = mpsc::channel();
        let mut t = Tally::new(tx, 1_000, 1_000);
        t.track_urls(2);
        t.sent(Some(5_000));
        t.received(2_000_000, 1);
        t.received_again();
        t.sample(1_000 + 999_999_999, 3);
        assert!(rx.try_recv().is_err(), "still second 0");
        assert_eq!(t.next_sample_at(), 1_000_001_000);
        t.sample(1_000_001_000, 3);
        let s = rx.try_recv().unwrap();
        assert_eq!((s.t_s, s.conns, s.sent, s.received), (0, 3, 1, 2));
        assert!((s.p99_ms - 2.0).abs() < 0.01, "{}", s.p99_ms);
        t.sent(None);
        t.sample(3_500_000_000, 3);
        let s = rx.try_recv().unwrap();
        assert_eq!((s.t_s, s.sent, s.received, s.p99_ms), (1, 1, 0, 0.0));
        assert_eq!((t.sent_total(), t.received_total()), (2, 2));
        assert_eq!(t.lag.len(), 1, "an unmeasured send records no lag");
        assert_eq!(t.total.len(), 1, "a duplicate records no latency");
        assert_eq!((t.by_url[0].len(), t.by_url[1].len()), (0, 1), "by URL too");
        let (tx, _rx) = mpsc::channel();
        let mut one = Tally::new(tx, 0, 0);
        one.received(1_000, 0);
        assert!(one.by_url.is_empty(), "one URL: the total says it all");
        one.phase("ack", 3_000_000);
        one.phase("ack", 5_000_000);
        assert_eq!(one.phases["ack"].len(), 2);
        assert_eq!(one.total.len(), 1, "a phase is not a delivery");
    }
}
