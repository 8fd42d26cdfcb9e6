//! SVG error graphs in the spirit of Herbie's: bits of error against the swept magnitude (log2
//! x-axis), one polyline per subject × dtype × output (value solid, gradient dashed), with the
//! breakdown line of each dtype. Plain SVG 1.1 written by hand: text is `<text>` elements laid
//! out by the viewer, so no font is needed to produce a plot.

use super::breakdown::Sweep;
use std::fmt::Write;

const W: f64 = 820.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 270.0;
const TOP: f64 = 34.0;
/// Height of one panel's plot area, and the space under it (tick labels, axis title).
const PH: f64 = 200.0;
const GAP: f64 = 56.0;

/// A palette that stays distinct for ~10 series.
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// Escape text for XML.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG graph of one sweep: one panel per dtype (its own x range: the dtype's), one colour
/// per subject. Every series of the sweep gives two polylines (value solid, gradient dashed),
/// each with a `data-series` attribute naming it (`"<subject> <dtype> value"`).
pub fn svg(sweep: &Sweep) -> String {
    let mut dtypes: Vec<_> = sweep.series.iter().map(|s| s.dtype).collect();
    dtypes.sort();
    dtypes.dedup();
    let mut subjects: Vec<&str> = Vec::new();
    for s in &sweep.series {
        if !subjects.contains(&s.subject.as_str()) {
            subjects.push(&s.subject);
        }
    }
    let h = TOP + dtypes.len().max(1) as f64 * (PH + GAP) + 10.0;
    let pw = W - LEFT - RIGHT;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        o,
        r#"<title>{}: bits of error against {}</title><rect width="{W}" height="{h}" fill="white"/>"#,
        xml_escape(&sweep.loss),
        xml_escape(&sweep.quantity)
    );
    let _ = write!(
        o,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{} — bits of error vs {}</text>"#,
        xml_escape(&sweep.loss),
        xml_escape(&sweep.quantity)
    );
    for (k, &d) in dtypes.iter().enumerate() {
        let top = TOP + k as f64 * (PH + GAP);
        let series: Vec<_> = sweep.series.iter().filter(|s| s.dtype == d).collect();
        let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in series.iter().flat_map(|s| s.points.iter()) {
            x0 = x0.min(p.log2);
            x1 = x1.max(p.log2);
        }
        if x0.partial_cmp(&x1) != Some(std::cmp::Ordering::Less) {
            (x0, x1) = (x0.min(0.0) - 1.0, x1.max(0.0) + 1.0);
        }
        let worst = series
            .iter()
            .flat_map(|s| s.points.iter())
            .map(|p| p.value_bits.max(p.grad_bits))
            .fold(0.0, f64::max);
        let y1 = if worst > d.bits_cap() {
            32.0
        } else {
            d.bits_cap()
        };
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + PH - y.clamp(0.0, y1) / y1 * PH;
        // grid and ticks
        let step = ((x1 - x0) / 10.0).ceil().max(1.0);
        let mut t = (x0 / step).ceil() * step;
        while t <= x1 + 1e-9 {
            let x = sx(t);
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">2^{t}</text>"##,
                top + PH,
                top + PH + 15.0
            );
            t += step;
        }
        let mut b = 0.0;
        while b <= y1 + 1e-9 {
            let y = sy(b);
            let _ = write!(
                o,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{b}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0
            );
            b += if y1 > 16.0 { 8.0 } else { 4.0 };
        }
        let by = sy(d.breakdown_bits());
        let _ = write!(
            o,
            r##"<rect x="{LEFT}" y="{top}" width="{pw}" height="{PH}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{} (log2 scale), {}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">bits of error</text><line x1="{LEFT}" y1="{by:.1}" x2="{:.1}" y2="{by:.1}" stroke="#999" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#777" font-size="9">breakdown ({} bits)</text>"##,
            LEFT + pw / 2.0,
            top + PH + 32.0,
            xml_escape(&sweep.quantity),
            d.name(),
            top + PH / 2.0,
            top + PH / 2.0,
            LEFT + pw,
            LEFT + 4.0,
            by - 3.0,
            d.breakdown_bits()
        );
        for s in series {
            let i = subjects.iter().position(|x| *x == s.subject).unwrap_or(0);
            let color = COLORS[i % COLORS.len()];
            let name = format!("{} {}", s.subject, s.dtype);
            for (out, dash) in [("value", ""), ("grad", r#" stroke-dasharray="6,3""#)] {
                let pts: Vec<String> = s
                    .points
                    .iter()
                    .filter(|p| p.cases > 0)
                    .map(|p| {
                        let v = if out == "value" {
                            p.value_bits
                        } else {
                            p.grad_bits
                        };
                        format!("{:.1},{:.1}", sx(p.log2), sy(v))
                    })
                    .collect();
                let _ = write!(
                    o,
                    r#"<polyline data-series="{} {out}" fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#,
                    xml_escape(&name),
                    pts.join(" ")
                );
            }
        }
    }
    // legend: one colour per subject
    let lx = W - RIGHT + 14.0;
    let mut ly = TOP + 6.0;
    for (i, subj) in subjects.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = write!(
            o,
            r#"<line x1="{lx}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 3.5,
            xml_escape(subj)
        );
        ly += 14.0;
    }
    let _ = write!(
        o,
        r##"<text x="{lx}" y="{:.1}" font-size="9" fill="#555">solid: value, dashed: gradient</text>"##,
        ly + 6.0
    );
    o.push_str("</svg>\n");
    o
}
