//! Ranking losses: `margin_ranking`, `pairwise_logistic` — and the pieces they share with the
//! other elementwise losses of several inputs ([`preference`](super::preference)'s `dpo`,
//! [`probabilistic`](super::probabilistic)'s `gaussian_nll`): the exact sum of a few f64
//! values (`sum_exact`), the two-gradient driver and the case glue.
//!
//! Inputs of any shape, passed as flat slices of the same length. The typed API is generic
//! over the input element type `T` (`f32`, [`half::f16`], [`half::bf16`]) and the output type
//! `O` of the value (`T`, or `f32` for 16-bit inputs); gradients (for both scores) are in `T`.
//! Reductions, weights, masks, cotangents and the empty-mean rule are [`Plan`]'s.
//!
//! Numerics (everything in f64, each output rounded once; `libm`, never the platform libm):
//!
//! - `margin_ranking`: l = max(0, u), u = m − y·(s1 − s2), y = ±1 (i64 labels), m a binary64
//!   margin. u is formed by `sum_exact` (an error-free expansion of the three terms), so its
//!   sign — which picks the gradient (−y, +y) or (0, 0) — is always right, however close
//!   y·(s1 − s2) is to m, and its value is correctly rounded to f64. At the kink u = 0 both
//!   gradients take 0 (the Clarke element nearest 0). Infinite scores: u = −inf gives 0 and
//!   (0, 0), u = +inf gives +inf and (−y, +y), inf − inf is NaN.
//! - `pairwise_logistic`: l = softplus(d), d = rejected − chosen (Bradley–Terry), with
//!   [`math::softplus`](super::math::softplus) (no overflow, full relative accuracy in the
//!   tail: softplus(−100) = e^−100, not 0); ∂l/∂chosen = −σ(d), ∂l/∂rejected = σ(d), σ from
//!   the side where e^{∓d} ≤ 1. d is exact as a pair d_hi + d_lo (TwoSum), and softplus of it
//!   softplus(d_hi) + σ(d_hi)·d_lo.
//! - Every value is carried as a pair hi + lo through the weighting, the sum and the mean's
//!   division, and rounded once (to odd in f64, then to the output dtype), so that a sum an
//!   ulp of f64 below the output's overflow threshold max + ½ulp — where a plain f64 sum would
//!   land on the tie and round to inf — stays finite (the shared driver `run2`).
//!
//! Invalid input (lengths, a label other than ±1 at an unskipped position, a margin that is
//! not finite, and the weight / mask / cotangent checks of [`Plan::new`]) is an `Err` naming
//! the input, the index and the value. NaN data propagates. Never panics.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::ranking::{margin_ranking, pairwise_logistic, PairArgs};
//! use losscheck::Reduction;
//!
//! let (s1, s2, y) = ([2.0f32, 0.5], [1.0f32, 1.0], [1i64, 1]);
//! // torch.nn.functional.margin_ranking_loss(tensor([2., .5]), tensor([1., 1.]),
//! //   tensor([1., 1.]), margin=0.25, reduction='none') -> [0., 0.75]
//! let out = margin_ranking::<f32, f32>(&PairArgs::new(&s1, &s2).reduction(Reduction::None), &y, 0.25)
//!     .unwrap();
//! assert_eq!(out.value, vec![0.0, 0.75]);
//! assert_eq!(out.grad_first, Some(vec![0.0, -1.0]));
//! assert_eq!(out.grad_second, Some(vec![0.0, 1.0]));
//!
//! // softplus(rejected − chosen) = softplus(−20) = 2.0611536e-9, and ∂/∂chosen = −σ(−20)
//! let out = pairwise_logistic::<f32, f32>(&PairArgs::new(&[20.0f32], &[0.0f32])).unwrap();
//! assert_eq!(out.value, vec![2.0611537e-9]);
//! assert_eq!(out.grad_first, Some(vec![-2.0611537e-9]));
//! ```

use super::classification::{float_input, int_input, req_param};
use super::math::{pair_add, pair_div, pair_scale, round_odd, sigmoid, softplus, two_sum};
use super::reduce::{grad_term, CompensatedSum, Plan};
use losscheck_core::{Case, Checked, Element, LossError, Reduction, Response, Tensor};
use std::collections::BTreeMap;

/// The ranking losses this module implements.
pub const LOSSES: &[&str] = &["margin_ranking", "pairwise_logistic"];

// ---------------------------------------------------------------------------------------------
// Shared with `preference` and `probabilistic`.

/// The exact sum of `N` finite f64 values as a pair hi + lo: hi is the sum rounded to nearest
/// (up to a rare last-bit tie), hi + lo is within about 2^−104·|sum| of it, and both are 0
/// exactly when the sum is. Shewchuk's grow-expansion turns the terms into a nonoverlapping
/// expansion (error-free TwoSums, no cancellation left), which is then added from the top
/// down. Non-finite terms (or an overflowing sum) give the plain sum and lo = 0.
#[inline]
pub(crate) fn sum_exact<const N: usize>(xs: [f64; N]) -> (f64, f64) {
    if !xs.iter().all(|x| x.is_finite()) {
        return (xs.iter().sum(), 0.0);
    }
    // e[0..len]: nonoverlapping components, increasing in magnitude
    let mut e = [0.0f64; N];
    for (len, &x) in xs.iter().enumerate() {
        let mut q = x;
        for c in e.iter_mut().take(len) {
            let (s, err) = two_sum(q, *c);
            *c = err;
            q = s;
        }
        e[len] = q;
    }
    let mut hi = e[N - 1];
    let mut lo = 0.0;
    for &c in e[..N - 1].iter().rev() {
        let (s, err) = two_sum(hi, c);
        hi = s;
        lo += err;
    }
    let (s, err) = two_sum(hi, lo);
    if s.is_finite() {
        (s, err)
    } else {
        (xs.iter().sum(), 0.0)
    }
}

pub(crate) fn check_len(name: &str, got: usize, n: usize, of: &str) -> Result<(), LossError> {
    if got != n {
        return Err(LossError::invalid(format!(
            "input {name}: {got} elements but {of} has {n}"
        )));
    }
    Ok(())
}

pub(crate) fn bad_param(name: &str, v: f64, domain: &str) -> LossError {
    LossError::invalid(format!(
        "param {name}={v:?} is outside its domain ({domain})"
    ))
}

/// A value as an unevaluated pair hi + lo, kept until its one rounding to the output dtype.
pub(crate) type Pair = (f64, f64);

/// a + b for pairs (lo = 0 when the sum is not finite).
#[inline(always)]
pub(crate) fn pair_sum(a: Pair, b: Pair) -> Pair {
    let (s, e) = pair_add(a.0, b.0);
    if s.is_finite() {
        (s, e + (a.1 + b.1))
    } else {
        (s, 0.0)
    }
}

/// softplus(hi + lo) as a pair: softplus(hi) (as hi + e^−hi beyond 36, where the tail would be
/// lost in one f64) plus the first-order term σ(hi)·lo (|lo| ≤ 2^−52·|hi|: the second-order
/// term is below 2^−104 of the result).
#[inline(always)]
pub(crate) fn softplus_pair(hi: f64, lo: f64) -> Pair {
    let (h, t) = if hi > 36.0 {
        (hi, libm::exp(-hi))
    } else {
        (softplus(hi), 0.0)
    };
    if lo == 0.0 {
        (h, t)
    } else {
        (h, t + sigmoid(hi) * lo)
    }
}

/// Drive a per-element kernel with two derivatives through the plan's policy (the same as
/// [`Plan::run_into`]: skipped terms never evaluated, the empty mean 0, gradients termwise
/// c·g·cot/den with the exact-zero rule of [`grad_term`]), except that the value of each term
/// is a [`Pair`] and stays one through the weighting, the compensated sum and the mean's
/// division, and is rounded once, *to odd* in f64 ([`round_odd`]) and then to `O`: so a low
/// part that decides a near-tie of the output dtype is not lost — at the overflow threshold
/// max + ½ulp, where f64's rounding would otherwise turn "just below" into a tie that goes to
/// inf. `kernel(j)` returns (l_j, [∂l_j/∂x, ∂l_j/∂y]); `cotangent` is the plan's.
pub(crate) fn run2<T: Element, O: Element, F>(
    plan: &Plan<'_, T>,
    cotangent: Option<&[T]>,
    want: [bool; 2],
    value: &mut Vec<O>,
    grads: [&mut Option<Vec<T>>; 2],
    kernel: F,
) where
    F: Fn(usize) -> (Pair, [f64; 2]),
{
    let n = plan.len();
    let none = plan.reduction() == Reduction::None;
    let den = plan.denom();
    let (zero_t, zero_o) = (T::from_f64(0.0), O::from_f64(0.0));
    let [g0, g1] = grads;
    let mut bufs = [g0.take().unwrap_or_default(), g1.take().unwrap_or_default()];
    value.clear();
    for (k, b) in bufs.iter_mut().enumerate() {
        b.clear();
        if want[k] {
            b.reserve_exact(n);
        }
    }
    if plan.is_empty_mean() {
        value.resize(plan.value_len(), zero_o);
        for (k, b) in bufs.iter_mut().enumerate() {
            if want[k] {
                b.resize(n, zero_t);
            }
        }
    } else {
        let cot = |j: usize| match cotangent {
            None => 1.0,
            Some(c) if none => c[j].to_f64(),
            Some(c) => c[0].to_f64(),
        };
        let mut acc = CompensatedSum::new();
        for j in 0..n {
            let c = plan.coef(j);
            if c == 0.0 {
                if none {
                    value.push(zero_o);
                }
                for (k, b) in bufs.iter_mut().enumerate() {
                    if want[k] {
                        b.push(zero_t);
                    }
                }
                continue;
            }
            let (l, g) = kernel(j);
            let t = if c == 1.0 { l } else { pair_scale(c, l) };
            // a non-finite term carries no low part (inf + lo must stay inf)
            let t = if t.0.is_finite() { t } else { (t.0, 0.0) };
            if none {
                value.push(O::from_f64(round_odd(t.0, t.1)));
            } else {
                acc.add_lane(j, t.0);
                acc.add_lane(j, t.1);
            }
            let cj = cot(j);
            for (k, b) in bufs.iter_mut().enumerate() {
                if want[k] {
                    b.push(T::from_f64(grad_term(c, g[k], cj, den)));
                }
            }
        }
        if !none {
            value.push(reduced_value(plan, &acc));
        }
    }
    let [b0, b1] = bufs;
    *g0 = want[0].then_some(b0);
    *g1 = want[1].then_some(b1);
}

/// The reduced value of a compensated sum of pair terms: the sum, divided by the plan's
/// denominator for `mean`, rounded once (to odd in f64, then to `O`).
pub(crate) fn reduced_value<T: Element, O: Element>(plan: &Plan<'_, T>, acc: &CompensatedSum) -> O {
    let t = acc.total_pair();
    let (hi, lo) = if plan.reduction() == Reduction::Mean {
        pair_div(t, plan.denom())
    } else {
        t
    };
    O::from_f64(round_odd(hi, lo))
}

/// The builder methods of the reduction's inputs — `weight`, `mask`, `cotangent`,
/// `reduction` — for an args struct `Args<'a, T>` with those fields (invoked inside its impl).
macro_rules! reduction_builders {
    () => {
        /// Per-element weights (finite and ≥ 0).
        pub fn weight(mut self, weight: &'a [T]) -> Self {
            self.weight = Some(weight);
            self
        }
        /// Per-element 0/1 mask.
        pub fn mask(mut self, mask: &'a [i64]) -> Self {
            self.mask = Some(mask);
            self
        }
        /// The cotangent: one per element for `none`, one value for `sum` / `mean`.
        pub fn cotangent(mut self, cotangent: &'a [T]) -> Self {
            self.cotangent = Some(cotangent);
            self
        }
        pub fn reduction(mut self, reduction: Reduction) -> Self {
            self.reduction = reduction;
            self
        }
    };
}
pub(crate) use reduction_builders;

/// `Default` (no value, no gradients) for a family's `Output<T, O>` with a `value` and the two
/// named gradient fields.
macro_rules! output_default {
    ($a:ident, $b:ident) => {
        impl<T, O> Default for Output<T, O> {
            fn default() -> Self {
                Output {
                    value: Vec::new(),
                    $a: None,
                    $b: None,
                }
            }
        }
    };
}
pub(crate) use output_default;

/// A required float input of a validated case, in `T`.
pub(crate) fn req_input<T: Element>(case: &Case, name: &str) -> Result<Vec<T>, LossError> {
    float_input::<T>(case, name)?
        .ok_or_else(|| LossError::invalid(format!("{}: missing input {name:?}", case.loss)))
}

/// The reduction's optional inputs of a case: weight, mask, cotangent.
pub(crate) type Extras<'c, T> = (Option<Vec<T>>, Option<&'c [i64]>, Option<Vec<T>>);

pub(crate) fn extras<'c, T: Element>(case: &'c Case) -> Result<Extras<'c, T>, LossError> {
    Ok((
        float_input::<T>(case, "weight")?,
        int_input(case, "mask")?,
        float_input::<T>(case, "cotangent")?,
    ))
}

/// The response of an elementwise case: the value shaped for the reduction, and each computed
/// gradient shaped like the inputs (`shape_of`, the first data input).
pub(crate) fn response2<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
    shape_of: &str,
    value: Vec<O>,
    grads: [(&str, Option<Vec<T>>); 2],
) -> Response {
    let shape = case
        .input(shape_of)
        .map(|t| t.shape.clone())
        .unwrap_or_default();
    let value = Tensor::float(
        O::DTYPE,
        checked.value_shape(case.reduction()),
        value.iter().map(|v| v.to_f64()).collect(),
    );
    let mut grad = BTreeMap::new();
    for (name, g) in grads {
        if let Some(g) = g {
            let data = g.iter().map(|v| v.to_f64()).collect();
            grad.insert(
                name.to_string(),
                Tensor::float(T::DTYPE, shape.clone(), data),
            );
        }
    }
    Response {
        id: case.id,
        value,
        grad,
    }
}

// ---------------------------------------------------------------------------------------------
// The typed API.

/// Inputs of a two-score ranking loss: `first` (s1 of `margin_ranking`, chosen of
/// `pairwise_logistic`), `second` (s2, rejected), and the reduction's inputs.
///
/// Build with [`PairArgs::new`] (reduction `mean`, both gradients wanted, no weight, mask or
/// cotangent) and the builder methods.
#[derive(Clone, Copy, Debug)]
pub struct PairArgs<'a, T: Element> {
    /// s1 / chosen, flattened (row-major).
    pub first: &'a [T],
    /// s2 / rejected, same length.
    pub second: &'a [T],
    /// Per-element weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-element mask, 0 or 1.
    pub mask: Option<&'a [i64]>,
    /// Scales the gradients: one per element for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂first.
    pub grad_first: bool,
    /// Compute ∂/∂second.
    pub grad_second: bool,
}

impl<'a, T: Element> PairArgs<'a, T> {
    /// first and second; reduction `mean`; both gradients; nothing else.
    pub fn new(first: &'a [T], second: &'a [T]) -> Self {
        PairArgs {
            first,
            second,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            grad_first: true,
            grad_second: true,
        }
    }
    reduction_builders!();
    /// Which gradients to compute.
    pub fn grads(mut self, first: bool, second: bool) -> Self {
        self.grad_first = first;
        self.grad_second = second;
        self
    }
}

/// Value and gradients of a ranking loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    /// One element when reduced (shape `[]`), one per input element for `none` (0 at masked or
    /// zero-weight positions).
    pub value: Vec<O>,
    /// ∂value/∂first (times the cotangent), if asked for; 0 at skipped positions.
    pub grad_first: Option<Vec<T>>,
    /// ∂value/∂second (times the cotangent), if asked for.
    pub grad_second: Option<Vec<T>>,
}

output_default!(grad_first, grad_second);

/// The plan of a pair of scores (lengths checked).
fn pair_plan<'a, T: Element>(
    args: &PairArgs<'a, T>,
    names: [&str; 2],
) -> Result<Plan<'a, T>, LossError> {
    let n = args.first.len();
    check_len(names[1], args.second.len(), n, names[0])?;
    Plan::new(n, args.weight, args.mask, args.cotangent, args.reduction)
}

/// Both ranking losses' drive: `kernel(first_j, second_j, j)` per element.
fn run_pair<T: Element, O: Element>(
    plan: &Plan<'_, T>,
    args: &PairArgs<'_, T>,
    out: &mut Output<T, O>,
    kernel: impl Fn(f64, f64, usize) -> (Pair, [f64; 2]),
) {
    let (a, b) = (args.first, args.second);
    run2(
        plan,
        args.cotangent,
        [args.grad_first, args.grad_second],
        &mut out.value,
        [&mut out.grad_first, &mut out.grad_second],
        |j| kernel(a[j].to_f64(), b[j].to_f64(), j),
    );
}

/// `margin_ranking` at scores s1, s2, label y = ±1, margin m: (l, [∂l/∂s1, ∂l/∂s2]).
#[inline(always)]
fn margin_ranking_point(s1: f64, s2: f64, y: f64, m: f64) -> (Pair, [f64; 2]) {
    // u = m − y·s1 + y·s2, exactly (y·s is exact)
    let u = sum_exact([m, -y * s1, y * s2]);
    if u.0 > 0.0 {
        (u, [-y, y])
    } else if u.0 <= 0.0 {
        ((0.0, 0.0), [0.0, 0.0])
    } else {
        ((f64::NAN, 0.0), [f64::NAN, f64::NAN])
    }
}

/// `pairwise_logistic` at chosen c, rejected r: d = r − c exactly as a pair, softplus of it.
#[inline(always)]
fn pairwise_logistic_point(c: f64, r: f64) -> (Pair, [f64; 2]) {
    let (dh, dl) = sum_exact([r, -c]);
    let s = sigmoid(dh);
    (softplus_pair(dh, dl), [-s, s])
}

/// Margin ranking loss: l = max(0, −y·(s1 − s2) + margin) for ±1 labels `target` (i64, +1 when
/// s1 should rank higher), ∂l/∂s1 = −y and ∂l/∂s2 = +y where the hinge is active, 0 elsewhere
/// (the kink takes 0). Errors (never panics) on lengths, a label other than ±1 at an unskipped
/// position, a margin that is not finite, and the weight / mask / cotangent checks.
pub fn margin_ranking<T: Element, O: Element>(
    args: &PairArgs<'_, T>,
    target: &[i64],
    margin: f64,
) -> Result<Output<T, O>, LossError> {
    let mut out = Output::default();
    margin_ranking_into(args, target, margin, &mut out)?;
    Ok(out)
}

/// [`margin_ranking`] into caller-owned buffers (reusing their allocations; on error `out` is
/// unchanged).
pub fn margin_ranking_into<T: Element, O: Element>(
    args: &PairArgs<'_, T>,
    target: &[i64],
    margin: f64,
    out: &mut Output<T, O>,
) -> Result<(), LossError> {
    if !margin.is_finite() {
        return Err(bad_param("margin", margin, "finite float"));
    }
    let plan = pair_plan(args, ["s1", "s2"])?;
    check_len("target", target.len(), plan.len(), "s1")?;
    for (j, &y) in target.iter().enumerate() {
        if y != 1 && y != -1 && plan.coef(j) != 0.0 {
            return Err(LossError::invalid(format!(
                "input target[{j}]={y} is not -1 or +1"
            )));
        }
    }
    run_pair(&plan, args, out, |s1, s2, j| {
        margin_ranking_point(s1, s2, target[j] as f64, margin)
    });
    Ok(())
}

/// Pairwise logistic (Bradley–Terry / RankNet) loss: l = softplus(rejected − chosen) =
/// −ln σ(chosen − rejected); ∂l/∂chosen = −σ(rejected − chosen) = −∂l/∂rejected. `first` is
/// chosen, `second` rejected. Errors (never panics) on lengths and the weight / mask /
/// cotangent checks.
pub fn pairwise_logistic<T: Element, O: Element>(
    args: &PairArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    let mut out = Output::default();
    pairwise_logistic_into(args, &mut out)?;
    Ok(out)
}

/// [`pairwise_logistic`] into caller-owned buffers (on error `out` is unchanged).
pub fn pairwise_logistic_into<T: Element, O: Element>(
    args: &PairArgs<'_, T>,
    out: &mut Output<T, O>,
) -> Result<(), LossError> {
    let plan = pair_plan(args, ["chosen", "rejected"])?;
    run_pair(&plan, args, out, |c, r, _| pairwise_logistic_point(c, r));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// Evaluate a validated ranking case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let names = match case.loss.as_str() {
        "margin_ranking" => ["s1", "s2"],
        "pairwise_logistic" => ["chosen", "rejected"],
        other => {
            return Err(LossError::unsupported(format!(
                "no ranking kernel for {other}"
            )))
        }
    };
    let first = req_input::<T>(case, names[0])?;
    let second = req_input::<T>(case, names[1])?;
    let (weight, mask, cotangent) = extras::<T>(case)?;
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let args = PairArgs {
        first: &first,
        second: &second,
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction: case.reduction(),
        grad_first: wants(names[0]),
        grad_second: wants(names[1]),
    };
    let out: Output<T, O> = if case.loss == "margin_ranking" {
        let target = int_input(case, "target")?
            .ok_or_else(|| LossError::invalid("input target: expected an i64 tensor of ±1"))?;
        margin_ranking(&args, target, req_param(case, "margin")?)?
    } else {
        pairwise_logistic(&args)?
    };
    Ok(response2(
        case,
        checked,
        names[0],
        out.value,
        [(names[0], out.grad_first), (names[1], out.grad_second)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_exact_is_exact() {
        // 1 + 2^-80 − 1 = 2^-80; (2^60 + 1) − 2^60 − 1 = 0
        let t = 2f64.powi(-80);
        assert_eq!(sum_exact([1.0, t, -1.0]), (t, 0.0));
        assert_eq!(
            sum_exact([2f64.powi(60), 1.0, -(2f64.powi(60)), -1.0]),
            (0.0, 0.0)
        );
        // 1e300 + 1e-300 − 1e300: the tiny term survives
        assert_eq!(sum_exact([1e300, 1e-300, -1e300]).0, 1e-300);
        // a sum that needs more than 53 bits: 1 + 2^-60 as (1, 2^-60)
        let (h, l) = sum_exact([1.0, 2f64.powi(-60), 0.0]);
        assert_eq!((h, l), (1.0, 2f64.powi(-60)));
        // non-finite: the plain sum
        assert!(sum_exact([f64::INFINITY, f64::NEG_INFINITY]).0.is_nan());
        assert_eq!(sum_exact([f64::INFINITY, 1.0]).0, f64::INFINITY);
    }

    #[test]
    fn margin_ranking_sign_is_exact() {
        // m = 2^-52 = s1 − s2: u = 0 exactly, the kink
        let (l, g) = margin_ranking_point(1.0 + 2f64.powi(-52), 1.0, 1.0, 2f64.powi(-52));
        assert_eq!((l, g), ((0.0, 0.0), [0.0, 0.0]));
        let (l, g) = margin_ranking_point(1.0, 1.0, -1.0, 2f64.powi(-1074));
        assert_eq!((l, g), ((2f64.powi(-1074), 0.0), [1.0, -1.0]));
        assert!(margin_ranking_point(f64::INFINITY, f64::INFINITY, 1.0, 0.0)
            .0
             .0
            .is_nan());
        assert_eq!(
            margin_ranking_point(f64::INFINITY, 0.0, 1.0, 0.0),
            ((0.0, 0.0), [0.0, 0.0])
        );
        // u = 511·2^119 − 2^-149 (bf16's overflow threshold, just below): kept as a pair
        let (u, _) = margin_ranking_point(
            255.0 * 2f64.powi(120),
            -(2f64.powi(119)),
            -1.0,
            -(2f64.powi(-149)),
        );
        assert_eq!(u, (511.0 * 2f64.powi(119), -(2f64.powi(-149))));
    }
}
