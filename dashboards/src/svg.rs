//! Charts as SVG, drawn on the server.
//!
//! [`line_chart`]: lines over equal time buckets, oldest at the left, the y axis from zero; a
//! bucket with no value leaves a gap in its line. [`timeline`]: [`Bar`]s on one time axis, one
//! row each.

use std::fmt::Write as _;

use crate::html::esc;

/// One line of a chart: a name, a colour, a value per time bucket (`None`: no data there).
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// The legend's text.
    pub name: &'a str,
    /// A CSS colour.
    pub color: &'a str,
    /// One value per bucket, oldest first.
    pub values: Vec<Option<f64>>,
}

/// A line chart over equal time buckets, oldest at the left; `from` labels the left edge
/// ("−60 min"), the right edge is "now". The y axis starts at zero and reaches at least
/// `floor_max`; `format` writes its labels.
pub fn line_chart(title: &str, from: &str, series: &[Series<'_>], format: fn(f64) -> String, floor_max: f64) -> String {
    let (w, h, left, bottom, top) = (420.0, 180.0, 58.0, 22.0, 40.0);
    let buckets = series.iter().map(|s| s.values.len()).max().unwrap_or(0).max(2);
    let max = series.iter().flat_map(|s| s.values.iter().flatten()).filter(|v| v.is_finite()).fold(floor_max, |m, v| m.max(*v));
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let x = |i: usize| left + (w - left - 8.0) * i as f64 / (buckets - 1) as f64;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{t}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"4\" y=\"15\" font-size=\"13\" font-weight=\"600\">{t}</text>",
        t = esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max / 1.1 * frac;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#e3e6ea\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#68717c\">{}</text>",
            w - 8.0,
            left - 4.0,
            y(v) + 3.0,
            esc(&format(v)),
            yv = y(v)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{b:.1}\" font-size=\"10\" fill=\"#68717c\">{}</text><text x=\"{r:.1}\" y=\"{b:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#68717c\">now</text>",
        esc(from),
        b = h - 6.0,
        r = w - 8.0,
    );
    let mut legend_x = 4.0;
    for s in series {
        let mut path = String::new();
        let mut dots = String::new();
        let mut pen_down = false;
        for (i, v) in s.values.iter().enumerate() {
            match v.filter(|v| v.is_finite()) {
                Some(v) => {
                    let _ = write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(i), y(v));
                    let _ = write!(dots, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"/>", x(i), y(v));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            // A point with no neighbour draws no line: every point also gets a dot.
            let _ =
                write!(svg, "<path d=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\"/><g fill=\"{c}\">{dots}</g>", path.trim_end(), c = esc(s.color));
        }
        let _ = write!(
            svg,
            "<rect x=\"{legend_x}\" y=\"21\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"30\" font-size=\"11\">{}</text>",
            esc(s.color),
            legend_x + 13.0,
            esc(s.name)
        );
        legend_x += 18.0 + 7.0 * s.name.chars().count() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// One bar of a timeline: a label at the left, a span of time, a colour.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The row's label.
    pub label: String,
    /// Start (any unit, the same as the timeline's).
    pub start: i64,
    /// End.
    pub end: i64,
    /// A CSS colour.
    pub color: String,
}

/// Bars on one time axis from `start` to `end`, one row each, with the axis' two ends labelled.
pub fn timeline(id: &str, bars: &[Bar], start: i64, end: i64, start_label: &str, end_label: &str) -> String {
    let end = end.max(start + 1);
    let (w, row) = (760.0, 22.0);
    let h = row * bars.len() as f64 + 30.0;
    let x = |t: i64| 90.0 + (w - 100.0) * ((t - start) as f64 / (end - start) as f64).clamp(0.0, 1.0);
    let mut svg = format!("<svg id=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">", esc(id));
    for (i, b) in bars.iter().enumerate() {
        let y = row * i as f64 + 5.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"12\">{}</text><rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{}\"/>",
            y + 11.0,
            esc(&b.label),
            x(b.start),
            (x(b.end) - x(b.start)).max(1.0),
            esc(&b.color)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"90\" y=\"{b:.1}\" font-size=\"10\" fill=\"#68717c\">{}</text><text x=\"{r:.1}\" y=\"{b:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#68717c\">{}</text></svg>",
        esc(start_label),
        esc(end_label),
        b = h - 6.0,
        r = w - 10.0,
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(v: f64) -> String {
        format!("{v:.0}")
    }

    #[test]
    fn a_chart_draws_its_series_and_breaks_at_gaps() {
        let values = vec![Some(1.0), Some(2.0), None, Some(3.0), Some(f64::NAN)];
        let svg = line_chart("Jobs <1h>", "−60 min", &[Series { name: "ok", color: "#000", values }], count, 0.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("Jobs &lt;1h&gt;"));
        // Two runs of the line: before and after the gap; NaN is a gap too.
        let path = svg.split("<path d=\"").nth(1).and_then(|p| p.split('"').next()).expect("a path");
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(path.matches('L').count(), 1, "{path}");
    }

    #[test]
    fn an_empty_chart_is_still_a_chart() {
        let svg = line_chart("t", "a", &[Series { name: "s", color: "#000", values: vec![None; 60] }], count, 0.0);
        assert!(svg.contains("<svg") && !svg.contains("<path"));
    }

    #[test]
    fn timeline_bars_stay_inside_the_axis() {
        let bars = [Bar { label: "a".into(), start: -5, end: 50, color: "#000".into() }, Bar { label: "b".into(), start: 50, end: 500, color: "#111".into() }];
        let svg = timeline("t", &bars, 0, 100, "start", "+100");
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("x=\"90.0\""), "{svg}");
        assert!(svg.contains("width=\"330.0\""), "{svg}");
    }
}
