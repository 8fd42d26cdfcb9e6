//! Rigorous interval arithmetic over MPFR with directed rounding, in extended reals.
//!
//! An [`Ival`] `[lo, hi]` encloses one exact extended real x: `lo ≤ x ≤ hi`, `lo` computed
//! with rounding toward −∞ and `hi` toward +∞. MPFR's functions are correctly rounded in each
//! direction, so a monotone function maps ends to ends; the non-monotone ones here (`sqr`,
//! `abs`, `log_cosh`) are handled through their monotone pieces.
//!
//! Conventions (documented because every family relies on them):
//!
//! - **Infinities.** An exact infinite result (e.g. `inf − 1`, `exp(inf)`, `tanh(inf) = 1`) is
//!   a point interval `[inf, inf]`: MPFR computes it exactly in both directions. An infinite end
//!   of a *non-point* interval is a bound that may be attained.
//! - **NaN.** Both ends NaN means the exact result is *undefined*: no limit exists (`inf − inf`,
//!   `0·inf`, a NaN input, a function outside its domain). It is produced only when that is
//!   certain — both operands are points, or the whole operand lies outside the domain.
//! - **Ambiguity.** When the operands are not points and some member of the enclosed set could
//!   give an undefined result while others do not (e.g. `[0, 1]·[inf, inf]`), the result is the
//!   whole line `[−inf, +inf]` ([`Ival::entire`]): it never rounds to a single value, so the
//!   driver raises the precision (and at the cap reports a hard case) instead of claiming a
//!   value it cannot justify.
//! - **Signed zeros** carry no meaning in the enclosure (−0 = +0 as values).
//!
//! The precision of a result is the larger of its operands' precisions (`lo`'s precision is
//! taken as the interval's).

use rug::float::{Constant, Round, Special};
use rug::ops::{AddAssignRound, DivAssignRound, MulAssignRound, NegAssign, SubAssignRound};
use rug::Float;
use std::cmp::Ordering;

/// A rigorous enclosure `[lo, hi]` of an exact extended real (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Ival {
    /// Lower end, rounded toward −∞.
    pub lo: Float,
    /// Upper end, rounded toward +∞.
    pub hi: Float,
}

/// Where an enclosure lies relative to 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// Certainly < 0 (`hi < 0`).
    Negative,
    /// Certainly > 0 (`lo > 0`).
    Positive,
    /// Exactly 0 (a point zero).
    Zero,
    /// Contains 0 without being the point 0 (ends included: `[0, 1]` straddles).
    Straddles,
    /// Undefined (NaN).
    Undefined,
}

#[inline]
fn fl<T>(prec: u32, val: T, round: Round) -> Float
where
    Float: rug::ops::AssignRound<T, Round = Round, Ordering = Ordering>,
{
    Float::with_val_round(prec, val, round).0
}

#[inline]
fn flt<T>(prec: u32, val: T, round: Round) -> (Float, Ordering)
where
    Float: rug::ops::AssignRound<T, Round = Round, Ordering = Ordering>,
{
    Float::with_val_round(prec, val, round)
}

/// The upward rounding of a correctly rounded result, given its downward rounding `lo` and the
/// ternary value: the same number when exact, else the next number up (this holds at overflow,
/// max → inf, and underflow, 0 → the least positive number, too).
#[inline]
fn up_from_down(lo: &Float, t: Ordering) -> Float {
    let mut h = lo.clone();
    if t != Ordering::Equal {
        h.next_up();
    }
    h
}

impl Ival {
    // ---------------------------------------------------------------- construction

    /// The exact point `x` at `prec` bits (at least 53, so every `f64` is exact). NaN gives
    /// the undefined interval, ±inf the infinite points.
    pub fn point(prec: u32, x: f64) -> Ival {
        let p = prec.max(53);
        let v = Float::with_val(p, x);
        Ival {
            lo: v.clone(),
            hi: v,
        }
    }

    /// The exact point `x` (the value is taken as is, at its own precision).
    pub fn from_float(x: Float) -> Ival {
        Ival {
            lo: x.clone(),
            hi: x,
        }
    }

    /// The enclosure `[lo, hi]`; `lo > hi` or a NaN end gives the undefined interval.
    pub fn from_ends(lo: Float, hi: Float) -> Ival {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            let p = lo.prec().max(hi.prec());
            return Ival::nan(p);
        }
        Ival { lo, hi }
    }

    /// Exact 0 (+0).
    pub fn zero(prec: u32) -> Ival {
        Ival::from_float(Float::new(prec))
    }

    /// Exact 1.
    pub fn one(prec: u32) -> Ival {
        Ival::from_float(Float::with_val(prec, 1))
    }

    /// The undefined result (both ends NaN).
    pub fn nan(prec: u32) -> Ival {
        Ival::from_float(Float::with_val(prec, Special::Nan))
    }

    /// The whole extended line `[−inf, +inf]`: "could be anything" (see the module docs).
    pub fn entire(prec: u32) -> Ival {
        Ival {
            lo: Float::with_val(prec, Special::NegInfinity),
            hi: Float::with_val(prec, Special::Infinity),
        }
    }

    /// An enclosure of ln 2.
    pub fn ln2(prec: u32) -> Ival {
        Ival {
            lo: fl(prec, Constant::Log2, Round::Down),
            hi: fl(prec, Constant::Log2, Round::Up),
        }
    }

    // ---------------------------------------------------------------- queries

    /// The working precision of this interval (that of `lo`).
    #[inline]
    pub fn prec(&self) -> u32 {
        self.lo.prec()
    }

    /// Is the exact result undefined?
    #[inline]
    pub fn is_nan(&self) -> bool {
        self.lo.is_nan() || self.hi.is_nan()
    }

    /// Is this a single value (lo = hi, so the result is known exactly)? False for NaN.
    #[inline]
    pub fn is_point(&self) -> bool {
        !self.is_nan() && self.lo == self.hi
    }

    /// Are both ends finite?
    #[inline]
    pub fn is_finite(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }

    /// Is this exactly 0?
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.lo.is_zero() && self.hi.is_zero()
    }

    /// Is this the whole line (see [`Ival::entire`])?
    pub fn is_entire(&self) -> bool {
        self.lo.is_infinite()
            && self.lo.is_sign_negative()
            && self.hi.is_infinite()
            && self.hi.is_sign_positive()
    }

    /// Does the enclosure contain `x`? (False for NaN.)
    pub fn contains_f64(&self, x: f64) -> bool {
        !self.is_nan() && self.lo <= x && x <= self.hi
    }

    /// Does the enclosure contain 0 (`lo ≤ 0 ≤ hi`)? False for NaN.
    pub fn contains_zero(&self) -> bool {
        !self.is_nan() && self.lo <= 0 && self.hi >= 0
    }

    /// Where the enclosure lies relative to 0.
    pub fn sign(&self) -> Sign {
        if self.is_nan() {
            Sign::Undefined
        } else if self.lo.is_zero() && self.hi.is_zero() {
            Sign::Zero
        } else if self.lo > 0 {
            Sign::Positive
        } else if self.hi < 0 {
            Sign::Negative
        } else {
            Sign::Straddles
        }
    }

    /// Certainly < 0.
    pub fn certainly_neg(&self) -> bool {
        self.sign() == Sign::Negative
    }

    /// Certainly > 0.
    pub fn certainly_pos(&self) -> bool {
        self.sign() == Sign::Positive
    }

    /// Certainly ≥ 0 (`lo ≥ 0`).
    pub fn certainly_nonneg(&self) -> bool {
        !self.is_nan() && self.lo >= 0
    }

    /// The midpoint rounded to the nearest `f64`: the value itself for a point, the infinite
    /// end when exactly one end is infinite, NaN for NaN and for the whole line.
    pub fn mid_f64(&self) -> f64 {
        if self.is_nan() {
            return f64::NAN;
        }
        if self.lo == self.hi {
            return self.lo.to_f64();
        }
        match (self.lo.is_infinite(), self.hi.is_infinite()) {
            (true, true) => f64::NAN,
            (true, false) => self.lo.to_f64(),
            (false, true) => self.hi.to_f64(),
            (false, false) => {
                // (lo + hi)/2 at 64 extra bits, then one rounding to f64: a description of
                // the enclosure, not a rigorous quantity.
                let p = self.lo.prec().max(self.hi.prec()) + 64;
                let mut s = Float::with_val(p, &self.lo + &self.hi);
                s >>= 1;
                s.to_f64()
            }
        }
    }

    /// |x| for the κ allowance κ·2⁻⁵³·|x|: |midpoint|, except for an enclosure that straddles 0
    /// symmetrically (midpoint exactly 0, e.g. a cancellation below the working precision),
    /// where it is max(|lo|, |hi|) rounded up — |x| is at most that, and a relative allowance
    /// with |x| = 0 would allow nothing where the exact result is merely unresolved, not 0.
    pub fn magnitude(&self) -> f64 {
        let m = self.mid_f64().abs();
        if m == 0.0 && !self.is_zero() && self.contains_zero() {
            return self.abs().hi.to_f64_round(Round::Up);
        }
        m
    }

    /// The midpoint as a `Float` (NaN for NaN or the whole line; an infinite end as itself).
    pub fn mid(&self) -> Float {
        let p = self.prec();
        if self.is_nan() {
            return Float::with_val(p, Special::Nan);
        }
        if self.lo == self.hi {
            return self.lo.clone();
        }
        match (self.lo.is_infinite(), self.hi.is_infinite()) {
            (true, true) => Float::with_val(p, Special::Nan),
            (true, false) => self.lo.clone(),
            (false, true) => self.hi.clone(),
            (false, false) => {
                let mut s = Float::with_val(p, &self.lo + &self.hi);
                s >>= 1;
                s
            }
        }
    }

    /// Both ends in decimal with [`Ival::DECIMAL_DIGITS`] significant digits, rounded outward
    /// (see [`Ival::to_decimal_strings_digits`]): what `losscheck eval` shows as
    /// `oracle.enclosure`.
    pub fn to_decimal_strings(&self) -> (String, String) {
        self.to_decimal_strings_digits(Self::DECIMAL_DIGITS)
    }

    /// Significant digits of [`Ival::to_decimal_strings`] (more than the 20 that tell the ends
    /// of a 64-bit enclosure apart).
    pub const DECIMAL_DIGITS: usize = 25;

    /// Both ends in decimal with `digits` significant digits, rounded outward (the lower end
    /// down, the upper up), so the strings still enclose the exact value, e.g.
    /// `("3.333333333333333333333333e-1", "3.333333333333333333333334e-1")`. NaN ends are
    /// `"NaN"`, infinities `"inf"` / `"-inf"`, zeros `"0"` / `"-0"`.
    pub fn to_decimal_strings_digits(&self, digits: usize) -> (String, String) {
        let digits = digits.max(1);
        (
            self.lo.to_string_radix_round(10, Some(digits), Round::Down),
            self.hi.to_string_radix_round(10, Some(digits), Round::Up),
        )
    }

    // ---------------------------------------------------------------- helpers

    #[inline]
    fn prec2(&self, o: &Ival) -> u32 {
        self.prec().max(o.prec())
    }

    /// The result of a binary op whose end candidates produced a NaN.
    #[inline]
    fn undefined_or_entire(&self, o: &Ival, p: u32) -> Ival {
        if self.is_point() && o.is_point() {
            Ival::nan(p)
        } else {
            Ival::entire(p)
        }
    }

    /// Apply a monotone non-decreasing, correctly rounded function given by its evaluation with
    /// a rounding direction (returning the ternary value). A point costs one evaluation (the
    /// upper end follows from the lower one and the ternary value). Both ends NaN (the whole
    /// operand outside the domain) → NaN; one end NaN → whole line.
    fn monotone(&self, f: impl Fn(&Float, Round) -> (Float, Ordering)) -> Ival {
        let p = self.prec();
        if self.is_nan() {
            return Ival::nan(p);
        }
        if self.lo == self.hi {
            let (lo, t) = f(&self.lo, Round::Down);
            if lo.is_nan() {
                return Ival::nan(p);
            }
            let hi = up_from_down(&lo, t);
            return Ival { lo, hi };
        }
        let lo = f(&self.lo, Round::Down).0;
        let hi = f(&self.hi, Round::Up).0;
        match (lo.is_nan(), hi.is_nan()) {
            (false, false) => Ival { lo, hi },
            (true, true) => Ival::nan(p),
            _ => Ival::entire(p),
        }
    }

    /// Apply a monotone non-decreasing function given as a rigorous enclosure of its value at
    /// a point: `[f(lo).lo, f(hi).hi]`. `f` receives exact points at this precision.
    pub fn map_increasing(&self, f: impl Fn(&Ival) -> Ival) -> Ival {
        let p = self.prec();
        if self.is_nan() {
            return Ival::nan(p);
        }
        if self.lo == self.hi {
            return f(self);
        }
        let a = f(&Ival::from_float(self.lo.clone()));
        let b = f(&Ival::from_float(self.hi.clone()));
        match (a.is_nan(), b.is_nan()) {
            (false, false) => Ival::from_ends(a.lo, b.hi),
            (true, true) => Ival::nan(p),
            _ => Ival::entire(p),
        }
    }

    /// The smallest interval containing both (NaN if either is NaN).
    pub fn hull(&self, o: &Ival) -> Ival {
        if self.is_nan() || o.is_nan() {
            return Ival::nan(self.prec2(o));
        }
        let lo = if self.lo <= o.lo {
            self.lo.clone()
        } else {
            o.lo.clone()
        };
        let hi = if self.hi >= o.hi {
            self.hi.clone()
        } else {
            o.hi.clone()
        };
        Ival { lo, hi }
    }

    // ---------------------------------------------------------------- arithmetic

    /// −x (exact).
    pub fn neg(&self) -> Ival {
        Ival {
            lo: Float::with_val(self.hi.prec(), -&self.hi),
            hi: Float::with_val(self.lo.prec(), -&self.lo),
        }
    }

    /// x + y.
    pub fn add(&self, o: &Ival) -> Ival {
        let p = self.prec2(o);
        if self.is_nan() || o.is_nan() {
            return Ival::nan(p);
        }
        let lo = fl(p, &self.lo + &o.lo, Round::Down);
        let hi = fl(p, &self.hi + &o.hi, Round::Up);
        if lo.is_nan() || hi.is_nan() {
            // inf − inf among the ends.
            return self.undefined_or_entire(o, p);
        }
        // (Bounds −inf and +inf meeting without a NaN end already give the whole line.)
        Ival { lo, hi }
    }

    /// x += y (in place, no allocation when the precisions agree).
    pub fn add_assign(&mut self, o: &Ival) {
        if self.is_nan() {
            return;
        }
        if o.is_nan() {
            *self = Ival::nan(self.prec2(o));
            return;
        }
        let was_point = self.is_point();
        self.lo.add_assign_round(&o.lo, Round::Down);
        self.hi.add_assign_round(&o.hi, Round::Up);
        if self.lo.is_nan() || self.hi.is_nan() {
            let p = self.prec2(o);
            *self = if was_point && o.is_point() {
                Ival::nan(p)
            } else {
                Ival::entire(p)
            };
        }
    }

    /// x − y.
    pub fn sub(&self, o: &Ival) -> Ival {
        let p = self.prec2(o);
        if self.is_nan() || o.is_nan() {
            return Ival::nan(p);
        }
        let lo = fl(p, &self.lo - &o.hi, Round::Down);
        let hi = fl(p, &self.hi - &o.lo, Round::Up);
        if lo.is_nan() || hi.is_nan() {
            return self.undefined_or_entire(o, p);
        }
        Ival { lo, hi }
    }

    /// x · y.
    pub fn mul(&self, o: &Ival) -> Ival {
        let p = self.prec2(o);
        if self.is_nan() || o.is_nan() {
            return Ival::nan(p);
        }
        let (a, b, c, d) = (&self.lo, &self.hi, &o.lo, &o.hi);
        if self.is_point() && o.is_point() {
            let lo = fl(p, a * c, Round::Down);
            if lo.is_nan() {
                return Ival::nan(p);
            }
            let hi = fl(p, a * c, Round::Up);
            return Ival { lo, hi };
        }
        // 0·inf possible somewhere in the enclosed set: no single answer.
        let has_inf = |x: &Ival| x.lo.is_infinite() || x.hi.is_infinite();
        if (self.contains_zero() && has_inf(o)) || (o.contains_zero() && has_inf(self)) {
            return Ival::entire(p);
        }
        // Fast path: both certainly non-negative.
        if *a >= 0 && *c >= 0 {
            let lo = fl(p, a * c, Round::Down);
            let hi = fl(p, b * d, Round::Up);
            return Ival { lo, hi };
        }
        // General case: the four end products, each rounded both ways (no NaN can arise:
        // 0·inf was excluded above).
        let mut lo = fl(p, a * c, Round::Down);
        let mut hi = fl(p, a * c, Round::Up);
        for (x, y) in [(a, d), (b, c), (b, d)] {
            let l = fl(p, x * y, Round::Down);
            if l < lo {
                lo = l;
            }
            let h = fl(p, x * y, Round::Up);
            if h > hi {
                hi = h;
            }
        }
        Ival { lo, hi }
    }

    /// x ·= y. In place when y is a finite non-zero point (the common case: weights,
    /// cotangents, denominators), else through [`Ival::mul`].
    pub fn mul_assign(&mut self, o: &Ival) {
        if !self.is_nan()
            && o.is_point()
            && o.lo.is_finite()
            && !o.lo.is_zero()
            && self.prec() >= o.prec()
        {
            if o.lo.is_sign_negative() {
                std::mem::swap(&mut self.lo, &mut self.hi);
            }
            self.lo.mul_assign_round(&o.lo, Round::Down);
            self.hi.mul_assign_round(&o.lo, Round::Up);
            return;
        }
        *self = self.mul(o);
    }

    /// x /= y. In place when y is a finite non-zero point, else through [`Ival::div`].
    pub fn div_assign(&mut self, o: &Ival) {
        if !self.is_nan()
            && o.is_point()
            && o.lo.is_finite()
            && !o.lo.is_zero()
            && self.prec() >= o.prec()
        {
            if o.lo.is_sign_negative() {
                std::mem::swap(&mut self.lo, &mut self.hi);
            }
            self.lo.div_assign_round(&o.lo, Round::Down);
            self.hi.div_assign_round(&o.lo, Round::Up);
            return;
        }
        *self = self.div(o);
    }

    /// x / y. A point-zero divisor gives NaN (no two-sided limit); a divisor interval
    /// containing 0 gives the whole line.
    pub fn div(&self, o: &Ival) -> Ival {
        let p = self.prec2(o);
        if self.is_nan() || o.is_nan() {
            return Ival::nan(p);
        }
        match o.sign() {
            Sign::Zero => return Ival::nan(p),
            Sign::Straddles => return Ival::entire(p),
            _ => {}
        }
        let (a, b, c, d) = (&self.lo, &self.hi, &o.lo, &o.hi);
        if self.is_point() && o.is_point() {
            let lo = fl(p, a / c, Round::Down);
            if lo.is_nan() {
                return Ival::nan(p);
            }
            let hi = fl(p, a / c, Round::Up);
            return Ival { lo, hi };
        }
        let mut lo = fl(p, a / c, Round::Down);
        let mut hi = fl(p, a / c, Round::Up);
        if lo.is_nan() || hi.is_nan() {
            return Ival::entire(p);
        }
        for (x, y) in [(a, d), (b, c), (b, d)] {
            let l = fl(p, x / y, Round::Down);
            let h = fl(p, x / y, Round::Up);
            if l.is_nan() || h.is_nan() {
                // inf/inf among the ends.
                return Ival::entire(p);
            }
            if l < lo {
                lo = l;
            }
            if h > hi {
                hi = h;
            }
        }
        Ival { lo, hi }
    }

    /// x · c for an exact `f64` c.
    pub fn scale_f64(&self, c: f64) -> Ival {
        self.mul(&Ival::point(self.prec(), c))
    }

    /// x · c for an exact `Float` c.
    pub fn scale(&self, c: &Float) -> Ival {
        self.mul(&Ival::from_float(c.clone()))
    }

    /// x · 2^k (exact: MPFR's exponent range cannot overflow for these magnitudes).
    pub fn mul_2si(&self, k: i32) -> Ival {
        let mut r = self.clone();
        r.lo <<= k;
        r.hi <<= k;
        r
    }

    /// |x|.
    pub fn abs(&self) -> Ival {
        match self.sign() {
            Sign::Undefined => Ival::nan(self.prec()),
            Sign::Positive => self.clone(),
            Sign::Negative => self.neg(),
            Sign::Zero => Ival::zero(self.prec()),
            Sign::Straddles => {
                let neg_lo = Float::with_val(self.lo.prec(), -&self.lo);
                let hi = if neg_lo > self.hi {
                    neg_lo
                } else {
                    self.hi.clone()
                };
                Ival {
                    lo: Float::new(self.prec()),
                    hi,
                }
            }
        }
    }

    /// x².
    pub fn sqr(&self) -> Ival {
        let p = self.prec();
        let sq = |x: &Float, r: Round| fl(p, x.square_ref(), r);
        match self.sign() {
            Sign::Undefined => Ival::nan(p),
            Sign::Zero => Ival::zero(p),
            Sign::Positive => Ival {
                lo: sq(&self.lo, Round::Down),
                hi: sq(&self.hi, Round::Up),
            },
            Sign::Negative => Ival {
                lo: sq(&self.hi, Round::Down),
                hi: sq(&self.lo, Round::Up),
            },
            Sign::Straddles => {
                let a = sq(&self.lo, Round::Up);
                let b = sq(&self.hi, Round::Up);
                Ival {
                    lo: Float::new(p),
                    hi: if a > b { a } else { b },
                }
            }
        }
    }

    /// max(x, y) (NaN if either is NaN).
    pub fn max(&self, o: &Ival) -> Ival {
        if self.is_nan() || o.is_nan() {
            return Ival::nan(self.prec2(o));
        }
        let lo = if self.lo >= o.lo {
            self.lo.clone()
        } else {
            o.lo.clone()
        };
        let hi = if self.hi >= o.hi {
            self.hi.clone()
        } else {
            o.hi.clone()
        };
        Ival { lo, hi }
    }

    /// min(x, y) (NaN if either is NaN).
    pub fn min(&self, o: &Ival) -> Ival {
        if self.is_nan() || o.is_nan() {
            return Ival::nan(self.prec2(o));
        }
        let lo = if self.lo <= o.lo {
            self.lo.clone()
        } else {
            o.lo.clone()
        };
        let hi = if self.hi <= o.hi {
            self.hi.clone()
        } else {
            o.hi.clone()
        };
        Ival { lo, hi }
    }

    // ---------------------------------------------------------------- functions

    /// e^x.
    pub fn exp(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.exp_ref(), r))
    }

    /// ln x (ln 0 = −inf; NaN below 0).
    pub fn ln(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.ln_ref(), r))
    }

    /// ln(1 + x) (−inf at −1; NaN below −1). For a non-point enclosure with lo ≥ 0 one
    /// evaluation suffices: ln(1 + ·) is 1-Lipschitz there, so ln(1 + hi) ≤ ln(1 + lo) + (hi − lo).
    pub fn log1p(&self) -> Ival {
        let p = self.prec();
        if !self.is_nan() && self.lo != self.hi && self.lo >= 0 && self.hi.is_finite() {
            let (lo, t) = flt(p, self.lo.ln_1p_ref(), Round::Down);
            let mut hi = up_from_down(&lo, t);
            let w = fl(p, &self.hi - &self.lo, Round::Up);
            hi.add_assign_round(&w, Round::Up);
            return Ival { lo, hi };
        }
        self.monotone(|x, r| flt(p, x.ln_1p_ref(), r))
    }

    /// e^x − 1.
    pub fn expm1(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.exp_m1_ref(), r))
    }

    /// tanh x (±1 at ±inf).
    pub fn tanh(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.tanh_ref(), r))
    }

    /// sinh x.
    pub fn sinh(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.sinh_ref(), r))
    }

    /// √x (NaN below 0).
    pub fn sqrt(&self) -> Ival {
        let p = self.prec();
        self.monotone(|x, r| flt(p, x.sqrt_ref(), r))
    }

    /// ln cosh x, even with its minimum 0 at 0, without cancellation anywhere: for |x| ≤ 1
    /// as log1p(2·sinh²(x/2)), above as |x| − ln 2 + log1p(e^{−2|x|}); +inf at ±inf.
    pub fn log_cosh(&self) -> Ival {
        self.abs()
            .map_increasing(|s| log_cosh_tanh_nonneg_point(s, false).0)
    }

    /// (ln cosh x, tanh x) together, sharing the one transcendental evaluation of |x| that
    /// both need for a point x: with S = sinh(|x|/2), ln cosh = log1p(2S²) and
    /// tanh |x| = 2S·√(1 + S²)/(1 + 2S²) for |x| ≤ 1; with t = e^{−2|x|},
    /// ln cosh = |x| − ln 2 + log1p(t) and tanh |x| = (1 − t)/(1 + t) above. A non-point x
    /// takes [`Ival::log_cosh`] and [`Ival::tanh`] separately.
    pub fn log_cosh_tanh(&self) -> (Ival, Ival) {
        if !self.is_point() {
            return (self.log_cosh(), self.tanh());
        }
        let neg = self.lo.is_sign_negative();
        let s = self.abs();
        let (l, t) = log_cosh_tanh_nonneg_point(&s, true);
        let t = t.expect("asked for tanh");
        (l, if neg { t.neg() } else { t })
    }

    // ---------------------------------------------------------------- logistic family

    /// softplus x = ln(1 + e^x), increasing, with full relative accuracy everywhere (no
    /// cancellation): log1p(e^x) for x ≤ 0, x + log1p(e^{−x}) above. softplus(−inf) = 0,
    /// softplus(+inf) = +inf, exactly.
    pub fn softplus(&self) -> Ival {
        self.map_increasing(|x| logistic_point(x).softplus)
    }

    /// σ(x) = 1/(1 + e^{−x}), increasing, with full relative accuracy in both tails
    /// (σ(−|x|) = e^{−|x|}/(1 + e^{−|x|})). σ(−inf) = 0, σ(+inf) = 1, exactly.
    pub fn sigmoid(&self) -> Ival {
        self.map_increasing(|x| logistic_point(x).sigmoid)
    }

    /// softplus(±x) and σ(±x) together: for a point x one exp and one log1p serve all four
    /// (with e = e^{−|x|} ∈ [0, 1]: softplus(|x|) = |x| + log1p(e), softplus(−|x|) = log1p(e),
    /// σ(|x|) = 1/(1 + e), σ(−|x|) = e·σ(|x|)); a non-point x takes each monotone function
    /// separately.
    pub fn logistic(&self) -> Logistic {
        if self.is_point() || self.is_nan() {
            return logistic_point(self);
        }
        let m = self.neg();
        Logistic {
            softplus: self.softplus(),
            softplus_neg: m.softplus(),
            sigmoid: self.sigmoid(),
            sigmoid_neg: m.sigmoid(),
        }
    }

    /// x^y for an exact exponent y (MPFR's pow: 0^0 = 1, 0^y = 0 for y > 0, inf^y = inf for
    /// y > 0). For x ≥ 0 it is monotone in x (non-decreasing for y ≥ 0, non-increasing for
    /// y < 0); a point x < 0 is evaluated as is (correctly rounded both ways, NaN where MPFR
    /// says so); a non-point enclosure reaching below 0 gives the whole line.
    pub fn pow_const(&self, y: &Float) -> Ival {
        use rug::ops::Pow;
        let p = self.prec();
        if self.is_nan() || y.is_nan() {
            return Ival::nan(p);
        }
        let f = |x: &Float, r: Round| flt(p, x.pow(y), r);
        if self.is_point() {
            return self.monotone(f);
        }
        if self.lo < 0 {
            return Ival::entire(p);
        }
        if !y.is_sign_negative() || y.is_zero() {
            self.monotone(f)
        } else {
            let lo = f(&self.hi, Round::Down).0;
            let hi = f(&self.lo, Round::Up).0;
            Ival::from_ends(lo, hi)
        }
    }
}

/// softplus(±x) and σ(±x) of one enclosure x (see [`Ival::logistic`]).
#[derive(Clone, Debug)]
pub struct Logistic {
    /// softplus(x) = ln(1 + e^x).
    pub softplus: Ival,
    /// softplus(−x) = ln(1 + e^{−x}).
    pub softplus_neg: Ival,
    /// σ(x).
    pub sigmoid: Ival,
    /// σ(−x) = 1 − σ(x), computed without the subtraction.
    pub sigmoid_neg: Ival,
}

/// [`Logistic`] of an exact point x (or NaN). Every step is a monotone operation on
/// enclosures of positive quantities: no cancellation, the width shrinks with the precision.
/// An e^{−|x|} below MPFR's exponent range gives the enclosure [0, tiny], still rigorous.
fn logistic_point(x: &Ival) -> Logistic {
    let p = x.prec();
    if x.is_nan() {
        let n = Ival::nan(p);
        return Logistic {
            softplus: n.clone(),
            softplus_neg: n.clone(),
            sigmoid: n.clone(),
            sigmoid_neg: n,
        };
    }
    let neg = x.lo.is_sign_negative() && !x.lo.is_zero();
    let a = x.abs();
    let e = a.neg().exp(); // e^{−|x|} ∈ [0, 1]; exactly 0 at |x| = inf
    let l = e.log1p();
    let big = a.add(&l);
    let one = Ival::one(p);
    let s_big = one.div(&one.add(&e));
    let s_small = e.mul(&s_big);
    if neg {
        Logistic {
            softplus: l,
            softplus_neg: big,
            sigmoid: s_small,
            sigmoid_neg: s_big,
        }
    } else {
        Logistic {
            softplus: big,
            softplus_neg: l,
            sigmoid: s_big,
            sigmoid_neg: s_small,
        }
    }
}

/// ln cosh s, and tanh s when asked, for an exact point s ≥ 0 (both increasing in s).
fn log_cosh_tanh_nonneg_point(s: &Ival, want_tanh: bool) -> (Ival, Option<Ival>) {
    let p = s.prec();
    let x = &s.lo;
    if x.is_zero() {
        return (Ival::zero(p), want_tanh.then(|| Ival::zero(p)));
    }
    if x.is_infinite() {
        return (s.clone(), want_tanh.then(|| Ival::one(p)));
    }
    if *x <= 1 {
        // cosh s − 1 = 2 sinh²(s/2): every step is monotone and loses no relative accuracy.
        let sh = s.mul_2si(-1).sinh();
        let two_sq = sh.sqr().mul_2si(1);
        let tanh = want_tanh.then(|| {
            // sinh s = 2 sinh(s/2) cosh(s/2), cosh s = 1 + 2 sinh²(s/2)
            let one = Ival::one(p);
            let ch = sh.sqr().add(&one).sqrt();
            let t = sh.mul(&ch).mul_2si(1).div(&two_sq.add(&one));
            // |tanh| ≤ 1 and tanh ≥ 0 here: clip what the dependency widening added
            t.max(&Ival::zero(p)).min(&one)
        });
        (two_sq.log1p(), tanh)
    } else if *x < p {
        // ln cosh s = s − ln 2 + ln(1 + e^{−2s}); the subtraction loses at most 2 bits (s > 1).
        let mut m2s = s.mul_2si(1);
        m2s.lo.neg_assign();
        m2s.hi.neg_assign();
        let t = m2s.exp();
        let tanh = want_tanh.then(|| {
            let one = Ival::one(p);
            one.sub(&t).div(&one.add(&t))
        });
        (s.add(&t.log1p()).sub(&Ival::ln2(p)), tanh)
    } else {
        // s ≥ p: 0 ≤ ln(1 + e^{−2s}) ≤ e^{−2s} < 2^{−2s} ≤ 2^{−2p}, far below the ulp of
        // s − ln 2 ≥ p − 1: no transcendental needed beyond ln 2; likewise
        // 1 ≥ tanh s = (1 − t)/(1 + t) ≥ 1 − 2t ≥ 1 − 2^{1−2p}.
        let tiny = Float::with_val(p, Float::i_exp(1, -2 * p as i32));
        let tail = Ival {
            lo: Float::new(p),
            hi: tiny.clone(),
        };
        let tanh = want_tanh.then(|| {
            let mut lo = Float::with_val(p, 1);
            lo.sub_assign_round(Float::with_val(p, &tiny * 2u32), Round::Down);
            Ival {
                lo,
                hi: Float::with_val(p, 1),
            }
        });
        (s.sub(&Ival::ln2(p)).add(&tail), tanh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64) -> Ival {
        Ival::point(64, x)
    }

    #[test]
    fn inf_minus_inf_is_nan_and_point_infinities_are_exact() {
        let inf = pt(f64::INFINITY);
        assert!(inf.sub(&inf).is_nan());
        let r = inf.sub(&pt(1.0));
        assert!(r.is_point() && r.lo.is_infinite() && r.lo > 0);
        assert!(pt(0.0).mul(&inf).is_nan());
        assert!(pt(f64::NAN).add(&pt(1.0)).is_nan());
    }

    #[test]
    fn ambiguous_zero_times_inf_is_entire() {
        let a = Ival::from_ends(Float::with_val(64, 0), Float::with_val(64, 1));
        assert!(a.mul(&pt(f64::INFINITY)).is_entire());
        let b = Ival::from_ends(Float::with_val(64, -1), Float::with_val(64, 1));
        assert!(b.mul(&pt(f64::INFINITY)).is_entire());
    }

    #[test]
    fn sqr_abs_of_straddling_intervals() {
        let a = Ival::from_ends(Float::with_val(64, -3), Float::with_val(64, 2));
        let s = a.sqr();
        assert!(s.lo == 0 && s.hi == 9);
        let b = a.abs();
        assert!(b.lo == 0 && b.hi == 3);
    }

    #[test]
    fn decimal_strings_enclose() {
        let t = Ival::point(200, 1.0).div(&Ival::point(200, 3.0));
        let (lo, hi) = t.to_decimal_strings();
        assert_eq!(
            (lo.as_str(), hi.as_str()),
            (
                "3.333333333333333333333333e-1",
                "3.333333333333333333333334e-1"
            )
        );
        let (lo, hi) = pt(-0.5).to_decimal_strings_digits(3);
        assert_eq!((lo.as_str(), hi.as_str()), ("-5.00e-1", "-5.00e-1"));
        let (lo, hi) = Ival::entire(64).to_decimal_strings();
        assert_eq!((lo.as_str(), hi.as_str()), ("-inf", "inf"));
        assert_eq!(Ival::nan(64).to_decimal_strings().0, "NaN");
        // at 64 bits the ends differ from the 20th digit on
        let (lo, hi) = pt(1.0).div(&pt(3.0)).to_decimal_strings();
        assert!(
            lo.starts_with("3.3333333333333333331") && hi.starts_with("3.3333333333333333334"),
            "{lo} {hi}"
        );
    }

    #[test]
    fn directed_rounding_brackets_one_third() {
        let t = pt(1.0).div(&pt(3.0));
        assert!(t.lo < t.hi);
        let q = rug::Rational::from((1, 3));
        assert!(t.lo < q && q < t.hi);
    }

    /// ln cosh x at 1200 bits straight from the definition (cancellation costs < 400 bits);
    /// beyond MPFR's exp range, |x| − ln 2 (the tail e^{−2|x|} is far below 2^−1200 there).
    fn reference_log_cosh(x: f64) -> Float {
        let x = Float::with_val(1200, x);
        if x.clone().abs() < 1e6 {
            Float::with_val(1200, x.cosh_ref()).ln()
        } else {
            x.abs() - Float::with_val(1200, Constant::Log2)
        }
    }

    fn assert_tight(l: &Ival, x: f64) {
        let r = reference_log_cosh(x);
        assert!(l.lo <= r && r <= l.hi, "{l:?} does not contain {r}");
        let w = Float::with_val(64, &l.hi - &l.lo) / &r;
        assert!(
            w < Float::with_val(64, Float::i_exp(1, -58)),
            "{l:?} too wide"
        );
    }

    #[test]
    fn log_cosh_tanh_pair_matches_the_separate_functions() {
        for x in [
            0.0,
            2f64.powi(-140),
            1e-5,
            0.3,
            -0.999,
            1.0,
            -1.0000001,
            3.0,
            -17.5,
            63.9,
            64.0,
            -1e10,
            3e38,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let (l, t) = pt(x).log_cosh_tanh();
            let r = Float::with_val(1200, x);
            let tr = Float::with_val(1200, r.tanh_ref());
            assert!(t.lo <= tr && tr <= t.hi, "tanh({x}): {t:?}");
            let w = Float::with_val(64, &t.hi - &t.lo);
            assert!(
                w <= Float::with_val(64, Float::i_exp(1, -58)) * tr.clone().abs(),
                "tanh({x}) too wide: {t:?}"
            );
            if x == 0.0 {
                assert!(l.is_zero() && t.is_zero());
            } else if x.is_finite() {
                assert_tight(&l, x);
            } else {
                assert!(l.is_point() && l.lo.is_infinite());
            }
            assert!(pt(x).tanh().lo <= tr && l.lo <= pt(x).log_cosh().hi);
        }
        assert!(pt(f64::NAN).log_cosh_tanh().0.is_nan() && pt(f64::NAN).log_cosh_tanh().1.is_nan());
    }

    #[test]
    fn log_cosh_tiny_is_accurate() {
        // ln cosh(2^-100) ≈ 2^-201: log(cosh x) at 64 bits would give 0 here.
        for e in [-100, -20, -1, 0] {
            let x = libm_free_pow2(e);
            assert_tight(&pt(x).log_cosh(), x);
        }
    }

    #[test]
    fn log_cosh_is_even_and_monotone_pieces_join() {
        let a = pt(-1.0).log_cosh();
        let b = pt(1.0).log_cosh();
        assert_eq!(a, b);
        for x in [1.0000001, 1.5, 20.0, 1e30, -3e38] {
            assert_tight(&pt(x).log_cosh(), x);
        }
        // A non-point argument straddling 0: [0, ln cosh(max |end|)].
        let iv = Ival::from_ends(Float::with_val(64, -2), Float::with_val(64, 1));
        let l = iv.log_cosh();
        assert!(l.lo == 0 && l.hi >= reference_log_cosh(2.0));
        let inf = pt(f64::NEG_INFINITY).log_cosh();
        assert!(inf.is_point() && inf.lo.is_infinite());
    }

    fn libm_free_pow2(e: i32) -> f64 {
        losscheck_core::dtype::pow2(e)
    }
}
