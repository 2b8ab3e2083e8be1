//! SVG line charts for the HTML reports, drawn by hand (no charting crate): axes with round
//! ticks, a logarithmic y axis when the values span more than two decades (latency: 1 ms beside
//! 1 s), HdrHistogram's log percentile x axis (x = log10(1/(1-p))), one colour per run, a legend
//! beside the plot, dashed or solid lines. Output is plain SVG text with no script or external
//! resource; [`esc`] escapes every string that goes into it.

use std::fmt::Write as _;

/// One colour per run (or per series of a one-run chart), in order.
pub(crate) const COLORS: [&str; 8] = [
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
pub(crate) struct Series {
    /// Legend text.
    pub(crate) name: String,
    /// (x, y) in data units, drawn in order.
    pub(crate) points: Vec<(f64, f64)>,
    /// Index into [`COLORS`] (wrapping): one per run, the same in every chart of a page.
    pub(crate) color: usize,
    /// Dashed (sent/s) or solid.
    pub(crate) dashed: bool,
}

impl Series {
    /// A solid line.
    pub(crate) fn new(name: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            color,
            dashed: false,
        }
    }
}

/// `s` escaped for HTML and SVG text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
pub(crate) struct ChartSpec<'a> {
    /// Bold, above the plot.
    pub(crate) title: &'a str,
    /// Lines under the title, in grey.
    pub(crate) subtitle: &'a [&'a str],
    /// Beside the y axis; ", log scale" is added when the axis is logarithmic.
    pub(crate) y_label: &'a str,
    /// Whether the y axis may be logarithmic (see [`YScale::fit`]).
    pub(crate) allow_log: bool,
    /// The x values at the left and right edges of the plot.
    pub(crate) x_range: (f64, f64),
    /// (x, label).
    pub(crate) x_ticks: &'a [(f64, String)],
}

fn dash_attr(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    }
}

/// An SVG line chart with its legend on the right.
pub(crate) fn chart(spec: &ChartSpec<'_>, series: &[Series]) -> String {
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

/// Points (log10(1/(1-p)), ms) of a latency histogram, up to 99.9999%.
pub(crate) fn percentile_points(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
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

/// The percentile axis's ticks: 0%, 90%, 99%, ... one per decade of 1/(1-p).
fn percentile_ticks() -> Vec<(f64, String)> {
    ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64, l.to_string()))
        .collect()
}

/// A latency-by-percentile chart of histograms turned into [`percentile_points`].
pub(crate) fn percentile_chart(title: &str, series: Vec<Series>) -> String {
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

/// Ticks every round number of seconds between `t0` and `t1`.
pub(crate) fn time_ticks(t0: f64, t1: f64) -> Vec<(f64, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
