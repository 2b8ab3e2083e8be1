//! Latency histograms: one HdrHistogram per thread, values in microseconds, merged with `add`;
//! the portable V2 serialization (base64) that lets runs and worker processes be merged later;
//! and the standard `.hgrm` percentile text that HdrHistogram's Java and Go tools print.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::RunError;

/// Unit of recorded values.
pub const UNIT: &str = "us";

/// Highest trackable latency: one hour, in µs. Fixed bounds mean recording never allocates; a
/// larger value is clamped (and a run that long has failed anyway).
const HIGHEST_US: u64 = 3_600_000_000;

/// Three significant digits: 0.1% value resolution, as wrk2 and the HdrHistogram examples use.
const SIGFIG: u8 = 3;

/// A new empty latency histogram (µs, 1 µs to 1 h, 3 significant digits).
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds`' documented constraints.
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Records a latency given in nanoseconds (clamped to the histogram's range, never below 1 µs).
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1_000).clamp(1, HIGHEST_US));
}

/// Base64 of the histogram's V2 serialization.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2Serializer::new().serialize(h, &mut buf) {
        Ok(_) => B64.encode(buf),
        // Serializing into a Vec only fails for histograms whose counts overflow the format,
        // which `new_hist` cannot produce; an empty string then reads back as "no data".
        Err(_) => String::new(),
    }
}

/// Decodes [`encode`]'s output; an empty string is an empty histogram.
pub fn decode(s: &str) -> Result<Histogram<u64>, RunError> {
    if s.is_empty() {
        return Ok(new_hist());
    }
    let bytes = B64
        .decode(s)
        .map_err(|e| RunError::Decode(format!("histogram base64: {e}")))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| RunError::Decode(format!("histogram V2: {e:?}")))?;
    let mut out = new_hist();
    out.add(&h)
        .map_err(|e| RunError::Decode(format!("histogram merge: {e:?}")))?;
    Ok(out)
}

/// Adds `from` into `into` (clamping values outside `into`'s bounds is impossible here: every
/// histogram of this crate has the same bounds).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        // Different bounds (a histogram from another tool): add value by value, saturating.
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Percentile summary in milliseconds, plus the full histogram for later merging.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Smallest value (ms).
    pub min_ms: f64,
    /// Mean (ms).
    pub mean_ms: f64,
    /// Median (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// Largest value (ms).
    pub max_ms: f64,
    /// Unit of the serialized histogram's values.
    pub unit: String,
    /// Base64 of the HdrHistogram V2 serialization.
    pub hist: String,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

impl Latency {
    /// Summarizes a µs histogram.
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        let q = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Self {
            count: h.len(),
            min_ms: if h.is_empty() { 0.0 } else { ms(h.min()) },
            mean_ms: if h.is_empty() {
                0.0
            } else {
                h.mean() / 1_000.0
            },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            unit: UNIT.to_string(),
            hist: encode(h),
        }
    }

    /// The histogram back.
    pub fn hist(&self) -> Result<Histogram<u64>, RunError> {
        decode(&self.hist)
    }
}

/// The percentile distribution in HdrHistogram's `.hgrm` text format, values in ms: the same
/// formatter the server uses for its own histograms.
pub use shardhub::metrics::hgrm;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_roundtrip() {
        let mut a = new_hist();
        let mut b = new_hist();
        for i in 1..=1000u64 {
            record_ns(&mut a, i * 1_000);
            record_ns(&mut b, i * 2_000);
        }
        let back = decode(&encode(&a)).unwrap();
        assert_eq!(back, a);
        merge(&mut a, &b);
        assert_eq!(a.len(), 2000);
        assert_eq!(a.max(), b.max());
        assert!(decode("").unwrap().is_empty());
        assert!(decode("!!").is_err());
        let l = Latency::from_hist(&a);
        assert_eq!(l.count, 2000);
        assert!((l.max_ms - 2.0).abs() < 0.01, "{}", l.max_ms);
        assert_eq!(l.hist().unwrap(), a);
    }

    #[test]
    fn records_clamped() {
        let mut h = new_hist();
        record_ns(&mut h, 0);
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
    }

    #[test]
    fn hgrm_format_matches_hdrhistogram() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v).unwrap(); // 1 µs .. 10 ms uniform
        }
        let out = hgrm(&h);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // Median row: 5.000 ms at 50%, 5000 values at or below it.
        assert!(
            lines.contains(&"       5.003 0.500000000000       5003           2.00"),
            "{out}"
        );
        let last_row = lines[lines.len() - 4];
        assert!(
            last_row.starts_with("      10.007 1.000000000000      10000"),
            "{last_row:?}"
        );
        assert_eq!(
            last_row.split_whitespace().count(),
            3,
            "last row has no 1/(1-p)"
        );
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =        5.001, StdDeviation   =        2.887]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =       10.007, Total count    =        10000]"
        );
        assert!(lines[lines.len() - 1].starts_with("#[Buckets = "));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
        let empty = hgrm(&new_hist());
        assert!(empty.contains("Total count    =            0]"));
    }
}
