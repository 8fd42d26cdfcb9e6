//! Generators: `proptest` strategies that produce [`Case`]s in named *regimes* (DESIGN.md,
//! "Generators (regimes)"), and the deterministic case numbering of campaigns.
//!
//! The layout follows rust-lang libm's test crate — generators by kind:
//!
//! - [`values`]: scalar strategies over the values of a dtype — typical (a scaled normal),
//!   bit-uniform over every finite value (Herbie's sampling), the edge palette computed in the
//!   dtype layer (±0, subnormals, the normal boundary, the dtype max, the square- and
//!   exp-overflow edges of the dtype *and* of the compute types, ±inf), poison for masked
//!   positions, weights, cotangents — and [`values::param`], which draws a float param over
//!   its whole catalogue domain and its edges. Every value is an exact value of its dtype
//!   (params: exact in f32), and every strategy shrinks toward 0 or 1.
//! - [`elementwise`]: the shared machinery of elementwise losses: a per-case [`elementwise::Frame`]
//!   (reduction, weight and mask plans, cotangent, grads, params, out dtype, poison, shape)
//!   drawn first, then the elements for it, realized into a [`Case`].
//! - `regression`: the regimes of the regression family (`mse`, `mae`, `huber`, `quantile`,
//!   `log_cosh`).
//! - [`classification`]: the regimes of the elementwise classification losses (`bce`,
//!   `bce_logits`, `hinge`, `focal`): logits at the exp edges of the dtype and of the f32
//!   compute type, probabilities at 0 and 1 and one ulp away, soft and hard targets, pos_weight
//!   elementwise or broadcast over the last dim, the hinge kink, focal γ and α and the BCE
//!   floor over their domains and edges; hinge's ±1 labels as i64 tensors.
//!   The probabilistic / contrastive families add a module of the same shape and a line in
//!   [`regimes`] and [`regime_strategy`].
//!
//! Campaigns number their cases: case `index` of a campaign with seed `seed` is built by
//! [`generate`] from its own `TestRunner`, seeded by a fixed hash ([`case_hash`], splitmix64
//! over the bytes of (seed, loss, dtype, index)) — so any single case replays on its own, on any
//! platform, whatever the thread count. [`shrink`] rebuilds the same value tree and shrinks it
//! toward a minimal counterexample of any predicate.

use losscheck_core::catalogue::{self, Family};
#[cfg(test)]
use losscheck_core::{dtype::pow2, Reduction};
use losscheck_core::{Case, Dtype};
use proptest::strategy::{BoxedStrategy, Strategy, Union, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A named generator regime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regime {
    /// Scaled normal data, typical weights, masks and cotangents.
    Typical,
    /// Every float uniform over the bit patterns of the finite values of the dtype (Herbie).
    BitUniform,
    /// The edge palette: ±0, subnormals, the normal boundary, the dtype max, residuals whose
    /// square overflows, exp-overflow edges, ±inf, equal and adjacent pairs; NaN in masked or
    /// zero-weight positions, and sometimes in a valid one (propagation).
    Extreme,
    /// Mask plans: all masked, one valid, none masked, sparse and dense random; masked
    /// positions hold poison (NaN, ±inf, max, anything).
    Masked,
    /// Weight plans: zero, tiny (subnormal), huge (the dtype max), powers of two, all zero;
    /// zero-weight positions hold poison.
    Weighted,
    /// Shapes: N = 0, scalar `[]`, `[1]`, `[0,3]`, multi-dim `[2,3,4]`, …
    Shapes,
    /// Critical points of the per-element formula (kinks, switch points, the residuals where a
    /// square or a cosh overflows or underflows) with params at their domain edges.
    Kinks,
    /// Long batches, 2^11–2^17 elements, where 16-bit sums stall.
    LongBatch,
}

impl Regime {
    pub const ALL: [Regime; 8] = [
        Regime::Typical,
        Regime::BitUniform,
        Regime::Extreme,
        Regime::Masked,
        Regime::Weighted,
        Regime::Shapes,
        Regime::Kinks,
        Regime::LongBatch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Regime::Typical => "typical",
            Regime::BitUniform => "bit_uniform",
            Regime::Extreme => "extreme",
            Regime::Masked => "masked",
            Regime::Weighted => "weighted",
            Regime::Shapes => "shapes",
            Regime::Kinks => "kinks",
            Regime::LongBatch => "long_batch",
        }
    }

    pub fn parse(s: &str) -> Option<Regime> {
        Regime::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The regimes of the regression family and their weights (per mille of a campaign's cases).
///
/// Long batches are a small share: the oracle works per element in MPFR, and one 2^17-element
/// case costs as much as thousands of ordinary ones (see the measurements in the suite).
pub const REGRESSION_REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 280),
    (Regime::BitUniform, 150),
    (Regime::Extreme, 200),
    (Regime::Masked, 110),
    (Regime::Weighted, 90),
    (Regime::Shapes, 60),
    (Regime::Kinks, 108),
    (Regime::LongBatch, 2),
];

/// The regimes of the elementwise classification losses (`bce`, `bce_logits`, `hinge`,
/// `focal`) and their weights (per mille). The extremes get more than in the regression family:
/// the interesting inputs of these losses (logits at the exp edges, probabilities at 0 and 1,
/// saturated focal factors) are edges, not typical values.
///
/// Long batches are 1 in 1000: the oracle works per element in MPFR (≈ 3–8 µs per element for
/// these losses), a long batch averages ~55,000 elements, and at 2 per mille they alone cost
/// about three times all the other cases of the suite.
pub const CLASSIFICATION_ELEMENTWISE_REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 251),
    (Regime::BitUniform, 120),
    (Regime::Extreme, 250),
    (Regime::Masked, 100),
    (Regime::Weighted, 90),
    (Regime::Shapes, 60),
    (Regime::Kinks, 128),
    (Regime::LongBatch, 1),
];

/// The elementwise classification losses.
pub const CLASSIFICATION_ELEMENTWISE: [&str; 4] = classification::LOSSES;

pub mod multiclass;

/// The regimes of the row-wise classification losses (`cross_entropy`, `nll`,
/// `multi_margin`) and their weights (per mille). `masked` is the ignore plans (all ignored,
/// one valid, ragged sequences), `kinks` the confident, tied and offset rows and
/// `multi_margin`'s hinge points; long rows (C up to 32,000) and long batches (N up to 2^17)
/// share `long_batch`.
pub const MULTICLASS_REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 240),
    (Regime::BitUniform, 80),
    (Regime::Extreme, 250),
    (Regime::Masked, 120),
    (Regime::Weighted, 110),
    (Regime::Shapes, 60),
    (Regime::Kinks, 134),
    (Regime::LongBatch, 6),
];

/// The regimes (and their weights) that generate cases of `loss`; empty when the loss's family
/// has no generators yet.
pub fn regimes(loss: &str) -> &'static [(Regime, u32)] {
    match catalogue::spec(loss).map(|s| (s.family, s.id)) {
        Some((Family::Regression, _)) => REGRESSION_REGIMES,
        Some((Family::Classification, id)) if classification::LOSSES.contains(&id) => {
            CLASSIFICATION_ELEMENTWISE_REGIMES
        }
        Some((Family::Classification, id)) if multiclass::LOSSES.contains(&id) => {
            MULTICLASS_REGIMES
        }
        Some((_, id)) if pairwise::LOSSES.contains(&id) => pairwise::REGIMES,
        Some((_, id)) if probabilistic::LOSSES.contains(&id) => probabilistic::REGIMES,
        Some((Family::Contrastive, _)) => contrastive::REGIMES,
        _ => &[],
    }
}

/// Does this loss have generators?
pub fn supported(loss: &str) -> bool {
    !regimes(loss).is_empty()
}

/// The strategy of one regime. Panics when the loss has no generators or the regime is not one
/// of the loss's (see [`regimes`]).
pub fn regime_strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let spec = catalogue::spec(loss).unwrap_or_else(|| panic!("unknown loss {loss:?}"));
    assert!(
        regimes(loss).iter().any(|(x, _)| *x == r),
        "regime {} is not a regime of {loss} (regimes: {:?})",
        r.name(),
        regimes(loss)
            .iter()
            .map(|(x, _)| x.name())
            .collect::<Vec<_>>()
    );
    match spec.family {
        Family::Regression => regression::strategy(loss, dtype, r),
        Family::Classification if multiclass::LOSSES.contains(&spec.id) => {
            multiclass::strategy(loss, dtype, r)
        }
        Family::Classification => classification::strategy(loss, dtype, r),
        _ if pairwise::LOSSES.contains(&spec.id) => pairwise::strategy(loss, dtype, r),
        _ if probabilistic::LOSSES.contains(&spec.id) => probabilistic::strategy(loss, dtype, r),
        Family::Contrastive => contrastive::strategy(loss, dtype, r),
        f => panic!("no generators yet for the {} family ({loss})", f.name()),
    }
}

/// All of a loss's regimes, as one weighted union.
pub fn case_strategy(loss: &str, dtype: Dtype) -> BoxedStrategy<Case> {
    let rs = regimes(loss);
    assert!(!rs.is_empty(), "no generators yet for {loss}");
    Union::new_weighted(
        rs.iter()
            .map(|&(r, w)| (w, regime_strategy(loss, dtype, r)))
            .collect(),
    )
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Deterministic case numbering.

pub use losscheck_core::rng::splitmix64;

/// A fixed hash of a sequence of byte strings: each is absorbed as its length and then its bytes
/// in little-endian 8-byte words, every word through splitmix64. Stable across platforms and
/// Rust versions (unlike std's `DefaultHasher`).
pub fn hash_bytes(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0x6c6f_7373_6368_6563; // "losschec"
    for p in parts {
        h = splitmix64(h ^ p.len() as u64);
        for chunk in p.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = splitmix64(h ^ u64::from_le_bytes(w));
        }
    }
    h
}

/// The hash that names case `index` of a campaign.
pub fn case_hash(seed: u64, loss: &str, dtype: Dtype, index: u64) -> u64 {
    hash_bytes(&[
        &seed.to_le_bytes(),
        loss.as_bytes(),
        dtype.name().as_bytes(),
        &index.to_le_bytes(),
    ])
}

/// The 32-byte ChaCha seed of case `index`'s runner.
pub fn rng_seed(seed: u64, loss: &str, dtype: Dtype, index: u64) -> [u8; 32] {
    let mut h = case_hash(seed, loss, dtype, index);
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        h = splitmix64(h ^ (i as u64 + 1));
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    out
}

/// The `TestRunner` of case `index` (ChaCha, seeded by [`rng_seed`]).
pub fn runner_for(seed: u64, loss: &str, dtype: Dtype, index: u64) -> TestRunner {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed(seed, loss, dtype, index)),
    )
}

/// The regime of case `index`: drawn by weight from its own hash stream, so the regime of a
/// case does not depend on how the others were generated.
pub fn pick_regime(loss: &str, dtype: Dtype, seed: u64, index: u64) -> Option<Regime> {
    let rs = regimes(loss);
    let total: u64 = rs.iter().map(|&(_, w)| w as u64).sum();
    if total == 0 {
        return None;
    }
    let mut x = splitmix64(case_hash(seed, loss, dtype, index) ^ 0x7265_6769_6d65) % total; // "regime"
    for &(r, w) in rs {
        if x < w as u64 {
            return Some(r);
        }
        x -= w as u64;
    }
    None
}

/// The regime name of case `index` (for campaign statistics).
pub fn regime_of(loss: &str, dtype: Dtype, seed: u64, index: u64) -> Option<String> {
    pick_regime(loss, dtype, seed, index).map(|r| r.name().to_string())
}

/// The value tree of case `index` (its current value is [`generate`]'s case), for shrinking.
pub fn generate_tree(
    loss: &str,
    dtype: Dtype,
    seed: u64,
    index: u64,
) -> (Regime, Box<dyn ValueTree<Value = Case>>) {
    let r = pick_regime(loss, dtype, seed, index)
        .unwrap_or_else(|| panic!("no generators yet for {loss}"));
    let mut runner = runner_for(seed, loss, dtype, index);
    let tree = regime_strategy(loss, dtype, r)
        .new_tree(&mut runner)
        .unwrap_or_else(|e| panic!("generator of {loss} {dtype} ({}) rejected: {e}", r.name()));
    (r, Box::new(tree))
}

/// Case `index` of the campaign `(loss, dtype, seed)`, with `id = index`.
pub fn generate(loss: &str, dtype: Dtype, seed: u64, index: u64) -> Case {
    let (_, tree) = generate_tree(loss, dtype, seed, index);
    let mut c = tree.current();
    c.id = index;
    c
}

/// Shrink a value tree toward a minimal value on which `fails` holds (proptest's shrinking
/// loop). Returns the smallest failing value seen (the tree's first value if it does not fail)
/// and the number of predicate calls.
pub fn shrink_tree<T: std::fmt::Debug>(
    tree: &mut dyn ValueTree<Value = T>,
    fails: &mut dyn FnMut(&T) -> bool,
    max_iters: usize,
) -> (T, usize) {
    let mut best = tree.current();
    let mut calls = 1;
    if !fails(&best) {
        return (best, calls);
    }
    if !tree.simplify() {
        return (best, calls);
    }
    while calls < max_iters {
        let c = tree.current();
        calls += 1;
        if fails(&c) {
            best = c;
            if !tree.simplify() {
                break;
            }
        } else if !tree.complicate() {
            break;
        }
    }
    (best, calls)
}

/// The time budget of one shrink: `LOSSCHECK_SHRINK_SECS`, default 60 s. Every shrink step
/// re-runs the subject (and the oracle) on a candidate, which on a long case (2^17 rows,
/// C = 32,000) can take longer than the whole campaign; once the budget is spent, candidates
/// count as passing and the smallest failing case so far is the result.
pub fn shrink_budget() -> std::time::Duration {
    let secs = std::env::var("LOSSCHECK_SHRINK_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// Case `index` of a campaign, shrunk toward a minimal case on which `fails` still holds
/// (at most `max_iters` steps and [`shrink_budget`]).
pub fn shrink(
    loss: &str,
    dtype: Dtype,
    seed: u64,
    index: u64,
    fails: &mut dyn FnMut(&Case) -> bool,
    max_iters: usize,
) -> Case {
    let (_, mut tree) = generate_tree(loss, dtype, seed, index);
    let original = tree.current();
    let deadline = std::time::Instant::now() + shrink_budget();
    let mut timed = |c: &Case| std::time::Instant::now() < deadline && fails(c);
    let (c, _) = shrink_tree(tree.as_mut(), &mut timed, max_iters);
    // A simplification may switch a union to an earlier branch whose case is larger: never
    // return a case larger than the one we started from.
    let size = |c: &Case| c.inputs.values().map(|t| t.numel()).max().unwrap_or(0);
    let mut c = if size(&c) > size(&original) {
        original
    } else {
        c
    };
    c.id = index;
    c
}

// ---------------------------------------------------------------------------------------------
// Values.

/// Scalar strategies over the values of a dtype. Every value produced is an exact value of its
/// dtype (params: exact in f32), and every strategy shrinks toward 0 or 1.
pub mod values {
    use losscheck_core::catalogue::{ParamDomain, ParamKind, ParamSpec};
    use losscheck_core::dtype::pow2;
    use losscheck_core::{Dtype, ParamValue};
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
    /// 1.15e-9 — plenty for a sampling distribution), odd in `z`: `normal_quantile(z)` is the
    /// quantile at (1 + z) / 2, so 0 maps to 0.
    #[allow(clippy::excessive_precision)] // Acklam's published coefficients
    pub fn normal_quantile(z: f64) -> f64 {
        const A: [f64; 6] = [
            -3.969683028665376e+01,
            2.209460984245205e+02,
            -2.759285104469687e+02,
            1.383577518672690e+02,
            -3.066479806614716e+01,
            2.506628277459239e+00,
        ];
        const B: [f64; 5] = [
            -5.447609879822406e+01,
            1.615858368580409e+02,
            -1.556989798598866e+02,
            6.680131188771972e+01,
            -1.328068155288572e+01,
        ];
        const C: [f64; 6] = [
            -7.784894002430293e-03,
            -3.223964580411365e-01,
            -2.400758277161838e+00,
            -2.549732539343734e+00,
            4.374664141464968e+00,
            2.938163982698783e+00,
        ];
        const D: [f64; 4] = [
            7.784695709041462e-03,
            3.224671290700398e-01,
            2.445134137142996e+00,
            3.754408661907416e+00,
        ];
        let sign = if z < 0.0 { -1.0 } else { 1.0 };
        // upper half: p = (1 + |z|) / 2 in [0.5, 1); use the tail q = 1 − p = (1 − |z|) / 2.
        let q = (1.0 - z.abs()) / 2.0;
        let p = 1.0 - q;
        let x = if q < 0.02425 {
            let t = libm::sqrt(-2.0 * libm::log(q));
            -(((((C[0] * t + C[1]) * t + C[2]) * t + C[3]) * t + C[4]) * t + C[5])
                / ((((D[0] * t + D[1]) * t + D[2]) * t + D[3]) * t + 1.0)
        } else {
            let u = p - 0.5;
            let r = u * u;
            (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * u
                / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
        };
        sign * x
    }

    /// A standard normal deviate (as f64; round it to a dtype after scaling). Shrinks toward 0.
    pub fn normal() -> BoxedStrategy<f64> {
        (-0.999_999_9f64..0.999_999_9)
            .prop_map(normal_quantile)
            .boxed()
    }

    /// 2^e for e in [lo, hi], shrinking toward e = 0 (or the end of the range nearest 0).
    pub fn pow2_in(lo: i32, hi: i32) -> BoxedStrategy<f64> {
        (lo..=hi).prop_map(pow2).boxed()
    }

    /// ±2^e for e in [lo, hi] (shrinks toward +1).
    pub fn signed_pow2(lo: i32, hi: i32) -> BoxedStrategy<f64> {
        (pow2_in(lo, hi), any::<bool>())
            .prop_map(|(x, neg)| if neg { -x } else { x })
            .boxed()
    }

    /// Largest ordinal of a finite value of the dtype.
    pub fn max_ordinal(dtype: Dtype) -> i64 {
        dtype.ordinal(dtype.max()).expect("max is a dtype value")
    }

    /// Uniform over the bit patterns of every finite value of the dtype, both signs (Herbie's
    /// sampling). Shrinks toward 0.
    pub fn bit_uniform(dtype: Dtype) -> BoxedStrategy<f64> {
        let top = max_ordinal(dtype);
        (-top..=top)
            .prop_map(move |k| dtype.from_ordinal(k))
            .boxed()
    }

    /// Uniform over the bit patterns of the finite values ≥ 0.
    pub fn bit_uniform_nonneg(dtype: Dtype) -> BoxedStrategy<f64> {
        let top = max_ordinal(dtype);
        (0..=top).prop_map(move |k| dtype.from_ordinal(k)).boxed()
    }

    /// Uniform over the positive subnormals of the dtype.
    pub fn subnormal(dtype: Dtype) -> BoxedStrategy<f64> {
        let top = dtype.ordinal(dtype.min_normal()).unwrap() - 1;
        (1..=top).prop_map(move |k| dtype.from_ordinal(k)).boxed()
    }

    /// A dtype value `j` steps (ordinals) away from `x`; non-finite `x` and steps that would
    /// leave the finite range return `x`.
    pub fn nudge(dtype: Dtype, x: f64, j: i64) -> f64 {
        if !x.is_finite() || j == 0 {
            return x;
        }
        let x = dtype.round(x);
        let y = dtype.from_ordinal(dtype.ordinal(x).unwrap() + j);
        if y.is_finite() {
            y
        } else {
            x
        }
    }

    /// The smallest value of the dtype whose square overflows it: RN(x²) = inf. f16: 256.
    pub fn square_overflow_edge(dtype: Dtype) -> f64 {
        let threshold = dtype.max() + dtype.ulp_at(dtype.max()) / 2.0;
        let mut x = dtype.round(libm::sqrt(threshold));
        // x has at most 24 significant bits, so x·x is exact in f64.
        while x * x >= threshold {
            x = dtype.next_down(x);
        }
        while x * x < threshold {
            x = dtype.next_up(x);
        }
        x
    }

    /// The largest value of the dtype whose square underflows to 0: RN(x²) = 0.
    pub fn square_underflow_edge(dtype: Dtype) -> f64 {
        let half = dtype.min_subnormal() / 2.0;
        let mut x = dtype.round(libm::sqrt(half));
        while x * x > half {
            x = dtype.next_down(x);
        }
        while dtype.next_up(x) * dtype.next_up(x) <= half {
            x = dtype.next_up(x);
        }
        x
    }

    /// The edge palette of a dtype: magnitudes (≥ 0, finite, exact values of the dtype) where
    /// something happens — computed from the dtype layer, never typed in. Includes the edges of
    /// the compute types of the kernels (f32 for 16-bit inputs, and f64) where they fit.
    pub fn edge_magnitudes(dtype: Dtype) -> Vec<f64> {
        let mut v = vec![
            0.0,
            1.0,
            0.5,
            2.0,
            dtype.min_subnormal(),
            2.0 * dtype.min_subnormal(),
            dtype.next_down(dtype.min_normal()),
            dtype.min_normal(),
            dtype.next_up(dtype.min_normal()),
            dtype.max(),
            dtype.next_down(dtype.max()),
            dtype.max() / 2.0,
            dtype.epsilon(),
            1.0 + dtype.epsilon(),
            1.0 - dtype.epsilon() / 2.0,
            // the integers stop being exact here
            pow2(dtype.precision() as i32),
            square_overflow_edge(dtype),
            dtype.next_down(square_overflow_edge(dtype)),
            square_overflow_edge(dtype) / 2.0,
            square_underflow_edge(dtype),
            dtype.next_up(square_underflow_edge(dtype)),
        ];
        let mut exp_edges = Vec::new();
        for d in [dtype, dtype.compute_type()] {
            exp_edges.extend([
                d.exp_overflow_edge(),
                d.exp_subnormal_edge(),
                d.exp_zero_edge(),
            ]);
            exp_edges.push(d.exp_overflow_edge() + std::f64::consts::LN_2); // cosh overflows here
            exp_edges.push(square_overflow_edge(d));
        }
        // f64 (the wide compute type): exp overflows at ln(f64::MAX), cosh a ln 2 later.
        let ln_max64 = libm::log(f64::MAX);
        exp_edges.extend([
            ln_max64,
            ln_max64 + std::f64::consts::LN_2,
            libm::log(f64::MIN_POSITIVE),
            -745.1332191019412,
        ]);
        for e in exp_edges {
            let r = dtype.round(e.abs());
            v.extend([r, dtype.next_up(r), dtype.next_down(r)]);
        }
        let mut out: Vec<f64> = v
            .into_iter()
            .map(|x| dtype.round(x))
            .filter(|x| x.is_finite() && *x >= 0.0)
            .collect();
        out.sort_by(f64::total_cmp);
        out.dedup();
        // 0 and 1 first: union/select shrink toward the front.
        out.sort_by_key(|&x| {
            if x == 0.0 {
                0
            } else if x == 1.0 {
                1
            } else {
                2
            }
        });
        out
    }

    /// A value from the edge palette, either sign, sometimes a few ulps off; −0 included.
    pub fn edge(dtype: Dtype) -> BoxedStrategy<f64> {
        let mags = edge_magnitudes(dtype);
        prop_oneof![
            6 => (select(mags.clone()), any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
            2 => (select(mags), any::<bool>(), -3i64..=3).prop_map(move |(m, neg, j)| nudge(dtype, if neg { -m } else { m }, j)),
            1 => (subnormal(dtype), any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
            1 => Just(-0.0),
        ]
        .boxed()
    }

    /// An edge value or an infinity.
    pub fn edge_or_inf(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![8 => edge(dtype), 1 => Just(f64::INFINITY), 1 => Just(f64::NEG_INFINITY)]
            .boxed()
    }

    /// A typical value: a standard normal deviate times 2^k (k in [lo, hi]), rounded to the dtype.
    pub fn typical(dtype: Dtype, lo: i32, hi: i32) -> BoxedStrategy<f64> {
        (normal(), lo..=hi)
            .prop_map(move |(z, k)| dtype.round(z * pow2(k)))
            .boxed()
    }

    /// What masked and zero-weight positions hold: NaN, ±inf, ±max, anything.
    pub fn poison(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            3 => Just(f64::NAN),
            2 => Just(f64::INFINITY),
            2 => Just(f64::NEG_INFINITY),
            1 => (Just(dtype.max()), any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
            2 => bit_uniform(dtype),
        ]
        .boxed()
    }

    /// Typical weights: in [0, 4), 1, 0, powers of two.
    pub fn typical_weight(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            2 => Just(1.0),
            4 => (0.0f64..4.0).prop_map(move |w| dtype.round(w)),
            2 => pow2_in(-6, 6),
            1 => Just(0.0),
        ]
        .boxed()
    }

    /// Weights at the edges: zero, tiny (subnormal), huge (near the dtype max), powers of two
    /// over the whole exponent range, bit-uniform. Always finite and ≥ 0.
    pub fn edge_weight(dtype: Dtype) -> BoxedStrategy<f64> {
        let f = dtype.format();
        let lo = f.emin + 1 - f.precision as i32;
        prop_oneof![
            2 => typical_weight(dtype),
            2 => Just(0.0),
            1 => Just(dtype.min_subnormal()),
            1 => subnormal(dtype),
            1 => Just(dtype.min_normal()),
            1 => Just(dtype.max()),
            1 => Just(dtype.next_down(dtype.max())),
            1 => Just(pow2(f.emax)),
            2 => pow2_in(lo, f.emax),
            1 => bit_uniform_nonneg(dtype),
        ]
        .boxed()
    }

    /// Cotangents: finite and non-zero; 1, ±2^k, scaled normals (either sign).
    pub fn typical_cotangent(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            3 => Just(1.0),
            3 => signed_pow2(-8, 8),
            3 => typical(dtype, -4, 4).prop_map(|x| if x == 0.0 { -1.0 } else { x }),
        ]
        .boxed()
    }

    /// Cotangents at the edges: typical ones, ±max, ±min subnormal, ±2^k over the whole range,
    /// bit-uniform (non-zero).
    pub fn edge_cotangent(dtype: Dtype) -> BoxedStrategy<f64> {
        let f = dtype.format();
        let lo = f.emin + 1 - f.precision as i32;
        prop_oneof![
            4 => typical_cotangent(dtype),
            1 => (Just(dtype.max()), any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
            1 => (Just(dtype.min_subnormal()), any::<bool>()).prop_map(|(m, neg)| if neg { -m } else { m }),
            2 => signed_pow2(lo, f.emax),
            2 => bit_uniform(dtype).prop_map(|x| if x == 0.0 { 1.0 } else { x }),
        ]
        .boxed()
    }

    // ---- params (binary64 values, exact in f32)

    const F32_MIN_SUB_EXP: i32 = -149;
    const F32_MAX_EXP: i32 = 127;

    /// (1 + m/2^23)·2^e rounded to f32 (subnormal for e < −126; e ≥ −149 keeps it > 0). Shrinks
    /// toward 1.
    pub fn f32_log_uniform(lo: i32, hi: i32) -> BoxedStrategy<f64> {
        (lo..=hi, 0u32..(1 << 23))
            .prop_map(|(e, m)| {
                let x = Dtype::F32.round((1.0 + m as f64 / pow2(23)) * pow2(e));
                if x == 0.0 {
                    Dtype::F32.min_subnormal()
                } else if x.is_infinite() {
                    Dtype::F32.max()
                } else {
                    x
                }
            })
            .boxed()
    }

    /// A positive param over the whole f32 range (subnormal-tiny to the f32 max), with the edges
    /// of the f32 format and of the case dtype.
    pub fn positive(dtype: Dtype) -> BoxedStrategy<f64> {
        let f32d = Dtype::F32;
        prop_oneof![
            5 => f32_log_uniform(F32_MIN_SUB_EXP, F32_MAX_EXP),
            2 => select(vec![
                1.0,
                0.5,
                2.0,
                f32d.min_subnormal(),
                f32d.min_normal(),
                f32d.max(),
                f32d.next_down(1.0),
                f32d.next_up(1.0),
                f32d.epsilon(),
                dtype.min_subnormal(),
                dtype.min_normal(),
                dtype.max(),
                dtype.epsilon(),
                square_overflow_edge(dtype),
            ]),
            // one f32 ulp either side of a dtype value: switch points between dtype values
            1 => (bit_uniform_nonneg(dtype), -1i64..=1).prop_map(|(x, j)| {
                let x = if x == 0.0 { 1.0 } else { x };
                let y = nudge(Dtype::F32, x, j);
                if y > 0.0 { y } else { x }
            }),
        ]
        .boxed()
    }

    /// A param in (0, 1): uniform over f32's grid in (0, 1), tiny (down to 2^−149), near one
    /// (up to 1 − 2^−24), and the edges. Shrinks toward 1/2.
    pub fn open_unit() -> BoxedStrategy<f64> {
        let f32d = Dtype::F32;
        let below_one = f32d.next_down(1.0); // 1 − 2^−24
        prop_oneof![
            4 => (-(1i64 << 23) + 1..(1i64 << 23)).prop_map(|k| (k + (1 << 23)) as f64 / pow2(24)),
            2 => f32_log_uniform(F32_MIN_SUB_EXP, -2),
            2 => f32_log_uniform(-24, -2).prop_map(move |t| {
                let x = f32d.round(1.0 - t);
                if x >= 1.0 { below_one } else { x }
            }),
            2 => select(vec![
                0.5,
                f32d.min_subnormal(),
                f32d.min_normal(),
                f32d.epsilon() / 2.0,
                f32d.epsilon(),
                below_one,
                f32d.next_down(below_one),
                f32d.next_up(0.5),
                f32d.next_down(0.5),
                0.25,
                0.75,
            ]),
        ]
        .boxed()
    }

    /// A float param over its whole domain and its edges (never just the default); ints,
    /// bools and choices over their options. Family modules may override with data-relative
    /// distributions.
    pub fn param(spec: &ParamSpec, dtype: Dtype) -> BoxedStrategy<ParamValue> {
        let float = |dom: ParamDomain| -> BoxedStrategy<f64> {
            match dom {
                ParamDomain::Positive => positive(dtype),
                ParamDomain::OpenUnit => open_unit(),
                ParamDomain::NonNegative => prop_oneof![1 => Just(0.0), 6 => positive(dtype)].boxed(),
                ParamDomain::NonPositive => prop_oneof![1 => Just(0.0), 6 => positive(dtype).prop_map(|x| -x)].boxed(),
                ParamDomain::Finite | ParamDomain::Any => prop_oneof![
                    1 => Just(0.0),
                    6 => (positive(dtype), any::<bool>()).prop_map(|(x, neg)| if neg { -x } else { x }),
                ]
                .boxed(),
                ParamDomain::ClosedUnit => prop_oneof![1 => Just(0.0), 1 => Just(1.0), 6 => open_unit()].boxed(),
                ParamDomain::Closed(lo, hi) => {
                    let (lo32, hi32) = (Dtype::F32.round(lo), Dtype::F32.round(hi));
                    prop_oneof![
                        1 => Just(lo32),
                        1 => Just(hi32),
                        4 => (0.0f64..=1.0).prop_map(move |t| Dtype::F32.round(lo + t * (hi - lo)).clamp(lo32, hi32)),
                    ]
                    .boxed()
                }
                ParamDomain::OneOf(v) => select(v.to_vec()).boxed(),
            }
        };
        match spec.kind {
            ParamKind::Float => float(spec.domain).prop_map(ParamValue::Float).boxed(),
            ParamKind::OptFloat => prop_oneof![
                1 => Just(ParamValue::Null),
                3 => float(spec.domain).prop_map(ParamValue::Float),
            ]
            .boxed(),
            ParamKind::Bool => any::<bool>().prop_map(ParamValue::Bool).boxed(),
            ParamKind::Choice(opts) => select(opts.to_vec())
                .prop_map(|s| ParamValue::Str(s.to_string()))
                .boxed(),
            // Integer params (ignore_index) are family-specific: the family module draws them.
            ParamKind::Int => Just(spec.default.to_value()).boxed(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise cases.

/// The shared machinery of elementwise losses (every input the same shape): a per-case
/// [`Frame`] first, then the elements for it, realized into a [`Case`].
pub mod elementwise {
    use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::sync::Arc;

    /// How the case's mask is drawn.
    #[derive(Clone, Debug)]
    pub enum MaskPlan {
        Absent,
        /// Each element's own draw (`Elem::keep`).
        Random,
        AllMasked,
        /// A mask of ones.
        NoneMasked,
        /// Exactly one valid element.
        OneValid(Index),
    }

    /// How the case's weights are drawn.
    #[derive(Clone, Debug)]
    pub enum WeightPlan {
        Absent,
        /// Each element's own draw (`Elem::weight`).
        Elements,
        AllZero,
    }

    /// Everything about a case but its elements.
    #[derive(Clone, Debug)]
    pub struct Frame {
        pub reduction: Reduction,
        pub weights: WeightPlan,
        pub mask: MaskPlan,
        /// A cotangent input: per element for `none` (`Elem::cot`), this scalar otherwise.
        pub cotangent: Option<f64>,
        /// Which differentiable inputs want a gradient (in catalogue order).
        pub grads: Vec<bool>,
        /// f32 output for 16-bit inputs (autocast).
        pub out_f32: bool,
        pub params: Vec<(String, ParamValue)>,
        /// Data are multiplied by this power of two (then rounded to the dtype).
        pub scale: f64,
        /// Masked and zero-weight positions hold their element's poison.
        pub poison: bool,
        /// A NaN at this position (any position: valid ones propagate), in input `which % k`
        /// (or every data input when `which % (k + 1) == k`).
        pub nan_at: Option<(Index, u8)>,
        /// `None`: 1-D with the generated length; else this shape (the length matches).
        pub shape: Option<Vec<usize>>,
    }

    /// One element: a value per data input, and its weight / mask / cotangent / poison draws.
    #[derive(Clone, Debug)]
    pub struct Elem {
        pub data: Vec<f64>,
        pub weight: f64,
        pub keep: bool,
        pub cot: f64,
        pub poison: f64,
        /// Which data input(s) hold the poison: `k` = input k, `len` = all of them.
        pub poison_which: u8,
    }

    /// Per-element strategies of a regime.
    pub struct ElemDist {
        pub data: BoxedStrategy<Vec<f64>>,
        pub weight: BoxedStrategy<f64>,
        pub keep: BoxedStrategy<bool>,
        pub cot: BoxedStrategy<f64>,
        pub poison: BoxedStrategy<f64>,
    }

    impl ElemDist {
        pub fn strategy(self, n_inputs: usize) -> BoxedStrategy<Elem> {
            (
                self.data,
                self.weight,
                self.keep,
                self.cot,
                self.poison,
                0..=(n_inputs as u8),
            )
                .prop_map(|(data, weight, keep, cot, poison, poison_which)| Elem {
                    data,
                    weight,
                    keep,
                    cot,
                    poison,
                    poison_which,
                })
                .boxed()
        }
    }

    /// A regime of an elementwise loss: frames, and the elements of a frame.
    pub struct Recipe {
        pub loss: &'static str,
        pub dtype: Dtype,
        /// The data inputs, in catalogue order.
        pub inputs: Vec<&'static str>,
        pub frame: BoxedStrategy<Frame>,
        pub elems: Arc<dyn Fn(&Frame) -> ElemDist + Send + Sync>,
        /// Lengths of 1-D cases (inclusive).
        pub len: (usize, usize),
    }

    impl Recipe {
        pub fn strategy(self) -> BoxedStrategy<Case> {
            let Recipe {
                loss,
                dtype,
                inputs,
                frame,
                elems,
                len,
            } = self;
            let k = inputs.len();
            frame
                .prop_flat_map(move |fr| {
                    let (lo, hi) = match &fr.shape {
                        Some(s) => {
                            let n = s.iter().product::<usize>();
                            (n, n)
                        }
                        None => len,
                    };
                    let es = proptest::collection::vec((elems)(&fr).strategy(k), lo..=hi);
                    (Just(fr), es)
                })
                .prop_map(move |(fr, es)| realize(loss, dtype, &inputs, &fr, es))
                .boxed()
        }
    }

    /// Build the case of a frame and its elements.
    pub fn realize(loss: &str, dtype: Dtype, inputs: &[&str], fr: &Frame, es: Vec<Elem>) -> Case {
        let n = es.len();
        let shape = fr.shape.clone().unwrap_or_else(|| vec![n]);
        debug_assert_eq!(shape.iter().product::<usize>(), n);
        let mut case = Case::new(loss, dtype).expect("a catalogue loss");
        case.set_reduction(fr.reduction);
        if dtype.is_16bit() && fr.out_f32 {
            case.out_dtype = Dtype::F32;
        }
        for (name, v) in &fr.params {
            case.params.insert(name.clone(), v.clone());
        }
        let spec = case.spec();
        case.grad = spec
            .grads
            .iter()
            .zip(fr.grads.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, &g)| g)
            .map(|(s, _)| s.to_string())
            .collect();

        let mask: Option<Vec<i64>> = match &fr.mask {
            MaskPlan::Absent => None,
            MaskPlan::Random => Some(es.iter().map(|e| e.keep as i64).collect()),
            MaskPlan::AllMasked => Some(vec![0; n]),
            MaskPlan::NoneMasked => Some(vec![1; n]),
            MaskPlan::OneValid(ix) => {
                let j = if n == 0 { 0 } else { ix.index(n) };
                Some((0..n).map(|i| (i == j) as i64).collect())
            }
        };
        let weight: Option<Vec<f64>> = match fr.weights {
            WeightPlan::Absent => None,
            WeightPlan::Elements => Some(es.iter().map(|e| dtype.round(e.weight)).collect()),
            WeightPlan::AllZero => Some(vec![0.0; n]),
        };
        let mut cols: Vec<Vec<f64>> = (0..inputs.len())
            .map(|c| {
                es.iter()
                    .map(|e| dtype.round(e.data[c] * fr.scale))
                    .collect()
            })
            .collect();
        if fr.poison {
            for (i, e) in es.iter().enumerate() {
                let masked = mask.as_ref().is_some_and(|m| m[i] == 0);
                let zero_w = weight.as_ref().is_some_and(|w| w[i] == 0.0);
                if masked || zero_w {
                    let p = dtype.round(e.poison);
                    let w = e.poison_which as usize;
                    for (c, col) in cols.iter_mut().enumerate() {
                        if w == c || w >= inputs.len() {
                            col[i] = p;
                        }
                    }
                }
            }
        }
        if let (Some((ix, which)), true) = (&fr.nan_at, n > 0) {
            let i = ix.index(n);
            let w = *which as usize % (inputs.len() + 1);
            for (c, col) in cols.iter_mut().enumerate() {
                if w == c || w == inputs.len() {
                    col[i] = f64::NAN;
                }
            }
        }
        for (name, col) in inputs.iter().zip(cols) {
            case.inputs
                .insert(name.to_string(), Tensor::float(dtype, shape.clone(), col));
        }
        if let Some(w) = weight {
            case.inputs
                .insert("weight".into(), Tensor::float(dtype, shape.clone(), w));
        }
        if let Some(m) = mask {
            case.inputs
                .insert("mask".into(), Tensor::int(shape.clone(), m));
        }
        if let Some(c) = fr.cotangent {
            let t = if fr.reduction == Reduction::None {
                Tensor::float(
                    dtype,
                    shape.clone(),
                    es.iter().map(|e| dtype.round(e.cot)).collect(),
                )
            } else {
                Tensor::scalar(dtype, dtype.round(c))
            };
            case.inputs.insert("cotangent".into(), t);
        }
        case
    }

    /// Tile a 1-D elementwise case to `n` elements: element i copies pattern element
    /// h(i) mod k (h: splitmix64 from `seed`), its finite data nudged by up to ±3 ulps; masks,
    /// weights and a `none` cotangent follow their element. Scalar inputs stay.
    pub fn tile(case: Case, n: usize, seed: u64) -> Case {
        let dtype = case.dtype;
        tile_by(case, n, seed, &|name, x, d| {
            if matches!(name, "weight" | "cotangent") {
                x
            } else {
                super::values::nudge(dtype, x, d)
            }
        })
    }

    /// [`tile`] with the nudge chosen per input: `step(input, x, d)` is the copy of pattern
    /// value `x` that is `d` ∈ [−3, 3] steps off (inputs with a domain keep their values in it).
    pub fn tile_by(case: Case, n: usize, seed: u64, step: &dyn Fn(&str, f64, i64) -> f64) -> Case {
        let k = case
            .inputs
            .values()
            .find(|t| t.shape.len() == 1)
            .map(|t| t.len())
            .unwrap_or(0);
        if k == 0 {
            return case;
        }
        let dtype = case.dtype;
        let picks: Vec<(usize, i64)> = (0..n as u64)
            .map(|i| {
                let h = super::splitmix64(seed ^ super::splitmix64(i));
                ((h % k as u64) as usize, ((h >> 32) % 7) as i64 - 3)
            })
            .collect();
        let mut out = case.clone();
        for (name, t) in case.inputs.iter() {
            if t.shape.len() != 1 || t.len() != k {
                continue;
            }
            let nt = match &t.data {
                losscheck_core::Data::F(v) => Tensor::float(
                    dtype,
                    vec![n],
                    picks.iter().map(|&(j, d)| step(name, v[j], d)).collect(),
                ),
                losscheck_core::Data::I(v) => {
                    Tensor::int(vec![n], picks.iter().map(|&(j, _)| v[j]).collect())
                }
            };
            out.inputs.insert(name.clone(), nt);
        }
        out
    }

    /// Params of a frame given its data scale exponent.
    pub type ParamsFn = Arc<dyn Fn(i32) -> BoxedStrategy<Vec<(String, ParamValue)>> + Send + Sync>;

    /// A frame distribution, field by field (each a strategy).
    pub struct FrameDist {
        pub reduction: BoxedStrategy<Reduction>,
        pub weights: BoxedStrategy<WeightPlan>,
        pub mask: BoxedStrategy<MaskPlan>,
        pub cotangent: BoxedStrategy<Option<f64>>,
        pub grads: BoxedStrategy<Vec<bool>>,
        pub out_f32: BoxedStrategy<bool>,
        /// Params given the data scale exponent.
        pub params: ParamsFn,
        pub scale_exp: BoxedStrategy<i32>,
        pub poison: BoxedStrategy<bool>,
        pub nan_at: BoxedStrategy<Option<(Index, u8)>>,
        pub shape: BoxedStrategy<Option<Vec<usize>>>,
    }

    impl FrameDist {
        pub fn strategy(self) -> BoxedStrategy<Frame> {
            let params = self.params;
            (
                self.reduction,
                self.weights,
                self.mask,
                self.cotangent,
                self.grads,
                self.out_f32,
                self.scale_exp
                    .prop_flat_map(move |k| (Just(k), (params)(k))),
                self.poison,
                self.nan_at,
                self.shape,
            )
                .prop_map(
                    |(
                        reduction,
                        weights,
                        mask,
                        cotangent,
                        grads,
                        out_f32,
                        (k, params),
                        poison,
                        nan_at,
                        shape,
                    )| Frame {
                        reduction,
                        weights,
                        mask,
                        cotangent,
                        grads,
                        out_f32,
                        params,
                        scale: losscheck_core::dtype::pow2(k),
                        poison,
                        nan_at,
                        shape,
                    },
                )
                .boxed()
        }
    }

    /// The reductions, `sum` first (the simplest to read), every one reachable.
    pub fn any_reduction() -> BoxedStrategy<Reduction> {
        proptest::sample::select(vec![Reduction::Sum, Reduction::Mean, Reduction::None]).boxed()
    }

    /// Any subset of the `k` differentiable inputs (shrinks toward none).
    pub fn any_grads(k: usize) -> BoxedStrategy<Vec<bool>> {
        proptest::collection::vec(any::<bool>(), k..=k).boxed()
    }

    /// `Some(cot)` with probability `p`.
    pub fn maybe(p: f64, s: BoxedStrategy<f64>) -> BoxedStrategy<Option<f64>> {
        proptest::option::weighted(p, s).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// The regression family.

mod regression {
    use super::elementwise::{
        self, any_grads, any_reduction, maybe, ElemDist, FrameDist, MaskPlan, Recipe, WeightPlan,
    };
    use super::values::{self, nudge, square_overflow_edge, square_underflow_edge};
    use super::Regime;
    use losscheck_core::catalogue;
    use losscheck_core::dtype::pow2;
    use losscheck_core::{Case, Dtype, ParamValue};
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use std::sync::Arc;

    const INPUTS: [&str; 2] = ["pred", "target"];

    fn pair(a: f64, b: f64) -> Vec<f64> {
        vec![a, b]
    }

    /// Range of the data scale exponent for typical data: residuals of a few units times 2^k;
    /// in f16, 2^4 keeps most squares below the max (65504) and some above.
    fn typical_scale(dtype: Dtype) -> (i32, i32) {
        if dtype == Dtype::F16 {
            (-6, 4)
        } else {
            (-12, 12)
        }
    }

    /// Params of a loss over their whole domains (values::param), or data-relative: a huber
    /// delta on the data's scale, where both branches are exercised.
    fn params(loss: &'static str, dtype: Dtype, relative: bool) -> elementwise::ParamsFn {
        Arc::new(move |k: i32| {
            let spec = catalogue::spec(loss).unwrap();
            let mut parts: Vec<BoxedStrategy<(String, ParamValue)>> = Vec::new();
            for p in spec.params {
                let name = p.name.to_string();
                let whole = values::param(p, dtype);
                let s: BoxedStrategy<ParamValue> = if relative && p.name == "delta" {
                    // 2^j·(1 + f)·2^k, j in [-3, 2]: on the scale of the residuals
                    let rel = values::f32_log_uniform(-3, 2).prop_map(move |d| {
                        let x = Dtype::F32.round(d * pow2(k));
                        ParamValue::Float(if x > 0.0 {
                            x
                        } else {
                            Dtype::F32.min_subnormal()
                        })
                    });
                    prop_oneof![3 => rel, 1 => whole].boxed()
                } else {
                    whole
                };
                parts.push(s.prop_map(move |v| (name.clone(), v)).boxed());
            }
            parts.into_iter().collect::<Vec<_>>().boxed()
        })
    }

    fn base_frame(loss: &'static str, dtype: Dtype) -> FrameDist {
        let (lo, hi) = typical_scale(dtype);
        FrameDist {
            reduction: any_reduction(),
            weights: prop_oneof![2 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)]
                .boxed(),
            mask: prop_oneof![2 => Just(MaskPlan::Absent), 1 => Just(MaskPlan::Random)].boxed(),
            cotangent: maybe(0.4, values::typical_cotangent(dtype)),
            grads: any_grads(2),
            out_f32: proptest::bool::weighted(0.25).boxed(),
            params: params(loss, dtype, true),
            scale_exp: (lo..=hi).boxed(),
            poison: proptest::bool::weighted(0.3).boxed(),
            nan_at: Just(None).boxed(),
            shape: Just(None).boxed(),
        }
    }

    fn base_elems(dtype: Dtype) -> ElemDist {
        ElemDist {
            data: typical_pair(dtype),
            weight: values::typical_weight(dtype),
            keep: proptest::bool::weighted(0.75).boxed(),
            cot: values::typical_cotangent(dtype),
            poison: values::poison(dtype),
        }
    }

    /// (pred, target) at unit scale: a normal target, and a prediction either independent or
    /// close to it (a good model: small residuals, cancellation in pred − target).
    fn typical_pair(dtype: Dtype) -> BoxedStrategy<Vec<f64>> {
        prop_oneof![
            1 => (values::normal(), values::normal()).prop_map(move |(a, b)| pair(dtype.round(a), dtype.round(b))),
            1 => (values::normal(), values::normal(), -12i32..=0).prop_map(move |(t, e, j)| {
                let t = dtype.round(t);
                pair(dtype.round(t + e * pow2(j)), t)
            }),
        ]
        .boxed()
    }

    /// Residual magnitudes where the loss's formula changes behaviour, for data at unit scale
    /// (the frame's params included).
    fn critical_residuals(loss: &str, dtype: Dtype, params: &[(String, ParamValue)]) -> Vec<f64> {
        let mut v = vec![
            0.0,
            dtype.min_subnormal(),
            dtype.min_normal(),
            1.0,
            dtype.max(),
        ];
        let sq_over = square_overflow_edge(dtype);
        let sq_under = square_underflow_edge(dtype);
        v.extend([
            sq_over,
            dtype.next_down(sq_over),
            sq_under,
            dtype.next_up(sq_under),
        ]);
        match loss {
            "huber" => {
                let delta = params
                    .iter()
                    .find(|(n, _)| n == "delta")
                    .and_then(|(_, p)| p.as_f64())
                    .unwrap_or(1.0);
                let d = dtype.round(delta);
                let d = if d == 0.0 {
                    dtype.min_subnormal()
                } else if d.is_infinite() {
                    dtype.max()
                } else {
                    d
                };
                v.extend([
                    d,
                    dtype.next_up(d),
                    dtype.next_down(d),
                    nudge(dtype, d, 2),
                    nudge(dtype, d, -2),
                    dtype.round(2.0 * d),
                    dtype.round(d / 2.0),
                ]);
                // the square of the quadratic branch and δ·|r| of the linear one overflowing
                v.push(dtype.round(libm::sqrt(2.0 * dtype.max())));
                v.push(dtype.round(dtype.max() / d));
            }
            "log_cosh" => {
                // cosh overflows a ln 2 after exp does, in the dtype, in f32, in f64
                for e in [
                    dtype.exp_overflow_edge(),
                    Dtype::F32.exp_overflow_edge(),
                    libm::log(f64::MAX),
                ] {
                    for x in [e, e + std::f64::consts::LN_2] {
                        let r = dtype.round(x);
                        v.extend([r, dtype.next_up(r), dtype.next_down(r)]);
                    }
                }
                // log cosh r ≈ r²/2 underflows; ≈ |r| − ln 2 switches
                v.push(dtype.round(libm::sqrt(2.0 * dtype.min_subnormal())));
                v.extend([dtype.round(0.5), dtype.round(20.0), dtype.round(40.0)]);
            }
            "quantile" | "mae" => {
                v.extend([dtype.epsilon(), dtype.next_up(dtype.min_subnormal())]);
            }
            _ => {}
        }
        let mut out: Vec<f64> = v
            .into_iter()
            .map(|x| dtype.round(x))
            .filter(|x| x.is_finite() && *x >= 0.0)
            .collect();
        out.sort_by(f64::total_cmp);
        out.dedup();
        out.sort_by_key(|&x| (x != 0.0) as u8);
        out
    }

    /// (pred, target) with pred − target at a critical residual: exactly (target 0, or the
    /// residual split symmetrically), or from a typical target (rounded).
    fn kink_pair(dtype: Dtype, crit: Vec<f64>) -> BoxedStrategy<Vec<f64>> {
        (
            select(crit),
            any::<bool>(),
            0u8..4,
            values::typical(dtype, -2, 2),
            -1i64..=1,
        )
            .prop_map(move |(r, neg, anchor, t, j)| {
                let r = nudge(dtype, if neg { -r } else { r }, j);
                match anchor {
                    // target 0: pred − target = r exactly
                    0 => pair(r, 0.0),
                    // target −r: pred 0
                    1 => pair(0.0, -r),
                    // symmetric: ±r/2 (exact unless r/2 is subnormal-inexact)
                    2 => pair(dtype.round(r / 2.0), dtype.round(-r / 2.0)),
                    // a typical target
                    _ => pair(dtype.round(t + r), t),
                }
            })
            .boxed()
    }

    /// (pred, target) from the edge palette and its combinations.
    fn extreme_pair(dtype: Dtype) -> BoxedStrategy<Vec<f64>> {
        let sq = square_overflow_edge(dtype);
        prop_oneof![
            // independent edges, infinities included (mixed: same-sign infinities sometimes)
            6 => (values::edge_or_inf(dtype), values::edge_or_inf(dtype)).prop_map(|(a, b)| pair(a, b)),
            // one edge against a typical value
            2 => (values::edge_or_inf(dtype), values::typical(dtype, -4, 4), any::<bool>())
                .prop_map(|(e, t, swap)| if swap { pair(t, e) } else { pair(e, t) }),
            // equal (r = 0) and adjacent (r = one ulp)
            2 => (values::edge_or_inf(dtype), -1i64..=1).prop_map(move |(x, j)| pair(nudge(dtype, x, j), x)),
            // residuals whose square overflows the dtype (≈256 apart in f16)
            3 => (select(vec![sq, dtype.next_down(sq), dtype.next_up(sq), 2.0 * sq, dtype.max()]), values::typical(dtype, -2, 4), 0u8..3, any::<bool>())
                .prop_map(move |(r, t, anchor, neg)| {
                    let r = if neg { -r } else { r };
                    match anchor {
                        0 => pair(dtype.round(r), 0.0),
                        1 => pair(dtype.round(r / 2.0), dtype.round(-r / 2.0)),
                        _ => pair(dtype.round(t + r), t),
                    }
                }),
            // the dtype max against minus itself: |r| = 2·max
            1 => any::<bool>().prop_map(move |neg| {
                let m = if neg { -dtype.max() } else { dtype.max() };
                pair(m, -m)
            }),
            // bit-uniform
            1 => (values::bit_uniform(dtype), values::bit_uniform(dtype)).prop_map(|(a, b)| pair(a, b)),
        ]
        .boxed()
    }

    fn recipe(
        loss: &'static str,
        dtype: Dtype,
        frame: FrameDist,
        elems: Arc<dyn Fn(&elementwise::Frame) -> ElemDist + Send + Sync>,
        len: (usize, usize),
    ) -> Recipe {
        Recipe {
            loss,
            dtype,
            inputs: INPUTS.to_vec(),
            frame: frame.strategy(),
            elems,
            len,
        }
    }

    pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
        let loss: &'static str = catalogue::spec(loss).unwrap().id;
        let fdt = dtype;
        match r {
            Regime::Typical => {
                let f = base_frame(loss, dtype);
                recipe(loss, dtype, f, Arc::new(move |_| base_elems(fdt)), (0, 48)).strategy()
            }
            Regime::BitUniform => {
                let f = FrameDist {
                    weights:
                        prop_oneof![1 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)]
                            .boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(dtype)),
                    params: params(loss, dtype, false),
                    scale_exp: Just(0).boxed(),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |_: &elementwise::Frame| ElemDist {
                    data: (values::bit_uniform(fdt), values::bit_uniform(fdt))
                        .prop_map(|(a, b)| pair(a, b))
                        .boxed(),
                    weight: values::bit_uniform_nonneg(fdt),
                    cot: values::bit_uniform(fdt)
                        .prop_map(|x| if x == 0.0 { 1.0 } else { x })
                        .boxed(),
                    ..base_elems(fdt)
                });
                recipe(loss, dtype, f, elems, (0, 32)).strategy()
            }
            Regime::Extreme => {
                let f = FrameDist {
                    weights: prop_oneof![2 => Just(WeightPlan::Absent), 2 => Just(WeightPlan::Elements), 1 => Just(WeightPlan::AllZero)].boxed(),
                    mask: prop_oneof![
                        2 => Just(MaskPlan::Absent),
                        3 => Just(MaskPlan::Random),
                        1 => any::<Index>().prop_map(MaskPlan::OneValid),
                        1 => Just(MaskPlan::AllMasked),
                    ]
                    .boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(dtype)),
                    params: params(loss, dtype, false),
                    scale_exp: Just(0).boxed(),
                    poison: proptest::bool::weighted(0.9).boxed(),
                    nan_at: proptest::option::weighted(0.1, (any::<Index>(), any::<u8>())).boxed(),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |_: &elementwise::Frame| ElemDist {
                    data: extreme_pair(fdt),
                    weight: values::edge_weight(fdt),
                    keep: proptest::bool::weighted(0.6).boxed(),
                    cot: values::edge_cotangent(fdt),
                    ..base_elems(fdt)
                });
                recipe(loss, dtype, f, elems, (0, 24)).strategy()
            }
            Regime::Masked => {
                let f = FrameDist {
                    weights:
                        prop_oneof![3 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)]
                            .boxed(),
                    mask: prop_oneof![
                        3 => Just(MaskPlan::Random),
                        2 => Just(MaskPlan::AllMasked),
                        2 => any::<Index>().prop_map(MaskPlan::OneValid),
                        2 => Just(MaskPlan::NoneMasked),
                    ]
                    .boxed(),
                    poison: proptest::bool::weighted(0.95).boxed(),
                    nan_at: proptest::option::weighted(0.05, (any::<Index>(), any::<u8>())).boxed(),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |_: &elementwise::Frame| {
                    ElemDist {
                    data: prop_oneof![3 => typical_pair(fdt), 1 => extreme_pair(fdt)].boxed(),
                    // sparse or dense masks
                    keep: prop_oneof![1 => proptest::bool::weighted(0.2), 1 => proptest::bool::weighted(0.8)].boxed(),
                    ..base_elems(fdt)
                }
                });
                recipe(loss, dtype, f, elems, (0, 40)).strategy()
            }
            Regime::Weighted => {
                let f = FrameDist {
                    weights:
                        prop_oneof![6 => Just(WeightPlan::Elements), 1 => Just(WeightPlan::AllZero)]
                            .boxed(),
                    mask: prop_oneof![3 => Just(MaskPlan::Absent), 1 => Just(MaskPlan::Random)]
                        .boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(dtype)),
                    poison: proptest::bool::weighted(0.9).boxed(),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |_: &elementwise::Frame| ElemDist {
                    data: prop_oneof![3 => typical_pair(fdt), 1 => extreme_pair(fdt)].boxed(),
                    weight: values::edge_weight(fdt),
                    ..base_elems(fdt)
                });
                recipe(loss, dtype, f, elems, (0, 32)).strategy()
            }
            Regime::Shapes => {
                let shapes: Vec<Vec<usize>> = vec![
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
                ];
                let f = FrameDist {
                    mask: prop_oneof![
                        2 => Just(MaskPlan::Absent),
                        2 => Just(MaskPlan::Random),
                        1 => Just(MaskPlan::AllMasked),
                        1 => any::<Index>().prop_map(MaskPlan::OneValid),
                    ]
                    .boxed(),
                    cotangent: maybe(0.5, values::typical_cotangent(dtype)),
                    shape: select(shapes).prop_map(Some).boxed(),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |_: &elementwise::Frame| ElemDist {
                    data: prop_oneof![3 => typical_pair(fdt), 1 => extreme_pair(fdt)].boxed(),
                    ..base_elems(fdt)
                });
                recipe(loss, dtype, f, elems, (0, 0)).strategy()
            }
            Regime::Kinks => {
                let f = FrameDist {
                    params: params(loss, dtype, false),
                    scale_exp: Just(0).boxed(),
                    cotangent: maybe(0.4, values::typical_cotangent(dtype)),
                    ..base_frame(loss, dtype)
                };
                let elems = Arc::new(move |fr: &elementwise::Frame| {
                    let crit = critical_residuals(loss, fdt, &fr.params);
                    ElemDist {
                        data: prop_oneof![4 => kink_pair(fdt, crit), 1 => typical_pair(fdt)]
                            .boxed(),
                        ..base_elems(fdt)
                    }
                });
                recipe(loss, dtype, f, elems, (1, 16)).strategy()
            }
            Regime::LongBatch => long_batch(loss, dtype),
        }
    }

    /// Long batches: N log-uniform in [2^11, 2^17]. Drawing 2^17 elements one by one through
    /// proptest costs ~10 µs each, so a pattern of up to 64 elements is drawn (and shrunk) and
    /// tiled to N by [`elementwise::tile`], each copy a few ulps off its pattern element.
    fn long_batch(loss: &'static str, dtype: Dtype) -> BoxedStrategy<Case> {
        let fdt = dtype;
        let f = FrameDist {
            reduction: prop_oneof![
                4 => Just(losscheck_core::Reduction::Sum),
                4 => Just(losscheck_core::Reduction::Mean),
                1 => Just(losscheck_core::Reduction::None),
            ]
            .boxed(),
            scale_exp: (-2i32..=2).boxed(),
            ..base_frame(loss, fdt)
        };
        let elems = Arc::new(move |_: &elementwise::Frame| ElemDist {
            data: prop_oneof![
                1 => typical_pair(fdt),
                // near-equal per-element losses: a naive 16-bit sum stalls at 2^11
                1 => (values::normal(), any::<bool>(), -3i64..=3).prop_map(move |(t, neg, j)| {
                    let t = fdt.round(t);
                    let r = nudge(fdt, 1.0, j);
                    pair(fdt.round(t + if neg { -r } else { r }), t)
                }),
            ]
            .boxed(),
            ..base_elems(fdt)
        });
        let pattern = recipe(loss, fdt, f, elems, (1, 64)).strategy();
        (11i32..=17, 0.0f64..1.0, any::<u64>(), pattern)
            .prop_map(|(e, t, seed, case)| {
                let n = (pow2(e) * (1.0 + t)).min(pow2(17)) as usize;
                elementwise::tile(case, n, seed)
            })
            .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// The elementwise classification losses.

pub mod classification {
    use super::elementwise::{
        self, any_reduction, maybe, ElemDist, FrameDist, MaskPlan, Recipe, WeightPlan,
    };
    use super::values::{self, nudge};
    use super::Regime;
    use losscheck_core::catalogue::{self, skipped_rows, ParamSpec};
    use losscheck_core::dtype::pow2;
    use losscheck_core::{Case, Dtype, ParamValue, Reduction, Tensor};
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use std::f64::consts::LN_2;
    use std::sync::Arc;

    pub const LOSSES: [&str; 4] = ["bce", "bce_logits", "hinge", "focal"];

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        Bce,
        Logits,
        Hinge,
        Focal,
    }

    fn kind(loss: &str) -> Kind {
        match loss {
            "bce" => Kind::Bce,
            "bce_logits" => Kind::Logits,
            "hinge" => Kind::Hinge,
            "focal" => Kind::Focal,
            _ => panic!("no classification generators for {loss}"),
        }
    }

    /// The float columns of an element: the data inputs, and for `bce_logits` an elementwise
    /// pos_weight (kept, dropped, or replaced by a broadcast [C] one in [`finish`]). The ±1
    /// labels of `hinge` are drawn as floats and turned into an i64 tensor in [`finish`].
    fn inputs(k: Kind) -> Vec<&'static str> {
        match k {
            Kind::Bce => vec!["prob", "target"],
            Kind::Logits => vec!["logit", "target", "pos_weight"],
            Kind::Hinge => vec!["score", "target"],
            Kind::Focal => vec!["logit", "target"],
        }
    }

    fn primary(k: Kind) -> &'static str {
        inputs(k)[0]
    }

    // ---- palettes (computed from the dtype layer)

    fn palette(mut v: Vec<f64>, lo: f64, hi: f64) -> Vec<f64> {
        v.retain(|x| x.is_finite() && *x >= lo && *x <= hi);
        v.sort_by(f64::total_cmp);
        v.dedup();
        // 0 and 1 first: select shrinks toward the front
        v.sort_by_key(|&x| {
            if x == 0.0 {
                0
            } else if x == 1.0 {
                1
            } else {
                2
            }
        });
        v
    }

    /// Logit magnitudes where something happens: the general edge palette (which holds the exp
    /// overflow / subnormal / zero edges of the dtype, of the f32 compute type and of f64, with
    /// their neighbours), and the points where σ(z) rounds to 1 (e^−z below half an ulp of 1:
    /// z ≈ p·ln 2) in the dtype, in f32 and in f64.
    pub fn logit_magnitudes(dtype: Dtype) -> Vec<f64> {
        let mut v = values::edge_magnitudes(dtype);
        for p in [dtype.precision(), Dtype::F32.precision(), 53] {
            for k in [p, p + 1, p + 2] {
                let e = dtype.round(k as f64 * LN_2);
                v.extend([e, dtype.next_up(e), dtype.next_down(e)]);
            }
        }
        v.extend([LN_2, 0.25, 4.0, 8.0, 16.0, 20.0, 30.0, 40.0].map(|x| dtype.round(x)));
        palette(
            v.into_iter().map(|x| dtype.round(x)).collect(),
            0.0,
            f64::MAX,
        )
    }

    /// The signed exp edges themselves (for the unit tests: the generators must reach them).
    pub fn exp_edges(dtype: Dtype) -> Vec<f64> {
        let mut v = Vec::new();
        for d in [dtype, dtype.compute_type()] {
            for e in [
                d.exp_overflow_edge(),
                d.exp_subnormal_edge(),
                d.exp_zero_edge(),
            ] {
                v.push(dtype.round(e));
                v.push(dtype.round(-e));
            }
        }
        v.retain(|x| x.is_finite());
        v
    }

    /// Probabilities where something happens: exactly 0 and 1, one ulp away (`next_up(0)`,
    /// `next_down(1)`), the normal boundary, ½ and its neighbours, e^−100 (PyTorch's floor) and
    /// e at the exp edges, and one minus those.
    pub fn prob_edges(dtype: Dtype) -> Vec<f64> {
        let d = dtype;
        let one_down = d.next_down(1.0);
        let mut v = vec![
            0.0,
            1.0,
            d.next_up(0.0),
            one_down,
            2.0 * d.min_subnormal(),
            d.next_down(one_down),
            d.min_normal(),
            d.next_down(d.min_normal()),
            d.next_up(d.min_normal()),
            0.5,
            d.next_up(0.5),
            d.next_down(0.5),
            d.epsilon(),
            d.epsilon() / 2.0,
            1.0 - d.epsilon(),
            0.25,
            0.75,
            d.round(1e-6),
            d.round(1.0 - 1e-6),
        ];
        for l in [
            -100.0,
            -1.0,
            -10.0,
            Dtype::F32.exp_subnormal_edge(),
            d.exp_subnormal_edge(),
            d.exp_zero_edge(),
        ] {
            let e = libm::exp(l);
            for p in [d.round(e), d.round(1.0 - e)] {
                v.extend([p, d.next_up(p), d.next_down(p)]);
            }
        }
        palette(v.into_iter().map(|x| d.round(x)).collect(), 0.0, 1.0)
    }

    /// Targets where something happens: hard 0 and 1, soft ones near them (1e−6-ish, the
    /// subnormals, 1 − ulp), ½, label-smoothed values.
    pub fn target_edges(dtype: Dtype) -> Vec<f64> {
        let d = dtype;
        let v = vec![
            0.0,
            1.0,
            0.5,
            d.round(1e-6),
            d.round(pow2(-20)),
            d.round(1e-3),
            d.round(0.1),
            d.round(0.9),
            d.round(1.0 - 1e-3),
            d.round(1.0 - 1e-6),
            d.round(1.0 - pow2(-20)),
            d.next_down(1.0),
            d.next_down(d.next_down(1.0)),
            d.min_subnormal(),
            d.min_normal(),
            d.epsilon() / 2.0,
        ];
        palette(v, 0.0, 1.0)
    }

    // ---- scalar strategies

    fn signed(s: BoxedStrategy<f64>) -> BoxedStrategy<f64> {
        (s, any::<bool>())
            .prop_map(|(x, neg)| if neg { -x } else { x })
            .boxed()
    }

    /// A palette value, sometimes a few ulps off (kept in [lo, hi]).
    fn from_palette(dtype: Dtype, pal: Vec<f64>, lo: f64, hi: f64) -> BoxedStrategy<f64> {
        prop_oneof![
            6 => select(pal.clone()),
            2 => (select(pal), -2i64..=2).prop_map(move |(x, j)| {
                let y = nudge(dtype, x, j);
                if y >= lo && y <= hi { y } else { x }
            }),
        ]
        .boxed()
    }

    /// Uniform over the bit patterns of the values in [0, 1].
    fn unit_bits(dtype: Dtype) -> BoxedStrategy<f64> {
        let top = dtype.ordinal(1.0).unwrap();
        (0..=top).prop_map(move |k| dtype.from_ordinal(k)).boxed()
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + libm::exp(-x))
    }

    /// Into the open interval (0, 1).
    fn open(dtype: Dtype, x: f64) -> f64 {
        let r = dtype.round(x);
        if r <= 0.0 {
            dtype.min_subnormal()
        } else if r >= 1.0 {
            dtype.next_down(1.0)
        } else {
            r
        }
    }

    /// Typical logits: N(0, 3²), sometimes rescaled by 2^k.
    fn logit_typical(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            4 => values::normal().prop_map(move |z| dtype.round(3.0 * z)),
            1 => (values::normal(), -8i32..=3).prop_map(move |(z, k)| dtype.round(3.0 * z * pow2(k))),
        ]
        .boxed()
    }

    /// Logits at the edges: the logit palette (either sign, a few ulps off), subnormals, ±0,
    /// ±max, ±inf, bit-uniform.
    fn logit_extreme(dtype: Dtype) -> BoxedStrategy<f64> {
        let mags = logit_magnitudes(dtype);
        prop_oneof![
            8 => signed(from_palette(dtype, mags, 0.0, f64::MAX)),
            1 => signed(values::subnormal(dtype)),
            1 => Just(-0.0),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => signed(Just(dtype.max()).boxed()),
            1 => values::bit_uniform(dtype),
        ]
        .boxed()
    }

    /// Typical probabilities in (0, 1): σ of a typical logit, or uniform.
    fn prob_typical(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            3 => values::normal().prop_map(move |z| open(dtype, sigmoid(3.0 * z))),
            1 => (0.0f64..1.0).prop_map(move |u| open(dtype, u)),
        ]
        .boxed()
    }

    fn prob_extreme(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            8 => from_palette(dtype, prob_edges(dtype), 0.0, 1.0),
            1 => values::subnormal(dtype),
            1 => unit_bits(dtype),
            1 => prob_typical(dtype),
        ]
        .boxed()
    }

    fn hard(dtype: Dtype) -> BoxedStrategy<f64> {
        let _ = dtype;
        select(vec![0.0, 1.0]).boxed()
    }

    /// Typical targets: hard 0/1, uniform soft ones, label-smoothed ones.
    fn target_typical(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            3 => hard(dtype),
            2 => (0.0f64..=1.0).prop_map(move |u| dtype.round(u)),
            1 => select(vec![0.05, 0.95, 0.1, 0.9, 0.005, 0.995]).prop_map(move |t| dtype.round(t)),
        ]
        .boxed()
    }

    fn target_extreme(dtype: Dtype) -> BoxedStrategy<f64> {
        prop_oneof![
            3 => hard(dtype),
            5 => from_palette(dtype, target_edges(dtype), 0.0, 1.0),
            1 => unit_bits(dtype),
            1 => values::subnormal(dtype),
        ]
        .boxed()
    }

    fn sign() -> BoxedStrategy<f64> {
        select(vec![1.0, -1.0]).boxed()
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Style {
        Typical,
        Extreme,
        Bits,
    }

    fn v2((a, b): (f64, f64)) -> Vec<f64> {
        vec![a, b]
    }
    fn v3((a, b, c): (f64, f64, f64)) -> Vec<f64> {
        vec![a, b, c]
    }

    /// The float columns of one element (see [`inputs`]).
    fn data(k: Kind, d: Dtype, style: Style) -> BoxedStrategy<Vec<f64>> {
        match (k, style) {
            (Kind::Bce, Style::Typical) => prop_oneof![
                3 => (prob_typical(d), target_typical(d)).prop_map(v2),
                // a calibrated prediction: the loss at its minimum (the target's entropy)
                1 => prob_typical(d).prop_map(|p| vec![p, p]),
            ]
            .boxed(),
            (Kind::Bce, Style::Extreme) => prop_oneof![
                5 => (prob_extreme(d), target_extreme(d)).prop_map(v2),
                2 => (prob_extreme(d), hard(d)).prop_map(v2),
                1 => (prob_typical(d), target_extreme(d)).prop_map(v2),
                1 => prob_extreme(d).prop_map(|p| vec![p, p]),
            ]
            .boxed(),
            (Kind::Bce, Style::Bits) => (unit_bits(d), unit_bits(d)).prop_map(v2).boxed(),
            (Kind::Logits | Kind::Focal, Style::Typical) => prop_oneof![
                3 => (logit_typical(d), target_typical(d), values::typical_weight(d)).prop_map(v3),
                // a confident model, right or wrong: hard target by the logit's sign
                1 => (logit_typical(d), any::<bool>(), values::typical_weight(d)).prop_map(|(z, right, w)| {
                    let t = if (z > 0.0) == right { 1.0 } else { 0.0 };
                    vec![z, t, w]
                }),
            ]
            .boxed(),
            (Kind::Logits | Kind::Focal, Style::Extreme) => prop_oneof![
                5 => (logit_extreme(d), target_extreme(d), values::edge_weight(d)).prop_map(v3),
                2 => (logit_extreme(d), hard(d), values::edge_weight(d)).prop_map(v3),
                1 => (logit_typical(d), target_extreme(d), values::edge_weight(d)).prop_map(v3),
            ]
            .boxed(),
            (Kind::Logits | Kind::Focal, Style::Bits) => (
                values::bit_uniform(d),
                unit_bits(d),
                values::bit_uniform_nonneg(d),
            )
                .prop_map(v3)
                .boxed(),
            (Kind::Hinge, Style::Typical) => (logit_typical(d), sign()).prop_map(v2).boxed(),
            (Kind::Hinge, Style::Extreme) => prop_oneof![
                4 => (logit_extreme(d), sign()).prop_map(v2),
                1 => (logit_typical(d), sign()).prop_map(v2),
            ]
            .boxed(),
            (Kind::Hinge, Style::Bits) => (values::bit_uniform(d), sign()).prop_map(v2).boxed(),
        }
    }

    fn fparam(params: &[(String, ParamValue)], name: &str) -> Option<f64> {
        params
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| p.as_f64())
    }

    /// Elements at the critical points of the formula, given the frame's params: the hinge kink
    /// t·s = m and its neighbours; probabilities where log p or log(1 − p) meets the floor;
    /// logits at the minimum of bce_logits (σ(z) = t, or pw·t/(pw·t + 1 − t), where the
    /// gradient cancels) and at the switch points of stable softplus forms.
    fn kink_data(k: Kind, d: Dtype, params: &[(String, ParamValue)]) -> BoxedStrategy<Vec<f64>> {
        match k {
            Kind::Hinge => {
                let m = fparam(params, "margin").unwrap_or(1.0);
                let md = match d.round(m) {
                    x if x.is_finite() => x,
                    x => x.signum() * d.max(),
                };
                let half = d.round(md / 2.0);
                (sign(), -2i64..=2, 0u8..8)
                    .prop_map(move |(t, j, w)| {
                        let s = match w {
                            // t·s = m exactly (when m is a dtype value), and around it
                            0..=4 => t * md,
                            5 => 0.0,
                            // m − t·s overflows the dtype
                            6 => -t * d.max(),
                            _ => t * half,
                        };
                        vec![nudge(d, s, j), t]
                    })
                    .boxed()
            }
            Kind::Bce => {
                let mut crit = vec![0.0, 1.0, d.next_up(0.0), d.next_down(1.0)];
                if let Some(f) = fparam(params, "log_floor") {
                    let e = libm::exp(f);
                    crit.extend([d.round(e), d.round(1.0 - e)]);
                }
                let crit = palette(crit, 0.0, 1.0);
                (select(crit), -2i64..=2, target_extreme(d), 0u8..4)
                    .prop_map(move |(p, j, t, w)| {
                        let q = nudge(d, p, j);
                        let p = if (0.0..=1.0).contains(&q) { q } else { p };
                        let t = match w {
                            0 | 1 => t,
                            2 => p,
                            _ => p.round(),
                        };
                        vec![p, t]
                    })
                    .boxed()
            }
            Kind::Logits | Kind::Focal => {
                let mut crit = vec![0.0, d.min_subnormal(), 1.0, LN_2];
                for p in [d.precision(), Dtype::F32.precision(), 53] {
                    crit.push(p as f64 * LN_2);
                }
                let crit = palette(
                    crit.into_iter().map(|x| d.round(x)).collect(),
                    0.0,
                    f64::MAX,
                );
                prop_oneof![
                    // the minimum: σ(z) = pw·t / (pw·t + 1 − t)
                    3 => (target_extreme(d), values::typical_weight(d), -2i64..=2, any::<bool>()).prop_map(move |(t, pw, j, use_pw)| {
                        let pw_eff = if use_pw { pw } else { 1.0 };
                        let q = pw_eff * t / (pw_eff * t + 1.0 - t);
                        let z = if q > 0.0 && q < 1.0 { d.round(libm::log(q / (1.0 - q))) } else { 0.0 };
                        let z = if z.is_finite() { z } else { z.signum() * d.max() };
                        vec![nudge(d, z, j), t, if use_pw { pw } else { 1.0 }]
                    }),
                    2 => (signed(select(crit).boxed()), -2i64..=2, target_extreme(d), values::typical_weight(d))
                        .prop_map(move |(z, j, t, pw)| vec![nudge(d, z, j), t, pw]),
                    1 => (logit_extreme(d), hard(d), values::edge_weight(d)).prop_map(v3),
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

    fn param(p: &'static ParamSpec, dtype: Dtype, mode: Mode) -> BoxedStrategy<ParamValue> {
        let whole = values::param(p, dtype);
        let float = |s: BoxedStrategy<f64>| s.prop_map(ParamValue::Float).boxed();
        let f32d = Dtype::F32;
        match p.name {
            "log_floor" => {
                let tiny = select(vec![
                    -f32d.min_subnormal(),
                    -f32d.min_normal(),
                    -pow2(-20),
                    -f32d.epsilon(),
                    -f32r(1e-3),
                    -0.5,
                ])
                .boxed();
                let edges = select(vec![
                    f32r(libm::log(dtype.min_subnormal())),
                    f32r(dtype.exp_subnormal_edge()),
                    f32r(dtype.exp_zero_edge()),
                    f32r(f32d.exp_zero_edge()),
                    -f32d.max(),
                ])
                .boxed();
                // floors that clamp at a dtype value: log of a probability of the dtype
                let at_value = unit_bits(dtype)
                    .prop_map(|u| if u > 0.0 { f32r(libm::log(u)).min(0.0) } else { -100.0 })
                    .boxed();
                let kinks = if mode == Mode::Kinks { 3 } else { 0 };
                prop_oneof![
                    2 => Just(ParamValue::Null),
                    2 => Just(ParamValue::Float(-100.0)),
                    1 => Just(ParamValue::Float(0.0)),
                    2 => float(tiny),
                    1 => float(edges),
                    kinks => float(at_value),
                    3 => whole,
                ]
                .boxed()
            }
            "margin" => match mode {
                Mode::Typical => prop_oneof![
                    3 => Just(ParamValue::Float(1.0)),
                    3 => float(signed(values::f32_log_uniform(-3, 3))),
                    2 => whole,
                ]
                .boxed(),
                Mode::Domain => prop_oneof![
                    1 => Just(ParamValue::Float(1.0)),
                    1 => float(select(vec![0.0, -1.0, 2.0, dtype.max(), -dtype.max(), dtype.min_subnormal(), f32d.max(), -f32d.max(), f32d.min_subnormal()]).boxed()),
                    3 => whole,
                ]
                .boxed(),
                // margins that are dtype values, so that the kink t·s = m is reachable exactly
                Mode::Kinks => prop_oneof![
                    2 => float(select(vec![1.0, 0.0, 0.5, 2.0, -1.0, dtype.min_subnormal(), dtype.max(), dtype.epsilon()]).boxed()),
                    2 => float(values::typical(dtype, -4, 4)),
                    1 => float(values::bit_uniform(dtype)),
                    1 => whole,
                ]
                .boxed(),
            },
            "gamma" => prop_oneof![
                4 => float(select(vec![0.0, f32d.min_subnormal(), pow2(-20), 0.5, 1.0, 2.0, 3.0, 5.0, 100.0, 1e4, f32d.max()]).boxed()),
                2 => whole,
            ]
            .boxed(),
            "alpha" => prop_oneof![
                2 => Just(ParamValue::Null),
                1 => Just(ParamValue::Float(0.0)),
                1 => Just(ParamValue::Float(1.0)),
                2 => float(select(vec![0.25, 0.5, 0.75]).boxed()),
                3 => whole,
            ]
            .boxed(),
            _ => whole,
        }
    }

    fn params(loss: &'static str, dtype: Dtype, mode: Mode) -> elementwise::ParamsFn {
        Arc::new(move |_k: i32| {
            let spec = catalogue::spec(loss).unwrap();
            spec.params
                .iter()
                .map(|p| {
                    let name = p.name.to_string();
                    param(p, dtype, mode)
                        .prop_map(move |v| (name.clone(), v))
                        .boxed()
                })
                .collect::<Vec<_>>()
                .boxed()
        })
    }

    // ---- frames and regimes

    fn base_frame(loss: &'static str, dtype: Dtype, mode: Mode) -> FrameDist {
        FrameDist {
            reduction: any_reduction(),
            weights: prop_oneof![2 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)]
                .boxed(),
            mask: prop_oneof![2 => Just(MaskPlan::Absent), 1 => Just(MaskPlan::Random)].boxed(),
            cotangent: maybe(0.4, values::typical_cotangent(dtype)),
            // the one differentiable input (prob, logit or score): wanted 3 times in 4
            grads: proptest::bool::weighted(0.75).prop_map(|g| vec![g]).boxed(),
            out_f32: proptest::bool::weighted(0.25).boxed(),
            params: params(loss, dtype, mode),
            // probabilities and targets live in [0, 1]: never rescaled
            scale_exp: Just(0).boxed(),
            poison: proptest::bool::weighted(0.3).boxed(),
            nan_at: Just(None).boxed(),
            shape: Just(None).boxed(),
        }
    }

    fn base_elems(k: Kind, dtype: Dtype) -> ElemDist {
        ElemDist {
            data: data(k, dtype, Style::Typical),
            weight: values::typical_weight(dtype),
            keep: proptest::bool::weighted(0.75).boxed(),
            cot: values::typical_cotangent(dtype),
            poison: values::poison(dtype),
        }
    }

    type ElemsFn = Arc<dyn Fn(&elementwise::Frame) -> ElemDist + Send + Sync>;

    /// A regime: its frames, its elements, its 1-D lengths, and for `bce_logits` its
    /// pos_weight values and the shapes of its broadcast ([C]) pos_weight cases.
    struct Spec {
        frame: FrameDist,
        elems: ElemsFn,
        len: (usize, usize),
        pw: BoxedStrategy<f64>,
        bshape: BoxedStrategy<Vec<usize>>,
    }

    /// [N, C] (N from 0), sometimes [B, T, C] or [C].
    fn any_bshape() -> BoxedStrategy<Vec<usize>> {
        prop_oneof![
            4 => (0usize..=6, 1usize..=6).prop_map(|(n, c)| vec![n, c]),
            1 => (1usize..=3, 1usize..=3, 1usize..=4).prop_map(|(b, t, c)| vec![b, t, c]),
            1 => (1usize..=8).prop_map(|c| vec![c]),
        ]
        .boxed()
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

    fn spec(loss: &'static str, dtype: Dtype, r: Regime) -> Spec {
        let k = kind(loss);
        let d = dtype;
        let mix = move || {
            prop_oneof![3 => data(k, d, Style::Typical), 1 => data(k, d, Style::Extreme)].boxed()
        };
        match r {
            Regime::Typical | Regime::LongBatch => Spec {
                frame: base_frame(loss, d, Mode::Typical),
                elems: Arc::new(move |_| base_elems(k, d)),
                len: (0, 48),
                pw: values::typical_weight(d),
                bshape: any_bshape(),
            },
            Regime::BitUniform => Spec {
                frame: FrameDist {
                    weights: prop_oneof![1 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)].boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(d)),
                    ..base_frame(loss, d, Mode::Domain)
                },
                elems: Arc::new(move |_| ElemDist {
                    data: data(k, d, Style::Bits),
                    weight: values::bit_uniform_nonneg(d),
                    cot: values::bit_uniform(d)
                        .prop_map(|x| if x == 0.0 { 1.0 } else { x })
                        .boxed(),
                    ..base_elems(k, d)
                }),
                len: (0, 32),
                pw: values::bit_uniform_nonneg(d),
                bshape: any_bshape(),
            },
            Regime::Extreme => Spec {
                frame: FrameDist {
                    weights: prop_oneof![2 => Just(WeightPlan::Absent), 2 => Just(WeightPlan::Elements), 1 => Just(WeightPlan::AllZero)].boxed(),
                    mask: prop_oneof![
                        2 => Just(MaskPlan::Absent),
                        3 => Just(MaskPlan::Random),
                        1 => any::<Index>().prop_map(MaskPlan::OneValid),
                        1 => Just(MaskPlan::AllMasked),
                    ]
                    .boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(d)),
                    poison: proptest::bool::weighted(0.9).boxed(),
                    nan_at: proptest::option::weighted(0.1, (any::<Index>(), any::<u8>())).boxed(),
                    ..base_frame(loss, d, Mode::Domain)
                },
                elems: Arc::new(move |_| ElemDist {
                    data: data(k, d, Style::Extreme),
                    weight: values::edge_weight(d),
                    keep: proptest::bool::weighted(0.6).boxed(),
                    cot: values::edge_cotangent(d),
                    ..base_elems(k, d)
                }),
                len: (0, 24),
                pw: values::edge_weight(d),
                bshape: any_bshape(),
            },
            Regime::Masked => Spec {
                frame: FrameDist {
                    weights: prop_oneof![3 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Elements)].boxed(),
                    mask: prop_oneof![
                        3 => Just(MaskPlan::Random),
                        2 => Just(MaskPlan::AllMasked),
                        2 => any::<Index>().prop_map(MaskPlan::OneValid),
                        2 => Just(MaskPlan::NoneMasked),
                    ]
                    .boxed(),
                    poison: proptest::bool::weighted(0.95).boxed(),
                    nan_at: proptest::option::weighted(0.05, (any::<Index>(), any::<u8>())).boxed(),
                    ..base_frame(loss, d, Mode::Typical)
                },
                elems: Arc::new(move |_| ElemDist {
                    data: mix(),
                    keep: prop_oneof![1 => proptest::bool::weighted(0.2), 1 => proptest::bool::weighted(0.8)].boxed(),
                    ..base_elems(k, d)
                }),
                len: (0, 40),
                pw: values::typical_weight(d),
                bshape: any_bshape(),
            },
            Regime::Weighted => Spec {
                frame: FrameDist {
                    weights: prop_oneof![6 => Just(WeightPlan::Elements), 1 => Just(WeightPlan::AllZero)].boxed(),
                    mask: prop_oneof![3 => Just(MaskPlan::Absent), 1 => Just(MaskPlan::Random)].boxed(),
                    cotangent: maybe(0.4, values::edge_cotangent(d)),
                    poison: proptest::bool::weighted(0.9).boxed(),
                    ..base_frame(loss, d, Mode::Typical)
                },
                elems: Arc::new(move |_| ElemDist {
                    data: mix(),
                    weight: values::edge_weight(d),
                    ..base_elems(k, d)
                }),
                len: (0, 32),
                // zero, tiny, huge pos_weights
                pw: values::edge_weight(d),
                bshape: any_bshape(),
            },
            Regime::Shapes => Spec {
                frame: FrameDist {
                    mask: prop_oneof![
                        2 => Just(MaskPlan::Absent),
                        2 => Just(MaskPlan::Random),
                        1 => Just(MaskPlan::AllMasked),
                        1 => any::<Index>().prop_map(MaskPlan::OneValid),
                    ]
                    .boxed(),
                    cotangent: maybe(0.5, values::typical_cotangent(d)),
                    shape: select(shapes()).prop_map(Some).boxed(),
                    ..base_frame(loss, d, Mode::Typical)
                },
                elems: Arc::new(move |_| ElemDist {
                    data: mix(),
                    ..base_elems(k, d)
                }),
                len: (0, 0),
                pw: values::typical_weight(d),
                bshape: select(shapes().into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>()).boxed(),
            },
            Regime::Kinks => Spec {
                frame: FrameDist {
                    cotangent: maybe(0.4, values::typical_cotangent(d)),
                    ..base_frame(loss, d, Mode::Kinks)
                },
                elems: Arc::new(move |fr: &elementwise::Frame| ElemDist {
                    data: prop_oneof![4 => kink_data(k, d, &fr.params), 1 => data(k, d, Style::Typical)].boxed(),
                    ..base_elems(k, d)
                }),
                len: (1, 16),
                pw: prop_oneof![2 => values::typical_weight(d), 1 => values::edge_weight(d)].boxed(),
                bshape: any_bshape(),
            },
        }
    }

    /// How a `bce_logits` case carries its pos_weight.
    enum Pw {
        Absent,
        Elements,
        Broadcast(Vec<f64>),
    }

    /// An i64 label standing in for anything drawn at a skipped position (masked and
    /// zero-weight positions are not range-checked and may hold any label).
    fn garbage_label(x: f64) -> i64 {
        if x.is_nan() {
            0
        } else {
            x as i64 // saturating: ±inf give i64::MAX / MIN
        }
    }

    /// Turn a realized case into one of the loss: hinge's labels into an i64 tensor; a NaN that
    /// landed on a label or a pos_weight of a valid position (invalid input there) moved onto
    /// the score / logit; pos_weight kept, dropped or replaced by the broadcast [C] one.
    fn finish(k: Kind, mut case: Case, pw: Pw) -> Case {
        let n = case.inputs[primary(k)].len();
        let skip = skipped_rows(&case, n);
        match k {
            Kind::Hinge => {
                let tt = case.inputs.remove("target").unwrap();
                let t = tt.f().unwrap();
                let score = case.inputs.get_mut("score").unwrap().f_mut().unwrap();
                let labels: Vec<i64> = (0..n)
                    .map(|i| {
                        let x = t[i];
                        if x == 1.0 || x == -1.0 {
                            x as i64
                        } else if skip[i] {
                            garbage_label(x)
                        } else {
                            score[i] = f64::NAN;
                            1
                        }
                    })
                    .collect();
                case.inputs
                    .insert("target".into(), Tensor::int(tt.shape.clone(), labels));
            }
            Kind::Logits => {
                let mut bad = Vec::new();
                if let Some(v) = case.inputs.get_mut("pos_weight").and_then(|t| t.f_mut()) {
                    for i in 0..n {
                        if !(skip[i] || v[i].is_finite() && v[i] >= 0.0) {
                            v[i] = 1.0;
                            bad.push(i);
                        }
                    }
                }
                if let Some(z) = case.inputs.get_mut("logit").and_then(|t| t.f_mut()) {
                    for i in bad {
                        z[i] = f64::NAN;
                    }
                }
                match pw {
                    Pw::Absent => {
                        case.inputs.remove("pos_weight");
                    }
                    Pw::Elements => {}
                    Pw::Broadcast(v) => {
                        let dt = case.dtype;
                        case.inputs
                            .insert("pos_weight".into(), Tensor::float(dt, vec![v.len()], v));
                    }
                }
            }
            Kind::Bce | Kind::Focal => {}
        }
        case
    }

    fn recipe(
        loss: &'static str,
        dtype: Dtype,
        s: Spec,
        shape: Option<Vec<usize>>,
    ) -> BoxedStrategy<Case> {
        let mut frame = s.frame;
        if let Some(sh) = shape {
            frame.shape = Just(Some(sh)).boxed();
        }
        Recipe {
            loss,
            dtype,
            inputs: inputs(kind(loss)),
            frame: frame.strategy(),
            elems: s.elems,
            len: s.len,
        }
        .strategy()
    }

    pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
        let loss: &'static str = catalogue::spec(loss).unwrap().id;
        let k = kind(loss);
        if r == Regime::LongBatch {
            return long_batch(loss, dtype);
        }
        if k != Kind::Logits {
            return recipe(loss, dtype, spec(loss, dtype, r), None)
                .prop_map(move |c| finish(k, c, Pw::Absent))
                .boxed();
        }
        let s = spec(loss, dtype, r);
        let (pw, bshape) = (s.pw.clone(), s.bshape.clone());
        prop_oneof![
            1 => recipe(loss, dtype, s, None).prop_map(move |c| finish(k, c, Pw::Absent)),
            1 => recipe(loss, dtype, spec(loss, dtype, r), None).prop_map(move |c| finish(k, c, Pw::Elements)),
            1 => bshape
                .prop_flat_map(move |sh| {
                    let c = *sh.last().unwrap();
                    (
                        recipe(loss, dtype, spec(loss, dtype, r), Some(sh)),
                        proptest::collection::vec(pw.clone(), c..=c),
                    )
                })
                .prop_map(move |(c, v)| finish(k, c, Pw::Broadcast(v))),
        ]
        .boxed()
    }

    /// The 1-D inputs of a case reshaped to [n / c, c] (the cotangent too, for `none`).
    fn reshape_rows(mut case: Case, c: usize) -> Case {
        let n = case.inputs["logit"].len();
        let none = case.reduction() == Reduction::None;
        for (name, t) in case.inputs.iter_mut() {
            if t.shape.len() == 1 && t.len() == n && (name != "cotangent" || none) {
                t.shape = vec![n / c, c];
            }
        }
        case
    }

    /// Long batches, N in [2^11, 2^17]: a pattern of up to 64 elements tiled (as the regression
    /// family does), the copies of probabilities, logits and scores a few ulps off (kept in
    /// [0, 1]); labels, targets and pos_weights copied. `bce_logits` also as [N/C, C] with a
    /// broadcast pos_weight.
    fn long_batch(loss: &'static str, dtype: Dtype) -> BoxedStrategy<Case> {
        let k = kind(loss);
        let d = dtype;
        let pattern = move || {
            let mut s = spec(loss, d, Regime::LongBatch);
            s.frame.reduction = prop_oneof![
                4 => Just(Reduction::Sum),
                4 => Just(Reduction::Mean),
                1 => Just(Reduction::None),
            ]
            .boxed();
            s.elems = Arc::new(move |_| ElemDist {
                data: prop_oneof![4 => data(k, d, Style::Typical), 1 => data(k, d, Style::Extreme)]
                    .boxed(),
                ..base_elems(k, d)
            });
            s.len = (1, 64);
            recipe(loss, d, s, None)
        };
        let size = move |e: i32, t: f64, c: usize| {
            let mut n = (pow2(e) * (1.0 + t)).min(pow2(17)) as usize;
            n -= n % c;
            if n < 1 << 11 {
                n += c;
            }
            n
        };
        let step = move |name: &str, x: f64, j: i64| -> f64 {
            match name {
                "logit" | "score" => nudge(d, x, j),
                "prob" => {
                    let y = nudge(d, x, j);
                    if (0.0..=1.0).contains(&y) {
                        y
                    } else {
                        x
                    }
                }
                _ => x,
            }
        };
        let tiled = (11i32..=17, 0.0f64..1.0, any::<u64>(), pattern());
        if k != Kind::Logits {
            return tiled
                .prop_map(move |(e, t, seed, case)| {
                    let c = elementwise::tile_by(case, size(e, t, 1), seed, &step);
                    finish(k, c, Pw::Absent)
                })
                .boxed();
        }
        let pw = values::typical_weight(d);
        prop_oneof![
            1 => tiled.clone().prop_map(move |(e, t, seed, case)| {
                finish(k, elementwise::tile_by(case, size(e, t, 1), seed, &step), Pw::Absent)
            }),
            1 => tiled.clone().prop_map(move |(e, t, seed, case)| {
                finish(k, elementwise::tile_by(case, size(e, t, 1), seed, &step), Pw::Elements)
            }),
            1 => (1usize..=8)
                .prop_flat_map(move |c| (Just(c), tiled.clone(), proptest::collection::vec(pw.clone(), c..=c)))
                .prop_map(move |(c, (e, t, seed, case), v)| {
                    let tc = elementwise::tile_by(case, size(e, t, c), seed, &step);
                    finish(k, reshape_rows(tc, c), Pw::Broadcast(v))
                }),
        ]
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// The elementwise losses of several inputs: margin_ranking, pairwise_logistic, dpo,
// gaussian_nll (in gen/pairwise.rs).

pub mod pairwise;

// The row-wise probabilistic losses: kl_div, distill_kl, neg_elbo, brier (in
// gen/probabilistic.rs).
pub mod probabilistic;
// The contrastive family: contrastive, triplet, info_nce (in gen/contrastive.rs).

pub mod contrastive;

#[cfg(test)]
mod tests {
    use super::*;
    use losscheck_core::catalogue::{skipped_rows, ParamKind};
    use losscheck_core::{validate, Data, ParamValue};

    const LOSSES: [&str; 5] = ["mse", "mae", "huber", "quantile", "log_cosh"];

    #[test]
    fn hash_is_stable() {
        // splitmix64's published first output for state 0; a change here changes every
        // campaign's cases.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_ne!(
            case_hash(1, "mse", Dtype::F32, 0),
            case_hash(1, "mse", Dtype::F32, 1)
        );
        assert_ne!(
            case_hash(1, "mse", Dtype::F32, 0),
            case_hash(1, "mse", Dtype::F16, 0)
        );
        assert_ne!(
            case_hash(1, "mse", Dtype::F32, 0),
            case_hash(2, "mse", Dtype::F32, 0)
        );
        assert_ne!(
            case_hash(1, "mse", Dtype::F32, 0),
            case_hash(1, "mae", Dtype::F32, 0)
        );
    }

    #[test]
    fn cases_replay_on_their_own() {
        for loss in LOSSES {
            for d in Dtype::ALL {
                for i in [0u64, 1, 17, 999] {
                    let a = generate(loss, d, 5, i);
                    let b = generate(loss, d, 5, i);
                    assert_eq!(
                        a.to_json(),
                        b.to_json(),
                        "{loss} {d} case {i} is not deterministic"
                    );
                    assert_eq!(a.id, i);
                }
                assert_ne!(
                    generate(loss, d, 5, 3).to_json(),
                    generate(loss, d, 5, 4).to_json()
                );
                assert_ne!(
                    generate(loss, d, 5, 3).to_json(),
                    generate(loss, d, 6, 3).to_json()
                );
            }
        }
    }

    /// Every regime of every regression loss yields valid cases whose float data are exact
    /// dtype values and whose params lie in their domains, exact in f32.
    #[test]
    fn generated_cases_are_valid_and_exact() {
        for loss in LOSSES {
            for d in Dtype::ALL {
                for &(r, _) in regimes(loss) {
                    let s = regime_strategy(loss, d, r);
                    let n = if r == Regime::LongBatch { 2 } else { 150 };
                    for i in 0..n {
                        let mut run = runner_for(9, loss, d, i);
                        let c = s.new_tree(&mut run).unwrap().current();
                        validate(&c).unwrap_or_else(|e| {
                            panic!("{loss} {d} {r} #{i}: {e}\n{}", c.to_json())
                        });
                        for (name, t) in &c.inputs {
                            if let Data::F(v) = &t.data {
                                for &x in v {
                                    assert!(
                                        d.contains(x),
                                        "{loss} {d} {r}: {name} holds {x:e}, not a {d} value"
                                    );
                                }
                            }
                        }
                        for p in c.spec().params {
                            let v = &c.params[p.name];
                            if let (ParamKind::Float, ParamValue::Float(x)) = (p.kind, v) {
                                assert!(
                                    p.domain.contains(*x) && Dtype::F32.contains(*x),
                                    "{loss} {r}: {} = {x:e}",
                                    p.name
                                );
                            }
                        }
                        if r == Regime::LongBatch {
                            let n = c.inputs["pred"].len();
                            assert!((1 << 11..=1 << 17).contains(&n), "long batch of {n}");
                        }
                    }
                }
            }
        }
    }

    /// The regimes reach what they are named for.
    #[test]
    fn regimes_reach_their_edges() {
        let d = Dtype::F16;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..3000 {
            let c = generate("huber", d, 3, i);
            let p = c.inputs["pred"].f().unwrap();
            let t = c.inputs["target"].f().unwrap();
            let n = p.len();
            let skip = skipped_rows(&c, n);
            let valid = skip.iter().filter(|s| !**s).count();
            let mut mark = |k: &'static str, b: bool| {
                if b {
                    seen.insert(k);
                }
            };
            mark("n = 0", n == 0);
            mark("scalar", c.inputs["pred"].shape.is_empty());
            mark("rank 3", c.inputs["pred"].shape.len() == 3);
            mark("all skipped", n > 0 && valid == 0);
            mark("one valid", n > 1 && valid == 1);
            mark(
                "NaN skipped",
                (0..n).any(|i| skip[i] && (p[i].is_nan() || t[i].is_nan())),
            );
            mark(
                "NaN valid",
                (0..n).any(|i| !skip[i] && (p[i].is_nan() || t[i].is_nan())),
            );
            mark("+inf", p.iter().chain(t).any(|&x| x == f64::INFINITY));
            mark("-inf", p.iter().chain(t).any(|&x| x == f64::NEG_INFINITY));
            mark("max", p.iter().chain(t).any(|&x| x.abs() == d.max()));
            mark(
                "subnormal",
                p.iter()
                    .chain(t)
                    .any(|&x| x != 0.0 && x.abs() < d.min_normal()),
            );
            mark(
                "-0",
                p.iter().chain(t).any(|&x| x == 0.0 && x.is_sign_negative()),
            );
            mark(
                "square overflows",
                (0..n).any(|i| (p[i] - t[i]).abs() >= 256.0 && (p[i] - t[i]).is_finite()),
            );
            mark("long", n >= 1 << 11);
            let w = c.inputs.get("weight").and_then(|t| t.f()).unwrap_or(&[]);
            mark("weight 0", w.contains(&0.0));
            mark("weight max", w.contains(&d.max()));
            mark(
                "weight subnormal",
                w.iter().any(|&x| x > 0.0 && x < d.min_normal()),
            );
            let cot = c.inputs.get("cotangent").and_then(|t| t.f()).unwrap_or(&[]);
            mark("cotangent < 0", cot.iter().any(|&x| x < 0.0));
            mark(
                "cotangent vector",
                c.inputs
                    .get("cotangent")
                    .is_some_and(|t| !t.shape.is_empty()),
            );
            mark("out f32", c.out_dtype == Dtype::F32);
            mark("no grads", c.grad.is_empty());
            mark("both grads", c.grad.len() == 2);
            let delta = c.float_param("delta").unwrap();
            mark("delta subnormal f32", delta < Dtype::F32.min_normal());
            mark("delta huge", delta > 1e30);
            mark("|r| = delta", (0..n).any(|i| (p[i] - t[i]).abs() == delta));
            for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                mark(r.name(), c.reduction() == r);
            }
        }
        for (i, _) in (0..2000).enumerate() {
            let tau = generate("quantile", Dtype::F32, 3, i as u64)
                .float_param("tau")
                .unwrap();
            if tau == 1.0 - pow2(-24) {
                seen.insert("tau = 1 - 2^-24");
            }
            if tau < 1e-30 {
                seen.insert("tau tiny");
            }
        }
        let want = [
            "n = 0",
            "scalar",
            "rank 3",
            "all skipped",
            "one valid",
            "NaN skipped",
            "NaN valid",
            "+inf",
            "-inf",
            "max",
            "subnormal",
            "-0",
            "square overflows",
            "long",
            "weight 0",
            "weight max",
            "weight subnormal",
            "cotangent < 0",
            "cotangent vector",
            "out f32",
            "no grads",
            "both grads",
            "delta subnormal f32",
            "delta huge",
            "|r| = delta",
            "none",
            "sum",
            "mean",
            "tau = 1 - 2^-24",
            "tau tiny",
        ];
        let missing: Vec<_> = want.iter().filter(|k| !seen.contains(*k)).collect();
        assert!(missing.is_empty(), "never generated: {missing:?}");
    }

    /// Shrinking reaches a minimal case: one element, for a property of one element.
    #[test]
    fn shrinking_finds_small_cases() {
        let big = |c: &Case| {
            c.inputs["pred"]
                .f()
                .unwrap()
                .iter()
                .any(|x| x.abs() > 100.0)
        };
        let i = (0..500u64)
            .find(|&i| {
                pick_regime("mse", Dtype::F32, 2, i) != Some(Regime::LongBatch)
                    && big(&generate("mse", Dtype::F32, 2, i))
            })
            .unwrap();
        let small = shrink("mse", Dtype::F32, 2, i, &mut |c| big(c), 5000);
        assert!(big(&small));
        assert_eq!(small.inputs["pred"].len(), 1, "{}", small.to_json());
    }

    // ---- the elementwise classification losses

    const CLS: [&str; 4] = ["bce", "bce_logits", "hinge", "focal"];

    #[test]
    fn classification_is_routed() {
        for loss in CLS {
            assert_eq!(regimes(loss), CLASSIFICATION_ELEMENTWISE_REGIMES, "{loss}");
            assert!(supported(loss));
        }
        for loss in ["cross_entropy", "nll", "multi_margin"] {
            assert_eq!(regimes(loss), MULTICLASS_REGIMES, "{loss}");
        }
        assert_eq!(MULTICLASS_REGIMES.iter().map(|(_, w)| w).sum::<u32>(), 1000);
        let total: u32 = CLASSIFICATION_ELEMENTWISE_REGIMES
            .iter()
            .map(|(_, w)| w)
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn classification_cases_replay_on_their_own() {
        for loss in CLS {
            for d in Dtype::ALL {
                for i in [0u64, 1, 17, 999] {
                    let a = generate(loss, d, 5, i);
                    assert_eq!(
                        a.to_json(),
                        generate(loss, d, 5, i).to_json(),
                        "{loss} {d} #{i}"
                    );
                }
                assert_ne!(
                    generate(loss, d, 5, 3).to_json(),
                    generate(loss, d, 5, 4).to_json()
                );
            }
        }
    }

    /// Every regime of every elementwise classification loss yields valid cases whose float
    /// data are exact dtype values, whose params lie in their domains (exact in f32), whose
    /// hinge labels are an i64 tensor, and whose long batches are long.
    #[test]
    fn classification_cases_are_valid_and_exact() {
        for loss in CLS {
            for d in Dtype::ALL {
                for &(r, _) in regimes(loss) {
                    let s = regime_strategy(loss, d, r);
                    let n = if r == Regime::LongBatch { 3 } else { 120 };
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
                                    name == "mask" || (loss == "hinge" && name == "target"),
                                    "{loss}: {name} is an integer tensor"
                                ),
                            }
                        }
                        if loss == "hinge" {
                            assert!(matches!(c.inputs["target"].data, Data::I(_)));
                        }
                        for p in c.spec().params {
                            let v = &c.params[p.name];
                            match (p.kind, v) {
                                (ParamKind::Float | ParamKind::OptFloat, ParamValue::Float(x)) => {
                                    assert!(
                                        p.domain.contains(*x) && Dtype::F32.contains(*x),
                                        "{loss} {r}: {} = {x:e}",
                                        p.name
                                    )
                                }
                                (ParamKind::OptFloat, ParamValue::Null) => {}
                                (k, v) => panic!("{loss}: param {} ({k:?}) = {v:?}", p.name),
                            }
                        }
                        if r == Regime::LongBatch {
                            let n = c.inputs[c.spec().grads[0]].len();
                            assert!((1 << 11..=1 << 17).contains(&n), "long batch of {n}");
                        }
                    }
                }
            }
        }
    }

    /// What the classification regimes must reach, per loss (dtype f16, whose exp edges are
    /// closest; the f32 compute type's edges too).
    #[test]
    fn classification_regimes_reach_their_edges() {
        use classification::{exp_edges, logit_magnitudes};
        let d = Dtype::F16;
        let mut missing = Vec::new();
        for loss in CLS {
            let mut seen = std::collections::BTreeSet::<String>::new();
            let x_name = c_primary(loss);
            for i in 0..4000 {
                let c = generate(loss, d, 3, i);
                let x = c.inputs[x_name].f().unwrap();
                let n = x.len();
                let skip = skipped_rows(&c, n);
                let valid: Vec<usize> = (0..n).filter(|&i| !skip[i]).collect();
                let mut mark = |k: String, b: bool| {
                    if b {
                        seen.insert(k);
                    }
                };
                mark("n = 0".into(), n == 0);
                mark("scalar".into(), c.inputs[x_name].shape.is_empty());
                mark("rank 3".into(), c.inputs[x_name].shape.len() == 3);
                mark("all skipped".into(), n > 0 && valid.is_empty());
                mark("one valid".into(), n > 1 && valid.len() == 1);
                mark("long".into(), n >= 1 << 11);
                mark("out f32".into(), c.out_dtype == Dtype::F32);
                mark("no grads".into(), c.grad.is_empty());
                mark("grad".into(), !c.grad.is_empty());
                for r in [Reduction::None, Reduction::Sum, Reduction::Mean] {
                    mark(r.name().into(), c.reduction() == r);
                }
                mark("NaN valid".into(), valid.iter().any(|&i| x[i].is_nan()));
                mark(
                    "poison skipped".into(),
                    (0..n).any(|i| skip[i] && !x[i].is_finite()),
                );
                let w = c.inputs.get("weight").and_then(|t| t.f()).unwrap_or(&[]);
                mark("weight 0".into(), w.contains(&0.0));
                mark("weight max".into(), w.contains(&d.max()));
                mark(
                    "weight subnormal".into(),
                    w.iter().any(|&v| v > 0.0 && v < d.min_normal()),
                );
                let vx = |f: &dyn Fn(f64) -> bool| valid.iter().any(|&i| f(x[i]));
                if loss != "bce" {
                    for e in exp_edges(d) {
                        mark(format!("z = {e}"), vx(&|v| v == e));
                        mark(
                            format!("z next to {e}"),
                            vx(&|v| v == d.next_up(e) || v == d.next_down(e)),
                        );
                    }
                    for e in exp_edges(Dtype::F32) {
                        // the f32 compute type's edges, rounded to f16 (±88.75, −87.375, −104)
                        let e = d.round(e);
                        mark(format!("z = f32 edge {e}"), vx(&|v| v == e));
                    }
                    mark("z = +inf".into(), vx(&|v| v == f64::INFINITY));
                    mark("z = -inf".into(), vx(&|v| v == f64::NEG_INFINITY));
                    mark("z = max".into(), vx(&|v| v == d.max()));
                    mark("z = -max".into(), vx(&|v| v == -d.max()));
                    mark("z = -0".into(), vx(&|v| v == 0.0 && v.is_sign_negative()));
                    mark(
                        "z subnormal".into(),
                        vx(&|v| v != 0.0 && v.abs() < d.min_normal()),
                    );
                    mark("z palette".into(), logit_magnitudes(d).len() > 40);
                }
                if loss != "hinge" {
                    let t = c.inputs["target"].f().unwrap();
                    let vt = |f: &dyn Fn(f64) -> bool| valid.iter().any(|&i| f(t[i]));
                    mark("t = 0".into(), vt(&|v| v == 0.0));
                    mark("t = 1".into(), vt(&|v| v == 1.0));
                    mark("t = 1 - ulp".into(), vt(&|v| v == d.next_down(1.0)));
                    mark("t soft near 0".into(), vt(&|v| v > 0.0 && v <= 2e-6));
                    mark("t soft".into(), vt(&|v| v > 0.01 && v < 0.99));
                }
                match loss {
                    "bce" => {
                        mark("p = 0".into(), vx(&|v| v == 0.0));
                        mark("p = 1".into(), vx(&|v| v == 1.0));
                        mark("p = next_up(0)".into(), vx(&|v| v == d.next_up(0.0)));
                        mark("p = next_down(1)".into(), vx(&|v| v == d.next_down(1.0)));
                        let floor = c.float_param("log_floor");
                        mark("floor none".into(), floor.is_none());
                        mark("floor -100".into(), floor == Some(-100.0));
                        mark("floor 0".into(), floor == Some(0.0));
                        mark(
                            "floor tiny".into(),
                            floor.is_some_and(|f| f < 0.0 && f > -1e-3),
                        );
                        mark("floor huge".into(), floor.is_some_and(|f| f < -1e30));
                        if let Some(f) = floor {
                            mark("floor clamps".into(), vx(&|p| p > 0.0 && libm::log(p) < f));
                            // p at the floor's kink, RN(e^f), for a floor that is not −100
                            let pk = d.round(libm::exp(f));
                            mark(
                                "p at the floor kink".into(),
                                f > -100.0 && f < -1e-3 && pk > 0.0 && vx(&|p| p == pk),
                            );
                        }
                    }
                    "bce_logits" => {
                        let pw = c.inputs.get("pos_weight");
                        mark("pw absent".into(), pw.is_none());
                        if let Some(pw) = pw {
                            let v = pw.f().unwrap();
                            let shape = &c.inputs["logit"].shape;
                            let bc = pw.shape.len() == 1 && shape.len() >= 2 && shape[0] >= 2;
                            mark("pw broadcast [C] over [N,C]".into(), bc && shape.len() == 2);
                            mark("pw broadcast over rank 3".into(), bc && shape.len() == 3);
                            mark("pw elementwise".into(), pw.shape == *shape && n > 1);
                            mark("pw 0".into(), v.contains(&0.0));
                            mark(
                                "pw tiny".into(),
                                v.iter().any(|&p| p > 0.0 && p < d.min_normal()),
                            );
                            mark("pw huge".into(), v.contains(&d.max()));
                        }
                    }
                    "hinge" => {
                        let t = c.inputs["target"].i().unwrap();
                        let m = c.float_param("margin").unwrap();
                        mark("labels i64".into(), true);
                        mark("label -1".into(), valid.iter().any(|&i| t[i] == -1));
                        mark(
                            "garbage label skipped".into(),
                            (0..n).any(|i| skip[i] && t[i] != 1 && t[i] != -1),
                        );
                        mark(
                            "kink t·s = m".into(),
                            valid.iter().any(|&i| t[i] as f64 * x[i] == m),
                        );
                        mark(
                            "next to the kink".into(),
                            valid.iter().any(|&i| {
                                let ts = t[i] as f64 * x[i];
                                d.contains(m)
                                    && m.is_finite()
                                    && ts != m
                                    && (ts == d.next_up(m) || ts == d.next_down(m))
                            }),
                        );
                        mark("margin 0".into(), m == 0.0);
                        mark("margin < 0".into(), m < 0.0);
                        mark("margin huge".into(), m.abs() > 1e30);
                        mark("margin not 1".into(), m != 1.0);
                    }
                    "focal" => {
                        let g = c.float_param("gamma").unwrap();
                        for (k, b) in [
                            ("gamma 0", g == 0.0),
                            ("gamma tiny", g > 0.0 && g < 1e-5),
                            ("gamma 0.5", g == 0.5),
                            ("gamma 1", g == 1.0),
                            ("gamma 2", g == 2.0),
                            ("gamma large", g >= 100.0),
                        ] {
                            mark(k.into(), b);
                        }
                        let a = c.float_param("alpha");
                        mark("alpha none".into(), a.is_none());
                        mark("alpha 0".into(), a == Some(0.0));
                        mark("alpha 1".into(), a == Some(1.0));
                        mark(
                            "alpha interior".into(),
                            a.is_some_and(|a| a > 0.0 && a < 1.0),
                        );
                        mark(
                            "gamma 0 with a saturated logit".into(),
                            g == 0.0 && vx(&|z| z.abs() > 20.0),
                        );
                    }
                    _ => unreachable!(),
                }
            }
            let mut want: Vec<String> = [
                "n = 0",
                "scalar",
                "rank 3",
                "all skipped",
                "one valid",
                "long",
                "out f32",
                "no grads",
                "grad",
                "none",
                "sum",
                "mean",
                "NaN valid",
                "poison skipped",
                "weight 0",
                "weight max",
                "weight subnormal",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if loss != "bce" {
                for e in exp_edges(d) {
                    want.push(format!("z = {e}"));
                    want.push(format!("z next to {e}"));
                }
                for e in exp_edges(Dtype::F32) {
                    want.push(format!("z = f32 edge {}", d.round(e)));
                }
                for k in [
                    "z = +inf",
                    "z = -inf",
                    "z = max",
                    "z = -max",
                    "z = -0",
                    "z subnormal",
                    "z palette",
                ] {
                    want.push(k.into());
                }
            }
            if loss != "hinge" {
                for k in ["t = 0", "t = 1", "t = 1 - ulp", "t soft near 0", "t soft"] {
                    want.push(k.into());
                }
            }
            let per_loss: &[&str] = match loss {
                "bce" => &[
                    "p = 0",
                    "p = 1",
                    "p = next_up(0)",
                    "p = next_down(1)",
                    "floor none",
                    "floor -100",
                    "floor 0",
                    "floor tiny",
                    "floor huge",
                    "floor clamps",
                    "p at the floor kink",
                ],
                "bce_logits" => &[
                    "pw absent",
                    "pw broadcast [C] over [N,C]",
                    "pw broadcast over rank 3",
                    "pw elementwise",
                    "pw 0",
                    "pw tiny",
                    "pw huge",
                ],
                "hinge" => &[
                    "labels i64",
                    "label -1",
                    "garbage label skipped",
                    "kink t·s = m",
                    "next to the kink",
                    "margin 0",
                    "margin < 0",
                    "margin huge",
                    "margin not 1",
                ],
                _ => &[
                    "gamma 0",
                    "gamma tiny",
                    "gamma 0.5",
                    "gamma 1",
                    "gamma 2",
                    "gamma large",
                    "alpha none",
                    "alpha 0",
                    "alpha 1",
                    "alpha interior",
                    "gamma 0 with a saturated logit",
                ],
            };
            want.extend(per_loss.iter().map(|s| s.to_string()));
            for k in want {
                if !seen.contains(&k) {
                    missing.push(format!("{loss}: {k}"));
                }
            }
        }
        // long batches (2 in 1000 cases above): bce_logits's include [N/C, C] with a broadcast
        // pos_weight
        let s = regime_strategy("bce_logits", d, Regime::LongBatch);
        let broadcast_long = (0..24).any(|i| {
            let c = s
                .new_tree(&mut runner_for(4, "bce_logits", d, i))
                .unwrap()
                .current();
            let n = c.inputs["logit"].len();
            let shape = &c.inputs["logit"].shape;
            c.inputs
                .get("pos_weight")
                .is_some_and(|p| p.shape.len() == 1 && shape.len() == 2)
                && n >= 1 << 11
                && shape[0] >= 2
        });
        if !broadcast_long {
            missing.push("bce_logits: pw broadcast over a long batch".into());
        }
        assert!(missing.is_empty(), "never generated: {missing:#?}");
    }

    /// Shrinking reaches a minimal classification case: one element with its label, for a
    /// property of one element (a hinge score beyond 100 with label −1; a +inf logit).
    #[test]
    fn classification_shrinking_finds_small_cases() {
        let hinge = |c: &Case| {
            let s = c.inputs["score"].f().unwrap();
            let t = c.inputs["target"].i().unwrap();
            s.iter().zip(t).any(|(x, &y)| x.abs() > 100.0 && y == -1)
        };
        let inf = |c: &Case| c.inputs["logit"].f().unwrap().contains(&f64::INFINITY);
        for (loss, p) in [
            ("hinge", &hinge as &dyn Fn(&Case) -> bool),
            ("bce_logits", &inf),
        ] {
            let i = (0..3000u64)
                .find(|&i| {
                    pick_regime(loss, Dtype::F16, 2, i) != Some(Regime::LongBatch)
                        && p(&generate(loss, Dtype::F16, 2, i))
                })
                .unwrap();
            let small = shrink(loss, Dtype::F16, 2, i, &mut |c| p(c), 5000);
            assert!(p(&small));
            assert_eq!(
                small.inputs[c_primary(loss)].len(),
                1,
                "{loss}: {}",
                small.to_json()
            );
        }
    }

    fn c_primary(loss: &str) -> &'static str {
        match loss {
            "bce" => "prob",
            "hinge" => "score",
            _ => "logit",
        }
    }
}
