//! The report's "Seed demonstrations" (issue 6, item 7): seven small, fixed-input experiments
//! run on the built-in kernels, each returning its data series, a short caption with the
//! numbers that matter, a table and a figure (`plots/demo-<name>.svg`). Every demonstration is
//! deterministic (fixed inputs from a fixed-seed generator; the transcendental functions of
//! the `libm` crate, never the platform libm) and cheap (the seven together take well under a
//! second in release). Each is backed by a test in `tests/report_demos.rs` that checks the
//! property it shows against a closed form or an independent f64 computation; docs/demos.md
//! says what each shows and how to read its plot.
//!
//! 1. [`robustness`] — loss and gradient against the residual (mse, mae, huber, quantile,
//!    log_cosh).
//! 2. [`masked_mean`] — token mean vs sequence mean on a padded `[B, T, C]` cross-entropy batch.
//! 3. [`info_nce_temperature`] — InfoNCE's probabilities sharpening as the temperature falls.
//! 4. [`dpo_reference`] — how the reference model's margin changes the DPO gradient.
//! 5. [`focal_vs_bce`] — weighted BCE vs focal on an imbalanced detection batch.
//! 6. [`multi_term`] — per-term gradient norms of cross-entropy + λ·mse on shared logits.
//! 7. [`f16_loss_scaling`] — f16 gradient underflow and the loss scales that avoid it.

use super::plot::{self, Figure, Line, Panel};
use crate::kernels::classification::multiclass::CrossEntropyArgs;
use crate::kernels::classification::{bce_logits, focal, ClassArgs};
use crate::kernels::contrastive::{info_nce, InfoNceParams, RowArgs};
use crate::kernels::preference::{dpo, DpoArgs};
use crate::kernels::regression::{huber, log_cosh, mae, mse, quantile, ElementwiseArgs};
use crate::Reduction;
use half::f16;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The report section's title.
pub const SECTION_TITLE: &str = "Seed demonstrations";

/// One demonstration: what the report shows of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    /// Short id: the plot is `plots/demo-<name>.svg`.
    pub name: &'static str,
    pub title: String,
    /// The catalogue losses it runs (the report shows it when it covers all of them).
    pub losses: Vec<&'static str>,
    /// One paragraph of Markdown with the numbers that matter.
    pub caption: String,
    /// The headline numbers, by name (also in report.json).
    pub numbers: BTreeMap<String, f64>,
    /// A small table: the first row is the header.
    pub table: Vec<Vec<String>>,
    /// The data series, as plotted.
    pub figure: Figure,
}

impl Demo {
    /// `plots/demo-<name>.svg`.
    pub fn plot_path(&self) -> String {
        format!("plots/demo-{}.svg", self.name)
    }
    pub fn svg(&self) -> String {
        plot::figure_svg(&self.figure)
    }
    /// The line `name` of panel `panel` (panics if absent: for tests).
    pub fn line(&self, panel: usize, name: &str) -> &Line {
        self.figure.panels[panel]
            .get(name)
            .unwrap_or_else(|| panic!("demo {}: no line {name:?} in panel {panel}", self.name))
    }
    /// The y values of [`Demo::line`].
    pub fn ys(&self, panel: usize, name: &str) -> Vec<f64> {
        self.line(panel, name).points.iter().map(|p| p.1).collect()
    }
    /// A headline number (panics if absent: for tests).
    pub fn number(&self, key: &str) -> f64 {
        *self
            .numbers
            .get(key)
            .unwrap_or_else(|| panic!("demo {}: no number {key:?}", self.name))
    }
    /// The Markdown of the demonstration (a `###` heading, caption, table, plot).
    pub fn markdown(&self, index: usize) -> String {
        let mut md = format!("### {}. {}\n\n{}\n\n", index + 1, self.title, self.caption);
        if let Some((head, rows)) = self.table.split_first() {
            md += &format!(
                "| {} |\n|{}\n",
                head.join(" | "),
                head.iter()
                    .enumerate()
                    .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                    .collect::<String>()
            );
            for r in rows {
                md += &format!("| {} |\n", r.join(" | "));
            }
            md.push('\n');
        }
        md += &format!("![demo {}]({})\n\n", self.name, self.plot_path());
        md
    }
    /// The `demos[]` object of report.json (docs/report-schema.md).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "title": self.title,
            "losses": self.losses,
            "caption": self.caption,
            "numbers": self.numbers,
            "table": self.table,
            "plot": self.plot_path(),
            "panels": self.figure.panels.iter().map(|p| json!({
                "title": p.title, "x_label": p.x_label, "y_label": p.y_label,
                "log2_x": p.log2_x, "log2_y": p.log2_y,
                "lines": p.lines.iter().map(|l| json!({
                    "name": l.name,
                    "x": l.points.iter().map(|q| q.0).collect::<Vec<_>>(),
                    "y": l.points.iter().map(|q| q.1).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A demonstration's entry: (name, the losses it runs, the function).
pub type Entry = (&'static str, &'static [&'static str], fn() -> Demo);

/// Every demonstration.
pub const DEMOS: &[Entry] = &[
    (
        "robustness",
        &["mse", "mae", "huber", "quantile", "log_cosh"],
        robustness,
    ),
    ("masked-mean", &["cross_entropy"], masked_mean),
    ("info-nce-temperature", &["info_nce"], info_nce_temperature),
    ("dpo-reference", &["dpo"], dpo_reference),
    ("focal-vs-bce", &["bce_logits", "focal"], focal_vs_bce),
    ("multi-term", &["cross_entropy", "mse"], multi_term),
    ("f16-loss-scaling", &["cross_entropy"], f16_loss_scaling),
];

/// The demonstrations whose losses are all among `losses` (the report's), in order: a
/// report restricted with `--loss` shows only the demonstrations it covers.
pub fn run(losses: &[String]) -> Vec<Demo> {
    DEMOS
        .iter()
        .filter(|(_, ls, _)| ls.iter().all(|l| losses.iter().any(|x| x == l)))
        .map(|(_, _, f)| f())
        .collect()
}

/// The body of the report's "Seed demonstrations" section.
pub fn markdown(demos: &[Demo]) -> String {
    let mut md = String::from(
        "Small fixed-input experiments on the built-in kernels (deterministic: fixed inputs from a fixed-seed generator). \
         Each is backed by a test in `tests/report_demos.rs` that checks the property it shows against a closed form or an \
         independent f64 computation; docs/demos.md says what each shows and how to read its plot.\n\n",
    );
    for (i, d) in demos.iter().enumerate() {
        md += &d.markdown(i);
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Shared pieces.

/// SplitMix64: a tiny deterministic generator (the same numbers on every platform).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box–Muller, `libm`).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * std::f64::consts::PI * u2)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }
}

/// A number with about 4 significant digits.
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{x:.3e}");
    }
    let d = (3 - libm::floor(libm::log10(a)) as i32).max(0) as usize;
    format!("{x:.d$}")
}

fn pct(x: f64) -> String {
    if x == 0.0 {
        "0%".into()
    } else if 100.0 * x >= 0.1 {
        format!("{:.1}%", 100.0 * x)
    } else {
        format!("{}%", num(100.0 * x))
    }
}

fn f64s<T: crate::Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn zip(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    x.iter().copied().zip(y.iter().copied()).collect()
}

/// σ(x) in f64.
fn sigmoid(x: f64) -> f64 {
    crate::kernels::math::sigmoid(x)
}

/// softmax of one row in f64.
fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| libm::exp(v - m)).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn norm(v: &[f64]) -> f64 {
    libm::sqrt(v.iter().map(|x| x * x).sum())
}

// ---------------------------------------------------------------------------------------------
// 1. robustness

/// Half-width R of the residual grid.
pub const ROBUST_R: f64 = 4.0;

/// The residual grid: r = k/32 for k in −128..=128 (exact in f32), r ∈ [−4, 4].
pub fn residuals() -> Vec<f32> {
    (-128..=128).map(|k| k as f32 / 32.0).collect()
}

/// (name, loss, ∂loss/∂pred) at each residual of [`residuals`] (pred = r, target = 0,
/// reduction `none`, f32 kernels): mse, mae, huber δ = 1, quantile τ = 0.9 and 0.5, log_cosh.
pub fn robustness_curves() -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let r = residuals();
    let zero = vec![0.0f32; r.len()];
    let a = ElementwiseArgs::new(&r, &zero)
        .reduction(Reduction::None)
        .grads(true, false);
    let outs = [
        ("mse", mse::<f32, f32>(&a)),
        ("mae", mae(&a)),
        ("huber δ=1", huber(&a, 1.0)),
        ("quantile τ=0.9", quantile(&a, 0.9)),
        ("quantile τ=0.5", quantile(&a, 0.5)),
        ("log_cosh", log_cosh(&a)),
    ];
    outs.into_iter()
        .map(|(n, o)| {
            let o = o.unwrap_or_else(|e| panic!("{n}: {e}"));
            (
                n.to_string(),
                f64s(&o.value),
                f64s(&o.grad_pred.expect("grad")),
            )
        })
        .collect()
}

/// Loss and gradient against the residual for the regression losses.
pub fn robustness() -> Demo {
    let r = f64s(&residuals());
    let curves = robustness_curves();
    let (mut vp, mut gp) = (
        Panel::new("loss l(r)", "residual r = pred − target", "loss"),
        Panel::new(
            "gradient ∂l/∂pred",
            "residual r = pred − target",
            "gradient",
        ),
    );
    let mut table = vec![vec![
        "loss".to_string(),
        format!("l(−{ROBUST_R})"),
        format!("l({ROBUST_R})"),
        format!("∂l/∂pred at −{ROBUST_R}"),
        format!("∂l/∂pred at {ROBUST_R}"),
        "largest abs(∂l/∂pred) on the grid".to_string(),
    ]];
    let mut numbers = BTreeMap::new();
    for (i, (name, v, g)) in curves.iter().enumerate() {
        vp.lines.push(Line::new(name, i, zip(&r, v)));
        gp.lines.push(Line::new(name, i, zip(&r, g)));
        let gmax = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let last = v.len() - 1;
        table.push(vec![
            name.clone(),
            num(v[0]),
            num(v[last]),
            num(g[0]),
            num(g[last]),
            num(gmax),
        ]);
        numbers.insert(format!("{name}: max |grad|"), gmax);
        numbers.insert(format!("{name}: grad at R"), g[last]);
    }
    let caption = format!(
        "Residuals r ∈ [−{R}, {R}] (257 points, exact in f32), pred = r, target = 0, reduction `none`, f32 kernels. At |r| = {R} \
         mse's gradient is {} — it grows linearly (2r), so one outlier outweighs many inliers — while mae, huber (δ = 1) and \
         log_cosh bound it by 1 (huber and mae reach it, log_cosh tends to it: tanh {R} = {}); quantile bounds it by \
         max(τ, 1 − τ) and is asymmetric: at τ = 0.9 under-prediction costs {} per unit and over-prediction {}. Inside \
         |r| ≤ δ huber is exactly mse/2 (½r²), outside it is linear (δ(|r| − ½δ)); log_cosh is ≈ r²/2 near 0 and ≈ |r| − ln 2 \
         far out.",
        num(curves[0].2[256]),
        num(curves[5].2[256]),
        num(-curves[3].2[0]),
        num(curves[3].2[256]),
        R = ROBUST_R
    );
    Demo {
        name: "robustness",
        title: "Robustness: loss and gradient against the residual".into(),
        losses: vec!["mse", "mae", "huber", "quantile", "log_cosh"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "Robustness: mse, mae, huber (δ = 1), quantile, log_cosh against the residual"
                .into(),
            panels: vec![vp, gp],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 2. masked-mean denominator

/// A padded `[B, T, C]` cross-entropy batch: sequences of different lengths, padding tokens'
/// targets `ignore_index` (−100).
#[derive(Clone, Debug)]
pub struct SeqBatch {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    /// Valid tokens per sequence (the first `lengths[i]` of sequence i).
    pub lengths: Vec<usize>,
    /// `[B, T, C]` logits, row-major (padding rows hold logits too: they must not count).
    pub logits: Vec<f32>,
    /// `[B, T]` class ids, −100 at padding.
    pub target: Vec<i64>,
}

/// B = 4 sequences of T = 8 tokens, C = 6 classes, lengths 8, 4, 2, 1 (15 valid tokens).
pub fn seq_batch() -> SeqBatch {
    let (b, t, c) = (4, 8, 6);
    let lengths = vec![8, 4, 2, 1];
    let mut rng = Rng(2);
    let logits = (0..b * t * c)
        .map(|_| (1.5 * rng.normal()) as f32)
        .collect();
    let mut target = vec![-100i64; b * t];
    for (i, &len) in lengths.iter().enumerate() {
        for k in 0..len {
            target[i * t + k] = rng.below(c) as i64;
        }
    }
    SeqBatch {
        b,
        t,
        c,
        lengths,
        logits,
        target,
    }
}

/// The f32 kernel's gradient of `cross_entropy` on the batch under `reduction`.
pub fn seq_grad(s: &SeqBatch, reduction: Reduction) -> Vec<f64> {
    let out = CrossEntropyArgs::new(&s.logits, s.b * s.t, s.c)
        .class_ids(&s.target)
        .seq(s.b, s.t)
        .reduction(reduction)
        .eval::<f32>()
        .expect("cross_entropy");
    f64s(&out.grad.expect("grad"))
}

/// The weight each token's gradient gets: ‖∂L/∂z_t‖ / ‖softmax(z_t) − onehot(y_t)‖ (the
/// reduction's 1/denominator), per row of the batch (0 at padding).
pub fn token_weights(s: &SeqBatch, grad: &[f64]) -> Vec<f64> {
    (0..s.b * s.t)
        .map(|row| {
            if s.target[row] < 0 {
                return 0.0;
            }
            let z = f64s(&s.logits[row * s.c..(row + 1) * s.c]);
            let mut d = softmax(&z);
            d[s.target[row] as usize] -= 1.0;
            norm(&grad[row * s.c..(row + 1) * s.c]) / norm(&d)
        })
        .collect()
}

/// Token mean vs sequence mean: how the denominator weights each token's gradient.
pub fn masked_mean() -> Demo {
    let s = seq_batch();
    let wt = token_weights(&s, &seq_grad(&s, Reduction::Mean));
    let ws = token_weights(&s, &seq_grad(&s, Reduction::SequenceMean));
    let valid: Vec<usize> = (0..s.b * s.t).filter(|&r| s.target[r] >= 0).collect();
    let n_valid = valid.len();
    let xs: Vec<f64> = (0..n_valid).map(|i| i as f64).collect();
    let pick = |w: &[f64]| valid.iter().map(|&r| w[r]).collect::<Vec<_>>();
    let p1 = Panel::new(
        "per-token gradient weight (‖∂L/∂z_t‖ / ‖p_t − onehot‖)",
        "valid token (sequence 0: tokens 0–7, 1: 8–11, 2: 12–13, 3: 14)",
        "weight",
    )
    .line(Line::new("mean (token mean)", 0, zip(&xs, &pick(&wt))).markers())
    .line(Line::new("sequence_mean", 1, zip(&xs, &pick(&ws))).markers());
    let mut ratio = Vec::new();
    let mut table = vec![vec![
        "sequence".to_string(),
        "length".into(),
        "per-token weight, mean".into(),
        "per-token weight, sequence_mean".into(),
        "ratio".into(),
        "sequence's share, mean".into(),
        "sequence's share, sequence_mean".into(),
    ]];
    let mut numbers = BTreeMap::new();
    let (tot_t, tot_s): (f64, f64) = (wt.iter().sum(), ws.iter().sum());
    for (i, &len) in s.lengths.iter().enumerate() {
        let row = i * s.t; // the sequence's first token
        let (sh_t, sh_s) = (
            wt[row..row + s.t].iter().sum::<f64>() / tot_t,
            ws[row..row + s.t].iter().sum::<f64>() / tot_s,
        );
        ratio.push((len as f64, ws[row] / wt[row]));
        table.push(vec![
            i.to_string(),
            len.to_string(),
            num(wt[row]),
            num(ws[row]),
            num(ws[row] / wt[row]),
            pct(sh_t),
            pct(sh_s),
        ]);
        numbers.insert(format!("ratio at length {len}"), ws[row] / wt[row]);
        numbers.insert(format!("share of sequence {i}, mean"), sh_t);
        numbers.insert(format!("share of sequence {i}, sequence_mean"), sh_s);
    }
    ratio.sort_by(|a, b| a.0.total_cmp(&b.0));
    let nb = s.lengths.iter().filter(|&&l| l > 0).count() as f64;
    let closed: Vec<(f64, f64)> = ratio
        .iter()
        .map(|&(len, _)| (len, n_valid as f64 / (nb * len)))
        .collect();
    let p2 = Panel::new(
        "per-token gradient ratio sequence_mean / mean",
        "sequence length (log2)",
        "ratio",
    )
    .log2_x()
    .line(Line::new("kernel", 0, ratio).markers())
    .line(Line::new("N_valid / (B · length)", 1, closed).dashed());
    numbers.insert("valid tokens".into(), n_valid as f64);
    let caption = format!(
        "A `[B, T, C]` = [{}, {}, {}] cross-entropy batch whose sequences have {} valid tokens (the rest is padding with target \
         `ignore_index`), f32 kernel. `mean` divides every token by the {n_valid} valid tokens (weight {}); `sequence_mean` \
         divides each token by B · its sequence's length (the mean of the per-sequence means), so the lone token of the \
         1-token sequence weighs {}× more than under `mean`, and the tokens of the 8-token sequence {}× as much. Under \
         `mean` the longest sequence carries {} of the total gradient weight; under `sequence_mean` every sequence carries \
         {}. Padding rows get gradient 0 either way. Computing one and declaring the other is double averaging (DESIGN.md).",
        s.b,
        s.t,
        s.c,
        s.lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", "),
        num(1.0 / n_valid as f64),
        num(numbers["ratio at length 1"]),
        num(numbers["ratio at length 8"]),
        pct(numbers["share of sequence 0, mean"]),
        pct(numbers["share of sequence 0, sequence_mean"]),
    );
    Demo {
        name: "masked-mean",
        title: "Masked-mean denominator: token mean vs sequence mean".into(),
        losses: vec!["cross_entropy"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "cross_entropy on a padded [B, T, C] batch: mean vs sequence_mean".into(),
            panels: vec![p1, p2],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 3. InfoNCE temperature

/// Query and key embeddings `[N, D]`; key i (query i plus noise) is query i's positive.
#[derive(Clone, Debug)]
pub struct EmbBatch {
    pub n: usize,
    pub d: usize,
    pub query: Vec<f32>,
    pub key: Vec<f32>,
}

/// N = 8, D = 16: queries standard normal, key i = query i + 0.35 · noise.
pub fn info_nce_batch() -> EmbBatch {
    let (n, d) = (8, 16);
    let mut rng = Rng(3);
    let query: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    let key = query
        .iter()
        .map(|&q| (q as f64 + 0.35 * rng.normal()) as f32)
        .collect();
    EmbBatch { n, d, query, key }
}

/// The temperatures: τ = 10^(−i/20), i = 0..=40 (1 down to 0.01).
pub fn temperatures() -> Vec<f64> {
    (0..=40)
        .map(|i| libm::pow(10.0, -(i as f64) / 20.0))
        .collect()
}

/// The positive pair's probability P_ii = exp(−l_i) per row, from the f32 kernel's per-row
/// loss (reduction `none`, normalize on).
pub fn positive_probs(e: &EmbBatch, tau: f64) -> Vec<f64> {
    let p = InfoNceParams {
        temperature: tau,
        ..InfoNceParams::default()
    };
    let out = info_nce::<f32, f32>(
        &RowArgs::new(e.n, e.d).reduction(Reduction::None),
        &e.query,
        &e.key,
        p,
    )
    .expect("info_nce");
    out.value.iter().map(|&l| libm::exp(-(l as f64))).collect()
}

/// The rows of softmax(ŝ/τ) in f64 (cosine similarities; the kernel returns only the loss).
pub fn info_nce_softmax(e: &EmbBatch, tau: f64) -> Vec<Vec<f64>> {
    let unit = |x: &[f32], i: usize| {
        let v = f64s(&x[i * e.d..(i + 1) * e.d]);
        let n = norm(&v);
        v.into_iter().map(|c| c / n).collect::<Vec<_>>()
    };
    (0..e.n)
        .map(|a| {
            let q = unit(&e.query, a);
            let z: Vec<f64> = (0..e.n)
                .map(|b| {
                    let k = unit(&e.key, b);
                    q.iter().zip(&k).map(|(x, y)| x * y).sum::<f64>() / tau
                })
                .collect();
            softmax(&z)
        })
        .collect()
}

/// Entropy (nats) of a probability row.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| x * libm::log(x))
        .sum::<f64>()
}

/// InfoNCE's softmax sharpening as the temperature falls.
pub fn info_nce_temperature() -> Demo {
    let e = info_nce_batch();
    let taus = temperatures();
    let inv: Vec<f64> = taus.iter().map(|t| 1.0 / t).collect();
    let mut mean_p = Vec::new();
    let mut min_p = Vec::new();
    let mut mean_h = Vec::new();
    let mut max_h = Vec::new();
    for &tau in &taus {
        let p = positive_probs(&e, tau);
        mean_p.push(p.iter().sum::<f64>() / p.len() as f64);
        min_p.push(p.iter().copied().fold(1.0, f64::min));
        let h: Vec<f64> = info_nce_softmax(&e, tau)
            .iter()
            .map(|r| entropy(r))
            .collect();
        mean_h.push(h.iter().sum::<f64>() / h.len() as f64);
        max_h.push(h.iter().copied().fold(0.0, f64::max));
    }
    let ln_n = libm::log(e.n as f64);
    let p1 = Panel::new(
        "the positive pair's probability P_ii = exp(−l_i) (kernel)",
        "1/τ (log2)",
        "probability",
    )
    .log2_x()
    .y_range(0.0, 1.0)
    .line(Line::new("mean over rows", 0, zip(&inv, &mean_p)))
    .line(Line::new("min over rows", 1, zip(&inv, &min_p)))
    .line(
        Line::new(
            "1/N (uniform)",
            7,
            vec![(inv[0], 1.0 / e.n as f64), (inv[40], 1.0 / e.n as f64)],
        )
        .dashed(),
    );
    let p2 = Panel::new("entropy of a row's softmax (nats)", "1/τ (log2)", "entropy")
        .log2_x()
        .line(Line::new("mean over rows", 0, zip(&inv, &mean_h)))
        .line(Line::new("max over rows", 1, zip(&inv, &max_h)))
        .line(Line::new("ln N (uniform)", 7, vec![(inv[0], ln_n), (inv[40], ln_n)]).dashed());
    let at = |tau: f64| {
        let p = positive_probs(&e, tau);
        let h: Vec<f64> = info_nce_softmax(&e, tau)
            .iter()
            .map(|r| entropy(r))
            .collect();
        (
            p.iter().sum::<f64>() / p.len() as f64,
            p.iter().copied().fold(1.0, f64::min),
            h.iter().sum::<f64>() / h.len() as f64,
        )
    };
    let mut table = vec![vec![
        "τ".to_string(),
        "mean P_ii".into(),
        "min P_ii".into(),
        "mean entropy (nats)".into(),
    ]];
    let mut numbers = BTreeMap::new();
    for tau in [1.0, 0.5, 0.2, 0.1, 0.07, 0.05, 0.02, 0.01] {
        let (mp, np, h) = at(tau);
        table.push(vec![num(tau), num(mp), num(np), num(h)]);
        numbers.insert(format!("mean P_ii at τ={tau}"), mp);
        numbers.insert(format!("mean entropy at τ={tau}"), h);
    }
    let first99 = taus
        .iter()
        .zip(&min_p)
        .find(|(_, &p)| p >= 0.99)
        .map(|(&t, _)| t);
    if let Some(t) = first99 {
        numbers.insert("largest grid τ with min P_ii ≥ 0.99".into(), t);
    }
    let caption = format!(
        "N = {} query/key pairs in D = {} (key i = query i + 0.35 · noise, so the positive is every row's most similar \
         key), `normalize` on, f32 kernel, reduction `none`; P_ii = exp(−l_i) from the kernel's per-row loss, the entropy \
         from the same softmax in f64 (the kernel returns only the loss). At τ = 1 the rows are nearly uniform (mean P_ii \
         {}, entropy {} of ln N = {}); at the default τ = 0.07 mean P_ii is {}; at τ = 0.01 it is {} and the entropy {} — \
         the softmax has become an argmax. Every row's entropy falls monotonically as τ falls (d H / d(1/τ) = −Var_p(s)/τ ≤ 0){}.",
        e.n,
        e.d,
        num(numbers["mean P_ii at τ=1"]),
        num(numbers["mean entropy at τ=1"]),
        num(ln_n),
        num(numbers["mean P_ii at τ=0.07"]),
        num(numbers["mean P_ii at τ=0.01"]),
        num(numbers["mean entropy at τ=0.01"]),
        match first99 {
            Some(t) => format!("; every row's P_ii is ≥ 0.99 from τ = {} down", num(t)),
            None => String::new(),
        }
    );
    Demo {
        name: "info-nce-temperature",
        title: "InfoNCE: probabilities sharpening as the temperature falls".into(),
        losses: vec!["info_nce"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "info_nce: the softmax over keys against 1/τ (τ from 1 to 0.01)".into(),
            panels: vec![p1, p2],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 4. DPO reference model

/// The policy's log-probs of the chosen and rejected answers (its margin is +5 nats).
pub const DPO_POLICY: (f32, f32) = (-40.0, -45.0);
/// The reference model's log-prob of the rejected answer; its chosen one is this + the margin.
pub const DPO_REF_REJECTED: f32 = -50.0;
/// The β values shown.
pub const DPO_BETAS: [f64; 2] = [0.1, 0.5];

/// The reference margins refc − refr: −20 to 20 in steps of ¼ (exact in f32).
pub fn reference_margins() -> Vec<f32> {
    (-80..=80).map(|k| k as f32 / 4.0).collect()
}

/// (value, ∂l/∂πc, ∂l/∂πr) per reference margin at β, from the f32 kernel (reduction `none`).
pub fn dpo_curve(beta: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = reference_margins();
    let n = m.len();
    let pc = vec![DPO_POLICY.0; n];
    let pr = vec![DPO_POLICY.1; n];
    let rr = vec![DPO_REF_REJECTED; n];
    let rc: Vec<f32> = m.iter().map(|&x| DPO_REF_REJECTED + x).collect();
    let out = dpo::<f32, f32>(
        &DpoArgs::new(&pc, &pr, &rc, &rr).reduction(Reduction::None),
        beta,
        0.0,
    )
    .expect("dpo");
    (
        f64s(&out.value),
        f64s(&out.grad_policy_chosen.expect("grad")),
        f64s(&out.grad_policy_rejected.expect("grad")),
    )
}

/// How the reference model's margin changes the DPO gradient.
pub fn dpo_reference() -> Demo {
    let m = f64s(&reference_margins());
    let mut gp = Panel::new(
        "gradient weight |∂l/∂πc| = β·σ(−β·h)",
        "reference margin refc − refr (nats); the policy margin πc − πr is +5",
        "|∂l/∂πc|",
    );
    let mut vp = Panel::new(
        "loss softplus(−β·h)",
        "reference margin refc − refr (nats)",
        "loss",
    );
    let mut numbers = BTreeMap::new();
    let mut table = vec![vec![
        "β".to_string(),
        "abs(∂l/∂πc) at ref margin −20".into(),
        "at 0 (no preference)".into(),
        "at +5 (= the policy's: h = 0)".into(),
        "at +20".into(),
        "ratio +20 / −20".into(),
    ]];
    for (i, &beta) in DPO_BETAS.iter().enumerate() {
        let (v, gc, _) = dpo_curve(beta);
        let mag: Vec<f64> = gc.iter().map(|g| g.abs()).collect();
        gp.lines
            .push(Line::new(&format!("β = {beta}"), i, zip(&m, &mag)));
        vp.lines
            .push(Line::new(&format!("β = {beta}"), i, zip(&m, &v)));
        let at = |x: f64| mag[m.iter().position(|&y| y == x).expect("grid")];
        table.push(vec![
            num(beta),
            num(at(-20.0)),
            num(at(0.0)),
            num(at(5.0)),
            num(at(20.0)),
            num(at(20.0) / at(-20.0)),
        ]);
        for x in [-20.0, 0.0, 5.0, 20.0] {
            numbers.insert(format!("|grad| at β={beta}, ref margin {x}"), at(x));
        }
    }
    let caption = format!(
        "One preference pair whose policy log-probs are fixed (πc = {}, πr = {}: the policy prefers the chosen answer by 5 \
         nats) while the reference model's margin refc − refr sweeps −20 … 20; f32 kernel, ε = 0. The loss is \
         softplus(−β·h) with h = (πc − πr) − (refc − refr), and the gradient ∂l/∂πc = −β·σ(−β·h) = −∂l/∂πr: the same policy \
         gets a small push when the reference already prefers the rejected answer (β = 0.1: {} at −20) and a large one when \
         the reference prefers the chosen answer by more than the policy does ({} at +20, {}× more); at h = 0 the weight is \
         β/2 ({}). A larger β makes the switch sharper (β = 0.5: {} at −20, {} at +20).",
        DPO_POLICY.0,
        DPO_POLICY.1,
        num(numbers["|grad| at β=0.1, ref margin -20"]),
        num(numbers["|grad| at β=0.1, ref margin 20"]),
        num(numbers["|grad| at β=0.1, ref margin 20"] / numbers["|grad| at β=0.1, ref margin -20"]),
        num(numbers["|grad| at β=0.1, ref margin 5"]),
        num(numbers["|grad| at β=0.5, ref margin -20"]),
        num(numbers["|grad| at β=0.5, ref margin 20"]),
    );
    Demo {
        name: "dpo-reference",
        title: "DPO: how the reference model changes the gradient".into(),
        losses: vec!["dpo"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "dpo: the gradient weight against the reference model's margin".into(),
            panels: vec![gp, vp],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 5. weighted BCE vs focal

/// An imbalanced detection batch: logits and 0/1 targets.
#[derive(Clone, Debug)]
pub struct DetBatch {
    pub logits: Vec<f32>,
    pub target: Vec<f32>,
}

/// 10,000 anchors, 1 % positives: 100 positives with z ~ N(0.5, 1.5²), 9,700 background
/// negatives with z ~ N(−4, 1) and 200 confusable negatives with z ~ N(0.5, 1).
pub fn detection_batch() -> DetBatch {
    let mut rng = Rng(5);
    let mut logits = Vec::with_capacity(10_000);
    let mut target = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let (z, t) = if i % 100 == 0 {
            (0.5 + 1.5 * rng.normal(), 1.0)
        } else if i % 50 == 1 {
            (0.5 + rng.normal(), 0.0)
        } else {
            (-4.0 + rng.normal(), 0.0)
        };
        logits.push(z as f32);
        target.push(t as f32);
    }
    DetBatch { logits, target }
}

/// p_t = σ(z) for a positive, 1 − σ(z) = σ(−z) for a negative, in f64.
pub fn p_t(z: f64, t: f64) -> f64 {
    if t == 1.0 {
        sigmoid(z)
    } else {
        sigmoid(-z)
    }
}

/// Shares of the total gradient mass Σ|g_i|: (positives, easy negatives (p_t ≥ 0.9), hard
/// examples (p_t < 0.5, either label)).
pub fn gradient_shares(b: &DetBatch, grad: &[f64]) -> (f64, f64, f64) {
    let total: f64 = grad.iter().map(|g| g.abs()).sum();
    let (mut pos, mut easy, mut hard) = (0.0, 0.0, 0.0);
    for ((&z, &t), g) in b.logits.iter().zip(&b.target).zip(grad) {
        let (z, t, g) = (z as f64, t as f64, g.abs());
        let pt = p_t(z, t);
        if t == 1.0 {
            pos += g;
        } else if pt >= 0.9 {
            easy += g;
        }
        if pt < 0.5 {
            hard += g;
        }
    }
    (pos / total, easy / total, hard / total)
}

/// The f32 kernels' gradients (reduction `sum`): plain BCE on logits.
pub fn bce_grad(b: &DetBatch, pos_weight: Option<f32>) -> Vec<f64> {
    let pw = pos_weight.map(|w| vec![w; b.logits.len()]);
    let mut a = ClassArgs::new(&b.logits, &b.target).reduction(Reduction::Sum);
    if let Some(pw) = &pw {
        a = a.pos_weight(pw);
    }
    f64s(
        &bce_logits::<f32, f32>(&a)
            .expect("bce_logits")
            .grad
            .expect("grad"),
    )
}

/// The f32 kernel's focal gradient (reduction `sum`).
pub fn focal_grad(b: &DetBatch, alpha: Option<f64>, gamma: f64) -> Vec<f64> {
    let a = ClassArgs::new(&b.logits, &b.target).reduction(Reduction::Sum);
    f64s(
        &focal::<f32, f32>(&a, alpha, gamma)
            .expect("focal")
            .grad
            .expect("grad"),
    )
}

/// The γ grid of the focal sweep: 0, ¼, …, 5.
pub fn gammas() -> Vec<f64> {
    (0..=20).map(|k| k as f64 / 4.0).collect()
}

/// Weighted BCE vs focal on an imbalanced detection batch.
pub fn focal_vs_bce() -> Demo {
    let b = detection_batch();
    let n = b.logits.len();
    let n_pos = b.target.iter().filter(|&&t| t == 1.0).count();
    let pw = ((n - n_pos) as f64 / n_pos as f64) as f32;
    let configs: Vec<(String, (f64, f64, f64))> = vec![
        (
            "bce_logits".to_string(),
            gradient_shares(&b, &bce_grad(&b, None)),
        ),
        (
            format!("bce_logits, pos_weight = {pw}"),
            gradient_shares(&b, &bce_grad(&b, Some(pw))),
        ),
        (
            "focal γ = 0, α = 0.25 (α-weighted BCE)".into(),
            gradient_shares(&b, &focal_grad(&b, Some(0.25), 0.0)),
        ),
        (
            "focal γ = 2, α = 0.25".into(),
            gradient_shares(&b, &focal_grad(&b, Some(0.25), 2.0)),
        ),
        (
            "focal γ = 2, no α".into(),
            gradient_shares(&b, &focal_grad(&b, None, 2.0)),
        ),
    ];
    let mut table = vec![vec![
        "loss".to_string(),
        "positives' share".into(),
        "easy negatives' share (p_t ≥ 0.9)".into(),
        "hard examples' share (p_t < 0.5)".into(),
    ]];
    let mut numbers = BTreeMap::new();
    for (name, (p, e, h)) in &configs {
        table.push(vec![name.clone(), pct(*p), pct(*e), pct(*h)]);
        numbers.insert(format!("{name}: positives"), *p);
        numbers.insert(format!("{name}: easy negatives"), *e);
        numbers.insert(format!("{name}: hard"), *h);
    }
    let gs = gammas();
    let sweep: Vec<(f64, f64, f64)> = gs
        .iter()
        .map(|&g| gradient_shares(&b, &focal_grad(&b, Some(0.25), g)))
        .collect();
    let col = |k: usize| -> Vec<f64> { sweep.iter().map(|s| [s.0, s.1, s.2][k]).collect() };
    let flat = |v: f64| vec![(gs[0], v), (gs[gs.len() - 1], v)];
    let (bp, be, bh) = configs[0].1;
    let panel = Panel::new(
        "share of the total gradient Σ|∂l/∂z| (focal, α = 0.25, against γ; dashed: plain bce_logits)",
        "focal γ",
        "share",
    )
    .y_range(0.0, 1.0)
    .line(Line::new("positives", 0, zip(&gs, &col(0))))
    .line(Line::new("easy negatives (p_t ≥ 0.9)", 1, zip(&gs, &col(1))))
    .line(Line::new("hard examples (p_t < 0.5)", 2, zip(&gs, &col(2))))
    .line(Line::new("bce: positives", 0, flat(bp)).dashed())
    .line(Line::new("bce: easy negatives", 1, flat(be)).dashed())
    .line(Line::new("bce: hard examples", 2, flat(bh)).dashed());
    let n_easy = b
        .logits
        .iter()
        .zip(&b.target)
        .filter(|(&z, &t)| t == 0.0 && p_t(z as f64, t as f64) >= 0.9)
        .count();
    let n_hard = b
        .logits
        .iter()
        .zip(&b.target)
        .filter(|(&z, &t)| p_t(z as f64, t as f64) < 0.5)
        .count();
    numbers.insert("positives".into(), n_pos as f64);
    numbers.insert("easy negatives".into(), n_easy as f64);
    numbers.insert("hard examples".into(), n_hard as f64);
    let f2 = &configs[3].1;
    let caption = format!(
        "{n} anchors, {n_pos} positives (1 %), {n_easy} easy negatives (p_t ≥ 0.9) and {n_hard} hard examples (p_t < 0.5, \
         misclassified); f32 kernels, reduction `sum`; the share of Σ|∂l/∂z| each group carries. Plain BCE gives the easy \
         negatives {} of the gradient (each is small, but there are many) and the positives {}; pos_weight = {pw} lifts \
         the positives to {}, but leaves the easy negatives {}. Focal (γ = 2, α = 0.25) down-weights what is already \
         right: the easy negatives' share falls to {} and the hard examples' rises from {} to {}. With γ = 0, focal is \
         α-weighted BCE (the same gradient, element by element).",
        pct(be),
        pct(bp),
        pct(configs[1].1 .0),
        pct(configs[1].1 .1),
        pct(f2.1),
        pct(bh),
        pct(f2.2),
    );
    Demo {
        name: "focal-vs-bce",
        title: "Weighted BCE vs focal on an imbalanced detection batch".into(),
        losses: vec!["bce_logits", "focal"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "focal vs bce_logits: who carries the gradient (1 % positives)".into(),
            panels: vec![panel],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 6. multi-term objective

/// Shared logits θ `[N, C]` and class ids: the parameter vector both terms act on.
#[derive(Clone, Debug)]
pub struct MultiTermBatch {
    pub n: usize,
    pub c: usize,
    pub theta: Vec<f32>,
    pub target: Vec<i64>,
}

/// N = 64, C = 10, θ ~ N(0, 4²) (confident logits), class ids uniform.
pub fn multi_term_batch() -> MultiTermBatch {
    let (n, c) = (64, 10);
    let mut rng = Rng(6);
    let theta = (0..n * c).map(|_| (4.0 * rng.normal()) as f32).collect();
    let target = (0..n).map(|_| rng.below(c) as i64).collect();
    MultiTermBatch {
        n,
        c,
        theta,
        target,
    }
}

/// The weights λ = 2^k, k = −12..=4.
pub fn lambdas() -> Vec<f64> {
    (-12..=4).map(|k| libm::exp2(k as f64)).collect()
}

/// ∂/∂θ of the two terms (f32 kernels): cross_entropy(θ, y) (mean) and λ·mse(θ, 0) (mean; λ
/// as the cotangent of the reduced value).
pub fn multi_term_grads(b: &MultiTermBatch, lambda: f32) -> (Vec<f64>, Vec<f64>) {
    let ce = CrossEntropyArgs::new(&b.theta, b.n, b.c)
        .class_ids(&b.target)
        .eval::<f32>()
        .expect("cross_entropy");
    let zero = vec![0.0f32; b.theta.len()];
    let cot = [lambda];
    let m = mse::<f32, f32>(
        &ElementwiseArgs::new(&b.theta, &zero)
            .cotangent(&cot)
            .grads(true, false),
    )
    .expect("mse");
    (
        f64s(&ce.grad.expect("grad")),
        f64s(&m.grad_pred.expect("grad")),
    )
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

/// A multi-term objective: which term's gradient dominates as its weight varies.
pub fn multi_term() -> Demo {
    let b = multi_term_batch();
    let ls = lambdas();
    let (mut na, mut nb, mut nt, mut ca, mut cb) = (vec![], vec![], vec![], vec![], vec![]);
    for &l in &ls {
        let (ga, gb) = multi_term_grads(&b, l as f32);
        let tot: Vec<f64> = ga.iter().zip(&gb).map(|(x, y)| x + y).collect();
        na.push(norm(&ga));
        nb.push(norm(&gb));
        nt.push(norm(&tot));
        ca.push(cosine(&tot, &ga));
        cb.push(cosine(&tot, &gb));
    }
    let i1 = ls.iter().position(|&l| l == 1.0).expect("λ = 1");
    let lambda_star = na[i1] / nb[i1];
    let p1 = Panel::new("per-term gradient norms ‖∂/∂θ‖₂", "λ (log2)", "norm (log2)")
        .log2_x()
        .log2_y()
        .line(Line::new("cross_entropy", 0, zip(&ls, &na)))
        .line(Line::new("λ · mse(θ, 0)", 1, zip(&ls, &nb)))
        .line(Line::new("total", 2, zip(&ls, &nt)).dashed());
    let p2 = Panel::new(
        "cosine of the total gradient with each term's",
        "λ (log2)",
        "cosine",
    )
    .log2_x()
    .line(Line::new("cos(total, cross_entropy)", 0, zip(&ls, &ca)))
    .line(Line::new("cos(total, λ · mse)", 1, zip(&ls, &cb)));
    let mut numbers = BTreeMap::new();
    numbers.insert("‖∇ cross_entropy‖".into(), na[i1]);
    numbers.insert("‖∇ mse‖ at λ = 1".into(), nb[i1]);
    numbers.insert("λ* (equal norms)".into(), lambda_star);
    let mut table = vec![vec![
        "λ".to_string(),
        "‖∇ cross_entropy‖".into(),
        "‖∇ λ·mse‖".into(),
        "‖∇ total‖".into(),
        "λ·mse's share of the norms".into(),
    ]];
    for (i, &l) in ls.iter().enumerate() {
        if i % 4 == 0 || i == i1 {
            table.push(vec![
                format!("2^{}", libm::log2(l) as i32),
                num(na[i]),
                num(nb[i]),
                num(nt[i]),
                pct(nb[i] / (na[i] + nb[i])),
            ]);
        }
    }
    let caption = format!(
        "Total = cross_entropy(θ, y) + λ · mse(θ, 0) (a logit penalty) on shared logits θ `[{}, {}]` ~ N(0, 4²), both \
         `mean`, f32 kernels, λ passed as the mse term's cotangent. The cross-entropy gradient's norm does not depend on λ \
         ({}); the penalty's is linear in it ({} · λ), so the two are equal at λ* = {} (≈ 2^{:.1}): below it the \
         classification term steers (at λ = 2^−8 the total gradient's cosine with it is {}), above it the penalty does \
         (at λ = 2^4 the cosine with the penalty is {}). Tuning λ on a log grid moves the objective from one term to the \
         other within a few octaves of λ*.",
        b.n,
        b.c,
        num(na[i1]),
        num(nb[i1]),
        num(lambda_star),
        libm::log2(lambda_star),
        num(ca[4]),
        num(cb[ls.len() - 1]),
    );
    Demo {
        name: "multi-term",
        title: "A multi-term objective: which term dominates".into(),
        losses: vec!["cross_entropy", "mse"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "cross_entropy + λ·mse on shared logits: per-term gradient norms".into(),
            panels: vec![p1, p2],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 7. f16 gradient underflow and loss scaling

/// A token batch in f16: logits `[N, C]` and class ids.
#[derive(Clone, Debug)]
pub struct F16Batch {
    pub n: usize,
    pub c: usize,
    pub logits: Vec<f16>,
    pub target: Vec<i64>,
}

/// N = 256 tokens, C = 1000 classes, logits ~ N(0, 3²) rounded to f16, class ids uniform.
pub fn f16_batch() -> F16Batch {
    let (n, c) = (256, 1000);
    let mut rng = Rng(7);
    let logits = (0..n * c)
        .map(|_| <f16 as crate::Element>::from_f64(3.0 * rng.normal()))
        .collect();
    let target = (0..n).map(|_| rng.below(c) as i64).collect();
    F16Batch {
        n,
        c,
        logits,
        target,
    }
}

/// The loss scales s = 2^k, k = 0..=24.
pub const SCALES_LOG2: std::ops::RangeInclusive<i32> = 0..=24;

/// Largest magnitude that rounds to 0 in f16 (half of the smallest subnormal; ties to even).
pub const F16_FLUSH: f64 = 2.980_232_238_769_531_3e-8; // 2^−25
/// Smallest magnitude that rounds to inf in f16 (65504 + half an ulp; ties to even go up).
pub const F16_OVERFLOW: f64 = 65520.0;
/// Smallest normal f16 (below it a value keeps fewer than 11 significant bits).
pub const F16_MIN_NORMAL: f64 = 6.103_515_625e-5; // 2^−14

/// The f16 kernel's gradient of s · mean cross-entropy. The f16 cotangent cannot hold
/// s > 65504, so the scaled mean is written as the `sum` with cotangent c and uniform class
/// weight w, c·w = s/N (powers of 2, exact in f16): the kernel rounds s/N·(p − onehot) once.
pub fn f16_scaled_grad(b: &F16Batch, k: i32) -> Vec<f16> {
    let e = k - libm::log2(b.n as f64) as i32;
    let ce = e.min(15);
    let cot = [<f16 as crate::Element>::from_f64(libm::exp2(ce as f64))];
    let w = vec![<f16 as crate::Element>::from_f64(libm::exp2((e - ce) as f64)); b.c];
    CrossEntropyArgs::new(&b.logits, b.n, b.c)
        .class_ids(&b.target)
        .class_weight(&w)
        .cotangent(&cot)
        .reduction(Reduction::Sum)
        .eval::<f32>()
        .expect("cross_entropy")
        .grad
        .expect("grad")
}

/// The unscaled mean cross-entropy (f16 inputs, f32 value: the autocast pattern).
pub fn f16_mean_loss(b: &F16Batch) -> f64 {
    CrossEntropyArgs::new(&b.logits, b.n, b.c)
        .class_ids(&b.target)
        .grad(false)
        .eval::<f32>()
        .expect("cross_entropy")
        .value[0] as f64
}

/// The exact-enough gradient of the unscaled mean, (softmax − onehot)/N, in f64.
pub fn f16_grad_f64(b: &F16Batch) -> Vec<f64> {
    let mut g = Vec::with_capacity(b.n * b.c);
    for i in 0..b.n {
        let z = f64s(&b.logits[i * b.c..(i + 1) * b.c]);
        let mut p = softmax(&z);
        p[b.target[i] as usize] -= 1.0;
        g.extend(p.iter().map(|x| x / b.n as f64));
    }
    g
}

/// Per loss scale: what happens to the f16 gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleRow {
    pub log2_scale: i32,
    /// Share of elements that are 0 in the f16 kernel's gradient (the exact one never is).
    pub flushed_kernel: f64,
    /// Share of elements with |s·g| ≤ 2^−25 (they round to 0), g the f64 gradient.
    pub flushed_f64: f64,
    /// Share with |s·g| < 2^−14 (subnormal: fewer than 11 significant bits kept), g in f64.
    pub subnormal_f64: f64,
    /// Elements of the kernel's f16 gradient that are ±inf.
    pub grad_inf: usize,
    /// The scaled loss s·L in f32 (autocast) is inf.
    pub value_inf_f32: bool,
    /// The scaled loss s·L would be inf in f16.
    pub value_inf_f16: bool,
}

/// The rows of [`SCALES_LOG2`], the clean window (no flush, no inf: the smallest and largest
/// k) and the chosen scale (the window's middle, rounded down).
pub fn f16_scale_table(b: &F16Batch) -> (Vec<ScaleRow>, Option<(i32, i32)>, Option<i32>) {
    let g = f16_grad_f64(b);
    let loss = f16_mean_loss(b);
    let n = g.len() as f64;
    let rows: Vec<ScaleRow> = SCALES_LOG2
        .map(|k| {
            let s = libm::exp2(k as f64);
            let gk = f16_scaled_grad(b, k);
            ScaleRow {
                log2_scale: k,
                flushed_kernel: gk.iter().filter(|x| x.to_f64() == 0.0).count() as f64 / n,
                flushed_f64: g.iter().filter(|x| (s * x.abs()) <= F16_FLUSH).count() as f64 / n,
                subnormal_f64: g.iter().filter(|x| (s * x.abs()) < F16_MIN_NORMAL).count() as f64
                    / n,
                grad_inf: gk.iter().filter(|x| x.is_infinite()).count(),
                value_inf_f32: ((s * loss) as f32).is_infinite(),
                value_inf_f16: s * loss >= F16_OVERFLOW,
            }
        })
        .collect();
    let clean: Vec<i32> = rows
        .iter()
        .filter(|r| r.flushed_kernel == 0.0 && r.grad_inf == 0 && !r.value_inf_f32)
        .map(|r| r.log2_scale)
        .collect();
    let window = match (clean.first(), clean.last()) {
        (Some(&a), Some(&b)) if (b - a + 1) as usize == clean.len() => Some((a, b)),
        (Some(&a), Some(_)) => Some((a, a)),
        _ => None,
    };
    let chosen = window.map(|(a, b)| a + (b - a) / 2);
    (rows, window, chosen)
}

/// f16 gradient underflow with and without loss scaling.
pub fn f16_loss_scaling() -> Demo {
    let b = f16_batch();
    let (rows, window, chosen) = f16_scale_table(&b);
    let loss = f16_mean_loss(&b);
    let g = f16_grad_f64(&b);
    let (gmin, gmax) = g.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x.abs()), hi.max(x.abs()))
    });
    let ks: Vec<f64> = rows
        .iter()
        .map(|r| libm::exp2(r.log2_scale as f64))
        .collect();
    let col = |f: &dyn Fn(&ScaleRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let p1 = Panel::new(
        "share of gradient elements lost in f16",
        "loss scale s (log2)",
        "share",
    )
    .log2_x()
    .y_range(0.0, 1.0)
    .line(
        Line::new(
            "flushed to 0 (kernel, f16)",
            1,
            zip(&ks, &col(&|r| r.flushed_kernel)),
        )
        .markers(),
    )
    .line(
        Line::new(
            "flushed to 0 (f64 count)",
            0,
            zip(&ks, &col(&|r| r.flushed_f64)),
        )
        .dashed(),
    )
    .line(Line::new(
        "subnormal (< 2^−14: precision lost)",
        2,
        zip(&ks, &col(&|r| r.subnormal_f64)),
    ))
    .line(Line::new(
        "inf elements / 1000 (kernel)",
        3,
        zip(&ks, &col(&|r| (r.grad_inf as f64 / 1000.0).min(1.0))),
    ));
    let p1 = match window {
        Some((a, bb)) => p1.line(
            Line::new(
                "clean window (no flush, no inf)",
                4,
                (a..=bb).map(|k| (libm::exp2(k as f64), 0.05)).collect(),
            )
            .markers(),
        ),
        None => p1,
    };
    let mut table = vec![vec![
        "loss scale".to_string(),
        "flushed to 0 (kernel)".into(),
        "flushed (f64 count)".into(),
        "subnormal".into(),
        "inf gradient elements".into(),
        "s·L inf in f16".into(),
    ]];
    for r in &rows {
        if r.log2_scale % 4 == 0
            || Some(r.log2_scale) == chosen
            || window.is_some_and(|(a, b)| r.log2_scale == a || r.log2_scale == b)
        {
            table.push(vec![
                format!("2^{}", r.log2_scale),
                pct(r.flushed_kernel),
                pct(r.flushed_f64),
                pct(r.subnormal_f64),
                r.grad_inf.to_string(),
                if r.value_inf_f16 {
                    "inf".into()
                } else {
                    "finite".into()
                },
            ]);
        }
    }
    let mut numbers = BTreeMap::new();
    numbers.insert("flushed at scale 1".into(), rows[0].flushed_kernel);
    numbers.insert("min |gradient|".into(), gmin);
    numbers.insert("max |gradient|".into(), gmax);
    numbers.insert("mean loss".into(), loss);
    if let Some((a, bb)) = window {
        numbers.insert("window log2 low".into(), a as f64);
        numbers.insert("window log2 high".into(), bb as f64);
    }
    if let Some(c) = chosen {
        numbers.insert("chosen log2 scale".into(), c as f64);
    }
    let first_inf = rows.iter().find(|r| r.grad_inf > 0).map(|r| r.log2_scale);
    let first_f16_value_inf = rows.iter().find(|r| r.value_inf_f16).map(|r| r.log2_scale);
    let caption = format!(
        "Mean cross-entropy over N = {} tokens of C = {} classes, f16 logits ~ N(0, 3²), f16 gradients (the value in f32: \
         autocast), loss scale s = 2^0 … 2^24. The gradient (softmax − onehot)/N spans {} … {}; f16's smallest subnormal is \
         2^−24, so without scaling {} of the gradient elements flush to 0 (the f64 count of |s·g| ≤ 2^−25 agrees with the \
         zeros of the kernel's f16 output at every scale) and {} are subnormal. Scaling shifts the gradient up: {}; {}. \
         {}. (Held in f16, the scaled loss s·L = s·{} itself would be inf from s = 2^{} — keep the loss in f32.)",
        b.n,
        b.c,
        num(gmin),
        num(gmax),
        pct(rows[0].flushed_kernel),
        pct(rows[0].subnormal_f64),
        match window {
            Some((a, _)) => format!("no element flushes from s = 2^{a}"),
            None => "some element flushes at every scale shown".into(),
        },
        match first_inf {
            Some(k) => format!("from s = 2^{k} the largest elements overflow to inf"),
            None => "no gradient element overflows up to 2^24".into(),
        },
        match (window, chosen) {
            (Some((a, bb)), Some(c)) => format!(
                "The clean window is s ∈ [2^{a}, 2^{bb}]; the demonstration picks its middle, s = 2^{c}: no flush, no inf"
            ),
            _ => "No scale avoids both".into(),
        },
        num(loss),
        first_f16_value_inf.map_or("— (never)".to_string(), |k| k.to_string()),
    );
    Demo {
        name: "f16-loss-scaling",
        title: "f16 gradient underflow and loss scaling".into(),
        losses: vec!["cross_entropy"],
        caption,
        numbers,
        table,
        figure: Figure {
            title: "cross_entropy in f16: gradient elements lost against the loss scale".into(),
            panels: vec![p1],
        },
    }
}
