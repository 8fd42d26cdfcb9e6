//! Generators of the row-wise classification losses: `cross_entropy` (class ids on [N,C] and
//! [B,T,C], soft targets), `nll` and `multi_margin`.
//!
//! A case is a [`Frame`] (layout and sizes, reduction, params, class weights, the plan of
//! ignored / masked / zero-weight rows, cotangent, out dtype, poison) drawn first, then its rows
//! ([`Row`]: the C logits — or log-probabilities, or scores — in a *style*, the target, the
//! soft target, the row's weight, mask and cotangent draws), realized into a [`Case`]. Styles of
//! a row:
//!
//! - `typical`: N(0, σ²) with σ = 2^k, k ∈ [−2, 3] (the benchmark's N(0, 3²) among them);
//! - `confident`: one logit ahead of all others by a gap of 12 or more (12, 16, 20, 30, … up to
//!   the exp edges of the dtype and of f32) — the row where LSE − z_y cancels; usually at the
//!   target, sometimes not (a confidently wrong row: a large loss);
//! - `offset`: a huge common offset plus a small spread (1e6 in f32, 4096 in f16, 256 in bf16,
//!   16 times those, half the dtype max; either sign) — where a naive exp overflows and the
//!   spread is a few ulps of the offset;
//! - `edge`: every logit from the edge palette of the classification family (exp edges of the
//!   dtype and of the f32 compute type, the points where σ rounds to 1, the dtype max, ±0),
//!   −inf entries, sometimes one or two +inf;
//! - `tied`: several logits equal to the maximum;
//! - `bit_uniform`: every logit uniform over the bit patterns of the finite dtype values.
//!
//! Soft targets: one-hot, smoothed one-hot, near 0 and 1 (1e−6, 1 − 1e−6, subnormals, one ulp
//! from 1), uniform in [0, 1] (row sums are not checked), a simplex, and the rounded softmax of
//! the row itself (the gradient A·p − a then nearly cancels). `multi_margin` also gets scores
//! at its kinks, x_j = x_y − margin exactly, with p = 1 and 2. Ignore plans: none, random, all
//! ignored, one valid, and ragged sequences ([B,T,C]: each sequence a prefix of valid tokens,
//! then padding). `ignore_index` is −100 or a real class id (0, C − 1) or −1. Class weights:
//! absent, ones, typical, the edge weights (0, subnormal, the dtype max), all zero, the
//! target's class zero. Ignored, masked and zero-weight rows hold poison (NaN, ±inf, anything).
//! Long rows (C up to 32,000) and long batches (N from 2¹¹ to 2¹⁷) are their own regime.

use super::classification::{exp_edges, logit_magnitudes, target_edges};
use super::values::{self, nudge};
use super::{splitmix64, Regime};
use losscheck_core::dtype::pow2;
use losscheck_core::{catalogue, Case, Dtype, ParamValue, Reduction, Tensor};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The losses of this module.
pub const LOSSES: [&str; 3] = ["cross_entropy", "nll", "multi_margin"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ce,
    Nll,
    Margin,
}

fn kind(loss: &str) -> Kind {
    match loss {
        "cross_entropy" => Kind::Ce,
        "nll" => Kind::Nll,
        "multi_margin" => Kind::Margin,
        _ => panic!("no multiclass generators for {loss}"),
    }
}

/// The data input of each loss.
fn data_input(k: Kind) -> &'static str {
    match k {
        Kind::Ce => "logits",
        Kind::Nll => "logp",
        Kind::Margin => "scores",
    }
}

/// The layout of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// [N, C] with class ids [N].
    Nc,
    /// [B, T, C] with class ids [B, T].
    Btc { b: usize, t: usize },
    /// [N, C] with soft targets [N, C].
    Soft,
}

/// How a row's C values are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Typical,
    Confident,
    Offset,
    Edge,
    Tied,
    BitUniform,
}

/// Which rows are ignored (class-id targets = `ignore_index`) or masked (`multi_margin`).
#[derive(Clone, Debug)]
pub enum Skip {
    None,
    /// Each row's own draw (`Row::keep`).
    Random,
    All,
    OneValid(Index),
    /// [B,T,C]: sequence b keeps its first `len_b` tokens (`Row::keep` of token 0 of each
    /// sequence decides nothing; the lengths come from the rows' `len` draws).
    Ragged,
}

/// Everything about a case but its rows.
#[derive(Clone, Debug)]
pub struct Frame {
    pub layout: Layout,
    /// Rows for [N, C] layouts: drawn in this inclusive range (shrinks toward fewer).
    pub rows: (usize, usize),
    pub c: usize,
    pub reduction: Reduction,
    /// Scalar cotangent of a reduced case (per row for `none`: `Row::cot`).
    pub cotangent: Option<f64>,
    pub grad: bool,
    pub out_f32: bool,
    pub ignore_index: i64,
    pub label_smoothing: f64,
    /// `multi_margin`: margin and p.
    pub margin: f64,
    pub p: i64,
    pub class_weight: Option<Vec<f64>>,
    pub skip: Skip,
    /// `multi_margin`: per-row weights.
    pub row_weight: bool,
    /// Styles the rows are drawn from (each row picks one).
    pub styles: Vec<Style>,
    /// Inactive rows hold poison.
    pub poison: bool,
    /// A NaN in a (possibly valid) row: (row, column).
    pub nan_at: Option<(Index, Index)>,
    /// `multi_margin`: put some scores exactly at a kink.
    pub kinks: bool,
    /// Soft targets may be the row's own rounded softmax.
    pub self_soft: bool,
}

/// One row's draws.
#[derive(Clone, Debug)]
pub struct Row {
    pub style: Index,
    /// Standard normal deviates (C of them), the raw material of every style.
    pub z: Vec<f64>,
    /// Per-entry picks from palettes.
    pub pick: Vec<Index>,
    pub scale_exp: i32,
    pub target: Index,
    /// `confident`: the dominant entry is the target.
    pub at_target: bool,
    /// Gap index (confident) or offset index (offset).
    pub knob: Index,
    pub neg: bool,
    pub keep: bool,
    /// [B,T,C] ragged: the sequence's valid length as a fraction.
    pub len: f64,
    pub soft_style: Index,
    pub soft: Vec<f64>,
    pub weight: f64,
    pub cot: f64,
    pub poison: f64,
    pub poison_at: Index,
    /// Some entries replaced by −inf (edge style) / kinked (multi_margin).
    pub specials: Vec<bool>,
    pub plus_inf: u8,
}

fn normal_vec(c: usize) -> BoxedStrategy<Vec<f64>> {
    proptest::collection::vec(values::normal(), c..=c).boxed()
}

fn row_strategy(fr: &Frame, dtype: Dtype) -> BoxedStrategy<Row> {
    let c = fr.c;
    let edge_w = values::edge_weight(dtype);
    (
        (
            any::<Index>(),
            normal_vec(c),
            proptest::collection::vec(any::<Index>(), c..=c),
            -2i32..=3,
            any::<Index>(),
            prop::bool::weighted(0.8),
            any::<Index>(),
            any::<bool>(),
        ),
        (
            prop::bool::weighted(0.7),
            0.0f64..=1.0,
            any::<Index>(),
            proptest::collection::vec(0.0f64..=1.0, c..=c),
            prop_oneof![3 => values::typical_weight(dtype), 1 => edge_w],
            values::typical_cotangent(dtype),
            values::poison(dtype),
            any::<Index>(),
            proptest::collection::vec(prop::bool::weighted(0.15), c..=c),
            prop_oneof![12 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
        ),
    )
        .prop_map(
            |(
                (style, z, pick, scale_exp, target, at_target, knob, neg),
                (keep, len, soft_style, soft, weight, cot, poison, poison_at, specials, plus_inf),
            )| Row {
                style,
                z,
                pick,
                scale_exp,
                target,
                at_target,
                knob,
                neg,
                keep,
                len,
                soft_style,
                soft,
                weight,
                cot,
                poison,
                poison_at,
                specials,
                plus_inf,
            },
        )
        .boxed()
}

/// The huge common offsets of a dtype: 1e6 (f32), 4096 (f16), 256 (bf16), 16 times those,
/// half the dtype max.
pub fn offsets(dtype: Dtype) -> Vec<f64> {
    let base = match dtype {
        Dtype::F32 => 1e6,
        Dtype::F16 => 4096.0,
        Dtype::Bf16 => 256.0,
    };
    vec![
        dtype.round(base),
        dtype.round(16.0 * base),
        dtype.round(dtype.max() / 2.0),
    ]
}

/// The gaps of a confident row: 12 and beyond, to the exp edges of the dtype and of f32.
pub fn gaps(dtype: Dtype) -> Vec<f64> {
    let mut v = vec![12.0, 12.5, 13.0, 16.0, 20.0, 24.0, 30.0, 40.0, 60.0, 100.0];
    for e in exp_edges(dtype) {
        if e > 12.0 {
            v.extend([e, dtype.next_up(e), dtype.next_down(e)]);
        }
    }
    let mut v: Vec<f64> = v
        .into_iter()
        .map(|x| dtype.round(x))
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// Signed edge palette of logits.
fn logit_palette(dtype: Dtype) -> Vec<f64> {
    let mut v = Vec::new();
    for m in logit_magnitudes(dtype) {
        v.push(m);
        v.push(-m);
    }
    v.extend(exp_edges(dtype));
    v.push(dtype.max());
    v.push(-dtype.max());
    v.push(-0.0);
    v.retain(|x| x.is_finite());
    v
}

/// The C values of a row in its style (before targets, specials and poison).
fn row_values(k: Kind, fr: &Frame, row: &Row, dtype: Dtype, y: usize) -> Vec<f64> {
    let c = fr.c;
    let style = fr.styles[row.style.index(fr.styles.len())];
    let sigma = pow2(row.scale_exp);
    let typical = |z: f64| dtype.round(z * sigma);
    let mut v: Vec<f64> = match style {
        Style::Typical => row.z.iter().map(|&z| typical(z)).collect(),
        Style::BitUniform => {
            let top = values::max_ordinal(dtype);
            row.pick
                .iter()
                .map(|ix| dtype.from_ordinal(ix.index(2 * top as usize + 1) as i64 - top))
                .collect()
        }
        Style::Edge => {
            let pal = logit_palette(dtype);
            row.pick.iter().map(|ix| pal[ix.index(pal.len())]).collect()
        }
        Style::Offset => {
            let offs = offsets(dtype);
            let off = offs[row.knob.index(offs.len())];
            let off = if row.neg { -off } else { off };
            row.z
                .iter()
                .map(|&z| dtype.round(off + z * sigma * dtype.ulp_at(off).max(1.0)))
                .collect()
        }
        Style::Confident => {
            let mut v: Vec<f64> = row
                .z
                .iter()
                .map(|&z| dtype.round(z.clamp(-3.0, 3.0)))
                .collect();
            let g = gaps(dtype);
            let gap = g[row.knob.index(g.len())];
            let dom = if row.at_target || c == 0 {
                y
            } else {
                row.pick[0].index(c)
            };
            if c > 0 {
                let others = v
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != dom)
                    .map(|(_, &x)| x)
                    .fold(f64::NEG_INFINITY, f64::max);
                let base = if others.is_finite() { others } else { 0.0 };
                let top = dtype.round(base + gap);
                v[dom] = if top.is_finite() { top } else { dtype.max() };
            }
            v
        }
        Style::Tied => {
            let mut v: Vec<f64> = row.z.iter().map(|&z| typical(z)).collect();
            let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for (i, x) in v.iter_mut().enumerate() {
                if row.specials[i] || i == y {
                    *x = m;
                }
            }
            v
        }
    };
    if k == Kind::Nll && style == Style::Typical {
        // log-probabilities are ≤ 0 in the usual case
        for x in v.iter_mut() {
            *x = -x.abs();
        }
    }
    // −inf entries (and +inf ones) in the edge style.
    if style == Style::Edge && c > 0 {
        for (i, x) in v.iter_mut().enumerate() {
            if row.specials[i] {
                *x = f64::NEG_INFINITY;
            }
        }
        for j in 0..row.plus_inf as usize {
            let i = row.pick[j % c].index(c);
            v[(i + j) % c] = f64::INFINITY;
        }
    }
    // multi_margin kinks: x_j = x_y − margin exactly (when representable).
    if k == Kind::Margin && fr.kinks && c > 1 {
        let xy = v[y];
        for i in 0..c {
            if i != y && row.specials[i] {
                let x = xy - fr.margin;
                if dtype.round(x) == x {
                    v[i] = x;
                }
            }
        }
    }
    v
}

/// A soft-target row.
fn soft_row(fr: &Frame, row: &Row, dtype: Dtype, y: usize, z: &[f64]) -> Vec<f64> {
    let c = fr.c;
    let n_styles = if fr.self_soft { 6 } else { 5 };
    let unit = |x: f64| dtype.round(x).clamp(0.0, 1.0);
    match row.soft_style.index(n_styles) {
        0 => (0..c).map(|i| (i == y) as u8 as f64).collect(),
        1 => {
            let d = row.soft[0] * 0.2;
            (0..c)
                .map(|i| {
                    if i == y {
                        unit(1.0 - d)
                    } else {
                        unit(d / (c.max(2) - 1) as f64)
                    }
                })
                .collect()
        }
        2 => {
            let pal = target_edges(dtype);
            row.pick.iter().map(|ix| pal[ix.index(pal.len())]).collect()
        }
        3 => row.soft.iter().map(|&x| unit(x)).collect(),
        4 => {
            let s: f64 = row.soft.iter().sum();
            row.soft
                .iter()
                .map(|&x| if s > 0.0 { unit(x / s) } else { 0.0 })
                .collect()
        }
        _ => {
            // the row's own softmax, rounded (finite rows only)
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !m.is_finite() {
                return (0..c).map(|i| (i == y) as u8 as f64).collect();
            }
            let e: Vec<f64> = z.iter().map(|&x| libm::exp(x - m)).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|&x| unit(x / s)).collect()
        }
    }
}

/// Build the case of a frame and its rows.
pub fn realize(loss: &str, dtype: Dtype, fr: &Frame, rows: Vec<Row>) -> Case {
    let k = kind(loss);
    let c = fr.c;
    let n = rows.len();
    let mut case = Case::new(loss, dtype).expect("a catalogue loss");
    case.set_reduction(fr.reduction);
    if dtype.is_16bit() && fr.out_f32 {
        case.out_dtype = Dtype::F32;
    }
    if k != Kind::Margin {
        case.params
            .insert("ignore_index".into(), ParamValue::Int(fr.ignore_index));
    }
    if k == Kind::Ce {
        case.params.insert(
            "label_smoothing".into(),
            ParamValue::Float(fr.label_smoothing),
        );
    }
    if k == Kind::Margin {
        case.params
            .insert("margin".into(), ParamValue::Float(fr.margin));
        case.params.insert("p".into(), ParamValue::Int(fr.p));
    }
    let input = data_input(k);
    case.grad = if fr.grad {
        vec![input.to_string()]
    } else {
        vec![]
    };

    // Which rows are active (not ignored / masked)?
    let mut active: Vec<bool> = match &fr.skip {
        Skip::None => vec![true; n],
        Skip::Random => rows.iter().map(|r| r.keep).collect(),
        Skip::All => vec![false; n],
        Skip::OneValid(ix) => {
            let j = if n == 0 { 0 } else { ix.index(n) };
            (0..n).map(|i| i == j).collect()
        }
        Skip::Ragged => match fr.layout {
            Layout::Btc { b, t } => {
                let mut a = vec![false; n];
                for s in (0..b).filter(|_| t > 0) {
                    let len = (rows[s * t].len * (t as f64 + 1.0)).floor() as usize;
                    for (j, x) in a[s * t..(s + 1) * t].iter_mut().enumerate() {
                        *x = j < len.min(t);
                    }
                }
                a
            }
            _ => rows.iter().map(|r| r.keep).collect(),
        },
    };
    if fr.layout == Layout::Soft {
        active = vec![true; n];
    }
    let weights: Option<Vec<f64>> = (k == Kind::Margin && fr.row_weight)
        .then(|| rows.iter().map(|r| dtype.round(r.weight)).collect());

    let mut data = Vec::with_capacity(n * c);
    let mut targets = Vec::with_capacity(n);
    let mut soft = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let y = if c == 0 { 0 } else { row.target.index(c) };
        let mut v = row_values(k, fr, row, dtype, y);
        let inactive = !active[i] || weights.as_ref().is_some_and(|w| w[i] == 0.0);
        if fr.poison && inactive && c > 0 {
            let p = dtype.round(row.poison);
            v[row.poison_at.index(c)] = p;
            if row.neg {
                for x in v.iter_mut() {
                    *x = p;
                }
            }
        }
        if fr.layout == Layout::Soft {
            soft.extend(soft_row(fr, row, dtype, y, &v));
        }
        targets.push(if active[i] || k == Kind::Margin {
            y as i64
        } else {
            fr.ignore_index
        });
        data.extend(v);
    }
    if let (Some((ri, ci)), true) = (&fr.nan_at, n > 0 && c > 0) {
        let (i, j) = (ri.index(n), ci.index(c));
        data[i * c + j] = f64::NAN;
    }
    let (data_shape, row_shape) = match fr.layout {
        Layout::Btc { b, t } => (vec![b, t, c], vec![b, t]),
        _ => (vec![n, c], vec![n]),
    };
    case.inputs
        .insert(input.into(), Tensor::float(dtype, data_shape, data));
    if fr.layout == Layout::Soft {
        case.inputs
            .insert("target".into(), Tensor::float(dtype, vec![n, c], soft));
    } else {
        // An ignore_index that is a class id makes its rows ignored: keep the plan's meaning
        // by moving active targets off it (when there is another class).
        let ii = fr.ignore_index;
        if (0..c as i64).contains(&ii) && c > 1 {
            for (t, &a) in targets.iter_mut().zip(&active) {
                if a && *t == ii && k != Kind::Margin {
                    *t = (ii + 1) % c as i64;
                }
            }
        }
        case.inputs
            .insert("target".into(), Tensor::int(row_shape.clone(), targets));
    }
    if let Some(cw) = &fr.class_weight {
        case.inputs.insert(
            "class_weight".into(),
            Tensor::float(dtype, vec![c], cw.iter().map(|&w| dtype.round(w)).collect()),
        );
    }
    if k == Kind::Margin {
        if let Some(w) = weights {
            case.inputs
                .insert("weight".into(), Tensor::float(dtype, vec![n], w));
        }
        if !matches!(fr.skip, Skip::None) {
            case.inputs.insert(
                "mask".into(),
                Tensor::int(vec![n], active.iter().map(|&a| a as i64).collect()),
            );
        }
    }
    if let Some(cot) = fr.cotangent {
        let t = if fr.reduction == Reduction::None {
            Tensor::float(
                dtype,
                row_shape,
                rows.iter().map(|r| dtype.round(r.cot)).collect(),
            )
        } else {
            Tensor::scalar(dtype, dtype.round(cot))
        };
        case.inputs.insert("cotangent".into(), t);
    }
    case
}

// ---- frames by regime

fn styles_of(r: Regime) -> Vec<Style> {
    use Style::*;
    match r {
        Regime::Typical => vec![Typical, Typical, Typical, Confident],
        Regime::BitUniform => vec![BitUniform],
        Regime::Extreme => vec![Edge, Edge, Confident, Offset, Tied, Typical],
        Regime::Kinks => vec![Confident, Tied, Offset, Typical],
        _ => vec![Typical, Typical, Confident, Edge, Offset],
    }
}

fn class_weights(dtype: Dtype, c: usize, r: Regime) -> BoxedStrategy<Option<Vec<f64>>> {
    let typical = proptest::collection::vec(values::typical_weight(dtype), c..=c);
    let edge = proptest::collection::vec(values::edge_weight(dtype), c..=c);
    match r {
        Regime::Weighted => prop_oneof![
            1 => Just(None),
            1 => Just(Some(vec![1.0; c])),
            2 => typical.prop_map(Some),
            4 => edge.prop_map(Some),
            1 => Just(Some(vec![0.0; c])),
            1 => (any::<Index>(), proptest::collection::vec(values::typical_weight(dtype), c..=c))
                .prop_map(move |(ix, mut w)| {
                    if c > 0 {
                        w[ix.index(c)] = 0.0;
                    }
                    Some(w)
                }),
        ]
        .boxed(),
        Regime::BitUniform => prop_oneof![
            2 => Just(None),
            1 => proptest::collection::vec(values::bit_uniform_nonneg(dtype), c..=c).prop_map(Some),
        ]
        .boxed(),
        _ => prop_oneof![
            5 => Just(None),
            2 => typical.prop_map(Some),
            1 => edge.prop_map(Some),
        ]
        .boxed(),
    }
}

fn skip_plan(r: Regime) -> BoxedStrategy<Skip> {
    match r {
        Regime::Masked => prop_oneof![
            3 => Just(Skip::Random),
            2 => Just(Skip::All),
            2 => any::<Index>().prop_map(Skip::OneValid),
            2 => Just(Skip::Ragged),
        ]
        .boxed(),
        Regime::Shapes => prop_oneof![
            3 => Just(Skip::None),
            1 => Just(Skip::All),
            1 => Just(Skip::Random),
        ]
        .boxed(),
        _ => prop_oneof![
            5 => Just(Skip::None),
            3 => Just(Skip::Random),
            1 => Just(Skip::Ragged),
            1 => any::<Index>().prop_map(Skip::OneValid),
        ]
        .boxed(),
    }
}

fn smoothing(r: Regime) -> BoxedStrategy<f64> {
    let spec = catalogue::spec("cross_entropy")
        .unwrap()
        .param("label_smoothing")
        .unwrap();
    let any = values::param(spec, Dtype::F32).prop_map(|v| v.as_f64().unwrap_or(0.0));
    let w0 = match r {
        Regime::Masked | Regime::Weighted | Regime::Extreme => 1,
        _ => 2,
    };
    prop_oneof![
        w0 => Just(0.0),
        1 => any,
        1 => select(vec![0.1, 0.5, 1.0, pow2(-10), Dtype::F32.round(1e-3)]),
    ]
    .boxed()
}

fn margin() -> BoxedStrategy<f64> {
    let spec = catalogue::spec("multi_margin")
        .unwrap()
        .param("margin")
        .unwrap();
    prop_oneof![
        3 => Just(1.0),
        2 => select(vec![0.0, -1.0, 0.5, 2.0, 4.0, 0.25]),
        2 => values::param(spec, Dtype::F32).prop_map(|v| v.as_f64().unwrap_or(1.0)),
    ]
    .boxed()
}

fn ignore_index(c: usize) -> BoxedStrategy<i64> {
    prop_oneof![
        6 => Just(-100i64),
        1 => Just(-1i64),
        1 => Just(0i64),
        1 => Just(c.saturating_sub(1) as i64),
    ]
    .boxed()
}

/// Layout and row counts: (layout, rows range, c).
fn shape(k: Kind, r: Regime) -> BoxedStrategy<(Layout, (usize, usize), usize)> {
    let ce = k == Kind::Ce;
    let typical_c =
        prop_oneof![1 => Just(1usize), 2 => 2usize..=4, 4 => 2usize..=12, 1 => 13usize..=64];
    let nc = move |rows: (usize, usize)| {
        typical_c
            .clone()
            .prop_map(move |c| (Layout::Nc, rows, c))
            .boxed()
    };
    let soft = prop_oneof![1 => Just(1usize), 4 => 2usize..=12]
        .prop_map(|c| (Layout::Soft, (1, 8), c))
        .boxed();
    let btc = (
        0usize..=4,
        0usize..=6,
        prop_oneof![1 => Just(1usize), 4 => 2usize..=10],
    )
        .prop_map(|(b, t, c)| (Layout::Btc { b, t }, (b * t, b * t), c))
        .boxed();
    if r == Regime::Shapes {
        let degenerate = prop_oneof![
            2 => Just((Layout::Nc, (0, 0), 0)),
            2 => (0usize..=3).prop_map(|c| (Layout::Nc, (0, 0), c)),
            2 => Just((Layout::Nc, (1, 3), 1)),
            1 => Just((Layout::Nc, (1, 1), 2)),
        ];
        if !ce {
            return degenerate.boxed();
        }
        return prop_oneof![
            4 => degenerate,
            1 => Just((Layout::Soft, (0, 0), 3)),
            1 => Just((Layout::Soft, (1, 2), 1)),
            1 => (0usize..=2, 0usize..=2, 1usize..=3)
                .prop_map(|(b, t, c)| (Layout::Btc { b, t }, (b * t, b * t), c)),
        ]
        .boxed();
    }
    if ce {
        prop_oneof![5 => nc((1, 8)), 2 => btc, 2 => soft].boxed()
    } else {
        nc((1, 8))
    }
}

fn frame(k: Kind, dtype: Dtype, r: Regime) -> BoxedStrategy<Frame> {
    let styles = styles_of(r);
    shape(k, r)
        .prop_flat_map(move |(layout, rows, c)| {
            let btc = matches!(layout, Layout::Btc { .. });
            let reduction = if btc {
                select(vec![
                    Reduction::Sum,
                    Reduction::Mean,
                    Reduction::SequenceMean,
                    Reduction::None,
                ])
                .boxed()
            } else {
                select(vec![Reduction::Sum, Reduction::Mean, Reduction::None]).boxed()
            };
            let cot = match r {
                Regime::Extreme | Regime::BitUniform => values::edge_cotangent(dtype),
                _ => values::typical_cotangent(dtype),
            };
            (
                (
                    Just(layout),
                    Just(rows),
                    Just(c),
                    reduction,
                    proptest::option::weighted(0.3, cot),
                    prop::bool::weighted(0.85),
                    prop::bool::weighted(0.3),
                    ignore_index(c),
                ),
                (
                    smoothing(r),
                    margin(),
                    prop_oneof![1 => Just(1i64), 1 => Just(2i64)],
                    class_weights(dtype, c, r),
                    skip_plan(r),
                    prop::bool::weighted(if r == Regime::Weighted { 0.8 } else { 0.2 }),
                    prop::bool::weighted(0.6),
                    proptest::option::weighted(
                        if r == Regime::Extreme { 0.1 } else { 0.01 },
                        (any::<Index>(), any::<Index>()),
                    ),
                    prop::bool::weighted(if r == Regime::Kinks { 0.8 } else { 0.1 }),
                    prop::bool::weighted(0.1),
                ),
            )
        })
        .prop_map(
            move |(
                (layout, rows, c, reduction, cotangent, grad, out_f32, ignore_index),
                (ls, margin, p, class_weight, skip, row_weight, poison, nan_at, kinks, self_soft),
            )| {
                let skip = match (&layout, skip) {
                    (Layout::Soft, _) => Skip::None,
                    (Layout::Btc { .. }, s) => s,
                    (_, Skip::Ragged) => Skip::Random,
                    (_, s) => s,
                };
                Frame {
                    layout,
                    rows,
                    c,
                    reduction,
                    cotangent,
                    grad,
                    out_f32,
                    ignore_index,
                    label_smoothing: if k == Kind::Ce { ls } else { 0.0 },
                    margin: if k == Kind::Margin {
                        Dtype::F32.round(margin)
                    } else {
                        1.0
                    },
                    p,
                    class_weight,
                    skip,
                    row_weight: k == Kind::Margin && row_weight,
                    styles: styles.clone(),
                    poison,
                    nan_at,
                    kinks: k == Kind::Margin && kinks,
                    // soft targets equal to the row's own rounded softmax: the gradient
                    // A·p − a cancels (the kernels' double-double path)
                    self_soft,
                }
            },
        )
        .boxed()
}

fn from_frame(
    loss: &'static str,
    dtype: Dtype,
    frames: BoxedStrategy<Frame>,
) -> BoxedStrategy<Case> {
    frames
        .prop_flat_map(move |fr| {
            let rows = proptest::collection::vec(row_strategy(&fr, dtype), fr.rows.0..=fr.rows.1);
            (Just(fr), rows)
        })
        .prop_map(move |(fr, rows)| realize(loss, dtype, &fr, rows))
        .boxed()
}

/// The strategy of one regime of a multiclass loss.
pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let loss: &'static str = catalogue::spec(loss).unwrap().id;
    let k = kind(loss);
    if r == Regime::LongBatch {
        return prop_oneof![
            1 => long_rows(loss, dtype),
            1 => long_batch(loss, dtype),
        ]
        .boxed();
    }
    from_frame(loss, dtype, frame(k, dtype, r))
}

/// Long rows: N ∈ [1, 2], C from 1,024 to 32,000, typical / confident / offset rows.
fn long_rows(loss: &'static str, dtype: Dtype) -> BoxedStrategy<Case> {
    let k = kind(loss);
    (
        frame(k, dtype, Regime::Typical),
        1024usize..=32_000,
        1usize..=2,
    )
        .prop_map(move |(mut fr, c, n)| {
            fr.c = c;
            fr.layout = if fr.layout == Layout::Soft {
                Layout::Soft
            } else {
                Layout::Nc
            };
            if fr.skip.is_ragged() {
                fr.skip = Skip::None;
            }
            fr.rows = (n, n);
            fr.class_weight = fr
                .class_weight
                .filter(|w| !w.is_empty())
                .map(|w| (0..c).map(|i| w[i % w.len()]).collect());
            fr.styles = vec![Style::Typical, Style::Confident, Style::Offset];
            if fr.reduction == Reduction::SequenceMean {
                fr.reduction = Reduction::Mean;
            }
            fr
        })
        .prop_flat_map(move |fr| {
            let rows = proptest::collection::vec(row_strategy(&fr, dtype), fr.rows.0..=fr.rows.1);
            (Just(fr), rows)
        })
        .prop_map(move |(fr, rows)| realize(loss, dtype, &fr, rows))
        .boxed()
}

/// Long batches: N from 2^11 to 2^17 rows of C ∈ [2, 3], a pattern of up to 16 rows tiled (each
/// copy's finite values a few ulps off), where 16-bit sums stall.
fn long_batch(loss: &'static str, dtype: Dtype) -> BoxedStrategy<Case> {
    let k = kind(loss);
    let pattern = (frame(k, dtype, Regime::Typical), 2usize..=3)
        .prop_map(|(mut fr, c)| {
            fr.c = c;
            fr.layout = if fr.layout == Layout::Soft {
                Layout::Soft
            } else {
                Layout::Nc
            };
            if fr.skip.is_ragged() {
                fr.skip = Skip::Random;
            }
            fr.rows = (1, 16);
            fr.class_weight = fr
                .class_weight
                .map(|w| (0..c).map(|i| w.get(i).copied().unwrap_or(1.0)).collect());
            if fr.reduction == Reduction::SequenceMean || fr.reduction == Reduction::None {
                fr.reduction = Reduction::Mean;
            }
            fr.cotangent = None;
            fr
        })
        .prop_flat_map(move |fr| {
            let rows = proptest::collection::vec(row_strategy(&fr, dtype), fr.rows.0..=fr.rows.1);
            (Just(fr), rows)
        })
        .prop_map(move |(fr, rows)| realize(loss, dtype, &fr, rows));
    (11i32..=17, 0.0f64..1.0, any::<u64>(), pattern)
        .prop_map(move |(e, t, seed, case)| {
            let n = ((pow2(e) * (1.0 + t)).min(pow2(17)) as usize).max(1 << 11);
            tile_rows(case, n, seed)
        })
        .boxed()
}

impl Skip {
    fn is_ragged(&self) -> bool {
        matches!(self, Skip::Ragged)
    }
}

/// Tile a [N, C] case to `n` rows: row i copies pattern row h(i) mod N (h: splitmix64 from
/// `seed`), its finite data values nudged by up to ±3 ulps (soft targets, class ids, masks and
/// weights copied).
pub fn tile_rows(case: Case, n: usize, seed: u64) -> Case {
    let dtype = case.dtype;
    let input = data_input(kind(&case.loss));
    let k = match case.inputs.get(input).map(|t| t.shape.clone()) {
        Some(s) if s.len() == 2 && s[0] > 0 => s[0],
        _ => return case,
    };
    let picks: Vec<(usize, u64)> = (0..n as u64)
        .map(|i| {
            let h = splitmix64(seed ^ splitmix64(i));
            ((h % k as u64) as usize, h >> 32)
        })
        .collect();
    let mut out = case.clone();
    for (name, t) in case.inputs.iter() {
        if t.shape.first() != Some(&k) || name == "class_weight" || t.shape.is_empty() {
            continue;
        }
        let per = t.len() / k;
        let mut shape = t.shape.clone();
        shape[0] = n;
        let nt = match &t.data {
            losscheck_core::Data::F(v) => {
                let mut d = Vec::with_capacity(n * per);
                for &(j, h) in &picks {
                    for (q, &x) in v[j * per..(j + 1) * per].iter().enumerate() {
                        d.push(if name == input {
                            let step = ((splitmix64(h ^ q as u64) % 7) as i64) - 3;
                            nudge(dtype, x, step)
                        } else {
                            x
                        });
                    }
                }
                Tensor::float(dtype, shape, d)
            }
            losscheck_core::Data::I(v) => {
                let mut d = Vec::with_capacity(n * per);
                for &(j, _) in &picks {
                    d.extend_from_slice(&v[j * per..(j + 1) * per]);
                }
                Tensor::int(shape, d)
            }
        };
        out.inputs.insert(name.clone(), nt);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::gen::{regime_strategy, regimes, runner_for};
    use losscheck_core::{validate, Data};
    use proptest::strategy::ValueTree;

    fn draw(loss: &str, d: Dtype, r: Regime, i: u64) -> Case {
        let mut run = runner_for(5, loss, d, i);
        regime_strategy(loss, d, r)
            .new_tree(&mut run)
            .unwrap()
            .current()
    }

    #[test]
    fn multiclass_cases_are_valid_and_exact() {
        for loss in LOSSES {
            for d in Dtype::ALL {
                for &(r, _) in regimes(loss) {
                    let n = if r == Regime::LongBatch { 4 } else { 150 };
                    for i in 0..n {
                        let c = draw(loss, d, r, i);
                        validate(&c).unwrap_or_else(|e| {
                            panic!("{loss} {d} {r} #{i}: {e}\n{}", c.to_json())
                        });
                        for (name, t) in &c.inputs {
                            match &t.data {
                                Data::F(v) => {
                                    for &x in v {
                                        assert!(
                                            d.contains(x),
                                            "{loss} {d} {r}: {name} holds {x:e}"
                                        );
                                    }
                                }
                                Data::I(_) => assert!(name == "target" || name == "mask"),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Facts about one case that the regimes must reach.
    fn facts(c: &Case) -> Vec<&'static str> {
        let mut f = Vec::new();
        let k = kind(&c.loss);
        let x = &c.inputs[data_input(k)];
        let shape = &x.shape;
        let cdim = *shape.last().unwrap();
        let n = if cdim == 0 { 0 } else { x.len() / cdim };
        let v = x.f().unwrap();
        if n == 0 {
            f.push("N = 0");
        }
        if cdim == 1 {
            f.push("C = 1");
        }
        if cdim >= 1024 {
            f.push("C ≥ 1024");
        }
        if n >= 1 << 11 {
            f.push("N ≥ 2^11");
        }
        if shape.len() == 3 {
            f.push("[B,T,C]");
        }
        let red = c.reduction();
        if red == Reduction::SequenceMean {
            f.push("sequence_mean");
        }
        let skipped = losscheck_core::catalogue::skipped_rows(c, n);
        let n_skip = skipped.iter().filter(|&&s| s).count();
        if n > 1 && n_skip == n {
            f.push("all rows skipped");
        }
        if n > 1 && n_skip == n - 1 {
            f.push("one valid row");
        }
        if v.iter().any(|&x| x == f64::NEG_INFINITY) {
            f.push("−inf logit");
        }
        if v.iter().any(|x| x.is_nan()) {
            f.push("NaN");
        }
        let soft = c.inputs["target"].f().is_some();
        if soft {
            f.push("soft");
            let t = c.inputs["target"].f().unwrap();
            if t.iter().any(|&q| q > 0.0 && q <= 1e-5) {
                f.push("soft near 0");
            }
            if t.iter()
                .any(|&q| q < 1.0 && q >= 1.0 - 4.0 * c.dtype.epsilon())
            {
                f.push("soft near 1");
            }
        }
        if c.float_param("label_smoothing").unwrap_or(0.0) > 0.0 && n_skip > 0 && !soft {
            f.push("smoothing with ignored rows");
        }
        if let Some(cw) = c.inputs.get("class_weight").and_then(|t| t.f()) {
            if cw.iter().all(|&w| w == 0.0) && !cw.is_empty() {
                f.push("all class weights 0");
            } else if cw.contains(&0.0) {
                f.push("a class weight 0");
            }
            if cw.iter().any(|&w| w > 0.0 && w < c.dtype.min_normal()) {
                f.push("tiny class weight");
            }
            if cw.iter().any(|&w| w >= c.dtype.max() / 2.0) {
                f.push("huge class weight");
            }
        }
        let targets = c.inputs["target"].i();
        for i in 0..n.min(64) {
            let row = &v[i * cdim..(i + 1) * cdim];
            if skipped[i] {
                if row.iter().any(|x| !x.is_finite()) {
                    f.push("poison in a skipped row");
                }
                continue;
            }
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if row.iter().filter(|&&x| x == f64::INFINITY).count() >= 2 {
                f.push("two +inf");
            }
            if row.iter().filter(|&&x| x == m).count() >= 2 && m.is_finite() {
                f.push("tied max");
            }
            if let Some(t) = targets {
                let y = t[i] as usize;
                if y < cdim && cdim > 1 {
                    let second = row
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != y)
                        .map(|(_, &x)| x)
                        .fold(f64::NEG_INFINITY, f64::max);
                    if row[y].is_finite() && second.is_finite() && row[y] - second >= 12.0 {
                        f.push("confident row");
                    }
                    if k == Kind::Margin {
                        let m = c.float_param("margin").unwrap();
                        if row
                            .iter()
                            .enumerate()
                            .any(|(j, &x)| j != y && m - row[y] + x == 0.0)
                        {
                            f.push("margin kink");
                        }
                    }
                }
            }
            if row.iter().all(|x| x.is_finite())
                && row.iter().any(|&x| x.abs() >= 256.0)
                && row.iter().fold(f64::INFINITY, |a, &x| a.min(x)) > 0.0
            {
                f.push("common offset");
            }
        }
        f
    }

    #[test]
    fn multiclass_regimes_reach_their_edges() {
        for loss in LOSSES {
            for d in Dtype::ALL {
                let mut seen = std::collections::BTreeSet::new();
                for &(r, _) in regimes(loss) {
                    let n = if r == Regime::LongBatch { 12 } else { 400 };
                    for i in 0..n {
                        for fct in facts(&draw(loss, d, r, i)) {
                            seen.insert(fct);
                        }
                    }
                }
                let mut want = vec![
                    "N = 0",
                    "C = 1",
                    "C ≥ 1024",
                    "N ≥ 2^11",
                    "all rows skipped",
                    "one valid row",
                    "−inf logit",
                    "NaN",
                    "a class weight 0",
                    "all class weights 0",
                    "tiny class weight",
                    "huge class weight",
                    "poison in a skipped row",
                    "two +inf",
                    "tied max",
                    "confident row",
                    "common offset",
                ];
                match loss {
                    "cross_entropy" => want.extend([
                        "[B,T,C]",
                        "sequence_mean",
                        "soft",
                        "soft near 0",
                        "soft near 1",
                        "smoothing with ignored rows",
                    ]),
                    "multi_margin" => want.push("margin kink"),
                    _ => {}
                }
                let missing: Vec<_> = want.iter().filter(|w| !seen.contains(*w)).collect();
                assert!(
                    missing.is_empty(),
                    "{loss} {d}: never generated {missing:?}"
                );
            }
        }
    }

    #[test]
    fn multiclass_cases_replay_on_their_own() {
        for loss in LOSSES {
            let a = crate::check::gen::generate(loss, Dtype::Bf16, 3, 17);
            let b = crate::check::gen::generate(loss, Dtype::Bf16, 3, 17);
            assert_eq!(a.to_json(), b.to_json());
        }
    }
}
