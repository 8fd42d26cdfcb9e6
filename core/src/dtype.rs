//! The dtype layer: the three input dtypes, exact conversion to `f64`, correct rounding from
//! `f64`, ordinal indices, ulp distances, Herbie's bits of error and the exp edges of each format.
//!
//! Every value of every dtype is exact in `f64`, so the layer carries values as `f64` and a
//! [`Dtype`] tag. All constants are derived from the format's three numbers (precision, minimum
//! normal exponent, maximum exponent), never typed in by hand.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the input dtypes of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

/// The parameters of a binary floating-point format (IEEE-754 style, with subnormals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Significand bits including the implicit bit (24, 11, 8).
    pub precision: u32,
    /// Exponent of the smallest normal number: min normal = 2^emin.
    pub emin: i32,
    /// Exponent of the largest finite number: max = (2 − 2^(1−p))·2^emax.
    pub emax: i32,
}

impl Dtype {
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f32" => Some(Dtype::F32),
            "f16" => Some(Dtype::F16),
            "bf16" => Some(Dtype::Bf16),
            _ => None,
        }
    }

    pub fn format(self) -> Format {
        match self {
            Dtype::F32 => Format {
                precision: 24,
                emin: -126,
                emax: 127,
            },
            Dtype::F16 => Format {
                precision: 11,
                emin: -14,
                emax: 15,
            },
            Dtype::Bf16 => Format {
                precision: 8,
                emin: -126,
                emax: 127,
            },
        }
    }

    /// Is this one of the 16-bit dtypes?
    pub fn is_16bit(self) -> bool {
        self != Dtype::F32
    }

    /// Significand bits including the implicit one.
    pub fn precision(self) -> u32 {
        self.format().precision
    }

    /// Storage width in bits.
    pub fn width(self) -> u32 {
        match self {
            Dtype::F32 => 32,
            _ => 16,
        }
    }

    /// Largest finite value.
    pub fn max(self) -> f64 {
        let f = self.format();
        (2.0 - pow2(1 - f.precision as i32)) * pow2(f.emax)
    }

    /// Smallest positive normal value.
    pub fn min_normal(self) -> f64 {
        pow2(self.format().emin)
    }

    /// Smallest positive subnormal value (the quantum of the subnormal range).
    pub fn min_subnormal(self) -> f64 {
        let f = self.format();
        pow2(f.emin + 1 - f.precision as i32)
    }

    /// Machine epsilon: the spacing of values in [1, 2).
    pub fn epsilon(self) -> f64 {
        pow2(1 - self.precision() as i32)
    }

    /// Round an `f64` to the nearest value of this dtype (ties to even, overflow to ±inf, NaN
    /// stays NaN, the sign of zero kept). Returned as the exact `f64` of that value.
    pub fn round(self, x: f64) -> f64 {
        match self {
            Dtype::F32 => x as f32 as f64,
            Dtype::F16 | Dtype::Bf16 => round_to_format(x, self.format()),
        }
    }

    /// Is `x` (NaN included) a value of this dtype?
    pub fn contains(self, x: f64) -> bool {
        x.is_nan() || self.round(x).to_bits() == x.to_bits()
    }

    /// The bit pattern of a value of this dtype (NaN gives the canonical NaN; a value outside
    /// the dtype is correctly rounded to it first).
    pub fn to_bits(self, x: f64) -> u32 {
        if x.is_nan() {
            return match self {
                Dtype::F32 => f32::NAN.to_bits(),
                Dtype::F16 => half::f16::NAN.to_bits() as u32,
                Dtype::Bf16 => half::bf16::NAN.to_bits() as u32,
            };
        }
        // `round` is exact in the dtype, so half's conversion of it is exact.
        let x = self.round(x);
        match self {
            Dtype::F32 => (x as f32).to_bits(),
            Dtype::F16 => half::f16::from_f64(x).to_bits() as u32,
            Dtype::Bf16 => half::bf16::from_f64(x).to_bits() as u32,
        }
    }

    /// The value of a bit pattern (the low 32 or 16 bits are used).
    pub fn from_bits(self, bits: u32) -> f64 {
        match self {
            Dtype::F32 => f32::from_bits(bits) as f64,
            Dtype::F16 => half::f16::from_bits(bits as u16).to_f64(),
            Dtype::Bf16 => half::bf16::from_bits(bits as u16).to_f64(),
        }
    }

    /// Ordinal index of a non-NaN value of this dtype: consecutive values have consecutive
    /// indices, −0 and +0 share index 0, ±inf are one past ±max. `None` for NaN or for a value
    /// that is not in the dtype.
    pub fn ordinal(self, x: f64) -> Option<i64> {
        if x.is_nan() || !self.contains(x) {
            return None;
        }
        let bits = self.to_bits(x) as i64;
        let sign_bit = 1i64 << (self.width() - 1);
        let mag = bits & (sign_bit - 1);
        Some(if bits & sign_bit != 0 { -mag } else { mag })
    }

    /// The value with a given ordinal index (inverse of [`Dtype::ordinal`]; clamps to ±inf).
    pub fn from_ordinal(self, k: i64) -> f64 {
        let inf = self.ordinal(f64::INFINITY).unwrap();
        let k = k.clamp(-inf, inf);
        let sign_bit = 1u32 << (self.width() - 1);
        if k < 0 {
            self.from_bits(sign_bit | (-k) as u32)
        } else {
            self.from_bits(k as u32)
        }
    }

    /// The next value of this dtype above / below `x` (`x` a value of the dtype).
    pub fn next_up(self, x: f64) -> f64 {
        if x.is_nan() || x == f64::INFINITY {
            return x;
        }
        self.from_ordinal(
            self.ordinal(x)
                .expect("next_up of a value outside the dtype")
                + 1,
        )
    }

    pub fn next_down(self, x: f64) -> f64 {
        -self.next_up(-x)
    }

    /// Ordinal distance between two values of this dtype (−0 = +0). Finite against infinite,
    /// and NaN against non-NaN, are `f64::INFINITY`; NaN against NaN is 0; inf against the same
    /// inf is 0. Values not in the dtype are rounded to it first.
    pub fn ulps(self, actual: f64, reference: f64) -> f64 {
        let (a, r) = (self.round(actual), self.round(reference));
        match (a.is_nan(), r.is_nan()) {
            (true, true) => return 0.0,
            (true, false) | (false, true) => return f64::INFINITY,
            _ => {}
        }
        if a.is_infinite() || r.is_infinite() {
            return if a == r { 0.0 } else { f64::INFINITY };
        }
        (self.ordinal(a).unwrap() - self.ordinal(r).unwrap()).unsigned_abs() as f64
    }

    /// Cap on the bits-of-error measure: the storage width.
    pub fn bits_cap(self) -> f64 {
        self.width() as f64
    }

    /// Herbie's bits of error: log2(1 + ulps), capped at the storage width.
    pub fn bits(self, ulps: f64) -> f64 {
        if ulps.is_nan() || ulps.is_infinite() {
            return self.bits_cap();
        }
        // libm, not the platform's log2: the same bits on every platform
        libm::log2(1.0 + ulps).min(self.bits_cap())
    }

    /// DESIGN.md's breakdown rule: more than half the significand bits lost.
    pub fn breakdown_bits(self) -> f64 {
        self.precision() as f64 / 2.0
    }

    /// The ulp of this dtype at magnitude |m|: the spacing of the values around |m| (the gap
    /// above the largest value ≤ |m|), the subnormal quantum below the normal range. For |m|
    /// at or beyond max: the spacing at max. NaN for NaN.
    pub fn ulp_at(self, m: f64) -> f64 {
        if m.is_nan() {
            return f64::NAN;
        }
        let m = m.abs().min(self.max());
        let f = self.format();
        if m < self.min_normal() {
            return self.min_subnormal();
        }
        let e = exponent(m);
        pow2(e - (f.precision as i32 - 1))
    }

    /// Smallest f64 x with RN(exp(x)) = +inf, i.e. exp(x) ≥ max + ulp(max)/2.
    /// f16: 11.09, f32: 88.72, bf16: 88.72 (88.7208).
    pub fn exp_overflow_edge(self) -> f64 {
        let f = self.format();
        // max + ulp(max)/2 = 2^(emax+1)·(1 − 2^−(p+1))
        ln_edge(f.emax + 1, Some(f.precision as i32 + 1), true)
    }

    /// Smallest f64 x with RN(exp(x)) normal, i.e. exp(x) ≥ min_normal − min_subnormal/2 (that
    /// midpoint rounds up to the even min normal): below it exp(x) rounds to a subnormal (or to
    /// 0, below [`Dtype::exp_zero_edge`]). f16 −9.70 (−9.7046), f32 −87.34, bf16 −87.34 (−87.3405).
    pub fn exp_subnormal_edge(self) -> f64 {
        let f = self.format();
        // min_normal − min_subnormal/2 = 2^emin·(1 − 2^−p)
        ln_edge(f.emin, Some(f.precision as i32), true)
    }

    /// Largest f64 x with RN(exp(x)) = 0, i.e. exp(x) ≤ min_subnormal/2 (that midpoint rounds
    /// to the even 0): exp(x) rounds to 0 at or below it. f16 −17.33, bf16 −92.9, f32 −103.97.
    pub fn exp_zero_edge(self) -> f64 {
        let f = self.format();
        // min_subnormal/2 = 2^(emin − p)
        ln_edge(f.emin - f.precision as i32, None, false)
    }

    /// The dtype the kernels compute 16-bit inputs in (f32's edges apply there too).
    pub fn compute_type(self) -> Dtype {
        Dtype::F32
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Dtype::parse(s).ok_or_else(|| format!("unknown dtype {s:?} (expected f32, f16 or bf16)"))
    }
}

/// ln(2^k·(1 − 2^−j)) (no factor when `j` is `None`), rounded to an f64 upwards (`up`) or
/// downwards. Evaluated in double-double — k·ln 2 with a 106-bit ln 2, plus the series of
/// log1p(−2^−j) — to ~1e−30 relative; the tail decides the direction (the exact value is
/// transcendental, never an f64, so the direction is always defined).
fn ln_edge(k: i32, j: Option<i32>, up: bool) -> f64 {
    // ln 2 = LN2_HI + LN2_LO to ~2^−106
    const LN2_HI: f64 = std::f64::consts::LN_2;
    const LN2_LO: f64 = 2.319_046_813_846_299_6e-17; // ln 2 − LN_2, to nearest
    let kf = k as f64;
    let mut acc = dd_add(two_prod(kf, LN2_HI), two_prod(kf, LN2_LO));
    if let Some(j) = j {
        // log1p(−u) = −Σ_{n≥1} u^n/n, u = 2^−j (j ≥ 8); terms below 2^−120 dropped
        let mut n = 1;
        while j * n <= 120 {
            let un = pow2(-j * n); // exact
            let q = un / n as f64;
            let r = libm::fma(-q, n as f64, un) / n as f64; // un/n = q + r to ~2^−106 relative
            acc = dd_add(acc, (-q, -r));
            n += 1;
        }
    }
    let (hi, lo) = acc;
    if up && lo > 0.0 {
        next_up_f64(hi)
    } else if !up && lo < 0.0 {
        -next_up_f64(-hi)
    } else {
        hi
    }
}

/// (a·b, its rounding error), exactly.
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, libm::fma(a, b, -p))
}

/// (a + b, its rounding error), exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Double-double addition, renormalised (|lo| ≤ ulp(hi)/2).
fn dd_add(x: (f64, f64), y: (f64, f64)) -> (f64, f64) {
    let (s, e) = two_sum(x.0, y.0);
    let (t, f) = two_sum(x.1, y.1);
    let (s, e) = two_sum(s, e + t);
    two_sum(s, e + f)
}

/// The next f64 above a finite x.
fn next_up_f64(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

/// 2^e as an exact `f64` for e in the f64 range (subnormal exponents included).
pub fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

/// Correct rounding (ties to even) of an `f64` to a format narrower than f32, as an exact `f64`.
///
/// `half`'s own `from_f64` is not correctly rounded: with F16C (detected at run time) it rounds
/// through f32 (double rounding), and its software path drops the low 32 significand bits
/// before rounding (ties decided without the sticky bits). Results would also differ between
/// machines with and without F16C. This scales by the format's quantum at |x| (exact), rounds
/// to an integer (ties to even, exact below 2^52) and scales back (exact).
fn round_to_format(x: f64, f: Format) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let e = exponent(x).max(f.emin);
    let quantum = pow2(e - (f.precision as i32 - 1));
    // |x / quantum| < 2^precision: rint is exact and ties to even.
    let r = libm::rint(x / quantum) * quantum;
    let max = (2.0 - pow2(1 - f.precision as i32)) * pow2(f.emax);
    if r.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        r.copysign(x)
    }
}

/// floor(log2 |x|) for finite non-zero x (subnormal f64 included).
pub fn exponent(x: f64) -> i32 {
    let bits = x.abs().to_bits();
    let biased = (bits >> 52) as i32;
    if biased == 0 {
        // subnormal f64
        let m = bits & ((1u64 << 52) - 1);
        -1074 + (63 - m.leading_zeros() as i32)
    } else {
        biased - 1023
    }
}

/// A Rust type that stores values of one [`Dtype`]: `f32`, [`half::f16`], [`half::bf16`].
pub trait Element: Copy + Send + Sync + PartialEq + fmt::Debug + 'static {
    const DTYPE: Dtype;
    /// Exact conversion.
    fn to_f64(self) -> f64;
    /// Correct rounding (ties to even).
    fn from_f64(x: f64) -> Self;
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Element for half::f16 {
    const DTYPE: Dtype = Dtype::F16;
    #[inline]
    fn to_f64(self) -> f64 {
        half::f16::to_f64(self)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        // The rounded value is exact in f16, so half's conversion of it is exact.
        half::f16::from_f64(round_to_format(x, Dtype::F16.format()))
    }
}

impl Element for half::bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    #[inline]
    fn to_f64(self) -> f64 {
        half::bf16::to_f64(self)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        half::bf16::from_f64(round_to_format(x, Dtype::Bf16.format()))
    }
}
