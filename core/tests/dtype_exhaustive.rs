//! The dtype layer, checked exhaustively on the 65,536 bit patterns of f16 and bf16 and on the
//! boundaries (plus a random sample) of f32.
//!
//! Independent sources only: bit patterns are decoded here with integer arithmetic (sign,
//! biased exponent, significand) from the IEEE-754 layout; neighbours, gaps, midpoints and
//! overflow thresholds come from that decoded table; the reference rounding is a binary search
//! over that table with exact comparisons; the exp edges are checked with `libm::exp` and with a
//! double-double `exp` written here (a different method from the layer's).

use losscheck_core::Dtype;

// ---------------------------------------------------------------------------------------------
// Independent decoding of the formats.

/// (exponent bits, stored significand bits) of each format, from IEEE-754 / the bfloat16 spec.
fn layout(dt: Dtype) -> (u32, u32) {
    match dt {
        Dtype::F32 => (8, 23),
        Dtype::F16 => (5, 10),
        Dtype::Bf16 => (8, 7),
    }
}

/// 2^k as an f64, k in the f64 normal range, by repeated exact doubling / halving.
fn two_pow(k: i32) -> f64 {
    let mut x = 1.0f64;
    if k >= 0 {
        for _ in 0..k {
            x *= 2.0;
        }
    } else {
        for _ in 0..(-k) {
            x *= 0.5;
        }
    }
    x
}

/// The value of a bit pattern, computed from the fields with integer arithmetic.
fn decode(dt: Dtype, bits: u32) -> f64 {
    let (eb, mb) = layout(dt);
    let sign = (bits >> (eb + mb)) & 1;
    let e = (bits >> mb) & ((1 << eb) - 1);
    let m = bits & ((1 << mb) - 1);
    let bias = (1i32 << (eb - 1)) - 1;
    let mag = if e == (1 << eb) - 1 {
        if m == 0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if e == 0 {
        m as f64 * two_pow(1 - bias - mb as i32)
    } else {
        ((1u64 << mb) + m as u64) as f64 * two_pow(e as i32 - bias - mb as i32)
    };
    if sign == 1 {
        -mag
    } else {
        mag
    }
}

fn sign_bit(dt: Dtype) -> u32 {
    let (eb, mb) = layout(dt);
    1 << (eb + mb)
}

/// Bit pattern of +inf.
fn inf_bits(dt: Dtype) -> u32 {
    let (eb, mb) = layout(dt);
    ((1 << eb) - 1) << mb
}

/// All non-negative finite values of a 16-bit dtype, in bit-pattern order (+0 first, max last);
/// checked here to be strictly increasing.
fn positive_values(dt: Dtype) -> Vec<f64> {
    let v: Vec<f64> = (0..inf_bits(dt)).map(|b| decode(dt, b)).collect();
    for w in v.windows(2) {
        assert!(
            w[0] < w[1],
            "{dt}: decoded values are not increasing: {} then {}",
            w[0],
            w[1]
        );
    }
    v
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn f64_up(x: f64) -> f64 {
    assert!(x.is_finite());
    if x == 0.0 {
        return f64::from_bits(1);
    }
    if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

fn f64_down(x: f64) -> f64 {
    -f64_up(-x)
}

const SIXTEEN: [Dtype; 2] = [Dtype::F16, Dtype::Bf16];

// ---------------------------------------------------------------------------------------------
// Values, bit patterns, membership.

#[test]
fn every_16bit_pattern_decodes_to_the_ieee_value_and_rounds_to_itself() {
    for dt in SIXTEEN {
        for b in 0..=0xFFFFu32 {
            let v = decode(dt, b);
            assert!(
                same(dt.from_bits(b), v),
                "{dt}: from_bits({b:#06x}) = {} not {v}",
                dt.from_bits(b)
            );
            let r = dt.round(v);
            assert!(same(r, v), "{dt}: round({v:e}) (bits {b:#06x}) = {r:e}");
            assert!(dt.contains(v), "{dt}: contains({v:e}) is false");
            if !v.is_nan() {
                assert_eq!(dt.to_bits(v), b, "{dt}: to_bits({v:e})");
            } else {
                assert!(
                    decode(dt, dt.to_bits(v)).is_nan(),
                    "{dt}: to_bits(NaN) is not a NaN pattern"
                );
            }
        }
    }
}

#[test]
fn contains_rejects_every_midpoint_and_out_of_range_value() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        for w in v.windows(2) {
            let mid = (w[0] + w[1]) / 2.0;
            assert!(
                !dt.contains(mid) && !dt.contains(-mid),
                "{dt}: contains midpoint {mid:e}"
            );
        }
        let max = *v.last().unwrap();
        assert!(!dt.contains(2.0 * max));
        assert!(
            !dt.contains(v[1] / 2.0),
            "{dt}: contains half the min subnormal"
        );
        assert!(
            dt.contains(f64::NAN) && dt.contains(f64::INFINITY) && dt.contains(f64::NEG_INFINITY)
        );
    }
}

#[test]
fn format_constants_match_the_decoded_tables() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        let (_, mb) = layout(dt);
        assert_eq!(dt.max(), *v.last().unwrap(), "{dt} max");
        assert_eq!(dt.min_subnormal(), v[1], "{dt} min subnormal");
        assert_eq!(dt.min_normal(), v[1 << mb], "{dt} min normal");
        assert_eq!(
            dt.epsilon(),
            decode(dt, dt.to_bits(1.0) + 1) - 1.0,
            "{dt} epsilon"
        );
        assert_eq!(dt.width(), 16);
        assert_eq!(dt.precision(), mb + 1);
    }
    assert_eq!(Dtype::F32.max(), f32::MAX as f64);
    assert_eq!(Dtype::F32.min_normal(), f32::MIN_POSITIVE as f64);
    assert_eq!(Dtype::F32.min_subnormal(), f32::from_bits(1) as f64);
    assert_eq!(Dtype::F32.epsilon(), f32::EPSILON as f64);
    assert_eq!(Dtype::F32.width(), 32);
}

// ---------------------------------------------------------------------------------------------
// Ordinals, ulps, bits, ulp_at, next_up / next_down.

/// Expected ordinal of bit pattern `b` (non-NaN): its position among the positive values, negated
/// for negative patterns (the positive patterns are in increasing order, checked above).
fn expected_ordinal(dt: Dtype, b: u32) -> i64 {
    let mag = (b & (sign_bit(dt) - 1)) as i64;
    if b & sign_bit(dt) != 0 {
        -mag
    } else {
        mag
    }
}

#[test]
fn ordinal_and_from_ordinal_round_trip_on_every_16bit_value() {
    for dt in SIXTEEN {
        for b in 0..=0xFFFFu32 {
            let v = decode(dt, b);
            if v.is_nan() {
                assert_eq!(dt.ordinal(v), None, "{dt}: ordinal of NaN");
                continue;
            }
            let k = expected_ordinal(dt, b);
            assert_eq!(dt.ordinal(v), Some(k), "{dt}: ordinal({v:e})");
            let back = dt.from_ordinal(k);
            if v == 0.0 {
                assert_eq!(back, 0.0, "{dt}: from_ordinal(0)");
            } else {
                assert!(
                    same(back, v),
                    "{dt}: from_ordinal({k}) = {back:e}, not {v:e}"
                );
            }
        }
        assert_eq!(dt.ordinal(-0.0), Some(0));
        assert_eq!(dt.ordinal(0.0), Some(0));
        // values outside the dtype have no ordinal
        let v = positive_values(dt);
        assert_eq!(dt.ordinal((v[1] + v[2]) / 2.0), None);
        // clamping past ±inf
        let inf_k = dt.ordinal(f64::INFINITY).unwrap();
        assert_eq!(inf_k, v.len() as i64, "{dt}: +inf is one past max");
        assert_eq!(dt.from_ordinal(inf_k + 7), f64::INFINITY);
        assert_eq!(dt.from_ordinal(-inf_k - 7), f64::NEG_INFINITY);
    }
}

/// Every non-NaN value from −inf to +inf in increasing order, with ±0 merged into one 0.
fn line(dt: Dtype) -> Vec<f64> {
    let pos = positive_values(dt);
    let mut out: Vec<f64> = std::iter::once(f64::NEG_INFINITY)
        .chain(pos.iter().rev().filter(|&&x| x != 0.0).map(|&x| -x))
        .collect();
    out.extend(pos.iter().copied());
    out.push(f64::INFINITY);
    out
}

#[test]
fn ordinals_are_monotone_and_consecutive_along_the_number_line() {
    for dt in SIXTEEN {
        let l = line(dt);
        let o: Vec<i64> = l.iter().map(|&x| dt.ordinal(x).unwrap()).collect();
        for (w, x) in o.windows(2).zip(l.windows(2)) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "{dt}: ordinals of {:e} and {:e}",
                x[0],
                x[1]
            );
        }
        assert_eq!(dt.ordinal(0.0), Some(0));
    }
}

#[test]
fn ulps_between_neighbours_is_one_and_between_signed_zeros_is_zero() {
    for dt in SIXTEEN {
        let l = line(dt);
        // finite neighbours (the pair (max, inf) is ∞, checked below)
        for w in l[1..l.len() - 1].windows(2) {
            assert_eq!(
                dt.ulps(w[0], w[1]),
                1.0,
                "{dt}: ulps({:e}, {:e})",
                w[0],
                w[1]
            );
            assert_eq!(
                dt.ulps(w[1], w[0]),
                1.0,
                "{dt}: ulps({:e}, {:e})",
                w[1],
                w[0]
            );
        }
        assert_eq!(dt.ulps(-0.0, 0.0), 0.0);
        assert_eq!(dt.ulps(0.0, -0.0), 0.0);
        // distances to 0 and across 0: the position on the line
        let pos = positive_values(dt);
        for (k, &x) in pos.iter().enumerate() {
            assert_eq!(dt.ulps(x, 0.0), k as f64, "{dt}: ulps({x:e}, 0)");
            assert_eq!(dt.ulps(-x, -0.0), k as f64);
            assert_eq!(dt.ulps(x, -x), 2.0 * k as f64, "{dt}: ulps({x:e}, -{x:e})");
        }
    }
}

#[test]
fn ulps_is_infinite_between_finite_and_infinite_and_between_nan_and_non_nan() {
    for dt in Dtype::ALL {
        let max = dt.max();
        let inf = f64::INFINITY;
        assert_eq!(dt.ulps(max, inf), inf, "{dt}");
        assert_eq!(dt.ulps(inf, max), inf, "{dt}");
        assert_eq!(dt.ulps(-max, -inf), inf, "{dt}");
        assert_eq!(dt.ulps(0.0, inf), inf, "{dt}");
        assert_eq!(dt.ulps(inf, -inf), inf, "{dt}");
        assert_eq!(dt.ulps(inf, inf), 0.0, "{dt}");
        assert_eq!(dt.ulps(-inf, -inf), 0.0, "{dt}");
        assert_eq!(dt.ulps(f64::NAN, 1.0), inf, "{dt}");
        assert_eq!(dt.ulps(1.0, f64::NAN), inf, "{dt}");
        assert_eq!(dt.ulps(f64::NAN, inf), inf, "{dt}");
        assert_eq!(dt.ulps(f64::NAN, f64::NAN), 0.0, "{dt}");
        assert_eq!(dt.ulps(-f64::NAN, f64::NAN), 0.0, "{dt}");
    }
}

#[test]
fn bits_is_log2_of_one_plus_ulps_capped_at_the_width() {
    for (dt, cap) in [(Dtype::F16, 16.0), (Dtype::Bf16, 16.0), (Dtype::F32, 32.0)] {
        assert_eq!(dt.bits_cap(), cap);
        for k in 0..=(cap as i32) {
            let ulps = two_pow(k) - 1.0;
            assert_eq!(dt.bits(ulps), k as f64, "{dt}: bits({ulps})");
        }
        assert_eq!(dt.bits(two_pow(cap as i32 + 3)), cap, "{dt}: above the cap");
        assert_eq!(dt.bits(f64::INFINITY), cap);
        assert_eq!(dt.bits(f64::NAN), cap);
        assert!(
            (dt.bits(2.0) - 1.584_962_500_721_156).abs() < 1e-15,
            "{dt}: bits(2) = log2 3"
        );
        assert!(
            (dt.bits(0.5) - 0.584_962_500_721_156_2).abs() < 1e-15,
            "{dt}: bits(0.5) = log2 1.5"
        );
        assert_eq!(dt.bits(dt.ulps(dt.max(), f64::INFINITY)), cap);
    }
}

#[test]
fn ulp_at_is_the_gap_to_the_next_value_up() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        for w in v.windows(2) {
            let gap = w[1] - w[0];
            assert_eq!(dt.ulp_at(w[0]), gap, "{dt}: ulp_at({:e})", w[0]);
            assert_eq!(dt.ulp_at(-w[0]), gap, "{dt}: ulp_at(-{:e})", w[0]);
            // a magnitude between two values: the gap above the largest value below it
            let mid = (w[0] + w[1]) / 2.0;
            assert_eq!(dt.ulp_at(mid), gap, "{dt}: ulp_at({mid:e})");
        }
        let n = v.len();
        let top_gap = v[n - 1] - v[n - 2];
        assert_eq!(
            dt.ulp_at(v[n - 1]),
            top_gap,
            "{dt}: ulp_at(max) is the spacing at max"
        );
        assert_eq!(dt.ulp_at(f64::INFINITY), top_gap);
        assert_eq!(dt.ulp_at(1e300), top_gap);
        assert_eq!(dt.ulp_at(0.0), v[1]);
        assert_eq!(dt.ulp_at(1e-300), v[1]);
        assert!(dt.ulp_at(f64::NAN).is_nan());
    }
}

#[test]
fn next_up_and_next_down_step_along_the_number_line() {
    for dt in SIXTEEN {
        let l = line(dt);
        for w in l.windows(2) {
            assert_eq!(dt.next_up(w[0]), w[1], "{dt}: next_up({:e})", w[0]);
            assert_eq!(dt.next_down(w[1]), w[0], "{dt}: next_down({:e})", w[1]);
        }
        let min_sub = positive_values(dt)[1];
        assert_eq!(dt.next_up(-0.0), min_sub);
        assert_eq!(dt.next_down(-0.0), -min_sub);
        assert_eq!(dt.next_down(0.0), -min_sub);
        assert_eq!(dt.next_up(f64::INFINITY), f64::INFINITY);
        assert_eq!(dt.next_down(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(dt.next_up(f64::NAN).is_nan() && dt.next_down(f64::NAN).is_nan());
    }
}

// ---------------------------------------------------------------------------------------------
// Correct rounding from f64.

/// Which of two adjacent positive values (bit patterns `b` and `b + 1`) has the even significand.
fn even_of(dt: Dtype, b: u32) -> f64 {
    if b % 2 == 0 {
        decode(dt, b)
    } else {
        decode(dt, b + 1)
    }
}

#[test]
fn midpoints_round_to_even_and_their_f64_neighbours_to_the_nearer_value() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        for (b, w) in v.windows(2).enumerate() {
            let (lo, hi) = (w[0], w[1]);
            let mid = (lo + hi) / 2.0; // exact: both have ≤ 11 significant bits
            assert!(mid > lo && mid < hi);
            let even = even_of(dt, b as u32);
            for s in [1.0, -1.0] {
                let got = dt.round(s * mid);
                assert!(
                    same(got, s * even),
                    "{dt}: round({:e}) = {got:e}, want {:e} (ties to even)",
                    s * mid,
                    s * even
                );
                let up = dt.round(s * f64_up(mid));
                assert!(
                    same(up, s * hi),
                    "{dt}: round({:e}) = {up:e}, want {:e}",
                    s * f64_up(mid),
                    s * hi
                );
                let down = dt.round(s * f64_down(mid));
                assert!(
                    same(down, s * lo),
                    "{dt}: round({:e}) = {down:e}, want {:e}",
                    s * f64_down(mid),
                    s * lo
                );
            }
        }
    }
}

#[test]
fn overflow_threshold_is_max_plus_half_an_ulp() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        let n = v.len();
        let (max, below) = (v[n - 1], v[n - 2]);
        let t = max + (max - below) / 2.0;
        for s in [1.0, -1.0] {
            assert_eq!(
                dt.round(s * t),
                s * f64::INFINITY,
                "{dt}: round({:e})",
                s * t
            );
            assert_eq!(dt.round(s * f64_up(t)), s * f64::INFINITY);
            assert_eq!(
                dt.round(s * f64_down(t)),
                s * max,
                "{dt}: round(just below max + ulp/2)"
            );
            assert_eq!(dt.round(s * 2.0 * max), s * f64::INFINITY);
            assert_eq!(dt.round(s * f64::MAX), s * f64::INFINITY);
            assert_eq!(dt.round(s * f64::INFINITY), s * f64::INFINITY);
        }
        assert!(dt.round(f64::NAN).is_nan());
    }
}

#[test]
fn half_the_min_subnormal_rounds_to_signed_zero_and_just_above_to_the_min_subnormal() {
    for dt in SIXTEEN {
        let min_sub = positive_values(dt)[1];
        let h = min_sub / 2.0;
        for s in [1.0f64, -1.0] {
            assert!(
                same(dt.round(s * h), s * 0.0),
                "{dt}: round({:e}) = {:e}",
                s * h,
                dt.round(s * h)
            );
            assert!(same(dt.round(s * f64_down(h)), s * 0.0));
            assert!(
                same(dt.round(s * f64_up(h)), s * min_sub),
                "{dt}: round(just above half min_sub)"
            );
            assert!(
                same(dt.round(s * f64::from_bits(1)), s * 0.0),
                "{dt}: the least f64 subnormal"
            );
            assert!(same(dt.round(s * 1e-300), s * 0.0));
            assert!(same(dt.round(s * 0.0), s * 0.0));
        }
    }
}

/// Reference rounding by binary search: the largest positive value (given as an increasing list,
/// accessed through `value(i)`, i in 0..n) not above |x|, then exact distance comparison.
fn reference_round(
    x: f64,
    n: u32,
    value: impl Fn(u32) -> f64,
    bits_even: impl Fn(u32) -> bool,
) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    // invariant: value(lo) <= a, and (hi == n or value(hi) > a)
    let (mut lo, mut hi) = (0u32, n);
    while hi - lo > 1 {
        let m = lo + (hi - lo) / 2;
        if value(m) <= a {
            lo = m;
        } else {
            hi = m;
        }
    }
    let r = if lo == n - 1 {
        // at or above max: overflow threshold is max + half the top gap
        let max = value(n - 1);
        let t = max + (max - value(n - 2)) / 2.0;
        if a >= t {
            f64::INFINITY
        } else {
            max
        }
    } else {
        let (l, h) = (value(lo), value(lo + 1));
        // both differences are exact: l ≤ a < h are within a factor 2 of each other, or l = 0
        let (dl, dh) = (a - l, h - a);
        if dl < dh {
            l
        } else if dh < dl {
            h
        } else if bits_even(lo) {
            l
        } else {
            h
        }
    };
    r.copysign(x)
}

/// A small deterministic PRNG (splitmix64).
struct Rng(losscheck_core::rng::SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// A random f64 with a uniformly drawn binary exponent in [lo, hi] and random significand
    /// bits; a quarter of them with the low 29 significand bits cleared or set to one pattern,
    /// so that ties and near-ties of the narrow formats come up.
    fn f64_in_binades(&mut self, lo: i32, hi: i32) -> f64 {
        let r = self.next();
        let e = lo + (r % (hi - lo + 1) as u64) as i32;
        let mut m = self.next() & ((1u64 << 52) - 1);
        match self.next() % 8 {
            0 => m &= !((1u64 << 29) - 1),
            1 => m = (m & !((1u64 << 40) - 1)) | (1u64 << 39),
            2 => m = (m & !((1u64 << 29) - 1)) | (1u64 << 28),
            _ => {}
        }
        let x = f64::from_bits((((e + 1023) as u64) << 52) | m);
        if r & (1 << 63) != 0 {
            -x
        } else {
            x
        }
    }
}

#[test]
fn random_f64_values_round_like_the_binary_search_reference_in_16bit() {
    for dt in SIXTEEN {
        let v = positive_values(dt);
        let n = v.len() as u32;
        let (lo_e, hi_e) = match dt {
            Dtype::F16 => (-27, 16),
            _ => (-136, 128),
        };
        let mut rng = Rng(losscheck_core::rng::SplitMix64::new(
            0x5EED_0000 + dt as u64,
        ));
        for _ in 0..300_000 {
            let x = rng.f64_in_binades(lo_e, hi_e);
            let want = reference_round(x, n, |i| v[i as usize], |i| i % 2 == 0);
            let got = dt.round(x);
            assert!(
                same(got, want),
                "{dt}: round({x:e} = {:#018x}) = {got:e}, want {want:e}",
                x.to_bits()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// f32: boundaries and a random sample.

const F32_INF_BITS: u32 = 0x7F80_0000;

#[test]
fn f32_decoding_matches_the_ieee_layout_on_boundary_patterns() {
    let patterns = (0..2000u32)
        .chain(0x007F_F000..0x0080_1000)
        .chain(0x3F7F_F000..0x3F80_1000)
        .chain(0x7F7F_F000..=0x7F80_0000);
    for b in patterns {
        for s in [0, 0x8000_0000u32] {
            let v = decode(Dtype::F32, b | s);
            assert!(same(v, f32::from_bits(b | s) as f64), "{b:#x}");
            assert!(same(Dtype::F32.from_bits(b | s), v));
            assert!(same(Dtype::F32.round(v), v));
            assert_eq!(Dtype::F32.to_bits(v), b | s);
            assert_eq!(
                Dtype::F32.ordinal(v),
                Some(if s == 0 { b as i64 } else { -(b as i64) })
            );
            if b < F32_INF_BITS {
                let next = decode(Dtype::F32, b + 1);
                assert_eq!(Dtype::F32.next_up(decode(Dtype::F32, b)), next);
                if b + 1 < F32_INF_BITS {
                    assert_eq!(Dtype::F32.ulps(decode(Dtype::F32, b), next), 1.0);
                    assert_eq!(
                        Dtype::F32.ulp_at(decode(Dtype::F32, b)),
                        next - decode(Dtype::F32, b),
                        "{b:#x}"
                    );
                }
            }
        }
    }
    assert_eq!(Dtype::F32.ulps(-0.0, 0.0), 0.0);
    assert_eq!(
        Dtype::F32.ulps(f32::MAX as f64, f64::INFINITY),
        f64::INFINITY
    );
    assert_eq!(
        Dtype::F32.ulps(f32::MAX as f64, -(f32::MAX as f64)),
        2.0 * (F32_INF_BITS - 1) as f64
    );
}

#[test]
fn f32_midpoints_at_the_boundaries_round_to_even_and_their_neighbours_to_the_nearer_value() {
    let dt = Dtype::F32;
    let pairs = (0..1000u32)
        .chain(0x007F_FC00..0x0080_0400) // max subnormal / min normal
        .chain(0x3F7F_FC00..0x3F80_0400) // around 1
        .chain(0x7F7F_FC00..0x7F7F_FFFF); // up to max
    for b in pairs {
        let (lo, hi) = (decode(dt, b), decode(dt, b + 1));
        let mid = (lo + hi) / 2.0;
        let even = if b % 2 == 0 { lo } else { hi };
        for s in [1.0, -1.0] {
            assert!(
                same(dt.round(s * mid), s * even),
                "f32: round({:e})",
                s * mid
            );
            assert!(
                same(dt.round(s * f64_up(mid)), s * hi),
                "f32: round(up of {:e})",
                s * mid
            );
            assert!(
                same(dt.round(s * f64_down(mid)), s * lo),
                "f32: round(down of {:e})",
                s * mid
            );
        }
    }
    // overflow: max + ulp(max)/2 → inf, just below → max
    let max = decode(dt, F32_INF_BITS - 1);
    let t = max + (max - decode(dt, F32_INF_BITS - 2)) / 2.0;
    assert_eq!(dt.round(t), f64::INFINITY);
    assert_eq!(dt.round(-t), f64::NEG_INFINITY);
    assert_eq!(dt.round(f64_down(t)), max);
    assert_eq!(dt.round(-f64_down(t)), -max);
    // half the min subnormal → ±0, just above → min subnormal
    let h = decode(dt, 1) / 2.0;
    assert!(same(dt.round(h), 0.0) && same(dt.round(-h), -0.0));
    assert!(same(dt.round(f64_up(h)), decode(dt, 1)));
    assert!(same(dt.round(-f64_up(h)), -decode(dt, 1)));
    assert!(same(dt.round(f64_down(h)), 0.0));
}

#[test]
fn random_f64_values_round_to_f32_like_the_binary_search_reference() {
    let n = F32_INF_BITS; // patterns 0 ..= max
    let value = |i: u32| decode(Dtype::F32, i);
    let mut rng = Rng(losscheck_core::rng::SplitMix64::new(0xF32));
    for _ in 0..200_000 {
        let x = rng.f64_in_binades(-152, 129);
        let want = reference_round(x, n, value, |i| i % 2 == 0);
        let got = Dtype::F32.round(x);
        assert!(
            same(got, want),
            "f32: round({x:e}) = {got:e}, want {want:e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Exp edges.

/// Double-double arithmetic for an independent exp: (hi, lo) with |lo| ≤ ulp(hi)/2.
#[derive(Clone, Copy, Debug)]
struct Dd(f64, f64);

fn two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    Dd(s, e)
}

impl Dd {
    fn add(self, o: Dd) -> Dd {
        let s = two_sum(self.0, o.0);
        let t = two_sum(self.1, o.1);
        let s = two_sum(s.0, s.1 + t.0);
        two_sum(s.0, s.1 + t.1)
    }
    fn mul(self, o: Dd) -> Dd {
        let p = self.0 * o.0;
        let e = libm::fma(self.0, o.0, -p);
        two_sum(p, e + (self.0 * o.1 + self.1 * o.0))
    }
    fn div_int(self, n: f64) -> Dd {
        let q = self.0 / n;
        let r = libm::fma(-q, n, self.0) + self.1; // remainder of the head, plus the tail
        two_sum(q, r / n)
    }
}

/// exp(x) as a double-double, relative error ~1e-30, for |x| ≤ 200: x = k·ln2 + r, |r| ≤ ln2/2,
/// Taylor series for exp(r), scaled by 2^k.
fn exp_dd(x: f64) -> Dd {
    // ln 2 = Σ_{k≥1} 1/(k·2^k) (the series of −ln(1 − ½)), summed in double-double
    let mut ln2 = Dd(0.0, 0.0);
    for k in 1..=120 {
        ln2 = ln2.add(Dd(two_pow(-k), 0.0).div_int(k as f64));
    }
    let ln2 = two_sum(ln2.0, ln2.1);
    let (l_hi, l_lo) = (ln2.0, ln2.1);
    assert_eq!(
        l_hi,
        std::f64::consts::LN_2,
        "the series' head is ln 2 to nearest"
    );
    assert!(l_lo > 2.3e-17 && l_lo < 2.4e-17, "ln 2 − LN_2 ≈ 2.319e-17");
    #[allow(non_snake_case)]
    let LN2 = Dd(l_hi, l_lo);
    let k = (x / LN2.0).round();
    let p = Dd(k * LN2.0, libm::fma(k, LN2.0, -(k * LN2.0)));
    let q = Dd(k * LN2.1, libm::fma(k, LN2.1, -(k * LN2.1)));
    let r = Dd(x, 0.0).add(Dd(-p.0, -p.1)).add(Dd(-q.0, -q.1));
    let mut term = Dd(1.0, 0.0);
    let mut sum = Dd(1.0, 0.0);
    for n in 1..40 {
        term = term.mul(r).div_int(n as f64);
        sum = sum.add(term);
    }
    let s = two_pow(k as i32);
    Dd(sum.0 * s, sum.1 * s)
}

/// Sign of exp(x) − t (t a positive f64), asserting the double-double resolves it.
fn exp_cmp(x: f64, t: f64) -> std::cmp::Ordering {
    let e = exp_dd(x);
    let d = (e.0 - t) + e.1;
    assert!(
        d.abs() > 1e-26 * t,
        "exp({x:e}) is too close to {t:e} to decide ({d:e})"
    );
    d.partial_cmp(&0.0).unwrap()
}

/// (max, its lower neighbour, min subnormal, min normal) of a dtype from the decoded tables.
fn landmarks(dt: Dtype) -> (f64, f64, f64, f64) {
    let inf = inf_bits(dt);
    let (_, mb) = layout(dt);
    (
        decode(dt, inf - 1),
        decode(dt, inf - 2),
        decode(dt, 1),
        decode(dt, 1 << mb),
    )
}

#[test]
fn exp_overflow_edge_is_the_smallest_x_whose_exp_rounds_to_inf() {
    use std::cmp::Ordering::*;
    for dt in Dtype::ALL {
        let x = dt.exp_overflow_edge();
        let (max, below, _, _) = landmarks(dt);
        let t = max + (max - below) / 2.0; // RN(y) = inf iff y ≥ t
        assert_ne!(exp_cmp(x, t), Less, "{dt}: exp(edge) < max + ulp/2");
        assert_eq!(
            exp_cmp(f64_down(x), t),
            Less,
            "{dt}: the f64 below the edge already overflows"
        );
        // and with libm's exp, where the margin exceeds its error (≥ 1 f64 ulp of x away)
        assert_eq!(
            dt.round(libm::exp(f64_up(x))),
            f64::INFINITY,
            "{dt}: just above the edge"
        );
        assert_eq!(
            dt.round(libm::exp(f64_down(f64_down(x)))),
            max,
            "{dt}: just below the edge"
        );
        assert!(dt.round(libm::exp(x - 1e-6)).is_finite());
        assert_eq!(dt.round(libm::exp(x + 1e-6)), f64::INFINITY);
    }
}

#[test]
fn exp_subnormal_edge_separates_subnormal_from_normal_results() {
    use std::cmp::Ordering::*;
    for dt in Dtype::ALL {
        let x = dt.exp_subnormal_edge();
        let (_, _, min_sub, min_normal) = landmarks(dt);
        let t = min_normal - min_sub / 2.0; // RN(y) ≥ min normal iff y ≥ t (ties to the even min normal)
        assert_ne!(exp_cmp(x, t), Less, "{dt}: exp(edge) rounds to a subnormal");
        assert_eq!(
            exp_cmp(f64_down(x), t),
            Less,
            "{dt}: the f64 below the edge still rounds to a normal"
        );
        let below = dt.round(libm::exp(f64_down(f64_down(x))));
        assert!(
            below > 0.0 && below < min_normal,
            "{dt}: RN(exp(just below)) = {below:e} is not subnormal"
        );
        assert_eq!(
            below,
            min_normal - min_sub,
            "{dt}: just below the edge is the largest subnormal"
        );
        assert_eq!(
            dt.round(libm::exp(f64_up(x))),
            min_normal,
            "{dt}: just above the edge"
        );
        assert!(dt.round(libm::exp(x + 1e-6)) >= min_normal);
        let b = dt.round(libm::exp(x - 1e-6));
        assert!(b > 0.0 && b < min_normal);
    }
}

#[test]
fn exp_zero_edge_is_the_largest_x_whose_exp_rounds_to_zero() {
    use std::cmp::Ordering::*;
    for dt in Dtype::ALL {
        let x = dt.exp_zero_edge();
        let (_, _, min_sub, _) = landmarks(dt);
        let t = min_sub / 2.0; // RN(y) = 0 iff y ≤ t (ties to the even 0)
        assert_ne!(
            exp_cmp(x, t),
            Greater,
            "{dt}: exp(edge) does not round to 0"
        );
        assert_eq!(
            exp_cmp(f64_up(x), t),
            Greater,
            "{dt}: the f64 above the edge still rounds to 0"
        );
        assert_eq!(
            dt.round(libm::exp(f64_down(x))),
            0.0,
            "{dt}: just below the edge"
        );
        assert_eq!(
            dt.round(libm::exp(f64_up(f64_up(x)))),
            min_sub,
            "{dt}: just above the edge"
        );
        assert_eq!(dt.round(libm::exp(x - 1e-6)), 0.0);
        assert_eq!(dt.round(libm::exp(x + 1e-6)), min_sub);
    }
}

#[test]
fn exp_edges_are_near_the_documented_values() {
    // DESIGN.md, "Generators (regimes)": within half a unit of the last digit written there.
    let table = [
        (Dtype::F16, (11.09, 0.005), (-9.70, 0.005), (-17.33, 0.005)),
        (Dtype::Bf16, (88.72, 0.005), (-87.3, 0.05), (-92.9, 0.05)),
        (Dtype::F32, (88.72, 0.005), (-87.3, 0.05), (-103.97, 0.005)),
    ];
    for (dt, over, sub, zero) in table {
        let got = [
            dt.exp_overflow_edge(),
            dt.exp_subnormal_edge(),
            dt.exp_zero_edge(),
        ];
        for (g, (want, tol)) in got.into_iter().zip([over, sub, zero]) {
            assert!(
                (g - want).abs() <= tol,
                "{dt}: edge {g} is not {want} ± {tol}"
            );
        }
        assert!(got[2] < got[1] && got[1] < 0.0 && got[0] > 0.0);
    }
    for dt in Dtype::ALL {
        assert_eq!(
            dt.compute_type(),
            Dtype::F32,
            "16-bit inputs compute in f32"
        );
    }
}

#[test]
fn breakdown_bits_is_half_the_significand() {
    // DESIGN.md: f32 > 12, f16 > 5.5, bf16 > 4.
    assert_eq!(Dtype::F32.breakdown_bits(), 12.0);
    assert_eq!(Dtype::F16.breakdown_bits(), 5.5);
    assert_eq!(Dtype::Bf16.breakdown_bits(), 4.0);
}

#[test]
fn element_conversions_agree_with_the_dtype_layer() {
    use losscheck_core::Element;
    let v = positive_values(Dtype::F16);
    for w in v.windows(2) {
        let mid = (w[0] + w[1]) / 2.0;
        for x in [mid, f64_up(mid), f64_down(mid), -mid, -f64_up(mid)] {
            assert!(
                same(
                    <half::f16 as Element>::from_f64(x).to_f64(),
                    Dtype::F16.round(x)
                ),
                "f16 {x:e}"
            );
        }
    }
    let v = positive_values(Dtype::Bf16);
    for w in v.windows(2).step_by(7) {
        let mid = (w[0] + w[1]) / 2.0;
        for x in [mid, f64_up(mid), f64_down(mid), -mid] {
            assert!(
                same(
                    <half::bf16 as Element>::from_f64(x).to_f64(),
                    Dtype::Bf16.round(x)
                ),
                "bf16 {x:e}"
            );
        }
    }
    for x in [0.1, 1.0 / 3.0, 1e38, 3.5e38, 1e-45, 7e-46] {
        assert!(same(
            <f32 as Element>::from_f64(x) as f64,
            Dtype::F32.round(x)
        ));
    }
}

#[test]
fn dtype_names_parse_and_display() {
    for dt in Dtype::ALL {
        assert_eq!(Dtype::parse(dt.name()), Some(dt));
        assert_eq!(dt.to_string(), dt.name());
        assert_eq!(dt.name().parse::<Dtype>(), Ok(dt));
    }
    assert_eq!(Dtype::parse("f64"), None);
    assert!("float16".parse::<Dtype>().is_err());
    assert!(Dtype::F16.is_16bit() && Dtype::Bf16.is_16bit() && !Dtype::F32.is_16bit());
}
