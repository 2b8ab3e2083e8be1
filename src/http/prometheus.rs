//! The Prometheus text exposition format (version 0.0.4) of the server's counters, gauges and
//! latency histograms. Pure: a [`Snapshot`] in, text out.
//!
//! Counters are per shard (`shard="N"` label), as each shard writes its own; Prometheus sums
//! them with `sum without (shard)`. The HdrHistograms become Prometheus histograms with the
//! fixed [`BUCKETS_US`] bounds, so dashboards can aggregate them across servers.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::metrics::{Histograms, Stats};

/// Histogram bucket upper bounds in microseconds (rendered in seconds): 10 µs to 2.5 s.
pub const BUCKETS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000,
];

/// Everything `/metrics` reports.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// In cluster mode: this node's name and the others as last heard, and the bus counters.
    pub cluster: Option<(
        (String, Vec<crate::cluster::view::NodeInfo>),
        crate::cluster::BusCounters,
    )>,
    /// Each shard's counters, by shard index.
    pub shards: Vec<Stats>,
    /// Open sessions.
    pub sessions: usize,
    /// Distinct users online.
    pub users: usize,
    /// Rooms.
    pub rooms: usize,
    /// Seconds since the server started.
    pub uptime_seconds: f64,
    /// Latency histograms merged over shards.
    pub histograms: &'a Histograms,
    /// Node-wide metrics outside the shards' counters (the offline store's): name (without
    /// the `shardhub_` prefix), help, whether a gauge (else a counter), value.
    pub node: Vec<(&'static str, &'static str, bool, u64)>,
}

/// The refused-message counts, rendered as one metric with a `reason` label.
const DROPS: &[(&str, &str)] = &[
    ("inbox_full_drops", "inbox_full"),
    ("shard_gone_drops", "shard_gone"),
];

/// Counters that are really gauges (they go down).
const GAUGES: &[&str] = &["connections", "sse_connections"];

/// A counter's description: its doc comment (`metrics::Stats::HELP`).
fn help(name: &str) -> &'static str {
    crate::metrics::Stats::HELP
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("A shardhub counter.", |(_, doc)| doc)
}

/// Renders the exposition text.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let per_shard: Vec<serde_json::Map<String, serde_json::Value>> = s
        .shards
        .iter()
        .map(|st| match serde_json::to_value(st) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        })
        .collect();
    let names: Vec<String> = per_shard
        .first()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        if DROPS.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let gauge = GAUGES.contains(&name.as_str());
        let metric = if gauge {
            format!("shardhub_{name}")
        } else {
            format!("shardhub_{name}_total")
        };
        let _ = writeln!(out, "# HELP {metric} {}", help(&name));
        let _ = writeln!(
            out,
            "# TYPE {metric} {}",
            if gauge { "gauge" } else { "counter" }
        );
        for (i, m) in per_shard.iter().enumerate() {
            let v = m.get(&name).and_then(|v| v.as_u64()).unwrap_or(0);
            // A gauge decremented past zero by a race would wrap; report it as zero.
            let v = if gauge && v > i64::MAX as u64 { 0 } else { v };
            let _ = writeln!(out, "{metric}{{shard=\"{i}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP shardhub_bus_drops_total Routed messages a shard did not take, by reason: \
         its recipients did not get them and the sender was told."
    );
    let _ = writeln!(out, "# TYPE shardhub_bus_drops_total counter");
    for (i, m) in per_shard.iter().enumerate() {
        for (field, reason) in DROPS {
            let v = m.get(*field).and_then(|v| v.as_u64()).unwrap_or(0);
            let _ = writeln!(
                out,
                "shardhub_bus_drops_total{{shard=\"{i}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
    for (name, help, v) in [
        (
            "sessions",
            "Open sessions on the whole server.",
            s.sessions as f64,
        ),
        ("users", "Distinct users online.", s.users as f64),
        ("rooms", "Rooms that exist.", s.rooms as f64),
        (
            "uptime_seconds",
            "Seconds since the server started.",
            s.uptime_seconds,
        ),
    ] {
        let _ = writeln!(out, "# HELP shardhub_{name} {help}");
        let _ = writeln!(out, "# TYPE shardhub_{name} gauge");
        let _ = writeln!(out, "shardhub_{name} {v}");
    }
    for &(name, help, gauge, v) in &s.node {
        let kind = if gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# HELP shardhub_{name} {help}");
        let _ = writeln!(out, "# TYPE shardhub_{name} {kind}");
        let _ = writeln!(out, "shardhub_{name} {v}");
    }
    if let Some(((node, others), bus)) = &s.cluster {
        cluster(&mut out, node, others, bus);
    }
    histogram(
        &mut out,
        "shardhub_fanout_seconds",
        "Time from a reactor waking with a publish or broadcast to the flush of its frames.",
        &s.histograms.fanout,
    );
    histogram(
        &mut out,
        "shardhub_tick_seconds",
        "Duration of reactor iterations.",
        &s.histograms.tick,
    );
    histogram(
        &mut out,
        "shardhub_timer_lag_seconds",
        "How late connection timers (heartbeats, timeouts) fired past their deadlines.",
        &s.histograms.timer_lag,
    );
    out
}

/// The cluster's metrics: the nodes this one knows (itself included) with their sessions, and
/// the bus counters.
fn cluster(
    out: &mut String,
    node: &str,
    others: &[crate::cluster::view::NodeInfo],
    bus: &crate::cluster::BusCounters,
) {
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let _ = writeln!(
        out,
        "# HELP shardhub_cluster_nodes Nodes this node knows, itself included."
    );
    let _ = writeln!(out, "# TYPE shardhub_cluster_nodes gauge");
    let _ = writeln!(
        out,
        "shardhub_cluster_nodes{{node=\"{}\"}} {}",
        label(node),
        others.len() + 1
    );
    let _ = writeln!(
        out,
        "# HELP shardhub_cluster_node_sessions Sessions of each other node, as last heard."
    );
    let _ = writeln!(out, "# TYPE shardhub_cluster_node_sessions gauge");
    for n in others {
        let _ = writeln!(
            out,
            "shardhub_cluster_node_sessions{{node=\"{}\"}} {}",
            label(&n.name),
            n.sessions
        );
    }
    let _ = writeln!(
        out,
        "# HELP shardhub_bus_connected Whether the cluster bus is connected."
    );
    let _ = writeln!(out, "# TYPE shardhub_bus_connected gauge");
    let _ = writeln!(out, "shardhub_bus_connected {}", u8::from(bus.connected));
    for (name, help, v) in [
        (
            "published",
            "Envelopes published on the cluster bus.",
            bus.published,
        ),
        (
            "published_bytes",
            "Bytes published on the cluster bus.",
            bus.bytes_out,
        ),
        (
            "received",
            "Envelopes received from other nodes.",
            bus.received,
        ),
        (
            "queue_drops",
            "Envelopes refused: the queue to the bus thread was full.",
            bus.dropped,
        ),
        (
            "publish_errors",
            "Envelopes the bus client failed to publish.",
            bus.publish_errors,
        ),
        (
            "disconnects",
            "Times the bus connection was lost.",
            bus.disconnects,
        ),
        (
            "reconnects",
            "Times the bus connection came back.",
            bus.reconnects,
        ),
        (
            "history_errors",
            "Room history operations in Redis (publish, read, reset) that failed or timed out.",
            bus.history_errors,
        ),
    ] {
        let _ = writeln!(out, "# HELP shardhub_bus_{name}_total {help}");
        let _ = writeln!(out, "# TYPE shardhub_bus_{name}_total counter");
        let _ = writeln!(out, "shardhub_bus_{name}_total {v}");
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for &b in BUCKETS_US {
        let n = if h.is_empty() {
            0
        } else {
            h.count_between(0, b)
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", b as f64 / 1e6);
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum = if h.is_empty() {
        0.0
    } else {
        h.mean() * h.len() as f64 / 1e6
    };
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_gauges_and_histograms_render_as_exposition_text() {
        let mut h = Histograms::default();
        Histograms::record(&mut h.fanout, Duration::from_micros(40), 3);
        Histograms::record(&mut h.fanout, Duration::from_millis(3), 1);
        let a = Stats {
            connections: 2,
            deliveries: 7,
            inbox_full_drops: 4,
            ..Stats::default()
        };
        let text = render(&Snapshot {
            cluster: None,
            shards: vec![a, Stats::default()],
            sessions: 2,
            users: 1,
            rooms: 3,
            uptime_seconds: 1.5,
            histograms: &h,
            node: vec![("offline_messages", "Kept.", true, 5)],
        });
        for line in [
            "# TYPE shardhub_connections gauge",
            "shardhub_connections{shard=\"0\"} 2",
            "shardhub_connections{shard=\"1\"} 0",
            "# TYPE shardhub_deliveries_total counter",
            "shardhub_deliveries_total{shard=\"0\"} 7",
            "shardhub_rooms 3",
            "shardhub_bus_drops_total{shard=\"0\",reason=\"inbox_full\"} 4",
            "shardhub_bus_drops_total{shard=\"1\",reason=\"shard_gone\"} 0",
            "shardhub_uptime_seconds 1.5",
            "# TYPE shardhub_offline_messages gauge",
            "shardhub_offline_messages 5",
            "# TYPE shardhub_fanout_seconds histogram",
            "shardhub_fanout_seconds_bucket{le=\"0.00001\"} 0",
            "shardhub_fanout_seconds_bucket{le=\"0.00005\"} 3",
            "shardhub_fanout_seconds_bucket{le=\"0.0025\"} 3",
            "shardhub_fanout_seconds_bucket{le=\"0.005\"} 4",
            "shardhub_fanout_seconds_bucket{le=\"+Inf\"} 4",
            "shardhub_fanout_seconds_count 4",
            "shardhub_tick_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let v = l.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
    /// Every metric the Grafana dashboard and the alert rules in `deploy/` query is one this
    /// renderer writes (cluster mode included), so a renamed metric fails here, not on an
    /// operator's empty panel.
    #[test]
    fn the_deploy_dashboard_and_alerts_query_only_metrics_that_exist() {
        let h = Histograms::default();
        let node = crate::cluster::view::NodeInfo {
            name: "a".into(),
            tag: 1,
            sessions: 0,
            published: 0,
            last_seen_ms: 0,
        };
        let bus = crate::cluster::BusStats::default().snapshot();
        let store = crate::engine::offline::OfflineStore::new(
            crate::engine::offline::Limits::of(&crate::config::Config::default()),
            None,
            0,
        );
        let text = render(&Snapshot {
            cluster: Some((("a".into(), vec![node]), bus)),
            shards: vec![Stats::default()],
            sessions: 0,
            users: 0,
            rooms: 0,
            uptime_seconds: 0.0,
            histograms: &h,
            node: store.metrics(),
        });
        let rendered: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard = include_str!("../../deploy/grafana/shardhub.json");
        let panels: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let exprs = panels["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert!(exprs.len() > 20, "{} queries", exprs.len());
        let alerts = include_str!("../../deploy/prometheus/shardhub-alerts.yml");
        let mut queried = 0;
        for text in exprs.iter().map(String::as_str).chain([alerts]) {
            for (at, _) in text.match_indices("shardhub_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                assert!(rendered.contains(name.as_str()), "{name} is not a metric");
                queried += 1;
            }
        }
        assert!(queried > 40, "{queried} metric references");
    }
}
