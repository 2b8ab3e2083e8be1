//! Self-contained HTML reports (inline SVG, inline CSS, no script, no external resource): the
//! latency-by-percentile plot on HdrHistogram's log percentile axis (x = 1/(1-p)), throughput and
//! connections over time, and the summary table; and the same for several runs side by side,
//! with a markdown table of ratios to the first run.

use std::fmt::Write as _;

use crate::error::RunError;
use crate::hist;
use crate::report::RunSummary;

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 760.0;
const H: f64 = 300.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 48.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 40.0;

/// A named polyline.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Points (log10(1/(1-p)), ms) of a latency histogram, up to 99.9999%.
fn percentile_points(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            6.0
        } else {
            (1.0 / (1.0 - q)).log10().min(6.0)
        };
        pts.push((x, v.value_iterated_to() as f64 / 1_000.0));
    }
    pts
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// An SVG line chart. `x_ticks` are (x, label); y runs from 0 to a rounded maximum.
fn chart(
    title: &str,
    y_label: &str,
    series: &[Series],
    x_range: (f64, f64),
    x_ticks: &[(f64, String)],
) -> String {
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let (x0, x1) = (
        x_range.0,
        if x_range.1 > x_range.0 {
            x_range.1
        } else {
            x_range.0 + 1.0
        },
    );
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let py = |y: f64| H - PAD_B - y / ymax * (H - PAD_T - PAD_B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        PAD_L,
        esc(title)
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - PAD_R,
            PAD_L - 4.0,
            py(y) + 4.0,
            fmt_num(y),
            py = py(y)
        );
    }
    for (x, label) in x_ticks {
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{PAD_T}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - PAD_B,
            H - PAD_B + 14.0,
            esc(label),
            px = px(*x)
        );
    }
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = PAD_T + 14.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{:.1}" width="10" height="3" fill="{color}"/><text x="{}" y="{:.1}">{}</text>"#,
            PAD_L + 10.0,
            ly,
            PAD_L + 24.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

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

fn percentile_ticks() -> Vec<(f64, String)> {
    ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.to_string()))
        .collect()
}

fn percentile_chart(title: &str, series: Vec<Series>) -> String {
    chart(
        title,
        "latency (ms)",
        &series,
        (0.0, 6.0),
        &percentile_ticks(),
    )
}

fn time_ticks(t0: f64, t1: f64) -> Vec<(f64, String)> {
    let span = (t1 - t0).max(1.0);
    let step = nice_max(span / 8.0).max(1.0);
    let mut v = Vec::new();
    let mut t = (t0 / step).ceil() * step;
    while t <= t1 {
        v.push((t, format!("{t:.0}s")));
        t += step;
    }
    v
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
    let mut rows = vec![
        ("scenario".into(), s.scenario.clone()),
        ("url".into(), s.url.clone()),
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
    ];
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
        lat(
            if matches!(s.scenario.as_str(), "echo" | "direct") {
                "round trip"
            } else {
                "delivery"
            },
            l,
        );
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
    let mut series = vec![Series {
        name: name.clone(),
        points: percentile_points(&h),
    }];
    if s.latency.is_some() {
        series.push(Series {
            name: "handshake".into(),
            points: percentile_points(&s.handshake.hist()?),
        });
    }
    b.push_str(&percentile_chart("Latency by percentile", series));
    b.push_str(&timeline_charts(
        &[s],
        &[s.label.clone().unwrap_or_else(|| s.scenario.clone())],
    ));
    Ok(page(&title, &b))
}

fn timeline_charts(runs: &[&RunSummary], names: &[String]) -> String {
    let t1 = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.t_s as f64))
        .fold(0.0, f64::max);
    let ticks = time_ticks(0.0, t1);
    let mut thr = Vec::new();
    let mut conns = Vec::new();
    let mut p99 = Vec::new();
    for (r, n) in runs.iter().zip(names) {
        thr.push(Series {
            name: format!("{n} received/s"),
            points: r
                .timeline
                .iter()
                .map(|s| (s.t_s as f64, s.received as f64))
                .collect(),
        });
        if r.traffic.is_some() {
            thr.push(Series {
                name: format!("{n} sent/s"),
                points: r
                    .timeline
                    .iter()
                    .map(|s| (s.t_s as f64, s.sent as f64))
                    .collect(),
            });
        }
        conns.push(Series {
            name: n.clone(),
            points: r
                .timeline
                .iter()
                .map(|s| (s.t_s as f64, s.conns as f64))
                .collect(),
        });
        p99.push(Series {
            name: n.clone(),
            points: r
                .timeline
                .iter()
                .map(|s| (s.t_s as f64, s.p99_ms))
                .collect(),
        });
    }
    let mut out = String::new();
    out.push_str(&chart(
        "Throughput over time (messages/s)",
        "messages/s",
        &thr,
        (0.0, t1),
        &ticks,
    ));
    out.push_str(&chart(
        "Open connections over time",
        "connections",
        &conns,
        (0.0, t1),
        &ticks,
    ));
    out.push_str(&chart(
        "p99 latency per second (ms)",
        "ms",
        &p99,
        (0.0, t1),
        &ticks,
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
    for (r, n) in runs.iter().zip(names) {
        let (_, h) = main_latency(r)?;
        series.push(Series {
            name: n.clone(),
            points: percentile_points(&h),
        });
    }
    b.push_str(&percentile_chart("Latency by percentile", series));
    let refs: Vec<&RunSummary> = runs.iter().collect();
    b.push_str(&timeline_charts(&refs, names));
    Ok(page("shardhub-loadgen comparison", &b))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let html = report(&run(1)).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg") && html.contains("99.9%"));
        assert!(html.contains("a&lt;b"), "labels are escaped");
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
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
