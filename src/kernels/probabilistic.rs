//! Probabilistic losses: `gaussian_nll` (elementwise, here) and the row-wise `kl_div`,
//! `distill_kl`, `neg_elbo` and `brier` ([`rowwise`]).
//!
//! `gaussian_nll`, elementwise over inputs of any shape: with r = target − mean and
//! v′ = max(var, eps), l = ½·ln v′ + ½·r²/v′ [+ ½·ln 2π when `full`];
//! ∂l/∂mean = (mean − target)/v′ and ∂l/∂var = ½·(1/v′ − r²/v′²) = (v′ − r²)/(2·v′²) for
//! **every** var ≥ 0 — the clamp is straight-through (DESIGN.md, as PyTorch's GaussianNLLLoss):
//! below eps the gradient is that of v′ = eps, not the 0 of the clamped function. The typed API
//! is generic over the input type `T` and the value type `O`; reductions, weights, masks and
//! cotangents are [`Plan`]'s.
//!
//! Numerics (f64, each output rounded once; `libm`, never the platform libm):
//!
//! - r = target − mean is exact as a pair (TwoSum) and r² exact as an expansion (TwoProducts),
//!   so ∂l/∂var's numerator v′ − r² is formed exactly (`sum_exact`) — no cancellation where
//!   r² ≈ v′, an exact 0 where they are equal — and divided twice by v′ as a double-double
//!   (never 1/v′ − r²/v′², which cancels, nor by v′², which under- or overflows for the
//!   extreme eps a binary64 param allows). ∂l/∂mean is the exact −r divided once.
//! - The value: ln v′ < 0 for v′ < 1, so ½·ln v′ and ½·r²/v′ (+ ½·ln 2π) can cancel. Where
//!   they do (the sum below half its positive part) every term is formed in double-double —
//!   ln v′ by one Newton step on libm's log through [`exp_dd`], r²/v′ from the exact r², ln 2π
//!   a double-double constant — and added exactly: the result is accurate relatively however
//!   close to 0 it is. Elsewhere the terms are added error-free (their own roundings, a bit
//!   or two, aside), and the value stays a pair until its one rounding (as in
//!   [`ranking`](super::ranking)).
//! - Extremes: var = 0 uses v′ = eps (r²/eps may overflow f64 to +inf: then so does the exact
//!   value in every dtype); var at the dtype max; var = +inf gives l = +inf with gradients 0
//!   (NaN when r is infinite too: r/v′ has no limit); r = ±inf gives l = +inf, ∂/∂mean = ∓inf,
//!   ∂/∂var = −inf; inf − inf in r and NaN data give NaN.
//!
//! Invalid input (lengths, a negative var at an unskipped position — NaN propagates —, eps ≤ 0
//! or not finite, and the weight / mask / cotangent checks of [`Plan::new`]) is an `Err`
//! naming the input, the index and the value. Never panics.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::probabilistic::{gaussian_nll, GaussianArgs};
//! use losscheck::Reduction;
//!
//! let (mean, target, var) = ([0.0f32, 1.0], [1.0f32, 1.0], [1.0f32, 0.0]);
//! // torch.nn.functional.gaussian_nll_loss(tensor([0., 1.]), tensor([1., 1.]), tensor([1., 0.]),
//! //   eps=0.25, reduction='none') -> [0.5, ½·ln 0.25 = -0.6931]
//! let args = GaussianArgs::new(&mean, &target, &var).reduction(Reduction::None);
//! let out = gaussian_nll::<f32, f32>(&args, 0.25, false).unwrap();
//! assert_eq!(out.value, vec![0.5, -std::f32::consts::LN_2]);
//! // ∂/∂mean = (mean − target)/v′; ∂/∂var = (v′ − r²)/(2v′²), straight through at var = 0 < eps
//! assert_eq!(out.grad_mean, Some(vec![-1.0, 0.0]));
//! assert_eq!(out.grad_var, Some(vec![0.0, 2.0]));
//! ```

use super::math::{exp_dd, pair_add, pair_div, two_prod, two_sum};
use super::ranking::{
    bad_param, check_len, extras, output_default, reduction_builders, req_input, response2, run2,
    sum_exact, Pair,
};
use super::reduce::Plan;
use losscheck_core::{Case, Checked, Element, LossError, ParamValue, Reduction, Response};

pub mod rowwise;

/// The probabilistic losses this module implements.
pub const LOSSES: &[&str] = &["gaussian_nll", "kl_div", "distill_kl", "neg_elbo", "brier"];

/// ½·ln 2π as a double-double (0x3FED67F1C864BEB5 and its remainder).
const HALF_LN_2PI: (f64, f64) = (0.918_938_533_204_672_8, -3.878_294_158_067_241_4e-17);

/// Inputs of `gaussian_nll`: mean, target, var (all the same length; var ≥ 0) and the
/// reduction's inputs. Build with [`GaussianArgs::new`] (reduction `mean`, both gradients
/// wanted, no weight, mask or cotangent) and the builder methods.
#[derive(Clone, Copy, Debug)]
pub struct GaussianArgs<'a, T: Element> {
    /// Predicted means, flattened (row-major).
    pub mean: &'a [T],
    /// Targets.
    pub target: &'a [T],
    /// Predicted variances, ≥ 0 (+inf allowed; NaN propagates).
    pub var: &'a [T],
    /// Per-element weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-element mask, 0 or 1.
    pub mask: Option<&'a [i64]>,
    /// Scales the gradients: one per element for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂mean.
    pub grad_mean: bool,
    /// Compute ∂/∂var.
    pub grad_var: bool,
}

impl<'a, T: Element> GaussianArgs<'a, T> {
    /// mean, target and var; reduction `mean`; both gradients; nothing else.
    pub fn new(mean: &'a [T], target: &'a [T], var: &'a [T]) -> Self {
        GaussianArgs {
            mean,
            target,
            var,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            grad_mean: true,
            grad_var: true,
        }
    }
    reduction_builders!();
    /// Which gradients to compute.
    pub fn grads(mut self, mean: bool, var: bool) -> Self {
        self.grad_mean = mean;
        self.grad_var = var;
        self
    }
}

/// Value and gradients of `gaussian_nll`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    /// One element when reduced (shape `[]`), one per input element for `none` (0 at masked or
    /// zero-weight positions).
    pub value: Vec<O>,
    /// ∂value/∂mean (times the cotangent), if asked for; 0 at skipped positions.
    pub grad_mean: Option<Vec<T>>,
    /// ∂value/∂var (straight-through, times the cotangent), if asked for.
    pub grad_var: Option<Vec<T>>,
}

output_default!(grad_mean, grad_var);

/// ln v for finite v > 0 as an unevaluated pair y + c accurate to about 2^−100 absolutely
/// (|ln v| ≤ 745): y = libm's log, c one Newton step, ln(v·e^−y) = δ − δ²/2 with
/// δ = v·e^−y − 1 formed in double-double ([`exp_dd`]).
fn ln_dd(v: f64) -> (f64, f64) {
    let y = libm::log(v);
    let (k, (e0, e1)) = exp_dd(-y); // e^−y = 2^k·(e0 + e1)
    let s = libm::scalbn(v, k); // ≈ 1/e0 ∈ [0.7, 1.42]: exact
    let (p, pe) = two_prod(s, e0);
    let delta = (p - 1.0) + (pe + s * e1); // p − 1 exact (Sterbenz)
    (y, delta - 0.5 * delta * delta)
}

/// `gaussian_nll` at one element: (l, [∂l/∂mean, ∂l/∂var]).
#[inline(always)]
fn gaussian_point(m: f64, t: f64, var: f64, eps: f64, full: bool) -> (Pair, [f64; 2]) {
    const NAN: (Pair, [f64; 2]) = ((f64::NAN, 0.0), [f64::NAN, f64::NAN]);
    const INF: Pair = (f64::INFINITY, 0.0);
    if var.is_nan() {
        return NAN;
    }
    let v = if var > eps { var } else { eps }; // v′ = max(var, eps)
    let (rh, rl) = two_sum(t, -m);
    if !rh.is_finite() {
        let r = t - m;
        return if r.is_nan() {
            NAN
        } else if v == f64::INFINITY {
            (INF, [f64::NAN, f64::NAN]) // r/v′ and r²/v′² have no limit
        } else {
            (INF, [-r, f64::NEG_INFINITY]) // −r/v′ = ∓inf
        };
    }
    if v == f64::INFINITY {
        return (INF, [0.0, 0.0]);
    }
    // r² = p1 + e1 + p2 + e2 + p3 + e3 exactly
    let (p1, e1) = two_prod(rh, rh);
    let (p2, e2) = two_prod(2.0 * rh, rl);
    let (p3, e3) = two_prod(rl, rl);
    let c = if full { HALF_LN_2PI } else { (0.0, 0.0) };
    let la = 0.5 * libm::log(v);
    let lb = 0.5 * ((p1 + (e1 + p2)) / v);
    // the sum of the three terms as a pair (their own rounding errors aside)
    let (s, s_err) = pair_add(la, lb);
    let (s, c_err) = pair_add(s, c.0);
    let mut l = if s.is_finite() {
        (s, s_err + c_err + c.1)
    } else {
        (s, 0.0)
    };
    if la < 0.0 && s.abs() < 0.5 * (lb + c.0) {
        // cancellation: every term in double-double, added exactly
        let (y, yc) = ln_dd(v);
        let r2 = sum_exact([p1, e1, p2, e2, p3, e3]);
        let (qh, ql) = pair_div(r2, v);
        l = sum_exact([0.5 * y, 0.5 * yc, 0.5 * qh, 0.5 * ql, c.0, c.1]);
    }
    // ∂/∂mean = −r/v′; ∂/∂var = ((v′ − r²)/v′)/(2v′), the numerator exact
    let dm = pair_div((-rh, -rl), v).0;
    let num = sum_exact([v, -p1, -e1, -p2, -e2, -p3, -e3]);
    let dv = 0.5 * pair_div(pair_div(num, v), v).0;
    (l, [dm, dv])
}

fn check_eps(eps: f64) -> Result<(), LossError> {
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(bad_param("eps", eps, "float > 0"));
    }
    Ok(())
}

/// Gaussian negative log-likelihood with variance floor `eps` > 0 and, when `full`, the
/// constant ½·ln 2π (see the module docs). Errors (never panics) on lengths, a negative var at
/// an unskipped position, an eps that is not finite and > 0, and the weight / mask / cotangent
/// checks.
pub fn gaussian_nll<T: Element, O: Element>(
    args: &GaussianArgs<'_, T>,
    eps: f64,
    full: bool,
) -> Result<Output<T, O>, LossError> {
    let mut out = Output::default();
    gaussian_nll_into(args, eps, full, &mut out)?;
    Ok(out)
}

/// [`gaussian_nll`] into caller-owned buffers (reusing their allocations; on error `out` is
/// unchanged).
pub fn gaussian_nll_into<T: Element, O: Element>(
    args: &GaussianArgs<'_, T>,
    eps: f64,
    full: bool,
    out: &mut Output<T, O>,
) -> Result<(), LossError> {
    check_eps(eps)?;
    let n = args.mean.len();
    check_len("target", args.target.len(), n, "mean")?;
    check_len("var", args.var.len(), n, "mean")?;
    let plan = Plan::new(n, args.weight, args.mask, args.cotangent, args.reduction)?;
    for (j, &v) in args.var.iter().enumerate() {
        let x = v.to_f64();
        if x < 0.0 && plan.coef(j) != 0.0 {
            return Err(LossError::invalid(format!(
                "input var[{j}]={x:?} is negative"
            )));
        }
    }
    let (m, t, v) = (args.mean, args.target, args.var);
    run2(
        &plan,
        args.cotangent,
        [args.grad_mean, args.grad_var],
        &mut out.value,
        [&mut out.grad_mean, &mut out.grad_var],
        |j| gaussian_point(m[j].to_f64(), t[j].to_f64(), v[j].to_f64(), eps, full),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// Evaluate a validated probabilistic case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    if rowwise::LOSSES.contains(&case.loss.as_str()) {
        return rowwise::evaluate_typed::<T, O>(case, checked);
    }
    if case.loss != "gaussian_nll" {
        return Err(LossError::unsupported(format!(
            "no probabilistic kernel for {}",
            case.loss
        )));
    }
    let mean = req_input::<T>(case, "mean")?;
    let target = req_input::<T>(case, "target")?;
    let var = req_input::<T>(case, "var")?;
    let (weight, mask, cotangent) = extras::<T>(case)?;
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let args = GaussianArgs {
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction: case.reduction(),
        grad_mean: wants("mean"),
        grad_var: wants("var"),
        ..GaussianArgs::new(&mean, &target, &var)
    };
    let eps = super::classification::req_param(case, "eps")?;
    let full = match case.params.get("full") {
        None => false,
        Some(ParamValue::Bool(b)) => *b,
        Some(other) => {
            return Err(LossError::invalid(format!(
                "param full={other} is not a boolean"
            )))
        }
    };
    let out: Output<T, O> = gaussian_nll(&args, eps, full)?;
    Ok(response2(
        case,
        checked,
        "mean",
        out.value,
        [("mean", out.grad_mean), ("var", out.grad_var)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_dd_is_accurate() {
        // ln 2 = 0.6931471805599453 + 2.3190468138462996e-17
        let (y, c) = ln_dd(2.0);
        assert_eq!(y, std::f64::consts::LN_2);
        assert!((c - 2.319_046_813_846_299_6e-17).abs() < 1e-31, "{c:e}");
        assert_eq!(ln_dd(1.0), (0.0, 0.0));
        let (y, _) = ln_dd(f64::from_bits(1));
        assert!((y + 744.440_071_921_381).abs() < 1e-12);
    }

    #[test]
    fn cancellation_keeps_its_bits() {
        // v′ = ½, r = √(½·ln 2) rounded: l = ½·ln ½ + r² = r² − ½·ln 2, a difference of two
        // nearly equal numbers; r² = p + e exactly, ½·ln 2 in double-double
        const LN2_LO: f64 = 2.319_046_813_846_299_6e-17;
        let r = libm::sqrt(0.5 * std::f64::consts::LN_2);
        let (p, e) = (r * r, libm::fma(r, r, -(r * r)));
        let want = (p - 0.5 * std::f64::consts::LN_2) + (e - 0.5 * LN2_LO);
        let (l, _) = gaussian_point(0.0, r, 0.5, 1e-6, false);
        let l = l.0 + l.1;
        assert!((l - want).abs() <= want.abs() * 1e-13, "{l:e} vs {want:e}");
        // the plain sum would be off in the first digits
        let plain = 0.5 * libm::log(0.5) + r * r;
        assert!(
            (plain - want).abs() > want.abs() * 1e-3,
            "{plain:e} vs {want:e}"
        );
    }
}
