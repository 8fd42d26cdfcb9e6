//! Reductions, masks, weights and cotangents: the one piece every kernel family shares.
//!
//! DESIGN.md's policies, implemented once:
//!
//! - `sum` = Σ m·w·l, `mean` = Σ m·w·l / Σ m·w, `none` gives m·w·l per element (0 where masked).
//! - **Empty mean is zero**: when the denominator Σ m·w is exactly 0 (everything masked, every
//!   weight 0, N = 0) the value and every gradient are exactly 0, and no loss is evaluated.
//! - A masked or zero-weight position is *skipped*: its loss and derivatives are never computed,
//!   so a NaN or ±inf sitting there cannot leak (nothing is multiplied by 0).
//! - Gradients are termwise: ∂/∂x_j = m_j·w_j·∂l_j/∂x_j·cot/denom, with `cot` the cotangent
//!   (per element for `none`, a scalar for the reduced ones, 1 when absent) and `denom` the
//!   mean's denominator (1 for `sum` and `none`). A NaN in one term does not touch the others.
//! - An exact zero factor makes a gradient term exactly 0 even when another factor is ±inf or
//!   NaN: a derivative that is exactly 0 (e.g. mse at r = 0, or the kink selection nearest 0)
//!   times an infinite cotangent is 0 (the limit along the cotangent, the other inputs fixed),
//!   and a zero cotangent gives 0 whatever the derivative — the same rule as for a zero weight.
//!
//! Everything is accumulated in f64 with compensated (TwoSum) summation over several lanes, so
//! a sum of 2^17 terms is within about one f64 ulp of the exact sum of the computed terms plus
//! n·2^-106·Σ|terms| — far below DESIGN.md's conditioning allowance κ·2^-53·|exact|. Each output
//! is rounded once, from f64, to its dtype.

use super::math::two_sum;
use losscheck_core::{Element, LossError, Reduction};

/// Independent accumulator lanes (instruction-level parallelism; later a SIMD width).
const LANES: usize = 4;

/// A compensated sum over a few (4) independent lanes.
///
/// Non-finite terms are handled exactly: the plain lane sums carry ±inf and NaN with IEEE
/// semantics (+inf + −inf = NaN), and the compensation is only used when the plain sum is
/// finite (so every term and every partial sum was finite and the TwoSum errors are exact).
#[derive(Clone, Copy, Debug, Default)]
pub struct CompensatedSum {
    s: [f64; LANES],
    c: [f64; LANES],
}

impl CompensatedSum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `x` into lane `lane % LANES`.
    #[inline(always)]
    pub fn add_lane(&mut self, lane: usize, x: f64) {
        let k = lane % LANES;
        let (s, e) = two_sum(self.s[k], x);
        self.s[k] = s;
        self.c[k] += e;
    }

    /// Add `x` into lane 0.
    #[inline(always)]
    pub fn add(&mut self, x: f64) {
        self.add_lane(0, x);
    }

    /// The sum, rounded once to f64 (up to the compensation's residual error).
    pub fn total(&self) -> f64 {
        self.total_pair().0
    }

    /// The sum as an unevaluated pair hi + lo, hi = [`total`](Self::total) (lo = 0 when the
    /// sum is not finite): for a final rounding to a narrower type that must see lo
    /// ([`round_odd`](super::math::round_odd)).
    pub fn total_pair(&self) -> (f64, f64) {
        let plain: f64 = self.s.iter().sum();
        if !plain.is_finite() {
            return (plain, 0.0);
        }
        let mut s = 0.0f64;
        let mut c = 0.0f64;
        for k in 0..LANES {
            let (t, e) = two_sum(s, self.s[k]);
            s = t;
            c += e + self.c[k];
        }
        let (total, e) = two_sum(s, c);
        if total.is_finite() {
            (total, e)
        } else {
            (plain, 0.0)
        }
    }
}

/// Compensated sum of a slice.
pub fn sum_f64(xs: &[f64]) -> f64 {
    let mut acc = CompensatedSum::new();
    let mut chunks = xs.chunks_exact(LANES);
    for ch in &mut chunks {
        for (k, &x) in ch.iter().enumerate() {
            acc.add_lane(k, x);
        }
    }
    for &x in chunks.remainder() {
        acc.add(x);
    }
    acc.total()
}

/// The cotangent, as the reduction sees it.
#[derive(Clone, Copy, Debug)]
enum Cot<'a, T> {
    /// Absent: 1.
    One,
    /// Reduced output: one scalar.
    Scalar(f64),
    /// `none`: one per element.
    PerElement(&'a [T]),
}

/// A validated reduction over `n` elementwise (or row-wise) terms: mask, weights, cotangent,
/// the kind of reduction and the mean's denominator.
///
/// Build one with [`Plan::new`] (which checks lengths and values and names the offending input,
/// index and value), then let [`Plan::run`] drive a per-element kernel. Reusable by every loss
/// family whose output has one term per position.
#[derive(Clone, Debug)]
pub struct Plan<'a, T: Element> {
    n: usize,
    weight: Option<&'a [T]>,
    mask: Option<&'a [i64]>,
    reduction: Reduction,
    cot: Cot<'a, T>,
    /// Σ m·w for `mean`, 1 otherwise.
    denom: f64,
}

impl<'a, T: Element> Plan<'a, T> {
    /// Check and prepare a reduction over `n` terms.
    ///
    /// - `weight`: one per term, finite and ≥ 0 where unmasked (NaN, ±inf, negative are
    ///   invalid there, as `catalogue::validate` says; a masked position may hold anything).
    /// - `mask`: one per term, 0 or 1.
    /// - `cotangent`: `n` values for `none`, exactly one for `sum` / `mean`.
    /// - `reduction`: `none`, `sum` or `mean` (`sequence_mean` is not elementwise).
    pub fn new(
        n: usize,
        weight: Option<&'a [T]>,
        mask: Option<&'a [i64]>,
        cotangent: Option<&'a [T]>,
        reduction: Reduction,
    ) -> Result<Self, LossError> {
        if reduction == Reduction::SequenceMean {
            return Err(LossError::invalid(
                "reduction sequence_mean is only for cross_entropy on [B,T,C]",
            ));
        }
        if let Some(w) = weight {
            if w.len() != n {
                return Err(LossError::invalid(format!(
                    "input weight: {} elements where {n} are expected",
                    w.len()
                )));
            }
            for (k, &v) in w.iter().enumerate() {
                let x = v.to_f64();
                // A masked position may hold anything (DESIGN.md: range checks skip it).
                let masked = mask.is_some_and(|m| m.get(k) == Some(&0));
                if !masked && !(x.is_finite() && x >= 0.0) {
                    return Err(LossError::invalid(format!(
                        "input weight[{k}]={x:?} is not a finite value >= 0"
                    )));
                }
            }
        }
        if let Some(m) = mask {
            if m.len() != n {
                return Err(LossError::invalid(format!(
                    "input mask: {} elements where {n} are expected",
                    m.len()
                )));
            }
            if let Some((k, v)) = m.iter().enumerate().find(|(_, &v)| v != 0 && v != 1) {
                return Err(LossError::invalid(format!(
                    "input mask[{k}]={v} is not 0 or 1"
                )));
            }
        }
        let cot = match (cotangent, reduction) {
            (None, _) => Cot::One,
            (Some(c), Reduction::None) => {
                if c.len() != n {
                    return Err(LossError::invalid(format!(
                        "input cotangent: {} elements, expected {n} (the output's) for reduction none",
                        c.len()
                    )));
                }
                Cot::PerElement(c)
            }
            (Some(c), _) => {
                if c.len() != 1 {
                    return Err(LossError::invalid(format!(
                        "input cotangent: {} elements, expected one (shape []) for reduction {reduction}",
                        c.len()
                    )));
                }
                Cot::Scalar(c[0].to_f64())
            }
        };
        let mut plan = Plan {
            n,
            weight,
            mask,
            reduction,
            cot,
            denom: 1.0,
        };
        if reduction == Reduction::Mean {
            plan.denom = plan.denominator();
        }
        Ok(plan)
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn reduction(&self) -> Reduction {
        self.reduction
    }

    /// The mean's denominator Σ m·w (1 for `sum` and `none`).
    pub fn denom(&self) -> f64 {
        self.denom
    }

    /// Is this an empty mean (denominator exactly 0)? Then everything is 0.
    pub fn is_empty_mean(&self) -> bool {
        self.reduction == Reduction::Mean && self.denom == 0.0
    }

    /// The coefficient m_j·w_j of term `j`; exactly 0 for a skipped term.
    #[inline(always)]
    pub fn coef(&self, j: usize) -> f64 {
        if let Some(m) = self.mask {
            if m[j] == 0 {
                return 0.0;
            }
        }
        match self.weight {
            Some(w) => w[j].to_f64(),
            None => 1.0,
        }
    }

    /// Σ m·w, compensated (weights are ≥ 0 and finite: never NaN, never cancels; exactly 0 only
    /// when no term is active).
    fn denominator(&self) -> f64 {
        match (self.weight, self.mask) {
            (None, None) => self.n as f64,
            (None, Some(m)) => m.iter().filter(|&&v| v != 0).count() as f64,
            (Some(_), _) => {
                let mut acc = CompensatedSum::new();
                for j in 0..self.n {
                    acc.add_lane(j, self.coef(j));
                }
                acc.total()
            }
        }
    }

    /// Shape of the value: `n` components for `none`, one otherwise.
    pub fn value_len(&self) -> usize {
        if self.reduction == Reduction::None {
            self.n
        } else {
            1
        }
    }

    /// Drive a per-term kernel through the reduction.
    ///
    /// `kernel(j)` returns, for an active term `j` (it is never called for a masked or
    /// zero-weight one), the loss l_j and its K local derivatives ∂l_j/∂x (one per
    /// differentiable input), all in f64. `want[k]` says whether gradient k is wanted.
    /// Returns the value (rounded once to `O`: `n` components for `none`, one otherwise) and
    /// each wanted gradient (rounded once to `T`, 0 at skipped positions).
    pub fn run<O: Element, const K: usize, F>(
        &self,
        want: [bool; K],
        kernel: F,
    ) -> (Vec<O>, [Option<Vec<T>>; K])
    where
        F: Fn(usize) -> (f64, [f64; K]),
    {
        let mut value = Vec::new();
        let mut grads: [Vec<T>; K] = std::array::from_fn(|_| Vec::new());
        self.run_into(want, kernel, &mut value, &mut grads);
        let mut it = grads.into_iter();
        let grads = std::array::from_fn(|k| {
            let g = it.next().unwrap_or_default();
            want[k].then_some(g)
        });
        (value, grads)
    }

    /// [`Plan::run`] into caller-owned buffers, reusing their allocations: `value` is replaced
    /// by the value, `grads[k]` by gradient k when `want[k]` (emptied otherwise). For repeated
    /// calls on large batches this avoids allocating (and first-touching) fresh output memory.
    pub fn run_into<O: Element, const K: usize, F>(
        &self,
        want: [bool; K],
        kernel: F,
        value: &mut Vec<O>,
        grads: &mut [Vec<T>; K],
    ) where
        F: Fn(usize) -> (f64, [f64; K]),
    {
        let n = self.n;
        let zero_t = T::from_f64(0.0);
        let zero_o = O::from_f64(0.0);
        value.clear();
        for g in grads.iter_mut() {
            g.clear();
        }
        // A zero scalar cotangent makes every gradient term exactly 0.
        let zero_cot = matches!(self.cot, Cot::Scalar(c) if c == 0.0);
        if self.is_empty_mean() || zero_cot {
            for (k, g) in grads.iter_mut().enumerate() {
                if want[k] {
                    g.resize(n, zero_t);
                }
            }
            if self.is_empty_mean() {
                value.resize(self.value_len(), zero_o);
                return;
            }
        }
        let store: [bool; K] = std::array::from_fn(|k| want[k] && !zero_cot);
        for (k, g) in grads.iter_mut().enumerate() {
            if store[k] {
                g.reserve_exact(n);
            }
        }
        if self.reduction == Reduction::None {
            value.reserve_exact(n);
        }
        let dense = self.mask.is_none() && self.weight.is_none();
        let none = self.reduction == Reduction::None;
        match (dense, none) {
            (true, true) => self.inner::<O, K, F, true, true>(&kernel, store, value, grads),
            (true, false) => self.inner::<O, K, F, true, false>(&kernel, store, value, grads),
            (false, true) => self.inner::<O, K, F, false, true>(&kernel, store, value, grads),
            (false, false) => self.inner::<O, K, F, false, false>(&kernel, store, value, grads),
        }
    }

    /// The loop, monomorphised on "no mask and no weight" and on `none`.
    #[inline(always)]
    fn inner<O: Element, const K: usize, F, const DENSE: bool, const NONE: bool>(
        &self,
        kernel: &F,
        store: [bool; K],
        value: &mut Vec<O>,
        grads: &mut [Vec<T>; K],
    ) where
        F: Fn(usize) -> (f64, [f64; K]),
    {
        let n = self.n;
        let zero_t = T::from_f64(0.0);
        let zero_o = O::from_f64(0.0);
        let scale = GradScale::new(self);
        let mut acc = CompensatedSum::new();
        let mut step = |j: usize, lane: usize| {
            let c = if DENSE { 1.0 } else { self.coef(j) };
            if !DENSE && c == 0.0 {
                if NONE {
                    value.push(zero_o);
                }
                for k in 0..K {
                    if store[k] {
                        grads[k].push(zero_t);
                    }
                }
                return;
            }
            let (l, g) = kernel(j);
            if NONE {
                value.push(O::from_f64(c * l));
            } else {
                acc.add_lane(lane, c * l);
            }
            for k in 0..K {
                if store[k] {
                    let x = match scale {
                        GradScale::Mul(s) => c * g[k] * s,
                        GradScale::Div(cot, den) => grad_term(c, g[k], cot, den),
                        GradScale::PerElement(cot) => grad_term(c, g[k], cot[j].to_f64(), 1.0),
                    };
                    grads[k].push(T::from_f64(x));
                }
            }
        };
        for j in 0..n {
            step(j, j % LANES);
        }
        if !NONE {
            let total = acc.total();
            let v = if self.reduction == Reduction::Mean {
                total / self.denom
            } else {
                total
            };
            value.push(O::from_f64(v));
        }
    }
}

/// How a gradient term c·g·cot/den is formed, decided once per call.
#[derive(Clone, Copy)]
enum GradScale<'a, T> {
    /// s = cot/den is exact (den a power of 2), finite and non-zero: c·g·s, and for g = 0 that
    /// is 0 already (finite s).
    Mul(f64),
    /// The general reduced case: (c·g·cot)/den with the exact-zero rule.
    Div(f64, f64),
    /// `none`: c·g·cot_j (den = 1) with the exact-zero rule.
    PerElement(&'a [T]),
}

impl<'a, T: Element> GradScale<'a, T> {
    fn new(plan: &Plan<'a, T>) -> Self {
        let den = plan.denom;
        let cot = match plan.cot {
            Cot::PerElement(c) => return GradScale::PerElement(c),
            Cot::One => 1.0,
            Cot::Scalar(c) => c,
        };
        let pow2 = den > 0.0 && den.is_finite() && (den.to_bits() & ((1u64 << 52) - 1)) == 0;
        let s = cot / den;
        if pow2 && s.is_finite() && s != 0.0 && s * den == cot {
            GradScale::Mul(s)
        } else {
            GradScale::Div(cot, den)
        }
    }
}

/// One termwise gradient component c·g·cot/den (c = m·w > 0, g = ∂l/∂x, den > 0 the mean's
/// denominator or 1), with the exact-zero rule: g = 0 or cot = 0 gives exactly 0. The division
/// is done per component (not a multiplication by a rounded 1/den) so that a representable
/// quotient comes out exact.
#[inline(always)]
pub fn grad_term(c: f64, g: f64, cot: f64, den: f64) -> f64 {
    if g == 0.0 || cot == 0.0 {
        0.0
    } else {
        c * g * cot / den
    }
}

// ---------------------------------------------------------------------------------------------
// Fast paths: blocks of f64 lanes, bulk dtype conversion, runtime dispatch.
//
// The elementwise kernels' common configuration (no mask, no weight, no per-element cotangent)
// runs as tight loops over blocks of `BLOCK` elements: the inputs of a block are converted in
// bulk into f64 scratch arrays on the stack, the loss is computed lane by lane with IEEE basic
// operations only, and the outputs are rounded in bulk. Value sums are plain f64 partial sums
// over `FAST_LANES` lanes inside a block (lane k takes the block's elements j ≡ k mod
// FAST_LANES, lanes combined in a fixed tree), and the block totals are accumulated in order
// with [`CompensatedSum`]: the order of every operation is fixed by the element indices alone,
// so the result is the same bits on every platform and for either code generation (plain or
// AVX2, [`simd_level`]). Error of a reduced value, for non-negative terms l_j (every fast path
// sums such terms): each block total is within (BLOCK/FAST_LANES + 3)·2^-53 ≈ 2^-47 relatively
// of the exact block sum (a recursive sum of m non-negative terms is within (m−1)·u, u = 2^-53,
// relatively), and the compensated sum of the block totals adds about 2^-53 more — relative
// error < 2^-46 of the sum of the computed terms, whatever n (no cancellation: the terms are
// ≥ 0). Far below an f32 ulp (2^-24 relatively); then one rounding to the output dtype.

/// Elements per block of the fast paths (a multiple of `FAST_LANES`).
pub(crate) const BLOCK: usize = 256;
/// Independent f64 partial sums inside a block.
pub(crate) const FAST_LANES: usize = 8;

/// The code generation available at run time: `true` when the CPU has AVX2 and FMA (x86-64),
/// detected once and cached. The fast paths are compiled twice — plain (the target's baseline,
/// SSE2 on x86-64) and inside `#[target_feature(enable = "avx2,fma")]` — from the same
/// scalar-shaped source using only IEEE basic operations (Rust never contracts a·b + c into an
/// fma), so both give the same bits; `tests/kernels_simd_elementwise.rs` checks that.
pub fn simd_level() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::{AtomicU8, Ordering};
        static LEVEL: AtomicU8 = AtomicU8::new(0);
        match LEVEL.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes = std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma");
                LEVEL.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A code generation of the fast paths, from the baseline up. Every level gives the same bits
/// (the same IEEE operations in the same order); a higher one only runs more lanes at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Codegen {
    /// The target's baseline (SSE2 on x86-64), from the scalar-shaped source.
    Plain,
    /// AVX2 + FMA (4 f64 lanes per vector).
    Avx2,
    /// AVX-512 F + DQ, with AVX2 + FMA (8 f64 lanes per vector): bce_logits' fast path.
    Avx512,
}

/// The best code generation this CPU runs, detected once and cached: [`Codegen::Avx512`] when
/// it has AVX-512 F and DQ besides AVX2 and FMA, [`Codegen::Avx2`] with AVX2 and FMA,
/// [`Codegen::Plain`] otherwise (and off x86-64).
pub fn cpu_codegen() -> Codegen {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::{AtomicU8, Ordering};
        static LEVEL: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 + Codegen as u8
        match LEVEL.load(Ordering::Relaxed) {
            1 => Codegen::Plain,
            2 => Codegen::Avx2,
            3 => Codegen::Avx512,
            _ => {
                let level = if !simd_level() {
                    Codegen::Plain
                } else if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
                {
                    Codegen::Avx512
                } else {
                    Codegen::Avx2
                };
                LEVEL.store(1 + level as u8, Ordering::Relaxed);
                level
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Codegen::Plain
    }
}

thread_local! {
    static CODEGEN_CAP: std::cell::Cell<Codegen> = const { std::cell::Cell::new(Codegen::Avx512) };
}

/// Run `f` with the fast paths' code generation on this thread capped at `cap` (the CPU's own
/// level if that is lower) — for tests that compare the code generations bit for bit, and for
/// benchmarks that measure one. Restored afterwards.
#[doc(hidden)]
pub fn with_codegen<R>(cap: Codegen, f: impl FnOnce() -> R) -> R {
    let old = CODEGEN_CAP.with(|c| c.replace(cap));
    let r = f();
    CODEGEN_CAP.with(|c| c.set(old));
    r
}

/// Run `f` with the plain (baseline) code generation of the fast paths on this thread, even
/// where AVX2 is available: [`with_codegen`]`(Codegen::Plain, f)`.
#[doc(hidden)]
pub fn with_plain_codegen<R>(f: impl FnOnce() -> R) -> R {
    with_codegen(Codegen::Plain, f)
}

/// The code generation for this call: the CPU's, capped by [`with_codegen`].
#[inline]
pub(crate) fn codegen() -> Codegen {
    cpu_codegen().min(CODEGEN_CAP.with(|c| c.get()))
}

/// Use the AVX2 code generation (or a higher one) for this call?
#[inline]
pub(crate) fn use_avx2() -> bool {
    codegen() >= Codegen::Avx2
}

/// Reinterpret a slice of `T` as a slice of `U` when they are the same type.
#[inline(always)]
pub(crate) fn same_type<T: 'static, U: 'static>(s: &[T]) -> Option<&[U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr() as *const U, s.len()) })
    } else {
        None
    }
}

#[inline(always)]
pub(crate) fn same_type_mut<T: 'static, U: 'static>(s: &mut [T]) -> Option<&mut [U]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>() {
        // SAFETY: T and U are the same type.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut U, s.len()) })
    } else {
        None
    }
}

/// `dst[i] = src[i]` as f64 (exact), in bulk: f32 by a plain loop, f16 by `half`'s
/// slice conversion (exact, F16C where present), bf16 by a 16-bit shift into an f32.
/// `dst.len() == src.len()`.
#[inline(always)]
pub(crate) fn load_f64<T: Element>(src: &[T], dst: &mut [f64]) {
    use half::slice::HalfFloatSliceExt;
    if let Some(s) = same_type::<T, f32>(src) {
        for (d, &x) in dst.iter_mut().zip(s) {
            *d = x as f64;
        }
    } else if let Some(s) = same_type::<T, half::f16>(src) {
        s.convert_to_f64_slice(dst);
    } else if let Some(s) = same_type::<T, half::bf16>(src) {
        for (d, &x) in dst.iter_mut().zip(s) {
            *d = f32::from_bits((x.to_bits() as u32) << 16) as f64;
        }
    } else {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x.to_f64();
        }
    }
}

/// `dst[i] = T::from_f64(src[i])` (correct rounding, ties to even; the same bits as
/// [`Element::from_f64`] for every non-NaN input), in bulk and vectorizable: f32 by `as`,
/// f16 / bf16 by [`f64_to_f16_bits`] / [`f64_to_bf16_bits`]. `dst.len() == src.len()`.
#[inline(always)]
pub(crate) fn store_f64<T: Element>(src: &[f64], dst: &mut [T]) {
    if let Some(d) = same_type_mut::<T, f32>(dst) {
        for (d, &x) in d.iter_mut().zip(src) {
            *d = x as f32;
        }
    } else if let Some(d) = same_type_mut::<T, half::f16>(dst) {
        for (d, &x) in d.iter_mut().zip(src) {
            *d = half::f16::from_bits(f64_to_f16_bits(x));
        }
    } else if let Some(d) = same_type_mut::<T, half::bf16>(dst) {
        for (d, &x) in d.iter_mut().zip(src) {
            *d = half::bf16::from_bits(f64_to_bf16_bits(x));
        }
    } else {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = T::from_f64(x);
        }
    }
}

const TWO52: f64 = 4_503_599_627_370_496.0; // 2^52

/// The f16 nearest to `x` (ties to even; ±inf beyond the range; NaN → a quiet NaN), as bits —
/// one correct rounding from f64 (`half`'s `f16::from_f64` truncates the low 32 bits first, or
/// rounds twice through f32), with integer and IEEE operations only, branch-free. Normal
/// results: the f64 bits shifted right by 42 with round-to-nearest-even on the dropped bits
/// (a carry into the exponent is the correct next binade), rebiased; subnormal results:
/// |x|·2^24 (exact) rounded to an integer by the 2^52 shift (ties to even), which is the f16
/// subnormal's bit pattern (1024 = the smallest normal).
#[inline(always)]
pub fn f64_to_f16_bits(x: f64) -> u16 {
    const MIN_NORMAL: u64 = 0x3F10_0000_0000_0000; // 2^-14
    const OVERFLOW: u64 = 0x40EF_FE00_0000_0000; // 65520 = 65504 + ½ ulp: ties to 2^16, inf
    const INF: u64 = 0x7FF0_0000_0000_0000;
    const TWO24: f64 = f64::from_bits((1023 + 24) << 52);
    let b = x.to_bits();
    let sign = ((b >> 48) & 0x8000) as u16;
    let a = b & 0x7FFF_FFFF_FFFF_FFFF;
    let normal = ((a + ((1u64 << 41) - 1) + ((a >> 42) & 1)) >> 42).wrapping_sub((1023 - 15) << 10);
    let sub = (f64::from_bits(a) * TWO24 + TWO52).to_bits() & 0x7FF;
    let r = if a > INF {
        0x7E00
    } else if a >= OVERFLOW {
        0x7C00
    } else if a >= MIN_NORMAL {
        normal
    } else {
        sub
    };
    r as u16 | sign
}

/// The bf16 nearest to `x` (ties to even; ±inf beyond the range; NaN → a quiet NaN), as bits —
/// one correct rounding from f64, as [`f64_to_f16_bits`] (normal: shift by 45; subnormal:
/// |x|·2^133 rounded to an integer).
#[inline(always)]
pub fn f64_to_bf16_bits(x: f64) -> u16 {
    const MIN_NORMAL: u64 = (1023 - 126) << 52; // 2^-126
    const OVERFLOW: u64 = 0x47EF_F000_0000_0000; // (2 − 2^-8)·2^127: ties to 2^128, inf
    const INF: u64 = 0x7FF0_0000_0000_0000;
    const TWO133: f64 = f64::from_bits((1023 + 133) << 52);
    let b = x.to_bits();
    let sign = ((b >> 48) & 0x8000) as u16;
    let a = b & 0x7FFF_FFFF_FFFF_FFFF;
    let normal = ((a + ((1u64 << 44) - 1) + ((a >> 45) & 1)) >> 45).wrapping_sub((1023 - 127) << 7);
    let sub = (f64::from_bits(a) * TWO133 + TWO52).to_bits() & 0xFF;
    let r = if a > INF {
        0x7FC0
    } else if a >= OVERFLOW {
        0x7F80
    } else if a >= MIN_NORMAL {
        normal
    } else {
        sub
    };
    r as u16 | sign
}

/// How the fast paths scale a gradient: the reduction's [`GradScale`] for a plan without mask,
/// weight or per-element cotangent (coefficient c = 1 everywhere).
#[derive(Clone, Copy, Debug)]
pub(crate) enum FastScale {
    /// g·s (s = cot/den exact, finite, non-zero).
    Mul(f64),
    /// (g·cot)/den with the exact-zero rule (g = 0 → 0).
    Div(f64, f64),
}

impl FastScale {
    /// The gradient component of a term with local derivative `g`: the same bits as
    /// [`Plan::run`]'s c·g·s, resp. [`grad_term`]`(1, g, cot, den)`.
    #[inline(always)]
    pub(crate) fn apply(self, g: f64) -> f64 {
        match self {
            FastScale::Mul(s) => g * s,
            FastScale::Div(cot, den) => {
                let v = g * cot / den;
                if g == 0.0 {
                    0.0
                } else {
                    v
                }
            }
        }
    }
}

impl FastScale {
    /// The pair (∂/∂x, ∂/∂y) for local derivatives (g, −g): the same bits as
    /// `(apply(g), apply(-g))` (IEEE multiplication and division are symmetric in the sign).
    #[inline(always)]
    pub(crate) fn apply_pair(self, g: f64) -> (f64, f64) {
        match self {
            FastScale::Mul(s) => {
                let v = g * s;
                (v, -v)
            }
            FastScale::Div(cot, den) => {
                let v = g * cot / den;
                if g == 0.0 {
                    (0.0, 0.0)
                } else {
                    (v, -v)
                }
            }
        }
    }
}

impl<'a, T: Element> Plan<'a, T> {
    /// The fast paths' configuration, when this plan has one: no mask, no weight, no
    /// per-element cotangent, n > 0, and a non-zero cotangent (a zero one, the empty mean and
    /// everything else take [`Plan::run`]).
    pub(crate) fn fast_scale(&self) -> Option<FastScale> {
        if self.mask.is_some() || self.weight.is_some() || self.n == 0 {
            return None;
        }
        match self.cot {
            Cot::PerElement(_) => None,
            Cot::Scalar(c) if c == 0.0 => None,
            _ => match GradScale::new(self) {
                GradScale::Mul(s) => Some(FastScale::Mul(s)),
                GradScale::Div(cot, den) => Some(FastScale::Div(cot, den)),
                GradScale::PerElement(_) => None,
            },
        }
    }
}

/// Make `v` hold `n` elements, reusing its allocation; the contents are to be overwritten (an
/// existing buffer of the right length is not cleared first).
#[inline]
pub(crate) fn size_output<X: Copy>(v: &mut Vec<X>, n: usize, zero: X) {
    if v.len() != n {
        v.clear();
        v.resize(n, zero);
    }
}

/// Sum of a block's lanes in a fixed tree.
#[inline(always)]
pub(crate) fn lane_total(acc: &[f64; FAST_LANES]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Σ xs as lane-wise partial sums (lane k: elements ≡ k mod FAST_LANES) combined by
/// [`lane_total`]; `xs.len() <= BLOCK`.
#[inline(always)]
pub(crate) fn block_sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; FAST_LANES];
    let mut chunks = xs.chunks_exact(FAST_LANES);
    for c in &mut chunks {
        for k in 0..FAST_LANES {
            acc[k] += c[k];
        }
    }
    for (k, &x) in chunks.remainder().iter().enumerate() {
        acc[k] += x;
    }
    lane_total(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensated_sum_recovers_cancelled_terms() {
        // 1 + 2^-60 − 1 is 2^-60 exactly; a plain f64 sum gives 0.
        let xs = [1.0, 2f64.powi(-60), -1.0];
        assert_eq!(xs.iter().sum::<f64>(), 0.0);
        assert_eq!(sum_f64(&xs), 2f64.powi(-60));
    }

    #[test]
    fn compensated_sum_non_finite() {
        assert_eq!(sum_f64(&[1.0, f64::INFINITY, 2.0]), f64::INFINITY);
        assert!(sum_f64(&[f64::INFINITY, 1.0, f64::NEG_INFINITY]).is_nan());
        assert!(sum_f64(&[1.0, f64::NAN]).is_nan());
        assert_eq!(sum_f64(&[]), 0.0);
    }

    #[test]
    fn long_sum_of_tenths() {
        // 2^17 copies of the f64 nearest 0.1: the exact sum is 2^17·fl(0.1); compensated
        // summation returns its correct rounding, which is fl(0.1)·2^17 (a power-of-2 scaling).
        let n = 1 << 17;
        let xs = vec![0.1f64; n];
        assert_eq!(sum_f64(&xs), 0.1 * n as f64);
    }
}
