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

#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

#[inline(always)]
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, libm::fma(a, b, -p))
}

#[inline(always)]
fn dd_mul(x: (f64, f64), y: (f64, f64)) -> (f64, f64) {
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

#[inline(always)]
fn dd_add_one(x: (f64, f64)) -> (f64, f64) {
    let (s, e) = two_sum(1.0, x.0);
    fast_two_sum(s, e + x.1)
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
