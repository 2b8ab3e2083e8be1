//! The result of a run: [`RunSummary`] (serialized as the `--json` / `--out` document), how parts
//! of a run (threads, worker processes) merge into one, and the human summary text (`text`).
//!
//! Raw counts and serialized histograms are the source of truth; every derived number (rates,
//! percentiles, losses) is recomputed by [`RunSummary::recompute`] after a merge, never averaged.
//!
//! Format 1 grew, without a version bump, what a run over several URLs records: `urls`,
//! `publisher_url` and `latency_by_url`. All three are optional on reading, and a file without
//! them is a run of one URL, `url` ([`load`] fills `urls` in), so every stored run still reads;
//! readers of the older layout ignore the new fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::hist::{self, Latency};
use crate::seq::{merge_rooms, RoomStats};

mod text;

/// Format version of the JSON document (see the module docs for what version 1 grew).
pub const FORMAT_VERSION: u32 = 1;

/// What was asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Params {
    /// Connections (connect, echo) or subscribers (fanout).
    pub conns: usize,
    /// Intended new connections per second.
    pub connect_rate: f64,
    /// Hold (connect) or measurement (fanout, echo) seconds.
    pub duration_s: f64,
    /// Rooms (fanout).
    pub rooms: usize,
    /// Publisher connections (fanout).
    pub publishers: usize,
    /// Intended publishes/s (fanout) or requests/s (echo; 0 = closed loop).
    pub rate: f64,
    /// Padding bytes added to each probe payload.
    pub payload: usize,
    /// Threads per process.
    pub threads: usize,
    /// Processes.
    pub procs: usize,
    /// Source addresses used (0: the kernel's choice).
    pub sources: usize,
    /// Churn connections per second (churn).
    #[serde(default)]
    pub churn_rate: f64,
    /// Life of each churn connection, seconds (churn).
    #[serde(default)]
    pub churn_life_s: f64,
    /// The storm's settings (recover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::plan::Storm>,
}

/// Connection outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Connections asked for (including publishers).
    pub target: u64,
    /// Connect attempts started.
    pub attempted: u64,
    /// Connections that became ready.
    pub established: u64,
    /// Connections that ended in failure (any phase).
    pub failed: u64,
    /// Failures by cause.
    pub failures: BTreeMap<String, u64>,
    /// Ready connections still open when the measurement ended.
    pub open_at_end: u64,
    /// Established connections per second, from the first attempt to the last ready.
    pub connect_rate_per_s: f64,
    /// Monotonic ns of the first attempt (for merging parts).
    pub first_start_ns: Option<u64>,
    /// Monotonic ns of the last ready connection (for merging parts).
    pub last_ready_ns: Option<u64>,
}

/// Messages sent and received during the measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Messages sent (publishes or requests).
    pub sent: u64,
    /// Sends that were due but had no open connection to go out on.
    pub skipped: u64,
    /// Messages received that count (deliveries or responses), duplicates included.
    pub received: u64,
    /// Deliveries or responses owed by the server.
    pub expected: u64,
    /// Distinct deliveries or responses received.
    pub unique: u64,
    /// Expected but never received within the grace period.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// `sent` over the measurement duration.
    pub sent_per_s: f64,
    /// `received` over the measurement duration.
    pub received_per_s: f64,
    /// Per-room totals (fanout; one implicit room in raw mode).
    pub rooms: Vec<RoomStats>,
    /// Other counters (unparsable frames, join errors...).
    pub counters: BTreeMap<String, u64>,
}

/// One second of the run (time from the run's origin, setup included).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the run's origin.
    pub t_s: u64,
    /// Ready connections open.
    pub conns: u64,
    /// Messages sent in this second.
    pub sent: u64,
    /// Messages received in this second.
    pub received: u64,
    /// 99th percentile latency of what was received in this second (ms).
    pub p99_ms: f64,
    /// That second's latency histogram (base64 V2), so timelines merge exactly.
    pub hist: String,
}

/// A complete run, or a part of one before merging.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// `connect`, `fanout`, `echo`...
    pub scenario: String,
    /// A free label for comparisons (`--label`).
    pub label: Option<String>,
    /// Target URL: the first `--url` (all of them are in `urls`).
    pub url: String,
    /// Every URL of the run: the `--url`s in order, then the publishers' if not one of them.
    /// Empty in files from before there could be several; [`load`] puts `url` in.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Where the publishers connected (fanout-shaped scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_url: Option<String>,
    /// `hub` or `raw`.
    pub adapter: String,
    /// What was asked for.
    pub params: Params,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Measured seconds (from the common start to the end of sending/holding).
    pub measured_s: f64,
    /// Connection outcome.
    pub connections: Connections,
    /// Connect start to ready (ms summary and histogram).
    pub handshake: Latency,
    /// End-to-end delivery (fanout) or round trip (echo) latency, from intended send times.
    pub latency: Option<Latency>,
    /// `latency` split by the URL of the connection that received (fanout: the subscriber's;
    /// echo, direct: the requester's), one entry per `--url` (none for a publishers' URL that is
    /// not one); only when the run has more than one URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_by_url: BTreeMap<String, Latency>,
    /// How late this generator sent versus the intended schedule (open loop only): if this is
    /// comparable to `latency`, the generator, not the server, is the bottleneck.
    #[serde(default)]
    pub send_lag: Option<Latency>,
    /// Named distributions of what a scenario measures besides messages (`recover`: `ack`,
    /// `replayed`, `done_since_storm`), each from its histogram; absent in older files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, Latency>,
    /// Message counts.
    pub traffic: Option<Traffic>,
    /// Per-second samples.
    pub timeline: Vec<Sample>,
}

impl RunSummary {
    /// Recomputes every derived field from raw counts and histograms.
    pub fn recompute(&mut self) -> Result<(), RunError> {
        let c = &mut self.connections;
        c.connect_rate_per_s = match (c.first_start_ns, c.last_ready_ns) {
            (Some(a), Some(b)) if b > a => c.established as f64 / ((b - a) as f64 / 1e9),
            _ => 0.0,
        };
        self.handshake = Latency::from_hist(&self.handshake.hist()?);
        if let Some(l) = &mut self.latency {
            *l = Latency::from_hist(&l.hist()?);
        }
        for l in (self.latency_by_url.values_mut()).chain(self.phases.values_mut()) {
            *l = Latency::from_hist(&l.hist()?);
        }
        if let Some(l) = &mut self.send_lag {
            *l = Latency::from_hist(&l.hist()?);
        }
        let secs = self.measured_s.max(1e-9);
        if let Some(t) = &mut self.traffic {
            if !t.rooms.is_empty() {
                t.expected = t.rooms.iter().map(RoomStats::expected).sum();
                t.unique = t.rooms.iter().map(|r| r.unique).sum();
                t.duplicates = t.rooms.iter().map(|r| r.duplicates).sum();
            }
            t.lost = t.expected.saturating_sub(t.unique);
            t.sent_per_s = t.sent as f64 / secs;
            t.received_per_s = t.received as f64 / secs;
        }
        for s in &mut self.timeline {
            let h = hist::decode(&s.hist)?;
            s.p99_ms = if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.99) as f64 / 1_000.0
            };
        }
        Ok(())
    }

    /// `latency_by_url` in the order of `urls` (a map orders by name).
    pub fn latency_by_url_in_order(&self) -> Vec<(&String, &Latency)> {
        let mut rows: Vec<(&String, &Latency)> = self
            .urls
            .iter()
            .filter_map(|u| self.latency_by_url.get_key_value(u))
            .collect();
        rows.extend((self.latency_by_url.iter()).filter(|(u, _)| !self.urls.contains(u)));
        rows
    }

    /// Merges parts of one run (threads or processes) into one summary.
    pub fn merge(parts: Vec<RunSummary>) -> Result<RunSummary, RunError> {
        let mut it = parts.into_iter();
        let Some(mut out) = it.next() else {
            return Err(RunError::Worker("no part to merge".into()));
        };
        let mut hs = out.handshake.hist()?;
        let mut lat = match &out.latency {
            Some(l) => Some(l.hist()?),
            None => None,
        };
        let mut lag = match &out.send_lag {
            Some(l) => Some(l.hist()?),
            None => None,
        };
        // Distributions by name (URL or phase), merged by name.
        let add_named = |into: &mut BTreeMap<String, hdrhistogram::Histogram<u64>>,
                         m: &BTreeMap<String, Latency>|
         -> Result<(), RunError> {
            for (name, l) in m {
                let h = l.hist()?;
                hist::merge(into.entry(name.clone()).or_insert_with(hist::new_hist), &h);
            }
            Ok(())
        };
        let mut by_url = BTreeMap::new();
        add_named(&mut by_url, &out.latency_by_url)?;
        let mut phases = BTreeMap::new();
        add_named(&mut phases, &out.phases)?;
        let mut timeline: BTreeMap<u64, (Sample, hdrhistogram::Histogram<u64>)> = BTreeMap::new();
        let mut add_timeline = |tl: &[Sample]| -> Result<(), RunError> {
            for s in tl {
                let h = hist::decode(&s.hist)?;
                let e = timeline.entry(s.t_s).or_insert_with(|| {
                    (
                        Sample {
                            t_s: s.t_s,
                            ..Sample::default()
                        },
                        hist::new_hist(),
                    )
                });
                e.0.conns += s.conns;
                e.0.sent += s.sent;
                e.0.received += s.received;
                hist::merge(&mut e.1, &h);
            }
            Ok(())
        };
        add_timeline(&out.timeline)?;
        for p in it {
            let (a, b) = (&mut out.connections, &p.connections);
            a.target += b.target;
            a.attempted += b.attempted;
            a.established += b.established;
            a.failed += b.failed;
            a.open_at_end += b.open_at_end;
            for (k, v) in &b.failures {
                *a.failures.entry(k.clone()).or_default() += v;
            }
            a.first_start_ns = min_opt(a.first_start_ns, b.first_start_ns);
            a.last_ready_ns = a.last_ready_ns.max(b.last_ready_ns);
            hist::merge(&mut hs, &p.handshake.hist()?);
            add_named(&mut by_url, &p.latency_by_url)?;
            add_named(&mut phases, &p.phases)?;
            for (src, acc) in [(&p.latency, &mut lat), (&p.send_lag, &mut lag)] {
                if let Some(l) = src {
                    let h = l.hist()?;
                    match acc {
                        Some(acc) => hist::merge(acc, &h),
                        None => *acc = Some(h),
                    }
                }
            }
            match (&mut out.traffic, &p.traffic) {
                (Some(a), Some(b)) => {
                    a.sent += b.sent;
                    a.skipped += b.skipped;
                    a.received += b.received;
                    a.expected += b.expected;
                    a.unique += b.unique;
                    a.duplicates += b.duplicates;
                    merge_rooms(&mut a.rooms, &b.rooms);
                    for (k, v) in &b.counters {
                        *a.counters.entry(k.clone()).or_default() += v;
                    }
                }
                (None, Some(b)) => out.traffic = Some(b.clone()),
                _ => {}
            }
            out.measured_s = out.measured_s.max(p.measured_s);
            out.started_unix_ms = out.started_unix_ms.min(p.started_unix_ms);
            add_timeline(&p.timeline)?;
        }
        out.handshake = Latency::from_hist(&hs);
        out.latency = lat.as_ref().map(Latency::from_hist);
        out.send_lag = lag.as_ref().map(Latency::from_hist);
        out.latency_by_url = by_url
            .iter()
            .map(|(url, h)| (url.clone(), Latency::from_hist(h)))
            .collect();
        out.phases = phases
            .iter()
            .map(|(name, h)| (name.clone(), Latency::from_hist(h)))
            .collect();
        out.timeline = timeline
            .into_values()
            .map(|(mut s, h)| {
                s.hist = hist::encode(&h);
                s
            })
            .collect();
        out.recompute()?;
        Ok(out)
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a run written by `--out` or `--json`, of this format or an older layout of it (see the
/// module docs).
pub fn load(path: &std::path::Path) -> Result<RunSummary, RunError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Decode(format!("{}: {e}", path.display())))?;
    let mut s: RunSummary = serde_json::from_str(&text)
        .map_err(|e| RunError::Decode(format!("{}: {e}", path.display())))?;
    if s.urls.is_empty() && !s.url.is_empty() {
        s.urls.push(s.url.clone());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(lat_us: u64, n: u64) -> RunSummary {
        let mut h = hist::new_hist();
        for _ in 0..n {
            h.record(lat_us).unwrap();
        }
        RunSummary {
            version: FORMAT_VERSION,
            scenario: "fanout".into(),
            measured_s: 2.0,
            connections: Connections {
                target: 10,
                attempted: 10,
                established: 10,
                failures: [("refused".to_string(), 1)].into(),
                first_start_ns: Some(1_000_000_000),
                last_ready_ns: Some(1_500_000_000),
                ..Connections::default()
            },
            handshake: Latency::from_hist(&h),
            latency: Some(Latency::from_hist(&h)),
            traffic: Some(Traffic {
                sent: n,
                received: n,
                rooms: vec![RoomStats {
                    members: 2,
                    published: n / 2,
                    unique: n,
                    duplicates: 1,
                }],
                ..Traffic::default()
            }),
            timeline: vec![Sample {
                t_s: 3,
                conns: 10,
                sent: n,
                received: n,
                p99_ms: 0.0,
                hist: hist::encode(&h),
            }],
            ..RunSummary::default()
        }
    }

    #[test]
    fn merges_parts_by_adding_raw_counts() {
        let mut a = part(1_000, 100);
        a.connections.first_start_ns = Some(500_000_000);
        let b = part(9_000, 100);
        let m = RunSummary::merge(vec![a, b]).unwrap();
        assert_eq!(m.connections.established, 20);
        assert_eq!(m.connections.failures["refused"], 2);
        // 20 connections over 1 s (0.5 s .. 1.5 s).
        assert!((m.connections.connect_rate_per_s - 20.0).abs() < 1e-9);
        let l = m.latency.as_ref().unwrap();
        assert_eq!(l.count, 200);
        assert!(
            (l.p99_ms - 9.0).abs() < 0.01,
            "p99 comes from the merged histogram, {}",
            l.p99_ms
        );
        let t = m.traffic.as_ref().unwrap();
        assert_eq!(t.rooms[0].members, 4);
        assert_eq!(t.expected, 4 * 100);
        assert_eq!(t.unique, 200);
        assert_eq!(t.lost, 200);
        assert_eq!(t.duplicates, 2);
        assert!((t.sent_per_s - 100.0).abs() < 1e-9);
        assert_eq!(m.timeline.len(), 1);
        assert_eq!(m.timeline[0].conns, 20);
        assert!((m.timeline[0].p99_ms - 9.0).abs() < 0.01);
        let json = serde_json::to_string(&m).unwrap();
        let back: RunSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        assert!(m.text().contains("lost 200"));
    }

    /// A part of a fanout over URLs A and B, publishers on A: `a` deliveries of `a_us` to A's
    /// subscribers, `b` of `b_us` to B's.
    fn two_url_part(a: (u64, u64), b: (u64, u64)) -> RunSummary {
        let hist_of = |us: u64, n: u64| {
            let mut h = hist::new_hist();
            h.record_n(us, n).unwrap();
            h
        };
        let (ha, hb) = (hist_of(a.0, a.1), hist_of(b.0, b.1));
        let mut all = ha.clone();
        all.add(&hb).unwrap();
        let (url_a, url_b) = ("ws://127.0.0.1:8081/ws", "ws://127.0.0.1:8082/ws");
        RunSummary {
            url: url_a.into(),
            urls: vec![url_a.into(), url_b.into()],
            publisher_url: Some(url_a.into()),
            latency: Some(Latency::from_hist(&all)),
            latency_by_url: [
                (url_a.to_string(), Latency::from_hist(&ha)),
                (url_b.to_string(), Latency::from_hist(&hb)),
            ]
            .into(),
            ..part(1, 0)
        }
    }

    #[test]
    fn latency_by_url_merges_by_url_and_prints_a_table() {
        // Two worker processes: same-node deliveries at 1 ms and 2 ms, cross-node at 5 and 9 ms.
        let m = RunSummary::merge(vec![
            two_url_part((1_000, 100), (5_000, 300)),
            two_url_part((2_000, 100), (9_000, 100)),
        ])
        .unwrap();
        let (a, b) = (
            &m.latency_by_url["ws://127.0.0.1:8081/ws"],
            &m.latency_by_url["ws://127.0.0.1:8082/ws"],
        );
        assert_eq!((a.count, b.count), (200, 400));
        assert!((a.p50_ms - 1.0).abs() < 0.01 && (a.max_ms - 2.0).abs() < 0.01);
        assert!((b.p50_ms - 5.0).abs() < 0.01 && (b.p90_ms - 9.0).abs() < 0.01);
        assert_eq!(m.latency.as_ref().unwrap().count, 600);
        let back: RunSummary = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let text = m.text();
        assert!(text.contains(" -> ws://127.0.0.1:8081/ws, ws://127.0.0.1:8082/ws; publishers on ws://127.0.0.1:8081/ws "), "{text}");
        assert!(
            text.contains("delivery latency by subscriber URL (ms):  (* the publishers' URL"),
            "{text}"
        );
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start_matches([' ', '*']).starts_with("ws://"))
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(
            rows[0].starts_with("  * ws://127.0.0.1:8081/ws        200     1.000"),
            "{text}"
        );
        assert!(
            rows[1].starts_with("    ws://127.0.0.1:8082/ws        400     5.0"),
            "{text}"
        );
    }

    #[test]
    fn runs_of_one_url_keep_their_layout() {
        // As written before runs could have several URLs: no `urls`, no `latency_by_url`.
        let mut old = serde_json::to_value(part(1_000, 10)).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("urls");
        o.remove("latency_by_url");
        o.insert("url".into(), "ws://127.0.0.1:8080/ws".into());
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.json");
        std::fs::write(&path, old.to_string()).unwrap();
        let s = load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.urls, ["ws://127.0.0.1:8080/ws"]);
        assert!(s.latency_by_url.is_empty());
        assert!(!s.text().contains("by subscriber URL"));
        // And a new run of one URL writes no `latency_by_url` and no `publisher_url`.
        let json = serde_json::to_value(part(1_000, 10)).unwrap();
        assert!(json.get("latency_by_url").is_none() && json.get("publisher_url").is_none());
        assert!(json.get("urls").is_some());
    }
}
