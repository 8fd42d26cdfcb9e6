//! Regression losses: `mse`, `mae`, `huber`, `quantile`, `log_cosh`.
//!
//! Every loss here is a function of the residual r = pred − target, elementwise over inputs of
//! any shape (passed as flat slices). The typed API is generic over the input element type `T`
//! (`f32`, [`half::f16`], [`half::bf16`]) and the output type `O` of the value (`T`, or `f32`
//! for 16-bit inputs: the autocast pattern); gradients are in `T`.
//!
//! Numerics: inputs are exact in f64; r is computed in f64 (exact unless the exponents of pred
//! and target are more than 29 bits apart, and then within 2^-53 relatively); every loss and
//! derivative is computed in f64 from r with a few f64 roundings at most, accumulated by
//! [`reduce`](super::reduce) with compensated summation, and rounded once to its output dtype.
//! No platform libm: the transcendental functions of `log_cosh` come from the `libm` crate, so
//! every result is the same bits on every platform.
//!
//! Kinks take the element of the Clarke gradient nearest 0: `mae` at r = 0 and `quantile` at
//! u = 0 have gradient 0 for both pred and target. Extended reals follow the exact semantics:
//! r = inf − inf is NaN (value and gradients), `huber`'s gradient at r = ±inf is ±δ,
//! `log_cosh(±inf)` = inf with gradient ±1, `quantile`'s gradient at u = ±inf is the slope of
//! that side.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::regression::{mse, ElementwiseArgs};
//! use losscheck::Reduction;
//!
//! let pred = [1.0f32, 2.0];
//! let target = [0.0f32, 0.0];
//! // torch.nn.functional.mse_loss(torch.tensor([1., 2.], requires_grad=True), torch.zeros(2))
//! //   -> 2.5, grad [1., 2.]
//! let out = mse::<f32, f32>(&ElementwiseArgs::new(&pred, &target)).unwrap();
//! assert_eq!(out.value, vec![2.5]);
//! assert_eq!(out.grad_pred.as_deref(), Some(&[1.0f32, 2.0][..]));
//! assert_eq!(out.grad_target.as_deref(), Some(&[-1.0f32, -2.0][..]));
//!
//! // Unreduced, with a mask: the masked NaN contributes nothing.
//! let pred = [1.0f32, f32::NAN];
//! let mask = [1i64, 0];
//! let args = ElementwiseArgs::new(&pred, &target).mask(&mask).reduction(Reduction::None);
//! let out = mse::<f32, f32>(&args).unwrap();
//! assert_eq!(out.value, vec![1.0, 0.0]);
//! ```

use super::reduce::{
    block_sum, load_f64, size_output, store_f64, use_avx2, CompensatedSum, FastScale, Plan,
    BLOCK,
};
use losscheck_core::case::fdata;
use losscheck_core::{Case, Checked, Element, LossError, ParamValue, Reduction, Response, Tensor};
use std::collections::BTreeMap;

/// Inputs of an elementwise two-input loss: pred, target and the reduction's inputs.
///
/// Build with [`ElementwiseArgs::new`] (reduction `mean`, both gradients wanted, no weight,
/// mask or cotangent) and the builder methods. All slices must have `pred.len()` elements,
/// except the cotangent of a reduced output, which has exactly one.
#[derive(Clone, Copy, Debug)]
pub struct ElementwiseArgs<'a, T: Element> {
    /// Predictions, flattened (row-major).
    pub pred: &'a [T],
    /// Targets, same length.
    pub target: &'a [T],
    /// Per-element weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-element mask, 0 or 1 (0 removes the element entirely).
    pub mask: Option<&'a [i64]>,
    /// Scales the gradients: one per element for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂pred.
    pub grad_pred: bool,
    /// Compute ∂/∂target.
    pub grad_target: bool,
}

impl<'a, T: Element> ElementwiseArgs<'a, T> {
    /// pred and target; reduction `mean`; both gradients; no weight, mask or cotangent.
    pub fn new(pred: &'a [T], target: &'a [T]) -> Self {
        ElementwiseArgs {
            pred,
            target,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            grad_pred: true,
            grad_target: true,
        }
    }
    /// Per-element weights.
    pub fn weight(mut self, weight: &'a [T]) -> Self {
        self.weight = Some(weight);
        self
    }
    /// Per-element 0/1 mask.
    pub fn mask(mut self, mask: &'a [i64]) -> Self {
        self.mask = Some(mask);
        self
    }
    /// Cotangent (see the field).
    pub fn cotangent(mut self, cotangent: &'a [T]) -> Self {
        self.cotangent = Some(cotangent);
        self
    }
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Which gradients to compute.
    pub fn grads(mut self, pred: bool, target: bool) -> Self {
        self.grad_pred = pred;
        self.grad_target = target;
        self
    }
}

/// Value and gradients of an elementwise loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    /// The value in the output type: one element when reduced (shape `[]`), one per input
    /// element for `none` (0 at masked or zero-weight positions).
    pub value: Vec<O>,
    /// ∂value/∂pred (times the cotangent), if asked for; 0 at skipped positions.
    pub grad_pred: Option<Vec<T>>,
    /// ∂value/∂target (times the cotangent), if asked for.
    pub grad_target: Option<Vec<T>>,
}

// ---------------------------------------------------------------------------------------------
// Pointwise functions of the residual, in f64: (loss, ∂loss/∂r). ∂/∂pred = ∂/∂r and
// ∂/∂target = −∂/∂r.

#[inline(always)]
fn mse_point(r: f64) -> (f64, f64) {
    (r * r, 2.0 * r)
}

#[inline(always)]
fn mae_point(r: f64) -> (f64, f64) {
    // sign(r), 0 at the kink (the Clarke element nearest 0), NaN for NaN.
    let g = if r > 0.0 {
        1.0
    } else if r < 0.0 {
        -1.0
    } else if r == 0.0 {
        0.0
    } else {
        f64::NAN
    };
    (r.abs(), g)
}

#[inline(always)]
fn huber_point(r: f64, delta: f64) -> (f64, f64) {
    let a = r.abs();
    if a <= delta {
        (0.5 * r * r, r)
    } else if a > delta {
        // a − δ/2 > δ/2 > 0: no cancellation.
        let g = if r > 0.0 { delta } else { -delta };
        (delta * (a - 0.5 * delta), g)
    } else {
        (f64::NAN, f64::NAN)
    }
}

/// Huber, branch-free (selects only): the same bits as [`huber_point`] for every r — |r| ≤ δ:
/// (½r·r, r); |r| > δ (±inf included): (δ·(|r| − ½δ), ±δ); NaN: ½r·r and r are NaN.
#[inline(always)]
fn huber_point_fast(r: f64, delta: f64) -> (f64, f64) {
    let a = r.abs();
    let lin = a > delta;
    let l = if lin {
        delta * (a - 0.5 * delta)
    } else {
        0.5 * r * r
    };
    let g = if lin { delta.copysign(r) } else { r };
    (l, g)
}

// ---------------------------------------------------------------------------------------------
// The fast path (mse, huber without mask, weight or per-element cotangent).
//
// Per element it computes exactly what the general path computes — r = p − t in f64 (exact
// for f32 / 16-bit inputs unless their exponents are more than 29 apart), (l, g) by the same
// f64 expressions, the gradient scaled as `Plan` scales it, each output rounded once to its
// dtype (bulk conversion, the same correctly rounded bits) — so `none` outputs and gradients
// are bit-identical to the general path. Only the value sum differs: plain f64 lane sums per
// block of `BLOCK` elements, block totals compensated (see `reduce`); the terms are ≥ 0, so
// the sum is within 2^-46 relatively of the exact sum of the computed terms, whatever n.

/// The losses with a fast path.
#[derive(Clone, Copy, Debug)]
enum Fast {
    Mse,
    Huber(f64),
}

struct FastJob<'a, T> {
    pred: &'a [T],
    target: &'a [T],
    kind: Fast,
    scale: FastScale,
    none: bool,
    mean_den: Option<f64>,
    want: [bool; 2],
}

impl<T: Element> FastJob<'_, T> {
    fn run<O: Element>(&self, value: &mut Vec<O>, gp: &mut Vec<T>, gt: &mut Vec<T>) {
        let n = self.pred.len();
        let zero = T::from_f64(0.0);
        for (g, w) in [(&mut *gp, self.want[0]), (&mut *gt, self.want[1])] {
            if w {
                size_output(g, n, zero);
            } else {
                g.clear();
            }
        }
        if self.none {
            size_output(value, n, O::from_f64(0.0));
        } else {
            value.clear();
        }
        let mut acc = CompensatedSum::new();
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (`use_avx2`).
            unsafe { self.blocks_avx2(value, gp, gt, &mut acc) };
        } else {
            self.blocks(value, gp, gt, &mut acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = use_avx2;
            self.blocks(value, gp, gt, &mut acc);
        }
        if !self.none {
            let total = acc.total();
            let v = match self.mean_den {
                Some(d) => total / d,
                None => total,
            };
            value.push(O::from_f64(v));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn blocks_avx2<O: Element>(
        &self,
        value: &mut [O],
        gp: &mut [T],
        gt: &mut [T],
        acc: &mut CompensatedSum,
    ) {
        self.blocks(value, gp, gt, acc)
    }

    #[inline(always)]
    fn blocks<O: Element>(
        &self,
        value: &mut [O],
        gp: &mut [T],
        gt: &mut [T],
        acc: &mut CompensatedSum,
    ) {
        match (self.kind, self.scale) {
            (Fast::Mse, FastScale::Mul(s)) => {
                self.blocks_with(value, gp, gt, acc, mse_point, move |g| FastScale::Mul(s).apply_pair(g))
            }
            (Fast::Mse, sc) => self.blocks_with(value, gp, gt, acc, mse_point, move |g| sc.apply_pair(g)),
            (Fast::Huber(d), FastScale::Mul(s)) => self.blocks_with(
                value,
                gp,
                gt,
                acc,
                move |r| huber_point_fast(r, d),
                move |g| FastScale::Mul(s).apply_pair(g),
            ),
            (Fast::Huber(d), sc) => self.blocks_with(
                value,
                gp,
                gt,
                acc,
                move |r| huber_point_fast(r, d),
                move |g| sc.apply_pair(g),
            ),
        }
    }

    #[inline(always)]
    fn blocks_with<O: Element, P, S>(
        &self,
        value: &mut [O],
        gp: &mut [T],
        gt: &mut [T],
        acc: &mut CompensatedSum,
        point: P,
        scale: S,
    ) where
        P: Fn(f64) -> (f64, f64) + Copy,
        S: Fn(f64) -> (f64, f64) + Copy,
    {
        let n = self.pred.len();
        let mut pb = [0.0f64; BLOCK];
        let mut tb = [0.0f64; BLOCK];
        let mut lb = [0.0f64; BLOCK];
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let len = end - start;
            load_f64(&self.pred[start..end], &mut pb[..len]);
            load_f64(&self.target[start..end], &mut tb[..len]);
            // (pb, tb) become (∂/∂pred, ∂/∂target) in place
            for j in 0..len {
                let r = pb[j] - tb[j];
                let (l, g) = point(r);
                lb[j] = l;
                let (a, b) = scale(g);
                pb[j] = a;
                tb[j] = b;
            }
            if self.want[0] {
                store_f64(&pb[..len], &mut gp[start..end]);
            }
            if self.want[1] {
                store_f64(&tb[..len], &mut gt[start..end]);
            }
            if self.none {
                store_f64(&lb[..len], &mut value[start..end]);
            } else {
                acc.add(block_sum(&lb[..len]));
            }
            start = end;
        }
    }
}

/// Quantile (pinball) loss of r = pred − target, u = target − pred = −r:
/// max(τu, (τ−1)u) = τ·|r| when r < 0, (1−τ)·r when r > 0. `one_minus_tau` = 1 − τ (in f64).
#[inline(always)]
fn quantile_point(r: f64, tau: f64, one_minus_tau: f64) -> (f64, f64) {
    if r > 0.0 {
        (one_minus_tau * r, one_minus_tau)
    } else if r < 0.0 {
        (-tau * r, -tau)
    } else if r == 0.0 {
        (0.0, 0.0)
    } else {
        (f64::NAN, f64::NAN)
    }
}

const LN_2: f64 = std::f64::consts::LN_2;

/// log cosh(r), accurate for every r in f64 (relative error a few f64 ulps):
/// log1p(2·sinh²(|r|/2)) for |r| ≤ 1 (no cancellation; ≈ r²/2 for tiny r, with no underflow for
/// any r that is a difference of f32 values), and |r| − ln 2 + log1p(e^(−2|r|)) above (|r| − ln 2 ≥
/// 0.3: a bit or two of cancellation at most; e^(−2|r|) underflows harmlessly; inf at inf).
#[inline(always)]
pub fn log_cosh_f64(r: f64) -> f64 {
    let a = r.abs();
    if a <= 1.0 {
        let s = libm::sinh(0.5 * a);
        libm::log1p(2.0 * s * s)
    } else {
        (a - LN_2) + libm::log1p(libm::exp(-2.0 * a))
    }
}

#[inline(always)]
fn log_cosh_point(r: f64) -> (f64, f64) {
    // tanh(±inf) = ±1, tanh(NaN) = NaN.
    (log_cosh_f64(r), libm::tanh(r))
}

// ---------------------------------------------------------------------------------------------
// The typed API.

fn check_lengths<T: Element>(args: &ElementwiseArgs<'_, T>) -> Result<(), LossError> {
    if args.target.len() != args.pred.len() {
        return Err(LossError::invalid(format!(
            "input target: {} elements but pred has {}",
            args.target.len(),
            args.pred.len()
        )));
    }
    Ok(())
}

fn run_into<T: Element, O: Element, F>(
    args: &ElementwiseArgs<'_, T>,
    point: F,
    fast: Option<Fast>,
    out: &mut Output<T, O>,
) -> Result<(), LossError>
where
    F: Fn(f64) -> (f64, f64),
{
    check_lengths(args)?;
    let plan = Plan::new(
        args.pred.len(),
        args.weight,
        args.mask,
        args.cotangent,
        args.reduction,
    )?;
    let (pred, target) = (args.pred, &args.target[..args.pred.len()]);
    if let (Some(kind), Some(scale)) = (fast, plan.fast_scale()) {
        let mut gp = out.grad_pred.take().unwrap_or_default();
        let mut gt = out.grad_target.take().unwrap_or_default();
        let mean_den = (args.reduction == Reduction::Mean).then(|| plan.denom());
        let job = FastJob {
            pred,
            target,
            kind,
            scale,
            none: args.reduction == Reduction::None,
            mean_den,
            want: [args.grad_pred, args.grad_target],
        };
        job.run(&mut out.value, &mut gp, &mut gt);
        out.grad_pred = args.grad_pred.then_some(gp);
        out.grad_target = args.grad_target.then_some(gt);
        return Ok(());
    }
    let mut grads = [
        out.grad_pred.take().unwrap_or_default(),
        out.grad_target.take().unwrap_or_default(),
    ];
    plan.run_into::<O, 2, _>(
        [args.grad_pred, args.grad_target],
        |j| {
            let r = pred[j].to_f64() - target[j].to_f64();
            let (l, g) = point(r);
            (l, [g, -g])
        },
        &mut out.value,
        &mut grads,
    );
    let [gp, gt] = grads;
    out.grad_pred = args.grad_pred.then_some(gp);
    out.grad_target = args.grad_target.then_some(gt);
    Ok(())
}

/// A regression loss with its params, for callers that choose the loss at run time or want to
/// reuse output buffers ([`Regression::eval_into`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regression {
    Mse,
    Mae,
    /// `delta` finite and > 0.
    Huber {
        delta: f64,
    },
    /// `tau` in (0, 1).
    Quantile {
        tau: f64,
    },
    LogCosh,
}

impl Regression {
    /// The catalogue id.
    pub fn id(&self) -> &'static str {
        match self {
            Regression::Mse => "mse",
            Regression::Mae => "mae",
            Regression::Huber { .. } => "huber",
            Regression::Quantile { .. } => "quantile",
            Regression::LogCosh => "log_cosh",
        }
    }

    fn check_params(&self) -> Result<(), LossError> {
        match *self {
            Regression::Huber { delta } if !(delta.is_finite() && delta > 0.0) => {
                Err(LossError::invalid(format!(
                    "param delta={delta:?} is outside its domain (float > 0)"
                )))
            }
            Regression::Quantile { tau } if !(tau > 0.0 && tau < 1.0) => Err(LossError::invalid(
                format!("param tau={tau:?} is outside its domain (float in (0, 1))"),
            )),
            _ => Ok(()),
        }
    }

    /// Value and gradients, in new buffers.
    pub fn eval<T: Element, O: Element>(
        &self,
        args: &ElementwiseArgs<'_, T>,
    ) -> Result<Output<T, O>, LossError> {
        let mut out = Output {
            value: Vec::new(),
            grad_pred: None,
            grad_target: None,
        };
        self.eval_into(args, &mut out)?;
        Ok(out)
    }

    /// Value and gradients into `out`, reusing its vectors' allocations (on error `out` is
    /// left as it was). The fast path for repeated calls on large batches.
    ///
    /// ```
    /// use losscheck::kernels::regression::{ElementwiseArgs, Output, Regression};
    /// let (p, t) = (vec![1.0f32; 1000], vec![0.0f32; 1000]);
    /// let mut out = Output::<f32, f32>::default();
    /// for _ in 0..3 {
    ///     Regression::Huber { delta: 0.5 }.eval_into(&ElementwiseArgs::new(&p, &t), &mut out).unwrap();
    /// }
    /// // torch.nn.functional.huber_loss(torch.ones(1000), torch.zeros(1000), delta=0.5) -> 0.375
    /// assert_eq!(out.value, vec![0.375]);
    /// ```
    pub fn eval_into<T: Element, O: Element>(
        &self,
        args: &ElementwiseArgs<'_, T>,
        out: &mut Output<T, O>,
    ) -> Result<(), LossError> {
        self.check_params()?;
        match *self {
            Regression::Mse => run_into(args, mse_point, Some(Fast::Mse), out),
            Regression::Mae => run_into(args, mae_point, None, out),
            Regression::Huber { delta } => run_into(
                args,
                move |r| huber_point(r, delta),
                Some(Fast::Huber(delta)),
                out,
            ),
            Regression::Quantile { tau } => {
                let one_minus_tau = 1.0 - tau;
                run_into(args, move |r| quantile_point(r, tau, one_minus_tau), None, out)
            }
            Regression::LogCosh => run_into(args, log_cosh_point, None, out),
        }
    }
}

impl<T, O> Default for Output<T, O> {
    fn default() -> Self {
        Output {
            value: Vec::new(),
            grad_pred: None,
            grad_target: None,
        }
    }
}

/// Mean squared error: l = (pred − target)², ∂l/∂pred = 2(pred − target) = −∂l/∂target.
///
/// `T` is the input dtype, `O` the dtype of the value. Errors (never panics) on mismatched
/// lengths, a weight that is negative, NaN or infinite, a mask value other than 0/1, a
/// cotangent of the wrong length, or `sequence_mean`.
///
/// ```
/// use losscheck::kernels::regression::{mse, ElementwiseArgs};
/// use half::f16;
/// let p = [f16::from_f32(3.0)];
/// let t = [f16::from_f32(1.0)];
/// // f16 inputs, f32 value (autocast): torch.nn.functional.mse_loss(tensor([3.]), tensor([1.])) = 4
/// let out = mse::<f16, f32>(&ElementwiseArgs::new(&p, &t)).unwrap();
/// assert_eq!(out.value, vec![4.0f32]);
/// assert_eq!(out.grad_pred.unwrap(), vec![f16::from_f32(4.0)]);
/// ```
pub fn mse<T: Element, O: Element>(
    args: &ElementwiseArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    Regression::Mse.eval(args)
}

/// Mean absolute error: l = |pred − target|; gradient sign(r) for pred, −sign(r) for target,
/// and 0 for both at r = 0 (the Clarke selection nearest 0). Errors as [`mse`].
pub fn mae<T: Element, O: Element>(
    args: &ElementwiseArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    Regression::Mae.eval(args)
}

/// Huber loss with threshold `delta` > 0 (finite): l = ½r² for |r| ≤ δ, δ(|r| − ½δ) beyond;
/// ∂l/∂pred = r, resp. ±δ (±δ also at r = ±inf). Errors as [`mse`], and on a `delta` that is
/// not finite and > 0.
pub fn huber<T: Element, O: Element>(
    args: &ElementwiseArgs<'_, T>,
    delta: f64,
) -> Result<Output<T, O>, LossError> {
    Regression::Huber { delta }.eval(args)
}

/// Quantile (pinball) loss at level `tau` ∈ (0, 1): l = max(τu, (τ−1)u), u = target − pred;
/// ∂l/∂pred = −τ for u > 0, 1 − τ for u < 0, 0 at u = 0 (the Clarke selection nearest 0).
/// Errors as [`mse`], and on `tau` outside (0, 1).
pub fn quantile<T: Element, O: Element>(
    args: &ElementwiseArgs<'_, T>,
    tau: f64,
) -> Result<Output<T, O>, LossError> {
    Regression::Quantile { tau }.eval(args)
}

/// Log-cosh loss: l = log cosh(pred − target), ∂l/∂pred = tanh(r) = −∂l/∂target; accurate for
/// tiny residuals (≈ r²/2) and huge ones (|r| − ln 2), inf with gradient ±1 at r = ±inf.
/// Errors as [`mse`].
pub fn log_cosh<T: Element, O: Element>(
    args: &ElementwiseArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    Regression::LogCosh.eval(args)
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// The regression losses this module implements.
pub const LOSSES: &[&str] = &["mse", "mae", "huber", "quantile", "log_cosh"];

fn to_typed<T: Element>(t: &Tensor) -> Vec<T> {
    fdata(t).iter().map(|&x| T::from_f64(x)).collect()
}

fn float_input<T: Element>(case: &Case, name: &str) -> Result<Option<Vec<T>>, LossError> {
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

fn param(case: &Case, name: &str) -> Result<f64, LossError> {
    match case.params.get(name) {
        Some(ParamValue::Float(x)) => Ok(*x),
        Some(other) => Err(LossError::invalid(format!(
            "param {name}={other} is not a float"
        ))),
        None => case
            .float_param(name)
            .ok_or_else(|| LossError::invalid(format!("param {name} is missing"))),
    }
}

/// Evaluate a validated regression case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let req = |name: &str| -> Result<Vec<T>, LossError> {
        float_input::<T>(case, name)?
            .ok_or_else(|| LossError::invalid(format!("{}: missing input {name:?}", case.loss)))
    };
    let pred = req("pred")?;
    let target = req("target")?;
    let weight = float_input::<T>(case, "weight")?;
    let cotangent = float_input::<T>(case, "cotangent")?;
    let mask = match case.input("mask") {
        None => None,
        Some(t) => Some(
            t.i()
                .ok_or_else(|| LossError::invalid("input mask: expected an i64 tensor"))?,
        ),
    };
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let reduction = case.reduction();
    let args = ElementwiseArgs {
        pred: &pred,
        target: &target,
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction,
        grad_pred: wants("pred"),
        grad_target: wants("target"),
    };
    let loss = match case.loss.as_str() {
        "mse" => Regression::Mse,
        "mae" => Regression::Mae,
        "huber" => Regression::Huber {
            delta: param(case, "delta")?,
        },
        "quantile" => Regression::Quantile {
            tau: param(case, "tau")?,
        },
        "log_cosh" => Regression::LogCosh,
        other => {
            return Err(LossError::unsupported(format!(
                "no regression kernel for {other}"
            )))
        }
    };
    let out: Output<T, O> = loss.eval(&args)?;
    let value_shape = if reduction == Reduction::None {
        checked.row_shape.clone()
    } else {
        vec![]
    };
    let value = Tensor::float(
        O::DTYPE,
        value_shape,
        out.value.iter().map(|x| x.to_f64()).collect(),
    );
    let in_shape = case
        .input("pred")
        .map(|t| t.shape.clone())
        .unwrap_or_default();
    let mut grad = BTreeMap::new();
    for (name, g) in [("pred", out.grad_pred), ("target", out.grad_target)] {
        if let Some(g) = g {
            let data = g.iter().map(|x| x.to_f64()).collect();
            grad.insert(
                name.to_string(),
                Tensor::float(T::DTYPE, in_shape.clone(), data),
            );
        }
    }
    debug_assert_eq!(O::DTYPE, case.out_dtype);
    debug_assert_eq!(T::DTYPE, case.dtype);
    Ok(Response {
        id: case.id,
        value,
        grad,
    })
}
