//! Elementwise classification losses: `bce`, `bce_logits`, `hinge`, `focal` (the row-wise
//! `cross_entropy`, `nll` and `multi_margin` are in [`multiclass`]).
//!
//! Inputs of any shape, passed as flat slices. The typed API is generic over the input element
//! type `T` (`f32`, [`half::f16`], [`half::bf16`]) and the output type `O` of the value (`T`,
//! or `f32` for 16-bit inputs); gradients (for the prob / logit / score only) are in `T`.
//! Reductions, weights, masks, cotangents and the empty-mean rule are [`reduce::Plan`]'s.
//!
//! Numerics (everything in f64, each output rounded once; `libm`, never the platform libm):
//!
//! - `bce`: −(t·L(p) + (1−t)·L(1−p)), L = ln or max(ln, floor). L(1−p) is computed as
//!   log1p(−p) — *not* ln(1 − p): 1 − p is exact in f64 only for p ≥ 2^−29 (f32) resp. for
//!   every f16 value, but not for tiny f32/bf16 p (1 − 2^−149 needs 149 bits), and
//!   ln(fl(1 − p)) would lose such a p entirely. A term whose coefficient t or 1 − t is exactly
//!   0 is absent (t = 1, p = 1 → 0; t = 1, p = 0 → +inf). Gradient −t/p + (1−t)/(1−p), formed
//!   as (p − t)/(p·(1 − p)) when both terms are present: p − t is one correctly rounded
//!   subtraction and there is nothing left to cancel, so it is accurate relatively for all
//!   p, t (±inf at p = 0 / 1). With a floor, a clamped log contributes 0 to the gradient; at the
//!   kink ln p = floor the selection is 0 (nearest 0). At t = 0, p = 0 the gradient is 1.
//! - `bce_logits`: pw·t·softplus(−z) + (1−t)·softplus(z) (never (1−t)·z + …), gradient
//!   −pw·t·σ(−z) + (1−t)·σ(z) via [`math::logistic_grad`] (σ(−z) computed directly, never
//!   1 − σ(z); near the zero crossing z* = ln(pw·t/(1−t)) the difference is formed as
//!   σ(−z)·((1−t)·e^z − pw·t) in double-double, so it stays accurate relatively however close
//!   z is to z*), absent terms as for `bce` (z = +inf, t = 1 → 0 and 0).
//! - `hinge`: max(0, m − t·s), one f64 rounding; gradient −t where m − t·s > 0, 0 elsewhere
//!   (the kink takes 0, the Clarke element nearest 0).
//! - `focal`: α_t·q^γ·B with q = 1 − p_t = t·σ(−z) + (1−t)·σ(z) (no cancellation), B the
//!   unweighted `bce_logits` term, q^γ = exp(γ·ln q) with ln q accurate in both tails (ln q =
//!   −softplus(±z) for t ∈ {0, 1}; log1p(−p_t) when q > ½) so that huge γ keep their
//!   accuracy, and 0⁰ = 1 (γ = 0 gives exactly α_t·B). Gradient, analytically:
//!   ∂l/∂z = α_t·q^γ·(γ·(1 − 2t)·r·B + B′), r = σ(z)σ(−z)/q (= σ(z) for t = 1, σ(−z) for t = 0),
//!   B′ = −t·σ(−z) + (1−t)·σ(z). There is no q^(γ−1): γ < 1 with q → 0 (p_t → 1) at finite z
//!   gives no NaN (optax #1267, kornia #918); r·B is 0 where r = 0 even when B = inf (the limit
//!   at z = ±inf). α_t = 0 makes the element exactly 0 (value and gradient) unless z or t is
//!   NaN (NaN propagates). For soft targets
//!   the bracket has a zero crossing of its own where its two terms cancel; there the error is
//!   within DESIGN.md's conditioning allowance κ·2^−53·|exact| (measured: ≤ 3 f32 ulps), not
//!   within 2 ulps.
//!
//! Invalid input (lengths, a prob or target outside [0, 1], a hinge label other than ±1, a
//! pos_weight that is negative, infinite or NaN, a param outside its domain, and the
//! weight / mask / cotangent checks of [`Plan::new`]) is an `Err` naming the input, the index
//! and the value; checks of per-element data skip masked and zero-weight positions. NaN data
//! propagates. Never panics.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::classification::{bce_logits, ClassArgs};
//! use losscheck::Reduction;
//!
//! let z = [f32::INFINITY, 0.0];
//! let t = [1.0f32, 1.0];
//! // torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([inf, 0.]),
//! //   torch.ones(2), reduction='none') -> [nan, 0.6931] (PyTorch #102894); exact: [0, ln 2]
//! let out = bce_logits::<f32, f32>(&ClassArgs::new(&z, &t).reduction(Reduction::None)).unwrap();
//! assert_eq!(out.value, vec![0.0, std::f32::consts::LN_2]);
//! assert_eq!(out.grad, Some(vec![0.0, -0.5]));
//! ```

pub mod multiclass;
#[cfg(target_arch = "x86_64")]
mod bce_avx2;
#[cfg(target_arch = "x86_64")]
mod bce_avx512;

use super::math::{logistic_grad, sigmoid, softplus};
use super::reduce::{
    codegen, lane_total, load_f64, same_type, same_type_mut, size_output, store_f64, Codegen,
    CompensatedSum, FastScale, Plan, BLOCK, FAST_LANES,
};
use super::vmath::{exp_nonpos_unclamped_lanes, logistic_fast_from_e, Lane, Lanes};
use losscheck_core::case::fdata;
use losscheck_core::{Case, Checked, Element, LossError, Reduction, Response, Tensor};
use std::collections::BTreeMap;

/// The classification losses this module implements.
pub const LOSSES: &[&str] = &["bce", "bce_logits", "hinge", "focal"];

/// `bce_logits`'s pos_weight: one per element, or one per class of the last dim.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PosWeight<'a, T> {
    /// Same length as the logits.
    Elementwise(&'a [T]),
    /// Length C = the last dim of the logits: element j uses `pw[j % C]`.
    LastDim(&'a [T]),
}

/// Inputs of an elementwise classification loss: the prediction (`prob` for `bce`, `logit` for
/// `bce_logits` and `focal`, `score` for `hinge`), the target (`T` in [0, 1], or ±1 as `i64`
/// for `hinge`), pos_weight (`bce_logits` only) and the reduction's inputs.
///
/// Build with [`ClassArgs::new`] (reduction `mean`, the gradient wanted, no weight, mask,
/// cotangent or pos_weight) and the builder methods.
#[derive(Clone, Copy, Debug)]
pub struct ClassArgs<'a, T: Element, Y = T> {
    /// prob / logit / score, flattened (row-major).
    pub input: &'a [T],
    /// Targets, same length.
    pub target: &'a [Y],
    /// `bce_logits` only.
    pub pos_weight: Option<PosWeight<'a, T>>,
    /// Per-element weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-element mask, 0 or 1.
    pub mask: Option<&'a [i64]>,
    /// Scales the gradient: one per element for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂input.
    pub grad: bool,
}

impl<'a, T: Element, Y> ClassArgs<'a, T, Y> {
    /// input and target; reduction `mean`; the gradient; nothing else.
    pub fn new(input: &'a [T], target: &'a [Y]) -> Self {
        ClassArgs {
            input,
            target,
            pos_weight: None,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            grad: true,
        }
    }
    /// Elementwise pos_weight (`bce_logits`).
    pub fn pos_weight(mut self, pw: &'a [T]) -> Self {
        self.pos_weight = Some(PosWeight::Elementwise(pw));
        self
    }
    /// pos_weight of length C broadcast over the last dim (`bce_logits`).
    pub fn pos_weight_last_dim(mut self, pw: &'a [T]) -> Self {
        self.pos_weight = Some(PosWeight::LastDim(pw));
        self
    }
    pub fn weight(mut self, weight: &'a [T]) -> Self {
        self.weight = Some(weight);
        self
    }
    pub fn mask(mut self, mask: &'a [i64]) -> Self {
        self.mask = Some(mask);
        self
    }
    pub fn cotangent(mut self, cotangent: &'a [T]) -> Self {
        self.cotangent = Some(cotangent);
        self
    }
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Whether to compute the gradient.
    pub fn grad(mut self, grad: bool) -> Self {
        self.grad = grad;
        self
    }
}

/// Value and gradient of a classification loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    /// One element when reduced (shape `[]`), one per input element for `none` (0 at masked or
    /// zero-weight positions).
    pub value: Vec<O>,
    /// ∂value/∂input (times the cotangent), if asked for; 0 at skipped positions.
    pub grad: Option<Vec<T>>,
}

impl<T, O> Default for Output<T, O> {
    fn default() -> Self {
        Output {
            value: Vec::new(),
            grad: None,
        }
    }
}

/// A classification loss with a float target in [0, 1], with its params.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    /// `log_floor` ≤ 0 or none.
    Bce { log_floor: Option<f64> },
    /// pos_weight comes with the args.
    BceLogits,
    /// `alpha` in [0, 1] or none, `gamma` ≥ 0 (both finite).
    Focal { alpha: Option<f64>, gamma: f64 },
}

impl Binary {
    /// The catalogue id.
    pub fn id(&self) -> &'static str {
        match self {
            Binary::Bce { .. } => "bce",
            Binary::BceLogits => "bce_logits",
            Binary::Focal { .. } => "focal",
        }
    }

    fn input_name(&self) -> &'static str {
        match self {
            Binary::Bce { .. } => "prob",
            _ => "logit",
        }
    }

    fn check_params(&self) -> Result<(), LossError> {
        let bad = |name: &str, v: f64, dom: &str| {
            Err(LossError::invalid(format!(
                "param {name}={v:?} is outside its domain ({dom})"
            )))
        };
        match *self {
            Binary::Bce { log_floor: Some(f) } if !(f <= 0.0 && f.is_finite()) => {
                bad("log_floor", f, "float <= 0, or null")
            }
            Binary::Focal { alpha: Some(a), .. } if !(0.0..=1.0).contains(&a) => {
                bad("alpha", a, "float in [0, 1], or null")
            }
            Binary::Focal { gamma, .. } if !(gamma >= 0.0 && gamma.is_finite()) => {
                bad("gamma", gamma, "float >= 0")
            }
            _ => Ok(()),
        }
    }

    /// Value and gradient, in new buffers.
    pub fn eval<T: Element, O: Element>(
        &self,
        args: &ClassArgs<'_, T>,
    ) -> Result<Output<T, O>, LossError> {
        let mut out = Output::default();
        self.eval_into(args, &mut out)?;
        Ok(out)
    }

    /// Value and gradient into `out`, reusing its allocations (on error `out` is unchanged).
    pub fn eval_into<T: Element, O: Element>(
        &self,
        args: &ClassArgs<'_, T>,
        out: &mut Output<T, O>,
    ) -> Result<(), LossError> {
        self.check_params()?;
        let n = args.input.len();
        check_len("target", args.target.len(), n, self.input_name())?;
        if args.pos_weight.is_some() && *self != Binary::BceLogits {
            return Err(LossError::invalid(format!(
                "input pos_weight: {} takes no pos_weight (only bce_logits does)",
                self.id()
            )));
        }
        let plan = Plan::new(n, args.weight, args.mask, args.cotangent, args.reduction)?;
        if let Binary::Bce { .. } = self {
            check_unit(&plan, "prob", args.input)?;
        }
        check_unit(&plan, "target", args.target)?;
        let pw = check_pos_weight(&plan, args.pos_weight)?;
        let (x, t) = (args.input, &args.target[..n]);
        let t_at = |j: usize| t[j].to_f64();
        match *self {
            Binary::Bce { log_floor } => run(&plan, args.grad, out, |j| {
                bce_point(x[j].to_f64(), t_at(j), log_floor)
            }),
            Binary::BceLogits => match pw {
                None => match plan.fast_scale() {
                    Some(scale) => {
                        let job = BceFast {
                            z: x,
                            t,
                            scale,
                            none: args.reduction == Reduction::None,
                            want: args.grad,
                        };
                        let den = (args.reduction == Reduction::Mean).then(|| plan.denom());
                        job.run(den, out);
                    }
                    None => run(&plan, args.grad, out, |j| {
                        let tj = t_at(j);
                        bce_logits_point(x[j].to_f64(), tj, tj)
                    }),
                },
                Some((w, period)) => run(&plan, args.grad, out, |j| {
                    let tj = t_at(j);
                    let k = if period == 0 { j } else { j % period };
                    bce_logits_point(x[j].to_f64(), tj, w[k].to_f64() * tj)
                }),
            },
            Binary::Focal { alpha, gamma } => run(&plan, args.grad, out, |j| {
                focal_point(x[j].to_f64(), t_at(j), alpha, gamma)
            }),
        }
        Ok(())
    }
}

fn check_len(name: &str, got: usize, n: usize, of: &str) -> Result<(), LossError> {
    if got != n {
        return Err(LossError::invalid(format!(
            "input {name}: {got} elements but {of} has {n}"
        )));
    }
    Ok(())
}

/// Is position `j` skipped (masked or zero weight)? Its data is never looked at.
fn skipped<T: Element>(plan: &Plan<'_, T>, j: usize) -> bool {
    plan.coef(j) == 0.0
}

/// Values in [0, 1] (NaN passes: it propagates), except at skipped positions.
fn check_unit<T: Element>(plan: &Plan<'_, T>, name: &str, xs: &[T]) -> Result<(), LossError> {
    // blocks converted in bulk and tested branch-free; only a block holding a value outside
    // [0, 1] is looked at element by element (NaN is neither < 0 nor > 1: it passes)
    let mut buf = [0.0f64; BLOCK];
    for (b, chunk) in xs.chunks(BLOCK).enumerate() {
        let buf = &mut buf[..chunk.len()];
        load_f64(chunk, buf);
        let bad = buf.iter().fold(false, |acc, &x| acc | (x < 0.0) | (x > 1.0));
        if !bad {
            continue;
        }
        for (k, &x) in buf.iter().enumerate() {
            let j = b * BLOCK + k;
            if (x < 0.0 || x > 1.0) && !skipped(plan, j) {
                return Err(LossError::invalid(format!(
                    "input {name}[{j}]={x:?} is outside [0, 1]"
                )));
            }
        }
    }
    Ok(())
}

/// Checks pos_weight and returns it with its period (0: elementwise, C: broadcast over the
/// last dim).
fn check_pos_weight<'a, T: Element>(
    plan: &Plan<'_, T>,
    pw: Option<PosWeight<'a, T>>,
) -> Result<Option<(&'a [T], usize)>, LossError> {
    let n = plan.len();
    let (w, period) = match pw {
        None => return Ok(None),
        Some(PosWeight::Elementwise(w)) => {
            check_len("pos_weight", w.len(), n, "logit")?;
            (w, 0)
        }
        Some(PosWeight::LastDim(w)) => {
            let c = w.len();
            let fits = if c == 0 { n == 0 } else { n % c == 0 };
            if !fits {
                return Err(LossError::invalid(format!(
                    "input pos_weight: {c} classes do not divide the {n} logits (broadcast over the last dim)"
                )));
            }
            (w, c)
        }
    };
    for (k, &v) in w.iter().enumerate() {
        let x = v.to_f64();
        // an elementwise pos_weight may hold anything where its element is skipped; a
        // broadcast one belongs to every row and is always checked
        let exempt = period == 0 && skipped(plan, k);
        if !(exempt || x.is_finite() && x >= 0.0) {
            return Err(LossError::invalid(format!(
                "input pos_weight[{k}]={x:?} is not a finite value >= 0"
            )));
        }
    }
    Ok(Some((w, period)))
}

fn run<T: Element, O: Element, F>(plan: &Plan<'_, T>, want: bool, out: &mut Output<T, O>, kernel: F)
where
    F: Fn(usize) -> (f64, f64),
{
    let mut grads = [out.grad.take().unwrap_or_default()];
    plan.run_into::<O, 1, _>(
        [want],
        |j| {
            let (l, g) = kernel(j);
            (l, [g])
        },
        &mut out.value,
        &mut grads,
    );
    let [g] = grads;
    out.grad = want.then_some(g);
}

// ---------------------------------------------------------------------------------------------
// Pointwise functions, in f64: (loss, ∂loss/∂input).

/// max(ln-value, floor) with NaN propagating, and whether the log is active (strictly above
/// the floor; at the kink the clamped side, gradient 0, is selected).
#[inline(always)]
fn floored(lx: f64, floor: Option<f64>) -> (f64, bool) {
    match floor {
        None => (lx, true),
        Some(f) => {
            if lx > f {
                (lx, true)
            } else if lx <= f {
                (f, false)
            } else {
                (lx, true) // NaN
            }
        }
    }
}

/// `bce` at prob p, target t.
#[inline(always)]
pub(crate) fn bce_point(p: f64, t: f64, floor: Option<f64>) -> (f64, f64) {
    // −0 is the probability 0: without this, −t/p at p = −0 is +inf instead of the limit −inf
    // (found by the exhaustive certificate, reports/exhaustive/bce-*.json)
    let p = p + 0.0;
    let a = t; // coefficient of L(p)
    let b = 1.0 - t; // coefficient of L(1 − p): exactly 0 only for t = 1
    let (mut v, mut g) = (0.0, 0.0);
    let (mut on_a, mut on_b) = (false, false);
    if a != 0.0 {
        let (l, active) = floored(libm::log(p), floor);
        v += a * l;
        on_a = active;
    }
    if b != 0.0 {
        let (l, active) = floored(libm::log1p(-p), floor);
        v += b * l;
        on_b = active;
    }
    if on_a && on_b {
        // −t/p + (1−t)/(1−p) = (p − t)/(p(1 − p)), no cancellation left
        g = (p - t) / (p * (1.0 - p));
    } else if on_a {
        g = -a / p;
    } else if on_b {
        g = b / (1.0 - p);
    } else if p.is_nan() || t.is_nan() {
        g = f64::NAN;
    }
    (-v, g)
}

/// `bce_logits` at logit z, target t, positive-term coefficient a = pw·t (exact in f64: a
/// product of two dtype values).
#[inline(always)]
pub(crate) fn bce_logits_point(z: f64, t: f64, a: f64) -> (f64, f64) {
    if z.is_nan() || a.is_nan() || t.is_nan() {
        // NaN data propagates, even when both coefficients are 0 (pw = 0, t = 1)
        return (f64::NAN, f64::NAN);
    }
    let b = 1.0 - t;
    let mut v = 0.0;
    if a != 0.0 {
        v += a * softplus(-z);
    }
    if b != 0.0 {
        v += b * softplus(z);
    }
    (v, logistic_grad(a, t, z))
}

// ---------------------------------------------------------------------------------------------
// bce_logits' fast path: no pos_weight, mask, weight or per-element cotangent.
//
// Per element, when |z| ≤ 700 (finite) and t ∈ [0, 1]: L = ln(1 + e^−|z|), σ(z), σ(−z) from
// [`logistic_fast_core`](super::vmath::logistic_fast_core), the core of `vmath::logistic_parts_fast` (one exp, one division, a
// short atanh series; L has the bits of softplus(−|z|) and is within its 56u, σ of the
// non-negative side within 7u and of the other side within 12u relatively, u = 2⁻⁵³ — far
// more than the f32 / 16-bit outputs need: the precision tier of the fast path),
// l = t·softplus(−z) + (1−t)·softplus(z) = L + (1−t)·z (z ≥ 0) or L + t·(−z) (z < 0), as
// t + (1−t) = 1 — one fma of non-negative terms, no cancellation: within 56u + u (1 − t) + u
// < 2⁻⁴⁷ relatively, 2⁻²³ of an f32 ulp — and ∂l/∂z = (1−t)·σ(z) − t·σ(−z), the difference of two non-negative terms p₂ − p₁ each within
// 14u (12u, 1 − t, the product): its absolute error is ≤ 14u·(p₁ + p₂) + u·|p₂ − p₁|, so where
// |p₂ − p₁| ≥ 2⁻¹²·(p₁ + p₂) (the cheap test) it is within (14·2¹² + 1)u < 2⁻³⁷ relatively —
// 2⁻¹³ of an f32 ulp. (Not correct rounding: structured inputs can put the exact gradient far
// closer than that to a rounding midpoint — in the f16 exhaustive certificate, t = ½ − 2⁻¹²
// with a tiny z gives g = 2⁻¹² + ½·tanh(z/2), within ~2⁻⁵⁶ of an f16 midpoint — where the
// general path's double-double crossing still rounds correctly and this one may take the
// other neighbour, 1 ulp: 21 of the certificate's 1,114,112 gradients, all within
// the 2-ulp bar. Sending every element whose two terms are within a factor 2 to the exact
// path, as the general path does, would send ~14 % of typical data there.) Elements failing
// the test (near the zero crossing z* = logit(t), where the two terms cancel; also ±inf, NaN,
// |z| > 700, NaN targets) take the exact path, [`bce_logits_point`] (the double-double
// crossing of `math::logistic_grad`). The choice is per element, from that element's inputs
// alone, so `none` outputs do not depend on the rest of the batch. Gradients are scaled as
// `Plan` scales them; value sums as in the regression fast path (plain lane sums per block,
// block totals compensated: within 2⁻⁴⁶ relatively, the terms being ≥ 0). Per block, the
// inputs are converted in bulk, each group of LANES elements is computed, fixed up, scaled
// and summed in one step, and the gradients (values for `none`) converted back in bulk. From
// BCE_PAR_MIN elements (feature `parallel`) tasks of whole blocks run on rayon's pool, each
// block total stored in its place and the totals added in block order afterwards: the same
// operations in the same order as one thread, so the same bits for any pool.

/// |p₂ − p₁| ≥ CANCEL·(p₁ + p₂) takes the fast gradient (2⁻¹²).
const CANCEL: f64 = 1.0 / 4096.0;

/// Lanes per step of the fast loop (two AVX2 vectors' worth of chains; = `FAST_LANES`, the
/// lane sums of `reduce::block_sum`).
const LANES: usize = FAST_LANES;

/// One fast-path element (or lanes of them): (l, ∂l/∂z, whether both are good — in the
/// domain and the gradient's terms not cancelling). In three parts, so that the SIMD code
/// generations can run the exponentials of a block in a loop of their own (`bce_avx2`,
/// `bce_avx512`: the same operations per element).
#[inline(always)]
pub(crate) fn bce_fast_element<V: Lane>(z: V, t: V) -> (V, V, V::Mask) {
    let (zz, ok_in) = bce_domain(z, t);
    bce_rest(zz, t, ok_in, bce_exp(zz))
}

/// The domain test |z| ≤ 700, t ∈ [0, 1] (false for NaN): (zz, ok_in), zz = z there, else +0.
#[inline(always)]
fn bce_domain<V: Lane>(z: V, t: V) -> (V, V::Mask) {
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    let ok_in = V::and(V::and(z.abs().le(V::splat(700.0)), t.ge(zero)), t.le(one));
    (V::select(ok_in, z, zero), ok_in)
}

/// e = e^−|zz| ([`logistic_fast_core`](super::vmath::logistic_fast_core)'s exponential;
/// |zz| ≤ 700 by [`bce_domain`], so without the clamp).
#[inline(always)]
fn bce_exp<V: Lane>(zz: V) -> V {
    exp_nonpos_unclamped_lanes(-zz.abs())
}

/// The rest of [`bce_fast_element`] from [`bce_domain`]'s and [`bce_exp`]'s results.
#[inline(always)]
fn bce_rest<V: Lane>(zz: V, t: V, ok_in: V::Mask, e: V) -> (V, V, V::Mask) {
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    let (l, d) = logistic_fast_from_e(e);
    let nonneg = zz.ge(zero);
    let b = one - t;
    // l = L + (1−t)·z (z ≥ 0) or L + t·(−z) (z < 0): t·softplus(−z) + (1−t)·softplus(z)
    let v = V::select(nonneg, b, t).fma(zz.abs(), l);
    let ed = e * d;
    let (sp, sn) = (V::select(nonneg, d, ed), V::select(nonneg, ed, d));
    let (p2, p1) = (b * sp, t * sn);
    let g = p2 - p1;
    let ok = V::and(ok_in, g.abs().ge(V::splat(CANCEL) * (p1 + p2)));
    (v, g, ok)
}

/// bce_logits' fast path spreads over rayon's pool from this many elements.
#[cfg(feature = "parallel")]
const BCE_PAR_MIN: usize = 1 << 20;
/// Elements per rayon task (a multiple of BLOCK; the results do not depend on it).
#[cfg(feature = "parallel")]
const BCE_TASK: usize = 1 << 16;

#[derive(Clone, Copy)]
struct BceFast<'a, T> {
    z: &'a [T],
    t: &'a [T],
    scale: FastScale,
    none: bool,
    want: bool,
}

impl<T: Element> BceFast<'_, T> {
    fn run<O: Element>(&self, mean_den: Option<f64>, out: &mut Output<T, O>) {
        let n = self.z.len();
        let mut g = out.grad.take().unwrap_or_default();
        if self.want {
            size_output(&mut g, n, T::from_f64(0.0));
        } else {
            g.clear();
        }
        if self.none {
            size_output(&mut out.value, n, O::from_f64(0.0));
        } else {
            out.value.clear();
        }
        let mut acc = CompensatedSum::new();
        // the code generation is chosen here, on the caller's thread (`with_codegen`)
        let cg = codegen();
        #[cfg(feature = "parallel")]
        if n >= BCE_PAR_MIN && rayon::current_num_threads() > 1 {
            self.run_tasks(cg, &mut out.value, &mut g, &mut acc);
        } else {
            self.dispatch(cg, &mut out.value, &mut g, &mut |b| acc.add(b));
        }
        #[cfg(not(feature = "parallel"))]
        self.dispatch(cg, &mut out.value, &mut g, &mut |b| acc.add(b));
        if !self.none {
            let total = acc.total();
            let v = match mean_den {
                Some(d) => total / d,
                None => total,
            };
            out.value.push(O::from_f64(v));
        }
        out.grad = self.want.then_some(g);
    }

    /// The fast loop over all of `self`, in the code generation `cg` (at most the CPU's), each
    /// block's value total handed to `sink` in order.
    fn dispatch<O: Element>(
        &self,
        cg: Codegen,
        value: &mut [O],
        g: &mut [T],
        sink: &mut dyn FnMut(f64),
    ) {
        #[cfg(target_arch = "x86_64")]
        match cg {
            // SAFETY (all three): `cg` is `codegen()`: the CPU has AVX-512 F + DQ, AVX2, FMA.
            Codegen::Avx512 => match (same_type::<T, f32>(self.z), same_type_mut::<T, f32>(g)) {
                (Some(z), Some(g)) if !self.none => {
                    let t = same_type::<T, f32>(self.t).unwrap();
                    return unsafe { self.blocks_avx512_f32((z, t), g, sink) };
                }
                _ => return unsafe { self.blocks_avx512(value, g, sink) },
            },
            // SAFETY: the CPU has AVX2 and FMA.
            Codegen::Avx2 => return unsafe { self.blocks_avx2(value, g, sink) },
            Codegen::Plain => {}
        }
        let _ = cg;
        self.blocks(value, g, sink, Self::groups_plain);
    }

    /// [`Self::dispatch`] spread over rayon's pool: tasks of BCE_TASK elements (whole blocks),
    /// each writing its blocks' totals to their places; the totals are then added in block
    /// order — the same sums in the same order as one thread: the same bits for any pool.
    #[cfg(feature = "parallel")]
    fn run_tasks<O: Element>(
        &self,
        cg: Codegen,
        value: &mut [O],
        g: &mut [T],
        acc: &mut CompensatedSum,
    ) {
        use rayon::prelude::*;
        let n = self.z.len();
        let mut totals = vec![0.0f64; n.div_ceil(BLOCK)];
        let mut tasks = Vec::with_capacity(n.div_ceil(BCE_TASK));
        let (mut vrest, mut grest, mut trest) = (value, g, &mut totals[..]);
        let mut lo = 0;
        while lo < n {
            let len = BCE_TASK.min(n - lo);
            let (v, vr) = std::mem::take(&mut vrest).split_at_mut(if self.none { len } else { 0 });
            let (gt, gr) = std::mem::take(&mut grest).split_at_mut(if self.want { len } else { 0 });
            let (tt, tr) = std::mem::take(&mut trest).split_at_mut(len.div_ceil(BLOCK));
            (vrest, grest, trest) = (vr, gr, tr);
            tasks.push((lo, v, gt, tt));
            lo += len;
        }
        tasks.into_par_iter().for_each(|(lo, v, gt, tt)| {
            let hi = (lo + BCE_TASK).min(n);
            let job = BceFast {
                z: &self.z[lo..hi],
                t: &self.t[lo..hi],
                ..*self
            };
            let mut k = 0;
            job.dispatch(cg, v, gt, &mut |b| {
                tt[k] = b;
                k += 1;
            });
        });
        for &b in &totals {
            acc.add(b);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
    unsafe fn blocks_avx512<O: Element>(
        &self,
        value: &mut [O],
        g: &mut [T],
        sink: &mut dyn FnMut(f64),
    ) {
        // SAFETY (of the closure's call): this function has AVX-512 F and DQ.
        self.blocks(value, g, sink, |job, zt, vg, lanes| unsafe {
            bce_avx512::groups(job, zt, vg, lanes)
        })
    }

    /// The fast loop for f32 inputs with a reduced value, in AVX-512: each block's whole groups
    /// of 8 straight from the f32 inputs to the f32 gradient (`bce_avx512::groups_f32`, no f64
    /// block buffers: the inputs convert exactly, the gradient rounds once, as `store_f64`
    /// does), the tail by [`Self::tail`]. The same operations per element and the same lane
    /// sums per block as [`Self::blocks`]: the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
    unsafe fn blocks_avx512_f32(
        &self,
        (z, t): (&[f32], &[f32]),
        g: &mut [f32],
        sink: &mut dyn FnMut(f64),
    ) {
        let n = z.len();
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let mut lanes = [0.0f64; LANES];
            let gb = if self.want { &mut g[start..end] } else { &mut [][..] };
            let ins = (&z[start..end], &t[start..end]);
            // SAFETY: this function has AVX-512 F and DQ.
            let j = unsafe { bce_avx512::groups_f32(self.scale, ins, gb, &mut lanes) };
            if j < end - start {
                let (m, zs, ts) = (end - start - j, &z[start + j..end], &t[start + j..end]);
                let (mut zb, mut tb) = ([0.0f64; LANES], [0.0f64; LANES]);
                load_f64(zs, &mut zb[..m]);
                load_f64(ts, &mut tb[..m]);
                let (_, d) = self.tail((&zb[..m], &tb[..m]), &mut lanes);
                if self.want {
                    store_f64(&d[..m], &mut gb[j..]);
                }
            }
            sink(lane_total(&lanes));
            start = end;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn blocks_avx2<O: Element>(
        &self,
        value: &mut [O],
        g: &mut [T],
        sink: &mut dyn FnMut(f64),
    ) {
        // SAFETY (of the closure's call): this function has AVX2 and FMA.
        self.blocks(value, g, sink, |job, zt, vg, lanes| unsafe {
            bce_avx2::groups(job, zt, vg, lanes)
        })
    }

    /// Up to LANES elements from their converted inputs: the fast results where good, the
    /// exact path elsewhere; the gradient scaled; the values added to the lane sums `lanes`
    /// (lane k takes the k-th element) unless `none`.
    #[inline(always)]
    fn finish(
        &self,
        (zb, tb): (&[f64], &[f64]),
        (vb, gb, okb): (&mut [f64], &mut [f64], &[bool]),
        lanes: &mut [f64; LANES],
    ) {
        if okb.iter().any(|&ok| !ok) {
            for k in 0..zb.len() {
                if !okb[k] {
                    (vb[k], gb[k]) = bce_logits_point(zb[k], tb[k], tb[k]);
                }
            }
        }
        if self.want {
            for x in gb.iter_mut() {
                *x = self.scale.apply(*x);
            }
        }
        if !self.none {
            for k in 0..vb.len() {
                lanes[k] += vb[k];
            }
        }
    }

    /// The whole groups of LANES elements of a block, by [`bce_fast_element`] over lanes (the
    /// plain code generation; `bce_avx2::groups` is the same in intrinsics): computed, fixed
    /// up, scaled into `gb`, the values into `vb` (`none`) or the lane sums. Returns how many
    /// elements were done (the tail is the caller's).
    #[inline(always)]
    fn groups_plain(
        &self,
        (zb, tb): (&[f64], &[f64]),
        (vb, gb): (&mut [f64], &mut [f64]),
        lanes: &mut [f64; LANES],
    ) -> usize {
        let mut j = 0;
        while j + LANES <= zb.len() {
            let zj: &[f64; LANES] = zb[j..j + LANES].try_into().unwrap();
            let tj: &[f64; LANES] = tb[j..j + LANES].try_into().unwrap();
            let (v, d, ok) = bce_fast_element(Lanes(*zj), Lanes(*tj));
            let (mut v, mut d) = (v.0, d.0);
            self.finish((zj, tj), (&mut v, &mut d, &ok), lanes);
            gb[j..j + LANES].copy_from_slice(&d);
            vb[j..j + LANES].copy_from_slice(&v);
            j += LANES;
        }
        j
    }

    /// A block's last m < LANES elements (after its whole groups), one by one: the operations
    /// of a group, finished like one ([`Self::finish`]); (values, scaled gradients) in the
    /// first m places.
    #[inline(always)]
    fn tail(&self, (zb, tb): (&[f64], &[f64]), lanes: &mut [f64; LANES]) -> ([f64; LANES], [f64; LANES]) {
        let m = zb.len();
        let (mut v, mut d, mut ok) = ([0.0f64; LANES], [0.0f64; LANES], [true; LANES]);
        for k in 0..m {
            (v[k], d[k], ok[k]) = bce_fast_element(zb[k], tb[k]);
        }
        self.finish((zb, tb), (&mut v[..m], &mut d[..m], &ok[..m]), lanes);
        (v, d)
    }

    /// The fast loop; `groups` does a block's whole groups of LANES elements
    /// ([`Self::groups_plain`], or its AVX2 intrinsics in `bce_avx2`: the same bits).
    #[inline(always)]
    fn blocks<O: Element>(
        &self,
        value: &mut [O],
        g: &mut [T],
        sink: &mut dyn FnMut(f64),
        groups: impl Fn(&Self, (&[f64], &[f64]), (&mut [f64], &mut [f64]), &mut [f64; LANES]) -> usize,
    ) {
        let n = self.z.len();
        let (mut zb, mut tb) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
        let (mut vb, mut gb) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let len = end - start;
            // inputs and outputs converted in bulk per block (L1-resident buffers)
            load_f64(&self.z[start..end], &mut zb[..len]);
            load_f64(&self.t[start..end], &mut tb[..len]);
            let mut lanes = [0.0f64; LANES];
            // LANES lanes at a time (branch-free, so that LANES / 4 independent dependency
            // chains interleave); the tail one by one (the same operations: the same bits)
            let ins = (&zb[..len], &tb[..len]);
            let j = groups(self, ins, (&mut vb[..len], &mut gb[..len]), &mut lanes);
            if j < len {
                let m = len - j;
                let (v, d) = self.tail((&zb[j..len], &tb[j..len]), &mut lanes);
                gb[j..len].copy_from_slice(&d[..m]);
                vb[j..len].copy_from_slice(&v[..m]);
            }
            if self.want {
                store_f64(&gb[..len], &mut g[start..end]);
            }
            if self.none {
                store_f64(&vb[..len], &mut value[start..end]);
            } else {
                sink(lane_total(&lanes));
            }
            start = end;
        }
    }
}

/// `hinge` at score s, label t = ±1, margin m.
#[inline(always)]
pub(crate) fn hinge_point(s: f64, t: f64, m: f64) -> (f64, f64) {
    let d = m - t * s;
    if d > 0.0 {
        (d, -t)
    } else if d <= 0.0 {
        (0.0, 0.0)
    } else {
        (f64::NAN, f64::NAN)
    }
}

/// `focal` at logit z, target t.
#[inline(always)]
pub(crate) fn focal_point(z: f64, t: f64, alpha: Option<f64>, gamma: f64) -> (f64, f64) {
    let alpha_t = match alpha {
        None => 1.0,
        Some(al) => al * t + (1.0 - al) * (1.0 - t),
    };
    if z.is_nan() || t.is_nan() {
        return (f64::NAN, f64::NAN); // NaN data propagates, α_t = 0 included
    }
    if alpha_t == 0.0 {
        return (0.0, 0.0); // the whole term is absent (even at z = ±inf, where B = inf)
    }
    let b = 1.0 - t;
    let (s, sm) = (sigmoid(z), sigmoid(-z)); // σ(z), σ(−z)
                                             // B = t·softplus(−z) + (1−t)·softplus(z), absent terms as in bce_logits
    let mut big_b = 0.0;
    if t != 0.0 {
        big_b += t * softplus(-z);
    }
    if b != 0.0 {
        big_b += b * softplus(z);
    }
    let db = logistic_grad(t, t, z);
    // q = 1 − p_t, ln q and r = σ(z)σ(−z)/q
    let (ln_q, r) = if t == 1.0 {
        (-softplus(z), s)
    } else if t == 0.0 {
        (-softplus(-z), sm)
    } else {
        let q = t * sm + b * s;
        let p_t = t * s + b * sm;
        let ln_q = if q <= 0.5 {
            libm::log(q)
        } else {
            libm::log1p(-p_t)
        };
        (ln_q, s * sm / q)
    };
    let q_pow = if gamma == 0.0 {
        1.0
    } else {
        libm::exp(gamma * ln_q)
    };
    // B = inf only at z = ±inf, where q > 0 (q = 1 for t ∈ {0, 1}, q → t or 1 − t for soft t):
    // q^γ·B = inf even when q^γ underflows f64 (t^γ < 2^-1074 is still > 0)
    let v = if big_b == f64::INFINITY {
        f64::INFINITY
    } else {
        alpha_t * q_pow * big_b
    };
    // γ(1 − 2t)·r·B, 0 where any factor is exactly 0 (r = 0 at z = ±inf where B may be inf)
    let c = gamma * (1.0 - 2.0 * t);
    let focus = if c == 0.0 || r == 0.0 {
        0.0
    } else {
        c * r * big_b
    };
    let inner = focus + db;
    // q^γ = 0 (γ·ln q → −inf) dominates any finite or overflowed bracket
    let g = if q_pow == 0.0 && !inner.is_nan() {
        0.0
    } else {
        alpha_t * q_pow * inner
    };
    (v, g)
}

// ---------------------------------------------------------------------------------------------
// The typed API.

/// Binary cross-entropy on probabilities: l = −(t·L(p) + (1−t)·L(1−p)), L = ln, or
/// max(ln, log_floor) with a floor ≤ 0 (PyTorch's BCELoss: −100). ∂l/∂p as described in the
/// module docs. Errors (never panics) on lengths, p or t outside [0, 1] (NaN passes), a floor
/// that is positive or not finite, and the weight / mask / cotangent checks.
///
/// ```
/// use losscheck::kernels::classification::{bce, ClassArgs};
/// let (p, t) = ([0.5f32], [1.0f32]);
/// // torch.nn.functional.binary_cross_entropy(torch.tensor([.5], requires_grad=True),
/// //   torch.ones(1)) -> 0.6931 (ln 2); grad [-2.]
/// let out = bce::<f32, f32>(&ClassArgs::new(&p, &t), None).unwrap();
/// assert_eq!(out.value, vec![std::f32::consts::LN_2]);
/// assert_eq!(out.grad, Some(vec![-2.0f32]));
/// ```
pub fn bce<T: Element, O: Element>(
    args: &ClassArgs<'_, T>,
    log_floor: Option<f64>,
) -> Result<Output<T, O>, LossError> {
    Binary::Bce { log_floor }.eval(args)
}

/// Binary cross-entropy on logits with optional pos_weight (in the args):
/// l = pw·t·softplus(−z) + (1−t)·softplus(z), ∂l/∂z = −pw·t·σ(−z) + (1−t)·σ(z). Errors as
/// [`bce`] for the target, and on a pos_weight of the wrong length or a negative, infinite or
/// NaN one.
pub fn bce_logits<T: Element, O: Element>(
    args: &ClassArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    Binary::BceLogits.eval(args)
}

/// Sigmoid focal loss: l = α_t·(1−p_t)^γ·bce_logits(z, t), α_t = α·t + (1−α)(1−t) (1 when
/// `alpha` is none), 0⁰ = 1. Errors as [`bce`], and on α outside [0, 1] or γ < 0 / not finite.
pub fn focal<T: Element, O: Element>(
    args: &ClassArgs<'_, T>,
    alpha: Option<f64>,
    gamma: f64,
) -> Result<Output<T, O>, LossError> {
    Binary::Focal { alpha, gamma }.eval(args)
}

/// Hinge loss: l = max(0, m − t·s) for ±1 labels `t` (i64), ∂l/∂s = −t where m − t·s > 0 and 0
/// elsewhere (the kink takes 0). Errors on lengths, a label other than ±1 at an unskipped
/// position, a margin that is not finite, a pos_weight, and the weight / mask / cotangent
/// checks.
///
/// ```
/// use losscheck::kernels::classification::{hinge, ClassArgs};
/// use losscheck::Reduction;
/// let (s, t) = ([0.5f32, 2.0, -1.0], [1i64, 1, 1]);
/// // torch.clamp(1 - torch.tensor([1,1,1]) * torch.tensor([.5, 2., -1.]), min=0) -> [0.5, 0., 2.]
/// let out = hinge::<f32, f32>(&ClassArgs::new(&s, &t).reduction(Reduction::None), 1.0).unwrap();
/// assert_eq!(out.value, vec![0.5, 0.0, 2.0]);
/// assert_eq!(out.grad, Some(vec![-1.0f32, 0.0, -1.0]));
/// ```
pub fn hinge<T: Element, O: Element>(
    args: &ClassArgs<'_, T, i64>,
    margin: f64,
) -> Result<Output<T, O>, LossError> {
    let mut out = Output::default();
    hinge_into(args, margin, &mut out)?;
    Ok(out)
}

/// [`hinge`] into caller-owned buffers (reusing their allocations).
pub fn hinge_into<T: Element, O: Element>(
    args: &ClassArgs<'_, T, i64>,
    margin: f64,
    out: &mut Output<T, O>,
) -> Result<(), LossError> {
    if !margin.is_finite() {
        return Err(LossError::invalid(format!(
            "param margin={margin:?} is outside its domain (finite float)"
        )));
    }
    let n = args.input.len();
    check_len("target", args.target.len(), n, "score")?;
    if args.pos_weight.is_some() {
        return Err(LossError::invalid(
            "input pos_weight: hinge takes no pos_weight (only bce_logits does)",
        ));
    }
    let plan = Plan::new(n, args.weight, args.mask, args.cotangent, args.reduction)?;
    for (j, &y) in args.target.iter().enumerate() {
        if y != 1 && y != -1 && !skipped(&plan, j) {
            return Err(LossError::invalid(format!(
                "input target[{j}]={y} is not -1 or +1"
            )));
        }
    }
    let (s, t) = (args.input, args.target);
    run(&plan, args.grad, out, |j| {
        hinge_point(s[j].to_f64(), t[j] as f64, margin)
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

pub(super) fn to_typed<T: Element>(t: &Tensor) -> Vec<T> {
    fdata(t).iter().map(|&x| T::from_f64(x)).collect()
}

pub(super) fn float_input<T: Element>(
    case: &Case,
    name: &str,
) -> Result<Option<Vec<T>>, LossError> {
    match case.input(name) {
        None => Ok(None),
        Some(t) => match t.f() {
            Some(_) => Ok(Some(to_typed(t))),
            None => Err(LossError::invalid(format!(
                "input {name}: expected a float tensor"
            ))),
        },
    }
}

/// An optional i64 input (mask, class ids).
pub(super) fn int_input<'c>(case: &'c Case, name: &str) -> Result<Option<&'c [i64]>, LossError> {
    match case.input(name) {
        None => Ok(None),
        Some(t) => t
            .i()
            .map(Some)
            .ok_or_else(|| LossError::invalid(format!("input {name}: expected an i64 tensor"))),
    }
}

pub(super) fn req_param(case: &Case, name: &str) -> Result<f64, LossError> {
    case.float_param(name)
        .ok_or_else(|| LossError::invalid(format!("param {name} is missing or not a float")))
}

/// Evaluate a validated classification case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let loss = case.loss.as_str();
    let xname = match loss {
        "bce" => "prob",
        "bce_logits" | "focal" => "logit",
        "hinge" => "score",
        other => {
            return Err(LossError::unsupported(format!(
                "no classification kernel for {other}"
            )))
        }
    };
    let missing = |name: &str| LossError::invalid(format!("{loss}: missing input {name:?}"));
    let x: Vec<T> = float_input::<T>(case, xname)?.ok_or_else(|| missing(xname))?;
    let weight = float_input::<T>(case, "weight")?;
    let cotangent = float_input::<T>(case, "cotangent")?;
    let pos_weight = float_input::<T>(case, "pos_weight")?;
    let mask = int_input(case, "mask")?;
    let x_shape = case
        .input(xname)
        .map(|t| t.shape.clone())
        .unwrap_or_default();
    let reduction = case.reduction();
    let want = case.grad.iter().any(|g| g == xname);
    let out: Output<T, O> = if loss == "hinge" {
        let target = case
            .input("target")
            .ok_or_else(|| missing("target"))?
            .i()
            .ok_or_else(|| LossError::invalid("input target: expected an i64 tensor of ±1"))?;
        let mut args = ClassArgs::new(&x[..], target)
            .reduction(reduction)
            .grad(want);
        args.weight = weight.as_deref();
        args.mask = mask;
        args.cotangent = cotangent.as_deref();
        hinge(&args, req_param(case, "margin")?)?
    } else {
        let target: Vec<T> = float_input::<T>(case, "target")?.ok_or_else(|| missing("target"))?;
        let mut args = ClassArgs::new(&x[..], &target[..])
            .reduction(reduction)
            .grad(want);
        args.weight = weight.as_deref();
        args.mask = mask;
        args.cotangent = cotangent.as_deref();
        if let (Some(pw), Some(pwt)) = (pos_weight.as_deref(), case.input("pos_weight")) {
            args.pos_weight = Some(if pwt.shape == x_shape {
                PosWeight::Elementwise(pw)
            } else {
                PosWeight::LastDim(pw)
            });
        }
        let kind = match loss {
            "bce" => Binary::Bce {
                log_floor: case.float_param("log_floor"),
            },
            "bce_logits" => Binary::BceLogits,
            _ => Binary::Focal {
                alpha: case.float_param("alpha"),
                gamma: req_param(case, "gamma")?,
            },
        };
        kind.eval(&args)?
    };
    Ok(response(case, checked, xname, x_shape, out))
}

/// The response of a case: the value shaped for the case's reduction (`[]`, or the row shape
/// for `none`) and the gradient of `xname`, if computed, shaped like that input.
pub(super) fn response<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
    xname: &str,
    x_shape: Vec<usize>,
    out: Output<T, O>,
) -> Response {
    let value = Tensor::float(
        O::DTYPE,
        checked.value_shape(case.reduction()),
        out.value.iter().map(|v| v.to_f64()).collect(),
    );
    let mut grad = BTreeMap::new();
    if let Some(g) = out.grad {
        grad.insert(
            xname.to_string(),
            Tensor::float(T::DTYPE, x_shape, g.iter().map(|v| v.to_f64()).collect()),
        );
    }
    Response {
        id: case.id,
        value,
        grad,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::reduce::cpu_codegen;

    /// Inputs of the fast element: typical, at the domain's edges, at the zero crossing, both
    /// target edges, out of the domain, NaN and ±inf.
    fn inputs() -> Vec<(f64, f64)> {
        let mut zt = vec![
            (0.0, 0.5), (-0.0, 0.0), (700.0, 1.0), (-700.0, 0.0), (700.5, 0.3), (-701.0, 0.7),
            (f64::INFINITY, 1.0), (f64::NEG_INFINITY, 0.0), (f64::NAN, 0.5), (1.0, f64::NAN),
            (2.0, -0.25), (2.0, 1.5), (1e-300, 0.5), (0.25f64.ln() - 0.75f64.ln(), 0.25),
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for k in 0..20_000 {
            let (u, v) = (next(), next());
            let z = (2.0 * u - 1.0) * [3.0, 30.0, 700.0, 1e-6][k % 4];
            let t = [v, 0.0, 1.0, v * v][k / 4 % 4];
            // every 7th at (near) the zero crossing, where the exact path takes over
            let z = if k % 7 == 0 && t > 0.0 && t < 1.0 { (t / (1.0 - t)).ln() } else { z };
            zt.push((z, t));
        }
        while zt.len() % 8 != 0 {
            zt.push((0.5, 0.5));
        }
        zt
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// `bce_avx2::bce_fast4` and `bce_avx512::bce_fast8` give every lane the f64 bits of the
    /// generic [`bce_fast_element`] (value, gradient, and the test's verdict) — before any
    /// rounding to the output dtype, which would hide a difference in the last f64 bits.
    #[test]
    fn simd_fast_elements_are_the_generic_element_lane_by_lane() {
        let level = cpu_codegen();
        if level < Codegen::Avx2 {
            eprintln!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for c in inputs().chunks(8) {
            let want: Vec<(f64, f64, bool)> = c.iter().map(|&(z, t)| bce_fast_element(z, t)).collect();
            let check = |k: usize, (v, g, ok): (f64, f64, bool), cg: &str| {
                let (z, t) = c[k];
                assert_eq!(ok, want[k].2, "{cg}: verdict at z={z:e}, t={t:e}");
                if ok {
                    assert!(same(v, want[k].0) && same(g, want[k].1), "{cg}: z={z:e}, t={t:e}");
                }
            };
            let (z, t): (Vec<f64>, Vec<f64>) = c.iter().copied().unzip();
            // SAFETY: the CPU has AVX2 + FMA (checked above).
            unsafe {
                use std::arch::x86_64::*;
                for h in 0..2 {
                    let (zv, tv) = (_mm256_loadu_pd(z[4 * h..].as_ptr()), _mm256_loadu_pd(t[4 * h..].as_ptr()));
                    let (v, g, m) = bce_avx2::bce_fast4(zv, tv);
                    let (mut va, mut ga) = ([0.0; 4], [0.0; 4]);
                    _mm256_storeu_pd(va.as_mut_ptr(), v);
                    _mm256_storeu_pd(ga.as_mut_ptr(), g);
                    let bits = _mm256_movemask_pd(m);
                    for k in 0..4 {
                        check(4 * h + k, (va[k], ga[k], bits >> k & 1 == 1), "avx2");
                    }
                }
            }
            if level >= Codegen::Avx512 {
                // SAFETY: the CPU has AVX-512 F + DQ.
                let (v, g, ok) = unsafe { bce_avx512::fast8_arrays(&z, &t) };
                for k in 0..8 {
                    check(k, (v[k], g[k], ok >> k & 1 == 1), "avx512");
                }
            }
        }
        if level < Codegen::Avx512 {
            eprintln!("AVX-512 part skipped: this CPU has no AVX-512 F + DQ");
        }
    }
}
