//! Generators of the row-wise probabilistic losses: `kl_div`, `distill_kl`, `neg_elbo`,
//! `brier`.
//!
//! A case is a [`Frame`] (rows, width, reduction, gradients, out dtype, params, weight and
//! mask plans, cotangent, poison) and flat data drawn per input from the regime's palette,
//! then *shaped* row by row (a per-row style drawn from a seed) into the places where these
//! losses break:
//!
//! - `kl_div`: targets with zeros (and −inf in log q at them, also +inf and NaN), probabilities
//!   at 0 and 1 and one ulp away, log q = RN(ln p) (the terms cancel to the rounding), log
//!   targets at 0, −inf and −tiny; `log_target` both ways.
//! - `distill_kl`: teacher and student logits at the classification extremes (a dominant logit
//!   12 to 10⁴ ahead, the exp edges, ±max, ±inf, −inf), student = teacher, student = teacher
//!   + a constant, student a few ulps from teacher (everything cancels), temperatures from 1e−4
//!   to 1e3 (and over the whole f32 range), both directions.
//! - `neg_elbo`: x at 0, 1 and one ulp away, recon logits at ±inf and the σ edges, log-variances
//!   whose exponential overflows the dtype (and f32), tiny ones (±1e−20, subnormal), ±inf, huge
//!   means; β from 0 to 1e3 (0 included: the KL term is absent).
//! - `brier`: probabilities at the edges, one-hot rows at and away from the target.
//!
//! Masked and zero-weight rows hold poison (NaN, ±inf, values outside the domains); shapes
//! include N = 0 (with C = 0), C = 1, D = 0, K = 0, D = 1; long batches have N from 2¹¹ to
//! 2¹⁷. Every value is an exact value of its dtype, every param exact in f32.

use super::classification::{exp_edges, logit_magnitudes, prob_edges};
use super::elementwise::any_reduction;
use super::values::{self, nudge};
use super::{splitmix64, Regime};
use losscheck_core::dtype::pow2;
use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use proptest::prelude::*;
use proptest::sample::select;

/// The losses with generators here.
pub const LOSSES: [&str; 4] = ["kl_div", "distill_kl", "neg_elbo", "brier"];

/// The regimes and their weights (per ten thousand). Long batches are rare — 4 in 10,000, about
/// four per default campaign — because the oracle works per element in MPFR and one batch of
/// up to 2^17 rows costs as much as thousands of ordinary cases (measured: at 1 per mille they
/// were most of the suite's time).
pub const REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 2400),
    (Regime::BitUniform, 1000),
    (Regime::Extreme, 2600),
    (Regime::Masked, 900),
    (Regime::Weighted, 900),
    (Regime::Shapes, 600),
    (Regime::Kinks, 1596),
    (Regime::LongBatch, 4),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Kl,
    Distill,
    Elbo,
    Brier,
}

fn kind(loss: &str) -> Kind {
    match loss {
        "kl_div" => Kind::Kl,
        "distill_kl" => Kind::Distill,
        "neg_elbo" => Kind::Elbo,
        "brier" => Kind::Brier,
        _ => panic!("no probabilistic generators for {loss}"),
    }
}

/// The float inputs (name, is it K-wide) of a loss.
fn float_inputs(k: Kind) -> &'static [(&'static str, bool)] {
    match k {
        Kind::Kl => &[("input", false), ("target", false)],
        Kind::Distill => &[("student", false), ("teacher", false)],
        Kind::Elbo => &[
            ("x", false),
            ("recon_logits", false),
            ("mu", true),
            ("logvar", true),
        ],
        Kind::Brier => &[("prob", false)],
    }
}

fn grads(k: Kind) -> &'static [&'static str] {
    match k {
        Kind::Kl => &["input"],
        Kind::Distill => &["student"],
        Kind::Elbo => &["recon_logits", "mu", "logvar"],
        Kind::Brier => &["prob"],
    }
}

/// Everything about a case but its data.
#[derive(Clone, Debug)]
pub struct Frame {
    pub n: usize,
    /// C (or D).
    pub c: usize,
    /// K (`neg_elbo`).
    pub k: usize,
    pub reduction: Reduction,
    pub grad: Vec<bool>,
    pub out_f32: bool,
    pub cot: Option<f64>,
    pub params: Vec<(String, ParamValue)>,
    /// Per-row weights and mask (drawn per row; `None`: absent).
    pub weight: Option<Vec<f64>>,
    pub mask: Option<Vec<i64>>,
    /// Per-row cotangents for `none`.
    pub cot_rows: Vec<f64>,
    /// Shaping seed (row styles).
    pub seed: u64,
}

/// A value of the dtype from a palette, sometimes a few ulps off.
fn from_palette(d: Dtype, v: Vec<f64>, signed: bool) -> BoxedStrategy<f64> {
    (
        select(v),
        any::<bool>(),
        -2i64..=2,
        prop::bool::weighted(0.3),
    )
        .prop_map(move |(x, neg, j, off)| {
            let x = if off { nudge(d, x, j) } else { x };
            if signed && neg {
                -x
            } else {
                x
            }
        })
        .boxed()
}

/// A probability: typical (uniform), edges, bit-uniform in [0, 1].
fn prob(d: Dtype, r: Regime) -> BoxedStrategy<f64> {
    let uni = (0.0f64..=1.0).prop_map(move |u| d.round(u)).boxed();
    let edges = select(prob_edges(d)).boxed();
    match r {
        Regime::Extreme | Regime::Kinks => prop_oneof![1 => uni, 3 => edges].boxed(),
        Regime::BitUniform => values::bit_uniform_nonneg(d)
            .prop_map(move |x| if x > 1.0 { d.round(1.0 / x) } else { x })
            .boxed(),
        _ => prop_oneof![4 => uni, 1 => edges].boxed(),
    }
}

/// A logit (or any real): typical, extreme (classification edges, ±max, ±inf), bit-uniform.
fn logit(d: Dtype, r: Regime) -> BoxedStrategy<f64> {
    match r {
        Regime::Extreme => {
            let mut v = logit_magnitudes(d);
            v.extend(exp_edges(d).into_iter().map(f64::abs));
            v.extend([d.max(), 0.0]);
            prop_oneof![
                6 => from_palette(d, v, true),
                1 => select(vec![f64::INFINITY, f64::NEG_INFINITY]),
                2 => values::typical(d, -2, 3),
            ]
            .boxed()
        }
        Regime::BitUniform => values::bit_uniform(d),
        _ => values::typical(d, -2, 3),
    }
}

/// A temperature: 1, tiny (down to 1e−4), large (to 1e3), powers of two, the whole f32 range.
fn temperature(d: Dtype) -> BoxedStrategy<f64> {
    prop_oneof![
        3 => select(vec![1.0, 0.5, 2.0, 4.0, 0.25]),
        3 => select(vec![1e-4, 1e-3, 0.01, 0.1, 0.07, 3.0, 10.0, 100.0, 1e3])
            .prop_map(|t| t as f32 as f64),
        2 => values::f32_log_uniform(-14, 10),
        1 => values::positive(d),
    ]
    .boxed()
}

fn beta() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => Just(1.0),
        2 => Just(0.0),
        3 => select(vec![1e-3, 0.1, 0.5, 4.0, 1e3]).prop_map(|b| b as f32 as f64),
        1 => values::f32_log_uniform(-149, 127),
    ]
    .boxed()
}

fn params(k: Kind, d: Dtype) -> BoxedStrategy<Vec<(String, ParamValue)>> {
    match k {
        Kind::Kl => any::<bool>()
            .prop_map(|b| vec![("log_target".to_string(), ParamValue::Bool(b))])
            .boxed(),
        Kind::Distill => (temperature(d), any::<bool>())
            .prop_map(|(t, rev)| {
                vec![
                    ("temperature".to_string(), ParamValue::Float(t)),
                    (
                        "direction".to_string(),
                        ParamValue::Str(if rev { "reverse" } else { "forward" }.to_string()),
                    ),
                ]
            })
            .boxed(),
        Kind::Elbo => beta()
            .prop_map(|b| vec![("beta".to_string(), ParamValue::Float(b))])
            .boxed(),
        Kind::Brier => Just(Vec::new()).boxed(),
    }
}

fn frame(k: Kind, d: Dtype, r: Regime) -> BoxedStrategy<Frame> {
    let ng = grads(k).len();
    let dims: BoxedStrategy<(usize, usize, usize)> = match r {
        Regime::Shapes => prop_oneof![
            Just((0, 0, 0)),
            Just((0, 3, 2)),
            (1usize..=4, Just(1usize), 0usize..=2),
            (1usize..=4, 0usize..=1, 0usize..=1),
            (1usize..=3, 1usize..=3, Just(0usize)),
        ]
        .boxed(),
        Regime::LongBatch => (Just(0usize), 1usize..=2, 1usize..=2).boxed(),
        _ => (1usize..=6, 1usize..=8, 1usize..=4).boxed(),
    };
    let n_rows = 6;
    let weight: BoxedStrategy<Option<Vec<f64>>> = match r {
        Regime::Weighted => prop_oneof![
            3 => proptest::collection::vec(prop_oneof![values::typical_weight(d), values::edge_weight(d)], n_rows)
                .prop_map(Some),
            1 => Just(Some(vec![0.0; n_rows])),
        ]
        .boxed(),
        _ => proptest::option::weighted(0.15, proptest::collection::vec(values::typical_weight(d), n_rows)).boxed(),
    };
    let mask: BoxedStrategy<Option<Vec<i64>>> = match r {
        Regime::Masked => prop_oneof![
            3 => proptest::collection::vec(prop::bool::weighted(0.5).prop_map(i64::from), n_rows).prop_map(Some),
            1 => Just(Some(vec![0; n_rows])),
            1 => (0usize..n_rows).prop_map(move |j| Some((0..n_rows).map(|i| i64::from(i == j)).collect())),
        ]
        .boxed(),
        _ => proptest::option::weighted(0.1, proptest::collection::vec(prop::bool::weighted(0.8).prop_map(i64::from), n_rows)).boxed(),
    };
    let cot = if r == Regime::Extreme {
        values::edge_cotangent(d)
    } else {
        values::typical_cotangent(d)
    };
    (
        dims,
        any_reduction(),
        proptest::collection::vec(prop::bool::weighted(0.85), ng),
        any::<bool>(),
        proptest::option::weighted(0.3, cot.clone()),
        params(k, d),
        weight,
        mask,
        proptest::collection::vec(cot, n_rows),
        any::<u64>(),
    )
        .prop_map(
            move |(
                (n, c, kk),
                reduction,
                grad,
                out_f32,
                cot,
                params,
                weight,
                mask,
                cot_rows,
                seed,
            )| {
                let n = if r == Regime::Shapes || r == Regime::LongBatch {
                    n
                } else {
                    n.max(1)
                };
                Frame {
                    n,
                    c: if k == Kind::Elbo {
                        c
                    } else {
                        c.max(usize::from(n > 0))
                    },
                    k: kk,
                    reduction,
                    grad,
                    out_f32: out_f32 && d.is_16bit(),
                    cot,
                    params,
                    weight,
                    mask,
                    cot_rows,
                    seed,
                }
            },
        )
        .boxed()
}

/// The raw value strategy of one input.
fn raw(k: Kind, name: &str, d: Dtype, r: Regime) -> BoxedStrategy<f64> {
    match (k, name) {
        (Kind::Kl, "target") | (Kind::Elbo, "x") | (Kind::Brier, "prob") => prob(d, r),
        (Kind::Elbo, "logvar") if r == Regime::Extreme || r == Regime::Kinks => {
            let o = d.exp_overflow_edge();
            let v = vec![
                d.round(o),
                d.next_up(d.round(o)),
                d.round(2.0 * o),
                d.round(Dtype::F32.exp_overflow_edge()),
                d.round(1e-20),
                d.min_subnormal(),
                d.round(1e-3),
                0.0,
                d.round(0.25),
                d.next_up(d.round(0.25)),
                d.round(30.0),
                d.round(-30.0),
                d.round(-100.0),
                d.max(),
            ];
            prop_oneof![
                4 => from_palette(d, v, true),
                1 => select(vec![f64::INFINITY, f64::NEG_INFINITY]),
                2 => values::typical(d, -2, 3),
            ]
            .boxed()
        }
        _ => logit(d, r),
    }
}

/// Draw a uniform in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Shape row `i` of a case (the per-row styles of the module docs).
fn shape_row(k: Kind, d: Dtype, r: Regime, fr: &Frame, data: &mut [Vec<f64>], i: usize) {
    let h = splitmix64(fr.seed ^ splitmix64(i as u64 + 1));
    let style = h % 8;
    let c = fr.c;
    let row = i * c..(i + 1) * c;
    let pick = |j: u64| splitmix64(h ^ j);
    let structured = matches!(r, Regime::Kinks | Regime::Extreme | Regime::Typical);
    if !structured || c == 0 {
        return;
    }
    match k {
        Kind::Kl => {
            let (inp, tg) = data.split_at_mut(1);
            let (lq, p) = (&mut inp[0][row.clone()], &mut tg[0][row]);
            match style {
                0 | 1 => {
                    // log q = RN(ln p): the terms cancel to the rounding
                    for j in 0..c {
                        lq[j] = d.round(libm::log(p[j]));
                        if pick(j as u64) % 3 == 0 {
                            lq[j] = nudge(d, lq[j], 1);
                        }
                    }
                }
                2 => {
                    // zeros in p with −inf (or +inf, NaN, anything) in log q there
                    for j in 0..c {
                        if pick(j as u64) % 2 == 0 {
                            p[j] = 0.0;
                            lq[j] = match pick(j as u64 + 99) % 4 {
                                0 | 1 => f64::NEG_INFINITY,
                                2 => f64::INFINITY,
                                _ => f64::NAN,
                            };
                        }
                    }
                }
                3 => {
                    // a normalised p (softmax of normals) and a log q of another one
                    let mut s = 0.0;
                    for j in 0..c {
                        p[j] = libm::exp(2.0 * (unit(pick(j as u64)) - 0.5) * 4.0);
                        s += p[j];
                    }
                    for j in 0..c {
                        p[j] = d.round(p[j] / s);
                        lq[j] =
                            d.round(libm::log(d.round(p[j] * (0.5 + unit(pick(j as u64 + 7))))));
                    }
                }
                4 => {
                    // p one-hot at 1
                    let at = (pick(5) % c as u64) as usize;
                    for j in 0..c {
                        p[j] = if j == at { 1.0 } else { 0.0 };
                    }
                }
                _ => {}
            }
        }
        Kind::Distill => {
            let (st, te) = data.split_at_mut(1);
            let (s, t) = (&mut st[0][row.clone()], &mut te[0][row]);
            match style {
                0 => s.copy_from_slice(t),
                1 => {
                    for j in 0..c {
                        s[j] = nudge(d, t[j], (pick(j as u64) % 5) as i64 - 2);
                    }
                }
                2 => {
                    // student = teacher + a constant (exact where representable)
                    let off = d.round(select_f64(&[1.0, -3.0, 0.5, 64.0], pick(1)));
                    for j in 0..c {
                        let x = t[j] + off;
                        s[j] = if d.round(x) == x { x } else { t[j] };
                    }
                }
                3 | 4 => {
                    // a dominant logit (confident teacher, student at or away from it)
                    let gap = select_f64(&[12.0, 16.0, 30.0, 100.0, 1e4], pick(2));
                    let at = (pick(3) % c as u64) as usize;
                    let sat = if style == 3 {
                        at
                    } else {
                        (pick(4) % c as u64) as usize
                    };
                    t[at] = d.round(t[at] + gap);
                    s[sat] = d.round(s[sat] + gap);
                }
                5 if r != Regime::Typical => {
                    // −inf entries
                    for j in 0..c {
                        if pick(j as u64) % 3 == 0 {
                            t[j] = f64::NEG_INFINITY;
                        }
                        if pick(j as u64 + 50) % 3 == 0 {
                            s[j] = f64::NEG_INFINITY;
                        }
                    }
                }
                _ => {}
            }
        }
        Kind::Elbo => {
            let (xs, zs) = data.split_at_mut(1);
            let (x, z) = (&mut xs[0][row.clone()], &mut zs[0][row]);
            if style == 0 {
                for j in 0..c {
                    x[j] = if pick(j as u64) % 2 == 0 { 0.0 } else { 1.0 };
                    if pick(j as u64 + 9) % 2 == 0 {
                        z[j] = if x[j] == 1.0 {
                            f64::INFINITY
                        } else {
                            f64::NEG_INFINITY
                        };
                    }
                }
            }
            if style == 1 {
                // logvar tiny, μ = 0: the KL term is ~lv²/4
                let kk = fr.k;
                for j in i * kk..(i + 1) * kk {
                    data[3][j] = if pick(j as u64) % 2 == 0 {
                        d.round(1e-20)
                    } else {
                        -d.round(1e-20)
                    };
                    data[2][j] = 0.0;
                }
            }
        }
        Kind::Brier => {}
    }
}

/// `kl_div` with `log_target`: the target row as log p ≤ 0 (−inf where p = 0, −tiny in some
/// rows), and in the cancelling styles log q at, or one ulp from, log p.
fn log_targets(d: Dtype, fr: &Frame, data: &mut [Vec<f64>], i: usize) {
    if !matches!(fr.params.first(), Some((_, ParamValue::Bool(true)))) {
        return;
    }
    let h = splitmix64(fr.seed ^ splitmix64(i as u64 + 1));
    let style = h % 8;
    let pick = |j: u64| splitmix64(h ^ j);
    let c = fr.c;
    let (inp, tg) = data.split_at_mut(1);
    let (lq, p) = (
        &mut inp[0][i * c..(i + 1) * c],
        &mut tg[0][i * c..(i + 1) * c],
    );
    for j in 0..c {
        p[j] = if p[j] == 0.0 || p[j].is_nan() {
            if p[j].is_nan() {
                p[j]
            } else {
                f64::NEG_INFINITY
            }
        } else if style == 5 {
            -values_tiny(d, pick(j as u64 + 3))
        } else {
            d.round(libm::log(p[j]))
        };
        if style <= 1 {
            lq[j] = match pick(j as u64) % 3 {
                0 => p[j],
                1 => nudge(d, p[j], 1),
                _ => lq[j],
            };
        }
    }
}

fn select_f64(v: &[f64], h: u64) -> f64 {
    v[(h % v.len() as u64) as usize]
}

/// A tiny positive value of the dtype (subnormal or 2^−k).
fn values_tiny(d: Dtype, h: u64) -> f64 {
    match h % 3 {
        0 => d.min_subnormal(),
        1 => d.round(pow2(-20)),
        _ => d.epsilon(),
    }
}

/// Assemble the case.
fn realize(
    loss: &'static str,
    k: Kind,
    d: Dtype,
    r: Regime,
    fr: Frame,
    mut data: Vec<Vec<f64>>,
    targets: Vec<i64>,
    poison: Vec<f64>,
) -> Case {
    let (n, c, kk) = (fr.n, fr.c, fr.k);
    for i in 0..n {
        shape_row(k, d, r, &fr, &mut data, i);
        if k == Kind::Kl {
            log_targets(d, &fr, &mut data, i);
        }
    }
    let mut case = Case::new(loss, d).expect("a catalogue loss");
    if fr.out_f32 {
        case.out_dtype = Dtype::F32;
    }
    case.params.insert(
        "reduction".to_string(),
        ParamValue::Str(fr.reduction.name().to_string()),
    );
    for (name, v) in &fr.params {
        case.params.insert(name.clone(), v.clone());
    }
    let weight: Option<Vec<f64>> = fr
        .weight
        .as_ref()
        .map(|w| (0..n).map(|i| w[i % w.len()]).collect());
    let mask: Option<Vec<i64>> = fr
        .mask
        .as_ref()
        .map(|m| (0..n).map(|i| m[i % m.len()]).collect());
    let skipped = |i: usize| {
        mask.as_ref().is_some_and(|m| m[i] == 0) || weight.as_ref().is_some_and(|w| w[i] == 0.0)
    };
    // poison in skipped rows
    for (col, (name, kwide)) in float_inputs(k).iter().enumerate() {
        let w = if *kwide { kk } else { c };
        let _ = name;
        for i in (0..n).filter(|&i| skipped(i)) {
            for j in 0..w {
                data[col][i * w + j] = poison[(i * w + j + col) % poison.len()];
            }
        }
    }
    for (col, (name, kwide)) in float_inputs(k).iter().enumerate() {
        let w = if *kwide { kk } else { c };
        let v: Vec<f64> = data[col][..n * w].to_vec();
        case.inputs
            .insert(name.to_string(), Tensor::float(d, vec![n, w], v));
    }
    if k == Kind::Brier {
        let t: Vec<i64> = (0..n)
            .map(|i| {
                if skipped(i) {
                    -7
                } else {
                    targets[i] % c.max(1) as i64
                }
            })
            .collect();
        case.inputs
            .insert("target".to_string(), Tensor::int(vec![n], t));
        // one-hot rows at and away from the target
        if matches!(r, Regime::Kinks | Regime::Extreme) {
            let p = case.inputs.get_mut("prob").unwrap();
            if let losscheck_core::Data::F(v) = &mut p.data {
                for i in (0..n).filter(|&i| !skipped(i) && splitmix64(fr.seed ^ i as u64) % 3 == 0)
                {
                    let at = (splitmix64(fr.seed ^ (i as u64 + 77)) % c as u64) as usize;
                    for j in 0..c {
                        v[i * c + j] = if j == at { 1.0 } else { 0.0 };
                    }
                }
            }
        }
    }
    if let Some(w) = weight {
        case.inputs
            .insert("weight".to_string(), Tensor::float(d, vec![n], w));
    }
    if let Some(m) = mask {
        case.inputs
            .insert("mask".to_string(), Tensor::int(vec![n], m));
    }
    match fr.reduction {
        Reduction::None => {
            if fr.cot.is_some() {
                let v = (0..n).map(|i| fr.cot_rows[i % fr.cot_rows.len()]).collect();
                case.inputs
                    .insert("cotangent".to_string(), Tensor::float(d, vec![n], v));
            }
        }
        _ => {
            if let Some(cv) = fr.cot {
                case.inputs
                    .insert("cotangent".to_string(), Tensor::float(d, vec![], vec![cv]));
            }
        }
    }
    case.grad = grads(k)
        .iter()
        .zip(&fr.grad)
        .filter(|(_, &on)| on)
        .map(|(g, _)| g.to_string())
        .collect();
    case
}

/// The strategy of one regime.
pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let loss: &'static str = losscheck_core::catalogue::spec(loss)
        .expect("a catalogue loss")
        .id;
    let k = kind(loss);
    let d = dtype;
    frame(k, d, r)
        .prop_flat_map(move |fr| {
            let n = if r == Regime::LongBatch { 0 } else { fr.n };
            let cols: Vec<BoxedStrategy<Vec<f64>>> = float_inputs(k)
                .iter()
                .map(|(name, kwide)| {
                    let w = if *kwide { fr.k } else { fr.c };
                    let len = if r == Regime::LongBatch {
                        64 * w
                    } else {
                        n * w
                    };
                    proptest::collection::vec(raw(k, name, d, r), len..=len).boxed()
                })
                .collect();
            (
                Just(fr),
                cols,
                proptest::collection::vec(0i64..1 << 20, 64),
                proptest::collection::vec(values::poison(d), 1..8),
                11i32..=17,
                0.0f64..1.0,
            )
        })
        .prop_map(move |(mut fr, mut data, targets, poison, e, u)| {
            if r == Regime::LongBatch {
                // tile a 64-row pattern to N in [2^11, 2^17], each copy a few ulps off
                let n = (pow2(e) * (1.0 + u)).min(pow2(17)) as usize;
                for (col, (name, kwide)) in float_inputs(k).iter().enumerate() {
                    let w = if *kwide { fr.k } else { fr.c };
                    let pat = std::mem::take(&mut data[col]);
                    let in_unit = matches!(*name, "target" | "x" | "prob");
                    data[col] = (0..n * w)
                        .map(|q| {
                            let (i, j) = (q / w.max(1), q % w.max(1));
                            let h = splitmix64(fr.seed ^ splitmix64(i as u64));
                            let x = pat[(h % 64) as usize * w + j];
                            let y = nudge(d, x, ((h >> 32) % 5) as i64 - 2);
                            if in_unit && !(0.0..=1.0).contains(&y) {
                                x
                            } else {
                                y
                            }
                        })
                        .collect();
                }
                fr.n = n;
                fr.weight = None;
                fr.mask = None;
                let targets: Vec<i64> = (0..n).map(|i| targets[i % 64]).collect();
                return realize(loss, k, d, Regime::Typical, fr, data, targets, poison);
            }
            let t = targets.iter().copied().cycle().take(fr.n).collect();
            realize(loss, k, d, r, fr, data, t, poison)
        })
        .boxed()
}
