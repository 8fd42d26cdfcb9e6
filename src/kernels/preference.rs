//! Preference losses: `dpo` (Direct Preference Optimization, Rafailov et al. 2023; the label
//! smoothing of the conservative variant).
//!
//! Per element, from the sequence log-probabilities of the policy (πc chosen, πr rejected) and
//! of the reference model (rc, rr), with β > 0 and label smoothing ε ∈ [0, ½]:
//! h = (πc − rc) − (πr − rr), l = (1 − ε)·softplus(−β·h) + ε·softplus(β·h); gradients for the
//! two policy inputs, ∂l/∂πc = β·(ε·σ(βh) − (1 − ε)·σ(−βh)) = −∂l/∂πr. The typed API is
//! generic over the input type `T` (`f32`, [`half::f16`], [`half::bf16`]) and the value type
//! `O` (`T`, or `f32` for 16-bit inputs); reductions, weights, masks and cotangents are
//! [`Plan`]'s.
//!
//! Numerics (f64, each output rounded once; `libm`, never the platform libm):
//!
//! - **h exactly.** Sequence log-probs are large and nearly equal: around −1e4 a bf16 ulp is
//!   64, and chosen and rejected (policy and reference) are often equal or a few ulps apart.
//!   h is the *exact* sum of the four inputs (`sum_exact`, an error-free expansion), carried
//!   as a double-double, so no cancellation is lost; x = β·h is a double-double too (an
//!   error-free product), and so is the value until its one rounding.
//! - **No log of a sigmoid.** l uses [`softplus`](super::math::softplus) on ∓x, never ln σ:
//!   a margin of −1e4 gives l = 1e4·β·(1 − ε) (+ ε·e^{−1e4β}), finite — `log(sigmoid(βh))`
//!   returns −inf there and the loss +inf. The term with ε = 0 is absent (exactly 0 even where
//!   softplus(x) = inf).
//! - **The gradient's zero crossing.** ε·σ(x) − (1 − ε)·σ(−x) cancels near
//!   x* = ln((1 − ε)/ε). Away from it (one term more than twice the other) the plain
//!   difference loses at most 2 bits. Near it, it is σ(−x)·(ε·e^x − (1 − ε)), with e^x in
//!   double-double ([`exp_dd`]) times (1 + x_lo) for the low part of x, and 1 − ε exact as a
//!   double-double: accurate to about 2^−100 relatively to the terms, however close x is to x*.
//!
//! - **Fast path** (no weight, mask or per-element cotangent; ε = 0 or 1 − (1 − ε) = ε to
//!   2⁻⁴⁰): dpo at x = β·h *is* bce_logits at logit x and target 1 − ε, so where h is exact in
//!   f64 (three error-free TwoSums with zero errors), each element is bce_logits' fast element
//!   (`classification::bce_fast_element`: |x| ≤ 700, no cancellation in the gradient), on
//!   8 / 4 f64 lanes (AVX-512 / AVX2, chosen at run time) or plain — the same operations, the
//!   same bits. Everything else is [`dpo_point`] above, element by element. Accurate to far
//!   better than the output ulp, not correctly rounded everywhere (the exhaustive 16-bit
//!   certificates: max 1 ulp, as before). `DpoFast` has the derivation.
//!
//! Invalid input (lengths, β ≤ 0 or not finite, ε outside [0, ½], and the weight / mask /
//! cotangent checks of [`Plan::new`]) is an `Err` naming the input or param and the value.
//! Extended reals: inf − inf in h is NaN; h = ±inf gives σ ∈ {0, 1} and softplus ∈ {0, inf}.
//! Never panics.
//!
//! # Example
//!
//! ```
//! use losscheck::kernels::preference::{dpo, DpoArgs};
//! use losscheck::Reduction;
//! use half::bf16;
//!
//! // bf16 log-probs around −1e4 (one ulp is 64): h = (−9984 + 10048) − (−10048 + 9984) = 128
//! let b = |x: f32| bf16::from_f32(x);
//! let (pc, pr, rc, rr) = ([b(-9984.0)], [b(-10048.0)], [b(-10048.0)], [b(-9984.0)]);
//! let args = DpoArgs::new(&pc, &pr, &rc, &rr).reduction(Reduction::Sum);
//! // β = 0.1: l = softplus(−12.8) = 2.7607688e-6 (an f32 value for bf16 inputs)
//! let out = dpo::<bf16, f32>(&args, 0.1, 0.0).unwrap();
//! assert!((out.value[0] / 2.760_768_8e-6 - 1.0).abs() < 1e-6);
//! // a margin of about −1e4 (bf16 −19968 + 9984 = −9984): l = softplus(998.4), finite
//! // (−log(sigmoid(βh)) computed as written gives inf there)
//! let (pc, pr, rc, rr) = ([b(-20000.0)], [b(-10000.0)], [b(-10000.0)], [b(-10000.0)]);
//! let out = dpo::<bf16, f32>(&DpoArgs::new(&pc, &pr, &rc, &rr), 0.1, 0.0).unwrap();
//! assert_eq!(out.value, vec![998.4]);
//! assert_eq!(out.grad_policy_chosen, Some(vec![bf16::from_f32(-0.1)]));
//! ```

use super::math::{exp_dd, logistic_grad, pair_scale, sigmoid, two_prod, two_sum};
use super::ranking::{
    bad_param, check_len, extras, output_default, pair_sum, reduction_builders, req_input,
    response2, run2, softplus_pair, sum_exact, Pair,
};
use super::classification::bce_fast_element;
use super::math::round_odd;
use super::ranking::reduced_value;
use super::reduce::{
    block_sum, codegen, load_f64, size_output, store_f64, Codegen, CompensatedSum, FastScale, Plan, BLOCK,
    FAST_LANES,
};
#[cfg(target_arch = "x86_64")]
use super::vmath::simd_x86::{F64x4, F64x8};
use super::vmath::{LaneIo, Lanes};
use losscheck_core::{Case, Checked, Element, LossError, Reduction, Response};

/// The preference losses this module implements.
pub const LOSSES: &[&str] = &["dpo"];

/// Inputs of `dpo`: the four sequence log-probabilities (all the same length) and the
/// reduction's inputs. Build with [`DpoArgs::new`] (reduction `mean`, both policy gradients
/// wanted, no weight, mask or cotangent) and the builder methods.
#[derive(Clone, Copy, Debug)]
pub struct DpoArgs<'a, T: Element> {
    /// log π(chosen), flattened (row-major).
    pub policy_chosen: &'a [T],
    /// log π(rejected).
    pub policy_rejected: &'a [T],
    /// log π_ref(chosen).
    pub ref_chosen: &'a [T],
    /// log π_ref(rejected).
    pub ref_rejected: &'a [T],
    /// Per-element weights, finite and ≥ 0.
    pub weight: Option<&'a [T]>,
    /// Per-element mask, 0 or 1.
    pub mask: Option<&'a [i64]>,
    /// Scales the gradients: one per element for `none`, one value for `sum` / `mean`.
    pub cotangent: Option<&'a [T]>,
    /// `none`, `sum` or `mean`.
    pub reduction: Reduction,
    /// Compute ∂/∂policy_chosen.
    pub grad_policy_chosen: bool,
    /// Compute ∂/∂policy_rejected.
    pub grad_policy_rejected: bool,
}

impl<'a, T: Element> DpoArgs<'a, T> {
    /// The four log-probs; reduction `mean`; both policy gradients; nothing else.
    pub fn new(
        policy_chosen: &'a [T],
        policy_rejected: &'a [T],
        ref_chosen: &'a [T],
        ref_rejected: &'a [T],
    ) -> Self {
        DpoArgs {
            policy_chosen,
            policy_rejected,
            ref_chosen,
            ref_rejected,
            weight: None,
            mask: None,
            cotangent: None,
            reduction: Reduction::Mean,
            grad_policy_chosen: true,
            grad_policy_rejected: true,
        }
    }
    reduction_builders!();
    /// Which gradients to compute.
    pub fn grads(mut self, policy_chosen: bool, policy_rejected: bool) -> Self {
        self.grad_policy_chosen = policy_chosen;
        self.grad_policy_rejected = policy_rejected;
        self
    }
}

/// Value and gradients of `dpo`.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<T, O> {
    /// One element when reduced (shape `[]`), one per input element for `none` (0 at masked or
    /// zero-weight positions).
    pub value: Vec<O>,
    /// ∂value/∂policy_chosen (times the cotangent), if asked for; 0 at skipped positions.
    pub grad_policy_chosen: Option<Vec<T>>,
    /// ∂value/∂policy_rejected (times the cotangent), if asked for.
    pub grad_policy_rejected: Option<Vec<T>>,
}

output_default!(grad_policy_chosen, grad_policy_rejected);

/// ε·σ(x) − (1 − ε)·σ(−x) for x = x_hi + x_lo (see the module docs).
#[inline(always)]
fn dpo_dx(eps: f64, x_hi: f64, x_lo: f64) -> f64 {
    let p1 = if eps != 0.0 { eps * sigmoid(x_hi) } else { 0.0 };
    let p2 = (1.0 - eps) * sigmoid(-x_hi);
    if p1 > 0.0 && p2 > 0.0 && p1 <= 2.0 * p2 && p2 <= 2.0 * p1 {
        // ε·e^x/(1 − ε) in [½, 2]: x ∈ [−1.1, 745.2], e^x in range
        return dpo_crossing(eps, x_hi, x_lo);
    }
    // (logistic_grad(ε, ε, −x) = −ε·σ(x) + (1 − ε)·σ(−x), absent terms included)
    -logistic_grad(eps, eps, -x_hi)
}

#[cold]
fn dpo_crossing(eps: f64, x_hi: f64, x_lo: f64) -> f64 {
    // 1 − ε exactly; e^{x_hi} = 2^k·(e0 + e1); e^{x_lo} = 1 + x_lo to 2^−106
    // (|x_lo| ≤ 2^−53·|x_hi|)
    let (b_hi, b_lo) = two_sum(1.0, -eps);
    let (k, (e0, e1)) = exp_dd(x_hi);
    let e1 = e1 + e0 * x_lo;
    // ε·2^k ≈ (1 − ε)/e0 ∈ [¼, 3]: exact (a subnormal ε only meets a large k, and k < 0 only
    // an ε near ½)
    let eps_k = libm::scalbn(eps, k);
    let (p, pe) = two_prod(eps_k, e0);
    // ε·e^x ≈ 1 − ε within a factor 2: p − b_hi is exact (Sterbenz)
    let d = (p - b_hi) + (pe + eps_k * e1 - b_lo);
    d * sigmoid(-x_hi)
}

/// `dpo` at one element: (l, [∂l/∂πc, ∂l/∂πr]), l as a pair.
#[inline(always)]
fn dpo_point(pc: f64, pr: f64, rc: f64, rr: f64, beta: f64, eps: f64) -> (Pair, [f64; 2]) {
    // h = πc − rc − πr + rr exactly, as hi + lo; x = β·h as hi + lo
    let (h_hi, h_lo) = sum_exact([pc, -rc, -pr, rr]);
    let (x_hi, x_lo) = pair_scale(beta, (h_hi, h_lo));
    if x_hi.is_nan() {
        return ((f64::NAN, 0.0), [f64::NAN, f64::NAN]);
    }
    // l = (1 − ε)·softplus(−x) + ε·softplus(x), 1 − ε exact as b_hi + b_lo
    let (b_hi, b_lo) = two_sum(1.0, -eps);
    let sn = softplus_pair(-x_hi, -x_lo);
    let mut l = pair_scale(b_hi, sn);
    if b_lo != 0.0 && l.0.is_finite() {
        l.1 += b_lo * sn.0;
    }
    if eps != 0.0 {
        l = pair_sum(l, pair_scale(eps, softplus_pair(x_hi, x_lo)));
    }
    let g = beta * dpo_dx(eps, x_hi, x_lo);
    (l, [g, -g])
}

fn check_params(beta: f64, eps: f64) -> Result<(), LossError> {
    if !(beta > 0.0 && beta.is_finite()) {
        return Err(bad_param("beta", beta, "float > 0"));
    }
    if !(0.0..=0.5).contains(&eps) {
        return Err(bad_param("label_smoothing", eps, "float in [0, 0.5]"));
    }
    Ok(())
}

/// Direct Preference Optimization loss with inverse temperature `beta` > 0 and label smoothing
/// `label_smoothing` ∈ [0, ½] (see the module docs for the formula and the numerics). Errors
/// (never panics) on lengths, params outside their domains, and the weight / mask / cotangent
/// checks.
pub fn dpo<T: Element, O: Element>(
    args: &DpoArgs<'_, T>,
    beta: f64,
    label_smoothing: f64,
) -> Result<Output<T, O>, LossError> {
    let mut out = Output::default();
    dpo_into(args, beta, label_smoothing, &mut out)?;
    Ok(out)
}

/// [`dpo`] into caller-owned buffers (reusing their allocations; on error `out` is unchanged).
pub fn dpo_into<T: Element, O: Element>(
    args: &DpoArgs<'_, T>,
    beta: f64,
    label_smoothing: f64,
    out: &mut Output<T, O>,
) -> Result<(), LossError> {
    check_params(beta, label_smoothing)?;
    let n = args.policy_chosen.len();
    for (name, v) in [
        ("policy_rejected", args.policy_rejected),
        ("ref_chosen", args.ref_chosen),
        ("ref_rejected", args.ref_rejected),
    ] {
        check_len(name, v.len(), n, "policy_chosen")?;
    }
    let plan = Plan::new(n, args.weight, args.mask, args.cotangent, args.reduction)?;
    let (pc, pr, rc, rr) = (
        args.policy_chosen,
        args.policy_rejected,
        args.ref_chosen,
        args.ref_rejected,
    );
    let t = 1.0 - label_smoothing;
    // the fast path's b = 1 − t must be ε to 2⁻⁴⁰ relatively (true for ε = 0 and ε ≥ 2⁻¹³)
    let b_ok = label_smoothing == 0.0 || ((1.0 - t) - label_smoothing).abs() <= label_smoothing * 2f64.powi(-40);
    if let (Some(scale), true) = (plan.fast_scale(), b_ok) {
        let none = args.reduction == Reduction::None;
        let want = [args.grad_policy_chosen, args.grad_policy_rejected];
        let job = DpoFast { x: [pc, pr, rc, rr], beta, eps: label_smoothing, t, scale, none, want };
        job.run(&plan, out);
        return Ok(());
    }
    run2(
        &plan,
        args.cotangent,
        [args.grad_policy_chosen, args.grad_policy_rejected],
        &mut out.value,
        [&mut out.grad_policy_chosen, &mut out.grad_policy_rejected],
        |j| {
            dpo_point(
                pc[j].to_f64(),
                pr[j].to_f64(),
                rc[j].to_f64(),
                rr[j].to_f64(),
                beta,
                label_smoothing,
            )
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fast path.

/// From this many elements (feature `parallel`, a pool of more than one thread) the fast path
/// runs in tasks of DPO_TASK elements on rayon's pool; the results do not depend on either.
#[cfg(feature = "parallel")]
const DPO_PAR_MIN: usize = 1 << 18;
#[cfg(feature = "parallel")]
const DPO_TASK: usize = 1 << 15;

/// dpo's fast path, for a plan without mask, weight or per-element cotangent (and ε = 0 or
/// ε ≥ about 2⁻¹³, so that 1 − (1 − ε) is ε to 2⁻⁴⁰): with x = β·h, dpo *is* bce_logits at
/// logit x and target t = 1 − ε — l = t·softplus(−x) + (1 − t)·softplus(x), ∂l/∂x = (1 − t)·σ(x)
/// − t·σ(−x) — so each element is [`bce_fast_element`] (its domain |x| ≤ 700, its
/// no-cancellation test, its bound: l within 2⁻⁴⁸, ∂l/∂x within 2⁻³⁷ relatively), taken where
/// h = (πc − rc) − (πr − rr) is exact in f64 (its three TwoSum errors are 0; then x = RN(β·h)
/// is within 2⁻⁵³ of the exact product, which moves l and ∂l/∂x by at most |x|·2⁻⁵³ ≤ 2⁻⁴³
/// relatively). Everything else — an inexact h, |x| > 700, the gradient's zero crossing,
/// NaN, ±inf — takes [`dpo_point`], the exact path, element by element. The value terms
/// (≥ 0) are summed as the other fast paths sum theirs (8-lane block sums, the block totals
/// compensated; the exact path's low parts likewise) and the total rounded once, to odd, for
/// the output dtype; the gradients are scaled as [`Plan`] scales them ([`FastScale`]).
/// Written once over [`LaneIo`] and instantiated per code generation: the same operations per
/// element, so the same bits on every CPU and for every [`Codegen`].
#[derive(Clone, Copy)]
struct DpoFast<'a, T> {
    x: [&'a [T]; 4],
    beta: f64,
    eps: f64,
    t: f64,
    scale: FastScale,
    none: bool,
    want: [bool; 2],
}

impl<T: Element> DpoFast<'_, T> {
    fn run<O: Element>(&self, plan: &Plan<'_, T>, out: &mut Output<T, O>) {
        let n = self.x[0].len();
        let zero = T::from_f64(0.0);
        let mut gc = out.grad_policy_chosen.take().unwrap_or_default();
        let mut gr = out.grad_policy_rejected.take().unwrap_or_default();
        for (g, w) in [(&mut gc, self.want[0]), (&mut gr, self.want[1])] {
            if w {
                size_output(g, n, zero);
            } else {
                g.clear();
            }
        }
        if self.none {
            size_output(&mut out.value, n, O::from_f64(0.0));
        } else {
            out.value.clear();
        }
        let mut acc = CompensatedSum::new();
        // the code generation is chosen here, on the caller's thread (`with_codegen`)
        let cg = codegen();
        let (value, g) = (&mut out.value[..], [&mut gc[..], &mut gr[..]]);
        #[cfg(feature = "parallel")]
        if n >= DPO_PAR_MIN && rayon::current_num_threads() > 1 {
            self.run_tasks(cg, value, g, &mut acc);
        } else {
            self.dispatch(cg, value, g, &mut |b| acc.add(b));
        }
        #[cfg(not(feature = "parallel"))]
        self.dispatch(cg, value, g, &mut |b| acc.add(b));
        if !self.none {
            out.value.push(reduced_value(plan, &acc));
        }
        out.grad_policy_chosen = self.want[0].then_some(gc);
        out.grad_policy_rejected = self.want[1].then_some(gr);
    }

    /// The blocks of all of `self` in the code generation `cg` (at most the CPU's), each
    /// block's value totals handed to `sink` in order.
    fn dispatch<O: Element>(&self, cg: Codegen, value: &mut [O], g: [&mut [T]; 2], sink: &mut dyn FnMut(f64)) {
        match cg {
            // SAFETY: `cg` is at most the CPU's: it has AVX-512 F + DQ, AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Codegen::Avx512 => unsafe { self.blocks_avx512(value, g, sink) },
            // SAFETY: the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Codegen::Avx2 => unsafe { self.blocks_avx2(value, g, sink) },
            _ => self.blocks::<Lanes<FAST_LANES>, O>(value, g, sink),
        }
    }

    /// [`Self::dispatch`] spread over rayon's pool: tasks of DPO_TASK elements (whole blocks),
    /// each keeping its blocks' totals; the totals are then added in task order — the same
    /// sums in the same order as one thread: the same bits for any pool.
    #[cfg(feature = "parallel")]
    fn run_tasks<O: Element>(&self, cg: Codegen, value: &mut [O], g: [&mut [T]; 2], acc: &mut CompensatedSum) {
        use rayon::prelude::*;
        let n = self.x[0].len();
        let [gc, gr] = g;
        let mut tasks = Vec::with_capacity(n.div_ceil(DPO_TASK));
        let (mut vrest, mut crest, mut rrest) = (value, gc, gr);
        let mut lo = 0;
        while lo < n {
            let len = DPO_TASK.min(n - lo);
            let cut = |w: bool| if w { len } else { 0 };
            let (v, vr) = std::mem::take(&mut vrest).split_at_mut(cut(self.none));
            let (c, cr) = std::mem::take(&mut crest).split_at_mut(cut(self.want[0]));
            let (r, rr) = std::mem::take(&mut rrest).split_at_mut(cut(self.want[1]));
            (vrest, crest, rrest) = (vr, cr, rr);
            tasks.push((lo, v, c, r, Vec::new()));
            lo += len;
        }
        tasks.par_iter_mut().for_each(|(lo, v, c, r, totals)| {
            let hi = (*lo + DPO_TASK).min(n);
            let job = DpoFast { x: self.x.map(|x| &x[*lo..hi]), ..*self };
            job.dispatch(cg, v, [c, r], &mut |b| totals.push(b));
        });
        for (.., totals) in &tasks {
            for &b in totals {
                acc.add(b);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
    unsafe fn blocks_avx512<O: Element>(&self, value: &mut [O], g: [&mut [T]; 2], sink: &mut dyn FnMut(f64)) {
        self.blocks::<F64x8, O>(value, g, sink)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn blocks_avx2<O: Element>(&self, value: &mut [O], g: [&mut [T]; 2], sink: &mut dyn FnMut(f64)) {
        self.blocks::<F64x4, O>(value, g, sink)
    }

    /// Block by block: the inputs widened in bulk, x where h is exact (NaN, which the fast
    /// element refuses, elsewhere), the fast element over whole vectors V and then one by one
    /// (its f64 instantiation: the same operations), [`dpo_point`] where it refused, the
    /// outputs scaled and narrowed in bulk, the value terms (hi, lo) summed.
    #[inline(always)]
    fn blocks<V: LaneIo, O: Element>(&self, value: &mut [O], g: [&mut [T]; 2], sink: &mut dyn FnMut(f64)) {
        let n = self.x[0].len();
        let [gc, gr] = g;
        let mut xs = [[0.0f64; BLOCK]; 4];
        let (mut xb, mut vb, mut lob, mut gb) = ([0.0f64; BLOCK], [0.0f64; BLOCK], [0.0f64; BLOCK], [0.0f64; BLOCK]);
        let (beta, tv) = (self.beta, V::splat(self.t));
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            let len = end - start;
            for (k, x) in self.x.iter().enumerate() {
                load_f64(&x[start..end], &mut xs[k][..len]);
            }
            let [pc, pr, rc, rr] = &xs;
            for j in 0..len {
                let (a, ea) = two_sum(pc[j], -rc[j]);
                let (b, eb) = two_sum(pr[j], -rr[j]);
                let (h, eh) = two_sum(a, -b);
                let exact = ea == 0.0 && eb == 0.0 && eh == 0.0;
                xb[j] = if exact { beta * h } else { f64::NAN };
            }
            let mut refused = false;
            let mut j = 0;
            while j + V::N <= len {
                let (v, d, ok) = bce_fast_element(V::load(&xb[j..]), tv);
                v.store(&mut vb[j..]);
                d.store(&mut gb[j..]);
                refused |= V::bits(ok) != (1u32 << V::N) - 1;
                j += V::N;
            }
            let mut okb = [true; BLOCK];
            for k in j..len {
                let (v, d, ok) = bce_fast_element(xb[k], self.t);
                (vb[k], gb[k], okb[k]) = (v, d, ok);
                refused |= !ok;
            }
            if refused {
                // which ones: the same test again, element by element (rare: cold)
                for k in 0..j {
                    okb[k] = bce_fast_element(xb[k], self.t).2;
                }
            }
            let mut any_lo = false;
            for k in 0..len {
                if okb[k] {
                    lob[k] = 0.0;
                    gb[k] *= beta;
                } else {
                    let ((hi, lo), [d, _]) = dpo_point(pc[k], pr[k], rc[k], rr[k], beta, self.eps);
                    (vb[k], lob[k], gb[k]) = (hi, if hi.is_finite() { lo } else { 0.0 }, d);
                    any_lo |= lob[k] != 0.0;
                }
            }
            if self.none {
                if any_lo {
                    for k in 0..len {
                        vb[k] = round_odd(vb[k], lob[k]);
                    }
                }
                store_f64(&vb[..len], &mut value[start..end]);
            } else {
                // the terms are ≥ 0 (softplus): plain 8-lane block sums, the block totals
                // compensated, as the other fast paths sum (reduce's note on the error)
                sink(block_sum(&vb[..len]));
                if any_lo {
                    sink(block_sum(&lob[..len]));
                }
            }
            if self.want[0] || self.want[1] {
                let (ga, gb2) = xs.split_at_mut(1);
                for k in 0..len {
                    (ga[0][k], gb2[0][k]) = self.scale.apply_pair(gb[k]);
                }
                if self.want[0] {
                    store_f64(&ga[0][..len], &mut gc[start..end]);
                }
                if self.want[1] {
                    store_f64(&gb2[0][..len], &mut gr[start..end]);
                }
            }
            start = end;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Glue from a validated `Case`.

/// Evaluate a validated preference case with input type `T` and value type `O`.
pub(crate) fn evaluate_typed<T: Element, O: Element>(
    case: &Case,
    checked: &Checked,
) -> Result<Response, LossError> {
    if case.loss != "dpo" {
        return Err(LossError::unsupported(format!(
            "no preference kernel for {}",
            case.loss
        )));
    }
    let pc = req_input::<T>(case, "policy_chosen")?;
    let pr = req_input::<T>(case, "policy_rejected")?;
    let rc = req_input::<T>(case, "ref_chosen")?;
    let rr = req_input::<T>(case, "ref_rejected")?;
    let (weight, mask, cotangent) = extras::<T>(case)?;
    let wants = |n: &str| case.grad.iter().any(|g| g == n);
    let args = DpoArgs {
        weight: weight.as_deref(),
        mask,
        cotangent: cotangent.as_deref(),
        reduction: case.reduction(),
        grad_policy_chosen: wants("policy_chosen"),
        grad_policy_rejected: wants("policy_rejected"),
        ..DpoArgs::new(&pc, &pr, &rc, &rr)
    };
    let beta = super::classification::req_param(case, "beta")?;
    let eps = super::classification::req_param(case, "label_smoothing")?;
    let out: Output<T, O> = dpo(&args, beta, eps)?;
    Ok(response2(
        case,
        checked,
        "policy_chosen",
        out.value,
        [
            ("policy_chosen", out.grad_policy_chosen),
            ("policy_rejected", out.grad_policy_rejected),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_is_accurate() {
        // ε = ½, x = 2^-40: ½(σ(x) − σ(−x)) = ½·tanh(x/2) ≈ x/4
        let x = 2f64.powi(-40);
        let g = dpo_dx(0.5, x, 0.0);
        assert!((g / (x / 4.0) - 1.0).abs() < 1e-15, "{g:e}");
        assert_eq!(dpo_dx(0.5, 0.0, 0.0), 0.0);
        // the low part of x counts: x = 0 + 2^-60
        let g = dpo_dx(0.5, 0.0, 2f64.powi(-60));
        assert!((g / 2f64.powi(-62) - 1.0).abs() < 1e-12, "{g:e}");
        // ε = 0: −σ(−x), an absent term at x = +inf
        assert_eq!(dpo_dx(0.0, f64::INFINITY, 0.0), 0.0);
        assert_eq!(dpo_dx(0.0, f64::NEG_INFINITY, 0.0), -1.0);
        assert_eq!(dpo_dx(0.25, f64::INFINITY, 0.0), 0.25);
    }

    #[test]
    fn huge_negative_margin_is_finite() {
        let (l, g) = dpo_point(-2e4, -1e4, -1e4, -1e4, 0.1, 0.0);
        assert_eq!(l.0 + l.1, 1000.0);
        assert_eq!(g, [-0.1, 0.1]);
        let (l, _) = dpo_point(-1e4, -1e4, -1e4, -1e4, 0.1, 0.0);
        assert_eq!(l, (std::f64::consts::LN_2, 0.0));
        // h = −(511·2^119 − 1): l = 511·2^119 − 1 (just below bf16's overflow threshold)
        let (l, _) = dpo_point(
            -(255.0 * 2f64.powi(120)),
            2f64.powi(119),
            -1.0,
            0.0,
            1.0,
            0.0,
        );
        assert_eq!(l, (511.0 * 2f64.powi(119), -1.0));
    }
}
