//! Vectorizable math of the crate's own, with the same bits everywhere.
//!
//! Every function here is written as plain scalar-shaped Rust over f64 (fixed lanes, no
//! reassociation the compiler could change), from IEEE basic operations and
//! [`f64::mul_add`] only. Each of these operations is correctly rounded — `mul_add` is the
//! IEEE fused multiply-add, a hardware `vfmadd` where the `fma` target feature is enabled and
//! the C library's `fma` (which IEEE 754 and C99 require correctly rounded) otherwise — so the
//! result of every function is one fixed bit pattern, whatever the instruction set.
//!
//! The hot slice functions ([`widen_max_f32`], [`exp_shift_sum_except`], [`scale_to_f32`], …)
//! are compiled twice: once inside a `#[target_feature(enable = "avx2,fma")]` wrapper (the
//! `*_avx2` functions, 4 f64 lanes per instruction and a hardware fma), once plain (the
//! `*_plain` functions, the baseline target). The public entry points pick one at run time
//! ([`has_avx2_fma`], detected once and cached). Both paths give bit-identical results;
//! `tests/kernels_simd.rs` checks that by calling both directly on many inputs. (A NaN result
//! is NaN on both paths, but its sign and payload are the hardware's: IEEE 754 does not fix
//! them, and x86's default NaN is negative where a software fma's is positive. The kernels
//! take these functions only on finite rows.)
//!
//! # `exp`
//!
//! [`exp`] (all x) and [`exp_nonpos`] (x ≤ 0, a little cheaper) share one core:
//! x = k·ln 2 + r, k = round(x·log₂e) by the 1.5·2⁵² shift trick (fma(x, log₂e, shift)), and
//! Cody–Waite r = fma(−k, ln2_lo, fma(−k, ln2_hi, x)), then e^r ≈ 1 + r·(1 + r·q(r)) by
//! Horner in fma, q a degree-9 Chebyshev fit of (e^r − 1 − r)/r² on |r| ≤ 0.35 (the
//! coefficients of [`math::exp_nonpos`](super::math::exp_nonpos)), then ·2^k by exponent
//! bits. **Bound** (relative, results ≥ 2⁻¹⁰²², i.e. x ≥ −708.39): in units of u = 2⁻⁵³,
//!
//! - the reduction: k·ln2_hi is exact (ln2_hi has 32 significant bits, |k| ≤ 1077) and
//!   x − k·ln2_hi is exact (Sterbenz; the fma rounds an exact value), so r's only errors are
//!   the rounding of the second fma, ≤ u·|r| ≤ 0.35u absolute, and ln 2 − ln2_hi − ln2_lo
//!   (< 2⁻⁸⁶) times |k|, < 2⁻⁷⁵: together ≤ 0.36u relative in e^r;
//! - the fit: |e^r − (1 + r + r²q(r))| < 2⁻⁵⁵·⁴ e^r = 0.38u relative;
//! - the evaluation: q's Horner steps cost r²·|q|·(9 roundings) ≈ 0.12·0.56·9·u/… < 0.1u
//!   (each step's error is damped by the following multiplications by |r| ≤ 0.35, so
//!   < 0.25u in total, bounded generously); u₁ = fma(r, q, 1) ≤ 1.2 is rounded once (u·1.2,
//!   times |r| ≤ 0.35 in p: 0.42u); p = fma(r, u₁, 1) ∈ [0.70, 1.42] rounded once (≤ 1u
//!   relative);
//! - the scaling by 2^k is exact.
//!
//! Total < 0.36 + 0.38 + 0.25 + 0.42 + 1 = 2.41u < 2⁻⁵¹·⁷, stated as **|exp(x)/eˣ − 1| <
//! 2⁻⁵¹** for results ≥ 2⁻¹⁰²²; below (x < −708.39) the result is rounded once more into the
//! subnormals (absolute error ≤ 2⁻¹⁰⁷⁵ + 2⁻⁵¹·eˣ), and x < −745.14 gives 0 (as −inf does).
//! `exp` overflows to +inf above 709.78 exactly where eˣ does (x > ln(f64::MAX) up to the
//! bound's sliver); NaN propagates. The certification (`tests/kernels_simd.rs`) compares
//! against MPFR (192 bits) on 1.5M points (uniform over [−746, 710], and log-uniform
//! magnitudes from 2⁻⁶⁰ of both signs), on both edges of every reduced interval (x =
//! (k ± ½)·ln 2 for k ∈ [−1076, 1024], with 64 f64 neighbours either side) and exhaustively on
//! every finite f16 and bf16 value: each error is asserted below 2⁻⁵¹ (subnormal results:
//! within 2⁻¹⁰⁷⁵ + 2⁻⁵¹·eˣ); the worst measured (2026-12-04) is 2⁻⁵²·⁵⁷ ≈ 1.35 ulp.
//! (Exhaustive over f32 is not done: about 2·10⁹ MPFR calls.)
//!
//! For the fused cross-entropy this is far below what the output rounding needs: the f32
//! value bar (2 ulps) needs the loss to about 2⁻²⁵ relatively, the gradient bar about
//! 2⁻²⁶ of the row's largest component.
//!
//! This module does not depend on `rug` (the kernels build with `--no-default-features`).

use half::bf16;

pub mod exp32;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd_x86;

pub(crate) const LOG2E: f64 = std::f64::consts::LOG2_E;
/// 0x3FE62E42FEE00000: 32 significant bits, so k·LN2_HI is exact for |k| < 2²¹.
pub(crate) const LN2_HI: f64 = 6.931_471_803_691_238e-1;
/// ln 2 − LN2_HI (0x3DEA39EF35793C76).
pub(crate) const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5·2⁵²: x·log₂e + SHIFT rounds to an integer k (ties to even), k − SHIFT exact.
pub(crate) const SHIFT: f64 = 6_755_399_441_055_744.0;
/// SHIFT + 1023 + 64: the low 11 mantissa bits of t hold k + 1087.
pub(crate) const SHIFT_NONPOS: f64 = SHIFT + 1087.0;
/// 2⁻⁶⁴.
pub(crate) const TWO_M64: f64 = 5.421_010_862_427_522e-20;
/// (e^r − 1 − r)/r² ≈ Σ Q[i]·r^i on |r| ≤ 0.35 (Chebyshev fit; relative error of the whole
/// e^r < 2⁻⁵⁵·⁴ in exact arithmetic).
pub(crate) const Q: [f64; 10] = [
    0.500_000_000_000_000_1,
    0.166_666_666_666_666_69,
    0.041_666_666_666_620_68,
    0.008_333_333_333_329_796,
    0.001_388_888_891_891_890_7,
    0.000_198_412_698_643_649_33,
    2.480_151_867_226_835_5e-5,
    2.755_726_644_235_342_4e-6,
    2.762_132_426_931_368_7e-7,
    2.510_133_585_478_852_2e-8,
];

/// A value of f64 lanes the functions below are written over: `f64` itself (one lane), or
/// [`Lanes<L>`] (L lanes, each operation applied to every lane before the next one, so that
/// L independent dependency chains interleave and the vector units stay busy). Every
/// operation is the IEEE operation lane by lane, so a lane's result is the same bits as the
/// `f64` instantiation's.
pub trait Lane:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// One comparison result per lane.
    type Mask: Copy;
    fn splat(x: f64) -> Self;
    /// self·a + b, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    fn abs(self) -> Self;
    fn lt(self, o: Self) -> Self::Mask;
    fn le(self, o: Self) -> Self::Mask;
    fn ge(self, o: Self) -> Self::Mask;
    fn gt(self, o: Self) -> Self::Mask;
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// Lane by lane: a where m, else b.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// Lane by lane f64::from_bits((x.to_bits() & 0x7ff) << 52).
    fn exponent_from_low_bits(self) -> Self;
    /// Lane by lane f64::from_bits(x.to_bits() << 52).
    fn shift_to_exponent(self) -> Self;
    /// self·2^k rounded once, for [`exp_nonpos_unclamped_lanes`]'s p (∈ [0.7, 1.5]), k and t
    /// (k integral in [−1077, 0], t's low 11 bits k + 64 + 1023): self·2^(k+64) (exact) ·
    /// 2⁻⁶⁴ (rounds once, into the subnormals only). AVX-512 overrides it with one `scalef`,
    /// which rounds the same exact product once: the same bits.
    #[inline(always)]
    fn scale_pow2(self, k: Self, t: Self) -> Self {
        let _ = k;
        self * t.exponent_from_low_bits() * Self::splat(TWO_M64)
    }
}

impl Lane for f64 {
    type Mask = bool;
    #[inline(always)]
    fn splat(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f64::abs(self)
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self < o
    }
    #[inline(always)]
    fn le(self, o: Self) -> bool {
        self <= o
    }
    #[inline(always)]
    fn ge(self, o: Self) -> bool {
        self >= o
    }
    #[inline(always)]
    fn gt(self, o: Self) -> bool {
        self > o
    }
    #[inline(always)]
    fn and(a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn select(m: bool, a: Self, b: Self) -> Self {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn exponent_from_low_bits(self) -> Self {
        f64::from_bits((self.to_bits() & 0x7ff) << 52)
    }
    #[inline(always)]
    fn shift_to_exponent(self) -> Self {
        f64::from_bits(self.to_bits() << 52)
    }
}

/// Whole-vector loads and stores of a [`Lane`] type, for block loops written once and
/// instantiated per code generation ([`Lanes`] plain, [`simd_x86::F64x4`] AVX2,
/// [`simd_x86::F64x8`] AVX-512).
pub(crate) trait LaneIo: Lane {
    /// Lanes per vector.
    const N: usize;
    /// The lanes from `s[..N]` (panics if `s` is shorter).
    fn load(s: &[f64]) -> Self;
    /// The lanes into `d[..N]` (panics if `d` is shorter).
    fn store(self, d: &mut [f64]);
    /// Bit l set where lane l of `m` is true.
    fn bits(m: Self::Mask) -> u32;
}

impl<const L: usize> LaneIo for Lanes<L> {
    const N: usize = L;
    #[inline(always)]
    fn load(s: &[f64]) -> Self {
        Lanes(s[..L].try_into().unwrap())
    }
    #[inline(always)]
    fn store(self, d: &mut [f64]) {
        d[..L].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn bits(m: [bool; L]) -> u32 {
        m.iter().enumerate().fold(0, |b, (l, &x)| b | ((x as u32) << l))
    }
}

/// L f64 lanes ([`Lane`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lanes<const L: usize>(pub [f64; L]);

macro_rules! lanes_binop {
    ($tr:ident, $f:ident, $op:tt) => {
        impl<const L: usize> std::ops::$tr for Lanes<L> {
            type Output = Self;
            #[inline(always)]
            fn $f(mut self, o: Self) -> Self {
                for i in 0..L {
                    self.0[i] = self.0[i] $op o.0[i];
                }
                self
            }
        }
    };
}
lanes_binop!(Add, add, +);
lanes_binop!(Sub, sub, -);
lanes_binop!(Mul, mul, *);
lanes_binop!(Div, div, /);

impl<const L: usize> std::ops::Neg for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        self.map(|x| -x)
    }
}

impl<const L: usize> Lanes<L> {
    #[inline(always)]
    fn map(mut self, f: impl Fn(f64) -> f64) -> Self {
        for x in self.0.iter_mut() {
            *x = f(*x);
        }
        self
    }
    #[inline(always)]
    fn cmp(self, o: Self, f: impl Fn(f64, f64) -> bool) -> [bool; L] {
        let mut m = [false; L];
        for i in 0..L {
            m[i] = f(self.0[i], o.0[i]);
        }
        m
    }
}

impl<const L: usize> Lane for Lanes<L> {
    type Mask = [bool; L];
    #[inline(always)]
    fn splat(x: f64) -> Self {
        Lanes([x; L])
    }
    #[inline(always)]
    fn fma(mut self, a: Self, b: Self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i].mul_add(a.0[i], b.0[i]);
        }
        self
    }
    #[inline(always)]
    fn abs(self) -> Self {
        self.map(f64::abs)
    }
    #[inline(always)]
    fn lt(self, o: Self) -> [bool; L] {
        self.cmp(o, |a, b| a < b)
    }
    #[inline(always)]
    fn le(self, o: Self) -> [bool; L] {
        self.cmp(o, |a, b| a <= b)
    }
    #[inline(always)]
    fn ge(self, o: Self) -> [bool; L] {
        self.cmp(o, |a, b| a >= b)
    }
    #[inline(always)]
    fn gt(self, o: Self) -> [bool; L] {
        self.cmp(o, |a, b| a > b)
    }
    #[inline(always)]
    fn and(mut a: [bool; L], b: [bool; L]) -> [bool; L] {
        for i in 0..L {
            a[i] &= b[i];
        }
        a
    }
    #[inline(always)]
    fn select(m: [bool; L], mut a: Self, b: Self) -> Self {
        for i in 0..L {
            a.0[i] = if m[i] { a.0[i] } else { b.0[i] };
        }
        a
    }
    #[inline(always)]
    fn exponent_from_low_bits(self) -> Self {
        self.map(f64::exponent_from_low_bits)
    }
    #[inline(always)]
    fn shift_to_exponent(self) -> Self {
        self.map(f64::shift_to_exponent)
    }
}

/// e^r for the reduced argument |r| ≤ 0.35: 1 + r·(1 + r·q(r)), Horner in fma.
#[inline(always)]
fn exp_reduced<V: Lane>(r: V) -> V {
    let mut q = V::splat(Q[9]);
    for &c in Q[..9].iter().rev() {
        q = q.fma(r, V::splat(c));
    }
    let one = V::splat(1.0);
    let u = r.fma(q, one);
    r.fma(u, one)
}

/// x − k·ln 2 (Cody–Waite with fma: the first step is exact).
#[inline(always)]
fn reduce<V: Lane>(x: V, k: V) -> V {
    (-k).fma(V::splat(LN2_LO), (-k).fma(V::splat(LN2_HI), x))
}

/// 2^j for an integral f64 j in [−1022, 1023] (exact), from the exponent bits.
#[inline(always)]
fn pow2i(j: f64) -> f64 {
    (j + (SHIFT + 1023.0)).shift_to_exponent() // exact: the low 12 mantissa bits hold j + 1023
}

/// eˣ for every f64 x: relative error < 2⁻⁵¹ for results ≥ 2⁻¹⁰²² (module docs), one more
/// rounding into the subnormals, 0 below e^−745.14 and at −inf, +inf above ln(f64::MAX) and
/// at +inf, NaN for NaN. Same bits on every target.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // clamp, keeping NaN (the comparisons are false for it)
    let x = if x < -746.0 { -746.0 } else { x };
    let x = if x > 710.0 { 710.0 } else { x };
    let t = x.mul_add(LOG2E, SHIFT);
    let k = t - SHIFT; // k ∈ [−1077, 1025]
    let p = exp_reduced(reduce(x, k));
    // 2^k as 2^k1 · 2^k2, both factors normal; k1 = round(k/2)
    let k1 = k.mul_add(0.5, SHIFT) - SHIFT;
    let k2 = k - k1;
    p * pow2i(k1) * pow2i(k2)
}

/// eˣ for x ≤ 0 (−inf gives 0, NaN propagates), the same bits as [`exp`] there, a few
/// operations cheaper (one scaling factor 2^(k+64), then the exact ·2⁻⁶⁴, which rounds once
/// into the subnormals). For x > 0 the result is unspecified (wrong, never UB).
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    exp_nonpos_lanes(x)
}

/// [`exp_nonpos`] over lanes ([`Lane`]): the same bits per lane.
#[inline(always)]
pub fn exp_nonpos_lanes<V: Lane>(x: V) -> V {
    let c = V::splat(-746.0);
    exp_nonpos_unclamped_lanes(V::select(x.lt(c), c, x)) // keeps NaN
}

/// [`exp_nonpos_lanes`] without its clamp, for x ∈ [−746, 0] (or NaN) only: the same bits
/// there. For callers whose domain test already bounds x (bce_logits: |z| ≤ 700).
#[inline(always)]
pub fn exp_nonpos_unclamped_lanes<V: Lane>(x: V) -> V {
    let t = x.fma(V::splat(LOG2E), V::splat(SHIFT_NONPOS));
    let k = t - V::splat(SHIFT_NONPOS);
    exp_reduced(reduce(x, k)).scale_pow2(k, t)
}

/// ln(1 + x) for x ∈ [0, 1] (the range softplus needs: x = e^−|z|), with IEEE basic
/// operations only (no fma, so the plain build is as fast as the AVX2 one and both give the
/// same bits), branch-free. NaN propagates; outside [0, 1] the result is unspecified.
///
/// y = 1 + x rounded, c = x − (y − 1) its rounding error (exact: y − 1 is exact by Sterbenz,
/// and so is the difference); ln(1 + x) = ln y + ln(1 + c/y) = ln y + c/y − O(u²). y ∈ [1, 2]
/// is split as y = 2^k·m, k = 1 when y > √2 (m = y/2, exact), so m ∈ (0.707, 1.415] and
/// f = m − 1 ∈ (−0.293, 0.415] is exact (Sterbenz); ln m = 2·atanh(s), s = f/(2 + f),
/// |s| ≤ 0.1716, s² ≤ 0.02944, by 2s + 2s·s²·P(s²), P the Taylor series Σ_{j=0..9}
/// s^{2j}/(2j+3) (truncation < s²²/23 < 2⁻⁶⁰ relatively). Result:
/// k = 0: ln m + c/y; k = 1: ln 2 + (ln m + (ln2_tail + c/y)) with ln 2 in double-double.
///
/// **Bound** (relative, in u = 2⁻⁵³; x ≥ 2⁻¹⁰²² normal or 0): s carries ≤ 2u (the rounding
/// of 2 + f and of the division), which ln m inherits (d ln(atanh s)/d ln s ≤ 1.02); the
/// term 2s·s²·P is < 0.01 of 2s, so its own ≈ 9u cost 0.09u; the sum 2s + … rounds once (u):
/// ln m within 3.2u. k = 0: adding c/y (|c| ≤ u·y/2 … which can reach a third of the
/// result for x just above 2⁻⁵³) amplifies at most ×3, and rounds once: ≤ 11u. k = 1: ln m ∈
/// (−0.347, 0] contributes ≤ 1.1u absolute, the two inner roundings ≤ 0.7u absolute, the
/// result is ≥ 0.346 and rounds once: ≤ 7u. x < 2⁻⁵³: y = 1, the result is x exactly
/// (relative error x/2 < u). Stated: **|log1p_unit(x)/ln(1 + x) − 1| ≤ 12u < 2⁻⁴⁹·⁴**,
/// certified against MPFR in `tests/kernels_simd_elementwise.rs` (dense sample of [0, 1],
/// log-uniform magnitudes down to 2⁻¹⁰⁷⁴, every f16 / bf16 value in [0, 1], and the
/// neighbours of √2 − 1, where k switches).
#[inline(always)]
pub fn log1p_unit(x: f64) -> f64 {
    log1p_unit_lanes(x)
}

/// 1/(2j + 3), j = 0..9: ln m = 2s + 2s·s²·Σ_j s^{2j}/(2j + 3) (atanh). [`log1p_unit`] takes
/// all ten terms, [`logistic_parts_fast`] the first eight.
pub(crate) const ATANH_SERIES: [f64; 10] = [
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
    1.0 / 15.0,
    1.0 / 17.0,
    1.0 / 19.0,
    1.0 / 21.0,
];

/// ln 2 − fl(ln 2).
pub(crate) const LN2_TAIL: f64 = 2.319_046_813_846_299_6e-17;

/// The argument split shared by [`log1p_unit`] and [`logistic_parts_fast`]: y = 1 + x rounded,
/// c = x − (y − 1) its rounding error (exact), whether y > √2, and f = m − 1 (exact) for
/// m = y/2 there, m = y otherwise.
#[inline(always)]
fn log1p_split<V: Lane>(x: V) -> (V, V, V::Mask, V) {
    let one = V::splat(1.0);
    let y = one + x;
    let c = x - (y - one);
    let big = y.gt(V::splat(std::f64::consts::SQRT_2));
    let m = V::select(big, y * V::splat(0.5), y);
    (y, c, big, m - one)
}

/// ln(1 + x) from ln m and c/y: ln m + c/y, or ln 2 + (ln m + (ln2_tail + c/y)) where y > √2.
#[inline(always)]
fn log1p_join<V: Lane>(big: V::Mask, ln_m: V, cy: V) -> V {
    let small = ln_m + cy;
    let large = V::splat(std::f64::consts::LN_2) + (ln_m + (V::splat(LN2_TAIL) + cy));
    V::select(big, large, small)
}

/// [`log1p_unit`] over lanes ([`Lane`]): the same bits per lane.
#[inline(always)]
pub fn log1p_unit_lanes<V: Lane>(x: V) -> V {
    const P: [f64; 10] = ATANH_SERIES;
    let (y, c, big, f) = log1p_split(x);
    let s = f / (V::splat(2.0) + f);
    let s2 = s * s;
    let mut p = V::splat(P[9]);
    for &c in P[..9].iter().rev() {
        p = p * s2 + V::splat(c);
    }
    let s_2 = s + s;
    let ln_m = s_2 + (s_2 * s2) * p;
    log1p_join(big, ln_m, c / y)
}

/// The pieces of the logistic functions at a finite z with |z| ≤ 700 (so e^−|z| ≥ 2⁻¹⁰¹⁰ is
/// normal), from one [`exp_nonpos`] and one [`log1p_unit`]: returns (softplus(z),
/// softplus(−z), σ(z), σ(−z)), as softplus(±z) = max(±z, 0) + L, L = ln(1 + e), e = e^−|z|,
/// and σ of the non-negative side = 1/(1 + e), of the other side e·(1/(1 + e)).
///
/// **Bound** (relative, u = 2⁻⁵³): e within 2⁻⁵¹ = 4u ([`exp_nonpos`]); L inherits at most
/// that (d ln L / d ln e = e/((1 + e)·ln(1 + e)) ≤ 1) plus its own 12u: 16u; softplus(±z) =
/// max(±z, 0) + L adds two non-negative terms (one exact): ≤ 17u. 1 + e rounds once (its
/// relative error ≤ 4u·e/(1 + e) + u ≤ 3u), the quotient once: σ of the non-negative side
/// within 4u; the other side (·e, one more rounding) within 9u. Certified with the other
/// functions of this module (`tests/kernels_simd_elementwise.rs`).
#[inline(always)]
pub fn logistic_parts(z: f64) -> (f64, f64, f64, f64) {
    logistic_parts_lanes(z)
}

/// [`logistic_parts`] over lanes ([`Lane`]): the same bits per lane.
#[inline(always)]
pub fn logistic_parts_lanes<V: Lane>(z: V) -> (V, V, V, V) {
    let one = V::splat(1.0);
    let e = exp_nonpos_lanes(-z.abs());
    let l = log1p_unit_lanes(e);
    logistic_assemble(z, e, l, one / (one + e))
}

/// (softplus(z), softplus(−z), σ(z), σ(−z)) from e = e^−|z|, L = ln(1 + e) and d = 1/(1 + e).
#[inline(always)]
fn logistic_assemble<V: Lane>(z: V, e: V, l: V, d: V) -> (V, V, V, V) {
    let zero = V::splat(0.0);
    let pos = V::select(z.gt(zero), z, zero);
    let neg = V::select(z.lt(zero), -z, zero);
    let ed = e * d;
    let nonneg = z.ge(zero);
    (
        pos + l,
        neg + l,
        V::select(nonneg, d, ed),
        V::select(nonneg, ed, d),
    )
}

/// The bounds of [`logistic_parts_fast`] in u = 2⁻⁵³ (relative): softplus(±z), σ of the
/// non-negative side, σ of the other side (the certificate's parts take the last per z).
pub const LOGISTIC_FAST_BOUND_U: (f64, f64, f64) = (56.0, 7.0, 12.0);

/// [`logistic_parts`] with one division instead of three and a shorter series — the cheaper
/// tier of the `bce_logits` fast path, for f32 and 16-bit outputs, which need nowhere near
/// 2⁻⁵⁰. Same domain (finite z, |z| ≤ 700) and parts, (softplus(z), softplus(−z), σ(z),
/// σ(−z)).
///
/// e = e^−|z| by [`exp_nonpos`] (4u), and y, c, m, f as in [`log1p_unit`]; then w = 2 + f,
/// q = 1/(y·w) — the one division — gives both 1/y = w·q and 1/w = y·q; s = f·(y·q),
/// ln m = 2s + 2s·s²·P(s²) with P the atanh series Σ_{j=0..7} s^{2j}/(2j+3) in fma Horner,
/// L = ln(1 + e) = ln m + c·(1/y) (+ ln 2 in double-double where y > √2, as [`log1p_unit`]),
/// and σ of the non-negative side 1/y, of the other side e·(1/y).
///
/// **Bound** (relative, u = 2⁻⁵³, first order):
/// - 1/y: y = fl(1 + e) is within 3u of 1 + e (e's 4u weighted by e/(1 + e) ≤ ½, plus its
///   rounding); y·w, the division and w·q round once each (w·q = (1/y)(1 + δ)³): σ of the
///   non-negative side within **6u** (stated 7u); the other side, e·(1/y), adds e's 4u and
///   one rounding: **11u** (stated 12u).
/// - L: s = f·(y·q) is f/fl(2 + f) times four roundings (y·w, 1/·, y·q, f·), fl(2 + f)
///   within u of 2 + f: s within 5u of f/(2 + f); ln m = 2 atanh s inherits ≤ 1.02× that
///   (|s| ≤ 0.1716): 5.1u. The series: s² ≤ 0.02944, truncation after j = 7 is
///   Σ_{j≥8} s^{2j+2}/(2j+3) ≤ s¹⁸/19/(1 − s²) < 2⁻⁵⁰ = 8u relatively; its evaluation (s², 7
///   fma, s_2·s², each damped by the term's weight ≤ 0.0102 of 2s) < 0.1u; the last fma
///   rounds once (u): ln m within 6.2u + 8u = 14.2u. y ≤ √2: ln m + c/y, where c/y = c·(1/y)
///   is within 4u of itself and the sum is at most twice ln m's size (|c| ≤ ulp(y)/2; bounded
///   as ×3, as for [`log1p_unit`]) and rounds once: ≤ 3·14.2u + 4u + u = 47.6u. y > √2: ln m ∈
///   (−0.347, 0] costs ≤ 14.2u·0.347 absolute, the inner roundings ≤ 0.7u, the result ≥ 0.3466
///   rounds once: ≤ 16u. L inherits e's 4u at most (as in [`logistic_parts`]): **≤ 51.6u**;
///   softplus(±z) = max(±z, 0) + L rounds once more: **52.6u** (stated 56u < 2⁻⁴⁷).
///
/// Certified against MPFR with the other functions of this module (`losscheck exhaustive
/// --function logistic_parts_fast`, `tests/kernels_simd_elementwise.rs`).
#[inline(always)]
pub fn logistic_parts_fast(z: f64) -> (f64, f64, f64, f64) {
    logistic_parts_fast_lanes(z)
}

/// [`logistic_parts_fast`] over lanes ([`Lane`]): the same bits per lane.
#[inline(always)]
pub fn logistic_parts_fast_lanes<V: Lane>(z: V) -> (V, V, V, V) {
    let (e, l, d) = logistic_fast_core(z);
    logistic_assemble(z, e, l, d)
}

/// The core of [`logistic_parts_fast`]: (e, L, 1/y) — e = e^−|z|, L = ln(1 + e) (the bits of
/// softplus(−|z|), so within its bound), 1/y = 1/fl(1 + e) (the bits of σ(|z|)).
#[inline(always)]
pub fn logistic_fast_core<V: Lane>(z: V) -> (V, V, V) {
    let e = exp_nonpos_lanes(-z.abs());
    let (l, d) = logistic_fast_from_e(e);
    (e, l, d)
}

/// The rest of [`logistic_fast_core`] from its e = e^−|z|: (L, 1/y).
#[inline(always)]
pub fn logistic_fast_from_e<V: Lane>(e: V) -> (V, V) {
    let p8 = &ATANH_SERIES[..8];
    let (y, c, big, f) = log1p_split(e);
    let w = V::splat(2.0) + f;
    let q = V::splat(1.0) / (y * w);
    let d = w * q; // 1/y
    let s = f * (y * q); // f/w
    let s2 = s * s;
    let mut p = V::splat(p8[7]);
    for &c in p8[..7].iter().rev() {
        p = p.fma(s2, V::splat(c));
    }
    let s_2 = s + s;
    let ln_m = (s_2 * s2).fma(p, s_2);
    (log1p_join(big, ln_m, c * d), d)
}

/// Are AVX-512 F + DQ available besides AVX2 + FMA (detected once, cached;
/// [`reduce::cpu_codegen`](crate::kernels::reduce::cpu_codegen))? Always false off x86-64.
#[inline]
pub fn has_avx512() -> bool {
    crate::kernels::reduce::cpu_codegen() == crate::kernels::reduce::Codegen::Avx512
}

/// Is AVX2 + FMA available (detected once, cached)? Always false off x86-64.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::{AtomicU8, Ordering};
        static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
        match STATE.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let yes = std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma");
                STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `$name` (runtime dispatch), `${name}_plain` and (x86-64) `${name}_avx2` from one
/// `#[inline(always)]` body.
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident, $plain:ident, $avx2:ident, $body:ident,
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the features were detected at run time.
                return unsafe { $avx2($($arg),*) };
            }
            $plain($($arg),*)
        }

        #[doc = concat!("[`", stringify!($name), "`] compiled for the baseline target.")]
        #[doc(hidden)]
        #[inline(never)]
        pub fn $plain($($arg: $ty),*) -> $ret {
            $body($($arg),*)
        }

        #[doc = concat!("[`", stringify!($name), "`] compiled with AVX2 + FMA.")]
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA ([`has_avx2_fma`]).
        #[cfg(target_arch = "x86_64")]
        #[doc(hidden)]
        #[target_feature(enable = "avx2,fma")]
        #[inline(never)]
        pub unsafe fn $avx2($($arg: $ty),*) -> $ret {
            $body($($arg),*)
        }
    };
}

/// Lanes of the f64 accumulators.
const L: usize = 8;

/// Σ xs with 8 lane accumulators (fixed order: lane j takes xs[8i + j], the lanes combined as
/// ((0+4)+(2+6)) + ((1+5)+(3+7)), then the tail in order). Relative error ≤ (C/8 + 4)·2⁻⁵³
/// for non-negative terms.
#[allow(dead_code)] // the documented order, as exp_shift_sum inlines it
#[inline(always)]
fn lane_sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; L];
    let mut ch = xs.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            acc[l] += c[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for &x in ch.remainder() {
        s += x;
    }
    s
}

/// Max of the lanes (`>`: the first of equal values, NaN ignored) and the finiteness test.
#[inline(always)]
fn max_fold(acc: &[f64; L], chk: &[f64; L], tail: &[f64]) -> (f64, bool) {
    let mut m = acc[0];
    let mut c = chk[0];
    for l in 1..L {
        m = if acc[l] > m { acc[l] } else { m };
        c += chk[l];
    }
    for &x in tail {
        m = if x > m { x } else { m };
        c += x * 0.0;
    }
    (m, c == 0.0)
}

/// out[j] = widen(z[j]); (max, all finite) in [`max_fold`]'s lane order.
#[inline(always)]
fn widen_max_body<T: Copy>(z: &[T], out: &mut [f64], widen: impl Fn(T) -> f64) -> (f64, bool) {
    let out = &mut out[..z.len()];
    let mut acc = [f64::NEG_INFINITY; L];
    let mut chk = [0.0f64; L];
    let mut zc = z.chunks_exact(L);
    let mut oc = out.chunks_exact_mut(L);
    for (c, o) in (&mut zc).zip(&mut oc) {
        for l in 0..L {
            let x = widen(c[l]);
            o[l] = x;
            acc[l] = if x > acc[l] { x } else { acc[l] };
            chk[l] += x * 0.0; // ±0 while finite, NaN after an inf or a NaN
        }
    }
    let tail = oc.into_remainder();
    for (o, &x) in tail.iter_mut().zip(zc.remainder()) {
        *o = widen(x);
    }
    max_fold(&acc, &chk, tail)
}

#[inline(always)]
fn widen_max_f32_body(z: &[f32], out: &mut [f64]) -> (f64, bool) {
    widen_max_body(z, out, |x| x as f64)
}

#[inline(always)]
fn bf16_to_f64(b: bf16) -> f64 {
    f32::from_bits((b.to_bits() as u32) << 16) as f64
}

#[inline(always)]
fn widen_max_bf16_body(z: &[bf16], out: &mut [f64]) -> (f64, bool) {
    widen_max_body(z, out, bf16_to_f64)
}

/// In place e_j ← exp_nonpos(e_j − m), returning Σ e_j in [`lane_sum`]'s order (fused: 8
/// independent lanes per step, which also keeps several exp chains in flight).
#[inline(always)]
fn exp_shift_sum(e: &mut [f64], m: f64) -> f64 {
    let mut acc = [0.0f64; L];
    let mut ch = e.chunks_exact_mut(L);
    for c in &mut ch {
        for l in 0..L {
            let v = exp_nonpos(c[l] - m);
            c[l] = v;
            acc[l] += v;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for x in ch.into_remainder() {
        *x = exp_nonpos(*x - m);
        s += *x;
    }
    s
}

#[inline(always)]
fn exp_shift_sum_except_body(e: &mut [f64], m: f64, k: usize) -> f64 {
    let (lo, hi) = e.split_at_mut(k);
    let s = exp_shift_sum(lo, m);
    hi[0] = exp_nonpos(hi[0] - m);
    s + exp_shift_sum(&mut hi[1..], m)
}

#[inline(always)]
fn scale_to_f32_body(e: &[f64], r: f64, mul: f64, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(e) {
        *o = ((r * x) * mul) as f32;
    }
}

/// f64 → bf16, correctly rounded (ties to even): round to odd into f32 (exact-or-sticky: no
/// double rounding, f32 having ≥ 2 more bits), then round to nearest even into bf16. NaN
/// gives a quiet NaN of the same sign.
#[inline(always)]
pub fn f64_to_bf16(x: f64) -> bf16 {
    let f = x as f32; // RN
    let back = f as f64;
    let mut b = f.to_bits();
    if back != x {
        // inexact (or NaN): step toward zero if RN went away from it, then set the sticky bit
        if back.abs() > x.abs() {
            b -= 1;
        }
        b |= 1;
    }
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let quiet = ((b >> 16) as u16) | 0x0040;
    bf16::from_bits(if nan { quiet } else { rounded })
}

#[inline(always)]
fn scale_to_bf16_body(e: &[f64], r: f64, mul: f64, out: &mut [bf16]) {
    for (o, &x) in out.iter_mut().zip(e) {
        *o = f64_to_bf16((r * x) * mul);
    }
}

#[inline(always)]
fn scale_to_f16_body(e: &[f64], r: f64, mul: f64, out: &mut [half::f16]) {
    for (o, &x) in out.iter_mut().zip(e) {
        *o = half::f16::from_bits(super::reduce::f64_to_f16_bits((r * x) * mul));
    }
}

#[inline(always)]
fn max_finite_body(xs: &[f64]) -> (f64, bool) {
    let mut acc = [f64::NEG_INFINITY; L];
    let mut chk = [0.0f64; L];
    let mut ch = xs.chunks_exact(L);
    for c in &mut ch {
        for l in 0..L {
            let x = c[l];
            acc[l] = if x > acc[l] { x } else { acc[l] };
            chk[l] += x * 0.0;
        }
    }
    max_fold(&acc, &chk, ch.remainder())
}

#[inline(always)]
fn first_index_body(xs: &[f64], v: f64) -> usize {
    let mut ch = xs.chunks_exact(L);
    let mut base = 0;
    for c in &mut ch {
        let mut hit = false;
        for l in 0..L {
            hit |= c[l] == v;
        }
        if hit {
            return base + c.iter().position(|&x| x == v).unwrap_or(0);
        }
        base += L;
    }
    ch.remainder().iter().position(|&x| x == v).map_or(xs.len(), |p| base + p)
}

#[inline(always)]
fn exp_slice_body(xs: &[f64], out: &mut [f64]) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = exp(x);
    }
}

dispatched! {
    /// out[j] = `xs[j]` as f64 for j < z.len() (out must be at least as long), and
    /// (max_j z_j, every z_j finite). The max ignores NaN; with a NaN or an infinity the
    /// second part is false (and the max unspecified but never NaN-poisoned by design).
    widen_max_f32, widen_max_f32_plain, widen_max_f32_avx2, widen_max_f32_body,
    (z: &[f32], out: &mut [f64]) -> (f64, bool)
}

dispatched! {
    /// [`widen_max_f32`] for bf16 input.
    widen_max_bf16, widen_max_bf16_plain, widen_max_bf16_avx2, widen_max_bf16_body,
    (z: &[bf16], out: &mut [f64]) -> (f64, bool)
}

/// In place e_j ← [`exp_nonpos`](e_j − m) (every e_j ≤ m), and Σ_{j≠k} e_j: the sums of
/// e[..k] and e[k+1..] each in [`lane_sum`]'s fixed order (k < e.len()).
#[inline]
pub fn exp_shift_sum_except(e: &mut [f64], m: f64, k: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the features were detected at run time.
        return unsafe { exp_shift_sum_except_avx2(e, m, k) };
    }
    exp_shift_sum_except_plain(e, m, k)
}

/// [`exp_shift_sum_except`] compiled for the baseline target.
#[doc(hidden)]
#[inline(never)]
pub fn exp_shift_sum_except_plain(e: &mut [f64], m: f64, k: usize) -> f64 {
    exp_shift_sum_except_body(e, m, k)
}

/// [`exp_shift_sum_except`] with AVX2 + FMA intrinsics (two 4-lane chains per step: the
/// compiler's vectorizer keeps one, and the exp's fma chain is latency-bound). The same
/// operations in the same order per lane as [`exp_nonpos`], each correctly rounded, and the
/// same summation order: the same bits as the plain path.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`has_avx2_fma`]).
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
pub unsafe fn exp_shift_sum_except_avx2(e: &mut [f64], m: f64, k: usize) -> f64 {
    let (lo, hi) = e.split_at_mut(k);
    let s = exp_shift_sum_avx2(lo, m);
    hi[0] = exp_nonpos(hi[0] - m);
    s + exp_shift_sum_avx2(&mut hi[1..], m)
}

/// exp_nonpos(x − m) on 4 lanes ([`exp_nonpos_lanes`] on [`simd_x86::F64x4`]: the same bits).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp4(x: std::arch::x86_64::__m256d, m: std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d {
    use simd_x86::F64x4;
    exp_nonpos_lanes(F64x4(x) - F64x4(m)).0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn exp_shift_sum_avx2(e: &mut [f64], m: f64) -> f64 {
    use std::arch::x86_64::*;
    let mv = _mm256_set1_pd(m);
    let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut ch = e.chunks_exact_mut(L);
    for c in &mut ch {
        let p = c.as_mut_ptr();
        let v0 = exp4(_mm256_loadu_pd(p), mv);
        let v1 = exp4(_mm256_loadu_pd(p.add(4)), mv);
        _mm256_storeu_pd(p, v0);
        _mm256_storeu_pd(p.add(4), v1);
        a0 = _mm256_add_pd(a0, v0);
        a1 = _mm256_add_pd(a1, v1);
    }
    let mut acc = [0.0f64; L];
    _mm256_storeu_pd(acc.as_mut_ptr(), a0);
    _mm256_storeu_pd(acc.as_mut_ptr().add(4), a1);
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for x in ch.into_remainder() {
        *x = exp_nonpos(*x - m);
        s += *x;
    }
    s
}

dispatched! {
    /// out[j] = RN_f32((r·e_j)·mul) (two f64 roundings, then one into f32).
    scale_to_f32, scale_to_f32_plain, scale_to_f32_avx2, scale_to_f32_body,
    (e: &[f64], r: f64, mul: f64, out: &mut [f32]) -> ()
}

dispatched! {
    /// out[j] = RN_bf16((r·e_j)·mul) ([`f64_to_bf16`], one rounding from f64).
    scale_to_bf16, scale_to_bf16_plain, scale_to_bf16_avx2, scale_to_bf16_body,
    (e: &[f64], r: f64, mul: f64, out: &mut [bf16]) -> ()
}

dispatched! {
    /// out[j] = RN_f16((r·e_j)·mul) ([`reduce::f64_to_f16_bits`](super::reduce::f64_to_f16_bits),
    /// one rounding from f64: `half`'s `f16::from_f64` bits, branch-free).
    scale_to_f16, scale_to_f16_plain, scale_to_f16_avx2, scale_to_f16_body,
    (e: &[f64], r: f64, mul: f64, out: &mut [half::f16]) -> ()
}

dispatched! {
    /// out[j] = [`exp`](xs[j]) (for the certification and for callers with a whole slice).
    exp_slice, exp_slice_plain, exp_slice_avx2, exp_slice_body,
    (xs: &[f64], out: &mut [f64]) -> ()
}

dispatched! {
    /// (max_j x_j, every x_j finite), as [`widen_max_f32`] does it.
    max_finite, max_finite_plain, max_finite_avx2, max_finite_body,
    (xs: &[f64]) -> (f64, bool)
}

dispatched! {
    /// The first j with xs[j] == v (xs.len() if none).
    first_index, first_index_plain, first_index_avx2, first_index_body,
    (xs: &[f64], v: f64) -> usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes<8> gives every lane the bits of the f64 instantiation (NaN: NaN).
    #[test]
    fn lanes_are_the_scalar_functions_lane_by_lane() {
        let mut xs = vec![
            0.0, -0.0, 1.0, -1.0, 0.5, 700.0, -700.0, -745.5, -746.0, -800.0, 1e-300, -1e-300,
            f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 36.0, -37.0,
            std::f64::consts::SQRT_2 - 1.0,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            xs.push(if state & 1 == 0 { -750.0 * u } else { 2f64.powf(-60.0 + 70.0 * u) });
        }
        while xs.len() % 8 != 0 {
            xs.push(0.25);
        }
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for c in xs.chunks(8) {
            let v = Lanes::<8>(c.try_into().unwrap());
            let e = exp_nonpos_lanes(v);
            let l = log1p_unit_lanes(v.map(|x| x.abs().min(1.0)));
            let (a, b, p, q) = logistic_parts_lanes(v);
            let fast = logistic_parts_fast_lanes(v);
            for i in 0..8 {
                let x = c[i];
                let f = logistic_parts_fast(x);
                for (k, (g, w)) in [(fast.0 .0[i], f.0), (fast.1 .0[i], f.1), (fast.2 .0[i], f.2), (fast.3 .0[i], f.3)].into_iter().enumerate() {
                    assert!(same(g, w), "logistic_parts_fast({x:e}) part {k}");
                }
                assert!(same(e.0[i], exp_nonpos(x)), "exp_nonpos({x:e})");
                assert!(same(l.0[i], log1p_unit(x.abs().min(1.0))), "log1p_unit({x:e})");
                let s = logistic_parts(x);
                for (k, (g, w)) in [(a.0[i], s.0), (b.0[i], s.1), (p.0[i], s.2), (q.0[i], s.3)].into_iter().enumerate() {
                    assert!(same(g, w), "logistic_parts({x:e}) part {k}");
                }
            }
        }
    }

    #[test]
    fn edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert!(exp(709.78).is_finite());
        assert!(exp(f64::NAN).is_nan());
        assert!(exp_nonpos(f64::NAN).is_nan());
        assert_eq!(exp(-746.0), 0.0);
        assert!(exp(-745.0) > 0.0);
    }

    #[test]
    fn nonpos_matches_exp() {
        let mut x = 0.0f64;
        while x > -746.0 {
            assert_eq!(exp(x).to_bits(), exp_nonpos(x).to_bits(), "{x}");
            x -= 0.012_345_678_9;
        }
    }

    #[test]
    fn bf16_rounding() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // exponents around bf16's range, and exact bf16 midpoints (ties) one in four
            let e = 1023 - 140 + (s >> 52) % 270;
            let x = f64::from_bits((s & 0x800f_ffff_ffff_ffff) | (e << 52));
            let x = if s % 4 == 0 {
                f32::from_bits(((x as f32).to_bits() & 0xffff_0000) | 0x8000) as f64
            } else {
                x
            };
            let want = <bf16 as losscheck_core::Element>::from_f64(x);
            let got = f64_to_bf16(x);
            if x.is_nan() {
                assert!(got.is_nan());
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{x:e}");
            }
        }
    }
}
