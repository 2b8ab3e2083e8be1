//! Per-shard counters, written by their shard alone and summed on demand.
//!
//! Each counter has a single writer, the shard's engine, so an increment is a relaxed load and
//! store (a plain add on x86), not a locked read-modify-write; readers on other threads see a
//! recent value. What other threads count (messages a shard's inbox refused) is counted with
//! atomic increments where it happens, in the router, and joins these in [`Stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident),* $(,)?) => {
        /// One shard's counters.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $($(#[doc = $doc])+ pub(crate) $name: Counter,)*
        }

        /// A snapshot of counters summed over shards.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Stats {
            $($(#[doc = $doc])+ pub $name: u64,)*
            /// Routed messages a shard's inbox refused because it was full: the recipients on
            /// that shard did not get them, and the sender was told (`overloaded`).
            pub inbox_full_drops: u64,
            /// Routed messages refused because the shard had stopped.
            pub shard_gone_drops: u64,
        }

        impl Stats {
            pub(crate) fn add(&mut self, s: &ShardStats) {
                $(self.$name += s.$name.get();)*
            }

            /// Adds the router's counts of refused messages (see the module docs).
            pub(crate) fn add_drops(&mut self, drops: &[crate::engine::router::Drops]) {
                use std::sync::atomic::Ordering::Relaxed;
                for d in drops {
                    self.inbox_full_drops += d.full.load(Relaxed);
                    self.shard_gone_drops += d.gone.load(Relaxed);
                }
            }

            /// Each counter's name and description (the `HELP` of its Prometheus metric).
            pub const HELP: &'static [(&'static str, &'static str)] =
                &[$((stringify!($name), concat!($($doc),+).trim_ascii_start()),)*];
        }
    };
}

counters! {
    /// Open WebSocket sessions (a gauge).
    connections,
    /// TCP connections accepted.
    accepted,
    /// Upgrades that completed.
    handshakes,
    /// Upgrades refused or abandoned (bad request, rejected, limit, timeout), whether with an
    /// HTTP status or with the `101` and a close code.
    handshake_failures,
    /// Handshakes that did not complete within `handshake_timeout`.
    handshake_timeouts,
    /// Data messages received.
    messages_in,
    /// Payload bytes received in data messages.
    bytes_in,
    /// Frames queued to sessions (each recipient counts once).
    deliveries,
    /// Bytes written to sockets.
    bytes_out,
    /// Data frames compressed for permessage-deflate sessions (once per frame and shard,
    /// however many sessions get it).
    compressed_frames,
    /// Deliveries that went compressed (each recipient counts once; also in `deliveries`).
    compressed_deliveries,
    /// Bytes the compressed deliveries saved against their plain frames, summed over
    /// recipients.
    compression_bytes_saved,
    /// Sessions closed for falling behind (queue over `max_queue_bytes` or write stall).
    slow_consumer_closes,
    /// Sessions dropped for silence past `ping_interval + pong_timeout`.
    heartbeat_timeouts,
    /// Sessions closed for protocol violations (1002, 1007, 1009).
    protocol_errors,
    /// Requests answered with `bad_request` (WebSocket) or 400 (HTTP API): malformed or too
    /// deeply nested JSON, bad escapes, invalid names, missing fields.
    bad_requests,
    /// Sessions closed with 3005 (`Close::InternalError`) because handling one of their messages or events panicked
    /// (an application hook, or a server bug); the shard went on.
    panics,
    /// HTTP requests answered (not counting WebSocket upgrades).
    http_requests,
    /// Open Server-Sent Events streams (a gauge).
    sse_connections,
    /// SSE events queued to streams (each recipient counts once).
    sse_events,
    /// Upgrades refused for a missing or invalid credential (close 3500; HTTP 401 for streams).
    auth_failures,
    /// Upgrades refused for their `Origin` (close 3501; HTTP 403 for streams).
    origin_refusals,
    /// Upgrade requests over `max_header_bytes` (431).
    oversized_headers,
    /// Connections refused by the per-address limits (429).
    ip_limit_refusals,
    /// Client requests refused by the session's permissions (`forbidden`).
    forbidden_requests,
    /// Messages dropped for exceeding a connection's message or byte rate.
    rate_limited_messages,
    /// Sessions closed (3502) for exceeding their rate for `rate_limit_close_after`.
    rate_limit_closes,
    /// Joins with `recover` answered `recovered: true`.
    recoveries,
    /// Joins with `recover` answered `recovered: false` (the application reloads).
    recoveries_failed,
    /// Publications replayed to recovering sessions and SSE streams.
    recovered_messages,
    /// Direct messages sent with `"ack": true` that reached a session (and so wait for
    /// receipts).
    acked_sends,
    /// Acknowledged sends answered `delivered` (at least one receipt).
    acked_delivered,
    /// Acknowledged sends answered `not_delivered` (no receipt by the timeout).
    acked_not_delivered,
    /// Acknowledged sends that ended before every reached session answered (`delivered`
    /// with fewer `sessions` than `reached`, or `not_delivered`).
    acked_timeouts,
    /// Receipts (`received`) counted.
    receipts,
    /// Receipts ignored: late, unknown, repeated, or from a session of another user.
    receipts_ignored,
    /// Stored messages handed to a session opening on this shard.
    offline_delivered,
}

/// A single-writer counter: only the owning shard's engine may change it (see the module
/// docs; anything counted from other threads uses `fetch_add` instead).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (gauges). Only the owning shard may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Latency distributions a shard records, in microseconds (1 µs to 1 h, 3 significant digits).
///
/// * `fanout`: for each publish or broadcast a shard handles (from its own clients or from
///   another shard), the time from the reactor waking with it to the end of the first write
///   walk that started after it (that walk wrote its frames to every local recipient whose
///   socket had room; a walk is written in slices between input, `engine::writes`). With
///   `write_delay` on, it includes the time the deliveries were held.
/// * `tick`: the duration of each reactor iteration, waking to the end of its work (no waiting).
/// * `timer_lag`: how late each connection timer (heartbeat ping, timeout check) fired after its
///   deadline: the heartbeat timeliness of a loaded shard (0 up to one tick is on time).
///
/// Each shard records into its own copy and merges it into the shared one once per tick, so
/// the lock is taken ten times a second, never per message.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// Publish-to-last-write time per fan-out, µs.
    pub fanout: Histogram<u64>,
    /// Reactor iteration time, µs.
    pub tick: Histogram<u64>,
    /// Timer lateness past its deadline, µs.
    pub timer_lag: Histogram<u64>,
}

use hdrhistogram::Histogram;

const HIGHEST_US: u64 = 3_600_000_000;

/// A histogram that starts at 2,048 counters (values to 2,047 µs at 3 significant figures, 16
/// KiB) and grows as larger values arrive, up to [`HIGHEST_US`] (184 KiB). A shard's
/// per-tick buffers then stay small: at full size, merging and clearing them ten times a
/// second wrote over 1 MB of counters a tick, and an idle shard spent 1.8 ms of CPU a second,
/// now 0.7 (`bench/runs/2026-12-03-idle-cpu`).
fn new_hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are valid")
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            fanout: new_hist(),
            tick: new_hist(),
            timer_lag: new_hist(),
        }
    }
}

impl Histograms {
    /// Adds another set (same bounds, so this cannot fail).
    pub fn add(&mut self, other: &Histograms) {
        let _ = self.fanout.add(&other.fanout);
        let _ = self.tick.add(&other.tick);
        let _ = self.timer_lag.add(&other.timer_lag);
    }

    /// Empties all three (an empty one is left alone: clearing writes every counter).
    pub fn reset(&mut self) {
        for h in [&mut self.fanout, &mut self.tick, &mut self.timer_lag] {
            if !h.is_empty() {
                h.reset();
            }
        }
    }

    /// Records a duration, clamped to the histogram's range.
    pub(crate) fn record(h: &mut Histogram<u64>, d: std::time::Duration, count: u64) {
        let us = (d.as_micros() as u64).clamp(1, HIGHEST_US);
        let _ = h.record_n(us, count);
    }
}

/// The percentiles of one histogram, in microseconds, as the API reports them
/// (`GET /api/v1/stats?detail=histograms`). All zero when nothing was recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median, µs.
    pub p50: u64,
    /// 90th percentile, µs.
    pub p90: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// 99.9th percentile, µs.
    pub p999: u64,
    /// Largest value, µs (to the histogram's precision, 3 significant digits).
    pub max: u64,
    /// Mean, µs.
    pub mean: f64,
}

impl Percentiles {
    /// The ladder of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The latency histograms of the last complete window (about [`RecentHistograms::WINDOW`]),
/// over every shard: what a live view plots, where the histograms since start would barely
/// move after the first minutes.
///
/// Shards merge their recent values into `current` once per tick (under one lock, ten times a
/// second per shard); the merge that finds `current` a window old moves it to `previous`. The
/// window's edges are therefore blurred by a tick. Two sets of three histograms, whatever the
/// shard count.
#[derive(Debug, Clone)]
pub struct RecentHistograms {
    current: Histograms,
    current_start: std::time::Instant,
    previous: Histograms,
    /// How long `previous` covered; zero before the first rotation.
    previous_len: std::time::Duration,
}

impl RecentHistograms {
    /// The window length: the dashboard polls once a second.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

    /// Empty, with the first window starting at `now`.
    pub fn new(now: std::time::Instant) -> Self {
        Self {
            current: Histograms::default(),
            current_start: now,
            previous: Histograms::default(),
            previous_len: std::time::Duration::ZERO,
        }
    }

    /// Adds a shard's values recorded up to `now`, first closing the window if it is over.
    pub fn merge(&mut self, h: &Histograms, now: std::time::Instant) {
        self.rotate(now);
        self.current.add(h);
    }

    fn rotate(&mut self, now: std::time::Instant) {
        let age = now.saturating_duration_since(self.current_start);
        if age < Self::WINDOW {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        self.current_start = now;
        // A window that ran much longer than WINDOW (no shard merged: they all stopped) holds
        // old values: report it as empty rather than as recent.
        if age >= 2 * Self::WINDOW {
            self.previous.reset();
        }
        self.previous_len = age;
    }

    /// The last complete window as of `now` and how long it was; empty (and zero long) when
    /// no shard has merged for two windows.
    pub fn last(&self, now: std::time::Instant) -> (Histograms, std::time::Duration) {
        if now.saturating_duration_since(self.current_start) >= 2 * Self::WINDOW {
            return (Histograms::default(), std::time::Duration::ZERO);
        }
        (self.previous.clone(), self.previous_len)
    }
}

/// The percentile distribution in HdrHistogram's `.hgrm` text format (as printed by
/// `outputPercentileDistribution` with 5 ticks per half distance), values scaled from
/// microseconds to milliseconds. The server's histograms and shardhub-loadgen's share it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    use std::fmt::Write;
    let scale = 1_000.0;
    let d = h.sigfig() as usize;
    let mut s = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let p = v.quantile_iterated_to();
            if p < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:>12.d$} {p:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - p)
                );
            } else {
                let _ = writeln!(s, "{value:>12.d$} {p:>2.12} {total:>10}");
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let _ = writeln!(
        s,
        "#[Mean    = {mean:>12.d$}, StdDeviation   = {sd:>12.d$}]"
    );
    let _ = writeln!(
        s,
        "#[Max     = {max:>12.d$}, Total count    = {:>12}]",
        h.len()
    );
    let sub_buckets = 1u64 << (2.0 * 10f64.powi(d as i32)).log2().ceil() as u32;
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        h.buckets()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_of_an_empty_and_a_filled_histogram() {
        let mut h = Histograms::default();
        assert_eq!(Percentiles::of(&h.tick), Percentiles::default());
        for us in 1..=1000 {
            Histograms::record(&mut h.tick, Duration::from_micros(us), 1);
        }
        let p = Percentiles::of(&h.tick);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.p999),
            (1000, 500, 900, 990, 999)
        );
        assert_eq!(p.max, 1000);
        assert!((p.mean - 500.5).abs() < 1.0, "{}", p.mean);
    }

    #[test]
    fn histograms_start_small_grow_to_the_hour_and_merge_across_sizes() {
        let mut small = Histograms::default();
        Histograms::record(&mut small.tick, Duration::from_micros(700), 3);
        assert_eq!(
            small.tick.distinct_values(),
            2048,
            "16 KiB for values to 2 ms"
        );
        let mut large = Histograms::default();
        Histograms::record(&mut large.tick, Duration::from_secs(7200), 1);
        assert_eq!(large.tick.max(), large.tick.highest_equivalent(HIGHEST_US));
        assert_eq!(
            large.tick.distinct_values(),
            23_552,
            "grown to the full hour"
        );
        // Adding across sizes, either way round, keeps every value.
        large.add(&small);
        small.add(&large);
        assert_eq!((large.tick.len(), small.tick.len()), (4, 7));
        assert_eq!(small.tick.count_at(700), 6);
        // Clearing empties; an empty one is left as it is.
        small.reset();
        small.reset();
        assert!(small.tick.is_empty() && small.fanout.is_empty());
    }

    #[test]
    fn the_recent_window_rotates_once_a_window_and_goes_stale_when_nobody_merges() {
        let t0 = std::time::Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut one = Histograms::default();
        Histograms::record(&mut one.fanout, Duration::from_micros(100), 1);
        let mut r = RecentHistograms::new(t0);
        r.merge(&one, ms(100));
        r.merge(&one, ms(900));
        assert_eq!(r.last(ms(950)).0.fanout.len(), 0, "no window closed yet");
        // The merge at 1.1 s closes the first window (two values) and opens the next.
        r.merge(&one, ms(1100));
        let (h, len) = r.last(ms(1200));
        assert_eq!((h.fanout.len(), len), (2, Duration::from_millis(1100)));
        r.merge(&one, ms(2200));
        assert_eq!(r.last(ms(2300)).0.fanout.len(), 1, "the second window");
        // Nobody merges for over two windows: nothing recent to show.
        let (h, len) = r.last(ms(4300));
        assert_eq!((h.fanout.len(), len), (0, Duration::ZERO));
        // A merge after a long silence does not pass the old window off as recent.
        r.merge(&one, ms(9000));
        assert_eq!(r.last(ms(9100)).0.fanout.len(), 0);
    }

    #[test]
    fn hgrm_reports_percentiles_in_milliseconds() {
        let mut h = Histograms::default();
        for ms in 1..=100 {
            Histograms::record(&mut h.fanout, Duration::from_millis(ms), 1);
        }
        let text = hgrm(&h.fanout);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(
            text.contains("#[Max     =      100.031, Total count    =          100]"),
            "{text}"
        );
        let p50 = text
            .lines()
            .find(|l| l.contains(" 0.500000000000 "))
            .expect("a p50 line");
        assert!(p50.trim_start().starts_with("50.0"), "{p50}");
    }
}
