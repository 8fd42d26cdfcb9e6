//! Row-wise classification losses: `cross_entropy`, `nll`, `multi_margin`.
//!
//! Inputs are row-major `[N, C]` slices (`[B, T, C]` for sequence cross-entropy: N = B·T rows)
//! with their dims given explicitly, so that every degenerate shape (N = 0, C = 1, B = 0,
//! T = 0, C = 0 with N = 0) is expressible and none panics. The typed API is generic over the
//! input element type `T` (`f32`, [`half::f16`], [`half::bf16`]) and the output type `O` of
//! the value (`T`, or `f32` for 16-bit inputs: the autocast pattern); gradients are in `T`.
//! Arguments are built like [`ClassArgs`](super::ClassArgs) ([`CrossEntropyArgs`],
//! [`NllArgs`], [`MultiMarginArgs`]); `eval` returns a new [`Output`], `eval_into` reuses one
//! (on error it is unchanged).
//!
//! # Semantics (DESIGN.md)
//!
//! - `cross_entropy`: per row a coefficient vector a — class ids:
//!   a_c = (1−ε)·w_y·[c = y] + (ε/C)·w_c; soft targets q: a_c = w_c·((1−ε)·q_c + ε/C) (w the
//!   class weights, 1 when absent; ε = label_smoothing) — and l = Σ_c a_c·(LSE(z) − z_c),
//!   ∂l/∂z_j = A·p_j − a_j with A = Σ_c a_c, p = softmax(z). A coefficient exactly 0 makes its
//!   term absent, so a row whose coefficients are all 0 (w_y = 0 without smoothing) is exactly
//!   0, value and gradient, whatever its logits hold (NaN included), and with ε = 1 a soft
//!   target never enters (not even a NaN one). Rows whose target is
//!   `ignore_index` are skipped entirely. `mean` divides by Σ w_y over the rows not ignored
//!   (their count without class weights; soft targets: by N); `sequence_mean` (`[B, T, C]`
//!   only) averages the per-sequence means plainly over the sequences whose denominator is not
//!   0.
//! - `nll`: l = −w_y·logp_y, ∂l/∂logp_y = −w_y (also the limit at logp_y = ±inf; NaN at a
//!   NaN logp_y), 0 elsewhere; w_y = 0 gives exactly 0. `mean` as cross-entropy's.
//! - `multi_margin`: l = w_y·Σ_{j≠y} max(0, u_j)^p / C with u_j = margin − x_y + x_j;
//!   ∂l/∂x_j = w_y·p·max(0, u_j)^(p−1) / C for j ≠ y, ∂l/∂x_y = −Σ of those; the kink u_j = 0
//!   with p = 1 takes 0 (the Clarke element nearest 0); a NaN score or an undefined u_j
//!   (inf − inf) makes the row NaN, value and gradient. Per-row `weight` and `mask` as for the
//!   elementwise losses: `mean` = Σ m·w·l / Σ m·w ([`reduce::Plan`](crate::kernels::reduce::Plan)).
//! - Empty mean (denominator exactly 0: every row ignored, masked or of zero weight, N = 0):
//!   value 0 and every gradient 0. Gradients are termwise and scaled by the cotangent (one
//!   per row for `none`, a scalar otherwise) with the exact-zero rule of
//!   [`reduce::grad_term`](crate::kernels::reduce::grad_term).
//!
//! Extended reals (cross-entropy, a row with some coefficient present): a −inf logit has
//! p = 0, and its term is +inf when its coefficient is present (so with ε > 0 every −inf
//! logit makes the row +inf); exactly one +inf logit makes p one-hot (its own term 0, any other
//! present term +inf); two +inf logits, a NaN logit or an all −inf row make the row NaN
//! (value and gradient). Gradients A·p_j − a_j with the limiting p stay finite when the value
//! is +inf.
//!
//! # Numerics
//!
//! Everything in f64, each output rounded once; `libm`, never the platform libm.
//!
//! - Cross-entropy is fused: per row one pass for the max m (and its first index k) and one
//!   for e_j = e^{z_j − m} (z_j − m is exact in f64, so huge common offsets cost nothing),
//!   then the gradient is written straight into the output. The only scratch is one `[C]` f64
//!   row of e_j (none without the gradient); no `[N, C]` buffer, no allocation ∝ N·C.
//! - Confident rows keep full relative accuracy: s′ = Σ_{j≠k} e_j (the argmax's 1 is *not*
//!   added) and LSE − z_c = (m − z_c) + log1p(s′), so l = Σ_c a_c·(m − z_c) + A·log1p(s′) is a
//!   sum of non-negative terms (no cancellation at all). The gradient at the argmax is
//!   A·p_k − a_k = A′ − A·s′/(1 + s′) with A′ = Σ_{c≠k} a_c summed directly — for a one-hot
//!   target at the argmax that is −A·s′/(1 + s′), accurate however small s′ is. The row
//!   [12, 0, …, 0] (C = 10) with target 0 gives log1p(9·e^−12) and −9e^−12/(1 + 9e^−12) to the
//!   last bit, where PyTorch loses 15 bits in f32 and returns 0 in 16-bit (FAILURES.md).
//! - Sums over classes (s′, Σ a_c·(m − z_c), A′) and over rows are compensated
//!   ([`CompensatedSum`]) — except on the fast path below, where s′ is a plain 8-lane sum.
//! - **Fast path** (class-id targets without label smoothing, class weights allowed, a row
//!   whose logits are all finite and whose w_y > 0 — the cheap test is part of the first
//!   pass): the same confident-row formulas, with the three passes over the row in
//!   [`vmath`](crate::kernels::vmath) (AVX2 + FMA chosen at run time, the same bits as the
//!   plain build): widen (16-bit in bulk) + max, e_j = e^{z_j − m} by vmath's exp (< 2⁻⁵¹
//!   relatively, certified against MPFR) fused with the 8-lane sum of s′, then the gradient
//!   stored straight into the output. l stays a sum of non-negative terms, so its relative
//!   error is about (C/8 + 10)·2⁻⁵³ (≤ 2⁻³⁸ for C ≤ 2²⁰; the f32 bar needs 2⁻²⁵); see
//!   `ce_row_hard`. Every other row (NaN, ±inf, smoothing, soft targets, w_y = 0) takes the
//!   exact path above, unchanged.
//! - **f32 tier** (f32 and bf16 logits — bf16 widened to f32 in bulk, exactly; f16 rows keep
//!   the f64 tier, whose correctly rounded gradients loss scaling relies on —
//!   in front of the fast path): the exponentials in f32 arithmetic,
//!   8 lanes ([`vmath::exp32`](crate::kernels::vmath::exp32), within 2.5·2⁻²⁴, certified on
//!   every f32 input), kept only when an a-posteriori test on the row's own ℓ, S, p_y and
//!   largest non-argmax term proves the bar (`ce_row_f32` derives it); otherwise the row is
//!   recomputed by the fast path above. Typical rows (N(0, 3²), C = 32000: ~97%) stand;
//!   confident ones never do. For bf16 logits the gradient's test is against bf16's ulps
//!   (`ce_row_16`), and each g_j is RN₁₆(RN₃₂(e_j·ρ)). An f32 row's gradient
//!   stores wait for the next row's pass
//!   ([`exp32_row`](crate::kernels::vmath::exp32::exp32_row) does them between its
//!   exponentials, so the memory traffic overlaps the arithmetic) or for the end of the task;
//!   each row's bits are the same either way.
//! - **Threads** (feature `parallel`, on by default): with class-id targets, batches of at
//!   least 2¹⁸ logits are spread over rayon's current pool, in tasks of about 2²⁰ logits. Each
//!   row is computed on its own (its scratch is its thread's) and the row terms are summed
//!   afterwards in row order, so the result is the same bits for any number of threads
//!   (`tests/kernels_simd.rs` runs pools of 1, 2 and 3). Without the feature, or in a pool
//!   of one thread, the rows run on the calling thread. Besides the gradient, the only
//!   allocations are one f64 pair per row (∝ N) and one scratch per task (`[C]` f64 and
//!   `[2C]` f32).
//! - multi_margin's u = margin − x_y + x_j is formed as margin + (x_j − x_y) with both
//!   additions error-free (TwoSum) and the parts added last, so the sign of max(0, u) is
//!   always right and its value within about one f64 ulp, however much u cancels.
//!
//! Invalid input (an `Err` naming the input, the index and the value; never a panic): slice
//! lengths that do not match the dims, C = 0 with N > 0, a class id outside [0, C) other than
//! `ignore_index`, a soft target outside [0, 1], a negative or non-finite class weight or row
//! weight, a mask outside {0, 1}, label_smoothing outside [0, 1], p ∉ {1, 2}, a non-finite
//! margin, `sequence_mean` without `[B, T, C]` logits or for another loss, a cotangent of the
//! wrong length. Per-row checks skip ignored, masked and zero-weight rows. NaN data
//! propagates.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
//!
//! // A confident row: [12, 0, 0, 0, 0, 0, 0, 0, 0, 0], target 0.
//! let mut z = [0.0f32; 10];
//! z[0] = 12.0;
//! let t = [0i64];
//! let out: Output<f32, f32> = CrossEntropyArgs::new(&z, 1, 10).class_ids(&t).eval().unwrap();
//! // exact (python: from decimal import *; getcontext().prec = 50; s = 9*Decimal(-12).exp();
//! //   (1 + s).ln(), -s/(1 + s), Decimal(-12).exp()/(1 + s)):
//! //   log1p(9e^−12) = 5.52963823068255220464912533e-5 (PyTorch: 15 bits lost in f32, 0 in
//! //   16-bit; FAILURES.md)
//! assert_eq!(out.value, vec![5.5296383e-5f32]);
//! let g = out.grad.unwrap();
//! // ∂/∂z_0 = −9e^−12/(1 + 9e^−12) = −5.52948534900568860992e-5
//! assert_eq!(g[0], -5.5294855e-5f32);
//! // ∂/∂z_j = e^−12/(1 + 9e^−12) = 6.14387261000632067768954e-6 (j ≥ 1)
//! assert_eq!(g[1], 6.1438727e-6f32);
//! ```

pub use super::Output;
use super::{float_input, int_input, response, to_typed};
use crate::kernels::math::{
    dd_add, dd_mul, exp_dd, exp_nonpos, pair_add, pair_div, pair_scale, round_odd, two_prod,
    two_sum,
};
use crate::kernels::reduce::{grad_term, sum_f64, CompensatedSum, Plan};
use crate::kernels::vmath::exp32;
use losscheck_core::{
    catalogue, Case, Checked, Element, LossError, ParamValue, Reduction, Response,
};

/// The row-wise classification losses this module implements.
pub const LOSSES: &[&str] = &["cross_entropy", "nll", "multi_margin"];

/// `cross_entropy`'s target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CeTarget<'a, T> {
    /// One class id per row (`[N]`, or `[B, T]` row-major): in [0, C), or `ignore_index`.
    ClassIds(&'a [i64]),
    /// Soft targets `[N, C]` in [0, 1], taken as given (row sums not checked).
    Soft(&'a [T]),
}

/// Builder methods: `name: Type => field` sets the field to the value, `=> field = Some` to
/// `Some(value)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident $(= $wrap:ident)?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field = $($wrap)?(value);
                self
            }
        )*
    };
}

/// What every row-wise loss's args share: the common setters and `eval` (a new [`Output`]
/// through the type's `eval_into`).
macro_rules! shared_builders {
    () => {
        setters! {
            /// Per-class weights `[C]`, finite and ≥ 0.
            class_weight: &'a [T] => class_weight = Some;
            /// Scales the gradient: one value per row for `none`, exactly one otherwise.
            cotangent: &'a [T] => cotangent = Some;
            reduction: Reduction => reduction;
            /// Whether to compute the gradient (default: yes).
            grad: bool => grad;
        }

        /// Value and gradient, in new buffers.
        pub fn eval<O: Element>(&self) -> Result<Output<T, O>, LossError> {
            let mut out = Output::default();
            self.eval_into(&mut out)?;
            Ok(out)
        }
    };
}

/// Inputs and params of `cross_entropy`.
///
/// [`CrossEntropyArgs::new`] takes the logits with their dims (N rows of C classes: reduction
/// `mean`, `ignore_index` −100, no smoothing, no class weights, the gradient wanted); a
/// target must be set with [`class_ids`](Self::class_ids) or [`soft`](Self::soft).
/// [`seq`](Self::seq) declares the rows to be B sequences of T tokens (the `[B, T, C]` layout,
/// class ids only), which `sequence_mean` needs.
///
/// ```
/// use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
/// use losscheck::Reduction;
///
/// // Two sequences of two tokens, C = 2; the second sequence's last token is padding.
/// let z = [0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, f32::NAN, f32::NAN];
/// let t = [0i64, 1, 1, -100];
/// let args = CrossEntropyArgs::new(&z, 4, 2).class_ids(&t).seq(2, 2);
/// // every token costs ln 2; the padded NaN row contributes nothing
/// let out: Output<f32, f32> = args.reduction(Reduction::SequenceMean).eval().unwrap();
/// assert_eq!(out.value, vec![std::f32::consts::LN_2]);
/// let g = out.grad.unwrap();
/// // sequence 0: ½·(p − onehot)/2 per token; sequence 1: (p − onehot)/2 for its one token
/// assert_eq!(&g[..2], &[-0.125f32, 0.125]);
/// assert_eq!(&g[4..], &[0.25f32, -0.25, 0.0, 0.0]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropyArgs<'a, T: Element> {
    /// Logits, row-major `[N, C]`.
    pub logits: &'a [T],
    /// N (= B·T for sequences).
    pub rows: usize,
    /// C.
    pub classes: usize,
    pub target: Option<CeTarget<'a, T>>,
    /// (B, T) for the `[B, T, C]` layout.
    pub seq: Option<(usize, usize)>,
    pub class_weight: Option<&'a [T]>,
    /// Rows whose class id equals it are ignored (class-id targets only).
    pub ignore_index: i64,
    /// ε in [0, 1].
    pub label_smoothing: f64,
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum`, `mean`, or `sequence_mean` (with [`seq`](Self::seq)).
    pub reduction: Reduction,
    /// Compute ∂/∂logits.
    pub grad: bool,
}

impl<'a, T: Element> CrossEntropyArgs<'a, T> {
    /// Logits `[rows, classes]`; reduction `mean`; `ignore_index` −100; ε = 0; the gradient.
    pub fn new(logits: &'a [T], rows: usize, classes: usize) -> Self {
        CrossEntropyArgs {
            logits,
            rows,
            classes,
            target: None,
            seq: None,
            class_weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            cotangent: None,
            reduction: Reduction::Mean,
            grad: true,
        }
    }
    /// Class-id targets, one per row.
    pub fn class_ids(mut self, target: &'a [i64]) -> Self {
        self.target = Some(CeTarget::ClassIds(target));
        self
    }
    /// Soft targets `[rows, classes]` in [0, 1].
    pub fn soft(mut self, target: &'a [T]) -> Self {
        self.target = Some(CeTarget::Soft(target));
        self
    }
    /// The rows are `b` sequences of `t` tokens (b·t must equal `rows`).
    pub fn seq(mut self, b: usize, t: usize) -> Self {
        self.seq = Some((b, t));
        self
    }
    setters! {
        ignore_index: i64 => ignore_index;
        /// ε in [0, 1].
        label_smoothing: f64 => label_smoothing;
    }
    shared_builders!();

    /// Value and gradient into `out`, reusing its allocations (on error `out` is unchanged).
    pub fn eval_into<O: Element>(&self, out: &mut Output<T, O>) -> Result<(), LossError> {
        let (n, c) = (self.rows, self.classes);
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(LossError::invalid(format!(
                "param label_smoothing={eps:?} is outside its domain (float in [0, 1])"
            )));
        }
        check_matrix("logits", self.logits.len(), n, c)?;
        let cw = check_class_weight(self.class_weight, c)?;
        let target = self.target.ok_or_else(|| {
            LossError::invalid("input target: missing (set .class_ids(..) or .soft(..))")
        })?;
        let seq_t = match self.seq {
            None => None,
            Some((b, t)) => {
                if b.checked_mul(t) != Some(n) {
                    return Err(LossError::invalid(format!(
                        "input logits: [B, T, C] = [{b}, {t}, {c}] but {n} rows were given"
                    )));
                }
                Some(t)
            }
        };
        if self.reduction == Reduction::SequenceMean && seq_t.is_none() {
            return Err(LossError::invalid(
                "reduction sequence_mean needs [B, T, C] logits (.seq(b, t))",
            ));
        }
        let cot = Cot::new(self.cotangent, n, self.reduction)?;
        let z = self.logits;
        let w = |k: usize| cw.map_or(1.0, |w| w[k].to_f64());
        let e = eps / c.max(1) as f64;
        let w_any = cw.map_or(true, |w| w.iter().any(|v| v.to_f64() > 0.0));
        match target {
            CeTarget::ClassIds(y) => {
                let ii = self.ignore_index;
                check_class_ids(y, n, c, |i| y[i] == ii)?;
                let rows = Rows::new(n, c, self.reduction, cot, seq_t, |i| {
                    if y[i] == ii {
                        (0.0, 0.0)
                    } else {
                        (1.0, w(y[i] as usize))
                    }
                });
                rows.run_par(self.grad, out, |i, g, scratch| {
                    if scratch.buf.len() < c {
                        scratch.buf.resize(c, 0.0);
                    }
                    let yi = y[i] as usize;
                    let zi = &z[i * c..(i + 1) * c];
                    if eps == 0.0 {
                        return ce_row_hard(zi, yi, w(yi), g, scratch);
                    }
                    let coef = Coef::Smooth {
                        y: yi,
                        h: (1.0 - eps) * w(yi),
                        e,
                        eps,
                        w: cw,
                        any: w_any,
                    };
                    ce_row(zi, &coef, g, &mut scratch.buf)
                });
            }
            CeTarget::Soft(q) => {
                if seq_t.is_some() {
                    return Err(LossError::invalid(
                        "input target: soft targets take [N, C] logits, not [B, T, C]",
                    ));
                }
                check_matrix("target", q.len(), n, c)?;
                if let Some((k, x)) = q
                    .iter()
                    .map(|v| v.to_f64())
                    .enumerate()
                    .find(|(_, x)| !x.is_nan() && !(0.0..=1.0).contains(x))
                {
                    return Err(LossError::invalid(format!(
                        "input target[{k}]={x:?} is outside [0, 1] (soft targets)"
                    )));
                }
                let rows = Rows::new(n, c, self.reduction, cot, None, |_| (1.0, 1.0));
                let mut scratch = vec![0.0f64; c];
                rows.run(self.grad, out, |i, g| {
                    let coef = Coef::Soft {
                        q: &q[i * c..(i + 1) * c],
                        one_m: 1.0 - eps,
                        e,
                        eps,
                        w: cw,
                        eps_pos: eps > 0.0,
                    };
                    ce_row(&z[i * c..(i + 1) * c], &coef, g, &mut scratch)
                });
            }
        }
        Ok(())
    }
}

/// Inputs and params of `nll`: log-probabilities `[N, C]` (any reals) and class ids `[N]`.
///
/// ```
/// use losscheck::kernels::classification::multiclass::{NllArgs, Output};
/// use losscheck::Reduction;
///
/// let logp = [-0.5f32, -2.0, f32::NEG_INFINITY, -1.0];
/// let t = [1i64, 0];
/// let w = [0.0f32, 3.0];
/// // torch.nn.functional.nll_loss(logp.view(2, 2), t, weight=w, reduction='none') -> [6., nan]
/// // (−0·(−inf) in row 1); a zero class weight removes the term (DESIGN.md): exactly 0
/// let args = NllArgs::new(&logp, 2, 2).class_ids(&t).class_weight(&w);
/// let out: Output<f32, f32> = args.reduction(Reduction::None).eval().unwrap();
/// assert_eq!(out.value, vec![6.0, 0.0]);
/// assert_eq!(out.grad, Some(vec![0.0, -3.0, 0.0, 0.0]));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct NllArgs<'a, T: Element> {
    /// Log-probabilities, row-major `[N, C]`.
    pub logp: &'a [T],
    pub rows: usize,
    pub classes: usize,
    pub target: Option<&'a [i64]>,
    pub class_weight: Option<&'a [T]>,
    pub ignore_index: i64,
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂logp.
    pub grad: bool,
}

impl<'a, T: Element> NllArgs<'a, T> {
    /// logp `[rows, classes]`; reduction `mean`; `ignore_index` −100; the gradient. Set the
    /// target with [`class_ids`](Self::class_ids).
    pub fn new(logp: &'a [T], rows: usize, classes: usize) -> Self {
        NllArgs {
            logp,
            rows,
            classes,
            target: None,
            class_weight: None,
            ignore_index: -100,
            cotangent: None,
            reduction: Reduction::Mean,
            grad: true,
        }
    }
    setters! {
        /// Class ids, one per row.
        class_ids: &'a [i64] => target = Some;
        ignore_index: i64 => ignore_index;
    }
    shared_builders!();

    /// Value and gradient into `out`, reusing its allocations (on error `out` is unchanged).
    pub fn eval_into<O: Element>(&self, out: &mut Output<T, O>) -> Result<(), LossError> {
        let (n, c) = (self.rows, self.classes);
        check_matrix("logp", self.logp.len(), n, c)?;
        let cw = check_class_weight(self.class_weight, c)?;
        let y = required_ids(self.target)?;
        let ii = self.ignore_index;
        check_class_ids(y, n, c, |i| y[i] == ii)?;
        not_sequence_mean(self.reduction)?;
        let cot = Cot::new(self.cotangent, n, self.reduction)?;
        let w = |k: usize| cw.map_or(1.0, |w| w[k].to_f64());
        let rows = Rows::new(n, c, self.reduction, cot, None, |i| {
            if y[i] == ii {
                (0.0, 0.0)
            } else {
                (1.0, w(y[i] as usize))
            }
        });
        let x = self.logp;
        rows.run(self.grad, out, |i, g| {
            let yi = y[i] as usize;
            let wy = w(yi);
            let xy = x[i * c + yi].to_f64();
            if let Some((g, sc)) = g {
                g.fill(T::from_f64(0.0));
                // −w_y, also the limit at logp_y = ±inf; NaN at a NaN logp_y
                let d = if wy != 0.0 && xy.is_nan() { xy } else { -wy };
                g[yi] = T::from_f64(sc.apply(d));
            }
            if wy == 0.0 {
                (0.0, 0.0)
            } else {
                // exact: a product of two values of at most 24 bits
                (-wy * xy, 0.0)
            }
        });
        Ok(())
    }
}

/// Inputs and params of `multi_margin`: scores `[N, C]`, class ids `[N]`, class weights, per-row
/// weight and mask, margin (finite) and p ∈ {1, 2}.
///
/// ```
/// use losscheck::kernels::classification::multiclass::{MultiMarginArgs, Output};
///
/// let x = [0.1f32, 0.2, 0.4, 0.8];
/// let t = [3i64];
/// // torch.nn.functional.multi_margin_loss(torch.tensor([[.1, .2, .4, .8]]), torch.tensor([3]))
/// //   -> (0.3 + 0.4 + 0.6)/4 = 0.325; grad [.25, .25, .25, -.75]
/// let out: Output<f32, f32> = MultiMarginArgs::new(&x, 1, 4).class_ids(&t).eval().unwrap();
/// assert_eq!(out.value, vec![0.325f32]);
/// assert_eq!(out.grad, Some(vec![0.25f32, 0.25, 0.25, -0.75]));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MultiMarginArgs<'a, T: Element> {
    /// Scores, row-major `[N, C]`.
    pub scores: &'a [T],
    pub rows: usize,
    pub classes: usize,
    pub target: Option<&'a [i64]>,
    pub class_weight: Option<&'a [T]>,
    /// Per-row weights `[N]`, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-row mask `[N]`, 0 or 1.
    pub mask: Option<&'a [i64]>,
    /// Finite.
    pub margin: f64,
    /// 1 or 2.
    pub p: i64,
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂scores.
    pub grad: bool,
}

impl<'a, T: Element> MultiMarginArgs<'a, T> {
    /// scores `[rows, classes]`; margin 1, p = 1; reduction `mean`; the gradient. Set the target
    /// with [`class_ids`](Self::class_ids).
    pub fn new(scores: &'a [T], rows: usize, classes: usize) -> Self {
        MultiMarginArgs {
            scores,
            rows,
            classes,
            target: None,
            class_weight: None,
            weight: None,
            mask: None,
            margin: 1.0,
            p: 1,
            cotangent: None,
            reduction: Reduction::Mean,
            grad: true,
        }
    }
    setters! {
        /// Class ids, one per row.
        class_ids: &'a [i64] => target = Some;
        /// Per-row weights.
        weight: &'a [T] => weight = Some;
        /// Per-row 0/1 mask.
        mask: &'a [i64] => mask = Some;
        /// Finite.
        margin: f64 => margin;
        /// 1 or 2.
        p: i64 => p;
    }
    shared_builders!();

    /// Value and gradient into `out`, reusing its allocations (on error `out` is unchanged).
    pub fn eval_into<O: Element>(&self, out: &mut Output<T, O>) -> Result<(), LossError> {
        let (n, c) = (self.rows, self.classes);
        if !self.margin.is_finite() {
            return Err(LossError::invalid(format!(
                "param margin={:?} is outside its domain (finite float)",
                self.margin
            )));
        }
        if self.p != 1 && self.p != 2 {
            return Err(LossError::invalid(format!(
                "param p={} is outside its domain (1 or 2)",
                self.p
            )));
        }
        check_matrix("scores", self.scores.len(), n, c)?;
        let cw = check_class_weight(self.class_weight, c)?;
        let y = required_ids(self.target)?;
        // weight and mask checks, the row coefficients m·w and Σ m·w
        let plan = Plan::new(n, self.weight, self.mask, None, self.reduction)?;
        check_class_ids(y, n, c, |i| plan.coef(i) == 0.0)?;
        let cot = Cot::new(self.cotangent, n, self.reduction)?;
        let w = |k: usize| cw.map_or(1.0, |w| w[k].to_f64());
        let rows = Rows::new(n, c, self.reduction, cot, None, |i| {
            let m = plan.coef(i);
            (m, m)
        });
        let (x, margin, p2) = (self.scores, self.margin, self.p == 2);
        rows.run(self.grad, out, |i, g| {
            let yi = y[i] as usize;
            multi_margin_row(&x[i * c..(i + 1) * c], yi, w(yi), margin, p2, g)
        });
        Ok(())
    }
}

/// `cross_entropy` (see [`CrossEntropyArgs`]).
pub fn cross_entropy<T: Element, O: Element>(
    args: &CrossEntropyArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    args.eval()
}

/// `nll` (see [`NllArgs`]).
pub fn nll<T: Element, O: Element>(args: &NllArgs<'_, T>) -> Result<Output<T, O>, LossError> {
    args.eval()
}

/// `multi_margin` (see [`MultiMarginArgs`]).
pub fn multi_margin<T: Element, O: Element>(
    args: &MultiMarginArgs<'_, T>,
) -> Result<Output<T, O>, LossError> {
    args.eval()
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// `len` must be rows·classes; C = 0 only with N = 0.
fn check_matrix(name: &str, len: usize, n: usize, c: usize) -> Result<(), LossError> {
    if c == 0 && n != 0 {
        return Err(LossError::invalid(format!(
            "input {name}: C = 0 classes with {n} rows (C = 0 only with N = 0)"
        )));
    }
    if n.checked_mul(c) != Some(len) {
        return Err(LossError::invalid(format!(
            "input {name}: {len} elements, expected N·C = {n}·{c}"
        )));
    }
    Ok(())
}

fn check_class_weight<T: Element>(cw: Option<&[T]>, c: usize) -> Result<Option<&[T]>, LossError> {
    let Some(w) = cw else { return Ok(None) };
    if w.len() != c {
        return Err(LossError::invalid(format!(
            "input class_weight: {} elements, expected C = {c}",
            w.len()
        )));
    }
    if let Some((k, x)) = w
        .iter()
        .map(|v| v.to_f64())
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && *x >= 0.0))
    {
        return Err(LossError::invalid(format!(
            "input class_weight[{k}]={x:?} is not a finite value >= 0"
        )));
    }
    Ok(Some(w))
}

fn required_ids(target: Option<&[i64]>) -> Result<&[i64], LossError> {
    target.ok_or_else(|| LossError::invalid("input target: missing (set .class_ids(..))"))
}

/// One class id per row, each in [0, C) unless the row is skipped (ignored, masked, zero
/// weight).
fn check_class_ids(
    y: &[i64],
    n: usize,
    c: usize,
    skipped: impl Fn(usize) -> bool,
) -> Result<(), LossError> {
    if y.len() != n {
        return Err(LossError::invalid(format!(
            "input target: {} elements, expected N = {n}",
            y.len()
        )));
    }
    for (k, &v) in y.iter().enumerate() {
        let in_range = usize::try_from(v).is_ok_and(|v| v < c);
        if !in_range && !skipped(k) {
            return Err(LossError::invalid(format!(
                "input target[{k}]={v} is out of range for {c} classes"
            )));
        }
    }
    Ok(())
}

fn not_sequence_mean(r: Reduction) -> Result<(), LossError> {
    if r == Reduction::SequenceMean {
        return Err(LossError::invalid(
            "reduction sequence_mean is only for cross_entropy on [B,T,C]",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The row driver: skipping, reductions, denominators, cotangents.

/// The cotangent as the rows see it.
#[derive(Clone, Copy, Debug)]
enum Cot<'a, T> {
    One,
    Scalar(f64),
    PerRow(&'a [T]),
}

impl<'a, T: Element> Cot<'a, T> {
    fn new(cot: Option<&'a [T]>, n: usize, r: Reduction) -> Result<Self, LossError> {
        Ok(match cot {
            None => Cot::One,
            Some(c) if r == Reduction::None => {
                if c.len() != n {
                    return Err(LossError::invalid(format!(
                        "input cotangent: {} elements, expected {n} (the output's) for reduction none",
                        c.len()
                    )));
                }
                Cot::PerRow(c)
            }
            Some(c) => {
                if c.len() != 1 {
                    return Err(LossError::invalid(format!(
                        "input cotangent: {} elements, expected one (shape []) for reduction {r}",
                        c.len()
                    )));
                }
                Cot::Scalar(c[0].to_f64())
            }
        })
    }

    #[inline(always)]
    fn at(&self, i: usize) -> f64 {
        match *self {
            Cot::One => 1.0,
            Cot::Scalar(c) => c,
            Cot::PerRow(c) => c[i].to_f64(),
        }
    }
}

/// How a row's gradient components g are scaled: g·k/den (k = row coefficient · cotangent,
/// den = the mean's denominator), with the exact-zero rule of [`grad_term`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    k: f64,
    den: f64,
    /// k/den, used when finite and non-zero.
    mul: f64,
    fast: bool,
    /// The gradient is far larger than the caches: bulk stores may bypass them.
    stream: bool,
}

impl Scale {
    fn new(k: f64, den: f64) -> Self {
        let mul = k / den;
        Scale {
            k,
            den,
            mul,
            fast: mul.is_finite() && mul != 0.0,
            stream: false,
        }
    }

    fn streaming(mut self, yes: bool) -> Self {
        self.stream = yes;
        self
    }

    #[inline(always)]
    fn apply(&self, g: f64) -> f64 {
        if self.fast {
            g * self.mul
        } else {
            grad_term(1.0, g, self.k, self.den)
        }
    }

    /// Write `f(j)` scaled into `out[j]` for every j.
    #[inline(always)]
    fn write<T: Element>(&self, out: &mut [T], f: impl Fn(usize) -> f64) {
        if self.fast {
            let s = self.mul;
            for (j, o) in out.iter_mut().enumerate() {
                *o = T::from_f64(f(j) * s);
            }
        } else {
            for (j, o) in out.iter_mut().enumerate() {
                *o = T::from_f64(self.apply(f(j)));
            }
        }
    }
}

/// `sequence_mean`'s denominators.
#[derive(Clone, Debug)]
struct SeqDen {
    /// Tokens per sequence (> 0 whenever there are rows).
    t: usize,
    /// Per sequence.
    den: Vec<f64>,
    /// Sequences with a non-zero denominator.
    count: f64,
}

/// The rows of a row-wise loss, with their reduction.
#[derive(Clone, Debug)]
struct Rows<'a, T: Element> {
    n: usize,
    c: usize,
    reduction: Reduction,
    cot: Cot<'a, T>,
    /// Per-row coefficient (1, m·w); 0 skips the row.
    coef: Vec<f64>,
    /// `mean`'s denominator (1 otherwise).
    den: f64,
    seq: Option<SeqDen>,
}

impl<'a, T: Element> Rows<'a, T> {
    /// `row(i)` = (coefficient of row i, its contribution to the mean's denominator).
    fn new(
        n: usize,
        c: usize,
        reduction: Reduction,
        cot: Cot<'a, T>,
        seq_t: Option<usize>,
        row: impl Fn(usize) -> (f64, f64),
    ) -> Self {
        let mut coef = Vec::with_capacity(n);
        let mut dens = Vec::new();
        let mut total = CompensatedSum::new();
        for i in 0..n {
            let (ci, di) = row(i);
            coef.push(ci);
            total.add_lane(i, di);
            if reduction == Reduction::SequenceMean {
                dens.push(di);
            }
        }
        let mut seq = None;
        if reduction == Reduction::SequenceMean {
            let t = seq_t.unwrap_or(0);
            let den: Vec<f64> = if t == 0 {
                Vec::new()
            } else {
                dens.chunks(t)
                    .map(|d| {
                        let mut s = CompensatedSum::new();
                        for (k, &x) in d.iter().enumerate() {
                            s.add_lane(k, x);
                        }
                        s.total()
                    })
                    .collect()
            };
            // a sequence with denominator 0 contributes nothing: skip its rows
            for (i, ci) in coef.iter_mut().enumerate() {
                if den[i / t] == 0.0 {
                    *ci = 0.0;
                }
            }
            let count = den.iter().filter(|&&d| d != 0.0).count() as f64;
            seq = Some(SeqDen { t, den, count });
        }
        let den = if reduction == Reduction::Mean {
            total.total()
        } else {
            1.0
        };
        Rows {
            n,
            c,
            reduction,
            cot,
            coef,
            den,
            seq,
        }
    }

    fn is_empty_mean(&self) -> bool {
        match &self.seq {
            Some(s) => s.count == 0.0,
            None => self.reduction == Reduction::Mean && self.den == 0.0,
        }
    }

    /// The gradient denominator of row i.
    #[inline(always)]
    fn den_at(&self, i: usize) -> f64 {
        match &self.seq {
            Some(s) => s.den[i / s.t] * s.count,
            None => self.den,
        }
    }

    /// Drive a row kernel through the reduction. `row(i, grad)` returns l_i as a pair
    /// hi + lo and, when `grad` is given, writes all C components of the row's scaled
    /// gradient into it. It is never called for a skipped row (coefficient 0); it gets no
    /// gradient buffer when the row's gradient scale is exactly 0 (the driver writes the zeros
    /// then). Every sum and quotient keeps its error term, and each value is rounded once,
    /// through [`round_odd`], so a tiny lo still decides a near-tie in the output dtype.
    fn run<O: Element, F>(&self, want: bool, out: &mut Output<T, O>, mut row: F)
    where
        F: FnMut(usize, Option<(&mut [T], Scale)>) -> (f64, f64),
    {
        let Some(mut grad) = self.prologue(want, out) else {
            return;
        };
        let c = self.c;
        let mut acc = Acc::new(self, out);
        for i in 0..self.n {
            let g = if want {
                Some(&mut grad[i * c..(i + 1) * c])
            } else {
                None
            };
            let term = self.term(i, g, &mut row);
            acc.push(self, i, term, out);
        }
        crate::kernels::vmath::exp32::store_fence(); // the rows' streaming stores
        acc.finish(self, out);
        out.grad = want.then_some(grad);
    }

    /// [`run`](Self::run) with the rows spread over rayon's threads when the batch is large
    /// (the `parallel` feature; one task on the calling thread otherwise). A task runs its
    /// rows in order with one [`RowScratch`] of its own (`row(i, grad, scratch)`); a row may
    /// leave its gradient stores pending in the scratch (the f32 tier does them during the
    /// next row's pass), and the task ends with [`RowScratch::flush`] and a store fence, while
    /// its part of the gradient is still borrowed. Each row's term is computed on its own and
    /// the terms are summed afterwards in row order, exactly as [`run`](Self::run) does: the
    /// result does not depend on the number of threads, nor on how rayon splits the rows. The
    /// only allocation besides the gradient is one term per row (∝ N) and one scratch per
    /// rayon task.
    fn run_par<O: Element, F>(&self, want: bool, out: &mut Output<T, O>, row: F)
    where
        F: Fn(usize, Option<(&mut [T], Scale)>, &mut RowScratch) -> (f64, f64) + Sync,
    {
        let (n, c) = (self.n, self.c);
        let Some(mut grad) = self.prologue(want, out) else {
            return;
        };
        let mut terms = vec![(0.0f64, 0.0f64); n];
        // rows first.. of one task: their gradient (when wanted) and their terms
        let task = |scratch: &mut RowScratch, first: usize, gs: Option<&mut [T]>, ts: &mut [(f64, f64)]| {
            match gs {
                Some(gs) => {
                    // chunks_mut: every row's slice is derived from the task's, so a pending
                    // store into an earlier row stays valid while later rows are computed
                    for (r, (g, o)) in gs.chunks_mut(c.max(1)).zip(ts.iter_mut()).enumerate() {
                        *o = self.term(first + r, Some(g), &mut |i, g| row(i, g, scratch));
                    }
                }
                None => {
                    for (r, o) in ts.iter_mut().enumerate() {
                        *o = self.term(first + r, None, &mut |i, g| row(i, g, scratch));
                    }
                }
            }
            scratch.flush();
            // this task's streaming stores, before rayon's join (or the return) hands them on
            exp32::store_fence();
        };
        #[cfg(feature = "parallel")]
        let parallel = n >= 2 && n.saturating_mul(c) >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1;
        #[cfg(not(feature = "parallel"))]
        let parallel = false;
        if parallel {
            #[cfg(feature = "parallel")]
            {
                use rayon::prelude::*;
                let per = (PAR_TASK_ELEMS / c.max(1)).max(1); // rows per task
                if want {
                    grad.par_chunks_mut(per * c)
                        .zip(terms.par_chunks_mut(per))
                        .enumerate()
                        .for_each_init(RowScratch::default, |scratch, (t, (gs, ts))| {
                            task(scratch, t * per, Some(gs), ts)
                        });
                } else {
                    terms
                        .par_chunks_mut(per)
                        .enumerate()
                        .for_each_init(RowScratch::default, |scratch, (t, ts)| task(scratch, t * per, None, ts));
                }
            }
        } else {
            task(&mut RowScratch::default(), 0, want.then_some(&mut grad[..]), &mut terms);
        }
        let mut acc = Acc::new(self, out);
        for (i, &term) in terms.iter().enumerate() {
            acc.push(self, i, term, out);
        }
        acc.finish(self, out);
        out.grad = want.then_some(grad);
    }

    /// The common start of a run: the gradient buffer (every component is written later,
    /// rows or zeros, so one of the right length is reused as it is), the value cleared; or
    /// None when the mean is empty (then `out` is complete: value 0, gradient 0).
    fn prologue<O: Element>(&self, want: bool, out: &mut Output<T, O>) -> Option<Vec<T>> {
        let (n, c) = (self.n, self.c);
        let zero = T::from_f64(0.0);
        let mut grad = out.grad.take().unwrap_or_default();
        if !want {
            grad = Vec::new();
        } else if grad.len() != n * c {
            grad.clear();
            grad.resize(n * c, zero);
        }
        out.value.clear();
        if self.is_empty_mean() {
            grad.fill(zero);
            let none = self.reduction == Reduction::None;
            out.value.resize(if none { n } else { 1 }, O::from_f64(0.0));
            out.grad = want.then_some(grad);
            return None;
        }
        Some(grad)
    }

    /// Row i's term (the row's value times its coefficient, as a pair), its scaled gradient
    /// written into `g` (zeros for a skipped row or a zero scale).
    #[inline]
    fn term<F>(&self, i: usize, g: Option<&mut [T]>, row: &mut F) -> (f64, f64)
    where
        F: FnMut(usize, Option<(&mut [T], Scale)>) -> (f64, f64),
    {
        let zero = T::from_f64(0.0);
        let ci = self.coef[i];
        if ci == 0.0 {
            if let Some(g) = g {
                g.fill(zero);
            }
            return (0.0, 0.0);
        }
        let k = ci * self.cot.at(i);
        let l = match g {
            Some(g) if k != 0.0 => {
                let sc = Scale::new(k, self.den_at(i)).streaming(self.n * self.c >= STREAM_MIN_ELEMS);
                row(i, Some((g, sc)))
            }
            Some(g) => {
                g.fill(zero);
                row(i, None)
            }
            None => row(i, None),
        };
        if ci == 1.0 {
            l
        } else {
            pair_scale(ci, l)
        }
    }
}

/// The scratch of one task of [`Rows::run_par`]: the row buffer (f64), the f32 tier's two e
/// buffers (f32, one row each: the row being computed, and the row whose stores wait), and
/// that waiting store ([`Pending`]).
#[derive(Default)]
pub(crate) struct RowScratch {
    buf: Vec<f64>,
    e32: Vec<f32>,
    pending: Option<Pending>,
}

/// A row's gradient stores left for the next row's pass ([`exp32::exp32_row`]): g_j = e_j·ρ
/// into the row's gradient except at two patched components, e being the scratch's e32 half
/// `half`. The gradient is held as an address because it outlives the call that computed the
/// row: it is a row of the task's part of the gradient, which [`Rows::run_par`] keeps
/// borrowed (every row's slice derived from it by `chunks_mut`) until the task has called
/// [`RowScratch::flush`].
struct Pending {
    g: *mut f32,
    len: usize,
    rho: f32,
    stream: bool,
    patch: [(usize, f32); 2],
    half: usize,
}

impl Pending {
    /// The store, with e from `e32`'s half (the caller passes that half).
    ///
    /// # Safety
    /// `g` must still be the live, unaliased row it was made from (see [`Pending`]).
    unsafe fn store<'a>(&self, e: &'a [f32]) -> exp32::Store<'a> {
        exp32::Store {
            e: &e[..self.len],
            rho: self.rho,
            g: std::slice::from_raw_parts_mut(self.g, self.len),
            stream: self.stream,
            patch: self.patch,
        }
    }
}

impl RowScratch {
    /// Does the pending store, if any, on its own.
    fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            let e = &self.e32[p.half * p.len..];
            // SAFETY: flush is called while the row is still borrowed by the task (run_par).
            unsafe { p.store(e) }.run();
        }
    }
}

/// Gradients of at least this many components (64 MiB in f32, beyond any L3 of ours) are
/// stored by the f32 tier with non-temporal stores ([`Scale::stream`]).
const STREAM_MIN_ELEMS: usize = 1 << 24;

/// Rows per rayon task: about this many logits (fixed; the results do not depend on it). A task
/// runs its rows in order on one thread, each row's first pass done during the row before
/// (the f32 tier), so a task's first row is the only one with a pass of its own: 2²⁰ logits
/// (32 rows of 32,000 classes) keep that to a few percent and still give dozens of tasks.
#[cfg(feature = "parallel")]
const PAR_TASK_ELEMS: usize = 1 << 20;
/// Batches below this many logits stay on the calling thread.
#[cfg(feature = "parallel")]
const PAR_MIN_ELEMS: usize = 1 << 18;

/// The reduction of the row terms, in row order: every sum and quotient keeps its error term,
/// and each value is rounded once, through [`round_odd`], so a tiny lo still decides a
/// near-tie in the output dtype.
struct Acc {
    none: bool,
    total: CompensatedSum,
    part: CompensatedSum,
}

impl Acc {
    fn new<T: Element, O: Element>(rows: &Rows<'_, T>, out: &mut Output<T, O>) -> Self {
        let none = rows.reduction == Reduction::None;
        if none {
            out.value.reserve_exact(rows.n);
        }
        Acc {
            none,
            total: CompensatedSum::new(),
            part: CompensatedSum::new(),
        }
    }

    #[inline]
    fn push<T: Element, O: Element>(
        &mut self,
        rows: &Rows<'_, T>,
        i: usize,
        term: (f64, f64),
        out: &mut Output<T, O>,
    ) {
        match &rows.seq {
            _ if self.none => out.value.push(O::from_f64(round_odd(term.0, term.1))),
            None => {
                self.total.add_lane(i, term.0);
                self.total.add_lane(i, term.1);
            }
            Some(s) => {
                self.part.add_lane(i, term.0);
                self.part.add_lane(i, term.1);
                if (i + 1) % s.t == 0 {
                    let d = s.den[i / s.t];
                    if d != 0.0 {
                        let (q, r) = pair_div(self.part.total_pair(), d);
                        self.total.add_lane(i / s.t, q);
                        self.total.add_lane(i / s.t, r);
                    }
                    self.part = CompensatedSum::new();
                }
            }
        }
    }

    fn finish<T: Element, O: Element>(self, rows: &Rows<'_, T>, out: &mut Output<T, O>) {
        if !self.none {
            let t = self.total.total_pair();
            let (hi, lo) = match &rows.seq {
                Some(s) => pair_div(t, s.count),
                None if rows.reduction == Reduction::Mean => pair_div(t, rows.den),
                None => t,
            };
            out.value.push(O::from_f64(round_odd(hi, lo)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy rows.

/// A row's coefficient vector a.
#[derive(Clone, Copy, Debug)]
enum Coef<'a, T> {
    /// Class id y without smoothing: a = w_y·[c = y].
    Hard { y: usize, wy: f64 },
    /// Class id y with smoothing: a_c = e·w_c + [c = y]·h, e = ε/C, h = (1−ε)·w_y. `any`:
    /// some class weight is > 0 (or there are none).
    Smooth {
        y: usize,
        h: f64,
        e: f64,
        /// ε itself (the double-double path rebuilds e and h from it).
        eps: f64,
        w: Option<&'a [T]>,
        any: bool,
    },
    /// Soft target q: a_c = w_c·((1−ε)·q_c + e), exactly 0 where w_c = 0.
    Soft {
        q: &'a [T],
        one_m: f64,
        e: f64,
        /// ε itself (the double-double path rebuilds 1 − ε and e from it).
        eps: f64,
        w: Option<&'a [T]>,
        eps_pos: bool,
    },
}

#[inline(always)]
fn weight_at<T: Element>(w: Option<&[T]>, c: usize) -> f64 {
    w.map_or(1.0, |w| w[c].to_f64())
}

impl<T: Element> Coef<'_, T> {
    /// a_c in f64.
    #[inline(always)]
    fn a(&self, c: usize) -> f64 {
        match *self {
            Coef::Hard { y, wy } => {
                if c == y {
                    wy
                } else {
                    0.0
                }
            }
            Coef::Smooth { y, h, e, w, .. } => {
                let s = e * weight_at(w, c);
                if c == y {
                    s + h
                } else {
                    s
                }
            }
            Coef::Soft { q, one_m, e, w, .. } => {
                let wc = weight_at(w, c);
                if wc == 0.0 {
                    0.0
                } else if one_m == 0.0 {
                    wc * e // ε = 1: the target never enters (not even a NaN)
                } else {
                    wc * (one_m * q[c].to_f64() + e)
                }
            }
        }
    }

    /// Is a_c > 0 (or NaN) in exact arithmetic? (The f64 value of e = ε/C can underflow for
    /// absurdly small ε; presence decides the infinite cases.)
    fn present(&self, c: usize) -> bool {
        match *self {
            Coef::Hard { y, wy } => c == y && wy > 0.0,
            Coef::Smooth { y, h, w, .. } => (c == y && h > 0.0) || weight_at(w, c) > 0.0,
            Coef::Soft {
                q,
                one_m,
                w,
                eps_pos,
                ..
            } => {
                let qc = q[c].to_f64();
                weight_at(w, c) > 0.0 && (eps_pos || (one_m > 0.0 && !(qc <= 0.0)))
            }
        }
    }

    /// Is a coefficient NaN (a NaN soft target with w_c > 0 and ε < 1)? Then the row is NaN.
    fn any_nan(&self, ncls: usize) -> bool {
        matches!(self, Coef::Soft { .. }) && (0..ncls).any(|c| self.a(c).is_nan())
    }

    /// Is any coefficient of the row present? If not, the row is exactly 0.
    fn any_present(&self, ncls: usize) -> bool {
        match *self {
            Coef::Hard { wy, .. } => wy > 0.0,
            Coef::Smooth { h, any, .. } => h > 0.0 || any,
            Coef::Soft { .. } => (0..ncls).any(|c| self.present(c)),
        }
    }

    /// (Σ_c a_c·(m − z_c) over present terms as a pair, A′ = Σ_{c≠k} a_c, a_k), compensated.
    #[inline]
    fn terms(&self, z: &[T], m: f64, k: usize) -> ((f64, f64), f64, f64) {
        if let Coef::Hard { y, wy } = *self {
            // exact unless the exponents of m and z_y are far apart
            let v = if wy != 0.0 {
                pair_scale(wy, pair_add(m, -z[y].to_f64()))
            } else {
                (0.0, 0.0)
            };
            return if y == k { (v, 0.0, wy) } else { (v, wy, 0.0) };
        }
        let mut v = CompensatedSum::new();
        let mut rest = CompensatedSum::new();
        for (c, zc) in z.iter().enumerate() {
            let a = self.a(c);
            if a != 0.0 {
                v.add_lane(c, a * (m - zc.to_f64()));
            }
            if c != k {
                rest.add_lane(c, a);
            }
        }
        (v.total_pair(), rest.total(), self.a(k))
    }

    /// The gradient A·p_j − a_j = r·e_j − a_j (r = A/(1 + s′)), scaled; the argmax's
    /// component is A′ − r·s′.
    #[inline]
    fn write_grad(&self, g: &mut [T], sc: &Scale, e: &[f64], r: f64, k: usize, at_k: f64) {
        match *self {
            Coef::Hard { y, wy } => {
                sc.write(g, |j| r * e[j]);
                g[y] = T::from_f64(sc.apply(r * e[y] - wy));
            }
            _ => sc.write(g, |j| r * e[j] - self.a(j)),
        }
        g[k] = T::from_f64(sc.apply(at_k));
    }

    /// Does some component A·p_j − a_j cancel in f64 by more than 20 bits? Then the f64
    /// formulas (a few roundings of the terms) are no longer within the conditioning bound
    /// κ·2⁻⁵³·|g| of DESIGN.md, and the row is redone in double-double. A hard target cannot
    /// cancel (p_y ≤ 1/2 off the argmax, and the argmax's component is −r·s′); smoothing and
    /// soft targets can (near-uniform logits, a target equal to the row's own softmax).
    /// `mags_k` is the size of the argmax's terms, A′ + r·s′.
    fn cancels(&self, e: &[f64], r: f64, k: usize, at_k: f64, mags_k: f64) -> bool {
        const LIMIT: f64 = 1.0 / 1_048_576.0; // 2^−20
        if matches!(self, Coef::Hard { .. }) {
            return false;
        }
        if at_k.abs() < mags_k * LIMIT {
            return true;
        }
        e.iter().enumerate().any(|(j, &ej)| {
            let x = r * ej;
            let a = self.a(j);
            j != k && a != 0.0 && (x - a).abs() < (x + a) * LIMIT
        })
    }

    /// The gradient of a finite row (max m) in double-double. With e_j = e^{z_j − m} and
    /// Z = Σ e_j (to about 2^−100), the numerator A·e_j − a_j·Z is taken in groups that
    /// cancel on their own: a_c = α·w_c·q_c + β·w_c + h·[c = y] (α = 1 − ε, β = ε/C, h the
    /// hard target's weight) gives
    ///   A·e_j − a_j·Z = α·(P·e_j − w_j·q_j·Z) + β·(W·e_j − w_j·Z) + h·(e_j − [j = y]·Z),
    /// P = Σ w_c·q_c, W = Σ w_c — each bracket is exactly 0 where the structure makes it so
    /// (equal logits and weights, a uniform target), and otherwise has an absolute error of
    /// about 2^−100 of its terms. Then one division by Z and the scaling. The cold path taken
    /// when [`Coef::cancels`].
    #[cold]
    fn write_grad_dd(&self, z: &[T], m: f64, g: &mut [T], sc: &Scale) {
        let c = z.len();
        let e: Vec<(f64, f64)> = z.iter().map(|v| exp_shift_dd(v.to_f64(), m)).collect();
        let zs = e.iter().fold((0.0, 0.0), |s, &x| dd_add(s, x));
        let neg_z = (-zs.0, -zs.1);
        let (w, eps, q, h) = match *self {
            Coef::Hard { y, wy } => (None, 0.0, None, Some((y, (wy, 0.0)))),
            Coef::Smooth { y, eps, w, .. } => {
                let h = pair_scale(weight_at(w, y), two_sum(1.0, -eps));
                (w, eps, None, Some((y, h)))
            }
            Coef::Soft { q, eps, w, .. } => (w, eps, Some(q), None),
        };
        let beta = (eps > 0.0).then(|| pair_div((eps, 0.0), c as f64));
        let w_sum = (0..c).fold((0.0, 0.0), |s, j| dd_add(s, (weight_at(w, j), 0.0)));
        // α = 1 − ε and the products w_c·q_c (0 where w_c = 0, whatever q_c holds)
        let alpha = q.filter(|_| eps < 1.0).map(|q| {
            let wq: Vec<(f64, f64)> = (0..c)
                .map(|j| match weight_at(w, j) {
                    0.0 => (0.0, 0.0),
                    wj => two_prod(wj, q[j].to_f64()),
                })
                .collect();
            let p = wq.iter().fold((0.0, 0.0), |s, &x| dd_add(s, x));
            (two_sum(1.0, -eps), p, wq)
        });
        for (j, o) in g.iter_mut().enumerate() {
            let ej = e[j];
            let mut num = (0.0, 0.0);
            if let Some((one_m, p, wq)) = &alpha {
                let d = dd_add(dd_mul(*p, ej), dd_mul(wq[j], neg_z));
                num = dd_add(num, dd_mul(*one_m, d));
            }
            if let Some(b) = beta {
                let d = dd_add(dd_mul(w_sum, ej), pair_scale(weight_at(w, j), neg_z));
                num = dd_add(num, dd_mul(b, d));
            }
            if let Some((y, hy)) = h {
                let d = if j == y { dd_add(ej, neg_z) } else { ej };
                num = dd_add(num, dd_mul(hy, d));
            }
            let r = pair_div(num, zs.0);
            *o = T::from_f64(sc.apply(r.0 + (r.1 - r.0 * (zs.1 / zs.0))));
        }
    }
}

/// e^{x − m} (x ≤ m, m finite; x = −inf gives 0) in double-double, to about 2^−100
/// relatively: x − m split exactly into d + dl, e^d by [`exp_dd`], the low part as the factor
/// 1 + dl (its square is below 2^−106). Below e^−1000 it is 0: no gradient component of a row
/// with Z ≥ 1 can see it.
fn exp_shift_dd(x: f64, m: f64) -> (f64, f64) {
    if x == f64::NEG_INFINITY {
        return (0.0, 0.0);
    }
    let (d, dl) = two_sum(x, -m);
    if d < -1000.0 {
        return (0.0, 0.0);
    }
    let (k, (h, l)) = exp_dd(d);
    let (h, l) = two_sum(h, l + h * dl);
    (libm::scalbn(h, k), libm::scalbn(l, k))
}

/// Max, its first index, and whether the row holds a non-finite value.
#[inline]
fn scan<T: Element>(z: &[T]) -> (f64, usize, bool) {
    let mut m = f64::NEG_INFINITY;
    let mut k = 0;
    let mut special = false;
    for (j, v) in z.iter().enumerate() {
        let x = v.to_f64();
        special |= !x.is_finite();
        if x > m {
            m = x;
            k = j;
        }
    }
    (m, k, special)
}

/// One cross-entropy row (C ≥ 1): l as a pair hi + lo, and the scaled gradient into `grad`.
fn ce_row<T: Element>(
    z: &[T],
    a: &Coef<'_, T>,
    grad: Option<(&mut [T], Scale)>,
    scratch: &mut [f64],
) -> (f64, f64) {
    let (m, k, special) = scan(z);
    if special {
        (ce_row_special(z, a, grad, scratch), 0.0)
    } else {
        ce_row_finite(z, a, m, k, grad, scratch)
    }
}

/// A row with a class-id target y of weight w_y and no smoothing: the fast path when the row
/// is finite (every logit finite, w_y > 0, C ≥ 1), [`ce_row`] otherwise.
///
/// The formulation is [`ce_row_finite`]'s for a hard target (the confident-row one:
/// l = w_y·(m − z_y) + w_y·log1p(s′), s′ = Σ_{j≠k} e_j, gradient w_y·p_j − w_y·[j = y] with
/// the argmax's component w_y·[k ≠ y] − r·s′), with three passes over the row in
/// [`vmath`](crate::kernels::vmath) (AVX2 + FMA where present, the same bits either way):
/// the logits widened into the f64 scratch with the max and the finiteness test
/// (16-bit in bulk), e_j = [`vmath::exp_nonpos`](crate::kernels::vmath::exp_nonpos)(z_j − m)
/// in place with s′ as a plain 8-lane sum, then the gradient (r·e_j)·(k/den) stored straight
/// into the output. Error: each e_j within 2⁻⁵¹ relatively, s′ within (C/8 + 6)·2⁻⁵³ (a sum
/// of non-negative terms), so l — a sum of non-negative terms too — is within about
/// (C/8 + 10)·2⁻⁵³ ≤ 2⁻³⁸ relatively for C ≤ 2²⁰ (the f32 bar needs ≤ 2⁻²⁵), and each
/// gradient component within a few 2⁻⁵¹ of w_y·p_j (the argmax's and the target's
/// components within 2⁻³⁸·w_y absolutely, against a row maximum ≥ w_y/2): the output
/// rounding dominates. A hard target never cancels, so no double-double path is needed.
fn ce_row_hard<T: Element>(
    z: &[T],
    y: usize,
    wy: f64,
    grad: Option<(&mut [T], Scale)>,
    rs: &mut RowScratch,
) -> (f64, f64) {
    use crate::kernels::vmath;
    let mut grad = grad;
    if let Some(l) = tier_row(z, y, wy, grad.as_mut().map(|(g, sc)| (&mut **g, *sc)), rs) {
        return l;
    }
    let scratch = &mut rs.buf[..];
    let c = z.len();
    let e = &mut scratch[..c];
    let (m, finite) = widen_max(z, e);
    if !finite || !(wy > 0.0) {
        return ce_row(z, &Coef::Hard { y, wy }, grad, scratch);
    }
    let k = vmath::first_index(e, m); // the first argmax, as `scan` finds it
    let zy = e[y];
    let sp = vmath::exp_shift_sum_except(e, m, k);
    // V = w_y·(m − z_y) as a pair (exact unless the exponents are far apart); A = w_y
    let v = pair_scale(wy, pair_add(m, -zy));
    let (h, lo) = pair_add(v.0, wy * libm::log1p(sp));
    if let Some((g, sc)) = grad {
        let r = wy / (1.0 + sp);
        let rest = if y == k { 0.0 } else { wy };
        let at_k = rest - r * sp;
        if !(sc.fast && store_scaled(e, r, sc.mul, g)) {
            sc.write(g, |j| r * e[j]);
        }
        g[y] = T::from_f64(sc.apply(r * e[y] - wy));
        g[k] = T::from_f64(sc.apply(at_k));
    }
    (h, lo + v.1)
}

/// The f32 tier of the fast path: an f32 row with a class-id target, e_j = e^{z_j − m} in
/// f32 arithmetic ([`vmath::exp32`](crate::kernels::vmath::exp32), 8 lanes, within
/// B = [`EXP32_BOUND_U`](crate::kernels::vmath::exp32::EXP32_BOUND_U)·u relatively, u = 2⁻²⁴)
/// stored into one of the scratch's two e rows (cache-resident, reused row after row),
/// s′ = Σ_{j≠k} e_j summed in f64, then g_j = RN(e_j·ρ) with ρ = RN_f32(w_y·mul/S),
/// S = 1 + s′, left pending ([`Pending`]) and stored into the gradient during the next row's
/// pass or by the task's flush (by non-temporal stores when the gradient is ≥ 2²⁴
/// components, so its lines are not read first); the target's and the argmax's components
/// from [`ce_row_hard`]'s f64 formulas. `None` — nothing decided (nothing pending), the
/// caller runs the f64 tier, overwriting whatever was stored — unless the row passes the a-posteriori test below,
/// which guarantees the bar from quantities the pass has just computed (f64, cheap):
///
/// - **value**: s′ is within Δ = B·u·s′ + C·2⁻¹⁵⁰ (a sum of non-negative terms, each within
///   B·u relatively, or 2⁻¹⁵⁰ absolutely where e_j is subnormal or 0; the f64 additions add
///   < C·2⁻⁵³ relatively, inside the room below), so log1p(s′) is within Δ/S absolutely and
///   ℓ = (m − z_y) + log1p(s′) (≥ 0, no cancellation) within that over ℓ relatively.
///   Required: Δ/S ≤ 1.25·u·ℓ (a confident row whose other e_j all underflow, ℓ ≈ 0, fails
///   here), i.e. ≤ 1.25 ulps of any f32 ≥ ℓ·w_y: with the
///   final rounding (½) and room for the f64 remainder, within the 2-ulp bar — also for the
///   mean and the sum, whose terms are non-negative (each row's error is within 1.25u of its
///   own term). Typical rows pass easily (N(0, 3²) logits, C = 32000: ℓ ≈ 15); confident
///   ones (p_y → 1, ℓ → 0) fail and go to the f64 tier.
/// - **gradient** (normwise, against ulp(max_j |ê_j|) ≥ u·w_y·mul·(1 − p_y)): a component
///   j ∉ {y, k} is within ((2B + 1)·u·e_j + 2⁻¹⁵⁰)·w_y·mul/S (e_j, S and ρ) plus its own rounding
///   (≤ ½ ulp of itself, ≤ 1 ulp of the row's largest even across a binade); the argmax's
///   (w_y·mul·(1 − s′/S) or −w_y·mul·s′/S, in f64) within Δ·w_y·mul/S²;
///   the target's (p_y − 1, in f64) within 2B·u·w_y·mul·p_y.
///   Required: ((2B + 1)·e₂ + 2⁻¹²⁶)/S ≤ ¾·(1 − p_y), Δ/(u·S²) ≤ ¾·(1 − p_y) and
///   2B·p_y ≤ ¾·(1 − p_y), with e₂ =
///   max_{j≠k} e_j — together ≤ 1¾ ulps, within the bar of 2. Also ρ must be a normal f32
///   ≥ 2⁻¹⁰⁰ (so its rounding is relative and subnormal products are far below the row's
///   ulp) and the scale finite and non-zero.
///
/// Each row is decided alone, so the result stays independent of the thread count.
fn ce_row_f32(
    z: &[f32],
    y: usize,
    wy: f64,
    grad: Option<(&mut [f32], Scale)>,
    rs: &mut RowScratch,
) -> Option<(f64, f64)> {
    let c = z.len();
    if rs.e32.len() < 2 * c {
        rs.e32.resize(2 * c, 0.0);
    }
    // the previous row's stores, if it left them: done during this row's pass, or on their
    // own if this row stops before it; this row's e_j go to the other half
    let prev = rs.pending.take();
    let half = prev.as_ref().map_or(0, |p| 1 - p.half);
    let (lo, hi) = rs.e32[..2 * c].split_at_mut(c);
    let (e, pe) = if half == 0 { (lo, &*hi) } else { (hi, &*lo) };
    // SAFETY: the row is still borrowed by the task (Pending's contract).
    let prev = prev.map(|p| unsafe { p.store(pe) });
    let sc = grad.as_ref().map(|(_, sc)| *sc);
    let t = tier_pass(z, y, wy, sc, grad.is_some().then_some(e), prev, TierPrec::F32)?;
    if let (Some((g, sc)), Some((rho, gy, gk))) = (grad, t.grad) {
        // the stores wait for the next row's pass (or the task's flush)
        rs.pending = Some(Pending {
            g: g.as_mut_ptr(),
            len: c,
            rho,
            stream: sc.stream,
            patch: [(y, gy as f32), (t.k, gk as f32)],
            half,
        });
    }
    Some(t.value)
}

/// The f32 tier for 16-bit logits (bf16): the row widened to f32 (exact) in bulk, the
/// f32 tier's pass and test ([`tier_pass`], the gradient's part against the 16-bit dtype's
/// ulps: [`TierPrec`]), then g_j = RN₁₆(RN₃₂(e_j·ρ)) stored at once (in bulk; no stores
/// left pending) and the target's and argmax's components rounded once from f64.
fn ce_row_16<H: Half16>(
    z: &[H],
    y: usize,
    wy: f64,
    grad: Option<(&mut [H], Scale)>,
    rs: &mut RowScratch,
) -> Option<(f64, f64)> {
    debug_assert!(rs.pending.is_none(), "16-bit rows leave no stores pending");
    let c = z.len();
    if rs.e32.len() < 2 * c {
        rs.e32.resize(2 * c, 0.0);
    }
    let (z32, e) = rs.e32[..2 * c].split_at_mut(c);
    H::widen(z, z32);
    let sc = grad.as_ref().map(|(_, sc)| *sc);
    let t = tier_pass(z32, y, wy, sc, grad.is_some().then_some(&mut *e), None, H::PREC)?;
    if let (Some((g, _)), Some((rho, gy, gk))) = (grad, t.grad) {
        for v in e.iter_mut() {
            *v *= rho;
        }
        H::narrow(e, g);
        g[y] = H::from_f64(gy);
        g[t.k] = H::from_f64(gk);
    }
    Some(t.value)
}

/// The 16-bit dtypes the f32 tier takes (bf16; f16 keeps the f64 tier, see [`tier_row`]): their
/// f32 conversions in bulk (exact one way, round-to-nearest-even the other) and their
/// [`TierPrec`].
trait Half16: Element {
    const PREC: TierPrec;
    fn widen(z: &[Self], out: &mut [f32]);
    fn narrow(e: &[f32], out: &mut [Self]);
}

impl Half16 for half::bf16 {
    /// 8 significant bits: ulp(x) > 2⁻⁸·|x|; the range of f32.
    const PREC: TierPrec = TierPrec { lambda: 65536.0, extra: 1.0, max: 1.0e38 };
    fn widen(z: &[Self], out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        z.convert_to_f32_slice(out);
    }
    fn narrow(e: &[f32], out: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        out.convert_from_f32_slice(e);
    }
}

/// The gradient dtype as [`tier_pass`]'s test sees it: `lambda` = its unit u_g (ulp(x) >
/// u_g·|x|) over 2⁻²⁴; `extra` = 1 when each g_j is rounded to f32 before its own dtype (a
/// relative error ≤ 2⁻²⁴ more), else 0; `max` = a bound on w_y·|k/den| that keeps every
/// component far from the dtype's overflow (so the double rounding never decides between a
/// finite value and ∞).
#[derive(Clone, Copy)]
struct TierPrec {
    lambda: f64,
    extra: f64,
    max: f64,
}

impl TierPrec {
    const F32: TierPrec = TierPrec { lambda: 1.0, extra: 0.0, max: f64::INFINITY };
}

/// A row the f32 tier's test accepted: its value pair, its first argmax k and, with a
/// gradient, (ρ, the target's component, the argmax's component) — the last two scaled, in
/// f64, for the caller to round once into its dtype.
struct TierRow {
    value: (f64, f64),
    k: usize,
    grad: Option<(f32, f64, f64)>,
}

/// The f32 tier's pass over an f32 row and its a-posteriori test ([`ce_row_f32`] derives it;
/// `prec` gives the gradient's dtype — the value's test is always against f32's ulps, the
/// finest value dtype): e_j into `e` when given (the gradient is wanted, scaled by `sc`),
/// `prev`'s stores done during the pass or before returning. `None`: the row is for the f64
/// tier.
fn tier_pass(
    z: &[f32],
    y: usize,
    wy: f64,
    sc: Option<Scale>,
    mut e: Option<&mut [f32]>,
    prev: Option<exp32::Store<'_>>,
    prec: TierPrec,
) -> Option<TierRow> {
    use exp32::EXP32_BOUND_U as B;
    let stop = |prev: Option<exp32::Store<'_>>| {
        if let Some(st) = prev {
            st.run();
        }
        None
    };
    if z.is_empty() || !(wy > 0.0 && wy.is_finite()) {
        return stop(prev);
    }
    let (m, k, finite) = exp32::max_first_f32(z);
    if !finite {
        return stop(prev);
    }
    if let Some(sc) = &sc {
        if !(sc.fast && (wy * sc.mul).abs() <= prec.max) {
            return stop(prev);
        }
    }
    let pass = exp32::exp32_row(z, m, k, e.as_deref_mut(), prev);
    let (sp, e2) = (pass.sp, pass.e2);
    let big_s = 1.0 + sp;
    let (m64, zy) = (m as f64, z[y] as f64);
    let ell = (m64 - zy) + libm::log1p(sp);
    // s′'s error in units of 2⁻²⁴: B·s′ (normal e_j) + C·2⁻¹²⁶ (subnormal or zero e_j)
    let sp_err = B * sp + z.len() as f64 * 2f64.powi(-126);
    if !(sp_err / big_s <= 1.25 * ell) {
        return None;
    }
    let v = pair_scale(wy, pair_add(m64, -zy));
    let (h, lo) = pair_add(v.0, wy * libm::log1p(sp));
    let mut row = TierRow { value: (h, lo + v.1), k, grad: None };
    if let (Some(sc), Some(e)) = (sc, e) {
        let ey = if y == k { 1.0 } else { e[y] as f64 };
        let py = ey / big_s;
        let room = 0.75 * prec.lambda * (1.0 - py);
        if !(((2.0 * B + 1.0 + prec.extra) * e2 as f64 + 2f64.powi(-126)) / big_s <= room
            && sp_err / (big_s * big_s) <= room
            && 2.0 * B * py <= room)
        {
            return None;
        }
        let r = wy / big_s;
        let rho = (r * sc.mul) as f32;
        if !(rho.is_finite() && rho.abs() >= 2f32.powi(-100)) {
            return None;
        }
        let rest = if y == k { 0.0 } else { wy };
        row.grad = Some((rho, sc.apply(r * ey - wy), sc.apply(rest - r * sp)));
    }
    Some(row)
}

/// Rows narrower than this take the f64 tier: the f32 tier saves nothing on them (a row's
/// fixed costs dominate), and the f64 tier's results are more often correctly rounded (a
/// two-class bf16 row whose loss lies 0.002 ulp from an f32 midpoint came out on the other side
/// of it through the f32 tier: within the bar, but needlessly).
const TIER_MIN_C: usize = 32;

/// The f32 tier for the dtypes it takes ([`ce_row_f32`], [`ce_row_16`]), on rows of at least
/// [`TIER_MIN_C`] classes; `None` for a row it leaves to the f64 tier and for other dtypes.
#[inline]
fn tier_row<T: Element>(
    z: &[T],
    y: usize,
    wy: f64,
    grad: Option<(&mut [T], Scale)>,
    rs: &mut RowScratch,
) -> Option<(f64, f64)> {
    fn as_ty<T: Element, U: Element>(g: Option<(&mut [T], Scale)>) -> Option<(&mut [U], Scale)> {
        g.and_then(|(g, sc)| Some((cast_mut::<T, U>(g)?, sc)))
    }
    if z.len() < TIER_MIN_C {
        return None;
    }
    if let Some(z) = cast::<T, f32>(z) {
        ce_row_f32(z, y, wy, as_ty(grad), rs)
    } else if let Some(z) = cast::<T, half::bf16>(z) {
        ce_row_16(z, y, wy, as_ty(grad), rs)
    } else {
        // f16 rows keep the f64 tier: its gradients are correctly rounded (up to f64's own
        // rounding), which loss scaling relies on (report demo `f16_scale_table`: the f16
        // gradient at the chosen scale is s·g rounded once); the f32 tier's 2.5-ulp exps
        // cannot decide an f16 midpoint
        None
    }
}

/// Does one row (f32 or bf16 logits; f16 never) take the f32 tier of the fast path ([`ce_row_f32`]'s
/// and [`ce_row_16`]'s test)? For tests and benchmarks: `den` is the mean's denominator, `grad`
/// whether the gradient is wanted. Other dtypes: false.
#[doc(hidden)]
pub fn f32_tier_accepts<T: Element>(z: &[T], y: usize, wy: f64, den: f64, grad: bool) -> bool {
    let mut g = vec![T::from_f64(0.0); if grad { z.len() } else { 0 }];
    let sc = Scale::new(1.0, den);
    let mut rs = RowScratch { buf: vec![0.0f64; z.len()], ..RowScratch::default() };
    let taken = tier_row(z, y, wy, grad.then_some((&mut g[..], sc)), &mut rs);
    rs.flush();
    taken.is_some()
}

/// The logits as f64 into `out` (f32 and bf16 by vmath's bulk loops, f16 through `half`'s
/// slice conversion), with (max, every logit finite).
#[inline]
fn widen_max<T: Element>(z: &[T], out: &mut [f64]) -> (f64, bool) {
    use crate::kernels::vmath;
    use half::slice::HalfFloatSliceExt;
    if let Some(z) = cast::<T, f32>(z) {
        vmath::widen_max_f32(z, out)
    } else if let Some(z) = cast::<T, half::bf16>(z) {
        vmath::widen_max_bf16(z, out)
    } else if let Some(z) = cast::<T, half::f16>(z) {
        z.convert_to_f64_slice(&mut out[..z.len()]);
        vmath::max_finite(&out[..z.len()])
    } else {
        for (o, v) in out.iter_mut().zip(z) {
            *o = v.to_f64();
        }
        vmath::max_finite(&out[..z.len()])
    }
}

/// g_j = RN_T((r·e_j)·mul) by vmath's bulk stores, for f32, bf16 and f16 (false: not done, the
/// caller writes it).
#[inline]
fn store_scaled<T: Element>(e: &[f64], r: f64, mul: f64, g: &mut [T]) -> bool {
    use crate::kernels::vmath;
    if let Some(g) = cast_mut::<T, f32>(g) {
        vmath::scale_to_f32(e, r, mul, g);
        true
    } else if let Some(g) = cast_mut::<T, half::bf16>(g) {
        vmath::scale_to_bf16(e, r, mul, g);
        true
    } else if let Some(g) = cast_mut::<T, half::f16>(g) {
        vmath::scale_to_f16(e, r, mul, g);
        true
    } else {
        false
    }
}

/// `z` as a slice of U when T is U.
#[inline(always)]
fn cast<T: 'static, U: 'static>(z: &[T]) -> Option<&[U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts(z.as_ptr().cast::<U>(), z.len()) })
    } else {
        None
    }
}

/// `z` as a mutable slice of U when T is U.
#[inline(always)]
fn cast_mut<T: 'static, U: 'static>(z: &mut [T]) -> Option<&mut [U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts_mut(z.as_mut_ptr().cast::<U>(), z.len()) })
    } else {
        None
    }
}

/// A row whose max m (at k) is finite; −inf logits allowed (p = 0 there).
fn ce_row_finite<T: Element>(
    z: &[T],
    a: &Coef<'_, T>,
    m: f64,
    k: usize,
    grad: Option<(&mut [T], Scale)>,
    scratch: &mut [f64],
) -> (f64, f64) {
    let c = z.len();
    let e = &mut scratch[..c];
    for (o, v) in e.iter_mut().zip(z) {
        *o = exp_nonpos(v.to_f64() - m); // e_k = e^0 = 1 exactly
    }
    // s′ = Σ_{j≠k} e_j: the argmax's term is left out
    let sp = sum_f64(&e[..k]) + sum_f64(&e[k + 1..]);
    let (v, rest, a_k) = a.terms(z, m, k);
    let big_a = rest + a_k;
    // l = V + A·log1p(s′), both ≥ 0; the pair keeps what the f64 sum drops (a tiny log1p(s′)
    // next to an exact m − z_y can decide a near-tie of the output rounding)
    let l = if big_a == 0.0 {
        v
    } else {
        let (h, e) = pair_add(v.0, big_a * libm::log1p(sp));
        (h, e + v.1)
    };
    if let Some((g, sc)) = grad {
        let r = big_a / (1.0 + sp);
        let at_k = rest - r * sp;
        if a.cancels(&scratch[..c], r, k, at_k, rest + r * sp) {
            a.write_grad_dd(z, m, g, &sc);
        } else {
            a.write_grad(g, &sc, &scratch[..c], r, k, at_k);
        }
    }
    l
}

/// A row holding a NaN or an infinite logit.
#[cold]
fn ce_row_special<T: Element>(
    z: &[T],
    a: &Coef<'_, T>,
    grad: Option<(&mut [T], Scale)>,
    scratch: &mut [f64],
) -> f64 {
    let c = z.len();
    if !a.any_present(c) {
        // every term absent: exactly 0 whatever the logits hold
        if let Some((g, _)) = grad {
            g.fill(T::from_f64(0.0));
        }
        return 0.0;
    }
    let (mut nan, mut n_pos, mut k_pos) = (false, 0usize, 0usize);
    let (mut m, mut k) = (f64::NEG_INFINITY, 0usize);
    for (j, v) in z.iter().enumerate() {
        let x = v.to_f64();
        if x.is_nan() {
            nan = true;
        } else if x == f64::INFINITY {
            n_pos += 1;
            k_pos = j;
        } else if x > m {
            m = x;
            k = j;
        }
    }
    if nan || n_pos >= 2 || (n_pos == 0 && m == f64::NEG_INFINITY) || a.any_nan(c) {
        // no limit: NaN value and gradient
        if let Some((g, sc)) = grad {
            sc.write(g, |_| f64::NAN);
        }
        return f64::NAN;
    }
    if n_pos == 1 {
        // p → one-hot at k_pos: its own term → 0, any other present term → +inf;
        // the gradient A·p_j − a_j → A·[j = k_pos] − a_j
        let v = if (0..c).any(|j| j != k_pos && a.present(j)) {
            f64::INFINITY
        } else {
            0.0
        };
        if let Some((g, sc)) = grad {
            let mut rest = CompensatedSum::new();
            for j in (0..k_pos).chain(k_pos + 1..c) {
                rest.add_lane(j, a.a(j));
            }
            sc.write(g, |j| -a.a(j));
            g[k_pos] = T::from_f64(sc.apply(rest.total()));
        }
        return v;
    }
    // a finite max and some −inf logits: the finite formulas (e^−inf = 0, a present term at
    // −inf is +inf), also when the f64 coefficient of a present term underflowed to 0
    let v = ce_row_finite(z, a, m, k, grad, scratch).0;
    let inf_term = (0..c).any(|j| z[j].to_f64() == f64::NEG_INFINITY && a.present(j));
    if inf_term && !v.is_nan() {
        f64::INFINITY
    } else {
        v
    }
}

// ---------------------------------------------------------------------------------------------
// multi_margin rows.

/// u = margin − x_y + x_j: d = x_j − x_y and margin + d both error-free, the errors added
/// last. The sign is always right (where margin + d cancels, Sterbenz makes it exact and the
/// only error left is d's, added exactly); the value is within about an f64 ulp.
#[inline(always)]
fn margin_arg(margin: f64, xy: f64, xj: f64) -> f64 {
    let (d, de) = two_sum(xj, -xy);
    let (s, se) = two_sum(margin, d);
    if d.is_finite() && s.is_finite() {
        s + (se + de)
    } else {
        s // ±inf or NaN: the plain sum carries it
    }
}

/// max(0, u)^p and its derivative (the kink u = 0 takes 0); NaN propagates.
#[inline(always)]
fn hinge_pow(u: f64, p2: bool) -> (f64, f64) {
    if u > 0.0 {
        if p2 {
            (u * u, 2.0 * u)
        } else {
            (u, 1.0)
        }
    } else if u <= 0.0 {
        (0.0, 0.0)
    } else {
        (f64::NAN, f64::NAN)
    }
}

/// One multi_margin row: l = w_y·Σ_{j≠y} max(0, u_j)^p / C, the scaled gradient into `grad`.
fn multi_margin_row<T: Element>(
    x: &[T],
    y: usize,
    wy: f64,
    margin: f64,
    p2: bool,
    grad: Option<(&mut [T], Scale)>,
) -> (f64, f64) {
    let c = x.len();
    if wy == 0.0 {
        // a zero class weight removes the row's terms
        if let Some((g, _)) = grad {
            g.fill(T::from_f64(0.0));
        }
        return (0.0, 0.0);
    }
    let cf = c as f64;
    let xy = x[y].to_f64();
    let mut s = CompensatedSum::new();
    let mut d = CompensatedSum::new();
    match grad {
        Some((g, sc)) => {
            for j in (0..y).chain(y + 1..c) {
                let (t, dj) = hinge_pow(margin_arg(margin, xy, x[j].to_f64()), p2);
                s.add_lane(j, t);
                d.add_lane(j, dj);
                g[j] = T::from_f64(sc.apply(wy * dj / cf));
            }
            let dt = d.total();
            if dt.is_nan() {
                // a NaN score or an undefined u_j (inf − inf): the whole row is NaN
                sc.write(g, |_| f64::NAN);
            } else {
                g[y] = T::from_f64(if dt == 0.0 {
                    0.0
                } else {
                    sc.apply(-(wy * dt) / cf)
                });
            }
        }
        None => {
            for j in (0..y).chain(y + 1..c) {
                s.add_lane(j, hinge_pow(margin_arg(margin, xy, x[j].to_f64()), p2).0);
            }
        }
    }
    pair_div(pair_scale(wy, s.total_pair()), cf)
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// Evaluate a validated `cross_entropy` / `nll` / `multi_margin` case with input type `T` and
/// value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    let loss = case.loss.as_str();
    let xname = match loss {
        "cross_entropy" => "logits",
        "nll" => "logp",
        "multi_margin" => "scores",
        other => {
            return Err(LossError::unsupported(format!(
                "no row-wise classification kernel for {other}"
            )))
        }
    };
    let xt = case
        .input(xname)
        .ok_or_else(|| LossError::invalid(format!("{loss}: missing input {xname:?}")))?;
    let x: Vec<T> = float_input::<T>(case, xname)?.unwrap_or_default();
    let class_weight = float_input::<T>(case, "class_weight")?;
    let cotangent = float_input::<T>(case, "cotangent")?;
    let (n, c) = (checked.rows, checked.dim("C"));
    let reduction = case.reduction();
    let want = case.grad.iter().any(|g| g == xname);
    let ignore_index = catalogue::ignore_index(case).unwrap_or(-100);
    let ids = || {
        int_input(case, "target")?
            .ok_or_else(|| LossError::invalid("input target: expected i64 class ids"))
    };
    let out: Output<T, O> = match loss {
        "cross_entropy" => {
            let soft: Vec<T>;
            let mut args = CrossEntropyArgs::new(&x, n, c)
                .ignore_index(ignore_index)
                .label_smoothing(case.float_param("label_smoothing").unwrap_or(0.0));
            if checked.soft {
                let t = case
                    .input("target")
                    .ok_or_else(|| LossError::invalid("cross_entropy: missing input \"target\""))?;
                if t.f().is_none() {
                    return Err(LossError::invalid(
                        "input target: expected soft float targets",
                    ));
                }
                soft = to_typed(t);
                args = args.soft(&soft);
            } else {
                args = args.class_ids(ids()?);
            }
            if checked.layout == "BTC" {
                args = args.seq(checked.dim("B"), checked.dim("T"));
            }
            args.class_weight = class_weight.as_deref();
            args.cotangent = cotangent.as_deref();
            args.reduction(reduction).grad(want).eval()?
        }
        "nll" => {
            let mut args = NllArgs::new(&x, n, c)
                .class_ids(ids()?)
                .ignore_index(ignore_index);
            args.class_weight = class_weight.as_deref();
            args.cotangent = cotangent.as_deref();
            args.reduction(reduction).grad(want).eval()?
        }
        _ => {
            let weight = float_input::<T>(case, "weight")?;
            let p = match case.params.get("p") {
                Some(ParamValue::Int(p)) => *p,
                None => 1,
                Some(v) => {
                    return Err(LossError::invalid(format!(
                        "param p={v} is outside its domain (1 or 2)"
                    )))
                }
            };
            let mut args = MultiMarginArgs::new(&x, n, c)
                .class_ids(ids()?)
                .margin(case.float_param("margin").unwrap_or(1.0))
                .p(p);
            args.class_weight = class_weight.as_deref();
            args.weight = weight.as_deref();
            args.mask = int_input(case, "mask")?;
            args.cotangent = cotangent.as_deref();
            args.reduction(reduction).grad(want).eval()?
        }
    };
    Ok(response(case, checked, xname, xt.shape.clone(), out))
}
