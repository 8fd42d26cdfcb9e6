//! Shared f64 building blocks for the logistic losses: softplus, the sigmoid and the
//! cancellation-free gradient of a two-term logistic loss.
//!
//! Everything here uses the `libm` crate (never the platform libm), so results are the same
//! bits everywhere. Accuracy: each function is within a few f64 ulps, relatively, of its exact
//! value over the whole extended real line (tails included), except where the result is below
//! the f64 normal range (|result| < 2^-1022), where it is within the subnormal spacing — far
//! below anything an f32 or 16-bit output can see, even after scaling by the largest weights
//! and cotangents (≤ 2^256 together).

/// softplus(x) = ln(1 + e^x), with full relative accuracy in both tails.
///
/// - x > 36: x + e^−x (log1p(u) = u to within u²/2 and e^−x < 2^−51 there); +inf at +inf.
/// - x ≤ 36: log1p(e^x) — e^x is accurate relatively and log1p of an exact-ish argument is
///   well conditioned (relative condition number u/((1+u)·log1p(u)) ≤ 1), so the result is
///   ≈ e^x with full relative accuracy for very negative x; 0 at −inf. NaN propagates.
#[inline(always)]
pub fn softplus(x: f64) -> f64 {
    if x > 36.0 {
        x + libm::exp(-x)
    } else {
        libm::log1p(libm::exp(x))
    }
}

/// σ(x) = 1 / (1 + e^−x), computed from the side where e^{∓x} ≤ 1 (no cancellation, no
/// overflow): σ(x) for x < 0 is e^x / (1 + e^x) (≈ e^x relatively), and σ(−x) is never formed
/// as 1 − σ(x). σ(+inf) = 1, σ(−inf) = 0, NaN propagates.
#[inline(always)]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        // also NaN: exp(NaN) = NaN
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// The z-derivative of a·softplus(−z) + b·softplus(z) with b = 1 − t (t ∈ [0, 1], a ≥ 0
/// finite): g = −a·σ(−z) + b·σ(z), where a term whose coefficient is exactly 0 is absent (so
/// z = ±inf with the other coefficient 0 gives an exact 0, not NaN).
///
/// The two terms cancel near the zero crossing z* = ln(a/b). Away from it (one term more than
/// twice the other) the plain difference loses at most 2 bits of f64. Near it, g is rewritten
/// without cancellation as σ(−z)·(b·e^z − a), with e^z in double-double ([`exp_dd`]) and b = 1 − t
/// held exactly as a double-double, so that b·e^z − a is accurate to about 2^−100 relatively to
/// its terms: the result is accurate relatively for every z, however close to z* (an exact 0 only
/// at an exact crossing such as a = b, z = 0).
#[inline(always)]
pub fn logistic_grad(a: f64, t: f64, z: f64) -> f64 {
    let b = 1.0 - t;
    let p1 = if a != 0.0 { a * sigmoid(-z) } else { 0.0 };
    let p2 = if b != 0.0 { b * sigmoid(z) } else { 0.0 };
    if a != 0.0 && b != 0.0 && p1 > 0.0 && p2 > 0.0 && p1 <= 2.0 * p2 && p2 <= 2.0 * p1 {
        // both finite and positive, b·e^z/a in [1/2, 2] (so |z| ≤ ln(2a/b) < 800: no overflow)
        return crossing(a, t, z);
    }
    p2 - p1
}

#[cold]
fn crossing(a: f64, t: f64, z: f64) -> f64 {
    // b = 1 − t exactly: b_hi + b_lo
    let (b_hi, b_lo) = two_sum(1.0, -t);
    let (k, e) = exp_dd(z); // e^z = 2^k·(e.0 + e.1)
    let a_k = libm::scalbn(a, -k); // exact: a is far from the ends of the f64 range here
    let (p, pe) = two_prod(b_hi, e.0);
    // p ≈ b·e^z·2^−k ≈ a_k within a factor 2: Sterbenz, exact
    let d = (p - a_k) + (pe + b_hi * e.1 + b_lo * e.0);
    libm::scalbn(d, k) * sigmoid(-z)
}

// ---- double-double helpers (error-free transformations; fma from the `libm` crate)

/// Knuth's TwoSum: `s + e = a + b` exactly (finite operands, no overflow).
#[inline(always)]
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

#[inline(always)]
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// `p + e = a·b` exactly (finite operands, no overflow or underflow), by fma.
#[inline(always)]
pub(crate) fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, libm::fma(a, b, -p))
}

/// x·y in double-double (relative error about 2^−104 for normal results).
#[inline(always)]
pub(crate) fn dd_mul(x: (f64, f64), y: (f64, f64)) -> (f64, f64) {
    let (p, e) = two_prod(x.0, y.0);
    fast_two_sum(p, e + (x.0 * y.1 + x.1 * y.0))
}

/// x / n for a small integer n.
#[inline(always)]
fn dd_div_small(x: (f64, f64), n: f64) -> (f64, f64) {
    let q = x.0 / n;
    let (p, e) = two_prod(q, n);
    fast_two_sum(q, ((x.0 - p) - e + x.1) / n)
}

/// x + y in double-double; the error is about 2^−105·(|x| + |y|) (absolute), also when
/// they cancel.
#[inline(always)]
pub(crate) fn dd_add(x: (f64, f64), y: (f64, f64)) -> (f64, f64) {
    let (s, e) = two_sum(x.0, y.0);
    fast_two_sum(s, e + (x.1 + y.1))
}

#[inline(always)]
fn dd_add_one(x: (f64, f64)) -> (f64, f64) {
    let (s, e) = two_sum(1.0, x.0);
    fast_two_sum(s, e + x.1)
}

// ---- unevaluated pairs hi + lo, for results that must be rounded once from more than f64

/// a + b as a pair; (a + b, 0) when that is not finite (the error term would be NaN).
#[inline(always)]
pub(crate) fn pair_add(a: f64, b: f64) -> (f64, f64) {
    let (s, e) = two_sum(a, b);
    if s.is_finite() {
        (s, e)
    } else {
        (s, 0.0)
    }
}

/// c·(hi + lo) as a pair (c finite); non-finite products carry no error term.
#[inline(always)]
pub(crate) fn pair_scale(c: f64, (hi, lo): (f64, f64)) -> (f64, f64) {
    let (p, e) = two_prod(c, hi);
    if p.is_finite() && e.is_finite() {
        fast_two_sum(p, e + c * lo)
    } else {
        (c * hi, 0.0)
    }
}

/// (hi + lo)/d as a pair (d > 0 finite): the quotient and its remainder by fma.
#[inline(always)]
pub(crate) fn pair_div((hi, lo): (f64, f64), d: f64) -> (f64, f64) {
    let q = hi / d;
    if !q.is_finite() || q == 0.0 {
        return (q, lo / d);
    }
    let r = libm::fma(-q, d, hi); // exact: hi − q·d
    fast_two_sum(q, (r + lo) / d)
}

/// hi + lo rounded once to f64, *to odd*: the truncation with the last bit set when inexact.
/// Rounding that to any format of at most 51 bits (f32, f16, bf16) is the correct rounding of
/// hi + lo — no double rounding at near-ties, where a tiny lo must decide the direction
/// (Boldo & Melquiond, "When double rounding is odd", 2005).
#[inline]
pub fn round_odd(hi: f64, lo: f64) -> f64 {
    let (s, e) = two_sum(hi, lo);
    if !s.is_finite() {
        return hi + lo;
    }
    if e == 0.0 || s.to_bits() & 1 == 1 {
        return s;
    }
    if s == 0.0 {
        return e;
    }
    // s is even and the exact value lies strictly between s and its neighbour toward e
    let toward_zero = (e < 0.0) == (s > 0.0);
    let bits = s.to_bits();
    f64::from_bits(if toward_zero { bits - 1 } else { bits + 1 })
}

/// ln 2 as a double-double (0x3FE62E42FEFA39EF, 0x3C7ABC9E3B39803F).
const LN2_DD: (f64, f64) = (std::f64::consts::LN_2, 2.3190468138462996e-17);

/// e^z = 2^k·(hi + lo) with hi + lo ∈ [0.7, 1.42] accurate to about 2^−100 relatively, for
/// finite |z| < 1000 (z exact): z = k·ln 2 + r, |r| ≤ 0.35, r in double-double; e^(r/2^10) by
/// its Taylor polynomial of degree 10 (truncation < 2^−140), then squared 10 times.
pub fn exp_dd(z: f64) -> (i32, (f64, f64)) {
    let k = libm::round(z / LN2_DD.0);
    // r = z − k·ln2: k·ln2_hi exactly by two_prod; z − its high part is exact (Sterbenz, or k = 0)
    let (p, pe) = two_prod(k, LN2_DD.0);
    let r_hi = z - p;
    let (r0, r1) = two_sum(r_hi, -(pe + k * LN2_DD.1));
    let x = (r0 * (1.0 / 1024.0), r1 * (1.0 / 1024.0));
    let mut s = (1.0, 0.0);
    for n in (1..=10).rev() {
        s = dd_add_one(dd_div_small(dd_mul(x, s), n as f64));
    }
    for _ in 0..10 {
        s = dd_mul(s, s);
    }
    (k as i32, s)
}

/// e^x for x ≤ 0 (−inf gives 0, NaN propagates), within 1 f64 ulp of `libm::exp` and of the
/// exact value (tested below on a dense sample of [−746, 0]; results in the subnormal range
/// are rounded once from there) — the softmax's exponential.
///
/// Built from IEEE basic operations only (no fma, no table, no platform call), so the result
/// is the same bits everywhere, and the function inlines and vectorizes (`libm::exp` does
/// neither, and it is most of a fused cross-entropy's time). x = k·ln 2 + r with k =
/// round(x·log2 e) (the 1.5·2^52 shift trick, which also leaves k + 1087 in the low mantissa
/// bits) and r = (x − k·ln2_hi) − k·ln2_lo (Cody–Waite: the first product and difference are
/// exact), |r| ≤ 0.35; e^r = 1 + r + r²·q(r), q a degree-9 Chebyshev fit of (e^r − 1 − r)/r²
/// (relative error of the whole < 2^−55.4 in exact arithmetic, so e^0 = 1 exactly), summed
/// as (1 + r exactly as a pair) + r²·q with one final rounding; then
/// ·2^(k+64) (always normal) ·2^−64 (one rounding into the subnormals).
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    // the constants are vmath's (the same reduction and fit, evaluated without fma here)
    use super::vmath::{LN2_HI, LN2_LO, LOG2E, Q, SHIFT_NONPOS as SHIFT, TWO_M64};
    // e^−746 < 2^−1076 rounds to 0 below; −inf joins it, NaN stays NaN
    let x = if x < -746.0 { -746.0 } else { x };
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut q = Q[9];
    for &c in Q[..9].iter().rev() {
        q = q * r + c;
    }
    // 1 + r exactly as s + e (|r| < 1), then one rounding for the whole
    let s = 1.0 + r;
    let e = r - (s - 1.0);
    let p = s + (e + r * (r * q));
    let scale = f64::from_bits((t.to_bits() & 0x7ff) << 52); // 2^(k + 64)
    p * scale * TWO_M64
}

/// ln σ(x) = −softplus(−x), accurate in both tails (≈ x for x → −inf, ≈ −e^−x for x → +inf).
#[inline(always)]
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(softplus(f64::INFINITY), f64::INFINITY);
        assert_eq!(softplus(f64::NEG_INFINITY), 0.0);
        assert!(softplus(f64::NAN).is_nan());
        // softplus(−800) = e^−800 (relatively to 2^-53 beyond f64 range): underflows to 0
        assert_eq!(softplus(-800.0), 0.0);
        // softplus(−700) ≈ e^−700 = 9.86e-305
        let v = softplus(-700.0);
        assert!((v / 9.859_676_543_759_77e-305 - 1.0).abs() < 1e-14, "{v:e}");
        assert_eq!(softplus(1e4), 1e4);
        assert_eq!(sigmoid(f64::INFINITY), 1.0);
        assert_eq!(sigmoid(f64::NEG_INFINITY), 0.0);
        assert!(sigmoid(f64::NAN).is_nan());
        assert!(logistic_grad(1.0, 1.0, f64::NAN).is_nan());
    }

    #[test]
    fn absent_terms() {
        // (a, t): a = 1, t = 1 → b = 0; a = 0, t = 0 → b = 1
        assert_eq!(logistic_grad(1.0, 1.0, f64::INFINITY), 0.0);
        assert_eq!(logistic_grad(0.0, 0.0, f64::NEG_INFINITY), 0.0);
        assert_eq!(logistic_grad(0.9, 0.9, f64::NEG_INFINITY), -0.9);
    }

    #[test]
    fn near_the_zero_crossing() {
        // a = b = ½: g = ½·(σ(z) − σ(−z)) = ½·tanh(z/2) ≈ z/4 for tiny z.
        let g = logistic_grad(0.5, 0.5, 1e-30);
        assert!((g / 2.5e-31 - 1.0).abs() < 1e-15, "{g:e}");
        assert_eq!(logistic_grad(0.5, 0.5, 0.0), 0.0);
    }

    /// f64 ulps between a and b (same sign, finite).
    fn ulps64(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn exp_nonpos_matches_libm_and_the_exact_value() {
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
        assert!(exp_nonpos(f64::NAN).is_nan());
        assert_eq!(exp_nonpos(-746.0), 0.0);
        assert_eq!(exp_nonpos(-1e300), 0.0);
        // e^−1 = 0.36787944117144232159552377016146086744581113103176 (python Decimal(-1).exp())
        assert_eq!(exp_nonpos(-1.0), 0.36787944117144233);
        // dense sweep and the ends of the reduction intervals against libm (≤ 1 ulp apart in
        // the normal range, where both are within about ½ ulp of the exact value), subnormal
        // results within one subnormal quantum
        let mut worst = 0;
        let mut check = |x: f64| {
            let (a, b) = (exp_nonpos(x), libm::exp(x));
            if b >= f64::MIN_POSITIVE {
                worst = worst.max(ulps64(a, b));
            } else {
                assert!(ulps64(a, b) <= 1, "{x}: {a:e} vs {b:e}");
            }
        };
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..400_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            check(-746.0 * u);
            check(-u * 1e-3);
            check(-(2f64).powi(-((s >> 58) as i32 * 16)) * u);
        }
        for k in 0..1076 {
            let edge = -(k as f64 + 0.5) * std::f64::consts::LN_2;
            for d in [-1e-12, 0.0, 1e-12] {
                check(edge + d);
            }
        }
        assert!(worst <= 1, "worst {worst} ulps from libm::exp");
    }

    #[test]
    fn exp_dd_matches_exp() {
        for z in [
            0.0, 1e-20, 0.3, -0.3, 1.0, -5.5, 30.0, 88.7, -103.9, 700.0, -700.0,
        ] {
            let (k, (hi, lo)) = exp_dd(z);
            let e = libm::exp(z);
            let v = libm::scalbn(hi, k);
            assert!((v / e - 1.0).abs() < 4e-16, "{z}: {v:e} vs {e:e}");
            assert!(lo.abs() <= hi * 2f64.powi(-52));
        }
        // e^1 in double-double: 2.718281828459045 + 1.4456468917292502e-16
        let (k, (hi, lo)) = exp_dd(1.0);
        assert_eq!(k, 1);
        assert_eq!(hi * 2.0, std::f64::consts::E);
        // (QD's constant; the 10 squarings amplify the polynomial's 2^-106 errors to ~2^-96)
        assert!(
            (lo * 2.0 - 1.445_646_891_729_250_2e-16).abs() < std::f64::consts::E * 2f64.powi(-95),
            "{lo:e}"
        );
    }
}
