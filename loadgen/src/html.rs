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
/// Width of the plotting area.
const PLOT_W: f64 = 648.0;
const H: f64 = 300.0;
const PAD_L: f64 = 64.0;
/// Room right of the plotting area for the last x label, before the legend.
const PAD_R: f64 = 36.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 40.0;
/// Height of one line of a chart's subtitle.
const SUBTITLE_ROW: f64 = 14.0;
/// Height of one legend entry.
const LEGEND_ROW: f64 = 16.0;
/// Plotted values spanning more than this ratio (max/min of the positive ones) get a
/// logarithmic y axis where one is allowed.
const LOG_SPAN: f64 = 100.0;

/// A named polyline, drawn in `COLORS[color]`, dashed or solid.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    color: usize,
    dashed: bool,
}

impl Series {
    fn new(name: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            color,
            dashed: false,
        }
    }
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

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v`.
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

/// A y axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum YScale {
    /// From 0 to `max`, ticked every `step`.
    Linear { max: f64, step: f64 },
    /// From 10^lo to 10^hi, ticked at every power of ten.
    Log { lo: i32, hi: i32 },
}

impl YScale {
    /// Logarithmic if `allow_log` and the positive values span more than [`LOG_SPAN`],
    /// else linear from 0 with 4 or fewer round steps.
    fn fit(values: impl Iterator<Item = f64>, allow_log: bool) -> YScale {
        let (mut min_pos, mut max, mut zero) = (f64::INFINITY, 0.0f64, false);
        for v in values.filter(|v| v.is_finite()) {
            max = max.max(v);
            if v > 0.0 {
                min_pos = min_pos.min(v);
            } else {
                zero = true;
            }
        }
        if allow_log && max > 0.0 && max / min_pos > LOG_SPAN {
            // Zeros sit on the lowest tick: one decade under the data, so that they do not
            // read as values of the lowest decade (a second with no delivery is not 10 ms).
            let lo = min_pos.log10().floor() as i32 - i32::from(zero);
            let hi = (max.log10().ceil() as i32).max(lo + 1);
            return YScale::Log { lo, hi };
        }
        if max <= 0.0 {
            return YScale::Linear {
                max: 1.0,
                step: 0.25,
            };
        }
        let step = nice_max(max / 4.0);
        YScale::Linear {
            max: (max / step).ceil() * step,
            step,
        }
    }

    /// Position of `y` from 0 (bottom) to 1 (top); on a log axis values at or below the
    /// lowest tick (0 included) sit on it.
    fn frac(&self, y: f64) -> f64 {
        match *self {
            YScale::Linear { max, .. } => y / max,
            YScale::Log { lo, hi } => {
                let l = if y > 0.0 { y.log10() } else { f64::from(lo) };
                (l.max(f64::from(lo)) - f64::from(lo)) / f64::from(hi - lo)
            }
        }
    }

    /// (value, label) of the ticks, bottom up.
    fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            YScale::Linear { max, step } => {
                // One suffix for the whole axis, so that labels line up: 50k, 100k, 150k.
                let (div, suffix) = if max >= 1e7 {
                    (1e6, "M")
                } else if max >= 1e4 {
                    (1e3, "k")
                } else {
                    (1.0, "")
                };
                let n = (max / step).round() as i64;
                (0..=n)
                    .map(|i| {
                        let v = step * i as f64;
                        let label = if i == 0 {
                            "0".to_string()
                        } else {
                            format!("{}{suffix}", trim_num(v / div))
                        };
                        (v, label)
                    })
                    .collect()
            }
            YScale::Log { lo, hi } => (lo..=hi)
                .map(|k| {
                    let v = 10f64.powi(k);
                    let label = if k >= 0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.*}", (-k) as usize)
                    };
                    (v, label)
                })
                .collect(),
        }
    }
}

/// `v` with up to 3 decimals and no trailing zeros.
fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// What a chart shows besides its series.
struct ChartSpec<'a> {
    title: &'a str,
    /// Lines under the title, in grey.
    subtitle: &'a [&'a str],
    y_label: &'a str,
    /// Whether the y axis may be logarithmic (see [`YScale::fit`]).
    allow_log: bool,
    x_range: (f64, f64),
    /// (x, label).
    x_ticks: &'a [(f64, String)],
}

fn dash_attr(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    }
}

/// An SVG line chart with its legend on the right.
fn chart(spec: &ChartSpec<'_>, series: &[Series]) -> String {
    let scale = YScale::fit(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        spec.allow_log,
    );
    let log = matches!(scale, YScale::Log { .. });
    let pad_t = PAD_T + SUBTITLE_ROW * spec.subtitle.len() as f64;
    let h = H.max(pad_t + LEGEND_ROW * series.len() as f64 + PAD_B);
    // Sans-serif at 11px is about 6.2px a character.
    let legend_w = series
        .iter()
        .map(|s| s.name.chars().count() as f64 * 6.2 + 32.0)
        .fold(100.0, f64::max);
    let legend_x = PAD_L + PLOT_W + PAD_R;
    let subtitle_w = spec
        .subtitle
        .iter()
        .map(|l| PAD_L + l.chars().count() as f64 * 6.2)
        .fold(0.0, f64::max);
    let w = (legend_x + legend_w).max(subtitle_w).ceil();
    let (x0, x1) = (
        spec.x_range.0,
        if spec.x_range.1 > spec.x_range.0 {
            spec.x_range.1
        } else {
            spec.x_range.0 + 1.0
        },
    );
    let px = |x: f64| PAD_L + (x - x0) / (x1 - x0) * PLOT_W;
    let py = |y: f64| h - PAD_B - scale.frac(y) * (h - pad_t - PAD_B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        PAD_L,
        esc(spec.title)
    );
    for (i, line) in spec.subtitle.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
            PAD_L,
            31.0 + SUBTITLE_ROW * i as f64,
            esc(line)
        );
    }
    for (y, label) in scale.ticks() {
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            PAD_L + PLOT_W,
            PAD_L - 4.0,
            py(y) + 4.0,
            esc(&label),
            py = py(y)
        );
    }
    for (x, label) in spec.x_ticks {
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{pad_t}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - PAD_B,
            h - PAD_B + 14.0,
            esc(label),
            px = px(*x)
        );
    }
    let y_label = match spec.y_label.strip_suffix(')') {
        _ if !log => spec.y_label.to_string(),
        Some(open) => format!("{open}, log scale)"),
        None => format!("{} (log scale)", spec.y_label),
    };
    let mid = (pad_t + h - PAD_B) / 2.0;
    let _ = write!(
        s,
        r#"<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle">{}</text>"#,
        esc(&y_label)
    );
    for se in series {
        let color = COLORS[se.color % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{} points="{}"/>"#,
            dash_attr(se.dashed),
            pts.join(" ")
        );
    }
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[se.color % COLORS.len()];
        let ly = pad_t + 6.0 + LEGEND_ROW * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{legend_x}" x2="{}" y1="{ly:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2.5"{}/><text x="{}" y="{:.1}">{}</text>"#,
            legend_x + 22.0,
            dash_attr(se.dashed),
            legend_x + 28.0,
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
        &ChartSpec {
            title,
            subtitle: &[],
            y_label: "latency (ms)",
            allow_log: true,
            x_range: (0.0, 6.0),
            x_ticks: &percentile_ticks(),
        },
        &series,
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
    let mut series = vec![Series::new(name, 0, percentile_points(&h))];
    if s.latency.is_some() {
        series.push(Series::new(
            "handshake",
            1,
            percentile_points(&s.handshake.hist()?),
        ));
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
    fn log_axis_only_past_two_decades() {
        let fast_slow = YScale::fit([5.0, 5000.0].into_iter(), true);
        assert_eq!(fast_slow, YScale::Log { lo: 0, hi: 4 });
        let labels: Vec<String> = fast_slow.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["1", "10", "100", "1000", "10000"]);
        let sub_ms = YScale::fit([0.5, 5000.0].into_iter(), true);
        assert_eq!(sub_ms.ticks()[0].1, "0.1");
        assert_eq!(sub_ms.frac(0.1), 0.0);
        assert!((sub_ms.frac(5000.0) - (5000f64.log10() + 1.0) / 5.0).abs() < 1e-9);
        // Within two decades, or where a log axis is not wanted: linear from 0.
        assert!(matches!(
            YScale::fit([5.0, 400.0].into_iter(), true),
            YScale::Linear { .. }
        ));
        assert!(matches!(
            YScale::fit([5.0, 5000.0].into_iter(), false),
            YScale::Linear { .. }
        ));
        assert!(matches!(
            YScale::fit([0.0, 0.0].into_iter(), true),
            YScale::Linear { .. }
        ));
    }

    #[test]
    fn zero_on_log_axis_sits_on_lowest_tick() {
        let s = YScale::fit([0.0, 10.5, 5000.0].into_iter(), true);
        // One decade under the data, so a clamped 0 does not look like 10 ms.
        assert_eq!(s, YScale::Log { lo: 0, hi: 4 });
        assert_eq!(s.frac(0.0), 0.0);
        assert!(s.frac(10.5) > 0.2);
    }

    #[test]
    fn linear_ticks_are_round() {
        let labels = |v: &[f64]| -> Vec<String> {
            YScale::fit(v.iter().copied(), false)
                .ticks()
                .into_iter()
                .map(|t| t.1)
                .collect()
        };
        assert_eq!(
            labels(&[200.0, 200_000.0]),
            ["0", "50k", "100k", "150k", "200k"]
        );
        assert_eq!(labels(&[1001.0]), ["0", "500", "1000", "1500"]);
        assert_eq!(labels(&[0.9]), ["0", "0.25", "0.5", "0.75", "1"]);
        assert_eq!(labels(&[]), ["0", "0.25", "0.5", "0.75", "1"]);
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
