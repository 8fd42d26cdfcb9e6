//! Correct rounding to f16 and bf16, exhaustively over all 65,536 bit patterns of each, and
//! to f32 at its boundaries (max, min normal, min subnormal) and on random patterns.
//!
//! Expected values come from the bit patterns themselves (via the `half` crate's exact
//! `to_f64` and `f32::from_bits`), never from the code under test: the exact value of a
//! pattern rounds to itself; the exact midpoint of two adjacent values rounds to the one with
//! the even pattern (for max and the overflow threshold 2^(emax+1), that is inf); a point a
//! hair (2^−(p+20) relative) off the midpoint rounds to the nearer one.

use losscheck_core::Dtype;
use losscheck_oracles::round::{round_enclosure, round_float, Decided};
use losscheck_oracles::Ival;
use rug::Float;

const PREC: u32 = 128;

fn f(x: f64) -> Float {
    Float::with_val(PREC, x)
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check(x: &Float, d: Dtype, want: f64, what: &str) {
    let got = round_float(x, d);
    assert!(
        same(got, want),
        "{d}: {what}: RN({x}) = {got:e}, expected {want:e}"
    );
}

/// All checks for one 16-bit format, given its pattern → value map, `max` pattern and `inf`
/// pattern.
fn exhaustive_16(d: Dtype, value: impl Fn(u16) -> f64, max_bits: u16, inf_bits: u16) {
    let p = d.format().precision as i32;
    let emax = d.format().emax;
    let mut tested_mid = 0usize;
    for b in 0..=u16::MAX {
        let x = value(b);
        // the exact value rounds to itself (NaN to NaN, ±0 and ±inf kept)
        check(&f(x), d, x, &format!("exact value of pattern {b:#06x}"));
        // midpoints to the next value up, for every non-negative finite pattern
        if b <= max_bits {
            let lo = x;
            let (hi, hi_bits) = if b == max_bits {
                (2f64.powi(emax + 1), inf_bits)
            } else {
                (value(b + 1), b + 1)
            };
            let hi_val = if b == max_bits { f64::INFINITY } else { hi };
            let mid = Float::with_val(PREC, (f(lo) + f(hi)) / 2u32);
            let even = if b % 2 == 0 { lo } else { hi_val };
            assert!((b % 2 == 0) != (hi_bits % 2 == 0));
            check(
                &mid,
                d,
                even,
                &format!("midpoint above {b:#06x} (ties to even)"),
            );
            check(
                &Float::with_val(PREC, -&mid),
                d,
                -even,
                &format!("negative midpoint above {b:#06x}"),
            );
            let hair = Float::with_val(
                PREC,
                &mid * Float::with_val(PREC, Float::i_exp(1, -(p + 20))),
            );
            let above = Float::with_val(PREC, &mid + &hair);
            let below = Float::with_val(PREC, &mid - &hair);
            assert!(below > lo && above < hi, "hair too large");
            check(
                &above,
                d,
                hi_val,
                &format!("just above the midpoint above {b:#06x}"),
            );
            check(
                &below,
                d,
                lo,
                &format!("just below the midpoint above {b:#06x}"),
            );
            check(
                &Float::with_val(PREC, -&above),
                d,
                -hi_val,
                &format!("just below minus the midpoint above {b:#06x}"),
            );
            check(
                &Float::with_val(PREC, -&below),
                d,
                -lo,
                &format!("just above minus the midpoint above {b:#06x}"),
            );
            tested_mid += 1;
        }
    }
    assert_eq!(tested_mid, max_bits as usize + 1);
    // far outside the range
    let max = value(max_bits);
    let huge = Float::with_val(PREC, Float::i_exp(1, 100_000));
    check(&huge, d, f64::INFINITY, "2^100000");
    check(
        &Float::with_val(PREC, -&huge),
        d,
        f64::NEG_INFINITY,
        "-2^100000",
    );
    check(&f(2f64.powi(emax + 1)), d, f64::INFINITY, "2^(emax+1)");
    check(
        &f(max * (1.0 + 2f64.powi(-p - 1))),
        d,
        max,
        "max + ulp/4 (the ulp of max is 2^(emax+1-p))",
    );
    let tiny = Float::with_val(PREC, Float::i_exp(1, -100_000));
    check(&tiny, d, 0.0, "2^-100000");
    check(
        &Float::with_val(PREC, -&tiny),
        d,
        -0.0,
        "-2^-100000 keeps the sign of zero",
    );
    check(&Float::new(PREC), d, 0.0, "+0");
    check(&Float::with_val(PREC, -Float::new(PREC)), d, -0.0, "-0");
}

#[test]
fn f16_all_patterns_exact_midpoints_and_neighbours() {
    let v = |b: u16| half::f16::from_bits(b).to_f64();
    assert_eq!(v(0x7BFF), 65504.0);
    exhaustive_16(Dtype::F16, v, 0x7BFF, 0x7C00);
    // spot values a human can verify: 65520 = max + ulp/2 → inf; 2^-25 = min subnormal/2 → 0
    check(&f(65520.0), Dtype::F16, f64::INFINITY, "65520");
    check(&f(65519.0), Dtype::F16, 65504.0, "65519");
    check(&f(2f64.powi(-25)), Dtype::F16, 0.0, "2^-25");
    check(
        &f(2f64.powi(-25) * (1.0 + 2f64.powi(-40))),
        Dtype::F16,
        2f64.powi(-24),
        "2^-25(1+2^-40)",
    );
    check(
        &f(3.0 * 2f64.powi(-25)),
        Dtype::F16,
        2f64.powi(-23),
        "1.5 min subnormal → 2 min subnormal",
    );
}

#[test]
fn bf16_all_patterns_exact_midpoints_and_neighbours() {
    let v = |b: u16| half::bf16::from_bits(b).to_f64();
    assert_eq!(v(0x7F7F), 3.3895313892515355e38);
    exhaustive_16(Dtype::Bf16, v, 0x7F7F, 0x7F80);
    check(
        &f(2f64.powi(-134)),
        Dtype::Bf16,
        0.0,
        "bf16 min subnormal / 2",
    );
    check(
        &f(1.0 + 2f64.powi(-8)),
        Dtype::Bf16,
        1.0,
        "1 + 2^-8 ties to 1",
    );
    check(
        &f(1.0 + 3.0 * 2f64.powi(-8)),
        Dtype::Bf16,
        1.0 + 2f64.powi(-6),
        "1 + 3·2^-8 ties to 1 + 2^-6",
    );
}

fn f32v(b: u32) -> f64 {
    f32::from_bits(b) as f64
}

/// Midpoint checks between pattern b and b + 1 (non-negative finite b).
fn f32_mid_checks(b: u32) {
    let d = Dtype::F32;
    let lo = f32v(b);
    let (hi, hi_val) = if b == 0x7F7F_FFFF {
        (2f64.powi(128), f64::INFINITY)
    } else {
        (f32v(b + 1), f32v(b + 1))
    };
    let mid = Float::with_val(PREC, (f(lo) + f(hi)) / 2u32);
    let even = if b % 2 == 0 { lo } else { hi_val };
    check(&mid, d, even, &format!("f32 midpoint above {b:#010x}"));
    check(
        &Float::with_val(PREC, -&mid),
        d,
        -even,
        &format!("f32 negative midpoint above {b:#010x}"),
    );
    let hair = Float::with_val(PREC, &mid * Float::with_val(PREC, Float::i_exp(1, -44)));
    check(
        &Float::with_val(PREC, &mid + &hair),
        d,
        hi_val,
        &format!("f32 just above the midpoint above {b:#010x}"),
    );
    check(
        &Float::with_val(PREC, &mid - &hair),
        d,
        lo,
        &format!("f32 just below the midpoint above {b:#010x}"),
    );
    check(&f(lo), d, lo, &format!("f32 exact {b:#010x}"));
}

#[test]
fn f32_boundaries() {
    let d = Dtype::F32;
    // max and its neighbours; min normal and its neighbours; min subnormal; 0.
    for b in [
        0x7F7F_FFFF,
        0x7F7F_FFFE,
        0x0080_0000,
        0x007F_FFFF,
        0x0080_0001,
        0x0000_0000,
        0x0000_0001,
        0x0000_0002,
        0x3F80_0000,
        0x3F7F_FFFF,
    ] {
        f32_mid_checks(b);
    }
    let min_sub = 2f64.powi(-149);
    check(
        &f(min_sub / 2.0),
        d,
        0.0,
        "half the min subnormal → 0 (ties to even)",
    );
    check(
        &f(-min_sub / 2.0),
        d,
        -0.0,
        "minus half the min subnormal → -0",
    );
    check(
        &f(min_sub / 2.0 * (1.0 + 2f64.powi(-52))),
        d,
        min_sub,
        "slightly above half the min subnormal",
    );
    check(
        &f(1.5 * min_sub),
        d,
        2.0 * min_sub,
        "1.5 min subnormal → 2 min subnormal",
    );
    check(
        &f(2.5 * min_sub),
        d,
        2.0 * min_sub,
        "2.5 min subnormal → 2 min subnormal",
    );
    let max = f32::MAX as f64;
    let half_ulp = 2f64.powi(103);
    check(&f(max + half_ulp), d, f64::INFINITY, "max + ulp/2 → inf");
    check(
        &Float::with_val(
            256,
            &f(max + half_ulp) - &Float::with_val(256, Float::i_exp(1, -10)),
        ),
        d,
        max,
        "max + ulp/2 − 2^-10 → max (256 bits hold it)",
    );
    check(&f(f64::MAX), d, f64::INFINITY, "f64 max");
    check(&f(f64::MIN_POSITIVE), d, 0.0, "f64 min normal → 0");
    check(&f(-0.0), d, -0.0, "-0");
    check(&f(f64::NAN), d, f64::NAN, "NaN");
}

struct SplitMix(losscheck_core::rng::SplitMix64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[test]
fn f32_random_patterns_and_hardware_cast() {
    let mut rng = SplitMix(losscheck_core::rng::SplitMix64::new(42));
    for _ in 0..50_000 {
        let b = (rng.next() as u32) & 0x7FFF_FFFF;
        if b >= 0x7F80_0000 {
            continue;
        }
        f32_mid_checks(b);
    }
    // f64 → f32 `as` rounds once, correctly (ties to even): an independent reference for
    // arbitrary f64 inputs, which MPFR holds exactly.
    for _ in 0..200_000 {
        let x = f64::from_bits(rng.next());
        if x.is_nan() {
            continue;
        }
        check(
            &f(x),
            Dtype::F32,
            x as f32 as f64,
            "random f64 vs hardware cast",
        );
    }
}

#[test]
fn enclosures_decide_one_or_two() {
    let d = Dtype::F16;
    let iv = |a: f64, b: f64| Ival { lo: f(a), hi: f(b) };
    // both ends in the same rounding cell of 1 (cell (1 − 2^-12, 1 + 2^-11))
    assert_eq!(
        round_enclosure(&iv(1.0 - 2f64.powi(-13), 1.0 + 2f64.powi(-12)), d),
        Decided::One(1.0)
    );
    // straddling the midpoint 1 + 2^-11 (which itself ties to 1)
    assert_eq!(
        round_enclosure(&iv(1.0, 1.0 + 2f64.powi(-11) + 2f64.powi(-30)), d),
        Decided::Two(1.0, 1.0 + 2f64.powi(-10))
    );
    // the exact midpoint as a point is decided (ties to even)
    assert_eq!(
        round_enclosure(&iv(1.0 + 2f64.powi(-11), 1.0 + 2f64.powi(-11)), d),
        Decided::One(1.0)
    );
    // NaN
    match round_enclosure(&Ival::nan(64), d) {
        Decided::One(x) => assert!(x.is_nan()),
        other => panic!("{other:?}"),
    }
    // an exact zero is +0 whatever the sign its computation left; a certainly negative value
    // that underflows is −0; an enclosure of 0 across signs is one value
    match round_enclosure(&iv(-0.0, -0.0), d) {
        Decided::One(x) => assert!(x == 0.0 && x.is_sign_positive()),
        other => panic!("{other:?}"),
    }
    match round_enclosure(&iv(-1e-30, -1e-31), d) {
        Decided::One(x) => assert!(x == 0.0 && x.is_sign_negative()),
        other => panic!("{other:?}"),
    }
    match round_enclosure(&iv(-1e-30, 1e-30), d) {
        Decided::One(x) => assert_eq!(x, 0.0),
        other => panic!("{other:?}"),
    }
    // overflow boundary: [max, 65520) rounds to max; reaching 65520 gives Two(max, inf)
    assert_eq!(
        round_enclosure(&iv(65504.0, 65519.9), d),
        Decided::One(65504.0)
    );
    assert_eq!(
        round_enclosure(&iv(65504.0, 65520.0), d),
        Decided::Two(65504.0, f64::INFINITY)
    );
    // the whole line is never decided
    assert_eq!(
        round_enclosure(&Ival::entire(64), d),
        Decided::Two(f64::NEG_INFINITY, f64::INFINITY)
    );
}

/// Core's `Dtype::round` (f64 → dtype, used by the kernels) against the MPFR rounding, on
/// random doubles and on doubles a hair off every 16-bit midpoint (where rounding through f32
/// first would double-round).
#[test]
fn core_dtype_round_agrees_with_mpfr_rounding() {
    let mut rng = SplitMix(losscheck_core::rng::SplitMix64::new(7));
    for d in Dtype::ALL {
        for _ in 0..100_000 {
            let x = f64::from_bits(rng.next());
            if x.is_nan() {
                continue;
            }
            let want = round_float(&f(x), d);
            assert!(
                same(d.round(x), want),
                "{d}: round({x:e}) = {:e}, MPFR {want:e}",
                d.round(x)
            );
        }
    }
    for (d, max_bits) in [(Dtype::F16, 0x7BFFu32), (Dtype::Bf16, 0x7F7F)] {
        let p = d.precision() as i32;
        for b in 0..max_bits {
            let (lo, hi) = (d.from_bits(b), d.from_bits(b + 1));
            let mid = (lo + hi) / 2.0; // exact in f64
            for x in [
                mid,
                mid * (1.0 + 2f64.powi(-p - 30)),
                mid * (1.0 - 2f64.powi(-p - 30)),
                -mid,
            ] {
                let want = round_float(&f(x), d);
                assert!(
                    same(d.round(x), want),
                    "{d}: round({x:e}) = {:e}, MPFR {want:e}",
                    d.round(x)
                );
            }
        }
    }
}
