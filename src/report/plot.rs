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

// ---------------------------------------------------------------------------------------------
// General line plots (the seed demonstrations, `super::demos`).

/// One line of a [`Panel`]: (x, y) points in data units, drawn in the palette's colour
/// `color`, solid or dashed, with or without a dot at each point.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Legend text; also the `data-series` attribute of its polyline.
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: usize,
    pub dashed: bool,
    pub markers: bool,
}

impl Line {
    /// A solid line without markers.
    pub fn new(name: &str, color: usize, points: Vec<(f64, f64)>) -> Line {
        Line {
            name: name.to_string(),
            points,
            color,
            dashed: false,
            markers: false,
        }
    }
    pub fn dashed(mut self) -> Line {
        self.dashed = true;
        self
    }
    pub fn markers(mut self) -> Line {
        self.markers = true;
        self
    }
}

/// One panel of a [`Figure`]: its own axes (linear, or log2 with `2^k` ticks) and legend.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log2_x: bool,
    pub log2_y: bool,
    /// The y range (data units); `None`: the lines' range.
    pub y_range: Option<(f64, f64)>,
    pub lines: Vec<Line>,
}

impl Panel {
    /// Linear axes, the y range from the data.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Panel {
        Panel {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            log2_x: false,
            log2_y: false,
            y_range: None,
            lines: Vec::new(),
        }
    }
    pub fn log2_x(mut self) -> Panel {
        self.log2_x = true;
        self
    }
    pub fn log2_y(mut self) -> Panel {
        self.log2_y = true;
        self
    }
    pub fn y_range(mut self, lo: f64, hi: f64) -> Panel {
        self.y_range = Some((lo, hi));
        self
    }
    pub fn line(mut self, l: Line) -> Panel {
        self.lines.push(l);
        self
    }
    /// The line named `name`.
    pub fn get(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.name == name)
    }
}

/// A titled stack of panels.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub title: String,
    pub panels: Vec<Panel>,
}

/// A "nice" tick step (1, 2 or 5 × 10^k) for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-300);
    let p = libm::pow(10.0, libm::floor(libm::log10(raw)));
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A tick label for value `v` on a linear axis of tick step `step`.
fn tick_label(v: f64, step: f64) -> String {
    let digits = if step >= 1.0 {
        0
    } else {
        libm::ceil(-libm::log10(step) - 1e-9).max(0.0) as usize
    };
    let s = format!("{v:.digits$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Axis transform: log2 of positive values (others dropped), identity otherwise.
fn axis(v: f64, log2: bool) -> Option<f64> {
    let t = if log2 {
        if v > 0.0 {
            libm::log2(v)
        } else {
            return None;
        }
    } else {
        v
    };
    t.is_finite().then_some(t)
}

/// Ticks over [a, b] (transformed units): (position, label).
fn ticks(a: f64, b: f64, log2: bool) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    if log2 {
        let step = libm::ceil((b - a) / 10.0).max(1.0);
        let mut t = libm::ceil(a / step) * step;
        while t <= b + 1e-9 {
            out.push((t, format!("2^{t}")));
            t += step;
        }
    } else {
        let step = nice_step(b - a, 6.0);
        let mut k = libm::ceil(a / step - 1e-9);
        while k * step <= b + step * 1e-9 {
            out.push((k * step, tick_label(k * step, step)));
            k += 1.0;
        }
    }
    out
}

/// The SVG of a figure: panels stacked, each with its legend on the right. Every line is one
/// `<polyline>` with a `data-series` attribute (its name); text is `<text>` elements laid out
/// by the viewer, so no font is needed to produce a plot. Points that a log axis cannot show
/// (≤ 0) and non-finite points are left out of the line.
pub fn figure_svg(fig: &Figure) -> String {
    const FW: f64 = 820.0;
    const FL: f64 = 64.0;
    const FR: f64 = 230.0;
    let pw = FW - FL - FR;
    let h = TOP + fig.panels.len().max(1) as f64 * (PH + GAP + 16.0) + 10.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{FW}" height="{h}" viewBox="0 0 {FW} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        o,
        r#"<title>{t}</title><rect width="{FW}" height="{h}" fill="white"/><text x="{FL}" y="20" font-size="14" font-weight="bold">{t}</text>"#,
        t = xml_escape(&fig.title)
    );
    for (k, p) in fig.panels.iter().enumerate() {
        let top = TOP + 16.0 + k as f64 * (PH + GAP + 16.0);
        let pts: Vec<Vec<(f64, f64)>> = p
            .lines
            .iter()
            .map(|l| {
                l.points
                    .iter()
                    .filter_map(|&(x, y)| Some((axis(x, p.log2_x)?, axis(y, p.log2_y)?)))
                    .collect()
            })
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for &(x, y) in pts.iter().flatten() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if let Some((a, b)) = p.y_range {
            if let (Some(a), Some(b)) = (axis(a, p.log2_y), axis(b, p.log2_y)) {
                (y0, y1) = (a, b);
            }
        }
        if x0.partial_cmp(&x1) != Some(std::cmp::Ordering::Less) {
            (x0, x1) = (x0.min(0.0) - 1.0, x1.max(0.0) + 1.0);
        }
        if y0.partial_cmp(&y1) != Some(std::cmp::Ordering::Less) {
            (y0, y1) = (y0.min(0.0) - 1.0, y1.max(0.0) + 1.0);
        }
        let sx = |x: f64| FL + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| top + PH - (y.clamp(y0, y1) - y0) / (y1 - y0) * PH;
        let _ = write!(
            o,
            r#"<text x="{FL}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
            top - 6.0,
            xml_escape(&p.title)
        );
        for (t, label) in ticks(x0, x1, p.log2_x) {
            let x = sx(t);
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                top + PH,
                top + PH + 15.0,
                xml_escape(&label)
            );
        }
        for (t, label) in ticks(y0, y1, p.log2_y) {
            let y = sy(t);
            let _ = write!(
                o,
                r##"<line x1="{FL}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                FL + pw,
                FL - 6.0,
                y + 4.0,
                xml_escape(&label)
            );
        }
        let _ = write!(
            o,
            r##"<rect x="{FL}" y="{top:.1}" width="{pw}" height="{PH}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##,
            FL + pw / 2.0,
            top + PH + 32.0,
            xml_escape(&p.x_label),
            top + PH / 2.0,
            top + PH / 2.0,
            xml_escape(&p.y_label)
        );
        let (lx, mut ly) = (FW - FR + 14.0, top + 6.0);
        for (l, pts) in p.lines.iter().zip(&pts) {
            let color = COLORS[l.color % COLORS.len()];
            let dash = if l.dashed {
                r#" stroke-dasharray="6,3""#
            } else {
                ""
            };
            let coords: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline data-series="{}" fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{}"/>"#,
                xml_escape(&l.name),
                coords.join(" ")
            );
            if l.markers {
                for &(x, y) in pts {
                    let _ = write!(
                        o,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                        sx(x),
                        sy(y)
                    );
                }
            }
            let _ = write!(
                o,
                r#"<line x1="{lx}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                lx + 18.0,
                lx + 22.0,
                ly + 3.5,
                xml_escape(&l.name)
            );
            ly += 14.0;
        }
    }
    o.push_str("</svg>\n");
    o
}
