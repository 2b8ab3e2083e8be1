//! Self-contained HTML reports (inline SVG, inline CSS, no script, no external resource): the
//! latency-by-percentile plot on HdrHistogram's log percentile axis (x = 1/(1-p)), throughput and
//! connections over time, and the summary table; and the same for several runs side by side,
//! with a markdown table of ratios to the first run. The plots are `chart`'s; this
//! module decides what goes on each page.

use std::fmt::Write as _;

use crate::chart::{
    chart, esc, percentile_chart, percentile_points, time_ticks, ChartSpec, Series,
};
use crate::error::RunError;
use crate::hist;
use crate::report::RunSummary;

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn main_latency(s: &RunSummary) -> Result<(String, hdrhistogram::Histogram<u64>), RunError> {
    Ok(match &s.latency {
        Some(l) => (
            if matches!(s.scenario.as_str(), "echo" | "direct") {
                "round trip"
            } else {
                "delivery"
            }
            .to_string(),
            l.hist()?,
        ),
        None => ("handshake".to_string(), s.handshake.hist()?),
    })
}

fn summary_rows(s: &RunSummary) -> Vec<(String, String)> {
    let mut rows = vec![("scenario".into(), s.scenario.clone())];
    if s.urls.len() > 1 {
        rows.push(("urls".into(), s.urls.join(", ")));
        if let Some(p) = &s.publisher_url {
            rows.push(("publishers' url".into(), p.clone()));
        }
    } else {
        rows.push(("url".into(), s.url.clone()));
    }
    rows.extend([
        ("adapter".into(), s.adapter.clone()),
        (
            "connections established / target".into(),
            format!("{} / {}", s.connections.established, s.connections.target),
        ),
        (
            "connections failed".into(),
            s.connections.failed.to_string(),
        ),
        (
            "connect rate achieved (/s)".into(),
            format!("{:.1}", s.connections.connect_rate_per_s),
        ),
    ]);
    for (k, v) in &s.connections.failures {
        rows.push((format!("failed: {k}"), v.to_string()));
    }
    let mut lat = |name: &str, l: &hist::Latency| {
        rows.push((
            format!("{name} latency p50 / p90 / p99 / p99.9 / max (ms)"),
            format!(
                "{:.3} / {:.3} / {:.3} / {:.3} / {:.3} (n={})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            ),
        ));
    };
    lat("handshake", &s.handshake);
    if let Some(l) = &s.latency {
        let what = if matches!(s.scenario.as_str(), "echo" | "direct") {
            "round trip"
        } else {
            "delivery"
        };
        lat(what, l);
        for (url, l) in s.latency_by_url_in_order() {
            lat(&format!("{what} @ {url}"), l);
        }
    }
    // What a scenario measures besides messages (recover: ack, replayed, done_since_storm).
    for (name, l) in &s.phases {
        lat(&format!("phase {name}"), l);
    }
    if let Some(t) = &s.traffic {
        rows.push((
            "sent (/s)".into(),
            format!("{} ({:.1}/s)", t.sent, t.sent_per_s),
        ));
        rows.push((
            "received (/s)".into(),
            format!("{} ({:.1}/s)", t.received, t.received_per_s),
        ));
        rows.push((
            "expected / lost / duplicates".into(),
            format!("{} / {} / {}", t.expected, t.lost, t.duplicates),
        ));
    }
    rows
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}}th{{background:#f4f4f4}}\
         svg{{display:block;margin:12px 0;border:1px solid #eee}}</style></head><body>\n{}\n</body></html>\n",
        esc(title),
        body
    )
}

/// The HTML report of one run.
pub fn report(s: &RunSummary) -> Result<String, RunError> {
    let mut b = String::new();
    let title = format!(
        "shardhub-loadgen {}{}",
        s.scenario,
        s.label
            .as_deref()
            .map(|l| format!(" — {l}"))
            .unwrap_or_default()
    );
    let _ = write!(b, "<h1>{}</h1>", esc(&title));
    b.push_str("<table>");
    for (k, v) in summary_rows(s) {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
    }
    b.push_str("</table>");
    let (name, h) = main_latency(s)?;
    let mut series = vec![Series::new(name.clone(), 0, percentile_points(&h))];
    if s.latency.is_some() {
        series.push(Series::new(
            "handshake",
            1,
            percentile_points(&s.handshake.hist()?),
        ));
    }
    // Same-node and cross-node delivery side by side, in colours after the first two.
    for (i, (url, l)) in s.latency_by_url_in_order().into_iter().enumerate() {
        let points = percentile_points(&l.hist()?);
        series.push(Series::new(format!("{name} @ {url}"), 2 + i, points));
    }
    b.push_str(&percentile_chart("Latency by percentile", series));
    b.push_str(&timeline_charts(
        &[s],
        &[s.label.clone().unwrap_or_else(|| s.scenario.clone())],
    ));
    Ok(page(&title, &b))
}

/// What the throughput plot's two line styles mean, if any run has a sent/s line.
fn throughput_caption(runs: &[&RunSummary]) -> &'static [&'static str] {
    let with_traffic: Vec<&&RunSummary> = runs.iter().filter(|r| r.traffic.is_some()).collect();
    if with_traffic.is_empty() {
        &[]
    } else if with_traffic
        .iter()
        .all(|r| matches!(r.scenario.as_str(), "echo" | "direct"))
    {
        &[
            "solid: received/s, dashed: sent/s, one colour per run.",
            "sent/s is requests, received/s is responses.",
        ]
    } else {
        &[
            "solid: received/s, dashed: sent/s, one colour per run.",
            "sent/s is publishes, received/s is deliveries: a fan-out delivers each publish to \
             every subscriber, so sent/s can sit on the axis.",
        ]
    }
}

/// Throughput, connections and p99 over time; run `i` is drawn in `COLORS[i]` in every plot.
fn timeline_charts(runs: &[&RunSummary], names: &[String]) -> String {
    let t1 = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.t_s as f64))
        .fold(0.0, f64::max);
    let ticks = time_ticks(0.0, t1);
    let mut thr = Vec::new();
    let mut conns = Vec::new();
    let mut p99 = Vec::new();
    for (i, (r, n)) in runs.iter().zip(names).enumerate() {
        let line = |f: fn(&crate::report::Sample) -> f64| -> Vec<(f64, f64)> {
            r.timeline.iter().map(|s| (s.t_s as f64, f(s))).collect()
        };
        thr.push(Series::new(
            format!("{n} received/s"),
            i,
            line(|s| s.received as f64),
        ));
        if r.traffic.is_some() {
            thr.push(Series {
                dashed: true,
                ..Series::new(format!("{n} sent/s"), i, line(|s| s.sent as f64))
            });
        }
        conns.push(Series::new(n.clone(), i, line(|s| s.conns as f64)));
        p99.push(Series::new(n.clone(), i, line(|s| s.p99_ms)));
    }
    let mut out = String::new();
    out.push_str(&chart(
        &ChartSpec {
            title: "Throughput over time (messages/s)",
            subtitle: throughput_caption(runs),
            y_label: "messages/s",
            allow_log: false,
            x_range: (0.0, t1),
            x_ticks: &ticks,
        },
        &thr,
    ));
    out.push_str(&chart(
        &ChartSpec {
            title: "Open connections over time",
            subtitle: &[],
            y_label: "connections",
            allow_log: false,
            x_range: (0.0, t1),
            x_ticks: &ticks,
        },
        &conns,
    ));
    out.push_str(&chart(
        &ChartSpec {
            title: "p99 latency per second (ms)",
            subtitle: &[],
            y_label: "ms",
            allow_log: true,
            x_range: (0.0, t1),
            x_ticks: &ticks,
        },
        &p99,
    ));
    out
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 {
        "–".into()
    } else {
        format!("{:.2}x", b / a)
    }
}

struct Row {
    name: &'static str,
    get: fn(&RunSummary) -> f64,
}

const ROWS: [Row; 9] = [
    Row {
        name: "p50 ms",
        get: |s| s.latency.as_ref().unwrap_or(&s.handshake).p50_ms,
    },
    Row {
        name: "p90 ms",
        get: |s| s.latency.as_ref().unwrap_or(&s.handshake).p90_ms,
    },
    Row {
        name: "p99 ms",
        get: |s| s.latency.as_ref().unwrap_or(&s.handshake).p99_ms,
    },
    Row {
        name: "p99.9 ms",
        get: |s| s.latency.as_ref().unwrap_or(&s.handshake).p999_ms,
    },
    Row {
        name: "max ms",
        get: |s| s.latency.as_ref().unwrap_or(&s.handshake).max_ms,
    },
    Row {
        name: "received/s",
        get: |s| s.traffic.as_ref().map_or(0.0, |t| t.received_per_s),
    },
    Row {
        name: "lost",
        get: |s| s.traffic.as_ref().map_or(0.0, |t| t.lost as f64),
    },
    Row {
        name: "connections",
        get: |s| s.connections.established as f64,
    },
    Row {
        name: "connect rate/s",
        get: |s| s.connections.connect_rate_per_s,
    },
];

/// A markdown table comparing runs (ratios to the first).
pub fn markdown_table(runs: &[RunSummary], names: &[String]) -> String {
    let mut s = String::new();
    let _ = write!(s, "| metric |");
    for (i, n) in names.iter().enumerate() {
        let _ = write!(s, " {} |", n);
        if i > 0 {
            let _ = write!(s, " ratio |");
        }
    }
    s.push('\n');
    let _ = write!(s, "|---|");
    for i in 0..names.len() {
        s.push_str("---:|");
        if i > 0 {
            s.push_str("---:|");
        }
    }
    s.push('\n');
    for row in &ROWS {
        let _ = write!(s, "| {} |", row.name);
        let base = runs.first().map_or(0.0, |r| (row.get)(r));
        for (i, r) in runs.iter().enumerate() {
            let v = (row.get)(r);
            let _ = write!(s, " {} |", fmt_num(v));
            if i > 0 {
                let _ = write!(s, " {} |", ratio(base, v));
            }
        }
        s.push('\n');
    }
    s
}

/// The HTML comparison of several runs.
pub fn compare(runs: &[RunSummary], names: &[String]) -> Result<String, RunError> {
    let mut b = String::new();
    b.push_str("<h1>shardhub-loadgen comparison</h1><table><tr><th>metric</th>");
    for (i, n) in names.iter().enumerate() {
        let _ = write!(b, "<th>{}</th>", esc(n));
        if i > 0 {
            b.push_str("<th>ratio</th>");
        }
    }
    b.push_str("</tr>");
    for row in &ROWS {
        let _ = write!(b, "<tr><th>{}</th>", row.name);
        let base = runs.first().map_or(0.0, |r| (row.get)(r));
        for (i, r) in runs.iter().enumerate() {
            let v = (row.get)(r);
            let _ = write!(b, "<td>{}</td>", fmt_num(v));
            if i > 0 {
                let _ = write!(b, "<td>{}</td>", ratio(base, v));
            }
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
    let mut series = Vec::new();
    for (i, (r, n)) in runs.iter().zip(names).enumerate() {
        let (_, h) = main_latency(r)?;
        series.push(Series::new(n.clone(), i, percentile_points(&h)));
    }
    b.push_str(&percentile_chart("Latency by percentile", series));
    let refs: Vec<&RunSummary> = runs.iter().collect();
    b.push_str(&timeline_charts(&refs, names));
    Ok(page("shardhub-loadgen comparison", &b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::COLORS;
    use crate::hist::Latency;
    use crate::report::Sample;

    fn run(scale: u64) -> RunSummary {
        let mut h = hist::new_hist();
        for v in 1..=1000u64 {
            h.record(v * scale).unwrap();
        }
        RunSummary {
            scenario: "echo".into(),
            label: Some("a<b".into()),
            handshake: Latency::from_hist(&h),
            latency: Some(Latency::from_hist(&h)),
            timeline: (0..5)
                .map(|t| Sample {
                    t_s: t,
                    conns: 10,
                    received: 100 * t,
                    ..Sample::default()
                })
                .collect(),
            ..RunSummary::default()
        }
    }

    #[test]
    fn report_is_self_contained() {
        let mut two = run(1);
        two.urls = vec!["ws://127.0.0.1:1/ws".into(), "ws://127.0.0.1:2/ws".into()];
        two.latency_by_url = (two.urls.iter())
            .map(|u| (u.clone(), two.handshake.clone()))
            .collect();
        let html = report(&two).unwrap();
        assert!(html.contains("round trip @ ws://127.0.0.1:2/ws latency p50"));
        let lat = svgs(&html)[0];
        assert_eq!(
            lat.matches("<polyline").count(),
            4,
            "main, handshake, two URLs"
        );
        let html = report(&run(1)).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg") && html.contains("99.9%"));
        assert!(html.contains("a&lt;b"), "labels are escaped");
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
        let mut storm = run(1);
        storm.phases = [("ack".to_string(), storm.handshake.clone())].into();
        assert!(report(&storm).unwrap().contains("phase ack latency p50"));
    }

    /// Values of `attr="..."` in `svg`, in order.
    fn attrs<'a>(svg: &'a str, attr: &str) -> Vec<&'a str> {
        let pat = format!(" {attr}=\"");
        svg.match_indices(&pat)
            .map(|(i, _)| {
                let rest = &svg[i + pat.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    fn svgs(html: &str) -> Vec<&str> {
        html.split("<svg").skip(1).collect()
    }

    #[test]
    fn one_colour_per_run_sent_dashed() {
        let mut fast = run(1);
        let mut slow = run(1000);
        for r in [&mut fast, &mut slow] {
            r.scenario = "fanout".into();
            r.traffic = Some(crate::report::Traffic::default());
            for s in &mut r.timeline {
                s.sent = 2;
                s.p99_ms = 1.0 + s.t_s as f64;
            }
        }
        slow.timeline.iter_mut().for_each(|s| s.p99_ms *= 1000.0);
        let names = vec!["fast".to_string(), "slow".to_string()];
        let html = compare(&[fast, slow], &names).unwrap();
        let svgs = svgs(&html);
        assert_eq!(svgs.len(), 4);
        let (lat, thr, conns, p99) = (svgs[0], svgs[1], svgs[2], svgs[3]);
        assert!(lat.contains("latency (ms, log scale)"), "1 ms next to 1 s");
        assert!(p99.contains("ms (log scale)"));
        assert!(!thr.contains("log scale") && !conns.contains("log scale"));
        assert!(thr.contains("sent/s is publishes, received/s is deliveries"));
        // Polylines, then legend lines: fast received, fast sent, slow received, slow sent.
        let strokes = attrs(thr, "stroke");
        let series: Vec<&str> = strokes
            .iter()
            .copied()
            .filter(|c| COLORS.contains(c))
            .collect();
        let (a, b) = (COLORS[0], COLORS[1]);
        assert_eq!(series, [a, a, b, b, a, a, b, b]);
        assert_eq!(thr.matches("stroke-dasharray").count(), 4);
        let legend: Vec<&str> = thr
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').map(|(_, r)| r.split('<').next().unwrap()))
            .filter(|t| t.ends_with(" received/s") || t.ends_with(" sent/s"))
            .collect();
        assert_eq!(
            legend,
            [
                "fast received/s",
                "fast sent/s",
                "slow received/s",
                "slow sent/s"
            ]
        );
        for svg in [lat, conns, p99] {
            let used: Vec<&str> = attrs(svg, "stroke")
                .into_iter()
                .filter(|c| COLORS.contains(c))
                .collect();
            assert_eq!(used, [a, b, a, b], "same colours in every plot");
        }
    }

    #[test]
    fn echo_caption_says_requests() {
        let mut r = run(1);
        r.traffic = Some(crate::report::Traffic::default());
        let html = report(&r).unwrap();
        assert!(html.contains("sent/s is requests, received/s is responses"));
        assert!(
            !report(&run(1)).unwrap().contains("dashed: sent/s"),
            "no sent/s line"
        );
    }

    #[test]
    fn compare_ratios() {
        let runs = vec![run(1), run(2)];
        let names = vec!["base".to_string(), "new".to_string()];
        let md = markdown_table(&runs, &names);
        assert!(md.starts_with("| metric | base | new | ratio |"));
        let p99 = md.lines().find(|l| l.starts_with("| p99 ms")).unwrap();
        assert!(p99.ends_with("| 2.00x |"), "{p99}");
        assert!(compare(&runs, &names).unwrap().contains("<polyline"));
    }
}
