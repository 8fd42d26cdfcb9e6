//! SVG error graphs in the spirit of Herbie's: bits of error against the swept magnitude (log2
//! x-axis), one polyline per subject × dtype × output (value solid, gradient dashed), with the
//! breakdown line of each dtype. Plain SVG 1.1 written by hand: text is `<text>` elements laid
//! out by the viewer, so no font is needed to produce a plot.

use super::breakdown::Sweep;
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

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

/// The SVG graph of one sweep. Every series of the sweep gives two polylines (value and
/// gradient), each with a `data-series` attribute naming it (`"<subject> <dtype> value"`).
pub fn svg(sweep: &Sweep) -> String {
    let pts = sweep.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in pts {
        x0 = x0.min(p.log2);
        x1 = x1.max(p.log2);
    }
    if x0.partial_cmp(&x1) != Some(std::cmp::Ordering::Less) {
        (x0, x1) = (x0.min(0.0) - 1.0, x1.max(0.0) + 1.0);
    }
    let y1 = sweep
        .series
        .iter()
        .map(|s| s.dtype.bits_cap())
        .fold(16.0, f64::max);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y.clamp(0.0, y1) / y1 * ph;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        o,
        r#"<title>{}: bits of error against {}</title><rect width="{W}" height="{H}" fill="white"/>"#,
        xml_escape(&sweep.loss),
        xml_escape(&sweep.quantity)
    );
    let _ = write!(
        o,
        r#"<text x="{}" y="20" font-size="14" font-weight="bold">{} — bits of error vs {}</text>"#,
        LEFT,
        xml_escape(&sweep.loss),
        xml_escape(&sweep.quantity)
    );
    // grid and ticks
    let step = ((x1 - x0) / 10.0).ceil().max(1.0);
    let mut t = (x0 / step).ceil() * step;
    while t <= x1 + 1e-9 {
        let x = sx(t);
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">2^{t}</text>"##,
            TOP + ph,
            TOP + ph + 16.0
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
        b += 4.0;
    }
    let _ = write!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{} (log2 scale)</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">bits of error</text>"##,
        LEFT + pw / 2.0,
        H - 8.0,
        xml_escape(&sweep.quantity),
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // breakdown lines per dtype present
    let mut dtypes: Vec<_> = sweep.series.iter().map(|s| s.dtype).collect();
    dtypes.dedup();
    dtypes.sort();
    dtypes.dedup();
    for d in dtypes {
        let y = sy(d.breakdown_bits());
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#777" font-size="9">breakdown {}</text>"##,
            LEFT + pw,
            LEFT + 4.0,
            y - 3.0,
            d.name()
        );
    }
    // series
    let mut ly = TOP + 4.0;
    for (i, s) in sweep.series.iter().enumerate() {
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
        let lx = W - RIGHT + 12.0;
        let _ = write!(
            o,
            r#"<line x1="{lx}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 3.5,
            xml_escape(&name)
        );
        ly += 14.0;
    }
    let _ = write!(
        o,
        r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#555">solid: value, dashed: gradient</text>"##,
        W - RIGHT + 12.0,
        ly + 6.0
    );
    o.push_str("</svg>\n");
    o
}
