//! Open-loop send schedules: the k-th event of a stream is due at a fixed intended time
//! `start + (k + phase) * interval`, whatever happened to earlier events. Latency is measured from
//! that intended time, so when the server (or this generator) stalls, every send that should have
//! happened during the stall is charged the stall, instead of silently not being sent
//! (coordinated omission, as HdrHistogram's docs describe it).

/// A fixed-rate stream of intended event times on the monotonic clock (ns).
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
    phase: f64,
    stop_ns: u64,
    next: u64,
}

impl Schedule {
    /// `rate` events per second starting at `start_ns`, no event due at or after `stop_ns`.
    /// `phase` in [0, 1) shifts this stream by a fraction of its interval so that many streams of
    /// the same rate do not all fire at once. A rate of zero (or below) yields no event.
    pub fn new(start_ns: u64, rate: f64, phase: f64, stop_ns: u64) -> Self {
        let interval_ns = if rate > 0.0 {
            1e9 / rate
        } else {
            f64::INFINITY
        };
        Self {
            start_ns,
            interval_ns,
            phase: phase.clamp(0.0, 1.0),
            stop_ns,
            next: 0,
        }
    }

    fn at(&self, k: u64) -> Option<u64> {
        let off = (k as f64 + self.phase) * self.interval_ns;
        if !off.is_finite() {
            return None;
        }
        let t = self.start_ns.saturating_add(off as u64);
        (t < self.stop_ns).then_some(t)
    }

    /// The intended time of the next event, if any is left.
    pub fn next_at(&self) -> Option<u64> {
        self.at(self.next)
    }

    /// Takes the next event if it is due at `now`: returns its index and intended time.
    pub fn take_due(&mut self, now: u64) -> Option<(u64, u64)> {
        let t = self.at(self.next)?;
        if t > now {
            return None;
        }
        let k = self.next;
        self.next += 1;
        Some((k, t))
    }

    /// Events taken so far.
    pub fn taken(&self) -> u64 {
        self.next
    }

    /// True when no event is left before the stop time.
    pub fn finished(&self) -> bool {
        self.at(self.next).is_none()
    }
}

/// The `i`-th of `k` near-equal contiguous parts of `0..n`.
pub fn share(n: usize, i: usize, k: usize) -> std::ops::Range<usize> {
    let k = k.max(1);
    (n * i / k)..(n * (i + 1) / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_times_do_not_drift() {
        let mut s = Schedule::new(1_000, 1000.0, 0.0, u64::MAX);
        assert_eq!(s.take_due(999), None);
        assert_eq!(s.take_due(1_000), Some((0, 1_000)));
        assert_eq!(s.take_due(1_000), None);
        // A late caller gets every missed event, each with its own intended time.
        let now = 1_000 + 5_000_000;
        let mut got = Vec::new();
        while let Some(e) = s.take_due(now) {
            got.push(e);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], (5, 1_000 + 5_000_000));
        assert_eq!(s.next_at(), Some(1_000 + 6_000_000));
    }

    #[test]
    fn stop_and_phase() {
        let mut s = Schedule::new(0, 10.0, 0.5, 1_000_000_000);
        let mut times = Vec::new();
        while let Some((_, t)) = s.take_due(u64::MAX) {
            times.push(t);
        }
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], 50_000_000);
        assert_eq!(times[9], 950_000_000);
        assert!(s.finished());
        let mut z = Schedule::new(0, 0.0, 0.0, u64::MAX);
        assert_eq!(z.take_due(u64::MAX), None);
        assert!(z.finished());
    }

    #[test]
    fn shares_cover_exactly() {
        for n in [0, 1, 7, 100] {
            for k in 1..5 {
                let parts: Vec<_> = (0..k).map(|i| share(n, i, k)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[k - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
            }
        }
    }
}
