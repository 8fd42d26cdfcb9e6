//! The regimes of the elementwise losses of several inputs: `margin_ranking`,
//! `pairwise_logistic` (ranking), `dpo` (preference) and `gaussian_nll` (probabilistic), on
//! the shared [`elementwise`] machinery (a frame — reduction, weight and mask plans,
//! cotangent, grads, params, out dtype, poison, shape — then the elements for it).
//!
//! What each loss's data reach, besides the shared plans (all / none / one valid masks,
//! zero, tiny and huge weights, N = 0, `[]`, multi-dim shapes, long batches of 2^11–2^17):
//!
//! - `margin_ranking` (s1, s2, ±1 labels as i64): typical and extreme scores (the edge
//!   palette, ±max, ±inf, subnormals), ties and one-ulp gaps, the kink y·(s1 − s2) = m exactly
//!   (margins that are dtype values in the kinks regime) and around it, ±max against ∓max.
//! - `pairwise_logistic` (chosen, rejected): differences at the exp edges of the dtype, of the
//!   f32 compute type and of f64, where σ rounds to 1, at 0 (ties), on top of huge common
//!   offsets; infinities (inf − inf).
//! - `dpo` (four sequence log-probs): typical log-probs (−1 to −1e4) with references near the
//!   policy; log-probs **around −1e4 with chosen and rejected equal or a few ulps apart**
//!   (a bf16 ulp is 64 there), so that h cancels to a few ulps or to 0; margins β·h at the
//!   gradient's zero crossing ln((1 − ε)/ε), at 0 and where softplus saturates; β from 1e−3 to
//!   1e3 (and over its whole domain), label smoothing 0, ½ and between.
//! - `gaussian_nll` (mean, target, var): variances at 0, **at eps exactly** (eps a dtype value
//!   in the kinks regime) and a few ulps around it, at the dtype max, subnormal, +inf;
//!   residuals whose square overflows the dtype; the var gradient's zero v′ = r² and the
//!   value's zero ½·ln v′ + ½·r²/v′ (+ ½·ln 2π) = 0, where the terms cancel; eps over its
//!   whole domain and `full` both ways.
//!
//! Every value is an exact value of its dtype, every param lies in its domain and is exact in
//! f32; masked and zero-weight positions hold poison (NaN, ±inf, anything, negative variances
//! and non-±1 labels included), which validation skips.

use super::classification::logit_magnitudes;
use super::elementwise::{
    self, any_reduction, maybe, ElemDist, Frame, FrameDist, MaskPlan, Recipe, WeightPlan,
};
use super::values::{self, nudge, square_overflow_edge};
use super::Regime;
use losscheck_core::catalogue::{self, skipped_rows, ParamSpec};
use losscheck_core::dtype::pow2;
use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use std::sync::Arc;

/// The losses with generators here.
pub const LOSSES: [&str; 4] = ["margin_ranking", "pairwise_logistic", "dpo", "gaussian_nll"];

/// The regimes of these losses and their weights (per mille), as for the elementwise
/// classification losses: the interesting inputs are edges, and a long batch costs the MPFR
/// oracle as much as a thousand ordinary cases.
pub const REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 250),
    (Regime::BitUniform, 120),
    (Regime::Extreme, 250),
    (Regime::Masked, 100),
    (Regime::Weighted, 90),
    (Regime::Shapes, 60),
    (Regime::Kinks, 129),
    (Regime::LongBatch, 1),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Margin,
    Logistic,
    Dpo,
    Gauss,
}

fn kind(loss: &str) -> Kind {
    match loss {
        "margin_ranking" => Kind::Margin,
        "pairwise_logistic" => Kind::Logistic,
        "dpo" => Kind::Dpo,
        "gaussian_nll" => Kind::Gauss,
        _ => panic!("no pairwise generators for {loss}"),
    }
}

/// The float columns of an element. `margin_ranking`'s ±1 labels are drawn as floats and
/// turned into an i64 tensor by [`finish`].
fn inputs(k: Kind) -> Vec<&'static str> {
    match k {
        Kind::Margin => vec!["s1", "s2", "target"],
        Kind::Logistic => vec!["chosen", "rejected"],
        Kind::Dpo => vec![
            "policy_chosen",
            "policy_rejected",
            "ref_chosen",
            "ref_rejected",
        ],
        Kind::Gauss => vec!["mean", "target", "var"],
    }
}

// ---- scalars

fn signed(s: BoxedStrategy<f64>) -> BoxedStrategy<f64> {
    (s, any::<bool>())
        .prop_map(|(x, neg)| if neg { -x } else { x })
        .boxed()
}

fn fparam(params: &[(String, ParamValue)], name: &str) -> Option<f64> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, p)| p.as_f64())
}

/// x rounded to the dtype, kept finite (±max for an overflow).
fn finite(d: Dtype, x: f64) -> f64 {
    let r = d.round(x);
    if r.is_finite() {
        r
    } else if x.is_nan() {
        0.0
    } else {
        r.signum() * d.max()
    }
}

/// Scores: N(0, 3²), sometimes rescaled by 2^k.
fn score_typical(d: Dtype) -> BoxedStrategy<f64> {
    prop_oneof![
        4 => values::normal().prop_map(move |z| d.round(3.0 * z)),
        1 => (values::normal(), -8i32..=3).prop_map(move |(z, k)| d.round(3.0 * z * pow2(k))),
    ]
    .boxed()
}

/// Scores at the edges: the edge palette (±0, subnormals, the normal boundary, the max, the
/// exp and square edges of the dtype and of its compute types, ±inf), the logit magnitudes
/// (where σ rounds to 1), ±max, bit-uniform.
fn score_extreme(d: Dtype) -> BoxedStrategy<f64> {
    prop_oneof![
        6 => values::edge_or_inf(d),
        3 => signed(select(logit_magnitudes(d)).boxed()),
        1 => signed(Just(d.max()).boxed()),
        1 => values::bit_uniform(d),
    ]
    .boxed()
}

/// Huge common offsets (and none): 0, typical, ±2^k up to the top binade, ±max/2.
fn offset(d: Dtype) -> BoxedStrategy<f64> {
    let top = d.format().emax - 1;
    prop_oneof![
        2 => Just(0.0),
        2 => score_typical(d),
        3 => signed(values::pow2_in(8, top)),
        1 => signed(Just(d.max() / 2.0).boxed()),
    ]
    .boxed()
}

/// Magnitudes of a logistic argument where something happens: the logit palette (exp edges
/// of the dtype, of f32 and of f64, where σ rounds to 1), and the kernels' switch at 36.
fn logistic_edges(d: Dtype) -> Vec<f64> {
    let mut v = logit_magnitudes(d);
    v.extend([36.0, 37.0, 35.0].map(|x| d.round(x)));
    v.retain(|x| x.is_finite());
    v
}

fn sign() -> BoxedStrategy<f64> {
    select(vec![1.0, -1.0]).boxed()
}

/// A negative log-probability: −|z|·2^k, k in [0, 13] (−1 to about −3e4).
fn logprob(d: Dtype) -> BoxedStrategy<f64> {
    (values::normal(), 0i32..=13)
        .prop_map(move |(z, k)| finite(d, -(z.abs() + 0.01) * pow2(k)))
        .boxed()
}

/// Variances: |z|·2^k for k in [−10, 6], sometimes 0.
fn var_typical(d: Dtype) -> BoxedStrategy<f64> {
    prop_oneof![
        6 => (values::normal(), -10i32..=6).prop_map(move |(z, k)| finite(d, z.abs() * pow2(k))),
        1 => Just(0.0),
    ]
    .boxed()
}

/// The case's eps as a value of the dtype (0 when it rounds to 0 or overflows).
fn eps_in(d: Dtype, params: &[(String, ParamValue)]) -> f64 {
    let e = d.round(fparam(params, "eps").unwrap_or(1e-6));
    if e.is_finite() {
        e
    } else {
        0.0
    }
}

/// Variances at the edges: 0, eps and its neighbours, subnormal, the normal boundary, 1, the
/// max and its neighbours, the square-overflow edge, +inf, bit-uniform.
fn var_extreme(d: Dtype, eps: f64) -> BoxedStrategy<f64> {
    let mut pal = vec![
        0.0,
        1.0,
        0.5,
        2.0,
        d.min_subnormal(),
        2.0 * d.min_subnormal(),
        d.min_normal(),
        d.epsilon(),
        d.max(),
        d.next_down(d.max()),
        d.max() / 2.0,
        square_overflow_edge(d),
    ];
    if eps > 0.0 {
        pal.extend([eps, d.next_up(eps), d.next_down(eps)]);
    }
    pal.retain(|x| x.is_finite() && *x >= 0.0);
    prop_oneof![
        6 => select(pal),
        1 => Just(f64::INFINITY),
        1 => values::subnormal(d),
        1 => values::bit_uniform_nonneg(d),
        1 => var_typical(d),
    ]
    .boxed()
}

// ---- elements

/// How an element's data are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Typical,
    Extreme,
    Bits,
    /// The critical points of the formula, given the frame's params.
    Kinks,
}

fn v2((a, b): (f64, f64)) -> Vec<f64> {
    vec![a, b]
}

fn v3((a, b, c): (f64, f64, f64)) -> Vec<f64> {
    vec![a, b, c]
}

/// The float columns of one element (see [`inputs`]).
fn data(
    k: Kind,
    d: Dtype,
    style: Style,
    params: &[(String, ParamValue)],
) -> BoxedStrategy<Vec<f64>> {
    match k {
        Kind::Margin => margin_data(d, style, params),
        Kind::Logistic => logistic_data(d, style),
        Kind::Dpo => dpo_data(d, style, params),
        Kind::Gauss => gauss_data(d, style, params),
    }
}

fn margin_data(d: Dtype, style: Style, params: &[(String, ParamValue)]) -> BoxedStrategy<Vec<f64>> {
    match style {
        Style::Typical => prop_oneof![
            3 => (score_typical(d), score_typical(d), sign()).prop_map(v3),
            // near ties: equal (the kink at margin 0) or a few ulps apart
            2 => (score_typical(d), -2i64..=2, sign()).prop_map(move |(s, j, y)| vec![nudge(d, s, j), s, y]),
        ]
        .boxed(),
        Style::Extreme => prop_oneof![
            4 => (score_extreme(d), score_extreme(d), sign()).prop_map(v3),
            2 => (score_extreme(d), -1i64..=1, sign()).prop_map(move |(s, j, y)| vec![nudge(d, s, j), s, y]),
            1 => (score_extreme(d), score_typical(d), sign(), any::<bool>())
                .prop_map(|(e, t, y, swap)| if swap { vec![t, e, y] } else { vec![e, t, y] }),
            // ±max against ∓max: s1 − s2 overflows the dtype
            1 => (sign(), sign()).prop_map(move |(a, y)| vec![a * d.max(), -a * d.max(), y]),
        ]
        .boxed(),
        Style::Bits => (values::bit_uniform(d), values::bit_uniform(d), sign())
            .prop_map(v3)
            .boxed(),
        Style::Kinks => {
            let md = finite(d, fparam(params, "margin").unwrap_or(0.0));
            let base = prop_oneof![3 => Just(0.0), 2 => score_typical(d), 1 => score_extreme(d)];
            (sign(), base, -2i64..=2, 0u8..6)
                .prop_map(move |(y, b, j, w)| {
                    let b = if b.is_finite() { b } else { 0.0 };
                    match w {
                        // y·(s1 − s2) = m: exact for b = 0 (m is a dtype value here)
                        0..=2 => vec![nudge(d, finite(d, b + y * md), j), b, y],
                        3 => vec![b, nudge(d, finite(d, b - y * md), j), y],
                        // ties (the kink when m = 0)
                        4 => vec![nudge(d, b, j), b, y],
                        // m + 2·max: u overflows the dtype
                        _ => vec![-y * d.max(), y * d.max(), y],
                    }
                })
                .boxed()
        }
    }
}

fn logistic_data(d: Dtype, style: Style) -> BoxedStrategy<Vec<f64>> {
    // (chosen, rejected) = (c, c + δ) with δ at a logistic edge, on top of an offset c
    let at_edge = move || {
        (
            offset(d),
            signed(select(logistic_edges(d)).boxed()),
            -1i64..=1,
        )
            .prop_map(move |(c, e, j)| vec![c, nudge(d, finite(d, c + e), j)])
            .boxed()
    };
    match style {
        Style::Typical => prop_oneof![
            3 => (score_typical(d), score_typical(d)).prop_map(v2),
            // a confident model: rejected a little below or above chosen
            2 => (score_typical(d), values::normal(), -12i32..=0)
                .prop_map(move |(c, z, j)| vec![c, d.round(c + z * pow2(j))]),
        ]
        .boxed(),
        Style::Extreme => prop_oneof![
            3 => (score_extreme(d), score_extreme(d)).prop_map(v2),
            3 => at_edge(),
            1 => (score_extreme(d), -1i64..=1).prop_map(move |(x, j)| vec![x, nudge(d, x, j)]),
        ]
        .boxed(),
        Style::Bits => (values::bit_uniform(d), values::bit_uniform(d))
            .prop_map(v2)
            .boxed(),
        Style::Kinks => prop_oneof![
            4 => at_edge(),
            1 => (offset(d), -2i64..=2).prop_map(move |(c, j)| vec![c, nudge(d, c, j)]),
        ]
        .boxed(),
    }
}

/// Four log-probs around `base`, each `j` ulps off it.
fn around(d: Dtype, base: f64, j: [i64; 4]) -> Vec<f64> {
    j.iter().map(|&k| nudge(d, base, k)).collect()
}

fn dpo_data(d: Dtype, style: Style, params: &[(String, ParamValue)]) -> BoxedStrategy<Vec<f64>> {
    // log-probs around −1e4 (between −5e3 and −2e4), chosen and rejected equal or a few ulps
    // apart, the references likewise
    let near_1e4 = move || {
        let off = || prop_oneof![2 => Just(0i64), 1 => -3i64..=3].boxed();
        (0.5f64..2.0, off(), off(), off(), off())
            .prop_map(move |(u, a, b, c, e)| around(d, finite(d, -1e4 * u), [a, b, c, e]))
            .boxed()
    };
    match style {
        Style::Typical => prop_oneof![
            // references near the policy: rc = πc + δc, rr = πr + δr
            3 => (logprob(d), logprob(d), values::normal(), values::normal(), -6i32..=4)
                .prop_map(move |(pc, pr, a, b, j)| {
                    vec![pc, pr, finite(d, pc + a * pow2(j)), finite(d, pr + b * pow2(j))]
                }),
            1 => (logprob(d), logprob(d), logprob(d), logprob(d))
                .prop_map(|(a, b, c, e)| vec![a, b, c, e]),
            1 => near_1e4(),
        ]
        .boxed(),
        Style::Extreme => prop_oneof![
            4 => near_1e4(),
            2 => (score_extreme(d), score_extreme(d), score_extreme(d), score_extreme(d))
                .prop_map(|(a, b, c, e)| vec![a, b, c, e]),
            // one extreme log-prob among typical ones
            2 => (logprob(d), logprob(d), logprob(d), score_extreme(d), 0usize..4)
                .prop_map(|(a, b, c, e, k)| {
                    let mut v = vec![a, b, c];
                    v.insert(k, e);
                    v
                }),
        ]
        .boxed(),
        Style::Bits => (
            values::bit_uniform(d),
            values::bit_uniform(d),
            values::bit_uniform(d),
            values::bit_uniform(d),
        )
            .prop_map(|(a, b, c, e)| vec![a, b, c, e])
            .boxed(),
        Style::Kinks => {
            // β·h at a critical point x: h = x/β put on policy_chosen (or split onto
            // policy_chosen and ref_rejected) over a common base
            let beta = fparam(params, "beta").unwrap_or(0.1);
            let eps = fparam(params, "label_smoothing").unwrap_or(0.0);
            let mut xs = vec![0.0, 1.0, 36.0, 745.0, 710.0, 20.0];
            if eps > 0.0 {
                xs.push(libm::log((1.0 - eps) / eps)); // the gradient's zero crossing
            }
            for p in [d.precision(), 24, 53] {
                xs.push(p as f64 * std::f64::consts::LN_2);
            }
            let base = prop_oneof![
                3 => Just(0.0),
                2 => (0.5f64..2.0).prop_map(move |u| finite(d, -1e4 * u)),
                1 => logprob(d),
            ];
            (select(xs), sign(), base, -1i64..=1, any::<bool>())
                .prop_map(move |(x, s, b, j, split)| {
                    let h = s * x / beta;
                    if split {
                        let half = finite(d, b + h / 2.0);
                        vec![nudge(d, half, j), b, b, finite(d, 2.0 * b - half + h)]
                    } else {
                        vec![nudge(d, finite(d, b + h), j), b, b, b]
                    }
                })
                .boxed()
        }
    }
}

fn gauss_data(d: Dtype, style: Style, params: &[(String, ParamValue)]) -> BoxedStrategy<Vec<f64>> {
    let eps = eps_in(d, params);
    // (mean, target) of a good model: target normal, mean a little off it
    let close = move || {
        (values::normal(), values::normal(), -12i32..=2)
            .prop_map(move |(t, z, j)| {
                let t = d.round(t);
                (d.round(t + z * pow2(j)), t)
            })
            .boxed()
    };
    match style {
        Style::Typical => prop_oneof![
            2 => (values::normal(), values::normal(), var_typical(d))
                .prop_map(move |(m, t, v)| vec![d.round(m), d.round(t), v]),
            3 => (close(), var_typical(d)).prop_map(|((m, t), v)| vec![m, t, v]),
        ]
        .boxed(),
        Style::Extreme => {
            let sq = square_overflow_edge(d);
            prop_oneof![
                3 => (values::edge_or_inf(d), values::edge_or_inf(d), var_extreme(d, eps)).prop_map(v3),
                2 => (values::edge_or_inf(d), -1i64..=1, var_extreme(d, eps))
                    .prop_map(move |(x, j, v)| vec![nudge(d, x, j), x, v]),
                2 => (close(), var_extreme(d, eps)).prop_map(|((m, t), v)| vec![m, t, v]),
                // residuals whose square overflows the dtype
                1 => (select(vec![sq, d.next_down(sq), 2.0 * sq, d.max()]), sign(), values::normal(), var_extreme(d, eps))
                    .prop_map(move |(r, s, t, v)| {
                        let t = d.round(t);
                        vec![finite(d, t + s * r), t, v]
                    }),
            ]
            .boxed()
        }
        Style::Bits => (
            values::bit_uniform(d),
            values::bit_uniform(d),
            values::bit_uniform_nonneg(d),
        )
            .prop_map(v3)
            .boxed(),
        Style::Kinks => {
            let full = matches!(
                params.iter().find(|(n, _)| n == "full"),
                Some((_, ParamValue::Bool(true)))
            );
            let eps_d = if eps > 0.0 { eps } else { d.min_subnormal() };
            prop_oneof![
                // var = eps exactly (the clamp's kink) and a few ulps around it
                3 => (close(), -2i64..=2).prop_map(move |((m, t), j)| {
                    let v = nudge(d, eps_d, j);
                    vec![m, t, if v >= 0.0 { v } else { eps_d }]
                }),
                1 => close().prop_map(|(m, t)| vec![m, t, 0.0]),
                // the var gradient's zero: v′ = r²
                2 => (score_typical(d), -1i64..=1, offset(d)).prop_map(move |(r, j, c)| {
                    let c = if c.abs() > 1e4 { 0.0 } else { c };
                    let t = finite(d, c + r);
                    let r = t - c;
                    vec![c, t, nudge(d, finite(d, r * r), j).max(0.0)]
                }),
                // the value's zero: r² = −v′·(ln v′ [+ ln 2π]), v′ < 1
                2 => (-24i32..=0, 0.0f64..1.0, any::<bool>()).prop_map(move |(k, u, neg)| {
                    let v = finite(d, (1.0 + u) * pow2(k - 1));
                    let c = if full { libm::log(2.0 * std::f64::consts::PI) } else { 0.0 };
                    let s = -v.max(eps_d) * (libm::log(v.max(eps_d)) + c);
                    let r = if s > 0.0 { d.round(libm::sqrt(s)) } else { 0.0 };
                    vec![0.0, if neg { -r } else { r }, v]
                }),
            ]
            .boxed()
        }
    }
}

// ---- params

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Typical,
    Domain,
    Kinks,
}

fn f32r(x: f64) -> f64 {
    Dtype::F32.round(x)
}

fn param(p: &'static ParamSpec, d: Dtype, mode: Mode) -> BoxedStrategy<ParamValue> {
    let whole = values::param(p, d);
    let float = |s: BoxedStrategy<f64>| s.prop_map(ParamValue::Float).boxed();
    let f32d = Dtype::F32;
    match (p.name, mode) {
        ("margin", Mode::Typical) => prop_oneof![
            3 => Just(ParamValue::Float(0.0)),
            3 => float(signed(values::f32_log_uniform(-3, 3))),
            1 => Just(ParamValue::Float(1.0)),
            2 => whole,
        ]
        .boxed(),
        ("margin", Mode::Domain) => prop_oneof![
            1 => Just(ParamValue::Float(0.0)),
            2 => float(signed(select(vec![d.max(), f32d.max(), d.min_subnormal(), f32d.min_subnormal(), 1.0]).boxed())),
            3 => whole,
        ]
        .boxed(),
        // margins that are dtype values: the kink y·(s1 − s2) = m is reachable exactly
        ("margin", Mode::Kinks) => prop_oneof![
            2 => float(select(vec![0.0, 1.0, 0.5, 2.0, -1.0, d.min_subnormal(), d.max(), d.epsilon()]).boxed()),
            2 => float(values::typical(d, -4, 4)),
            1 => float(values::bit_uniform(d)),
        ]
        .boxed(),
        // β from 1e−3 to 1e3 (2^−10 to 2^10), and over its whole domain
        ("beta", Mode::Domain) => prop_oneof![
            2 => float(values::f32_log_uniform(-10, 9)),
            1 => float(select(vec![f32d.min_subnormal(), f32d.max(), f32r(1e-3), f32r(1e3)]).boxed()),
            2 => whole,
        ]
        .boxed(),
        ("beta", _) => prop_oneof![
            3 => float(values::f32_log_uniform(-10, 9)),
            2 => float(select(vec![0.1, 1.0, 0.5, 0.01, 1e-3, 1e3, 10.0].into_iter().map(f32r).collect::<Vec<_>>()).boxed()),
            1 => whole,
        ]
        .boxed(),
        ("label_smoothing", _) => prop_oneof![
            3 => Just(ParamValue::Float(0.0)),
            1 => Just(ParamValue::Float(0.5)),
            2 => float(select(vec![0.1, 0.25, 0.05, 0.4].into_iter().map(f32r).collect::<Vec<_>>()).boxed()),
            1 => float(values::f32_log_uniform(-149, -3)),
            2 => whole,
        ]
        .boxed(),
        ("eps", Mode::Typical) => prop_oneof![
            3 => Just(ParamValue::Float(f32r(1e-6))),
            2 => float(select(vec![1e-3, 1e-2, 1e-8, 1e-4, 0.5, 1.0].into_iter().map(f32r).collect::<Vec<_>>()).boxed()),
            1 => whole,
        ]
        .boxed(),
        ("eps", Mode::Domain) => prop_oneof![
            1 => Just(ParamValue::Float(f32r(1e-6))),
            2 => float(select(vec![f32d.min_subnormal(), f32d.min_normal(), f32d.max(), d.min_subnormal(), d.min_normal(), d.max(), d.epsilon()]).boxed()),
            3 => whole,
        ]
        .boxed(),
        // eps a dtype value: var = eps (the clamp's kink) is reachable exactly
        ("eps", Mode::Kinks) => {
            let mut v = vec![
                d.round(1e-6),
                d.min_subnormal(),
                d.min_normal(),
                d.epsilon(),
                d.round(1e-3),
                0.5,
                1.0,
                4.0,
            ];
            v.retain(|&x| x > 0.0);
            prop_oneof![
                3 => float(select(v).boxed()),
                1 => float(values::bit_uniform_nonneg(d).prop_map(move |x| if x > 0.0 { x } else { d.min_subnormal() }).boxed()),
            ]
            .boxed()
        }
        _ => whole,
    }
}

fn params(loss: &'static str, d: Dtype, mode: Mode) -> elementwise::ParamsFn {
    Arc::new(move |_k: i32| {
        let spec = catalogue::spec(loss).unwrap();
        spec.params
            .iter()
            .map(|p| {
                let name = p.name.to_string();
                param(p, d, mode)
                    .prop_map(move |v| (name.clone(), v))
                    .boxed()
            })
            .collect::<Vec<_>>()
            .boxed()
    })
}

// ---- regimes

fn mode(r: Regime) -> Mode {
    match r {
        Regime::BitUniform | Regime::Extreme => Mode::Domain,
        Regime::Kinks => Mode::Kinks,
        _ => Mode::Typical,
    }
}

fn shapes() -> Vec<Vec<usize>> {
    vec![
        vec![],
        vec![0],
        vec![1],
        vec![2, 3, 4],
        vec![0, 3],
        vec![3, 0],
        vec![1, 1],
        vec![4, 1],
        vec![1, 5],
        vec![2, 2, 2, 2],
        vec![3, 1, 2],
        vec![2, 0, 2],
    ]
}

/// The frame distribution of a regime.
fn frame(loss: &'static str, d: Dtype, r: Regime) -> FrameDist {
    use MaskPlan as M;
    use WeightPlan as W;
    let weights = match r {
        Regime::BitUniform => prop_oneof![1 => Just(W::Absent), 1 => Just(W::Elements)].boxed(),
        Regime::Extreme => {
            prop_oneof![2 => Just(W::Absent), 2 => Just(W::Elements), 1 => Just(W::AllZero)].boxed()
        }
        Regime::Weighted => prop_oneof![6 => Just(W::Elements), 1 => Just(W::AllZero)].boxed(),
        Regime::Masked => prop_oneof![3 => Just(W::Absent), 1 => Just(W::Elements)].boxed(),
        _ => prop_oneof![2 => Just(W::Absent), 1 => Just(W::Elements)].boxed(),
    };
    let mask = match r {
        Regime::Extreme => prop_oneof![
            2 => Just(M::Absent),
            3 => Just(M::Random),
            1 => any::<Index>().prop_map(M::OneValid),
            1 => Just(M::AllMasked),
        ]
        .boxed(),
        Regime::Masked => prop_oneof![
            3 => Just(M::Random),
            2 => Just(M::AllMasked),
            2 => any::<Index>().prop_map(M::OneValid),
            2 => Just(M::NoneMasked),
        ]
        .boxed(),
        Regime::Shapes => prop_oneof![
            2 => Just(M::Absent),
            2 => Just(M::Random),
            1 => Just(M::AllMasked),
            1 => any::<Index>().prop_map(M::OneValid),
        ]
        .boxed(),
        Regime::Weighted => prop_oneof![3 => Just(M::Absent), 1 => Just(M::Random)].boxed(),
        _ => prop_oneof![2 => Just(M::Absent), 1 => Just(M::Random)].boxed(),
    };
    let cotangent = match r {
        Regime::BitUniform | Regime::Extreme | Regime::Weighted => {
            maybe(0.4, values::edge_cotangent(d))
        }
        Regime::Shapes => maybe(0.5, values::typical_cotangent(d)),
        _ => maybe(0.4, values::typical_cotangent(d)),
    };
    let (poison, nan_at) = match r {
        Regime::Extreme => (0.9, 0.1),
        Regime::Masked => (0.95, 0.05),
        Regime::Weighted => (0.9, 0.0),
        _ => (0.3, 0.0),
    };
    let reduction = if r == Regime::LongBatch {
        prop_oneof![
            4 => Just(Reduction::Sum),
            4 => Just(Reduction::Mean),
            1 => Just(Reduction::None),
        ]
        .boxed()
    } else {
        any_reduction()
    };
    FrameDist {
        reduction,
        weights,
        mask,
        cotangent,
        // each of the two differentiable inputs wanted 3 times in 4
        grads: proptest::collection::vec(proptest::bool::weighted(0.75), 2..=2).boxed(),
        out_f32: proptest::bool::weighted(0.25).boxed(),
        params: params(loss, d, mode(r)),
        // the data carry their own scales (labels ±1, variances ≥ 0): never rescaled
        scale_exp: Just(0).boxed(),
        poison: proptest::bool::weighted(poison).boxed(),
        nan_at: if nan_at > 0.0 {
            proptest::option::weighted(nan_at, (any::<Index>(), any::<u8>())).boxed()
        } else {
            Just(None).boxed()
        },
        shape: if r == Regime::Shapes {
            select(shapes()).prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        },
    }
}

/// The element distribution of a regime, given its frame.
fn elems(k: Kind, d: Dtype, r: Regime, fr: &Frame) -> ElemDist {
    let p = &fr.params;
    let data = match r {
        Regime::Typical | Regime::LongBatch => data(k, d, Style::Typical, p),
        Regime::BitUniform => data(k, d, Style::Bits, p),
        Regime::Extreme => data(k, d, Style::Extreme, p),
        Regime::Kinks => {
            prop_oneof![4 => data(k, d, Style::Kinks, p), 1 => data(k, d, Style::Typical, p)]
                .boxed()
        }
        _ => prop_oneof![3 => data(k, d, Style::Typical, p), 1 => data(k, d, Style::Extreme, p)]
            .boxed(),
    };
    let weight = match r {
        Regime::BitUniform => values::bit_uniform_nonneg(d),
        Regime::Extreme | Regime::Weighted => values::edge_weight(d),
        _ => values::typical_weight(d),
    };
    let keep = match r {
        Regime::Extreme => proptest::bool::weighted(0.6).boxed(),
        Regime::Masked => {
            prop_oneof![1 => proptest::bool::weighted(0.2), 1 => proptest::bool::weighted(0.8)]
                .boxed()
        }
        _ => proptest::bool::weighted(0.75).boxed(),
    };
    let cot = match r {
        Regime::BitUniform => values::bit_uniform(d)
            .prop_map(|x| if x == 0.0 { 1.0 } else { x })
            .boxed(),
        Regime::Extreme => values::edge_cotangent(d),
        _ => values::typical_cotangent(d),
    };
    ElemDist {
        data,
        weight,
        keep,
        cot,
        poison: values::poison(d),
    }
}

fn len(r: Regime) -> (usize, usize) {
    match r {
        Regime::Typical => (0, 48),
        Regime::BitUniform | Regime::Weighted => (0, 32),
        Regime::Extreme => (0, 24),
        Regime::Masked => (0, 40),
        Regime::Shapes => (0, 0),
        Regime::Kinks => (1, 16),
        Regime::LongBatch => (1, 64),
    }
}

fn recipe(loss: &'static str, d: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let k = kind(loss);
    Recipe {
        loss,
        dtype: d,
        inputs: inputs(k),
        frame: frame(loss, d, r).strategy(),
        elems: Arc::new(move |fr: &Frame| elems(k, d, r, fr)),
        len: len(r),
    }
    .strategy()
}

/// An i64 label standing in for anything drawn at a skipped position (not range-checked).
fn garbage_label(x: f64) -> i64 {
    if x.is_nan() {
        0
    } else {
        x as i64 // saturating
    }
}

/// Turn a realized case into one of the loss: `margin_ranking`'s labels into an i64 tensor (a
/// NaN that landed on the label of a valid position — invalid there — moved onto s1); a
/// negative variance at a valid position (none is drawn; kept as a guard) made positive.
fn finish(k: Kind, mut case: Case) -> Case {
    let first = inputs(k)[0];
    let n = case.inputs[first].len();
    let skip = skipped_rows(&case, n);
    match k {
        Kind::Margin => {
            let tt = case.inputs.remove("target").expect("drawn");
            let t = tt.f().expect("float labels");
            let s1 = case
                .inputs
                .get_mut("s1")
                .and_then(|x| x.f_mut())
                .expect("s1");
            let labels: Vec<i64> = (0..n)
                .map(|i| {
                    let x = t[i];
                    if x == 1.0 || x == -1.0 {
                        x as i64
                    } else if skip[i] {
                        garbage_label(x)
                    } else {
                        s1[i] = f64::NAN;
                        1
                    }
                })
                .collect();
            case.inputs
                .insert("target".into(), Tensor::int(tt.shape.clone(), labels));
        }
        Kind::Gauss => {
            if let Some(v) = case.inputs.get_mut("var").and_then(|x| x.f_mut()) {
                for (x, &s) in v.iter_mut().zip(&skip) {
                    if !s && *x < 0.0 {
                        *x = -*x;
                    }
                }
            }
        }
        Kind::Logistic | Kind::Dpo => {}
    }
    case
}

/// The strategy of one regime of one of [`LOSSES`].
pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let loss: &'static str = catalogue::spec(loss).expect("a catalogue loss").id;
    let k = kind(loss);
    if r == Regime::LongBatch {
        return long_batch(loss, dtype);
    }
    recipe(loss, dtype, r)
        .prop_map(move |c| finish(k, c))
        .boxed()
}

/// Long batches, N in [2^11, 2^17]: a pattern of up to 64 elements tiled, each copy of a
/// score, log-prob, mean or target a few ulps off (variances kept ≥ 0, labels copied).
fn long_batch(loss: &'static str, d: Dtype) -> BoxedStrategy<Case> {
    let k = kind(loss);
    let step = move |name: &str, x: f64, j: i64| -> f64 {
        match (k, name) {
            (_, "weight" | "cotangent") | (Kind::Margin, "target") => x,
            (Kind::Gauss, "var") => {
                let y = nudge(d, x, j);
                if y >= 0.0 {
                    y
                } else {
                    x
                }
            }
            _ => nudge(d, x, j),
        }
    };
    (
        11i32..=17,
        0.0f64..1.0,
        any::<u64>(),
        recipe(loss, d, Regime::LongBatch),
    )
        .prop_map(move |(e, t, seed, case)| {
            let n = (pow2(e) * (1.0 + t)).min(pow2(17)) as usize;
            finish(k, elementwise::tile_by(case, n, seed, &step))
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::super::{generate, pick_regime, regime_strategy, regimes, runner_for, shrink};
    use super::*;
    use losscheck_core::catalogue::ParamKind;
    use losscheck_core::{validate, Data};
    use std::collections::BTreeSet;

    #[test]
    fn routed_and_weighted() {
        for loss in LOSSES {
            assert_eq!(regimes(loss), REGIMES, "{loss}");
        }
        assert_eq!(REGIMES.iter().map(|(_, w)| w).sum::<u32>(), 1000);
        for r in Regime::ALL {
            assert!(REGIMES.iter().any(|(x, _)| *x == r), "{r}");
        }
    }

    /// Every regime of every loss yields valid cases whose float data are exact dtype values,
    /// whose params lie in their domains and are exact in f32, whose labels are i64, and whose
    /// long batches are long; the same case replays on its own.
    #[test]
    fn generated_cases_are_valid_and_exact() {
        for loss in LOSSES {
            for d in Dtype::ALL {
                for &(r, _) in REGIMES {
                    let s = regime_strategy(loss, d, r);
                    let n = if r == Regime::LongBatch { 2 } else { 120 };
                    for i in 0..n {
                        let mut run = runner_for(9, loss, d, i);
                        let c = s.new_tree(&mut run).unwrap().current();
                        validate(&c).unwrap_or_else(|e| {
                            panic!("{loss} {d} {r} #{i}: {e}\n{}", c.to_json())
                        });
                        for (name, t) in &c.inputs {
                            match &t.data {
                                Data::F(v) => {
                                    for &x in v {
                                        assert!(
                                            d.contains(x),
                                            "{loss} {d} {r}: {name} holds {x:e}, not a {d} value"
                                        );
                                    }
                                }
                                Data::I(_) => assert!(
                                    name == "mask"
                                        || (loss == "margin_ranking" && name == "target"),
                                    "{loss}: {name} is an integer tensor"
                                ),
                            }
                        }
                        if loss == "margin_ranking" {
                            assert!(matches!(c.inputs["target"].data, Data::I(_)));
                        }
                        for p in c.spec().params {
                            match (p.kind, &c.params[p.name]) {
                                (ParamKind::Float, ParamValue::Float(x)) => assert!(
                                    p.domain.contains(*x) && Dtype::F32.contains(*x),
                                    "{loss} {r}: {} = {x:e}",
                                    p.name
                                ),
                                (ParamKind::Bool, ParamValue::Bool(_)) => {}
                                (k, v) => panic!("{loss}: param {} ({k:?}) = {v:?}", p.name),
                            }
                        }
                        if r == Regime::LongBatch {
                            let n = c.inputs[inputs(kind(loss))[0]].len();
                            assert!((1 << 11..=1 << 17).contains(&n), "long batch of {n}");
                        }
                    }
                }
                for i in [0u64, 1, 17, 999] {
                    assert_eq!(
                        generate(loss, d, 5, i).to_json(),
                        generate(loss, d, 5, i).to_json(),
                        "{loss} {d} #{i}"
                    );
                }
            }
        }
    }

    /// What the regimes must reach, per loss (f16 and bf16: the 16-bit edges are closest).
    #[test]
    fn regimes_reach_their_edges() {
        let mut missing = Vec::new();
        for loss in LOSSES {
            for d in [Dtype::F16, Dtype::Bf16] {
                let seen = survey(loss, d, 4000);
                let mut want: Vec<String> = [
                    "n = 0",
                    "scalar",
                    "rank 3",
                    "all skipped",
                    "one valid",
                    "long",
                    "out f32",
                    "no grads",
                    "both grads",
                    "none",
                    "sum",
                    "mean",
                    "NaN valid",
                    "poison skipped",
                    "weight 0",
                    "weight max",
                    "weight subnormal",
                    "+inf",
                    "-inf",
                    "max",
                    "subnormal",
                ]
                .map(String::from)
                .to_vec();
                let extra: &[&str] = match loss {
                    "margin_ranking" => &[
                        "kink, m = 0",
                        "kink, m != 0",
                        "kink, |m| >= 1",
                        "u > 0",
                        "u < 0",
                        "y = -1",
                        "margin max",
                        "s1 - s2 overflows",
                    ],
                    "pairwise_logistic" => &[
                        "d = 0",
                        "d at the exp overflow edge",
                        "d at the exp zero edge",
                        "d at -(exp overflow edge)",
                        "d at the f32 exp zero edge",
                        "d where σ rounds to 1",
                        "huge offset",
                        "inf - inf",
                    ],
                    "dpo" => &[
                        "around -1e4, h = 0",
                        "around -1e4, |h| a few ulps",
                        "h cancels",
                        "β ≤ 1e-3",
                        "β ≥ 1e3",
                        "β huge",
                        "ε = 0",
                        "ε = ½",
                        "0 < ε < ½",
                        "at the gradient's zero crossing",
                        "βh ≥ 700",
                        "βh ≤ -700",
                    ],
                    _ => &[
                        "var = 0",
                        "var = eps",
                        "0 < var < eps",
                        "var = max",
                        "var = +inf",
                        "var subnormal",
                        "v' = r² (var gradient 0)",
                        "value cancels",
                        "value cancels, full",
                        "full",
                        "not full",
                        "eps tiny",
                        "eps huge",
                        "r² overflows the dtype",
                    ],
                };
                want.extend(extra.iter().map(|s| s.to_string()));
                for w in want {
                    if !seen.contains(&w) {
                        missing.push(format!("{loss} {d}: {w}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "never generated: {missing:#?}");
    }

    /// The properties the first `count` cases of a campaign reach.
    fn survey(loss: &str, d: Dtype, count: u64) -> BTreeSet<String> {
        let mut seen = BTreeSet::<String>::new();
        let names = inputs(kind(loss));
        for i in 0..count {
            let c = generate(loss, d, 3, i);
            let col = |name: &str| c.inputs[name].f().unwrap().to_vec();
            let x = col(names[0]);
            let n = x.len();
            let skip = skipped_rows(&c, n);
            let valid: Vec<usize> = (0..n).filter(|&i| !skip[i]).collect();
            let mut mark = |k: &str, b: bool| {
                if b {
                    seen.insert(k.to_string());
                }
            };
            mark("n = 0", n == 0);
            mark("scalar", c.inputs[names[0]].shape.is_empty());
            mark("rank 3", c.inputs[names[0]].shape.len() >= 3);
            mark("all skipped", n > 0 && valid.is_empty());
            mark("one valid", n > 1 && valid.len() == 1);
            mark("long", n >= 1 << 11);
            mark("out f32", c.out_dtype == Dtype::F32);
            mark("no grads", c.grad.is_empty());
            mark("both grads", c.grad.len() == 2);
            for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                mark(r.name(), c.reduction() == r);
            }
            let floats: Vec<Vec<f64>> = names
                .iter()
                .filter(|nm| c.inputs[**nm].f().is_some())
                .map(|nm| col(nm))
                .collect();
            let any_valid =
                |f: &dyn Fn(f64) -> bool| floats.iter().any(|v| valid.iter().any(|&i| f(v[i])));
            mark("NaN valid", any_valid(&|v| v.is_nan()));
            mark("+inf", any_valid(&|v| v == f64::INFINITY));
            mark("-inf", any_valid(&|v| v == f64::NEG_INFINITY));
            mark("max", any_valid(&|v| v.abs() == d.max()));
            mark(
                "subnormal",
                any_valid(&|v| v != 0.0 && v.abs() < d.min_normal()),
            );
            mark(
                "poison skipped",
                floats
                    .iter()
                    .any(|v| (0..n).any(|i| skip[i] && !v[i].is_finite())),
            );
            let w = c.inputs.get("weight").and_then(|t| t.f()).unwrap_or(&[]);
            mark("weight 0", w.contains(&0.0));
            mark("weight max", w.contains(&d.max()));
            mark(
                "weight subnormal",
                w.iter().any(|&v| v > 0.0 && v < d.min_normal()),
            );
            let fp = |name: &str| c.float_param(name).unwrap();
            match loss {
                "margin_ranking" => {
                    let (s1, s2) = (col("s1"), col("s2"));
                    let y = c.inputs["target"].i().unwrap();
                    let m = fp("margin");
                    for &i in &valid {
                        let u = m - y[i] as f64 * (s1[i] - s2[i]);
                        let exact_u = s1[i].is_finite() && s2[i].is_finite();
                        mark("kink, m = 0", exact_u && u == 0.0 && m == 0.0);
                        mark(
                            "kink, m != 0",
                            exact_u && u == 0.0 && m != 0.0 && s1[i] != s2[i],
                        );
                        mark("kink, |m| >= 1", exact_u && u == 0.0 && m.abs() >= 1.0);
                        mark("u > 0", u > 0.0);
                        mark("u < 0", u < 0.0);
                        mark("y = -1", y[i] == -1);
                        mark(
                            "s1 - s2 overflows",
                            d.round(s1[i] - s2[i]).is_infinite()
                                && s1[i].is_finite()
                                && s2[i].is_finite(),
                        );
                    }
                    mark(
                        "margin max",
                        m.abs() == d.max() || m.abs() == Dtype::F32.max(),
                    );
                }
                "pairwise_logistic" => {
                    let (ch, rj) = (col("chosen"), col("rejected"));
                    for &i in &valid {
                        let dd = rj[i] - ch[i];
                        mark("d = 0", dd == 0.0);
                        mark(
                            "d at the exp overflow edge",
                            dd == d.round(d.exp_overflow_edge()),
                        );
                        mark(
                            "d at -(exp overflow edge)",
                            dd == -d.round(d.exp_overflow_edge()),
                        );
                        mark("d at the exp zero edge", dd == d.round(d.exp_zero_edge()));
                        mark(
                            "d at the f32 exp zero edge",
                            dd == d.round(Dtype::F32.exp_zero_edge()),
                        );
                        let s = d.round(d.precision() as f64 * std::f64::consts::LN_2);
                        mark("d where σ rounds to 1", dd.abs() == s);
                        mark(
                            "huge offset",
                            ch[i].abs() >= 256.0 && dd.abs() < 64.0 && dd.abs() < ch[i].abs() / 8.0,
                        );
                        mark("inf - inf", ch[i].is_infinite() && ch[i] == rj[i]);
                    }
                }
                "dpo" => {
                    let cols: Vec<Vec<f64>> = names.iter().map(|nm| col(nm)).collect();
                    let (beta, eps) = (fp("beta"), fp("label_smoothing"));
                    mark("β ≤ 1e-3", beta <= 1.001e-3);
                    mark("β ≥ 1e3", beta >= 999.0);
                    mark("β huge", beta >= 1e30);
                    mark("ε = 0", eps == 0.0);
                    mark("ε = ½", eps == 0.5);
                    mark("0 < ε < ½", eps > 0.0 && eps < 0.5);
                    for &i in &valid {
                        let v: Vec<f64> = cols.iter().map(|c| c[i]).collect();
                        if v.iter().any(|x| !x.is_finite()) {
                            continue;
                        }
                        let h = (v[0] - v[2]) - (v[1] - v[3]);
                        let near = v.iter().all(|x| (-2.1e4..=-4.9e3).contains(x));
                        let ulp = d.ulp_at(1e4);
                        mark("around -1e4, h = 0", near && h == 0.0);
                        mark(
                            "around -1e4, |h| a few ulps",
                            near && h != 0.0 && h.abs() <= 6.0 * ulp,
                        );
                        let big = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                        mark("h cancels", h != 0.0 && h.abs() <= big * 2f64.powi(-6));
                        let x = beta * h;
                        if eps > 0.0 {
                            let xs = libm::log((1.0 - eps) / eps);
                            mark(
                                "at the gradient's zero crossing",
                                (x - xs).abs() <= 0.02 * xs.abs().max(0.05),
                            );
                        }
                        mark("βh ≥ 700", x >= 700.0);
                        mark("βh ≤ -700", x <= -700.0);
                    }
                }
                _ => {
                    let (m, t, v) = (col("mean"), col("target"), col("var"));
                    let eps = fp("eps");
                    let full = matches!(c.params.get("full"), Some(ParamValue::Bool(true)));
                    mark("full", full);
                    mark("not full", !full);
                    mark("eps tiny", eps <= 1e-30);
                    mark("eps huge", eps >= 1e30);
                    for &i in &valid {
                        mark("var = 0", v[i] == 0.0);
                        mark("var = eps", v[i] == eps);
                        mark("0 < var < eps", v[i] > 0.0 && v[i] < eps);
                        mark("var = max", v[i] == d.max());
                        mark("var = +inf", v[i] == f64::INFINITY);
                        mark("var subnormal", v[i] > 0.0 && v[i] < d.min_normal());
                        let r = t[i] - m[i];
                        let vp = v[i].max(eps);
                        mark("v' = r² (var gradient 0)", r != 0.0 && vp == r * r);
                        mark(
                            "r² overflows the dtype",
                            d.round(r * r).is_infinite() && r.is_finite(),
                        );
                        if r.is_finite() && vp.is_finite() {
                            let c2 = if full {
                                libm::log(2.0 * std::f64::consts::PI)
                            } else {
                                0.0
                            };
                            let (a, b) = (libm::log(vp), r * r / vp + c2);
                            let cancels = a < 0.0 && (a + b).abs() <= 1e-3 * b;
                            mark(
                                if full {
                                    "value cancels, full"
                                } else {
                                    "value cancels"
                                },
                                cancels,
                            );
                        }
                    }
                }
            }
        }
        seen
    }

    /// Shrinking reaches a minimal case (one element) for a property of one element.
    #[test]
    fn shrinking_finds_small_cases() {
        let inf_var = |c: &Case| c.inputs["var"].f().unwrap().contains(&f64::INFINITY);
        let neg_label = |c: &Case| c.inputs["target"].i().unwrap().contains(&-1);
        for (loss, p, x) in [
            ("gaussian_nll", &inf_var as &dyn Fn(&Case) -> bool, "mean"),
            ("margin_ranking", &neg_label, "s1"),
        ] {
            let i = (0..3000u64)
                .find(|&i| {
                    pick_regime(loss, Dtype::F16, 2, i) != Some(Regime::LongBatch)
                        && p(&generate(loss, Dtype::F16, 2, i))
                })
                .unwrap();
            let small = shrink(loss, Dtype::F16, 2, i, &mut |c| p(c), 5000);
            assert!(p(&small));
            assert_eq!(small.inputs[x].len(), 1, "{loss}: {}", small.to_json());
        }
    }
}
