//! The human summary of a run, printed on stdout: the plan, connections, latency lines (with a
//! table by URL when the run had several), traffic, losses by room and counters.

use std::fmt::Write as _;

use crate::hist::Latency;

use super::RunSummary;

impl RunSummary {
    /// The human summary printed on stdout.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let label = self
            .label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "shardhub-loadgen {}{} -> {} ({} adapter)",
            self.scenario,
            label,
            self.targets_text(),
            self.adapter
        );
        let p = &self.params;
        let what = match self.scenario.as_str() {
            "connect" => format!(
                "conns={} connect_rate={}/s hold={}s",
                p.conns, p.connect_rate, p.duration_s
            ),
            "echo" | "direct" if p.rate <= 0.0 => format!(
                "conns={} closed loop, payload={}B duration={}s",
                p.conns, p.payload, p.duration_s
            ),
            "echo" | "direct" => format!(
                "conns={} rate={}/s payload={}B duration={}s",
                p.conns, p.rate, p.payload, p.duration_s
            ),
            "recover" => match &p.storm {
                Some(st) => format!(
                    "members={} missed={} offline={}s reconnect_rate={}/s {} {} live_rate={}/s duration<={}s",
                    p.conns,
                    st.missed,
                    st.offline.as_secs_f64(),
                    st.reconnect_rate,
                    if st.recover { "recover" } else { "plain rejoin" },
                    if st.move_node { "next-url" } else { "same-url" },
                    p.rate,
                    p.duration_s
                ),
                None => format!("members={}", p.conns),
            },
            _ => format!(
                "subscribers={} rooms={} publishers={} rate={}/s payload={}B duration={}s",
                p.conns, p.rooms, p.publishers, p.rate, p.payload, p.duration_s
            ),
        };
        let churn = if self.scenario == "churn" {
            format!(" churn={}/s life={}s", p.churn_rate, p.churn_life_s)
        } else {
            String::new()
        };
        let sources = if p.sources == 0 {
            "kernel".to_string()
        } else {
            p.sources.to_string()
        };
        let _ = writeln!(
            s,
            "  plan: {what}{churn} threads={} procs={} sources={sources}",
            p.threads, p.procs
        );
        let c = &self.connections;
        let _ = writeln!(
            s,
            "connections: {} established of {} targeted ({} attempted, {} failed), {:.0}/s achieved, {} open at end",
            c.established, c.target, c.attempted, c.failed, c.connect_rate_per_s, c.open_at_end
        );
        if let Some(n) = self
            .traffic
            .as_ref()
            .and_then(|t| t.counters.get("churn_started"))
        {
            let _ = writeln!(
                s,
                "  (of which {n} churn connections; the connect rate is the setup ramp's)"
            );
        }
        for (k, v) in &c.failures {
            let _ = writeln!(s, "  failed {k}: {v}");
        }
        let _ = writeln!(s, "{}", latency_line("handshake latency", &self.handshake));
        if let Some(l) = &self.latency {
            let what = if matches!(self.scenario.as_str(), "echo" | "direct") {
                "round trip latency"
            } else {
                "delivery latency"
            };
            let _ = writeln!(s, "{}", latency_line(what, l));
            s.push_str(&self.by_url_table(what));
        }
        for (name, l) in &self.phases {
            let _ = writeln!(s, "{}", latency_line(&phase_title(name), l));
        }
        if let Some(l) = &self.send_lag {
            let _ = writeln!(
                s,
                "{}",
                latency_line("send lag (generator's own lateness)", l)
            );
        }
        if let Some(t) = &self.traffic {
            let _ = writeln!(
                s,
                "traffic over {:.1}s: sent {} ({:.0}/s), received {} ({:.0}/s), expected {}, lost {}, duplicates {}, skipped {}",
                self.measured_s, t.sent, t.sent_per_s, t.received, t.received_per_s, t.expected, t.lost, t.duplicates, t.skipped
            );
            let bad: Vec<_> = t
                .rooms
                .iter()
                .enumerate()
                .filter(|(_, r)| r.lost() > 0 || r.duplicates > 0)
                .collect();
            for (i, r) in bad.iter().take(10) {
                let _ = writeln!(
                    s,
                    "  room-{i}: members {} published {} expected {} lost {} duplicates {}",
                    r.members,
                    r.published,
                    r.expected(),
                    r.lost(),
                    r.duplicates
                );
            }
            if bad.len() > 10 {
                let _ = writeln!(
                    s,
                    "  ... {} more rooms with losses or duplicates",
                    bad.len() - 10
                );
            }
            for (k, v) in &t.counters {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        s
    }

    /// Where the run went: its URL, or its URLs and the publishers' one.
    fn targets_text(&self) -> String {
        if self.urls.len() <= 1 {
            return self.url.clone();
        }
        let mut t = self.urls.join(", ");
        if let Some(p) = &self.publisher_url {
            let _ = write!(t, "; publishers on {p}");
        }
        t
    }

    /// The `latency_by_url` table, rows in `urls` order, the publishers' URL marked (same-node
    /// delivery there, cross-node elsewhere); empty for a run of one URL.
    fn by_url_table(&self, what: &str) -> String {
        let mut s = String::new();
        if self.latency_by_url.is_empty() {
            return s;
        }
        let rows = self.latency_by_url_in_order();
        let publishers = self.publisher_url.as_ref();
        let by = match self.scenario.as_str() {
            "echo" | "direct" => "requester",
            "connect" => "connection",
            _ => "subscriber",
        };
        let note = if rows.iter().any(|(u, _)| Some(*u) == publishers) {
            "  (* the publishers' URL: same-node delivery)"
        } else {
            ""
        };
        let _ = writeln!(s, "{what} by {by} URL (ms):{note}");
        let w = rows.iter().map(|(u, _)| u.len()).max().unwrap_or(0).max(3);
        let _ = writeln!(
            s,
            "    {:<w$}  {:>9} {:>9} {:>9} {:>9} {:>9}",
            "url", "n", "p50", "p90", "p99", "max"
        );
        for (u, l) in rows {
            let mark = if publishers == Some(u) { "*" } else { " " };
            let _ = writeln!(
                s,
                "  {mark} {u:<w$}  {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            );
        }
        s
    }
}

/// How a named phase reads in the summary.
fn phase_title(name: &str) -> String {
    match name {
        "ack" => "reconnect to join ack".into(),
        "replayed" => "reconnect to last missed message".into(),
        "done_since_storm" => "storm start to client done".into(),
        other => other.replace('_', " "),
    }
}

fn latency_line(what: &str, l: &Latency) -> String {
    format!(
        "{what} (ms, n={}): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    )
}
