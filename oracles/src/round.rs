//! Correct rounding of MPFR values to each [`Dtype`], derived from the format's three numbers
//! (precision p, minimum normal exponent emin, maximum exponent emax) — never through `f64`,
//! which would round twice.
//!
//! For finite non-zero x with 2^e ≤ |x| < 2^(e+1), the quantum (the value of the last
//! significand bit) is 2^q with q = max(e, emin) − (p − 1): below the normal range the quantum
//! stays at the subnormal one. x·2^−q is rounded to an integer k with ties to even (MPFR's
//! `roundeven`, exact scaling by a power of two), and k·2^q is the result; it is ±inf when it
//! exceeds the format's maximum (so max + ½ulp, a tie, goes to the even neighbour 2^(emax+1),
//! i.e. to inf, as IEEE 754 prescribes). Zeros keep their sign, an underflow to zero keeps the
//! sign of x, NaN stays NaN.

use crate::ival::Ival;
use losscheck_core::dtype::pow2;
use losscheck_core::Dtype;
use rug::{Assign, Float};
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Float> = RefCell::new(Float::new(64));
}

/// The outcome of rounding an enclosure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decided {
    /// Both ends round to the same dtype value (always the case for an exact point and for
    /// NaN): the correctly rounded exact result.
    One(f64),
    /// The ends round to different values (RN(lo), RN(hi)): more precision is needed.
    Two(f64, f64),
}

/// RN_dtype(x): the value of `dtype` nearest to `x`, ties to even, overflow to ±inf, as an
/// exact `f64`.
pub fn round_float(x: &Float, dtype: Dtype) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let neg = x.is_sign_negative();
    if x.is_infinite() {
        return if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    if x.is_zero() {
        return if neg { -0.0 } else { 0.0 };
    }
    let f = dtype.format();
    let p = f.precision as i32;
    // MPFR: x = 0.1b… · 2^get_exp, so 2^e ≤ |x| < 2^(e+1) with e = get_exp − 1.
    let e = x.get_exp().expect("finite non-zero") - 1;
    let inf = if neg {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };
    if e > f.emax {
        return inf;
    }
    let q = e.max(f.emin) - (p - 1);
    if e < q - 1 {
        // |x| < 2^(q−1) = half the quantum: rounds to zero (not a tie).
        return if neg { -0.0 } else { 0.0 };
    }
    // y = x·2^−q is exact (a copy at x's precision, or more); |y| < 2^p, so p + 1 bits hold
    // the rounded integer. A per-thread scratch value avoids an allocation per call.
    let k = SCRATCH.with(|cell| {
        let mut y = cell.borrow_mut();
        let need = x.prec().max(f.precision + 1);
        if y.prec() != need {
            y.set_prec(need);
        }
        y.assign(x);
        *y <<= -q;
        y.round_even_mut();
        y.to_f64() // an integer of at most p + 1 bits: exact
    });
    let r = k * pow2(q); // exact: q ≥ emin − p + 1 and |k·2^q| ≤ 2^(emax+1)
    if r.abs() > dtype.max() {
        return inf;
    }
    if r == 0.0 {
        return if neg { -0.0 } else { 0.0 };
    }
    r
}

/// Round both ends of an enclosure. NaN gives `One(NaN)`. An exact zero (both ends zero, of
/// whatever sign: the sign of a computed zero depends on the evaluation path, and the exact
/// real 0 has none) gives `One(+0.0)`, and so do ends that round to zeros of different signs
/// (an enclosure of a value below half the smallest subnormal, or of 0): −0 and +0 are the same
/// value for every error measure. A value that is certainly negative and rounds to zero gives
/// −0, as IEEE rounding does.
pub fn round_enclosure(iv: &Ival, dtype: Dtype) -> Decided {
    if iv.is_nan() {
        return Decided::One(f64::NAN);
    }
    if iv.lo.is_zero() && iv.hi.is_zero() {
        return Decided::One(0.0);
    }
    let a = round_float(&iv.lo, dtype);
    if iv.lo == iv.hi {
        return Decided::One(a);
    }
    let b = round_float(&iv.hi, dtype);
    if a.to_bits() == b.to_bits() {
        Decided::One(a)
    } else if a == 0.0 && b == 0.0 {
        Decided::One(0.0)
    } else {
        Decided::Two(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_basics_against_the_hardware_cast() {
        // f64 → f32 `as` is a single correct rounding; any f64 input is exact in MPFR.
        let xs = [
            1.0,
            1.0 + 2f64.powi(-24),
            1.0 + 3.0 * 2f64.powi(-24),
            3.4028235677973366e38,
            3.4028235677973366e38 * (1.0 + 2f64.powi(-25)),
            1e-45,
            7e-46,
            -7.006492321624085e-46,
            1.1754942e-38,
        ];
        for x in xs {
            let got = round_float(&Float::with_val(53, x), Dtype::F32);
            assert_eq!(got.to_bits(), (x as f32 as f64).to_bits(), "{x:e}");
        }
    }
}
