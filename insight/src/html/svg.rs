//! Inline SVG charts: drawn on the server side, styled by the page's CSS, readable without
//! colour (every bar has a tooltip, and marks carry text).

use std::fmt::Write as _;

use super::fmt::esc;

/// One bar of a [`bar_chart`].
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    /// Its height in the axis's unit; `None` draws a dash (no data for that run).
    pub(crate) value: Option<f64>,
    /// The CSS class that colours it (`b-success`, `b-failed`, …).
    pub(crate) class: &'static str,
    /// Text drawn above it so that its kind reads without colour (`✕` for a failure).
    pub(crate) mark: Option<&'static str>,
    /// Its label under the x axis (plain text).
    pub(crate) label: String,
    /// Its tooltip (plain text).
    pub(crate) title: String,
}

/// The y axis of a [`bar_chart`].
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    /// The value at the top.
    pub(crate) max: f64,
    /// Gridlines: value and label.
    pub(crate) ticks: Vec<(f64, String)>,
    /// What it measures.
    pub(crate) title: String,
}

const W: f64 = 960.0;
const H: f64 = 250.0;
const ML: f64 = 64.0;
const MR: f64 = 40.0;
const MT: f64 = 20.0;
const MB: f64 = 46.0;
/// At most this many x labels; the newest bar is always labelled.
const X_LABELS: usize = 12;

/// A vertical bar chart, one bar per run, oldest on the left, with an optional dashed
/// reference line (its legend is the caller's).
pub(crate) fn bar_chart(
    label: &str,
    bars: &[Bar],
    y: &Axis,
    x_title: &str,
    reference: Option<f64>,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{l}\" \
         preserveAspectRatio=\"xMidYMid meet\"><title>{l}</title>",
        l = esc(label)
    );
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let yof = |v: f64| MT + ph - (v / y.max).clamp(0.0, 1.0) * ph;
    for (v, text) in &y.ticks {
        let ty = yof(*v);
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{ML}\" x2=\"{x2}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>\
             <text class=\"tick\" x=\"{tx}\" y=\"{ly:.1}\" text-anchor=\"end\">{t}</text>",
            x2 = W - MR,
            tx = ML - 8.0,
            ly = ty + 4.0,
            t = esc(text)
        );
    }
    let n = bars.len().max(1);
    let slot = pw / n as f64;
    let bw = (slot * 0.72).clamp(1.0, 44.0);
    let every = bars.len().div_ceil(X_LABELS).max(1);
    for (i, b) in bars.iter().enumerate() {
        let cx = ML + slot * (i as f64 + 0.5);
        let x = cx - bw / 2.0;
        match b.value {
            Some(v) => {
                let top = yof(v);
                let h = (MT + ph - top).max(1.0);
                let _ = write!(
                    s,
                    "<rect class=\"{c}\" x=\"{x:.1}\" y=\"{yy:.1}\" width=\"{bw:.1}\" height=\"{h:.1}\" rx=\"2\"><title>{t}</title></rect>",
                    c = b.class,
                    yy = MT + ph - h,
                    t = esc(&b.title)
                );
                if let Some(m) = b.mark {
                    let _ = write!(
                        s,
                        "<text class=\"mark\" x=\"{cx:.1}\" y=\"{my:.1}\" text-anchor=\"middle\">{m}</text>",
                        my = (MT + ph - h - 4.0).max(11.0)
                    );
                }
            }
            None => {
                let _ = write!(
                    s,
                    "<line class=\"nodata\" x1=\"{x:.1}\" x2=\"{x2:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"><title>{t}</title></line>",
                    x2 = x + bw,
                    yy = MT + ph - 2.0,
                    t = esc(&b.title)
                );
            }
        }
        if (bars.len() - 1 - i) % every == 0 {
            let _ = write!(
                s,
                "<text class=\"tick\" x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{t}</text>",
                ly = MT + ph + 16.0,
                t = esc(&b.label)
            );
        }
    }
    if let Some(v) = reference {
        let ry = yof(v);
        let _ = write!(
            s,
            "<line class=\"ref\" x1=\"{ML}\" x2=\"{x2}\" y1=\"{ry:.1}\" y2=\"{ry:.1}\"/>",
            x2 = W - MR,
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{ML}\" x2=\"{x2}\" y1=\"{b:.1}\" y2=\"{b:.1}\"/>\
         <text class=\"axistitle\" x=\"{mx:.1}\" y=\"{ty}\" text-anchor=\"middle\">{xt}</text>\
         <text class=\"axistitle\" transform=\"translate(14 {my:.1}) rotate(-90)\" text-anchor=\"middle\">{yt}</text></svg>",
        x2 = W - MR,
        b = MT + ph,
        mx = ML + pw / 2.0,
        ty = H - 6.0,
        my = MT + ph / 2.0,
        xt = esc(x_title),
        yt = esc(&y.title)
    );
    s
}

/// A y axis for durations in milliseconds: 0 to a round step above `max_ms`.
pub(crate) fn duration_axis(max_ms: u64, title: &str) -> Axis {
    const STEPS: [u64; 22] = [
        100,
        200,
        500,
        1_000,
        2_000,
        5_000,
        10_000,
        15_000,
        30_000,
        60_000,
        120_000,
        300_000,
        600_000,
        900_000,
        1_800_000,
        3_600_000,
        7_200_000,
        10_800_000,
        21_600_000,
        43_200_000,
        86_400_000,
        172_800_000,
    ];
    let max_ms = max_ms.max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| max_ms.div_ceil(*s) <= 5)
        .unwrap_or_else(|| max_ms.div_ceil(5));
    let k = max_ms.div_ceil(step);
    Axis {
        max: step.saturating_mul(k) as f64,
        ticks: (0..=k)
            .map(|i| {
                let v = step.saturating_mul(i);
                (v as f64, axis_duration(v))
            })
            .collect(),
        title: title.to_string(),
    }
}

/// An axis label for a round duration: `500ms`, `30s`, `2m`, `1h`, `1m30s`.
fn axis_duration(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// A y axis for shares (0.25 is 25%): 0 to 100% in quarters when `fixed_full`, else 0
/// to a round step above `max`.
pub(crate) fn share_axis(max: f64, title: &str, fixed_full: bool) -> Axis {
    const STEPS: [f64; 9] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0];
    let max = if fixed_full || !max.is_finite() || max <= 0.0 {
        1.0
    } else {
        max
    };
    let step = if fixed_full {
        0.25
    } else {
        STEPS
            .iter()
            .copied()
            .find(|s| (max / s).ceil() <= 5.0)
            .unwrap_or_else(|| (max / 5.0).ceil())
    };
    let k = (max / step - 1e-9).ceil().max(1.0);
    let ticks = (0..=k as u32)
        .map(|i| {
            let v = step * f64::from(i);
            (v, super::fmt::percent(v))
        })
        .collect();
    Axis {
        max: step * k,
        ticks,
        title: title.to_string(),
    }
}

/// A bar in a table cell: `value` of `scale`, with a tick at `peak`.
pub(crate) fn inline_bar(value: u64, peak: u64, scale: u64, title: &str) -> String {
    const IW: f64 = 160.0;
    let scale = scale.max(1) as f64;
    let w = (value as f64 / scale * IW).clamp(1.0, IW);
    let px = (peak as f64 / scale * IW).clamp(1.0, IW - 1.0);
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {IW} 12\" width=\"{IW}\" height=\"12\" role=\"img\" aria-label=\"{t}\">\
         <title>{t}</title><rect class=\"sparkbar\" x=\"0\" y=\"2\" width=\"{w:.1}\" height=\"8\" rx=\"2\"/>\
         <line class=\"sparkpeak\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"0\" y2=\"12\"/></svg>",
        t = esc(title)
    )
}

/// One segment of a [`timeline`].
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// Its label (plain text).
    pub(crate) label: String,
    /// Its length.
    pub(crate) ms: u64,
    /// Its tooltip (plain text).
    pub(crate) title: String,
}

/// Segments end to end, each as long as its share of the whole.
pub(crate) fn timeline(label: &str, segments: &[Segment]) -> String {
    const TW: f64 = 960.0;
    const TH: f64 = 40.0;
    let total: u64 = segments.iter().map(|g| g.ms).sum::<u64>().max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart timeline\" viewBox=\"0 0 {TW} {TH}\" role=\"img\" aria-label=\"{l}\"><title>{l}</title>",
        l = esc(label)
    );
    let mut x = 0.0;
    for (i, g) in segments.iter().enumerate() {
        let w = g.ms as f64 / total as f64 * TW;
        let _ = write!(
            s,
            "<rect class=\"seg seg{k}\" x=\"{x:.1}\" y=\"4\" width=\"{w:.1}\" height=\"{h}\"><title>{t}</title></rect>",
            k = i % 2,
            h = TH - 8.0,
            t = esc(&g.title)
        );
        // About 7 units a character at the label's size; a label that does not fit is
        // left to the tooltip and the table below.
        let room = g.label.chars().count() as f64 * 7.2 + 10.0;
        if w >= room {
            let _ = write!(
                s,
                "<text class=\"seglabel\" x=\"{tx:.1}\" y=\"{ty}\">{t}</text>",
                tx = x + 5.0,
                ty = TH / 2.0 + 4.0,
                t = esc(&g.label)
            );
        }
        x += w;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_axis_rounds_up_to_a_readable_step() {
        let a = duration_axis(184_000, "wall time");
        assert_eq!(a.max, 240_000.0);
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0", "1m", "2m", "3m", "4m"]);
        let a = duration_axis(0, "t");
        assert_eq!(a.max, 100.0);
        assert_eq!(axis_duration(90_000), "1m30s");
        assert_eq!(axis_duration(5_400_000), "1h30m");
    }

    #[test]
    fn share_axis_is_full_or_rounded() {
        let a = share_axis(0.3, "hit ratio", true);
        assert_eq!(a.max, 1.0);
        assert_eq!(a.ticks.len(), 5);
        let a = share_axis(0.12, "WAPE", false);
        assert!((a.max - 0.15).abs() < 1e-9, "{}", a.max);
        assert_eq!(a.ticks.last().unwrap().1, "15%");
    }

    #[test]
    fn charts_escape_labels_and_draw_one_mark_per_bar() {
        let bars: Vec<Bar> = (0..3)
            .map(|i| Bar {
                value: (i != 1).then_some(1.0),
                class: "b-success",
                mark: (i == 2).then_some("\u{2715}"),
                label: format!("<{i}>"),
                title: "a & b".into(),
            })
            .collect();
        let svg = bar_chart("x<y", &bars, &duration_axis(1, "t"), "runs", None);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert_eq!(svg.matches("class=\"nodata\"").count(), 1);
        assert_eq!(svg.matches("class=\"mark\"").count(), 1);
        assert!(svg.contains("&lt;2&gt;") && !svg.contains("<2>"));
        assert!(svg.contains("a &amp; b") && svg.contains("x&lt;y"));
    }
}
